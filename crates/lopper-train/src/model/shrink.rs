//! Physical shrink of layers: keep a subset of a layer's output units, or keep a subset of its
//! inputs while scaling each kept input. Together they remove a unit from a network exactly: the
//! producer loses the unit's output (weights and bias), the consumer loses the matching inputs,
//! and a per-unit gate `z` that multiplied the unit's activation is folded into the consumer's
//! weights (`W (z ⊙ h) = (W diag z) h`).
//!
//! Layouts (burn): `Linear` weight `[in, out]`, bias `[out]`; `Conv2d` weight
//! `[out, in, kh, kw]`, bias `[out]`; `BatchNorm` γ, β and running statistics `[channels]`.
//!
//! The `*_keep` forms take optional index lists (from structured pruning's
//! [`crate::structured::LayerKeep`]) and leave a dimension whole when its list is absent.

use burn::module::{Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::{Tensor, TensorData};

use super::floats as values;

fn param<const D: usize>(like: &Tensor<D>, data: Vec<f32>, shape: [usize; D]) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::<D>::from_data(
        TensorData::new(data, shape),
        &like.device(),
    ))
}

fn keep_bias(bias: &Option<Param<Tensor<1>>>, keep: &[usize]) -> Option<Param<Tensor<1>>> {
    bias.as_ref().map(|b| {
        let t = b.val();
        let v = values(t.clone());
        param(&t, keep.iter().map(|&o| v[o]).collect(), [keep.len()])
    })
}

/// `l` with only the output units `keep` (in order).
pub fn linear_outputs(l: &Linear, keep: &[usize]) -> Linear {
    let w = l.weight.val();
    let [fan_in, fan_out] = w.dims();
    let v = values(w.clone());
    let mut out = Vec::with_capacity(fan_in * keep.len());
    for i in 0..fan_in {
        out.extend(keep.iter().map(|&o| v[i * fan_out + o]));
    }
    Linear {
        weight: param(&w, out, [fan_in, keep.len()]),
        bias: keep_bias(&l.bias, keep),
    }
}

/// `l` reading only the inputs `keep`, input `keep[k]` multiplied by `scale[keep[k]]`.
pub fn linear_inputs(l: &Linear, keep: &[usize], scale: &[f32]) -> Linear {
    let w = l.weight.val();
    let [_, fan_out] = w.dims();
    let v = values(w.clone());
    let mut out = Vec::with_capacity(keep.len() * fan_out);
    for &i in keep {
        out.extend(
            v[i * fan_out..(i + 1) * fan_out]
                .iter()
                .map(|x| x * scale[i]),
        );
    }
    Linear {
        weight: param(&w, out, [keep.len(), fan_out]),
        bias: l.bias.clone(),
    }
}

/// `c` with only the output channels `keep`.
pub fn conv_outputs(c: &Conv2d, keep: &[usize]) -> Conv2d {
    let w = c.weight.val();
    let [_, cin, kh, kw] = w.dims();
    let per = cin * kh * kw;
    let v = values(w.clone());
    let out: Vec<f32> = keep
        .iter()
        .flat_map(|&o| v[o * per..(o + 1) * per].iter().copied())
        .collect();
    let mut shrunk = c.clone();
    shrunk.weight = param(&w, out, [keep.len(), cin, kh, kw]);
    shrunk.bias = keep_bias(&c.bias, keep);
    shrunk
}

/// `c` reading only the input channels `keep`, channel `keep[k]` multiplied by `scale[keep[k]]`.
pub fn conv_inputs(c: &Conv2d, keep: &[usize], scale: &[f32]) -> Conv2d {
    let w = c.weight.val();
    let [cout, cin, kh, kw] = w.dims();
    let k2 = kh * kw;
    let v = values(w.clone());
    let mut out = Vec::with_capacity(cout * keep.len() * k2);
    for o in 0..cout {
        for &i in keep {
            let at = (o * cin + i) * k2;
            out.extend(v[at..at + k2].iter().map(|x| x * scale[i]));
        }
    }
    let mut shrunk = c.clone();
    shrunk.weight = param(&w, out, [cout, keep.len(), kh, kw]);
    shrunk
}

/// Expands kept channels to kept features of a channel-major flatten with `per` features per
/// channel (`[c, h, w]` flattened to `c·h·w + …`), with each channel's scale repeated.
pub fn flattened(keep: &[usize], scale: &[f32], per: usize) -> (Vec<usize>, Vec<f32>) {
    let features: Vec<usize> = keep
        .iter()
        .flat_map(|&c| (c * per..(c + 1) * per).collect::<Vec<_>>())
        .collect();
    let mut s = vec![0.0f32; scale.len() * per];
    for (c, &z) in scale.iter().enumerate() {
        s[c * per..(c + 1) * per].fill(z);
    }
    (features, s)
}

/// `bn` with only the channels `keep` (γ, β and both running statistics).
pub fn batchnorm_channels(bn: &BatchNorm, keep: &[usize]) -> BatchNorm {
    let pick = |t: Tensor<1>| {
        let v = values(t.clone());
        Tensor::<1>::from_data(
            TensorData::new(keep.iter().map(|&c| v[c]).collect::<Vec<_>>(), [keep.len()]),
            &t.device(),
        )
    };
    let mut out = bn.clone();
    out.gamma = Param::from_tensor(pick(bn.gamma.val()));
    out.beta = Param::from_tensor(pick(bn.beta.val()));
    out.running_mean = RunningState::new(pick(bn.running_mean.value_sync()));
    out.running_var = RunningState::new(pick(bn.running_var.value_sync()));
    out
}

/// `c` restricted to the input channels `inputs` and output channels `outputs` (each whole
/// when `None`).
pub fn conv_keep(c: &Conv2d, inputs: Option<&[usize]>, outputs: Option<&[usize]>) -> Conv2d {
    let mut c = c.clone();
    if let Some(i) = inputs {
        let cin = c.weight.val().dims()[1];
        c = conv_inputs(&c, i, &vec![1.0; cin]);
    }
    if let Some(o) = outputs {
        c = conv_outputs(&c, o);
    }
    c
}

/// `l` restricted to the input features `inputs` and output units `outputs`.
pub fn linear_keep(l: &Linear, inputs: Option<&[usize]>, outputs: Option<&[usize]>) -> Linear {
    let mut l = l.clone();
    if let Some(i) = inputs {
        let fan_in = l.weight.val().dims()[0];
        l = linear_inputs(&l, i, &vec![1.0; fan_in]);
    }
    if let Some(o) = outputs {
        l = linear_outputs(&l, o);
    }
    l
}

/// `bn` restricted to `keep` when given.
pub fn batchnorm_keep(bn: &BatchNorm, keep: Option<&[usize]>) -> BatchNorm {
    keep.map_or_else(|| bn.clone(), |k| batchnorm_channels(bn, k))
}
