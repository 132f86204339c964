//! Fused scaled-dot-product attention for one head of one sequence:
//! `ctx = softmax(scale · Qᵀ K) V`, in the feature-major layout the transformer runtime keeps.
//!
//! Layout (the invariant every caller must meet): `Q`, `K`, `V` and `ctx` are `[head_dim, len]`
//! views with row stride `ld >= len`: element `(e, i)` is `slice[e * ld + i]`, so one feature row
//! holds the sequence's tokens back to back. Token `i` is a query, token `j` a key.
//!
//! The kernel computes the scores transposed, `Sᵀ[j][i] = scale · Σ_e K[e, j] Q[e, i]`, into
//! scratch rows that run over queries `i`. Then every step is a product or an elementwise pass
//! over contiguous query lanes:
//! 1. `Sᵀ = scale · Kᵀ Q`: a broadcast-times-row product (`K` elements broadcast, `Q` rows loaded);
//! 2. the softmax of each query runs down a column of `Sᵀ`: a running maximum over the rows, then
//!    `exp(s - max)` in place and a running sum, all lane-parallel over queries;
//! 3. `ctx = V Sᵀ`, then each query's column is divided by its sum (`head_dim · len` divisions
//!    instead of `len²`).
//!
//! Both products share one register-tiled routine: `C[r, i] = α · Σ_l A(r, l) · B[l, i]`,
//! `A` read through strides and broadcast, rows of `B` and `C` contiguous over `i`. The AVX-512
//! path tiles 4 rows x 64 lanes (16 accumulators); the portable path is the same algorithm in
//! plain loops, compiled for AVX2 when the CPU has it. Both are tested against
//! [`reference_head`], the f64 definition.

use crate::error::KernelError;
use crate::isa::Isa;

/// Scratch floats [`head`] needs for a sequence of `len` tokens.
pub fn scratch_len(len: usize) -> usize {
    let ld = len.next_multiple_of(16);
    len * ld + 2 * ld
}

/// The operands of one head of one sequence (layout in the module docs).
#[derive(Clone, Copy)]
pub struct Head<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    /// Row stride of `q`, `k`, `v` and the output, at least `len`.
    pub ld: usize,
    pub head_dim: usize,
    /// Tokens of the sequence.
    pub len: usize,
    /// Multiplies the scores before the softmax (`1 / sqrt(head_dim)` in a transformer).
    pub scale: f32,
}

/// `ctx = softmax(scale · Qᵀ K) V` for one head of one sequence. `scratch` must hold
/// [`scratch_len`]`(len)` floats. Columns of `ctx` past `len` are untouched.
pub fn head(h: &Head<'_>, ctx: &mut [f32], scratch: &mut [f32]) -> Result<(), KernelError> {
    head_with(Isa::selected(), h, ctx, scratch)
}

