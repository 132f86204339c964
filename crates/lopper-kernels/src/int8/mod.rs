//! int8 × int8 → int32 products: `Y = W · X` with int8 weights and activations quantized to u8
//! per column (token) at run time, for `vpdpbusd` (AVX-512 VNNI).
//!
//! Layouts (all row-major):
//! - `W: [out, in]` (ONNX/PyTorch order) int8 with one f32 scale per output row, packed by
//!   [`Q8Matrix`] into 16 × 4 tiles: 16 consecutive output rows × 4 consecutive inputs, 64 bytes,
//!   row-major inside the tile (`tile[r * 4 + j] = w[r0 + r, 4 g + j]`), which is exactly the
//!   signed operand of one `vpdpbusd` whose 16 lanes are the 16 rows. A row block keeps the list
//!   of its input groups `g` that hold a nonzero, so one kernel runs dense matrices (every group)
//!   and 16x4 block-sparse ones (the others). Rows and inputs are padded with zero weights to
//!   multiples of 16 and 4.
//! - `X: [in, n]` f32, quantized by [`quantize_acts`] into [`QuantActs`]: u8 `[in_pad / 4, n, 4]`
//!   (for each group of 4 inputs, every column's 4 bytes in turn, as oneDNN and MLAS interleave
//!   them), so a column's group is one 32-bit broadcast and a column tile's groups are adjacent;
//!   with a per-column scale and zero point: `x ≈ scale · (q − zero)`. The range always contains
//!   0, so zeros and padding are exact.
//! - `Y: [out, n]` f32.
//!
//! Arithmetic: each kernel forms `acc[r, c] = Σ_k w[r, k] · q[k, c]` in i32, then the exact
//! integer `acc − zero[c] · row_sum[r]` (wrapping i32 operations: the true value is bounded
//! below, so wrapping arithmetic gives it exactly), converts it to f32 once and applies
//! `· (w_scale[r] · x_scale[c]) + bias[r]` as a multiply then an add (no FMA), so every path
//! gives bit-identical results and the twin ([`reference`]) is exact.
//!
//! Bound: `in ≤ 65 536`, so `|Σ w · (q − zero)| ≤ 128 · 255 · 65 536 < 2^31`; larger inputs are
//! refused by [`Q8Matrix::new`].

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use crate::error::FormatError;
use crate::isa::Isa;

/// Output rows per tile (the lanes of one 512-bit `vpdpbusd`).
pub const ROWS: usize = 16;
/// Inputs per group (the bytes one `vpdpbusd` lane sums).
pub const GROUP: usize = 4;
/// The largest input count whose products cannot overflow i32.
pub const MAX_IN: usize = 1 << 16;

/// Activations quantized per column: `x[k, c] ≈ scale[c] · (q[at(k, c)] − zero[c])`.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantActs {
    /// Inputs (`in`).
    pub k: usize,
    /// `k` rounded up to a multiple of [`GROUP`]; entries past `k` hold the zero point.
    pub k_pad: usize,
    /// Columns (tokens, batch).
    pub n: usize,
    /// `[k_pad / 4, n, 4]`: see [`QuantActs::at`].
    pub q: Vec<u8>,
    pub scale: Vec<f32>,
    /// In `0..=255`.
    pub zero: Vec<i32>,
    /// Per-column working values of [`quantize_acts`], kept so that a layer quantizing every
    /// call allocates nothing after the first.
    scratch: Vec<f32>,
    /// Four converted rows, before interleaving.
    bytes: Vec<u8>,
}

impl QuantActs {
    /// The index of input `k` of column `c` in `q`.
    #[inline(always)]
    pub fn at(&self, k: usize, c: usize) -> usize {
        ((k / GROUP) * self.n + c) * GROUP + k % GROUP
    }

    pub fn new() -> Self {
        Self::from_parts(0, 0, Vec::new(), Vec::new(), Vec::new())
    }

    /// Activations given as bytes in [`QuantActs::at`] order, with scales and zero points.
    pub fn from_parts(k: usize, n: usize, q: Vec<u8>, scale: Vec<f32>, zero: Vec<i32>) -> Self {
        QuantActs {
            k,
            k_pad: k.div_ceil(GROUP) * GROUP,
            n,
            q,
            scale,
            zero,
            scratch: Vec::new(),
            bytes: Vec::new(),
        }
    }
}

