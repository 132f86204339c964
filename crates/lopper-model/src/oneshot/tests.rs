//! One-shot pruning of single matrices on synthetic calibration data with correlated features
//! (the case where reconstruction matters): exact sparsity, N:M validity, and the ordering of
//! reconstruction errors the methods promise.

use super::*;

/// `W: [rows, cols]` and calibration inputs `X: [cols, t]` whose features share a few latent
/// factors plus noise, so `H = X Xᵀ` is far from diagonal.
fn problem(rows: usize, cols: usize, t: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let w: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
    let factors = 4;
    let load: Vec<f32> = (0..cols * factors).map(|_| next()).collect();
    let z: Vec<f32> = (0..factors * t).map(|_| next() * 3.0).collect();
    let mut x = vec![0.0f32; cols * t];
    for c in 0..cols {
        for j in 0..t {
            let mut v = next() * 0.3;
            for f in 0..factors {
                v += load[c * factors + f] * z[f * t + j];
            }
            x[c * t + j] = v;
        }
    }
    (w, x)
}

fn stats(x: &[f32], cols: usize, t: usize) -> Stats {
    let mut s = Stats::new(cols, true, false);
    s.add(x, None, t).unwrap();
    s
}

fn error_of(method: Method, target: Target, refit: usize) -> (Vec<f32>, f64) {
    let (rows, cols, t) = (24, 64, 400);
    let (w, x) = problem(rows, cols, t, 7);
    let st = stats(&x, cols, t);
    let mut p = w.clone();
    let opts = PruneOptions {
        refit_max_kept: refit,
        ..PruneOptions::new(method, target)
    };
    prune_matrix(&mut p, rows, cols, Some(&st), &opts).unwrap();
    let e = rel_error(&w, &p, cols, st.h.as_ref().unwrap());
    (p, e)
}

#[test]
fn every_method_hits_the_exact_sparsity() {
    for method in [Method::Magnitude, Method::Wanda, Method::Sparsegpt] {
        let (p, _) = error_of(method, Target::Unstructured(0.5), 1024);
        let zeros = p.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros, p.len() / 2, "{method:?}");
    }
}

#[test]
fn every_method_gives_valid_n_m_masks() {
    for method in [Method::Magnitude, Method::Wanda, Method::Sparsegpt] {
        for (n, m) in [(2, 4), (4, 8), (1, 4)] {
            let (p, _) = error_of(method, Target::Nm { n, m }, 1024);
            for group in p.chunks(m) {
                let kept = group.iter().filter(|v| **v != 0.0).count();
                assert_eq!(kept, n, "{method:?} {n}:{m}: {group:?}");
            }
        }
    }
}

#[test]
fn every_method_gives_whole_row_blocks() {
    // 24 rows: six 4x1 groups; 22 rows would leave a shorter last group (tested below).
    for method in [Method::Magnitude, Method::Wanda, Method::Sparsegpt] {
        let (p, _) = error_of(
            method,
            Target::Block {
                sparsity: 0.75,
                rows: 4,
            },
            1024,
        );
        let cols = 64;
        let zeros = p.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros, p.len() * 3 / 4, "{method:?}");
        for g in 0..6 {
            for c in 0..cols {
                let kept = (0..4).filter(|r| p[(g * 4 + r) * cols + c] != 0.0).count();
                assert!(
                    kept == 0 || kept == 4,
                    "{method:?}: block ({g}, {c}) keeps {kept}"
                );
            }
        }
    }
    // Block scores sum squares within the group; the short last group is its own block.
    // `[6, 2]`: group 0 (rows 0-3) scores 1+4 = 5 and 9+1 = 10, group 1 (rows 4-5) 0.26 twice.
    let scores = [1.0, 0.0, 0.0, 3.0, 2.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.1, 0.1];
    let keep = row_block_mask(&scores, 2, 4, 0.5, false);
    let want: Vec<bool> = (0..12).map(|i| i < 8).collect();
    assert_eq!(keep, want);
    // Per group (Wanda), each group keeps its better column.
    let keep = row_block_mask(&scores, 2, 4, 0.5, true);
    assert_eq!(keep.iter().filter(|k| **k).count(), 4 + 2);
    assert!((0..4).all(|r| keep[r * 2 + 1] && !keep[r * 2]));
}

