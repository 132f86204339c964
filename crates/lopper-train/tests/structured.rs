//! Structured pruning: the dependency graph of the ResNet (residual groups), shrink equivalence
//! for channels whose output is already zero (burn and the exported `.lop`), replay of recorded
//! events, and short real-data runs that shrink LeNet-300-100 and ResNet-8 while they train.
//! The real-data tests need Fashion-MNIST (see tests/training.rs).

mod common;
use common::{burn_logits, input, lop_logits, max_rel_err, meta};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor, TensorData};
use lopper_model::runtime::plan::PlanMode;
use lopper_train::data::mnist;
use lopper_train::export::Export;
use lopper_train::model::{floats, Classifier, Lenet300, Lenet5, ResNet, ZooModel};
use lopper_train::structured::score::params;
use lopper_train::structured::{ChannelHistory, ChannelKeep, Group};
use lopper_train::trainer::{train, Silent, TrainOptions};
use lopper_train::Recipe;

fn names(v: &[String]) -> BTreeSet<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn resnet20_groups_follow_blocks_and_residual_adds() {
    let m = ResNet::new(20, &Device::flex());
    let groups = m.channel_groups();
    let residual: Vec<&Group> = groups.iter().filter(|g| g.residual).collect();
    let inner: Vec<&Group> = groups
        .iter()
        .filter(|g| !g.residual && g.prunable)
        .collect();
    assert_eq!(residual.len(), 3, "one residual group per stage");
    assert_eq!(inner.len(), 9, "one inner group per block");
    assert_eq!(groups.len(), 13, "plus the logits");
    assert!(!groups.last().unwrap().prunable);
    // Stage 1: the stem and every conv2 of blocks 0-2 write one channel set; blocks 0-2 read it
    // through conv1, and stage 2's first block through conv1 and the projection.
    let s1 = residual[0];
    assert_eq!(s1.name, "residual:stem");
    assert_eq!(s1.width, 16);
    assert_eq!(
        names(&s1.producers),
        BTreeSet::from(["stem", "blocks.0.conv2", "blocks.1.conv2", "blocks.2.conv2"])
    );
    assert_eq!(
        names(&s1.norms),
        BTreeSet::from(["bn", "blocks.0.bn2", "blocks.1.bn2", "blocks.2.bn2"])
    );
    let readers: BTreeSet<&str> = s1.consumers.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        readers,
        BTreeSet::from([
            "blocks.0.conv1",
            "blocks.1.conv1",
            "blocks.2.conv1",
            "blocks.3.conv1",
            "blocks.3.shortcut.conv"
        ])
    );
    // Stage 2 starts at the projection shortcut; stage 3's channels feed the classifier.
    assert_eq!(
        names(&residual[1].producers),
        BTreeSet::from([
            "blocks.3.conv2",
            "blocks.3.shortcut.conv",
            "blocks.4.conv2",
            "blocks.5.conv2"
        ])
    );
    assert!(residual[2]
        .consumers
        .iter()
        .any(|(p, per)| p == "fc" && *per == 1));
    assert_eq!(residual[2].width, 64);
    let b4 = groups.iter().find(|g| g.name == "blocks.4.conv1").unwrap();
    assert_eq!(names(&b4.norms), BTreeSet::from(["blocks.4.bn1"]));
    assert_eq!(b4.consumers, vec![("blocks.4.conv2".to_string(), 1)]);
    // Every member names real parameters of the burn module.
    let table = params(&m);
    for g in &groups {
        for p in g.producers.iter().chain(g.consumers.iter().map(|(p, _)| p)) {
            assert!(table.contains_key(&format!("{p}.weight")), "{p}");
        }
        for n in &g.norms {
            assert!(table.contains_key(&format!("{n}.gamma")), "{n}");
        }
    }
}

/// Zeroes, for every listed group, the given channels in all the group's producers (weights,
/// biases) and BatchNorms (γ, β): those channels then output exactly zero.
struct ZeroChannels<'a> {
    path: Vec<String>,
    groups: &'a [Group],
    zero: &'a ChannelKeep,
}

