//! `lopper sweep --recipe FILE --targets 0.5,0.8,0.9,0.95 --out DIR`: the same recipe trained
//! dense and at several final sparsities; one `lopper train` folder per run and `sweep.json`
//! with accuracy against sparsity, the dense baseline marked.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lopper_train::data::mnist;
use lopper_train::prune::Schedule;
use lopper_train::trainer::{train, Silent, TrainOptions};
use lopper_train::Recipe;
use serde::Serialize;

use crate::util::write_atomic;

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[arg(long)]
    pub recipe: PathBuf,
    /// Final sparsities to train at (the recipe's schedule, moved to each target).
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<f64>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Point {
    target: f64,
    dense_baseline: bool,
    sparsity: f64,
    test_accuracy: f64,
    out: String,
}

pub fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let recipe = Recipe::load(&args.recipe)?;
    if matches!(recipe.pruning.schedule, Schedule::None) {
        anyhow::bail!(
            "{}: the recipe has no pruning schedule to sweep",
            args.recipe.display()
        );
    }
    if args.targets.is_empty() {
        anyhow::bail!("--targets: give at least one sparsity");
    }
    if let Some(t) = args.targets.iter().find(|t| !(0.0..1.0).contains(*t)) {
        anyhow::bail!("--targets: {t} is outside [0, 1)");
    }
    let data = mnist::load(&mnist::locate(args.data.as_deref())?)?;
    let mut points = Vec::new();
    let runs = std::iter::once(None).chain(args.targets.iter().copied().map(Some));
    for target in runs {
        let mut r = recipe.clone();
        let name = match target {
            None => {
                r.pruning.schedule = Schedule::None;
                "dense".to_string()
            }
            Some(t) => {
                r.pruning.schedule = recipe.pruning.schedule.with_target(t);
                format!("sparsity{:.0}", t * 100.0)
            }
        };
        let out = args.out.join(&name);
        eprintln!(
            "lopper sweep: {name} (seed {}) -> {}",
            r.seed,
            out.display()
        );
        let opts = TrainOptions {
            out_dir: out.clone(),
            recipe_path: args.recipe.clone(),
            resume: false,
            test_limit: 0,
            stop_after: None,
        };
        let s = train(&r, &data, &opts, &mut Silent)?;
        eprintln!(
            "  test accuracy {:.2}%, sparsity {:.2}%",
            s.test_accuracy * 100.0,
            s.sparsity.sparsity * 100.0
        );
        points.push(Point {
            target: target.unwrap_or(0.0),
            dense_baseline: target.is_none(),
            sparsity: s.sparsity.sparsity,
            test_accuracy: s.test_accuracy,
            out: out.display().to_string(),
        });
    }
    let json = serde_json::to_string_pretty(&points)?;
    write_atomic(&args.out.join("sweep.json"), json.as_bytes())?;
    let dense = points
        .iter()
        .find(|p| p.dense_baseline)
        .map(|p| p.test_accuracy * 100.0);
    let curve: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| !p.dense_baseline)
        .map(|p| (p.sparsity * 100.0, p.test_accuracy * 100.0))
        .collect();
    crate::plots::accuracy_vs_sparsity(
        &args.out.join("sweep.png"),
        &format!(
            "{}: accuracy against sparsity (seed {})",
            recipe.model.name(),
            recipe.seed
        ),
        &curve,
        dense,
    )?;
    if args.json {
        println!("{json}");
    } else {
        println!(
            "{:>10} {:>10} {:>14}",
            "target", "sparsity", "test accuracy"
        );
        for p in &points {
            let label = if p.dense_baseline {
                "dense".to_string()
            } else {
                format!("{:.2}", p.target)
            };
            println!(
                "{label:>10} {:>9.2}% {:>13.2}%",
                p.sparsity * 100.0,
                p.test_accuracy * 100.0
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
