//! `lopper demo`: the whole loop on real data in a few minutes. Trains a dense and a 95 %-pruned
//! LeNet on Fashion-MNIST, exports both (and an int8 copy of the pruned one) to `.lop`,
//! evaluates each through the sparse runtime (checking the trainer's accuracy), benchmarks each
//! against its own densified twin at batch 1 and 64 in the same run, and writes `report.md`,
//! `report.json` and plots into `--out` (default `./lopper-demo`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lopper_kernels::Dtype;
use lopper_model::StorageChoice;
use lopper_train::data::mnist;
use lopper_train::Recipe;
use serde::Serialize;

use super::bench_model::{bench_model, dense_file_bytes, ModelRecord, TimingSpec};
use super::model_io::load;
use super::train::{train_to_dir, TrainArgs};
use crate::util::{cpu_model, utc_date, write_atomic};

const RECIPES: [(&str, &str, &str); 4] = [
    (
        "lenet300",
        "dense",
        include_str!("../../../../recipes/demo/lenet300-dense.toml"),
    ),
    (
        "lenet300",
        "gradual95",
        include_str!("../../../../recipes/demo/lenet300-gradual95.toml"),
    ),
    (
        "lenet5",
        "dense",
        include_str!("../../../../recipes/demo/lenet5-dense.toml"),
    ),
    (
        "lenet5",
        "gradual95",
        include_str!("../../../../recipes/demo/lenet5-gradual95.toml"),
    ),
];

/// Largest accuracy difference between the trainer and the runtime accepted as "the same model".
const ACCURACY_TOLERANCE: f64 = 0.001;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "lopper-demo")]
    pub out: PathBuf,
    /// Dataset folder (default: $LOPPER_DATA, then /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// lenet300 (about a minute of training) or lenet5 (about six minutes).
    #[arg(long, default_value = "lenet300")]
    pub model: String,
    /// Print report.json on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    file: String,
    method: String,
    dtype: String,
    test_accuracy: f64,
    trainer_accuracy: f64,
    sparsity: f64,
    file_bytes: u64,
    dense_file_bytes: u64,
    latency_b1_ns: f64,
    latency_b64_ns: f64,
    speedup_b1: f64,
    speedup_b64: f64,
    bench: Vec<ModelRecord>,
}

#[derive(Debug, Serialize)]
struct DemoReport {
    model: String,
    date: String,
    cpu: String,
    isa: String,
    data: String,
    threads: usize,
    recipes: Vec<String>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

fn write_recipe(dir: &Path, model: &str, method: &str) -> anyhow::Result<PathBuf> {
    let text = RECIPES
        .iter()
        .find(|r| r.0 == model && r.1 == method)
        .map(|r| r.2)
        .with_context(|| format!("unknown demo model '{model}': use lenet300 or lenet5"))?;
    let path = dir.join(format!("{model}-{method}.toml"));
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let m = args.model.as_str();
    let out = &args.out;
    std::fs::create_dir_all(out.join("recipes"))
        .with_context(|| format!("{}: cannot create the output folder", out.display()))?;
    let dense_recipe = write_recipe(&out.join("recipes"), m, "dense")?;
    let pruned_recipe = write_recipe(&out.join("recipes"), m, "gradual95")?;
    let dir = mnist::locate(args.data.as_deref())?;
    let data = mnist::load(&dir)?;
    eprintln!(
        "lopper demo: {m} on {} ({} train / {} test images), output in {}",
        dir.display(),
        data.train.len(),
        data.test.len(),
        out.display()
    );

    // 1. Train.
    let mut reports = Vec::new();
    for (step, (recipe_path, run_name)) in [(&dense_recipe, "dense"), (&pruned_recipe, "gradual95")]
        .into_iter()
        .enumerate()
    {
        let recipe = Recipe::load(recipe_path)?;
        eprintln!(
            "[{}/4] training {m} {run_name} ({} epochs, seed {})",
            step + 1,
            recipe.epochs,
            recipe.seed
        );
        let targs = TrainArgs {
            recipe: recipe_path.clone(),
            out: out.join(format!("train-{run_name}")),
            data: Some(dir.clone()),
            resume: false,
            json: false,
            test_limit: 0,
            stop_after: None,
        };
        reports.push(train_to_dir(&targs, &recipe, &data)?);
    }

    // 2. Export: dense stored dense; pruned in its smallest f32 encoding and as int8.
    eprintln!("[3/4] exporting and evaluating through the sparse runtime");
    let dense_model = lopper_model::Model::read(Path::new(&reports[0].model_file))?;
    let pruned_model = lopper_model::Model::read(Path::new(&reports[1].model_file))?;
    let files = [
        (
            format!("{m}-dense.lop"),
            dense_model.reencoded(StorageChoice::Dense, Dtype::F32)?,
            &reports[0],
            "f32",
        ),
        (
            format!("{m}-gradual95.lop"),
            pruned_model.reencoded(StorageChoice::Auto, Dtype::F32)?,
            &reports[1],
            "f32",
        ),
        (
            format!("{m}-gradual95-int8.lop"),
            pruned_model.reencoded(StorageChoice::Auto, Dtype::I8)?,
            &reports[1],
            "i8",
        ),
    ];
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    let spec = TimingSpec {
        rounds: 9,
        min_sample_ns: 2_000_000,
    };
    for (name, model, report, dtype) in &files {
        let path = out.join(name);
        model.write(&path)?;
        let loaded = load(&path)?;
        let (correct, n) = super::eval::accuracy(&loaded, &data.test, 500)?;
        let acc = correct as f64 / n as f64;
        let diff = acc - report.test_accuracy;
        if *dtype == "f32" && diff.abs() > ACCURACY_TOLERANCE {
            notes.push(format!(
                "{name}: runtime accuracy {:.2}% differs from the trainer's {:.2}% by more than 0.1 pp",
                acc * 100.0,
                report.test_accuracy * 100.0
            ));
        }
        eprintln!(
            "  {name}: {} bytes, runtime accuracy {:.2}% (trainer {:.2}%, {:+.2} pp)",
            loaded.file_bytes,
            acc * 100.0,
            report.test_accuracy * 100.0,
            diff * 100.0
        );
        rows.push((name.clone(), loaded, acc, *report, *dtype));
    }

    // 3. Benchmark each file against its densified twin, same run, 1 thread.
    eprintln!("[4/4] benchmarking sparse against dense (batch 1 and 64, 1 thread)");
    let mut out_rows = Vec::new();
    for (name, loaded, acc, report, dtype) in rows {
        let dense_bytes = dense_file_bytes(&loaded)?;
        let mut bench = Vec::new();
        for batch in [1, 64] {
            bench.push(bench_model(
                &loaded,
                batch,
                1,
                spec,
                dense_bytes,
                false,
                None,
            )?);
        }
        out_rows.push(Row {
            file: name,
            method: report.method.clone(),
            dtype: dtype.to_string(),
            test_accuracy: acc,
            trainer_accuracy: report.test_accuracy,
            sparsity: report.sparsity,
            file_bytes: loaded.file_bytes,
            dense_file_bytes: dense_bytes,
            latency_b1_ns: bench[0].sparse_ns,
            latency_b64_ns: bench[1].sparse_ns,
            speedup_b1: bench[0].speedup,
            speedup_b64: bench[1].speedup,
            bench,
        });
    }
    let report = DemoReport {
        model: m.to_string(),
        date: utc_date(),
        cpu: cpu_model(),
        isa: lopper_kernels::Isa::selected().name().to_string(),
        data: dir.display().to_string(),
        threads: 1,
        recipes: vec![
            dense_recipe.display().to_string(),
            pruned_recipe.display().to_string(),
        ],
        rows: out_rows,
        notes,
    };
    write_outputs(out, &report, &reports[1])?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
        for n in &report.notes {
            println!("note: {n}");
        }
        println!("report: {}", out.join("report.md").display());
    }
    Ok(ExitCode::SUCCESS)
}

