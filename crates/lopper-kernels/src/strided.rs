//! Dense matrix products on strided views, for the parts of a model that stay dense (attention
//! scores and their weighted sums). A view is `(slice, row stride, column stride)`; element
//! `(r, c)` is `slice[r * rs + c * cs]`. The call checks that every element of every view lies
//! inside its slice, then hands the strides to the `gemm` crate, which packs them itself, so a
//! transposed operand costs no copy.

use crate::error::KernelError;

/// A read-only `rows x cols` view.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// The largest index a view touches, or `None` when it is empty.
fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return None;
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)
}

fn check(
    what: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<(), KernelError> {
    match last_index(rows, cols, rs, cs) {
        Some(i) if i < len => Ok(()),
        None if rows == 0 || cols == 0 => Ok(()),
        _ => Err(KernelError::ShapeMismatch {
            what,
            expected: rows.saturating_sub(1) * rs + cols.saturating_sub(1) * cs + 1,
            actual: len,
        }),
    }
}

/// `dst = scale · (a · b)` with `a: [m, k]`, `b: [k, n]` and `dst: [m, n]` at strides
/// `(dst_rs, dst_cs)`. Overwrites `dst`; single-threaded (callers split work above it).
pub fn matmul(
    a: View<'_>,
    b: View<'_>,
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    scale: f32,
) -> Result<(), KernelError> {
    if a.cols != b.rows {
        return Err(KernelError::ShapeMismatch {
            what: "inner dimensions of a strided matmul",
            expected: a.cols,
            actual: b.rows,
        });
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    check("lhs view", a.data.len(), m, k, a.rs, a.cs)?;
    check("rhs view", b.data.len(), k, n, b.rs, b.cs)?;
    check("dst view", dst.len(), m, n, dst_rs, dst_cs)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for r in 0..m {
            for c in 0..n {
                dst[r * dst_rs + c * dst_cs] = 0.0;
            }
        }
        return Ok(());
    }
    // SAFETY: `check` proved that every index (r * rs + c * cs) of each view, for r and c in
    // range, lies inside its slice; strides fit isize because they index a live slice.
    // `read_dst = false`: dst is only written. `dst` does not alias `a` or `b` (it is `&mut`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            false,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            0.0f32,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: View<'_>, b: View<'_>, scale: f32) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for r in 0..a.rows {
            for c in 0..b.cols {
                let mut s = 0.0f64;
                for k in 0..a.cols {
                    s += a.data[r * a.rs + k * a.cs] as f64 * b.data[k * b.rs + c * b.cs] as f64;
                }
                out[r * b.cols + c] = s * scale as f64;
            }
        }
        out
    }

    #[test]
    fn transposed_and_strided_views_match_reference() {
        let data: Vec<f32> = (0..4000)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for &(m, k, n) in &[(1, 1, 1), (5, 3, 7), (17, 32, 9), (33, 16, 64)] {
            // a as the transpose of a [k, m] block with row stride 70; b with row stride 80.
            let a = View {
                data: &data,
                rows: m,
                cols: k,
                rs: 1,
                cs: 70,
            };
            let b = View {
                data: &data[100..],
                rows: k,
                cols: n,
                rs: 80,
                cs: 1,
            };
            let mut dst = vec![f32::NAN; m * 90];
            matmul(a, b, &mut dst, 90, 1, 0.5).unwrap();
            let want = reference(a, b, 0.5);
            for r in 0..m {
                for c in 0..n {
                    let (g, w) = (dst[r * 90 + c] as f64, want[r * n + c]);
                    assert!(
                        (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{m}x{k}x{n} ({r},{c}): {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_views_outside_their_slices() {
        let d = vec![0.0f32; 10];
        let a = View {
            data: &d,
            rows: 3,
            cols: 4,
            rs: 4,
            cs: 1,
        };
        let b = View {
            data: &d,
            rows: 4,
            cols: 1,
            rs: 1,
            cs: 1,
        };
        let mut out = vec![0.0; 3];
        assert!(matmul(a, b, &mut out, 1, 1, 1.0).is_err());
        let a = View {
            data: &d,
            rows: 2,
            cols: 4,
            rs: 4,
            cs: 1,
        };
        let b = View {
            data: &d,
            rows: 3,
            cols: 1,
            rs: 1,
            cs: 1,
        };
        assert!(matmul(a, b, &mut out, 1, 1, 1.0).is_err());
    }
}
