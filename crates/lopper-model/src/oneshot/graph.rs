//! One-shot pruning of any graph model (imported ONNX or lopper's own): every Linear (MatMul and
//! Gemm with a constant weight) and every plain convolution (through its `[out, in*kh*kw]`
//! view) is pruned with the encoder path's methods ([`super::prune_matrix`]).
//!
//! Layers are pruned in execution order. With calibration inputs (Wanda, SparseGPT), each layer's
//! inputs come from running the model *as pruned so far* up to that layer: the graph is cut at
//! the layer's input value and run by the ordinary executor, in chunks of
//! [`PruneOptions::batch`] examples. A convolution's calibration inputs are its im2col patches,
//! `[in*kh*kw, OH*OW*n]`, so the statistics are those of the matrix the kernels multiply.
//!
//! Grouped and dilated convolutions are left dense: the runtime runs them with one dense loop,
//! so their zeros would cost accuracy and save no time.

use std::collections::BTreeMap;

use lopper_kernels::{Dense, WeightMatrix};

use super::{
    check_target, prune_matrix, rel_error, Method, PruneOptions, PrunedLayer, Stats, Target,
};
use crate::error::ModelError;
use crate::file::Model;
use crate::graph::{Graph, Op};
use crate::runtime::ops::{self, Window};
use crate::runtime::plan::{make_plan, PlanMode};
use crate::runtime::Executor;

/// What to prune in a graph, beyond [`PruneOptions`].
#[derive(Debug, Clone, Default)]
pub struct GraphTargets {
    /// Node or weight names left dense.
    pub skip: Vec<String>,
    /// Node or weight name to its own target (instead of `PruneOptions::target`).
    pub per_layer: BTreeMap<String, Target>,
}

