//! One structured prune event inside training: score, select, shrink, record.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::score::{magnitude_scores, params, Importance, TaylorScores};
use super::select::{select, Selection};
use super::{channel_count, ChannelHistory, LayerKeep, StructuredSpec};
use crate::data::mnist::{Split, PIXELS};
use crate::model::Classifier;

/// What an event did, for the observer.
#[derive(Debug, Clone)]
pub struct ShrinkEvent {
    /// What happened, for people: `structured prune 2 of 3 (33 % removed)`.
    pub label: String,
    pub channels_before: usize,
    pub channels_after: usize,
    pub widths: Vec<usize>,
}

/// First-order Taylor scores from `batches` training batches (in `order`) of `model`, which
/// must be on an autodiff device. No parameter changes.
fn taylor<M: Classifier>(
    model: &M,
    split: &Split,
    order: &[usize],
    batch: usize,
    batches: usize,
    device: &Device,
) -> TaylorScores {
    let groups = model.channel_groups();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut acc = TaylorScores::default();
    for chunk in order.chunks(batch).take(batches) {
        let (images, labels) = split.gather(chunk);
        let b = labels.len();
        let x = Tensor::<2>::from_data(TensorData::new(images, [b, PIXELS]), device);
        let y = Tensor::<1, Int>::from_data(
            TensorData::new(labels.into_iter().map(i32::from).collect::<Vec<_>>(), [b]),
            device,
        );
        let loss = loss_fn.forward(model.forward_train(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), model);
        acc.add(model, &grads, &groups);
    }
    acc
}

/// Data for the `taylor` criterion.
pub struct TaylorData<'a> {
    pub split: &'a Split,
    pub order: &'a [usize],
    pub batch: usize,
    pub device: &'a Device,
}

/// Runs event `k` of `spec` on `model`: the returned model is physically smaller and
/// `history` records the kept channels. Training continues on the returned model with a fresh
/// optimizer (the old state belongs to the removed shapes).
pub fn prune_event<M: Classifier>(
    model: M,
    spec: &StructuredSpec,
    k: usize,
    history: &mut ChannelHistory,
    data: TaylorData,
) -> (M, ShrinkEvent) {
    let groups = model.channel_groups();
    if history.original.is_empty() {
        history.original = groups
            .iter()
            .filter(|g| g.prunable)
            .map(|g| (g.name.clone(), g.width))
            .collect();
    }
    let scores = match spec.criterion {
        Importance::Taylor => {
            taylor(
                &model,
                data.split,
                data.order,
                data.batch,
                spec.taylor_batches,
                data.device,
            )
            .scores
        }
        other => magnitude_scores(&groups, &params(&model), other),
    };
    let ratio = spec.ratio_at(k);
    let progress = (k + 1) as f64 / spec.at_epochs.len() as f64;
    let keep = select(
        &groups,
        &scores,
        &Selection {
            allocation: spec.allocation,
            ratio,
            progress,
            original: &history.original,
            overrides: &spec.overrides,
            min_keep: spec.min_keep,
            residual: spec.residual,
        },
    );
    let small = model.shrink_channels(&LayerKeep::from_groups(&groups, &keep));
    history.events.push(keep);
    let event = ShrinkEvent {
        label: format!(
            "structured prune {} of {} ({:.0} % removed)",
            k + 1,
            spec.at_epochs.len(),
            ratio * 100.0
        ),
        channels_before: channel_count(&groups),
        channels_after: channel_count(&small.channel_groups()),
        widths: small.widths(),
    };
    (small, event)
}

/// `Σ|γ|` over every BatchNorm γ, in the autodiff graph (network slimming).
pub fn gamma_l1<M: Module>(model: &M, device: &Device) -> Tensor<1> {
    crate::trainer::abs_sum(model, device, |path, rank| {
        rank == 1 && path.rsplit('.').next() == Some("gamma")
    })
}
