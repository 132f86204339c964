//! `lopper train --recipe FILE --out DIR`: trains a zoo model on Fashion-MNIST (or MNIST) with
//! the recipe's pruning plan and writes the checkpoint, `report.json` and `report.md` into DIR.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lopper_train::data::mnist;
use lopper_train::model::architecture;
use lopper_train::structured::event::ShrinkEvent;
use lopper_train::trainer::{train, EpochRecord, Observer, TrainOptions, TrainSummary};
use lopper_train::Recipe;
use serde::Serialize;

use crate::util::write_atomic;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Recipe file (TOML), e.g. recipes/lenet300-gradual95.toml.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Output folder for the checkpoint and reports (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Dataset folder (default: $LOPPER_DATA, then /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Print the report as JSON on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Evaluate on the first N test images only (0: all 10 000).
    #[arg(long, default_value_t = 0)]
    pub test_limit: usize,
    /// Stop after N epochs of this run, leaving a checkpoint that --resume continues from.
    #[arg(long)]
    pub stop_after: Option<usize>,
}

/// `report.json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub recipe: String,
    pub method: String,
    pub seed: u64,
    pub epochs: usize,
    pub test_accuracy: f64,
    pub sparsity: f64,
    pub params_total: usize,
    pub params_nonzero: usize,
    pub prunable_total: usize,
    pub prunable_nonzero: usize,
    pub per_layer: Vec<lopper_train::prune::masks::LayerSparsity>,
    pub epoch_seconds: Vec<f64>,
    pub dense_macs: usize,
    /// Multiply-accumulates per example counting only nonzero weights (from the exported model;
    /// BatchNorm folded), beside the same count with every weight (`dense_macs`).
    pub sparse_macs: usize,
    /// Input width and every layer's output width of the trained network, e.g. `784-300-100-10`.
    pub architecture_before: String,
    /// The surviving architecture: after an L0 run's shrink (units whose gate is zero removed),
    /// otherwise the same as `architecture_before`.
    pub architecture: String,
    /// MACs per example before (`dense_macs` of the trained network) and after (`sparse_macs`:
    /// nonzero weights of the exported, possibly shrunk, model).
    pub macs_before: usize,
    pub macs_after: usize,
    /// Parameters of the exported model (all weights and biases; after the shrink for L0 and
    /// structured pruning).
    pub params_after: usize,
    /// Hidden neurons and channels (the prunable channel groups) before and after L0 or
    /// structured pruning; equal for other methods.
    pub channels_before: usize,
    pub channels_after: usize,
    pub history: Vec<EpochRecord>,
    /// A schedule event after the last epoch: the model pruned then, with no fine-tuning (its
    /// accuracy is `test_accuracy`). Not an epoch, so not in `history`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_prune: Option<EpochRecord>,
    pub data: String,
    pub train_examples: usize,
    pub test_examples: usize,
    pub checkpoint: String,
    /// The trained model as a `.lop` file (storage: smallest encoding per weight, f32).
    pub model_file: String,
    pub model_file_bytes: u64,
    /// Mean and standard deviation of the training pixels, used to standardise inputs.
    pub data_mean: f32,
    pub data_std: f32,
}

struct Bar {
    bar: ProgressBar,
    quiet: bool,
    last: Option<EpochRecord>,
}

