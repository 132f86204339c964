//! Sensitivity analysis: prune one layer at a time of a trained model, by magnitude and without
//! fine-tuning, at several sparsities, and measure test accuracy. Layers whose accuracy holds at
//! high sparsity can take a high per-layer target in a recipe's `overrides`.

use std::path::Path;

use burn::tensor::Device;
use serde::Serialize;

use crate::data::mnist::Split;
use crate::model::{Classifier, Lenet300, Lenet5, ResNet, ZooModel};
use crate::prune::masks::prunable_layers;
use crate::prune::{Allocation, Criterion, Masks, PrunePlan};
use crate::structured::ChannelHistory;
use crate::trainer::{evaluate, TrainError};

/// Accuracy of the model with one layer pruned.
#[derive(Debug, Clone, Serialize)]
pub struct SensitivityRow {
    pub layer: String,
    pub weights: usize,
    pub sparsity: f64,
    pub test_accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sensitivity {
    pub model: String,
    pub checkpoint: String,
    /// Accuracy of the checkpoint as loaded (its own zeros kept).
    pub baseline_accuracy: f64,
    pub rows: Vec<SensitivityRow>,
}

/// Runs the analysis on the checkpoint of the training folder `dir`.
pub fn sensitivity(
    model: ZooModel,
    dir: &Path,
    test: &Split,
    sparsities: &[f64],
) -> Result<Sensitivity, TrainError> {
    let device = Device::flex();
    // The random initialisation before loading must not interleave with a training's draws.
    let _rng = crate::trainer::rng_guard();
    match model {
        ZooModel::Lenet300 => run(Lenet300::new(&device), model, dir, test, sparsities),
        ZooModel::Lenet5 => run(Lenet5::new(&device), model, dir, test, sparsities),
        ZooModel::Resnet8 => run(ResNet::new(8, &device), model, dir, test, sparsities),
        ZooModel::Resnet20 => run(ResNet::new(20, &device), model, dir, test, sparsities),
    }
}

fn run<M: Classifier>(
    fresh: M,
    kind: ZooModel,
    dir: &Path,
    test: &Split,
    sparsities: &[f64],
) -> Result<Sensitivity, TrainError> {
    let paths = crate::checkpoint::open(dir)?;
    let path = paths.model.clone();
    // A structurally pruned (or L0-folded) checkpoint has the shapes its recorded events leave.
    let fresh = ChannelHistory::template_for(&paths.dir, fresh).map_err(|message| {
        TrainError::Checkpoint {
            path: paths.state.clone(),
            message,
        }
    })?;
    let model = fresh
        .try_load_file(&path)
        .map_err(|e| TrainError::Checkpoint {
            path: path.clone(),
            message: format!("cannot load a {} checkpoint: {e}", kind.name()),
        })?;
    let baseline_accuracy = evaluate(&model, test);
    let layers = prunable_layers(&model);
    let plan = PrunePlan {
        criterion: Criterion::Magnitude,
        allocation: Allocation::Layerwise,
        min_density: 0.0,
        overrides: Default::default(),
        seed: 0,
        pattern: None,
        block: None,
    };
    let mut rows = Vec::new();
    for layer in &layers {
        for &s in sparsities {
            let mut masks = plan.masks(std::slice::from_ref(layer), &Masks::new(), s, s, 0);
            let pruned = masks.apply(model.clone());
            rows.push(SensitivityRow {
                layer: layer.path.clone(),
                weights: layer.values.len(),
                sparsity: s,
                test_accuracy: evaluate(&pruned, test),
            });
        }
    }
    Ok(Sensitivity {
        model: kind.name().into(),
        checkpoint: path.display().to_string(),
        baseline_accuracy,
        rows,
    })
}