/// Prunes `model`; `calib` holds `[n, input size]` model inputs (needed by Wanda and SparseGPT).
/// `progress` gets each layer's record as it is done.
pub fn prune_graph(
    model: &Model,
    calib: Option<&[f32]>,
    opts: &PruneOptions,
    targets: &GraphTargets,
    progress: &mut dyn FnMut(&PrunedLayer),
) -> Result<(Model, Vec<PrunedLayer>), ModelError> {
    check_target(opts.target)?;
    for t in targets.per_layer.values() {
        check_target(*t)?;
    }
    let names: Vec<(&str, &str)> = model
        .graph
        .nodes
        .iter()
        .filter_map(|n| n.op.weight().map(|w| (n.name.as_str(), w)))
        .collect();
    for name in targets.skip.iter().chain(targets.per_layer.keys()) {
        if !names.iter().any(|(n, w)| n == name || w == name) {
            return Err(ModelError::Plan(format!(
                "'{name}' names no weight layer (layers: {})",
                names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let needs_calib = opts.method != Method::Magnitude;
    let features = model.graph.input_len();
    let calib = match calib {
        Some(c) if !c.is_empty() && c.len() % features == 0 => Some(c),
        Some(c) => {
            return Err(ModelError::Plan(format!(
                "calibration holds {} values, not whole examples of {features}",
                c.len()
            )))
        }
        None if needs_calib => {
            return Err(ModelError::Plan(format!(
                "{} needs calibration inputs",
                opts.method.name()
            )))
        }
        None => None,
    };
    let mut pruned = model.clone();
    let mut records = Vec::new();
    for idx in 0..model.graph.nodes.len() {
        let node = &model.graph.nodes[idx];
        let Some(wname) = node.op.weight() else {
            continue;
        };
        let (rows, cols) = (model.weights[wname].rows(), model.weights[wname].cols());
        let pick =
            |m: &BTreeMap<String, Target>| m.get(&node.name).or_else(|| m.get(wname)).copied();
        let listed = |v: &[String]| v.iter().any(|s| s == &node.name || s == wname);
        let target = pick(&targets.per_layer).unwrap_or(opts.target);
        let why_not = if listed(&targets.skip) {
            Some("skipped (--skip)".to_string())
        } else if node.op.is_general_conv() {
            Some("left dense: grouped or dilated convolutions run one dense loop".to_string())
        } else if let Target::Nm { m, .. } = target {
            (cols % m != 0)
                .then(|| format!("left dense: {cols} inputs are not a multiple of M = {m}"))
        } else {
            None
        };
        let before = model.weights[wname].to_dense().into_vec();
        if let Some(note) = why_not {
            let zeros = before.iter().filter(|v| **v == 0.0).count();
            let rec = PrunedLayer {
                name: node.name.clone(),
                shape: [rows, cols],
                sparsity: zeros as f64 / before.len() as f64,
                rel_error: None,
                note: Some(note),
            };
            progress(&rec);
            records.push(rec);
            continue;
        }
        let layer_opts = PruneOptions {
            target,
            ..opts.clone()
        };
        let stats = match calib {
            Some(c) if needs_calib => Some(layer_stats(&pruned, model, idx, c, &layer_opts)?),
            _ => None,
        };
        let mut w = before.clone();
        prune_matrix(&mut w, rows, cols, stats.as_ref(), &layer_opts)?;
        let rel = stats
            .as_ref()
            .and_then(|s| s.h.as_ref())
            .map(|h| rel_error(&before, &w, cols, h));
        let zeros = w.iter().filter(|v| **v == 0.0).count();
        let dense = Dense::from_vec(rows, cols, w).map_err(|source| ModelError::Weight {
            name: wname.to_string(),
            source,
        })?;
        pruned
            .weights
            .insert(wname.to_string(), WeightMatrix::Dense(dense));
        let rec = PrunedLayer {
            name: node.name.clone(),
            shape: [rows, cols],
            sparsity: zeros as f64 / (rows * cols) as f64,
            rel_error: rel,
            note: None,
        };
        progress(&rec);
        records.push(rec);
    }
    let out = Model::new(pruned.graph, pruned.weights, pruned.vectors)?;
    Ok((out, records))
}

/// Calibration statistics of node `idx`'s weight: its inputs on `pruned` (and, for SparseGPT's
/// dense targets, on `dense`), over every calibration example.
fn layer_stats(
    pruned: &Model,
    dense: &Model,
    idx: usize,
    calib: &[f32],
    opts: &PruneOptions,
) -> Result<Stats, ModelError> {
    let node = &pruned.graph.nodes[idx];
    let cols = pruned.weights[node.op.weight().unwrap_or_default()].cols();
    let cross = opts.method == Method::Sparsegpt && opts.dense_targets;
    let mut stats = Stats::new(cols, opts.method == Method::Sparsegpt, cross);
    let features = pruned.graph.input_len();
    let mut cut_pruned = Cut::new(pruned, idx)?;
    let mut cut_dense = if cross {
        Some(Cut::new(dense, idx)?)
    } else {
        None
    };
    for chunk in calib.chunks(opts.batch.max(1) * features) {
        let (x, t) = cut_pruned.inputs(chunk)?;
        let xd = match cut_dense.as_mut() {
            Some(c) => Some(c.inputs(chunk)?.0),
            None => None,
        };
        stats.add(&x, xd.as_deref(), t)?;
    }
    Ok(stats)
}

/// The model cut at one weight layer's input, to compute that layer's calibration inputs.
struct Cut {
    /// The graph up to the layer's input value (`None` when the layer reads the graph input).
    model: Option<Model>,
    executor: Option<(usize, Executor)>,
    /// The layer's input, per example.
    shape: Vec<usize>,
    conv: Option<Window>,
}

impl Cut {
    fn new(model: &Model, idx: usize) -> Result<Self, ModelError> {
        let node = &model.graph.nodes[idx];
        let v = &node.inputs[0];
        let shape = model.shapes[v].clone();
        let conv = match &node.op {
            Op::Conv2d {
                kernel,
                stride,
                padding,
                ..
            } => Window::new(
                shape[0], shape[1], shape[2], kernel[0], kernel[1], stride[0], stride[1],
                padding[0], padding[1],
            ),
            _ => None,
        };
        let cut = if *v == model.graph.input.name {
            None
        } else {
            let before = &model.graph.nodes[..idx];
            let used_w: Vec<&str> = before.iter().filter_map(|n| n.op.weight()).collect();
            let used_v: Vec<&str> = before.iter().flat_map(|n| n.op.vectors()).collect();
            let nodes = before.to_vec();
            let graph = Graph {
                name: model.graph.name.clone(),
                input: model.graph.input.clone(),
                labels: Vec::new(),
                output: v.clone(),
                weights: BTreeMap::new(),
                nodes,
            };
            let weights = model
                .weights
                .iter()
                .filter(|(k, _)| used_w.contains(&k.as_str()))
                .map(|(k, w)| (k.clone(), w.clone()))
                .collect();
            let vectors = model
                .vectors
                .iter()
                .filter(|(k, _)| used_v.contains(&k.as_str()))
                .map(|(k, w)| (k.clone(), w.clone()))
                .collect();
            Some(Model::new(graph, weights, vectors)?)
        };
        Ok(Cut {
            model: cut,
            executor: None,
            shape,
            conv,
        })
    }

    /// The layer's inputs for `x` (`[n, input size]`) as `[cols, t]`, and `t`.
    fn inputs(&mut self, x: &[f32]) -> Result<(Vec<f32>, usize), ModelError> {
        let f: usize = self.shape.iter().product();
        let n = match &self.model {
            Some(m) => x.len() / m.graph.input_len(),
            None => x.len() / f,
        };
        let acts: Vec<f32> = match &self.model {
            None => x.to_vec(),
            Some(m) => {
                if self.executor.as_ref().is_none_or(|(b, _)| *b != n) {
                    let plan = make_plan(m, "calibration", n, 1, PlanMode::Stored)?;
                    self.executor = Some((n, Executor::new(m, &plan)?));
                }
                let (_, e) = self
                    .executor
                    .as_mut()
                    .ok_or_else(|| ModelError::Plan("calibration executor missing".into()))?;
                e.run(x)?.to_vec()
            }
        };
        let mut fm = vec![0.0f32; acts.len()];
        ops::to_feature_major(&acts, f, n, &mut fm);
        match &self.conv {
            None => Ok((fm, n)),
            Some(g) => {
                let t = g.oh * g.ow * n;
                let mut patches = vec![0.0f32; g.c * g.kh * g.kw * t];
                ops::im2col(&fm, g, n, &mut patches);
                Ok((patches, t))
            }
        }
    }
}
