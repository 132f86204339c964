//! CIFAR-style ResNet (He et al. 2016, section 4.2) for 28x28 grey images: a 3x3 stem of 16
//! channels, three stages of `n` basic blocks with 16, 32 and 64 channels (stride 2 at the start
//! of stages 2 and 3), global average pooling and a linear classifier; depth = 6n + 2
//! (ResNet-8: n = 1, ResNet-20: n = 3). Every convolution is followed by BatchNorm and has no
//! bias. Where a block changes shape its shortcut is a 1x1 convolution with BatchNorm (option B),
//! so each residual add joins two tensors of the same channel set.
//!
//! Structured pruning (see [`crate::structured`]) may leave any widths: every count here (MACs,
//! widths, the channel groups) comes from the layers' actual shapes. The channel groups are one
//! per block's inner channels (`blocks.i.conv1` → `bn1` → `conv2` inputs) and one residual group
//! per stage (the stem or the projection, every `conv2` and every reader of the stage's output
//! share one channel set).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::shrink::{batchnorm_keep, conv_keep, linear_keep};
use super::Classifier;
use crate::structured::graph::GraphBuilder;
use crate::structured::{Group, LayerKeep};

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
        // (macs, output side) of a convolution on a `side` x `side` input.
        let conv = |c: &Conv2d, side: usize| {
            let [cout, cin, kh, _] = c.weight.val().dims();
            let pad = match c.padding {
                PaddingConfig2d::Explicit(p, ..) => p,
                _ => 0,
            };
            let out = (side + 2 * pad - kh) / c.stride[0] + 1;
            (cout * cin * kh * kh * out * out, out)
        };
        let (mut macs, mut side) = conv(&self.stem, 28);
        for b in &self.blocks {
            let (m1, s1) = conv(&b.conv1, side);
            let (m2, _) = conv(&b.conv2, s1);
            macs += m1 + m2;
            if let Some(p) = &b.shortcut {
                macs += conv(&p.conv, side).0;
            }
            side = s1;
        }
        let [fan_in, fan_out] = self.fc.weight.val().dims();
        macs + fan_in * fan_out
    }

    /// Input channels, the stem, then each block's inner and output widths, then the classes.
    fn widths(&self) -> Vec<usize> {
        let out = |c: &Conv2d| c.weight.val().dims()[0];
        let mut w = vec![1, out(&self.stem)];
        for b in &self.blocks {
            w.push(out(&b.conv1));
            w.push(out(&b.conv2));
        }
        w.push(self.fc.weight.val().dims()[1]);
        w
    }

    fn channel_groups(&self) -> Vec<Group> {
        let out = |c: &Conv2d| c.weight.val().dims()[0];
        let (mut g, x) = GraphBuilder::new(self.stem.weight.val().dims()[1]);
        let x = g.layer("stem", x, out(&self.stem));
        let mut x = g.norm("bn", x);
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("blocks.{i}");
            let y = g.layer(&format!("{p}.conv1"), x, out(&b.conv1));
            let y = g.norm(&format!("{p}.bn1"), y);
            let y = g.layer(&format!("{p}.conv2"), y, out(&b.conv2));
            let y = g.norm(&format!("{p}.bn2"), y);
            let skip = match &b.shortcut {
                Some(s) => {
                    let s2 = g.layer(&format!("{p}.shortcut.conv"), x, out(&s.conv));
                    g.norm(&format!("{p}.shortcut.bn"), s2)
                }
                None => x,
            };
            x = g.add(&[y, skip]);
        }
        // Global average pooling keeps the channels.
        let y = g.layer("fc", x, self.fc.weight.val().dims()[1]);
        g.output(y);
        g.groups()
    }

    fn shrink_channels(&self, keep: &LayerKeep) -> Self {
        let c = |name: &str, layer: &Conv2d| conv_keep(layer, keep.input(name), keep.output(name));
        let n = |name: &str, bn: &BatchNorm| batchnorm_keep(bn, keep.norm(name));
        let blocks = self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let p = format!("blocks.{i}");
                BasicBlock {
                    conv1: c(&format!("{p}.conv1"), &b.conv1),
                    bn1: n(&format!("{p}.bn1"), &b.bn1),
                    conv2: c(&format!("{p}.conv2"), &b.conv2),
                    bn2: n(&format!("{p}.bn2"), &b.bn2),
                    shortcut: b.shortcut.as_ref().map(|s| Projection {
                        conv: c(&format!("{p}.shortcut.conv"), &s.conv),
                        bn: n(&format!("{p}.shortcut.bn"), &s.bn),
                    }),
                }
            })
            .collect();
        Self {
            stem: c("stem", &self.stem),
            bn: n("bn", &self.bn),
            blocks,
            fc: linear_keep(&self.fc, keep.input("fc"), keep.output("fc")),
        }
    }
}
