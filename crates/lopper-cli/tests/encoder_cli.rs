//! `lopper embed`, `lopper prune` and `lopper bench` on all-MiniLM-L6-v2 (fetched by
//! `scripts/fetch-minilm.sh`, or `LOPPER_MINILM`): the documented JSON fields, the report files
//! next to the pruned model, the pruned `.lop` running through `embed` and `bench`, and clear
//! errors (exit 2, no panic) for bad flags and files. No timing is asserted.

use std::path::PathBuf;
mod common;

use common::{fails_cleanly, json, lopper, ok};

fn model_dir() -> PathBuf {
    let dir = lopper_model::bert::import::minilm_cache_dir();
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 is not at {}: run scripts/fetch-minilm.sh (or set LOPPER_MINILM)",
        dir.display()
    );
    dir
}

#[test]
fn encoder_commands_end_to_end() {
    let model = model_dir();
    let dir = std::env::temp_dir().join(format!("lopper-cli-encoder-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/sentences");
    let calib = dir.join("calib.txt");
    let eval = dir.join("eval.txt");
    let head = |src: &str, n: usize| -> String {
        let t = std::fs::read_to_string(root.join(src)).unwrap();
        t.lines().take(n).collect::<Vec<_>>().join("\n") + "\n"
    };
    std::fs::write(&calib, head("calib.txt", 16)).unwrap();
    std::fs::write(&eval, head("eval.txt", 12)).unwrap();

    // embed from the folder.
    let out = ok(lopper()
        .arg("embed")
        .arg(&model)
        .args([
            "--json",
            "--text",
            "A stitch in time saves nine.",
            "--text",
            "Haste makes waste.",
        ])
        .output()
        .unwrap());
    let v = json(&out);
    assert_eq!(v["dim"], 384);
    assert_eq!(v["normalized"], true);
    let e = v["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[0]["embedding"].as_array().unwrap().len(), 384);

    // prune with wanda, report next to the model.
    let lop = dir.join("wanda50.lop");
    let out = ok(lopper()
        .arg("prune")
        .arg(&model)
        .args([
            "--method",
            "wanda",
            "--sparsity",
            "0.5",
            "--json",
            "--calib",
        ])
        .arg(&calib)
        .arg("--eval")
        .arg(&eval)
        .arg("--out")
        .arg(&lop)
        .output()
        .unwrap());
    let r = json(&out);
    assert!((r["sparsity"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(r["per_layer"].as_array().unwrap().len(), 36);
    assert_eq!(r["calib_sentences"], 16);
    let f = &r["fidelity"];
    for k in ["mean_cosine", "min_cosine", "spearman"] {
        let x = f[k].as_f64().unwrap();
        assert!(x > 0.0 && x <= 1.0 + 1e-9, "{k} = {x}");
    }
    assert!(dir.join("wanda50.report.json").exists());
    let md = std::fs::read_to_string(dir.join("wanda50.report.md")).unwrap();
    assert!(md.contains("mean cosine"), "{md}");

    // The pruned file embeds and benchmarks.
    let out = ok(lopper()
        .arg("embed")
        .arg(&lop)
        .arg("--json")
        .arg("--file")
        .arg(&eval)
        .output()
        .unwrap());
    assert_eq!(json(&out)["embeddings"].as_array().unwrap().len(), 12);
    let out = ok(lopper()
        .arg("bench")
        .arg(&lop)
        .args([
            "--json",
            "--quick",
            "--batch",
            "1",
            "--threads",
            "1",
            "--seq",
            "16",
        ])
        .output()
        .unwrap());
    let rec: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    for k in [
        "batch",
        "seq",
        "threads",
        "dense_ns",
        "sparse_ns",
        "speedup",
        "file_bytes",
        "dense_file_bytes",
    ] {
        assert!(rec.get(k).is_some(), "bench record lacks {k}: {rec}");
    }
    assert!((rec["sparsity"].as_f64().unwrap() - 0.5).abs() < 1e-6);

    let out = ok(lopper()
        .arg("inspect")
        .arg(&lop)
        .args(["--json", "--seq", "16"])
        .output()
        .unwrap());
    let v = json(&out);
    assert_eq!(v["layers"].as_array().unwrap().len(), 36);
    assert_eq!(v["notes"]["method"], "wanda");
    assert!((v["layers"][0]["density"].as_f64().unwrap() - 0.5).abs() < 1e-9);

    // 4x1 blocks: exact sparsity, and `--format auto` stores them as BSR 4x1 (the smallest).
    let blk = dir.join("mag4x1.lop");
    let r = json(&ok(lopper()
        .arg("prune")
        .arg(&model)
        .args([
            "--method",
            "magnitude",
            "--sparsity",
            "0.75",
            "--pattern",
            "4x1",
            "--json",
            "--out",
        ])
        .arg(&blk)
        .output()
        .unwrap()));
    assert!((r["sparsity"].as_f64().unwrap() - 0.75).abs() < 1e-9);
    assert_eq!(r["pattern"], "4x1");
    let v = json(&ok(lopper()
        .arg("inspect")
        .arg(&blk)
        .args(["--json", "--seq", "16"])
        .output()
        .unwrap()));
    for l in v["layers"].as_array().unwrap() {
        assert_eq!(l["format"], "bsr4x1", "{l}");
    }

    // Bad input.
    let prune = |extra: &[&str]| {
        let mut c = lopper();
        c.arg("prune")
            .arg(&model)
            .args(["--out"])
            .arg(dir.join("x.lop"))
            .args(extra);
        c.output().unwrap()
    };
    fails_cleanly(
        prune(&["--method", "magnitude", "--sparsity", "1.0"]),
        &["outside [0, 1)"],
    );
    fails_cleanly(
        prune(&["--method", "wanda", "--sparsity", "0.5"]),
        &["--calib"],
    );
    fails_cleanly(
        prune(&["--method", "magnitude", "--pattern", "2-4"]),
        &["2-4"],
    );
    fails_cleanly(
        prune(&["--method", "magnitude", "--pattern", "4x1"]),
        &["4x1", "--sparsity"],
    );
    fails_cleanly(
        prune(&[
            "--method",
            "magnitude",
            "--pattern",
            "4x2",
            "--sparsity",
            "0.5",
        ]),
        &["Rx1"],
    );
    fails_cleanly(
        prune(&[
            "--method",
            "magnitude",
            "--pattern",
            "0x1",
            "--sparsity",
            "0.5",
        ]),
        &["1 to 64 rows"],
    );
    fails_cleanly(
        prune(&[
            "--method",
            "magnitude",
            "--pattern",
            "2:4",
            "--sparsity",
            "0.7",
        ]),
        &["disagrees"],
    );
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    fails_cleanly(
        prune(&[
            "--method",
            "wanda",
            "--sparsity",
            "0.5",
            "--calib",
            empty.to_str().unwrap(),
        ]),
        &["empty.txt", "no sentences"],
    );
    fails_cleanly(
        prune(&[
            "--method",
            "wanda",
            "--sparsity",
            "0.5",
            "--calib",
            calib.to_str().unwrap(),
            "--eval",
            calib.to_str().unwrap(),
        ]),
        &["disjoint"],
    );
    fails_cleanly(
        lopper()
            .args(["embed", "/nonexistent/folder", "--text", "x"])
            .output()
            .unwrap(),
        &["/nonexistent/folder"],
    );
    let truncated = dir.join("truncated.lop");
    let bytes = std::fs::read(&lop).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    fails_cleanly(
        lopper()
            .arg("embed")
            .arg(&truncated)
            .args(["--text", "x"])
            .output()
            .unwrap(),
        &["truncated.lop"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn seq_is_bounded_by_the_models_longest_sequence() {
    // all-MiniLM-L6-v2 embeds at most 256 tokens; its position table has 512.
    for cmd in ["bench", "inspect"] {
        fails_cleanly(
            lopper()
                .arg(cmd)
                .arg(model_dir())
                .args(["--seq", "300", "--batch", "1", "--threads", "1"])
                .output()
                .unwrap(),
            &["--seq 300 is outside 2..=256"],
        );
    }
}
