//! When to prune and to what sparsity.
//!
//! Steps are optimiser steps counted from 0; epochs from 0. A schedule answers, before a given
//! step, whether to prune now and to which sparsity. All targets are fractions of zeros in
//! `[0, 1)`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// No pruning (dense training).
    None,
    /// Prune once to `target` at the start of `epoch`, then fine-tune; `epoch = epochs` prunes
    /// the trained model with no fine-tuning at all.
    OneShot { epoch: usize, target: f64 },
    /// Prune `rate` of the remaining weights every `every` epochs, starting at `start`, until
    /// `target` (the seed's method: 20 % every 10 epochs).
    Periodic {
        rate: f64,
        every: usize,
        #[serde(default)]
        start: usize,
        target: f64,
    },
    /// Zhu & Gupta (2017): `s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n·Δt))³` for
    /// `t0 <= t <= t0 + n·Δt`, pruning every `Δt` steps. Given in epochs (`start_epoch`,
    /// `end_epoch`) and converted to steps with the steps per epoch.
    Gradual {
        #[serde(default)]
        initial: f64,
        target: f64,
        start_epoch: usize,
        end_epoch: usize,
        /// Δt in optimiser steps.
        every_steps: usize,
    },
    /// Iterative prune-and-retrain (Han et al. 2015): prune to `targets[i]` at the start of
    /// `epochs[i]`.
    Iterative {
        epochs: Vec<usize>,
        targets: Vec<f64>,
    },
    /// SET (Mocanu et al. 2018), sparse from the first step: a mask at `target` before step 0
    /// (criterion and allocation as configured; random with ERK is the paper's), then every
    /// `every_steps` the `drop_fraction` of each layer's kept weights with the smallest
    /// magnitude are dropped and as many regrown at random, the fraction decaying with a cosine
    /// to 0 at `end_fraction` of training, after which the mask is fixed.
    Set {
        target: f64,
        every_steps: usize,
        #[serde(default = "default_drop_fraction")]
        drop_fraction: f64,
        #[serde(default = "default_end_fraction")]
        end_fraction: f64,
    },
    /// RigL (Evci et al. 2020): as SET, but regrown where the dense gradient is largest.
    Rigl {
        target: f64,
        every_steps: usize,
        #[serde(default = "default_drop_fraction")]
        drop_fraction: f64,
        #[serde(default = "default_end_fraction")]
        end_fraction: f64,
    },
}

fn default_drop_fraction() -> f64 {
    0.3
}

fn default_end_fraction() -> f64 {
    0.75
}

/// Where a dynamic update regrows connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grow {
    /// SET: uniformly at random among the inactive entries.
    Random,
    /// RigL: the inactive entries with the largest gradient magnitude.
    Gradient,
}

