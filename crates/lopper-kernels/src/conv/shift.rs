//! Batch-1, stride-1 convolution through column-shifted input rows.
//!
//! At batch 1 the output of one channel is a `[OH, OW]` plane. With unit strides, the taps
//! `(ci, ky, kx)` of every output pixel `(oy, ox)` read `x[ci][oy + ky - ph][ox + kx - pw]`. If
//! the input is first copied into `S[kx][ci][iy'][ox] = x[ci][iy' - ph][ox + kx - pw]` (zero
//! outside the image; `iy'` over the padded height `H + 2 ph`, rows exactly `OW` wide), then
//! for one tap the whole output plane reads `S[kx][ci][ky .. ky + OH][0 .. OW]`: one contiguous
//! run of `OH * OW` floats at offset `((kx * C + ci) * (H + 2 ph) + ky) * OW`. Every stored
//! weight becomes one long axpy into the output plane, kept in registers in chunks of 64
//! floats, and `S` is only `kw` times the input where im2col's patch matrix is `kh * kw`
//! times. Padding taps multiply stored zeros of `S`, exactly as im2col's patches do, so unlike
//! the direct kernels and [`super::conv_reference`] (which skip them) a non-finite weight makes
//! the border outputs NaN; model files never hold one (the reader rejects them).
//!
//! Layouts as in the parent module: CSR weights `[Cout, C*kh*kw]` (column
//! `(ci*kh + ky)*kw + kx`), `x` `[C, H, W]`, `y` `[Cout, OH, OW]`. `S` and the per-column
//! offsets live in a per-thread scratch that grows once and is reused by every later call.

use std::cell::RefCell;
use std::ops::Range;

use super::ConvGeom;
use crate::format::{Bsr, ColIndex, Csr, Values, WeightMatrix};

/// The most floats the shifted input `S` may take (64 MiB): beyond that the kernels are not
/// offered, so no thread keeps a huge scratch (it grows to the largest `S` it built, and the
/// planner tries these kernels on every convolution they support).
const MAX_SHIFTED: u128 = 16 << 20;

/// Whether the shifted-row kernels compute this convolution: batch 1, unit strides, and `S`
/// within [`MAX_SHIFTED`] floats.
pub(super) fn supports(g: &ConvGeom, n: usize) -> bool {
    let s_len = g.kw as u128 * g.c as u128 * (g.h + 2 * g.ph) as u128 * g.ow as u128;
    n == 1 && g.sh == 1 && g.sw == 1 && s_len <= MAX_SHIFTED
}

thread_local! {
    /// `S` and the offset of every weight column into it, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Fills `s` with the shifted rows of `x` and `offs` with each column's run offset. `fill`
/// writes one `[H, OW]` block of interior rows (see [`fill_portable`]).
#[inline(always)]
fn shift_rows(
    g: &ConvGeom,
    x: &[f32],
    s: &mut Vec<f32>,
    offs: &mut Vec<u32>,
    fill: impl Fn(&mut [f32], &[f32], Span),
) {
    let hp = g.h + 2 * g.ph;
    s.resize(g.kw * g.c * hp * g.ow, 0.0);
    for kx in 0..g.kw {
        // Output columns whose input column `ox + kx - pw` lies inside the image.
        let lo = g.pw.saturating_sub(kx).min(g.ow);
        let hi = (g.w + g.pw).saturating_sub(kx).clamp(lo, g.ow);
        for ci in 0..g.c {
            let block = &mut s[(kx * g.c + ci) * hp * g.ow..][..hp * g.ow];
            let (top, rest) = block.split_at_mut(g.ph * g.ow);
            let (interior, bottom) = rest.split_at_mut(g.h * g.ow);
            top.fill(0.0);
            bottom.fill(0.0);
            if hi == lo {
                interior.fill(0.0);
                continue;
            }
            // Row `iy` of the block takes input row `iy` from column `lo + kx - pw` on.
            let first = ci * g.h * g.w + lo + kx - g.pw;
            let last = first + (g.h - 1) * g.w + (hi - lo);
            let span = Span {
                rows: g.h,
                w: g.w,
                ow: g.ow,
                lo,
                hi,
            };
            fill(interior, &x[first..last], span);
        }
    }
    offs.clear();
    for ci in 0..g.c {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                offs.push((((kx * g.c + ci) * hp + ky) * g.ow) as u32);
            }
        }
    }
}

/// A block of `rows` rows of `S`: row `r`, columns `lo..hi` of `ow`, copies `src[r * w ..][..hi
/// - lo]`; the other columns are zero.
#[derive(Clone, Copy)]
struct Span {
    rows: usize,
    w: usize,
    ow: usize,
    lo: usize,
    hi: usize,
}

