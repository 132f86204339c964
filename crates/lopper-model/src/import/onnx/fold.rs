//! Constant folding: the shape arithmetic exporters emit (`Shape → Gather → Unsqueeze → Concat →
//! Reshape`, `Constant`, `Cast`, `Range`, ...) is evaluated at import on [`Tensor`]s, so only
//! the ops that touch activations reach the graph.
//!
//! The batch dimension is not a number at import: [`BATCH`] stands for it inside shape tensors.
//! It survives moves (gather, concat, slice, unsqueeze) and is an error in arithmetic, since a
//! graph whose weights depended on the batch size could not be planned once for every batch.

use crate::onnx::{Data, Tensor};

/// The symbolic batch size inside a folded shape tensor.
pub(super) const BATCH: i64 = i64::MIN + 7;

type R<T> = Result<T, String>;

fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// A negative axis counts from the end; the result is in `0..rank`.
pub(super) fn axis(a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is outside a rank-{rank} tensor"))
    }
}

/// Picks elements by flat index into a new tensor of `dims`.
fn pick(t: &Tensor, dims: Vec<usize>, idx: impl Iterator<Item = usize>) -> Tensor {
    match &t.data {
        Data::F32(v) => Tensor::f32(dims, idx.map(|i| v[i]).collect()),
        Data::I64(v) => Tensor::i64(dims, idx.map(|i| v[i]).collect()),
    }
}

/// Numpy broadcasting of two shapes.
pub(super) fn broadcast_dims(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let db = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            match (da, db) {
                (x, y) if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
            }
        })
        .collect()
}

/// Flat index into a tensor of `dims` for each element of the broadcast shape `out`.
fn broadcast_index(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let st = strides(dims);
    let off = out.len() - dims.len();
    let ost = strides(out);
    (0..numel(out))
        .map(|flat| {
            (0..dims.len())
                .map(|d| {
                    let coord = (flat / ost[d + off]) % out[d + off];
                    if dims[d] == 1 {
                        0
                    } else {
                        coord * st[d]
                    }
                })
                .sum()
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Equal,
}

/// An elementwise binary op with broadcasting. Integer division truncates, as ONNX's does.
pub(super) fn binary(op: Bin, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let out = broadcast_dims(&a.dims, &b.dims)?;
    let (ia, ib) = (
        broadcast_index(&a.dims, &out),
        broadcast_index(&b.dims, &out),
    );
    match (&a.data, &b.data) {
        (Data::I64(x), Data::I64(y)) => {
            if x.contains(&BATCH) || y.contains(&BATCH) {
                return Err(
                    "arithmetic on the batch size (shapes that depend on the batch \
                            size are not supported)"
                        .into(),
                );
            }
            let v = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let (p, q) = (x[i], y[j]);
                    match op {
                        Bin::Add => p.checked_add(q),
                        Bin::Sub => p.checked_sub(q),
                        Bin::Mul => p.checked_mul(q),
                        Bin::Div => p.checked_div(q),
                        Bin::Pow => u32::try_from(q).ok().and_then(|q| p.checked_pow(q)),
                        Bin::Equal => Some((p == q) as i64),
                    }
                    .ok_or_else(|| format!("integer {op:?} of {p} and {q} overflows"))
                })
                .collect::<R<Vec<i64>>>()?;
            Ok(Tensor::i64(out, v))
        }
        _ => {
            let (x, y) = (a.as_f32(), b.as_f32());
            let v: Vec<f32> = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| {
                    let (p, q) = (x[i], y[j]);
                    match op {
                        Bin::Add => p + q,
                        Bin::Sub => p - q,
                        Bin::Mul => p * q,
                        Bin::Div => p / q,
                        Bin::Pow => p.powf(q),
                        Bin::Equal => (p == q) as i64 as f32,
                    }
                })
                .collect();
            if op == Bin::Equal {
                return Ok(Tensor::i64(out, v.iter().map(|&e| e as i64).collect()));
            }
            Ok(Tensor::f32(out, v))
        }
    }
}

/// `Where(cond, a, b)` with broadcasting.
pub(super) fn select(c: &Tensor, a: &Tensor, b: &Tensor) -> R<Tensor> {
    let out = broadcast_dims(&broadcast_dims(&c.dims, &a.dims)?, &b.dims)?;
    let (ic, ia, ib) = (
        broadcast_index(&c.dims, &out),
        broadcast_index(&a.dims, &out),
        broadcast_index(&b.dims, &out),
    );
    let cond = c.as_f32();
    fn pick<T: Copy>(cond: &[f32], ix: [&[usize]; 3], x: &[T], y: &[T]) -> Vec<T> {
        let [ic, ia, ib] = ix;
        (0..ic.len())
            .map(|k| {
                if cond[ic[k]] != 0.0 {
                    x[ia[k]]
                } else {
                    y[ib[k]]
                }
            })
            .collect()
    }
    let ix = [&ic[..], &ia[..], &ib[..]];
    Ok(match (&a.data, &b.data) {
        (Data::I64(x), Data::I64(y)) => Tensor::i64(out, pick(&cond, ix, x, y)),
        _ => Tensor::f32(out, pick(&cond, ix, &a.as_f32(), &b.as_f32())),
    })
}

