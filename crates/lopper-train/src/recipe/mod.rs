//! Training recipes: TOML files naming the model, data, optimiser, epochs and pruning plan.
//!
//! Parsing is strict: an unknown key, a sparsity outside `[0, 1)` or an unknown layer name is an
//! error that names the file, the key and the reason. Defaults are those a practitioner would
//! pick for these models (Adam 1e-3, batch 128, cosine learning rate, magnitude, layer-wise).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lopper_kernels::Pattern;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::ZooModel;
use crate::prune::{Allocation, Criterion, Schedule};
use crate::structured::StructuredSpec;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RecipeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ZooModel,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Train on the first N training examples only (0: all 60 000).
    #[serde(default)]
    pub train_limit: usize,
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    #[serde(default)]
    pub pruning: PruningSpec,
    #[serde(default)]
    pub regularization: Regularization,
    /// L0 regularisation with hard-concrete gates (`[l0]`); the trained model is shrunk.
    #[serde(default)]
    pub l0: Option<L0Spec>,
    /// Structured pruning (`[structured]`): channels removed physically at the listed epochs.
    #[serde(default)]
    pub structured: Option<StructuredSpec>,
}

/// Recipes larger than this are refused before parsing.
pub const MAX_RECIPE_BYTES: u64 = 1 << 20;

fn default_seed() -> u64 {
    42
}
fn default_batch() -> usize {
    128
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OptimizerSpec {
    Sgd {
        lr: f64,
        #[serde(default = "default_momentum")]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        #[serde(default)]
        weight_decay: f64,
    },
}

fn default_momentum() -> f64 {
    0.9
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Adam {
            lr: 1e-3,
            weight_decay: 0.0,
        }
    }
}

