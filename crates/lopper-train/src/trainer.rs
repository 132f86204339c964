//! The training loop: seeded data order, SGD or Adam, per-epoch evaluation, pruning events from
//! the recipe's schedule with masks enforced on gradients and weights, atomic checkpoints and
//! resume, and a stop with a clear message on a non-finite loss.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint;
use crate::data::mnist::{epoch_order, Dataset, Split, PIXELS};
use crate::model::gates::GateInit;
use crate::model::{floats, Classifier, Lenet300, Lenet5, ResNet, ZooModel};
use crate::prune::masks::{is_prunable, measure_sparsity, prunable_layers, SparsityReport};
use crate::prune::{Masks, PrunePlan};
use crate::recipe::{L0Gates, L0Spec, L0Weighting, OptimizerSpec, Recipe, RecipeError, SparseInit};
use crate::structured::event::{gamma_l1, prune_event, ShrinkEvent, TaylorData};
use crate::structured::{channel_count, ChannelHistory, ReplayError};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TrainError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Replay {
        path: PathBuf,
        #[source]
        source: ReplayError,
    },
    #[error(
        "loss became {loss} at epoch {epoch}, step {step} (learning rate too high?); training stopped. \
         The last good checkpoint is {checkpoint}"
    )]
    NonFiniteLoss {
        loss: f32,
        epoch: usize,
        step: usize,
        checkpoint: String,
    },
    #[error(transparent)]
    Checkpointing(#[from] checkpoint::CheckpointError),
    #[error("step {step}: cannot reset the optimiser state of regrown weights: {message}")]
    RegrowState { step: usize, message: String },
}

/// What one epoch did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub test_accuracy: f64,
    pub sparsity: f64,
    pub seconds: f64,
    pub lr: f64,
    /// With L0 gates: the widths of the network the gates leave; with structured pruning: the
    /// widths after this epoch's events (see [`Classifier::widths`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widths: Option<Vec<usize>>,
}

/// Progress callbacks, so the library stays free of terminal code.
pub trait Observer {
    fn on_start(&mut self, _epochs: usize, _steps_per_epoch: usize, _first_epoch: usize) {}
    fn on_step(&mut self, _epoch: usize, _step_in_epoch: usize, _loss: f32, _sparsity: f64) {}
    fn on_epoch(&mut self, _record: &EpochRecord) {}
    /// The prune after the last epoch (no fine-tuning follows it).
    fn on_final_prune(&mut self, _record: &EpochRecord) {}
    fn on_prune(&mut self, _step: usize, _target: f64) {}
    /// A SET/RigL mask update dropped and regrew `fraction` of each layer's kept weights;
    /// `kept` is the number of weights the masks keep afterwards, `changed` how many entries
    /// changed state.
    fn on_regrow(&mut self, _step: usize, _fraction: f64, _kept: usize, _changed: usize) {}
    /// A structured prune event removed channels physically.
    fn on_shrink(&mut self, _epoch: usize, _event: &ShrinkEvent) {}
}

/// An observer that does nothing.
pub struct Silent;
impl Observer for Silent {}

/// Options beside the recipe.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub out_dir: PathBuf,
    pub recipe_path: PathBuf,
    pub resume: bool,
    /// Evaluate on the first N test examples only (0: all).
    pub test_limit: usize,
    /// Stop after this many epochs of this run (the checkpoint lets `resume` continue), e.g. to
    /// fit a long training into several sessions.
    pub stop_after: Option<usize>,
}

/// The result of a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub history: Vec<EpochRecord>,
    pub test_accuracy: f64,
    pub sparsity: SparsityReportOwned,
    pub params_total: usize,
    pub params_nonzero: usize,
    pub dense_macs: usize,
    /// Layer widths of the network before any unit was removed (input first).
    pub widths: Vec<usize>,
    /// With L0 gates: the shrunk network (units with a zero gate removed, gates folded in);
    /// with structured pruning: the network the prune events left.
    pub shrunk: Option<ShrinkSummary>,
    /// Hidden neurons and channels (the prunable channel groups) before any was removed and
    /// in the network that ships (after an L0 or structured shrink).
    pub channels_before: usize,
    pub channels_after: usize,
    /// With a schedule event after the last epoch: the model pruned then, with no fine-tuning
    /// (its accuracy is `test_accuracy`).
    pub final_prune: Option<EpochRecord>,
    /// The checkpoint's `model.bpk` (in `OUT/checkpoint/`).
    pub checkpoint: PathBuf,
}

