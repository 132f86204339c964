//! Running an encoder: tokenization, a per-Linear plan (format and kernel chosen by measuring
//! every candidate at the run's token width, as the graph planner does), and the forward pass.
//! Attention matmuls stay dense; every Linear runs on its planned kernel.
//!
//! Sequences are packed without padding (see [`super::ops`]), so a sentence's embedding does not
//! depend on the other sentences of its batch.

use std::ops::ControlFlow;

use lopper_kernels::bench::measure_kernel;
use lopper_kernels::{registry, Dtype, FormatKind, Isa};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::{ops, Bert, Pooling};
use crate::convert::encode_as;
use crate::error::ModelError;
use crate::runtime::exec::{Matmul, MmKernel};
use crate::runtime::plan::{activations, candidate_kinds, planner_timing, PlanMode};
use crate::runtime::pools::shared_pool;

/// Parses a `tokenizer.json` with lopper's settings (no padding, no truncation).
///
/// The `tokenizers` crate (0.21.4) panics on some malformed files instead of returning an error
/// (an `expect` in its decoder deserialisation, found by the `tokenizer` fuzz target), so the
/// parse runs under `catch_unwind` and a panic becomes an error. The binary's panic hook keeps
/// such caught panics quiet ([`TOKENIZERS_PANIC`] names the crate's source path).
pub fn parse_tokenizer(json: &str) -> Result<Tokenizer, ModelError> {
    let parsed = std::panic::catch_unwind(|| json.parse::<Tokenizer>()).map_err(|p| {
        ModelError::Config(format!(
            "tokenizer.json does not parse: {}",
            panic_text(&*p)
        ))
    })?;
    let mut t: Tokenizer =
        parsed.map_err(|e| ModelError::Config(format!("tokenizer.json does not parse: {e}")))?;
    // lopper packs sequences itself, so the file's fixed padding would add fake tokens; and it
    // truncates to the model's `max_seq_len` (sentence-transformers' limit), not the file's.
    t.with_padding(None);
    t.with_truncation(None)
        .map_err(|e| ModelError::Config(format!("tokenizer.json: {e}")))?;
    Ok(t)
}

/// Tokenizes `text` (special tokens added). As with [`parse_tokenizer`], a panic inside the
/// tokenizers crate (a malformed but parsable `tokenizer.json` can cause one) becomes an error.
pub fn encode_text(t: &Tokenizer, text: &str) -> Result<Vec<u32>, ModelError> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.encode(text, true)));
    match r {
        Ok(Ok(e)) => Ok(e.get_ids().to_vec()),
        Ok(Err(e)) => Err(ModelError::Config(format!("tokenizer: {e}"))),
        Err(p) => Err(ModelError::Config(format!(
            "tokenizer.json: the tokenizers crate failed on this text: {}",
            panic_text(&*p)
        ))),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("a panic inside the tokenizers crate");
    crate::limits::clip(what, 300)
}

/// Part of the source path of every panic [`parse_tokenizer`] and [`encode_text`] catch.
pub const TOKENIZERS_PANIC: &str = "/tokenizers-";

/// Token ids of a batch of texts, packed: text `b` is `ids[offsets[b]..offsets[b + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub offsets: Vec<usize>,
}

impl Encoded {
    pub fn batch(&self) -> usize {
        self.offsets.len() - 1
    }
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }
    pub fn max_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
    /// `batch` copies of one sequence of `len` ids (benchmarks: fixed-length inputs).
    pub fn synthetic(batch: usize, len: usize, vocab: usize) -> Self {
        // Ids from 1000 up skip BERT's special and unused tokens; a small vocabulary starts at
        // its middle instead, so every id stays inside it.
        let first = 1000.min(vocab / 2);
        let span = vocab.saturating_sub(first).max(1);
        let ids = (0..batch * len)
            .map(|i| (first + (i * 7919) % span) as u32)
            .collect();
        Encoded {
            ids,
            offsets: (0..=batch).map(|b| b * len).collect(),
        }
    }
}