impl Default for QuantActs {
    fn default() -> Self {
        Self::new()
    }
}

/// Quantizes `x: [k, n]` (row-major, the runtime's activation layout) per column into `out`,
/// reusing its buffers: asymmetric u8 over `[min(0, min x), max(0, max x)]`, so 0 is exact.
/// A column of zeros gets scale 1 and zero point 0. Non-finite values give a non-finite scale,
/// hence non-finite outputs, which the runtime's output checks report.
pub fn quantize_acts(x: &[f32], k: usize, n: usize, out: &mut QuantActs) {
    assert_eq!(x.len(), k * n, "quantize_acts: x is not [k, n]");
    let k_pad = k.div_ceil(GROUP) * GROUP;
    out.k = k;
    out.k_pad = k_pad;
    out.n = n;
    let mut scratch = std::mem::take(&mut out.scratch);
    scratch.clear();
    scratch.resize(2 * n, 0.0);
    let (lo, hi) = scratch.split_at_mut(n);
    for row in x.chunks_exact(n.max(1)).take(k) {
        for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
            *l = l.min(v);
            // f32::max drops a NaN operand: a non-finite value makes the column's maximum NaN
            // and keeps it so, and a NaN scale follows.
            *h = if h.is_nan() || !v.is_finite() {
                f32::NAN
            } else {
                h.max(v)
            };
        }
    }
    out.scale.clear();
    out.zero.clear();
    for (&l, &h) in lo.iter().zip(hi.iter()) {
        let span = h - l;
        if span == 0.0 {
            out.scale.push(1.0);
            out.zero.push(0);
        } else {
            let s = span / 255.0;
            out.scale.push(if h.is_nan() { f32::NAN } else { s });
            out.zero.push(((-l / s).round() as i32).clamp(0, 255));
        }
    }
    // Every byte is written below (padding included): no clearing.
    out.q.resize(n * k_pad, 0);
    // Round half up by truncation: `f32::round` is a libm call on baseline x86-64 (no SSE4.1), a
    // call per value; `as u8` saturates, so the clamp is only for clarity. Rows of `x` are read
    // contiguously and each lands in one group's `n · 4` bytes.
    for (c, (i, o)) in lo.iter_mut().zip(hi.iter_mut()).enumerate() {
        *i = 1.0 / out.scale[c];
        *o = out.zero[c] as f32 + 0.5;
    }
    let (inv, offset) = (&*lo, &*hi);
    // A group's 4 rows are converted into 4 contiguous byte rows (vectorisable), then
    // interleaved 4 bytes per column into the group's `n · 4` bytes.
    let mut rows4 = std::mem::take(&mut out.bytes);
    rows4.resize(GROUP * n, 0);
    for (g, group) in x
        .chunks(GROUP * n.max(1))
        .take(k.div_ceil(GROUP))
        .enumerate()
    {
        let live = group.len() / n.max(1);
        for (j, row) in group.chunks_exact(n.max(1)).enumerate() {
            let dst = &mut rows4[j * n..(j + 1) * n];
            for (((d, &v), &i), &o) in dst.iter_mut().zip(row).zip(inv).zip(offset) {
                *d = (v * i + o).clamp(0.0, 255.0) as u8;
            }
        }
        let dst = &mut out.q[g * n * GROUP..(g + 1) * n * GROUP];
        for (c, four) in dst.chunks_exact_mut(GROUP).enumerate() {
            for (j, b) in four.iter_mut().enumerate() {
                *b = if j < live {
                    rows4[j * n + c]
                } else {
                    out.zero[c] as u8
                };
            }
        }
    }
    out.bytes = rows4;
    // (Padding inputs, past `k` in the last group, hold the zero point: their weights are
    // zero, so any value would do.)
    out.scratch = scratch;
}

/// An int8 weight matrix packed in 16 × 4 tiles (see the module docs), with per-row scales and
/// the per-row sums of the quantized weights (for the zero-point correction).
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// Tiles of row block `b`: `tile_ptr[b]..tile_ptr[b + 1]`.
    tile_ptr: Vec<u32>,
    /// The input group of each tile.
    tile_group: Vec<u32>,
    /// 64 bytes per tile.
    data: Vec<i8>,
    scale: Vec<f32>,
    row_sum: Vec<i32>,
}