/// The physically smaller network an L0 or structured run leaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShrinkSummary {
    pub widths: Vec<usize>,
    pub dense_macs: usize,
    pub params_total: usize,
    /// Test accuracy of the shrunk network itself (for L0 it equals the gated network's up to
    /// rounding).
    pub test_accuracy: f64,
}

/// Serializable copy of [`SparsityReport`].
pub type SparsityReportOwned = SparsityReport;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    next_epoch: usize,
    history: Vec<EpochRecord>,
    prune_events: u64,
    /// Structured prune events so far: resume and export replay them to rebuild the shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channels: Option<ChannelHistory>,
    /// The prune at the step after the last epoch (a one-shot schedule's event at `epochs`):
    /// the trained model pruned with no fine-tuning. Not an epoch, so not in `history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    final_prune: Option<EpochRecord>,
    /// The recipe this run trains (as JSON); resume refuses a different one. Absent in
    /// checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipe: Option<serde_json::Value>,
}

/// burn's flex backend keeps one random generator per process, seeded by `Device::seed`: two
/// trainings (or any random initialisation) running at once in one process would interleave
/// their draws and lose reproducibility. [`train`] holds this guard from seeding to the end;
/// hold it too around other random initialisation in a process that may be training.
pub fn rng_guard() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A poisoned lock only means another holder panicked; the guard protects no data.
    RNG.lock().unwrap_or_else(|p| p.into_inner())
}

/// Trains the recipe's model on `data`. Trainings in one process run one at a time (see
/// [`rng_guard`]), so the same seed gives the same result.
pub fn train(
    recipe: &Recipe,
    data: &Dataset,
    opts: &TrainOptions,
    obs: &mut dyn Observer,
) -> Result<TrainSummary, TrainError> {
    let _rng = rng_guard();
    crate::denormals::flush_denormals();
    let device = Device::flex().autodiff();
    device.seed(recipe.seed);
    let l0 = recipe
        .l0
        .as_ref()
        .map(|l| (l.gates, gate_init(l, &recipe.optimizer)));
    match (recipe.model, l0) {
        (ZooModel::Lenet300, Some((L0Gates::Neurons, p))) => {
            let model = Lenet300::with_l0_gates(&device, p);
            run(model, &device, recipe, data, opts, obs)
        }
        (ZooModel::Lenet300, Some((L0Gates::Weights, p))) => {
            let model = Lenet300::with_l0_weight_gates(&device, p);
            run(model, &device, recipe, data, opts, obs)
        }
        (ZooModel::Lenet5, Some((L0Gates::Neurons, p))) => {
            let model = Lenet5::with_l0_gates(&device, p);
            run(model, &device, recipe, data, opts, obs)
        }
        (ZooModel::Lenet5, Some((L0Gates::Weights, p))) => {
            let model = Lenet5::with_l0_weight_gates(&device, p);
            run(model, &device, recipe, data, opts, obs)
        }
        (ZooModel::Lenet300, None) => run(Lenet300::new(&device), &device, recipe, data, opts, obs),
        (ZooModel::Lenet5, None) => run(Lenet5::new(&device), &device, recipe, data, opts, obs),
        (ZooModel::Resnet8, _) => run(ResNet::new(8, &device), &device, recipe, data, opts, obs),
        (ZooModel::Resnet20, _) => run(ResNet::new(20, &device), &device, recipe, data, opts, obs),
    }
}

