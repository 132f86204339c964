//! The one list of kernels. Tests, benchmarks and the planner iterate it, so a kernel added here
//! is tested and measured, and a kernel not added here cannot be selected.
//!
//! Order matters: [`select`] returns the first entry that fits, so faster kernels come first:
//! within a format, batch-1 (`spmv`) kernels precede the batch-N ones, which also accept batch 1.

use crate::format::{Dtype, WeightMatrix};
use crate::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::kernels::x86_64 as avx2;
#[cfg(target_arch = "x86_64")]
use crate::kernels::x86_64::avx512;
use crate::kernels::{generic, Accepts, Kernel, KernelImpl, Op, Tile};

const fn k(
    name: &'static str,
    dtype: Dtype,
    op: Op,
    accepts: Accepts,
    isa: Isa,
    tile: Tile,
    imp: KernelImpl,
) -> Kernel {
    Kernel {
        name,
        dtype,
        op,
        accepts,
        isa,
        tile,
        imp,
    }
}

const fn t(m: usize, n: usize, k: usize) -> Tile {
    Tile { m, n, k }
}

use Accepts as A;
use Dtype::{F32, I8};
use KernelImpl as K;
use Op::{Spmm, Spmv};

/// Every kernel, fastest first within each format.
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
pub static KERNELS: &[Kernel] = &[
    // Dense baselines.
    k("f32_spmv_dense_avx2", F32, Spmv, A::Dense, Isa::Avx2, t(4, 1, 16), K::Dense(avx2::dense::dense_spmv)),
    k("f32_spmm_dense_avx512", F32, Spmm, A::Dense, Isa::Avx512, t(8, 32, 256), K::Dense(avx512::dense_gemm)),
    k("f32_spmm_dense_gemm", F32, Spmm, A::Dense, Isa::Scalar, t(1, 1, 1), K::Dense(generic::dense_gemm)),
    k("f32_spmm_dense_scalar", F32, Spmm, A::Dense, Isa::Scalar, t(1, 1, 1), K::Dense(generic::dense_spmm)),
    // CSR, u16 and u32 indices, f32 and int8 values.
    k("f32_spmv_csr16_avx2", F32, Spmv, A::Csr16, Isa::Avx2, t(1, 1, 16), K::Csr16(avx2::csr::csr_spmv::<u16>)),
    k("i8_spmv_csr16_avx2", I8, Spmv, A::Csr16, Isa::Avx2, t(1, 1, 16), K::Csr16(avx2::csr::csr_spmv::<u16>)),
    k("f32_spmv_csr32_avx2", F32, Spmv, A::Csr32, Isa::Avx2, t(1, 1, 16), K::Csr32(avx2::csr::csr_spmv::<u32>)),
    k("i8_spmv_csr32_avx2", I8, Spmv, A::Csr32, Isa::Avx2, t(1, 1, 16), K::Csr32(avx2::csr::csr_spmv::<u32>)),
    k("f32_spmm_csr16_avx512", F32, Spmm, A::Csr16, Isa::Avx512, t(1, 64, 1), K::Csr16(avx512::csr_spmm::<u16>)),
    k("f32_spmm_csr16_avx2", F32, Spmm, A::Csr16, Isa::Avx2, t(1, 64, 1), K::Csr16(avx2::csr::csr_spmm::<u16>)),
    k("f32_spmm_csr16_scalar", F32, Spmm, A::Csr16, Isa::Scalar, t(1, 1, 1), K::Csr16(generic::csr_spmm::<u16>)),
    k("i8_spmm_csr16_avx512", I8, Spmm, A::Csr16, Isa::Avx512, t(1, 64, 1), K::Csr16(avx512::csr_spmm::<u16>)),
    k("i8_spmm_csr16_avx2", I8, Spmm, A::Csr16, Isa::Avx2, t(1, 64, 1), K::Csr16(avx2::csr::csr_spmm::<u16>)),
    k("i8_spmm_csr16_scalar", I8, Spmm, A::Csr16, Isa::Scalar, t(1, 1, 1), K::Csr16(generic::csr_spmm::<u16>)),
    k("f32_spmm_csr32_avx512", F32, Spmm, A::Csr32, Isa::Avx512, t(1, 64, 1), K::Csr32(avx512::csr_spmm::<u32>)),
    k("f32_spmm_csr32_avx2", F32, Spmm, A::Csr32, Isa::Avx2, t(1, 64, 1), K::Csr32(avx2::csr::csr_spmm::<u32>)),
    k("f32_spmm_csr32_scalar", F32, Spmm, A::Csr32, Isa::Scalar, t(1, 1, 1), K::Csr32(generic::csr_spmm::<u32>)),
    k("i8_spmm_csr32_avx512", I8, Spmm, A::Csr32, Isa::Avx512, t(1, 64, 1), K::Csr32(avx512::csr_spmm::<u32>)),
    k("i8_spmm_csr32_avx2", I8, Spmm, A::Csr32, Isa::Avx2, t(1, 64, 1), K::Csr32(avx2::csr::csr_spmm::<u32>)),
    k("i8_spmm_csr32_scalar", I8, Spmm, A::Csr32, Isa::Scalar, t(1, 1, 1), K::Csr32(generic::csr_spmm::<u32>)),
    // Block-sparse.
    k("f32_spmv_bsr1x8_avx2", F32, Spmv, A::Bsr { br: 1, bc: 8 }, Isa::Avx2, t(1, 1, 32), K::Bsr(avx2::bsr::bsr1x8_spmv)),
    k("f32_spmv_bsr4x1_avx2", F32, Spmv, A::Bsr { br: 4, bc: 1 }, Isa::Avx2, t(4, 1, 2), K::Bsr(avx2::bsr::bsr4x1_spmv)),
    k("i8_spmv_bsr1x8_avx2", I8, Spmv, A::Bsr { br: 1, bc: 8 }, Isa::Avx2, t(1, 1, 32), K::Bsr(avx2::bsr::bsr1x8_spmv)),
    k("i8_spmv_bsr4x1_avx2", I8, Spmv, A::Bsr { br: 4, bc: 1 }, Isa::Avx2, t(4, 1, 2), K::Bsr(avx2::bsr::bsr4x1_spmv)),
    k("f32_spmm_bsr1x8_avx512", F32, Spmm, A::Bsr { br: 1, bc: 8 }, Isa::Avx512, t(1, 64, 8), K::Bsr(avx512::bsr1x8_spmm)),
    k("f32_spmm_bsr4x1_avx512", F32, Spmm, A::Bsr { br: 4, bc: 1 }, Isa::Avx512, t(4, 32, 1), K::Bsr(avx512::bsr4x1_spmm)),
    k("f32_spmm_bsr1x8_avx2", F32, Spmm, A::Bsr { br: 1, bc: 8 }, Isa::Avx2, t(1, 64, 8), K::Bsr(avx2::bsr::bsr1x8_spmm)),
    k("f32_spmm_bsr4x1_avx2", F32, Spmm, A::Bsr { br: 4, bc: 1 }, Isa::Avx2, t(4, 16, 1), K::Bsr(avx2::bsr::bsr4x1_spmm)),
    k("f32_spmm_bsr_scalar", F32, Spmm, A::BsrAny, Isa::Scalar, t(1, 1, 1), K::Bsr(generic::bsr_spmm)),
    k("i8_spmm_bsr1x8_avx512", I8, Spmm, A::Bsr { br: 1, bc: 8 }, Isa::Avx512, t(1, 64, 8), K::Bsr(avx512::bsr1x8_spmm)),
    k("i8_spmm_bsr4x1_avx512", I8, Spmm, A::Bsr { br: 4, bc: 1 }, Isa::Avx512, t(4, 32, 1), K::Bsr(avx512::bsr4x1_spmm)),
    k("i8_spmm_bsr1x8_avx2", I8, Spmm, A::Bsr { br: 1, bc: 8 }, Isa::Avx2, t(1, 64, 8), K::Bsr(avx2::bsr::bsr1x8_spmm)),
    k("i8_spmm_bsr4x1_avx2", I8, Spmm, A::Bsr { br: 4, bc: 1 }, Isa::Avx2, t(4, 16, 1), K::Bsr(avx2::bsr::bsr4x1_spmm)),
    k("i8_spmm_bsr_scalar", I8, Spmm, A::BsrAny, Isa::Scalar, t(1, 1, 1), K::Bsr(generic::bsr_spmm)),
    // N:M.
    k("f32_spmv_nm_avx2", F32, Spmv, A::NmDiv8, Isa::Avx2, t(1, 1, 16), K::Nm(avx2::nm::nm_spmv)),
    k("f32_spmm_nm_avx512", F32, Spmm, A::NmAny, Isa::Avx512, t(1, 64, 1), K::Nm(avx512::nm_spmm)),
    k("f32_spmm_nm_avx2", F32, Spmm, A::NmAny, Isa::Avx2, t(1, 64, 1), K::Nm(avx2::nm::nm_spmm)),
    k("f32_spmm_nm_scalar", F32, Spmm, A::NmAny, Isa::Scalar, t(1, 1, 1), K::Nm(generic::nm_spmm)),
];

