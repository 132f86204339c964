//! Ops that imported graphs bring and lopper's own zoo does not: elementwise maps (clip, sigmoid,
//! tanh, hard-swish) and convolutions with groups or dilation. Depthwise convolutions
//! (MobileNet's) run in `lopper_kernels::depthwise`; this module keeps the general grouped loop
//! and the dilated im2col.
//!
//! Layout as in [`super::ops`]: `[C, H, W, n]`, batch innermost. The grouped convolution reads
//! its weight densely as `[out, in/groups, kh, kw]` (row-major, PyTorch and ONNX's layout) and
//! works on whole `n`-vectors, so its inner loop vectorises over the batch; a depthwise layer
//! does `C * kh * kw` multiply-adds per output pixel, too few for a sparse kernel to pay.

use lopper_kernels::depthwise::{tap, valid, DwGeom};

use super::ops::Window;

/// An elementwise function of one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MapFn {
    Clip { min: f32, max: f32 },
    Sigmoid,
    Tanh,
    HardSwish,
}

impl MapFn {
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            // `max`/`min` would turn NaN into a bound: keep NaN, as PyTorch's clamp does.
            MapFn::Clip { min, max } => {
                if v < min {
                    min
                } else if v > max {
                    max
                } else {
                    v
                }
            }
            MapFn::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            MapFn::Tanh => v.tanh(),
            MapFn::HardSwish => v * (v + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }
}

/// `y[i] = f(x[i])`.
pub fn map(f: MapFn, x: &[f32], y: &mut [f32]) {
    // One loop per function, so each compiles without a match per element.
    match f {
        MapFn::Clip { .. } => y.iter_mut().zip(x).for_each(|(o, &v)| *o = f.apply(v)),
        MapFn::Sigmoid => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = MapFn::Sigmoid.apply(v)),
        MapFn::Tanh => y.iter_mut().zip(x).for_each(|(o, &v)| *o = v.tanh()),
        MapFn::HardSwish => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = MapFn::HardSwish.apply(v)),
    }
}

/// Geometry of a grouped, dilated convolution: `g` is the window (its `kh`, `kw` are the taps,
/// not the dilated span), `dil` the tap spacing, `groups` the channel groups.
#[derive(Debug, Clone, Copy)]
pub struct GroupConv {
    pub g: Window,
    pub dil: [usize; 2],
    pub groups: usize,
    pub out_c: usize,
}

/// `y[o, oy, ox, :] = bias[o] + Σ w[o, ci, ky, kx] · x[grp(o)·ipg + ci, oy·sh + ky·dh − ph,
/// ox·sw + kx·dw − pw, :]`, zero outside the input. `w` is dense `[out, ipg·kh·kw]`,
/// `y` is `[out, oh, ow, n]`.
///
/// Loop order: one weight at a time, over the output rows it reaches, as an axpy over the output
/// columns whose input column is inside the image (computed once per tap, so the inner loop has no
/// bounds test). With unit column stride that axpy is one contiguous run of `(ox1 - ox0) * n`
/// floats in both `x` and `y`, which vectorises at batch 1 too. Zero weights are skipped, so a
/// pruned depthwise layer costs less.
pub fn group_conv(
    c: &GroupConv,
    w: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) {
    let g = &c.g;
    let ipg = g.c / c.groups;
    let opg = c.out_c / c.groups;
    let taps = g.kh * g.kw;
    let plane_out = g.oh * g.ow * n;
    // One channel plane's geometry, for the kernels crate's per-tap axpy.
    let plane = DwGeom {
        c: 1,
        h: g.h,
        w: g.w,
        kh: g.kh,
        kw: g.kw,
        sh: g.sh,
        sw: g.sw,
        ph: g.ph,
        pw: g.pw,
        dh: c.dil[0],
        dw: c.dil[1],
        oh: g.oh,
        ow: g.ow,
    };
    for o in 0..c.out_c {
        let grp = o / opg;
        let yo = &mut y[o * plane_out..(o + 1) * plane_out];
        yo.fill(bias.map_or(0.0, |b| b[o]));
        let wrow = &w[o * ipg * taps..(o + 1) * ipg * taps];
        for ci in 0..ipg {
            let xc = &x[(grp * ipg + ci) * g.h * g.w * n..][..g.h * g.w * n];
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let wv = wrow[(ci * g.kh + ky) * g.kw + kx];
                    if wv != 0.0 {
                        tap(&plane, ky, kx, wv, xc, n, yo);
                    }
                }
            }
        }
    }
}

