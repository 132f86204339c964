//! Constant folding at node level: a node whose inputs are all constants becomes a constant
//! ([`Importer::fold`], with the tensor arithmetic in [`super::fold`]), and `Constant` nodes
//! are read from their attributes.

use super::attrs::Attrs;
use super::fold::{self, Bin, BATCH};
use super::{Importer, R};
use crate::onnx::proto::{self, NodeProto};
use crate::onnx::{self as ox, Tensor};

impl Importer<'_> {
    /// Folds a node whose inputs are all constants; `None` when the op is not one to fold.
    pub(super) fn fold(&self, n: &NodeProto, a: &Attrs) -> R<Option<Tensor>> {
        let c = |i: usize| -> R<Tensor> {
            self.konst(n, i)?
                .ok_or_else(|| format!("input {i} is missing"))
        };
        let ints = |i: usize| -> R<Vec<i64>> {
            c(i)?
                .as_i64()
                .ok_or_else(|| format!("input {i} is not integers"))
        };
        let opt_ints =
            |i: usize| -> R<Option<Vec<i64>>> { Ok(self.konst(n, i)?.and_then(|t| t.as_i64())) };
        let bin = |op: Bin| -> R<Option<Tensor>> { fold::binary(op, &c(0)?, &c(1)?).map(Some) };
        Ok(match n.op_type() {
            "Constant" => Some(self.constant(a)?),
            "Identity" | "Dropout" => Some(c(0)?),
            "Cast" => {
                let t = c(0)?;
                let to = a.int("to", 1) as i32;
                use proto::tensor_proto::DataType as D;
                Some(match D::try_from(to).unwrap_or(D::Undefined) {
                    D::Float | D::Double | D::Float16 | D::Bfloat16 => {
                        Tensor::f32(t.dims.clone(), t.as_f32())
                    }
                    D::Int64 | D::Int32 | D::Int8 | D::Uint8 | D::Bool => {
                        let v = t.as_f32();
                        let ints = match &t.data {
                            ox::Data::I64(i) => i.clone(),
                            ox::Data::F32(_) => v.iter().map(|x| x.trunc() as i64).collect(),
                        };
                        let ints = if to == D::Bool as i32 {
                            ints.iter().map(|&x| (x != 0) as i64).collect()
                        } else {
                            ints
                        };
                        Tensor::i64(t.dims.clone(), ints)
                    }
                    _ => return Err(format!("Cast to {} is not supported", ox::type_name(to))),
                })
            }
            "Shape" => {
                let t = c(0)?;
                let full = Tensor::i64(
                    vec![t.dims.len()],
                    t.dims.iter().map(|&d| d as i64).collect(),
                );
                let r = t.dims.len() as i64;
                Some(fold::slice(
                    &full,
                    &[a.int("start", 0)],
                    &[a.int("end", r)],
                    Some(&[0]),
                    None,
                )?)
            }
            "Gather" => Some(fold::gather(&c(0)?, &c(1)?, a.int("axis", 0))?),
            "Unsqueeze" => {
                let axes = self.axes(n, a)?.ok_or("axes are missing")?;
                Some(fold::unsqueeze(&c(0)?, &axes)?)
            }
            "Squeeze" => Some(fold::squeeze(&c(0)?, self.axes(n, a)?.as_deref())?),
            "Concat" => {
                let ts = (0..n.input.len()).map(c).collect::<R<Vec<_>>>()?;
                Some(fold::concat(
                    &ts.iter().collect::<Vec<_>>(),
                    a.int("axis", 0),
                )?)
            }
            "Slice" => {
                let t = c(0)?;
                Some(fold::slice(
                    &t,
                    &ints(1)?,
                    &ints(2)?,
                    opt_ints(3)?.as_deref(),
                    opt_ints(4)?.as_deref(),
                )?)
            }
            "Reshape" => {
                let t = c(0)?;
                let dims = fold::reshape_dims(&t.dims, &ints(1)?, t.len())?;
                Some(Tensor { dims, data: t.data })
            }
            "Transpose" => {
                let t = c(0)?;
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p.iter().map(|&x| x as usize).collect(),
                    None => (0..t.dims.len()).rev().collect(),
                };
                Some(fold::transpose(&t, &perm)?)
            }
            "Add" => bin(Bin::Add)?,
            "Sub" => bin(Bin::Sub)?,
            "Mul" => bin(Bin::Mul)?,
            "Div" => bin(Bin::Div)?,
            "Pow" => bin(Bin::Pow)?,
            "Equal" => bin(Bin::Equal)?,
            "Sqrt" => Some(fold::sqrt(&c(0)?)),
            "Where" => Some(fold::select(&c(0)?, &c(1)?, &c(2)?)?),
            "ConstantOfShape" => {
                let dims: Vec<usize> = ints(0)?
                    .iter()
                    .map(|&d| {
                        usize::try_from(d).map_err(|_| {
                            format!("shape holds {d} (a batch-dependent or negative dim)")
                        })
                    })
                    .collect::<R<_>>()?;
                let numel = dims
                    .iter()
                    .try_fold(1usize, |p, &d| p.checked_mul(d))
                    .filter(|&p| p <= ox::MAX_TENSOR_ELEMS)
                    .ok_or("shape is too large")?;
                let value = match a.tensor("value") {
                    Some(t) => ox::tensor(t, self.dir).map_err(|e| e.to_string())?,
                    None => Tensor::f32(vec![1], vec![0.0]),
                };
                Some(match value.data {
                    ox::Data::F32(v) => {
                        Tensor::f32(dims, vec![v.first().copied().unwrap_or(0.0); numel])
                    }
                    ox::Data::I64(v) => {
                        Tensor::i64(dims, vec![v.first().copied().unwrap_or(0); numel])
                    }
                })
            }
            "Range" => {
                let (s, l, d) = (c(0)?, c(1)?, c(2)?);
                match (s.as_i64(), l.as_i64(), d.as_i64()) {
                    (Some(s), Some(l), Some(d))
                        if s.len() == 1 && l.len() == 1 && d.len() == 1 && d[0] != 0 =>
                    {
                        if [s[0], l[0], d[0]].contains(&BATCH) {
                            return Err("Range over the batch size is not supported".into());
                        }
                        let count = ((l[0] - s[0]) as f64 / d[0] as f64).ceil().max(0.0) as usize;
                        if count > ox::MAX_TENSOR_ELEMS {
                            return Err("Range is too long".into());
                        }
                        let v: Vec<i64> = (0..count as i64).map(|k| s[0] + k * d[0]).collect();
                        Some(Tensor::i64(vec![v.len()], v))
                    }
                    _ => return Err("Range needs integer scalars and a non-zero step".into()),
                }
            }
            _ => None,
        })
    }

    pub(super) fn constant(&self, a: &Attrs) -> R<Tensor> {
        if let Some(t) = a.tensor("value") {
            return ox::tensor(t, self.dir).map_err(|e| e.to_string());
        }
        if a.has("value_float") {
            return Ok(Tensor::f32(vec![], vec![a.float("value_float", 0.0)]));
        }
        if let Some(v) = a.floats("value_floats").filter(|_| a.has("value_floats")) {
            return Ok(Tensor::f32(vec![v.len()], v));
        }
        if a.has("value_int") {
            return Ok(Tensor::i64(vec![], vec![a.int("value_int", 0)]));
        }
        if let Some(v) = a.ints("value_ints") {
            return Ok(Tensor::i64(vec![v.len()], v));
        }
        Err("Constant has no value lopper reads (value, value_float(s), value_int(s))".into())
    }
}