/// The kernel chosen for one Linear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearChoice {
    pub name: String,
    pub format: FormatKind,
    pub dtype: Dtype,
    pub kernel: String,
    /// Threads this layer's rows are split over (1 when splitting measured slower).
    pub parts: usize,
    pub ns: f64,
    /// Every candidate measured: `(format, "kernel xPARTS", ns)`.
    pub candidates: Vec<(FormatKind, String, f64)>,
}

/// A plan for one token width and thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertPlan {
    pub tokens: usize,
    pub threads: usize,
    pub isa: String,
    pub layers: Vec<LinearChoice>,
    /// `per-layer`, or `dense` when [`BertPlan::make_verified`] timed the all-dense plan faster
    /// over a whole forward pass.
    #[serde(default)]
    pub chosen: String,
    /// Median nanoseconds of a whole forward pass per candidate plan, when verified.
    #[serde(default)]
    pub end_to_end_ns: Vec<(String, f64)>,
}

impl BertPlan {
    /// Measures every candidate format and kernel of every Linear at `tokens` columns
    /// (`Measured`), or keeps each stored format with its preferred kernel (`Stored`, also the
    /// dense baseline when the model is dense).
    pub fn make(
        bert: &Bert,
        tokens: usize,
        threads: usize,
        mode: PlanMode,
    ) -> Result<Self, ModelError> {
        if tokens == 0 || threads == 0 {
            return Err(ModelError::Plan(
                "tokens and threads must be at least 1".into(),
            ));
        }
        let isa = Isa::selected();
        let pool = shared_pool(threads)?;
        let single = shared_pool(1)?;
        let timing = planner_timing();
        // Linears run in column tiles, so they are measured at one tile's width.
        let width = tokens.min(TOKEN_TILE);
        let mut layers = Vec::new();
        for (name, lin) in bert.linears() {
            let stored = &lin.w;
            let x = activations(stored.cols() * width);
            let mut best: Option<LinearChoice> = None;
            let mut candidates = Vec::new();
            for (kind, dtype) in candidate_kinds(stored, mode) {
                let Ok(w) = (if kind == stored.kind() && dtype == stored.dtype() {
                    Ok(stored.clone())
                } else {
                    encode_as(&name, stored, kind, dtype)
                }) else {
                    continue;
                };
                // Per format, only kernels of the best ISA that has one: a portable kernel
                // never beats its AVX twin, and measuring it would double the planning time.
                let all: Vec<_> = registry::candidates(&w, width, isa).collect();
                let top = all.iter().map(|k| k.isa).max();
                let kernels: Vec<_> = all.into_iter().filter(|k| Some(k.isa) == top).collect();
                let kernels = if mode != PlanMode::Stored {
                    kernels
                } else {
                    kernels.into_iter().take(1).collect()
                };
                // With several threads, each kernel is also timed unsplit: on machines whose
                // threads share a core (2-vCPU guests), splitting a cache-bound layer loses.
                let splits: &[usize] = if threads > 1 && mode != PlanMode::Stored {
                    &[1, threads]
                } else {
                    &[threads]
                };
                for k in kernels {
                    for &parts in splits {
                        let ns = if mode != PlanMode::Stored {
                            let p = if parts == threads { &pool } else { &single };
                            measure_kernel(k, std::slice::from_ref(&w), &x, width, p, &timing)
                                .map_err(|source| ModelError::Kernel {
                                    node: name.clone(),
                                    source,
                                })?
                                .median_ns
                        } else {
                            0.0
                        };
                        candidates.push((kind, format!("{} x{parts}", k.name), ns));
                        if best.as_ref().is_none_or(|b| ns < b.ns) {
                            best = Some(LinearChoice {
                                name: name.clone(),
                                format: kind,
                                dtype,
                                kernel: k.name.to_string(),
                                parts,
                                ns,
                                candidates: Vec::new(),
                            });
                        }
                    }
                }
            }
            let mut choice = best
                .ok_or_else(|| ModelError::Plan(format!("{name}: no kernel runs this weight")))?;
            choice.candidates = candidates;
            layers.push(choice);
        }
        Ok(BertPlan {
            tokens,
            threads,
            isa: isa.name().to_string(),
            layers,
            chosen: "per-layer".into(),
            end_to_end_ns: Vec::new(),
        })
    }
}