#[test]
fn reconstruction_beats_selection_alone() {
    let t = Target::Unstructured(0.5);
    let (_, mag) = error_of(Method::Magnitude, t, 0);
    let (_, wanda) = error_of(Method::Wanda, t, 0);
    let (_, sgpt) = error_of(Method::Sparsegpt, t, 0);
    let (_, refit) = error_of(Method::Sparsegpt, t, 1024);
    assert!(wanda < mag, "wanda {wanda} vs magnitude {mag}");
    assert!(sgpt < wanda, "sparsegpt {sgpt} vs wanda {wanda}");
    assert!(refit <= sgpt * 1.0001, "refit {refit} vs sparsegpt {sgpt}");
    let (_, nm) = error_of(Method::Sparsegpt, Target::Nm { n: 2, m: 4 }, 0);
    let (_, nm_mag) = error_of(Method::Magnitude, Target::Nm { n: 2, m: 4 }, 0);
    assert!(nm < nm_mag, "2:4 sparsegpt {nm} vs magnitude {nm_mag}");
    let b = Target::Block {
        sparsity: 0.5,
        rows: 4,
    };
    let (_, blk) = error_of(Method::Sparsegpt, b, 0);
    let (_, blk_mag) = error_of(Method::Magnitude, b, 0);
    assert!(blk < blk_mag, "4x1 sparsegpt {blk} vs magnitude {blk_mag}");
    assert!(
        sgpt < blk,
        "blocks constrain the mask: {blk} vs unstructured {sgpt}"
    );
}

#[test]
fn dense_targets_undo_input_drift() {
    // The pruned model's inputs differ from the dense model's by a fixed mixing; fitting the
    // dense outputs must bring the layer's outputs closer to them than fitting its own.
    let (rows, cols, t) = (8, 16, 300);
    let (w, xd) = problem(rows, cols, t, 11);
    let x: Vec<f32> = xd
        .chunks(t)
        .enumerate()
        .flat_map(|(c, row)| {
            let next = &xd[((c + 1) % cols) * t..((c + 1) % cols + 1) * t];
            row.iter()
                .zip(next)
                .map(|(a, b)| 0.8 * a + 0.3 * b)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut st = Stats::new(cols, true, true);
    st.add(&x, Some(&xd), t).unwrap();
    let out_err = |p: &[f32]| -> f64 {
        let mut e = 0.0;
        for r in 0..rows {
            for j in 0..t {
                let mut a = 0.0f64;
                let mut b = 0.0f64;
                for c in 0..cols {
                    a += (w[r * cols + c] * xd[c * t + j]) as f64;
                    b += (p[r * cols + c] * x[c * t + j]) as f64;
                }
                e += (a - b) * (a - b);
            }
        }
        e
    };
    let mut fitted = w.clone();
    fit_dense_targets(
        &mut fitted,
        rows,
        cols,
        st.h.as_ref().unwrap(),
        st.cross.as_ref().unwrap(),
        1e-6,
    )
    .unwrap();
    assert!(
        out_err(&fitted) < 0.1 * out_err(&w),
        "{} vs {}",
        out_err(&fitted),
        out_err(&w)
    );
}

#[test]
fn rejects_bad_targets() {
    assert!(check_target(Target::Unstructured(1.0)).is_err());
    assert!(check_target(Target::Unstructured(-0.1)).is_err());
    assert!(check_target(Target::Unstructured(f64::NAN)).is_err());
    assert!(check_target(Target::Nm { n: 4, m: 2 }).is_err());
    assert!(check_target(Target::Nm { n: 0, m: 4 }).is_err());
    assert!(check_target(Target::Nm { n: 2, m: 4 }).is_ok());
    let blk = |sparsity, rows| check_target(Target::Block { sparsity, rows });
    assert!(blk(0.9, 4).is_ok());
    assert!(blk(0.9, 0).is_err());
    assert!(blk(0.9, 65).is_err());
    assert!(blk(1.0, 4).is_err());
    let (w, _) = problem(4, 8, 10, 1);
    let mut p = w.clone();
    let e = prune_matrix(
        &mut p,
        4,
        8,
        None,
        &PruneOptions::new(Method::Wanda, Target::Unstructured(0.5)),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("calibration"), "{e}");
}
