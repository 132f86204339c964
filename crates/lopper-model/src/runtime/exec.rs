//! The executor: a model compiled for one plan (batch size, thread count, per-layer format and
//! kernel). Every buffer is allocated when it is built; [`Executor::run`] allocates nothing with
//! one thread (with more, rayon's task bookkeeping is the only allocation).
//!
//! Activations use the layout of [`super::ops`]: `[C, H, W, n]` / `[F, n]`, batch innermost.
//! Users hand in `[n, F]` (example after example) and get `[n, classes]` back. A flatten shares
//! its input's buffer, and a ReLU whose input has no other reader runs in place.

use std::collections::HashMap;

use lopper_kernels::{registry, WeightMatrix};

use super::buf::AlignedBuf;
use super::general::{self, GroupConv, MapFn};
pub(crate) use super::matmul::{conv, conv_scratch, Matmul, MmKernel};
use super::ops::{self, Window};
use super::plan::Plan;
use crate::error::ModelError;
use crate::file::Model;
use crate::graph::Op;

enum Step {
    Linear {
        mm: Matmul,
        x: usize,
        y: usize,
    },
    Conv {
        mm: Matmul,
        g: Window,
        x: usize,
        y: usize,
    },
    Affine {
        scale: Vec<f32>,
        shift: Vec<f32>,
        inner: usize,
        x: usize,
        y: usize,
    },
    Relu {
        x: usize,
        y: usize,
    },
    Pool {
        g: Window,
        max: bool,
        x: usize,
        y: usize,
    },
    GlobalAvg {
        c: usize,
        hw: usize,
        x: usize,
        y: usize,
    },
    Add {
        a: usize,
        b: usize,
        y: usize,
    },
    Softmax {
        f: usize,
        x: usize,
        y: usize,
    },
    Map {
        f: MapFn,
        x: usize,
        y: usize,
    },
    /// A dilated convolution (one group): dilated im2col patches times the dense weight.
    DilatedConv {
        mm: Matmul,
        c: GroupConv,
        x: usize,
        y: usize,
    },
    GroupConv {
        c: GroupConv,
        /// Its depthwise geometry, when it is one (run by `lopper_kernels::depthwise`).
        dw: Option<lopper_kernels::depthwise::DwGeom>,
        /// Dense `[out, in/groups * kh * kw]`.
        w: Vec<f32>,
        bias: Option<Vec<f32>>,
        x: usize,
        y: usize,
    },
}

/// The compiled graph for one product width: steps and their buffers.
struct Core {
    batch: usize,
    in_features: usize,
    out_features: usize,
    steps: Vec<Step>,
    /// Node name of each step, for profiles.
    names: Vec<String>,
    /// Accumulated nanoseconds per step (input transpose first, output transpose last) while
    /// profiling; `None` otherwise, so normal runs take no timestamps.
    profile_ns: Option<Vec<f64>>,
    bufs: Vec<AlignedBuf>,
    input_buf: usize,
    output_buf: usize,
    scratch: AlignedBuf,
    /// One conv tile's output `[Cout, tile width]`, before it is copied into place.
    tile_out: AlignedBuf,
    out: Vec<f32>,
}

