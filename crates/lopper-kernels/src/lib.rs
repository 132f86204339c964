//! lopper-kernels: sparse weight formats and the kernels that multiply them.
//!
//! This crate knows nothing about models or training. It offers:
//! - [`format`]: dense, CSR (u16/u32 indices), BSR (any block, fast 1x8 and 4x1), N:M, each with
//!   f32 or int8-with-row-scales values (N:M f32 only), validated on construction;
//! - [`kernels`] and [`registry`]: `Y = W · X` for `W: [out, in]` in any format and `X: [in, n]`,
//!   with portable and AVX2+FMA paths chosen at run time ([`isa`]);
//! - [`reference`]: the f64 twin every kernel is tested against, and its error bound;
//! - [`parallel`]: row partitions balanced by stored entries, run on rayon;
//! - [`mask`]: top-k and N:M mask selection on plain slices;
//! - [`attention`], [`strided`], [`math`] and [`pool`]: the dense pieces a model keeps (fused
//!   attention per head, products on strided views, vectorisable `exp`/`erf`/GELU, the batched
//!   2x2 max-pool);
//! - [`synth`] and [`bench`]: seeded operands and the timing harness used by tests and benchmarks.

pub mod attention;
pub mod bench;
pub mod conv;
pub mod depthwise;
pub mod error;
pub mod format;
pub mod int8;
pub mod isa;
pub mod kernels;
pub mod mask;
pub mod math;
pub mod parallel;
pub mod pool;
pub mod reference;
pub mod registry;
pub mod strided;
pub mod synth;

pub use error::{FormatError, KernelError};
pub use format::{Bsr, Csr, Dense, Dtype, FormatKind, NmMatrix, Pattern, Values, WeightMatrix};
pub use isa::Isa;
pub use kernels::{Accepts, Kernel, Op, Tile};
pub use parallel::{execute, Partition};
