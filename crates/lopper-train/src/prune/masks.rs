//! Masks on burn modules, keyed by parameter path (`fc1.weight`, `conv2.weight`).
//!
//! A mask is a row-major `bool` per weight in burn's own layout of that parameter (Linear
//! `[in, out]`, Conv2d `[out, in, kh, kw]`). Invariant kept by the trainer: after every optimiser
//! step the masked weights are exactly zero, because both the gradients (before the step) and
//! the weights (after it) are multiplied by the mask. Multiplying the weights is what makes it
//! exact: optimiser state such as momentum or weight decay could otherwise move a masked weight.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

/// A prunable parameter: its path, id, shape and current values.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    pub path: String,
    pub id: ParamId,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl LayerInfo {
    pub fn zeros(&self) -> usize {
        self.values.iter().filter(|v| **v == 0.0).count()
    }
}

/// Whether a float parameter is prunable: rank >= 2 (Linear, Conv) and named `weight`, so
/// biases and BatchNorm parameters never are. The one definition used by masks, reports and L1.
pub fn is_prunable(path: &str, rank: usize) -> bool {
    rank >= 2 && path.rsplit('.').next() == Some("weight")
}

/// Parameters of rank >= 2 whose path ends in `weight`.
pub fn prunable_layers<M: Module>(model: &M) -> Vec<LayerInfo> {
    float_params(model, is_prunable)
}

/// Every float parameter whose path and rank `keep` accepts, in the visitor's order (BatchNorm
/// running statistics included: burn visits them as parameters).
pub fn float_params<M: Module>(model: &M, keep: impl Fn(&str, usize) -> bool) -> Vec<LayerInfo> {
    struct Collect<F> {
        path: Vec<String>,
        keep: F,
        out: Vec<LayerInfo>,
    }
    impl<F: Fn(&str, usize) -> bool> ModuleVisitor for Collect<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            if !(self.keep)(&path, D) {
                return;
            }
            let t = param.val();
            let shape = t.dims().to_vec();
            let values = crate::model::floats(t);
            self.out.push(LayerInfo {
                path,
                id: param.id,
                shape,
                values,
            });
        }
    }
    let mut c = Collect {
        path: Vec::new(),
        keep,
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// One mask per pruned parameter path.
///
/// The 0/1 factors are turned into tensors once per device and path and reused every step
/// (weights and gradients live on different devices under autodiff, hence two caches).
#[derive(Debug, Clone, Default)]
pub struct Masks {
    layers: BTreeMap<String, Vec<bool>>,
    weight_factors: HashMap<String, Tensor<1>>,
    grad_factors: HashMap<String, Tensor<1>>,
}

impl PartialEq for Masks {
    fn eq(&self, other: &Self) -> bool {
        self.layers == other.layers
    }
}

fn cached_factor(
    cache: &mut HashMap<String, Tensor<1>>,
    layers: &BTreeMap<String, Vec<bool>>,
    path: &str,
    device: &burn::tensor::Device,
) -> Option<Tensor<1>> {
    if let Some(t) = cache.get(path) {
        return Some(t.clone());
    }
    let keep = layers.get(path)?;
    let factor: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    let t = Tensor::<1>::from_data(TensorData::new(factor, [keep.len()]), device);
    cache.insert(path.to_string(), t.clone());
    Some(t)
}

impl Masks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Masks that keep exactly the nonzero prunable weights of `model` (its zeros stay zero):
    /// what a resumed pruned run, or weights with folded per-weight L0 gates, train under.
    pub fn from_zeros<M: Module>(model: &M) -> Self {
        let mut masks = Self::new();
        for l in prunable_layers(model) {
            masks.insert(l.path, l.values.iter().map(|v| *v != 0.0).collect());
        }
        masks
    }

    pub fn insert(&mut self, path: impl Into<String>, keep: Vec<bool>) {
        let path = path.into();
        self.weight_factors.remove(&path);
        self.grad_factors.remove(&path);
        self.layers.insert(path, keep);
    }

    pub fn get(&self, path: &str) -> Option<&[bool]> {
        self.layers.get(path).map(Vec::as_slice)
    }

    /// `(kept entries of self, entries whose state differs from other)`, over self's layers.
    pub fn compare(&self, other: &Masks) -> (usize, usize) {
        let mut kept = 0;
        let mut changed = 0;
        for (path, m) in &self.layers {
            kept += m.iter().filter(|k| **k).count();
            if let Some(o) = other.layers.get(path) {
                changed += m.iter().zip(o).filter(|(a, b)| a != b).count();
            }
        }
        (kept, changed)
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<bool>)> {
        self.layers.iter()
    }

    /// Multiplies every masked parameter by its mask, keeping parameter ids (so optimiser state
    /// stays attached) and leaf status.
    pub fn apply<M: Module>(&mut self, model: M) -> M {
        if self.is_empty() {
            return model;
        }
        struct Apply<'a> {
            masks: &'a mut Masks,
            path: Vec<String>,
        }
        impl ModuleMapper for Apply<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
            }
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let path = self.path.join(".");
                if !self.masks.layers.contains_key(&path) {
                    return param;
                }
                let masks = &mut *self.masks;
                param.map(|t| {
                    let require_grad = t.is_require_grad();
                    let factor =
                        cached_factor(&mut masks.weight_factors, &masks.layers, &path, &t.device())
                            .expect("mask exists for this path");
                    let mask = factor.reshape(t.shape());
                    let masked = (t * mask).detach();
                    if require_grad {
                        masked.require_grad()
                    } else {
                        masked
                    }
                })
            }
        }
        model.map(&mut Apply {
            masks: self,
            path: Vec::new(),
        })
    }

    /// Multiplies the gradients of masked parameters by their masks, so pruned weights receive
    /// no update and optimiser state (momentum, Adam moments) does not build up for them.
    pub fn mask_grads<M: Module>(&mut self, model: &M, grads: &mut GradientsParams) {
        if self.is_empty() {
            return;
        }
        struct MaskGrads<'a> {
            masks: &'a mut Masks,
            grads: &'a mut GradientsParams,
            path: Vec<String>,
        }
        impl ModuleVisitor for MaskGrads<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let path = self.path.join(".");
                if !self.masks.layers.contains_key(&path) {
                    return;
                }
                if let Some(g) = self.grads.remove::<D>(param.id) {
                    let masks = &mut *self.masks;
                    let factor =
                        cached_factor(&mut masks.grad_factors, &masks.layers, &path, &g.device())
                            .expect("mask exists for this path");
                    let mask = factor.reshape(g.shape());
                    self.grads.register::<D>(param.id, g * mask);
                }
            }
        }
        model.visit(&mut MaskGrads {
            masks: self,
            grads,
            path: Vec::new(),
        });
    }
}