impl Core {
    /// Compiles `model` for `batch` examples per run with `plan`'s kernels; `strict` checks
    /// that the plan was measured at this width (the remainder core of a split batch is not).
    fn new(model: &Model, plan: &Plan, batch: usize, strict: bool) -> Result<Self, ModelError> {
        let threads = plan.threads.max(1);
        let choices: HashMap<&str, &super::plan::LayerChoice> =
            plan.layers.iter().map(|l| (l.node.as_str(), l)).collect();
        let g = &model.graph;
        let elems = |v: &str| -> usize { model.shapes[v].iter().product::<usize>() * batch };

        // Buffer of each value; readers counted per buffer to allow in-place ReLU.
        let mut buf_of: HashMap<&str, usize> = HashMap::new();
        let mut sizes: Vec<usize> = vec![elems(&g.input.name)];
        buf_of.insert(&g.input.name, 0);
        let mut steps = Vec::new();
        let mut names = Vec::new();
        let mut scratch_len = 0usize;
        let mut tile_out_len = 0usize;
        // First pass: readers per value, to decide in-place ReLU.
        let mut value_readers: HashMap<&str, usize> = HashMap::new();
        for node in &g.nodes {
            for i in &node.inputs {
                *value_readers.entry(i).or_default() += 1;
            }
        }
        *value_readers.entry(&g.output).or_default() += 1;

        for node in &g.nodes {
            let x = buf_of[node.inputs[0].as_str()];
            let fresh = |sizes: &mut Vec<usize>| {
                sizes.push(elems(&node.output));
                sizes.len() - 1
            };
            let in_shape = &model.shapes[&node.inputs[0]];
            let out_shape = &model.shapes[&node.output];
            let step = match &node.op {
                Op::Flatten | Op::Reshape { .. } => {
                    buf_of.insert(&node.output, x);
                    continue;
                }
                Op::Clip { .. } | Op::Sigmoid | Op::Tanh | Op::HardSwish => {
                    let f = match node.op {
                        Op::Clip { min, max } => MapFn::Clip { min, max },
                        Op::Sigmoid => MapFn::Sigmoid,
                        Op::Tanh => MapFn::Tanh,
                        _ => MapFn::HardSwish,
                    };
                    Step::Map {
                        f,
                        x,
                        y: fresh(&mut sizes),
                    }
                }
                Op::Conv2d {
                    weight,
                    bias,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups,
                } if node.op.is_general_conv() => {
                    // The window's output size comes from the validated (dilated) shapes.
                    let g = window(in_shape, out_shape, *kernel, *stride, *padding);
                    let c = GroupConv {
                        g,
                        dil: *dilation,
                        groups: *groups,
                        out_c: out_shape[0],
                    };
                    let dense = model.weights[weight].to_dense();
                    let bias = bias.as_ref().map(|b| model.vectors[b].clone());
                    if *groups == 1 {
                        let width = g.oh * g.ow * batch;
                        let w = WeightMatrix::Dense(dense);
                        let kernel = registry::select(&w, width, lopper_kernels::Isa::selected())
                            .ok_or_else(|| {
                            ModelError::Plan(format!("node '{}': no dense kernel", node.name))
                        })?;
                        scratch_len = scratch_len.max(w.cols() * width);
                        let mm =
                            Matmul::new(&node.name, w, MmKernel::Gemm(kernel), 1, bias, width)?;
                        Step::DilatedConv {
                            mm,
                            c,
                            x,
                            y: fresh(&mut sizes),
                        }
                    } else {
                        let dw = general::as_depthwise(&c);
                        if let Some(d) = &dw {
                            scratch_len = scratch_len.max(d.scratch_len(batch));
                        }
                        Step::GroupConv {
                            c,
                            dw,
                            w: dense.into_vec(),
                            bias,
                            x,
                            y: fresh(&mut sizes),
                        }
                    }
                }
                Op::Relu => {
                    // In place when this ReLU is the only reader of its input's buffer.
                    let sharing: usize = buf_of
                        .iter()
                        .filter(|(_, &b)| b == x)
                        .map(|(v, _)| value_readers.get(v).copied().unwrap_or(0))
                        .sum();
                    let y = if sharing == 1 && x != 0 {
                        x
                    } else {
                        fresh(&mut sizes)
                    };
                    Step::Relu { x, y }
                }
                Op::Linear { weight, bias } | Op::Conv2d { weight, bias, .. } => {
                    let choice = choices.get(node.name.as_str()).ok_or_else(|| {
                        ModelError::Plan(format!("the plan has no entry for node '{}'", node.name))
                    })?;
                    let mm = matmul(
                        model,
                        node,
                        weight,
                        bias.as_deref(),
                        choice,
                        batch,
                        threads,
                        strict,
                    )?;
                    let y = fresh(&mut sizes);
                    if let Op::Conv2d {
                        kernel,
                        stride,
                        padding,
                        ..
                    } = &node.op
                    {
                        let win = window(in_shape, out_shape, *kernel, *stride, *padding);
                        let (patches, tile) = conv_scratch(&mm, &win, batch);
                        scratch_len = scratch_len.max(patches);
                        tile_out_len = tile_out_len.max(tile);
                        Step::Conv { mm, g: win, x, y }
                    } else {
                        Step::Linear { mm, x, y }
                    }
                }
                Op::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                } => {
                    let v = |k: &str| &model.vectors[k];
                    let scale: Vec<f32> = v(gamma)
                        .iter()
                        .zip(v(var))
                        .map(|(&g, &s)| (g as f64 / (s as f64 + *eps as f64).sqrt()) as f32)
                        .collect();
                    let shift = scale
                        .iter()
                        .zip(v(beta).iter().zip(v(mean)))
                        .map(|(&s, (&b, &m))| b - s * m)
                        .collect();
                    let inner = in_shape[1..].iter().product::<usize>() * batch;
                    Step::Affine {
                        scale,
                        shift,
                        inner,
                        x,
                        y: fresh(&mut sizes),
                    }
                }
                Op::MaxPool { kernel, stride, .. } | Op::AvgPool { kernel, stride } => {
                    let pad = match &node.op {
                        Op::MaxPool { padding, .. } => *padding,
                        _ => [0, 0],
                    };
                    let win = window(in_shape, out_shape, *kernel, *stride, pad);
                    let max = matches!(node.op, Op::MaxPool { .. });
                    Step::Pool {
                        g: win,
                        max,
                        x,
                        y: fresh(&mut sizes),
                    }
                }
                Op::GlobalAvgPool => Step::GlobalAvg {
                    c: in_shape[0],
                    hw: in_shape[1] * in_shape[2],
                    x,
                    y: fresh(&mut sizes),
                },
                Op::Add => Step::Add {
                    a: x,
                    b: buf_of[node.inputs[1].as_str()],
                    y: fresh(&mut sizes),
                },
                Op::Softmax => Step::Softmax {
                    f: in_shape[0],
                    x,
                    y: fresh(&mut sizes),
                },
            };
            let y = match &step {
                Step::Linear { y, .. }
                | Step::Conv { y, .. }
                | Step::Affine { y, .. }
                | Step::Relu { y, .. }
                | Step::Pool { y, .. }
                | Step::GlobalAvg { y, .. }
                | Step::Add { y, .. }
                | Step::Softmax { y, .. }
                | Step::Map { y, .. }
                | Step::DilatedConv { y, .. }
                | Step::GroupConv { y, .. } => *y,
            };
            buf_of.insert(&node.output, y);
            steps.push(step);
            names.push(node.name.clone());
        }
        let in_features = g.input_len();
        let out_features = model.shapes[&g.output].iter().product();
        let mut ex = Core {
            batch,
            in_features,
            out_features,
            steps,
            names,
            profile_ns: None,
            bufs: sizes.into_iter().map(AlignedBuf::zeroed).collect(),
            input_buf: 0,
            output_buf: buf_of[g.output.as_str()],
            scratch: AlignedBuf::zeroed(scratch_len),
            tile_out: AlignedBuf::zeroed(tile_out_len),
            out: vec![0.0; out_features * batch],
        };
        // Warm-up run: checks every kernel call once and touches every buffer.
        let zeros = vec![0.0; in_features * batch];
        ex.run(&zeros)?;
        Ok(ex)
    }

    /// Runs one batch: `input` is `[batch, in_features]`; returns `[batch, out_features]`.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32], ModelError> {
        let expected = self.batch * self.in_features;
        if input.len() != expected {
            return Err(ModelError::InputSize {
                actual: input.len(),
                expected,
                batch: self.batch,
                per_example: self.in_features,
            });
        }
        let t = self.profile_ns.is_some().then(std::time::Instant::now);
        ops::to_feature_major(
            input,
            self.in_features,
            self.batch,
            &mut self.bufs[self.input_buf],
        );
        self.record(0, t);
        // Layers that split across threads hand their work to the shared pool themselves;
        // everything else runs on the calling thread, with no hand-off per inference.
        self.forward()?;
        let t = self.profile_ns.is_some().then(std::time::Instant::now);
        ops::to_example_major(
            &self.bufs[self.output_buf],
            self.out_features,
            self.batch,
            &mut self.out,
        );
        self.record(self.steps.len() + 1, t);
        Ok(&self.out)
    }

    fn record(&mut self, slot: usize, started: Option<std::time::Instant>) {
        if let (Some(p), Some(t)) = (self.profile_ns.as_mut(), started) {
            p[slot] += t.elapsed().as_nanos() as f64;
        }
    }

    /// Mean time per step over `iters` runs of `input`: `(name, ns)` in execution order, with
    /// the input and output transposes as `<input>` and `<output>`.
    pub fn profile(
        &mut self,
        input: &[f32],
        iters: usize,
    ) -> Result<Vec<(String, f64)>, ModelError> {
        self.profile_ns = Some(vec![0.0; self.steps.len() + 2]);
        let mut result = Ok(());
        for _ in 0..iters.max(1) {
            if let Err(e) = self.run(input) {
                result = Err(e);
                break;
            }
        }
        let ns = self.profile_ns.take().unwrap_or_default();
        result?;
        let names = std::iter::once("<input>".to_string())
            .chain(self.names.iter().cloned())
            .chain(std::iter::once("<output>".to_string()));
        Ok(names
            .zip(ns)
            .map(|(n, t)| (n, t / iters.max(1) as f64))
            .collect())
    }

    fn forward(&mut self) -> Result<(), ModelError> {
        let bufs = &mut self.bufs;
        let scratch = &mut self.scratch;
        let tile_out = &mut self.tile_out;
        let mut profile = self.profile_ns.as_mut();
        for (si, step) in self.steps.iter().enumerate() {
            let started = profile.is_some().then(std::time::Instant::now);
            match step {
                Step::Linear { mm, x, y } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    let r = mm.run(&bufs[*x], &mut out);
                    bufs[*y] = out;
                    r?;
                }
                Step::Conv { mm, g, x, y } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    let r = conv(mm, g, &bufs[*x], &mut out, self.batch, scratch, tile_out);
                    bufs[*y] = out;
                    r?;
                }
                Step::Affine {
                    scale,
                    shift,
                    inner,
                    x,
                    y,
                } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    ops::channel_affine(&bufs[*x], scale, shift, *inner, &mut out);
                    bufs[*y] = out;
                }
                Step::Relu { x, y } if x == y => ops::relu_inplace(&mut bufs[*y]),
                Step::Relu { x, y } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    ops::relu(&bufs[*x], &mut out);
                    bufs[*y] = out;
                }
                Step::Pool { g, max, x, y } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    ops::pool(&bufs[*x], g, self.batch, &mut out, *max);
                    bufs[*y] = out;
                }
                Step::GlobalAvg { c, hw, x, y } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    ops::global_avgpool(&bufs[*x], *c, *hw, self.batch, &mut out);
                    bufs[*y] = out;
                }
                Step::Add { a, b, y } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    ops::add(&bufs[*a], &bufs[*b], &mut out);
                    bufs[*y] = out;
                }
                Step::Softmax { f, x, y } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    ops::softmax(&bufs[*x], *f, self.batch, &mut out);
                    bufs[*y] = out;
                }
                Step::Map { f, x, y } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    general::map(*f, &bufs[*x], &mut out);
                    bufs[*y] = out;
                }
                Step::DilatedConv { mm, c, x, y } => {
                    let patches = &mut scratch[..mm.w.cols() * mm.n];
                    general::dilated_im2col(c, &bufs[*x], self.batch, patches);
                    let mut out = std::mem::take(&mut bufs[*y]);
                    let r = mm.run(patches, &mut out);
                    bufs[*y] = out;
                    r?;
                }
                Step::GroupConv {
                    c,
                    dw,
                    w,
                    bias,
                    x,
                    y,
                } => {
                    let mut out = std::mem::take(&mut bufs[*y]);
                    if let Some(d) = dw {
                        let (xb, b) = (&bufs[*x], bias.as_deref());
                        lopper_kernels::depthwise::depthwise(
                            d, w, b, xb, self.batch, &mut out, scratch,
                        );
                    } else {
                        general::group_conv(c, w, bias.as_deref(), &bufs[*x], self.batch, &mut out);
                    }
                    bufs[*y] = out;
                }
            }
            if let (Some(p), Some(t)) = (profile.as_mut(), started) {
                p[si + 1] += t.elapsed().as_nanos() as f64;
            }
        }
        Ok(())
    }

    /// The format and kernel each weight layer runs with.
    pub fn layers(&self) -> Vec<(String, String, &'static str)> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Linear { mm, .. } | Step::Conv { mm, .. } => {
                    Some((mm.node.clone(), mm.w.kind().name(), mm.kernel.name()))
                }
                _ => None,
            })
            .collect()
    }
}

