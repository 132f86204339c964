//! `lopper bench ENCODER` (a BERT-family folder or encoder `.lop`): the encoder under its
//! measured per-Linear plan against the same encoder densified on the dense kernels, in the same
//! run, at each batch size (sequences of `--seq` tokens) and thread count. The two runners are
//! timed in interleaved rounds (one forward pass each per round) and the medians compared, so
//! machine noise hits both alike.

use std::path::Path;

use anyhow::Context;
use lopper_kernels::{Dtype, WeightMatrix};
use lopper_model::bert::file::load;
use lopper_model::bert::verify::probe;
use lopper_model::bert::{Bert, BertPlan, BertRunner, Encoded};
use lopper_model::{PlanMode, StorageChoice};
use serde::Serialize;

use crate::util::{cpu_model, utc_date};

#[derive(Debug, Serialize)]
pub struct BertRecord {
    pub model: String,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub isa: String,
    pub dense_ns: f64,
    pub sparse_ns: f64,
    pub speedup: f64,
    /// Zero fraction of the encoder's Linear weights.
    pub sparsity: f64,
    pub file_bytes: u64,
    pub dense_file_bytes: u64,
    /// `format -> number of Linear layers` in the sparse plan.
    pub sparse_plan: std::collections::BTreeMap<String, usize>,
    /// `kernel xPARTS -> number of Linear layers` in the sparse plan.
    pub sparse_kernels: std::collections::BTreeMap<String, usize>,
    /// Which plan the sparse model ran: `per-layer`, or `dense` when every Linear on dense
    /// kernels ran a whole pass faster (`BertPlan::make_verified`).
    pub sparse_plan_chosen: String,
    pub rounds: usize,
    pub cpu: String,
    pub date: String,
}

/// The same encoder with every Linear stored dense (its zeros kept as values).
fn densified(bert: &Bert) -> Bert {
    let mut d = bert.clone();
    for layer in &mut d.layers {
        for lin in layer.linears_mut() {
            lin.w = WeightMatrix::Dense(lin.w.to_dense());
        }
    }
    d
}

pub fn run(path: &Path, args: &super::bench::BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    let (bert, _) = load(path)?;
    probe(&bert).with_context(|| path.display().to_string())?;
    let (batches, threads) = super::bench::grid(args, &[1, 8])?;
    let seq = seq_or_default(args.seq, bert.max_seq_len)?;
    let rounds = if args.quick { 7 } else { 21 };
    let file_bytes = if path.is_dir() {
        std::fs::metadata(path.join("model.safetensors"))?.len()
    } else {
        std::fs::metadata(path)?.len()
    };
    let dense = densified(&bert);
    let dense_file_bytes = dense
        .to_lop_bytes(StorageChoice::Dense, Dtype::F32, Default::default())?
        .len() as u64;
    let (total, nnz) = bert.linear_stats();
    let sparsity = 1.0 - nnz as f64 / total.max(1) as f64;
    eprintln!(
        "lopper bench {}: encoder, {:.1} % sparse Linear weights | {} | isa {} | seq {seq} | {rounds} interleaved rounds, median",
        path.display(),
        100.0 * sparsity,
        cpu_model(),
        lopper_kernels::Isa::selected().name(),
    );
    if !args.json {
        println!(
            "{:>6} {:>5} {:>7} {:>11} {:>11} {:>8}  plan",
            "batch", "seq", "threads", "dense ms", "sparse ms", "speedup"
        );
    }
    let mut records = Vec::new();
    for &t in &threads {
        for &b in &batches {
            let tokens = b * seq;
            let sparse_plan = BertPlan::make_verified(&bert, tokens, t)?;
            let dense_plan = BertPlan::make(&dense, tokens, t, PlanMode::Dense)?;
            let mut runners = [
                BertRunner::new(dense.clone(), &dense_plan)?,
                BertRunner::new(bert.clone(), &sparse_plan)?,
            ];
            let enc = Encoded::synthetic(b, seq, bert.config.vocab_size);
            let [dense_ns, sparse_ns] =
                lopper_model::bert::verify::time_interleaved(&mut runners, &enc, rounds)?;
            if args.profile {
                for (name, r) in ["dense", "sparse"].iter().zip(runners.iter_mut()) {
                    let steps = r.profile(&enc, 5)?;
                    let total: f64 = steps.iter().map(|s| s.1).sum();
                    eprintln!("  profile {name}, batch {b}, {t} thread(s):");
                    for (k, ns) in steps {
                        eprintln!(
                            "    {k:<10} {:>9.3} ms {:>5.1}%",
                            ns / 1e6,
                            100.0 * ns / total
                        );
                    }
                }
            }
            let mut plan = std::collections::BTreeMap::new();
            let mut kernels = std::collections::BTreeMap::new();
            for l in &sparse_plan.layers {
                *plan.entry(l.format.to_string()).or_insert(0) += 1;
                *kernels
                    .entry(format!("{} x{}", l.kernel, l.parts))
                    .or_insert(0) += 1;
            }
            let rec = BertRecord {
                model: path.display().to_string(),
                batch: b,
                seq,
                threads: t,
                isa: sparse_plan.isa.clone(),
                dense_ns,
                sparse_ns,
                speedup: dense_ns / sparse_ns,
                sparsity,
                file_bytes,
                dense_file_bytes,
                sparse_plan: plan,
                sparse_kernels: kernels,
                sparse_plan_chosen: sparse_plan.chosen.clone(),
                rounds,
                cpu: cpu_model(),
                date: utc_date(),
            };
            if args.json {
                println!("{}", serde_json::to_string(&rec)?);
            } else {
                let p: Vec<String> = rec
                    .sparse_plan
                    .iter()
                    .map(|(f, n)| format!("{f} x{n}"))
                    .collect();
                println!(
                    "{:>6} {:>5} {:>7} {:>11.2} {:>11.2} {:>7.2}x  {}",
                    b,
                    seq,
                    t,
                    dense_ns / 1e6,
                    sparse_ns / 1e6,
                    rec.speedup,
                    if rec.sparse_plan_chosen == "dense" {
                        format!("{} (all dense ran a whole pass faster)", p.join(", "))
                    } else {
                        p.join(", ")
                    }
                );
            }
            records.push(rec);
        }
    }
    if let Some(out) = &args.out {
        let text: String = records
            .iter()
            .map(|r| serde_json::to_string(r).map(|s| s + "\n"))
            .collect::<Result<_, _>>()?;
        crate::util::write_atomic(out, text.as_bytes())?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `--seq` must be a sequence the model takes: from 2 tokens ([CLS] and [SEP]) to its longest
/// (sentence-transformers' `max_seq_length`, 256 for all-MiniLM-L6-v2, which embedding
/// truncates to; the position table may be longer).
/// `--seq` checked against the model's longest sequence `max`; when not given, 128 (the
/// benchmarks' length) or `max` when that is shorter.
pub fn seq_or_default(seq: Option<usize>, max: usize) -> anyhow::Result<usize> {
    match seq {
        None => Ok(128.min(max)),
        Some(s) if s < 2 || s > max => {
            anyhow::bail!("--seq {s} is outside 2..={max} (the model's longest sequence)")
        }
        Some(s) => Ok(s),
    }
}
