//! `lopper eval MODEL [--data DIR] [--json]`: test-set accuracy of a `.lop` model through the
//! sparse runtime. When the model sits in a `lopper train` folder, the trainer's accuracy is
//! shown beside it (they agree to within 0.1 pp for f32 exports; int8 shows its own change).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::Executor;
use lopper_train::data::mnist::{self, Split};
use serde::Serialize;

use super::model_io::{load, Loaded};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (.lop).
    pub model: PathBuf,
    /// Dataset folder (default: $LOPPER_DATA, then /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Examples per runtime call.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
}

#[derive(Debug, Serialize)]
pub struct EvalResult {
    pub model: String,
    pub accuracy: f64,
    pub correct: usize,
    pub examples: usize,
    pub seconds: f64,
    pub data: String,
    /// The accuracy `lopper train` reported for this model, when its report is next to it.
    pub trainer_accuracy: Option<f64>,
}

/// Accuracy of `loaded` on `split` (standardised images `[n, 784]`), `batch` examples at a time.
pub fn accuracy(loaded: &Loaded, split: &Split, batch: usize) -> anyhow::Result<(usize, usize)> {
    let model = &loaded.model;
    let f = model.graph.input_len();
    if f != mnist::PIXELS {
        anyhow::bail!(
            "{}: the model takes {f} inputs per example, the dataset has {} pixels",
            loaded.path.display(),
            mnist::PIXELS
        );
    }
    let n = split.len();
    let batch = batch.clamp(1, n.max(1));
    let mut correct = 0usize;
    let mut ex: Option<Executor> = None;
    for start in (0..n).step_by(batch) {
        let b = batch.min(n - start);
        if ex.as_ref().is_none_or(|e| e.batch() != b) {
            let plan = make_plan(model, &loaded.digest, b, 1, PlanMode::Stored)?;
            ex = Some(Executor::new(model, &plan)?);
        }
        let Some(e) = ex.as_mut() else { unreachable!() };
        let classes = e.out_features();
        let out = e.run(&split.images[start * f..(start + b) * f])?;
        for (j, row) in out.chunks(classes).enumerate() {
            correct += usize::from(argmax(row) == split.labels[start + j] as usize);
        }
    }
    Ok((correct, n))
}

pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn trainer_accuracy(model: &Path) -> Option<f64> {
    let report = model.parent()?.join("report.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report).ok()?).ok()?;
    let file = v.get("model_file")?.as_str()?;
    // Only when the report describes this very file.
    (Path::new(file).file_name() == model.file_name()).then_some(())?;
    v.get("test_accuracy")?.as_f64()
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.model)?;
    let dir = mnist::locate(args.data.as_deref())?;
    // The model file's own preprocessing: the statistics it was trained with.
    let Some(p) = loaded.model.graph.input.preprocess else {
        anyhow::bail!(
            "{}: the model file records no input preprocessing, so it cannot be evaluated on \
             8-bit images (use `lopper run` with preprocessed f32 input)",
            args.model.display()
        );
    };
    let test = mnist::load_test_with(&dir, p.scale, p.mean, p.std)?;
    if test.is_empty() {
        anyhow::bail!("{}: the test split holds 0 images", dir.display());
    }
    let t = Instant::now();
    let (correct, examples) = accuracy(&loaded, &test, args.batch)?;
    let r = EvalResult {
        model: args.model.display().to_string(),
        accuracy: correct as f64 / examples.max(1) as f64,
        correct,
        examples,
        seconds: t.elapsed().as_secs_f64(),
        data: dir.display().to_string(),
        trainer_accuracy: trainer_accuracy(&args.model),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!(
            "{}: test accuracy {:.2}% ({} / {}) in {:.1}s",
            r.model,
            r.accuracy * 100.0,
            r.correct,
            r.examples,
            r.seconds
        );
        match r.trainer_accuracy {
            Some(a) => println!(
                "; the trainer reported {:.2}% ({:+.2} pp)",
                a * 100.0,
                (r.accuracy - a) * 100.0
            ),
            None => println!(),
        }
    }
    Ok(ExitCode::SUCCESS)
}
