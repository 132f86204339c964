//! The ONNX loop through the binary: import, run an `.onnx` directly with `.npy`/`.npz` inputs
//! and outputs, prune it one-shot, bench it, and export back to ONNX (which imports again to the
//! same outputs). ONNX Runtime's own check of the exported files is `scripts/check-onnx.py`.

mod common;

use std::path::{Path, PathBuf};

use common::{fails_cleanly, json, lopper, ok};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lopper-model/tests/fixtures/onnx")
        .join(name)
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lopper-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn outputs(v: &serde_json::Value) -> Vec<f64> {
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect()
}

fn run_json(model: &Path, input: &Path, extra: &[&str]) -> serde_json::Value {
    json(&ok(lopper()
        .arg("run")
        .arg(model)
        .arg("--input")
        .arg(input)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap()))
}

#[test]
fn import_run_prune_bench_and_export_an_onnx_model() {
    let dir = tempdir("onnx");
    let onnx = fixture("mobilenet_block.onnx");
    let input = fixture("mobilenet_block.input.npy");

    let lop = dir.join("m.lop");
    let r = json(&ok(lopper()
        .arg("import")
        .arg(&onnx)
        .arg("--out")
        .arg(&lop)
        .arg("--json")
        .output()
        .unwrap()));
    assert_eq!(r["input"], "input");
    assert_eq!(r["output_shape"], serde_json::json!([10]));
    assert_eq!(r["ops"]["conv2d"], 8);

    // The .onnx runs directly, and as the imported .lop, to the same outputs.
    let direct = run_json(&onnx, &input, &[]);
    assert_eq!(direct["batch"], 3);
    let via_lop = run_json(&lop, &input, &[]);
    assert_eq!(outputs(&direct), outputs(&via_lop));

    // .npz out, keyed by the graph's output name; .npz in, keyed by the input name.
    let npz = dir.join("y.npz");
    let _ = run_json(&onnx, &input, &["--output", npz.to_str().unwrap()]);
    assert!(std::fs::metadata(&npz).unwrap().len() > 100);
    let out_npy = dir.join("y.npy");
    let _ = run_json(&onnx, &input, &["--output", out_npy.to_str().unwrap()]);

    let pruned = dir.join("m90.lop");
    let r = json(&ok(lopper()
        .arg("prune")
        .arg(&onnx)
        .args(["--method", "wanda", "--sparsity", "0.9", "--json"])
        .arg("--calib")
        .arg(&input)
        .arg("--out")
        .arg(&pruned)
        .output()
        .unwrap()));
    assert_eq!(r["calib_examples"], 3);
    let layers = r["per_layer"].as_array().unwrap();
    assert_eq!(layers.len(), 9);
    assert!(layers
        .iter()
        .filter(|l| l["note"].is_null())
        // Wanda keeps a whole number per output row: 2 of 16 inputs is 87.5 %.
        .all(|l| (l["sparsity"].as_f64().unwrap() - 0.9).abs() < 0.03));
    assert!(dir.join("m90.report.md").exists());

    let b = json(&ok(lopper()
        .arg("bench")
        .arg(&pruned)
        .args(["--batch", "2", "--threads", "1", "--json"])
        .output()
        .unwrap()));
    assert_eq!(b["batch"], 2);
    assert!(b["sparse_ns"].as_f64().unwrap() > 0.0 && b["dense_ns"].as_f64().unwrap() > 0.0);

    // Back to ONNX: the exported file imports again and gives lopper's outputs.
    let back = dir.join("m90.onnx");
    ok(lopper()
        .arg("export")
        .arg(&pruned)
        .args(["--to", "onnx", "--out"])
        .arg(&back)
        .output()
        .unwrap());
    let a = outputs(&run_json(&pruned, &input, &[]));
    let c = outputs(&run_json(&back, &input, &[]));
    for (x, y) in a.iter().zip(&c) {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_onnx_inputs_fail_cleanly() {
    let dir = tempdir("onnx-bad");
    let onnx = fixture("mlp.onnx");
    // An input array of the wrong shape.
    let wrong = fixture("mobilenet_block.input.npy");
    fails_cleanly(
        lopper()
            .arg("run")
            .arg(&onnx)
            .arg("--input")
            .arg(&wrong)
            .output()
            .unwrap(),
        &[
            "mobilenet_block.input.npy",
            "does not fit the model's input [n, 64]",
        ],
    );
    // Text calibration for a graph model.
    let txt = dir.join("calib.txt");
    std::fs::write(&txt, "a sentence\n").unwrap();
    fails_cleanly(
        lopper()
            .arg("prune")
            .arg(&onnx)
            .args(["--method", "wanda", "--sparsity", "0.5", "--out"])
            .arg(dir.join("x.lop"))
            .arg("--calib")
            .arg(&txt)
            .output()
            .unwrap(),
        &["calib.txt", ".npy or .npz"],
    );
    // Calibration and evaluation sharing examples.
    let x = fixture("mlp.input.npy");
    fails_cleanly(
        lopper()
            .arg("prune")
            .arg(&onnx)
            .args(["--method", "wanda", "--sparsity", "0.5", "--out"])
            .arg(dir.join("x.lop"))
            .arg("--calib")
            .arg(&x)
            .arg("--eval")
            .arg(&x)
            .output()
            .unwrap(),
        &["share 3 examples"],
    );
    fails_cleanly(
        lopper()
            .arg("export")
            .arg(&onnx)
            .args(["--to", "tflite", "--out"])
            .arg(dir.join("x.tflite"))
            .output()
            .unwrap(),
        &["unknown --to 'tflite'"],
    );
    let not_onnx = dir.join("fake.onnx");
    std::fs::write(&not_onnx, b"hello").unwrap();
    fails_cleanly(
        lopper()
            .arg("import")
            .arg(&not_onnx)
            .arg("--out")
            .arg(dir.join("y.lop"))
            .output()
            .unwrap(),
        &["fake.onnx", "ONNX"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_reports_the_stored_format_and_thread_counts_are_bounded() {
    let dir = tempdir("onnx-inspect");
    let lop = dir.join("m.lop");
    ok(lopper()
        .arg("prune")
        .arg(fixture("mlp.onnx"))
        .args(["--method", "magnitude", "--sparsity", "0.9", "--json"])
        .args(["--format", "csr-delta8", "--out"])
        .arg(&lop)
        .output()
        .unwrap());
    let r = json(&ok(lopper()
        .arg("inspect")
        .arg(&lop)
        .arg("--json")
        .output()
        .unwrap()));
    let layers = r["layers"].as_array().unwrap();
    let weighted: Vec<_> = layers.iter().filter(|l| !l["weight"].is_null()).collect();
    assert_eq!(weighted.len(), 4);
    for l in &weighted {
        assert_eq!(l["format"], "csr_delta8", "{l}");
        // Stored bytes: one-byte column steps, not the decoded CSR's two-byte indices.
        let [rows, cols] = [
            l["shape"][0].as_u64().unwrap(),
            l["shape"][1].as_u64().unwrap(),
        ];
        let nnz = (l["density"].as_f64().unwrap() * (rows * cols) as f64).round() as u64;
        assert!(
            l["bytes"].as_u64().unwrap() < 4 * (rows + 1) + 6 * nnz,
            "{l}"
        );
    }
    let over = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    let flag = format!("--threads {over}");
    for cmd in ["inspect", "bench"] {
        fails_cleanly(
            lopper()
                .arg(cmd)
                .arg(&lop)
                .args(["--threads", &over.to_string()])
                .output()
                .unwrap(),
            &[&flag, "cores", "--threads-force"],
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Concurrent planners on one model file keep each other's plans: the cache is merged under a
/// file lock and written atomically (issue 22's lost-entries case, with real processes).
#[test]
fn concurrent_planners_keep_every_plan_in_the_cache() {
    let dir = tempdir("onnx-lock");
    let model = dir.join("mlp.onnx");
    std::fs::copy(fixture("mlp.onnx"), &model).unwrap();
    let batches = [1usize, 2, 3, 4, 5, 6];
    let children: Vec<_> = batches
        .iter()
        .map(|b| {
            lopper()
                .arg("inspect")
                .arg(&model)
                .args(["--json", "--batch", &b.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("mlp.onnx.plan.json")).unwrap()).unwrap();
    let mut got: Vec<u64> = cache["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["batch"].as_u64().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, batches.map(|b| b as u64));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quantize_writes_int8_weights_and_activations_and_reports_fidelity() {
    let dir = tempdir("quantize");
    let q8 = dir.join("cnn-int8.lop");
    let input = fixture("resnet_stem.input.npy");
    let r = json(&ok(lopper()
        .arg("quantize")
        .arg(fixture("resnet_stem.onnx"))
        .arg("--out")
        .arg(&q8)
        .arg("--eval")
        .arg(&input)
        .arg("--json")
        .output()
        .unwrap()));
    let int8 = r["int8_layers"].as_array().unwrap();
    assert!(!int8.is_empty(), "{r}");
    assert!(r["int8_weight_bytes"].as_u64() < r["source_weight_bytes"].as_u64());
    assert!(r["eval_examples"].as_u64().unwrap() > 0);
    let cos = r["mean_cosine"].as_f64().unwrap();
    assert!(cos > 0.99, "mean cosine {cos}");
    // The file allows int8 activations on those layers, and runs (under a measured plan) close
    // to the f32 model.
    let m = lopper_model::Model::read(&q8).unwrap();
    assert_eq!(
        m.graph.weights.values().filter(|s| s.int8_acts).count(),
        int8.len(),
        "one permission per int8 layer"
    );
    let want = outputs(&run_json(&fixture("resnet_stem.onnx"), &input, &[]));
    let got = outputs(&run_json(&q8, &input, &[]));
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = want
        .iter()
        .zip(&got)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= 0.05 * scale,
        "int8 outputs off by {err} (scale {scale})"
    );

    // --skip keeps a layer in f32; an unknown name is an error.
    let first = int8[0].as_str().unwrap();
    let r = json(&ok(lopper()
        .arg("quantize")
        .arg(fixture("resnet_stem.onnx"))
        .args(["--out"])
        .arg(dir.join("skip.lop"))
        .args(["--skip", first, "--json"])
        .output()
        .unwrap()));
    assert!(r["f32_layers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == first));
    fails_cleanly(
        lopper()
            .arg("quantize")
            .arg(fixture("resnet_stem.onnx"))
            .args(["--out"])
            .arg(dir.join("bad.lop"))
            .args(["--skip", "no-such-layer"])
            .output()
            .unwrap(),
        &["--skip no-such-layer"],
    );
}
