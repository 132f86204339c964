//! The planner: for a batch size and thread count, it measures every candidate (format, kernel)
//! of each weight layer on that layer's real matrix and product width, and keeps the fastest.
//!
//! A layer's product width `n` is the batch for a linear layer and `OH*OW*batch` for a
//! convolution (im2col columns). Candidates are the weight re-encoded as dense, CSR (u16 indices
//! when they fit), BSR 1x8 and 4x1 and, when the mask allows it, N:M 2:4, each with every
//! registry kernel that accepts it; int8 weights keep int8 in the sparse formats and compete with
//! their dequantized dense form. Plans are cached next to the model as `MODEL.plan.json`, keyed
//! by the model file's digest, batch, threads, ISA and mode (see [`super::cache`]).

use lopper_kernels::bench::{measure_kernel, time_median, TimingOptions};
use lopper_kernels::{registry, Dtype, FormatKind, Isa, WeightMatrix};
use serde::{Deserialize, Serialize};

use crate::convert::encode_as;
use crate::error::ModelError;
use crate::file::Model;
use crate::graph::Op;
use crate::runtime::exec::{conv, conv_scratch, Matmul, MmKernel};
use crate::runtime::ops::Window;

pub use super::cache::{cache_path, cached_plan_problem, parse_cache, plan_cached};

/// Which formats the planner may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanMode {
    /// Every candidate format, measured.
    Measured,
    /// Dense f32 only (the best dense kernel, measured): the dense twin.
    Dense,
    /// The stored format with the registry's first kernel, unmeasured (for evaluation runs).
    Stored,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub format: FormatKind,
    pub dtype: Dtype,
    pub kernel: String,
    pub ns: f64,
}

/// The choice for one weight layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerChoice {
    pub node: String,
    pub weight: String,
    pub format: FormatKind,
    pub dtype: Dtype,
    pub kernel: String,
    /// Product width: batch (linear) or the im2col columns of one tile (conv).
    pub n: usize,
    /// Measured median time of the chosen kernel (0 when unmeasured).
    pub ns: f64,
    /// Threads this layer splits its rows over: 1, or the plan's thread count when measured
    /// faster including the hand-off to the pool (tiny layers are faster on one).
    #[serde(default = "one")]
    pub parts: usize,
    pub candidates: Vec<Candidate>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub model_digest: String,
    pub batch: usize,
    /// Examples per internal run (0 in plans written before sub-batching: the whole batch).
    #[serde(default)]
    pub sub_batch: usize,
    pub threads: usize,
    pub isa: String,
    pub mode: PlanMode,
    pub layers: Vec<LayerChoice>,
    /// Which whole-model candidate won: `per-layer`, or `uniform FORMAT` when forcing one
    /// format on every layer ran faster end to end (see [`make_plan`]).
    #[serde(default)]
    pub chosen: String,
}

impl Plan {
    /// This plan with every layer on `format` (each layer's fastest kernel for it), if every
    /// layer measured that format.
    pub fn uniform(&self, format: FormatKind) -> Option<Plan> {
        let mut out = self.clone();
        for l in &mut out.layers {
            let c = l
                .candidates
                .iter()
                .filter(|c| c.format == format)
                .min_by(|a, b| a.ns.total_cmp(&b.ns))?;
            l.format = c.format;
            l.dtype = c.dtype;
            l.kernel = c.kernel.clone();
            l.ns = c.ns;
        }
        out.chosen = format!("uniform {format}");
        Some(out)
    }

    /// This plan with layer `i` on its fastest candidate of another kernel, if that candidate
    /// measured within `within` times the chosen one.
    pub fn runner_up(&self, i: usize, within: f64) -> Option<Plan> {
        let l = self.layers.get(i)?;
        let c = l
            .candidates
            .iter()
            .filter(|c| c.kernel != l.kernel || c.format != l.format || c.dtype != l.dtype)
            .min_by(|a, b| a.ns.total_cmp(&b.ns))?;
        if !c.ns.is_finite() || c.ns > within * l.ns {
            return None;
        }
        let mut out = self.clone();
        let o = &mut out.layers[i];
        o.format = c.format;
        o.dtype = c.dtype;
        o.kernel = c.kernel.clone();
        o.ns = c.ns;
        out.chosen = format!("per-layer, {} on {}", o.node, o.kernel);
        Some(out)
    }

