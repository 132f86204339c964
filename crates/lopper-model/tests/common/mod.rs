//! Small random models for the tests, and a plain f64 reference interpreter of the graph that
//! shares nothing with the runtime (example-major NCHW, direct convolution, no im2col).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use lopper_kernels::mask::top_k_mask;
use lopper_kernels::{Dense, Dtype, FormatKind, WeightMatrix};
use lopper_model::graph::{InputSpec, Op};
use lopper_model::{Graph, Model, Node};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn randn(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(-1.0f32..1.0)).collect()
}

/// A `[rows, cols]` weight at `sparsity`, encoded as `kind`/`dtype`.
pub fn weight(
    r: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    sparsity: f64,
    kind: FormatKind,
    dtype: Dtype,
) -> WeightMatrix {
    let v = randn(r, rows * cols);
    let scores: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    let mask = top_k_mask(&scores, sparsity);
    let d = Dense::from_vec(rows, cols, v).unwrap();
    WeightMatrix::encode(&d, &mask, kind, dtype).unwrap()
}

pub fn node(name: &str, op: Op, inputs: &[&str], output: &str) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        output: output.into(),
    }
}

fn graph(name: &str, shape: Vec<usize>, nodes: Vec<Node>, output: &str, labels: usize) -> Graph {
    Graph {
        name: name.into(),
        input: InputSpec {
            name: "input".into(),
            shape,
            preprocess: None,
        },
        labels: (0..labels).map(|i| format!("class{i}")).collect(),
        output: output.into(),
        weights: BTreeMap::new(),
        nodes,
    }
}

fn linear(w: &str, b: bool) -> Op {
    Op::Linear {
        weight: w.into(),
        bias: b.then(|| format!("{w}.bias").replace(".weight", "")),
    }
}

/// flatten, linear (kind0), relu, linear (kind1), relu, linear (dense), softmax.
pub fn mlp(seed: u64, kinds: [FormatKind; 2], dtype: Dtype) -> Model {
    let mut r = rng(seed);
    let mut weights = BTreeMap::new();
    weights.insert(
        "fc1.weight".to_string(),
        weight(&mut r, 37, 48, 0.8, kinds[0], dtype),
    );
    weights.insert(
        "fc2.weight".to_string(),
        weight(&mut r, 21, 37, 0.5, kinds[1], dtype),
    );
    weights.insert(
        "fc3.weight".to_string(),
        weight(&mut r, 10, 21, 0.0, FormatKind::Dense, Dtype::F32),
    );
    let mut vectors = BTreeMap::new();
    for (n, len) in [("fc1.bias", 37), ("fc2.bias", 21), ("fc3.bias", 10)] {
        vectors.insert(n.to_string(), randn(&mut r, len));
    }
    let nodes = vec![
        node("flatten", Op::Flatten, &["input"], "x0"),
        node("fc1", linear("fc1.weight", true), &["x0"], "x1"),
        node("relu1", Op::Relu, &["x1"], "x2"),
        node("fc2", linear("fc2.weight", true), &["x2"], "x3"),
        node("relu2", Op::Relu, &["x3"], "x4"),
        node("fc3", linear("fc3.weight", true), &["x4"], "logits"),
        node("softmax", Op::Softmax, &["logits"], "probs"),
    ];
    Model::new(
        graph("mlp", vec![3, 4, 4], nodes, "probs", 10),
        weights,
        vectors,
    )
    .unwrap()
}

fn conv(w: &str, k: usize, s: usize, p: usize, bias: bool) -> Op {
    Op::Conv2d {
        weight: w.into(),
        bias: bias.then(|| w.replace(".weight", ".bias")),
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
        dilation: [1, 1],
        groups: 1,
    }
}

