//! Small dense f64 linear algebra for SparseGPT: Cholesky factors and the inverse of a symmetric
//! positive definite matrix. Matrices are row-major `n x n`; every inner loop runs along
//! contiguous rows so it vectorises.

/// Dot product with independent accumulators (a single running sum would serialise on the
/// floating-point add and never vectorise).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f64 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// Mean of the diagonal of a row-major `n x n` matrix (the scale SparseGPT's dampening is a
/// fraction of).
pub fn mean_diagonal(a: &[f64], n: usize) -> f64 {
    (0..n).map(|i| a[i * n + i]).sum::<f64>() / n.max(1) as f64
}

/// `y += a * x`.
pub fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Lower Cholesky factor `L` with `A = L Lᵀ`; `None` when `A` is not positive definite.
pub fn cholesky_lower(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let (done, rest) = l.split_at_mut(j * n);
        let lj = &mut rest[..n];
        // Row j left of the diagonal: L[j][k] = (A[j][k] - L[j][..k]·L[k][..k]) / L[k][k].
        for k in 0..j {
            let lk = &done[k * n..k * n + n];
            let v = (a[j * n + k] - dot(&lj[..k], &lk[..k])) / lk[k];
            lj[k] = v;
        }
        let d = a[j * n + j] - dot(&lj[..j], &lj[..j]);
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        lj[j] = d.sqrt();
    }
    Some(l)
}

/// `A⁻¹` from the lower Cholesky factor of `A`: `M = L⁻¹` by row updates, then `A⁻¹ = Mᵀ M`.
pub fn inverse_from_cholesky(l: &[f64], n: usize) -> Vec<f64> {
    let mut m = vec![0.0f64; n * n];
    for i in 0..n {
        let (done, rest) = m.split_at_mut(i * n);
        let mi = &mut rest[..n];
        mi[i] = 1.0;
        // row_i(M) = (e_i - sum_{k<i} L[i][k] row_k(M)) / L[i][i]; row_k(M) is zero right of k.
        for k in 0..i {
            let lik = l[i * n + k];
            if lik != 0.0 {
                axpy(&mut mi[..=k], -lik, &done[k * n..k * n + k + 1]);
            }
        }
        let inv = 1.0 / l[i * n + i];
        for v in mi[..=i].iter_mut() {
            *v *= inv;
        }
    }
    // (Mᵀ M)[a][b] = sum_k M[k][a] M[k][b]: one rank-1 update per row k of M, over the
    // block a, b <= k where row k is nonzero (so both triangles are filled).
    let mut out = vec![0.0f64; n * n];
    for k in 0..n {
        let mk = &m[k * n..k * n + k + 1];
        for (a, &ma) in mk.iter().enumerate() {
            if ma != 0.0 {
                axpy(&mut out[a * n..a * n + k + 1], ma, mk);
            }
        }
    }
    out
}

/// Upper Cholesky factor `U` with `A = Uᵀ U` (the transpose of the lower factor).
pub fn cholesky_upper(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let l = cholesky_lower(a, n)?;
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = l[i * n + j];
        }
    }
    Some(u)
}

/// Solves `A x = b` given the lower Cholesky factor `L` of `A` (forward, then back
/// substitution), in place in `b`.
pub fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let s = b[i] - dot(&l[i * n..i * n + i], &b[..i]);
        b[i] = s / l[i * n + i];
    }
    // Lᵀ x = y: column i of Lᵀ is row i of L, so subtract along rows.
    for i in (0..n).rev() {
        b[i] /= l[i * n + i];
        let xi = b[i];
        for (k, bk) in b[..i].iter_mut().enumerate() {
            *bk -= l[i * n + k] * xi;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> Vec<f64> {
        // B Bᵀ + n I with a fixed pseudo-random B.
        let mut s = 12345u64;
        let b: Vec<f64> = (0..n * n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = dot(&b[i * n..i * n + n], &b[j * n..j * n + n]);
            }
            a[i * n + i] += n as f64;
        }
        a
    }

    #[test]
    fn inverse_times_matrix_is_identity() {
        for n in [1, 2, 7, 33] {
            let a = spd(n);
            let l = cholesky_lower(&a, n).unwrap();
            let inv = inverse_from_cholesky(&l, n);
            for i in 0..n {
                for j in 0..n {
                    let p: f64 = (0..n).map(|k| a[i * n + k] * inv[k * n + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((p - want).abs() < 1e-10, "n={n} ({i},{j}): {p}");
                }
            }
            let u = cholesky_upper(&inv, n).unwrap();
            for i in 0..n {
                for j in 0..n {
                    let p: f64 = (0..n).map(|k| u[k * n + i] * u[k * n + j]).sum();
                    assert!((p - inv[i * n + j]).abs() < 1e-10);
                }
            }
        }
    }

    #[test]
    fn solve_inverts() {
        let n = 9;
        let a = spd(n);
        let l = cholesky_lower(&a, n).unwrap();
        let x: Vec<f64> = (0..n).map(|i| i as f64 - 3.5).collect();
        let mut b: Vec<f64> = (0..n).map(|i| dot(&a[i * n..i * n + n], &x)).collect();
        cholesky_solve(&l, n, &mut b);
        for (u, v) in b.iter().zip(&x) {
            assert!((u - v).abs() < 1e-10);
        }
    }

    #[test]
    fn not_positive_definite_is_none() {
        assert!(cholesky_lower(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(cholesky_lower(&[0.0], 1).is_none());
    }
}