/// The gates' initialisation for `l0` trained with `opt`: `gate_lr_scale` k becomes the
/// parametrisation scale s of `log α = s · θ` (see [`crate::model::gates`]). Adam's step on θ
/// does not depend on the gradient's size, so `log α` moves s times as far: s = k. SGD's step on
/// θ is lr · s · ∂L/∂log α, so `log α` moves s² times as far: s = √k.
fn gate_init(l0: &L0Spec, opt: &OptimizerSpec) -> GateInit {
    let k = l0.gate_lr_scale;
    GateInit {
        droprate: l0.droprate_init,
        param_scale: match opt {
            OptimizerSpec::Adam { .. } => k,
            OptimizerSpec::Sgd { .. } => k.sqrt(),
        },
    }
}

fn optimizer(spec: &OptimizerSpec) -> burn::optim::ModuleOptimizer {
    match spec {
        OptimizerSpec::Sgd {
            momentum,
            nesterov,
            weight_decay,
            ..
        } => {
            let mut c = SgdConfig::new().with_momentum(Some(MomentumConfig {
                momentum: *momentum,
                dampening: 0.0,
                nesterov: *nesterov,
            }));
            if *weight_decay > 0.0 {
                c = c.with_weight_decay(Some(WeightDecayConfig::new(*weight_decay as f32)));
            }
            c.init()
        }
        OptimizerSpec::Adam { weight_decay, .. } => {
            let mut c = AdamConfig::new().with_epsilon(1e-8);
            if *weight_decay > 0.0 {
                c = c.with_weight_decay(Some(WeightDecayConfig::new(*weight_decay as f32)));
            }
            c.init()
        }
    }
}