    /// The formats every layer has a measured candidate for.
    pub fn uniform_formats(&self) -> Vec<FormatKind> {
        let mut formats: Vec<FormatKind> = Vec::new();
        for c in self.layers.iter().flat_map(|l| &l.candidates) {
            if !formats.contains(&c.format) {
                formats.push(c.format);
            }
        }
        formats.retain(|&f| self.uniform(f).is_some());
        formats
    }

    /// Examples per internal run of the executor.
    pub fn sub_batch(&self) -> usize {
        if self.sub_batch == 0 {
            self.batch
        } else {
            self.sub_batch
        }
    }
}

/// Bytes the largest activation of one sub-batch may take (1 MiB: with the weights it stays in
/// a 2 MiB L2; measured on LeNet-5 at batch 64: 512 KiB was 18 % slower, 2 MiB the same).
pub const SUB_BATCH_BYTES: usize = 1024 * 1024;

/// Examples per internal run: the whole batch when its largest activation fits
/// [`SUB_BATCH_BYTES`], else the largest multiple of 8 (or any count below 8) that fits.
/// Between layers, activations then stay in cache instead of round-tripping through memory
/// (LeNet-5 at batch 64: conv1's 2.9 MB output).
pub fn sub_batch_for(model: &Model, batch: usize) -> usize {
    let largest = model
        .shapes
        .values()
        .map(|s| s.iter().product::<usize>())
        .max()
        .unwrap_or(1)
        .max(1);
    let fits = (SUB_BATCH_BYTES / (4 * largest)).max(1);
    if fits >= batch {
        batch
    } else if fits >= 8 {
        fits / 8 * 8
    } else {
        fits
    }
}

/// FNV-1a 64 of the bytes, as hex: identifies the model file a plan was made for.
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Bytes of im2col patches one convolution tile may take: with the weights, they stay in L2.
pub const CONV_TILE_BYTES: usize = 256 * 1024;

/// Output pixels per convolution tile: as many as keep the tile's patches `[K, pixels*batch]`
/// within [`CONV_TILE_BYTES`], at least one, at most the whole output plane.
pub(crate) fn conv_tile_pixels(k: usize, pixels: usize, batch: usize) -> usize {
    (CONV_TILE_BYTES / 4 / (k * batch).max(1)).clamp(1, pixels.max(1))
}

/// Product width of each weight node at `batch`: the batch for a linear layer, the columns of
/// one im2col tile for a convolution.
pub(crate) fn product_width(model: &Model, node: &crate::graph::Node, batch: usize) -> usize {
    match (&node.op, node.op.weight()) {
        (Op::Conv2d { .. }, Some(w)) => {
            let s = &model.shapes[&node.output];
            let k = model.weights[w].cols();
            conv_tile_pixels(k, s[1] * s[2], batch) * batch
        }
        _ => batch,
    }
}

pub(crate) fn candidate_kinds(w: &WeightMatrix, mode: PlanMode) -> Vec<(FormatKind, Dtype)> {
    let csr = if w.cols() <= 1 << 16 {
        FormatKind::Csr16
    } else {
        FormatKind::Csr32
    };
    match mode {
        PlanMode::Dense => vec![(FormatKind::Dense, Dtype::F32)],
        PlanMode::Stored => vec![(w.kind(), w.dtype())],
        PlanMode::Measured => {
            let dt = w.dtype();
            let mut v = vec![
                (FormatKind::Dense, Dtype::F32),
                (csr, dt),
                (FormatKind::Bsr { br: 1, bc: 8 }, dt),
                (FormatKind::Bsr { br: 4, bc: 1 }, dt),
            ];
            if dt == Dtype::F32 && w.cols().is_multiple_of(4) {
                v.push((FormatKind::Nm { n: 2, m: 4 }, dt));
            }
            v
        }
    }
}

