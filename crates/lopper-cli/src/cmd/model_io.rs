//! Loading `.lop` files for the model subcommands, and what an export records about the data.

use std::path::{Path, PathBuf};

use anyhow::Context;
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

pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let limit = lopper_model::file::max_file_bytes();
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot open the model file", path.display()))?
        .len();
    if size > limit {
        anyhow::bail!(
            "{}: file is {size} bytes, over the limit of {limit} bytes (set LOPPER_MAX_FILE_BYTES to raise it)",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let model = Model::from_bytes(&bytes).map_err(|e| e.in_file(path))?;
    Ok(Loaded {
        model,
        path: path.to_path_buf(),
        digest: digest(&bytes),
        file_bytes: bytes.len() as u64,
    })
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
