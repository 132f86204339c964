//! Recipe parsing and validation: every bad value is refused naming its TOML key.

use super::*;

const GOOD: &str = r#"
model = "lenet300"
epochs = 10
[optimizer]
kind = "sgd"
lr = 0.05
[pruning]
allocation = "global"
schedule = { kind = "gradual", target = 0.95, start_epoch = 1, end_epoch = 8, every_steps = 100 }
overrides = { "fc3.weight" = 0.5 }
"#;

fn parse(text: &str) -> Result<Recipe, RecipeError> {
    Recipe::parse(Path::new("r.toml"), text)
}

#[test]
fn parses_a_full_recipe() {
    let r = parse(GOOD).unwrap();
    assert_eq!(r.model, ZooModel::Lenet300);
    assert_eq!(r.seed, 42);
    assert_eq!(r.pruning.allocation, Allocation::Global);
    assert_eq!(r.pruning.schedule.final_target(), 0.95);
    assert!(matches!(r.optimizer, OptimizerSpec::Sgd { momentum, .. } if momentum == 0.9));
}

#[test]
fn rejects_unknown_key() {
    let e = parse(&GOOD.replace("epochs = 10", "epochs = 10\nepoch = 3")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("r.toml: ") && msg.contains("epoch"),
        "{msg}"
    );
}

#[test]
fn rejects_sparsity_out_of_range() {
    let e = parse(&GOOD.replace("target = 0.95", "target = 1.0")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "r.toml: key `pruning.schedule.target`: sparsity 1 is outside [0, 1)"
    );
    let e = parse(&GOOD.replace("= 0.5 }", "= -0.1 }")).unwrap_err();
    assert!(
        e.to_string().contains("pruning.overrides.\"fc3.weight\""),
        "{e}"
    );
}

#[test]
fn rejects_unknown_layer() {
    let r = parse(&GOOD.replace("fc3.weight", "fc9.weight")).unwrap();
    let e = r
        .check_layers(
            Path::new("r.toml"),
            &["fc1.weight".into(), "fc3.weight".into()],
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("r.toml: key `pruning.overrides.\"fc9.weight\"`: no prunable layer"),
        "{msg}"
    );
}

#[test]
fn rejects_unknown_model_and_schedule() {
    assert!(parse(&GOOD.replace("lenet300", "vgg16"))
        .unwrap_err()
        .to_string()
        .contains("vgg16"));
    assert!(parse(&GOOD.replace("\"gradual\"", "\"sometimes\"")).is_err());
}

#[test]
fn parses_sparse_init_and_rejects_it_where_nothing_starts_sparse() {
    let rigl = "model = \"lenet300\"\nepochs = 5\n[pruning]\nschedule = { kind = \"rigl\", target = 0.9, every_steps = 100 }\n";
    assert_eq!(parse(rigl).unwrap().pruning.sparse_init, SparseInit::Dense);
    let r = parse(&format!("{rigl}sparse_init = \"fan_in\"\n")).unwrap();
    assert_eq!(r.pruning.sparse_init, SparseInit::FanIn);
    assert!(parse(&format!("{rigl}sparse_init = \"lecun\"\n")).is_err());
    let e = parse(&format!("{GOOD}sparse_init = \"fan_in\"\n")).unwrap_err();
    assert!(e.to_string().contains("pruning.sparse_init"), "{e}");
}

#[test]
fn rejects_bad_schedule_window() {
    let e = parse(&GOOD.replace("end_epoch = 8", "end_epoch = 11")).unwrap_err();
    assert!(e.to_string().contains("pruning.schedule.end_epoch"), "{e}");
}

