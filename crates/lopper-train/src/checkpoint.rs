//! Training checkpoints as one atomic unit.
//!
//! A checkpoint is the folder `RUN/checkpoint/` holding `model.bpk` (burn record), `optimizer.bpk`,
//! `state.json` (loop state and the recipe it was trained with) and `manifest.json` (size and
//! XXH3-128 digest of each of the three, written last). It is written whole under
//! `RUN/checkpoint.tmp/` and then swapped in: `checkpoint` → `checkpoint.old`, `checkpoint.tmp` →
//! `checkpoint`, `checkpoint.old` removed.
//!
//! Invariants:
//! - at every instant, `checkpoint/` or (between the two renames) `checkpoint.old/` is a complete
//!   checkpoint, so a kill at any point leaves one to resume from ([`locate`]);
//! - a folder whose manifest is missing or disagrees with its parts is refused ([`verify`]), so a
//!   model is never paired with another epoch's optimizer or state.
//!
//! Runs written before this layout (the three files directly in `RUN/`, no manifest) still load.
//!
//! Fault injection for the crash tests: with `LOPPER_FAULT_AT=n` the process aborts (as a
//! `kill -9` would stop it, nothing flushed or cleaned up) at the n-th step of checkpoint writing
//! in this process, counting from 1; the steps are listed in [`Step`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

pub const DIR: &str = "checkpoint";
pub const MODEL_FILE: &str = "model.bpk";
pub const OPTIM_FILE: &str = "optimizer.bpk";
pub const STATE_FILE: &str = "state.json";
pub const MANIFEST_FILE: &str = "manifest.json";
const TMP_DIR: &str = "checkpoint.tmp";
const OLD_DIR: &str = "checkpoint.old";

/// Where a checkpoint's parts are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
    pub model: PathBuf,
    pub optim: PathBuf,
    pub state: PathBuf,
}

impl Paths {
    fn in_dir(dir: PathBuf) -> Self {
        Self {
            model: dir.join(MODEL_FILE),
            optim: dir.join(OPTIM_FILE),
            state: dir.join(STATE_FILE),
            dir,
        }
    }
}

/// The complete checkpoint of the run folder `run`, if it has one: `checkpoint/`, else
/// `checkpoint.old/` (a kill between the two renames of a swap), else the three files directly in
/// `run` (runs from before the manifest).
pub fn locate(run: &Path) -> Option<Paths> {
    for d in [DIR, OLD_DIR] {
        let p = Paths::in_dir(run.join(d));
        if p.dir.join(MANIFEST_FILE).is_file() {
            return Some(p);
        }
    }
    let legacy = Paths::in_dir(run.to_path_buf());
    (legacy.model.is_file() && legacy.state.is_file()).then_some(legacy)
}

/// The complete checkpoint of the training folder `run`, checked against its manifest: what
/// export and analysis read.
pub fn open(run: &Path) -> Result<Paths, CheckpointError> {
    let paths = locate(run).ok_or_else(|| {
        fail(
            run,
            "holds no training checkpoint (a `lopper train --out` folder has one)",
        )
    })?;
    verify(&paths)?;
    Ok(paths)
}

/// One part's size and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub file: String,
    pub bytes: u64,
    pub xxh3_128: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub parts: Vec<Part>,
}

const MANIFEST_FORMAT: &str = "lopper-checkpoint-1";

/// A checkpoint that cannot be used; `path` is the file at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct CheckpointError {
    pub path: PathBuf,
    pub message: String,
}

fn fail(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn digest_file(path: &Path) -> Result<(u64, String), CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| fail(path, e.to_string()))?;
    let h = xxhash_rust::xxh3::xxh3_128(&bytes);
    Ok((bytes.len() as u64, format!("{h:032x}")))
}

