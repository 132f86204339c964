//! The model zoo. Every model takes standardised images `[batch, 784]` and returns logits
//! `[batch, 10]`. Prunable weights are the parameters of rank >= 2 whose path ends in `weight`
//! (Linear `[in, out]` in burn's layout, Conv2d `[out, in, kh, kw]`); biases and BatchNorm
//! parameters are never pruned.

pub mod gates;
mod lenet;
mod resnet;
pub mod shrink;
pub mod weight_gates;

pub use lenet::{Lenet300, Lenet300Gates, Lenet5, Lenet5Gates};
pub use resnet::{BasicBlock, ResNet};

use burn::module::Module;
use burn::tensor::Tensor;

/// A classifier in the zoo.
pub trait Classifier: Module + Clone + std::fmt::Debug {
    /// Logits `[batch, 10]` from standardised images `[batch, 784]`.
    fn forward(&self, images: Tensor<2>) -> Tensor<2>;
    /// The training-mode forward pass: L0 gates are sampled per example (see [`gates`]).
    /// Models without stochastic parts use [`Classifier::forward`].
    fn forward_train(&self, images: Tensor<2>) -> Tensor<2> {
        self.forward(images)
    }
    /// Multiply-accumulates of one forward pass of one image, counting every weight, from the
    /// layers' actual shapes (so a shrunk model counts fewer).
    fn dense_macs(&self) -> usize;
    /// The input width followed by every layer's output width (neurons or channels), e.g.
    /// `[784, 300, 100, 10]`; [`architecture`] writes it as `784-300-100-10`.
    fn widths(&self) -> Vec<usize>;
    /// The L0 penalty terms, one per gated layer (named by its channel group or layer, e.g.
    /// `fc1`), in the autodiff graph: the expected number of gates that are not zero, each
    /// weighted by the parameters its unit carries, or counted once with `per_unit`. Empty for a
    /// model without gates.
    fn l0_terms(&self, _per_unit: bool) -> Vec<(String, Tensor<1>)> {
        Vec::new()
    }
    /// The L0 penalty: the expected number of parameters whose gate is not zero (the sum of
    /// [`Classifier::l0_terms`]). `None` for a model without gates.
    fn expected_l0(&self) -> Option<Tensor<1>> {
        self.l0_terms(false)
            .into_iter()
            .map(|(_, t)| t)
            .reduce(|a, b| a + b)
    }
    /// The evaluation-mode network with its gates folded in and the units whose gate is zero
    /// physically removed: a smaller dense model with the same outputs. A model without gates
    /// returns itself.
    fn shrunk(&self) -> Self
    where
        Self: Sized,
    {
        self.clone()
    }
    /// For an L0 model, the channels its deterministic gates keep, by channel group (what
    /// [`Classifier::shrunk`] keeps); empty for a model without neuron gates.
    fn gate_keep(&self) -> crate::structured::ChannelKeep {
        Default::default()
    }
    /// The same network without any gates (weights untouched): the template a checkpoint of
    /// the shrunk network loads into.
    fn plain(&self) -> Self
    where
        Self: Sized,
    {
        self.clone()
    }
    /// The channel dependency groups (see [`crate::structured::graph`]). A model with L0 gates
    /// describes its [`Classifier::shrunk`] network.
    fn channel_groups(&self) -> Vec<crate::structured::Group>;
    /// The network with only the channels `keep` names, per layer (a structural prune). A model
    /// with L0 gates is shrunk first, so the result has no gates.
    fn shrink_channels(&self, keep: &crate::structured::LayerKeep) -> Self
    where
        Self: Sized;
}

/// A tensor's values as `f32`, row-major. Empty if the backend cannot hand them over as `f32`
/// (flex float tensors always can).
pub fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// `widths` joined by `-`, as papers write surviving architectures (`784-266-88-10`).
pub fn architecture(widths: &[usize]) -> String {
    widths
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// Names accepted in recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZooModel {
    /// LeNet-300-100: 784-300-100-10, ReLU.
    Lenet300,
    /// LeNet-5, Caffe variant: conv 20 (5x5), pool, conv 50 (5x5), pool, fc 500, ReLU, fc 10.
    Lenet5,
    /// CIFAR-style ResNet-8 (quick runs).
    Resnet8,
    /// CIFAR-style ResNet-20 (the seed's worked example).
    Resnet20,
}

impl ZooModel {
    pub fn name(self) -> &'static str {
        match self {
            ZooModel::Lenet300 => "lenet300",
            ZooModel::Lenet5 => "lenet5",
            ZooModel::Resnet8 => "resnet8",
            ZooModel::Resnet20 => "resnet20",
        }
    }
}