/// An encoder compiled for one plan: Linear weights in their planned formats, and scratch
/// buffers that grow to the largest batch seen and are then reused.
pub struct BertRunner {
    bert: Bert,
    tokenizer: Tokenizer,
    /// Six per block, in [`super::LINEAR_SUFFIXES`] order.
    linears: Vec<Matmul>,
    /// The shared pool attention heads split over, with more than one thread.
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    ws: Workspace,
    /// Accumulated nanoseconds per [`PROFILE_STEPS`] entry while profiling.
    profile_ns: Option<[f64; 6]>,
}

/// The step kinds [`BertRunner::profile`] reports.
pub const PROFILE_STEPS: [&str; 6] = [
    "embed",
    "linear",
    "attention",
    "layernorm",
    "gelu+add",
    "pool",
];

#[derive(Default)]
struct Workspace {
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    ffn: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    att: Vec<f32>,
    /// Per thread, one column tile of a Linear's input and output (see [`TOKEN_TILE`]).
    tiles: Vec<(Vec<f32>, Vec<f32>)>,
}

/// Tokens per Linear call. A wider product streams its `[in, T]` input from memory once per
/// nonzero row instead of from L2 (1536 features x 128 tokens is 768 KiB), so wider batches run
/// in column tiles of this many tokens, copied to and from contiguous scratch.
pub const TOKEN_TILE: usize = 128;

/// Elements per parallel GELU task: large enough that a task outweighs its scheduling.
const GELU_CHUNK: usize = 16 * 1024;

/// `y = W x + b` for `x: [in, t]`, `y: [out, t]`, in column tiles of [`TOKEN_TILE`] tokens.
/// With a scratch pair per thread (and inside the pool, see [`BertRunner::forward`]), thread `i`
/// takes tiles `i, i + threads, ...`: each thread works on its own tokens, so the input it
/// copies and the output it writes stay in its own cache, where splitting one tile's rows over
/// the threads would make every thread read the whole tile.
fn linear(
    mm: &Matmul,
    x: &[f32],
    t: usize,
    y: &mut [f32],
    tiles: &mut [(Vec<f32>, Vec<f32>)],
) -> Result<(), ModelError> {
    if t <= TOKEN_TILE {
        return mm.run_width(x, t, y);
    }
    let (rows, cols) = (mm.w.rows(), mm.w.cols());
    if y.len() < rows * t || x.len() < cols * t {
        return Err(ModelError::Plan(format!(
            "a Linear's activations are shorter than [{cols}, {t}] in or [{rows}, {t}] out"
        )));
    }
    let n_tiles = t.div_ceil(TOKEN_TILE);
    let workers = tiles.len().clamp(1, n_tiles);
    let out = SharedOut(y.as_mut_ptr(), y.len());
    let run = |i: usize, (tx, ty): &mut (Vec<f32>, Vec<f32>)| -> Result<(), ModelError> {
        grow(tx, cols * TOKEN_TILE);
        grow(ty, rows * TOKEN_TILE);
        for c0 in (i * TOKEN_TILE..t).step_by(workers * TOKEN_TILE) {
            let w = TOKEN_TILE.min(t - c0);
            for (dst, src) in tx.chunks_exact_mut(w).zip(x.chunks_exact(t)) {
                dst.copy_from_slice(&src[c0..c0 + w]);
            }
            mm.run_width(&tx[..cols * w], w, &mut ty[..rows * w])?;
            for (r, src) in ty[..rows * w].chunks_exact(w).enumerate() {
                // SAFETY: `y` is `[rows, t]` (checked by `SharedOut::row_cols`); tasks write
                // disjoint column ranges `c0..c0 + w` of it, and `y` outlives them.
                unsafe { out.row_cols(r * t + c0, w) }.copy_from_slice(src);
            }
        }
        Ok(())
    };
    if workers == 1 {
        return run(0, &mut tiles[0]);
    }
    tiles[..workers]
        .par_iter_mut()
        .enumerate()
        .try_for_each(|(i, pair)| run(i, pair))
}

/// The output of [`linear`], written by several tasks at disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32, usize);

