//! The non-matmul ops on the runtime's activation layout.
//!
//! Layout: a value of per-example shape `[C, H, W]` with batch `n` is stored `[C, H, W, n]`
//! (batch innermost), and `[F]` as `[F, n]`. This is the kernels' `X: [in, n]` layout, so a
//! linear layer reads its input directly, a flatten is free (same bytes) and a convolution's
//! im2col patches `[Cin*kh*kw, OH*OW*n]` copy whole `n`-vectors. Every function writes all of
//! its output and allocates nothing.

/// Geometry of a convolution or pooling window over a `[C, H, W, n]` input (the kernels
/// crate's convolution geometry, so direct-convolution kernels take it as it is).
pub use lopper_kernels::conv::ConvGeom as Window;
use lopper_kernels::pool::nan_max;

/// im2col: `patches[(ci*kh + ky)*kw + kx][(oy*ow + ox)*n + j] = x[ci][oy*sh+ky-ph][ox*sw+kx-pw][j]`,
/// zero where the window leaves the (unpadded) input. `patches.len() == c*kh*kw * oh*ow*n`.
pub fn im2col(x: &[f32], g: &Window, n: usize, patches: &mut [f32]) {
    if n == 1 && g.ph == 0 && g.pw == 0 && g.sw == 1 {
        return im2col_single_valid(x, g, patches);
    }
    debug_assert_eq!(patches.len(), g.c * g.kh * g.kw * g.oh * g.ow * n);
    im2col_walk(x, g, n, 0, g.oh * g.ow, patches);
}

/// Batch 1, no padding, unit column stride (LeNet's convolutions): every output row of every
/// patch row is one contiguous run of the input, copied without bounds arithmetic per pixel.
fn im2col_single_valid(x: &[f32], g: &Window, patches: &mut [f32]) {
    let plane = g.oh * g.ow;
    let mut rows = patches.chunks_exact_mut(plane);
    for ci in 0..g.c {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let Some(dst_row) = rows.next() else { return };
                let base = (ci * g.h + ky) * g.w + kx;
                let step = g.sh * g.w;
                match g.ow {
                    8 => rows_fixed::<8>(dst_row, x, base, step),
                    12 => rows_fixed::<12>(dst_row, x, base, step),
                    16 => rows_fixed::<16>(dst_row, x, base, step),
                    _ => {
                        for (oy, d) in dst_row.chunks_exact_mut(g.ow).enumerate() {
                            let s = base + oy * step;
                            copy_short(d, &x[s..s + g.ow]);
                        }
                    }
                }
            }
        }
    }
}

/// One patch row of [`im2col_single_valid`] for an output `W` pixels wide: each output row is
/// copied as a `[f32; W]`, whose length the compiler knows, so it becomes a few vector moves.
/// Measured on LeNet-5's conv2 patches (4 000 rows of 8 floats): 4.1 µs, against 7.2 µs through
/// [`copy_short`], whose run-time length compiles to a float-by-float loop.
#[inline(always)]
fn rows_fixed<const W: usize>(dst_row: &mut [f32], x: &[f32], base: usize, step: usize) {
    for (oy, d) in dst_row.chunks_exact_mut(W).enumerate() {
        let s = base + oy * step;
        let v: [f32; W] = x[s..s + W].try_into().expect("W floats");
        d.copy_from_slice(&v);
    }
}

/// `dst.copy_from_slice(src)` for the short runs of batch-1 im2col (a few floats each): an
/// element loop the compiler unrolls, instead of a `memcpy` call per run.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    if dst.len() > 64 {
        dst.copy_from_slice(src);
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Columns of pixels `p0..p1` (pixel `p = oy*ow + ox`, each `n` columns wide) of the im2col
/// matrix: `patches` is `[c*kh*kw, (p1-p0)*n]`. Used to cut a wide product into tiles whose
/// patches stay in cache.
pub fn im2col_pixels(x: &[f32], g: &Window, n: usize, p0: usize, p1: usize, patches: &mut [f32]) {
    if p0 == 0 && p1 == g.oh * g.ow {
        return im2col(x, g, n, patches);
    }
    im2col_walk(x, g, n, p0, p1, patches);
}

