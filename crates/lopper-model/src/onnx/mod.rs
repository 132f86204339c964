//! Reading and writing ONNX files: the protobuf messages are generated at build time by `prost`
//! from the vendored `proto/onnx.proto` (onnx 1.23.2), so lopper carries no hand-written
//! protobuf code. This module decodes a `ModelProto` under the file-size limit, resolves
//! external-data files (relative paths inside the model's folder only) and turns initializers
//! into [`Tensor`]s: f32, f16, bf16 and f64 become f32; int64, int32, int8, uint8 and bool
//! become i64.
//!
//! Tensors keep ONNX's row-major layout and dims; a `MatMul` weight is `[in, out]` and a
//! `Gemm` or `Conv` weight `[out, ...]` here, and the importer ([`crate::import::onnx`])
//! converts each to lopper's `[out, in]`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use prost::Message;

use crate::error::ModelError;

/// The ONNX protobuf messages, generated from `proto/onnx.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::tensor_proto::DataType;

/// Largest tensor the importer materialises, in elements (as [`crate::graph::MAX_MATRIX_ELEMS`]).
pub const MAX_TENSOR_ELEMS: usize = crate::graph::MAX_MATRIX_ELEMS;

/// A constant tensor: row-major `data` of shape `dims` (a scalar has no dims).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Data,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Tensor {
    pub fn f32(dims: Vec<usize>, v: Vec<f32>) -> Self {
        Tensor {
            dims,
            data: Data::F32(v),
        }
    }

    pub fn i64(dims: Vec<usize>, v: Vec<i64>) -> Self {
        Tensor {
            dims,
            data: Data::I64(v),
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as f32 (integers converted).
    pub fn as_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values as i64 (floats must be whole numbers).
    pub fn as_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I64(v) => Some(v.clone()),
            Data::F32(v) => v
                .iter()
                .map(|&x| (x.fract() == 0.0 && x.is_finite()).then_some(x as i64))
                .collect(),
        }
    }
}

/// Decodes an ONNX `ModelProto`; a file that is not one (or holds no graph) is an error.
pub fn decode(bytes: &[u8]) -> Result<proto::ModelProto, ModelError> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| ModelError::Onnx(format!("not an ONNX model (protobuf: {e})")))?;
    if model.graph.is_none() {
        return Err(ModelError::Onnx(
            "the file holds no graph (not an ONNX model?)".into(),
        ));
    }
    Ok(model)
}

/// The name of an ONNX data type, for messages.
pub fn type_name(t: i32) -> String {
    DataType::try_from(t)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| format!("type {t}"))
}

/// Dims of an ONNX tensor, checked: no negative dim, at most [`MAX_TENSOR_ELEMS`] elements.
fn dims_of(t: &proto::TensorProto) -> Result<(Vec<usize>, usize), String> {
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut n = 1usize;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| format!("has a negative dim in {:?}", t.dims))?;
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_TENSOR_ELEMS)
            .ok_or_else(|| format!("dims {:?} are over 2^28 elements", t.dims))?;
        dims.push(d);
    }
    Ok((dims, n))
}