impl Observer for Bar {
    fn on_start(&mut self, epochs: usize, steps_per_epoch: usize, first_epoch: usize) {
        self.bar.set_length((epochs * steps_per_epoch) as u64);
        self.bar
            .set_position((first_epoch * steps_per_epoch) as u64);
    }
    fn on_step(&mut self, epoch: usize, _step: usize, loss: f32, _sparsity: f64) {
        self.bar.inc(1);
        let (acc, sp) = self
            .last
            .as_ref()
            .map_or((f64::NAN, 0.0), |r| (r.test_accuracy, r.sparsity));
        self.bar.set_message(format!(
            "epoch {} loss {loss:.4} | last test acc {:.2}% sparsity {:.1}%",
            epoch + 1,
            acc * 100.0,
            sp * 100.0
        ));
    }
    fn on_epoch(&mut self, r: &EpochRecord) {
        if !self.quiet {
            let line = format!(
                "epoch {:>3}: loss {:.4}  test acc {:.2}%  sparsity {:.2}%  lr {:.2e}  {:.1}s",
                r.epoch + 1,
                r.train_loss,
                r.test_accuracy * 100.0,
                r.sparsity * 100.0,
                r.lr,
                r.seconds
            );
            let line = match &r.widths {
                Some(w) => format!("{line}  architecture {}", architecture(w)),
                None => line,
            };
            self.bar.suspend(|| eprintln!("{line}"));
        }
        self.last = Some(r.clone());
    }
    fn on_final_prune(&mut self, r: &EpochRecord) {
        if !self.quiet {
            let line = format!(
                "after the last epoch: pruned to {:.2}% with no fine-tuning, test acc {:.2}%",
                r.sparsity * 100.0,
                r.test_accuracy * 100.0
            );
            self.bar.suspend(|| eprintln!("{line}"));
        }
        self.last = Some(r.clone());
    }
    fn on_shrink(&mut self, epoch: usize, e: &ShrinkEvent) {
        if !self.quiet {
            self.bar.suspend(|| {
                eprintln!(
                    "  epoch {}: {}: channels {} -> {}, architecture {}",
                    epoch + 1,
                    e.label,
                    e.channels_before,
                    e.channels_after,
                    architecture(&e.widths)
                )
            });
        }
    }
    fn on_prune(&mut self, step: usize, target: f64) {
        // Milestones only (every 5 points); a schedule's first event at 0 % prunes nothing.
        if !self.quiet && target > 0.0 && (target * 1000.0).round() as i64 % 50 == 0 {
            self.bar
                .suspend(|| eprintln!("  step {step}: pruned to {:.1}%", target * 100.0));
        }
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let recipe = Recipe::load(&args.recipe)?;
    let dir = mnist::locate(args.data.as_deref())?;
    eprintln!(
        "lopper train: {} | model {} | seed {} | data {}",
        args.recipe.display(),
        recipe.model.name(),
        recipe.seed,
        dir.display()
    );
    let data = mnist::load(&dir)?;
    let report = train_to_dir(&args, &recipe, &data)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: test accuracy {:.2}%, sparsity {:.2}% ({} of {} prunable weights nonzero); architecture {} -> {}, MACs {} -> {}; model {} ({} bytes); reports in {}",
            report.model,
            report.test_accuracy * 100.0,
            report.sparsity * 100.0,
            report.prunable_nonzero,
            report.prunable_total,
            report.architecture_before,
            report.architecture,
            report.macs_before,
            report.macs_after,
            report.model_file,
            report.model_file_bytes,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Trains `recipe` into `args.out`: checkpoint, `model.lop`, `report.json`, `report.md` and the
/// plots. Progress goes to stderr unless `args.json`.
pub fn train_to_dir(
    args: &TrainArgs,
    recipe: &Recipe,
    data: &mnist::Dataset,
) -> anyhow::Result<Report> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .context("progress template")?,
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut obs = Bar {
        bar,
        quiet: args.json,
        last: None,
    };
    let opts = TrainOptions {
        out_dir: args.out.clone(),
        recipe_path: args.recipe.clone(),
        resume: args.resume,
        test_limit: args.test_limit,
        stop_after: args.stop_after,
    };
    if args.resume && lopper_train::checkpoint::locate(&args.out).is_none() {
        obs.bar.suspend(|| {
            eprintln!(
                "--resume: {} holds no checkpoint yet; starting from epoch 1",
                args.out.display()
            )
        });
    }
    let summary = train(recipe, data, &opts, &mut obs)?;
    obs.bar.finish_and_clear();
    let lop = args.out.join("model.lop");
    let meta = super::model_io::export_meta(recipe.model.name(), data);
    let model = lopper_train::export::export_checkpoint(recipe.model, &summary.checkpoint, &meta)?
        .reencoded(
            lopper_model::StorageChoice::Auto,
            lopper_kernels::Dtype::F32,
        )?;
    let lop_bytes = model.write(&lop)?;
    let mut report = build_report(args, recipe, data, &summary);
    report.sparse_macs = model.macs().1;
    report.macs_after = report.sparse_macs;
    report.params_after =
        model.weight_stats().0 + model.vectors.values().map(Vec::len).sum::<usize>();
    report.model_file = lop.display().to_string();
    report.model_file_bytes = lop_bytes;
    let json = serde_json::to_string_pretty(&report)?;
    write_atomic(&args.out.join("report.json"), json.as_bytes())?;
    write_atomic(&args.out.join("report.md"), report_md(&report).as_bytes())?;
    let title = format!("{} ({}, seed {})", report.model, report.method, report.seed);
    let curve: Vec<(f64, f64, f64)> = report
        .history
        .iter()
        .map(|h| {
            (
                (h.epoch + 1) as f64,
                h.test_accuracy * 100.0,
                h.sparsity * 100.0,
            )
        })
        .collect();
    crate::plots::training_curves(&args.out.join("training.png"), &title, &curve)?;
    let layers: Vec<(String, f64)> = report
        .per_layer
        .iter()
        .map(|l| (l.name.clone(), l.sparsity * 100.0))
        .collect();
    crate::plots::layer_sparsity(
        &args.out.join("layers.png"),
        &format!("{title}: sparsity per layer"),
        &layers,
    )?;
    Ok(report)
}

fn build_report(
    args: &TrainArgs,
    recipe: &Recipe,
    data: &mnist::Dataset,
    s: &TrainSummary,
) -> Report {
    let method = match &recipe.pruning.schedule {
        _ if recipe.l0.is_some() => "l0".to_string(),
        _ if recipe.structured.is_some() => "structured".to_string(),
        lopper_train::prune::Schedule::None if recipe.regularization.l1 > 0.0 => "l1".to_string(),
        lopper_train::prune::Schedule::None => "dense".to_string(),
        other => match &recipe.pruning.pattern {
            Some(p) => format!("{} {p}", other.kind()),
            None => other.kind().to_string(),
        },
    };
    Report {
        model: recipe.model.name().into(),
        recipe: args.recipe.display().to_string(),
        method,
        seed: recipe.seed,
        epochs: recipe.epochs,
        // An L0 or structured run exports the shrunk network: its accuracy is the one that ships.
        test_accuracy: s
            .shrunk
            .as_ref()
            .map_or(s.test_accuracy, |k| k.test_accuracy),
        sparsity: s.sparsity.sparsity,
        params_total: s.params_total,
        params_nonzero: s.params_nonzero,
        prunable_total: s.sparsity.total,
        prunable_nonzero: s.sparsity.total - s.sparsity.zeros,
        per_layer: s.sparsity.per_layer.clone(),
        epoch_seconds: s.history.iter().map(|r| r.seconds).collect(),
        dense_macs: s.dense_macs,
        sparse_macs: 0,
        architecture_before: architecture(&s.widths),
        architecture: architecture(s.shrunk.as_ref().map_or(&s.widths, |k| &k.widths)),
        macs_before: s.dense_macs,
        macs_after: 0,
        params_after: 0,
        channels_before: s.channels_before,
        channels_after: s.channels_after,
        history: s.history.clone(),
        final_prune: s.final_prune.clone(),
        data: data.dir.display().to_string(),
        train_examples: if recipe.train_limit > 0 {
            recipe.train_limit.min(data.train.len())
        } else {
            data.train.len()
        },
        test_examples: if args.test_limit > 0 {
            args.test_limit.min(data.test.len())
        } else {
            data.test.len()
        },
        checkpoint: s.checkpoint.display().to_string(),
        model_file: String::new(),
        model_file_bytes: 0,
        data_mean: data.mean,
        data_std: data.std,
    }
}

fn report_md(r: &Report) -> String {
    let mut s = format!(
        "# {} ({})\n\nRecipe `{}`, seed {}, {} epochs on {} training images; test set {} images from `{}`.\n\n\
         | test accuracy | sparsity (prunable weights) | nonzero / total params | MACs per example, nonzero / dense |\n|---|---|---|---|\n| {:.2} % | {:.2} % | {} / {} | {} / {} |\n\n\
         Architecture {} (trained) -> {} (exported); hidden neurons and channels {} -> {}; MACs per example {} -> {}; parameters {} -> {}.\n\n\
         ## Per layer\n\n| layer | shape (burn layout) | sparsity |\n|---|---|---|\n",
        r.model,
        r.method,
        r.recipe,
        r.seed,
        r.epochs,
        r.train_examples,
        r.test_examples,
        r.data,
        r.test_accuracy * 100.0,
        r.sparsity * 100.0,
        r.params_nonzero,
        r.params_total,
        r.sparse_macs,
        r.dense_macs,
        r.architecture_before,
        r.architecture,
        r.channels_before,
        r.channels_after,
        r.macs_before,
        r.macs_after,
        r.params_total,
        r.params_after
    );
    for l in &r.per_layer {
        s.push_str(&format!(
            "| {} | {:?} | {:.2} % |\n",
            l.name,
            l.shape,
            l.sparsity * 100.0
        ));
    }
    s.push_str("\n## Epochs\n\n| epoch | train loss | test accuracy | sparsity | lr | seconds |\n|---|---|---|---|---|---|\n");
    for h in &r.history {
        s.push_str(&format!(
            "| {} | {:.4} | {:.2} % | {:.2} % | {:.2e} | {:.1} |\n",
            h.epoch + 1,
            h.train_loss,
            h.test_accuracy * 100.0,
            h.sparsity * 100.0,
            h.lr,
            h.seconds
        ));
    }
    if let Some(f) = &r.final_prune {
        s.push_str(&format!(
            "\nAfter the last epoch the schedule pruned to {:.2} % with no fine-tuning: test accuracy {:.2} %.\n",
            f.sparsity * 100.0,
            f.test_accuracy * 100.0
        ));
    }
    s
}
