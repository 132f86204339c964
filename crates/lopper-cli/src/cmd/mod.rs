//! One module per subcommand (plus `model_io`, shared loading of model files, and
//! `bench_model`, the model benchmark shared by `bench` and `demo`).

pub mod bench;
pub mod bench_bert;
pub mod bench_kernels;
pub mod bench_model;
pub mod bench_targets;
pub mod demo;
pub mod embed;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod inspect_bert;
pub mod model_io;
pub mod prune;
pub mod run_model;
pub mod sensitivity;
pub mod sweep;
pub mod train;