fn run<M: Classifier>(
    mut model: M,
    device: &Device,
    recipe: &Recipe,
    data: &Dataset,
    opts: &TrainOptions,
    obs: &mut dyn Observer,
) -> Result<TrainSummary, TrainError> {
    let layer_names: Vec<String> = prunable_layers(&model)
        .into_iter()
        .map(|l| l.path)
        .collect();
    recipe.check_layers(&opts.recipe_path, &layer_names)?;
    let groups_before = model.channel_groups();
    let group_names: Vec<String> = groups_before
        .iter()
        .filter(|g| g.prunable)
        .map(|g| g.name.clone())
        .collect();
    recipe.check_groups(&opts.recipe_path, &group_names)?;
    if let Some(l0) = &recipe.l0 {
        let gated: Vec<String> = model
            .valid()
            .l0_terms(false)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if let Some(name) = l0.layer_scale.keys().find(|n| !gated.contains(n)) {
            return Err(RecipeError::Invalid {
                path: opts.recipe_path.clone(),
                key: format!("l0.layer_scale.{name}"),
                reason: format!("no gated layer of that name (it has: {})", gated.join(", ")),
            }
            .into());
        }
    }
    // The full-size network, before any unit is removed (an L0 model's gates only hide units).
    let widths_before = model.widths();
    let macs_before = model.dense_macs();
    let channels_before = channel_count(&groups_before);
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| TrainError::Io {
        path: opts.out_dir.clone(),
        source,
    })?;
    let train_split = if recipe.train_limit > 0 {
        data.train.take(recipe.train_limit)
    } else {
        data.train.clone()
    };
    let test_split = if opts.test_limit > 0 {
        data.test.take(opts.test_limit)
    } else {
        data.test.clone()
    };
    let mut optim = optimizer(&recipe.optimizer);
    let plan = PrunePlan {
        criterion: recipe.pruning.criterion,
        allocation: recipe.pruning.allocation,
        min_density: recipe.pruning.min_density,
        overrides: recipe.pruning.overrides.clone(),
        seed: recipe.seed,
        pattern: recipe.pruning.nm_pattern(),
        block: recipe.pruning.block_pattern(),
    };
    let schedule = &recipe.pruning.schedule;
    let final_target = schedule.final_target();
    let mut masks = Masks::new();
    let recipe_json = serde_json::to_value(recipe).map_err(|e| TrainError::Checkpoint {
        path: opts.recipe_path.clone(),
        message: format!("cannot record the recipe: {e}"),
    })?;
    let mut state = State {
        next_epoch: 0,
        history: Vec::new(),
        prune_events: 0,
        channels: None,
        final_prune: None,
        recipe: Some(recipe_json.clone()),
    };
    let ckpt = opts
        .out_dir
        .join(checkpoint::DIR)
        .join(checkpoint::MODEL_FILE);
    if opts.resume {
        if let Some(paths) = checkpoint::locate(&opts.out_dir) {
            (model, optim, masks, state) = resume(model, optim, &paths, recipe, &recipe_json)?;
        }
    }
    let batch = recipe.batch_size;
    let spe = train_split.len().div_ceil(batch).max(1);
    let total_steps = spe * recipe.epochs;
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    obs.on_start(recipe.epochs, spe, state.next_epoch);
    let last_epoch = match opts.stop_after {
        Some(n) => (state.next_epoch + n).min(recipe.epochs),
        None => recipe.epochs,
    };
    for epoch in state.next_epoch..last_epoch {
        let started = Instant::now();
        let order = epoch_order(train_split.len(), recipe.seed, epoch);
        let mut loss_sum = 0.0f64;
        let mut lr = 0.0;
        // L0: gates train (sampled, penalised) until the last `finetune_epochs` epochs, which
        // freeze them at their deterministic values with no penalty.
        let l0_this_epoch = recipe
            .l0
            .as_ref()
            .filter(|l| epoch + l.finetune_epochs < recipe.epochs);
        let gates_frozen = recipe.l0.is_some() && l0_this_epoch.is_none();
        if gates_frozen && model.expected_l0().is_some() {
            // Fine-tuning starts: fold the deterministic gates into the weights and train the
            // network they leave as a plain one. Kept under their gates, units with a small gate
            // value learn slowly (their updates are scaled by it): measured, LeNet-300 L0 runs
            // plateaued at a training loss twice the dense one.
            let keep = model.gate_keep();
            let before = channel_count(&model.channel_groups());
            model = model.shrunk();
            let history = state.channels.get_or_insert_with(ChannelHistory::default);
            history.events.push(keep);
            if recipe
                .l0
                .as_ref()
                .is_some_and(|l| l.gates == L0Gates::Weights)
            {
                // Per-weight gates leave zeros in the weights: keep them zero from here on.
                masks = Masks::from_zeros(&model);
                state.prune_events += 1;
            }
            optim = optimizer(&recipe.optimizer);
            let event = ShrinkEvent {
                label: "L0 gates folded into the weights for fine-tuning".into(),
                channels_before: before,
                channels_after: channel_count(&model.channel_groups()),
                widths: model.widths(),
            };
            obs.on_shrink(epoch, &event);
        }
        let mut slimming = 0.0;
        if let Some(st) = &recipe.structured {
            let done = state.channels.as_ref().map_or(0, |h| h.events.len());
            if let Some(k) = st.at_epochs.iter().position(|&e| e == epoch) {
                if k >= done {
                    let history = state.channels.get_or_insert_with(ChannelHistory::default);
                    let data = TaylorData {
                        split: &train_split,
                        order: &order,
                        batch,
                        device,
                    };
                    let event;
                    (model, event) = prune_event(model, st, k, history, data);
                    // The optimizer's state belongs to the removed shapes: start it afresh.
                    optim = optimizer(&recipe.optimizer);
                    obs.on_shrink(epoch, &event);
                }
            }
            if st.at_epochs.last().is_some_and(|&last| epoch < last) {
                slimming = st.slimming;
            }
        }
        for (bi, chunk) in order.chunks(batch).enumerate() {
            let step = epoch * spe + bi;
            if let Some(target) = schedule.target_at(step, spe) {
                let layers = prunable_layers(&model);
                masks = plan.masks(&layers, &masks, target, final_target, state.prune_events);
                model = masks.apply(model);
                if step == 0 && recipe.pruning.sparse_init == SparseInit::FanIn {
                    model = masks.scale_to_fan_in(model);
                }
                state.prune_events += 1;
                obs.on_prune(step, target);
            }
            let (images, labels) = train_split.gather(chunk);
            let (x, y) = batch_tensors(images, labels, device);
            let logits = if gates_frozen {
                model.forward(x)
            } else {
                model.forward_train(x)
            };
            let mut loss = loss_fn.forward(logits, y);
            if recipe.regularization.l1 > 0.0 {
                loss = loss + abs_sum(&model, device, is_prunable) * recipe.regularization.l1;
            }
            if slimming > 0.0 {
                loss = loss + gamma_l1(&model, device) * slimming;
            }
            // Only while the gates train: a penalty graph that no backward pass consumes would
            // pile up in burn's autodiff bookkeeping.
            if let Some(l0) = l0_this_epoch {
                let per_unit = l0.weighting == L0Weighting::Units;
                let scale = l0.lambda / train_split.len() as f64;
                for (name, term) in model.l0_terms(per_unit) {
                    let m = l0.layer_scale.get(&name).copied().unwrap_or(1.0);
                    loss = loss + term * (scale * m);
                }
            }
            let loss_value: f32 = loss.clone().into_scalar::<f32>();
            if !loss_value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    loss: loss_value,
                    epoch,
                    step,
                    checkpoint: if checkpoint::locate(&opts.out_dir).is_some() {
                        ckpt.display().to_string()
                    } else {
                        "none (no epoch finished yet)".into()
                    },
                });
            }
            loss_sum += loss_value as f64;
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            if let Some((fraction, grow)) = schedule.dynamic_update(step, total_steps) {
                // SET / RigL: drop and regrow before the gradients are masked, so RigL sees the
                // dense gradient and regrown weights get this step's update.
                let updated = crate::prune::dynamic::update(
                    &model,
                    &grads,
                    &masks,
                    fraction,
                    grow,
                    recipe.seed,
                    step,
                );
                let (kept, changed) = updated.compare(&masks);
                if recipe.pruning.reset_regrown {
                    let layers = prunable_layers(&model);
                    let (o, r) =
                        crate::prune::regrow_state::reset_grown(optim, &layers, &masks, &updated);
                    optim = o;
                    r.map_err(|message| TrainError::RegrowState { step, message })?;
                }
                masks = updated;
                model = masks.apply(model);
                obs.on_regrow(step, fraction, kept, changed);
            }
            masks.mask_grads(&model, &mut grads);
            lr = recipe
                .lr_schedule
                .lr(recipe.optimizer.lr(), step, total_steps, spe);
            model = optim.step(lr, model, grads);
            model = masks.apply(model);
            obs.on_step(epoch, bi, loss_value, 0.0);
        }
        let accuracy = evaluate(&model, &test_split);
        // The network that ships: with L0 gates the one they leave (their zeros live in the
        // gates), built once for the sparsity and the widths.
        let folded = recipe.l0.is_some().then(|| model.valid().shrunk());
        let shipped = folded.as_ref().unwrap_or(&model);
        let sparsity = measure_sparsity(shipped).sparsity;
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / spe as f64,
            test_accuracy: accuracy,
            sparsity,
            seconds: started.elapsed().as_secs_f64(),
            lr,
            widths: (recipe.l0.is_some() || recipe.structured.is_some()).then(|| shipped.widths()),
        };
        obs.on_epoch(&record);
        state.history.push(record);
        state.next_epoch = epoch + 1;
        save_checkpoint(&model, &optim, &state, &opts.out_dir)?;
    }
    let already_done = state.final_prune.is_some();
    if state.next_epoch == recipe.epochs && !already_done {
        // A schedule event at the step after the last one prunes the trained model with no
        // fine-tuning (one-shot at `epoch = epochs`): the control that shows what fine-tuning buys.
        // The pruned model is checkpointed, so exports see it; a resumed run does not prune twice.
        // A periodic schedule whose last event falls there after reaching its target would
        // change nothing, and is not recorded as an extra epoch.
        let end_event = schedule
            .target_at(recipe.epochs * spe, spe)
            .and_then(|target| {
                let layers = prunable_layers(&model);
                let updated = plan.masks(&layers, &masks, target, final_target, state.prune_events);
                let (_, changed) = updated.compare(&masks);
                (masks.is_empty() || changed > 0).then_some((target, updated))
            });
        if let Some((target, updated)) = end_event {
            masks = updated;
            model = masks.apply(model);
            obs.on_prune(recipe.epochs * spe, target);
            let last_loss = state.history.last().map_or(0.0, |r| r.train_loss);
            let record = EpochRecord {
                epoch: recipe.epochs,
                train_loss: last_loss,
                test_accuracy: evaluate(&model, &test_split),
                sparsity: measure_sparsity(&model).sparsity,
                seconds: 0.0,
                lr: 0.0,
                widths: None,
            };
            obs.on_final_prune(&record);
            state.final_prune = Some(record);
            save_checkpoint(&model, &optim, &state, &opts.out_dir)?;
        }
    }
    let folded = recipe.l0.is_some().then(|| model.valid().shrunk());
    let shipped = folded.as_ref().unwrap_or(&model);
    let sparsity = measure_sparsity(shipped);
    let (params_total, params_nonzero) = count_params(&model);
    let shrunk = (recipe.l0.is_some() || recipe.structured.is_some()).then(|| ShrinkSummary {
        widths: shipped.widths(),
        dense_macs: shipped.dense_macs(),
        params_total: count_params(shipped).0,
        test_accuracy: evaluate(shipped, &test_split),
    });
    let channels_after = channel_count(&shipped.channel_groups());
    Ok(TrainSummary {
        test_accuracy: state
            .final_prune
            .as_ref()
            .or(state.history.last())
            .map_or_else(|| evaluate(&model, &test_split), |r| r.test_accuracy),
        history: state.history,
        final_prune: state.final_prune,
        sparsity,
        params_total,
        params_nonzero,
        dense_macs: macs_before,
        widths: widths_before,
        shrunk,
        channels_before,
        channels_after,
        checkpoint: ckpt,
    })
}