/// One `[rows, ow]` block of `S` (see [`Span`]): the portable version.
#[inline(always)]
fn fill_portable(dst: &mut [f32], src: &[f32], sp: Span) {
    for (r, row) in dst.chunks_exact_mut(sp.ow).take(sp.rows).enumerate() {
        row[..sp.lo].fill(0.0);
        row[sp.lo..sp.hi].copy_from_slice(&src[r * sp.w..][..sp.hi - sp.lo]);
        row[sp.hi..].fill(0.0);
    }
}

/// [`fill_portable`] as masked 16-lane loads and stores, the masks computed once per column
/// chunk: rows are a few floats wide, and a memset/memcpy call per row (LLVM turns plain copy
/// loops back into them) cost more than the convolution.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
fn fill_avx512(dst: &mut [f32], src: &[f32], sp: Span) {
    use std::arch::x86_64::{_mm512_mask_storeu_ps, _mm512_maskz_loadu_ps};
    assert!(sp.lo < sp.hi && sp.hi <= sp.ow && sp.rows >= 1);
    assert!(dst.len() == sp.rows * sp.ow && src.len() == (sp.rows - 1) * sp.w + sp.hi - sp.lo);
    let mut j = 0;
    while j < sp.ow {
        let width = (sp.ow - j).min(16);
        let store = ((1u32 << width) - 1) as u16;
        // Lanes `a - j .. b - j` take `src[r * w + a - lo ..][..b - a]`; the others are zero.
        let a = sp.lo.clamp(j, j + width);
        let b = sp.hi.clamp(a, j + width);
        let load = (((1u32 << (b - a)) - 1) << (a - j)) as u16;
        for r in 0..sp.rows {
            // Lane `l` reads `src[r * w + j + l - lo]`, formed with wrapping arithmetic because
            // masked-off lanes may lie outside `src`.
            let p = src.as_ptr().wrapping_add(r * sp.w + j).wrapping_sub(sp.lo);
            // SAFETY: only lanes set in `load` are read: `j + l` in `a..b`, inside `lo..hi`, so
            // `r * w + j + l - lo <= (rows - 1) * w + hi - lo - 1 < src.len()`. Only lanes set in
            // `store` are written: `dst[r * ow + j ..][..width]`, inside `dst`.
            unsafe {
                let v = _mm512_maskz_loadu_ps(load, p);
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(r * sp.ow + j), store, v);
            }
        }
        j += 16;
    }
}

/// Stored entries of one row, decoded in batches: weight and run offset into `S`.
const BATCH: usize = 256;

/// Adds `w[i] * S[off[i] + p0 ..][..L]` over the batch's entries to `out[p0..p0 + L]`, with the
/// sums in registers across all entries: two sets of `L`, even and odd entries, so that
/// consecutive FMAs do not wait on each other's latency.
#[inline(always)]
fn run<const L: usize, const FMA: bool>(
    w: &[f32],
    off: &[u32],
    s: &[f32],
    p0: usize,
    out: &mut [f32],
) {
    let mut acc = [0.0f32; L];
    let mut acc2 = [0.0f32; L];
    acc.copy_from_slice(&out[p0..p0 + L]);
    let fma = |a: &mut [f32; L], wv: f32, o: u32| {
        let src: &[f32; L] = s[o as usize + p0..][..L].try_into().expect("L floats");
        for l in 0..L {
            a[l] = if FMA {
                wv.mul_add(src[l], a[l])
            } else {
                a[l] + wv * src[l]
            };
        }
    };
    let pairs = w.len() / 2;
    for i in 0..pairs {
        fma(&mut acc, w[2 * i], off[2 * i]);
        fma(&mut acc2, w[2 * i + 1], off[2 * i + 1]);
    }
    if w.len() % 2 == 1 {
        fma(&mut acc, w[w.len() - 1], off[w.len() - 1]);
    }
    for l in 0..L {
        acc[l] += acc2[l];
    }
    out[p0..p0 + L].copy_from_slice(&acc);
}

