//! The direct-convolution bodies and their ISA wrappers (see the parent module for layouts
//! and invariants). Each body is `#[inline(always)]` into wrappers compiled with an ISA's target
//! features, so its fixed-size accumulator loops become that ISA's vector FMAs.

use std::ops::Range;

use super::ConvGeom;
use crate::format::{Bsr, ColIndex, Csr, Values, WeightMatrix};

#[inline(always)]
fn fma<const FMA: bool>(a: f32, x: f32, acc: f32) -> f32 {
    if FMA {
        a.mul_add(x, acc)
    } else {
        acc + a * x
    }
}

/// Division by a fixed divisor through a reciprocal, corrected to be exact: decoding a column
/// into `(ci, ky, kx)` is two divisions per stored entry, and at batch 1 hardware division
/// cost more than the arithmetic it feeds.
#[derive(Clone, Copy)]
struct Divider {
    d: usize,
    inv: f64,
}

impl Divider {
    fn new(d: usize) -> Self {
        Self {
            d: d.max(1),
            inv: 1.0 / d.max(1) as f64,
        }
    }

    /// `(v / d, v % d)` for `v < 2^32`.
    #[inline(always)]
    fn divmod(self, v: usize) -> (usize, usize) {
        let mut q = (v as f64 * self.inv) as usize;
        // The estimate is off by at most one either way; fix it with exact integer checks.
        if q * self.d > v {
            q -= 1;
        } else if (q + 1) * self.d <= v {
            q += 1;
        }
        (q, v - q * self.d)
    }
}

struct Dividers {
    khw: Divider,
    kw: Divider,
}

impl Dividers {
    fn new(g: &ConvGeom) -> Self {
        Self {
            khw: Divider::new(g.kh * g.kw),
            kw: Divider::new(g.kw),
        }
    }
}

/// Stored 4x1 blocks of the BSR body are decoded in batches of this many.
const ENTRY_BATCH: usize = 256;

/// Decoded stored entries of one output channel (the CSR body: all of them; the BSR 4x1 body's
/// border runs: one batch of at most [`ENTRY_BATCH`]): weight, tap offset, input-plane offset,
/// tap.
#[derive(Clone, Copy)]
struct Entries<'a> {
    w: &'a [f32],
    /// `(plane + ky * W + kx) * n`: the entry's offset in `X` from the top-left input pixel of
    /// an output pixel's window, so an interior run reads at `window base + tap` with one add.
    tap: &'a [usize],
    plane: &'a [usize],
    ky: &'a [usize],
    kx: &'a [usize],
}

/// Every stored entry of a range of output channels, decoded once per call (the CSR body
/// visits each channel once per output row, or per 8-row block at batch 1, so decoding per visit
/// would repeat the divisions).
#[derive(Default)]
struct Decoded {
    w: Vec<f32>,
    tap: Vec<usize>,
    plane: Vec<usize>,
    ky: Vec<usize>,
    kx: Vec<usize>,
}

thread_local! {
    static DECODED: std::cell::Cell<Decoded> = const { std::cell::Cell::new(Decoded::new()) };
}

/// Entries a thread keeps decoded between calls: 256 Ki entries, 9 MiB.
const DECODED_KEEP: usize = 1 << 18;

impl Decoded {
    const fn new() -> Self {
        Self {
            w: Vec::new(),
            tap: Vec::new(),
            plane: Vec::new(),
            ky: Vec::new(),
            kx: Vec::new(),
        }
    }

    fn clear(&mut self) {
        self.w.clear();
        self.tap.clear();
        self.plane.clear();
        self.ky.clear();
        self.kx.clear();
    }

    fn push(&mut self, w: f32, plane: usize, ky: usize, kx: usize, g: &ConvGeom, n: usize) {
        self.w.push(w);
        self.tap.push((plane + ky * g.w + kx) * n);
        self.plane.push(plane);
        self.ky.push(ky);
        self.kx.push(kx);
    }

    fn view(&self, r: Range<usize>) -> Entries<'_> {
        Entries {
            w: &self.w[r.clone()],
            tap: &self.tap[r.clone()],
            plane: &self.plane[r.clone()],
            ky: &self.ky[r.clone()],
            kx: &self.kx[r],
        }
    }
}

