//! One weight layer as the runtime multiplies it: [`Matmul`] (a weight in its planned format,
//! its kernel, its row split over the shared pool, its bias) and [`conv`], a convolution run
//! directly or as im2col tiles through it. The executor and the planner's per-layer timing both
//! run layers through these, so what is timed is what runs.
//!
//! Layout as in [`super::ops`]: `X: [in, n]`, `Y: [out, n]`, batch innermost.

use std::sync::Arc;

use std::sync::Mutex;

use lopper_kernels::conv::ConvKernel;
use lopper_kernels::int8::{self, Q8Matrix, Q8Path, QuantActs};
use lopper_kernels::{execute, registry, FormatKind, Kernel, Partition, WeightMatrix};

use super::ops::{self, Window};
use crate::error::ModelError;

/// How a weight layer multiplies: a registry kernel (linear layers, and convolutions through
/// im2col tiles), a direct-convolution kernel, or an int8 × int8 product (activations quantized
/// per column on the way in; only for weights whose spec allows it, `int8_acts`), which like a
/// registry kernel also runs im2col tiles.
#[derive(Clone, Copy)]
pub(crate) enum MmKernel {
    Gemm(&'static Kernel),
    Direct(&'static ConvKernel),
    /// `dense`: every 16 × 4 tile stored; else only the tiles holding a nonzero.
    Q8 {
        dense: bool,
        path: Q8Path,
    },
}

impl MmKernel {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            MmKernel::Gemm(k) => k.name,
            MmKernel::Direct(k) => k.name,
            MmKernel::Q8 { dense, path } => int8::kernel_name(*dense, *path),
        }
    }

    /// Looks a plan's kernel name up in both registries and the int8 × int8 names.
    pub(crate) fn by_name(name: &str) -> Option<Self> {
        registry::by_name(name)
            .map(MmKernel::Gemm)
            .or_else(|| lopper_kernels::conv::by_name(name).map(MmKernel::Direct))
            .or_else(|| {
                int8::parse_kernel_name(name).map(|(dense, path)| MmKernel::Q8 { dense, path })
            })
    }

    /// The storage an int8 × int8 product is planned under: `dense` or `bsr16x4`, int8.
    pub(crate) fn q8_format(dense: bool) -> FormatKind {
        if dense {
            FormatKind::Dense
        } else {
            FormatKind::Bsr { br: 16, bc: 4 }
        }
    }
}

/// An int8 × int8 layer's packed weights and its activation buffer (reused across calls; a
/// mutex because layers are shared by reference with the pool's threads, uncontended).
struct Q8Layer {
    w: Q8Matrix,
    path: Q8Path,
    acts: Mutex<QuantActs>,
}

pub(crate) struct Matmul {
    pub(crate) node: String,
    pub(crate) w: WeightMatrix,
    pub(crate) kernel: MmKernel,
    part: Partition,
    /// The shared pool, when this layer splits its rows over more than one thread.
    pool: Option<Arc<rayon::ThreadPool>>,
    bias: Option<Vec<f32>>,
    pub(crate) n: usize,
    q8: Option<Q8Layer>,
}

impl Matmul {
    /// A layer split into `parts` row ranges (one per thread of the shared pool).
    pub(crate) fn new(
        node: &str,
        w: WeightMatrix,
        kernel: MmKernel,
        parts: usize,
        bias: Option<Vec<f32>>,
        n: usize,
    ) -> Result<Self, ModelError> {
        let part = Partition::balanced(&w, parts);
        let q8 = match kernel {
            MmKernel::Q8 { dense, path } => {
                // Quantized from the f32 view: for weights stored int8 with per-row scales this
                // gives back the same integers and scales (each row's largest |q| is 127).
                let d = w.to_dense();
                let packed =
                    Q8Matrix::quantize(w.rows(), w.cols(), d.data(), dense).map_err(|source| {
                        ModelError::Weight {
                            name: node.to_string(),
                            source,
                        }
                    })?;
                Some(Q8Layer {
                    w: packed,
                    path,
                    acts: Mutex::new(QuantActs::new()),
                })
            }
            _ => None,
        };
        let pool = if part.len() > 1 {
            Some(super::pools::shared_pool(parts)?)
        } else {
            None
        };
        Ok(Self {
            node: node.to_string(),
            w,
            kernel,
            part,
            pool,
            bias,
            n,
            q8,
        })
    }