impl Q8Matrix {
    /// Packs `q: [rows, cols]` int8 (row-major, `[out, in]`) with per-row `scale`. With
    /// `keep_empty` every tile is stored (dense); without, tiles of 64 zeros are dropped.
    pub fn new(
        rows: usize,
        cols: usize,
        q: &[i8],
        scale: &[f32],
        keep_empty: bool,
    ) -> Result<Self, FormatError> {
        if q.len() != rows * cols {
            return Err(FormatError::LengthMismatch {
                what: "int8 weights",
                expected: rows * cols,
                actual: q.len(),
            });
        }
        if scale.len() != rows {
            return Err(FormatError::LengthMismatch {
                what: "scales",
                expected: rows,
                actual: scale.len(),
            });
        }
        if cols > MAX_IN {
            // i32 accumulators: see the module docs.
            return Err(FormatError::DimensionTooLarge {
                what: "int8 product inputs",
                value: cols,
                limit: MAX_IN,
            });
        }
        if let Some((row, &s)) = scale
            .iter()
            .enumerate()
            .find(|(_, s)| !s.is_finite() || **s < 0.0)
        {
            return Err(FormatError::BadScale { row, scale: s });
        }
        let groups = cols.div_ceil(GROUP);
        let mut tile_ptr = vec![0u32];
        let mut tile_group = Vec::new();
        let mut data = Vec::new();
        let mut tile = [0i8; ROWS * GROUP];
        for r0 in (0..rows).step_by(ROWS) {
            for g in 0..groups {
                let mut any = false;
                for r in 0..ROWS {
                    for j in 0..GROUP {
                        let (row, col) = (r0 + r, g * GROUP + j);
                        let v = if row < rows && col < cols {
                            q[row * cols + col]
                        } else {
                            0
                        };
                        any |= v != 0;
                        tile[r * GROUP + j] = v;
                    }
                }
                if any || keep_empty {
                    tile_group.push(g as u32);
                    data.extend_from_slice(&tile);
                }
            }
            tile_ptr.push(tile_group.len() as u32);
        }
        let row_sum = (0..rows)
            .map(|r| q[r * cols..(r + 1) * cols].iter().map(|&v| v as i32).sum())
            .collect();
        Ok(Q8Matrix {
            rows,
            cols,
            tile_ptr,
            tile_group,
            data,
            scale: scale.to_vec(),
            row_sum,
        })
    }

    /// Quantizes `w: [rows, cols]` f32 symmetrically per row (`scale = max |w| / 127`, values in
    /// −127..=127, as [`crate::format::quantize_per_row`] does) and packs it.
    pub fn quantize(
        rows: usize,
        cols: usize,
        w: &[f32],
        keep_empty: bool,
    ) -> Result<Self, FormatError> {
        if w.len() != rows * cols {
            return Err(FormatError::LengthMismatch {
                what: "weights",
                expected: rows * cols,
                actual: w.len(),
            });
        }
        let mut q = vec![0i8; rows * cols];
        let mut scale = vec![0.0f32; rows];
        for r in 0..rows {
            let row = &w[r * cols..(r + 1) * cols];
            if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                return Err(FormatError::NonFiniteWeight {
                    row: r,
                    col: c,
                    value: row[c],
                });
            }
            let m = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if m > 0.0 {
                scale[r] = m / 127.0;
                for (d, &v) in q[r * cols..(r + 1) * cols].iter_mut().zip(row) {
                    *d = (v / scale[r]).round().clamp(-127.0, 127.0) as i8;
                }
            }
        }
        Self::new(rows, cols, &q, &scale, keep_empty)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Stored tiles (of `rows.div_ceil(16) · cols.div_ceil(4)`).
    pub fn tiles(&self) -> usize {
        self.tile_group.len()
    }

    /// Bytes of the packed weights, indices, scales and row sums.
    pub fn storage_bytes(&self) -> usize {
        self.data.len() + 4 * (self.tile_ptr.len() + self.tile_group.len()) + 8 * self.rows
    }

