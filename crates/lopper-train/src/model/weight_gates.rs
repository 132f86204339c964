//! Per-weight (unstructured) L0 gates: one hard-concrete gate per weight of every Linear and
//! Conv2d, multiplied into the weight before the layer runs (`W ⊙ z`), with the expected-L0
//! penalty `Σ P(z ≠ 0)` (Louizos, Welling & Kingma 2018, section 3 with one gate per parameter).
//!
//! In training, one gate sample per weight is drawn per step (shared by the minibatch: per-example
//! samples of every weight would multiply the memory by the batch size); in evaluation the
//! deterministic gates are used. After training, [`fold_linear`] and [`fold_conv`] multiply the
//! deterministic gates into the weights: the weights whose gate is exactly 0 become zeros, the
//! result is an ordinary sparse layer and the exported model stores it in a sparse format.
//!
//! Gate layout follows the weight's burn layout: Linear `[in, out]`, Conv2d `[out, in, kh, kw]`,
//! flattened row-major.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::module::{conv2d, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

use super::floats;
use super::gates::{GateInit, HardConcrete};

/// One gate per weight of each gated layer, in the model's layer order.
#[derive(Module, Debug)]
pub struct WeightGates {
    pub layers: Vec<HardConcrete>,
}

impl WeightGates {
    /// Gates for layers with `sizes` weights each, started as `init` says.
    pub fn new(sizes: &[usize], init: GateInit, device: &Device) -> Self {
        Self {
            layers: sizes
                .iter()
                .map(|&n| HardConcrete::new(n, init, device))
                .collect(),
        }
    }

    /// Layer `i`'s gates, flattened: a fresh sample in training, deterministic otherwise.
    pub fn gate(&self, i: usize, train: bool) -> Tensor<1> {
        let g = &self.layers[i];
        if train {
            let s = g.sample(1);
            let n = s.dims()[1];
            s.reshape([n])
        } else {
            g.deterministic()
        }
    }

    /// Deterministic gate values of layer `i`.
    pub fn values(&self, i: usize) -> Vec<f32> {
        self.layers[i].values()
    }
}

/// `l` applied to `x` with its weight multiplied by `gate` (flattened `[in, out]`).
pub fn gated_linear(l: &Linear, gate: Option<Tensor<1>>, x: Tensor<2>) -> Tensor<2> {
    match gate {
        None => l.forward(x),
        Some(z) => {
            let w = l.weight.val();
            let dims = w.dims();
            linear(x, w * z.reshape(dims), l.bias.as_ref().map(|b| b.val()))
        }
    }
}

/// `c` applied to `x` with its weight multiplied by `gate` (flattened `[out, in, kh, kw]`).
/// `Same` padding is computed for stride 1 (odd kernels pad `k / 2` each side, as burn does).
pub fn gated_conv(c: &Conv2d, gate: Option<Tensor<1>>, x: Tensor<4>) -> Tensor<4> {
    let Some(z) = gate else {
        return c.forward(x);
    };
    let [kh, kw] = c.kernel_size;
    let padding = match c.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => [((kh - 1) / 2, kh / 2), ((kw - 1) / 2, kw / 2)],
    };
    let options = ConvOptions::new_with_padding(c.stride, padding, c.dilation, c.groups);
    let weight = c.weight.val();
    let dims = weight.dims();
    conv2d(
        x,
        weight * z.reshape(dims),
        c.bias.as_ref().map(|b| b.val()),
        options,
    )
}

fn scaled<const D: usize>(w: &Param<Tensor<D>>, gate: &[f32]) -> Param<Tensor<D>> {
    let t = w.val();
    let dims = t.dims();
    let v: Vec<f32> = floats(t.clone())
        .iter()
        .zip(gate)
        .map(|(w, z)| w * z)
        .collect();
    Param::from_tensor(Tensor::<D>::from_data(
        TensorData::new(v, dims),
        &t.device(),
    ))
}

/// `l` with its deterministic gates multiplied into the weight (zeros where a gate is 0).
pub fn fold_linear(l: &Linear, gate: &[f32]) -> Linear {
    Linear {
        weight: scaled(&l.weight, gate),
        bias: l.bias.clone(),
    }
}

/// `c` with its deterministic gates multiplied into the weight.
pub fn fold_conv(c: &Conv2d, gate: &[f32]) -> Conv2d {
    let mut out = c.clone();
    out.weight = scaled(&c.weight, gate);
    out
}
