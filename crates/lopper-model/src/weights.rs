//! Weight matrices to and from the component tensors of the file (names and layouts in
//! `docs/format.md`). Matrices are `[out, in]` here and in the file; the reader never trusts a
//! length: it checks dtype and shape against the weight's spec before converting a byte, and the
//! kernels crate's constructors check every sparse invariant.

use lopper_kernels::format::{Bsr, Csr, Dense, Values};
use lopper_kernels::WeightMatrix;
use safetensors::tensor::TensorView;
use safetensors::Dtype as StDtype;

use crate::error::ModelError;
use crate::graph::{StorageFormat, WeightDtype, WeightSpec};

/// One tensor ready to be written: little-endian bytes, row-major.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub name: String,
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, v: &[f32]) -> Self {
        Self {
            name: name.into(),
            dtype: StDtype::F32,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    fn u32(name: String, v: &[u32]) -> Self {
        Self {
            name,
            dtype: StDtype::U32,
            shape: vec![v.len()],
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    fn u16(name: String, v: &[u16]) -> Self {
        Self {
            name,
            dtype: StDtype::U16,
            shape: vec![v.len()],
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

fn values_tensors(name: &str, values: &Values, shape: Vec<usize>, out: &mut Vec<RawTensor>) {
    match values {
        Values::F32(v) => out.push(RawTensor::f32(format!("{name}.values"), shape, v)),
        Values::I8 { q, scales } => {
            out.push(RawTensor {
                name: format!("{name}.values"),
                dtype: StDtype::I8,
                shape,
                data: q.iter().map(|&b| b as u8).collect(),
            });
            out.push(RawTensor::f32(
                format!("{name}.scales"),
                vec![scales.len()],
                scales,
            ));
        }
    }
}

fn dtype_of(values: &Values) -> WeightDtype {
    match values {
        Values::F32(_) => WeightDtype::F32,
        Values::I8 { .. } => WeightDtype::I8,
    }
}

/// The spec and tensors that store `w` under `name` in `format` ([`StorageFormat::CsrDelta8`]
/// applies to CSR matrices; any other format is `w`'s own). N:M matrices are stored as CSR (the
/// planner can re-encode them as N:M at load).
pub fn to_tensors(
    name: &str,
    w: &WeightMatrix,
    format: StorageFormat,
) -> Result<(WeightSpec, Vec<RawTensor>), ModelError> {
    if format == StorageFormat::CsrDelta8 {
        let delta = match w {
            WeightMatrix::Csr16(m) => Some(delta_tensors(
                name,
                m.row_ptr(),
                |k| m.col_idx()[k] as usize,
                m.values(),
            )),
            WeightMatrix::Csr32(m) => Some(delta_tensors(
                name,
                m.row_ptr(),
                |k| m.col_idx()[k] as usize,
                m.values(),
            )),
            _ => None,
        };
        if let Some(t) = delta {
            let spec = WeightSpec {
                format: StorageFormat::CsrDelta8,
                ..csr_spec(t.1, [w.rows(), w.cols()])
            };
            return Ok((spec, t.0));
        }
    }
    let shape = [w.rows(), w.cols()];
    let mut out = Vec::new();
    let spec = match w {
        WeightMatrix::Dense(d) => {
            out.push(RawTensor::f32(name, vec![d.rows(), d.cols()], d.data()));
            WeightSpec {
                format: StorageFormat::Dense,
                block: None,
                dtype: WeightDtype::F32,
                shape,
                int8_acts: false,
            }
        }
        WeightMatrix::Csr16(m) => {
            out.push(RawTensor::u32(format!("{name}.row_ptr"), m.row_ptr()));
            out.push(RawTensor::u16(format!("{name}.col_idx"), m.col_idx()));
            values_tensors(name, m.values(), vec![m.nnz()], &mut out);
            csr_spec(m.values(), shape)
        }
        WeightMatrix::Csr32(m) => {
            out.push(RawTensor::u32(format!("{name}.row_ptr"), m.row_ptr()));
            out.push(RawTensor::u32(format!("{name}.col_idx"), m.col_idx()));
            values_tensors(name, m.values(), vec![m.nnz()], &mut out);
            csr_spec(m.values(), shape)
        }
        WeightMatrix::Bsr(m) => {
            out.push(RawTensor::u32(format!("{name}.row_ptr"), m.block_row_ptr()));
            out.push(RawTensor::u32(format!("{name}.col_idx"), m.block_col()));
            let vshape = vec![m.blocks(), m.block_rows(), m.block_cols()];
            values_tensors(name, m.values(), vshape, &mut out);
            WeightSpec {
                format: StorageFormat::Bsr,
                block: Some([m.block_rows(), m.block_cols()]),
                dtype: dtype_of(m.values()),
                shape,
                int8_acts: false,
            }
        }
        WeightMatrix::Nm(_) => {
            let dense = w.to_dense();
            let mask: Vec<bool> = dense.data().iter().map(|v| *v != 0.0).collect();
            let csr = WeightMatrix::encode(
                &dense,
                &mask,
                lopper_kernels::FormatKind::Csr32,
                lopper_kernels::Dtype::F32,
            )
            .map_err(|source| ModelError::Weight {
                name: name.into(),
                source,
            })?;
            return to_tensors(name, &csr, format);
        }
    };
    Ok((spec, out))
}

/// The delta-encoded tensors of a CSR matrix, and its values (for the spec's dtype).
fn delta_tensors<'v>(
    name: &str,
    row_ptr: &[u32],
    col: impl Fn(usize) -> usize,
    values: &'v Values,
) -> (Vec<RawTensor>, &'v Values) {
    // Only nonzeros are encoded (decoding drops zeros anyway), so the encoding is canonical:
    // writing what was read gives the same bytes.
    let nonzero = |k: usize| match values {
        Values::F32(v) => v[k] != 0.0,
        Values::I8 { q, .. } => q[k] != 0,
    };
    let mut ptr = vec![0u32];
    let mut kept: Vec<usize> = Vec::new();
    for r in 0..row_ptr.len().saturating_sub(1) {
        kept.extend((row_ptr[r] as usize..row_ptr[r + 1] as usize).filter(|&k| nonzero(k)));
        ptr.push(kept.len() as u32);
    }
    let mut e = crate::delta::encode(&ptr, |i| col(kept[i]));
    for s in e.source.iter_mut() {
        *s = s.map(|i| kept[i]);
    }
    let mut out = vec![
        RawTensor::u32(format!("{name}.row_ptr"), &e.row_ptr),
        RawTensor {
            name: format!("{name}.col_delta"),
            dtype: StDtype::U8,
            shape: vec![e.deltas.len()],
            data: e.deltas.clone(),
        },
    ];
    let stored = match values {
        Values::F32(v) => Values::F32(e.source.iter().map(|s| s.map_or(0.0, |k| v[k])).collect()),
        Values::I8 { q, scales } => Values::I8 {
            q: e.source.iter().map(|s| s.map_or(0, |k| q[k])).collect(),
            scales: scales.clone(),
        },
    };
    values_tensors(name, &stored, vec![e.deltas.len()], &mut out);
    (out, values)
}

fn csr_spec(values: &Values, shape: [usize; 2]) -> WeightSpec {
    WeightSpec {
        format: StorageFormat::Csr,
        block: None,
        dtype: dtype_of(values),
        shape,
        int8_acts: false,
    }
}

/// Looks a tensor up by name.
pub type Lookup<'a, 'd> = &'a dyn Fn(&str) -> Option<TensorView<'d>>;

fn get<'d>(
    lookup: Lookup<'_, 'd>,
    name: &str,
    dtypes: &[StDtype],
    shape: &[usize],
) -> Result<TensorView<'d>, ModelError> {
    let t = lookup(name).ok_or_else(|| ModelError::tensor(name, "missing from the file"))?;
    if !dtypes.contains(&t.dtype()) {
        return Err(ModelError::tensor(
            name,
            format!("dtype {:?}, expected one of {dtypes:?}", t.dtype()),
        ));
    }
    if t.shape() != shape {
        return Err(ModelError::tensor(
            name,
            format!("shape {:?}, expected {shape:?}", t.shape()),
        ));
    }
    Ok(t)
}

/// The length of a 1-D tensor, without trusting it (used before its elements are read).
fn len_1d(lookup: Lookup<'_, '_>, name: &str) -> Result<usize, ModelError> {
    let t = lookup(name).ok_or_else(|| ModelError::tensor(name, "missing from the file"))?;
    match t.shape() {
        [n] => Ok(*n),
        s => Err(ModelError::tensor(
            name,
            format!("shape {s:?}, expected 1-D"),
        )),
    }
}

pub fn read_f32(t: &TensorView<'_>, name: &str) -> Result<Vec<f32>, ModelError> {
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::tensor(
            name,
            format!("entry {i} is {} (weights must be finite)", v[i]),
        ));
    }
    Ok(v)
}

fn read_u32(t: &TensorView<'_>) -> Vec<u32> {
    t.data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn read_u16(t: &TensorView<'_>) -> Vec<u16> {
    t.data()
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn read_values(
    lookup: Lookup<'_, '_>,
    name: &str,
    dtype: WeightDtype,
    shape: &[usize],
    rows: usize,
) -> Result<Values, ModelError> {
    let vname = format!("{name}.values");
    Ok(match dtype {
        WeightDtype::F32 => {
            let t = get(lookup, &vname, &[StDtype::F32], shape)?;
            Values::F32(read_f32(&t, &vname)?)
        }
        WeightDtype::I8 => {
            let t = get(lookup, &vname, &[StDtype::I8], shape)?;
            let q = t.data().iter().map(|&b| b as i8).collect();
            let sname = format!("{name}.scales");
            let s = get(lookup, &sname, &[StDtype::F32], &[rows])?;
            Values::I8 {
                q,
                scales: read_f32(&s, &sname)?,
            }
        }
    })
}

/// The names of the tensors that store weight `name` with `spec`.
pub fn tensor_names(name: &str, spec: &WeightSpec) -> Vec<String> {
    let mut v = match spec.format {
        StorageFormat::Dense => vec![name.to_string()],
        StorageFormat::Csr | StorageFormat::Bsr => vec![
            format!("{name}.row_ptr"),
            format!("{name}.col_idx"),
            format!("{name}.values"),
        ],
        StorageFormat::CsrDelta8 => vec![
            format!("{name}.row_ptr"),
            format!("{name}.col_delta"),
            format!("{name}.values"),
        ],
    };
    if spec.dtype == WeightDtype::I8 {
        v.push(format!("{name}.scales"));
    }
    v
}

/// Rebuilds weight `name` from its tensors, validating everything.
pub fn from_tensors(
    name: &str,
    spec: &WeightSpec,
    lookup: Lookup<'_, '_>,
) -> Result<WeightMatrix, ModelError> {
    let [rows, cols] = spec.shape;
    let werr = |source| ModelError::Weight {
        name: name.to_string(),
        source,
    };
    match spec.format {
        StorageFormat::Dense => {
            let t = get(lookup, name, &[StDtype::F32], &[rows, cols])?;
            let d = Dense::from_vec(rows, cols, read_f32(&t, name)?).map_err(werr)?;
            Ok(WeightMatrix::Dense(d))
        }
        StorageFormat::Csr => {
            let rp = format!("{name}.row_ptr");
            let ci = format!("{name}.col_idx");
            let row_ptr = read_u32(&get(lookup, &rp, &[StDtype::U32], &[rows + 1])?);
            let nnz = len_1d(lookup, &ci)?;
            let idx = get(lookup, &ci, &[StDtype::U16, StDtype::U32], &[nnz])?;
            let values = read_values(lookup, name, spec.dtype, &[nnz], rows)?;
            if idx.dtype() == StDtype::U16 {
                let m =
                    Csr::from_parts(rows, cols, row_ptr, read_u16(&idx), values).map_err(werr)?;
                Ok(WeightMatrix::Csr16(m))
            } else {
                let m =
                    Csr::from_parts(rows, cols, row_ptr, read_u32(&idx), values).map_err(werr)?;
                Ok(WeightMatrix::Csr32(m))
            }
        }
        StorageFormat::CsrDelta8 => {
            let rp = format!("{name}.row_ptr");
            let cd = format!("{name}.col_delta");
            let row_ptr = read_u32(&get(lookup, &rp, &[StDtype::U32], &[rows + 1])?);
            let stored = len_1d(lookup, &cd)?;
            let deltas = get(lookup, &cd, &[StDtype::U8], &[stored])?.data().to_vec();
            let values = read_values(lookup, name, spec.dtype, &[stored], rows)?;
            // Keep the nonzeros (fillers and other stored zeros go), row by row.
            let mut ptr = vec![0u32; rows + 1];
            let mut cols_kept: Vec<u32> = Vec::new();
            let mut kept: Vec<usize> = Vec::new();
            crate::delta::decode(name, rows, cols, &row_ptr, &deltas, |r, c, k| {
                let nonzero = match &values {
                    Values::F32(v) => v[k] != 0.0,
                    Values::I8 { q, .. } => q[k] != 0,
                };
                if nonzero {
                    cols_kept.push(c as u32);
                    kept.push(k);
                    ptr[r + 1] = kept.len() as u32;
                }
            })?;
            for r in 0..rows {
                ptr[r + 1] = ptr[r + 1].max(ptr[r]);
            }
            let values = match values {
                Values::F32(v) => Values::F32(kept.iter().map(|&k| v[k]).collect()),
                Values::I8 { q, scales } => Values::I8 {
                    q: kept.iter().map(|&k| q[k]).collect(),
                    scales,
                },
            };
            if cols <= 1 << 16 {
                let idx = cols_kept.iter().map(|&c| c as u16).collect();
                Ok(WeightMatrix::Csr16(
                    Csr::from_parts(rows, cols, ptr, idx, values).map_err(werr)?,
                ))
            } else {
                Ok(WeightMatrix::Csr32(
                    Csr::from_parts(rows, cols, ptr, cols_kept, values).map_err(werr)?,
                ))
            }
        }
        StorageFormat::Bsr => {
            let [br, bc] = spec.block.unwrap_or([1, 1]);
            let rp = format!("{name}.row_ptr");
            let ci = format!("{name}.col_idx");
            let row_ptr = read_u32(&get(
                lookup,
                &rp,
                &[StDtype::U32],
                &[rows.div_ceil(br) + 1],
            )?);
            let blocks = len_1d(lookup, &ci)?;
            let col = read_u32(&get(lookup, &ci, &[StDtype::U32], &[blocks])?);
            let values = read_values(lookup, name, spec.dtype, &[blocks, br, bc], rows)?;
            let m = Bsr::from_parts(rows, cols, br, bc, row_ptr, col, values).map_err(werr)?;
            Ok(WeightMatrix::Bsr(m))
        }
    }
}