fn batch_tensors(
    images: Vec<f32>,
    labels: Vec<u8>,
    device: &Device,
) -> (Tensor<2>, Tensor<1, Int>) {
    let b = labels.len();
    let x = Tensor::<2>::from_data(TensorData::new(images, [b, PIXELS]), device);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new(labels.into_iter().map(i32::from).collect::<Vec<_>>(), [b]),
        device,
    );
    (x, y)
}

/// `Σ|p|` over the float parameters whose path and rank `keep` accepts, as a one-element tensor
/// in the autodiff graph: the L1 penalty (prunable weights) and network slimming (BatchNorm γ).
pub(crate) fn abs_sum<M: Module>(
    model: &M,
    device: &Device,
    keep: impl Fn(&str, usize) -> bool,
) -> Tensor<1> {
    struct Sum<F> {
        path: Vec<String>,
        keep: F,
        sum: Option<Tensor<1>>,
    }
    impl<F: Fn(&str, usize) -> bool> ModuleVisitor for Sum<F> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if (self.keep)(&self.path.join("."), D) {
                let s = param.val().abs().sum();
                self.sum = Some(match self.sum.take() {
                    Some(acc) => acc + s,
                    None => s,
                });
            }
        }
    }
    let mut v = Sum {
        path: Vec::new(),
        keep,
        sum: None,
    };
    model.visit(&mut v);
    v.sum.unwrap_or_else(|| Tensor::<1>::zeros([1], device))
}

