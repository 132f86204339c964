//! CSR with 8-bit relative column indices, a storage-only encoding (the runtime decodes it to
//! CSR at load): the "relative index with filler zeros" of Deep Compression (Han et al. 2016).
//!
//! Each stored entry keeps `delta = col - prev - 1` in one byte, `prev` being the previous
//! stored column of the row (-1 at the row start). A gap wider than 255 is bridged by filler
//! entries with value zero at `prev + 256`; fillers are dropped on decoding (as is any other
//! stored zero: the runtime keeps the nonzeros). At the sparsities pruning reaches, gaps over 255
//! are rare, so an entry costs 1 byte of index instead of 2 (CSR u16) or 4 (u32).

use crate::error::ModelError;

/// The delta form of one CSR matrix: row pointers over stored entries (fillers included), the
/// deltas, and for each stored entry the index of its source entry (`None` for a filler).
pub struct Encoded {
    pub row_ptr: Vec<u32>,
    pub deltas: Vec<u8>,
    pub source: Vec<Option<usize>>,
}

/// Encodes the column structure of a CSR matrix given its row pointers and column indices.
pub fn encode(row_ptr: &[u32], col_idx: impl Fn(usize) -> usize) -> Encoded {
    let rows = row_ptr.len().saturating_sub(1);
    let mut out = Encoded {
        row_ptr: Vec::with_capacity(rows + 1),
        deltas: Vec::new(),
        source: Vec::new(),
    };
    out.row_ptr.push(0);
    for r in 0..rows {
        let mut prev: isize = -1;
        for k in row_ptr[r] as usize..row_ptr[r + 1] as usize {
            let col = col_idx(k) as isize;
            while col - prev - 1 > 255 {
                prev += 256;
                out.deltas.push(255);
                out.source.push(None);
            }
            out.deltas.push((col - prev - 1) as u8);
            out.source.push(Some(k));
            prev = col;
        }
        out.row_ptr.push(out.deltas.len() as u32);
    }
    out
}

/// Stored entries (fillers included) the delta form of this structure needs.
pub fn stored_len(row_ptr: &[u32], col_idx: impl Fn(usize) -> usize) -> usize {
    let rows = row_ptr.len().saturating_sub(1);
    let mut n = 0;
    for r in 0..rows {
        let mut prev: isize = -1;
        for k in row_ptr[r] as usize..row_ptr[r + 1] as usize {
            let col = col_idx(k) as isize;
            n += 1 + ((col - prev - 1) / 256) as usize;
            prev = col;
        }
    }
    n
}

/// Decodes deltas into `(row, col, stored index)` of every stored entry, checking the row
/// pointers and that every column stays inside the matrix. Calls `keep` for each entry.
pub fn decode(
    name: &str,
    rows: usize,
    cols: usize,
    row_ptr: &[u32],
    deltas: &[u8],
    mut keep: impl FnMut(usize, usize, usize),
) -> Result<(), ModelError> {
    let bad = |m: String| ModelError::tensor(&format!("{name}.row_ptr"), m);
    if row_ptr.len() != rows + 1 || row_ptr[0] != 0 {
        return Err(bad("must have rows + 1 entries starting at 0".into()));
    }
    if row_ptr[rows] as usize != deltas.len() {
        return Err(bad(format!(
            "ends at {} but there are {} stored entries",
            row_ptr[rows],
            deltas.len()
        )));
    }
    for r in 0..rows {
        let (a, b) = (row_ptr[r] as usize, row_ptr[r + 1] as usize);
        if a > b {
            return Err(bad(format!("decreases at row {r}")));
        }
        let mut prev: i64 = -1;
        for (k, &d) in deltas.iter().enumerate().take(b).skip(a) {
            let col = prev + 1 + d as i64;
            if col as usize >= cols {
                return Err(ModelError::tensor(
                    &format!("{name}.col_delta"),
                    format!("row {r}: column {col} is out of range (matrix has {cols} columns)"),
                ));
            }
            keep(r, col as usize, k);
            prev = col;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_fillers() {
        // Row 0: columns 0, 300 (gap 299 needs one filler), 1000 (gap 699 needs two).
        // Row 1: empty. Row 2: column 255 (delta 255, no filler), 256.
        let row_ptr = [0u32, 3, 3, 5];
        let cols = [0usize, 300, 1000, 255, 256];
        let e = encode(&row_ptr, |k| cols[k]);
        assert_eq!(e.deltas.len(), stored_len(&row_ptr, |k| cols[k]));
        assert_eq!(e.deltas.len(), 5 + 3);
        let mut seen = Vec::new();
        decode("w", 3, 1001, &e.row_ptr, &e.deltas, |r, c, k| {
            if let Some(src) = e.source[k] {
                seen.push((r, c, src));
            }
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, 0, 0),
                (0, 300, 1),
                (0, 1000, 2),
                (2, 255, 3),
                (2, 256, 4)
            ]
        );
    }

    #[test]
    fn decode_rejects_columns_past_the_end_and_bad_pointers() {
        assert!(decode("w", 1, 10, &[0, 2], &[5, 5], |_, _, _| {}).is_err());
        assert!(decode("w", 1, 10, &[0, 3], &[1, 1], |_, _, _| {}).is_err());
        assert!(decode("w", 2, 10, &[0, 2, 1], &[1, 1], |_, _, _| {}).is_err());
        assert!(decode("w", 1, 10, &[1, 2], &[1, 1], |_, _, _| {}).is_err());
    }
}
