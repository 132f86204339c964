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
