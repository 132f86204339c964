//! Zeroing the optimiser state of regrown weights (SET, RigL).
//!
//! A weight dropped by a dynamic-sparse-training update keeps its momentum and Adam second
//! moment while masked, decaying (`v` by 0.999 per step). When it is regrown later, at zero, that
//! stale `v` shrinks its steps for hundreds of steps, so it tends to stay near zero and be dropped
//! again: the regrowth does not take. This module zeroes every per-entry state tensor of a
//! parameter at the entries an update newly kept, so a regrown weight starts like one never kept.
//!
//! burn 0.22's optimiser record has no public per-tensor access, so the state goes through its
//! burnpack bytes: every tensor named `"{param_id}.{field}"` whose element count equals the
//! parameter's is edited in burn's layout (the parameter's, row-major), scalars (Adam's step
//! count) are left alone.

use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn_pack::{DType, Reader, Writer};

use super::masks::{LayerInfo, Masks};

/// Entries of each layer kept by `new` but not by `old`, keyed by parameter id.
fn grown(layers: &[LayerInfo], old: &Masks, new: &Masks) -> Vec<(u64, usize, Vec<usize>)> {
    layers
        .iter()
        .filter_map(|l| {
            let (o, n) = (old.get(&l.path)?, new.get(&l.path)?);
            let idx: Vec<usize> = (0..n.len()).filter(|&i| n[i] && !o[i]).collect();
            (!idx.is_empty()).then(|| (l.id.val(), l.values.len(), idx))
        })
        .collect()
}

/// `optim` with the state of every newly kept entry zeroed; an error leaves the caller's
/// optimiser untouched (it gets the original back).
pub fn reset_grown(
    optim: ModuleOptimizer,
    layers: &[LayerInfo],
    old: &Masks,
    new: &Masks,
) -> (ModuleOptimizer, Result<usize, String>) {
    let grown = grown(layers, old, new);
    if grown.is_empty() {
        return (optim, Ok(0));
    }
    match edit(&optim, &grown) {
        Ok((record, zeroed)) => (optim.load_record(record), Ok(zeroed)),
        Err(e) => (optim, Err(e)),
    }
}

fn edit(
    optim: &ModuleOptimizer,
    grown: &[(u64, usize, Vec<usize>)],
) -> Result<(OptimizerRecord, usize), String> {
    let bytes = optim.to_record().into_bytes().map_err(|e| e.to_string())?;
    let reader = Reader::from_bytes(bytes).map_err(|e| e.to_string())?;
    let scalars = reader.scalars().clone();
    let metadata = reader.metadata().clone();
    let mut tensors = Vec::new();
    let mut zeroed = 0;
    for t in reader.into_tensors().map_err(|e| e.to_string())? {
        let (name, dtype, shape, param_id, bytes) = t.into_parts().map_err(|e| e.to_string())?;
        let target = param_id.and_then(|id| grown.iter().find(|g| g.0 == id));
        let bytes = match target {
            Some((_, len, idx)) if dtype == DType::F32 && bytes.len() == len * 4 => {
                let mut v = bytes.to_vec();
                for &i in idx {
                    v[4 * i..4 * i + 4].copy_from_slice(&0f32.to_le_bytes());
                }
                zeroed += idx.len();
                burn_pack::Bytes::from_bytes_vec(v)
            }
            _ => bytes,
        };
        tensors.push(burn_pack::Tensor::new(name, dtype, shape, param_id, bytes));
    }
    let mut writer = Writer::new(tensors);
    for (k, v) in &scalars {
        writer = writer.with_scalar(k, *v);
    }
    for (k, v) in &metadata {
        writer = writer.with_metadata(k, v);
    }
    let bytes = writer.into_bytes().map_err(|e| e.to_string())?;
    let record = OptimizerRecord::from_bytes(bytes).map_err(|e| e.to_string())?;
    Ok((record, zeroed))
}
