//! Hostile and broken input, as an adversarial user would give it: each case fails with exit 2,
//! no panic, and a message naming the file and what is wrong, or (where the input is valid) is
//! handled without unbounded memory. Regression tests for the cases of the hostile-input review.

mod common;

use std::path::{Path, PathBuf};

use common::{fails_cleanly, lopper, ok};
use lopper_model::Model;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lopper-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn idx_images(n: u32) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, 28, 28] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(7u8, n as usize * 784));
    v
}

/// A small trained LeNet-300-100 `.lop` (2000 images, one epoch).
fn tiny_model(dir: &Path) -> PathBuf {
    let recipe = "model = \"lenet300\"\nepochs = 1\ntrain_limit = 2000\n";
    common::train(dir, recipe, &["--test-limit", "200"]).join("model.lop")
}

#[test]
fn hostile_inputs_to_run_eval_and_inspect() {
    let dir = scratch("run");
    let lop = tiny_model(&dir);
    let run = |input: &Path| {
        lopper()
            .arg("run")
            .arg(&lop)
            .arg("--input")
            .arg(input)
            .output()
            .unwrap()
    };

    // An IDX file of 0 images (was a panic: step_by(0)).
    let empty = dir.join("empty.idx");
    std::fs::write(&empty, idx_images(0)).unwrap();
    fails_cleanly(run(&empty), &["empty.idx", "0 examples"]);

    // Headerless 8-bit pixels are not f32 values.
    let raw = dir.join("pixels.raw");
    let px: Vec<u8> = (0..784 * 4).map(|i| (i * 37 % 251) as u8).collect();
    std::fs::write(&raw, px).unwrap();
    fails_cleanly(run(&raw), &["pixels.raw", "does not look like"]);

    // NaN input.
    let nan = dir.join("nan.f32");
    let mut v = vec![0f32; 784];
    v[3] = f32::NAN;
    std::fs::write(
        &nan,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
    )
    .unwrap();
    fails_cleanly(run(&nan), &["nan.f32", "finite"]);

    // Input over the input limit: refused while reading, naming the variable.
    let big = dir.join("big.idx");
    std::fs::write(&big, idx_images(64)).unwrap();
    fails_cleanly(
        lopper()
            .arg("run")
            .arg(&lop)
            .arg("--input")
            .arg(&big)
            .env("LOPPER_MAX_INPUT_BYTES", "10000")
            .output()
            .unwrap(),
        &["big.idx", "LOPPER_MAX_INPUT_BYTES"],
    );

    // More threads than cores needs --threads-force.
    let one = dir.join("one.idx");
    std::fs::write(&one, idx_images(1)).unwrap();
    fails_cleanly(
        lopper()
            .arg("run")
            .arg(&lop)
            .args(["--threads", "100000", "--input"])
            .arg(&one)
            .output()
            .unwrap(),
        &["--threads 100000", "cores"],
    );

    // Finite weights that overflow when used: refused by the probe pass, accepted with
    // --allow-nan (which then prints the non-finite outputs).
    let mut m = Model::read(&lop).unwrap();
    m.vectors
        .get_mut("fc1.bias")
        .expect("LeNet-300-100 has fc1.bias")
        .iter_mut()
        .for_each(|b| *b = 3e38);
    let hot = dir.join("overflow.lop");
    m.write(&hot).unwrap();
    fails_cleanly(
        lopper()
            .arg("run")
            .arg(&hot)
            .arg("--input")
            .arg(&one)
            .output()
            .unwrap(),
        &["overflow.lop", "non-finite", "--allow-nan"],
    );
    ok(lopper()
        .arg("run")
        .arg(&hot)
        .args(["--allow-nan", "--input"])
        .arg(&one)
        .output()
        .unwrap());

    // Preprocessing that cannot be a standardisation (std = 1e-45) is refused on read.
    let mut m = Model::read(&lop).unwrap();
    if let Some(p) = m.graph.input.preprocess.as_mut() {
        p.std = 1e-45;
    }
    let tiny_std = dir.join("tiny-std.lop");
    m.write(&tiny_std).unwrap();
    fails_cleanly(
        lopper().arg("inspect").arg(&tiny_std).output().unwrap(),
        &["tiny-std.lop", "preprocess"],
    );

    // A flipped byte inside the weights: the digest catches it; --no-verify reads it as is.
    let mut bytes = std::fs::read(&lop).unwrap();
    let at = bytes.len() - 9;
    bytes[at] ^= 0x01;
    let flipped = dir.join("flipped.lop");
    std::fs::write(&flipped, &bytes).unwrap();
    fails_cleanly(
        lopper().arg("inspect").arg(&flipped).output().unwrap(),
        &["flipped.lop", "digest", "--no-verify"],
    );
    ok(lopper()
        .args(["inspect", "--no-verify"])
        .arg(&flipped)
        .output()
        .unwrap());

    // Truncated: called truncated, with the byte counts.
    let cut = dir.join("cut.lop");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails_cleanly(
        lopper().arg("inspect").arg(&cut).output().unwrap(),
        &["cut.lop", "truncated", &format!("{} of ", bytes.len() / 2)],
    );

    // Devices and FIFOs are not model files (/dev/zero reached 2 GB, a FIFO hung).
    fails_cleanly(
        lopper().args(["inspect", "/dev/zero"]).output().unwrap(),
        &["/dev/zero", "not a regular file"],
    );
    let fifo = dir.join("fifo.lop");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        fails_cleanly(
            lopper().arg("inspect").arg(&fifo).output().unwrap(),
            &["fifo.lop", "not a regular file"],
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_uses_the_model_files_preprocessing_and_refuses_an_empty_split() {
    let dir = scratch("eval");
    let lop = tiny_model(&dir);
    let base = json_acc(&lop, None);
    // A data folder whose training split differs (all black) but with the same test split: the
    // model's own preprocessing is used, so the accuracy does not change.
    let data = Path::new("/usr/share/datasets/fashion-mnist");
    let data = std::env::var_os("LOPPER_DATA").map_or(data.to_path_buf(), PathBuf::from);
    let other = dir.join("other-data");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        let src = [data.join(f), data.join(format!("{f}.gz"))]
            .into_iter()
            .find(|p| p.exists())
            .unwrap();
        std::fs::copy(&src, other.join(src.file_name().unwrap())).unwrap();
    }
    std::fs::write(other.join("train-images-idx3-ubyte"), idx_images(10)).unwrap();
    let mut labels = vec![0, 0, 8, 1, 0, 0, 0, 10];
    labels.extend([0u8; 10]);
    std::fs::write(other.join("train-labels-idx1-ubyte"), labels).unwrap();
    assert_eq!(json_acc(&lop, Some(&other)), base);

    // An empty test split is an error, not "0.00 % (0 / 0)".
    let empty = dir.join("empty-data");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("t10k-images-idx3-ubyte"), idx_images(0)).unwrap();
    std::fs::write(
        empty.join("t10k-labels-idx1-ubyte"),
        [0, 0, 8, 1, 0, 0, 0, 0],
    )
    .unwrap();
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        std::fs::copy(other.join(f), empty.join(f)).unwrap();
    }
    fails_cleanly(
        lopper()
            .arg("eval")
            .arg(&lop)
            .arg("--data")
            .arg(&empty)
            .output()
            .unwrap(),
        &["0 images"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn json_acc(lop: &Path, data: Option<&Path>) -> f64 {
    let mut c = lopper();
    c.arg("eval").arg(lop).arg("--json");
    if let Some(d) = data {
        c.arg("--data").arg(d);
    }
    let out = ok(c.output().unwrap());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["accuracy"].as_f64().unwrap()
}

#[test]
fn negative_numbers_reach_the_range_check_and_long_errors_are_cut() {
    let dir = scratch("flags");
    for flag in [["--sparsity", "-0.1"], ["--sparsity=-0.1", ""]] {
        let mut c = lopper();
        c.args([
            "prune",
            "/nonexistent-model",
            "--method",
            "magnitude",
            "--out",
            "x.lop",
        ]);
        c.args(flag.iter().filter(|a| !a.is_empty()));
        fails_cleanly(c.output().unwrap(), &["sparsity -0.1 is outside [0, 1)"]);
    }
    // A 3 MB one-line recipe: refused with a short message. Just under the limit but one
    // line: the TOML error quoting it is cut.
    let recipe = dir.join("huge.toml");
    for text in [
        format!("model = \"{}\"\n", "x".repeat(3 << 20)),
        format!("model = {}\n", "x".repeat(500_000)),
    ] {
        std::fs::write(&recipe, text).unwrap();
        let out = lopper()
            .args(["train", "--recipe"])
            .arg(&recipe)
            .arg("--out")
            .arg(dir.join("o"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.len() < 3000, "{} bytes of error", err.len());
        fails_cleanly(out, &["huge.toml"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The committed tiny Hugging Face encoder (hidden 8, one layer; built by fuzz/make_seeds.py),
/// copied to `dir` with every embedding LayerNorm γ set to `gamma`.
fn tiny_encoder(dir: &Path, gamma: f32) -> PathBuf {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lopper-model/tests/fixtures/tiny-bert");
    let dst = dir.join("tiny-bert");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let path = dst.join("model.safetensors");
    let mut st = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    let offs = &header["embeddings.LayerNorm.weight"]["data_offsets"];
    let (a, b) = (
        offs[0].as_u64().unwrap() as usize,
        offs[1].as_u64().unwrap() as usize,
    );
    for c in st[8 + n + a..8 + n + b].chunks_exact_mut(4) {
        c.copy_from_slice(&gamma.to_le_bytes());
    }
    std::fs::write(&path, st).unwrap();
    dst
}

#[test]
fn an_encoder_that_overflows_when_used_is_refused_by_a_probe_pass() {
    let dir = scratch("encoder-probe");
    let fine = tiny_encoder(&dir.join("fine"), 1.0);
    ok(lopper()
        .arg("embed")
        .arg(&fine)
        .args(["--text", "the quick brown fox"])
        .output()
        .unwrap());

    // A LayerNorm γ of 3e38 is finite, so it passes validation; used, it overflows.
    let hot = tiny_encoder(&dir.join("hot"), 3e38);
    fails_cleanly(
        lopper()
            .arg("embed")
            .arg(&hot)
            .args(["--text", "the quick brown fox"])
            .output()
            .unwrap(),
        &["tiny-bert", "probe sentences", "non-finite", "--allow-nan"],
    );
    // prune writes a model and prints no embeddings: without the probe it succeeded.
    fails_cleanly(
        lopper()
            .arg("prune")
            .arg(&hot)
            .args(["--method", "magnitude", "--sparsity", "0.5", "--out"])
            .arg(dir.join("pruned.lop"))
            .output()
            .unwrap(),
        &["tiny-bert", "probe sentences", "overflow"],
    );
    assert!(!dir.join("pruned.lop").exists());
    // inspect shows the file and warns.
    let out = ok(lopper().arg("inspect").arg(&hot).output().unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains("probe sentences"));
}