/// Every kernel (portable ones only on this architecture).
#[cfg(not(target_arch = "x86_64"))]
#[rustfmt::skip]
pub static KERNELS: &[Kernel] = &[
    k(
        "f32_spmm_dense_gemm",
        F32,
        Spmm,
        A::Dense,
        Isa::Scalar,
        t(1, 1, 1),
        K::Dense(generic::dense_gemm),
    ),
    k(
        "f32_spmm_dense_scalar",
        F32,
        Spmm,
        A::Dense,
        Isa::Scalar,
        t(1, 1, 1),
        K::Dense(generic::dense_spmm),
    ),
    k(
        "f32_spmm_csr16_scalar",
        F32,
        Spmm,
        A::Csr16,
        Isa::Scalar,
        t(1, 1, 1),
        K::Csr16(generic::csr_spmm::<u16>),
    ),
    k(
        "i8_spmm_csr16_scalar",
        I8,
        Spmm,
        A::Csr16,
        Isa::Scalar,
        t(1, 1, 1),
        K::Csr16(generic::csr_spmm::<u16>),
    ),
    k(
        "f32_spmm_csr32_scalar",
        F32,
        Spmm,
        A::Csr32,
        Isa::Scalar,
        t(1, 1, 1),
        K::Csr32(generic::csr_spmm::<u32>),
    ),
    k(
        "i8_spmm_csr32_scalar",
        I8,
        Spmm,
        A::Csr32,
        Isa::Scalar,
        t(1, 1, 1),
        K::Csr32(generic::csr_spmm::<u32>),
    ),
    k(
        "f32_spmm_bsr_scalar",
        F32,
        Spmm,
        A::BsrAny,
        Isa::Scalar,
        t(1, 1, 1),
        K::Bsr(generic::bsr_spmm),
    ),
    k(
        "i8_spmm_bsr_scalar",
        I8,
        Spmm,
        A::BsrAny,
        Isa::Scalar,
        t(1, 1, 1),
        K::Bsr(generic::bsr_spmm),
    ),
    k(
        "f32_spmm_nm_scalar",
        F32,
        Spmm,
        A::NmAny,
        Isa::Scalar,
        t(1, 1, 1),
        K::Nm(generic::nm_spmm),
    ),
];

/// Looks a kernel up by name.
pub fn by_name(name: &str) -> Option<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name)
}

/// Every kernel that can run `w` at batch `n` on an ISA no higher than `isa` (and available).
pub fn candidates(
    w: &WeightMatrix,
    n: usize,
    isa: Isa,
) -> impl Iterator<Item = &'static Kernel> + '_ {
    KERNELS
        .iter()
        .filter(move |k| k.isa <= isa && k.isa.available() && k.supports(w, n).is_ok())
}

/// The preferred kernel for `w` at batch `n`, honouring the ISA ceiling (see [`Isa::selected`]).
/// Every format and dtype has a portable kernel, so this finds one for any valid matrix.
pub fn select(w: &WeightMatrix, n: usize, isa: Isa) -> Option<&'static Kernel> {
    candidates(w, n, isa).next()
}
