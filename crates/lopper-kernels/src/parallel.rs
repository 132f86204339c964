//! Multithreaded execution: output rows are split into contiguous ranges of equal work (stored
//! entries, plus one per row for its fixed cost), aligned to the matrix's row granularity.
//!
//! Each output row is computed by exactly one thread, in the same order as single-threaded
//! code, so results are bit-identical for any thread count. Ranges run on the current rayon
//! pool; install a pool with the wanted thread count around the call.

use std::ops::Range;

use crate::error::KernelError;
use crate::format::WeightMatrix;
use crate::kernels::Kernel;

/// Contiguous row ranges covering `0..rows`, one per worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    ranges: Vec<Range<usize>>,
}

impl Partition {
    /// Splits `w`'s rows into at most `parts` ranges of about equal work.
    pub fn balanced(w: &WeightMatrix, parts: usize) -> Self {
        Self::from_costs(&w.row_costs(), w.row_granularity(), parts)
    }

    /// Splits rows with the given per-row costs into at most `parts` ranges whose boundaries are
    /// multiples of `granularity` (except the end).
    pub fn from_costs(costs: &[usize], granularity: usize, parts: usize) -> Self {
        let rows = costs.len();
        let g = granularity.max(1);
        let parts = parts.max(1);
        let total: usize = costs.iter().map(|c| c + 1).sum();
        let mut ranges = Vec::with_capacity(parts);
        let (mut start, mut acc) = (0usize, 0usize);
        let mut r = 0;
        while r < rows {
            let end = (r + g).min(rows);
            acc += costs[r..end].iter().map(|c| c + 1).sum::<usize>();
            r = end;
            let goal = total * (ranges.len() + 1) / parts;
            if acc >= goal && ranges.len() + 1 < parts && r < rows {
                ranges.push(start..r);
                start = r;
            }
        }
        if start < rows || ranges.is_empty() {
            ranges.push(start..rows);
        }
        Self { ranges }
    }

    pub fn ranges(&self) -> &[Range<usize>] {
        &self.ranges
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// Computes `Y = W · X` with `kernel`, one rayon task per range of `partition`.
/// `y` is the whole `[rows, n]` output.
pub fn execute(
    kernel: &Kernel,
    w: &WeightMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    partition: &Partition,
) -> Result<(), KernelError> {
    kernel.check(w, x, n, y, &(0..w.rows()))?;
    check_split(partition.ranges(), w.rows(), w.row_granularity())?;
    for_each_split(partition.ranges(), y, n, |range, chunk| {
        // SAFETY: `check` passed for all rows; `check_split` verified that each range is an
        // aligned sub-range of them, and `chunk` is exactly its rows of `y`.
        unsafe { kernel.run_unchecked(w, x, n, chunk, range) }
    });
    Ok(())
}

/// Checks that `ranges` cover `0..rows` in order, each starting on a multiple of `granularity`.
pub(crate) fn check_split(
    ranges: &[Range<usize>],
    rows: usize,
    granularity: usize,
) -> Result<(), KernelError> {
    let covers = ranges.first().map(|r| r.start) == Some(0)
        && ranges.last().map(|r| r.end) == Some(rows)
        && ranges.windows(2).all(|p| p[0].end == p[1].start)
        && ranges
            .iter()
            .all(|r| r.start.is_multiple_of(granularity.max(1)));
    if covers {
        return Ok(());
    }
    let r = ranges.first().cloned().unwrap_or(0..0);
    Err(KernelError::BadRowRange {
        start: r.start,
        end: r.end,
        rows,
        granularity,
    })
}

/// Cuts `y` into the rows of each range (`row_len` floats a row) and runs `f` on each: the
/// first on this thread, the others as tasks on the current rayon pool. One range runs inline.
pub(crate) fn for_each_split(
    ranges: &[Range<usize>],
    y: &mut [f32],
    row_len: usize,
    f: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    if let [only] = ranges {
        return f(only.clone(), y);
    }
    let mut chunks = Vec::with_capacity(ranges.len());
    let mut rest = y;
    for r in ranges {
        let (head, tail) = rest.split_at_mut(r.len() * row_len);
        chunks.push((r.clone(), head));
        rest = tail;
    }
    let f = &f;
    rayon::scope(|s| {
        let mut iter = chunks.into_iter();
        let first = iter.next();
        for (range, chunk) in iter {
            s.spawn(move |_| f(range, chunk));
        }
        if let Some((range, chunk)) = first {
            f(range, chunk);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_covers_and_balances() {
        let costs = vec![10, 0, 0, 10, 10, 0, 0, 10];
        let p = Partition::from_costs(&costs, 1, 2);
        assert_eq!(p.ranges(), &[0..4, 4..8]);
    }

    #[test]
    fn partition_respects_granularity() {
        let p = Partition::from_costs(&[1; 10], 4, 3);
        assert!(p.ranges().iter().all(|r| r.start % 4 == 0));
        assert_eq!(p.ranges().last().unwrap().end, 10);
    }

    #[test]
    fn partition_of_empty_matrix_is_one_empty_range() {
        let p = Partition::from_costs(&[], 1, 4);
        assert_eq!(p.len(), 1);
        assert!(p.ranges()[0].is_empty());
    }
}
