//! Mask and score arithmetic on plain slices, shared by post-training and in-training pruning.
//!
//! Masks are `bool` slices in the same row-major `[rows, cols]` order as the weights: `true`
//! keeps an entry. Ties are broken by position (the earlier entry is kept), so the result is
//! deterministic.

/// Keeps the `round((1 - sparsity) * len)` entries of largest `|score|` (NaN counts as largest,
/// so it is never silently dropped). `sparsity` is clamped to `[0, 1]`.
pub fn top_k_mask(scores: &[f32], sparsity: f64) -> Vec<bool> {
    let keep = ((1.0 - sparsity.clamp(0.0, 1.0)) * scores.len() as f64).round() as usize;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |i: usize| {
        let a = scores[i].abs();
        if a.is_nan() {
            f32::INFINITY
        } else {
            a
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let mut mask = vec![false; scores.len()];
    for &i in &order[..keep.min(order.len())] {
        mask[i] = true;
    }
    mask
}

/// N:M mask: in every group of `m` consecutive columns of a row, keeps the `n` entries of
/// largest `|score|`. `cols` must be a multiple of `m` (the N:M format requires it).
pub fn nm_mask(scores: &[f32], cols: usize, n: usize, m: usize) -> Vec<bool> {
    assert!(
        m > 0 && cols.is_multiple_of(m) && scores.len().is_multiple_of(cols.max(1)),
        "nm_mask: bad shape"
    );
    let mut mask = vec![false; scores.len()];
    for (g, group) in scores.chunks(m).enumerate() {
        let local = top_k_mask(group, 1.0 - n as f64 / m as f64);
        mask[g * m..g * m + m].copy_from_slice(&local);
    }
    mask
}

/// One dynamic-sparse-training update (SET, RigL): of the kept entries of `keep`, the `k` with
/// smallest `|weight|` are dropped; then the `k` not-kept entries (those just dropped included,
/// as in RigL) with largest `grow_score` are kept. The number of kept entries never changes
/// (`k` is capped at what can be dropped and regrown). Returns the new mask.
pub fn drop_and_grow(weights: &[f32], keep: &[bool], k: usize, grow_score: &[f32]) -> Vec<bool> {
    assert!(
        weights.len() == keep.len() && keep.len() == grow_score.len(),
        "drop_and_grow: lengths differ"
    );
    let kept: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
    let k = k.min(kept.len());
    let mut by_mag = kept.clone();
    // Smallest magnitude first; ties by position, so the result is deterministic.
    by_mag.sort_by(|&a, &b| {
        weights[a]
            .abs()
            .total_cmp(&weights[b].abs())
            .then(a.cmp(&b))
    });
    let mut out = keep.to_vec();
    for &i in &by_mag[..k] {
        out[i] = false;
    }
    let mut candidates: Vec<usize> = (0..out.len()).filter(|&i| !out[i]).collect();
    let key = |i: usize| {
        let s = grow_score[i];
        if s.is_nan() {
            f32::NEG_INFINITY
        } else {
            s
        }
    };
    candidates.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    for &i in &candidates[..k] {
        out[i] = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_and_grow_keeps_the_count() {
        let w = [0.5, -0.1, 0.0, 2.0, 0.0, 0.3];
        let keep = [true, true, false, true, false, true];
        let grow = [0.0, 0.0, 9.0, 0.0, 1.0, 0.0];
        // Drops -0.1 and 0.3 (smallest kept), grows index 2 then 4 (largest scores).
        let m = drop_and_grow(&w, &keep, 2, &grow);
        assert_eq!(m, vec![true, false, true, true, true, false]);
        assert_eq!(m.iter().filter(|&&b| b).count(), 4);
        // A just-dropped entry may come back when its score is highest.
        let m = drop_and_grow(&w, &keep, 1, &[0.0, 5.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(m, keep.to_vec());
        // k larger than what exists is capped; an all-kept mask stays all kept.
        let all = [true; 6];
        assert_eq!(drop_and_grow(&w, &all, 3, &grow), all.to_vec());
        assert_eq!(
            drop_and_grow(&w, &keep, 99, &grow)
                .iter()
                .filter(|&&b| b)
                .count(),
            4
        );
    }

    #[test]
    fn top_k_keeps_largest_magnitudes() {
        let mask = top_k_mask(&[0.1, -5.0, 3.0, 0.0], 0.5);
        assert_eq!(mask, vec![false, true, true, false]);
    }

    #[test]
    fn top_k_breaks_ties_by_position() {
        assert_eq!(
            top_k_mask(&[1.0, 1.0, 1.0], 2.0 / 3.0),
            vec![true, false, false]
        );
    }

    #[test]
    fn nm_mask_keeps_n_per_group() {
        let mask = nm_mask(&[1.0, 4.0, 2.0, 3.0, -9.0, 0.0, 0.0, 1.0], 8, 2, 4);
        assert_eq!(
            mask,
            vec![false, true, false, true, true, false, false, true]
        );
    }
}
