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

#[cfg(test)]
mod tests {
    use super::*;

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