pub(super) fn sqrt(t: &Tensor) -> Tensor {
    Tensor::f32(
        t.dims.clone(),
        t.as_f32().iter().map(|v| v.sqrt()).collect(),
    )
}

pub(super) fn gather(data: &Tensor, idx: &Tensor, ax: i64) -> R<Tensor> {
    let a = axis(ax, data.dims.len())?;
    let n = data.dims[a] as i64;
    let ids = idx.as_i64().ok_or("indices are not integers")?;
    let ids = ids
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            (0..n)
                .contains(&j)
                .then_some(j as usize)
                .ok_or_else(|| format!("index {i} is outside an axis of {n}"))
        })
        .collect::<R<Vec<usize>>>()?;
    let outer = numel(&data.dims[..a]);
    let inner = numel(&data.dims[a + 1..]);
    let mut dims = data.dims[..a].to_vec();
    dims.extend(&idx.dims);
    dims.extend(&data.dims[a + 1..]);
    let flat = (0..outer).flat_map(|o| {
        let ids = &ids;
        ids.iter()
            .flat_map(move |&i| (0..inner).map(move |k| (o * data.dims[a] + i) * inner + k))
    });
    Ok(pick(data, dims, flat))
}

pub(super) fn unsqueeze(t: &Tensor, axes: &[i64]) -> R<Tensor> {
    let rank = t.dims.len() + axes.len();
    let mut ax = axes.iter().map(|&a| axis(a, rank)).collect::<R<Vec<_>>>()?;
    ax.sort_unstable();
    let mut dims = t.dims.clone();
    for a in ax {
        dims.insert(a, 1);
    }
    Ok(Tensor {
        dims,
        data: t.data.clone(),
    })
}

pub(super) fn squeeze(t: &Tensor, axes: Option<&[i64]>) -> R<Tensor> {
    let drop: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| axis(x, t.dims.len())).collect::<R<_>>()?,
        None => (0..t.dims.len()).filter(|&i| t.dims[i] == 1).collect(),
    };
    if drop.iter().any(|&a| t.dims[a] != 1) {
        return Err(format!("cannot squeeze axes {drop:?} of {:?}", t.dims));
    }
    let dims = (0..t.dims.len())
        .filter(|i| !drop.contains(i))
        .map(|i| t.dims[i])
        .collect();
    Ok(Tensor {
        dims,
        data: t.data.clone(),
    })
}

pub(super) fn concat(ts: &[&Tensor], ax: i64) -> R<Tensor> {
    let first = ts.first().ok_or("no inputs")?;
    let a = axis(ax, first.dims.len())?;
    for t in ts {
        let same = t.dims.len() == first.dims.len()
            && (0..t.dims.len()).all(|d| d == a || t.dims[d] == first.dims[d]);
        if !same {
            return Err(format!(
                "cannot concatenate {:?} and {:?}",
                first.dims, t.dims
            ));
        }
    }
    let outer = numel(&first.dims[..a]);
    let mut dims = first.dims.clone();
    dims[a] = ts.iter().map(|t| t.dims[a]).sum();
    let ints = ts.iter().all(|t| matches!(t.data, Data::I64(_)));
    let mut f = Vec::new();
    let mut i = Vec::new();
    for o in 0..outer {
        for t in ts {
            let chunk = numel(&t.dims[a..]);
            if ints {
                let v = t.as_i64().unwrap_or_default();
                i.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
            } else {
                f.extend_from_slice(&t.as_f32()[o * chunk..(o + 1) * chunk]);
            }
        }
    }
    Ok(if ints {
        Tensor::i64(dims, i)
    } else {
        Tensor::f32(dims, f)
    })
}

