//! One module per subcommand.

pub mod bench;
pub mod bench_kernels;
pub mod bench_targets;
pub mod sensitivity;
pub mod sweep;
pub mod train;
