//! The whole-pass check of a measured encoder plan. [`BertPlan::make`] picks each Linear's
//! format and kernel alone, at one token tile's width, with that layer's activations hot in
//! cache. In a real pass the other layers evict those caches and longer batches split their
//! tiles over the threads, and such choices can lose to plain dense kernels: measured on
//! all-MiniLM-L6-v2 at 50 % (batch 8, 2 threads, AMD EPYC guest), 66.2 ms with the per-layer
//! plan against 61.4 ms with every Linear dense. So [`BertPlan::make_verified`] times both
//! plans over whole forward passes, interleaved, and keeps the faster, as the graph planner
//! does with its uniform plans. The all-dense plan is read off the per-layer plan's own
//! measurements (each Linear's fastest dense candidate), so nothing is measured twice. A model
//! whose per-layer plan is already all dense skips the check.

use std::ops::ControlFlow;

use lopper_kernels::{Dtype, FormatKind};

use super::runtime::{BertPlan, BertRunner, Encoded, LinearChoice};
use super::Bert;
use crate::error::ModelError;
use crate::runtime::plan::PlanMode;

/// Interleaved rounds per candidate (after one untimed pass each).
const ROUNDS: usize = 5;

/// The longest synthetic sequence the check runs: the benchmarks' length.
const CHECK_SEQ: usize = 128;

impl BertPlan {
    /// A measured plan for `tokens` tokens on `threads` threads, checked end to end against the
    /// all-dense plan (see the module docs); `chosen` says which one won and `end_to_end_ns`
    /// holds both medians.
    pub fn make_verified(bert: &Bert, tokens: usize, threads: usize) -> Result<Self, ModelError> {
        let per_layer = BertPlan::make(bert, tokens, threads, PlanMode::Measured)?;
        if per_layer
            .layers
            .iter()
            .all(|l| l.format == FormatKind::Dense)
        {
            return Ok(per_layer);
        }
        let dense = match dense_from(&per_layer) {
            Some(plan) => plan,
            None => BertPlan {
                chosen: "dense".into(),
                ..BertPlan::make(bert, tokens, threads, PlanMode::Dense)?
            },
        };
        let enc = check_input(bert, tokens);
        let mut runners = [
            BertRunner::new(bert.clone(), &per_layer)?,
            BertRunner::new(bert.clone(), &dense)?,
        ];
        let [p, d] = time_interleaved(&mut runners, &enc, ROUNDS)?;
        let mut best = if d < p { dense } else { per_layer };
        best.end_to_end_ns = vec![("per-layer".into(), p), ("dense".into(), d)];
        Ok(best)
    }
}