/// ONNX Slice (opset 10+ inputs): clamps starts and ends, any step but 0.
pub(super) fn slice(
    t: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> R<Tensor> {
    let rank = t.dims.len();
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| axis(x, rank)).collect::<R<_>>()?,
        None => (0..starts.len()).collect(),
    };
    if starts.len() != axes.len() || ends.len() != axes.len() {
        return Err("starts, ends and axes differ in length".into());
    }
    let mut ranges: Vec<Vec<usize>> = t.dims.iter().map(|&d| (0..d).collect()).collect();
    for (k, &a) in axes.iter().enumerate() {
        let d = t.dims[a] as i64;
        let step = steps.map_or(1, |s| s.get(k).copied().unwrap_or(1));
        if step == 0 {
            return Err("a slice step is 0".into());
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (mut s, mut e) = (norm(starts[k]), norm(ends[k]));
        let mut idx = Vec::new();
        if step > 0 {
            s = s.clamp(0, d);
            e = e.clamp(0, d);
            while s < e {
                idx.push(s as usize);
                s += step;
            }
        } else {
            s = s.clamp(-1, d - 1);
            e = e.clamp(-1, d - 1);
            while s > e {
                idx.push(s as usize);
                s += step;
            }
        }
        ranges[a] = idx;
    }
    let dims: Vec<usize> = ranges.iter().map(Vec::len).collect();
    let st = strides(&t.dims);
    let ost = strides(&dims);
    let flat = (0..numel(&dims)).map(|f| {
        (0..rank)
            .map(|d| ranges[d][(f / ost[d]) % dims[d]] * st[d])
            .sum()
    });
    Ok(pick(t, dims.clone(), flat))
}

/// Resolves an ONNX Reshape target against `n` elements: 0 copies the input's dim (unless
/// `allowzero`), one -1 is inferred.
pub(super) fn reshape_dims(from: &[usize], target: &[i64], n: usize) -> R<Vec<usize>> {
    let mut dims = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            0 => dims.push(
                *from
                    .get(i)
                    .ok_or("0 copies a dim the input does not have")?,
            ),
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            d if d > 0 => dims.push(d as usize),
            d => return Err(format!("reshape target {target:?} has the dim {d}")),
        }
    }
    if let Some(i) = infer {
        let rest: usize = dims.iter().product();
        if rest == 0 || !n.is_multiple_of(rest) {
            return Err(format!("cannot reshape {n} elements to {target:?}"));
        }
        dims[i] = n / rest;
    }
    if numel(&dims) != n {
        return Err(format!("cannot reshape {from:?} to {target:?}"));
    }
    Ok(dims)
}

pub(super) fn transpose(t: &Tensor, perm: &[usize]) -> R<Tensor> {
    let rank = t.dims.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank
        || perm
            .iter()
            .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
    {
        return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
    }
    let dims: Vec<usize> = perm.iter().map(|&p| t.dims[p]).collect();
    let st = strides(&t.dims);
    let ost = strides(&dims);
    let flat = (0..numel(&dims)).map(|f| {
        (0..rank)
            .map(|d| ((f / ost[d]) % dims[d]) * st[perm[d]])
            .sum()
    });
    Ok(pick(t, dims.clone(), flat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flatten_shape_chain_folds_with_a_symbolic_batch() {
        // torch's x.view(x.size(0), -1): Shape -> Gather(0) -> Unsqueeze -> Concat([-1]).
        let shape = Tensor::i64(vec![4], vec![BATCH, 3, 4, 4]);
        let n = gather(&shape, &Tensor::i64(vec![], vec![0]), 0).unwrap();
        assert_eq!(n.dims, Vec::<usize>::new());
        let n = unsqueeze(&n, &[0]).unwrap();
        let t = concat(&[&n, &Tensor::i64(vec![1], vec![-1])], 0).unwrap();
        assert_eq!(t.as_i64().unwrap(), vec![BATCH, -1]);
        assert!(binary(Bin::Mul, &n, &n).is_err());
    }

    #[test]
    fn broadcasting_slicing_and_transposing_follow_numpy() {
        let a = Tensor::f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        let b = Tensor::f32(vec![3], vec![10., 20., 30.]);
        assert_eq!(
            binary(Bin::Add, &a, &b).unwrap().as_f32(),
            vec![11., 22., 33., 14., 25., 36.]
        );
        let s = slice(&a, &[1], &[i64::MAX], Some(&[1]), None).unwrap();
        assert_eq!(
            (s.dims.clone(), s.as_f32()),
            (vec![2, 2], vec![2., 3., 5., 6.])
        );
        let r = slice(&a, &[-1], &[i64::MIN], Some(&[1]), Some(&[-1])).unwrap();
        assert_eq!(r.as_f32(), vec![3., 2., 1., 6., 5., 4.]);
        let t = transpose(&a, &[1, 0]).unwrap();
        assert_eq!(
            (t.dims.clone(), t.as_f32()),
            (vec![3, 2], vec![1., 4., 2., 5., 3., 6.])
        );
        assert_eq!(reshape_dims(&[2, 3], &[0, -1], 6).unwrap(), vec![2, 3]);
        assert!(reshape_dims(&[2, 3], &[4, -1], 6).is_err());
        let g = gather(&a, &Tensor::i64(vec![2], vec![-1, 0]), 1).unwrap();
        assert_eq!(g.as_f32(), vec![3., 1., 6., 4.]);
    }
}
