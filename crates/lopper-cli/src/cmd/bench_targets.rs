//! The kernel targets of the project, checked against the records of one benchmark run.
//!
//! Each line names the condition, the measured ratio (medians from the same run) and the goal.
//! Nothing here asserts: the figures are reported, and a miss is printed as a miss.

use std::fmt::Write;

use super::bench_kernels::Record;

struct Target {
    label: &'static str,
    goal: f64,
    measure: fn(&[Record], (usize, usize)) -> Option<f64>,
}

/// The condition of one record: format, dtype, batch, density, threads, regime.
type Cond<'a> = (&'a str, &'a str, usize, f64, usize, &'a str);

fn find<'a>(rs: &'a [Record], (rows, cols): (usize, usize), cond: Cond<'_>) -> Option<&'a Record> {
    let (format, dtype, batch, density, threads, regime) = cond;
    rs.iter().find(|r| {
        r.rows == rows
            && r.cols == cols
            && r.format == format
            && r.dtype == dtype
            && r.batch == batch
            && (r.density - density).abs() < 1e-9
            && r.threads == threads
            && r.regime == regime
    })
}

const TARGETS: [Target; 8] = [
    Target {
        label: "CSR f32, d=0.1, batch 1, cold, 1 thread: speedup",
        goal: 5.5,
        measure: |rs, s| find(rs, s, ("csr16", "f32", 1, 0.1, 1, "cold")).map(|r| r.speedup),
    },
    Target {
        label: "BSR 1x8 f32, d=0.1, batch 1, cold, 1 thread: speedup",
        goal: 7.0,
        measure: |rs, s| find(rs, s, ("bsr1x8", "f32", 1, 0.1, 1, "cold")).map(|r| r.speedup),
    },
    Target {
        label: "CSR f32, d=0.1, batch 1, hot, 1 thread: speedup",
        goal: 3.0,
        measure: |rs, s| find(rs, s, ("csr16", "f32", 1, 0.1, 1, "hot")).map(|r| r.speedup),
    },
    Target {
        label: "CSR f32, d=0.1, batch 64, cold, 1 thread: speedup",
        goal: 4.0,
        measure: |rs, s| find(rs, s, ("csr16", "f32", 64, 0.1, 1, "cold")).map(|r| r.speedup),
    },
    Target {
        label: "BSR 4x1 f32, d=0.1, batch 64, cold, 1 thread: speedup",
        goal: 7.0,
        measure: |rs, s| find(rs, s, ("bsr4x1", "f32", 64, 0.1, 1, "cold")).map(|r| r.speedup),
    },
    Target {
        label: "CSR int8 vs CSR f32, d=0.1, batch 1, cold, 1 thread: time ratio",
        goal: 1.6,
        measure: |rs, s| {
            let f = find(rs, s, ("csr16", "f32", 1, 0.1, 1, "cold"))?;
            let q = find(rs, s, ("csr16", "i8", 1, 0.1, 1, "cold"))?;
            Some(f.sparse_ns / q.sparse_ns)
        },
    },
    Target {
        label: "CSR f32, d=0.5, batch 1, cold, 1 thread: speedup (break-even)",
        goal: 1.0,
        measure: |rs, s| find(rs, s, ("csr16", "f32", 1, 0.5, 1, "cold")).map(|r| r.speedup),
    },
    Target {
        label: "CSR f32, d=0.1, batch 64, cold: 2 threads over 1",
        goal: 1.6,
        measure: |rs, s| {
            let one = find(rs, s, ("csr16", "f32", 64, 0.1, 1, "cold"))?;
            let two = find(rs, s, ("csr16", "f32", 64, 0.1, 2, "cold"))?;
            Some(one.sparse_ns / two.sparse_ns)
        },
    },
];

/// A table of every target on the BERT FFN shapes; conditions absent from the run are skipped.
pub fn summary(records: &[Record]) -> String {
    let mut s = String::from("\nTargets (BERT FFN shapes, medians from this run):\n");
    for t in &TARGETS {
        for shape in [(3072, 768), (768, 3072)] {
            if let Some(v) = (t.measure)(records, shape) {
                let verdict = if v >= t.goal { "met" } else { "MISSED" };
                let _ = writeln!(
                    s,
                    "  {:<66} {:>4}x{:<4} {:>7.3}x  goal >= {:.1}x  {verdict}",
                    t.label, shape.0, shape.1, v, t.goal
                );
            }
        }
    }
    s
}
