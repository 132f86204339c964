//! `lopper`: train, prune, compress, run and benchmark sparse neural networks.
//!
//! `main` is thin: it parses flags, calls [`run`] and turns an error into a message and exit
//! code 2. One file per subcommand lives in `cmd/`.

mod cmd;
mod plots;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lopper",
    version,
    about = "Sparse neural networks that are actually smaller and faster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark sparse kernels (`lopper bench kernels`) against the dense baseline, side by side.
    Bench(cmd::bench::BenchArgs),
    /// Train a zoo model on Fashion-MNIST with a recipe's pruning plan (`--recipe FILE --out DIR`).
    Train(cmd::train::TrainArgs),
    /// Prune each layer of a trained model alone at several sparsities and report accuracy.
    Sensitivity(cmd::sensitivity::SensitivityArgs),
    /// Train one recipe dense and at several target sparsities; accuracy against sparsity.
    Sweep(cmd::sweep::SweepArgs),
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => cmd::bench::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Sensitivity(args) => cmd::sensitivity::run(args),
        Command::Sweep(args) => cmd::sweep::run(args),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