#[inline(always)]
fn body<I: ColIndex, const FMA: bool, const AVX512: bool>(
    m: &Csr<I>,
    g: &ConvGeom,
    x: &[f32],
    y: &mut [f32],
    rows: Range<usize>,
) {
    if rows.is_empty() {
        return;
    }
    let plane = g.pixels();
    let (s, offs) = take_shifted::<AVX512>(g, x);
    let (rp, cols) = (m.row_ptr(), m.col_idx());
    let mut w = [0.0f32; BATCH];
    let mut off = [0u32; BATCH];
    for (r, out) in rows.zip(y.chunks_exact_mut(plane)) {
        out.fill(0.0);
        let (a, b) = (rp[r] as usize, rp[r + 1] as usize);
        for e0 in (a..b).step_by(BATCH) {
            let len = (b - e0).min(BATCH);
            for i in 0..len {
                let k = e0 + i;
                w[i] = match m.values() {
                    Values::F32(v) => v[k],
                    Values::I8 { q, scales } => q[k] as f32 * scales[r],
                };
                off[i] = offs[cols[k].to_usize()];
            }
            let (w, off) = (&w[..len], &off[..len]);
            let mut p0 = 0;
            while p0 + 64 <= plane {
                run::<64, FMA>(w, off, &s, p0, out);
                p0 += 64;
            }
            while p0 + 16 <= plane {
                run::<16, FMA>(w, off, &s, p0, out);
                p0 += 16;
            }
            while p0 + 4 <= plane {
                run::<4, FMA>(w, off, &s, p0, out);
                p0 += 4;
            }
            while p0 < plane {
                run::<1, FMA>(w, off, &s, p0, out);
                p0 += 1;
            }
        }
    }
    give_back(s, offs);
}

/// `S` and the column offsets for `x`, in the thread's scratch (taken out of it; hand them back
/// with [`give_back`]). The buffers are taken and returned rather than used inside `with`'s
/// closure: a closure is not inlined into the caller's target features, and the FMAs in it
/// would become library calls.
#[inline(always)]
fn take_shifted<const AVX512: bool>(g: &ConvGeom, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (mut s, mut offs) = SCRATCH.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
    #[cfg(target_arch = "x86_64")]
    if AVX512 {
        // SAFETY: `AVX512` is set only by the wrappers compiled for (and checked to run on)
        // AVX-512.
        shift_rows(g, x, &mut s, &mut offs, |d, src, sp| unsafe {
            fill_avx512(d, src, sp)
        });
    } else {
        shift_rows(g, x, &mut s, &mut offs, fill_portable);
    }
    #[cfg(not(target_arch = "x86_64"))]
    shift_rows(g, x, &mut s, &mut offs, fill_portable);
    (s, offs)
}

fn give_back(s: Vec<f32>, offs: Vec<u32>) {
    SCRATCH.with(|cell| *cell.borrow_mut() = (s, offs));
}

/// [`run`] for four output channels (a BSR 4x1 block row): each loaded run of `S` feeds four
/// sets of `L` sums. `out` holds the block row's `nr <= 4` channels, `plane` floats each; the
/// weights of channels past `nr` are zero and their sums are not stored. `entry(i)` gives the
/// `i`-th of `len` blocks: its four weights and its run offset into `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run4<const L: usize, const FMA: bool>(
    len: usize,
    entry: impl Fn(usize) -> ([f32; 4], u32),
    s: &[f32],
    p0: usize,
    out: &mut [f32],
    plane: usize,
    nr: usize,
) {
    let mut acc = [[0.0f32; L]; 4];
    for (ri, a) in acc.iter_mut().enumerate().take(nr) {
        a.copy_from_slice(&out[ri * plane + p0..][..L]);
    }
    for i in 0..len {
        let (wv, o) = entry(i);
        let src: &[f32; L] = s[o as usize + p0..][..L].try_into().expect("L floats");
        for l in 0..L {
            let v = src[l];
            for (a, &wr) in acc.iter_mut().zip(&wv) {
                a[l] = if FMA {
                    wr.mul_add(v, a[l])
                } else {
                    a[l] + wr * v
                };
            }
        }
    }
    for (ri, a) in acc.iter().enumerate().take(nr) {
        out[ri * plane + p0..][..L].copy_from_slice(a);
    }
}

/// All runs of one plane for `len` blocks (see [`run4`]): `L` floats at a time, then the tail in
/// 16-, 4- and 1-float runs (planes like 7x7 = 49 floats), each a full vector per channel where
/// the ISA has one.
#[inline(always)]
fn plane4<const L: usize, const FMA: bool>(
    len: usize,
    entry: impl Fn(usize) -> ([f32; 4], u32) + Copy,
    s: &[f32],
    out: &mut [f32],
    plane: usize,
    nr: usize,
) {
    let mut p0 = 0;
    while p0 + L <= plane {
        run4::<L, FMA>(len, entry, s, p0, out, plane, nr);
        p0 += L;
    }
    while L > 16 && p0 + 16 <= plane {
        run4::<16, FMA>(len, entry, s, p0, out, plane, nr);
        p0 += 16;
    }
    while p0 + 4 <= plane {
        run4::<4, FMA>(len, entry, s, p0, out, plane, nr);
        p0 += 4;
    }
    while p0 < plane {
        run4::<1, FMA>(len, entry, s, p0, out, plane, nr);
        p0 += 1;
    }
}

