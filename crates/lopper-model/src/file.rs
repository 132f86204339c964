//! Reading and writing `.lop` files (spec: `docs/format.md`).
//!
//! The reader stops reading at the size limit, checks the framing itself (so that a short file is
//! reported as truncated and a bad header entry names its tensor), checks the XXH3-128 digest of
//! the data buffer recorded in `__metadata__.data_xxh3_128` (absent in older files, skipped with
//! [`set_verify_digest`]), lets the safetensors crate check the header (offsets contiguous),
//! then checks lopper's own layer: metadata keys and version, the graph, every weight's
//! component tensors and invariants, and that the file holds no tensor the graph does not use.
//! Every error names the file. Writes go to a temporary file that is renamed into place.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use lopper_kernels::WeightMatrix;
use safetensors::tensor::TensorView;
use safetensors::{Dtype as StDtype, SafeTensors};

use crate::error::ModelError;
use crate::graph::{Graph, StorageFormat, WeightDtype, WeightSpec, FORMAT_VERSION};
use crate::weights::{self, RawTensor};

/// Default size limit: 1 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 30;

/// The size limit: `LOPPER_MAX_FILE_BYTES` when set to a number, else the default.
pub fn max_file_bytes() -> u64 {
    crate::limits::limit_from_env("LOPPER_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES)
}

/// A model in memory: the graph, its weight matrices (in their stored formats) and dense vectors.
#[derive(Debug, Clone)]
pub struct Model {
    pub graph: Graph,
    pub weights: BTreeMap<String, WeightMatrix>,
    pub vectors: BTreeMap<String, Vec<f32>>,
    /// Shape of every value, per example (from [`Graph::validate`]).
    pub shapes: HashMap<String, Vec<usize>>,
}

/// The spec a matrix is stored under.
pub fn spec_of(w: &WeightMatrix) -> WeightSpec {
    use lopper_kernels::FormatKind as K;
    let dtype = match w.dtype() {
        lopper_kernels::Dtype::F32 => WeightDtype::F32,
        lopper_kernels::Dtype::I8 => WeightDtype::I8,
    };
    let (format, block) = match w.kind() {
        K::Dense => (StorageFormat::Dense, None),
        K::Csr16 | K::Csr32 | K::Nm { .. } => (StorageFormat::Csr, None),
        K::Bsr { br, bc } => (StorageFormat::Bsr, Some([br, bc])),
    };
    WeightSpec {
        format,
        block,
        dtype,
        shape: [w.rows(), w.cols()],
        int8_acts: false,
    }
}

impl Model {
    /// Builds and validates a model; the graph's weight specs are set from the matrices.
    pub fn new(
        mut graph: Graph,
        weights: BTreeMap<String, WeightMatrix>,
        vectors: BTreeMap<String, Vec<f32>>,
    ) -> Result<Self, ModelError> {
        // Specs follow the matrices; a CSR matrix keeps a delta-encoded storage request.
        graph.weights = weights
            .iter()
            .map(|(k, w)| {
                let mut spec = spec_of(w);
                let old = graph.weights.get(k);
                let wants_delta = old.is_some_and(|s| s.format == StorageFormat::CsrDelta8);
                if wants_delta && spec.format == StorageFormat::Csr {
                    spec.format = StorageFormat::CsrDelta8;
                }
                // The permission survives re-encoding while the weights stay int8.
                spec.int8_acts = old.is_some_and(|s| s.int8_acts)
                    && spec.dtype == crate::graph::WeightDtype::I8
                    && spec.shape[1] <= lopper_kernels::int8::MAX_IN;
                (k.clone(), spec)
            })
            .collect();
        for (k, v) in &vectors {
            if v.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::tensor(k, "holds a non-finite value"));
            }
        }
        let shapes = graph.validate(&|n: &str| vectors.get(n).map(Vec::len))?;
        let used: HashSet<&str> = graph.nodes.iter().flat_map(|n| n.op.vectors()).collect();
        if let Some(extra) = vectors.keys().find(|k| !used.contains(k.as_str())) {
            return Err(ModelError::tensor(extra, "is not used by any node"));
        }
        Ok(Self {
            graph,
            weights,
            vectors,
            shapes,
        })
    }

    /// Reads and validates `path` with the limit from [`max_file_bytes`].
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        Self::read_with_limit(path, max_file_bytes())
    }

    pub fn read_with_limit(path: &Path, limit: u64) -> Result<Self, ModelError> {
        let bytes = read_limited(path, limit)?;
        Self::from_bytes(&bytes).map_err(|e| e.in_file(path))
    }

    /// Parses and validates a whole file held in memory.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let (st, meta) = lopper_container(bytes)?;
        if meta.contains_key("bert") {
            return Err(ModelError::NotLopper(
                "this file holds a transformer encoder, not a graph model (use lopper embed)"
                    .into(),
            ));
        }
        let graph_text = meta
            .get("graph")
            .ok_or_else(|| ModelError::NotLopper("__metadata__ has no graph".into()))?;
        let graph = Graph::from_json(graph_text)?;
        graph.validate_specs()?;
        let lookup = |name: &str| -> Option<TensorView<'_>> { st.tensor(name).ok() };
        let mut expected: HashSet<String> = HashSet::new();
        let mut wmap = BTreeMap::new();
        for (name, spec) in &graph.weights {
            expected.extend(weights::tensor_names(name, spec));
            let w = weights::from_tensors(name, spec, &lookup)?;
            wmap.insert(name.clone(), w);
        }
        let mut vectors = BTreeMap::new();
        for node in &graph.nodes {
            for v in node.op.vectors() {
                if vectors.contains_key(v) {
                    continue;
                }
                let t = lookup(v).ok_or_else(|| {
                    ModelError::graph(format!(
                        "node '{}' names tensor '{v}', which the file does not hold",
                        node.name
                    ))
                })?;
                if t.dtype() != StDtype::F32 || t.shape().len() != 1 {
                    return Err(ModelError::tensor(
                        v,
                        format!(
                            "must be a 1-D F32 vector, is {:?} {:?}",
                            t.dtype(),
                            t.shape()
                        ),
                    ));
                }
                expected.insert(v.to_string());
                vectors.insert(v.to_string(), weights::read_f32(&t, v)?);
            }
        }
        if let Some(extra) = st.names().into_iter().find(|n| !expected.contains(*n)) {
            return Err(ModelError::tensor(
                extra,
                "is in the file but the graph does not use it",
            ));
        }
        let stored_specs = graph.weights.clone();
        let model = Self::new(graph, wmap, vectors)?;
        // `new` recomputes specs from the matrices; they must agree with what the file said.
        if model.graph.weights != stored_specs {
            return Err(ModelError::graph(
                "weight specs disagree with the stored tensors",
            ));
        }
        Ok(model)
    }

    /// The whole file, in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let mut tensors: Vec<RawTensor> = Vec::new();
        for (name, w) in &self.weights {
            let format = self
                .graph
                .weights
                .get(name)
                .map_or(StorageFormat::Csr, |s| s.format);
            tensors.extend(weights::to_tensors(name, w, format)?.1);
        }
        for (name, v) in &self.vectors {
            tensors.push(RawTensor::f32(name.clone(), vec![v.len()], v));
        }
        let meta = [
            ("format", "lopper".to_string()),
            ("format_version", FORMAT_VERSION.to_string()),
            ("graph", self.graph.to_json()),
        ];
        Ok(serialize(&tensors, &meta))
    }

    /// Writes the file atomically; returns its size in bytes.
    pub fn write(&self, path: &Path) -> Result<u64, ModelError> {
        let bytes = self.to_bytes().map_err(|e| e.in_file(path))?;
        write_atomic(path, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Stored weights, nonzero weights and storage bytes of the weight matrices.
    /// Multiply-accumulates per example of the weight layers: `(dense, nonzero)`, where a
    /// layer's count is its weights (all, or the nonzero ones) times its output positions (1
    /// for a linear layer, `OH * OW` for a convolution).
    pub fn macs(&self) -> (usize, usize) {
        let mut dense = 0;
        let mut nonzero = 0;
        for node in &self.graph.nodes {
            let Some(w) = node.op.weight().and_then(|w| self.weights.get(w)) else {
                continue;
            };
            let positions = match (&node.op, self.shapes.get(&node.output)) {
                (crate::graph::Op::Conv2d { .. }, Some(s)) if s.len() == 3 => s[1] * s[2],
                _ => 1,
            };
            let d = w.to_dense();
            dense += d.data().len() * positions;
            nonzero += d.data().iter().filter(|v| **v != 0.0).count() * positions;
        }
        (dense, nonzero)
    }

    pub fn weight_stats(&self) -> (usize, usize, usize) {
        let mut total = 0;
        let mut nonzero = 0;
        let mut bytes = 0;
        for w in self.weights.values() {
            total += w.rows() * w.cols();
            w.for_each_entry(|_, _, v| nonzero += usize::from(v != 0.0));
            bytes += w.storage_bytes();
        }
        (total, nonzero, bytes)
    }
}

/// The safetensors byte layout, written here rather than with `safetensors::serialize` so that
/// the same model always gives the same bytes (the plan cache is keyed by the file's digest, and
/// the crate writes `__metadata__` from a `HashMap` in random order). Header keys are sorted
/// (serde_json's map is a BTreeMap), tensors follow in the order given, and the header is padded
/// with spaces to a multiple of 8 so the data buffer stays aligned.
pub(crate) fn serialize(tensors: &[RawTensor], meta: &[(&str, String)]) -> Vec<u8> {
    use serde_json::{json, Map, Value};
    let mut header = Map::new();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for t in tensors {
        hasher.update(&t.data);
    }
    let mut meta: Map<String, Value> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    meta.insert(
        DIGEST_KEY.into(),
        Value::String(format!("{:032x}", hasher.digest128())),
    );
    header.insert("__metadata__".into(), Value::Object(meta));
    let mut offset = 0usize;
    for t in tensors {
        let dtype = match t.dtype {
            StDtype::F32 => "F32",
            StDtype::I8 => "I8",
            StDtype::U16 => "U16",
            StDtype::U8 => "U8",
            _ => "U32",
        };
        header.insert(
            t.name.clone(),
            json!({"dtype": dtype, "shape": t.shape, "data_offsets": [offset, offset + t.data.len()]}),
        );
        offset += t.data.len();
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for t in tensors {
        out.extend_from_slice(&t.data);
    }
    out
}

/// The safetensors view and `__metadata__` of a lopper file, with `format` and
/// `format_version` checked (shared by graph models and encoders).
pub(crate) fn lopper_container(
    bytes: &[u8],
) -> Result<(SafeTensors<'_>, std::collections::HashMap<String, String>), ModelError> {
    check_framing(bytes)?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Container(e.to_string()))?;
    let (header_len, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| ModelError::Container(e.to_string()))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| ModelError::NotLopper("the header has no __metadata__".into()))?;
    match meta.get("format").map(String::as_str) {
        Some("lopper") => {}
        other => {
            return Err(ModelError::NotLopper(format!(
                "__metadata__.format is {other:?}, expected \"lopper\""
            )))
        }
    }
    let version = meta.get("format_version").cloned().unwrap_or_default();
    if version != FORMAT_VERSION.to_string() {
        return Err(ModelError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    // Files written before the digest existed have none and still read.
    if let Some(expected) = meta.get(DIGEST_KEY) {
        if VERIFY.load(std::sync::atomic::Ordering::Relaxed) {
            let actual = data_digest(&bytes[8 + header_len..]);
            if &actual != expected {
                return Err(ModelError::Digest {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
    }
    Ok((st, meta))
}

/// The bytes of the model file `path`, the read stopped at [`max_file_bytes`].
pub fn read_model_bytes(path: &Path) -> Result<Vec<u8>, ModelError> {
    read_limited(path, max_file_bytes())
}

/// The bytes of the regular file `path`, the read stopped as soon as it passes `limit` (the size
/// the filesystem reports is not trusted).
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ModelError> {
    crate::limits::read_file(path, limit, "LOPPER_MAX_FILE_BYTES").map_err(|e| e.in_file(path))
}

static VERIFY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the tensor-data digest check of every later read on or off (`--no-verify`).
pub fn set_verify_digest(on: bool) {
    VERIFY.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Metadata key of the XXH3-128 digest of the data buffer (every tensor's bytes, in file order).
pub const DIGEST_KEY: &str = "data_xxh3_128";

fn data_digest(data: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(data))
}

/// Checks the safetensors framing before the safetensors crate sees the bytes, so that a
/// truncated file is called truncated and a bad tensor entry is named: the 8-byte header length,
/// the header JSON, and for every tensor a known dtype, a shape whose byte size equals its
/// offsets, and offsets inside the file.
fn check_framing(bytes: &[u8]) -> Result<(), ModelError> {
    let len = bytes.len() as u64;
    if len < 8 {
        return Err(ModelError::Truncated {
            actual: len,
            expected: 8,
        });
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let header_end = n
        .checked_add(8)
        .ok_or_else(|| ModelError::Container(format!("header length {n} is not a length")))?;
    if header_end > len {
        return Err(ModelError::Truncated {
            actual: len,
            expected: header_end,
        });
    }
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..header_end as usize])
            .map_err(|e| ModelError::Container(format!("header is not a JSON object: {e}")))?;
    let mut data_end = 0u64;
    for (name, entry) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |m: &str| ModelError::tensor(name, format!("header entry {m}"));
        let dtype = entry
            .get("dtype")
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("has no dtype"))?;
        let size = match dtype {
            "F64" | "I64" | "U64" => 8u64,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" => 1,
            other => return Err(bad(&format!("has the unknown dtype '{other}'"))),
        };
        let shape = entry
            .get("shape")
            .and_then(|v| v.as_array())
            .ok_or_else(|| bad("has no shape"))?;
        let elems = shape
            .iter()
            .try_fold(1u64, |acc, d| d.as_u64().and_then(|d| acc.checked_mul(d)));
        let offs = entry
            .get("data_offsets")
            .and_then(|v| v.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
            .ok_or_else(|| bad("has no [begin, end] data_offsets"))?;
        let want = elems.and_then(|e| e.checked_mul(size));
        if offs.1 < offs.0 || want != Some(offs.1 - offs.0) {
            return Err(bad(&format!(
                "is inconsistent: dtype {dtype} and shape {} need {} bytes, data_offsets {:?} give {}",
                serde_json::Value::Array(shape.clone()),
                want.map_or_else(|| "too many".to_string(), |w| w.to_string()),
                [offs.0, offs.1],
                offs.1.wrapping_sub(offs.0) as i64
            )));
        }
        data_end = data_end.max(offs.1);
    }
    let expected = header_end.saturating_add(data_end);
    if expected > len {
        return Err(ModelError::Truncated {
            actual: len,
            expected,
        });
    }
    Ok(())
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over `path`: a crash
/// leaves the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}
