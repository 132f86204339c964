//! The JSON form of the graph (`docs/format.md`): every node is one flat object holding the
//! fields of its op, checked per op on reading. Fields an op does not use are refused, and
//! fields with their default value (stride 1, no padding, dilation 1, one group) may be left out,
//! so files written before an op gained a field still read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Graph, InputSpec, Node, Op, WeightSpec};
use crate::error::ModelError;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeJson {
    name: String,
    op: String,
    inputs: Vec<String>,
    output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kernel: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stride: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    padding: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dilation: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    groups: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gamma: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    beta: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mean: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    var: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eps: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shape: Option<Vec<usize>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphJson {
    name: String,
    input: InputSpec,
    #[serde(default)]
    labels: Vec<String>,
    output: String,
    weights: BTreeMap<String, WeightSpec>,
    nodes: Vec<NodeJson>,
}

const OPS: &str = "linear, conv2d, batchnorm, relu, maxpool, avgpool, global_avgpool, add, \
                   flatten, softmax, clip, sigmoid, tanh, hardswish, reshape";

fn need<T>(v: Option<T>, node: &str, field: &str) -> Result<T, ModelError> {
    v.ok_or_else(|| ModelError::graph(format!("node '{node}': missing field '{field}'")))
}

impl NodeJson {
    /// The fields this node sets that its op does not read.
    fn stray_fields(&self, allowed: &[&str]) -> Option<&'static str> {
        let set: [(&'static str, bool); 14] = [
            ("weight", self.weight.is_some()),
            ("bias", self.bias.is_some()),
            ("kernel", self.kernel.is_some()),
            ("stride", self.stride.is_some()),
            ("padding", self.padding.is_some()),
            ("dilation", self.dilation.is_some()),
            ("groups", self.groups.is_some()),
            ("gamma", self.gamma.is_some()),
            ("beta", self.beta.is_some()),
            ("mean", self.mean.is_some()),
            ("var", self.var.is_some()),
            ("eps", self.eps.is_some()),
            ("min", self.min.is_some()),
            ("max", self.max.is_some()),
        ];
        set.into_iter()
            .chain(std::iter::once(("shape", self.shape.is_some())))
            .find(|(f, on)| *on && !allowed.contains(f))
            .map(|(f, _)| f)
    }

    fn into_node(self) -> Result<Node, ModelError> {
        let n = self.name.clone();
        let allowed: &[&str] = match self.op.as_str() {
            "linear" => &["weight", "bias"],
            "conv2d" => &[
                "weight", "bias", "kernel", "stride", "padding", "dilation", "groups",
            ],
            "batchnorm" => &["gamma", "beta", "mean", "var", "eps"],
            "maxpool" => &["kernel", "stride", "padding"],
            "avgpool" => &["kernel", "stride"],
            "clip" => &["min", "max"],
            "reshape" => &["shape"],
            _ => &[],
        };
        if let Some(f) = self.stray_fields(allowed) {
            return Err(ModelError::graph(format!(
                "node '{n}': op '{}' has no field '{f}'",
                self.op
            )));
        }
        let window = |k: Option<[usize; 2]>, s: Option<[usize; 2]>| -> Result<_, ModelError> {
            Ok((need(k, &n, "kernel")?, s.or(k).unwrap_or([1, 1])))
        };
        let op = match self.op.as_str() {
            "linear" => Op::Linear {
                weight: need(self.weight, &n, "weight")?,
                bias: self.bias,
            },
            "conv2d" => Op::Conv2d {
                weight: need(self.weight, &n, "weight")?,
                bias: self.bias,
                kernel: need(self.kernel, &n, "kernel")?,
                stride: self.stride.unwrap_or([1, 1]),
                padding: self.padding.unwrap_or([0, 0]),
                dilation: self.dilation.unwrap_or([1, 1]),
                groups: self.groups.unwrap_or(1),
            },
            "batchnorm" => Op::BatchNorm {
                gamma: need(self.gamma, &n, "gamma")?,
                beta: need(self.beta, &n, "beta")?,
                mean: need(self.mean, &n, "mean")?,
                var: need(self.var, &n, "var")?,
                eps: need(self.eps, &n, "eps")?,
            },
            "relu" => Op::Relu,
            "maxpool" => {
                let (kernel, stride) = window(self.kernel, self.stride)?;
                Op::MaxPool {
                    kernel,
                    stride,
                    padding: self.padding.unwrap_or([0, 0]),
                }
            }
            "avgpool" => {
                let (kernel, stride) = window(self.kernel, self.stride)?;
                Op::AvgPool { kernel, stride }
            }
            "global_avgpool" => Op::GlobalAvgPool,
            "add" => Op::Add,
            "flatten" => Op::Flatten,
            "softmax" => Op::Softmax,
            "clip" => Op::Clip {
                min: self.min.unwrap_or(f32::NEG_INFINITY),
                max: self.max.unwrap_or(f32::INFINITY),
            },
            "sigmoid" => Op::Sigmoid,
            "tanh" => Op::Tanh,
            "hardswish" => Op::HardSwish,
            "reshape" => Op::Reshape {
                shape: need(self.shape, &n, "shape")?,
            },
            other => {
                return Err(ModelError::graph(format!(
                    "node '{n}': unknown op '{other}' (supported: {OPS})"
                )))
            }
        };
        Ok(Node {
            name: self.name,
            op,
            inputs: self.inputs,
            output: self.output,
        })
    }

    fn from_node(node: &Node) -> Self {
        let mut j = NodeJson {
            name: node.name.clone(),
            op: node.op.name().to_string(),
            inputs: node.inputs.clone(),
            output: node.output.clone(),
            ..Default::default()
        };
        match &node.op {
            Op::Linear { weight, bias } => {
                j.weight = Some(weight.clone());
                j.bias = bias.clone();
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
                j.weight = Some(weight.clone());
                j.bias = bias.clone();
                j.kernel = Some(*kernel);
                j.stride = Some(*stride);
                j.padding = Some(*padding);
                // Left out at their defaults: files of plain convolutions read in older builds.
                j.dilation = (*dilation != [1, 1]).then_some(*dilation);
                j.groups = (*groups != 1).then_some(*groups);
            }
            Op::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                eps,
            } => {
                j.gamma = Some(gamma.clone());
                j.beta = Some(beta.clone());
                j.mean = Some(mean.clone());
                j.var = Some(var.clone());
                j.eps = Some(*eps);
            }
            Op::MaxPool { kernel, stride, .. } | Op::AvgPool { kernel, stride } => {
                j.kernel = Some(*kernel);
                j.stride = Some(*stride);
                if let Op::MaxPool { padding, .. } = &node.op {
                    j.padding = (*padding != [0, 0]).then_some(*padding);
                }
            }
            // JSON has no infinity: an open side is left out.
            Op::Clip { min, max } => {
                j.min = min.is_finite().then_some(*min);
                j.max = max.is_finite().then_some(*max);
            }
            Op::Reshape { shape } => j.shape = Some(shape.clone()),
            Op::Relu
            | Op::GlobalAvgPool
            | Op::Add
            | Op::Flatten
            | Op::Softmax
            | Op::Sigmoid
            | Op::Tanh
            | Op::HardSwish => {}
        }
        j
    }
}

impl Graph {
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let g: GraphJson =
            serde_json::from_str(text).map_err(|e| ModelError::GraphJson(e.to_string()))?;
        let nodes = g
            .nodes
            .into_iter()
            .map(NodeJson::into_node)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Graph {
            name: g.name,
            input: g.input,
            labels: g.labels,
            output: g.output,
            weights: g.weights,
            nodes,
        })
    }

    pub fn to_json(&self) -> String {
        let g = GraphJson {
            name: self.name.clone(),
            input: self.input.clone(),
            labels: self.labels.clone(),
            output: self.output.clone(),
            weights: self.weights.clone(),
            nodes: self.nodes.iter().map(NodeJson::from_node).collect(),
        };
        serde_json::to_string(&g).unwrap_or_default()
    }
}
