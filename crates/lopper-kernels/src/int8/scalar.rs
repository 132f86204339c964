//! The portable path: the packed tiles walked in plain Rust with i32 accumulators, one row
//! block and one column at a time.

use std::ops::Range;

use super::{finish, Q8Matrix, QuantActs, GROUP, ROWS};

/// `y` holds the rows of `blocks`.
pub(super) fn matmul(
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
        let live = ROWS.min(w.rows - r0);
        for c in 0..n {
            let mut acc = [0i32; ROWS];
            for t in tiles.clone() {
                let at = x.at(w.tile_group[t] as usize * GROUP, c);
                let xg = &x.q[at..at + GROUP];
                let tile = &w.data[t * ROWS * GROUP..(t + 1) * ROWS * GROUP];
                for (r, a) in acc.iter_mut().enumerate() {
                    for (j, &xv) in xg.iter().enumerate() {
                        *a = a.wrapping_add(tile[r * GROUP + j] as i32 * xv as i32);
                    }
                }
            }
            for (r, &a) in acc.iter().enumerate().take(live) {
                let row = r0 + r;
                y[(row - base) * n + c] = finish(
                    a,
                    x.zero[c],
                    w.row_sum[row],
                    w.scale[row],
                    x.scale[c],
                    bias.map_or(0.0, |b| b[row]),
                );
            }
        }
    }
}