// SAFETY: tasks only write through `row_cols` at disjoint ranges (see `linear`).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `start + len` is within the slice this was made from, and no other task touches the
    /// range while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row_cols(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.1, "write past the activations");
        // SAFETY: in bounds (asserted); exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// Sees each Linear site's input `[in, T]` (with `T`) before it runs; `Break` ends the pass.
pub type CalibrationHook<'a> = dyn FnMut(LinearSite, &[f32], usize) -> ControlFlow<()> + Send + 'a;

/// Which Linear a calibration hook sees: block index and position in
/// [`super::LINEAR_SUFFIXES`]. Query, key and value share one input, reported once as index 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearSite {
    pub layer: usize,
    pub index: usize,
}

impl BertRunner {
    pub fn new(bert: Bert, plan: &BertPlan) -> Result<Self, ModelError> {
        let names = bert.linears();
        if plan.layers.len() != names.len() {
            return Err(ModelError::Plan(format!(
                "the plan has {} Linear layers, the model {}",
                plan.layers.len(),
                names.len()
            )));
        }
        let mut linears = Vec::with_capacity(names.len());
        for ((name, lin), choice) in names.iter().zip(&plan.layers) {
            let err = |m: String| ModelError::Plan(format!("{name}: {m}"));
            if &choice.name != name {
                return Err(err(format!("the plan names '{}' here", choice.name)));
            }
            let (kind, dtype) = (choice.format, choice.dtype);
            let w = if kind == lin.w.kind() && dtype == lin.w.dtype() {
                lin.w.clone()
            } else {
                encode_as(name, &lin.w, kind, dtype)?
            };
            let kernel = registry::by_name(&choice.kernel)
                .ok_or_else(|| err(format!("unknown kernel '{}'", choice.kernel)))?;
            linears.push(Matmul::new(
                name,
                w,
                MmKernel::Gemm(kernel),
                choice.parts.clamp(1, plan.threads.max(1)),
                Some(lin.bias.clone()),
                plan.tokens,
            )?);
        }
        let tokenizer = parse_tokenizer(&bert.tokenizer_json)?;
        Ok(Self {
            bert,
            tokenizer,
            linears,
            pool: if plan.threads > 1 {
                Some(shared_pool(plan.threads)?)
            } else {
                None
            },
            ws: Workspace::default(),
            profile_ns: None,
        })
    }

    /// Mean nanoseconds per step kind over `iters` forward passes of `enc`.
    pub fn profile(
        &mut self,
        enc: &Encoded,
        iters: usize,
    ) -> Result<Vec<(&'static str, f64)>, ModelError> {
        let mut out = vec![0.0; enc.batch() * self.hidden()];
        self.profile_ns = Some([0.0; 6]);
        for _ in 0..iters.max(1) {
            self.forward(enc, &mut out, &mut |_, _, _| ControlFlow::Continue(()))?;
        }
        let ns = self.profile_ns.take().unwrap_or_default();
        Ok(PROFILE_STEPS
            .iter()
            .zip(ns)
            .map(|(k, v)| (*k, v / iters.max(1) as f64))
            .collect())
    }

    /// A runner on each weight's stored format with its preferred kernel, one thread, nothing
    /// measured: for calibration and fidelity passes, where start-up matters more than speed.
    pub fn stored(bert: Bert) -> Result<Self, ModelError> {
        let plan = BertPlan::make(&bert, TOKEN_TILE, 1, PlanMode::Stored)?;
        Self::new(bert, &plan)
    }

    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    pub fn hidden(&self) -> usize {
        self.bert.config.hidden_size
    }

    /// Tokenizes `texts` (special tokens added, truncated to the model's `max_seq_len`).
    pub fn encode(&self, texts: &[&str]) -> Result<Encoded, ModelError> {
        let mut ids = Vec::new();
        let mut offsets = vec![0];
        let max = self.bert.max_seq_len;
        for t in texts {
            let mut v = encode_text(&self.tokenizer, t)?;
            if v.len() > max {
                // Keep [CLS] ... and the final [SEP], as the tokenizer's own truncation does.
                let last = *v.last().unwrap_or(&0);
                v.truncate(max - 1);
                v.push(last);
            }
            ids.extend_from_slice(&v);
            offsets.push(ids.len());
        }
        Ok(Encoded { ids, offsets })
    }