/// conv 3x3 pad 1 (kind), BN, relu, residual block (conv stride 2 + 1x1 stride-2 shortcut,
/// add), relu, 1x1 conv stride 1 (direct path), max-pool, avg-pool, global-avg, linear.
pub fn cnn(seed: u64, kind: FormatKind, dtype: Dtype) -> Model {
    let mut r = rng(seed);
    let mut weights = BTreeMap::new();
    let mut vectors = BTreeMap::new();
    let mut w = |name: &str, rows, cols, sp, k: FormatKind| {
        let m = weight(
            &mut r,
            rows,
            cols,
            sp,
            k,
            if k == FormatKind::Dense {
                Dtype::F32
            } else {
                dtype
            },
        );
        weights.insert(name.to_string(), m);
    };
    w("c1.weight", 8, 2 * 9, 0.5, kind);
    w("b1.weight", 12, 8 * 9, 0.7, kind);
    w("sc.weight", 12, 8, 0.3, kind);
    w("c3.weight", 16, 12, 0.6, FormatKind::Dense);
    w("fc.weight", 5, 16, 0.2, kind);
    let mut r = rng(seed + 1);
    for (n, len) in [
        ("c1.bias", 8),
        ("b1.bias", 12),
        ("c3.bias", 16),
        ("fc.bias", 5),
    ] {
        vectors.insert(n.to_string(), randn(&mut r, len));
    }
    for (n, len) in [("bn.gamma", 8), ("bn.beta", 8), ("bn.mean", 8)] {
        vectors.insert(n.to_string(), randn(&mut r, len));
    }
    vectors.insert(
        "bn.var".into(),
        (0..8).map(|i| 0.5 + i as f32 * 0.1).collect(),
    );
    let nodes = vec![
        node("c1", conv("c1.weight", 3, 1, 1, true), &["input"], "a"),
        node(
            "bn",
            Op::BatchNorm {
                gamma: "bn.gamma".into(),
                beta: "bn.beta".into(),
                mean: "bn.mean".into(),
                var: "bn.var".into(),
                eps: 1e-5,
            },
            &["a"],
            "b",
        ),
        node("r1", Op::Relu, &["b"], "c"),
        node("b1", conv("b1.weight", 3, 2, 1, true), &["c"], "d"),
        node("sc", conv("sc.weight", 1, 2, 0, false), &["c"], "e"),
        node("add", Op::Add, &["d", "e"], "f"),
        node("r2", Op::Relu, &["f"], "g"),
        node("c3", conv("c3.weight", 1, 1, 0, true), &["g"], "h"),
        node(
            "mp",
            Op::MaxPool {
                kernel: [2, 2],
                stride: [1, 1],
                padding: [0, 0],
            },
            &["h"],
            "i",
        ),
        node(
            "ap",
            Op::AvgPool {
                kernel: [2, 2],
                stride: [2, 2],
            },
            &["i"],
            "j",
        ),
        node("gap", Op::GlobalAvgPool, &["j"], "k"),
        node("fc", linear("fc.weight", true), &["k"], "logits"),
    ];
    Model::new(
        graph("cnn", vec![2, 9, 10], nodes, "logits", 5),
        weights,
        vectors,
    )
    .unwrap()
}

