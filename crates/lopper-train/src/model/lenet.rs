//! LeNet-300-100 and the Caffe LeNet-5 (the variants of Han et al. 2015 and Louizos et al. 2018),
//! optionally with L0 hard-concrete gates on their hidden units (see [`super::gates`]).
//!
//! Gate placement: LeNet-300-100 gates the 300 and 100 hidden neurons after their ReLU; LeNet-5
//! gates conv1's 20 and conv2's 50 output channels after their max-pool, and fc1's 500 neurons
//! after their ReLU. Gates are non-negative, so a gate after a pool or a ReLU commutes with it, and
//! [`Classifier::shrunk`] folds every gate into the consumer of its unit and removes the units
//! whose gate is 0: an exact rewrite of the gated network in evaluation mode.
//!
//! With per-weight gates instead ([`super::weight_gates`], `[l0] gates = "weights"`), every
//! weight is multiplied by its own gate and [`Classifier::shrunk`] multiplies the deterministic
//! gates into the weights: the same widths, with zeros where a gate closed.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::gates::{surviving, GateInit, HardConcrete};
use super::shrink::{
    conv_inputs, conv_keep, conv_outputs, flattened, linear_inputs, linear_keep, linear_outputs,
};
use super::weight_gates::{fold_conv, fold_linear, gated_conv, gated_linear, WeightGates};
use super::Classifier;
use crate::structured::graph::GraphBuilder;
use crate::structured::{ChannelKeep, Group, LayerKeep};

/// 784-300-100-10 with ReLU.
#[derive(Module, Debug)]
pub struct Lenet300 {
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
    /// L0 gates on the two hidden layers (recipes with `[l0]`).
    pub gates: Option<Lenet300Gates>,
    /// Per-weight L0 gates on fc1, fc2, fc3 (`[l0] gates = "weights"`).
    pub weight_gates: Option<WeightGates>,
}

/// Hard-concrete gates of LeNet-300-100's hidden neurons.
#[derive(Module, Debug)]
pub struct Lenet300Gates {
    pub h1: HardConcrete,
    pub h2: HardConcrete,
}

impl Lenet300 {
    pub fn new(device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(784, 300).init(device),
            fc2: LinearConfig::new(300, 100).init(device),
            fc3: LinearConfig::new(100, 10).init(device),
            gates: None,
            weight_gates: None,
        }
    }

    /// With a hard-concrete gate on every weight, started as `init` says.
    pub fn with_l0_weight_gates(device: &Device, init: GateInit) -> Self {
        let mut m = Self::new(device);
        let sizes = [&m.fc1, &m.fc2, &m.fc3].map(|l| linear_dims(l).iter().product());
        m.weight_gates = Some(WeightGates::new(&sizes, init, device));
        m
    }

    /// With a hard-concrete gate on every hidden neuron, started as `init` says.
    pub fn with_l0_gates(device: &Device, init: GateInit) -> Self {
        let mut m = Self::new(device);
        m.gates = Some(Lenet300Gates {
            h1: HardConcrete::new(300, init, device),
            h2: HardConcrete::new(100, init, device),
        });
        m
    }

    fn run(&self, images: Tensor<2>, train: bool) -> Tensor<2> {
        let g = self.gates.as_ref();
        let wg = |i: usize| self.weight_gates.as_ref().map(|w| w.gate(i, train));
        let x = relu(gated_linear(&self.fc1, wg(0), images));
        let x = gate2(x, g.map(|g| &g.h1), train);
        let x = relu(gated_linear(&self.fc2, wg(1), x));
        let x = gate2(x, g.map(|g| &g.h2), train);
        gated_linear(&self.fc3, wg(2), x)
    }
}

fn linear_dims(l: &Linear) -> [usize; 2] {
    l.weight.val().dims()
}

fn conv_dims(c: &Conv2d) -> [usize; 4] {
    c.weight.val().dims()
}

/// `x [b, n]` times its gates: sampled per example in training, deterministic otherwise.
/// Deterministic gates are detached (see [`HardConcrete::deterministic`]), so a forward pass in
/// evaluation mode inside training (L0 fine-tuning) trains the weights and leaves the gates fixed.
fn gate2(x: Tensor<2>, gates: Option<&HardConcrete>, train: bool) -> Tensor<2> {
    match gates {
        None => x,
        Some(g) if train => {
            let b = x.dims()[0];
            x * g.sample(b)
        }
        Some(g) => x * g.deterministic().unsqueeze_dim::<2>(0),
    }
}

