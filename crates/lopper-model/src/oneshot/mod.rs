//! One-shot pruning of a pretrained encoder (and of any graph: [`graph`]) without retraining: magnitude, Wanda (Sun et al.
//! 2023: `|W_ij| · ‖X_j‖₂`, compared within each output row) and SparseGPT (OBS reconstruction,
//! [`sparsegpt`]), each unstructured or N:M.
//!
//! Layers are pruned in execution order and each is calibrated on the inputs it sees *after* the
//! layers before it were pruned: the calibration set runs through the partly pruned model up to
//! the layer's site (query, key and value share one input and one calibration pass). Weights are
//! `[out, in]`; calibration inputs are feature-major `[in, T]` over real (unpadded) tokens.

pub mod fidelity;
pub mod graph;
pub mod linalg;
pub mod sparsegpt;

use std::ops::ControlFlow;

use lopper_kernels::mask::{nm_mask, top_k_mask};
use lopper_kernels::{registry, Dense, Isa, Partition, WeightMatrix};
use serde::Serialize;

use crate::bert::{Bert, BertRunner, Encoded, LinearSite};
use crate::error::ModelError;

/// Which weights go.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Target {
    /// This fraction of each Linear (per layer for magnitude and SparseGPT, per output row for
    /// Wanda, as in the papers).
    Unstructured(f64),
    /// `n` kept in every `m` consecutive inputs of a row.
    Nm { n: usize, m: usize },
    /// This fraction of each Linear, removed in blocks of `rows` consecutive output rows that
    /// share one input column (`rows`x1 blocks): a block's score sums its entries' squared
    /// scores, and a block goes or stays whole. Sparse kernels then load each input row once per
    /// block instead of once per weight (the BSR 4x1 kernels).
    Block { sparsity: f64, rows: usize },
}

impl Target {
    pub fn sparsity(&self) -> f64 {
        match *self {
            Target::Unstructured(s) => s,
            Target::Nm { n, m } => 1.0 - n as f64 / m as f64,
            Target::Block { sparsity, .. } => sparsity,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Magnitude,
    Wanda,
    Sparsegpt,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "magnitude" => Ok(Method::Magnitude),
            "wanda" => Ok(Method::Wanda),
            "sparsegpt" => Ok(Method::Sparsegpt),
            _ => Err(format!(
                "unknown method '{s}': use magnitude, wanda or sparsegpt"
            )),
        }
    }
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::Sparsegpt => "sparsegpt",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub method: Method,
    pub target: Target,
    /// SparseGPT dampening, as a fraction of the mean Hessian diagonal (the paper's 0.01).
    pub damp: f64,
    /// SparseGPT block size (the paper's 128).
    pub block: usize,
    /// Sentences per calibration forward pass.
    pub batch: usize,
    /// SparseGPT: fit each layer to the dense model's outputs (see [`fit_dense_targets`])
    /// rather than to its own outputs on the pruned model's inputs.
    pub dense_targets: bool,
    /// SparseGPT: solve the kept weights of rows with at most this many kept entries exactly
    /// once the mask is chosen (0 turns it off).
    pub refit_max_kept: usize,
}

impl PruneOptions {
    pub fn new(method: Method, target: Target) -> Self {
        Self {
            method,
            target,
            damp: 0.01,
            block: 128,
            batch: 32,
            dense_targets: true,
            refit_max_kept: 1024,
        }
    }
}

/// Checks a target before any work: sparsity in `[0, 1)`, N:M with `0 < n < m <= 64`.
pub fn check_target(t: Target) -> Result<(), ModelError> {
    match t {
        Target::Unstructured(s) if (0.0..1.0).contains(&s) => Ok(()),
        Target::Unstructured(s) => Err(ModelError::Plan(format!("sparsity {s} is outside [0, 1)"))),
        Target::Nm { n, m } if n > 0 && n < m && m <= 64 => Ok(()),
        Target::Nm { n, m } => Err(ModelError::Plan(format!(
            "pattern {n}:{m} is not N:M with 0 < N < M <= 64"
        ))),
        Target::Block { sparsity, rows } if (1..=64).contains(&rows) => {
            check_target(Target::Unstructured(sparsity))
        }
        Target::Block { rows, .. } => Err(ModelError::Plan(format!(
            "blocks of {rows} rows: use 1 to 64 rows"
        ))),
    }
}

