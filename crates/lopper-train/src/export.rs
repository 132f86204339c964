//! Export of trained zoo models to the lopper graph (`lopper-model`), from which `.lop` files
//! are written.
//!
//! Layout boundary: burn's `Linear` weight is `[in, out]` and is transposed here to `[out, in]`;
//! `Conv2d` weights `[out, in, kh, kw]` are already PyTorch order and become `[out, in*kh*kw]`.
//! Each BatchNorm that follows a convolution is folded into it (running statistics, i.e. the
//! eval-mode network), so exported graphs hold no `batchnorm` node. Weights are exported dense
//! f32 with their zeros; [`lopper_model::Model::reencoded`] picks the storage.

use std::collections::BTreeMap;
use std::path::Path;

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use lopper_kernels::{Dense, WeightMatrix};
use lopper_model::convert::fold_batchnorm;
use lopper_model::graph::{InputSpec, Op, Preprocess};
use lopper_model::{Graph, Model, ModelError, Node};
use thiserror::Error;

use crate::model::gates::GateInit;
use crate::model::{BasicBlock, Classifier, Lenet300, Lenet5, ResNet, ZooModel};
use crate::structured::ChannelHistory;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("{path}: cannot load the checkpoint: {message}")]
    Load { path: String, message: String },
    #[error("layer '{layer}': {message}")]
    Layer { layer: String, message: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub use crate::data::mnist::FASHION_LABELS;

/// What the graph says about its input besides the network.
#[derive(Debug, Clone)]
pub struct ExportMeta {
    pub name: String,
    pub preprocess: Option<Preprocess>,
    pub labels: Vec<String>,
}

fn values<const D: usize>(t: Tensor<D>, layer: &str) -> Result<Vec<f32>, ExportError> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ExportError::Layer {
            layer: layer.to_string(),
            message: format!("cannot read tensor: {e:?}"),
        })
}

struct Builder {
    nodes: Vec<Node>,
    weights: BTreeMap<String, WeightMatrix>,
    vectors: BTreeMap<String, Vec<f32>>,
}

impl Builder {
    fn new() -> Self {
        Self {
            nodes: Vec::new(),
            weights: BTreeMap::new(),
            vectors: BTreeMap::new(),
        }
    }

