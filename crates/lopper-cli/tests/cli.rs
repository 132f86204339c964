//! End-to-end checks of the `lopper` binary: output schema and error handling, never timings.

use std::process::Command;

fn lopper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lopper"))
}

#[test]
fn bench_kernels_json_has_one_record_per_measurement() {
    let out = lopper()
        .args([
            "bench",
            "kernels",
            "--quick",
            "--json",
            "--density",
            "0.5",
            "--batch",
            "1,3",
        ])
        .args(["--threads", "1", "--regime", "hot", "--seed", "7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let records = records.as_array().unwrap();
    // 4 shapes x 2 batches x (8 variants, N:M included at density 0.5, + the two int8 x int8
    // ones: dense and 16x4 blocks).
    assert_eq!(records.len(), 4 * 2 * (8 + 2));
    assert_eq!(
        records.iter().filter(|r| r["dtype"] == "i8i8").count(),
        4 * 2 * 2
    );
    let fields = [
        "kernel",
        "format",
        "rows",
        "cols",
        "batch",
        "density",
        "threads",
        "regime",
        "dense_ns",
        "sparse_ns",
        "speedup",
    ];
    for r in records {
        for f in fields {
            assert!(r.get(f).is_some(), "missing {f} in {r}");
        }
        let (d, s, sp) = (
            r["dense_ns"].as_f64().unwrap(),
            r["sparse_ns"].as_f64().unwrap(),
            r["speedup"].as_f64().unwrap(),
        );
        assert!(d > 0.0 && s > 0.0);
        assert!(
            (sp - d / s).abs() <= 1e-9 * sp.max(1.0),
            "speedup must be dense_ns / sparse_ns"
        );
        assert_eq!(r["regime"], "hot");
        assert!(
            r["sparse_bytes"].as_u64().unwrap() < r["dense_bytes"].as_u64().unwrap()
                || r["dtype"] == "f32"
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("seed 7"),
        "the seed must be printed: {stderr}"
    );
}

#[test]
fn bench_rejects_bad_flags_with_a_message() {
    for args in [
        vec!["bench", "kernels", "--density", "1.5"],
        vec!["bench", "kernels", "--batch", "0"],
        vec!["bench", "kernels", "--regime", "warm"],
        vec!["bench", "nonsense"],
    ] {
        let out = lopper().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

#[test]
fn bench_writes_out_file_atomically() {
    let dir = std::env::temp_dir().join(format!("lopper-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kernels.json");
    let out = lopper()
        .args([
            "bench",
            "kernels",
            "--quick",
            "--density",
            "0.05",
            "--batch",
            "1",
            "--threads",
            "1",
            "--regime",
            "hot",
        ])
        .arg("--out")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // 4 shapes x (7 variants + dense and 16x4 int8 x int8).
    assert_eq!(v.as_array().unwrap().len(), 4 * (7 + 2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Targets"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_writes_report_json_with_the_documented_fields() {
    let dir = std::env::temp_dir().join(format!("lopper-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = dir.join("tiny.toml");
    std::fs::write(
        &recipe,
        "model = \"lenet300\"\nepochs = 2\ntrain_limit = 3000\n[pruning]\nschedule = { kind = \"one_shot\", epoch = 1, target = 0.7 }\n",
    )
    .unwrap();
    let out_dir = dir.join("out");
    let out = lopper()
        .args(["train", "--json", "--test-limit", "1000", "--recipe"])
        .arg(&recipe)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    for f in [
        "model",
        "recipe",
        "seed",
        "epochs",
        "test_accuracy",
        "sparsity",
        "params_total",
        "params_nonzero",
        "per_layer",
        "epoch_seconds",
    ] {
        assert!(report.get(f).is_some(), "report.json lacks {f}");
    }
    assert_eq!(report["model"], "lenet300");
    assert_eq!(report["epoch_seconds"].as_array().unwrap().len(), 2);
    assert!((report["sparsity"].as_f64().unwrap() - 0.7).abs() < 1e-3);
    let stdout: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stdout, report, "--json prints the report");
    for f in [
        "report.md",
        "checkpoint/model.bpk",
        "checkpoint/manifest.json",
        "training.png",
        "layers.png",
    ] {
        assert!(out_dir.join(f).exists(), "{f} missing");
    }
    let png = std::fs::read(out_dir.join("training.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "training.png is not a PNG");
    assert!(String::from_utf8_lossy(&out.stderr).contains("seed 42"));

    // Sensitivity on the checkpoint just written: one row per layer and sparsity.
    let out = lopper()
        .args([
            "sensitivity",
            "--json",
            "--test-limit",
            "500",
            "--sparsities",
            "0.5,0.99",
            "--recipe",
        ])
        .arg(&recipe)
        .arg("--checkpoint")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3 * 2);
    let acc = |i: usize| rows[i]["test_accuracy"].as_f64().unwrap();
    assert!(
        acc(0) > acc(1),
        "pruning fc1 to 99 % must cost accuracy: {} vs {}",
        acc(0),
        acc(1)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sweep_refuses_a_recipe_without_schedule() {
    let dir = std::env::temp_dir().join(format!("lopper-cli-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = dir.join("dense.toml");
    std::fs::write(&recipe, "model = \"lenet300\"\nepochs = 1\n").unwrap();
    let out = lopper()
        .args(["sweep", "--targets", "0.5", "--out"])
        .arg(dir.join("o"))
        .arg("--recipe")
        .arg(&recipe)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pruning schedule"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_rejects_a_bad_recipe_naming_file_and_key() {
    let dir = std::env::temp_dir().join(format!("lopper-cli-badrecipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = dir.join("bad.toml");
    std::fs::write(&recipe, "model = \"lenet300\"\nepochs = 1\n[pruning]\nschedule = { kind = \"one_shot\", epoch = 0, target = 1.5 }\n").unwrap();
    let out = lopper()
        .args(["train", "--out"])
        .arg(dir.join("o"))
        .arg("--recipe")
        .arg(&recipe)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("pruning.schedule.target")
            && err.contains("outside [0, 1)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