impl Schedule {
    /// The schedule's name as written in recipes (`kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Schedule::None => "none",
            Schedule::OneShot { .. } => "one_shot",
            Schedule::Periodic { .. } => "periodic",
            Schedule::Gradual { .. } => "gradual",
            Schedule::Iterative { .. } => "iterative",
            Schedule::Set { .. } => "set",
            Schedule::Rigl { .. } => "rigl",
        }
    }

    /// The sparsity the schedule ends at.
    pub fn final_target(&self) -> f64 {
        match self {
            Schedule::None => 0.0,
            Schedule::OneShot { target, .. }
            | Schedule::Periodic { target, .. }
            | Schedule::Gradual { target, .. }
            | Schedule::Set { target, .. }
            | Schedule::Rigl { target, .. } => *target,
            Schedule::Iterative { targets, .. } => targets.iter().copied().fold(0.0, f64::max),
        }
    }

    /// The same schedule ending at `target` instead (iterative targets scale proportionally).
    pub fn with_target(&self, target: f64) -> Schedule {
        let mut s = self.clone();
        match &mut s {
            Schedule::None => {}
            Schedule::OneShot { target: t, .. }
            | Schedule::Periodic { target: t, .. }
            | Schedule::Gradual { target: t, .. }
            | Schedule::Set { target: t, .. }
            | Schedule::Rigl { target: t, .. } => *t = target,
            Schedule::Iterative { targets, .. } => {
                let max = targets.iter().copied().fold(0.0, f64::max);
                for t in targets.iter_mut() {
                    *t = if max > 0.0 { *t / max * target } else { target };
                }
            }
        }
        s
    }

    /// Whether to prune before optimiser step `step` (in epoch `epoch`, which starts at step
    /// `epoch * steps_per_epoch`), and to what sparsity.
    pub fn target_at(&self, step: usize, steps_per_epoch: usize) -> Option<f64> {
        let spe = steps_per_epoch.max(1);
        let epoch = step / spe;
        let epoch_start = step.is_multiple_of(spe);
        match self {
            Schedule::None => None,
            Schedule::OneShot { epoch: e, target } => {
                (epoch_start && epoch == *e).then_some(*target)
            }
            Schedule::Periodic {
                rate,
                every,
                start,
                target,
            } => {
                let every = (*every).max(1);
                if !epoch_start || epoch < *start || !(epoch - start).is_multiple_of(every) {
                    return None;
                }
                let rounds = ((epoch - start) / every + 1) as i32;
                Some((1.0 - (1.0 - rate).powi(rounds)).min(*target))
            }
            Schedule::Gradual {
                initial,
                target,
                start_epoch,
                end_epoch,
                every_steps,
            } => {
                let (t0, t1) = (start_epoch * spe, end_epoch * spe);
                let dt = (*every_steps).max(1);
                if step < t0 || step > t1 || (!(step - t0).is_multiple_of(dt) && step != t1) {
                    return None;
                }
                let span = (t1 - t0).max(1) as f64;
                let frac = ((step - t0) as f64 / span).min(1.0);
                Some(target + (initial - target) * (1.0 - frac).powi(3))
            }
            Schedule::Iterative { epochs, targets } => {
                if !epoch_start {
                    return None;
                }
                epochs.iter().position(|&e| e == epoch).map(|i| targets[i])
            }
            Schedule::Set { target, .. } | Schedule::Rigl { target, .. } => {
                (step == 0).then_some(*target)
            }
        }
    }

    /// For SET and RigL: whether to update the mask before step `step` of `total_steps`, the
    /// fraction of each layer's kept weights to drop and regrow (`drop_fraction/2 · (1 +
    /// cos(π t / T_end))`), and where to regrow.
    pub fn dynamic_update(&self, step: usize, total_steps: usize) -> Option<(f64, Grow)> {
        let (every, drop, end, grow) = match self {
            Schedule::Set {
                every_steps,
                drop_fraction,
                end_fraction,
                ..
            } => (*every_steps, *drop_fraction, *end_fraction, Grow::Random),
            Schedule::Rigl {
                every_steps,
                drop_fraction,
                end_fraction,
                ..
            } => (*every_steps, *drop_fraction, *end_fraction, Grow::Gradient),
            _ => return None,
        };
        let t_end = (end * total_steps as f64).floor();
        if step == 0 || every == 0 || !step.is_multiple_of(every) || step as f64 >= t_end {
            return None;
        }
        let f = drop / 2.0 * (1.0 + (std::f64::consts::PI * step as f64 / t_end).cos());
        Some((f, grow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_schedule_exact_values() {
        let s = Schedule::Gradual {
            initial: 0.0,
            target: 0.9,
            start_epoch: 1,
            end_epoch: 5,
            every_steps: 10,
        };
        let spe = 100;
        assert_eq!(s.target_at(99, spe), None);
        assert_eq!(s.target_at(100, spe), Some(0.0));
        // Halfway: 0.9 + (0 - 0.9) * 0.5^3 = 0.7875.
        assert!((s.target_at(300, spe).unwrap() - 0.7875).abs() < 1e-12);
        // A quarter: 0.9 - 0.9 * 0.75^3 = 0.5203125.
        assert!((s.target_at(200, spe).unwrap() - 0.5203125).abs() < 1e-12);
        assert_eq!(s.target_at(500, spe), Some(0.9));
        assert_eq!(s.target_at(505, spe), None);
        // The last step of the window always prunes, even off the Δt grid.
        let odd = Schedule::Gradual {
            initial: 0.0,
            target: 0.5,
            start_epoch: 0,
            end_epoch: 1,
            every_steps: 7,
        };
        assert_eq!(odd.target_at(10, 10), Some(0.5));
        assert!(s.target_at(310, spe).is_some());
        assert_eq!(s.target_at(305, spe), None);
    }

    #[test]
    fn periodic_prunes_a_rate_of_the_remainder() {
        let s = Schedule::Periodic {
            rate: 0.2,
            every: 10,
            start: 0,
            target: 0.9,
        };
        let spe = 50;
        assert!((s.target_at(0, spe).unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(s.target_at(5 * spe, spe), None);
        assert!((s.target_at(10 * spe, spe).unwrap() - 0.36).abs() < 1e-12);
        assert!((s.target_at(20 * spe, spe).unwrap() - 0.488).abs() < 1e-12);
        assert_eq!(s.target_at(200 * spe, spe), Some(0.9));
        assert_eq!(s.target_at(10 * spe + 1, spe), None);
    }

    #[test]
    fn with_target_moves_the_end_point() {
        let it = Schedule::Iterative {
            epochs: vec![1, 2],
            targets: vec![0.4, 0.8],
        };
        assert_eq!(
            it.with_target(0.6),
            Schedule::Iterative {
                epochs: vec![1, 2],
                targets: vec![0.3, 0.6]
            }
        );
        let g = Schedule::OneShot {
            epoch: 1,
            target: 0.9,
        };
        assert_eq!(g.with_target(0.5).final_target(), 0.5);
    }

    #[test]
    fn dynamic_updates_decay_and_stop() {
        let s = Schedule::Rigl {
            target: 0.9,
            every_steps: 100,
            drop_fraction: 0.3,
            end_fraction: 0.75,
        };
        assert_eq!(s.target_at(0, 50), Some(0.9));
        assert_eq!(s.target_at(100, 50), None);
        assert_eq!(s.dynamic_update(0, 1000), None);
        assert_eq!(s.dynamic_update(150, 1000), None);
        let (f, g) = s.dynamic_update(100, 1000).unwrap();
        assert_eq!(g, Grow::Gradient);
        let want = 0.15 * (1.0 + (std::f64::consts::PI * 100.0 / 750.0).cos());
        assert!((f - want).abs() < 1e-12);
        let (late, _) = s.dynamic_update(700, 1000).unwrap();
        assert!(late < f && late > 0.0);
        assert_eq!(
            s.dynamic_update(800, 1000),
            None,
            "fixed after 3/4 of training"
        );
        let set = Schedule::Set {
            target: 0.9,
            every_steps: 100,
            drop_fraction: 0.3,
            end_fraction: 0.75,
        };
        assert_eq!(set.dynamic_update(100, 1000).unwrap().1, Grow::Random);
    }

    #[test]
    fn one_shot_and_iterative() {
        let s = Schedule::OneShot {
            epoch: 3,
            target: 0.9,
        };
        assert_eq!(s.target_at(30, 10), Some(0.9));
        assert_eq!(s.target_at(31, 10), None);
        assert_eq!(s.target_at(20, 10), None);
        let it = Schedule::Iterative {
            epochs: vec![1, 4],
            targets: vec![0.5, 0.8],
        };
        assert_eq!(it.target_at(10, 10), Some(0.5));
        assert_eq!(it.target_at(40, 10), Some(0.8));
        assert_eq!(it.final_target(), 0.8);
    }
}
