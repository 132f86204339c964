//! `lopper inspect ENCODER` for a BERT-family folder or encoder `.lop`: the config, the notes a
//! pruning run left, and per Linear its shape `[out, in]`, stored format, density, bytes and the
//! kernel a measured plan picks at `--batch` sequences of `--seq` tokens.

use std::path::Path;
use std::process::ExitCode;

use lopper_model::bert::file::load;
use lopper_model::bert::BertPlan;
use serde::Serialize;

#[derive(Debug, Serialize)]
struct LinearRow {
    name: String,
    shape: [usize; 2],
    format: String,
    dtype: String,
    density: f64,
    bytes: usize,
    planned_format: String,
    planned_kernel: String,
    planned_ns: f64,
}

#[derive(Debug, Serialize)]
struct EncoderInspection {
    model: String,
    config: lopper_model::bert::BertConfig,
    pooling: lopper_model::bert::Pooling,
    normalize: bool,
    max_seq_len: usize,
    notes: std::collections::BTreeMap<String, String>,
    linear_weights: usize,
    linear_nonzero: usize,
    plan_tokens: usize,
    plan_threads: usize,
    /// `per-layer`, or `dense` when the all-dense plan ran a whole pass faster.
    plan_chosen: String,
    /// Median ns of a whole pass per candidate plan (empty when the plan is all dense anyway).
    plan_end_to_end_ns: Vec<(String, f64)>,
    layers: Vec<LinearRow>,
}

pub fn run(
    path: &Path,
    json: bool,
    batch: usize,
    seq: Option<usize>,
    threads: usize,
) -> anyhow::Result<ExitCode> {
    let (bert, notes) = load(path)?;
    // inspect is for looking at a file, broken or not: the probe only warns here.
    if let Err(e) = lopper_model::bert::verify::probe(&bert) {
        eprintln!("warning: {}: {e}", path.display());
    }
    let seq = super::bench_bert::seq_or_default(seq, bert.max_seq_len)?;
    let tokens = batch.max(1) * seq.max(1);
    let plan = BertPlan::make_verified(&bert, tokens, threads.max(1))?;
    let mut layers = Vec::new();
    for ((name, lin), choice) in bert.linears().into_iter().zip(&plan.layers) {
        let d = lin.w.to_dense();
        let nnz = d.data().iter().filter(|v| **v != 0.0).count();
        layers.push(LinearRow {
            name,
            shape: [lin.w.rows(), lin.w.cols()],
            format: lin.w.kind().name(),
            dtype: lin.w.dtype().name().to_string(),
            density: nnz as f64 / d.data().len().max(1) as f64,
            bytes: lin.w.storage_bytes(),
            planned_format: choice.format.to_string(),
            planned_kernel: choice.kernel.clone(),
            planned_ns: choice.ns,
        });
    }
    let (total, nnz) = bert.linear_stats();
    let out = EncoderInspection {
        model: path.display().to_string(),
        config: bert.config.clone(),
        pooling: bert.pooling,
        normalize: bert.normalize,
        max_seq_len: bert.max_seq_len,
        notes,
        linear_weights: total,
        linear_nonzero: nnz,
        plan_tokens: tokens,
        plan_threads: threads,
        plan_chosen: plan.chosen.clone(),
        plan_end_to_end_ns: plan.end_to_end_ns.clone(),
        layers,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let c = &out.config;
    println!(
        "{}: BERT encoder, {} layers, hidden {}, {} heads, FFN {}, vocab {}; pooling {:?}{}; max {} tokens",
        out.model,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
        c.vocab_size,
        out.pooling,
        if out.normalize { " + L2 normalise" } else { "" },
        out.max_seq_len
    );
    for (k, v) in &out.notes {
        println!("  {k}: {v}");
    }
    println!(
        "  Linear weights: {} stored, {} nonzero ({:.2} % sparse); plan for {} tokens, {} thread(s)",
        total,
        nnz,
        100.0 * (1.0 - nnz as f64 / total.max(1) as f64),
        tokens,
        threads
    );
    if !out.plan_end_to_end_ns.is_empty() {
        let times: Vec<String> = out
            .plan_end_to_end_ns
            .iter()
            .map(|(k, ns)| format!("{k} {:.2} ms", ns / 1e6))
            .collect();
        println!(
            "  whole pass: {}; runs {}",
            times.join(", "),
            out.plan_chosen
        );
    }
    println!(
        "{:<42} {:>10} {:>8} {:>8} {:>10}  {:<10} {:>9}  kernel",
        "linear", "shape", "stored", "density", "bytes", "planned", "us"
    );
    for l in &out.layers {
        println!(
            "{:<42} {:>10} {:>8} {:>7.1}% {:>10}  {:<10} {:>9.1}  {}",
            l.name,
            format!("{}x{}", l.shape[0], l.shape[1]),
            l.format,
            100.0 * l.density,
            l.bytes,
            l.planned_format,
            l.planned_ns / 1e3,
            l.planned_kernel
        );
    }
    Ok(ExitCode::SUCCESS)
}
