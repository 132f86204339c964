//! Helpers shared by the CLI's end-to-end tests: run `lopper`, demand success or a clean
//! failure (exit 2, no panic, the message naming what is wrong), parse JSON output.

#![allow(dead_code)]

use std::process::{Command, Output};

pub fn lopper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lopper"))
}

pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn fails_cleanly(out: Output, mentions: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for m in mentions {
        assert!(err.contains(m), "error does not mention '{m}': {err}");
    }
}

/// Trains `recipe` (TOML text, written to `dir/recipe.toml`) with `lopper train --json` and the
/// extra flags into `dir/run`, demanding success; returns the run folder.
pub fn train(dir: &std::path::Path, recipe: &str, extra: &[&str]) -> std::path::PathBuf {
    let path = dir.join("recipe.toml");
    std::fs::write(&path, recipe).unwrap();
    let out = dir.join("run");
    ok(lopper()
        .args(["train", "--json"])
        .args(extra)
        .arg("--recipe")
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap());
    out
}