    /// Mean- or CLS-pooled vectors `[B, hidden]`, before any normalisation.
    pub fn pooled(&mut self, enc: &Encoded) -> Result<Vec<f32>, ModelError> {
        let mut out = vec![0.0; enc.batch() * self.hidden()];
        self.forward(enc, &mut out, &mut |_, _, _| ControlFlow::Continue(()))?;
        Ok(out)
    }

    /// Sentence embeddings `[B, hidden]`: pooled, then L2-normalised if the model says so.
    pub fn embed(&mut self, enc: &Encoded) -> Result<Vec<f32>, ModelError> {
        let mut out = self.pooled(enc)?;
        if self.bert.normalize {
            ops::l2_normalize(&mut out, self.hidden());
        }
        Ok(out)
    }

    /// The forward pass. Before each Linear group runs, `hook` sees its site and its input
    /// `[in, T]`; returning `Break` stops the pass there (calibration needs no more).
    pub fn forward(
        &mut self,
        enc: &Encoded,
        out: &mut [f32],
        hook: &mut CalibrationHook<'_>,
    ) -> Result<(), ModelError> {
        // With several threads the whole pass runs on a pool worker: each split Linear then
        // starts on the thread that is already running instead of waking a worker to take the
        // call over (a cross-CPU wake-up per Linear, which virtual machines make expensive).
        match self.pool.clone() {
            Some(p) => p.install(|| self.forward_here(enc, out, hook)),
            None => self.forward_here(enc, out, hook),
        }
    }