/// im2col of a dilated convolution (one group): `patches[(ci*kh + ky)*kw + kx][(oy*ow + ox)*n
/// + j] = x[ci][oy*sh + ky*dh - ph][ox*sw + kx*dw - pw][j]`, zero outside the input;
/// `patches.len() == c*kh*kw * oh*ow*n`. The product with the `[out, c*kh*kw]` weight is the
/// convolution, run by the dense GEMM kernel: on the fixture's 16→32 channel 3x3 layer with
/// dilation 2 at batch 1, the per-tap loop of [`group_conv`] took 353 µs and this 34 µs.
pub fn dilated_im2col(c: &GroupConv, x: &[f32], n: usize, patches: &mut [f32]) {
    let g = &c.g;
    let width = g.oh * g.ow * n;
    patches.fill(0.0);
    for ci in 0..g.c {
        let xc = &x[ci * g.h * g.w * n..][..g.h * g.w * n];
        for ky in 0..g.kh {
            let rows = valid(g.oh, g.h, g.sh, ky * c.dil[0], g.ph);
            for kx in 0..g.kw {
                let p = &mut patches[((ci * g.kh + ky) * g.kw + kx) * width..][..width];
                let (Some((oy0, oy1)), Some((ox0, ox1))) =
                    (rows, valid(g.ow, g.w, g.sw, kx * c.dil[1], g.pw))
                else {
                    continue;
                };
                for oy in oy0..oy1 {
                    let iy = oy * g.sh + ky * c.dil[0] - g.ph;
                    let ix0 = ox0 * g.sw + kx * c.dil[1] - g.pw;
                    let dst = &mut p[(oy * g.ow + ox0) * n..(oy * g.ow + ox1) * n];
                    if g.sw == 1 {
                        // One contiguous run per output row (a memcpy per pixel cost 4x more).
                        dst.copy_from_slice(&xc[(iy * g.w + ix0) * n..][..dst.len()]);
                    } else {
                        for (k, d) in dst.chunks_exact_mut(n).enumerate() {
                            let src = (iy * g.w + ix0 + k * g.sw) * n;
                            for (o, v) in d.iter_mut().zip(&xc[src..src + n]) {
                                *o = *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The depthwise geometry of `c`, when it is one (one input channel per output channel): then
/// `lopper_kernels::depthwise` runs it, with run-time SIMD dispatch and its own twin.
pub fn as_depthwise(c: &GroupConv) -> Option<lopper_kernels::depthwise::DwGeom> {
    let g = &c.g;
    if c.groups != g.c || c.out_c != g.c {
        return None;
    }
    let d = lopper_kernels::depthwise::DwGeom::new(
        g.c,
        [g.h, g.w],
        [g.kh, g.kw],
        [g.sh, g.sw],
        [g.ph, g.pw],
        c.dil,
    )?;
    (d.oh == g.oh && d.ow == g.ow).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain twin: one output value at a time, straight from the definition.
    fn reference(c: &GroupConv, w: &[f32], b: &[f32], x: &[f32], n: usize) -> Vec<f32> {
        let g = &c.g;
        let (ipg, opg) = (g.c / c.groups, c.out_c / c.groups);
        let mut y = vec![0.0; c.out_c * g.oh * g.ow * n];
        for o in 0..c.out_c {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for j in 0..n {
                        let mut acc = b[o] as f64;
                        for ci in 0..ipg {
                            for ky in 0..g.kh {
                                for kx in 0..g.kw {
                                    let iy = (oy * g.sh + ky * c.dil[0]) as isize - g.ph as isize;
                                    let ix = (ox * g.sw + kx * c.dil[1]) as isize - g.pw as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = (((o / opg) * ipg + ci) * g.h + iy as usize) * g.w
                                        + ix as usize;
                                    acc += w[(o * ipg + ci) * g.kh * g.kw + ky * g.kw + kx] as f64
                                        * x[xi * n + j] as f64;
                                }
                            }
                        }
                        y[((o * g.oh + oy) * g.ow + ox) * n + j] = acc as f32;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn grouped_dilated_conv_matches_its_twin() {
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // (channels, out, groups, k, stride, pad, dil, size, batch)
        for &(ch, out_c, groups, k, s, p, d, size, n) in &[
            (4, 4, 4, 3, 1, 1, 1, 7, 1),
            (4, 8, 4, 3, 2, 1, 1, 8, 3),
            (6, 4, 2, 3, 1, 2, 2, 9, 2),
            (3, 5, 1, 2, 1, 0, 3, 7, 1),
            (8, 8, 8, 5, 2, 2, 1, 5, 4),
            (2, 2, 1, 1, 1, 0, 1, 1, 1),
        ] {
            let span = d * (k - 1) + 1;
            let o = (size + 2 * p - span) / s + 1;
            let g = Window::new(ch, size, size, k, k, s, s, p, p).expect("window");
            let g = Window { oh: o, ow: o, ..g };
            let c = GroupConv {
                g,
                dil: [d, d],
                groups,
                out_c,
            };
            let mut w: Vec<f32> = (0..out_c * ch / groups * k * k).map(|_| next()).collect();
            // Zero weights are skipped: make some.
            w.iter_mut().step_by(3).for_each(|v| *v = 0.0);
            let b: Vec<f32> = (0..out_c).map(|_| next()).collect();
            let x: Vec<f32> = (0..ch * size * size * n).map(|_| next()).collect();
            let mut y = vec![f32::NAN; out_c * o * o * n];
            group_conv(&c, &w, Some(&b), &x, n, &mut y);
            let r = reference(&c, &w, &b, &x, n);
            for (a, e) in y.iter().zip(&r) {
                assert!(
                    (a - e).abs() < 1e-5,
                    "{a} vs {e} for {ch} {out_c} {groups} {k}"
                );
            }
        }
    }

    #[test]
    fn dilated_im2col_times_the_weight_is_the_convolution() {
        let (ch, out_c, k, s, p, d, size, n) = (3, 4, 3, 2, 2, 2, 9, 2);
        let o = (size + 2 * p - (d * (k - 1) + 1)) / s + 1;
        let g = Window::new(ch, size, size, k, k, s, s, p, p).expect("window");
        let c = GroupConv {
            g: Window { oh: o, ow: o, ..g },
            dil: [d, d],
            groups: 1,
            out_c,
        };
        let w: Vec<f32> = (0..out_c * ch * k * k)
            .map(|i| ((i * 7) % 11) as f32 - 5.0)
            .collect();
        let x: Vec<f32> = (0..ch * size * size * n)
            .map(|i| ((i * 5) % 13) as f32 - 6.0)
            .collect();
        let cols = ch * k * k;
        let width = o * o * n;
        let mut patches = vec![f32::NAN; cols * width];
        dilated_im2col(&c, &x, n, &mut patches);
        let b = vec![0.0; out_c];
        let r = reference(&c, &w, &b, &x, n);
        for oc in 0..out_c {
            for j in 0..width {
                let v: f32 = (0..cols)
                    .map(|q| w[oc * cols + q] * patches[q * width + j])
                    .sum();
                assert!(
                    (v - r[oc * width + j]).abs() < 1e-3,
                    "{v} vs {}",
                    r[oc * width + j]
                );
            }
        }
    }

    #[test]
    fn maps_keep_nan_and_hit_their_formulas() {
        let clip = MapFn::Clip { min: 0.0, max: 6.0 };
        assert_eq!(clip.apply(-1.0), 0.0);
        assert_eq!(clip.apply(7.0), 6.0);
        assert!(clip.apply(f32::NAN).is_nan());
        assert_eq!(MapFn::HardSwish.apply(-4.0), 0.0);
        assert_eq!(MapFn::HardSwish.apply(4.0), 4.0);
        assert!((MapFn::HardSwish.apply(1.0) - 4.0 / 6.0).abs() < 1e-7);
        assert!((MapFn::Sigmoid.apply(0.0) - 0.5).abs() < 1e-7);
        let x = [-2.0f32, 0.5, 3.0];
        let mut y = [0.0; 3];
        map(MapFn::Tanh, &x, &mut y);
        assert!((y[0] - (-2.0f32).tanh()).abs() < 1e-7);
    }
}
