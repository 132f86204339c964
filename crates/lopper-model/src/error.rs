//! Typed errors of the model crate. Every error that comes from a file carries the file's path
//! (added by [`ModelError::in_file`]) so the CLI can print "FILE: what is wrong".

use std::path::PathBuf;

use lopper_kernels::{FormatError, KernelError};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<ModelError>,
    },
    #[error("file is over the limit of {limit} bytes (set {var} to raise it)")]
    FileTooLarge { limit: u64, var: &'static str },
    #[error("truncated: {actual} of {expected} bytes")]
    Truncated { actual: u64, expected: u64 },
    #[error("the tensor data does not match the file's digest (data_xxh3_128 {expected}, computed {actual}): the file is corrupt; --no-verify skips this check")]
    Digest { expected: String, actual: String },
    #[error("not a valid safetensors container: {0}")]
    Container(String),
    #[error("not a lopper model: {0}")]
    NotLopper(String),
    #[error("format version {found} is not supported (this build reads version {supported})")]
    Version { found: String, supported: u32 },
    #[error("graph JSON is invalid: {0}")]
    GraphJson(String),
    #[error("graph: {0}")]
    Graph(String),
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },
    #[error("weight '{name}': {source}")]
    Weight {
        name: String,
        #[source]
        source: FormatError,
    },
    #[error("node '{node}': {source}")]
    Kernel {
        node: String,
        #[source]
        source: KernelError,
    },
    #[error("input has {actual} values, expected {expected} ({batch} examples of {per_example})")]
    InputSize {
        actual: usize,
        expected: usize,
        batch: usize,
        per_example: usize,
    },
    #[error("plan: {0}")]
    Plan(String),
    /// An ONNX file lopper cannot read or a graph it cannot import (names the node and op).
    #[error("ONNX: {0}")]
    Onnx(String),
    /// An input file (`.npy`, `.npz`) that does not fit the model; the message names the file.
    #[error("{0}")]
    Input(String),
    /// A model configuration (Hugging Face `config.json`, pooling, tokenizer) lopper cannot run.
    #[error("{0}")]
    Config(String),
}

impl ModelError {
    /// Attaches the file this error came from.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            e @ (ModelError::Io { .. } | ModelError::InFile { .. }) => e,
            e => ModelError::InFile {
                path: path.into(),
                source: Box::new(e),
            },
        }
    }

    pub(crate) fn graph(msg: impl Into<String>) -> Self {
        ModelError::Graph(msg.into())
    }

    pub(crate) fn tensor(name: &str, message: impl Into<String>) -> Self {
        ModelError::Tensor {
            name: name.to_string(),
            message: message.into(),
        }
    }
}
