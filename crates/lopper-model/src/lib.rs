//! lopper's model layer: the graph IR ([`graph`]), the `.lop` file ([`file`], spec in
//! `docs/format.md`), weight re-encoding ([`convert`]), the sparse runtime ([`runtime`]) and
//! BERT-family sentence encoders ([`bert`]: Hugging Face import, runtime, embeddings), and
//! ONNX files ([`onnx`]: the protobuf reader; [`import::onnx`] and [`export::onnx`]).
//!
//! Depends on `lopper-kernels` only, never on the training framework. Weight matrices are
//! `[out, in]` everywhere in this crate (ONNX/PyTorch layout).

pub mod bert;
pub mod convert;
pub mod delta;
pub mod error;
pub mod export;
pub mod file;
pub mod graph;
pub mod import;
pub mod limits;
pub mod npy;
pub mod oneshot;
pub mod onnx;
pub mod runtime;
pub mod weights;

pub use convert::StorageChoice;
pub use error::ModelError;
pub use file::Model;
pub use graph::{Graph, InputSpec, Node, Op, Preprocess};
pub use runtime::{Executor, Plan, PlanMode};
