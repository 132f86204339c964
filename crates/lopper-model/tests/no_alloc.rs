//! After warm-up, a single-threaded inference allocates nothing: every buffer is preallocated.
//! The one exception is the dense GEMM of the `gemm` crate (kernel `f32_spmm_dense_gemm`), which
//! allocates its packing buffers inside every call (gemm-common 0.18: a `MemBuffer` and the
//! `did_pack_lhs` flags) and has no API to pass them in. The planner picks it when it measures
//! fastest (on AVX2 it is the only vectorised dense GEMM), so a measured plan that uses it has
//! those layers moved to lopper's portable dense kernel first: everything lopper runs is then
//! held to zero allocations, on every ISA.
//! (This test binary has its own counting allocator, so it holds this one test only.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use lopper_kernels::{Dtype, FormatKind};
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::Executor;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only the test thread counts: worker threads of dropped planner pools may still be
    // shutting down (and allocating) in the background.
    static COUNT_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNT_HERE.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: the caller's `layout` is passed through unchanged; `GlobalAlloc::alloc`'s
        // contract is the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout` (every allocation of this
        // allocator goes through `alloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn inference_allocates_nothing_after_warm_up() {
    COUNT_HERE.with(|c| c.set(true));
    for model in [
        cnn(1, FormatKind::Csr16, Dtype::F32),
        wide_conv(3, FormatKind::Csr16),
        mlp(
            2,
            [FormatKind::Bsr { br: 1, bc: 8 }, FormatKind::Csr16],
            Dtype::I8,
        ),
    ] {
        for batch in [1, 5] {
            let mut plan = make_plan(&model, "t", batch, 1, PlanMode::Measured).unwrap();
            for l in plan.layers.iter_mut() {
                if l.kernel == "f32_spmm_dense_gemm" {
                    l.kernel = "f32_spmm_dense_scalar".into();
                }
            }
            let mut ex = Executor::new(&model, &plan).unwrap();
            let input = randn(&mut rng(3), model.graph.input_len() * batch);
            ex.run(&input).unwrap();
            let before = ALLOCS.load(Ordering::SeqCst);
            for _ in 0..20 {
                std::hint::black_box(ex.run(&input).unwrap());
            }
            let after = ALLOCS.load(Ordering::SeqCst);
            assert_eq!(
                after - before,
                0,
                "{} batch {batch}: allocations during inference; plan {:?}",
                model.graph.name,
                plan.layers
            );
        }
    }
}