/// The im2col columns of pixels `p0..p1`, walked one output row at a time (see
/// [`im2col_segment`]): the whole matrix and its tiles share this walk (a per-pixel copy made
/// the tiled 16-channel ResNet convolutions at 28x28 eight times slower than the untiled).
fn im2col_walk(x: &[f32], g: &Window, n: usize, p0: usize, p1: usize, patches: &mut [f32]) {
    let cols = (p1 - p0) * n;
    for ci in 0..g.c {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst_row = &mut patches[row * cols..(row + 1) * cols];
                let mut p = p0;
                while p < p1 {
                    let (oy, ox0) = (p / g.ow, p % g.ow);
                    let ox1 = g.ow.min(ox0 + (p1 - p));
                    let dst = &mut dst_row[(p - p0) * n..(p - p0 + ox1 - ox0) * n];
                    p += ox1 - ox0;
                    im2col_segment(x, g, n, (ci, ky, kx), oy, ox0..ox1, dst);
                }
            }
        }
    }
}

/// Output pixels `ox` of output row `oy` of the patch row `(ci, ky, kx)`, `n` floats each, into
/// `dst`: zero where the window leaves the input. With a unit column stride the in-bounds
/// pixels read one contiguous run of the input, copied whole; strided batch-1 rows copy one
/// float per pixel without a slice per pixel.
#[inline(always)]
fn im2col_segment(
    x: &[f32],
    g: &Window,
    n: usize,
    (ci, ky, kx): (usize, usize, usize),
    oy: usize,
    ox: std::ops::Range<usize>,
    dst: &mut [f32],
) {
    let (ox0, ox1) = (ox.start, ox.end);
    let iy = (oy * g.sh + ky) as isize - g.ph as isize;
    if iy < 0 || iy as usize >= g.h {
        dst.fill(0.0);
        return;
    }
    let src_row = ((ci * g.h + iy as usize) * g.w) * n;
    if g.sw == 1 {
        // In bounds where 0 <= ox + kx - pw < w.
        let lo = g.pw.saturating_sub(kx).clamp(ox0, ox1);
        let hi = (g.w + g.pw).saturating_sub(kx).clamp(lo, ox1);
        dst[..(lo - ox0) * n].fill(0.0);
        dst[(hi - ox0) * n..].fill(0.0);
        if hi > lo {
            let s = src_row + (lo + kx - g.pw) * n;
            copy_short(
                &mut dst[(lo - ox0) * n..(hi - ox0) * n],
                &x[s..s + (hi - lo) * n],
            );
        }
        return;
    }
    if n == 1 {
        for (i, d) in dst.iter_mut().enumerate() {
            let ix = (ox0 + i) * g.sw + kx;
            *d = if ix >= g.pw && ix - g.pw < g.w {
                x[src_row + ix - g.pw]
            } else {
                0.0
            };
        }
        return;
    }
    for ox in ox0..ox1 {
        let ix = (ox * g.sw + kx) as isize - g.pw as isize;
        let d = &mut dst[(ox - ox0) * n..(ox - ox0 + 1) * n];
        if ix < 0 || ix as usize >= g.w {
            d.fill(0.0);
        } else {
            let s = src_row + ix as usize * n;
            copy_short(d, &x[s..s + n]);
        }
    }
}

/// Max or mean over each window. `y` is `[c, oh, ow, n]`. Padding (ResNet's 3x3 stride-2
/// max-pool) adds no values: a window takes the maximum or mean of its taps inside the input.
pub fn pool(x: &[f32], g: &Window, n: usize, y: &mut [f32], max: bool) {
    if g.ph > 0 || g.pw > 0 {
        return pool_generic(x, g, n, y, max);
    }
    if n == 1 {
        return pool_single(x, g, y, max);
    }
    if max && g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0 {
        // Whole n-float vectors per pixel; `pool_generic` is its twin (tests in lopper-kernels
        // and `batched_2x2_max_pool_matches_the_generic_loop`).
        return lopper_kernels::pool::max_pool_2x2(x, g.c, g.h, g.w, n, y);
    }
    pool_generic(x, g, n, y, max)
}

