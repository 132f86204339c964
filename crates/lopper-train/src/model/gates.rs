//! Hard-concrete gates for L0 regularisation (Louizos, Welling & Kingma 2018, "Learning Sparse
//! Neural Networks through L0 Regularization"), with the paper's β = 2/3, γ = −0.1, ζ = 1.1.
//!
//! One gate per unit (a neuron, or a channel of a convolution's output), with parameter `log α`
//! (stored scaled, see below). In training, every example draws its own gate
//! `z = clamp(sigmoid((ln u − ln(1 − u) + log α) / β) · (ζ − γ) + γ, 0, 1)`, `u ~ U(0, 1)`, so the
//! gate is exactly 0 or 1 with positive probability and differentiable in between. At evaluation
//! the gate is deterministic, `ẑ = clamp(sigmoid(log α) · (ζ − γ) + γ, 0, 1)`; a unit with `ẑ = 0`
//! contributes nothing and is removed by the model's shrink. The penalty is the expected number
//! of gates that are not zero, `P(z ≠ 0) = sigmoid(log α − β ln(−γ / ζ))`, weighted by the number
//! of parameters each gate removes.
//!
//! The trained parameter is `θ = log α / s` with a fixed, persisted scale `s`
//! ([`GateInit::param_scale`]). With Adam, whose step does not depend on the gradient's scale,
//! `log α` then moves `s` times as far per step as the weights do: a learning-rate multiplier for
//! the gates alone. burn could also give the gates a parameter group of their own
//! (`ModuleLearningRate`); the reparametrisation was chosen because the scale travels with the
//! gates in every checkpoint (export and resume read them as trained), the trainer's schedule
//! stays one number, and SGD gets the same multiplier with `s = √k`. The one difference from a
//! parameter group is weight decay, which acts on θ, not on `log α`. Why the multiplier matters:
//! with the shared rate under a cosine schedule, Adam moves `log α` by at most about 3.8 over the
//! first 10 epochs of a 20-epoch run, about the distance from a 20 % drop rate (`log α` = 1.39) to
//! a closed gate (−2.40), so which gates close is decided by that race rather than by the
//! balance of penalty and loss (measured on LeNet-300-100: docs/perf/accuracy.md).

use burn::module::{Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Distribution, Tensor, TensorData};

/// Temperature β of the concrete distribution.
pub const BETA: f64 = 2.0 / 3.0;
/// Lower end γ of the stretched interval.
pub const GAMMA: f64 = -0.1;
/// Upper end ζ of the stretched interval.
pub const ZETA: f64 = 1.1;
/// `u` is drawn from `[EPS, 1 − EPS)` so that `ln u` and `ln(1 − u)` stay finite.
const EPS: f64 = 1e-6;

/// The range of [`GateInit::param_scale`] (and of `gate_lr_scale`, whose square root SGD uses).
pub const MIN_SCALE: f64 = 1e-3;
pub const MAX_SCALE: f64 = 1e3;

/// How new gates start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateInit {
    /// Initial probability that a gate is off, `1 − sigmoid(log α)`.
    pub droprate: f64,
    /// `s` in `log α = s · θ` (see the module docs); 1 trains `log α` directly.
    pub param_scale: f64,
}

impl GateInit {
    /// Gates dropped with probability `droprate` at first, trained directly (`s = 1`).
    pub fn new(droprate: f64) -> Self {
        Self {
            droprate,
            param_scale: 1.0,
        }
    }
}

/// A vector of hard-concrete gates, one per unit.
#[derive(Module, Debug)]
pub struct HardConcrete {
    /// `θ = log α / s`, one per unit `[n]`: the trained parameter.
    pub theta: Param<Tensor<1>>,
    /// `[s]`: stored with the checkpoint so that a loaded model reads its gates as trained;
    /// never trained.
    pub scale: Param<Tensor<1>>,
}

impl HardConcrete {
    /// `n` gates whose initial probability of being dropped (`1 − sigmoid(log α)`) is
    /// `init.droprate`, with the paper's small N(·, 0.01) jitter on `log α` so that units do not
    /// move in lockstep.
    pub fn new(n: usize, init: GateInit, device: &Device) -> Self {
        let p = init.droprate.clamp(1e-3, 1.0 - 1e-3);
        let mean = ((1.0 - p) / p).ln();
        // Recipes keep the scale in [MIN_SCALE, MAX_SCALE]; the clamp only guards other callers
        // against an infinite or zero jitter.
        let s = init.param_scale.clamp(MIN_SCALE, MAX_SCALE);
        let theta = Tensor::<1>::random([n], Distribution::Normal(mean / s, 1e-2 / s), device);
        Self::from_theta(theta, s)
    }

