//! Direct sparse convolution ("implicit im2col"): `Y = W ⊛ X` without materialising patches.
//!
//! Layouts: weights are CSR `[Cout, C*kh*kw]`, column `(ci*kh + ky)*kw + kx` (PyTorch's
//! flattening of `[out, in, kh, kw]`); `X` is `[C, H, W, n]` and `Y` is `[Cout, OH, OW, n]`,
//! batch innermost (the runtime's activation layout). For each stored weight and output row
//! `oy`, the in-bounds output pixels of that row read one contiguous run of `X` (unit column
//! stride) of `(pixels * n)` floats, so the inner loop is an axpy over a long contiguous run at
//! batch 64, where im2col would copy every patch first. Zero padding is implicit: out-of-bounds
//! taps are skipped. Stored entries take part even when zero (the NaN rule of
//! [`crate::format`]); int8 weights enter as `q * scale[row]`.
//!
//! Every kernel here has the plain twin [`conv_reference`] (f64) and is checked by [`check`]
//! before any memory is touched.

use std::ops::Range;

use crate::error::KernelError;
use crate::format::{Bsr, ColIndex, Csr, Values, WeightMatrix};
use crate::isa::Isa;
use crate::reference::Reference;

/// Geometry of a 2-D convolution over one `[C, H, W]` example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Computes the output size; `None` when the window does not fit or a side is zero.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        sh: usize,
        sw: usize,
        ph: usize,
        pw: usize,
    ) -> Option<Self> {
        if [c, h, w, kh, kw, sh, sw].contains(&0) || h + 2 * ph < kh || w + 2 * pw < kw {
            return None;
        }
        let (oh, ow) = ((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1);
        Some(Self {
            c,
            h,
            w,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            oh,
            ow,
        })
    }

    /// Columns of the weight matrix: `C*kh*kw`.
    pub fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }

    /// Output pixels per channel.
    pub fn pixels(&self) -> usize {
        self.oh * self.ow
    }
}

type ConvFn = unsafe fn(&WeightMatrix, &ConvGeom, &[f32], usize, &mut [f32], Range<usize>);

/// One direct-convolution kernel.
#[derive(Clone, Copy)]
pub struct ConvKernel {
    pub name: &'static str,
    pub isa: Isa,
    imp: ConvFn,
}

impl std::fmt::Debug for ConvKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every direct-convolution kernel, best ISA first within each format: `csr` kernels take CSR
/// (u16 or u32 indices), `bsr4x1` kernels BSR with 4x1 blocks, whose four output channels share
/// each loaded run of `X`; both with f32 or int8 values.
pub static CONV_KERNELS: &[ConvKernel] = &[
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_direct_bsr4x1_avx512",
        isa: Isa::Avx512,
        imp: x86::direct_b41_avx512,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_direct_bsr4x1_avx2",
        isa: Isa::Avx2,
        imp: x86::direct_b41_avx2,
    },
    ConvKernel {
        name: "conv_direct_bsr4x1_scalar",
        isa: Isa::Scalar,
        imp: direct_b41_scalar,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_direct_csr_avx512",
        isa: Isa::Avx512,
        imp: x86::direct_avx512,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_direct_csr_avx2",
        isa: Isa::Avx2,
        imp: x86::direct_avx2,
    },
    ConvKernel {
        name: "conv_direct_csr_scalar",
        isa: Isa::Scalar,
        imp: direct_scalar,
    },
];

/// Looks a kernel up by name.
pub fn by_name(name: &str) -> Option<&'static ConvKernel> {
    CONV_KERNELS.iter().find(|k| k.name == name)
}

/// Kernels usable on this CPU up to `isa`.
pub fn candidates(isa: Isa) -> impl Iterator<Item = &'static ConvKernel> {
    CONV_KERNELS
        .iter()
        .filter(move |k| k.isa <= isa && k.isa.available())
}

impl ConvKernel {
    /// Whether this kernel takes `w`'s format (CSR, or BSR 4x1).
    pub fn accepts(&self, w: &WeightMatrix) -> bool {
        if self.name.contains("bsr4x1") {
            matches!(w.kind(), crate::FormatKind::Bsr { br: 4, bc: 1 })
        } else {
            matches!(w, WeightMatrix::Csr16(_) | WeightMatrix::Csr32(_))
        }
    }

