//! `lopper embed MODEL --text "…" [--file lines.txt] [--json]`: sentence embeddings from a
//! Hugging Face BERT-family folder or an encoder `.lop` (for example one `lopper prune` wrote).
//! Every Linear runs on the kernel the planner measured fastest at this batch's token count;
//! attention stays dense.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use lopper_model::bert::file::load;
use lopper_model::bert::{Bert, BertPlan, BertRunner};
use serde::Serialize;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model folder (config.json, model.safetensors, tokenizer.json) or encoder .lop file.
    pub model: PathBuf,
    /// A sentence to embed (repeatable).
    #[arg(long)]
    pub text: Vec<String>,
    /// A file with one sentence per line (empty lines are skipped).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Print the embeddings as JSON.
    #[arg(long)]
    pub json: bool,
    /// Threads for the Linear kernels.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Allow more threads than cores.
    #[arg(long)]
    pub threads_force: bool,
    /// Print NaN or infinite embeddings instead of failing on them.
    #[arg(long)]
    pub allow_nan: bool,
}

#[derive(Serialize)]
struct Embedding<'a> {
    text: &'a str,
    embedding: &'a [f32],
}

#[derive(Serialize)]
struct EmbedOutput<'a> {
    model: String,
    dim: usize,
    normalized: bool,
    embeddings: Vec<Embedding<'a>>,
}

/// Reads one sentence per non-empty line; an empty file is an error naming it.
pub fn read_lines(path: &Path, what: &str) -> anyhow::Result<Vec<String>> {
    let text = lopper_model::limits::read_text(path)
        .with_context(|| format!("{}: cannot read the {what} file", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if lines.is_empty() {
        anyhow::bail!("{}: the {what} file has no sentences", path.display());
    }
    Ok(lines)
}

/// Embeds `texts` with `runner`, `batch` sentences per pass: `[texts, hidden]`.
pub fn embed_all(
    runner: &mut BertRunner,
    texts: &[String],
    batch: usize,
) -> anyhow::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(texts.len() * runner.hidden());
    for chunk in texts.chunks(batch.max(1)) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let enc = runner.encode(&refs)?;
        out.extend(runner.embed(&enc)?);
    }
    Ok(out)
}

/// A runner for `bert` with every Linear planned by measurement at about `tokens` columns, the
/// plan checked over whole passes against all-dense kernels.
pub fn planned_runner(bert: Bert, tokens: usize, threads: usize) -> anyhow::Result<BertRunner> {
    let plan = BertPlan::make_verified(&bert, tokens.max(1), threads)?;
    Ok(BertRunner::new(bert, &plan)?)
}

pub fn run(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let mut texts = args.text.clone();
    if let Some(f) = &args.file {
        texts.extend(read_lines(f, "sentence")?);
    }
    if texts.is_empty() {
        anyhow::bail!("nothing to embed: give --text \"…\" (repeatable) or --file lines.txt");
    }
    if args.batch == 0 || args.batch > 4096 {
        anyhow::bail!("--batch takes 1 to 4096 sentences");
    }
    super::check_threads(args.threads, args.threads_force)?;
    let (bert, _) = load(&args.model)?;
    if !args.allow_nan {
        lopper_model::bert::verify::probe(&bert)
            .with_context(|| format!("{} (--allow-nan skips this check)", args.model.display()))?;
    }
    // Plan at a typical pass: this batch of sentences of about 24 tokens each.
    let tokens = args.batch.min(texts.len()) * 24;
    let mut runner = planned_runner(bert, tokens, args.threads)?;
    let e = embed_all(&mut runner, &texts, args.batch)?;
    let h = runner.hidden();
    if !args.allow_nan {
        super::check_finite(
            e.iter().copied(),
            &format!("{}: embeddings", args.model.display()),
        )?;
    }
    if args.json {
        let out = EmbedOutput {
            model: args.model.display().to_string(),
            dim: h,
            normalized: runner.bert().normalize,
            embeddings: texts
                .iter()
                .zip(e.chunks_exact(h))
                .map(|(t, v)| Embedding {
                    text: t,
                    embedding: v,
                })
                .collect(),
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for (t, v) in texts.iter().zip(e.chunks_exact(h)) {
            let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:+.4}")).collect();
            println!("[{} …] ({h} dims)  {t}", head.join(" "));
        }
        if texts.len() > 1 && texts.len() <= 8 {
            println!("\ncosine similarity:");
            for (i, a) in e.chunks_exact(h).enumerate() {
                let row: Vec<String> = e
                    .chunks_exact(h)
                    .map(|b| format!("{:.3}", lopper_model::oneshot::fidelity::cosine(a, b)))
                    .collect();
                println!("  {}: {}", i + 1, row.join("  "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