impl ModuleMapper for ZeroChannels<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let full = self.path.join(".");
        let Some((layer, field)) = full.rsplit_once('.') else {
            return param;
        };
        let hit = self.groups.iter().find(|g| {
            (matches!(field, "weight" | "bias") && g.producers.iter().any(|p| p == layer))
                || (matches!(field, "gamma" | "beta") && g.norms.iter().any(|n| n == layer))
        });
        let Some(chans) = hit.and_then(|g| self.zero.get(&g.name)) else {
            return param;
        };
        param.map(|t| {
            let dims = t.dims();
            let mut v = floats(t.clone());
            for &c in chans {
                match D {
                    // Linear [in, out]: column c.
                    2 => (0..dims[0]).for_each(|i| v[i * dims[1] + c] = 0.0),
                    1 => v[c] = 0.0,
                    _ => {
                        let per: usize = dims[1..].iter().product();
                        v[c * per..(c + 1) * per].fill(0.0);
                    }
                }
            }
            Tensor::<D>::from_data(TensorData::new(v, dims), &t.device())
        })
    }
}

/// For every prunable group, a third of its channels (at least one, never all).
fn thirds(groups: &[Group]) -> (ChannelKeep, ChannelKeep) {
    let mut zero = ChannelKeep::new();
    let mut keep = ChannelKeep::new();
    for g in groups.iter().filter(|g| g.prunable) {
        let z: Vec<usize> = (0..g.width).filter(|c| c % 3 == 1).collect();
        keep.insert(
            g.name.clone(),
            (0..g.width).filter(|c| c % 3 != 1).collect(),
        );
        zero.insert(g.name.clone(), z);
    }
    (zero, keep)
}

fn check_zero_channel_shrink<M: Classifier + Export>(model: M, what: &str) {
    let groups = model.channel_groups();
    let (zero, keep) = thirds(&groups);
    let zeroed = model.clone().map(&mut ZeroChannels {
        path: Vec::new(),
        groups: &groups,
        zero: &zero,
    });
    let small = lopper_train::structured::prune_channels(&zeroed, &keep);
    let before: usize = groups.iter().filter(|g| g.prunable).map(|g| g.width).sum();
    let after: usize = lopper_train::structured::channel_count(&small.channel_groups());
    assert!(after < before, "{what}: {after} of {before} channels");
    assert!(small.dense_macs() < model.dense_macs(), "{what}");
    let exported = small.export(&meta(what)).unwrap();
    assert_eq!(exported.macs().0, small.dense_macs(), "{what}");
    for batch in [1, 4] {
        let x = input(21 + batch as u64, batch);
        let want = burn_logits(&zeroed, &x, batch);
        let e = max_rel_err(&burn_logits(&small, &x, batch), &want);
        assert!(e < 1e-5, "{what} batch {batch}: burn shrink error {e}");
        let got = lop_logits(&exported, &x, batch, PlanMode::Stored);
        let e = max_rel_err(&got, &want);
        assert!(e < 1e-4, "{what} batch {batch}: exported error {e}");
        // The check has teeth: removing the same channels without zeroing them first changes
        // the outputs.
        let unzeroed = lopper_train::structured::prune_channels(&model, &keep);
        let e = max_rel_err(
            &burn_logits(&unzeroed, &x, batch),
            &burn_logits(&model, &x, batch),
        );
        assert!(
            e > 1e-4,
            "{what}: removing live channels changed nothing ({e})"
        );
    }
}

/// A ResNet whose BatchNorm running statistics are not the identity: a few training-mode
/// forward passes on an autodiff device update them.
fn resnet_with_statistics(depth: usize) -> ResNet {
    let device = Device::flex().autodiff();
    let m = ResNet::new(depth, &device);
    for s in 0..3 {
        let x = Tensor::<2>::from_data(TensorData::new(input(s, 16), [16, 784]), &device);
        let _ = m.forward(x);
    }
    let m = m.valid();
    let mean = floats(m.blocks[1].bn1.running_mean.value());
    assert!(
        mean.iter().any(|v| *v != 0.0),
        "running statistics never moved"
    );
    m
}