impl OptimizerSpec {
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerSpec::Sgd { lr, .. } | OptimizerSpec::Adam { lr, .. } => *lr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LrSchedule {
    Constant,
    /// Multiply by `gamma` every `every_epochs`.
    Step {
        every_epochs: usize,
        gamma: f64,
    },
    /// Cosine decay from the base rate to `min_lr` over all epochs.
    #[default]
    Cosine,
}

impl LrSchedule {
    /// The learning rate at `step` of `total` steps (`steps_per_epoch` per epoch).
    pub fn lr(&self, base: f64, step: usize, total: usize, steps_per_epoch: usize) -> f64 {
        match self {
            LrSchedule::Constant => base,
            LrSchedule::Step {
                every_epochs,
                gamma,
            } => base * gamma.powi((step / steps_per_epoch.max(1) / (*every_epochs).max(1)) as i32),
            LrSchedule::Cosine => {
                let t = step as f64 / total.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruningSpec {
    #[serde(default = "default_criterion")]
    pub criterion: Criterion,
    #[serde(default = "default_allocation")]
    pub allocation: Allocation,
    /// Under global allocation, the least fraction of weights every layer keeps.
    #[serde(default)]
    pub min_density: f64,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Final sparsity of particular layers, by parameter path (e.g. `"fc3.weight" = 0.8`).
    #[serde(default)]
    pub overrides: BTreeMap<String, f64>,
    /// N:M structured sparsity, e.g. `"2:4"`: every prune event keeps `n` of each `m`
    /// consecutive inputs of every output unit (needs a one_shot schedule to `1 - n/m`).
    /// Or a block pattern `"RxC"`, e.g. `"4x1"`: weights are pruned in whole blocks of `R`
    /// outputs by `C` inputs of the `[out, in]` matrix, with any magnitude schedule.
    #[serde(default)]
    pub pattern: Option<Pattern>,
    /// How the weights a mask keeps before the first step are scaled (sparse from the start:
    /// SET, RigL, or a one-shot at epoch 0).
    #[serde(default)]
    pub sparse_init: SparseInit,
    /// SET / RigL: zero the optimiser state (momentum, Adam moments) of regrown weights, so a
    /// weight kept before does not regrow with a stale second moment (see `prune::regrow_state`).
    #[serde(default = "yes")]
    pub reset_regrown: bool,
}

fn yes() -> bool {
    true
}

/// Scaling of the kept weights when a network is made sparse before its first step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparseInit {
    /// Keep the dense initialisation: a layer at density `d` starts with its pre-activation
    /// variance scaled by `d`.
    #[default]
    Dense,
    /// Scale each layer's kept weights by `1/sqrt(d)`, `d` the layer's density, so the
    /// pre-activation variance matches the dense initialisation's on average (Evci et al. 2022,
    /// "Gradient flow in sparse neural networks", scale by the sparse fan-in). Per layer, not per
    /// unit: exact for the random masks of SET and RigL, an average for magnitude masks whose
    /// rows keep different counts.
    FanIn,
}

impl PruningSpec {
    /// The parsed `pattern`, when it is a valid `n:m` (checked by [`Recipe::parse`]).
    pub fn nm_pattern(&self) -> Option<(usize, usize)> {
        match self.pattern? {
            Pattern::Nm { n, m } if n >= 1 && n < m && m <= 16 => Some((n, m)),
            _ => None,
        }
    }

    /// The parsed `pattern`, when it is a valid block pattern `RxC` (checked by
    /// [`Recipe::parse`]).
    pub fn block_pattern(&self) -> Option<(usize, usize)> {
        match self.pattern? {
            Pattern::Block { rows, cols }
                if (1..=MAX_BLOCK).contains(&rows)
                    && (1..=MAX_BLOCK).contains(&cols)
                    && rows * cols > 1 =>
            {
                Some((rows, cols))
            }
            _ => None,
        }
    }
}

/// Largest block side a pattern may name.
pub const MAX_BLOCK: usize = 64;

fn default_criterion() -> Criterion {
    Criterion::Magnitude
}
fn default_allocation() -> Allocation {
    Allocation::Layerwise
}
fn default_schedule() -> Schedule {
    Schedule::None
}

impl Default for PruningSpec {
    fn default() -> Self {
        Self {
            criterion: default_criterion(),
            allocation: default_allocation(),
            min_density: 0.0,
            schedule: Schedule::None,
            overrides: BTreeMap::new(),
            pattern: None,
            sparse_init: SparseInit::Dense,
            reset_regrown: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regularization {
    /// λ of the L1 penalty `λ Σ|W|` over prunable weights, added to the loss.
    #[serde(default)]
    pub l1: f64,
}

/// `[l0]`: L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma 2018).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L0Spec {
    /// λ as in the paper: the loss adds `λ / N · E[parameters whose gate is not zero]`, with
    /// `N` the number of training examples (the paper uses λ = 0.1 for LeNet-300-100 and
    /// LeNet-5 on MNIST).
    pub lambda: f64,
    /// What one gate switches: `"neurons"` (group L0: one gate per hidden neuron or
    /// convolution channel, removed physically after training) or `"weights"` (one gate per
    /// weight; the trained model is sparse).
    #[serde(default)]
    pub gates: L0Gates,
    /// Initial probability that a gate is off (the paper: 0.5 for hidden layers).
    #[serde(default = "default_droprate")]
    pub droprate_init: f64,
    /// The last `finetune_epochs` epochs freeze the gates at their deterministic values and
    /// drop the penalty, so the weights adapt to the gates the exported network uses (the
    /// stochastic gates of training and the deterministic ones of evaluation differ for units
    /// that are neither clearly on nor clearly off).
    #[serde(default)]
    pub finetune_epochs: usize,
    /// How the penalty counts a gate: `"params"` (the paper's group L0: each gate weighs the
    /// parameters its unit carries, so wide-fan-in units are pushed hardest) or `"units"` (each
    /// neuron or channel counts once; λ must then be larger by about the parameters per unit).
    #[serde(default)]
    pub weighting: L0Weighting,
    /// Multipliers of λ for particular gated layers, by name (`fc2 = 3.0`): the penalty of a
    /// layer whose units carry few parameters is otherwise too weak to shrink it.
    #[serde(default)]
    pub layer_scale: BTreeMap<String, f64>,
    /// Multiplies the learning rate of the gates' `log α` (like a PyTorch parameter group with
    /// its own `lr`, except that weight decay acts on `log α / s`, see `model::gates`): the gates
    /// move k times as far per step as with the model's learning rate. In [0.001, 1000].
    /// With the shared rate, 20 epochs of Adam barely carry a gate from open to closed, so
    /// which units close is decided by that race rather than by the penalty; 10 lets the
    /// gates settle (measured on LeNet-300-100, docs/perf/accuracy.md).
    #[serde(default = "one")]
    pub gate_lr_scale: f64,
}

fn one() -> f64 {
    1.0
}

/// How the expected-L0 penalty weighs each gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L0Weighting {
    #[default]
    Params,
    Units,
}

fn default_droprate() -> f64 {
    0.5
}

/// The granularity of L0 gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L0Gates {
    /// One gate per hidden neuron (Linear) or output channel (Conv2d).
    #[default]
    Neurons,
    /// One gate per weight (unstructured L0): closed gates become zeros in the weights.
    Weights,
}

impl Recipe {
    /// Reads and validates a recipe file.
    pub fn load(path: &Path) -> Result<Self, RecipeError> {
        let io = |source| RecipeError::Io {
            path: path.to_path_buf(),
            source,
        };
        // Whatever the file claims to be (a FIFO, a device), a huge or endless input is refused
        // without being held in memory.
        let file = std::fs::File::open(path).map_err(io)?;
        let Some(bytes) = lopper_model::limits::read_at_most(file, MAX_RECIPE_BYTES).map_err(io)?
        else {
            return Err(RecipeError::Parse {
                path: path.to_path_buf(),
                message: format!(
                    "larger than {MAX_RECIPE_BYTES} bytes: not a recipe (recipes are a few hundred bytes)"
                ),
            });
        };
        let text = String::from_utf8(bytes).map_err(|e| RecipeError::Parse {
            path: path.to_path_buf(),
            message: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        })?;
        Self::parse(path, &text)
    }

    /// Parses recipe text; `path` names the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, RecipeError> {
        let recipe: Recipe = toml::from_str(text).map_err(|e| RecipeError::Parse {
            path: path.to_path_buf(),
            message: lopper_model::limits::clip(&e.to_string().trim_end().replace('\n', " "), 400),
        })?;
        recipe.validate(path)?;
        Ok(recipe)
    }

    fn validate(&self, path: &Path) -> Result<(), RecipeError> {
        let bad = |key: &str, reason: String| RecipeError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        let sparsity = |key: &str, v: f64| {
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(bad(key, format!("sparsity {v} is outside [0, 1)")))
            }
        };
        if self.epochs == 0 {
            return Err(bad("epochs", "must be at least 1".into()));
        }
        if self.batch_size == 0 || self.batch_size > 65_536 {
            return Err(bad("batch_size", "must be in 1..=65536".into()));
        }
        let lr = self.optimizer.lr();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(bad(
                "optimizer.lr",
                format!("{lr} is not a positive number"),
            ));
        }
        if !(self.regularization.l1.is_finite() && self.regularization.l1 >= 0.0) {
            return Err(bad(
                "regularization.l1",
                "must be a non-negative number".into(),
            ));
        }
        let p = &self.pruning;
        if !(0.0..=1.0).contains(&p.min_density) {
            return Err(bad(
                "pruning.min_density",
                format!("{} is outside [0, 1]", p.min_density),
            ));
        }
        for (layer, &s) in &p.overrides {
            sparsity(&format!("pruning.overrides.\"{layer}\""), s)?;
        }
        if let Some(text) = &p.pattern {
            if p.block_pattern().is_some() {
                if matches!(
                    p.schedule,
                    Schedule::None | Schedule::Set { .. } | Schedule::Rigl { .. }
                ) {
                    return Err(bad(
                        "pruning.pattern",
                        format!("block pattern \"{text}\" needs a one_shot, periodic, gradual or iterative schedule (SET and RigL move single weights)"),
                    ));
                }
            } else {
                let Some((n, m)) = p.nm_pattern() else {
                    return Err(bad(
                        "pruning.pattern",
                        format!("\"{text}\" is neither N:M with 1 <= N < M <= 16 (e.g. \"2:4\") nor a block RxC with sides 1..={MAX_BLOCK} (e.g. \"4x1\")"),
                    ));
                };
                let want = 1.0 - n as f64 / m as f64;
                match &p.schedule {
                    Schedule::OneShot { target, .. } if (target - want).abs() < 1e-9 => {}
                    Schedule::OneShot { target, .. } => {
                        return Err(bad(
                            "pruning.schedule.target",
                            format!("{target} does not match pattern {n}:{m} (sparsity {want})"),
                        ))
                    }
                    _ => {
                        return Err(bad(
                            "pruning.pattern",
                            "N:M patterns need a one_shot schedule".into(),
                        ))
                    }
                }
                if !p.overrides.is_empty() {
                    return Err(bad(
                        "pruning.overrides",
                        "per-layer targets do not apply to an N:M pattern".into(),
                    ));
                }
            }
        }
        // Any schedule that prunes before the first step (steps per epoch do not matter at 0).
        let sparse_from_start = p.schedule.target_at(0, 1).is_some_and(|t| t > 0.0);
        if p.sparse_init == SparseInit::FanIn && !sparse_from_start {
            return Err(bad(
                "pruning.sparse_init",
                "\"fan_in\" rescales a network made sparse before its first step: it needs a schedule that prunes at step 0 (set, rigl, one_shot at epoch 0, ...)".into(),
            ));
        }
        match &p.schedule {
            Schedule::None => {}
            Schedule::OneShot { epoch, target } => {
                sparsity("pruning.schedule.target", *target)?;
                if *epoch > self.epochs {
                    return Err(bad(
                        "pruning.schedule.epoch",
                        format!("{epoch} is after the last epoch ({})", self.epochs),
                    ));
                }
            }
            Schedule::Periodic {
                rate,
                every,
                target,
                ..
            } => {
                sparsity("pruning.schedule.target", *target)?;
                sparsity("pruning.schedule.rate", *rate)?;
                if *every == 0 {
                    return Err(bad("pruning.schedule.every", "must be at least 1".into()));
                }
            }
            Schedule::Gradual {
                initial,
                target,
                start_epoch,
                end_epoch,
                every_steps,
            } => {
                sparsity("pruning.schedule.initial", *initial)?;
                sparsity("pruning.schedule.target", *target)?;
                if start_epoch > end_epoch || *end_epoch > self.epochs {
                    return Err(bad(
                        "pruning.schedule.end_epoch",
                        format!("need start_epoch <= end_epoch <= epochs ({start_epoch}, {end_epoch}, {})", self.epochs),
                    ));
                }
                if *every_steps == 0 {
                    return Err(bad(
                        "pruning.schedule.every_steps",
                        "must be at least 1".into(),
                    ));
                }
            }
            Schedule::Set {
                target,
                every_steps,
                drop_fraction,
                end_fraction,
            }
            | Schedule::Rigl {
                target,
                every_steps,
                drop_fraction,
                end_fraction,
            } => {
                sparsity("pruning.schedule.target", *target)?;
                if *every_steps == 0 {
                    return Err(bad(
                        "pruning.schedule.every_steps",
                        "must be at least 1".into(),
                    ));
                }
                if !(*drop_fraction > 0.0 && *drop_fraction < 1.0) {
                    return Err(bad(
                        "pruning.schedule.drop_fraction",
                        format!("{drop_fraction} is outside (0, 1)"),
                    ));
                }
                if !(*end_fraction > 0.0 && *end_fraction <= 1.0) {
                    return Err(bad(
                        "pruning.schedule.end_fraction",
                        format!("{end_fraction} is outside (0, 1]"),
                    ));
                }
            }
            Schedule::Iterative { epochs, targets } => {
                if epochs.len() != targets.len() || epochs.is_empty() {
                    return Err(bad(
                        "pruning.schedule.targets",
                        "needs one target per epoch in `epochs`".into(),
                    ));
                }
                for &t in targets {
                    sparsity("pruning.schedule.targets", t)?;
                }
            }
        }
        if let Some(l0) = &self.l0 {
            if !(l0.lambda.is_finite() && l0.lambda > 0.0) {
                return Err(bad(
                    "l0.lambda",
                    format!("{} is not a positive number", l0.lambda),
                ));
            }
            if !(l0.droprate_init > 0.0 && l0.droprate_init < 1.0) {
                return Err(bad(
                    "l0.droprate_init",
                    format!("{} is outside (0, 1)", l0.droprate_init),
                ));
            }
            let (lo, hi) = (
                crate::model::gates::MIN_SCALE,
                crate::model::gates::MAX_SCALE,
            );
            if !(lo..=hi).contains(&l0.gate_lr_scale) {
                return Err(bad(
                    "l0.gate_lr_scale",
                    format!("{} is outside [{lo}, {hi}]", l0.gate_lr_scale),
                ));
            }
            for (name, v) in &l0.layer_scale {
                if !(v.is_finite() && *v >= 0.0) {
                    return Err(bad(
                        &format!("l0.layer_scale.{name}"),
                        format!("{v} is not a non-negative number"),
                    ));
                }
            }
            if l0.finetune_epochs >= self.epochs {
                return Err(bad(
                    "l0.finetune_epochs",
                    format!(
                        "{} leaves no epoch with trainable gates (epochs = {})",
                        l0.finetune_epochs, self.epochs
                    ),
                ));
            }
            if !matches!(self.model, ZooModel::Lenet300 | ZooModel::Lenet5) {
                return Err(bad(
                    "l0",
                    format!(
                        "L0 gates are implemented for lenet300 and lenet5, not {}",
                        self.model.name()
                    ),
                ));
            }
        }
        if let Some(st) = &self.structured {
            st.check(self.model, self.epochs)
                .map_err(|(key, reason)| bad(&key, reason))?;
            if self.l0.is_some() {
                return Err(bad(
                    "structured",
                    "cannot be combined with [l0] (both remove units; pick one)".into(),
                ));
            }
            if !matches!(self.pruning.schedule, Schedule::None) {
                return Err(bad(
                    "structured",
                    "cannot be combined with a weight pruning schedule (the masks would not \
                     survive the change of shapes); prune weights in a second recipe"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    /// Checks that every override names a prunable layer of the model.
    pub fn check_layers(&self, path: &Path, layers: &[String]) -> Result<(), RecipeError> {
        for name in self.pruning.overrides.keys() {
            if !layers.contains(name) {
                return Err(RecipeError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("pruning.overrides.\"{name}\""),
                    reason: format!(
                        "no prunable layer of that name in {} (it has: {})",
                        self.model.name(),
                        layers.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks that every `[structured]` override names a prunable channel group of the model.
    pub fn check_groups(&self, path: &Path, groups: &[String]) -> Result<(), RecipeError> {
        let Some(st) = &self.structured else {
            return Ok(());
        };
        for name in st.overrides.keys() {
            if !groups.contains(name) {
                return Err(RecipeError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("structured.overrides.\"{name}\""),
                    reason: format!(
                        "no prunable channel group of that name in {} (it has: {})",
                        self.model.name(),
                        groups.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
