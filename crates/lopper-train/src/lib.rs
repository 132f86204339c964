//! lopper-train: sparse training on burn. The only crate that depends on burn.
//!
//! Layout boundary: burn's `Linear` stores its weight `[in, out]`; everything this crate hands
//! to `lopper-kernels` or writes to a model file is `[out, in]` (ONNX/PyTorch order), transposed
//! at that boundary and nowhere else.

pub mod checkpoint;
pub mod data;
pub mod denormals;
pub mod export;
pub mod model;
pub mod prune;
pub mod recipe;
pub mod sensitivity;
pub mod structured;
pub mod trainer;

pub use recipe::Recipe;
pub use trainer::{train, EpochRecord, Observer, TrainError, TrainOptions, TrainSummary};