    fn forward_here(
        &mut self,
        enc: &Encoded,
        out: &mut [f32],
        hook: &mut CalibrationHook<'_>,
    ) -> Result<(), ModelError> {
        let c = &self.bert.config;
        let (h, f, t) = (c.hidden_size, c.intermediate_size, enc.tokens());
        if enc.offsets.first() != Some(&0) || enc.offsets.last() != Some(&t) {
            return Err(ModelError::Plan(
                "token offsets do not cover the ids".into(),
            ));
        }
        if let Some(bad) = enc.ids.iter().find(|&&i| i as usize >= c.vocab_size) {
            // Ids come from the model's own tokenizer: one past the embedding table means the
            // tokenizer (tokenizer.json) and the weights (config.json `vocab_size`) do not match.
            return Err(ModelError::Config(format!(
                "token id {bad} is outside the model's vocabulary of {} (config.json \
                 vocab_size): the tokenizer (tokenizer.json) does not belong to these weights",
                c.vocab_size
            )));
        }
        let max_len = enc.max_len();
        if max_len > c.max_position_embeddings {
            return Err(ModelError::Plan(format!(
                "a sequence of {max_len} tokens is longer than the {} positions",
                c.max_position_embeddings
            )));
        }
        let profiling = self.profile_ns.is_some();
        let mut prof = [0.0f64; 6];
        let mut clock = std::time::Instant::now();
        // Charges the time since the last call to step kind `k` (only while profiling).
        let mut tick = |k: usize| {
            if profiling {
                let now = std::time::Instant::now();
                prof[k] += (now - clock).as_nanos() as f64;
                clock = now;
            }
        };
        let threads = self.pool.as_ref().map_or(1, |p| p.current_num_threads());
        let ws = &mut self.ws;
        if ws.tiles.len() != threads {
            ws.tiles.resize_with(threads, Default::default);
        }
        for buf in [
            &mut ws.x,
            &mut ws.q,
            &mut ws.k,
            &mut ws.v,
            &mut ws.ctx,
            &mut ws.tmp,
        ] {
            grow(buf, h * t);
        }
        grow(&mut ws.ffn, f * t);
        grow(&mut ws.mean, t);
        grow(&mut ws.rstd, t);
        let att_len = ops::attention_scratch(max_len).max(1);
        grow(&mut ws.att, att_len * c.num_attention_heads);
        let b = &self.bert;
        ops::embed(
            &b.word,
            &b.position,
            &b.token_type,
            h,
            &enc.ids,
            &enc.offsets,
            &mut ws.x[..h * t],
        );
        tick(0);
        let eps = c.layer_norm_eps;
        ops::layer_norm(
            &mut ws.x[..h * t],
            &b.emb_ln,
            eps,
            t,
            &mut ws.mean,
            &mut ws.rstd,
        );
        tick(3);
        for (li, layer) in b.layers.iter().enumerate() {
            let mm = &self.linears[li * 6..li * 6 + 6];
            let site = |index| LinearSite { layer: li, index };
            let x = &ws.x[..h * t];
            if hook(site(0), x, t).is_break() {
                return Ok(());
            }
            linear(&mm[0], x, t, &mut ws.q[..h * t], &mut ws.tiles)?;
            linear(&mm[1], x, t, &mut ws.k[..h * t], &mut ws.tiles)?;
            linear(&mm[2], x, t, &mut ws.v[..h * t], &mut ws.tiles)?;
            tick(1);
            let (hq, hk, hv) = (&ws.q[..h * t], &ws.k[..h * t], &ws.v[..h * t]);
            let dh = c.head_dim();
            let heads = ws.ctx[..h * t]
                .chunks_mut(dh * t)
                .zip(ws.att.chunks_mut(att_len));
            let run_head = |(hd, (ctx, scores)): (usize, (&mut [f32], &mut [f32]))| {
                ops::attention_head(hq, hk, hv, hd, dh, &enc.offsets, ctx, scores)
            };
            let r: Result<(), lopper_kernels::KernelError> = match &self.pool {
                // Heads own disjoint rows of ctx, so they split over threads as they are.
                Some(p) => p.install(|| {
                    heads
                        .enumerate()
                        .collect::<Vec<_>>()
                        .into_par_iter()
                        .try_for_each(run_head)
                }),
                None => heads.enumerate().try_for_each(run_head),
            };
            r.map_err(|source| ModelError::Kernel {
                node: format!("encoder.layer.{li}.attention"),
                source,
            })?;
            tick(2);
            if hook(site(3), &ws.ctx[..h * t], t).is_break() {
                return Ok(());
            }
            linear(
                &mm[3],
                &ws.ctx[..h * t],
                t,
                &mut ws.tmp[..h * t],
                &mut ws.tiles,
            )?;
            tick(1);
            // Post-LN residual: x = LayerNorm(x + sublayer(x)).
            ops::add_into(&mut ws.x[..h * t], &ws.tmp[..h * t]);
            tick(4);
            ops::layer_norm(
                &mut ws.x[..h * t],
                &layer.attn_ln,
                eps,
                t,
                &mut ws.mean,
                &mut ws.rstd,
            );
            tick(3);
            if hook(site(4), &ws.x[..h * t], t).is_break() {
                return Ok(());
            }
            linear(
                &mm[4],
                &ws.x[..h * t],
                t,
                &mut ws.ffn[..f * t],
                &mut ws.tiles,
            )?;
            tick(1);
            if self.pool.is_some() {
                // Inside the pool (see `forward`): the chunks split over its workers.
                ws.ffn[..f * t]
                    .par_chunks_mut(GELU_CHUNK)
                    .for_each(ops::gelu);
            } else {
                ops::gelu(&mut ws.ffn[..f * t]);
            }
            tick(4);
            if hook(site(5), &ws.ffn[..f * t], t).is_break() {
                return Ok(());
            }
            linear(
                &mm[5],
                &ws.ffn[..f * t],
                t,
                &mut ws.tmp[..h * t],
                &mut ws.tiles,
            )?;
            tick(1);
            // Post-LN residual: x = LayerNorm(x + sublayer(x)).
            ops::add_into(&mut ws.x[..h * t], &ws.tmp[..h * t]);
            tick(4);
            ops::layer_norm(
                &mut ws.x[..h * t],
                &layer.out_ln,
                eps,
                t,
                &mut ws.mean,
                &mut ws.rstd,
            );
            tick(3);
        }
        ops::pool(
            &ws.x[..h * t],
            h,
            &enc.offsets,
            b.pooling == Pooling::Cls,
            out,
        );
        tick(5);
        if let Some(p) = &mut self.profile_ns {
            for (a, b) in p.iter_mut().zip(prof) {
                *a += b;
            }
        }
        Ok(())
    }
}