    /// Gates with the given `log α` values `[n]` and `s = 1`.
    pub fn from_log_alpha(log_alpha: Tensor<1>) -> Self {
        Self::from_theta(log_alpha, 1.0)
    }

    fn from_theta(theta: Tensor<1>, s: f64) -> Self {
        let scale = Tensor::<1>::from_data(TensorData::new(vec![s as f32], [1]), &theta.device());
        Self {
            theta: Param::from_tensor(theta),
            scale: Param::from_tensor(scale).set_require_grad(false),
        }
    }

    /// `log α = s · θ` `[n]`, differentiable in `θ`.
    pub fn log_alpha(&self) -> Tensor<1> {
        self.theta.val() * self.scale.val().detach()
    }

    /// Training gates `[rows, n]`: an independent draw for every row (example).
    pub fn sample(&self, rows: usize) -> Tensor<2> {
        let la = self.log_alpha();
        let n = la.dims()[0];
        let u = Tensor::<2>::random(
            [rows, n],
            Distribution::Uniform(EPS, 1.0 - EPS),
            &la.device(),
        );
        let logit = u.clone().log() - (u.neg() + 1.0).log() + la.unsqueeze_dim::<2>(0);
        stretch(sigmoid(logit / BETA))
    }

    /// Evaluation gates `[n]`: deterministic, exactly 0 for units the shrink removes. Detached
    /// from the autodiff graph: nothing trains through them (L0 fine-tuning keeps the gates
    /// fixed), and graph nodes that no backward pass consumes would pile up in burn's autodiff
    /// bookkeeping and slow every later step.
    pub fn deterministic(&self) -> Tensor<1> {
        stretch(sigmoid(
            self.theta.val().detach() * self.scale.val().detach(),
        ))
    }

    /// `P(z ≠ 0)` per gate `[n]`, differentiable in θ.
    pub fn prob_nonzero(&self) -> Tensor<1> {
        let shift = BETA * (-GAMMA / ZETA).ln();
        sigmoid(self.log_alpha() - shift)
    }

    /// The deterministic gates as plain numbers.
    pub fn values(&self) -> Vec<f32> {
        super::floats(self.deterministic())
    }
}