/// Checks that every part of `paths` matches the manifest written with it. Legacy checkpoints
/// (no manifest, files directly in the run folder) pass unchecked.
pub fn verify(paths: &Paths) -> Result<(), CheckpointError> {
    let mpath = paths.dir.join(MANIFEST_FILE);
    if !mpath.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&mpath).map_err(|e| fail(&mpath, e.to_string()))?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| fail(&mpath, format!("not a lopper checkpoint manifest: {e}")))?;
    if m.format != MANIFEST_FORMAT {
        return Err(fail(
            &mpath,
            format!("format '{}', expected '{MANIFEST_FORMAT}'", m.format),
        ));
    }
    for name in [MODEL_FILE, OPTIM_FILE, STATE_FILE] {
        let part = m
            .parts
            .iter()
            .find(|p| p.file == name)
            .ok_or_else(|| fail(&mpath, format!("lists no '{name}'")))?;
        let path = paths.dir.join(name);
        let (bytes, digest) = digest_file(&path)?;
        if bytes != part.bytes || digest != part.xxh3_128 {
            return Err(fail(
                &path,
                format!(
                    "does not match the checkpoint's manifest ({bytes} bytes, digest {digest}; \
                     manifest: {} bytes, {}): the parts of this checkpoint come from different \
                     saves, so it cannot be resumed",
                    part.bytes, part.xxh3_128
                ),
            ));
        }
    }
    Ok(())
}

/// The steps of a checkpoint write, in order; `LOPPER_FAULT_AT` stops the process before one.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    Model,
    Optimizer,
    State,
    Manifest,
    RetireOld,
    SwapIn,
    RemoveOld,
}

static STEPS: AtomicU64 = AtomicU64::new(0);

/// Aborts the process here when `LOPPER_FAULT_AT` names this step's number (fault injection for
/// the crash tests; a no-op otherwise).
fn fault_point(_step: Step) {
    let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(at) = std::env::var("LOPPER_FAULT_AT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        if n == at {
            std::process::abort();
        }
    }
}

fn sync_file(path: &Path) -> Result<(), CheckpointError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| fail(path, e.to_string()))
}

fn sync_dir(dir: &Path) {
    // Directory fsync makes the renames durable across power loss; some filesystems refuse it,
    // which is harmless for the kill-safety this module guarantees.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes a checkpoint into `run` atomically. `write_model` and `write_optim` save burn's
/// records to the paths they are given; `state` is the serialised loop state.
pub fn save(
    run: &Path,
    write_model: impl FnOnce(&Path) -> Result<(), String>,
    write_optim: impl FnOnce(&Path) -> Result<(), String>,
    state: &[u8],
) -> Result<Paths, CheckpointError> {
    let tmp = run.join(TMP_DIR);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| fail(&tmp, e.to_string()))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| fail(&tmp, e.to_string()))?;
    let p = Paths::in_dir(tmp.clone());
    fault_point(Step::Model);
    write_model(&p.model).map_err(|m| fail(&p.model, m))?;
    fault_point(Step::Optimizer);
    write_optim(&p.optim).map_err(|m| fail(&p.optim, m))?;
    fault_point(Step::State);
    std::fs::File::create(&p.state)
        .and_then(|mut f| f.write_all(state))
        .map_err(|e| fail(&p.state, e.to_string()))?;
    let mut parts = Vec::new();
    for (name, path) in [
        (MODEL_FILE, &p.model),
        (OPTIM_FILE, &p.optim),
        (STATE_FILE, &p.state),
    ] {
        sync_file(path)?;
        let (bytes, xxh3_128) = digest_file(path)?;
        parts.push(Part {
            file: name.into(),
            bytes,
            xxh3_128,
        });
    }
    fault_point(Step::Manifest);
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        parts,
    };
    let mpath = tmp.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| fail(&mpath, e.to_string()))?;
    std::fs::write(&mpath, json).map_err(|e| fail(&mpath, e.to_string()))?;
    sync_file(&mpath)?;
    sync_dir(&tmp);
    let cur = run.join(DIR);
    let old = run.join(OLD_DIR);
    fault_point(Step::RetireOld);
    if cur.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| fail(&old, e.to_string()))?;
        }
        std::fs::rename(&cur, &old).map_err(|e| fail(&cur, e.to_string()))?;
    }
    fault_point(Step::SwapIn);
    std::fs::rename(&tmp, &cur).map_err(|e| fail(&tmp, e.to_string()))?;
    sync_dir(run);
    fault_point(Step::RemoveOld);
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| fail(&old, e.to_string()))?;
    }
    Ok(Paths::in_dir(cur))
}

