//! How closely a pruned encoder keeps the dense one's behaviour on held-out sentences: cosine
//! between each sentence's two embeddings (mean and minimum), and the Spearman rank correlation
//! between the two models' pairwise sentence similarities (a proxy for retrieval ranking).
//! Embeddings are `[B, hidden]`, example-major.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fidelity {
    pub sentences: usize,
    pub mean_cosine: f64,
    pub min_cosine: f64,
    pub spearman: f64,
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rho: Pearson correlation of the ranks.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    if n < 2.0 {
        return 1.0;
    }
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va.sqrt() * vb.sqrt())
}

/// Compares two embedding sets of the same sentences.
pub fn fidelity(dense: &[f32], pruned: &[f32], hidden: usize) -> Fidelity {
    let rows: Vec<(&[f32], &[f32])> = dense
        .chunks_exact(hidden)
        .zip(pruned.chunks_exact(hidden))
        .collect();
    let cos: Vec<f64> = rows.iter().map(|(a, b)| cosine(a, b)).collect();
    let n = rows.len();
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            sa.push(cosine(rows[i].0, rows[j].0));
            sb.push(cosine(rows[i].1, rows[j].1));
        }
    }
    Fidelity {
        sentences: n,
        mean_cosine: if n > 0 {
            cos.iter().sum::<f64>() / n as f64
        } else {
            0.0
        },
        min_cosine: cos.iter().copied().fold(f64::INFINITY, f64::min),
        spearman: spearman(&sa, &sb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_monotone_maps_is_one() {
        let a = [1.0, 5.0, 2.0, 9.0];
        let b = [10.0, 50.0, 20.0, 90.0];
        assert!((spearman(&a, &b) - 1.0).abs() < 1e-12);
        let c = [4.0, 1.0, 3.0, 0.0];
        assert!((spearman(&a, &c) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn ties_get_average_ranks() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0]), vec![2.5, 1.0, 2.5]);
    }

    #[test]
    fn identical_embeddings_are_perfect() {
        let e = [1.0, 0.0, 0.5, 0.5, -1.0, 2.0];
        let f = fidelity(&e, &e, 2);
        assert_eq!(f.sentences, 3);
        assert!((f.mean_cosine - 1.0).abs() < 1e-12 && (f.min_cosine - 1.0).abs() < 1e-12);
        assert!((f.spearman - 1.0).abs() < 1e-12);
    }
}
