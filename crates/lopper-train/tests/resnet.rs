//! The CIFAR-style ResNet: structure, prunable layers, and that it trains with masks.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use lopper_train::data::mnist;
use lopper_train::model::{Classifier, ResNet};
use lopper_train::prune::masks::prunable_layers;
use lopper_train::trainer::{train, Silent, TrainOptions};
use lopper_train::Recipe;

#[test]
fn resnet_layers_and_shapes() {
    let device = Device::flex();
    for (depth, prunable) in [(8, 10), (20, 22)] {
        let m = ResNet::new(depth, &device);
        let layers = prunable_layers(&m);
        assert_eq!(layers.len(), prunable, "ResNet-{depth}");
        assert!(layers
            .iter()
            .any(|l| l.path == "blocks.3.shortcut.conv.weight" || l.path.contains("shortcut")));
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.1f32; 3 * 784], [3, 784]), &device);
        assert_eq!(m.forward(x).dims(), [3, 10]);
    }
    // ResNet-20 on 28x28: about 35 M multiply-accumulates per image.
    let macs = ResNet::new(20, &device).dense_macs();
    assert!((30_000_000..45_000_000).contains(&macs), "{macs}");
}

#[test]
fn resnet8_trains_with_a_mask() {
    let data = mnist::load(&mnist::locate(None).unwrap_or_else(|e| panic!("{e}"))).unwrap();
    let recipe = Recipe::parse(
        Path::new("resnet.toml"),
        "model = \"resnet8\"\nepochs = 1\ntrain_limit = 2560\nbatch_size = 64\n[pruning]\nschedule = { kind = \"one_shot\", epoch = 0, target = 0.5 }\n",
    )
    .unwrap();
    let dir: PathBuf = std::env::temp_dir().join(format!("lopper-resnet-{}", std::process::id()));
    let opts = TrainOptions {
        out_dir: dir.clone(),
        recipe_path: "resnet.toml".into(),
        resume: false,
        test_limit: 1000,
        stop_after: None,
    };
    let s = train(&recipe, &data, &opts, &mut Silent).unwrap();
    assert!(
        (s.sparsity.sparsity - 0.5).abs() < 1e-3,
        "{}",
        s.sparsity.sparsity
    );
    assert!(
        s.test_accuracy > 0.4,
        "accuracy {} after 40 steps",
        s.test_accuracy
    );
    eprintln!("resnet8: {:.1} s for 40 steps of 64", s.history[0].seconds);
    let _ = std::fs::remove_dir_all(&dir);
}