    /// Adds a node whose output value is named after it; returns that name.
    fn op(&mut self, name: &str, op: Op, inputs: &[&str]) -> String {
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: name.to_string(),
        });
        name.to_string()
    }

    fn matrix(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    ) -> Result<String, ExportError> {
        let key = format!("{name}.weight");
        let d = Dense::from_vec(rows, cols, data).map_err(|e| ExportError::Layer {
            layer: name.to_string(),
            message: e.to_string(),
        })?;
        self.weights.insert(key.clone(), WeightMatrix::Dense(d));
        Ok(key)
    }

    fn linear(&mut self, name: &str, l: &Linear, input: &str) -> Result<String, ExportError> {
        let [fan_in, fan_out] = l.weight.val().dims();
        let w_in_out = values(l.weight.val(), name)?;
        // burn [in, out] -> [out, in].
        let mut w = vec![0.0f32; fan_in * fan_out];
        for i in 0..fan_in {
            for o in 0..fan_out {
                w[o * fan_in + i] = w_in_out[i * fan_out + o];
            }
        }
        let weight = self.matrix(name, fan_out, fan_in, w)?;
        let bias = match &l.bias {
            Some(b) => {
                let key = format!("{name}.bias");
                self.vectors.insert(key.clone(), values(b.val(), name)?);
                Some(key)
            }
            None => None,
        };
        Ok(self.op(name, Op::Linear { weight, bias }, &[input]))
    }

    fn conv(
        &mut self,
        name: &str,
        c: &Conv2d,
        bn: Option<&BatchNorm>,
        input: &str,
    ) -> Result<String, ExportError> {
        let err = |message: String| ExportError::Layer {
            layer: name.to_string(),
            message,
        };
        if c.groups != 1 || c.dilation != [1, 1] {
            return Err(err(
                "grouped or dilated convolutions are not supported".into()
            ));
        }
        let padding = match &c.padding {
            PaddingConfig2d::Valid => [0, 0],
            PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => [*t, *l],
            p => return Err(err(format!("padding {p:?} is not symmetric and explicit"))),
        };
        let [out, cin, kh, kw] = c.weight.val().dims();
        let mut w = values(c.weight.val(), name)?;
        let mut bias = match &c.bias {
            Some(b) => values(b.val(), name)?,
            None => vec![0.0; out],
        };
        let has_bias = c.bias.is_some() || bn.is_some();
        if let Some(bn) = bn {
            let g = values(bn.gamma.val(), name)?;
            let b = values(bn.beta.val(), name)?;
            let m = values(bn.running_mean.value_sync(), name)?;
            let v = values(bn.running_var.value_sync(), name)?;
            fold_batchnorm(&mut w, &mut bias, &g, &b, &m, &v, bn.epsilon as f32);
        }
        let weight = self.matrix(name, out, cin * kh * kw, w)?;
        let bias = has_bias.then(|| {
            let key = format!("{name}.bias");
            self.vectors.insert(key.clone(), bias);
            key
        });
        let op = Op::Conv2d {
            weight,
            bias,
            kernel: [kh, kw],
            stride: c.stride,
            padding,
            dilation: [1, 1],
            groups: 1,
        };
        Ok(self.op(name, op, &[input]))
    }

    fn finish(
        self,
        meta: &ExportMeta,
        shape: Vec<usize>,
        output: String,
    ) -> Result<Model, ExportError> {
        let graph = Graph {
            name: meta.name.clone(),
            input: InputSpec {
                name: "input".into(),
                shape,
                preprocess: meta.preprocess,
            },
            labels: meta.labels.clone(),
            output,
            weights: BTreeMap::new(),
            nodes: self.nodes,
        };
        Ok(Model::new(graph, self.weights, self.vectors)?)
    }
}

/// A zoo model that can be exported to a lopper graph (the eval-mode network).
pub trait Export {
    fn export(&self, meta: &ExportMeta) -> Result<Model, ExportError>;
}

impl Export for Lenet300 {
    fn export(&self, meta: &ExportMeta) -> Result<Model, ExportError> {
        if self.gates.is_some() || self.weight_gates.is_some() {
            // L0: the exported network is the shrunk one (gates folded, zero units removed).
            return self.shrunk().export(meta);
        }
        let mut b = Builder::new();
        let x = b.op("flatten", Op::Flatten, &["input"]);
        let x = b.linear("fc1", &self.fc1, &x)?;
        let x = b.op("relu1", Op::Relu, &[&x]);
        let x = b.linear("fc2", &self.fc2, &x)?;
        let x = b.op("relu2", Op::Relu, &[&x]);
        let x = b.linear("fc3", &self.fc3, &x)?;
        b.finish(meta, vec![1, 28, 28], x)
    }
}

impl Export for Lenet5 {
    fn export(&self, meta: &ExportMeta) -> Result<Model, ExportError> {
        if self.gates.is_some() || self.weight_gates.is_some() {
            return self.shrunk().export(meta);
        }
        let pool = Op::MaxPool {
            padding: [0, 0],
            kernel: self.pool.kernel_size,
            stride: self.pool.stride,
        };
        let mut b = Builder::new();
        let x = b.conv("conv1", &self.conv1, None, "input")?;
        let x = b.op("pool1", pool.clone(), &[&x]);
        let x = b.conv("conv2", &self.conv2, None, &x)?;
        let x = b.op("pool2", pool, &[&x]);
        let x = b.op("flatten", Op::Flatten, &[&x]);
        let x = b.linear("fc1", &self.fc1, &x)?;
        let x = b.op("relu1", Op::Relu, &[&x]);
        let x = b.linear("fc2", &self.fc2, &x)?;
        b.finish(meta, vec![1, 28, 28], x)
    }
}