/// Decodes an initializer or `Constant` value; `dir` resolves external data.
pub fn tensor(t: &proto::TensorProto, dir: &Path) -> Result<Tensor, ModelError> {
    let name = t.name();
    let err = |m: String| ModelError::Onnx(format!("tensor '{name}': {m}"));
    let (dims, n) = dims_of(t).map_err(err)?;
    let dt = DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined);
    let width = match dt {
        DataType::Float | DataType::Int32 => 4,
        DataType::Float16 | DataType::Bfloat16 => 2,
        DataType::Double | DataType::Int64 => 8,
        DataType::Int8 | DataType::Uint8 | DataType::Bool => 1,
        _ => {
            return Err(err(format!(
                "data type {} is not supported (f32, f16, bf16, f64, int64, int32, int8, uint8, \
                 bool are)",
                type_name(t.data_type())
            )))
        }
    };
    let raw_owned;
    let raw: Option<&[u8]> =
        if t.data_location == Some(proto::tensor_proto::DataLocation::External as i32) {
            raw_owned = external(t, dir, (n * width) as u64)?;
            Some(&raw_owned)
        } else {
            t.raw_data.as_deref()
        };
    if let Some(r) = raw {
        if r.len() != n * width {
            return Err(err(format!(
                "holds {} bytes of data, its dims {dims:?} and type {} need {}",
                r.len(),
                type_name(t.data_type()),
                n * width
            )));
        }
    }
    let count = |len: usize| -> Result<(), ModelError> {
        if len == n {
            Ok(())
        } else {
            Err(err(format!(
                "holds {len} values, its dims {dims:?} need {n}"
            )))
        }
    };
    let le = |r: &[u8], w: usize| -> Vec<u64> {
        r.chunks_exact(w)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..w].copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect()
    };
    let data = match (dt, raw) {
        (DataType::Float, Some(r)) => Data::F32(
            r.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        (DataType::Float, None) => {
            count(t.float_data.len())?;
            Data::F32(t.float_data.clone())
        }
        (DataType::Float16 | DataType::Bfloat16, _) => {
            let bits: Vec<u16> = match raw {
                Some(r) => le(r, 2).into_iter().map(|v| v as u16).collect(),
                None => {
                    count(t.int32_data.len())?;
                    t.int32_data.iter().map(|&v| v as u16).collect()
                }
            };
            Data::F32(if dt == DataType::Float16 {
                bits.iter()
                    .map(|&b| half::f16::from_bits(b).to_f32())
                    .collect()
            } else {
                bits.iter()
                    .map(|&b| half::bf16::from_bits(b).to_f32())
                    .collect()
            })
        }
        (DataType::Double, Some(r)) => Data::F32(
            le(r, 8)
                .into_iter()
                .map(|b| f64::from_bits(b) as f32)
                .collect(),
        ),
        (DataType::Double, None) => {
            count(t.double_data.len())?;
            Data::F32(t.double_data.iter().map(|&v| v as f32).collect())
        }
        (DataType::Int64, Some(r)) => Data::I64(le(r, 8).into_iter().map(|b| b as i64).collect()),
        (DataType::Int64, None) => {
            count(t.int64_data.len())?;
            Data::I64(t.int64_data.clone())
        }
        (DataType::Int32, Some(r)) => Data::I64(
            le(r, 4)
                .into_iter()
                .map(|b| b as u32 as i32 as i64)
                .collect(),
        ),
        (DataType::Int8, Some(r)) => Data::I64(r.iter().map(|&b| b as i8 as i64).collect()),
        (DataType::Uint8 | DataType::Bool, Some(r)) => {
            Data::I64(r.iter().map(|&b| b as i64).collect())
        }
        (_, None) => {
            count(t.int32_data.len())?;
            Data::I64(t.int32_data.iter().map(|&v| v as i64).collect())
        }
        (_, Some(_)) => {
            return Err(err(format!(
                "raw data of type {} is not supported",
                type_name(t.data_type())
            )))
        }
    };
    Ok(Tensor { dims, data })
}

/// The bytes of an external-data tensor: `location` relative to the model's folder (absolute
/// paths and `..` are refused, as the ONNX spec requires), `offset` and `length` inside it;
/// `length` defaults to `bytes`, what the tensor's dims and type need.
fn external(t: &proto::TensorProto, dir: &Path, bytes: u64) -> Result<Vec<u8>, ModelError> {
    let name = t.name();
    let err = |m: String| ModelError::Onnx(format!("tensor '{name}': external data {m}"));
    let mut location = None;
    let (mut offset, mut length) = (0u64, None);
    for e in &t.external_data {
        let v = e.value();
        let num = || {
            v.parse::<u64>()
                .map_err(|_| err(format!("'{}' is not a number: '{v}'", e.key())))
        };
        match e.key() {
            "location" => location = Some(v.to_string()),
            "offset" => offset = num()?,
            "length" => length = Some(num()?),
            _ => {}
        }
    }
    let loc = location.ok_or_else(|| err("has no location".into()))?;
    let rel = Path::new(&loc);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(err(format!(
            "location '{loc}' must be a relative path inside the model's folder"
        )));
    }
    let path = dir.join(rel);
    let io = |e: std::io::Error| ModelError::Io {
        path: path.clone(),
        source: e,
    };
    let mut f = std::fs::File::open(&path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(err(format!("'{loc}' is not a regular file")));
    }
    let want = length.unwrap_or(bytes);
    let end = offset.checked_add(want).filter(|&e| e <= meta.len());
    if end.is_none() {
        return Err(err(format!(
            "offset {offset} + length {want} passes the end of '{loc}' ({} bytes)",
            meta.len()
        )));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = Vec::new();
    f.take(want).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 != want {
        return Err(err(format!("'{loc}' ended early")));
    }
    Ok(buf)
}

/// The opset of the default (`ai.onnx`) domain.
pub fn default_opset(m: &proto::ModelProto) -> Option<i64> {
    m.opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
}

fn initializer(name: &str, dims: &[usize], t: DataType, raw: Vec<u8>) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(t as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// An ONNX tensor for an initializer: f32 data, little-endian raw bytes.
pub fn f32_initializer(name: &str, dims: &[usize], v: &[f32]) -> proto::TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    initializer(name, dims, DataType::Float, raw)
}

/// An ONNX tensor for an int64 initializer.
pub fn i64_initializer(name: &str, dims: &[usize], v: &[i64]) -> proto::TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    initializer(name, dims, DataType::Int64, raw)
}