/// [`head`] on a given instruction set (tests compare them); an ISA this CPU lacks runs the best
/// one it has below it.
pub fn head_with(
    isa: Isa,
    h: &Head<'_>,
    ctx: &mut [f32],
    scratch: &mut [f32],
) -> Result<(), KernelError> {
    let (ld, head_dim, len) = (h.ld, h.head_dim, h.len);
    if len == 0 || head_dim == 0 {
        return Ok(());
    }
    if ld < len {
        return Err(KernelError::ShapeMismatch {
            what: "attention row stride (must cover the sequence)",
            expected: len,
            actual: ld,
        });
    }
    let need = (head_dim - 1) * ld + len;
    for (what, got) in [
        ("attention queries", h.q.len()),
        ("attention keys", h.k.len()),
        ("attention values", h.v.len()),
        ("attention output", ctx.len()),
    ] {
        if got < need {
            return Err(KernelError::ShapeMismatch {
                what,
                expected: need,
                actual: got,
            });
        }
    }
    if scratch.len() < scratch_len(len) {
        return Err(KernelError::ShapeMismatch {
            what: "attention scratch",
            expected: scratch_len(len),
            actual: scratch.len(),
        });
    }
    let isa = if isa.available() {
        isa
    } else {
        Isa::best_available().min(isa)
    };
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` checked AVX-512F (and AVX2+FMA) on this CPU; the bounds above are
        // the kernel's preconditions.
        Isa::Avx512 => unsafe { x86::head_avx512(h, ctx, scratch) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `available` checked AVX2+FMA on this CPU.
        Isa::Avx2 => unsafe { x86::head_avx2(h, ctx, scratch) },
        _ => head_body(h, ctx, scratch, &mut product_plain),
    }
    Ok(())
}

/// One broadcast-times-row product: `C[r, i] = alpha · Σ_l A[r·a_rs + l·a_cs] · B[l·b_rs + i]`
/// for `r < m`, `i < n`, `l < depth`; `C[r, i]` is `c[r·c_rs + i]`.
struct Product<'a> {
    a: &'a [f32],
    a_rs: usize,
    a_cs: usize,
    b: &'a [f32],
    b_rs: usize,
    m: usize,
    n: usize,
    depth: usize,
    alpha: f32,
    c_rs: usize,
}

/// The algorithm of the module docs with `product` as its two matrix products. Inlined into each
/// ISA's entry point so the elementwise passes are compiled for that ISA too.
#[inline(always)]
fn head_body(
    io: &Head<'_>,
    ctx: &mut [f32],
    scratch: &mut [f32],
    product: &mut impl FnMut(&Product<'_>, &mut [f32]),
) {
    let (len, ld) = (io.len, io.ld);
    let ls = len.next_multiple_of(16);
    let (st, rest) = scratch.split_at_mut(len * ls);
    let (max, rest) = rest.split_at_mut(ls);
    let sum = &mut rest[..ls];
    // Sᵀ[j][i] = scale · Σ_e K[e, j] Q[e, i].
    product(
        &Product {
            a: io.k,
            a_rs: 1,
            a_cs: ld,
            b: io.q,
            b_rs: ld,
            m: len,
            n: len,
            depth: io.head_dim,
            alpha: io.scale,
            c_rs: ls,
        },
        st,
    );
    let (max, sum) = (&mut max[..len], &mut sum[..len]);
    max.fill(f32::NEG_INFINITY);
    for row in st.chunks_exact(ls) {
        for (m, s) in max.iter_mut().zip(row) {
            // Not `f32::max`: it would skip a NaN score instead of passing it on.
            *m = if *s > *m || s.is_nan() { *s } else { *m };
        }
    }
    sum.fill(0.0);
    for row in st.chunks_exact_mut(ls) {
        for ((s, m), z) in row.iter_mut().zip(max.iter()).zip(sum.iter_mut()) {
            *s = crate::math::exp(*s - m);
            *z += *s;
        }
    }
    for z in sum.iter_mut() {
        *z = 1.0 / *z;
    }
    // ctx[d, i] = Σ_j V[d, j] E[j][i], then each query column times 1 / its sum.
    product(
        &Product {
            a: io.v,
            a_rs: ld,
            a_cs: 1,
            b: st,
            b_rs: ls,
            m: io.head_dim,
            n: len,
            depth: len,
            alpha: 1.0,
            c_rs: ld,
        },
        ctx,
    );
    for row in ctx.chunks_mut(ld).take(io.head_dim) {
        for (c, inv) in row.iter_mut().zip(sum.iter()) {
            *c *= inv;
        }
    }
}

/// The portable product: row by row, the inner loop over contiguous lanes of `B` and `C`.
#[inline(always)]
fn product_plain(p: &Product<'_>, c: &mut [f32]) {
    for r in 0..p.m {
        let out = &mut c[r * p.c_rs..r * p.c_rs + p.n];
        out.fill(0.0);
        for l in 0..p.depth {
            let a = p.a[r * p.a_rs + l * p.a_cs];
            let b = &p.b[l * p.b_rs..l * p.b_rs + p.n];
            for (o, x) in out.iter_mut().zip(b) {
                *o += a * x;
            }
        }
        for o in out.iter_mut() {
            *o *= p.alpha;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::{head_body, product_plain, Head, Product};
    use crate::kernels::x86_64::avx512::lanes;

    /// # Safety
    /// AVX2 and FMA are available.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn head_avx2(io: &Head<'_>, ctx: &mut [f32], scratch: &mut [f32]) {
        head_body(io, ctx, scratch, &mut product_plain)
    }

    /// # Safety
    /// AVX-512F, AVX2 and FMA are available.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn head_avx512(io: &Head<'_>, ctx: &mut [f32], scratch: &mut [f32]) {
        head_body(io, ctx, scratch, &mut |p, c| {
            // SAFETY: this function's target features; `head_with` checked every view's extent.
            unsafe { product(p, c) }
        })
    }

    /// [`Product`] in tiles of up to 4 rows x 64 lanes.
    ///
    /// # Safety
    /// AVX-512F; every element the product names lies inside its slice.
    #[target_feature(enable = "avx512f")]
    unsafe fn product(p: &Product<'_>, c: &mut [f32]) {
        let mut r0 = 0;
        while r0 < p.m {
            let rows = (p.m - r0).min(4);
            let mut i0 = 0;
            while i0 < p.n {
                let v = (p.n - i0).div_ceil(16).min(4);
                // SAFETY: rows `r0..r0 + rows` and lanes `i0..` are inside the product.
                unsafe {
                    match (rows, v) {
                        (4, 4) => tile::<4, 4>(p, c, r0, i0),
                        (4, 3) => tile::<4, 3>(p, c, r0, i0),
                        (4, 2) => tile::<4, 2>(p, c, r0, i0),
                        (4, _) => tile::<4, 1>(p, c, r0, i0),
                        (3, 4) => tile::<3, 4>(p, c, r0, i0),
                        (3, 3) => tile::<3, 3>(p, c, r0, i0),
                        (3, 2) => tile::<3, 2>(p, c, r0, i0),
                        (3, _) => tile::<3, 1>(p, c, r0, i0),
                        (2, 4) => tile::<2, 4>(p, c, r0, i0),
                        (2, 3) => tile::<2, 3>(p, c, r0, i0),
                        (2, 2) => tile::<2, 2>(p, c, r0, i0),
                        (2, _) => tile::<2, 1>(p, c, r0, i0),
                        (_, 4) => tile::<1, 4>(p, c, r0, i0),
                        (_, 3) => tile::<1, 3>(p, c, r0, i0),
                        (_, 2) => tile::<1, 2>(p, c, r0, i0),
                        _ => tile::<1, 1>(p, c, r0, i0),
                    }
                }
                i0 += 64;
            }
            r0 += rows;
        }
    }

    /// `C[r0..r0 + R, i0..i0 + 16V]`, lanes past `n` masked (loads and stores).
    ///
    /// # Safety
    /// As for [`product`], with `r0 + R <= m` and `i0 < n`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const V: usize>(
        p: &Product<'_>,
        c: &mut [f32],
        r0: usize,
        i0: usize,
    ) {
        let masks: [__mmask16; V] =
            std::array::from_fn(|t| lanes((p.n - i0).saturating_sub(16 * t)));
        let (ap, bp) = (p.a.as_ptr(), p.b.as_ptr());
        // SAFETY: A(r, l) for r < m, l < depth and B[l, i] for i < n are inside their slices
        // (checked by the caller); masked loads and stores touch no lane at or past `n`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            for l in 0..p.depth {
                let brow = bp.add(l * p.b_rs + i0);
                let b: [__m512; V] =
                    std::array::from_fn(|t| _mm512_maskz_loadu_ps(masks[t], brow.add(16 * t)));
                for (r, row) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*ap.add((r0 + r) * p.a_rs + l * p.a_cs));
                    for (t, x) in row.iter_mut().enumerate() {
                        *x = _mm512_fmadd_ps(a, b[t], *x);
                    }
                }
            }
            let alpha = _mm512_set1_ps(p.alpha);
            let cp = c.as_mut_ptr();
            for (r, row) in acc.iter().enumerate() {
                let out = cp.add((r0 + r) * p.c_rs + i0);
                for (t, x) in row.iter().enumerate() {
                    _mm512_mask_storeu_ps(out.add(16 * t), masks[t], _mm512_mul_ps(*x, alpha));
                }
            }
        }
    }
}

/// The f64 definition of [`head`] (the twin every path is tested against), with each output's
/// error budget: `Σ_j p_j |V[d, j]|` times a bound on the relative error of the probabilities.
pub fn reference_head(h: &Head<'_>) -> (Vec<f64>, Vec<f64>) {
    let Head {
        q,
        k,
        v,
        ld,
        head_dim,
        len,
        scale,
    } = *h;
    let mut out = vec![0.0; head_dim * len];
    let mut tol = vec![0.0; head_dim * len];
    for i in 0..len {
        let s: Vec<f64> = (0..len)
            .map(|j| {
                (0..head_dim)
                    .map(|e| q[e * ld + i] as f64 * k[e * ld + j] as f64)
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        // The rounding of a score is at most (head_dim + 2) ε Σ|q k| scale; exp turns an
        // absolute score error into a relative probability error of the same size.
        let spread = (0..len)
            .map(|j| {
                (0..head_dim)
                    .map(|e| (q[e * ld + i] as f64 * k[e * ld + j] as f64).abs())
                    .sum::<f64>()
                    * scale.abs() as f64
            })
            .fold(0.0, f64::max);
        let eps = f32::EPSILON as f64;
        let rel = eps * ((head_dim + 2) as f64 * spread * 2.0 + 4.0 * (len + 4) as f64);
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        for d in 0..head_dim {
            let (mut acc, mut abs) = (0.0, 0.0);
            for (j, x) in s.iter().enumerate() {
                let pv = (x - m).exp() / z * v[d * ld + j] as f64;
                acc += pv;
                abs += pv.abs();
            }
            out[d * len + i] = acc;
            tol[d * len + i] = rel * abs + 1e-30;
        }
    }
    (out, tol)
}