/// [`pool`] for any window and padding at batch `n`, one output pixel's `n` floats at a time:
/// each window over its taps inside the input only (a max-pool's padding is -inf in PyTorch and
/// ONNX; padding is at most half the window, so no window is empty).
fn pool_generic(x: &[f32], g: &Window, n: usize, y: &mut [f32], max: bool) {
    for c in 0..g.c {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let out = &mut y[((c * g.oh + oy) * g.ow + ox) * n..][..n];
                out.fill(if max { f32::NEG_INFINITY } else { 0.0 });
                let mut taps = 0usize;
                for ky in 0..g.kh {
                    let Some(iy) = (oy * g.sh + ky).checked_sub(g.ph).filter(|&v| v < g.h) else {
                        continue;
                    };
                    for kx in 0..g.kw {
                        let Some(ix) = (ox * g.sw + kx).checked_sub(g.pw).filter(|&v| v < g.w)
                        else {
                            continue;
                        };
                        taps += 1;
                        let src = &x[((c * g.h + iy) * g.w + ix) * n..][..n];
                        if max {
                            for (o, &v) in out.iter_mut().zip(src) {
                                *o = nan_max(*o, v);
                            }
                        } else {
                            for (o, &v) in out.iter_mut().zip(src) {
                                *o += v;
                            }
                        }
                    }
                }
                if !max {
                    let inv = 1.0 / taps.max(1) as f32;
                    out.iter_mut().for_each(|o| *o *= inv);
                }
            }
        }
    }
}

/// [`pool`] for batch 1, without the per-element slices of the batched path (batch-1 latency
/// is what users of a single image wait for). Same NaN rule.
fn pool_single(x: &[f32], g: &Window, y: &mut [f32], max: bool) {
    if max && g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 {
        return lopper_kernels::pool::max_pool_2x2_single(x, g.c, g.h, g.w, y);
    }
    let inv = 1.0 / (g.kh * g.kw) as f32;
    let mut out = y.iter_mut();
    for c in 0..g.c {
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for ky in 0..g.kh {
                    let row = &plane[(oy * g.sh + ky) * g.w + ox * g.sw..][..g.kw];
                    for &v in row {
                        acc = if !max {
                            acc + v
                        } else if v > acc || v.is_nan() {
                            v
                        } else {
                            acc
                        };
                    }
                }
                if let Some(o) = out.next() {
                    *o = if max { acc } else { acc * inv };
                }
            }
        }
    }
}

/// Mean over `H*W` per channel: `[c, hw, n]` to `[c, n]`.
pub fn global_avgpool(x: &[f32], c: usize, hw: usize, n: usize, y: &mut [f32]) {
    let inv = 1.0 / hw as f32;
    for ch in 0..c {
        let out = &mut y[ch * n..(ch + 1) * n];
        out.fill(0.0);
        for p in 0..hw {
            let src = &x[(ch * hw + p) * n..][..n];
            out.iter_mut().zip(src).for_each(|(o, &v)| *o += v);
        }
        out.iter_mut().for_each(|o| *o *= inv);
    }
}

/// Adds `bias[r]` to row `r` of `y: [rows, inner]`.
pub fn add_bias(y: &mut [f32], bias: &[f32], inner: usize) {
    for (r, &b) in bias.iter().enumerate() {
        y[r * inner..(r + 1) * inner]
            .iter_mut()
            .for_each(|v| *v += b);
    }
}

/// `y = scale[c] * x + shift[c]` per channel of `[c, inner]`.
pub fn channel_affine(x: &[f32], scale: &[f32], shift: &[f32], inner: usize, y: &mut [f32]) {
    for (c, (&s, &t)) in scale.iter().zip(shift).enumerate() {
        let r = c * inner..(c + 1) * inner;
        y[r.clone()]
            .iter_mut()
            .zip(&x[r])
            .for_each(|(o, &v)| *o = s * v + t);
    }
}

pub fn relu(x: &[f32], y: &mut [f32]) {
    // `max(0, NaN)` keeps NaN, like PyTorch, so a broken model does not look healthy.
    y.iter_mut()
        .zip(x)
        .for_each(|(o, &v)| *o = if v < 0.0 { 0.0 } else { v });
}

pub fn relu_inplace(y: &mut [f32]) {
    // A select, not a conditional store: the compiler vectorises it, and signs of activations
    // are random enough that a branch mispredicts half the time (measured 8x slower).
    y.iter_mut()
        .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
}

pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) {
    y.iter_mut()
        .zip(a.iter().zip(b))
        .for_each(|(o, (&p, &q))| *o = p + q);
}

/// Softmax over the features of each example of `[f, n]`, numerically stable.
pub fn softmax(x: &[f32], f: usize, n: usize, y: &mut [f32]) {
    for j in 0..n {
        let m = (0..f)
            .map(|i| x[i * n + j])
            .fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for i in 0..f {
            let e = ((x[i * n + j] - m) as f64).exp();
            y[i * n + j] = e as f32;
            sum += e;
        }
        for i in 0..f {
            y[i * n + j] = (y[i * n + j] as f64 / sum) as f32;
        }
    }
}

/// Side of the square tiles of [`transpose`]: a tile of rows and one of columns both stay in L1.
const TILE: usize = 32;

/// `y[c * rows + r] = x[r * cols + c]`: `x` is `[rows, cols]`, `y` is `[cols, rows]`. Tiled, so
/// that the strided side touches each cache line once per tile instead of once per element.
pub fn transpose(x: &[f32], rows: usize, cols: usize, y: &mut [f32]) {
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    y[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
}

/// `[n, f]` (examples row by row, as users hand them in) to `[f, n]`.
pub fn to_feature_major(x: &[f32], f: usize, n: usize, y: &mut [f32]) {
    if n == 1 {
        y.copy_from_slice(x);
    } else {
        transpose(x, n, f, y);
    }
}

/// `[f, n]` back to `[n, f]`.
pub fn to_example_major(x: &[f32], f: usize, n: usize, y: &mut [f32]) {
    if n == 1 {
        y.copy_from_slice(x);
    } else {
        transpose(x, f, n, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_transpose_matches_plain_transpose() {
        for (rows, cols) in [(1, 1), (3, 70), (33, 31), (64, 784), (65, 1)] {
            let x: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut y = vec![0.0; rows * cols];
            transpose(&x, rows, cols, &mut y);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(y[c * rows + r], x[r * cols + c]);
                }
            }
            let mut back = vec![0.0; rows * cols];
            to_example_major(&y, cols, rows, &mut back);
            assert_eq!(back, x);
        }
    }

    #[test]
    fn relu_keeps_nan_and_zeroes_negatives() {
        let mut v = [-1.0, 0.0, 2.0, f32::NAN, -0.0];
        relu_inplace(&mut v);
        assert_eq!(&v[..3], &[0.0, 0.0, 2.0]);
        assert!(v[3].is_nan());
    }

    #[test]
    fn im2col_of_identity_kernel_copies_input() {
        let g = Window {
            c: 2,
            h: 3,
            w: 3,
            kh: 1,
            kw: 1,
            sh: 1,
            sw: 1,
            ph: 0,
            pw: 0,
            oh: 3,
            ow: 3,
        };
        let x: Vec<f32> = (0..18 * 2).map(|v| v as f32).collect();
        let mut p = vec![0.0; 18 * 2];
        im2col(&x, &g, 2, &mut p);
        assert_eq!(p, x);
    }

    /// Plain per-element im2col, the twin of the contiguous-run path.
    fn im2col_naive(x: &[f32], g: &Window, n: usize) -> Vec<f32> {
        let cols = g.oh * g.ow * n;
        let mut p = vec![0.0; g.c * g.kh * g.kw * cols];
        for ci in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let row = (ci * g.kh + ky) * g.kw + kx;
                    for oy in 0..g.oh {
                        for ox in 0..g.ow {
                            let iy = (oy * g.sh + ky) as isize - g.ph as isize;
                            let ix = (ox * g.sw + kx) as isize - g.pw as isize;
                            for j in 0..n {
                                let inside = iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < g.h
                                    && (ix as usize) < g.w;
                                p[row * cols + (oy * g.ow + ox) * n + j] = if inside {
                                    x[((ci * g.h + iy as usize) * g.w + ix as usize) * n + j]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            }
        }
        p
    }

    #[test]
    fn im2col_matches_naive_on_a_grid() {
        for (h, w, k, s, p, n) in [
            (5, 7, 3, 1, 0, 1),
            (12, 12, 5, 1, 0, 1),
            // Batch-1 valid rows of 12, 16 and 9 outputs: the fixed-width copies and the
            // generic one.
            (20, 16, 5, 1, 0, 1),
            (14, 20, 5, 1, 0, 1),
            (16, 13, 5, 1, 0, 1),
            (5, 7, 3, 1, 1, 1),
            (5, 7, 3, 1, 0, 2),
            (6, 6, 5, 1, 2, 3),
            (7, 5, 3, 2, 1, 1),
            (4, 4, 1, 1, 0, 2),
            (3, 3, 5, 1, 3, 1),
            (8, 8, 2, 2, 0, 4),
        ] {
            let oh = (h + 2 * p - k) / s + 1;
            let ow = (w + 2 * p - k) / s + 1;
            let g = Window {
                c: 2,
                h,
                w,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                ph: p,
                pw: p,
                oh,
                ow,
            };
            let x: Vec<f32> = (0..2 * h * w * n).map(|v| v as f32 + 1.0).collect();
            let mut got = vec![f32::NAN; 2 * k * k * oh * ow * n];
            im2col(&x, &g, n, &mut got);
            assert_eq!(got, im2col_naive(&x, &g, n), "{h}x{w} k{k} s{s} p{p} n{n}");
        }
    }

    #[test]
    fn pool_batch_one_matches_batched_path() {
        let g = Window {
            c: 3,
            h: 7,
            w: 6,
            kh: 3,
            kw: 2,
            sh: 2,
            sw: 1,
            ph: 0,
            pw: 0,
            oh: 3,
            ow: 5,
        };
        let x: Vec<f32> = (0..3 * 7 * 6)
            .map(|v| ((v * 37) % 11) as f32 - 5.0)
            .collect();
        for max in [true, false] {
            let mut one = vec![0.0; 3 * 3 * 5];
            pool(&x, &g, 1, &mut one, max);
            // The same data as a batch of 2 with a copy in the second column.
            let x2: Vec<f32> = x.iter().flat_map(|&v| [v, v]).collect();
            let mut two = vec![0.0; 2 * 3 * 3 * 5];
            pool(&x2, &g, 2, &mut two, max);
            let first: Vec<f32> = two.iter().step_by(2).copied().collect();
            assert_eq!(one, first, "max = {max}");
        }
    }

    #[test]
    fn im2col_batch_one_with_row_stride_matches_naive() {
        // sh = 2, sw = 1, no padding: the contiguous-run path with a row stride.
        let g = Window {
            c: 3,
            h: 9,
            w: 7,
            kh: 3,
            kw: 2,
            sh: 2,
            sw: 1,
            ph: 0,
            pw: 0,
            oh: 4,
            ow: 6,
        };
        let x: Vec<f32> = (0..3 * 9 * 7).map(|v| v as f32 + 1.0).collect();
        let mut got = vec![f32::NAN; 3 * 6 * 24];
        im2col(&x, &g, 1, &mut got);
        assert_eq!(got, im2col_naive(&x, &g, 1));
    }

    #[test]
    fn im2col_pixel_tiles_are_column_slices_of_the_whole() {
        // Strides, paddings and batch widths on both sides of the contiguous-run path, and
        // tiles that start and end mid-row, span several rows, or hold one pixel.
        for (h, w, k, s, p, n) in [
            (6, 5, 3, 1, 1, 2),
            (7, 7, 3, 1, 1, 1),
            (7, 6, 3, 2, 1, 1),
            (8, 8, 5, 1, 2, 3),
            (5, 9, 3, 1, 0, 1),
            (6, 6, 1, 2, 0, 2),
        ] {
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let g = Window {
                c: 2,
                h,
                w,
                kh: k,
                kw: k,
                sh: s,
                sw: s,
                ph: p,
                pw: p,
                oh,
                ow,
            };
            let x: Vec<f32> = (0..2 * h * w * n).map(|v| v as f32 + 1.0).collect();
            let whole = im2col_naive(&x, &g, n);
            let pixels = oh * ow;
            let cols = pixels * n;
            let rows = 2 * k * k;
            let mut cuts = vec![(0, pixels), (0, 1), (pixels - 1, pixels), (1, pixels - 1)];
            cuts.extend([(0, ow + 1), (ow - 1, 2 * ow + 1), (2, ow)]);
            for (p0, p1) in cuts.into_iter().filter(|(a, b)| a < b && *b <= pixels) {
                let mut t = vec![f32::NAN; rows * (p1 - p0) * n];
                im2col_pixels(&x, &g, n, p0, p1, &mut t);
                for r in 0..rows {
                    assert_eq!(
                        &t[r * (p1 - p0) * n..(r + 1) * (p1 - p0) * n],
                        &whole[r * cols + p0 * n..r * cols + p1 * n],
                        "{h}x{w} k{k} s{s} p{p} n{n} pixels {p0}..{p1} row {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn im2col_pads_with_zeros() {
        let g = Window {
            c: 1,
            h: 2,
            w: 2,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            ph: 1,
            pw: 1,
            oh: 2,
            ow: 2,
        };
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut p = vec![9.0; 9 * 4];
        im2col(&x, &g, 1, &mut p);
        // Centre tap (ky = kx = 1) sees the input itself; the corner tap (0, 0) sees only x[0]
        // at output (1, 1).
        assert_eq!(&p[4 * 4..5 * 4], &x);
        assert_eq!(&p[0..4], &[0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn batched_2x2_max_pool_matches_the_generic_loop() {
        let g = Window::new(3, 7, 6, 2, 2, 2, 2, 0, 0).unwrap();
        for n in [2, 16, 19] {
            let x: Vec<f32> = (0..g.c * g.h * g.w * n)
                .map(|i| ((i * 7919) % 101) as f32 - 50.0)
                .collect();
            let mut fast = vec![0.0; g.c * g.oh * g.ow * n];
            pool(&x, &g, n, &mut fast, true);
            // The generic loop, which `pool` skips for this window.
            let mut slow = vec![0.0; fast.len()];
            pool_generic(&x, &g, n, &mut slow, true);
            assert_eq!(fast, slow, "n {n}");
        }
    }

    #[test]
    fn padded_max_pool_takes_the_taps_inside_the_input() {
        // ResNet's stem pool: 3x3, stride 2, padding 1, on a 5x5 plane, batch 1 and 3.
        for n in [1usize, 3] {
            let g = Window::new(2, 5, 5, 3, 3, 2, 2, 1, 1).expect("window");
            let x: Vec<f32> = (0..2 * 25 * n)
                .map(|i| ((i * 7) % 17) as f32 - 8.0)
                .collect();
            let mut y = vec![f32::NAN; 2 * g.oh * g.ow * n];
            pool(&x, &g, n, &mut y, true);
            assert_eq!((g.oh, g.ow), (3, 3));
            for c in 0..2 {
                for oy in 0..3usize {
                    for ox in 0..3usize {
                        for j in 0..n {
                            let mut m = f32::NEG_INFINITY;
                            for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(5) {
                                for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(5) {
                                    m = m.max(x[((c * 5 + iy) * 5 + ix) * n + j]);
                                }
                            }
                            assert_eq!(y[((c * 3 + oy) * 3 + ox) * n + j], m);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn max_pool_propagates_nan_and_softmax_sums_to_one() {
        let g = Window {
            c: 1,
            h: 2,
            w: 2,
            kh: 2,
            kw: 2,
            sh: 2,
            sw: 2,
            ph: 0,
            pw: 0,
            oh: 1,
            ow: 1,
        };
        let mut y = [0.0];
        pool(&[1.0, f32::NAN, 3.0, 2.0], &g, 1, &mut y, true);
        assert!(y[0].is_nan());
        pool(&[1.0, 5.0, 3.0, 2.0], &g, 1, &mut y, true);
        assert_eq!(y[0], 5.0);
        pool(&[1.0, 5.0, 3.0, 2.0], &g, 1, &mut y, false);
        assert_eq!(y[0], 2.75);
        let mut s = [0.0; 6];
        softmax(&[1000.0, 0.0, 1000.0, 1.0, -5.0, 2.0], 3, 2, &mut s);
        for j in 0..2 {
            let t: f32 = (0..3).map(|i| s[i * 2 + j]).sum();
            assert!((t - 1.0).abs() < 1e-6);
        }
    }
}
