//! Choosing which weights to keep: criterion (magnitude or random), allocation (layer-wise or
//! global, with a per-layer floor) and per-layer overrides.
//!
//! Already-pruned weights score zero, and a new mask is the AND of the old mask and the top-k
//! of the scores, so a weight once pruned stays pruned even if a later target is lower.
//!
//! With an N:M `pattern`, each layer keeps the `n` highest scores in every group of `m`
//! consecutive inputs of an output unit, i.e. along a row of the `[out, in]` matrix (burn's
//! Linear `[in, out]` is transposed for this; Conv2d `[out, in, kh, kw]` is already
//! `[out, in*kh*kw]`). A layer whose input count is not a multiple of `m` (LeNet-5's first
//! convolution, 25 inputs) is left dense, as NVIDIA's ASP does.
//!
//! With a block `pattern` `RxC`, weights are kept or pruned in blocks of `R` consecutive outputs
//! by `C` consecutive inputs of the `[out, in]` matrix (TF-MOT's `block_size` names the same idea
//! on Keras' `[in, out]` kernel, so its `(a, b)` is our `bxa`). Each entry
//! is scored by its block's mean score (TF-MOT's average pooling of `|w|`), the allocation runs
//! unchanged on those scores, and the one block a threshold may split is then kept whole when
//! at least half of it was kept: every mask is whole blocks, and a layer's sparsity is the
//! target to within one block. Edge blocks of a layer whose sizes are not multiples of the
//! block are smaller and are scored the same way. The runtime stores such layers as BSR `Rx1`
//! or `1xC` blocks when that is measured faster.

use std::collections::BTreeMap;

use lopper_kernels::mask::{nm_mask, top_k_mask};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::masks::{LayerInfo, Masks};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// Smallest `|w|` pruned first.
    Magnitude,
    /// Uniformly random (a control for magnitude).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    /// Every layer pruned to the target.
    Layerwise,
    /// One threshold over all layers (subject to the per-layer floor).
    Global,
    /// Erdős–Rényi-Kernel (Evci et al. 2020): layer density proportional to
    /// `sum(shape) / prod(shape)`, capped at 1, scaled so the total meets the target.
    Erk,
}

/// ERK sparsity per layer (in `layers` order) for an overall `target`.
pub fn erk_sparsities(shapes: &[Vec<usize>], target: f64) -> Vec<f64> {
    let n: Vec<f64> = shapes
        .iter()
        .map(|s| s.iter().product::<usize>() as f64)
        .collect();
    let raw: Vec<f64> = shapes
        .iter()
        .zip(&n)
        .map(|(s, &n)| s.iter().sum::<usize>() as f64 / n.max(1.0))
        .collect();
    let keep_total = (1.0 - target) * n.iter().sum::<f64>();
    let mut dense = vec![false; shapes.len()];
    loop {
        let fixed: f64 = (0..n.len()).filter(|&i| dense[i]).map(|i| n[i]).sum();
        let scaled: f64 = (0..n.len())
            .filter(|&i| !dense[i])
            .map(|i| raw[i] * n[i])
            .sum();
        let eps = if scaled > 0.0 {
            (keep_total - fixed) / scaled
        } else {
            0.0
        };
        let mut changed = false;
        for i in 0..n.len() {
            if !dense[i] && eps * raw[i] > 1.0 {
                dense[i] = true;
                changed = true;
            }
        }
        if !changed {
            return (0..n.len())
                .map(|i| {
                    if dense[i] {
                        0.0
                    } else {
                        (1.0 - eps * raw[i]).clamp(0.0, 1.0)
                    }
                })
                .collect();
        }
    }
}

/// How to turn a target sparsity into masks.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunePlan {
    pub criterion: Criterion,
    pub allocation: Allocation,
    /// Under global allocation, every layer keeps at least this fraction of its weights.
    pub min_density: f64,
    /// Layers with their own final sparsity (path → sparsity); they scale with the schedule.
    pub overrides: BTreeMap<String, f64>,
    pub seed: u64,
    /// N:M structured sparsity `(n, m)`: masks keep `n` of every `m` (the target is `1 - n/m`).
    pub pattern: Option<(usize, usize)>,
    /// Block pattern `(rows, cols)`: whole blocks of the `[out, in]` matrix are kept or pruned.
    pub block: Option<(usize, usize)>,
}

