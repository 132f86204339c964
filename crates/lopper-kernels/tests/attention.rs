//! The fused attention kernel on every ISA this CPU has, against its f64 twin: a grid of sequence
//! lengths and head sizes around the AVX-512 tile (4 rows x 64 lanes, 16-lane vectors), row
//! strides wider than the sequence, adversarial values, bad shapes, and proptest.

use lopper_kernels::attention::{head_with, reference_head, scratch_len, Head};
use lopper_kernels::{synth, Isa, KernelError};
use proptest::prelude::*;
use rand::Rng;

struct Case {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ld: usize,
    head_dim: usize,
    len: usize,
    scale: f32,
}

impl Case {
    fn random(head_dim: usize, len: usize, ld: usize, spread: f32, seed: u64) -> Self {
        let mut rng = synth::rng(seed);
        let n = (head_dim - 1) * ld + len;
        let mut gen = |s: f32| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-s..=s)).collect() };
        let (q, k, v) = (gen(spread), gen(spread), gen(1.0));
        Case {
            q,
            k,
            v,
            ld,
            head_dim,
            len,
            scale: 1.0 / (head_dim as f32).sqrt(),
        }
    }

    fn head(&self) -> Head<'_> {
        Head {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            ld: self.ld,
            head_dim: self.head_dim,
            len: self.len,
            scale: self.scale,
        }
    }

    /// Runs `isa` and checks every output against the twin; rows' padding must stay untouched.
    fn check(&self, isa: Isa) -> Result<(), String> {
        let (ld, hd, len) = (self.ld, self.head_dim, self.len);
        let mut ctx = vec![f32::from_bits(0x7fc0_0bad); (hd - 1) * ld + len];
        let mut scratch = vec![f32::NAN; scratch_len(len)];
        head_with(isa, &self.head(), &mut ctx, &mut scratch).map_err(|e| e.to_string())?;
        let (want, tol) = reference_head(&self.head());
        for d in 0..hd {
            for i in 0..ld.min(ctx.len() - d * ld) {
                let got = ctx[d * ld + i];
                if i >= len {
                    if got.to_bits() != 0x7fc0_0bad {
                        return Err(format!("{isa:?}: padding ({d}, {i}) was written"));
                    }
                    continue;
                }
                let (w, t) = (want[d * len + i], tol[d * len + i]);
                let ok = if w.is_nan() {
                    got.is_nan()
                } else {
                    (got as f64 - w).abs() <= t
                };
                if !ok {
                    return Err(format!(
                        "{isa:?} hd {hd} len {len} ld {ld}: ({d}, {i}) = {got}, want {w} ± {t:e}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_all(&self) {
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            if let Err(e) = self.check(isa) {
                panic!("{e}");
            }
        }
    }
}

#[test]
fn matches_reference_on_a_tile_grid() {
    let lens = [1, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 127, 128, 129];
    let dims = [1, 2, 3, 4, 5, 8, 32, 33];
    for (s, &len) in lens.iter().enumerate() {
        for (t, &hd) in dims.iter().enumerate() {
            for ld in [len, len + 3] {
                Case::random(hd, len, ld, 1.5, (s * 100 + t) as u64 + ld as u64).check_all();
            }
        }
    }
}

#[test]
fn adversarial_values() {
    // Peaked scores: softmax is one-hot to f32 precision, and most exps underflow.
    Case::random(32, 70, 70, 40.0, 1).check_all();
    // Equal keys: uniform weights, the context is the mean of the values.
    let mut c = Case::random(8, 33, 40, 1.0, 2);
    c.k.iter_mut().for_each(|x| *x = 0.25);
    c.check_all();
    // All-zero queries and keys; then values of very different magnitudes.
    let mut c = Case::random(4, 17, 17, 1.0, 3);
    c.q.iter_mut().for_each(|x| *x = 0.0);
    c.check_all();
    c.v.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = if i % 3 == 0 { 1e30 } else { -1e-30 });
    c.check_all();
    // A NaN query poisons its own output column only.
    let mut c = Case::random(3, 20, 20, 1.0, 4);
    c.q[5] = f32::NAN;
    c.check_all();
    // A NaN key poisons every query (it is in every softmax).
    let mut c = Case::random(3, 20, 20, 1.0, 5);
    c.k[7] = f32::NAN;
    c.check_all();
}

#[test]
fn rejects_bad_shapes() {
    let c = Case::random(4, 10, 12, 1.0, 6);
    let mut ctx = vec![0.0; 3 * 12 + 10];
    let mut s = vec![0.0; scratch_len(10)];
    let run = |q: &[f32], ld, ctx: &mut [f32], s: &mut [f32]| {
        let h = Head {
            q,
            ld,
            scale: 1.0,
            ..c.head()
        };
        head_with(Isa::Scalar, &h, ctx, s)
    };
    assert!(matches!(
        run(&c.q[1..], 12, &mut ctx, &mut s),
        Err(KernelError::ShapeMismatch { .. })
    ));
    assert!(run(&c.q, 9, &mut ctx, &mut s).is_err(), "ld below len");
    let mut short = vec![0.0; scratch_len(10) - 1];
    assert!(run(&c.q, 12, &mut ctx, &mut short).is_err());
    let mut small = vec![0.0; 3 * 12 + 9];
    assert!(run(&c.q, 12, &mut small, &mut s).is_err());
    // Empty sequences and heads are nothing to do.
    let empty = Head {
        q: &[],
        k: &[],
        v: &[],
        ld: 0,
        head_dim: 0,
        len: 0,
        scale: 1.0,
    };
    head_with(Isa::Scalar, &empty, &mut [], &mut []).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference(
        hd in 1usize..40,
        len in 1usize..150,
        pad in 0usize..20,
        spread in 0.01f32..8.0,
        seed in any::<u64>(),
    ) {
        let c = Case::random(hd, len, len + pad, spread, seed);
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            let r = c.check(isa);
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }
}
