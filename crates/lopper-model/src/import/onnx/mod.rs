//! ONNX import: an ONNX graph becomes a lopper [`Model`].
//!
//! The graph's one float input has a batch dimension first (named, `-1`, unset or 1) and static
//! dimensions after it; lopper's shapes are per example, so the batch is dropped. Shape
//! arithmetic on constants is folded here ([`fold`]), with the batch size kept symbolic.
//! Every node that touches an activation must map to a lopper op, or the import fails naming
//! the node, its op type and the opset.
//!
//! Layouts at this boundary: a `MatMul` weight is `[in, out]` in ONNX and is transposed to
//! lopper's `[out, in]`; `Gemm` with `transB = 1` and `Conv`'s `[out, in/groups, kh, kw]` already
//! are `[out, ...]` and are copied as they are. A bias `Add` after a `MatMul` (or a `Conv`
//! without bias) is folded into that layer.

mod attrs;
mod fold;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use lopper_kernels::{Dense, WeightMatrix};

use self::attrs::Attrs;
use self::fold::{Bin, BATCH};
use crate::error::ModelError;
use crate::file::{spec_of, Model};
use crate::graph::{Graph, InputSpec, Node, Op};
use crate::onnx::proto::{self, NodeProto};
use crate::onnx::{self as ox, Tensor};

/// The opsets of the default domain lopper imports.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// Op types the importer maps, for error messages and `docs/format.md`.
pub const SUPPORTED: &str = "Add (bias or residual), AveragePool, BatchNormalization, Cast, \
    Clip, Concat*, Constant, ConstantOfShape*, Conv (groups, dilation), Div*, Dropout, Equal*, \
    Flatten, Gather*, Gemm, GlobalAveragePool, HardSwish, Identity, MatMul (constant weight), \
    MaxPool, Mul*, Pow*, Range*, ReduceMean (spatial), Relu, Reshape, Shape, Sigmoid, Slice*, \
    Softmax, Sqrt*, Squeeze, Sub*, Tanh, Transpose*, Unsqueeze, Where* (* on constants only)";

/// Reads and imports `path`; errors name the file.
pub fn import(path: &Path) -> Result<Model, ModelError> {
    super::read_any(path).map(|(m, _)| m)
}

