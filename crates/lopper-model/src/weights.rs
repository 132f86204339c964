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

/// The spec and tensors that store `w` under `name`. N:M matrices are stored as CSR (the
/// planner can re-encode them as N:M at load).
pub fn to_tensors(
    name: &str,
    w: &WeightMatrix,
) -> Result<(WeightSpec, Vec<RawTensor>), ModelError> {
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
            return to_tensors(name, &csr);
        }
    };
    Ok((spec, out))
}

fn csr_spec(values: &Values, shape: [usize; 2]) -> WeightSpec {
    WeightSpec {
        format: StorageFormat::Csr,
        block: None,
        dtype: dtype_of(values),
        shape,
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