/// Offset in `X` (`[C, H, W, n]`) of the top-left input pixel of output pixel `(oy, ox)`'s
/// window in plane 0. Callers use it only where the window lies inside the input
/// (`oy * sh >= ph`, `ox * sw >= pw`), so it does not underflow.
#[inline(always)]
fn window_base(g: &ConvGeom, n: usize, oy: usize, ox: usize) -> usize {
    ((oy * g.sh - g.ph) * g.w + ox * g.sw - g.pw) * n
}

/// One output run of `L` floats whose taps are all inside the input: `L` accumulators that
/// stay in registers across every stored entry, loaded and stored once.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_interior<const L: usize, const FMA: bool>(
    e: &Entries,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    oy: usize,
    ox0: usize,
    f0: usize,
    dst: &mut [f32],
) {
    let mut acc = [0.0f32; L];
    acc.copy_from_slice(&dst[..L]);
    let base = window_base(g, n, oy, ox0) + f0;
    for (&w, &tap) in e.w.iter().zip(e.tap) {
        let s = base + tap;
        let src = &x[s..s + L];
        for l in 0..L {
            acc[l] = fma::<FMA>(w, src[l], acc[l]);
        }
    }
    dst[..L].copy_from_slice(&acc);
}

/// Any output run, border taps skipped one float at a time.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_border<const FMA: bool>(
    e: &Entries,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    oy: usize,
    ox0: usize,
    f0: usize,
    dst: &mut [f32],
) {
    for i in 0..e.w.len() {
        let iy = (oy * g.sh + e.ky[i]) as isize - g.ph as isize;
        if iy < 0 || iy as usize >= g.h {
            continue;
        }
        for (f, d) in dst.iter_mut().enumerate() {
            let (p, j) = ((f0 + f) / n, (f0 + f) % n);
            let ix = ((ox0 + p) * g.sw + e.kx[i]) as isize - g.pw as isize;
            if ix >= 0 && (ix as usize) < g.w {
                let s = ((e.plane[i] + iy as usize * g.w + ix as usize) * n) + j;
                *d = fma::<FMA>(e.w[i], x[s], *d);
            }
        }
    }
}

/// The kernel body, inlined into each ISA wrapper so the accumulator loops are vectorised for
/// that ISA. Output runs: up to 64 floats of one row of output pixels (several pixels when the
/// batch is small and the column stride is 1, part of one pixel's batch vector otherwise).
///
/// Loop order: output rows outside, channels inside. One output row of every channel reads the
/// same `kh` input rows (`C * kh * W * n * 4` bytes), which stay cached while every channel
/// reads them, where channels outside stream the whole input once per channel. For LeNet-5's
/// conv2 that band is 75 KiB at its sub-batch of 16 (38 KiB, inside a 48 KiB L1, at 8); the
/// order measured faster at 16 all the same.
#[inline(always)]
fn body<I: ColIndex, const FMA: bool>(
    m: &Csr<I>,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let plane = g.pixels() * n;
    let div = Dividers::new(g);
    let (rp, cols) = (m.row_ptr(), m.col_idx());
    let first = rp[rows.start] as usize;
    // Reused per thread: a dense-ish layer decodes to megabytes, which fresh each call would
    // cost page faults on every call. Buffers beyond `DECODED_KEEP` entries are freed after the
    // call, so one huge layer does not pin its buffer on every thread for good.
    let mut d = DECODED.take();
    d.clear();
    for r in rows.clone() {
        for k in rp[r] as usize..rp[r + 1] as usize {
            let w = match m.values() {
                Values::F32(v) => v[k],
                Values::I8 { q, scales } => q[k] as f32 * scales[r],
            };
            let (ci, rem) = div.khw.divmod(cols[k].to_usize());
            let (ky, kx) = div.kw.divmod(rem);
            d.push(w, ci * g.h * g.w, ky, kx, g, n);
        }
    }
    let y = &mut y[..rows.len() * plane];
    y.fill(0.0);
    let interior_y = |oy: usize| oy * g.sh >= g.ph && oy * g.sh + g.kh <= g.h + g.ph;
    let interior_x =
        |ox0: usize, ox1: usize| ox0 * g.sw >= g.pw && (ox1 - 1) * g.sw + g.kw <= g.w + g.pw;
    let mut oy = 0;
    while oy < g.oh {
        // Batch 1: blocks of 8 rows x 8 pixels keep 64 sums in registers across all entries,
        // where one row's run of a few pixels would not amortise the index math.
        let block = n == 1 && g.sw == 1 && oy + 8 <= g.oh && interior_y(oy) && interior_y(oy + 7);
        for (r, out) in rows.clone().zip(y.chunks_exact_mut(plane)) {
            let e = d.view(rp[r] as usize - first..rp[r + 1] as usize - first);
            if block {
                // Interior columns start at the padding; the border columns go row by row.
                let left = g.pw.min(g.ow);
                let mut ox0 = left;
                while ox0 + 8 <= g.ow && interior_x(ox0, ox0 + 8) {
                    run_block8(&e, g, x, oy, ox0, out, FMA);
                    ox0 += 8;
                }
                for ry in oy..oy + 8 {
                    row::<FMA>(&e, g, x, n, ry, 0..left, out);
                    row::<FMA>(&e, g, x, n, ry, ox0..g.ow, out);
                }
            } else {
                row::<FMA>(&e, g, x, n, oy, 0..g.ow, out);
            }
        }
        oy += if block { 8 } else { 1 };
    }
    if d.w.capacity() <= DECODED_KEEP {
        DECODED.set(d);
    }
}