/// Calibration statistics of one Linear site: `H = Σ x xᵀ` (f64, `[in, in]`, only when
/// SparseGPT needs it) and `Σ x²` per input feature.
struct Stats {
    h: Option<Vec<f64>>,
    /// `C = Σ x_dense x_prunedᵀ` (`[in, in]`), when layers are fit to the dense model's outputs.
    cross: Option<Vec<f64>>,
    sq: Vec<f64>,
    tokens: usize,
}

/// `acc += A Bᵀ` for feature-major `a, b: [cols, t]`, through the dense kernel.
fn add_outer(
    acc: &mut [f64],
    a: &[f32],
    b: &[f32],
    cols: usize,
    t: usize,
) -> Result<(), ModelError> {
    let am = WeightMatrix::Dense(Dense::from_vec(cols, t, a.to_vec()).map_err(|source| {
        ModelError::Weight {
            name: "calibration inputs".into(),
            source,
        }
    })?);
    let mut bt = vec![0.0f32; t * cols];
    crate::runtime::ops::transpose(b, cols, t, &mut bt);
    let kernel = registry::select(&am, cols, Isa::selected())
        .ok_or_else(|| ModelError::Plan("no dense kernel".into()))?;
    let mut y = vec![0.0f32; cols * cols];
    lopper_kernels::execute(kernel, &am, &bt, cols, &mut y, &Partition::balanced(&am, 1)).map_err(
        |source| ModelError::Kernel {
            node: "calibration".into(),
            source,
        },
    )?;
    for (a, b) in acc.iter_mut().zip(&y) {
        *a += *b as f64;
    }
    Ok(())
}

impl Stats {
    fn new(cols: usize, hessian: bool, cross: bool) -> Self {
        Self {
            h: hessian.then(|| vec![0.0; cols * cols]),
            cross: cross.then(|| vec![0.0; cols * cols]),
            sq: vec![0.0; cols],
            tokens: 0,
        }
    }

    /// Adds one batch `x: [cols, t]` (the pruned model's inputs) and, for the cross term, the
    /// dense model's inputs `xd` for the same tokens.
    fn add(&mut self, x: &[f32], xd: Option<&[f32]>, t: usize) -> Result<(), ModelError> {
        let cols = self.sq.len();
        for (s, row) in self.sq.iter_mut().zip(x.chunks_exact(t)) {
            *s += row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>();
        }
        self.tokens += t;
        if let Some(h) = &mut self.h {
            add_outer(h, x, x, cols, t)?;
        }
        if let (Some(c), Some(xd)) = (&mut self.cross, xd) {
            add_outer(c, xd, x, cols, t)?;
        }
        Ok(())
    }
}

/// Prunes one `[rows, cols]` matrix in place.
fn prune_matrix(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    stats: Option<&Stats>,
    opts: &PruneOptions,
) -> Result<(), ModelError> {
    let keep = match (opts.method, stats) {
        (Method::Magnitude, _) => match opts.target {
            Target::Unstructured(s) => top_k_mask(w, s),
            Target::Nm { n, m } => nm_mask(w, cols, n, m),
            Target::Block { sparsity, rows: br } => {
                let abs: Vec<f32> = w.iter().map(|v| v.abs()).collect();
                row_block_mask(&abs, cols, br, sparsity, false)
            }
        },
        (Method::Wanda, Some(st)) => {
            let norm: Vec<f32> = st.sq.iter().map(|s| s.sqrt() as f32).collect();
            let scores: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(i, v)| v.abs() * norm[i % cols])
                .collect();
            match opts.target {
                Target::Unstructured(s) => scores
                    .chunks(cols)
                    .flat_map(|row| top_k_mask(row, s))
                    .collect(),
                Target::Nm { n, m } => nm_mask(&scores, cols, n, m),
                Target::Block { sparsity, rows: br } => {
                    row_block_mask(&scores, cols, br, sparsity, true)
                }
            }
        }
        (Method::Sparsegpt, Some(st)) => {
            let h = st.h.clone().ok_or_else(|| {
                ModelError::Plan("SparseGPT needs the calibration Hessian".into())
            })?;
            if let Some(c) = &st.cross {
                fit_dense_targets(w, rows, cols, &h, c, opts.damp)?;
            }
            let target = w.to_vec();
            sparsegpt::sparsegpt(w, rows, cols, h.clone(), opts.target, opts.damp, opts.block)?;
            if opts.refit_max_kept > 0 {
                refit_rows(w, &target, rows, cols, &h, opts.damp, opts.refit_max_kept);
            }
            return Ok(());
        }
        (_, None) => {
            return Err(ModelError::Plan(format!(
                "{} needs calibration inputs",
                opts.method.name()
            )))
        }
    };
    for (v, k) in w.iter_mut().zip(keep) {
        if !k {
            *v = 0.0;
        }
    }
    Ok(())
}

