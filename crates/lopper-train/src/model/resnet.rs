//! CIFAR-style ResNet (He et al. 2016, section 4.2) for 28x28 grey images: a 3x3 stem of 16
//! channels, three stages of `n` basic blocks with 16, 32 and 64 channels (stride 2 at the start
//! of stages 2 and 3), global average pooling and a linear classifier; depth = 6n + 2
//! (ResNet-8: n = 1, ResNet-20: n = 3). Every convolution is followed by BatchNorm and has no
//! bias. Where a block changes shape its shortcut is a 1x1 convolution with BatchNorm (option B),
//! so each residual add joins two tensors of the same channel set.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::Classifier;

fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

/// A 1x1 convolution with BatchNorm, for shortcuts that change shape.
#[derive(Module, Debug)]
pub struct Projection {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// Two 3x3 convolutions with BatchNorm and a residual add.
#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub shortcut: Option<Projection>,
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let shortcut = (stride != 1 || cin != cout).then(|| Projection {
            conv: conv(cin, cout, 1, stride, device),
            bn: BatchNormConfig::new(cout).init(device),
        });
        Self {
            conv1: conv(cin, cout, 3, stride, device),
            bn1: BatchNormConfig::new(cout).init(device),
            conv2: conv(cout, cout, 3, 1, device),
            bn2: BatchNormConfig::new(cout).init(device),
            shortcut,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let y = self.bn2.forward(self.conv2.forward(y));
        let skip = match &self.shortcut {
            Some(p) => p.bn.forward(p.conv.forward(x)),
            None => x,
        };
        relu(y + skip)
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    pub stem: Conv2d,
    pub bn: BatchNorm,
    pub blocks: Vec<BasicBlock>,
    pub fc: Linear,
}

impl ResNet {
    /// `depth` must be `6n + 2` (8, 14, 20, 32, ...).
    pub fn new(depth: usize, device: &Device) -> Self {
        assert!(
            depth >= 8 && (depth - 2).is_multiple_of(6),
            "ResNet depth must be 6n + 2, got {depth}"
        );
        let n = (depth - 2) / 6;
        let mut blocks = Vec::with_capacity(3 * n);
        let mut cin = 16;
        for (stage, cout) in [16, 32, 64].into_iter().enumerate() {
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(cin, cout, stride, device));
                cin = cout;
            }
        }
        Self {
            stem: conv(1, 16, 3, 1, device),
            bn: BatchNormConfig::new(16).init(device),
            blocks,
            fc: LinearConfig::new(64, 10).init(device),
        }
    }
}

impl Classifier for ResNet {
    fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        let [b, _] = images.dims();
        let mut x = relu(
            self.bn
                .forward(self.stem.forward(images.reshape([b, 1, 28, 28]))),
        );
        for block in &self.blocks {
            x = block.forward(x);
        }
        let [_, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([b, c]);
        self.fc.forward(pooled)
    }

    fn dense_macs(&self) -> usize {
        let n = self.blocks.len() / 3;
        let mut macs = 16 * 9 * 28 * 28;
        let mut cin = 16;
        for (stage, (cout, side)) in [(16, 28), (32, 14), (64, 7)].into_iter().enumerate() {
            for i in 0..n {
                let area = side * side;
                macs += cout * cin * 9 * area + cout * cout * 9 * area;
                if stage > 0 && i == 0 {
                    macs += cout * cin * area;
                }
                cin = cout;
            }
        }
        macs + 64 * 10
    }

    fn widths(&self) -> Vec<usize> {
        let mut w = vec![1, self.stem.weight.val().dims()[0]];
        for b in &self.blocks {
            w.push(b.conv2.weight.val().dims()[0]);
        }
        w.push(self.fc.weight.val().dims()[1]);
        w
    }
}