/// Output pixels per run of up to 64 floats: several only with unit column stride, where
/// neighbouring pixels' taps are contiguous in `x`.
fn run_pixels(g: &ConvGeom, n: usize) -> usize {
    if g.sw == 1 {
        (64 / n).max(1)
    } else {
        1
    }
}

/// Output pixels `px` of output row `oy` of one channel, in runs of up to 64 floats.
#[inline(always)]
fn row<const FMA: bool>(
    e: &Entries,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    oy: usize,
    px: Range<usize>,
    out: &mut [f32],
) {
    let ppr = run_pixels(g, n);
    let interior_y = oy * g.sh >= g.ph && oy * g.sh + g.kh <= g.h + g.ph;
    let mut ox0 = px.start;
    while ox0 < px.end {
        let ox1 = (ox0 + ppr).min(px.end);
        let width = (ox1 - ox0) * n;
        let interior = interior_y && ox0 * g.sw >= g.pw && (ox1 - 1) * g.sw + g.kw <= g.w + g.pw;
        let base = (oy * g.ow + ox0) * n;
        let mut f0 = 0;
        while f0 < width {
            let left = width - f0;
            let dst = &mut out[base + f0..base + width];
            let len = if interior && left >= 64 {
                run_interior::<64, FMA>(e, g, x, n, oy, ox0, f0, dst);
                64
            } else if interior && left >= 8 {
                run_interior::<8, FMA>(e, g, x, n, oy, ox0, f0, dst);
                8
            } else {
                let len = left.min(64);
                run_border::<FMA>(e, g, x, n, oy, ox0, f0, &mut dst[..len]);
                len
            };
            f0 += len;
        }
        ox0 = ox1;
    }
}