impl Masks {
    /// Multiplies each masked layer's weights by `1/sqrt(density)` (its kept fraction), so a
    /// network made sparse before its first step starts with the pre-activation variance of
    /// its sparse fan-in instead of a `density`-times smaller one. Masked weights stay zero.
    pub fn scale_to_fan_in<M: Module>(&self, model: M) -> M {
        struct Scale<'a> {
            masks: &'a Masks,
            path: Vec<String>,
        }
        impl ModuleMapper for Scale<'_> {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
            }
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let Some(keep) = self.masks.get(&self.path.join(".")) else {
                    return param;
                };
                let kept = keep.iter().filter(|k| **k).count();
                if kept == 0 || kept == keep.len() {
                    return param;
                }
                let factor = (keep.len() as f64 / kept as f64).sqrt();
                param.map(|t| {
                    let require_grad = t.is_require_grad();
                    let scaled = t.mul_scalar(factor).detach();
                    if require_grad {
                        scaled.require_grad()
                    } else {
                        scaled
                    }
                })
            }
        }
        model.map(&mut Scale {
            masks: self,
            path: Vec::new(),
        })
    }
}

/// Sparsity measured from the weights themselves: the fraction of exact zeros per prunable
/// layer and over all of them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SparsityReport {
    pub total: usize,
    pub zeros: usize,
    pub sparsity: f64,
    pub per_layer: Vec<LayerSparsity>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerSparsity {
    pub name: String,
    pub shape: Vec<usize>,
    pub sparsity: f64,
}

pub fn measure_sparsity<M: Module>(model: &M) -> SparsityReport {
    let layers = prunable_layers(model);
    let total: usize = layers.iter().map(|l| l.values.len()).sum();
    let zeros: usize = layers.iter().map(LayerInfo::zeros).sum();
    SparsityReport {
        total,
        zeros,
        sparsity: if total == 0 {
            0.0
        } else {
            zeros as f64 / total as f64
        },
        per_layer: layers
            .iter()
            .map(|l| LayerSparsity {
                name: l.path.clone(),
                shape: l.shape.clone(),
                sparsity: l.zeros() as f64 / l.values.len().max(1) as f64,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_prunable, prunable_layers, Masks};
    use crate::model::Lenet300;
    use burn::tensor::Device;

    #[test]
    fn only_weights_of_rank_two_or_more_are_prunable() {
        assert!(is_prunable("fc1.weight", 2));
        assert!(is_prunable("blocks.0.shortcut.conv.weight", 4));
        assert!(!is_prunable("fc1.bias", 1));
        assert!(!is_prunable("bn.gamma", 1));
        assert!(!is_prunable("fc1.weight", 1));
        assert!(!is_prunable("fc1.fooweight", 2));
    }

    #[test]
    fn fan_in_scaling_multiplies_kept_weights_by_one_over_root_density() {
        let model = {
            let _rng = crate::trainer::rng_guard();
            Lenet300::new(&Device::flex())
        };
        let before = prunable_layers(&model);
        let fc1 = before.iter().find(|l| l.path == "fc1.weight").unwrap();
        // Keep every 4th weight of fc1: density 1/4, factor 2. fc2 stays fully kept (factor 1).
        let keep: Vec<bool> = (0..fc1.values.len()).map(|i| i % 4 == 0).collect();
        let mut masks = Masks::new();
        masks.insert("fc1.weight", keep.clone());
        masks.insert("fc2.weight", vec![true; 300 * 100]);
        let masked = masks.apply(model);
        let model = masks.scale_to_fan_in(masked);
        for layer in prunable_layers(&model) {
            let old = before.iter().find(|l| l.path == layer.path).unwrap();
            for (i, (&new, &was)) in layer.values.iter().zip(&old.values).enumerate() {
                let want = match layer.path.as_str() {
                    "fc1.weight" if keep[i] => was * 2.0,
                    "fc1.weight" => 0.0,
                    _ => was,
                };
                assert!(
                    (new - want).abs() <= 1e-6 * want.abs(),
                    "{} [{i}]: {new} vs {want}",
                    layer.path
                );
            }
        }
    }
}
