//! Crash safety of `lopper train`: a run killed anywhere (inside every step of every checkpoint
//! write through the `LOPPER_FAULT_AT` hook, and by SIGKILL at seeded random moments) and then
//! resumed with `--resume` finishes with the same `model.lop`, byte for byte, and the same
//! `report.json` apart from wall-clock timings (`seconds`, `epoch_seconds`), as a run never
//! interrupted. Also: resume refuses a checkpoint whose parts come from different saves, or a
//! different recipe, naming the part or field.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails_cleanly, lopper, ok};

/// Three epochs, pruned during training and once more after the last epoch, so every kind of
/// checkpoint (mid-training, after the final prune) is written: four checkpoints in all.
const RECIPE: &str = "model = \"lenet300\"\nseed = 3\nepochs = 3\ntrain_limit = 1500\n\
[pruning]\nschedule = { kind = \"periodic\", rate = 0.5, every = 1, start = 1, target = 0.9 }\n";
/// Steps of one checkpoint write (`lopper_train::checkpoint::Step`).
const STEPS_PER_CHECKPOINT: u64 = 7;
const CHECKPOINTS: u64 = 4;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lopper-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn train_cmd(recipe: &Path, out: &Path, resume: bool) -> Command {
    let mut c = lopper();
    c.args(["train", "--json", "--test-limit", "500", "--recipe"])
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        c.arg("--resume");
    }
    c
}

/// `report.json` without wall-clock fields, and `model.lop`'s bytes.
fn result(out: &Path) -> (serde_json::Value, Vec<u8>) {
    let mut report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("seconds");
                m.remove("epoch_seconds");
                // Paths differ between the runs' folders.
                m.remove("checkpoint");
                m.remove("model_file");
                m.remove("recipe");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut report);
    (report, std::fs::read(out.join("model.lop")).unwrap())
}

fn finish(recipe: &Path, out: &Path) {
    let o = train_cmd(recipe, out, true).output().unwrap();
    ok(o);
}

/// A tiny deterministic generator for the kill times (the test's seed is printed).
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn killed_anywhere_then_resumed_gives_the_uninterrupted_result() {
    let root = scratch("kills");
    let recipe = root.join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let straight = root.join("straight");
    let started = Instant::now();
    ok(train_cmd(&recipe, &straight, false).output().unwrap());
    let full = started.elapsed();
    let expected = result(&straight);

    // Every step of every checkpoint write: abort there, then resume.
    let mut kills = 0;
    for at in 1..=STEPS_PER_CHECKPOINT * CHECKPOINTS {
        let out = root.join(format!("fault-{at}"));
        let o = train_cmd(&recipe, &out, false)
            .env("LOPPER_FAULT_AT", at.to_string())
            .output()
            .unwrap();
        assert!(!o.status.success(), "fault point {at} was never reached");
        kills += 1;
        finish(&recipe, &out);
        assert_eq!(result(&out), expected, "killed at checkpoint step {at}");
        let _ = std::fs::remove_dir_all(&out);
    }

    // SIGKILL at random moments of a run (and of the resumed run), seeded.
    let seed = 20261202u64;
    eprintln!("kill-time seed {seed}, uninterrupted run {full:?}");
    let mut rng = seed;
    for k in 0..8 {
        let out = root.join(format!("kill-{k}"));
        let mut resume = false;
        for _ in 0..2 {
            let delay = Duration::from_millis(lcg(&mut rng) % (full.as_millis() as u64 + 1));
            let mut child = train_cmd(&recipe, &out, resume).spawn().unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            let _ = child.wait();
            kills += 1;
            resume = true;
        }
        finish(&recipe, &out);
        assert_eq!(result(&out), expected, "random kill run {k}");
        let _ = std::fs::remove_dir_all(&out);
    }
    assert!(kills >= 20);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn resume_refuses_mixed_parts_and_a_changed_recipe() {
    let root = scratch("refuse");
    let recipe = root.join("r.toml");
    std::fs::write(&recipe, RECIPE).unwrap();
    let out = root.join("run");
    let mut first = train_cmd(&recipe, &out, false);
    first.args(["--stop-after", "1"]);
    ok(first.output().unwrap());
    let ckpt = out.join("checkpoint");
    let saved_optim = std::fs::read(ckpt.join("optimizer.bpk")).unwrap();
    let mut second = train_cmd(&recipe, &out, true);
    second.args(["--stop-after", "1"]);
    ok(second.output().unwrap());

    // A field that changes the result: refused, naming it.
    let changed = root.join("changed.toml");
    std::fs::write(&changed, RECIPE.replace("target = 0.9", "target = 0.8")).unwrap();
    fails_cleanly(
        train_cmd(&changed, &out, true).output().unwrap(),
        &["pruning.schedule.target", "different recipe"],
    );

    // The optimizer of an earlier save beside this save's model: refused, naming the part.
    std::fs::write(ckpt.join("optimizer.bpk"), saved_optim).unwrap();
    fails_cleanly(
        train_cmd(&recipe, &out, true).output().unwrap(),
        &["optimizer.bpk", "different saves"],
    );
    let _ = std::fs::remove_dir_all(&root);
}
