//! Depthwise convolution (one input channel per output channel, MobileNet's 3x3 layers), with
//! stride, zero padding and dilation.
//!
//! Layouts: `x` is `[C, H, W, n]` and `y` is `[C, OH, OW, n]`, batch innermost (the runtime's
//! activation layout); the weight is dense `[C, kh*kw]` (PyTorch's `[C, 1, kh, kw]`), the bias
//! `[C]`. [`depthwise_reference`] is the plain f64 twin.
//!
//! Two loop shapes, each compiled for AVX-512, AVX2+FMA and the portable baseline and chosen by
//! [`Isa::selected`] (so `LOPPER_ISA` overrides it):
//! - batch 1: each channel's plane is copied once into a zero-padded scratch plane, then every
//!   block of [`BLOCK`] output columns sums its `kh*kw` taps in registers and is stored once;
//! - batch n > 1: one weight at a time, an axpy over the output columns whose input column lies
//!   inside the image (with unit column stride, one contiguous run of `(ox1 - ox0) * n` floats).
//!
//! Zero weights take part like any other (a NaN input gives NaN output, as in PyTorch).

use crate::isa::Isa;

/// Output columns per register block of the batch-1 path.
pub const BLOCK: usize = 8;

/// Geometry of a depthwise convolution over one `[C, H, W]` example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    /// Spacing of the kernel taps (1 = adjacent).
    pub dh: usize,
    pub dw: usize,
    pub oh: usize,
    pub ow: usize,
}

impl DwGeom {
    /// The geometry, or `None` when a side is zero or the dilated window does not fit.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c: usize,
        [h, w]: [usize; 2],
        [kh, kw]: [usize; 2],
        [sh, sw]: [usize; 2],
        [ph, pw]: [usize; 2],
        [dh, dw]: [usize; 2],
    ) -> Option<Self> {
        if [c, h, w, kh, kw, sh, sw, dh, dw].contains(&0) {
            return None;
        }
        let out = |size: usize, k: usize, s: usize, p: usize, d: usize| {
            let span = d.checked_mul(k - 1)?.checked_add(1)?;
            let padded = size.checked_add(p.checked_mul(2)?)?;
            (padded >= span).then(|| (padded - span) / s + 1)
        };
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
            dh,
            dw,
            oh: out(h, kh, sh, ph, dh)?,
            ow: out(w, kw, sw, pw, dw)?,
        })
    }

    /// Scratch floats [`depthwise`] needs at batch `n`: one zero-padded plane at batch 1.
    pub fn scratch_len(&self, n: usize) -> usize {
        if n == 1 {
            (self.h + 2 * self.ph) * (self.w + 2 * self.pw)
        } else {
            0
        }
    }
}

/// The outputs `o0..o1` (of `out`) whose input `o * stride + off - pad` lies in `0..size`
/// (`None` when there are none): the loop bounds of a tap at offset `off`.
#[inline(always)]
pub fn valid(
    out: usize,
    size: usize,
    stride: usize,
    off: usize,
    pad: usize,
) -> Option<(usize, usize)> {
    let o0 = pad.saturating_sub(off).div_ceil(stride);
    let top = (size - 1 + pad).checked_sub(off)?;
    let o1 = (top / stride + 1).min(out);
    (o0 < o1).then_some((o0, o1))
}

#[inline(always)]
fn single_body(
    g: &DwGeom,
    w: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    pad: &mut [f32],
) {
    let wp = g.w + 2 * g.pw;
    let taps = g.kh * g.kw;
    // The border stays zero: only the interior is rewritten per channel.
    pad.fill(0.0);
    for ch in 0..g.c {
        for r in 0..g.h {
            let dst = &mut pad[(r + g.ph) * wp + g.pw..][..g.w];
            for (d, v) in dst.iter_mut().zip(&x[(ch * g.h + r) * g.w..][..g.w]) {
                *d = *v;
            }
        }
        let wk = &w[ch * taps..(ch + 1) * taps];
        let b = bias.map_or(0.0, |b| b[ch]);
        let yc = &mut y[ch * g.oh * g.ow..(ch + 1) * g.oh * g.ow];
        let mut oy = 0;
        let k3 = g.kh == 3 && g.kw == 3 && g.dh == 1 && g.dw == 1;
        // Whole blocks, ROWS output rows at once: independent sums hide the add latency (one
        // block at a time waited on its own previous add at every tap).
        if g.sw == 1 {
            while oy + ROWS <= g.oh {
                let mut ox0 = 0;
                while ox0 + BLOCK <= g.ow {
                    let out = &mut yc[oy * g.ow + ox0..];
                    let at = oy * g.sh * wp + ox0;
                    if k3 {
                        block3::<ROWS>(g, wk, b, pad, wp, at, out);
                    } else {
                        block::<ROWS>(g, wk, b, pad, wp, at, out);
                    }
                    ox0 += BLOCK;
                }
                for r in 0..ROWS {
                    tail(
                        g,
                        wk,
                        b,
                        pad,
                        wp,
                        oy + r,
                        ox0,
                        &mut yc[(oy + r) * g.ow..][..g.ow],
                    );
                }
                oy += ROWS;
            }
        }
        for oy in oy..g.oh {
            let yrow = &mut yc[oy * g.ow..(oy + 1) * g.ow];
            let mut ox0 = 0;
            if g.sw == 1 {
                while ox0 + BLOCK <= g.ow {
                    block::<1>(g, wk, b, pad, wp, oy * g.sh * wp + ox0, &mut yrow[ox0..]);
                    ox0 += BLOCK;
                }
            }
            tail(g, wk, b, pad, wp, oy, ox0, yrow);
        }
    }
}