/// The all-dense plan from the measurements a measured plan already holds: for each Linear its
/// fastest dense candidate (candidates read `(format, "KERNEL xPARTS", ns)`, as
/// [`BertPlan::make`] writes them). `None` if a layer has no dense candidate.
fn dense_from(plan: &BertPlan) -> Option<BertPlan> {
    let layers = plan
        .layers
        .iter()
        .map(|l| {
            let (format, kernel, ns) = l
                .candidates
                .iter()
                .filter(|c| c.0 == FormatKind::Dense)
                .min_by(|a, b| a.2.total_cmp(&b.2))?;
            let (kernel, parts) = kernel.rsplit_once(" x")?;
            Some(LinearChoice {
                name: l.name.clone(),
                format: *format,
                dtype: Dtype::F32,
                kernel: kernel.to_string(),
                parts: parts.parse().ok()?,
                ns: *ns,
                candidates: Vec::new(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(BertPlan {
        layers,
        chosen: "dense".into(),
        end_to_end_ns: Vec::new(),
        ..plan.clone()
    })
}

/// Synthetic sequences covering `tokens`: of the benchmarks' length where they fit, so the
/// attention, which both plans share, costs what it costs there.
fn check_input(bert: &Bert, tokens: usize) -> Encoded {
    let seq = tokens
        .clamp(1, CHECK_SEQ)
        .min(bert.config.max_position_embeddings.max(1));
    let batch = (tokens / seq).max(1);
    Encoded::synthetic(batch, seq, bert.config.vocab_size)
}

/// Median nanoseconds of a forward pass of `enc` for each runner, timed in alternation so
/// that a noisy neighbour slows both alike (one pass per sample, `ROUNDS` rounds).
pub fn time_interleaved<const N: usize>(
    runners: &mut [BertRunner; N],
    enc: &Encoded,
    rounds: usize,
) -> Result<[f64; N], ModelError> {
    let mut outs: Vec<Vec<f32>> = runners
        .iter()
        .map(|r| vec![0.0f32; enc.batch() * r.hidden()])
        .collect();
    let mut runs: Vec<_> = runners
        .iter_mut()
        .zip(outs.iter_mut())
        .map(|(r, out)| {
            move || {
                r.forward(enc, out, &mut |_, _, _| ControlFlow::Continue(()))
                    .map(drop)
            }
        })
        .collect();
    let mut fns: Vec<&mut dyn FnMut() -> Result<(), ModelError>> = runs
        .iter_mut()
        .map(|f| f as &mut dyn FnMut() -> Result<(), ModelError>)
        .collect();
    let t = lopper_kernels::bench::time_interleaved(&mut fns, rounds, 0)?;
    Ok(std::array::from_fn(|i| t[i]))
}

/// One pass on probe sentences (a short one and an empty one, so every position type and both
/// pooling modes see data) through each weight's stored format: an error when any embedding
/// value is not finite. Finite weights and LayerNorm parameters can still overflow when used
/// (a γ of 3e38 passes validation), and a command that prints no embeddings (`prune`, `bench`,
/// `inspect`) would otherwise carry such a model on with exit 0.
pub fn probe(bert: &Bert) -> Result<(), ModelError> {
    let mut runner = BertRunner::stored(bert.clone())?;
    let enc = runner.encode(&["The quick brown fox jumps over the lazy dog.", ""])?;
    let e = runner.embed(&enc)?;
    match e.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ModelError::Config(format!(
            "a forward pass on probe sentences gives a non-finite value ({} at embedding \
             value {i}), so the weights or LayerNorm parameters overflow when used",
            e[i]
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(name: &str, format: &str, candidates: &[(&str, &str, f64)]) -> LinearChoice {
        LinearChoice {
            name: name.into(),
            format: format.parse().unwrap(),
            dtype: Dtype::F32,
            kernel: "k".into(),
            parts: 1,
            ns: 1.0,
            candidates: candidates
                .iter()
                .map(|(f, k, ns)| (f.parse().unwrap(), k.to_string(), *ns))
                .collect(),
        }
    }

    #[test]
    fn the_dense_plan_comes_from_the_measured_candidates() {
        let plan = BertPlan {
            tokens: 128,
            threads: 2,
            isa: "avx512".into(),
            layers: vec![
                choice(
                    "a",
                    "csr16",
                    &[
                        ("dense", "f32_spmm_dense_avx512 x1", 9.0),
                        ("dense", "f32_spmm_dense_avx512 x2", 7.0),
                        ("csr16", "f32_spmm_csr16_avx512 x2", 3.0),
                    ],
                ),
                choice("b", "dense", &[("dense", "f32_spmm_dense_gemm x1", 5.0)]),
            ],
            chosen: "per-layer".into(),
            end_to_end_ns: Vec::new(),
        };
        let d = dense_from(&plan).unwrap();
        let got: Vec<_> = d
            .layers
            .iter()
            .map(|l| {
                (
                    l.name.as_str(),
                    l.format.to_string(),
                    l.kernel.as_str(),
                    l.parts,
                    l.ns,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", "dense".to_string(), "f32_spmm_dense_avx512", 2, 7.0),
                ("b", "dense".to_string(), "f32_spmm_dense_gemm", 1, 5.0)
            ]
        );
        assert_eq!((d.tokens, d.threads, d.chosen.as_str()), (128, 2, "dense"));
        let mut no_dense = plan;
        no_dense.layers[1].candidates.clear();
        assert!(dense_from(&no_dense).is_none());
    }

    #[test]
    fn synthetic_ids_stay_inside_small_vocabularies() {
        for vocab in [1, 2, 10, 999, 1000, 1001, 2000, 30522] {
            let e = Encoded::synthetic(2, 64, vocab);
            assert_eq!(e.tokens(), 128);
            assert!(e.ids.iter().all(|&i| (i as usize) < vocab), "vocab {vocab}");
        }
        // Large vocabularies keep away from BERT's special and unused ids.
        assert!(Encoded::synthetic(1, 128, 30522)
            .ids
            .iter()
            .all(|&i| i >= 1000));
    }
}
