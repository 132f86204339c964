//! `lopper sensitivity --recipe FILE --checkpoint DIR`: prune each layer alone at several
//! sparsities (magnitude, no fine-tuning) and report test accuracy, to choose per-layer targets.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lopper_train::data::mnist;
use lopper_train::sensitivity::sensitivity;
use lopper_train::Recipe;

#[derive(Args, Debug)]
pub struct SensitivityArgs {
    /// The recipe the checkpoint was trained with (names the model).
    #[arg(long)]
    pub recipe: PathBuf,
    /// Folder holding the trained `model.bpk` (a `lopper train --out` folder).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Sparsities to try per layer.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.5, 0.7, 0.8, 0.9, 0.95, 0.98])]
    pub sparsities: Vec<f64>,
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Evaluate on the first N test images only (0: all).
    #[arg(long, default_value_t = 0)]
    pub test_limit: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SensitivityArgs) -> anyhow::Result<ExitCode> {
    if let Some(s) = args.sparsities.iter().find(|s| !(0.0..1.0).contains(*s)) {
        anyhow::bail!("--sparsities: {s} is outside [0, 1)");
    }
    let recipe = Recipe::load(&args.recipe)?;
    let data = mnist::load(&mnist::locate(args.data.as_deref())?)?;
    let test = if args.test_limit > 0 {
        data.test.take(args.test_limit)
    } else {
        data.test
    };
    let report = sensitivity(recipe.model, &args.checkpoint, &test, &args.sparsities)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} from {}: baseline test accuracy {:.2}%",
        report.model,
        report.checkpoint,
        report.baseline_accuracy * 100.0
    );
    print!("{:<16} {:>8}", "layer", "weights");
    for s in &args.sparsities {
        print!(" {:>7.0}%", s * 100.0);
    }
    println!();
    for chunk in report.rows.chunks(args.sparsities.len()) {
        print!("{:<16} {:>8}", chunk[0].layer, chunk[0].weights);
        for r in chunk {
            print!(" {:>7.2}%", r.test_accuracy * 100.0);
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