    /// Runs `f` in the shared pool when this layer is split, on this thread otherwise.
    fn threaded<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    pub(crate) fn run(&self, x: &[f32], y: &mut [f32]) -> Result<(), ModelError> {
        self.run_width(x, self.n, y)
    }

    pub(crate) fn run_width(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<(), ModelError> {
        if let Some(q) = &self.q8 {
            let mut acts = q.acts.lock().unwrap_or_else(|e| e.into_inner());
            let (k, rows) = (q.w.cols(), q.w.rows());
            if x.len() != k * n || y.len() < rows * n {
                return Err(ModelError::Plan(format!(
                    "node '{}': int8 product given {} inputs for width {n}",
                    self.node,
                    x.len()
                )));
            }
            int8::quantize_acts(x, k, n, &mut acts);
            let parts = self.part.len();
            let bias = self.bias.as_deref();
            self.threaded(|| {
                int8::matmul_split(q.path, &q.w, &acts, bias, &mut y[..rows * n], parts)
            });
            return Ok(());
        }
        let MmKernel::Gemm(kernel) = self.kernel else {
            return Err(ModelError::Plan(format!(
                "node '{}': {} is a convolution kernel",
                self.node,
                self.kernel.name()
            )));
        };
        self.threaded(|| execute(kernel, &self.w, x, n, y, &self.part))
            .map_err(|source| ModelError::Kernel {
                node: self.node.clone(),
                source,
            })?;
        if let Some(b) = &self.bias {
            ops::add_bias(y, b, n);
        }
        Ok(())
    }
}

/// Scratch lengths a convolution needs: im2col patches and one tile's output (zero when the
/// layer runs without them).
pub(crate) fn conv_scratch(mm: &Matmul, g: &Window, batch: usize) -> (usize, usize) {
    let whole = mm.n == g.oh * g.ow * batch;
    match mm.kernel {
        MmKernel::Direct(_) => (0, 0),
        MmKernel::Gemm(_) | MmKernel::Q8 { .. } if is_pointwise(g) && whole => (0, 0),
        MmKernel::Gemm(_) | MmKernel::Q8 { .. } => (
            mm.w.cols() * mm.n,
            if whole { 0 } else { mm.w.rows() * mm.n },
        ),
    }
}

/// A 1x1, stride-1, unpadded convolution: its input already is its patch matrix.
fn is_pointwise(g: &Window) -> bool {
    g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0
}

/// A convolution into `y: [Cout, OH*OW*batch]`: directly, or as im2col tiles of `mm.n` columns
/// (whole output pixels), each multiplied by the weights and copied into its columns of `y`.
/// One tile covering the whole plane writes `y` directly.
pub(crate) fn conv(
    mm: &Matmul,
    g: &Window,
    x: &[f32],
    y: &mut [f32],
    batch: usize,
    scratch: &mut [f32],
    tile_out: &mut [f32],
) -> Result<(), ModelError> {
    let pixels = g.oh * g.ow;
    let total = pixels * batch;
    if let MmKernel::Direct(k) = mm.kernel {
        mm.threaded(|| lopper_kernels::conv::execute(k, &mm.w, g, x, batch, y, mm.part.ranges()))
            .map_err(|source| ModelError::Kernel {
                node: mm.node.clone(),
                source,
            })?;
        if let Some(b) = &mm.bias {
            ops::add_bias(y, b, total);
        }
        return Ok(());
    }
    if mm.n == total && is_pointwise(g) {
        return mm.run(x, y);
    }
    let k = mm.w.cols();
    if mm.n == total {
        let p = &mut scratch[..k * total];
        ops::im2col(x, g, batch, p);
        return mm.run(p, y);
    }
    let per_tile = (mm.n / batch).max(1);
    for p0 in (0..pixels).step_by(per_tile) {
        let p1 = (p0 + per_tile).min(pixels);
        let width = (p1 - p0) * batch;
        let patches = &mut scratch[..k * width];
        ops::im2col_pixels(x, g, batch, p0, p1, patches);
        let t = &mut tile_out[..mm.w.rows() * width];
        mm.run_width(patches, width, t)?;
        for (r, row) in t.chunks_exact(width).enumerate() {
            y[r * total + p0 * batch..][..width].copy_from_slice(row);
        }
    }
    Ok(())
}