/// Batch 1, unit column stride: an 8x8 block of output pixels whose taps are all inside the
/// input, as 8 runs of 8 accumulators.
#[inline(always)]
fn run_block8(
    e: &Entries,
    g: &ConvGeom,
    x: &[f32],
    oy0: usize,
    ox0: usize,
    out: &mut [f32],
    fused: bool,
) {
    let mut acc = [[0.0f32; 8]; 8];
    for (r, a) in acc.iter_mut().enumerate() {
        a.copy_from_slice(&out[(oy0 + r) * g.ow + ox0..][..8]);
    }
    let step = g.sh * g.w;
    let corner = window_base(g, 1, oy0, ox0);
    for (&w, &tap) in e.w.iter().zip(e.tap) {
        let base = corner + tap;
        // One bounds check for the eight rows this entry reads.
        let span = &x[base..base + 7 * step + 8];
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: `r * step + 8 <= 7 * step + 8 == span.len()` for `r < 8`, and `[f32; 8]`
            // has the alignment of `f32`.
            let s = unsafe { &*(span.as_ptr().add(r * step) as *const [f32; 8]) };
            for l in 0..8 {
                a[l] = if fused {
                    w.mul_add(s[l], a[l])
                } else {
                    a[l] + w * s[l]
                };
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        out[(oy0 + r) * g.ow + ox0..][..8].copy_from_slice(a);
    }
}

/// Four output channels' runs of `L` floats whose taps are all inside the input: each loaded
/// float of `X` feeds four accumulators.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run4_interior<const L: usize, const FMA: bool>(
    e: &Entries4,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    oy: usize,
    ox0: usize,
    f0: usize,
    out: &mut [f32],
    at: [usize; 4],
) {
    let mut acc = [[0.0f32; L]; 4];
    for (a, &o) in acc.iter_mut().zip(&at) {
        a.copy_from_slice(&out[o..o + L]);
    }
    let base = window_base(g, n, oy, ox0) + f0;
    for i in 0..e.len {
        let s = base + e.tap[i];
        let src = &x[s..s + L];
        let w = e.w[i];
        for l in 0..L {
            let v = src[l];
            acc[0][l] = fma::<FMA>(w[0], v, acc[0][l]);
            acc[1][l] = fma::<FMA>(w[1], v, acc[1][l]);
            acc[2][l] = fma::<FMA>(w[2], v, acc[2][l]);
            acc[3][l] = fma::<FMA>(w[3], v, acc[3][l]);
        }
    }
    for (a, &o) in acc.iter().zip(&at) {
        out[o..o + L].copy_from_slice(a);
    }
}

/// Stored 4x1 blocks decoded once per batch of a block row.
struct Entries4 {
    w: [[f32; 4]; ENTRY_BATCH],
    /// As [`Entries::tap`].
    tap: [usize; ENTRY_BATCH],
    plane: [usize; ENTRY_BATCH],
    ky: [usize; ENTRY_BATCH],
    kx: [usize; ENTRY_BATCH],
    len: usize,
}