/// `[out, K]` row-major order of a layer's values, as indices into burn's layout.
fn out_major_order(shape: &[usize]) -> Option<(usize, usize, Vec<usize>)> {
    match shape {
        // burn Linear [in, out]: element (o, i) is values[i * out + o].
        &[fan_in, fan_out] => {
            let order = (0..fan_out)
                .flat_map(|o| (0..fan_in).map(move |i| i * fan_out + o))
                .collect();
            Some((fan_out, fan_in, order))
        }
        // Conv2d [out, in, kh, kw] is [out, in*kh*kw] already.
        [out, rest @ ..] if !rest.is_empty() => {
            let k: usize = rest.iter().product();
            Some((*out, k, (0..out * k).collect()))
        }
        _ => None,
    }
}

/// The N:M mask of one layer in burn's layout, or `None` when its input count does not fit.
fn layer_nm_mask(shape: &[usize], scores: &[f32], n: usize, m: usize) -> Option<Vec<bool>> {
    let (_, k, order) = out_major_order(shape)?;
    if k == 0 || !k.is_multiple_of(m) || order.len() != scores.len() {
        return None;
    }
    let ordered: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
    let keep = nm_mask(&ordered, k, n, m);
    let mut mask = vec![false; scores.len()];
    for (j, &i) in order.iter().enumerate() {
        mask[i] = keep[j];
    }
    Some(mask)
}

/// The block of every value of a layer (burn's layout), and the number of blocks, for blocks of
/// `br` outputs by `bc` inputs; `None` for a layer without an `[out, in]` reading (a vector).
fn block_ids(shape: &[usize], br: usize, bc: usize) -> Option<(Vec<usize>, usize)> {
    let (out, k, order) = out_major_order(shape)?;
    let per_row = k.div_ceil(bc);
    let mut ids = vec![0; order.len()];
    for (j, &i) in order.iter().enumerate() {
        ids[i] = (j / k / br) * per_row + (j % k) / bc;
    }
    Some((ids, out.div_ceil(br) * per_row))
}

/// Every score replaced by the mean score of its block.
fn block_mean(scores: &[f32], ids: &[usize], blocks: usize) -> Vec<f32> {
    let mut sum = vec![0f64; blocks];
    let mut count = vec![0u32; blocks];
    for (&s, &b) in scores.iter().zip(ids) {
        sum[b] += s.abs() as f64;
        count[b] += 1;
    }
    ids.iter()
        .map(|&b| (sum[b] / count[b] as f64) as f32)
        .collect()
}

/// Makes a mask whole blocks: a block is kept when at least half of its entries were.
fn snap_to_blocks(mask: &mut [bool], ids: &[usize], blocks: usize) {
    let mut kept = vec![0u32; blocks];
    let mut size = vec![0u32; blocks];
    for (&m, &b) in mask.iter().zip(ids) {
        kept[b] += m as u32;
        size[b] += 1;
    }
    for (m, &b) in mask.iter_mut().zip(ids) {
        *m = kept[b] > 0 && 2 * kept[b] >= size[b];
    }
}

impl PrunePlan {
    /// Masks for `layers` at `target` (the scheduled sparsity; `final_target` is where the
    /// schedule ends, used to scale per-layer overrides proportionally).
    pub fn masks(
        &self,
        layers: &[LayerInfo],
        old: &Masks,
        target: f64,
        final_target: f64,
        event: u64,
    ) -> Masks {
        let Some((br, bc)) = self.block else {
            return self.element_masks(layers, old, target, final_target, event, |_, s| s);
        };
        let ids: Vec<Option<(Vec<usize>, usize)>> =
            layers.iter().map(|l| block_ids(&l.shape, br, bc)).collect();
        let mut out = self.element_masks(
            layers,
            old,
            target,
            final_target,
            event,
            |i, s| match &ids[i] {
                Some((id, n)) => block_mean(&s, id, *n),
                None => s,
            },
        );
        for (l, id) in layers.iter().zip(&ids) {
            if let (Some((id, n)), Some(m)) = (id, out.get(&l.path)) {
                let mut m = m.to_vec();
                snap_to_blocks(&mut m, id, *n);
                out.insert(l.path.clone(), m);
            }
        }
        out
    }