fn table(r: &DemoReport) -> String {
    let mut s = format!(
        "\n{:<28} {:>9} {:>9} {:>11} {:>12} {:>12} {:>10} {:>10}\n",
        "model file",
        "accuracy",
        "sparsity",
        "file bytes",
        "batch 1 us",
        "batch 64 us",
        "speedup 1",
        "speedup 64"
    );
    for row in &r.rows {
        s.push_str(&format!(
            "{:<28} {:>8.2}% {:>8.1}% {:>11} {:>12.2} {:>12.1} {:>9.2}x {:>9.2}x\n",
            row.file,
            row.test_accuracy * 100.0,
            row.sparsity * 100.0,
            row.file_bytes,
            row.latency_b1_ns / 1e3,
            row.latency_b64_ns / 1e3,
            row.speedup_b1,
            row.speedup_b64
        ));
    }
    s.push_str(
        "(latency: the model under its measured per-layer plan; speedup: against the same model densified and run through the best dense kernels, interleaved in the same run, 1 thread)\n",
    );
    s
}

fn write_outputs(out: &Path, r: &DemoReport, pruned: &super::train::Report) -> anyhow::Result<()> {
    write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(r)?.as_bytes(),
    )?;
    let mut md = format!(
        "# lopper demo: {}\n\n{} on `{}`, {} ({}), 1 thread. Recipes: {}.\n\n```\n{}```\n\n",
        r.model,
        r.date,
        r.data,
        r.cpu,
        r.isa,
        r.recipes.join(", "),
        table(r)
    );
    md.push_str("Accuracy is measured by the lopper runtime on the 10 000 test images; the trainer's own figure is in `train-*/report.json` (f32 files agree to within 0.1 pp; int8 shows the change quantization causes).\n\n");
    md.push_str("![accuracy](accuracy_vs_sparsity.png)\n![speedup](speedup.png)\n![layers](train-gradual95/layers.png)\n![training](train-gradual95/training.png)\n");
    for n in &r.notes {
        md.push_str(&format!("\n**Note:** {n}\n"));
    }
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    let dense_acc = r.rows.first().map(|x| x.test_accuracy * 100.0);
    let points: Vec<(f64, f64)> = r.rows[1..]
        .iter()
        .map(|x| (x.sparsity * 100.0, x.test_accuracy * 100.0))
        .collect();
    crate::plots::accuracy_vs_sparsity(
        &out.join("accuracy_vs_sparsity.png"),
        &format!("{}: runtime accuracy against sparsity", r.model),
        &points,
        dense_acc,
    )?;
    let labels: Vec<String> = r
        .rows
        .iter()
        .map(|x| x.file.trim_end_matches(".lop").to_string())
        .collect();
    crate::plots::grouped_bars(
        &out.join("speedup.png"),
        &format!("{}: speedup over the densified model (1 thread)", r.model),
        "speedup (x)",
        &labels,
        &[
            (
                "batch 1".into(),
                r.rows.iter().map(|x| x.speedup_b1).collect(),
            ),
            (
                "batch 64".into(),
                r.rows.iter().map(|x| x.speedup_b64).collect(),
            ),
        ],
    )?;
    let _ = pruned;
    Ok(())
}