#[test]
fn shrinking_zeroed_channels_keeps_resnet20_outputs() {
    check_zero_channel_shrink(resnet_with_statistics(20), "resnet20");
}

#[test]
fn shrinking_zeroed_channels_keeps_lenet_outputs() {
    let device = Device::flex();
    check_zero_channel_shrink(Lenet300::new(&device), "lenet300");
    check_zero_channel_shrink(Lenet5::new(&device), "lenet5");
}

#[test]
fn replay_rebuilds_shapes_and_refuses_bad_events() {
    let device = Device::flex();
    let m = ResNet::new(8, &device);
    let (_, keep) = thirds(&m.channel_groups());
    let direct = lopper_train::structured::prune_channels(&m, &keep);
    let h = ChannelHistory {
        original: Default::default(),
        events: vec![keep.clone()],
    };
    assert_eq!(h.replay(m.clone()).unwrap().widths(), direct.widths());
    let mut bad = keep.clone();
    bad.insert("blocks.0.conv1".into(), vec![0, 99]);
    let e = ChannelHistory {
        original: Default::default(),
        events: vec![bad],
    }
    .replay(m.clone())
    .unwrap_err();
    assert!(
        e.to_string().contains("outside the group's 16 channels"),
        "{e}"
    );
    let mut unknown = ChannelKeep::new();
    unknown.insert("fc".into(), vec![0]);
    let e = ChannelHistory {
        original: Default::default(),
        events: vec![unknown],
    }
    .replay(m)
    .unwrap_err();
    assert!(e.to_string().contains("group 'fc'"), "{e}");
}

fn run(recipe_text: &str, tag: &str) -> (lopper_train::TrainSummary, PathBuf) {
    let dir = mnist::locate(None).unwrap_or_else(|e| panic!("{e}"));
    let data = mnist::load(&dir).unwrap();
    let recipe = Recipe::parse(Path::new("s.toml"), recipe_text).unwrap();
    let out = std::env::temp_dir().join(format!("lopper-structured-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let opts = TrainOptions {
        out_dir: out.clone(),
        recipe_path: PathBuf::from("s.toml"),
        resume: false,
        test_limit: 1000,
        stop_after: None,
    };
    (train(&recipe, &data, &opts, &mut Silent).unwrap(), out)
}

fn export(zoo: ZooModel, s: &lopper_train::TrainSummary) -> lopper_model::Model {
    lopper_train::export::export_checkpoint(zoo, &s.checkpoint, &meta("s")).unwrap()
}

#[test]
fn lenet300_shrinks_in_two_events_and_exports_the_small_net() {
    let (s, out) = run(
        "model = \"lenet300\"\nepochs = 3\ntrain_limit = 6000\n[structured]\ncriterion = \"l1\"\ntarget = 0.5\nat_epochs = [1, 2]\n",
        "lenet300",
    );
    let k = s
        .shrunk
        .as_ref()
        .expect("structured runs report the shrunk net");
    assert_eq!(s.widths, vec![784, 300, 100, 10]);
    assert_eq!(k.widths, vec![784, 150, 50, 10]);
    assert_eq!((s.channels_before, s.channels_after), (400, 200));
    // Epoch 2 ran after the first event (25 % removed), epoch 3 after the second.
    assert_eq!(
        s.history[0].widths.as_deref(),
        Some(&[784, 300, 100, 10][..])
    );
    assert_eq!(
        s.history[1].widths.as_deref(),
        Some(&[784, 225, 75, 10][..])
    );
    assert!(k.test_accuracy > 0.7, "accuracy {}", k.test_accuracy);
    let model = export(ZooModel::Lenet300, &s);
    assert_eq!(model.macs().0, k.dense_macs);
    // A resumed run finds the shrunk checkpoint and rebuilds its shapes (a 4-epoch recipe
    // stopped after both events; resuming with another recipe would be refused).
    let recipe = Recipe::parse(
        Path::new("s.toml"),
        "model = \"lenet300\"\nepochs = 4\ntrain_limit = 6000\n[structured]\ncriterion = \"l1\"\ntarget = 0.5\nat_epochs = [1, 2]\n",
    )
    .unwrap();
    let data = mnist::load(&mnist::locate(None).unwrap()).unwrap();
    let part = out.with_extension("part");
    let _ = std::fs::remove_dir_all(&part);
    let opts = TrainOptions {
        out_dir: part.clone(),
        recipe_path: PathBuf::from("s.toml"),
        resume: false,
        test_limit: 1000,
        stop_after: Some(3),
    };
    assert_eq!(
        train(&recipe, &data, &opts, &mut Silent)
            .unwrap()
            .history
            .len(),
        3
    );
    let opts = TrainOptions {
        resume: true,
        stop_after: None,
        ..opts
    };
    let r = train(&recipe, &data, &opts, &mut Silent).unwrap();
    assert_eq!(r.history.len(), 4);
    assert_eq!(r.shrunk.unwrap().widths, vec![784, 150, 50, 10]);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&part);
}