fn block(b: &mut Builder, i: usize, blk: &BasicBlock, x: &str) -> Result<String, ExportError> {
    let p = format!("blocks.{i}");
    let y = b.conv(&format!("{p}.conv1"), &blk.conv1, Some(&blk.bn1), x)?;
    let y = b.op(&format!("{p}.relu1"), Op::Relu, &[&y]);
    let y = b.conv(&format!("{p}.conv2"), &blk.conv2, Some(&blk.bn2), &y)?;
    let skip = match &blk.shortcut {
        Some(s) => b.conv(&format!("{p}.shortcut"), &s.conv, Some(&s.bn), x)?,
        None => x.to_string(),
    };
    let y = b.op(&format!("{p}.add"), Op::Add, &[&y, &skip]);
    Ok(b.op(&format!("{p}.relu2"), Op::Relu, &[&y]))
}

impl Export for ResNet {
    fn export(&self, meta: &ExportMeta) -> Result<Model, ExportError> {
        let mut b = Builder::new();
        let x = b.conv("stem", &self.stem, Some(&self.bn), "input")?;
        let mut x = b.op("stem.relu", Op::Relu, &[&x]);
        for (i, blk) in self.blocks.iter().enumerate() {
            x = block(&mut b, i, blk, &x)?;
        }
        let x = b.op("pool", Op::GlobalAvgPool, &[&x]);
        let x = b.linear("fc", &self.fc, &x)?;
        b.finish(meta, vec![1, 28, 28], x)
    }
}

/// Loads `path` into `model`, first replaying the structured prune events recorded in the
/// `state.json` beside it (a structurally pruned checkpoint has smaller shapes).
fn load<M: Classifier>(model: M, path: &Path) -> Result<M, ExportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let fail = |message: String| ExportError::Load {
        path: path.display().to_string(),
        message,
    };
    ChannelHistory::template_for(dir, model)
        .map_err(fail)?
        .try_load_file(path)
        .map_err(|e| fail(e.to_string()))
}

/// Loads a checkpoint into the first of `candidates` that takes it: the plain model, then the
/// models with L0 neuron or weight gates (a load refuses extra or missing tensors). The error is
/// the plain model's.
fn load_any<M: Classifier>(candidates: Vec<M>, path: &Path) -> Result<M, ExportError> {
    let mut first = None;
    for m in candidates {
        match load(m, path) {
            Ok(m) => return Ok(m),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    Err(first.unwrap_or_else(|| ExportError::Load {
        path: path.display().to_string(),
        message: "no model to load into".into(),
    }))
}

/// Loads a training checkpoint (`model.bpk`) of `zoo` and exports it; a checkpoint with L0
/// gates is exported shrunk (neuron gates) or sparse (weight gates).
pub fn export_checkpoint(
    zoo: ZooModel,
    checkpoint: &Path,
    meta: &ExportMeta,
) -> Result<Model, ExportError> {
    let device = Device::flex();
    // The random initialisation before loading must not interleave with a training's draws.
    // Gate candidates start with any `GateInit`: the checkpoint holds the gates' scale.
    let _rng = crate::trainer::rng_guard();
    match zoo {
        ZooModel::Lenet300 => load_any(
            vec![
                Lenet300::new(&device),
                Lenet300::with_l0_gates(&device, GateInit::new(0.5)),
                Lenet300::with_l0_weight_gates(&device, GateInit::new(0.5)),
            ],
            checkpoint,
        )?
        .export(meta),
        ZooModel::Lenet5 => load_any(
            vec![
                Lenet5::new(&device),
                Lenet5::with_l0_gates(&device, GateInit::new(0.5)),
                Lenet5::with_l0_weight_gates(&device, GateInit::new(0.5)),
            ],
            checkpoint,
        )?
        .export(meta),
        ZooModel::Resnet8 => load(ResNet::new(8, &device), checkpoint)?.export(meta),
        ZooModel::Resnet20 => load(ResNet::new(20, &device), checkpoint)?.export(meta),
    }
}