/// `x [b, c, h, w]` times per-channel gates.
fn gate4(x: Tensor<4>, gates: Option<&HardConcrete>, train: bool) -> Tensor<4> {
    let [b, c, _, _] = x.dims();
    match gates {
        None => x,
        Some(g) if train => x * g.sample(b).reshape([b, c, 1, 1]),
        Some(g) => x * g.deterministic().reshape([1, c, 1, 1]),
    }
}

/// Per named gate layer, Σ `P(z ≠ 0)` times the parameters the gate's unit carries (or once per
/// unit with `per_unit`).
fn terms(gates: &[(&str, &HardConcrete, usize)], per_unit: bool) -> Vec<(String, Tensor<1>)> {
    gates
        .iter()
        .map(|(name, g, size)| {
            let weight = if per_unit { 1 } else { *size };
            (name.to_string(), g.prob_nonzero().sum() * (weight as f64))
        })
        .collect()
}

/// Per-weight gates: one term per layer, every gate counting one weight.
fn weight_terms(w: &WeightGates, names: &[&str]) -> Vec<(String, Tensor<1>)> {
    names
        .iter()
        .zip(&w.layers)
        .map(|(n, g)| (n.to_string(), g.prob_nonzero().sum()))
        .collect()
}

impl Classifier for Lenet300 {
    fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        self.run(images, false)
    }

    fn forward_train(&self, images: Tensor<2>) -> Tensor<2> {
        self.run(images, true)
    }

    fn dense_macs(&self) -> usize {
        [&self.fc1, &self.fc2, &self.fc3]
            .iter()
            .map(|l| linear_dims(l).iter().product::<usize>())
            .sum()
    }

    fn widths(&self) -> Vec<usize> {
        let [input, _] = linear_dims(&self.fc1);
        let mut w = vec![input];
        w.extend(
            [&self.fc1, &self.fc2, &self.fc3]
                .iter()
                .map(|l| linear_dims(l)[1]),
        );
        w
    }

    fn l0_terms(&self, per_unit: bool) -> Vec<(String, Tensor<1>)> {
        if let Some(w) = &self.weight_gates {
            return weight_terms(w, &["fc1", "fc2", "fc3"]);
        }
        let Some(g) = &self.gates else {
            return Vec::new();
        };
        let [in1, _] = linear_dims(&self.fc1);
        let [in2, out2] = linear_dims(&self.fc2);
        let [_, out3] = linear_dims(&self.fc3);
        // A hidden neuron carries its fan-in, its bias and its fan-out.
        terms(
            &[
                ("fc1", &g.h1, in1 + 1 + out2),
                ("fc2", &g.h2, in2 + 1 + out3),
            ],
            per_unit,
        )
    }

    fn shrunk(&self) -> Self {
        if let Some(w) = &self.weight_gates {
            // Per-weight gates become zeros in the weights: same widths, sparse layers.
            return Self {
                fc1: fold_linear(&self.fc1, &w.values(0)),
                fc2: fold_linear(&self.fc2, &w.values(1)),
                fc3: fold_linear(&self.fc3, &w.values(2)),
                gates: None,
                weight_gates: None,
            };
        }
        let Some(g) = &self.gates else {
            return self.clone();
        };
        let (z1, z2) = (g.h1.values(), g.h2.values());
        let (k1, k2) = (surviving(&z1), surviving(&z2));
        Self {
            fc1: linear_outputs(&self.fc1, &k1),
            fc2: linear_outputs(&linear_inputs(&self.fc2, &k1, &z1), &k2),
            fc3: linear_inputs(&self.fc3, &k2, &z2),
            gates: None,
            weight_gates: None,
        }
    }

    fn gate_keep(&self) -> ChannelKeep {
        let Some(g) = &self.gates else {
            return ChannelKeep::new();
        };
        [("fc1", &g.h1), ("fc2", &g.h2)]
            .into_iter()
            .map(|(name, gate)| (name.to_string(), surviving(&gate.values())))
            .collect()
    }

    fn plain(&self) -> Self {
        Self {
            gates: None,
            weight_gates: None,
            ..self.clone()
        }
    }

    fn channel_groups(&self) -> Vec<Group> {
        if self.gates.is_some() || self.weight_gates.is_some() {
            return self.shrunk().channel_groups();
        }
        let (mut g, x) = GraphBuilder::new(linear_dims(&self.fc1)[0]);
        let h1 = g.layer("fc1", x, linear_dims(&self.fc1)[1]);
        let h2 = g.layer("fc2", h1, linear_dims(&self.fc2)[1]);
        let y = g.layer("fc3", h2, linear_dims(&self.fc3)[1]);
        g.output(y);
        g.groups()
    }

    fn shrink_channels(&self, keep: &LayerKeep) -> Self {
        if self.gates.is_some() || self.weight_gates.is_some() {
            return self.shrunk().shrink_channels(keep);
        }
        let l =
            |name: &str, layer: &Linear| linear_keep(layer, keep.input(name), keep.output(name));
        Self {
            fc1: l("fc1", &self.fc1),
            fc2: l("fc2", &self.fc2),
            fc3: l("fc3", &self.fc3),
            gates: None,
            weight_gates: None,
        }
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
    /// L0 gates on conv1's and conv2's channels and fc1's neurons (recipes with `[l0]`).
    pub gates: Option<Lenet5Gates>,
    /// Per-weight L0 gates on conv1, conv2, fc1, fc2 (`[l0] gates = "weights"`).
    pub weight_gates: Option<WeightGates>,
}