/// The BSR 4x1 body: like [`body`], one block row (four output channels) at a time, in runs of
/// `L` floats per channel (`4 L` accumulators: 64 fits AVX-512's 32 registers, 16 AVX2's 16).
#[inline(always)]
fn body_b41<const L: usize, const FMA: bool>(
    m: &Bsr,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    let plane = g.pixels() * n;
    let div = Dividers::new(g);
    let (brp, bcol) = (m.block_row_ptr(), m.block_col());
    let ppr = if g.sw == 1 { (L / n).max(1) } else { 1 };
    let interior_y = |oy: usize| oy * g.sh >= g.ph && oy * g.sh + g.kh <= g.h + g.ph;
    let interior_x =
        |ox0: usize, ox1: usize| ox0 * g.sw >= g.pw && (ox1 - 1) * g.sw + g.kw <= g.w + g.pw;
    let mut e = Entries4 {
        w: [[0.0; 4]; ENTRY_BATCH],
        tap: [0; ENTRY_BATCH],
        plane: [0; ENTRY_BATCH],
        ky: [0; ENTRY_BATCH],
        kx: [0; ENTRY_BATCH],
        len: 0,
    };
    // One channel's weights of the current entry batch, for border runs.
    let mut one_w = [0.0f32; ENTRY_BATCH];
    let y_start = rows.start;
    for bi in rows.start / 4..rows.end.div_ceil(4) {
        let r0 = bi * 4;
        let nr = (rows.end - r0).min(4);
        let out = &mut y[(r0 - y_start) * plane..(r0 - y_start + nr) * plane];
        out.fill(0.0);
        let (a, b) = (brp[bi] as usize, brp[bi + 1] as usize);
        for e0 in (a..b).step_by(ENTRY_BATCH) {
            let e1 = (e0 + ENTRY_BATCH).min(b);
            e.len = e1 - e0;
            for (i, k) in (e0..e1).enumerate() {
                let col = bcol[k] as usize;
                for (ri, wv) in e.w[i].iter_mut().enumerate() {
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
                let (ci, rem) = div.khw.divmod(col);
                let (ky, kx) = div.kw.divmod(rem);
                e.plane[i] = ci * g.h * g.w;
                e.tap[i] = (e.plane[i] + ky * g.w + kx) * n;
                e.ky[i] = ky;
                e.kx[i] = kx;
            }
            for oy in 0..g.oh {
                let mut ox0 = 0;
                while ox0 < g.ow {
                    let ox1 = (ox0 + ppr).min(g.ow);
                    let width = (ox1 - ox0) * n;
                    let interior = nr == 4 && interior_y(oy) && interior_x(ox0, ox1);
                    let base = (oy * g.ow + ox0) * n;
                    let mut f0 = 0;
                    while f0 < width {
                        let left = width - f0;
                        let at = [0, 1, 2, 3].map(|ri| ri * plane + base + f0);
                        let len = if interior && left >= L {
                            run4_interior::<L, FMA>(&e, g, x, n, oy, ox0, f0, out, at);
                            L
                        } else if interior && left >= 8 {
                            run4_interior::<8, FMA>(&e, g, x, n, oy, ox0, f0, out, at);
                            8
                        } else {
                            let len = left.min(L);
                            for ri in 0..nr {
                                for (o, w) in one_w.iter_mut().zip(&e.w[..e.len]) {
                                    *o = w[ri];
                                }
                                let one = Entries {
                                    w: &one_w[..e.len],
                                    tap: &e.tap[..e.len],
                                    plane: &e.plane[..e.len],
                                    ky: &e.ky[..e.len],
                                    kx: &e.kx[..e.len],
                                };
                                let d = &mut out[ri * plane + base + f0..][..len];
                                run_border::<FMA>(&one, g, x, n, oy, ox0, f0, d);
                            }
                            len
                        };
                        f0 += len;
                    }
                    ox0 = ox1;
                }
            }
        }
    }
}

/// An entry point of a body with the signature the registry stores: the same code, compiled
/// with the target features given as attributes (none for the portable path), so the accumulator
/// loops use that ISA's vectors and FMA (`fma = true`) or plain multiply-add.
macro_rules! wrapper {
    ($(#[$attr:meta])* $name:ident, csr, $fma:literal) => {
        /// # Safety
        /// Any target features named here must be available (`check` verifies it).
        $(#[$attr])*
        pub(in crate::conv) unsafe fn $name(
            w: &WeightMatrix,
            g: &ConvGeom,
            x: &[f32],
            n: usize,
            y: &mut [f32],
            rows: Range<usize>,
        ) {
            match w {
                WeightMatrix::Csr16(m) => body::<u16, $fma>(m, g, x, n, y, rows),
                WeightMatrix::Csr32(m) => body::<u32, $fma>(m, g, x, n, y, rows),
                _ => debug_assert!(false, "check admits CSR only"),
            }
        }
    };
    ($(#[$attr:meta])* $name:ident, bsr4x1, $run:literal, $fma:literal) => {
        /// # Safety
        /// Any target features named here must be available (`check` verifies it).
        $(#[$attr])*
        pub(in crate::conv) unsafe fn $name(
            w: &WeightMatrix,
            g: &ConvGeom,
            x: &[f32],
            n: usize,
            y: &mut [f32],
            rows: Range<usize>,
        ) {
            match w {
                WeightMatrix::Bsr(m) => body_b41::<$run, $fma>(m, g, x, n, y, rows),
                _ => debug_assert!(false, "check admits BSR 4x1 only"),
            }
        }
    };
}

wrapper!(direct_scalar, csr, false);
wrapper!(direct_b41_scalar, bsr4x1, 16, false);

#[cfg(test)]
mod tests {
    use super::Divider;

    #[test]
    fn reciprocal_division_is_exact() {
        for d in [1usize, 2, 3, 7, 9, 25, 49, 121, 576, 4608, 65535] {
            let div = Divider::new(d);
            let probes = (0..20_000).chain([(1 << 24) - 1, (1 << 24) + 5, u32::MAX as usize]);
            for v in probes.chain((0..50).map(|k| k * d + d - 1)) {
                assert_eq!(div.divmod(v), (v / d, v % d), "{v} / {d}");
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::*;

    wrapper!(
        #[target_feature(enable = "avx2,fma")]
        direct_avx2,
        csr,
        true
    );
    wrapper!(
        #[target_feature(enable = "avx512f,avx2,fma")]
        direct_avx512,
        csr,
        true
    );
    wrapper!(
        #[target_feature(enable = "avx2,fma")]
        direct_b41_avx2,
        bsr4x1,
        16,
        true
    );
    wrapper!(
        #[target_feature(enable = "avx512f,avx2,fma")]
        direct_b41_avx512,
        bsr4x1,
        64,
        true
    );
}
