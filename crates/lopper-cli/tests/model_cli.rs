//! End-to-end checks of the model commands on a small real training run: `train` writes a
//! `.lop`, `eval` reproduces the trainer's accuracy through the runtime, `export` re-encodes
//! (int8), `inspect`, `bench` and `run` print their documented fields, and bad files or inputs
//! give an error naming the file (exit 2, no panic). No timing is asserted.

use std::path::{Path, PathBuf};
mod common;

use common::{fails_cleanly, json, lopper, ok};

fn train_tiny(dir: &Path) -> PathBuf {
    common::train(
        dir,
        "model = \"lenet300\"\nepochs = 2\ntrain_limit = 4000\n[pruning]\nschedule = { kind = \"one_shot\", epoch = 1, target = 0.9 }\n",
        &[],
    )
}

#[test]
fn model_commands_end_to_end() {
    let dir = std::env::temp_dir().join(format!("lopper-cli-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = train_tiny(&dir);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    let lop = run.join("model.lop");
    assert_eq!(
        report["model_file"].as_str().unwrap(),
        lop.to_str().unwrap()
    );
    let trainer_acc = report["test_accuracy"].as_f64().unwrap();
    // LeNet-300-100 is linear layers only: a MAC per weight, so MACs equal weights, dense and
    // nonzero.
    assert_eq!(report["dense_macs"], report["prunable_total"]);
    assert_eq!(report["sparse_macs"], report["prunable_nonzero"]);

    // eval: the runtime reproduces the trainer's accuracy on all 10 000 test images.
    let e = json(&ok(lopper()
        .arg("eval")
        .arg(&lop)
        .arg("--json")
        .output()
        .unwrap()));
    let acc = e["accuracy"].as_f64().unwrap();
    assert_eq!(e["examples"], 10000);
    assert!(
        (acc - trainer_acc).abs() <= 0.001,
        "runtime {acc} vs trainer {trainer_acc}"
    );
    assert_eq!(e["trainer_accuracy"].as_f64(), Some(trainer_acc));

    // export from the training folder as int8: smaller, accuracy close.
    let i8 = dir.join("int8.lop");
    let x = json(&ok(lopper()
        .arg("export")
        .arg(&run)
        .args(["--dtype", "i8", "--json", "--out"])
        .arg(&i8)
        .output()
        .unwrap()));
    let f32_bytes = std::fs::metadata(&lop).unwrap().len();
    assert!(x["file_bytes"].as_u64().unwrap() < f32_bytes);
    assert!(
        x["dense_file_bytes"].as_u64().unwrap() > 5 * f32_bytes,
        "90 % sparse is much smaller"
    );
    let e8 = json(&ok(lopper()
        .arg("eval")
        .arg(&i8)
        .arg("--json")
        .output()
        .unwrap()));
    assert!((e8["accuracy"].as_f64().unwrap() - acc).abs() < 0.01);

    // export --format planned: each weight stored as the planner runs it; same accuracy.
    let planned = dir.join("planned.lop");
    ok(lopper()
        .arg("export")
        .arg(&lop)
        .args(["--format", "planned", "--out"])
        .arg(&planned)
        .output()
        .unwrap());
    let ep = json(&ok(lopper()
        .arg("eval")
        .arg(&planned)
        .arg("--json")
        .output()
        .unwrap()));
    assert_eq!(ep["accuracy"].as_f64(), Some(acc));

    // inspect: every weight layer has a planned kernel; the plan is cached next to the model.
    let ins = json(&ok(lopper()
        .arg("inspect")
        .arg(&lop)
        .arg("--json")
        .output()
        .unwrap()));
    let layers = ins["layers"].as_array().unwrap();
    let weighted: Vec<_> = layers.iter().filter(|l| !l["weight"].is_null()).collect();
    assert_eq!(weighted.len(), 3);
    for l in weighted {
        for f in ["shape", "format", "density", "bytes", "planned_kernel"] {
            assert!(!l[f].is_null(), "inspect layer lacks {f}: {l}");
        }
    }
    assert!(Path::new(&format!("{}.plan.json", lop.display())).exists());
    let again = json(&ok(lopper()
        .arg("inspect")
        .arg(&lop)
        .arg("--json")
        .output()
        .unwrap()));
    assert_eq!(again["plan_from_cache"], true);

    // bench: one JSON record per batch x threads with the documented fields.
    let out = ok(lopper()
        .arg("bench")
        .arg(&lop)
        .args(["--batch", "1,3", "--threads", "1", "--quick", "--json"])
        .output()
        .unwrap());
    let text = String::from_utf8_lossy(&out.stdout);
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        for f in [
            "batch",
            "threads",
            "dense_ns",
            "sparse_ns",
            "speedup",
            "file_bytes",
            "dense_file_bytes",
            "sparse_plan",
            "uniform",
        ] {
            assert!(!r[f].is_null(), "bench record lacks {f}");
        }
        let s = r["dense_ns"].as_f64().unwrap() / r["sparse_ns"].as_f64().unwrap();
        assert!((s - r["speedup"].as_f64().unwrap()).abs() < 1e-9);
        assert_eq!(r["file_bytes"].as_u64(), Some(f32_bytes));
    }

    // run: IDX images (preprocessed by the file's recipe) and raw f32.
    let idx = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    let data_dir = std::env::var("LOPPER_DATA").ok();
    let idx = data_dir.map_or(PathBuf::from(idx), |d| {
        Path::new(&d).join("t10k-images-idx3-ubyte.gz")
    });
    if idx.exists() {
        let r = json(&ok(lopper()
            .arg("run")
            .arg(&lop)
            .arg("--input")
            .arg(&idx)
            .arg("--json")
            .output()
            .unwrap()));
        assert_eq!(r["predictions"].as_array().unwrap().len(), 10000);
    }
    let raw = dir.join("three.f32");
    let vals: Vec<u8> = (0..3 * 784)
        .flat_map(|i| ((i % 17) as f32 * 0.1 - 0.8).to_le_bytes())
        .collect();
    std::fs::write(&raw, vals).unwrap();
    let r = json(&ok(lopper()
        .arg("run")
        .arg(&lop)
        .arg("--input")
        .arg(&raw)
        .arg("--json")
        .output()
        .unwrap()));
    assert_eq!(r["predictions"].as_array().unwrap().len(), 3);
    for p in r["probabilities"].as_array().unwrap() {
        let s: f64 = p
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((s - 1.0).abs() < 1e-4);
    }

    // Wrong input size and broken model files: exit 2, the file named, no panic.
    std::fs::write(&raw, [0u8; 4 * 785]).unwrap();
    fails_cleanly(
        lopper()
            .arg("run")
            .arg(&lop)
            .arg("--input")
            .arg(&raw)
            .output()
            .unwrap(),
        &["three.f32", "784"],
    );
    let bad = dir.join("broken.lop");
    let mut bytes = std::fs::read(&lop).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&bad, &bytes).unwrap();
    for cmd in ["eval", "inspect", "bench"] {
        fails_cleanly(
            lopper().arg(cmd).arg(&bad).output().unwrap(),
            &["broken.lop"],
        );
    }
    fails_cleanly(
        lopper()
            .args(["eval", "/nonexistent/model.lop"])
            .output()
            .unwrap(),
        &["model.lop"],
    );
    fails_cleanly(
        lopper()
            .arg("export")
            .arg(&lop)
            .args(["--format", "dense", "--dtype", "i8", "--out"])
            .arg(dir.join("x.lop"))
            .output()
            .unwrap(),
        &["int8"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_runs_end_to_end_and_writes_its_reports() {
    let dir = std::env::temp_dir().join(format!("lopper-cli-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = ok(lopper()
        .arg("demo")
        .arg("--json")
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap());
    let r = json(&out);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "dense, pruned and pruned int8");
    for row in rows {
        for f in [
            "file",
            "test_accuracy",
            "sparsity",
            "file_bytes",
            "latency_b1_ns",
            "latency_b64_ns",
            "speedup_b1",
            "speedup_b64",
        ] {
            assert!(!row[f].is_null(), "demo row lacks {f}");
        }
        // The f32 files reproduce the trainer's accuracy through the runtime.
        if row["dtype"] == "f32" {
            let d =
                row["test_accuracy"].as_f64().unwrap() - row["trainer_accuracy"].as_f64().unwrap();
            assert!(d.abs() <= 0.001, "{}: {d}", row["file"]);
        }
    }
    assert!(rows[1]["sparsity"].as_f64().unwrap() > 0.94);
    assert!(rows[1]["file_bytes"].as_u64().unwrap() * 10 < rows[0]["file_bytes"].as_u64().unwrap());
    assert!(r["notes"].as_array().unwrap().is_empty(), "{}", r["notes"]);
    for f in [
        "report.md",
        "report.json",
        "accuracy_vs_sparsity.png",
        "speedup.png",
        "lenet300-gradual95.lop",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