#[test]
fn resnet8_taylor_with_slimming_halves_channels_and_exports() {
    let (s, out) = run(
        "model = \"resnet8\"\nepochs = 2\ntrain_limit = 1280\nbatch_size = 64\n[optimizer]\nkind = \"sgd\"\nlr = 0.05\n[structured]\ncriterion = \"taylor\"\ntaylor_batches = 4\ntarget = 0.5\nat_epochs = [1]\nslimming = 1e-4\n",
        "resnet8",
    );
    let k = s.shrunk.as_ref().unwrap();
    // Every group of ResNet-8 (three inner, three residual) keeps half its channels.
    assert_eq!(
        k.widths,
        vec![1, 8, 8, 8, 16, 16, 32, 32, 10],
        "{:?}",
        k.widths
    );
    assert_eq!(s.channels_after * 2, s.channels_before);
    assert!(
        k.dense_macs * 3 < s.dense_macs,
        "{} vs {}",
        k.dense_macs,
        s.dense_macs
    );
    let model = export(ZooModel::Resnet8, &s);
    assert_eq!(model.macs().0, k.dense_macs);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn taylor_scores_are_squared_first_order_terms_per_channel() {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::GradientsParams;
    use burn::tensor::Int;
    use lopper_train::structured::score::TaylorScores;

    let device = Device::flex().autodiff();
    let m = Lenet300::new(&device);
    let x = Tensor::<2>::from_data(TensorData::new(input(5, 8), [8, 784]), &device);
    let y = Tensor::<1, Int>::from_data(
        TensorData::new(vec![0i32, 1, 2, 3, 4, 5, 6, 7], [8]),
        &device,
    );
    let loss = CrossEntropyLossConfig::new()
        .init(&device)
        .forward(m.forward(x), y);
    let grads = GradientsParams::from_grads(loss.backward(), &m);
    let groups = m.channel_groups();
    let mut t = TaylorScores::default();
    t.add(&m, &grads, &groups);
    // fc2's neuron c: column c of its weight [in 300, out 100] and bias c, sliced by burn.
    let w = m.fc2.weight.val();
    let gw = grads.get::<2>(m.fc2.weight.id).unwrap();
    let b = m.fc2.bias.as_ref().unwrap().val();
    let gb = grads.get::<1>(m.fc2.bias.as_ref().unwrap().id).unwrap();
    for c in [0usize, 17, 99] {
        let col = |t: Tensor<2>| floats(t.slice([0..300, c..c + 1]));
        let wg: f64 = col(w.clone().inner())
            .iter()
            .zip(col(gw.clone()))
            .map(|(a, g)| *a as f64 * g as f64)
            .sum::<f64>()
            + floats(b.clone().inner())[c] as f64 * floats(gb.clone())[c] as f64;
        let got = t.scores["fc2"][c];
        assert!(
            (got - wg * wg).abs() <= 1e-9 + 1e-4 * wg * wg,
            "channel {c}: {got} vs {}",
            wg * wg
        );
    }
    assert_eq!(t.batches, 1);
    assert!(!t.scores.contains_key("fc3"), "the logits are not scored");
}
