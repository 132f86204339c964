//! The plan cache: `MODEL.lop.plan.json` next to a model file, one plan per (file digest, batch,
//! threads, ISA, mode).
//!
//! Invariants: the file is read bounded (`LOPPER_MAX_CACHE_BYTES`); an unreadable or unparsable
//! cache is a miss (warned, rewritten on the next store); a cached plan is used only when
//! [`cached_plan_problem`] finds nothing wrong with it for the model at hand; a store re-reads and
//! merges under an exclusive lock on `MODEL.lop.plan.json.lock`, so concurrent planners keep each
//! other's entries, and writes atomically.

use std::path::{Path, PathBuf};

use lopper_kernels::{FormatKind, Isa};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::file::Model;
use crate::runtime::exec::MmKernel;
use crate::runtime::plan::{make_plan, Plan, PlanMode};

/// `MODEL.plan.json` next to the model.
pub fn cache_path(model_path: &Path) -> PathBuf {
    let mut name = model_path.file_name().unwrap_or_default().to_os_string();
    name.push(".plan.json");
    model_path.with_file_name(name)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PlanCache {
    plans: Vec<Plan>,
}

/// The cache at `path`: a missing file is an empty cache; an unreadable, oversized
/// (`LOPPER_MAX_CACHE_BYTES`) or unparsable one is ignored with a warning and rewritten on the
/// next store.
fn read_cache(path: &Path) -> PlanCache {
    use crate::limits::{max_cache_bytes, read_file};
    if !path.exists() {
        return PlanCache::default();
    }
    let parsed = read_file(path, max_cache_bytes(), "LOPPER_MAX_CACHE_BYTES")
        .map_err(|e| e.to_string())
        .and_then(|b| parse_cache(&b))
        .map(|plans| PlanCache { plans });
    parsed.unwrap_or_else(|e| {
        eprintln!(
            "warning: {}: plan cache ignored and rewritten: {}",
            path.display(),
            crate::limits::clip(&e, 200)
        );
        PlanCache::default()
    })
}

/// The plans in the bytes of a plan cache, or why they do not parse. Each plan must still pass
/// [`cached_plan_problem`] for the model at hand before it is used.
pub fn parse_cache(bytes: &[u8]) -> Result<Vec<Plan>, String> {
    serde_json::from_slice::<PlanCache>(bytes)
        .map(|c| c.plans)
        .map_err(|e| e.to_string())
}

/// Why a cached plan cannot be used for `model`, if it cannot: it must cover exactly the model's
/// weight layers, with known kernels that accept the layer's format and dtype, and finite,
/// non-negative times. (A hand-edited or stale cache otherwise runs a kernel on a format it was
/// not measured on, or ranks candidates by nonsense.)
pub fn cached_plan_problem(p: &Plan, model: &Model) -> Option<String> {
    // Grouped and dilated convolutions have no plan entry: nothing is chosen for them.
    let planned = model
        .graph
        .nodes
        .iter()
        .filter(|n| n.op.weight().is_some() && !n.op.is_general_conv())
        .count();
    if p.layers.len() != planned {
        return Some(format!(
            "{} layers, the model has {planned} planned weight layers",
            p.layers.len()
        ));
    }
    for l in &p.layers {
        if !model.weights.contains_key(&l.weight) {
            return Some(format!("layer '{}': unknown weight '{}'", l.node, l.weight));
        }
        // Unknown format and dtype names were refused when the cache was parsed.
        let (kind, dtype) = (l.format, l.dtype);
        let fits = match MmKernel::by_name(&l.kernel) {
            None => return Some(format!("layer '{}': unknown kernel '{}'", l.node, l.kernel)),
            Some(MmKernel::Gemm(k)) => k.accepts.kind(kind) && k.dtype == dtype,
            Some(MmKernel::Direct(k)) => {
                let bsr = matches!(kind, FormatKind::Bsr { br: 4, bc: 1 });
                let csr = matches!(kind, FormatKind::Csr16 | FormatKind::Csr32);
                k.name.contains("bsr4x1") == bsr && (bsr || csr)
            }
            // Only where the file allows int8 activations, under the format it is planned as.
            Some(MmKernel::Q8 { dense, .. }) => {
                model
                    .graph
                    .weights
                    .get(&l.weight)
                    .is_some_and(|s| s.int8_acts)
                    && kind == MmKernel::q8_format(dense)
                    && dtype == lopper_kernels::Dtype::I8
            }
        };
        if !fits {
            return Some(format!(
                "layer '{}': kernel '{}' does not take {} {}",
                l.node, l.kernel, l.dtype, l.format
            ));
        }
        let times_ok = std::iter::once(l.ns)
            .chain(l.candidates.iter().map(|c| c.ns))
            .all(|t| t.is_finite() && t >= 0.0);
        if !times_ok {
            return Some(format!(
                "layer '{}': a time is negative or not finite",
                l.node
            ));
        }
    }
    None
}

/// Loads the cached plan for `model_path`, or measures one and caches it. Returns the plan and
/// whether it came from the cache.
///
/// Several processes may plan the same model at once: the store re-reads the cache under an
/// exclusive lock on `MODEL.plan.json.lock`, merges its plan in and writes atomically, so no
/// process loses another's entries.
pub fn plan_cached(
    model_path: &Path,
    model: &Model,
    digest: &str,
    batch: usize,
    threads: usize,
    mode: PlanMode,
) -> Result<(Plan, bool), ModelError> {
    let path = cache_path(model_path);
    let isa = Isa::selected().name();
    let matches = |p: &Plan| {
        p.model_digest == digest
            && p.batch == batch
            && p.threads == threads
            && p.isa == isa
            && p.mode == mode
    };
    if let Some(p) = read_cache(&path).plans.into_iter().find(|p| matches(p)) {
        match cached_plan_problem(&p, model) {
            None => return Ok((p, true)),
            Some(why) => eprintln!(
                "warning: {}: cached plan for batch {batch}, {threads} thread(s) ignored and \
                 re-measured: {why}",
                path.display()
            ),
        }
    }
    let plan = make_plan(model, digest, batch, threads, mode)?;
    if mode != PlanMode::Stored {
        // The cache is an optimisation: a read-only folder must not make planning fail.
        let _ = store(&path, &plan, digest, &matches);
    }
    Ok((plan, false))
}

fn store(
    path: &Path,
    plan: &Plan,
    digest: &str,
    matches: &dyn Fn(&Plan) -> bool,
) -> Result<(), ModelError> {
    let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
    lock_name.push(".lock");
    let lock_path = path.with_file_name(lock_name);
    let io = |source| ModelError::Io {
        path: lock_path.clone(),
        source,
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    lock.lock().map_err(io)?;
    let mut cache = read_cache(path);
    cache
        .plans
        .retain(|p| !matches(p) && p.model_digest == digest);
    cache.plans.push(plan.clone());
    let json = serde_json::to_vec_pretty(&cache).map_err(|e| ModelError::Plan(e.to_string()))?;
    let written = crate::file::write_atomic(path, &json);
    drop(lock);
    written
}
