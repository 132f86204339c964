//! The model zoo. Every model takes standardised images `[batch, 784]` and returns logits
//! `[batch, 10]`. Prunable weights are the parameters of rank >= 2 whose path ends in `weight`
//! (Linear `[in, out]` in burn's layout, Conv2d `[out, in, kh, kw]`); biases and BatchNorm
//! parameters are never pruned.

mod lenet;
mod resnet;

pub use lenet::{Lenet300, Lenet5};
pub use resnet::{BasicBlock, ResNet};

use burn::module::Module;
use burn::tensor::Tensor;

/// A classifier in the zoo.
pub trait Classifier: Module + Clone + std::fmt::Debug {
    /// Logits `[batch, 10]` from standardised images `[batch, 784]`.
    fn forward(&self, images: Tensor<2>) -> Tensor<2>;
    /// Multiply-accumulates of one forward pass of one image, counting every weight.
    fn dense_macs(&self) -> usize;
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