/// The keep-mask of `rows`x1 blocks for `scores: [R, cols]`: each block (`br` consecutive rows
/// of one column; the last group may be shorter) scores the sum of its entries' squared scores
/// (for magnitude, the block's squared L2 norm; for SparseGPT, the OBS loss of removing it
/// under the diagonal approximation), and the
/// `sparsity` fraction of blocks with the lowest scores goes, over the whole matrix or, with
/// `per_group`, within each group of rows (Wanda compares within output rows).
pub(crate) fn row_block_mask(
    scores: &[f32],
    cols: usize,
    br: usize,
    sparsity: f64,
    per_group: bool,
) -> Vec<bool> {
    let rows = scores.len() / cols.max(1);
    let groups = rows.div_ceil(br.max(1));
    let mut g = vec![0.0f32; groups * cols];
    for (r, row) in scores.chunks_exact(cols).enumerate() {
        for (a, s) in g[(r / br) * cols..(r / br + 1) * cols].iter_mut().zip(row) {
            *a += s * s;
        }
    }
    let keep_g: Vec<bool> = if per_group {
        g.chunks(cols)
            .flat_map(|row| top_k_mask(row, sparsity))
            .collect()
    } else {
        top_k_mask(&g, sparsity)
    };
    (0..rows * cols)
        .map(|i| keep_g[(i / cols / br) * cols + i % cols])
        .collect()
}