/// The stored plan with every layer whose file allows int8 activations on the dense int8 × int8
/// kernel: what `lopper quantize` measures fidelity with (the worst case; the measured plan may
/// keep some of those layers in f32 where that is faster).
pub fn int8_plan(model: &Model, batch: usize) -> Result<Plan, ModelError> {
    let mut plan = make_plan(model, "int8", batch, 1, PlanMode::Stored)?;
    let path = lopper_kernels::int8::Q8Path::selected();
    for l in &mut plan.layers {
        if model.graph.weights[&l.weight].int8_acts {
            let k = MmKernel::Q8 { dense: true, path };
            l.format = MmKernel::q8_format(true);
            l.dtype = Dtype::I8;
            l.kernel = k.name().to_string();
        }
    }
    Ok(plan)
}

/// The weight a layer runs with under `kind`, `dtype` and kernel `k`: the stored matrix as it
/// is, re-encoded, or (for an int8 × int8 kernel, which packs its own tiles) the stored one.
pub(crate) fn layer_weight(
    name: &str,
    stored: &WeightMatrix,
    kind: FormatKind,
    dtype: Dtype,
    k: MmKernel,
) -> Result<WeightMatrix, ModelError> {
    if matches!(k, MmKernel::Q8 { .. }) || (kind == stored.kind() && dtype == stored.dtype()) {
        Ok(stored.clone())
    } else {
        encode_as(name, stored, kind, dtype)
    }
}

