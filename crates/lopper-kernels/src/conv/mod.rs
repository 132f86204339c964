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
use crate::format::WeightMatrix;
use crate::isa::Isa;
use crate::reference::Reference;

mod body;
mod shift;

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
/// each loaded run of `X`; both with f32 or int8 values. `shift` kernels (CSR, and BSR 4x1)
/// run only batch-1, unit-stride convolutions (see [`ConvKernel::supports`]), through
/// column-shifted input rows.
pub static CONV_KERNELS: &[ConvKernel] = &[
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_shift_bsr4x1_avx512",
        isa: Isa::Avx512,
        imp: shift::x86::shift_b41_avx512,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_shift_bsr4x1_avx2",
        isa: Isa::Avx2,
        imp: shift::x86::shift_b41_avx2,
    },
    ConvKernel {
        name: "conv_shift_bsr4x1_scalar",
        isa: Isa::Scalar,
        imp: shift::shift_b41_scalar,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_shift_csr_avx512",
        isa: Isa::Avx512,
        imp: shift::x86::shift_avx512,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_shift_csr_avx2",
        isa: Isa::Avx2,
        imp: shift::x86::shift_avx2,
    },
    ConvKernel {
        name: "conv_shift_csr_scalar",
        isa: Isa::Scalar,
        imp: shift::shift_scalar,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_direct_bsr4x1_avx512",
        isa: Isa::Avx512,
        imp: body::x86::direct_b41_avx512,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_direct_bsr4x1_avx2",
        isa: Isa::Avx2,
        imp: body::x86::direct_b41_avx2,
    },
    ConvKernel {
        name: "conv_direct_bsr4x1_scalar",
        isa: Isa::Scalar,
        imp: body::direct_b41_scalar,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_direct_csr_avx512",
        isa: Isa::Avx512,
        imp: body::x86::direct_avx512,
    },
    #[cfg(target_arch = "x86_64")]
    ConvKernel {
        name: "conv_direct_csr_avx2",
        isa: Isa::Avx2,
        imp: body::x86::direct_avx2,
    },
    ConvKernel {
        name: "conv_direct_csr_scalar",
        isa: Isa::Scalar,
        imp: body::direct_scalar,
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

    /// Whether this kernel computes convolutions of geometry `g` at batch `n` (the shifted-row
    /// kernels: batch 1, unit strides; the others: any).
    pub fn supports(&self, g: &ConvGeom, n: usize) -> bool {
        !self.name.contains("_shift_") || shift::supports(g, n)
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
        if !self.supports(g, n) {
            return Err(KernelError::Unsupported {
                kernel: self.name,
                reason: "shifted rows need batch 1, unit strides and a shifted input under 64 MiB",
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