/// The window of a convolution or pooling node from its validated value shapes.
fn window(
    i: &[usize],
    o: &[usize],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> Window {
    Window {
        c: i[0],
        h: i[1],
        w: i[2],
        kh: kernel[0],
        kw: kernel[1],
        sh: stride[0],
        sw: stride[1],
        ph: padding[0],
        pw: padding[1],
        oh: o[1],
        ow: o[2],
    }
}

/// A model compiled for one plan (batch size, thread count, per-layer format and kernel), run in
/// sub-batches of `plan.sub_batch` examples so that every activation stays in cache; a batch
/// that is not a multiple runs its remainder through a second, smaller core.
pub struct Executor {
    batch: usize,
    sub: usize,
    main: Core,
    rest: Option<Core>,
    out: Vec<f32>,
}

impl Executor {
    /// Compiles `model` for `plan` (made for this model; its batch is the executor's batch).
    pub fn new(model: &Model, plan: &Plan) -> Result<Self, ModelError> {
        let batch = plan.batch.max(1);
        let sub = plan.sub_batch().clamp(1, batch);
        super::plan::check_run_size(model, batch, sub)?;
        let main = Core::new(model, plan, sub, true)?;
        let rest = match batch % sub {
            0 => None,
            r => Some(Core::new(model, plan, r, false)?),
        };
        // Only a split batch gathers the cores' outputs into a buffer of its own.
        let out = if sub == batch {
            Vec::new()
        } else {
            vec![0.0; main.out_features * batch]
        };
        Ok(Self {
            batch,
            sub,
            main,
            rest,
            out,
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Examples per internal run.
    pub fn sub_batch(&self) -> usize {
        self.sub
    }

    pub fn in_features(&self) -> usize {
        self.main.in_features
    }

    pub fn out_features(&self) -> usize {
        self.main.out_features
    }

    /// Runs one batch: `input` is `[batch, in_features]`; returns `[batch, out_features]`.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32], ModelError> {
        let (fi, fo) = (self.main.in_features, self.main.out_features);
        if input.len() != self.batch * fi {
            return Err(ModelError::InputSize {
                actual: input.len(),
                expected: self.batch * fi,
                batch: self.batch,
                per_example: fi,
            });
        }
        if self.sub == self.batch {
            // One core covers the batch: its output buffer is the answer, no copy.
            return self.main.run(input);
        }
        for (c, (xin, yout)) in input
            .chunks(self.sub * fi)
            .zip(self.out.chunks_mut(self.sub * fo))
            .enumerate()
        {
            let core = if xin.len() == self.sub * fi {
                &mut self.main
            } else {
                self.rest.as_mut().ok_or_else(|| {
                    ModelError::Plan(format!("chunk {c} has no core for its size"))
                })?
            };
            yout.copy_from_slice(core.run(xin)?);
        }
        Ok(&self.out)
    }

    /// Mean time per step over `iters` runs of `input` (one sub-batch; see [`Executor::sub_batch`]).
    pub fn profile(
        &mut self,
        input: &[f32],
        iters: usize,
    ) -> Result<Vec<(String, f64)>, ModelError> {
        let fi = self.main.in_features;
        let first = input.get(..self.sub * fi).ok_or(ModelError::InputSize {
            actual: input.len(),
            expected: self.batch * fi,
            batch: self.batch,
            per_example: fi,
        })?;
        self.main.profile(first, iters)
    }

    /// The format and kernel each weight layer runs with.
    pub fn layers(&self) -> Vec<(String, String, &'static str)> {
        self.main.layers()
    }
}

/// Median time per run of each executor on `x`, timed side by side in interleaved rounds
/// (`lopper_kernels::bench::time_interleaved`): the planner's whole-model check and `lopper
/// bench` both time models through this.
pub fn time_executors(
    exs: &mut [Executor],
    x: &[f32],
    rounds: usize,
    min_sample_ns: u64,
) -> Result<Vec<f64>, ModelError> {
    let mut runs: Vec<_> = exs
        .iter_mut()
        .map(|ex| {
            move || {
                std::hint::black_box(ex.run(x)?);
                Ok(())
            }
        })
        .collect();
    let mut fns: Vec<&mut dyn FnMut() -> Result<(), ModelError>> = runs
        .iter_mut()
        .map(|f| f as &mut dyn FnMut() -> Result<(), ModelError>)
        .collect();
    lopper_kernels::bench::time_interleaved(&mut fns, rounds, min_sample_ns)
}

#[allow(clippy::too_many_arguments)]
fn matmul(
    model: &Model,
    node: &crate::graph::Node,
    weight: &str,
    bias: Option<&str>,
    choice: &super::plan::LayerChoice,
    batch: usize,
    threads: usize,
    strict: bool,
) -> Result<Matmul, ModelError> {
    let plan_err = |m: String| ModelError::Plan(format!("node '{}': {m}", node.name));
    let stored = &model.weights[weight];
    let (kind, dtype) = (choice.format, choice.dtype);
    let kernel = MmKernel::by_name(&choice.kernel)
        .ok_or_else(|| plan_err(format!("unknown kernel '{}'", choice.kernel)))?;
    if matches!(kernel, MmKernel::Q8 { .. }) && !model.graph.weights[weight].int8_acts {
        return Err(plan_err(format!(
            "{} quantizes activations, which the file does not allow for '{weight}'",
            choice.kernel
        )));
    }
    let w = super::plan::layer_weight(weight, stored, kind, dtype, kernel)?;
    if matches!(kernel, MmKernel::Direct(_)) && !matches!(node.op, Op::Conv2d { .. }) {
        return Err(plan_err(format!(
            "{} only runs convolutions",
            choice.kernel
        )));
    }
    let n = super::plan::product_width(model, node, batch);
    if strict && n != choice.n {
        return Err(plan_err(format!(
            "made for width {}, the model needs {n}",
            choice.n
        )));
    }
    Matmul::new(
        &node.name,
        w,
        kernel,
        choice.parts.clamp(1, threads.max(1)),
        bias.map(|b| model.vectors[b].clone()),
        n,
    )
}