/// Replaces `W` by the least-squares fit of the dense model's outputs from the pruned model's
/// inputs, `W* = W C H⁻¹` with `C = Σ x_dense x_prunedᵀ` and `H = Σ x_pruned x_prunedᵀ` (damped
/// as SparseGPT damps it). SparseGPT's loss on `W*`, `‖(W* - W') X'‖²`, then equals
/// `‖W X - W' X'‖²` up to a constant: each layer repairs the drift of the layers pruned before
/// it instead of reproducing it.
fn fit_dense_targets(
    w: &mut [f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    c: &[f64],
    damp: f64,
) -> Result<(), ModelError> {
    let mut hd = h.to_vec();
    let mean_diag = linalg::mean_diagonal(h, cols);
    for i in 0..cols {
        if hd[i * cols + i] == 0.0 {
            hd[i * cols + i] = 1.0;
        }
        hd[i * cols + i] += damp * mean_diag;
    }
    let Some(l) = linalg::cholesky_lower(&hd, cols) else {
        // Leave W as it is; SparseGPT raises the dampening itself.
        return Ok(());
    };
    let hinv = linalg::inverse_from_cholesky(&l, cols);
    // A = C H⁻¹, then W* = W A, both as row updates.
    let mut a = vec![0.0f64; cols * cols];
    for i in 0..cols {
        let (ci, ai) = (
            &c[i * cols..(i + 1) * cols],
            &mut a[i * cols..(i + 1) * cols],
        );
        for (k, &v) in ci.iter().enumerate() {
            if v != 0.0 {
                linalg::axpy(ai, v, &hinv[k * cols..(k + 1) * cols]);
            }
        }
    }
    let mut out = vec![0.0f64; cols];
    for r in 0..rows {
        out.fill(0.0);
        for (k, &v) in w[r * cols..(r + 1) * cols].iter().enumerate() {
            if v != 0.0 {
                linalg::axpy(&mut out, v as f64, &a[k * cols..(k + 1) * cols]);
            }
        }
        for (o, v) in w[r * cols..(r + 1) * cols].iter_mut().zip(&out) {
            *o = *v as f32;
        }
    }
    Ok(())
}

/// With the mask SparseGPT chose fixed, solves each row's kept weights exactly: minimises
/// `(w' - w*)ᵀ H (w' - w*)` over the kept entries, i.e. `H_SS w'_S = (H w*)_S`. SparseGPT only
/// updates the columns after the one it prunes, so its kept weights are not the optimum for
/// the final mask. Rows keeping more than `max_kept` entries are left as they are (the solve
/// costs `kept³/3` per row).
fn refit_rows(
    w: &mut [f32],
    target: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    damp: f64,
    max_kept: usize,
) {
    let mean_diag = linalg::mean_diagonal(h, cols);
    let lambda = damp * mean_diag;
    for r in 0..rows {
        let row = &mut w[r * cols..(r + 1) * cols];
        let kept: Vec<usize> = (0..cols).filter(|&j| row[j] != 0.0).collect();
        let k = kept.len();
        if k == 0 || k > max_kept {
            continue;
        }
        let t: Vec<f64> = target[r * cols..(r + 1) * cols]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let mut hs = vec![0.0f64; k * k];
        let mut b = vec![0.0f64; k];
        for (a, &i) in kept.iter().enumerate() {
            let hrow = &h[i * cols..(i + 1) * cols];
            for (c, &j) in kept.iter().enumerate() {
                hs[a * k + c] = hrow[j];
            }
            hs[a * k + a] += lambda;
            // (H_damped t)_i; the damping term keeps the fit from drifting where H is flat.
            b[a] = linalg::dot(hrow, &t) + lambda * t[i];
        }
        let Some(l) = linalg::cholesky_lower(&hs, k) else {
            continue;
        };
        linalg::cholesky_solve(&l, k, &mut b);
        if b.iter().all(|v| v.is_finite()) {
            for (&i, &v) in kept.iter().zip(&b) {
                // A kept weight that solves to exactly zero would read as pruned; keep it tiny.
                row[i] = if v == 0.0 {
                    f32::MIN_POSITIVE
                } else {
                    v as f32
                };
            }
        }
    }
}

/// What pruning did to each Linear.
#[derive(Debug, Clone, Serialize)]
pub struct PrunedLayer {
    pub name: String,
    pub shape: [usize; 2],
    pub sparsity: f64,
    /// Relative reconstruction error on the calibration inputs, `‖W'X - WX‖ / ‖WX‖` (from
    /// `H`; only with SparseGPT, which computes `H` anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rel_error: Option<f64>,
    /// Why the layer was not pruned, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `‖(W' - W) X‖² / ‖W X‖²` computed as `Σ_r dᵣᵀ H dᵣ / Σ_r wᵣᵀ H wᵣ`.
fn rel_error(before: &[f32], after: &[f32], cols: usize, h: &[f64]) -> f64 {
    let quad = |v: &[f64]| -> f64 {
        let mut s = 0.0;
        for (i, vi) in v.iter().enumerate() {
            if *vi != 0.0 {
                s += vi * linalg::dot(&h[i * cols..(i + 1) * cols], v);
            }
        }
        s
    };
    let (mut num, mut den) = (0.0, 0.0);
    for (b, a) in before.chunks(cols).zip(after.chunks(cols)) {
        let d: Vec<f64> = b.iter().zip(a).map(|(x, y)| (*y - *x) as f64).collect();
        let w: Vec<f64> = b.iter().map(|x| *x as f64).collect();
        num += quad(&d);
        den += quad(&w);
    }
    if den > 0.0 {
        (num / den).max(0.0).sqrt()
    } else {
        0.0
    }
}

/// Prunes every encoder Linear of `bert` in sequence, calibrating on `calib` (already tokenized).
/// `progress` is called after each layer with its record.
pub fn prune_bert(
    bert: Bert,
    calib: &Encoded,
    opts: &PruneOptions,
    progress: &mut dyn FnMut(&PrunedLayer),
) -> Result<(Bert, Vec<PrunedLayer>), ModelError> {
    check_target(opts.target)?;
    if let Target::Nm { m, .. } = opts.target {
        let h = bert.config.hidden_size;
        let f = bert.config.intermediate_size;
        if !h.is_multiple_of(m) || !f.is_multiple_of(m) {
            return Err(ModelError::Plan(format!(
                "N:M needs every Linear's input width ({h}, {f}) to be a multiple of M = {m}"
            )));
        }
    }
    let needs_calib = opts.method != Method::Magnitude;
    if needs_calib && calib.tokens() == 0 {
        return Err(ModelError::Plan("the calibration set is empty".into()));
    }
    let layers = bert.config.num_hidden_layers;
    let mut dense = if opts.method == Method::Sparsegpt && opts.dense_targets {
        Some(BertRunner::stored(bert.clone())?)
    } else {
        None
    };
    let mut bert = bert;
    let mut records = Vec::new();
    // Sites in execution order: (index of the first Linear, how many share the input).
    let sites = [(0usize, 3usize), (3, 1), (4, 1), (5, 1)];
    for li in 0..layers {
        for &(first, count) in &sites {
            let stats = if needs_calib {
                Some(calibrate(
                    &bert,
                    dense.as_mut(),
                    calib,
                    LinearSite {
                        layer: li,
                        index: first,
                    },
                    opts,
                )?)
            } else {
                None
            };
            for idx in first..first + count {
                let name = format!("encoder.layer.{li}.{}", crate::bert::LINEAR_SUFFIXES[idx]);
                let lin = &mut bert.layers[li].linears_mut()[idx];
                let (rows, cols) = (lin.w.rows(), lin.w.cols());
                let before = lin.w.to_dense().into_vec();
                let mut w = before.clone();
                prune_matrix(&mut w, rows, cols, stats.as_ref(), opts)?;
                let zeros = w.iter().filter(|v| **v == 0.0).count();
                let rel = stats
                    .as_ref()
                    .and_then(|s| s.h.as_ref())
                    .map(|h| rel_error(&before, &w, cols, h));
                lin.w = WeightMatrix::Dense(Dense::from_vec(rows, cols, w).map_err(|source| {
                    ModelError::Weight {
                        name: name.clone(),
                        source,
                    }
                })?);
                let rec = PrunedLayer {
                    name,
                    shape: [rows, cols],
                    sparsity: zeros as f64 / (rows * cols) as f64,
                    rel_error: rel,
                    note: None,
                };
                progress(&rec);
                records.push(rec);
            }
        }
    }
    Ok((bert, records))
}

/// Runs the calibration set through `bert` (as pruned so far) up to `site`, in batches; with
/// `dense`, also through the dense model, for the cross term of [`fit_dense_targets`].
fn calibrate(
    bert: &Bert,
    mut dense: Option<&mut BertRunner>,
    calib: &Encoded,
    site: LinearSite,
    opts: &PruneOptions,
) -> Result<Stats, ModelError> {
    let cols = bert.layers[site.layer].linears()[site.index].w.cols();
    let mut stats = Stats::new(cols, opts.method == Method::Sparsegpt, dense.is_some());
    let mut runner = BertRunner::stored(bert.clone())?;
    let mut failure = None;
    let hidden = bert.config.hidden_size;
    for chunk in calib
        .offsets
        .windows(2)
        .collect::<Vec<_>>()
        .chunks(opts.batch.max(1))
    {
        let (start, end) = (chunk[0][0], chunk[chunk.len() - 1][1]);
        let enc = Encoded {
            ids: calib.ids[start..end].to_vec(),
            offsets: std::iter::once(0)
                .chain(chunk.iter().map(|w| w[1] - start))
                .collect(),
        };
        let mut out = vec![0.0; enc.batch() * hidden];
        let mut xd: Option<Vec<f32>> = None;
        if let Some(d) = dense.as_deref_mut() {
            d.forward(&enc, &mut out, &mut |s, x, _| {
                if s == site {
                    xd = Some(x.to_vec());
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        }
        runner.forward(&enc, &mut out, &mut |s, x, t| {
            if s == site {
                if let Err(e) = stats.add(x, xd.as_deref(), t) {
                    failure = Some(e);
                }
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests;