/// Hard-concrete gates of LeNet-5's channels and hidden neurons.
#[derive(Module, Debug)]
pub struct Lenet5Gates {
    pub c1: HardConcrete,
    pub c2: HardConcrete,
    pub f1: HardConcrete,
}

/// Spatial positions of conv2's pooled output (4 x 4), i.e. fc1 inputs per conv2 channel.
const POOLED2: usize = 16;

impl Lenet5 {
    pub fn new(device: &Device) -> Self {
        Self {
            conv1: Conv2dConfig::new([1, 20], [5, 5]).init(device),
            conv2: Conv2dConfig::new([20, 50], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(800, 500).init(device),
            fc2: LinearConfig::new(500, 10).init(device),
            gates: None,
            weight_gates: None,
        }
    }

    /// With a hard-concrete gate on every weight, started as `init` says.
    pub fn with_l0_weight_gates(device: &Device, init: GateInit) -> Self {
        let mut m = Self::new(device);
        let conv = |c: &Conv2d| conv_dims(c).iter().product::<usize>();
        let lin = |l: &Linear| linear_dims(l).iter().product::<usize>();
        let sizes = [conv(&m.conv1), conv(&m.conv2), lin(&m.fc1), lin(&m.fc2)];
        m.weight_gates = Some(WeightGates::new(&sizes, init, device));
        m
    }

    /// With a hard-concrete gate on every channel and hidden neuron, started as `init` says.
    pub fn with_l0_gates(device: &Device, init: GateInit) -> Self {
        let mut m = Self::new(device);
        m.gates = Some(Lenet5Gates {
            c1: HardConcrete::new(20, init, device),
            c2: HardConcrete::new(50, init, device),
            f1: HardConcrete::new(500, init, device),
        });
        m
    }

    fn run(&self, images: Tensor<2>, train: bool) -> Tensor<2> {
        let g = self.gates.as_ref();
        let [b, _] = images.dims();
        let x = images.reshape([b, 1, 28, 28]);
        let wg = |i: usize| self.weight_gates.as_ref().map(|w| w.gate(i, train));
        let x = self.pool.forward(gated_conv(&self.conv1, wg(0), x)); // [b, c1, 12, 12]
        let x = gate4(x, g.map(|g| &g.c1), train);
        let x = self.pool.forward(gated_conv(&self.conv2, wg(1), x)); // [b, c2, 4, 4]
        let x = gate4(x, g.map(|g| &g.c2), train);
        let [_, c, h, w] = x.dims();
        let x = x.reshape([b, c * h * w]);
        let x = relu(gated_linear(&self.fc1, wg(2), x));
        let x = gate2(x, g.map(|g| &g.f1), train);
        gated_linear(&self.fc2, wg(3), x)
    }
}

impl Classifier for Lenet5 {
    fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        self.run(images, false)
    }

    fn forward_train(&self, images: Tensor<2>) -> Tensor<2> {
        self.run(images, true)
    }

    fn dense_macs(&self) -> usize {
        let [c1, cin, k1h, k1w] = conv_dims(&self.conv1);
        let [c2, _, k2h, k2w] = conv_dims(&self.conv2);
        let [f_in, f_out] = linear_dims(&self.fc1);
        let [_, out] = linear_dims(&self.fc2);
        c1 * cin * k1h * k1w * 24 * 24 + c2 * c1 * k2h * k2w * 8 * 8 + f_in * f_out + f_out * out
    }