/// The BSR 4x1 body: one block row (four output channels) at a time, in runs of `L` floats of
/// the output plane (`4 L` sums in registers: 64 fits AVX-512's 32 registers, 16 AVX2's 16).
#[inline(always)]
fn body_b41<const L: usize, const FMA: bool, const AVX512: bool>(
    m: &Bsr,
    g: &ConvGeom,
    x: &[f32],
    y: &mut [f32],
    rows: Range<usize>,
) {
    if rows.is_empty() {
        return;
    }
    let plane = g.pixels();
    let (s, offs) = take_shifted::<AVX512>(g, x);
    let (brp, bcol) = (m.block_row_ptr(), m.block_col());
    let mut w = [[0.0f32; 4]; BATCH];
    let mut off = [0u32; BATCH];
    let y_start = rows.start;
    for bi in rows.start / 4..rows.end.div_ceil(4) {
        let r0 = bi * 4;
        let nr = (rows.end - r0).min(4);
        let out = &mut y[(r0 - y_start) * plane..(r0 - y_start + nr) * plane];
        out.fill(0.0);
        let (a, b) = (brp[bi] as usize, brp[bi + 1] as usize);
        if let (Values::F32(v), 4) = (m.values(), nr) {
            // Whole f32 blocks: read the stored weights and columns in place. Copying them
            // into a batch first cost as much as the multiply-adds at LeNet sizes.
            let (blocks, _) = v[a * 4..b * 4].as_chunks::<4>();
            let cols = &bcol[a..b];
            let entry = |i: usize| (blocks[i], offs[cols[i] as usize]);
            plane4::<L, FMA>(b - a, entry, &s, out, plane, nr);
            continue;
        }
        for e0 in (a..b).step_by(BATCH) {
            let len = (b - e0).min(BATCH);
            for i in 0..len {
                let k = e0 + i;
                for (ri, wv) in w[i].iter_mut().enumerate() {
                    // Rows past the matrix (an edge block) or past `rows` contribute nothing.
                    *wv = if ri < nr {
                        match m.values() {
                            Values::F32(v) => v[k * 4 + ri],
                            Values::I8 { q, scales } => q[k * 4 + ri] as f32 * scales[r0 + ri],
                        }
                    } else {
                        0.0
                    };
                }
                off[i] = offs[bcol[k] as usize];
            }
            let (w, off) = (&w[..len], &off[..len]);
            plane4::<L, FMA>(len, |i| (w[i], off[i]), &s, out, plane, nr);
        }
    }
    give_back(s, offs);
}

macro_rules! wrapper {
    ($(#[$attr:meta])* $name:ident, csr, $fma:literal, $avx512:literal) => {
        /// # Safety
        /// Any target features named here must be available; `check` verifies it, the CSR
        /// format, the geometry ([`supports`]) and every length.
        $(#[$attr])*
        pub(in crate::conv) unsafe fn $name(
            w: &WeightMatrix,
            g: &ConvGeom,
            x: &[f32],
            _n: usize,
            y: &mut [f32],
            rows: Range<usize>,
        ) {
            match w {
                WeightMatrix::Csr16(m) => body::<u16, $fma, $avx512>(m, g, x, y, rows),
                WeightMatrix::Csr32(m) => body::<u32, $fma, $avx512>(m, g, x, y, rows),
                _ => debug_assert!(false, "check admits CSR only"),
            }
        }
    };
    ($(#[$attr:meta])* $name:ident, bsr4x1, $run:literal, $fma:literal, $avx512:literal) => {
        /// # Safety
        /// Any target features named here must be available; `check` verifies it, the BSR 4x1
        /// format, the geometry ([`supports`]) and every length.
        $(#[$attr])*
        pub(in crate::conv) unsafe fn $name(
            w: &WeightMatrix,
            g: &ConvGeom,
            x: &[f32],
            _n: usize,
            y: &mut [f32],
            rows: Range<usize>,
        ) {
            match w {
                WeightMatrix::Bsr(m) => body_b41::<$run, $fma, $avx512>(m, g, x, y, rows),
                _ => debug_assert!(false, "check admits BSR 4x1 only"),
            }
        }
    };
}

wrapper!(shift_scalar, csr, false, false);
wrapper!(shift_b41_scalar, bsr4x1, 16, false, false);

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::*;

    wrapper!(
        #[target_feature(enable = "avx2,fma")]
        shift_avx2,
        csr,
        true,
        false
    );
    wrapper!(
        #[target_feature(enable = "avx512f,avx2,fma")]
        shift_avx512,
        csr,
        true,
        true
    );
    wrapper!(
        #[target_feature(enable = "avx2,fma")]
        shift_b41_avx2,
        bsr4x1,
        16,
        true,
        false
    );
    wrapper!(
        #[target_feature(enable = "avx512f,avx2,fma")]
        shift_b41_avx512,
        bsr4x1,
        64,
        true,
        true
    );
}
