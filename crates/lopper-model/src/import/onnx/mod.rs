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
mod consts;
mod fold;
mod layers;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use lopper_kernels::{Dense, WeightMatrix};

use self::attrs::Attrs;
use self::fold::BATCH;
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