/// Imports a decoded model; `dir` resolves external data, `name` is used when the graph has none.
pub fn import_model(m: &proto::ModelProto, dir: &Path, name: &str) -> Result<Model, ModelError> {
    let err = ModelError::Onnx;
    let opset =
        ox::default_opset(m).ok_or_else(|| err("the model imports no ai.onnx opset".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(err(format!(
            "opset {opset} is not supported (lopper imports opsets {} to {}; convert with \
             onnx.version_converter)",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let g = m.graph.as_ref().ok_or_else(|| err("no graph".into()))?;
    let mut imp = Importer::new(dir, opset, g, name)?;
    for (i, n) in g.node.iter().enumerate() {
        let label = if n.name().is_empty() {
            format!("{}_{i}", n.op_type())
        } else {
            n.name().to_string()
        };
        imp.node(n, &label).map_err(|m| {
            err(format!(
                "node '{label}' ({} , opset {opset}): {m}",
                n.op_type()
            ))
        })?;
    }
    imp.finish(g)
}

/// A value during import: an activation (named in the lopper graph) or a folded constant.
#[derive(Clone)]
enum Val {
    Act(String),
    Const(Tensor),
}

struct Importer<'a> {
    dir: &'a Path,
    opset: i64,
    /// The input's declared batch dim is the literal 1 (a Reshape to `[1, ...]` then keeps it).
    batch_one: bool,
    vals: HashMap<String, Val>,
    shapes: HashMap<String, Vec<usize>>,
    graph: Graph,
    weights: BTreeMap<String, WeightMatrix>,
    vectors: BTreeMap<String, Vec<f32>>,
    /// Index in `graph.nodes` of the node writing each lopper value.
    producer: HashMap<String, usize>,
    /// Nodes (and graph outputs) reading each ONNX value.
    readers: HashMap<String, usize>,
    /// Names taken in each namespace: lopper values, nodes, and file tensors (weights and vectors).
    names: [HashSet<String>; 3],
}

const VALUE: usize = 0;
const NODE: usize = 1;
const TENSOR: usize = 2;

type R<T> = Result<T, String>;

impl<'a> Importer<'a> {
    fn new(
        dir: &'a Path,
        opset: i64,
        g: &proto::GraphProto,
        name: &str,
    ) -> Result<Self, ModelError> {
        let err = ModelError::Onnx;
        let mut vals = HashMap::new();
        for t in &g.initializer {
            vals.insert(t.name().to_string(), Val::Const(ox::tensor(t, dir)?));
        }
        if !g.sparse_initializer.is_empty() {
            return Err(err("sparse initializers are not supported yet".into()));
        }
        let inputs: Vec<&proto::ValueInfoProto> = g
            .input
            .iter()
            .filter(|i| !vals.contains_key(i.name()))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(err(format!(
                "the graph has {} inputs ({}); lopper imports graphs with one float input",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let (shape, batch_one) =
            input_shape(input).map_err(|m| err(format!("input '{}': {m}", input.name())))?;
        let in_name = input.name().to_string();
        vals.insert(in_name.clone(), Val::Act(in_name.clone()));
        let mut readers: HashMap<String, usize> = HashMap::new();
        for n in &g.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                *readers.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &g.output {
            *readers.entry(o.name().to_string()).or_default() += 1;
        }
        let graph = Graph {
            name: if g.name().is_empty() {
                name.to_string()
            } else {
                g.name().to_string()
            },
            input: InputSpec {
                name: in_name.clone(),
                shape: shape.clone(),
                preprocess: None,
            },
            labels: Vec::new(),
            output: String::new(),
            weights: BTreeMap::new(),
            nodes: Vec::new(),
        };
        Ok(Importer {
            dir,
            opset,
            batch_one,
            vals,
            shapes: HashMap::from([(in_name.clone(), shape)]),
            graph,
            weights: BTreeMap::new(),
            vectors: BTreeMap::new(),
            producer: HashMap::new(),
            readers,
            names: [HashSet::from([in_name]), HashSet::new(), HashSet::new()],
        })
    }

    /// A fresh name in namespace `ns` based on `base`.
    fn unique(&mut self, ns: usize, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.names[ns].contains(&name) {
            k += 1;
            name = format!("{base}#{k}");
        }
        self.names[ns].insert(name.clone());
        name
    }

    fn input(&self, n: &NodeProto, i: usize) -> R<Option<&Val>> {
        match n.input.get(i).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => self
                .vals
                .get(name)
                .map(Some)
                .ok_or_else(|| format!("input '{name}' is not defined before this node")),
        }
    }

    fn act(&self, n: &NodeProto, i: usize) -> R<String> {
        match self.input(n, i)? {
            Some(Val::Act(a)) => Ok(a.clone()),
            Some(Val::Const(_)) => Err(format!(
                "input {i} is a constant where an activation is expected"
            )),
            None => Err(format!("input {i} is missing")),
        }
    }

    fn konst(&self, n: &NodeProto, i: usize) -> R<Option<Tensor>> {
        match self.input(n, i)? {
            Some(Val::Const(t)) => Ok(Some(t.clone())),
            Some(Val::Act(_)) => Err(format!(
                "input {i} ('{}') is computed from the graph's input; lopper needs it constant",
                n.input[i]
            )),
            None => Ok(None),
        }
    }

    fn out(&self, n: &NodeProto) -> R<String> {
        n.output
            .first()
            .filter(|o| !o.is_empty())
            .cloned()
            .ok_or_else(|| "has no output".into())
    }

    fn set(&mut self, n: &NodeProto, v: Val) -> R<()> {
        let o = self.out(n)?;
        self.vals.insert(o, v);
        Ok(())
    }

    /// Appends a lopper node writing the node's first output; returns the lopper value.
    fn emit(&mut self, label: &str, n: &NodeProto, op: Op, inputs: Vec<String>) -> R<String> {
        let out = self.out(n)?;
        let out = self.unique(VALUE, &out);
        let v = self.push(label, op, inputs, out)?;
        self.set(n, Val::Act(v.clone()))?;
        Ok(v)
    }

    fn push(&mut self, label: &str, op: Op, inputs: Vec<String>, out: String) -> R<String> {
        let node = Node {
            name: self.unique(NODE, label),
            op,
            inputs,
            output: out.clone(),
        };
        let ins: Vec<Vec<usize>> = node.inputs.iter().map(|i| self.shapes[i].clone()).collect();
        let vectors = &self.vectors;
        let shape = self
            .graph
            .infer(&node, &ins, &|v: &str| vectors.get(v).map(Vec::len))
            .map_err(|e| e.to_string())?;
        self.shapes.insert(out.clone(), shape);
        self.producer.insert(out.clone(), self.graph.nodes.len());
        self.graph.nodes.push(node);
        Ok(out)
    }

    fn add_weight(&mut self, base: &str, rows: usize, cols: usize, data: Vec<f32>) -> R<String> {
        let name = self.unique(TENSOR, base);
        let w = WeightMatrix::Dense(Dense::from_vec(rows, cols, data).map_err(|e| e.to_string())?);
        self.graph.weights.insert(name.clone(), spec_of(&w));
        self.weights.insert(name.clone(), w);
        Ok(name)
    }

    fn add_vector(&mut self, base: &str, v: Vec<f32>) -> R<String> {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(format!("'{base}' holds a non-finite value"));
        }
        let name = self.unique(TENSOR, base);
        self.vectors.insert(name.clone(), v);
        Ok(name)
    }

    /// Axes from the `axes` attribute (older opsets) or the second input (newer ones).
    fn axes(&self, n: &NodeProto, a: &Attrs) -> R<Option<Vec<i64>>> {
        match a.ints("axes") {
            Some(v) => Ok(Some(v)),
            None => Ok(self.konst(n, 1)?.and_then(|t| t.as_i64())),
        }
    }

    fn shape(&self, v: &str) -> Vec<usize> {
        self.shapes[v].clone()
    }

    fn node(&mut self, n: &NodeProto, label: &str) -> R<()> {
        if !matches!(n.domain(), "" | "ai.onnx") {
            return Err(format!(
                "domain '{}' is not supported (lopper imports the default ai.onnx ops: {SUPPORTED})",
                n.domain()
            ));
        }
        let op = n.op_type();
        let a = Attrs::new(n);
        let all_const = n
            .input
            .iter()
            .filter(|i| !i.is_empty())
            .all(|i| matches!(self.vals.get(i), Some(Val::Const(_))));
        if all_const {
            if let Some(t) = self.fold(n, &a)? {
                return self.set(n, Val::Const(t));
            }
        }
        match op {
            "Identity" | "Dropout" => {
                let v = self.input(n, 0)?.cloned().ok_or("input 0 is missing")?;
                self.set(n, v)
            }
            "Cast" => {
                if a.int("to", 1) != proto::tensor_proto::DataType::Float as i64 {
                    return Err(format!(
                        "casting an activation to {} is not supported",
                        ox::type_name(a.int("to", 0) as i32)
                    ));
                }
                let x = self.act(n, 0)?;
                self.set(n, Val::Act(x))
            }
            "Shape" => {
                let x = self.act(n, 0)?;
                let mut dims = vec![BATCH];
                dims.extend(self.shape(&x).iter().map(|&d| d as i64));
                let full = Tensor::i64(vec![dims.len()], dims);
                let r = full.dims[0] as i64;
                let s = a.int("start", 0);
                let e = a.int("end", r);
                let t = fold::slice(&full, &[s], &[e], Some(&[0]), None)?;
                self.set(n, Val::Const(t))
            }
            "Relu" | "Sigmoid" | "Tanh" | "HardSwish" => {
                let x = self.act(n, 0)?;
                let op = match op {
                    "Relu" => Op::Relu,
                    "Sigmoid" => Op::Sigmoid,
                    "Tanh" => Op::Tanh,
                    _ => Op::HardSwish,
                };
                self.emit(label, n, op, vec![x]).map(drop)
            }
            "Clip" => {
                let x = self.act(n, 0)?;
                let (min, max) = if self.opset < 11 {
                    (
                        a.float("min", f32::NEG_INFINITY),
                        a.float("max", f32::INFINITY),
                    )
                } else {
                    let scalar = |t: Option<Tensor>, d: f32| -> R<f32> {
                        match t {
                            None => Ok(d),
                            Some(t) if t.len() == 1 => Ok(t.as_f32()[0]),
                            Some(t) => Err(format!(
                                "Clip bounds must be scalars, got dims {:?}",
                                t.dims
                            )),
                        }
                    };
                    (
                        scalar(self.konst(n, 1)?, f32::NEG_INFINITY)?,
                        scalar(self.konst(n, 2)?, f32::INFINITY)?,
                    )
                };
                self.emit(label, n, Op::Clip { min, max }, vec![x])
                    .map(drop)
            }
            "Conv" => self.conv(n, &a, label),
            "BatchNormalization" => self.batchnorm(n, &a, label),
            "MaxPool" | "AveragePool" => self.pool(n, &a, label),
            "GlobalAveragePool" => {
                let x = self.act(n, 0)?;
                self.global_pool(n, label, x, true)
            }
            "ReduceMean" => {
                let x = self.act(n, 0)?;
                let axes = self.axes(n, &a)?.unwrap_or_default();
                let rank = self.shape(&x).len() + 1;
                let mut ax = axes
                    .iter()
                    .map(|&v| fold::axis(v, rank))
                    .collect::<R<Vec<_>>>()?;
                ax.sort_unstable();
                if rank != 4 || ax != [2, 3] {
                    return Err(format!(
                        "ReduceMean over axes {axes:?} of a rank-{rank} value: only the spatial mean of \
                         [N, C, H, W] (axes 2, 3) is supported"
                    ));
                }
                self.global_pool(n, label, x, a.int("keepdims", 1) != 0)
            }
            "Flatten" => {
                let x = self.act(n, 0)?;
                let s = self.shape(&x);
                let ax = fold::axis(a.int("axis", 1), s.len() + 1)?;
                match ax {
                    0 => Err("Flatten at axis 0 folds the batch into the features".into()),
                    1 => self.emit(label, n, Op::Flatten, vec![x]).map(drop),
                    k => {
                        let shape = vec![s[..k - 1].iter().product(), s[k - 1..].iter().product()];
                        self.emit(label, n, Op::Reshape { shape }, vec![x])
                            .map(drop)
                    }
                }
            }
            "Reshape" => self.reshape(n, &a, label),
            "Squeeze" | "Unsqueeze" => {
                let x = self.act(n, 0)?;
                let axes = self.axes(n, &a)?.ok_or("axes are missing")?;
                let s = self.shape(&x);
                let full = Tensor::i64(
                    std::iter::once(1).chain(s.iter().copied()).collect(),
                    Vec::new(),
                );
                let dims = if op == "Squeeze" {
                    fold::squeeze(&full, Some(&axes))?.dims
                } else {
                    fold::unsqueeze(&full, &axes)?.dims
                };
                let touches_batch = axes.iter().any(|&v| {
                    fold::axis(
                        v,
                        if op == "Squeeze" {
                            s.len() + 1
                        } else {
                            dims.len()
                        },
                    ) == Ok(0)
                });
                if touches_batch {
                    return Err(format!("{op} on axis 0 moves the batch dimension"));
                }
                self.emit(
                    label,
                    n,
                    Op::Reshape {
                        shape: dims[1..].to_vec(),
                    },
                    vec![x],
                )
                .map(drop)
            }
            "Gemm" => self.gemm(n, &a, label),
            "MatMul" => self.matmul(n, label),
            "Add" => self.add(n, label),
            "Softmax" => {
                let x = self.act(n, 0)?;
                let s = self.shape(&x);
                let default = if self.opset < 13 { 1 } else { -1 };
                let ax = fold::axis(a.int("axis", default), s.len() + 1)?;
                if s.len() != 1 || ax != 1 {
                    return Err(format!(
                        "Softmax on axis {ax} of [N, {s:?}]: only the feature axis of [N, F] is supported"
                    ));
                }
                self.emit(label, n, Op::Softmax, vec![x]).map(drop)
            }
            other => Err(format!(
                "op {other} on an activation is not supported (lopper imports: {SUPPORTED})"
            )),
        }
    }

    /// Folds a node whose inputs are all constants; `None` when the op is not one to fold.
    fn fold(&self, n: &NodeProto, a: &Attrs) -> R<Option<Tensor>> {
        let c = |i: usize| -> R<Tensor> {
            self.konst(n, i)?
                .ok_or_else(|| format!("input {i} is missing"))
        };
        let ints = |i: usize| -> R<Vec<i64>> {
            c(i)?
                .as_i64()
                .ok_or_else(|| format!("input {i} is not integers"))
        };
        let opt_ints =
            |i: usize| -> R<Option<Vec<i64>>> { Ok(self.konst(n, i)?.and_then(|t| t.as_i64())) };
        let bin = |op: Bin| -> R<Option<Tensor>> { fold::binary(op, &c(0)?, &c(1)?).map(Some) };
        Ok(match n.op_type() {
            "Constant" => Some(self.constant(a)?),
            "Identity" | "Dropout" => Some(c(0)?),
            "Cast" => {
                let t = c(0)?;
                let to = a.int("to", 1) as i32;
                use proto::tensor_proto::DataType as D;
                Some(match D::try_from(to).unwrap_or(D::Undefined) {
                    D::Float | D::Double | D::Float16 | D::Bfloat16 => {
                        Tensor::f32(t.dims.clone(), t.as_f32())
                    }
                    D::Int64 | D::Int32 | D::Int8 | D::Uint8 | D::Bool => {
                        let v = t.as_f32();
                        let ints = match &t.data {
                            ox::Data::I64(i) => i.clone(),
                            ox::Data::F32(_) => v.iter().map(|x| x.trunc() as i64).collect(),
                        };
                        let ints = if to == D::Bool as i32 {
                            ints.iter().map(|&x| (x != 0) as i64).collect()
                        } else {
                            ints
                        };
                        Tensor::i64(t.dims.clone(), ints)
                    }
                    _ => return Err(format!("Cast to {} is not supported", ox::type_name(to))),
                })
            }
            "Shape" => {
                let t = c(0)?;
                let full = Tensor::i64(
                    vec![t.dims.len()],
                    t.dims.iter().map(|&d| d as i64).collect(),
                );
                let r = t.dims.len() as i64;
                Some(fold::slice(
                    &full,
                    &[a.int("start", 0)],
                    &[a.int("end", r)],
                    Some(&[0]),
                    None,
                )?)
            }
            "Gather" => Some(fold::gather(&c(0)?, &c(1)?, a.int("axis", 0))?),
            "Unsqueeze" => {
                let axes = self.axes(n, a)?.ok_or("axes are missing")?;
                Some(fold::unsqueeze(&c(0)?, &axes)?)
            }
            "Squeeze" => Some(fold::squeeze(&c(0)?, self.axes(n, a)?.as_deref())?),
            "Concat" => {
                let ts = (0..n.input.len()).map(c).collect::<R<Vec<_>>>()?;
                Some(fold::concat(
                    &ts.iter().collect::<Vec<_>>(),
                    a.int("axis", 0),
                )?)
            }
            "Slice" => {
                let t = c(0)?;
                Some(fold::slice(
                    &t,
                    &ints(1)?,
                    &ints(2)?,
                    opt_ints(3)?.as_deref(),
                    opt_ints(4)?.as_deref(),
                )?)
            }
            "Reshape" => {
                let t = c(0)?;
                let dims = fold::reshape_dims(&t.dims, &ints(1)?, t.len())?;
                Some(Tensor { dims, data: t.data })
            }
            "Transpose" => {
                let t = c(0)?;
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p.iter().map(|&x| x as usize).collect(),
                    None => (0..t.dims.len()).rev().collect(),
                };
                Some(fold::transpose(&t, &perm)?)
            }
            "Add" => bin(Bin::Add)?,
            "Sub" => bin(Bin::Sub)?,
            "Mul" => bin(Bin::Mul)?,
            "Div" => bin(Bin::Div)?,
            "Pow" => bin(Bin::Pow)?,
            "Equal" => bin(Bin::Equal)?,
            "Sqrt" => Some(fold::sqrt(&c(0)?)),
            "Where" => Some(fold::select(&c(0)?, &c(1)?, &c(2)?)?),
            "ConstantOfShape" => {
                let dims: Vec<usize> = ints(0)?
                    .iter()
                    .map(|&d| {
                        usize::try_from(d).map_err(|_| {
                            format!("shape holds {d} (a batch-dependent or negative dim)")
                        })
                    })
                    .collect::<R<_>>()?;
                let numel = dims
                    .iter()
                    .try_fold(1usize, |p, &d| p.checked_mul(d))
                    .filter(|&p| p <= ox::MAX_TENSOR_ELEMS)
                    .ok_or("shape is too large")?;
                let value = match a.tensor("value") {
                    Some(t) => ox::tensor(t, self.dir).map_err(|e| e.to_string())?,
                    None => Tensor::f32(vec![1], vec![0.0]),
                };
                Some(match value.data {
                    ox::Data::F32(v) => {
                        Tensor::f32(dims, vec![v.first().copied().unwrap_or(0.0); numel])
                    }
                    ox::Data::I64(v) => {
                        Tensor::i64(dims, vec![v.first().copied().unwrap_or(0); numel])
                    }
                })
            }
            "Range" => {
                let (s, l, d) = (c(0)?, c(1)?, c(2)?);
                match (s.as_i64(), l.as_i64(), d.as_i64()) {
                    (Some(s), Some(l), Some(d))
                        if s.len() == 1 && l.len() == 1 && d.len() == 1 && d[0] != 0 =>
                    {
                        if [s[0], l[0], d[0]].contains(&BATCH) {
                            return Err("Range over the batch size is not supported".into());
                        }
                        let count = ((l[0] - s[0]) as f64 / d[0] as f64).ceil().max(0.0) as usize;
                        if count > ox::MAX_TENSOR_ELEMS {
                            return Err("Range is too long".into());
                        }
                        let v: Vec<i64> = (0..count as i64).map(|k| s[0] + k * d[0]).collect();
                        Some(Tensor::i64(vec![v.len()], v))
                    }
                    _ => return Err("Range needs integer scalars and a non-zero step".into()),
                }
            }
            _ => None,
        })
    }

    fn constant(&self, a: &Attrs) -> R<Tensor> {
        if let Some(t) = a.tensor("value") {
            return ox::tensor(t, self.dir).map_err(|e| e.to_string());
        }
        if a.has("value_float") {
            return Ok(Tensor::f32(vec![], vec![a.float("value_float", 0.0)]));
        }
        if let Some(v) = a.floats("value_floats").filter(|_| a.has("value_floats")) {
            return Ok(Tensor::f32(vec![v.len()], v));
        }
        if a.has("value_int") {
            return Ok(Tensor::i64(vec![], vec![a.int("value_int", 0)]));
        }
        if let Some(v) = a.ints("value_ints") {
            return Ok(Tensor::i64(vec![v.len()], v));
        }
        Err("Constant has no value lopper reads (value, value_float(s), value_int(s))".into())
    }

    fn conv(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        if let Some(u) = a.unknown(&[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ]) {
            return Err(format!("attribute '{u}' is not supported"));
        }
        let x = self.act(n, 0)?;
        let s = self.shape(&x);
        let w = self.konst(n, 1)?.ok_or("the weight is missing")?;
        if s.len() != 3 || w.dims.len() != 4 {
            return Err(format!(
                "only 2-D convolutions are supported (input [N, {s:?}], weight {:?})",
                w.dims
            ));
        }
        let (o, kh, kw) = (w.dims[0], w.dims[2], w.dims[3]);
        if let Some(k) = a.ints("kernel_shape") {
            if k != [kh as i64, kw as i64] {
                return Err(format!(
                    "kernel_shape {k:?} disagrees with the weight {:?}",
                    w.dims
                ));
            }
        }
        let pair = |name: &str| -> R<[usize; 2]> {
            match a.ints(name) {
                None => Ok([1, 1]),
                Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 1) => {
                    Ok([v[0] as usize, v[1] as usize])
                }
                Some(v) => Err(format!("{name} {v:?} must be two values >= 1")),
            }
        };
        let stride = pair("strides")?;
        let dilation = pair("dilations")?;
        let groups = usize::try_from(a.int("group", 1)).map_err(|_| "group must be >= 1")?;
        let span = [dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1];
        let padding = pads(a, [s[1], s[2]], stride, span)?;
        let cols = w.dims[1] * kh * kw;
        let wname = self.add_weight(&n.input[1], o, cols, w.as_f32())?;
        let bias = match self.konst(n, 2)? {
            Some(b) => Some(self.add_vector(&n.input[2], b.as_f32())?),
            None => None,
        };
        let op = Op::Conv2d {
            weight: wname,
            bias,
            kernel: [kh, kw],
            stride,
            padding,
            dilation,
            groups,
        };
        self.emit(label, n, op, vec![x]).map(drop)
    }

    fn batchnorm(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        if a.int("training_mode", 0) != 0 {
            return Err("training_mode = 1 is not an inference graph".into());
        }
        let x = self.act(n, 0)?;
        let mut names = Vec::new();
        for i in 1..5 {
            let t = self
                .konst(n, i)?
                .ok_or_else(|| format!("input {i} is missing"))?;
            names.push(self.add_vector(&n.input[i], t.as_f32())?);
        }
        let [gamma, beta, mean, var] =
            <[String; 4]>::try_from(names).map_err(|_| "four parameters")?;
        let op = Op::BatchNorm {
            gamma,
            beta,
            mean,
            var,
            eps: a.float("epsilon", 1e-5),
        };
        self.emit(label, n, op, vec![x]).map(drop)
    }

    fn pool(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        let x = self.act(n, 0)?;
        let k = a.ints("kernel_shape").ok_or("kernel_shape is missing")?;
        if k.len() != 2 || k.iter().any(|&v| v < 1) {
            return Err(format!("kernel_shape {k:?}: only 2-D pooling is supported"));
        }
        let kernel = [k[0] as usize, k[1] as usize];
        let stride = match a.ints("strides") {
            Some(s) if s.len() == 2 && s.iter().all(|&v| v >= 1) => [s[0] as usize, s[1] as usize],
            Some(s) => return Err(format!("strides {s:?} must be two values >= 1")),
            None => [1, 1],
        };
        if a.int("ceil_mode", 0) != 0
            || a.ints("dilations")
                .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err("ceil-mode or dilated pooling is not supported yet".into());
        }
        let s = self.shape(&x);
        if s.len() != 3 {
            return Err(format!("needs [N, C, H, W], got [N, {s:?}]"));
        }
        let padding = pads(a, [s[1], s[2]], stride, kernel)?;
        let op = if n.op_type() == "MaxPool" {
            if n.output.len() > 1 && !n.output[1].is_empty() {
                return Err("MaxPool's Indices output is not supported".into());
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
        } else {
            if padding != [0, 0] {
                return Err("padded AveragePool is not supported yet".into());
            }
            Op::AvgPool { kernel, stride }
        };
        self.emit(label, n, op, vec![x]).map(drop)
    }

    /// The mean over H and W: `[C]`, or `[C, 1, 1]` when the ONNX op keeps the dims.
    fn global_pool(&mut self, n: &NodeProto, label: &str, x: String, keep: bool) -> R<()> {
        if self.shape(&x).len() != 3 {
            return Err(format!("needs [N, C, H, W], got [N, {:?}]", self.shape(&x)));
        }
        if !keep {
            return self.emit(label, n, Op::GlobalAvgPool, vec![x]).map(drop);
        }
        let out = self.out(n)?;
        let mid = self.unique(VALUE, &format!("{out}.mean"));
        let c = self.shape(&x)[0];
        let pooled = self.push(label, Op::GlobalAvgPool, vec![x], mid)?;
        let out = self.unique(VALUE, &out);
        let v = self.push(
            &format!("{label}.keepdims"),
            Op::Reshape {
                shape: vec![c, 1, 1],
            },
            vec![pooled],
            out,
        )?;
        self.set(n, Val::Act(v))
    }

    fn reshape(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        let x = self.act(n, 0)?;
        let s = self.shape(&x);
        let t = self
            .konst(n, 1)?
            .and_then(|t| t.as_i64())
            .ok_or("the target shape is missing")?;
        let per: usize = s.iter().product();
        let allowzero = a.int("allowzero", 0) != 0;
        let first = *t.first().ok_or("the target shape is empty")?;
        let rest = &t[1..];
        let batch_kept =
            first == BATCH || (first == 0 && !allowzero) || (first == 1 && self.batch_one);
        let shape = if batch_kept {
            fold::reshape_dims(&s, rest, per)?
        } else if first == -1 && rest.iter().all(|&d| d > 0) {
            // [-1, d1, d2]: the batch is inferred, so the rest must hold one example exactly.
            let dims: Vec<usize> = rest.iter().map(|&d| d as usize).collect();
            if dims.iter().product::<usize>() != per {
                return Err(format!("Reshape to {t:?} changes the batch dimension"));
            }
            dims
        } else {
            return Err(format!("Reshape to {t:?} changes the batch dimension"));
        };
        let op = if shape.len() == 1 {
            Op::Flatten
        } else {
            Op::Reshape { shape }
        };
        self.emit(label, n, op, vec![x]).map(drop)
    }

    fn gemm(&mut self, n: &NodeProto, a: &Attrs, label: &str) -> R<()> {
        if a.int("transA", 0) != 0 {
            return Err("transA = 1 is not supported (the activation must be [N, F])".into());
        }
        let x = self.act(n, 0)?;
        let b = self.konst(n, 1)?.ok_or("B must be a constant weight")?;
        if b.dims.len() != 2 {
            return Err(format!("B has dims {:?}, not a matrix", b.dims));
        }
        let alpha = a.float("alpha", 1.0);
        let beta = a.float("beta", 1.0);
        let (rows, cols, data) = if a.int("transB", 0) != 0 {
            (b.dims[0], b.dims[1], b.as_f32())
        } else {
            let t = fold::transpose(&b, &[1, 0])?;
            (b.dims[1], b.dims[0], t.as_f32())
        };
        let data = if alpha == 1.0 {
            data
        } else {
            data.iter().map(|v| v * alpha).collect()
        };
        let weight = self.add_weight(&n.input[1], rows, cols, data)?;
        let bias = match self.konst(n, 2)? {
            Some(c) => {
                let v = c.as_f32();
                let v = match v.len() {
                    1 => vec![v[0] * beta; rows],
                    l if l == rows && c.dims.iter().filter(|&&d| d != 1).count() <= 1 => {
                        v.iter().map(|x| x * beta).collect()
                    }
                    _ => {
                        return Err(format!(
                            "C has dims {:?}; a per-output bias is supported",
                            c.dims
                        ))
                    }
                };
                Some(self.add_vector(&n.input[2], v)?)
            }
            None => None,
        };
        self.emit(label, n, Op::Linear { weight, bias }, vec![x])
            .map(drop)
    }

    fn matmul(&mut self, n: &NodeProto, label: &str) -> R<()> {
        let x = self.act(n, 0)?;
        let s = self.shape(&x);
        let b = self
            .konst(n, 1)?
            .ok_or("the second input must be a constant weight")?;
        if s.len() != 1 || b.dims.len() != 2 {
            return Err(format!(
                "MatMul of [N, {s:?}] by {:?}: only [N, F] x [F, O] with a constant weight is \
                 supported so far",
                b.dims
            ));
        }
        // ONNX's [in, out] becomes lopper's [out, in].
        let t = fold::transpose(&b, &[1, 0])?;
        let weight = self.add_weight(&n.input[1], b.dims[1], b.dims[0], t.as_f32())?;
        self.emit(label, n, Op::Linear { weight, bias: None }, vec![x])
            .map(drop)
    }

    fn add(&mut self, n: &NodeProto, label: &str) -> R<()> {
        let (p, q) = (self.input(n, 0)?.cloned(), self.input(n, 1)?.cloned());
        match (p, q) {
            (Some(Val::Act(x)), Some(Val::Act(y))) => {
                if self.shape(&x) != self.shape(&y) {
                    return Err(format!(
                        "Add of [N, {:?}] and [N, {:?}]: broadcasting two activations is not supported",
                        self.shape(&x),
                        self.shape(&y)
                    ));
                }
                self.emit(label, n, Op::Add, vec![x, y]).map(drop)
            }
            (Some(Val::Act(x)), Some(Val::Const(c))) => {
                self.fold_bias(&x, &n.input[0], &c, &n.input[1], n)
            }
            (Some(Val::Const(c)), Some(Val::Act(x))) => {
                self.fold_bias(&x, &n.input[1], &c, &n.input[0], n)
            }
            _ => Err("Add needs two inputs".into()),
        }
    }

    /// `layer(x) + c` where `c` is one value per output channel: the layer takes `c` as its bias.
    fn fold_bias(&mut self, x: &str, xname: &str, c: &Tensor, cname: &str, n: &NodeProto) -> R<()> {
        let refuse = || {
            format!(
                "Add of a constant {:?} to an activation: only a per-channel bias right after a \
                 MatMul, Gemm or Conv without one is supported",
                c.dims
            )
        };
        // The layer's output must have no other reader, which would see it without the bias.
        let single_reader = self.readers.get(xname) == Some(&1);
        let idx = *self.producer.get(x).ok_or_else(refuse)?;
        let channels = self.shape(x)[0];
        let d = &c.dims;
        // [O] or [1, O] after a Linear; [O, 1, 1] or [1, O, 1, 1] after a Conv.
        let fits = c.len() == channels
            && match &self.graph.nodes[idx].op {
                Op::Linear { bias: None, .. } => d.last() == Some(&channels) && d.len() <= 2,
                Op::Conv2d { bias: None, .. } => {
                    d.len() >= 3 && d.len() <= 4 && d[d.len() - 3..] == [channels, 1, 1]
                }
                _ => false,
            };
        if !(fits && single_reader) {
            return Err(refuse());
        }
        let name = self.add_vector(cname, c.as_f32())?;
        match &mut self.graph.nodes[idx].op {
            Op::Linear { bias, .. } | Op::Conv2d { bias, .. } => *bias = Some(name),
            _ => return Err(refuse()),
        }
        self.set(n, Val::Act(x.to_string()))
    }

    fn finish(mut self, g: &proto::GraphProto) -> Result<Model, ModelError> {
        let err = ModelError::Onnx;
        let [output] = g.output.as_slice() else {
            return Err(err(format!(
                "the graph has {} outputs; lopper imports graphs with one output",
                g.output.len()
            )));
        };
        let oname = output.name().to_string();
        let lop = match self.vals.get(&oname) {
            Some(Val::Act(v)) => v.clone(),
            Some(Val::Const(_)) => return Err(err(format!("output '{oname}' is a constant"))),
            None => return Err(err(format!("output '{oname}' is not computed by any node"))),
        };
        // The output keeps its ONNX name, so an exported file's outputs are the graph's own.
        let lop = if lop != oname {
            let shape = self.shape(&lop);
            let name = self.unique(VALUE, &oname);
            self.push(
                &format!("{oname}.output"),
                Op::Reshape { shape },
                vec![lop],
                name,
            )
            .map_err(err)?
        } else {
            lop
        };
        self.graph.output = lop;
        Model::new(self.graph, self.weights, self.vectors)
    }
}

/// Per-example shape of the graph input `[N, ...]`, and whether N is the literal 1.
fn input_shape(i: &proto::ValueInfoProto) -> R<(Vec<usize>, bool)> {
    use proto::tensor_shape_proto::dimension::Value;
    use proto::type_proto::Value as T;
    let Some(T::TensorType(t)) = i.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err("is not a tensor".into());
    };
    if t.elem_type() != proto::tensor_proto::DataType::Float as i32 {
        return Err(format!(
            "has type {}; lopper imports float inputs",
            ox::type_name(t.elem_type())
        ));
    }
    let dims = &t.shape.as_ref().ok_or("has no shape")?.dim;
    if dims.len() < 2 || dims.len() > 4 {
        return Err(format!(
            "has rank {}; lopper imports [N, F] to [N, C, H, W]",
            dims.len()
        ));
    }
    let batch_one = matches!(dims[0].value, Some(Value::DimValue(1)));
    let mut shape = Vec::new();
    for (k, d) in dims.iter().enumerate().skip(1) {
        match d.value {
            Some(Value::DimValue(v)) if v > 0 => shape.push(v as usize),
            Some(Value::DimParam(ref p)) => {
                return Err(format!(
                    "dimension {k} is dynamic ('{p}'); only the batch (dimension 0) may be"
                ))
            }
            _ => {
                return Err(format!(
                    "dimension {k} is unknown; only the batch (dimension 0) may be"
                ))
            }
        }
    }
    Ok((shape, batch_one))
}

/// Symmetric padding from `pads` or `auto_pad`; asymmetric padding is refused.
fn pads(a: &Attrs, hw: [usize; 2], stride: [usize; 2], span: [usize; 2]) -> R<[usize; 2]> {
    let auto = a.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let p: Vec<i64> = match auto.as_str() {
        "NOTSET" => a.ints("pads").unwrap_or_else(|| vec![0; 4]),
        "VALID" => vec![0; 4],
        "SAME_UPPER" | "SAME_LOWER" => {
            let total = |i: usize| {
                let out = hw[i].div_ceil(stride[i]);
                ((out - 1) * stride[i] + span[i]).saturating_sub(hw[i]) as i64
            };
            let (th, tw) = (total(0), total(1));
            let (bh, bw) = if auto == "SAME_UPPER" {
                (th / 2, tw / 2)
            } else {
                (th - th / 2, tw - tw / 2)
            };
            vec![bh, bw, th - bh, tw - bw]
        }
        other => return Err(format!("auto_pad {other} is not supported")),
    };
    if p.len() != 4 || p.iter().any(|&v| v < 0) {
        return Err(format!("pads {p:?} must be four values >= 0"));
    }
    if p[0] != p[2] || p[1] != p[3] {
        return Err(format!("asymmetric pads {p:?} are not supported yet"));
    }
    Ok([p[0] as usize, p[1] as usize])
}