fn stretch<const D: usize>(s: Tensor<D>) -> Tensor<D> {
    (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
}

/// The indices a shrink keeps: units whose deterministic gate is not zero. When every gate of a
/// layer is zero the layer's output is all zeros; one unit (with gate 0, so it still contributes
/// nothing) is kept so that the network stays well formed.
pub fn surviving(gates: &[f32]) -> Vec<usize> {
    let keep: Vec<usize> = (0..gates.len()).filter(|&i| gates[i] > 0.0).collect();
    if keep.is_empty() && !gates.is_empty() {
        vec![0]
    } else {
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::super::floats as vec1;
    use super::*;

    fn gates_with(log_alpha: &[f32]) -> HardConcrete {
        let device = Device::flex();
        let t = Tensor::<1>::from_data(
            burn::tensor::TensorData::new(log_alpha.to_vec(), [log_alpha.len()]),
            &device,
        );
        HardConcrete::from_log_alpha(t)
    }

    #[test]
    fn sampled_gates_match_the_hard_concrete_distribution() {
        // For log α = a, P(z = 0) = P(s·(ζ−γ)+γ ≤ 0) = P(s ≤ −γ/(ζ−γ)) with
        // s = sigmoid((logit u + a)/β): P(s ≤ t) = sigmoid(β·logit t − a).
        Device::flex().seed(7);
        let alphas = [-2.0f32, 0.0, 1.5];
        let g = gates_with(&alphas);
        let rows = 20_000;
        let z = vec1(g.sample(rows));
        assert_eq!(z.len(), rows * alphas.len());
        let logit = |t: f64| (t / (1.0 - t)).ln();
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        for (j, &a) in alphas.iter().enumerate() {
            let col: Vec<f32> = (0..rows).map(|r| z[r * alphas.len() + j]).collect();
            assert!(col.iter().all(|v| (0.0..=1.0).contains(v)));
            let zeros = col.iter().filter(|v| **v == 0.0).count() as f64 / rows as f64;
            let ones = col.iter().filter(|v| **v == 1.0).count() as f64 / rows as f64;
            let t0 = -GAMMA / (ZETA - GAMMA);
            let t1 = (1.0 - GAMMA) / (ZETA - GAMMA);
            let p0 = sig(BETA * logit(t0) - a as f64);
            let p1 = 1.0 - sig(BETA * logit(t1) - a as f64);
            // 20 000 draws: the standard error of a frequency is at most 0.0036.
            assert!(
                (zeros - p0).abs() < 0.015,
                "gate {j}: P(z=0) {zeros} vs {p0}"
            );
            assert!((ones - p1).abs() < 0.015, "gate {j}: P(z=1) {ones} vs {p1}");
            // P(z ≠ 0) from the closed form used by the penalty.
            let pnz = vec1(g.prob_nonzero())[j] as f64;
            assert!(
                (pnz - (1.0 - p0)).abs() < 1e-5,
                "gate {j}: {pnz} vs {}",
                1.0 - p0
            );
        }
    }

    #[test]
    fn evaluation_gates_are_deterministic_and_clamped() {
        let g = gates_with(&[-10.0, -2.3979, 0.0, 10.0]);
        let a = vec1(g.deterministic());
        let b = vec1(g.deterministic());
        assert_eq!(a, b);
        assert_eq!(a[0], 0.0);
        // sigmoid(log α)·1.2 − 0.1 ≤ 0 exactly when sigmoid(log α) ≤ 1/12, log α ≤ −2.3979.
        assert!(a[1] <= 1e-4);
        assert!((a[2] - 0.5).abs() < 1e-6);
        assert_eq!(a[3], 1.0);
        assert_eq!(
            surviving(&a),
            vec![1, 2, 3]
                .into_iter()
                .filter(|&i| a[i] > 0.0)
                .collect::<Vec<_>>()
        );
        assert_eq!(surviving(&[0.0, 0.0]), vec![0]);
    }

    #[test]
    fn param_scale_multiplies_the_adam_step_of_log_alpha() {
        use burn::optim::{AdamConfig, GradientsParams};
        let device = Device::flex().autodiff();
        let step = |s: f64| {
            device.seed(3);
            let init = GateInit {
                droprate: 0.3,
                param_scale: s,
            };
            let g = HardConcrete::new(6, init, &device);
            let before = vec1(g.log_alpha());
            let grads = GradientsParams::from_grads(g.prob_nonzero().sum().backward(), &g);
            let g = AdamConfig::new().init().step(1e-2, g, grads);
            let after = vec1(g.log_alpha());
            before
                .iter()
                .zip(&after)
                .map(|(b, a)| b - a)
                .collect::<Vec<f32>>()
        };
        let (plain, scaled) = (step(1.0), step(10.0));
        for (p, s) in plain.iter().zip(&scaled) {
            // Adam's first step is lr · sign(g): 0.01 on θ, so 0.01 and 0.1 on log α.
            assert!((p - 1e-2).abs() < 1e-4, "{p}");
            assert!((s - 1e-1).abs() < 1e-3, "{s}");
        }
    }

    #[test]
    fn the_scale_travels_with_the_record() {
        let device = Device::flex();
        device.seed(5);
        let init = GateInit {
            droprate: 0.2,
            param_scale: 10.0,
        };
        let trained = HardConcrete::new(8, init, &device);
        let loaded = HardConcrete::new(8, GateInit::new(0.5), &device)
            .load_record(trained.clone().into_record());
        assert_eq!(vec1(loaded.log_alpha()), vec1(trained.log_alpha()));
        assert_eq!(loaded.values(), trained.values());
        let mean = vec1(trained.log_alpha()).iter().sum::<f32>() / 8.0;
        assert!((mean - 4.0f32.ln()).abs() < 0.05, "{mean}");
    }

    #[test]
    fn initial_drop_rate_is_honoured() {
        let device = Device::flex();
        device.seed(1);
        let g = HardConcrete::new(1000, GateInit::new(0.2), &device);
        let a = vec1(g.log_alpha());
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 4.0f32.ln()).abs() < 0.01, "{mean}");
    }
}