    /// Masks from per-entry scores (`rescore(layer index, scores)` may replace a layer's scores,
    /// e.g. by its block means, before the allocation sees them).
    fn element_masks(
        &self,
        layers: &[LayerInfo],
        old: &Masks,
        target: f64,
        final_target: f64,
        event: u64,
        rescore: impl Fn(usize, Vec<f32>) -> Vec<f32>,
    ) -> Masks {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed ^ event.wrapping_mul(0xA24B_AED4_963E_E407));
        let scores: Vec<Vec<f32>> = layers
            .iter()
            .map(|l| {
                let keep = old.get(&l.path);
                l.values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        if keep.is_some_and(|k| !k[i]) {
                            return 0.0;
                        }
                        match self.criterion {
                            Criterion::Magnitude => v.abs(),
                            Criterion::Random => rng.gen_range(f32::MIN_POSITIVE..1.0),
                        }
                    })
                    .collect()
            })
            .enumerate()
            .map(|(i, s)| rescore(i, s))
            .collect();
        let layer_target = |path: &str| -> f64 {
            match self.overrides.get(path) {
                Some(&s) if final_target > 0.0 => (s * target / final_target).min(s),
                Some(_) => 0.0,
                None => target,
            }
        };
        let mut out = Masks::new();
        if let Some((n, m)) = self.pattern {
            for (l, sc) in layers.iter().zip(&scores) {
                if let Some(mask) = layer_nm_mask(&l.shape, sc, n, m) {
                    out.insert(l.path.clone(), and(old.get(&l.path), mask));
                } else if let Some(k) = old.get(&l.path) {
                    out.insert(l.path.clone(), k.to_vec());
                }
            }
            return out;
        }
        if self.allocation == Allocation::Erk {
            let shapes: Vec<Vec<usize>> = layers.iter().map(|l| l.shape.clone()).collect();
            for (l, (sc, s)) in layers
                .iter()
                .zip(scores.iter().zip(erk_sparsities(&shapes, target)))
            {
                let m = top_k_mask(sc, s);
                out.insert(l.path.clone(), and(old.get(&l.path), m));
            }
            return out;
        }
        let global: Vec<usize> = (0..layers.len())
            .filter(|&i| {
                self.allocation == Allocation::Global
                    && !self.overrides.contains_key(&layers[i].path)
            })
            .collect();
        if !global.is_empty() {
            let pooled: Vec<f32> = global
                .iter()
                .flat_map(|&i| scores[i].iter().copied())
                .collect();
            let keep = top_k_mask(&pooled, target);
            let mut offset = 0;
            for &i in &global {
                let n = scores[i].len();
                let mut m = keep[offset..offset + n].to_vec();
                offset += n;
                let kept = m.iter().filter(|&&k| k).count();
                if (kept as f64) < self.min_density * n as f64 {
                    m = top_k_mask(&scores[i], 1.0 - self.min_density);
                }
                out.insert(layers[i].path.clone(), and(old.get(&layers[i].path), m));
            }
        }
        for (i, l) in layers.iter().enumerate() {
            if global.contains(&i) {
                continue;
            }
            let m = top_k_mask(&scores[i], layer_target(&l.path));
            out.insert(l.path.clone(), and(old.get(&l.path), m));
        }
        out
    }
}

fn and(old: Option<&[bool]>, new: Vec<bool>) -> Vec<bool> {
    match old {
        Some(o) => new.iter().zip(o).map(|(a, b)| *a && *b).collect(),
        None => new,
    }
}

#[cfg(test)]
mod nm_tests {
    use super::*;

    #[test]
    fn erk_meets_the_target_and_favours_small_layers() {
        // LeNet-300-100 in burn's [in, out] layout.
        let shapes = vec![vec![784, 300], vec![300, 100], vec![100, 10]];
        let s = erk_sparsities(&shapes, 0.9);
        let n: Vec<f64> = shapes.iter().map(|s| (s[0] * s[1]) as f64).collect();
        let kept: f64 = s.iter().zip(&n).map(|(s, n)| (1.0 - s) * n).sum();
        assert!((kept / n.iter().sum::<f64>() - 0.1).abs() < 1e-9);
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        // The 1000-weight output layer is kept dense at 90 %: ERK caps it at density 1.
        let s = erk_sparsities(&shapes, 0.5);
        assert_eq!(s[2], 0.0);
    }