    /// The int8 weight at `(row, col)`.
    pub fn get(&self, row: usize, col: usize) -> i8 {
        let (b, g) = (row / ROWS, (col / GROUP) as u32);
        let range = self.tile_ptr[b] as usize..self.tile_ptr[b + 1] as usize;
        match self.tile_group[range.clone()].binary_search(&g) {
            Ok(i) => self.data[(range.start + i) * 64 + (row % ROWS) * GROUP + col % GROUP],
            Err(_) => 0,
        }
    }

    pub fn scales(&self) -> &[f32] {
        &self.scale
    }
}

/// The kernel paths, from portable to widest. AVX-512 without VNNI runs the AVX2 path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Q8Path {
    /// Portable Rust, i32 accumulators.
    Scalar,
    /// AVX2: bytes widened to i16, `vpmaddwd` (exact, unlike `vpmaddubsw`, whose i16 pair sums
    /// saturate at 255 · 127 · 2).
    Avx2,
    /// AVX-512 VNNI: `vpdpbusd`, one tile per instruction.
    Avx512Vnni,
}

impl Q8Path {
    pub const ALL: [Q8Path; 3] = [Q8Path::Scalar, Q8Path::Avx2, Q8Path::Avx512Vnni];

    pub fn name(self) -> &'static str {
        match self {
            Q8Path::Scalar => "scalar",
            Q8Path::Avx2 => "avx2",
            Q8Path::Avx512Vnni => "avx512vnni",
        }
    }

    pub fn available(self) -> bool {
        match self {
            Q8Path::Scalar => true,
            Q8Path::Avx2 => Isa::Avx2.available(),
            Q8Path::Avx512Vnni => Isa::Avx512.available() && vnni_detected(),
        }
    }

    /// The path under the ISA ceiling [`Isa::selected`] (`LOPPER_ISA`): `avx512` takes VNNI
    /// where the CPU has it, `avx2` forces the widening path, `scalar` the portable one.
    pub fn selected() -> Q8Path {
        match Isa::selected() {
            Isa::Scalar => Q8Path::Scalar,
            Isa::Avx2 => Q8Path::Avx2,
            Isa::Avx512 if Q8Path::Avx512Vnni.available() => Q8Path::Avx512Vnni,
            Isa::Avx512 => Q8Path::Avx2,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn vnni_detected() -> bool {
    std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512bw")
}

#[cfg(not(target_arch = "x86_64"))]
fn vnni_detected() -> bool {
    false
}

/// `y[rows, n] = W · X (+ bias)` on the path [`Q8Path::selected`] allows, split by row blocks
/// over the current rayon pool's threads (results do not depend on the split).
pub fn matmul(w: &Q8Matrix, x: &QuantActs, bias: Option<&[f32]>, y: &mut [f32]) {
    matmul_with(Q8Path::selected(), w, x, bias, y)
}

/// As [`matmul`] on `path` (an unavailable path falls back to the scalar one).
pub fn matmul_with(path: Q8Path, w: &Q8Matrix, x: &QuantActs, bias: Option<&[f32]>, y: &mut [f32]) {
    matmul_split(path, w, x, bias, y, rayon::current_num_threads())
}

/// The kernel names of the int8 × int8 products, in the registry's grammar: dense packing or
/// 16x4 block-sparse, on each path.
pub fn kernel_name(dense: bool, path: Q8Path) -> &'static str {
    match (dense, path) {
        (true, Q8Path::Scalar) => "i8i8_spmm_dense_scalar",
        (true, Q8Path::Avx2) => "i8i8_spmm_dense_avx2",
        (true, Q8Path::Avx512Vnni) => "i8i8_spmm_dense_avx512vnni",
        (false, Q8Path::Scalar) => "i8i8_spmm_bsr16x4_scalar",
        (false, Q8Path::Avx2) => "i8i8_spmm_bsr16x4_avx2",
        (false, Q8Path::Avx512Vnni) => "i8i8_spmm_bsr16x4_avx512vnni",
    }
}

/// `(dense, path)` of a name [`kernel_name`] gives, if the path runs on this CPU.
pub fn parse_kernel_name(name: &str) -> Option<(bool, Q8Path)> {
    for dense in [true, false] {
        for path in Q8Path::ALL {
            if kernel_name(dense, path) == name && path.available() {
                return Some((dense, path));
            }
        }
    }
    None
}

/// As [`matmul_with`], with the row blocks split into at most `parts` tasks on the current rayon
/// pool (`parts = 1`: on the calling thread).
///
/// # Panics
/// If the shapes disagree (`x.k != w.cols()`, `y.len() != rows · n`, a bias not of `rows`):
/// callers size these from the same matrix.
pub fn matmul_split(
    path: Q8Path,
    w: &Q8Matrix,
    x: &QuantActs,
    bias: Option<&[f32]>,
    y: &mut [f32],
    parts: usize,
) {
    assert_eq!(
        x.k, w.cols,
        "int8 matmul: activations have {} inputs, the matrix {}",
        x.k, w.cols
    );
    assert_eq!(x.k_pad, w.cols.div_ceil(GROUP) * GROUP);
    assert_eq!(y.len(), w.rows * x.n, "int8 matmul: y is not [rows, n]");
    assert_eq!(x.q.len(), x.n * x.k_pad);
    if let Some(b) = bias {
        assert_eq!(b.len(), w.rows, "int8 matmul: bias is not [rows]");
    }
    if x.n == 0 || w.rows == 0 {
        return;
    }
    let blocks = w.rows.div_ceil(ROWS);
    let threads = parts.max(1);
    // Row blocks split evenly by stored tiles would balance sparse matrices better; equal
    // counts of blocks are what dense and 16x4 block-sparse (random blocks) need.
    let per = blocks.div_ceil(threads).max(1);
    if threads == 1 || blocks == 1 {
        run_blocks(path, w, x, bias, y, 0..blocks);
    } else {
        use rayon::prelude::*;
        y.par_chunks_mut(per * ROWS * x.n)
            .enumerate()
            .for_each(|(i, part)| {
                let start = i * per;
                run_blocks(path, w, x, bias, part, start..(start + per).min(blocks));
            });
    }
}

/// One thread's share: the row blocks `blocks`, whose rows `y` holds.
fn run_blocks(
    path: Q8Path,
    w: &Q8Matrix,
    x: &QuantActs,
    bias: Option<&[f32]>,
    y: &mut [f32],
    blocks: std::ops::Range<usize>,
) {
    #[cfg(target_arch = "x86_64")]
    if path.available() {
        match path {
            // SAFETY: the path's CPU features were detected just above; the shapes were checked
            // by `matmul_with`, and `y` holds exactly the rows of `blocks`.
            Q8Path::Avx512Vnni => return unsafe { x86_64::matmul_vnni(w, x, bias, y, blocks) },
            Q8Path::Avx2 => return unsafe { x86_64::matmul_avx2(w, x, bias, y, blocks) },
            Q8Path::Scalar => {}
        }
    }
    let _ = path;
    scalar::matmul(w, x, bias, y, blocks)
}

/// The epilogue every path applies to an exact integer product (see the module docs).
#[inline(always)]
pub(crate) fn finish(
    acc: i32,
    zero: i32,
    row_sum: i32,
    w_scale: f32,
    x_scale: f32,
    bias: f32,
) -> f32 {
    (acc.wrapping_sub(zero.wrapping_mul(row_sum)) as f32) * (w_scale * x_scale) + bias
}

/// The twin: the same quantities from the unpacked matrix in i64 (checked to fit i32), with the
/// same epilogue. Kernels must equal it bit for bit.
pub fn reference(w: &Q8Matrix, x: &QuantActs, bias: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0.0; w.rows * x.n];
    for r in 0..w.rows {
        for c in 0..x.n {
            let mut exact = 0i64;
            for k in 0..w.cols {
                exact += w.get(r, k) as i64 * (x.q[x.at(k, c)] as i64 - x.zero[c] as i64);
            }
            let exact = i32::try_from(exact).expect("bounded by MAX_IN");
            let b = bias.map_or(0.0, |b| b[r]);
            y[r * x.n + c] = (exact as f32) * (w.scale[r] * x.scale[c]) + b;
        }
    }
    y
}