/// Test accuracy in `[0, 1]`, evaluated without autodiff in batches of 1000.
pub fn evaluate<M: Classifier>(model: &M, split: &Split) -> f64 {
    let model = model.valid();
    let device = Device::flex();
    let mut correct = 0usize;
    let idx: Vec<usize> = (0..split.len()).collect();
    for chunk in idx.chunks(1000) {
        let (images, labels) = split.gather(chunk);
        let b = labels.len();
        let x = Tensor::<2>::from_data(TensorData::new(images, [b, PIXELS]), &device);
        let logits = floats(model.forward(x));
        for (row, &label) in logits.chunks(10).zip(&labels) {
            let pred = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            correct += usize::from(pred == label as usize);
        }
    }
    correct as f64 / split.len().max(1) as f64
}

/// All float parameters and how many of them are nonzero.
pub fn count_params<M: Module>(model: &M) -> (usize, usize) {
    struct Count {
        total: usize,
        nonzero: usize,
    }
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = floats(param.val());
            self.total += v.len();
            self.nonzero += v.iter().filter(|x| **x != 0.0).count();
        }
    }
    let mut c = Count {
        total: 0,
        nonzero: 0,
    };
    model.visit(&mut c);
    (c.total, c.nonzero)
}

/// Writes model, optimizer and loop state as one checkpoint (see [`checkpoint`]).
fn save_checkpoint<M: Module>(
    model: &M,
    optim: &burn::optim::ModuleOptimizer,
    state: &State,
    dir: &Path,
) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::Checkpoint {
        path: dir.join(checkpoint::STATE_FILE),
        message: e.to_string(),
    })?;
    checkpoint::save(
        dir,
        |p| model.clone().save_file(p).map_err(|e| e.to_string()),
        |p| optim.save(p).map_err(|e| e.to_string()),
        &json,
    )?;
    Ok(())
}

