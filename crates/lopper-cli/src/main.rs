//! `lopper`: train, prune, compress, run and benchmark sparse neural networks.
//!
//! `main` is thin: it parses flags, calls [`run`] and turns an error into a message and exit
//! code 2. One file per subcommand lives in `cmd/`.

mod cmd;
mod plots;
mod util;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lopper",
    version,
    about = "Sparse neural networks that are actually smaller and faster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Skip the check of each model file's tensor-data digest (a corrupt file is then read as
    /// it is).
    #[arg(long, global = true)]
    no_verify: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Train, prune, export, run and compare a LeNet on Fashion-MNIST, end to end (start here).
    Demo(cmd::demo::DemoArgs),
    /// Benchmark a model file (`lopper bench MODEL.lop`) or the kernels (`lopper bench kernels`),
    /// sparse against dense, side by side.
    Bench(cmd::bench::BenchArgs),
    /// Train a zoo model on Fashion-MNIST with a recipe's pruning plan (`--recipe FILE --out DIR`).
    Train(cmd::train::TrainArgs),
    /// Prune each layer of a trained model alone at several sparsities and report accuracy.
    Sensitivity(cmd::sensitivity::SensitivityArgs),
    /// Train one recipe dense and at several target sparsities; accuracy against sparsity.
    Sweep(cmd::sweep::SweepArgs),
    /// Write a .lop model file from a training folder, or re-encode one (format, int8).
    Export(cmd::export::ExportArgs),
    /// Test-set accuracy of a .lop model through the sparse runtime.
    Eval(cmd::eval::EvalArgs),
    /// Predictions and probabilities of a .lop model for an input file (IDX or raw f32).
    Run(cmd::run_model::RunArgs),
    /// Per-layer op, shape, format, density, bytes and planned kernel of a .lop model or encoder.
    Inspect(cmd::inspect::InspectArgs),
    /// Sentence embeddings from a Hugging Face BERT-family folder or an encoder .lop.
    Embed(cmd::embed::EmbedArgs),
    /// One-shot pruning of a pretrained encoder (magnitude, Wanda, SparseGPT; N:M) to a .lop.
    Prune(cmd::prune::PruneArgs),
    /// Import an ONNX model into a .lop file (every model command also takes .onnx directly).
    Import(cmd::import::ImportArgs),
    /// int8 weights and run-time int8 activations (int8 x int8 kernels, VNNI), with a fidelity
    /// report against the f32 model.
    Quantize(cmd::quantize::QuantizeArgs),
}

fn run() -> anyhow::Result<ExitCode> {
    // Numbers may be negative (`--sparsity -0.1` reaches the range check with a clear message
    // instead of being taken for a flag), in every subcommand.
    fn negatives(c: clap::Command) -> clap::Command {
        c.allow_negative_numbers(true).mut_subcommands(negatives)
    }
    let mut matches = negatives(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit());
    lopper_model::file::set_verify_digest(!cli.no_verify);
    match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Sensitivity(args) => cmd::sensitivity::run(args),
        Command::Sweep(args) => cmd::sweep::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Run(args) => cmd::run_model::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Embed(args) => cmd::embed::run(args),
        Command::Prune(args) => cmd::prune::run(args),
        Command::Import(args) => cmd::import::run(args),
        Command::Quantize(args) => cmd::quantize::run(args),
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message already
/// holds (library errors often print their source inline as well as exposing it).
fn message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    // Panics inside the tokenizers crate are caught and reported as errors naming the file
    // (lopper_model::bert::runtime::parse_tokenizer); the default hook would print them first.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let caught = info.location().is_some_and(|l| {
            l.file()
                .contains(lopper_model::bert::runtime::TOKENIZERS_PANIC)
        });
        if !caught {
            default_hook(info);
        }
    }));
    match run() {
        Ok(code) => code,
        Err(err) => {
            // Errors can quote their input (a recipe line, a token): cut, so one bad file
            // never prints megabytes.
            eprintln!(
                "error: {}",
                lopper_model::limits::clip(&message(&err), 2000)
            );
            ExitCode::from(2)
        }
    }
}
