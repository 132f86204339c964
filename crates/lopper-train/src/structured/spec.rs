//! The recipe table `[structured]`: structured (channel) pruning with physical shrink.
//!
//! ```toml
//! [structured]
//! criterion = "l2"          # l1 | l2 | bn_gamma | taylor
//! target = 0.5              # fraction of each group's original channels removed at the end
//! at_epochs = [6, 8, 10]    # prune events at the start of these epochs, ramping to `target`
//! allocation = "layerwise"  # or "global" (one ranking, per-group floor `min_keep`)
//! slimming = 1e-4           # network slimming: λ Σ|γ| over BatchNorm γ until the last event
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::score::Importance;
use super::select::ChannelAllocation;
use crate::model::ZooModel;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredSpec {
    /// How channels are scored (see [`super::score`]); the default is the filter L2 norm
    /// (Torch-Pruning's default importance).
    #[serde(default = "default_criterion")]
    pub criterion: Importance,
    /// Fraction of channels removed after the last event, of each group's original width
    /// (layer-wise) or of all prunable channels (global).
    pub target: f64,
    /// Epochs at whose start a prune event runs; event `k` of `n` removes `target·k/n`.
    pub at_epochs: Vec<usize>,
    #[serde(default)]
    pub allocation: ChannelAllocation,
    /// Under global allocation, the least fraction of its original channels a group keeps.
    #[serde(default = "default_min_keep")]
    pub min_keep: f64,
    /// Whether the residual groups (channels shared through adds) are pruned too.
    #[serde(default = "default_true")]
    pub residual: bool,
    /// Network slimming (Liu et al. 2017): λ of an L1 penalty on every BatchNorm γ, applied
    /// until the last prune event.
    #[serde(default)]
    pub slimming: f64,
    /// Batches of training data whose gradients the `taylor` criterion accumulates per event.
    #[serde(default = "default_taylor_batches")]
    pub taylor_batches: usize,
    /// Final ratios of particular groups, by group name (`"blocks.0.conv1" = 0.3`).
    #[serde(default)]
    pub overrides: BTreeMap<String, f64>,
}

fn default_criterion() -> Importance {
    Importance::L2
}
fn default_min_keep() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}
fn default_taylor_batches() -> usize {
    32
}

fn has_batchnorm(model: ZooModel) -> bool {
    matches!(model, ZooModel::Resnet8 | ZooModel::Resnet20)
}

impl StructuredSpec {
    /// Checks the table against the recipe's model and epochs; errors are `(key, reason)`.
    pub fn check(&self, model: ZooModel, epochs: usize) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: String| Err((format!("structured.{key}"), reason));
        if !(0.0..1.0).contains(&self.target) {
            return bad("target", format!("{} is outside [0, 1)", self.target));
        }
        if self.at_epochs.is_empty() {
            return bad("at_epochs", "needs at least one epoch".into());
        }
        if self.at_epochs.windows(2).any(|w| w[0] >= w[1]) {
            return bad("at_epochs", "must be strictly increasing".into());
        }
        if let Some(&e) = self.at_epochs.iter().find(|&&e| e >= epochs) {
            return bad(
                "at_epochs",
                format!("epoch {e} is not before the end of training (epochs = {epochs})"),
            );
        }
        if !(0.0..=1.0).contains(&self.min_keep) {
            return bad("min_keep", format!("{} is outside [0, 1]", self.min_keep));
        }
        if !(self.slimming.is_finite() && self.slimming >= 0.0) {
            return bad("slimming", "must be a non-negative number".into());
        }
        let needs_bn = self.criterion == Importance::BnGamma || self.slimming > 0.0;
        if needs_bn && !has_batchnorm(model) {
            return bad(
                if self.slimming > 0.0 {
                    "slimming"
                } else {
                    "criterion"
                },
                format!(
                    "BatchNorm γ scoring and network slimming need a model with BatchNorm; {} has none",
                    model.name()
                ),
            );
        }
        if self.criterion == Importance::Taylor && self.taylor_batches == 0 {
            return bad("taylor_batches", "must be at least 1".into());
        }
        for (name, r) in &self.overrides {
            if !(0.0..1.0).contains(r) {
                return bad(
                    &format!("overrides.\"{name}\""),
                    format!("{r} is outside [0, 1)"),
                );
            }
        }
        Ok(())
    }

    /// The fraction removed after event `k` (0-based) of `at_epochs`.
    pub fn ratio_at(&self, k: usize) -> f64 {
        self.target * (k + 1) as f64 / self.at_epochs.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StructuredSpec {
        toml::from_str("target = 0.5\nat_epochs = [2, 4]").unwrap()
    }

    #[test]
    fn defaults_and_ramp() {
        let s = spec();
        assert_eq!(s.criterion, Importance::L2);
        assert_eq!(s.allocation, ChannelAllocation::Layerwise);
        assert!(s.residual);
        assert_eq!(s.ratio_at(0), 0.25);
        assert_eq!(s.ratio_at(1), 0.5);
        assert!(s.check(ZooModel::Lenet300, 10).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let mut s = spec();
        s.at_epochs = vec![4, 2];
        assert_eq!(
            s.check(ZooModel::Resnet8, 10).unwrap_err().0,
            "structured.at_epochs"
        );
        let mut s = spec();
        s.at_epochs = vec![10];
        assert!(s
            .check(ZooModel::Resnet8, 10)
            .unwrap_err()
            .1
            .contains("epoch 10"));
        let mut s = spec();
        s.criterion = Importance::BnGamma;
        let (key, reason) = s.check(ZooModel::Lenet5, 10).unwrap_err();
        assert_eq!(key, "structured.criterion");
        assert!(reason.contains("lenet5 has none"));
        let mut s = spec();
        s.target = 1.0;
        assert_eq!(
            s.check(ZooModel::Resnet8, 10).unwrap_err().0,
            "structured.target"
        );
    }
}