    fn widths(&self) -> Vec<usize> {
        let [c1, cin, _, _] = conv_dims(&self.conv1);
        let [c2, _, _, _] = conv_dims(&self.conv2);
        let [_, f1] = linear_dims(&self.fc1);
        let [_, out] = linear_dims(&self.fc2);
        vec![cin, c1, c2, f1, out]
    }

    fn l0_terms(&self, per_unit: bool) -> Vec<(String, Tensor<1>)> {
        if let Some(w) = &self.weight_gates {
            return weight_terms(w, &["conv1", "conv2", "fc1", "fc2"]);
        }
        let Some(g) = &self.gates else {
            return Vec::new();
        };
        let [c1, cin, kh1, kw1] = conv_dims(&self.conv1);
        let [c2, _, kh2, kw2] = conv_dims(&self.conv2);
        let [f_in, f1] = linear_dims(&self.fc1);
        let [_, out] = linear_dims(&self.fc2);
        // A channel or neuron carries its filter (or fan-in), its bias, and what reads it.
        terms(
            &[
                ("conv1", &g.c1, cin * kh1 * kw1 + 1 + c2 * kh2 * kw2),
                ("conv2", &g.c2, c1 * kh2 * kw2 + 1 + POOLED2 * f1),
                ("fc1", &g.f1, f_in + 1 + out),
            ],
            per_unit,
        )
    }

    fn shrunk(&self) -> Self {
        if let Some(w) = &self.weight_gates {
            return Self {
                conv1: fold_conv(&self.conv1, &w.values(0)),
                conv2: fold_conv(&self.conv2, &w.values(1)),
                pool: self.pool.clone(),
                fc1: fold_linear(&self.fc1, &w.values(2)),
                fc2: fold_linear(&self.fc2, &w.values(3)),
                gates: None,
                weight_gates: None,
            };
        }
        let Some(g) = &self.gates else {
            return self.clone();
        };
        let (z1, z2, z3) = (g.c1.values(), g.c2.values(), g.f1.values());
        let (k1, k2, k3) = (surviving(&z1), surviving(&z2), surviving(&z3));
        let (features, scale) = flattened(&k2, &z2, POOLED2);
        Self {
            conv1: conv_outputs(&self.conv1, &k1),
            conv2: conv_outputs(&conv_inputs(&self.conv2, &k1, &z1), &k2),
            pool: self.pool.clone(),
            fc1: linear_outputs(&linear_inputs(&self.fc1, &features, &scale), &k3),
            fc2: linear_inputs(&self.fc2, &k3, &z3),
            gates: None,
            weight_gates: None,
        }
    }

    fn gate_keep(&self) -> ChannelKeep {
        let Some(g) = &self.gates else {
            return ChannelKeep::new();
        };
        [("conv1", &g.c1), ("conv2", &g.c2), ("fc1", &g.f1)]
            .into_iter()
            .map(|(name, gate)| (name.to_string(), surviving(&gate.values())))
            .collect()
    }

    fn plain(&self) -> Self {
        Self {
            gates: None,
            weight_gates: None,
            ..self.clone()
        }
    }

    fn channel_groups(&self) -> Vec<Group> {
        if self.gates.is_some() || self.weight_gates.is_some() {
            return self.shrunk().channel_groups();
        }
        let [c1, cin, _, _] = conv_dims(&self.conv1);
        let [c2, _, _, _] = conv_dims(&self.conv2);
        let (mut g, x) = GraphBuilder::new(cin);
        let x = g.layer("conv1", x, c1);
        let x = g.layer("conv2", x, c2);
        let x = g.flatten(x, POOLED2);
        let x = g.layer("fc1", x, linear_dims(&self.fc1)[1]);
        let y = g.layer("fc2", x, linear_dims(&self.fc2)[1]);
        g.output(y);
        g.groups()
    }

    fn shrink_channels(&self, keep: &LayerKeep) -> Self {
        if self.gates.is_some() || self.weight_gates.is_some() {
            return self.shrunk().shrink_channels(keep);
        }
        let c = |name: &str, layer: &Conv2d| conv_keep(layer, keep.input(name), keep.output(name));
        let l =
            |name: &str, layer: &Linear| linear_keep(layer, keep.input(name), keep.output(name));
        Self {
            conv1: c("conv1", &self.conv1),
            conv2: c("conv2", &self.conv2),
            pool: self.pool.clone(),
            fc1: l("fc1", &self.fc1),
            fc2: l("fc2", &self.fc2),
            gates: None,
            weight_gates: None,
        }
    }
}
