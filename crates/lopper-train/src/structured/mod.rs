//! Structured pruning: whole neurons, channels and filters removed physically, so the result is
//! a smaller dense network that is faster on any engine.
//!
//! Flow of one prune event (driven by the trainer from the recipe's `[structured]` table):
//! the model describes its channel dataflow ([`Classifier::channel_groups`], built with
//! [`graph::GraphBuilder`]); channels are scored ([`score`]); [`select`] picks the survivors per
//! group; [`Classifier::shrink_channels`] rebuilds every member layer with only those channels.
//! Removing channel `c` of a group from all its producers, BatchNorms and consumers is exact
//! when the channel's output is zero (weights, bias, γ and β zero): tested on the ResNet with
//! residual groups, and through the exported `.lop`.
//!
//! The events are recorded ([`ChannelHistory`], in the checkpoint's `state.json`), so resume
//! and export rebuild the shrunk shapes from the zoo's full-size model before loading weights.

pub mod event;
pub mod graph;
pub mod score;
pub mod select;
pub mod spec;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use graph::{ChannelKeep, Group, LayerKeep};
pub use score::Importance;
pub use select::ChannelAllocation;
pub use spec::StructuredSpec;

use crate::model::Classifier;

/// The structural prune events of a run: the original group widths and, per event, the
/// channels each pruned group kept (indices into the group's width at that event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelHistory {
    pub original: BTreeMap<String, usize>,
    pub events: Vec<ChannelKeep>,
}

/// A recorded event that does not fit the model it is replayed on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("structured prune event {event}: group '{group}': {reason}")]
pub struct ReplayError {
    pub event: usize,
    pub group: String,
    pub reason: String,
}

/// `model` with `keep`'s channels only (the groups not named keep all theirs).
pub fn prune_channels<M: Classifier>(model: &M, keep: &ChannelKeep) -> M {
    let groups = model.channel_groups();
    model.shrink_channels(&LayerKeep::from_groups(&groups, keep))
}

/// Total channels over the prunable groups.
pub fn channel_count(groups: &[Group]) -> usize {
    groups.iter().filter(|g| g.prunable).map(|g| g.width).sum()
}

impl ChannelHistory {
    /// Replays the events on the full-size `model`, checking every index first (the history
    /// comes from a file).
    /// An L0 model is replayed without its gates: its shrunk checkpoint has none.
    pub fn replay<M: Classifier>(&self, model: M) -> Result<M, ReplayError> {
        let mut model = if self.events.is_empty() {
            model
        } else {
            model.plain()
        };
        for (event, keep) in self.events.iter().enumerate() {
            let groups = model.channel_groups();
            for (name, idx) in keep {
                let bad = |reason: String| ReplayError {
                    event,
                    group: name.clone(),
                    reason,
                };
                let g = groups
                    .iter()
                    .find(|g| &g.name == name)
                    .ok_or_else(|| bad("no such group in this model".into()))?;
                if !g.prunable {
                    return Err(bad("the group is not prunable".into()));
                }
                if idx.is_empty() || idx.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(bad(
                        "kept channels must be non-empty and strictly increasing".into(),
                    ));
                }
                if idx.last().is_some_and(|&c| c >= g.width) {
                    return Err(bad(format!(
                        "channel {} is outside the group's {} channels",
                        idx[idx.len() - 1],
                        g.width
                    )));
                }
            }
            model = model.shrink_channels(&LayerKeep::from_groups(&groups, keep));
        }
        Ok(model)
    }

    /// `model` (a full-size zoo model) with the shapes the checkpoint in `dir` has: the events
    /// of its `state.json` replayed, or unchanged when there are none. A replay error is the
    /// event's message; the caller names the file.
    pub fn template_for<M: Classifier>(dir: &Path, model: M) -> Result<M, String> {
        match Self::from_dir(dir)? {
            Some(h) => h.replay(model).map_err(|e| e.to_string()),
            None => Ok(model),
        }
    }

    /// The history in a training folder's `state.json`, if it has one with structured events.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, String> {
        let path = dir.join("state.json");
        if !path.exists() {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Partial {
            #[serde(default)]
            channels: Option<ChannelHistory>,
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let p: Partial = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a lopper training state: {e}", path.display()))?;
        Ok(p.channels.filter(|c| !c.events.is_empty()))
    }
}