/// The first place where two JSON values differ: its path (dotted, with `[i]` for array items,
/// e.g. `pruning.schedule.target`) and the two values there (`null` for a missing key).
pub fn first_difference<'a>(
    a: &'a serde_json::Value,
    b: &'a serde_json::Value,
) -> Option<(String, &'a serde_json::Value, &'a serde_json::Value)> {
    use serde_json::Value;
    static NULL: Value = Value::Null;
    let under = |step: String, (rest, va, vb): (String, &'a Value, &'a Value)| {
        let path = if rest.is_empty() || rest.starts_with('[') {
            format!("{step}{rest}")
        } else {
            format!("{step}.{rest}")
        };
        (path, va, vb)
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let (va, vb) = (x.get(k).unwrap_or(&NULL), y.get(k).unwrap_or(&NULL));
                first_difference(va, vb).map(|d| under(k.clone(), d))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (va, vb))| {
                first_difference(va, vb).map(|d| under(format!("[{i}]"), d))
            })
        }
        _ if a == b => None,
        _ => Some((String::new(), a, b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) -> Result<(), String> {
        std::fs::write(p, s).map_err(|e| e.to_string())
    }

    #[test]
    fn save_swaps_a_whole_folder_and_verify_catches_mixed_parts() {
        let run = std::env::temp_dir().join(format!("lopper-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).unwrap();
        let p1 = save(&run, |p| write(p, "m1"), |p| write(p, "o1"), b"s1").unwrap();
        verify(&p1).unwrap();
        let p2 = save(&run, |p| write(p, "m2"), |p| write(p, "o2"), b"s2").unwrap();
        assert_eq!(p1, p2);
        assert_eq!(std::fs::read(&p2.model).unwrap(), b"m2");
        assert!(!run.join(OLD_DIR).exists() && !run.join(TMP_DIR).exists());
        assert_eq!(locate(&run), Some(p2.clone()));
        // A part from another save: refused, and the message names the part.
        std::fs::write(&p2.optim, "o1").unwrap();
        let e = verify(&p2).unwrap_err();
        assert!(e.path.ends_with(OPTIM_FILE), "{e}");
        assert!(e.message.contains("different saves"), "{e}");
        // A kill between the two renames leaves only checkpoint.old: it is found.
        std::fs::rename(run.join(DIR), run.join(OLD_DIR)).unwrap();
        assert_eq!(locate(&run).unwrap().dir, run.join(OLD_DIR));
        std::fs::remove_dir_all(&run).unwrap();
    }

    #[test]
    fn first_difference_names_the_field() {
        let a =
            serde_json::json!({"seed": 1, "pruning": {"schedule": {"target": 0.9}}, "l": [1, 2]});
        let b =
            serde_json::json!({"seed": 1, "pruning": {"schedule": {"target": 0.8}}, "l": [1, 2]});
        let json = |v: f64| serde_json::json!(v);
        let (path, x, y) = first_difference(&a, &b).unwrap();
        assert_eq!(
            (path.as_str(), x, y),
            ("pruning.schedule.target", &json(0.9), &json(0.8))
        );
        assert_eq!(first_difference(&a, &a), None);
        let c =
            serde_json::json!({"seed": 1, "pruning": {"schedule": {"target": 0.9}}, "l": [1, 3]});
        let (path, x, y) = first_difference(&a, &c).unwrap();
        assert_eq!(
            (path.as_str(), x, y),
            ("l[1]", &serde_json::json!(2), &serde_json::json!(3))
        );
    }
}