    /// Checks everything the kernel relies on: ISA, CSR weights of `g.k()` columns, `x` of
    /// `[C, H, W, n]`, `y` holding exactly the output rows of `rows`.
    pub fn check(
        &self,
        w: &WeightMatrix,
        g: &ConvGeom,
        x: &[f32],
        n: usize,
        y: &[f32],
        rows: &Range<usize>,
    ) -> Result<(), KernelError> {
        if !self.isa.available() {
            return Err(KernelError::IsaUnavailable {
                kernel: self.name,
                isa: self.isa.name(),
            });
        }
        if !self.accepts(w) {
            return Err(KernelError::Unsupported {
                kernel: self.name,
                reason: "weights in another format",
            });
        }
        if n == 0 {
            return Err(KernelError::Unsupported {
                kernel: self.name,
                reason: "batch must be at least 1",
            });
        }
        let shape = |what, expected: usize, actual: usize| {
            if expected == actual {
                Ok(())
            } else {
                Err(KernelError::ShapeMismatch {
                    what,
                    expected,
                    actual,
                })
            }
        };
        shape("weight columns (C*kh*kw)", g.k(), w.cols())?;
        if Some(*g) != ConvGeom::new(g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw) {
            return Err(KernelError::Unsupported {
                kernel: self.name,
                reason: "inconsistent convolution geometry",
            });
        }
        shape("x (C*H*W*batch)", g.c * g.h * g.w * n, x.len())?;
        let gr = w.row_granularity();
        let aligned =
            rows.start.is_multiple_of(gr) && (rows.end.is_multiple_of(gr) || rows.end == w.rows());
        if rows.start > rows.end || rows.end > w.rows() || !aligned {
            return Err(KernelError::BadRowRange {
                start: rows.start,
                end: rows.end,
                rows: w.rows(),
                granularity: gr,
            });
        }
        shape("y (rows*OH*OW*batch)", rows.len() * g.pixels() * n, y.len())
    }

    /// Computes output channels `rows` into `y` after checking every precondition.
    pub fn run(
        &self,
        w: &WeightMatrix,
        g: &ConvGeom,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        rows: Range<usize>,
    ) -> Result<(), KernelError> {
        self.check(w, g, x, n, y, &rows)?;
        // SAFETY: `check` verified the ISA, the matrix variant and every length the body uses.
        unsafe { (self.imp)(w, g, x, n, y, rows) };
        Ok(())
    }
}

/// Runs `kernel` over all output channels, split into the ranges of `parts` (one rayon task
/// each, on the current pool). Each channel is computed by one task in the same order as
/// single-threaded code, so results are bit-identical for any split.
pub fn execute(
    kernel: &ConvKernel,
    w: &WeightMatrix,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    parts: &[Range<usize>],
) -> Result<(), KernelError> {
    kernel.check(w, g, x, n, y, &(0..w.rows()))?;
    crate::parallel::check_split(parts, w.rows(), w.row_granularity())?;
    crate::parallel::for_each_split(parts, y, g.pixels() * n, |range, chunk| {
        // SAFETY: `check` passed for all rows; each range is an aligned sub-range of them
        // (`check_split`) and `chunk` is exactly its output channels.
        unsafe { (kernel.imp)(w, g, x, n, chunk, range) }
    });
    Ok(())
}

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

/// Stored entries decoded once per batch of a row: weight, input-plane offset, tap.
const ENTRY_BATCH: usize = 256;

