//! Kernel descriptors and the checked entry point.
//!
//! A kernel computes `Y[rows] = W[rows, :] · X` for a contiguous, granularity-aligned range of
//! output rows, with `W: [out, in]` in one storage format, `X: [in, n]` and `Y: [out, n]`
//! row-major (see [`crate::format`]). `y` holds only the rows of the range. Every kernel
//! overwrites its output rows; none reads `y`.
//!
//! Naming grammar: `{dtype}_{op}_{format}_{isa}`, for example `f32_spmv_csr16_avx2` or
//! `i8_spmm_bsr4x1_avx2`. `op` is `spmv` (batch 1 only) or `spmm` (any batch `n >= 1`). To add
//! a kernel, write it in `generic/` or the ISA's folder and add one [`Kernel`] entry to
//! [`crate::registry::KERNELS`]; the tests and the benchmark iterate that list, so the new kernel
//! is tested against its format's reference twin on a grid derived from its [`Tile`] at once.

pub(crate) mod generic;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

use std::ops::Range;

use crate::error::KernelError;
use crate::format::{Bsr, Csr, Dense, Dtype, FormatKind, NmMatrix, WeightMatrix};
use crate::isa::Isa;

/// Batch-1 only, or any batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Spmv,
    Spmm,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Spmv => "spmv",
            Op::Spmm => "spmm",
        }
    }
}

/// The unit of work of a kernel's inner loop: `m` output rows, `n` batch columns and `k`
/// reduction entries per step. Tests derive their shape grid from it (below, at and above each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// Which matrices a kernel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepts {
    Dense,
    Csr16,
    Csr32,
    /// BSR with exactly this block shape.
    Bsr {
        br: usize,
        bc: usize,
    },
    /// BSR with any block shape.
    BsrAny,
    /// N:M where `8 % n == 0` (an 8-lane vector covers whole groups).
    NmDiv8,
    NmAny,
}

impl Accepts {
    /// Whether a matrix of format `kind` is accepted.
    pub fn kind(self, kind: FormatKind) -> bool {
        match (self, kind) {
            (Accepts::Dense, FormatKind::Dense) => true,
            (Accepts::Csr16, FormatKind::Csr16) => true,
            (Accepts::Csr32, FormatKind::Csr32) => true,
            (Accepts::Bsr { br, bc }, FormatKind::Bsr { br: b, bc: c }) => br == b && bc == c,
            (Accepts::BsrAny, FormatKind::Bsr { .. }) => true,
            (Accepts::NmDiv8, FormatKind::Nm { n, .. }) => 8 % n == 0,
            (Accepts::NmAny, FormatKind::Nm { .. }) => true,
            _ => false,
        }
    }
}

/// Signature shared by all kernels of one matrix type: `(w, x, n, y, rows)`.
///
/// # Safety
/// Callers must have checked what [`Kernel::check`] checks: the ISA is available, `x.len() ==
/// cols * n`, `y.len() == rows.len() * n`, the range is in bounds and aligned to the matrix's
/// row granularity, the dtype and format match [`Kernel::accepts`], and `n == 1` for `spmv`.
pub type KernelFn<M> = unsafe fn(&M, &[f32], usize, &mut [f32], Range<usize>);

/// The function of a kernel, typed by the matrix it takes.
#[derive(Clone, Copy)]
pub enum KernelImpl {
    Dense(KernelFn<Dense>),
    Csr16(KernelFn<Csr<u16>>),
    Csr32(KernelFn<Csr<u32>>),
    Bsr(KernelFn<Bsr>),
    Nm(KernelFn<NmMatrix>),
}

/// One entry of the kernel registry.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub name: &'static str,
    pub dtype: Dtype,
    pub op: Op,
    pub accepts: Accepts,
    pub isa: Isa,
    pub tile: Tile,
    pub(crate) imp: KernelImpl,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kernel {
    /// Whether this kernel can run `w` at batch `n` (ignoring ISA availability).
    pub fn supports(&self, w: &WeightMatrix, n: usize) -> Result<(), &'static str> {
        if n == 0 {
            return Err("batch must be at least 1");
        }
        if self.op == Op::Spmv && n != 1 {
            return Err("spmv kernels need batch 1");
        }
        if w.dtype() != self.dtype {
            return Err("dtype differs");
        }
        if self.accepts.kind(w.kind()) {
            Ok(())
        } else {
            Err("format differs")
        }
    }

    /// Checks everything the unsafe kernel relies on.
    pub fn check(
        &self,
        w: &WeightMatrix,
        x: &[f32],
        n: usize,
        y: &[f32],
        rows: &Range<usize>,
    ) -> Result<(), KernelError> {
        if !self.isa.available() {
            return Err(KernelError::IsaUnavailable {
                kernel: self.name,
                isa: self.isa.name(),
            });
        }
        self.supports(w, n)
            .map_err(|reason| KernelError::Unsupported {
                kernel: self.name,
                reason,
            })?;
        let g = w.row_granularity();
        let aligned_end = rows.end.is_multiple_of(g) || rows.end == w.rows();
        if rows.start > rows.end
            || rows.end > w.rows()
            || !rows.start.is_multiple_of(g)
            || !aligned_end
        {
            return Err(KernelError::BadRowRange {
                start: rows.start,
                end: rows.end,
                rows: w.rows(),
                granularity: g,
            });
        }
        let want_x = w.cols() * n;
        if x.len() != want_x {
            return Err(KernelError::ShapeMismatch {
                what: "x (in * batch)",
                expected: want_x,
                actual: x.len(),
            });
        }
        let want_y = rows.len() * n;
        if y.len() != want_y {
            return Err(KernelError::ShapeMismatch {
                what: "y (rows * batch)",
                expected: want_y,
                actual: y.len(),
            });
        }
        Ok(())
    }

    /// Computes rows `rows` of `W · X` into `y`, after checking every precondition.
    pub fn run(
        &self,
        w: &WeightMatrix,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        rows: Range<usize>,
    ) -> Result<(), KernelError> {
        self.check(w, x, n, y, &rows)?;
        // SAFETY: `check` verified every precondition listed on `KernelFn`.
        unsafe { self.run_unchecked(w, x, n, y, rows) };
        Ok(())
    }

    /// # Safety
    /// [`Kernel::check`] must have succeeded for the same arguments.
    pub(crate) unsafe fn run_unchecked(
        &self,
        w: &WeightMatrix,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        rows: Range<usize>,
    ) {
        // SAFETY (all arms): the caller guarantees `check` passed, which includes the variant
        // match below; a mismatch cannot reach the call and is a no-op.
        unsafe {
            match (self.imp, w) {
                (KernelImpl::Dense(f), WeightMatrix::Dense(m)) => f(m, x, n, y, rows),
                (KernelImpl::Csr16(f), WeightMatrix::Csr16(m)) => f(m, x, n, y, rows),
                (KernelImpl::Csr32(f), WeightMatrix::Csr32(m)) => f(m, x, n, y, rows),
                (KernelImpl::Bsr(f), WeightMatrix::Bsr(m)) => f(m, x, n, y, rows),
                (KernelImpl::Nm(f), WeightMatrix::Nm(m)) => f(m, x, n, y, rows),
                _ => debug_assert!(false, "kernel/matrix variant mismatch passed check"),
            }
        }
    }
}
