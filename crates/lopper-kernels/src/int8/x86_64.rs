//! x86-64 paths. Both walk one row block (16 rows) against a tile of columns, so each 64-byte
//! weight tile is loaded once per column tile; the epilogue ([`super::finish`]) is scalar, per
//! output, and identical to the twin's.
//!
//! - AVX-512 VNNI: one `vpdpbusd` per tile and column (u8 activations broadcast as one 32-bit
//!   group, s8 weights); [`COLS_VNNI`] columns at a time, so 8 accumulators stay in registers.
//! - AVX2: each 16-byte quarter of a tile (4 rows × 4 inputs) widened to i16 and multiplied
//!   with `vpmaddwd` against the column's 4 activations widened the same way; lanes hold pair
//!   sums, added once in the epilogue. Exact for any bytes, −128 and 255 included.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{finish, Q8Matrix, QuantActs, GROUP, ROWS};

/// Columns per VNNI tile.
const COLS_VNNI: usize = 8;
/// Columns per AVX2 tile (4 accumulators per column; 16 ymm registers in all).
const COLS_AVX2: usize = 2;

/// Column `c`'s input group `g` as one 32-bit lane (4 u8).
#[inline(always)]
fn group_u32(x: &QuantActs, c: usize, g: usize) -> i32 {
    let at = (g * x.n + c) * GROUP;
    let b: [u8; 4] = x.q[at..at + GROUP].try_into().unwrap_or([0; 4]);
    i32::from_le_bytes(b)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn store(
    w: &Q8Matrix,
    x: &QuantActs,
    bias: Option<&[f32]>,
    y: &mut [f32],
    base: usize,
    r0: usize,
    c: usize,
    acc: &[i32; ROWS],
) {
    let live = ROWS.min(w.rows - r0);
    for (r, &a) in acc.iter().enumerate().take(live) {
        let row = r0 + r;
        y[(row - base) * x.n + c] = finish(
            a,
            x.zero[c],
            w.row_sum[row],
            w.scale[row],
            x.scale[c],
            bias.map_or(0.0, |b| b[row]),
        );
    }
}

/// # Safety
/// The CPU must have AVX-512F, AVX-512BW and AVX-512 VNNI; shapes as checked by `matmul_with`;
/// `y` holds the rows of `blocks`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn matmul_vnni(
    w: &Q8Matrix,
    x: &QuantActs,
    bias: Option<&[f32]>,
    y: &mut [f32],
    blocks: Range<usize>,
) {
    let n = x.n;
    let base = blocks.start * ROWS;
    for b in blocks {
        let r0 = b * ROWS;
        let tiles = w.tile_ptr[b] as usize..w.tile_ptr[b + 1] as usize;
        if n == 1 {
            // One column: four accumulators over consecutive tiles, so the `vpdpbusd` latency
            // chain is split four ways (one accumulator ran at a quarter of the throughput).
            let mut acc = [_mm512_setzero_si512(); 4];
            let mut t = tiles.start;
            while t + 4 <= tiles.end {
                for (u, a) in acc.iter_mut().enumerate() {
                    let g = w.tile_group[t + u] as usize;
                    // SAFETY: tile t + u's 64 bytes lie inside `data` (validated on packing).
                    let wt =
                        unsafe { _mm512_loadu_si512(w.data.as_ptr().add((t + u) * 64).cast()) };
                    *a = _mm512_dpbusd_epi32(*a, _mm512_set1_epi32(group_u32(x, 0, g)), wt);
                }
                t += 4;
            }
            for tt in t..tiles.end {
                let g = w.tile_group[tt] as usize;
                // SAFETY: as above.
                let wt = unsafe { _mm512_loadu_si512(w.data.as_ptr().add(tt * 64).cast()) };
                acc[0] = _mm512_dpbusd_epi32(acc[0], _mm512_set1_epi32(group_u32(x, 0, g)), wt);
            }
            let sum = _mm512_add_epi32(
                _mm512_add_epi32(acc[0], acc[1]),
                _mm512_add_epi32(acc[2], acc[3]),
            );
            let mut lanes = [0i32; ROWS];
            // SAFETY: `lanes` holds 16 i32.
            unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), sum) };
            store(w, x, bias, y, base, r0, 0, &lanes);
            continue;
        }
        let mut c0 = 0;
        while c0 < n {
            let nc = COLS_VNNI.min(n - c0);
            // A const tile width keeps the accumulators in registers (a run-time count over an
            // array spilled them to memory on every tile: 3x slower at batch 64).
            // SAFETY: this function's features; `c0 + nc <= n`.
            let lanes: [[i32; ROWS]; COLS_VNNI] = unsafe {
                match nc {
                    8 => pad(vnni_tile::<8>(w, x, tiles.clone(), c0)),
                    7 => pad(vnni_tile::<7>(w, x, tiles.clone(), c0)),
                    6 => pad(vnni_tile::<6>(w, x, tiles.clone(), c0)),
                    5 => pad(vnni_tile::<5>(w, x, tiles.clone(), c0)),
                    4 => pad(vnni_tile::<4>(w, x, tiles.clone(), c0)),
                    3 => pad(vnni_tile::<3>(w, x, tiles.clone(), c0)),
                    2 => pad(vnni_tile::<2>(w, x, tiles.clone(), c0)),
                    _ => pad(vnni_tile::<1>(w, x, tiles.clone(), c0)),
                }
            };
            for (j, l) in lanes.iter().enumerate().take(nc) {
                store(w, x, bias, y, base, r0, c0 + j, l);
            }
            c0 += nc;
        }
    }
}

