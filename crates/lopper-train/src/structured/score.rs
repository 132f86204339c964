//! Channel importance for structured pruning, one score per channel of each group, summed over
//! the group's members (a residual group's channel counts in every layer that writes it).
//!
//! - `l1` / `l2`: the norm of each producer's filter (Li et al. 2017): Conv2d weight
//!   `[out, in, kh, kw]` row `c`, Linear weight `[in, out]` (burn's layout) column `c`.
//! - `bn_gamma`: `|γ_c|` of the group's BatchNorms (network slimming, Liu et al. 2017; the
//!   trainer adds the L1 penalty on γ that makes it sparse).
//! - `taylor`: first-order Taylor (Molchanov et al. 2019): per batch, `(Σ w·∂L/∂w)²` over every
//!   parameter of the channel (filter, bias, γ, β), accumulated over batches: the squared
//!   first-order change of the loss if the channel were removed.

use std::collections::{BTreeMap, HashMap};

use burn::module::Module;
use burn::optim::GradientsParams;
use serde::{Deserialize, Serialize};

use super::graph::Group;
use crate::prune::dynamic::gradient;
use crate::prune::masks::{float_params, LayerInfo};

/// How channels are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    L1,
    L2,
    BnGamma,
    Taylor,
}

impl Importance {
    pub fn name(self) -> &'static str {
        match self {
            Importance::L1 => "l1",
            Importance::L2 => "l2",
            Importance::BnGamma => "bn_gamma",
            Importance::Taylor => "taylor",
        }
    }
}

/// Every float parameter of `model` by path (`blocks.0.conv1.weight`, `blocks.0.bn1.gamma`).
pub fn params<M: Module>(model: &M) -> HashMap<String, LayerInfo> {
    float_params(model, |_, _| true)
        .into_iter()
        .map(|p| (p.path.clone(), p))
        .collect()
}

/// Indices into a parameter's values that belong to output channel `c`: Conv2d `[out, ...]`
/// row `c`, Linear `[in, out]` column `c`, a vector's entry `c`.
fn channel_indices(shape: &[usize], c: usize) -> Box<dyn Iterator<Item = usize>> {
    match *shape {
        [_, fan_out] => Box::new((0..shape[0]).map(move |i| i * fan_out + c)),
        [_] => Box::new(std::iter::once(c)),
        _ => {
            let per: usize = shape[1..].iter().product();
            Box::new(c * per..(c + 1) * per)
        }
    }
}

/// The parameters that carry a group's channels: producer weights and biases, BatchNorm γ, β.
fn channel_params(g: &Group) -> Vec<String> {
    let mut out = Vec::new();
    for p in &g.producers {
        out.push(format!("{p}.weight"));
        out.push(format!("{p}.bias"));
    }
    for n in &g.norms {
        out.push(format!("{n}.gamma"));
        out.push(format!("{n}.beta"));
    }
    out
}

/// Magnitude scores (`l1`, `l2`, `bn_gamma`) of each group's channels. A group with no
/// BatchNorm scores 0 under `bn_gamma` (recipes refuse that criterion on models without one).
pub fn magnitude_scores(
    groups: &[Group],
    params: &HashMap<String, LayerInfo>,
    importance: Importance,
) -> BTreeMap<String, Vec<f64>> {
    let mut out = BTreeMap::new();
    for g in groups.iter().filter(|g| g.prunable) {
        let mut s = vec![0.0f64; g.width];
        let sources: Vec<String> = match importance {
            Importance::BnGamma => g.norms.iter().map(|n| format!("{n}.gamma")).collect(),
            _ => g.producers.iter().map(|p| format!("{p}.weight")).collect(),
        };
        for name in sources {
            let Some(p) = params.get(&name) else { continue };
            for (c, sc) in s.iter_mut().enumerate() {
                let vals = channel_indices(&p.shape, c).map(|i| p.values[i] as f64);
                *sc += match importance {
                    Importance::L2 => vals.map(|v| v * v).sum::<f64>().sqrt(),
                    _ => vals.map(f64::abs).sum::<f64>(),
                };
            }
        }
        out.insert(g.name.clone(), s);
    }
    out
}

/// Accumulates first-order Taylor scores over batches.
#[derive(Debug, Clone, Default)]
pub struct TaylorScores {
    pub scores: BTreeMap<String, Vec<f64>>,
    pub batches: usize,
}

impl TaylorScores {
    /// Adds one batch: `grads` from the backward pass of `model`'s loss.
    pub fn add<M: Module>(&mut self, model: &M, grads: &GradientsParams, groups: &[Group]) {
        let table = params(model);
        for g in groups.iter().filter(|g| g.prunable) {
            let mut contrib = vec![0.0f64; g.width];
            for name in channel_params(g) {
                let Some(p) = table.get(&name) else { continue };
                let Some(grad) = gradient(grads, p) else {
                    continue;
                };
                for (c, acc) in contrib.iter_mut().enumerate() {
                    *acc += channel_indices(&p.shape, c)
                        .map(|i| p.values[i] as f64 * grad[i] as f64)
                        .sum::<f64>();
                }
            }
            let s = self
                .scores
                .entry(g.name.clone())
                .or_insert_with(|| vec![0.0; g.width]);
            for (acc, c) in s.iter_mut().zip(contrib) {
                *acc += c * c;
            }
        }
        self.batches += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(shape: Vec<usize>, values: Vec<f32>) -> LayerInfo {
        LayerInfo {
            path: String::new(),
            id: burn::module::ParamId::new(),
            shape,
            values,
        }
    }

    fn group(name: &str, width: usize, producers: &[&str], norms: &[&str]) -> Group {
        Group {
            name: name.into(),
            width,
            producers: producers.iter().map(|s| s.to_string()).collect(),
            norms: norms.iter().map(|s| s.to_string()).collect(),
            consumers: Vec::new(),
            residual: producers.len() > 1,
            prunable: true,
        }
    }

    #[test]
    fn norms_follow_burn_layouts_and_sum_over_producers() {
        // Linear [in 2, out 3]: column c is output c.
        let lin = info(vec![2, 3], vec![1.0, -2.0, 0.0, 3.0, 0.0, 0.0]);
        // Conv [out 3, in 1, 1, 2]: row c is output c.
        let conv = info(vec![3, 1, 1, 2], vec![1.0, 1.0, 0.0, 0.0, -4.0, 3.0]);
        let table: HashMap<String, LayerInfo> = [
            ("a.weight".to_string(), lin),
            ("b.weight".to_string(), conv),
            ("n.gamma".to_string(), info(vec![3], vec![0.5, -0.25, 0.0])),
        ]
        .into();
        let groups = [group("g", 3, &["a", "b"], &["n"])];
        let l1 = magnitude_scores(&groups, &table, Importance::L1);
        assert_eq!(l1["g"], vec![4.0 + 2.0, 2.0, 7.0]);
        let l2 = magnitude_scores(&groups, &table, Importance::L2);
        assert!((l2["g"][0] - (10f64.sqrt() + 2f64.sqrt())).abs() < 1e-12);
        assert!((l2["g"][2] - 5.0).abs() < 1e-12);
        let bn = magnitude_scores(&groups, &table, Importance::BnGamma);
        assert_eq!(bn["g"], vec![0.5, 0.25, 0.0]);
    }
}
