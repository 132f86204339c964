//! LeNet-300-100 and the Caffe LeNet-5 (the variants of Han et al. 2015 and Louizos et al. 2018).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::Classifier;

/// 784-300-100-10 with ReLU.
#[derive(Module, Debug)]
pub struct Lenet300 {
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl Lenet300 {
    pub fn new(device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(784, 300).init(device),
            fc2: LinearConfig::new(300, 100).init(device),
            fc3: LinearConfig::new(100, 10).init(device),
        }
    }
}

impl Classifier for Lenet300 {
    fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        let x = relu(self.fc1.forward(images));
        let x = relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }

    fn dense_macs(&self) -> usize {
        784 * 300 + 300 * 100 + 100 * 10
    }
}

/// Caffe LeNet-5: conv1 1→20 5x5, max-pool 2, conv2 20→50 5x5, max-pool 2, fc1 800→500, ReLU,
/// fc2 500→10. (Caffe's prototxt has no activation after the convolutions.)
#[derive(Module, Debug)]
pub struct Lenet5 {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub pool: MaxPool2d,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Lenet5 {
    pub fn new(device: &Device) -> Self {
        Self {
            conv1: Conv2dConfig::new([1, 20], [5, 5]).init(device),
            conv2: Conv2dConfig::new([20, 50], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(800, 500).init(device),
            fc2: LinearConfig::new(500, 10).init(device),
        }
    }
}

impl Classifier for Lenet5 {
    fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        let [b, _] = images.dims();
        let x = images.reshape([b, 1, 28, 28]);
        let x = self.pool.forward(self.conv1.forward(x)); // [b, 20, 12, 12]
        let x = self.pool.forward(self.conv2.forward(x)); // [b, 50, 4, 4]
        let x = x.reshape([b, 800]);
        let x = relu(self.fc1.forward(x));
        self.fc2.forward(x)
    }

    fn dense_macs(&self) -> usize {
        20 * 25 * 24 * 24 + 50 * 20 * 25 * 8 * 8 + 800 * 500 + 500 * 10
    }
}
