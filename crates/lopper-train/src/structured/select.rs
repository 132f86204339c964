//! Which channels a structured prune event keeps, from per-channel scores.
//!
//! Targets are fractions of each group's *original* width (before the first event), so an
//! iterative schedule that removes 25 % and then 50 % ends at half the channels, whatever the
//! intermediate widths. Every group keeps at least one channel, so the network never
//! disconnects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::graph::{ChannelKeep, Group};

/// How the channel budget is spread over groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelAllocation {
    /// Every group loses the same fraction of its original channels.
    #[default]
    Layerwise,
    /// One ranking over all groups, each group's scores divided by their mean (so wide and
    /// narrow layers compete on equal terms), with a per-group floor `min_keep`.
    Global,
}

/// One event's selection rule.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    pub allocation: ChannelAllocation,
    /// Fraction of the original channels removed after this event.
    pub ratio: f64,
    /// This event's share of the final targets (`k / events`), applied to the overrides.
    pub progress: f64,
    /// Original widths by group name.
    pub original: &'a BTreeMap<String, usize>,
    /// Final per-group ratios that replace `ratio` for those groups.
    pub overrides: &'a BTreeMap<String, f64>,
    /// Under global allocation, the least fraction of its original channels a group keeps.
    pub min_keep: f64,
    /// Whether residual groups (shared by an add) are pruned.
    pub residual: bool,
}

fn keep_top(scores: &[f64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    // Highest score first; ties keep the lower index, so the choice is deterministic.
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(n.clamp(1, scores.len()));
    idx.sort_unstable();
    idx
}

fn target_width(original: usize, ratio: f64) -> usize {
    ((original as f64 * (1.0 - ratio)).round() as usize).max(1)
}

/// The channels each pruned group keeps. Groups that keep all their channels, are not
/// prunable, or are residual when `residual` is off, are absent.
pub fn select(
    groups: &[Group],
    scores: &BTreeMap<String, Vec<f64>>,
    sel: &Selection,
) -> ChannelKeep {
    let mut keep = ChannelKeep::new();
    let mut pool = Vec::new();
    for g in groups {
        if !g.prunable || (g.residual && !sel.residual) {
            continue;
        }
        let Some(s) = scores.get(&g.name) else {
            continue;
        };
        let original = sel.original.get(&g.name).copied().unwrap_or(g.width);
        let fixed_ratio = match sel.overrides.get(&g.name) {
            Some(r) => Some(r * sel.progress),
            None if sel.allocation == ChannelAllocation::Layerwise => Some(sel.ratio),
            None => None,
        };
        match fixed_ratio {
            Some(r) => {
                let n = target_width(original, r).min(g.width);
                if n < g.width {
                    keep.insert(g.name.clone(), keep_top(s, n));
                }
            }
            None => pool.push((g, s, original)),
        }
    }
    if pool.is_empty() {
        return keep;
    }
    // Global: remove the lowest normalised scores until the pool is at its target.
    let original_total: usize = pool.iter().map(|(_, _, o)| o).sum();
    let current_total: usize = pool.iter().map(|(g, _, _)| g.width).sum();
    let target_total = target_width(original_total, sel.ratio);
    let mut to_remove = current_total.saturating_sub(target_total);
    let mut ranked = Vec::new();
    for (gi, (_, s, _)) in pool.iter().enumerate() {
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        let norm = if mean > 0.0 { mean } else { 1.0 };
        ranked.extend(s.iter().enumerate().map(|(c, v)| (v / norm, gi, c)));
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut removed: Vec<Vec<bool>> = pool.iter().map(|(g, _, _)| vec![false; g.width]).collect();
    let mut left: Vec<usize> = pool.iter().map(|(g, _, _)| g.width).collect();
    let floors: Vec<usize> = pool
        .iter()
        .map(|(_, _, o)| ((*o as f64 * sel.min_keep).ceil() as usize).max(1))
        .collect();
    for (_, gi, c) in ranked {
        if to_remove == 0 {
            break;
        }
        if left[gi] > floors[gi] {
            removed[gi][c] = true;
            left[gi] -= 1;
            to_remove -= 1;
        }
    }
    for ((g, _, _), r) in pool.iter().zip(removed) {
        if r.iter().any(|x| *x) {
            keep.insert(g.name.clone(), (0..g.width).filter(|&c| !r[c]).collect());
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, width: usize, residual: bool) -> Group {
        Group {
            name: name.into(),
            width,
            producers: vec![name.into()],
            norms: Vec::new(),
            consumers: Vec::new(),
            residual,
            prunable: true,
        }
    }

    #[test]
    fn layerwise_keeps_the_top_scores_of_the_original_width() {
        let groups = [group("a", 4, false), group("r", 2, true)];
        let scores: BTreeMap<String, Vec<f64>> = [
            ("a".to_string(), vec![0.1, 3.0, 2.0, 0.5]),
            ("r".to_string(), vec![1.0, 2.0]),
        ]
        .into();
        let original: BTreeMap<String, usize> = [("a".into(), 8), ("r".into(), 2)].into();
        let none = BTreeMap::new();
        let sel = Selection {
            allocation: ChannelAllocation::Layerwise,
            ratio: 0.75,
            progress: 1.0,
            original: &original,
            overrides: &none,
            min_keep: 0.0,
            residual: false,
        };
        let keep = select(&groups, &scores, &sel);
        // 8 originally, 75 % removed: 2 left, the two best of the current 4.
        assert_eq!(keep["a"], vec![1, 2]);
        assert!(!keep.contains_key("r"), "residual groups skipped");
        let sel = Selection {
            residual: true,
            ..sel
        };
        assert_eq!(select(&groups, &scores, &sel)["r"], vec![1]);
    }

    #[test]
    fn global_normalises_per_group_and_respects_floors() {
        let groups = [group("a", 4, false), group("b", 4, false)];
        // b's scores are 100x a's: without normalisation a would lose everything.
        let scores: BTreeMap<String, Vec<f64>> = [
            ("a".to_string(), vec![1.0, 2.0, 3.0, 4.0]),
            ("b".to_string(), vec![100.0, 200.0, 300.0, 400.0]),
        ]
        .into();
        let original: BTreeMap<String, usize> = [("a".into(), 4), ("b".into(), 4)].into();
        let none = BTreeMap::new();
        let sel = Selection {
            allocation: ChannelAllocation::Global,
            ratio: 0.5,
            progress: 1.0,
            original: &original,
            overrides: &none,
            min_keep: 0.5,
            residual: true,
        };
        let keep = select(&groups, &scores, &sel);
        assert_eq!(keep["a"], vec![2, 3]);
        assert_eq!(keep["b"], vec![2, 3]);
        // An all-zero group keeps one channel.
        let zero: BTreeMap<String, Vec<f64>> = [("a".to_string(), vec![0.0; 4])].into();
        let sel = Selection {
            ratio: 0.99,
            min_keep: 0.0,
            ..sel
        };
        assert_eq!(select(&groups[..1], &zero, &sel)["a"].len(), 1);
    }
}