/// Output rows per step of the batch-1 path.
const ROWS: usize = 4;

/// Columns `ox0..` of output row `oy` (those past the last whole block, or all of them with a
/// wider stride), one at a time.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tail(
    g: &DwGeom,
    wk: &[f32],
    b: f32,
    pad: &[f32],
    wp: usize,
    oy: usize,
    ox0: usize,
    yrow: &mut [f32],
) {
    for (ox, out) in yrow.iter_mut().enumerate().skip(ox0) {
        let mut acc = b;
        for ky in 0..g.kh {
            let row = (oy * g.sh + ky * g.dh) * wp + ox * g.sw;
            for kx in 0..g.kw {
                acc += wk[ky * g.kw + kx] * pad[row + kx * g.dw];
            }
        }
        *out = acc;
    }
}

/// [`block`] for the common 3x3 undilated kernel, its nine taps unrolled at compile time
/// (with run-time kernel sizes the index arithmetic cost more than the multiply-adds).
#[inline(always)]
fn block3<const R: usize>(
    g: &DwGeom,
    wk: &[f32],
    b: f32,
    pad: &[f32],
    wp: usize,
    at: usize,
    out: &mut [f32],
) {
    let wk: &[f32; 9] = wk[..9].try_into().expect("nine taps");
    let mut acc = [[b; BLOCK]; R];
    for (r, a) in acc.iter_mut().enumerate() {
        let base = at + r * g.sh * wp;
        let rows: [&[f32; BLOCK + 2]; 3] = std::array::from_fn(|ky| {
            pad[base + ky * wp..base + ky * wp + BLOCK + 2]
                .try_into()
                .expect("a block inside the padded plane")
        });
        for ky in 0..3 {
            for kx in 0..3 {
                let wv = wk[ky * 3 + kx];
                for i in 0..BLOCK {
                    a[i] += wv * rows[ky][kx + i];
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let o: &mut [f32; BLOCK] = (&mut out[r * g.ow..r * g.ow + BLOCK])
            .try_into()
            .expect("a block inside the output");
        *o = *a;
    }
}

/// `R` output rows (stride `sh` apart) of one block of [`BLOCK`] columns at unit column stride,
/// the first starting at `at` in the padded plane, written to `out` (row `r` at `r * ow`). The
/// sums live in local arrays that are only written out at the end: returning them, or touching
/// them through an iterator, kept them in memory (a memmove per block; the layer took 25 µs).
#[inline(always)]
fn block<const R: usize>(
    g: &DwGeom,
    wk: &[f32],
    b: f32,
    pad: &[f32],
    wp: usize,
    at: usize,
    out: &mut [f32],
) {
    let mut acc = [[b; BLOCK]; R];
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let wv = wk[ky * g.kw + kx];
            for (r, a) in acc.iter_mut().enumerate() {
                let start = at + (r * g.sh + ky * g.dh) * wp + kx * g.dw;
                let src: &[f32; BLOCK] = pad[start..start + BLOCK]
                    .try_into()
                    .expect("a block inside the padded plane");
                for i in 0..BLOCK {
                    a[i] += wv * src[i];
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let o: &mut [f32; BLOCK] = (&mut out[r * g.ow..r * g.ow + BLOCK])
            .try_into()
            .expect("a block inside the output");
        *o = *a;
    }
}

#[inline(always)]
fn batch_body(g: &DwGeom, w: &[f32], bias: Option<&[f32]>, x: &[f32], n: usize, y: &mut [f32]) {
    let taps = g.kh * g.kw;
    let plane_out = g.oh * g.ow * n;
    for ch in 0..g.c {
        let yc = &mut y[ch * plane_out..(ch + 1) * plane_out];
        yc.fill(bias.map_or(0.0, |b| b[ch]));
        let xc = &x[ch * g.h * g.w * n..][..g.h * g.w * n];
        let wk = &w[ch * taps..(ch + 1) * taps];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                tap(g, ky, kx, wk[ky * g.kw + kx], xc, n, yc);
            }
        }
    }
}

/// One tap of a convolution on one channel plane: `yc[oy, ox, :] += wv * xc[oy*sh + ky*dh - ph,
/// ox*sw + kx*dw - pw, :]` over the outputs whose input lies inside the plane (`xc` is
/// `[h, w, n]`, `yc` is `[oh, ow, n]`). With unit column stride each output row is one
/// contiguous axpy of `(ox1 - ox0) * n` floats. Shared with the runtime's grouped convolution.
#[inline(always)]
pub fn tap(g: &DwGeom, ky: usize, kx: usize, wv: f32, xc: &[f32], n: usize, yc: &mut [f32]) {
    let (Some((oy0, oy1)), Some((ox0, ox1))) = (
        valid(g.oh, g.h, g.sh, ky * g.dh, g.ph),
        valid(g.ow, g.w, g.sw, kx * g.dw, g.pw),
    ) else {
        return;
    };
    for oy in oy0..oy1 {
        let iy = oy * g.sh + ky * g.dh - g.ph;
        let ix0 = ox0 * g.sw + kx * g.dw - g.pw;
        let yrow = &mut yc[(oy * g.ow + ox0) * n..(oy * g.ow + ox1) * n];
        if g.sw == 1 {
            let xrow = &xc[(iy * g.w + ix0) * n..][..yrow.len()];
            yrow.iter_mut().zip(xrow).for_each(|(o, &v)| *o += wv * v);
        } else {
            for (k, out) in yrow.chunks_exact_mut(n).enumerate() {
                let src = &xc[(iy * g.w + ix0 + k * g.sw) * n..][..n];
                out.iter_mut().zip(src).for_each(|(o, &v)| *o += wv * v);
            }
        }
    }
}

/// The depthwise convolution of `x` (`[c, h, w, n]`) into `y` (`[c, oh, ow, n]`) with weights
/// `w` (`[c, kh*kw]`) and an optional bias, for the ISA [`Isa::selected`] allows. `scratch`
/// holds at least [`DwGeom::scratch_len`] floats.
///
/// # Panics
/// If a slice is shorter than the geometry says (the runtime sizes them from the checked graph).
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    g: &DwGeom,
    w: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    depthwise_with(Isa::selected(), g, w, bias, x, n, y, scratch)
}

/// [`depthwise`] for a given ISA (one the CPU has; others fall back to the portable loop).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_with(
    isa: Isa,
    g: &DwGeom,
    w: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    assert!(
        n >= 1
            && w.len() >= g.c * g.kh * g.kw
            && bias.is_none_or(|b| b.len() >= g.c)
            && x.len() >= g.c * g.h * g.w * n
            && y.len() >= g.c * g.oh * g.ow * n
            && scratch.len() >= g.scratch_len(n),
        "depthwise: a slice is shorter than the geometry {g:?} at batch {n}"
    );
    let pad = &mut scratch[..g.scratch_len(n)];
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        fn wide512(
            g: &DwGeom,
            w: &[f32],
            b: Option<&[f32]>,
            x: &[f32],
            n: usize,
            y: &mut [f32],
            p: &mut [f32],
        ) {
            body(g, w, b, x, n, y, p)
        }
        #[target_feature(enable = "avx2,fma")]
        fn wide(
            g: &DwGeom,
            w: &[f32],
            b: Option<&[f32]>,
            x: &[f32],
            n: usize,
            y: &mut [f32],
            p: &mut [f32],
        ) {
            body(g, w, b, x, n, y, p)
        }
        match isa {
            // SAFETY: `available` checked the CPU for the features the function is compiled for.
            Isa::Avx512 if isa.available() => return unsafe { wide512(g, w, bias, x, n, y, pad) },
            // SAFETY: as above.
            Isa::Avx2 if isa.available() => return unsafe { wide(g, w, bias, x, n, y, pad) },
            _ => {}
        }
    }
    body(g, w, bias, x, n, y, pad)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn body(
    g: &DwGeom,
    w: &[f32],
    b: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    pad: &mut [f32],
) {
    if n == 1 {
        single_body(g, w, b, x, y, pad)
    } else {
        batch_body(g, w, b, x, n, y)
    }
}

/// The plain twin: every output from the definition, in f64.
pub fn depthwise_reference(
    g: &DwGeom,
    w: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; g.c * g.oh * g.ow * n];
    for ch in 0..g.c {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for j in 0..n {
                    let mut acc = bias.map_or(0.0, |b| b[ch] as f64);
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                            let ix = (ox * g.sw + kx * g.dw) as isize - g.pw as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let xi = ((ch * g.h + iy as usize) * g.w + ix as usize) * n + j;
                            acc += w[(ch * g.kh + ky) * g.kw + kx] as f64 * x[xi] as f64;
                        }
                    }
                    y[((ch * g.oh + oy) * g.ow + ox) * n + j] = acc;
                }
            }
        }
    }
    y
}