/// `NC` columns from `c0` against the tiles of one row block: per tile one weight load and `NC`
/// broadcasts and `vpdpbusd`s; the sums of each column's 16 rows.
///
/// # Safety
/// AVX-512F/BW/VNNI; `c0 + NC <= x.n`; `tiles` within the matrix.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn vnni_tile<const NC: usize>(
    w: &Q8Matrix,
    x: &QuantActs,
    tiles: Range<usize>,
    c0: usize,
) -> [[i32; ROWS]; NC] {
    let mut acc = [_mm512_setzero_si512(); NC];
    let stride = x.n * GROUP;
    assert!(
        (c0 + NC) * GROUP <= stride && x.q.len() == stride * (x.k_pad / GROUP),
        "int8 tile outside the activations"
    );
    let q = x.q.as_ptr();
    for t in tiles {
        let g = w.tile_group[t] as usize;
        assert!(g < x.k_pad / GROUP, "tile group outside the activations");
        // SAFETY: tile t's 64 bytes lie inside `data` (validated on packing).
        let wt = unsafe { _mm512_loadu_si512(w.data.as_ptr().add(t * 64).cast()) };
        // SAFETY: group g < k_pad / 4 and columns c0..c0 + NC < n (asserted above), so the
        // NC 4-byte groups at (g · n + c0) · 4 lie inside `q`.
        let col = unsafe { q.add(g * stride + c0 * GROUP) };
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: as above; unaligned 4-byte read.
            let v = unsafe { col.add(j * GROUP).cast::<i32>().read_unaligned() };
            *a = _mm512_dpbusd_epi32(*a, _mm512_set1_epi32(v), wt);
        }
    }
    let mut out = [[0i32; ROWS]; NC];
    for (o, a) in out.iter_mut().zip(&acc) {
        // SAFETY: `o` holds 16 i32.
        unsafe { _mm512_storeu_si512(o.as_mut_ptr().cast(), *a) };
    }
    out
}

/// Widens a tile's column sums to the full column-tile array (unused columns zero).
fn pad<const NC: usize>(v: [[i32; ROWS]; NC]) -> [[i32; ROWS]; COLS_VNNI] {
    let mut out = [[0i32; ROWS]; COLS_VNNI];
    out[..NC].copy_from_slice(&v);
    out
}

/// # Safety
/// The CPU must have AVX2; shapes as checked by `matmul_with`; `y` holds the rows of `blocks`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn matmul_avx2(
    w: &Q8Matrix,
    x: &QuantActs,
    bias: Option<&[f32]>,
    y: &mut [f32],
    blocks: Range<usize>,
) {
    let n = x.n;
    let base = blocks.start * ROWS;
    for b in blocks {
        let r0 = b * ROWS;
        let tiles = w.tile_ptr[b] as usize..w.tile_ptr[b + 1] as usize;
        let mut c0 = 0;
        while c0 < n {
            let nc = COLS_AVX2.min(n - c0);
            // acc[j][q]: column j, rows 4q..4q+4, two pair sums per row.
            let mut acc = [[_mm256_setzero_si256(); 4]; COLS_AVX2];
            for t in tiles.clone() {
                let g = w.tile_group[t] as usize;
                let base = w.data.as_ptr().wrapping_add(t * 64);
                // SAFETY: tile t's 64 bytes lie inside `data`.
                let wq: [__m256i; 4] = std::array::from_fn(|q| unsafe {
                    _mm256_cvtepi8_epi16(_mm_loadu_si128(base.add(16 * q).cast()))
                });
                for (j, a) in acc.iter_mut().enumerate().take(nc) {
                    let bytes = group_u32(x, c0 + j, g) as u32;
                    // The 4 activations as i16, repeated for the 4 rows of a quarter.
                    let x16 = _mm_cvtepu8_epi16(_mm_cvtsi32_si128(bytes as i32));
                    let xv = _mm256_broadcastq_epi64(x16);
                    for q in 0..4 {
                        a[q] = _mm256_add_epi32(a[q], _mm256_madd_epi16(wq[q], xv));
                    }
                }
            }
            for (j, a) in acc.iter().enumerate().take(nc) {
                let mut lanes = [0i32; ROWS];
                for (q, v) in a.iter().enumerate() {
                    let mut pairs = [0i32; 8];
                    // SAFETY: `pairs` holds 8 i32.
                    unsafe { _mm256_storeu_si256(pairs.as_mut_ptr().cast(), *v) };
                    for r in 0..4 {
                        lanes[4 * q + r] = pairs[2 * r].wrapping_add(pairs[2 * r + 1]);
                    }
                }
                store(w, x, bias, y, base, r0, c0 + j, &lanes);
            }
            c0 += nc;
        }
    }
}