/// Deterministic pseudo-random activations in `[-1, 1)` (the kernels' speed does not depend on
/// the values, but denormals and zeros would distort it).
pub fn activations(len: usize) -> Vec<f32> {
    let mut s: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Timing used by the planner: short, since it runs once per model, batch and thread count.
pub fn planner_timing() -> TimingOptions {
    TimingOptions {
        samples: 7,
        min_sample_ns: 300_000,
        warmup_calls: 2,
        min_inner: 1,
    }
}

/// Refuses a batch whose buffers (input and output for the whole batch, every value for one
/// sub-batch) would pass [`crate::graph::MAX_RUN_ELEMS`], before anything is allocated.
pub fn check_run_size(model: &Model, batch: usize, sub: usize) -> Result<(), ModelError> {
    let per_example: usize = model
        .shapes
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    let out: usize = model
        .shapes
        .get(&model.graph.output)
        .map_or(0, |s| s.iter().product());
    let io = model.graph.input_len() + out;
    let need = batch
        .checked_mul(io)
        .and_then(|a| sub.checked_mul(per_example).and_then(|b| a.checked_add(b)));
    match need {
        Some(n) if n <= crate::graph::MAX_RUN_ELEMS => Ok(()),
        _ => Err(ModelError::Plan(format!(
            "batch {batch} needs more than 2^28 activation values (1 GiB); use a smaller batch"
        ))),
    }
}

/// Makes a plan for `model` at `batch` and `threads`.
pub fn make_plan(
    model: &Model,
    digest: &str,
    batch: usize,
    threads: usize,
    mode: PlanMode,
) -> Result<Plan, ModelError> {
    if batch == 0 || threads == 0 {
        return Err(ModelError::Plan(
            "batch and threads must be at least 1".into(),
        ));
    }
    // Layers are measured at the width the executor runs them: one sub-batch.
    let sub = sub_batch_for(model, batch);
    check_run_size(model, batch, sub)?;
    let isa = Isa::selected();
    let pool = super::pools::shared_pool(threads)?;
    let timing = planner_timing();
    let mut layers = Vec::new();
    for node in &model.graph.nodes {
        let Some(wname) = node.op.weight() else {
            continue;
        };
        // Grouped and dilated convolutions run one dense loop: nothing to choose.
        if node.op.is_general_conv() {
            continue;
        }
        let stored = &model.weights[wname];
        let n = product_width(model, node, sub);
        let geom = conv_geometry(model, node);
        let x = match (mode, &geom) {
            (PlanMode::Stored, _) => Vec::new(),
            // A convolution is timed whole (im2col tiles included), on its real input size.
            (_, Some(g)) => activations(g.c * g.h * g.w * sub),
            (_, None) => activations(stored.cols() * n),
        };
        let mut candidates = Vec::new();
        let mut best: Option<(f64, FormatKind, Dtype, &'static str)> = None;
        for (kind, dtype) in candidate_kinds(stored, mode) {
            // A mask that does not fit N:M (or a format without int8) is simply not a candidate.
            let Ok(w) = (if kind == stored.kind() && dtype == stored.dtype() {
                Ok(stored.clone())
            } else {
                encode_as(wname, stored, kind, dtype)
            }) else {
                continue;
            };
            let mut kernels: Vec<MmKernel> = registry::candidates(&w, n, isa)
                .map(MmKernel::Gemm)
                .collect();
            if let (Some(g), PlanMode::Measured) = (&geom, mode) {
                kernels.extend(
                    lopper_kernels::conv::candidates(isa)
                        .filter(|k| k.accepts(&w) && k.supports(g, sub))
                        .map(MmKernel::Direct),
                );
            }
            for k in kernels {
                let ns = match (mode, &geom) {
                    (PlanMode::Stored, _) => 0.0,
                    (_, Some(g)) => {
                        let mm = Matmul::new(&node.name, w.clone(), k, threads, None, n)?;
                        measure_conv(&mm, g, &x, sub, &pool, &timing)?
                    }
                    (_, None) => {
                        let MmKernel::Gemm(gk) = k else { continue };
                        measure_kernel(gk, std::slice::from_ref(&w), &x, n, &pool, &timing)
                            .map_err(|source| ModelError::Kernel {
                                node: node.name.clone(),
                                source,
                            })?
                            .median_ns
                    }
                };
                candidates.push(Candidate {
                    format: kind,
                    dtype,
                    kernel: k.name().to_string(),
                    ns,
                });
                if best.is_none_or(|b| ns < b.0) {
                    best = Some((ns, kind, dtype, k.name()));
                }
                if mode == PlanMode::Stored {
                    break;
                }
            }
        }
        // int8 × int8, where the file allows quantized activations: dense and 16x4 packing,
        // timed as the executor runs them (quantizing the input inside the timed call).
        if mode == PlanMode::Measured && model.graph.weights[wname].int8_acts {
            let path = lopper_kernels::int8::Q8Path::selected();
            for dense in [true, false] {
                let k = MmKernel::Q8 { dense, path };
                let mm = Matmul::new(&node.name, stored.clone(), k, 1, None, n)?;
                let ns = pool.install(|| time_layer(&mm, geom.as_ref(), &x, sub, &timing))?;
                let kind = MmKernel::q8_format(dense);
                candidates.push(Candidate {
                    format: kind,
                    dtype: Dtype::I8,
                    kernel: k.name().to_string(),
                    ns,
                });
                if best.is_none_or(|b| ns < b.0) {
                    best = Some((ns, kind, Dtype::I8, k.name()));
                }
            }
        }
        let (ns, kind, dtype, kernel) = best.ok_or_else(|| {
            ModelError::Plan(format!(
                "node '{}': no kernel accepts its weight",
                node.name
            ))
        })?;
        // Split over threads only where that wins with the per-call hand-off counted.
        let (ns, parts) = if threads > 1 && mode != PlanMode::Stored {
            let k = MmKernel::by_name(kernel)
                .ok_or_else(|| ModelError::Plan(format!("kernel {kernel} vanished")))?;
            let w = layer_weight(wname, stored, kind, dtype, k)?;
            let single = Matmul::new(&node.name, w.clone(), k, 1, None, n)?;
            let split = Matmul::new(&node.name, w, k, threads, None, n)?;
            let t1 = time_layer(&single, geom.as_ref(), &x, sub, &timing)?;
            let tn = time_layer(&split, geom.as_ref(), &x, sub, &timing)?;
            // A split must win clearly: timings of small layers are noisy, and a wrong split
            // costs more than a missed one.
            if tn < 0.9 * t1 {
                (tn, threads)
            } else {
                (t1, 1)
            }
        } else {
            (
                ns,
                threads.min(if mode == PlanMode::Stored { threads } else { 1 }),
            )
        };
        layers.push(LayerChoice {
            node: node.name.clone(),
            weight: wname.to_string(),
            format: kind,
            dtype,
            kernel: kernel.to_string(),
            n,
            ns,
            parts,
            candidates,
        });
    }
    let plan = Plan {
        model_digest: digest.to_string(),
        batch,
        sub_batch: sub,
        threads,
        isa: isa.name().to_string(),
        mode,
        layers,
        chosen: "per-layer".into(),
    };
    if mode == PlanMode::Measured {
        return refine(model, plan);
    }
    Ok(plan)
}

/// Runner-up kernels within this factor of a layer's fastest (timed alone) are retried in the
/// whole model: LeNet-5's conv2 at batch 64 timed 91 µs on im2col + SpMM against 97 µs direct
/// alone, yet the model ran 850 µs with the former and 640 µs with the latter.
const RUNNER_UP_WITHIN: f64 = 1.25;

/// At most this many runner-up plans, the closest first (each costs a few timed rounds).
const RUNNER_UPS: usize = 8;

/// Layers timed one by one do not always add up to the fastest whole model (caches, the order
/// layers run in). The per-layer plan, every uniform plan and the plans that move one layer to
/// its close runner-up are therefore timed end to end, interleaved round by round, and the
/// fastest whole model is kept.
fn refine(model: &Model, plan: Plan) -> Result<Plan, ModelError> {
    let mut plans = vec![plan.clone()];
    plans.extend(
        plan.uniform_formats()
            .iter()
            .filter_map(|&f| plan.uniform(f)),
    );
    let mut close: Vec<(f64, Plan)> = (0..plan.layers.len())
        .filter_map(|i| {
            plan.runner_up(i, RUNNER_UP_WITHIN)
                .map(|p| (p.layers[i].ns / plan.layers[i].ns.max(1.0), p))
        })
        .collect();
    close.sort_by(|a, b| a.0.total_cmp(&b.0));
    plans.extend(close.into_iter().take(RUNNER_UPS).map(|(_, p)| p));
    if plans.len() < 2 {
        return Ok(plan);
    }
    let mut exs = plans
        .iter()
        .map(|p| crate::runtime::Executor::new(model, p))
        .collect::<Result<Vec<_>, _>>()?;
    let x = activations(plan.batch * model.graph.input_len());
    // Nine rounds of at least 2 ms each: with five of 1 ms, LeNet-300-100 at batch 64 and two
    // threads kept a per-layer plan that `lopper bench` then timed 11-13 % slower than uniform
    // CSR in two of three runs (AMD EPYC guest, 2026-11-29).
    let times = super::exec::time_executors(&mut exs, &x, 9, 2_000_000)?;
    // The per-layer plan stays unless a uniform one is faster by more than noise (2 %).
    let mut best = 0;
    for (i, &t) in times.iter().enumerate().skip(1) {
        if t < 0.98 * times[0] && t < times[best] {
            best = i;
        }
    }
    Ok(plans.swap_remove(best))
}

/// The geometry of a convolution node (from the value shapes), `None` for other nodes.
fn conv_geometry(model: &Model, node: &crate::graph::Node) -> Option<Window> {
    let Op::Conv2d {
        kernel,
        stride,
        padding,
        ..
    } = &node.op
    else {
        return None;
    };
    let i = &model.shapes[&node.inputs[0]];
    Window::new(
        i[0], i[1], i[2], kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
    )
}

/// Median time of one whole convolution step (as the executor runs it) inside `pool`.
fn measure_conv(
    mm: &Matmul,
    g: &Window,
    x: &[f32],
    batch: usize,
    pool: &rayon::ThreadPool,
    timing: &TimingOptions,
) -> Result<f64, ModelError> {
    pool.install(|| time_layer(mm, Some(g), x, batch, timing))
}

/// Median time of one layer as the executor calls it, from this thread (the pool hand-off of a
/// split layer included).
fn time_layer(
    mm: &Matmul,
    g: Option<&Window>,
    x: &[f32],
    batch: usize,
    timing: &TimingOptions,
) -> Result<f64, ModelError> {
    let rows = mm.w.rows();
    match g {
        Some(g) => {
            let (patches, tile) = conv_scratch(mm, g, batch);
            let mut scratch = vec![0.0f32; patches];
            let mut tile_out = vec![0.0f32; tile];
            let mut y = vec![0.0f32; rows * g.oh * g.ow * batch];
            conv(mm, g, x, &mut y, batch, &mut scratch, &mut tile_out)?;
            let t = time_median(
                |_| {
                    let _ = conv(mm, g, x, &mut y, batch, &mut scratch, &mut tile_out);
                },
                timing,
            );
            Ok(t.median_ns)
        }
        None => {
            let mut y = vec![0.0f32; rows * mm.n];
            mm.run(x, &mut y)?;
            let t = time_median(
                |_| {
                    let _ = mm.run(x, &mut y);
                },
                timing,
            );
            Ok(t.median_ns)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(format: &str, kernel: &str, ns: f64) -> Candidate {
        Candidate {
            format: format.parse().unwrap(),
            dtype: Dtype::F32,
            kernel: kernel.into(),
            ns,
        }
    }

    fn plan() -> Plan {
        let layer = |node: &str, cands: Vec<Candidate>| LayerChoice {
            node: node.into(),
            weight: format!("{node}.weight"),
            format: cands[0].format,
            dtype: Dtype::F32,
            kernel: cands[0].kernel.clone(),
            n: 1,
            ns: cands[0].ns,
            parts: 1,
            candidates: cands,
        };
        Plan {
            model_digest: String::new(),
            batch: 64,
            sub_batch: 16,
            threads: 1,
            isa: "avx512".into(),
            mode: PlanMode::Measured,
            layers: vec![
                layer(
                    "conv2",
                    vec![
                        cand("csr16", "spmm", 91.0),
                        cand("csr16", "direct", 97.0),
                        cand("dense", "gemm", 240.0),
                    ],
                ),
                layer(
                    "fc1",
                    vec![cand("csr16", "spmm", 9.0), cand("dense", "gemm", 97.0)],
                ),
            ],
            chosen: "per-layer".into(),
        }
    }

    #[test]
    fn runner_up_swaps_one_layer_to_its_closest_other_kernel() {
        let p = plan();
        let r = p.runner_up(0, RUNNER_UP_WITHIN).unwrap();
        assert_eq!(
            (r.layers[0].kernel.as_str(), r.layers[0].ns),
            ("direct", 97.0)
        );
        assert_eq!(r.layers[1], p.layers[1]);
        assert_eq!(r.chosen, "per-layer, conv2 on direct");
        // fc1's other candidate is 10.8x slower: not worth a whole-model timing.
        assert!(p.runner_up(1, RUNNER_UP_WITHIN).is_none());
        assert!(p.runner_up(0, 1.05).is_none());
        assert!(p.runner_up(2, RUNNER_UP_WITHIN).is_none());
    }

    #[test]
    fn uniform_forces_one_format_on_every_layer() {
        let u = plan().uniform(FormatKind::Dense).unwrap();
        assert!(u
            .layers
            .iter()
            .all(|l| l.format == FormatKind::Dense && l.kernel == "gemm"));
        assert_eq!(u.chosen, "uniform dense");
        assert!(plan().uniform(FormatKind::Bsr { br: 4, bc: 1 }).is_none());
        assert_eq!(
            plan().uniform_formats(),
            [FormatKind::Csr16, FormatKind::Dense]
        );
    }
}
