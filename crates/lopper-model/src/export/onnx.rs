//! ONNX export: a lopper graph model becomes a standard ONNX model (opset 17) that ONNX Runtime
//! and other tools load.
//!
//! Every weight is written as a dense f32 initializer with exact zeros where lopper pruned it
//! (ONNX Runtime densifies sparse initializers anyway); int8 weights are written dequantized
//! (`scale * q`), so the file computes what lopper's int8 layer computes. Layouts: a Linear
//! becomes `Gemm(transB = 1)` with its `[out, in]` weight as it is; a convolution's
//! `[out, in/groups * kh * kw]` becomes `[out, in/groups, kh, kw]`. The input gets a symbolic
//! batch dimension `N` in front of the per-example shape; input and output keep the graph's
//! names. A model's input preprocessing (raw pixels to standardised values) is not part of the
//! graph: it is recorded in the metadata as `lopper.preprocess`, and the ONNX model takes the
//! standardised input, as `lopper run` with a `.npy` input does.

use crate::error::ModelError;
use crate::file::Model;
use crate::graph::Op;
use crate::onnx::proto::{
    self, tensor_shape_proto::dimension, type_proto, AttributeProto, NodeProto, TensorShapeProto,
    ValueInfoProto,
};
use crate::onnx::{f32_initializer, i64_initializer};

/// The opset exported files declare.
pub const OPSET: i64 = 17;

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    let dim = std::iter::once(dimension::Value::DimParam("N".into()))
        .chain(dims.iter().map(|&d| dimension::Value::DimValue(d as i64)))
        .map(|v| proto::tensor_shape_proto::Dimension {
            value: Some(v),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(proto::tensor_proto::DataType::Float as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Writer {
    nodes: Vec<NodeProto>,
    inits: Vec<proto::TensorProto>,
}

impl Writer {
    fn node(&mut self, op: &str, name: &str, ins: &[&str], out: &str, attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            name: Some(name.into()),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            attribute: attrs,
            ..Default::default()
        });
    }
}

/// The ONNX model of `model`.
pub fn to_onnx(model: &Model) -> Result<proto::ModelProto, ModelError> {
    let g = &model.graph;
    let mut w = Writer {
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    for node in &g.nodes {
        let x = node.inputs[0].as_str();
        let (name, out) = (node.name.as_str(), node.output.as_str());
        match &node.op {
            Op::Linear { weight, bias } => {
                let m = model.weights[weight].to_dense();
                w.inits
                    .push(f32_initializer(weight, &[m.rows(), m.cols()], m.data()));
                let mut ins = vec![x, weight.as_str()];
                if let Some(b) = bias {
                    w.inits
                        .push(f32_initializer(b, &[m.rows()], &model.vectors[b]));
                    ins.push(b);
                }
                w.node("Gemm", name, &ins, out, vec![attr_int("transB", 1)]);
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
                let m = model.weights[weight].to_dense();
                let ipg = m.cols() / (kernel[0] * kernel[1]);
                let dims = [m.rows(), ipg, kernel[0], kernel[1]];
                w.inits.push(f32_initializer(weight, &dims, m.data()));
                let mut ins = vec![x, weight.as_str()];
                if let Some(b) = bias {
                    w.inits
                        .push(f32_initializer(b, &[m.rows()], &model.vectors[b]));
                    ins.push(b);
                }
                let attrs = vec![
                    attr_ints("kernel_shape", kernel),
                    attr_ints("strides", stride),
                    attr_ints("pads", &[padding[0], padding[1], padding[0], padding[1]]),
                    attr_ints("dilations", dilation),
                    attr_int("group", *groups as i64),
                ];
                w.node("Conv", name, &ins, out, attrs);
            }
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
            } => {
                for v in [gamma, beta, mean, var] {
                    let d = &model.vectors[v];
                    w.inits.push(f32_initializer(v, &[d.len()], d));
                }
                w.node(
                    "BatchNormalization",
                    name,
                    &[x, gamma, beta, mean, var],
                    out,
                    vec![attr_float("epsilon", *eps)],
                );
            }
            Op::Relu => w.node("Relu", name, &[x], out, vec![]),
            Op::Sigmoid => w.node("Sigmoid", name, &[x], out, vec![]),
            Op::Tanh => w.node("Tanh", name, &[x], out, vec![]),
            Op::HardSwish => w.node("HardSwish", name, &[x], out, vec![]),
            Op::Clip { min, max } => {
                let (lo, hi) = (format!("{name}.min"), format!("{name}.max"));
                w.inits.push(f32_initializer(&lo, &[], &[*min]));
                w.inits.push(f32_initializer(&hi, &[], &[*max]));
                w.node("Clip", name, &[x, &lo, &hi], out, vec![]);
            }
            Op::MaxPool { kernel, stride, .. } | Op::AvgPool { kernel, stride } => {
                let (op, p) = match &node.op {
                    Op::MaxPool { padding, .. } => ("MaxPool", *padding),
                    _ => ("AveragePool", [0, 0]),
                };
                let attrs = vec![
                    attr_ints("kernel_shape", kernel),
                    attr_ints("strides", stride),
                    attr_ints("pads", &[p[0], p[1], p[0], p[1]]),
                ];
                w.node(op, name, &[x], out, attrs);
            }
            Op::GlobalAvgPool => {
                // ONNX keeps [N, C, 1, 1]; lopper's value is [C].
                let mid = format!("{out}.pooled");
                w.node("GlobalAveragePool", name, &[x], &mid, vec![]);
                w.node(
                    "Flatten",
                    &format!("{name}.flatten"),
                    &[&mid],
                    out,
                    vec![attr_int("axis", 1)],
                );
            }
            Op::Add => w.node("Add", name, &[x, &node.inputs[1]], out, vec![]),
            Op::Flatten => w.node("Flatten", name, &[x], out, vec![attr_int("axis", 1)]),
            Op::Softmax => w.node("Softmax", name, &[x], out, vec![attr_int("axis", -1)]),
            Op::Reshape { shape } => {
                // 0 keeps the batch dimension of the input.
                let target = format!("{name}.shape");
                let dims: Vec<i64> = std::iter::once(0)
                    .chain(shape.iter().map(|&d| d as i64))
                    .collect();
                w.inits.push(i64_initializer(&target, &[dims.len()], &dims));
                w.node("Reshape", name, &[x, &target], out, vec![]);
            }
        }
    }
    let mut metadata = Vec::new();
    if let Some(p) = &g.input.preprocess {
        metadata.push(proto::StringStringEntryProto {
            key: Some("lopper.preprocess".into()),
            value: Some(serde_json::to_string(p).unwrap_or_default()),
        });
    }
    if !g.labels.is_empty() {
        metadata.push(proto::StringStringEntryProto {
            key: Some("lopper.labels".into()),
            value: Some(serde_json::to_string(&g.labels).unwrap_or_default()),
        });
    }
    let graph = proto::GraphProto {
        name: Some(g.name.clone()),
        node: w.nodes,
        initializer: w.inits,
        input: vec![value_info(&g.input.name, &g.input.shape)],
        output: vec![value_info(&g.output, &model.shapes[&g.output])],
        ..Default::default()
    };
    Ok(proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("lopper".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        metadata_props: metadata,
        ..Default::default()
    })
}

/// Writes `model` to `path` as ONNX (atomically); returns the bytes written.
pub fn write(model: &Model, path: &std::path::Path) -> Result<u64, ModelError> {
    use prost::Message;
    let bytes = to_onnx(model)?.encode_to_vec();
    crate::file::write_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}
