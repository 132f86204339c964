//! Importers: models from other tools become lopper graphs. [`onnx`] reads ONNX files; the
//! Hugging Face BERT importer still lives in [`crate::bert::import`].

pub mod onnx;

use std::path::Path;

use crate::error::ModelError;
use crate::file::Model;

/// Whether `path` names an ONNX file (by its extension, as ONNX tools name them).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Reads a graph model from a `.lop` or `.onnx` file (imported in memory), with the file's
/// bytes (the plan cache is keyed by their digest). Errors name the file.
pub fn read_any(path: &Path) -> Result<(Model, Vec<u8>), ModelError> {
    let bytes = crate::file::read_model_bytes(path)?;
    let model = if is_onnx(path) {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        crate::onnx::decode(&bytes)
            .and_then(|m| onnx::import_model(&m, dir, &stem))
            .map_err(|e| e.in_file(path))?
    } else {
        Model::from_bytes(&bytes).map_err(|e| e.in_file(path))?
    };
    Ok((model, bytes))
}