struct Entries {
    w: [f32; ENTRY_BATCH],
    plane: [usize; ENTRY_BATCH],
    ky: [usize; ENTRY_BATCH],
    kx: [usize; ENTRY_BATCH],
    len: usize,
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
    for i in 0..e.len {
        let iy = oy * g.sh + e.ky[i] - g.ph;
        let ix = ox0 * g.sw + e.kx[i] - g.pw;
        let s = (e.plane[i] + iy * g.w + ix) * n + f0;
        let src = &x[s..s + L];
        for l in 0..L {
            acc[l] = fma::<FMA>(e.w[i], src[l], acc[l]);
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
    for i in 0..e.len {
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
    // Pixels per run: contiguous in `x` only with unit column stride.
    let ppr = if g.sw == 1 { (64 / n).max(1) } else { 1 };
    let interior_y = |oy: usize| oy * g.sh >= g.ph && oy * g.sh + g.kh <= g.h + g.ph;
    let interior_x =
        |ox0: usize, ox1: usize| ox0 * g.sw >= g.pw && (ox1 - 1) * g.sw + g.kw <= g.w + g.pw;
    let mut e = Entries {
        w: [0.0; ENTRY_BATCH],
        plane: [0; ENTRY_BATCH],
        ky: [0; ENTRY_BATCH],
        kx: [0; ENTRY_BATCH],
        len: 0,
    };
    for (r, out) in rows.zip(y.chunks_exact_mut(plane)) {
        out.fill(0.0);
        let (a, b) = (rp[r] as usize, rp[r + 1] as usize);
        for e0 in (a..b).step_by(ENTRY_BATCH) {
            let e1 = (e0 + ENTRY_BATCH).min(b);
            e.len = e1 - e0;
            for (i, k) in (e0..e1).enumerate() {
                let col = cols[k].to_usize();
                e.w[i] = match m.values() {
                    Values::F32(v) => v[k],
                    Values::I8 { q, scales } => q[k] as f32 * scales[r],
                };
                let (ci, rem) = div.khw.divmod(col);
                let (ky, kx) = div.kw.divmod(rem);
                e.plane[i] = ci * g.h * g.w;
                e.ky[i] = ky;
                e.kx[i] = kx;
            }
            // Pixels `from..to` of one output row, in runs of up to 64 floats.
            let row = |oy: usize, from: usize, to: usize, out: &mut [f32]| {
                let mut ox0 = from;
                while ox0 < to {
                    let ox1 = (ox0 + ppr).min(to);
                    let width = (ox1 - ox0) * n;
                    let interior = interior_y(oy) && interior_x(ox0, ox1);
                    let base = (oy * g.ow + ox0) * n;
                    let mut f0 = 0;
                    while f0 < width {
                        let left = width - f0;
                        let dst = &mut out[base + f0..base + width];
                        let len = if interior && left >= 64 {
                            run_interior::<64, FMA>(&e, g, x, n, oy, ox0, f0, dst);
                            64
                        } else if interior && left >= 8 {
                            run_interior::<8, FMA>(&e, g, x, n, oy, ox0, f0, dst);
                            8
                        } else {
                            let len = left.min(64);
                            run_border::<FMA>(&e, g, x, n, oy, ox0, f0, &mut dst[..len]);
                            len
                        };
                        f0 += len;
                    }
                    ox0 = ox1;
                }
            };
            let mut oy = 0;
            while oy < g.oh {
                // Batch 1: blocks of 8 rows x 8 pixels keep 64 sums in registers across all
                // entries, where one row's run of a few pixels would not amortise the index math.
                let block = n == 1 && g.sw == 1 && oy + 8 <= g.oh;
                if block && interior_y(oy) && interior_y(oy + 7) {
                    // Interior columns start at the padding; the border columns go row by row.
                    let first = g.pw.min(g.ow);
                    let mut ox0 = first;
                    while ox0 + 8 <= g.ow && interior_x(ox0, ox0 + 8) {
                        run_block8(&e, g, x, oy, ox0, out, FMA);
                        ox0 += 8;
                    }
                    for r in oy..oy + 8 {
                        row(r, 0, first, out);
                        row(r, ox0, g.ow, out);
                    }
                    oy += 8;
                } else {
                    row(oy, 0, g.ow, out);
                    oy += 1;
                }
            }
        }
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
    for i in 0..e.len {
        let iy = oy0 * g.sh + e.ky[i] - g.ph;
        let ix = ox0 + e.kx[i] - g.pw;
        let base = e.plane[i] + iy * g.w + ix;
        let w = e.w[i];
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
    for i in 0..e.len {
        let iy = oy * g.sh + e.ky[i] - g.ph;
        let ix = ox0 * g.sw + e.kx[i] - g.pw;
        let s = (e.plane[i] + iy * g.w + ix) * n + f0;
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
        plane: [0; ENTRY_BATCH],
        ky: [0; ENTRY_BATCH],
        kx: [0; ENTRY_BATCH],
        len: 0,
    };
    let mut one = Entries {
        w: [0.0; ENTRY_BATCH],
        plane: [0; ENTRY_BATCH],
        ky: [0; ENTRY_BATCH],
        kx: [0; ENTRY_BATCH],
        len: 0,
    };
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
                e.ky[i] = ky;
                e.kx[i] = kx;
            }
            one.len = e.len;
            one.plane = e.plane;
            one.ky = e.ky;
            one.kx = e.kx;
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
                                for i in 0..e.len {
                                    one.w[i] = e.w[i][ri];
                                }
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

/// # Safety
/// Safe to call for any arguments `check` accepted (no ISA requirement).
unsafe fn direct_b41_scalar(
    w: &WeightMatrix,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    match w {
        WeightMatrix::Bsr(m) => body_b41::<16, false>(m, g, x, n, y, rows),
        _ => debug_assert!(false, "check admits BSR 4x1 only"),
    }
}

/// # Safety
/// Safe to call for any arguments `check` accepted (no ISA requirement).
unsafe fn direct_scalar(
    w: &WeightMatrix,
    g: &ConvGeom,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    rows: Range<usize>,
) {
    match w {
        WeightMatrix::Csr16(m) => body::<u16, false>(m, g, x, n, y, rows),
        WeightMatrix::Csr32(m) => body::<u32, false>(m, g, x, n, y, rows),
        _ => debug_assert!(false, "check admits CSR only"),
    }
}

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
mod x86 {
    use super::*;

    /// An ISA wrapper of a body: the same code compiled with the ISA's target features, so the
    /// accumulator loops use its vectors and FMA.
    macro_rules! wrapper {
        ($name:ident, $features:literal, csr) => {
            /// # Safety
            /// The target features named here must be available (`check` verifies it).
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                w: &WeightMatrix,
                g: &ConvGeom,
                x: &[f32],
                n: usize,
                y: &mut [f32],
                rows: Range<usize>,
            ) {
                match w {
                    WeightMatrix::Csr16(m) => body::<u16, true>(m, g, x, n, y, rows),
                    WeightMatrix::Csr32(m) => body::<u32, true>(m, g, x, n, y, rows),
                    _ => debug_assert!(false, "check admits CSR only"),
                }
            }
        };
        ($name:ident, $features:literal, bsr4x1, $run:literal) => {
            /// # Safety
            /// The target features named here must be available (`check` verifies it).
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                w: &WeightMatrix,
                g: &ConvGeom,
                x: &[f32],
                n: usize,
                y: &mut [f32],
                rows: Range<usize>,
            ) {
                match w {
                    WeightMatrix::Bsr(m) => body_b41::<$run, true>(m, g, x, n, y, rows),
                    _ => debug_assert!(false, "check admits BSR 4x1 only"),
                }
            }
        };
    }

    wrapper!(direct_avx2, "avx2,fma", csr);
    wrapper!(direct_avx512, "avx512f,avx2,fma", csr);
    wrapper!(direct_b41_avx2, "avx2,fma", bsr4x1, 16);
    wrapper!(direct_b41_avx512, "avx512f,avx2,fma", bsr4x1, 64);
}

/// The plain twin: every stored entry times every in-bounds input tap, accumulated in f64, with
/// the same error budget as [`crate::reference::reference`]. `y` is `[Cout, OH*OW*n]`.
pub fn conv_reference(w: &WeightMatrix, g: &ConvGeom, x: &[f32], n: usize) -> Reference {
    let cols = g.pixels() * n;
    let mut y = vec![0.0f64; w.rows() * cols];
    let mut abs = vec![0.0f64; w.rows() * cols];
    let mut terms = vec![0usize; w.rows()];
    w.for_each_entry(|r, col, wv| {
        terms[r] += 1;
        let (ci, ky, kx) = (
            col / (g.kh * g.kw),
            (col % (g.kh * g.kw)) / g.kw,
            col % g.kw,
        );
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let iy = (oy * g.sh + ky) as isize - g.ph as isize;
                let ix = (ox * g.sw + kx) as isize - g.pw as isize;
                if iy < 0 || ix < 0 || iy as usize >= g.h || ix as usize >= g.w {
                    continue;
                }
                for j in 0..n {
                    let p = wv * x[((ci * g.h + iy as usize) * g.w + ix as usize) * n + j] as f64;
                    let o = r * cols + (oy * g.ow + ox) * n + j;
                    y[o] += p;
                    abs[o] += p.abs();
                }
            }
        }
    });
    Reference {
        y,
        abs,
        terms,
        n: cols,
    }
}
