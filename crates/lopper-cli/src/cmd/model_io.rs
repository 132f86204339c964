//! Loading `.lop` (and `.onnx`) files for the model subcommands, and what an export records about the data.

use std::path::{Path, PathBuf};

use lopper_model::graph::Preprocess;
use lopper_model::runtime::plan::digest;
use lopper_model::Model;
use lopper_train::data::mnist::Dataset;
use lopper_train::export::{ExportMeta, FASHION_LABELS};

/// A model file read once: the validated model, its size and its digest (the plan cache key).
pub struct Loaded {
    pub model: Model,
    pub path: PathBuf,
    pub digest: String,
    pub file_bytes: u64,
}

impl Loaded {
    /// The plan for `batch` and `threads`, from the cache next to the file or measured now
    /// (and cached); `true` when it came from the cache.
    pub fn plan(
        &self,
        batch: usize,
        threads: usize,
        mode: lopper_model::PlanMode,
    ) -> anyhow::Result<(lopper_model::Plan, bool)> {
        Ok(lopper_model::runtime::plan_cached(
            &self.path,
            &self.model,
            &self.digest,
            batch,
            threads,
            mode,
        )?)
    }
}

/// Reads, validates and probes a model file (see [`load_checked`]); non-finite probe outputs are
/// an error.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    load_checked(path, false)
}

/// Reads and validates a model file (the read stops at `LOPPER_MAX_FILE_BYTES`), then runs one
/// forward pass on probe inputs (black, mid-grey and white pixels through the file's
/// preprocessing; else 0, 1 and −1): weights that overflow when used (finite, but ±3e38) give
/// NaN there, and are refused unless `allow_nan`.
pub fn load_checked(path: &Path, allow_nan: bool) -> anyhow::Result<Loaded> {
    // An .onnx file is imported in memory: every model command takes ONNX directly.
    let (model, bytes) = lopper_model::import::read_any(path)?;
    let loaded = Loaded {
        model,
        path: path.to_path_buf(),
        digest: digest(&bytes),
        file_bytes: bytes.len() as u64,
    };
    if !allow_nan {
        probe(&loaded)?;
    }
    Ok(loaded)
}

fn probe(loaded: &Loaded) -> anyhow::Result<()> {
    use lopper_model::runtime::plan::{make_plan, PlanMode};
    let model = &loaded.model;
    let f = model.graph.input_len();
    let values: Vec<f32> = match model.graph.input.preprocess {
        Some(p) => [0.0f32, 128.0, 255.0]
            .iter()
            .map(|px| (px * p.scale - p.mean) / p.std)
            .collect(),
        None => vec![0.0, 1.0, -1.0],
    };
    let x: Vec<f32> = values
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, f))
        .collect();
    let plan = make_plan(model, &loaded.digest, values.len(), 1, PlanMode::Stored)?;
    let out = lopper_model::Executor::new(model, &plan)?.run(&x)?.to_vec();
    super::check_finite(
        out.into_iter(),
        &format!(
            "{}: a forward pass on probe inputs (constant images) gives non-finite values, so the \
             weights or parameters overflow when used; the output",
            loaded.path.display()
        ),
    )
}

/// Labels and preprocessing of a dataset folder: Fashion-MNIST class names when the folder is
/// Fashion-MNIST, digits otherwise (MNIST has the same layout).
pub fn export_meta(model_name: &str, data: &Dataset) -> ExportMeta {
    let fashion = data
        .dir
        .to_string_lossy()
        .to_ascii_lowercase()
        .contains("fashion");
    let labels = if fashion {
        FASHION_LABELS.iter().map(|s| s.to_string()).collect()
    } else {
        (0..10).map(|d| d.to_string()).collect()
    };
    ExportMeta {
        name: model_name.to_string(),
        preprocess: Some(Preprocess {
            scale: 1.0 / 255.0,
            mean: data.mean,
            std: data.std,
        }),
        labels,
    }
}