#[test]
fn parses_l0_and_rejects_bad_l0() {
    let base = "model = \"lenet300\"\nepochs = 5\n[l0]\n";
    let r = parse(&format!("{base}lambda = 0.1\n")).unwrap();
    let l0 = r.l0.unwrap();
    assert_eq!(
        (l0.lambda, l0.gates, l0.droprate_init, l0.gate_lr_scale),
        (0.1, L0Gates::Neurons, 0.5, 1.0)
    );
    let r = parse(&format!("{base}lambda = 0.1\ngate_lr_scale = 10\n")).unwrap();
    assert_eq!(r.l0.unwrap().gate_lr_scale, 10.0);
    for bad_scale in ["0", "-2", "nan", "1e-320", "1e9"] {
        let e = parse(&format!(
            "{base}lambda = 0.1\ngate_lr_scale = {bad_scale}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("l0.gate_lr_scale"), "{e}");
    }
    let e = parse(&format!("{base}lambda = -1\n")).unwrap_err();
    assert!(e.to_string().contains("l0.lambda"), "{e}");
    let e = parse(&format!("{base}lambda = 0.1\ndroprate_init = 1.0\n")).unwrap_err();
    assert!(e.to_string().contains("l0.droprate_init"), "{e}");
    let e = parse(&format!("{base}lambda = 0.1\nfinetune_epochs = 5\n")).unwrap_err();
    assert!(e.to_string().contains("l0.finetune_epochs"), "{e}");
    let e = parse(&format!("{base}lambda = 0.1\ngates = \"filters\"\n")).unwrap_err();
    assert!(e.to_string().contains("gates"), "{e}");
    let e = parse(&format!("{base}gates = \"neurons\"\n")).unwrap_err();
    assert!(e.to_string().contains("lambda"), "{e}");
    let e = parse("model = \"resnet8\"\nepochs = 5\n[l0]\nlambda = 0.1\n").unwrap_err();
    assert!(e.to_string().contains("key `l0`"), "{e}");
    let r = parse(&format!(
        "{base}lambda = 50\ngates = \"weights\"\nweighting = \"units\"\n"
    ))
    .unwrap();
    let l0 = r.l0.unwrap();
    assert_eq!(
        (l0.gates, l0.weighting),
        (L0Gates::Weights, L0Weighting::Units)
    );
    assert_eq!(
        parse(&format!("{base}lambda = 0.1\n"))
            .unwrap()
            .l0
            .unwrap()
            .weighting,
        L0Weighting::Params
    );
    let r = parse(&format!(
        "{base}lambda = 0.3\nlayer_scale = {{ fc2 = 4.0 }}\n"
    ))
    .unwrap();
    assert_eq!(r.l0.unwrap().layer_scale["fc2"], 4.0);
    let e = parse(&format!(
        "{base}lambda = 0.3\nlayer_scale = {{ fc2 = -1.0 }}\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("l0.layer_scale.fc2"), "{e}");
    let e = parse(&format!("{base}lambda = 0.1\nweighting = \"flops\"\n")).unwrap_err();
    assert!(
        e.to_string().contains("weighting") || e.to_string().contains("flops"),
        "{e}"
    );
    // Structured pruning: strict too, and exclusive with [l0] and weight schedules.
    let st = "model = \"lenet300\"\nepochs = 5\n[structured]\ntarget = 0.5\nat_epochs = [2]\n";
    assert!(parse(st).unwrap().structured.is_some());
    let e = parse(&format!("{st}colour = 1\n")).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    let e = parse(&st.replace("at_epochs = [2]", "at_epochs = [7]")).unwrap_err();
    assert!(e.to_string().contains("structured.at_epochs"), "{e}");
    let e = parse(&format!("{st}[l0]\nlambda = 0.1\n")).unwrap_err();
    assert!(
        e.to_string().contains("cannot be combined with [l0]"),
        "{e}"
    );
    let e = parse(&format!(
        "{}[pruning]\nschedule = {{ kind = \"one_shot\", epoch = 1, target = 0.5 }}\n",
        st
    ))
    .unwrap_err();
    assert!(e.to_string().contains("weight pruning schedule"), "{e}");
}

#[test]
fn cosine_lr_decays_to_zero() {
    let s = LrSchedule::Cosine;
    assert_eq!(s.lr(0.1, 0, 100, 10), 0.1);
    assert!((s.lr(0.1, 50, 100, 10) - 0.05).abs() < 1e-12);
    assert!(s.lr(0.1, 100, 100, 10).abs() < 1e-12);
    let st = LrSchedule::Step {
        every_epochs: 2,
        gamma: 0.1,
    };
    assert!((st.lr(1.0, 45, 100, 10) - 0.01).abs() < 1e-12);
}
