//! Exported zoo models give the same outputs through the lopper runtime as the burn models they
//! came from (eval mode: BatchNorm folded with non-trivial running statistics), for every zoo
//! model, with masks applied, in sparse storage and at batch 1 and 4.

mod common;
use common::{burn_logits, input, lop_logits, max_rel_err, meta};

use burn::tensor::{Device, Tensor, TensorData};
use lopper_kernels::Dtype;
use lopper_model::runtime::plan::PlanMode;
use lopper_model::StorageChoice;
use lopper_train::export::Export;
use lopper_train::model::{Classifier, Lenet300, Lenet5, ResNet};
use lopper_train::prune::masks::prunable_layers;
use lopper_train::prune::Masks;
use rand::{Rng, SeedableRng};

/// Prunes 70 % of every prunable weight at random, runs a few training-mode forwards so
/// BatchNorm running statistics move away from (0, 1), then checks the export.
fn check<M: Classifier + Export>(model: M, what: &str) {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut masks = Masks::new();
    for l in prunable_layers(&model) {
        masks.insert(
            l.path.clone(),
            (0..l.values.len()).map(|_| r.gen_bool(0.3)).collect(),
        );
    }
    let model = masks.apply(model);
    let dev = Device::flex().autodiff();
    for s in 0..3 {
        let x = Tensor::<2>::from_data(TensorData::new(input(100 + s, 8), [8, 784]), &dev);
        let _ = model.forward(x);
    }
    let model = model.valid();
    let exported = model.export(&meta(what)).unwrap();
    let (total, nonzero, _) = exported.weight_stats();
    assert!(
        nonzero < total / 2,
        "{what}: masks survive export ({nonzero}/{total})"
    );
    for (storage, dtype) in [
        (StorageChoice::Auto, Dtype::F32),
        (StorageChoice::Csr, Dtype::F32),
    ] {
        let m = exported.reencoded(storage, dtype).unwrap();
        let m = lopper_model::Model::from_bytes(&m.to_bytes().unwrap()).unwrap();
        for batch in [1, 4] {
            let x = input(7, batch);
            let want = burn_logits(&model, &x, batch);
            let got = lop_logits(&m, &x, batch, PlanMode::Measured);
            let err = max_rel_err(&got, &want);
            assert!(
                err < 1e-4,
                "{what} {storage:?} batch {batch}: relative error {err}"
            );
        }
    }
}

#[test]
fn lenet300_export_matches_burn() {
    check(Lenet300::new(&Device::flex().autodiff()), "lenet300");
}

#[test]
fn lenet5_export_matches_burn() {
    check(Lenet5::new(&Device::flex().autodiff()), "lenet5");
}

#[test]
fn resnet8_export_matches_burn_with_folded_batchnorm() {
    let m = ResNet::new(8, &Device::flex().autodiff());
    let x = Tensor::<2>::from_data(
        TensorData::new(input(1, 8), [8, 784]),
        &Device::flex().autodiff(),
    );
    let _ = m.forward(x);
    let var =
        m.bn.running_var
            .value_sync()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
    assert!(
        var.iter().any(|v| (v - 1.0).abs() > 1e-3),
        "running statistics did not move"
    );
    check(m, "resnet8");
}

#[test]
fn resnet20_export_matches_burn() {
    check(ResNet::new(20, &Device::flex().autodiff()), "resnet20");
}