    #[test]
    fn linear_groups_run_along_the_inputs_of_each_output() {
        // burn [in = 8, out = 2]: output 0 reads values[i * 2], output 1 values[i * 2 + 1].
        let v: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let m = layer_nm_mask(&[8, 2], &v, 2, 4).unwrap();
        for o in 0..2 {
            for g in 0..2 {
                let kept = (0..4).filter(|&j| m[(g * 4 + j) * 2 + o]).count();
                assert_eq!(kept, 2, "output {o} group {g}");
            }
            // Largest magnitudes win: inputs 2, 3 and 6, 7 of each output.
            assert!(m[3 * 2 + o] && m[2 * 2 + o] && !m[o]);
        }
        assert!(
            layer_nm_mask(&[25, 3], &[1.0; 75], 2, 4).is_none(),
            "25 inputs do not fit 4"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ParamId;

    pub(super) fn layer(path: &str, values: Vec<f32>) -> LayerInfo {
        LayerInfo {
            path: path.into(),
            id: ParamId::new(),
            shape: vec![values.len()],
            values,
        }
    }

    pub(super) fn plan(allocation: Allocation) -> PrunePlan {
        PrunePlan {
            criterion: Criterion::Magnitude,
            allocation,
            min_density: 0.0,
            overrides: BTreeMap::new(),
            seed: 1,
            pattern: None,
            block: None,
        }
    }

    fn kept(m: &Masks, p: &str) -> usize {
        m.get(p).unwrap().iter().filter(|&&k| k).count()
    }

    #[test]
    fn layerwise_prunes_each_layer_to_target() {
        let layers = [
            layer("a", vec![1.0, 2.0, 3.0, 4.0]),
            layer("b", vec![10.0, 20.0, 30.0, 40.0]),
        ];
        let m = plan(Allocation::Layerwise).masks(&layers, &Masks::new(), 0.5, 0.5, 0);
        assert_eq!(m.get("a").unwrap(), &[false, false, true, true]);
        assert_eq!(kept(&m, "b"), 2);
    }

    #[test]
    fn global_uses_one_threshold() {
        let layers = [
            layer("a", vec![1.0, 2.0, 3.0, 4.0]),
            layer("b", vec![10.0, 20.0, 30.0, 40.0]),
        ];
        let m = plan(Allocation::Global).masks(&layers, &Masks::new(), 0.5, 0.5, 0);
        assert_eq!(kept(&m, "a"), 0);
        assert_eq!(kept(&m, "b"), 4);
    }

    #[test]
    fn global_respects_the_floor() {
        let layers = [
            layer("a", vec![1.0, 2.0, 3.0, 4.0]),
            layer("b", vec![10.0, 20.0, 30.0, 40.0]),
        ];
        let mut p = plan(Allocation::Global);
        p.min_density = 0.25;
        let m = p.masks(&layers, &Masks::new(), 0.5, 0.5, 0);
        assert_eq!(m.get("a").unwrap(), &[false, false, false, true]);
    }

    #[test]
    fn pruned_weights_never_come_back() {
        let layers = [layer("a", vec![5.0, 1.0, 3.0, 4.0])];
        let mut old = Masks::new();
        old.insert("a", vec![false, true, true, true]);
        // A lower target would keep 3, but the first weight was already pruned.
        let m = plan(Allocation::Layerwise).masks(&layers, &old, 0.25, 0.5, 0);
        assert!(!m.get("a").unwrap()[0]);
    }

    #[test]
    fn overrides_scale_with_the_schedule() {
        let layers = [layer("a", vec![1.0; 10]), layer("b", vec![1.0; 10])];
        let mut p = plan(Allocation::Layerwise);
        p.overrides.insert("b".into(), 0.4);
        let m = p.masks(&layers, &Masks::new(), 0.4, 0.8, 0); // halfway through the schedule
        assert_eq!(kept(&m, "a"), 6);
        assert_eq!(kept(&m, "b"), 8);
    }

    #[test]
    fn random_criterion_is_seeded() {
        let layers = [layer("a", (0..100).map(|i| i as f32).collect())];
        let mut p = plan(Allocation::Layerwise);
        p.criterion = Criterion::Random;
        let a = p.masks(&layers, &Masks::new(), 0.5, 0.5, 3);
        let b = p.masks(&layers, &Masks::new(), 0.5, 0.5, 3);
        assert_eq!(a, b);
        assert_eq!(kept(&a, "a"), 50);
        let magnitude = plan(Allocation::Layerwise).masks(&layers, &Masks::new(), 0.5, 0.5, 3);
        assert_ne!(a, magnitude);
    }
}

#[cfg(test)]
mod block_tests {
    use super::*;

    fn linear(path: &str, fan_in: usize, fan_out: usize, values: Vec<f32>) -> LayerInfo {
        LayerInfo {
            shape: vec![fan_in, fan_out],
            ..super::tests::layer(path, values)
        }
    }

    fn plan(allocation: Allocation, block: (usize, usize)) -> PrunePlan {
        PrunePlan {
            block: Some(block),
            ..super::tests::plan(allocation)
        }
    }

    /// Asserts every `br x bc` block of `[out, in]` (burn `[in, out]` values) is all kept or all
    /// pruned; returns the kept count.
    fn whole_blocks(mask: &[bool], fan_in: usize, fan_out: usize, br: usize, bc: usize) -> usize {
        for ob in 0..fan_out.div_ceil(br) {
            for ib in 0..fan_in.div_ceil(bc) {
                let cells: Vec<bool> = (ob * br..((ob + 1) * br).min(fan_out))
                    .flat_map(|o| (ib * bc..((ib + 1) * bc).min(fan_in)).map(move |i| (o, i)))
                    .map(|(o, i)| mask[i * fan_out + o])
                    .collect();
                assert!(
                    cells.iter().all(|&k| k) || cells.iter().all(|&k| !k),
                    "block ({ob}, {ib}) split: {cells:?}"
                );
            }
        }
        mask.iter().filter(|&&k| k).count()
    }

    #[test]
    fn block_ids_follow_the_out_in_matrix() {
        // burn Linear [in = 3, out = 5], 2x2 blocks of [out, in]: 3 block rows x 2 block cols.
        let (ids, n) = block_ids(&[3, 5], 2, 2).unwrap();
        assert_eq!(n, 6);
        // value i * 5 + o is entry (o, i): block (o / 2) * 2 + i / 2.
        for i in 0..3 {
            for o in 0..5 {
                assert_eq!(ids[i * 5 + o], (o / 2) * 2 + i / 2, "o {o} i {i}");
            }
        }
        // Conv [out = 3, in = 2, 1, 2] is [3, 4] already; 1x4 blocks are whole rows.
        let (ids, n) = block_ids(&[3, 2, 1, 2], 1, 4).unwrap();
        assert_eq!((ids, n), (vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], 3));
        assert!(block_ids(&[7], 2, 2).is_none());
    }

    #[test]
    fn blocks_are_kept_or_pruned_whole_by_mean_magnitude() {
        // [in = 6, out = 8] with pseudo-random magnitudes; 4x1 and 1x4 blocks, uneven edges.
        let mut s = 17u32;
        let values: Vec<f32> = (0..48)
            .map(|_| {
                s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        for (br, bc) in [(4, 1), (1, 4), (3, 4)] {
            let layers = [linear("w", 6, 8, values.clone())];
            let m =
                plan(Allocation::Layerwise, (br, bc)).masks(&layers, &Masks::new(), 0.5, 0.5, 0);
            let kept = whole_blocks(m.get("w").unwrap(), 6, 8, br, bc);
            let block = br * bc;
            assert!(kept.abs_diff(24) <= block, "{br}x{bc}: kept {kept}");
            // The kept blocks have the larger mean |w|.
            let (ids, n) = block_ids(&[6, 8], br, bc).unwrap();
            let means = block_mean(&values, &ids, n);
            let mask = m.get("w").unwrap();
            let kept_min = (0..48)
                .filter(|&i| mask[i])
                .map(|i| means[i])
                .fold(f32::MAX, f32::min);
            let pruned_max = (0..48)
                .filter(|&i| !mask[i])
                .map(|i| means[i])
                .fold(0.0, f32::max);
            assert!(
                kept_min >= pruned_max,
                "{br}x{bc}: {kept_min} < {pruned_max}"
            );
        }
    }

    #[test]
    fn global_blocks_stay_whole_and_pruned_blocks_stay_pruned() {
        let a: Vec<f32> = (0..32).map(|i| 1.0 + (i % 7) as f32).collect();
        let b: Vec<f32> = (0..32).map(|i| 0.5 + (i % 5) as f32).collect();
        let layers = [linear("a", 4, 8, a.clone()), linear("b", 8, 4, b)];
        let p = plan(Allocation::Global, (4, 1));
        let first = p.masks(&layers, &Masks::new(), 0.5, 0.75, 0);
        let second = p.masks(&layers, &first, 0.75, 0.75, 1);
        let mut kept = 0;
        for (name, fi, fo) in [("a", 4, 8), ("b", 8, 4)] {
            let (m1, m2) = (first.get(name).unwrap(), second.get(name).unwrap());
            whole_blocks(m1, fi, fo, 4, 1);
            kept += whole_blocks(m2, fi, fo, 4, 1);
            assert!(
                m2.iter().zip(m1).all(|(n, o)| !*n || *o),
                "{name}: a pruned block came back"
            );
        }
        assert!(kept.abs_diff(16) <= 4, "kept {kept} of 64");
    }

    #[test]
    fn an_all_zero_layer_prunes_whole_blocks_too() {
        let layers = [linear("z", 8, 8, vec![0.0; 64])];
        let m = plan(Allocation::Layerwise, (2, 2)).masks(&layers, &Masks::new(), 0.5, 0.5, 0);
        let kept = whole_blocks(m.get("z").unwrap(), 8, 8, 2, 2);
        assert_eq!(kept % 4, 0);
        assert!(kept.abs_diff(32) <= 4);
    }
}