/// Plain interpreter: one example at a time, NCHW, f64.
pub fn reference(model: &Model, input: &[f32], batch: usize) -> Vec<f32> {
    let g = &model.graph;
    let f_in = g.input_len();
    let mut out = Vec::new();
    for e in 0..batch {
        let mut vals: HashMap<String, Vec<f64>> = HashMap::new();
        vals.insert(
            g.input.name.clone(),
            input[e * f_in..(e + 1) * f_in]
                .iter()
                .map(|&v| v as f64)
                .collect(),
        );
        for n in &g.nodes {
            let x = &vals[&n.inputs[0]];
            let ins = &model.shapes[&n.inputs[0]];
            let os = &model.shapes[&n.output];
            let vecs =
                |k: &str| -> Vec<f64> { model.vectors[k].iter().map(|&v| v as f64).collect() };
            let y: Vec<f64> = match &n.op {
                Op::Reshape { .. } => x.clone(),
                Op::Clip { min, max } => x
                    .iter()
                    .map(|&v| v.clamp(*min as f64, *max as f64))
                    .collect(),
                Op::Sigmoid => x.iter().map(|&v| 1.0 / (1.0 + (-v).exp())).collect(),
                Op::Tanh => x.iter().map(|&v| v.tanh()).collect(),
                Op::HardSwish => x
                    .iter()
                    .map(|&v| v * (v + 3.0).clamp(0.0, 6.0) / 6.0)
                    .collect(),
                Op::Flatten | Op::Relu => x
                    .iter()
                    .map(|&v| {
                        if matches!(n.op, Op::Relu) {
                            v.max(0.0)
                        } else {
                            v
                        }
                    })
                    .collect(),
                Op::Linear { weight, bias } => {
                    let w = model.weights[weight].to_dense();
                    let b = bias.as_ref().map(|b| vecs(b));
                    (0..w.rows())
                        .map(|o| {
                            (0..w.cols())
                                .map(|i| w.get(o, i) as f64 * x[i])
                                .sum::<f64>()
                                + b.as_ref().map_or(0.0, |b| b[o])
                        })
                        .collect()
                }
                Op::Conv2d {
                    weight,
                    bias,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups,
                } => {
                    let w = model.weights[weight].to_dense();
                    let b = bias.as_ref().map(|b| vecs(b));
                    let (c, h, wd) = (ins[0], ins[1] as isize, ins[2] as isize);
                    let (oc, oh, ow) = (os[0], os[1], os[2]);
                    let mut y = vec![0.0; oc * oh * ow];
                    for o in 0..oc {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let mut s = b.as_ref().map_or(0.0, |b| b[o]);
                                let (ipg, opg) = (c / groups, oc / groups);
                                for ci in 0..ipg {
                                    let cin = (o / opg) * ipg + ci;
                                    for ky in 0..kernel[0] {
                                        for kx in 0..kernel[1] {
                                            let iy = (oy * stride[0] + ky * dilation[0]) as isize
                                                - padding[0] as isize;
                                            let ix = (ox * stride[1] + kx * dilation[1]) as isize
                                                - padding[1] as isize;
                                            if iy >= 0 && iy < h && ix >= 0 && ix < wd {
                                                let col = (ci * kernel[0] + ky) * kernel[1] + kx;
                                                s += w.get(o, col) as f64
                                                    * x[((cin as isize * h + iy) * wd + ix)
                                                        as usize];
                                            }
                                        }
                                    }
                                }
                                y[(o * oh + oy) * ow + ox] = s;
                            }
                        }
                    }
                    y
                }
                Op::BatchNorm {
                    gamma,
                    beta,
                    mean,
                    var,
                    eps,
                } => {
                    let (ga, be, me, va) = (vecs(gamma), vecs(beta), vecs(mean), vecs(var));
                    let inner = x.len() / ins[0];
                    x.iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            let c = i / inner;
                            ga[c] * (v - me[c]) / (va[c] + *eps as f64).sqrt() + be[c]
                        })
                        .collect()
                }
                Op::MaxPool { kernel, stride, .. } | Op::AvgPool { kernel, stride } => {
                    let max = matches!(n.op, Op::MaxPool { .. });
                    let pad = match &n.op {
                        Op::MaxPool { padding, .. } => *padding,
                        _ => [0, 0],
                    };
                    let (h, wd) = (ins[1], ins[2]);
                    let (oh, ow) = (os[1], os[2]);
                    let mut y = Vec::new();
                    for c in 0..ins[0] {
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let win: Vec<f64> = (0..kernel[0])
                                    .flat_map(|ky| (0..kernel[1]).map(move |kx| (ky, kx)))
                                    .filter_map(|(ky, kx)| {
                                        let iy = (oy * stride[0] + ky).checked_sub(pad[0])?;
                                        let ix = (ox * stride[1] + kx).checked_sub(pad[1])?;
                                        (iy < h && ix < wd).then(|| x[(c * h + iy) * wd + ix])
                                    })
                                    .collect();
                                y.push(if max {
                                    win.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                                } else {
                                    win.iter().sum::<f64>() / win.len() as f64
                                });
                            }
                        }
                    }
                    y
                }
                Op::GlobalAvgPool => {
                    let hw = ins[1] * ins[2];
                    (0..ins[0])
                        .map(|c| x[c * hw..(c + 1) * hw].iter().sum::<f64>() / hw as f64)
                        .collect()
                }
                Op::Add => x
                    .iter()
                    .zip(&vals[&n.inputs[1]])
                    .map(|(a, b)| a + b)
                    .collect(),
                Op::Softmax => {
                    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
                    let s: f64 = e.iter().sum();
                    e.iter().map(|v| v / s).collect()
                }
            };
            vals.insert(n.output.clone(), y);
        }
        out.extend(vals[&g.output].iter().map(|&v| v as f32));
    }
    out
}

/// Max |a - b| relative to `1 + max |b|`.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = 1.0 + b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// One wide convolution (K = 64*3*3 = 576): at batch 4 its im2col runs in several tiles, the
/// last one partial.
pub fn wide_conv(seed: u64, kind: FormatKind) -> Model {
    let mut r = rng(seed);
    let mut weights = BTreeMap::new();
    weights.insert(
        "c.weight".to_string(),
        weight(&mut r, 8, 576, 0.7, kind, Dtype::F32),
    );
    weights.insert(
        "fc.weight".to_string(),
        weight(&mut r, 3, 8, 0.0, FormatKind::Dense, Dtype::F32),
    );
    let mut vectors = BTreeMap::new();
    vectors.insert("c.bias".to_string(), randn(&mut r, 8));
    let nodes = vec![
        node("c", conv("c.weight", 3, 1, 1, true), &["input"], "a"),
        node("r", Op::Relu, &["a"], "b"),
        node(
            "mp",
            Op::MaxPool {
                kernel: [2, 2],
                stride: [1, 1],
                padding: [0, 0],
            },
            &["b"],
            "b2",
        ),
        node("gap", Op::GlobalAvgPool, &["b2"], "c2"),
        node("fc", linear("fc.weight", false), &["c2"], "logits"),
    ];
    Model::new(
        graph("wide", vec![64, 9, 10], nodes, "logits", 3),
        weights,
        vectors,
    )
    .unwrap()
}