/// Restores model, optimizer state, masks (the zero pattern of the prunable weights) and loop
/// state from a checkpoint, after checking that its parts belong together and that it was
/// trained with this recipe.
fn resume<M: Classifier>(
    model: M,
    optim: burn::optim::ModuleOptimizer,
    paths: &checkpoint::Paths,
    recipe: &Recipe,
    recipe_json: &serde_json::Value,
) -> Result<(M, burn::optim::ModuleOptimizer, Masks, State), TrainError> {
    let err = |path: &Path, message: String| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    checkpoint::verify(paths)?;
    let state_path = &paths.state;
    let text = std::fs::read_to_string(state_path).map_err(|source| TrainError::Io {
        path: state_path.clone(),
        source,
    })?;
    let state: State = serde_json::from_str(&text)
        .map_err(|e| err(state_path, format!("not a lopper training state: {e}")))?;
    if let Some(saved) = &state.recipe {
        if let Some((field, was, now)) = checkpoint::first_difference(saved, recipe_json) {
            let show = |v: &serde_json::Value| {
                if v.is_null() {
                    "(unset)".to_string()
                } else {
                    lopper_model::limits::clip(&v.to_string(), 80)
                }
            };
            return Err(err(
                state_path,
                format!(
                    "was trained with a different recipe: field '{field}' is {} in the checkpoint \
                     and {} in this recipe; resume with the recipe it was trained with, or start \
                     a new run in another folder",
                    show(was),
                    show(now)
                ),
            ));
        }
    }
    if state.next_epoch > recipe.epochs {
        return Err(err(
            state_path,
            format!(
                "next_epoch is {} but the recipe has {} epochs: the checkpoint is past the end of \
                 this recipe",
                state.next_epoch, recipe.epochs
            ),
        ));
    }
    // A structurally pruned checkpoint has smaller shapes than the fresh model.
    let model = match &state.channels {
        Some(h) => h.replay(model).map_err(|source| TrainError::Replay {
            path: state_path.clone(),
            source,
        })?,
        None => model,
    };
    let model = model
        .try_load_file(&paths.model)
        .map_err(|e| err(&paths.model, e.to_string()))?;
    let optim = optim
        .load(&paths.optim)
        .map_err(|e| err(&paths.optim, e.to_string()))?;
    let masks = if state.prune_events > 0 {
        Masks::from_zeros(&model)
    } else {
        Masks::new()
    };
    Ok((model, optim, masks, state))
}
