//! The channel dependency graph: which output channels (or neurons) of which layers must be
//! removed together so that the pruned network stays valid.
//!
//! A model describes its dataflow at channel granularity with a [`GraphBuilder`]: every Conv2d or
//! Linear reads one channel space and writes a new one; BatchNorm, ReLU and pooling keep the
//! space (BatchNorm is recorded because its per-channel parameters shrink with it); a residual
//! `Add` joins the spaces of its inputs into one, because the two tensors are added channel by
//! channel; a channel-major flatten maps each channel to `per` consecutive features of the
//! consumer's input. Union-find over the spaces then yields the [`Group`]s, as Torch-Pruning's
//! dependency graph does for PyTorch models.
//!
//! Invariants: every group lists all layers that write its channels (`producers`, output dim)
//! and all that read them (`consumers`, input dim), so removing channel `c` of a group from all
//! of them keeps every shape consistent. A group that touches the network's input or output
//! (the image channels, the logits) is not prunable.
//!
//! Layer paths are burn module paths (`blocks.3.conv1`), the same as the parameter paths in
//! masks without the trailing `.weight`.

use std::collections::BTreeMap;

/// What to keep of each group: kept channel indices in increasing order, by group name.
pub type ChannelKeep = BTreeMap<String, Vec<usize>>;

/// The channels of coupled layers that are pruned as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The first producer's path, or `residual:` and it for a group joined by an add.
    pub name: String,
    pub width: usize,
    /// Layers (Conv2d, Linear) whose output channels are this group.
    pub producers: Vec<String>,
    /// BatchNorm layers on this group's channels.
    pub norms: Vec<String>,
    /// Layers that read this group's channels, with the number of input features per channel
    /// (1, or `h·w` after a channel-major flatten).
    pub consumers: Vec<(String, usize)>,
    /// Joined by a residual add: several producers share the channel set.
    pub residual: bool,
    /// False for groups that include the network input or its output.
    pub prunable: bool,
}

#[derive(Debug, Clone)]
struct Space {
    width: usize,
    /// The space a flatten was taken from, with the features per channel.
    flat_of: Option<(usize, usize)>,
    residual: bool,
    fixed: bool,
}

/// Records a model's channel dataflow; [`GraphBuilder::groups`] derives the groups.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    spaces: Vec<Space>,
    parent: Vec<usize>,
    producers: Vec<(String, usize)>,
    consumers: Vec<(String, usize)>,
    norms: Vec<(String, usize)>,
}

/// A channel space in a [`GraphBuilder`] (the value between layers, up to channel-preserving
/// ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels(usize);

impl GraphBuilder {
    /// A graph whose input has `width` channels (fixed: images are not pruned).
    pub fn new(width: usize) -> (Self, Channels) {
        let mut g = Self {
            spaces: Vec::new(),
            parent: Vec::new(),
            producers: Vec::new(),
            consumers: Vec::new(),
            norms: Vec::new(),
        };
        let x = g.space(width);
        g.spaces[x.0].fixed = true;
        (g, x)
    }

    fn space(&mut self, width: usize) -> Channels {
        self.spaces.push(Space {
            width,
            flat_of: None,
            residual: false,
            fixed: false,
        });
        self.parent.push(self.parent.len());
        Channels(self.spaces.len() - 1)
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    /// A Conv2d or Linear at `path` reading `input` and writing `width` new channels.
    pub fn layer(&mut self, path: &str, input: Channels, width: usize) -> Channels {
        self.consumers.push((path.to_string(), input.0));
        let out = self.space(width);
        self.producers.push((path.to_string(), out.0));
        out
    }

    /// A BatchNorm at `path` on `x`'s channels.
    pub fn norm(&mut self, path: &str, x: Channels) -> Channels {
        self.norms.push((path.to_string(), x.0));
        x
    }

    /// A residual add: the inputs share one channel set from here on.
    pub fn add(&mut self, inputs: &[Channels]) -> Channels {
        let first = self.root(inputs[0].0);
        self.spaces[first].residual = true;
        for c in &inputs[1..] {
            let r = self.root(c.0);
            if r != first {
                self.parent[r] = first;
                let fixed = self.spaces[r].fixed;
                self.spaces[first].fixed |= fixed;
            }
        }
        inputs[0]
    }

    /// A channel-major flatten of `x` with `per` features per channel.
    pub fn flatten(&mut self, x: Channels, per: usize) -> Channels {
        let width = self.spaces[x.0].width * per;
        let f = self.space(width);
        self.spaces[f.0].flat_of = Some((x.0, per));
        f
    }

    /// Marks `x` as the network output (not prunable).
    pub fn output(&mut self, x: Channels) {
        let r = self.root(x.0);
        self.spaces[r].fixed = true;
    }

    /// The groups, in the order their first producer was recorded. A consumer of a flatten is
    /// listed in the group of the flattened channels, with its `per`.
    pub fn groups(mut self) -> Vec<Group> {
        // A flatten's own space only forwards to the channels it came from.
        let resolve = |g: &mut Self, s: usize| -> (usize, usize) {
            match g.spaces[s].flat_of {
                Some((from, per)) => (g.root(from), per),
                None => (g.root(s), 1),
            }
        };
        let mut by_root: BTreeMap<usize, Group> = BTreeMap::new();
        let mut order = Vec::new();
        for (path, s) in self.producers.clone() {
            let r = self.root(s);
            let space = self.spaces[r].clone();
            let group = by_root.entry(r).or_insert_with(|| {
                order.push(r);
                Group {
                    name: if space.residual {
                        format!("residual:{path}")
                    } else {
                        path.clone()
                    },
                    width: space.width,
                    producers: Vec::new(),
                    norms: Vec::new(),
                    consumers: Vec::new(),
                    residual: space.residual,
                    prunable: !space.fixed,
                }
            });
            group.producers.push(path);
        }
        for (path, s) in self.norms.clone() {
            let r = self.root(s);
            if let Some(g) = by_root.get_mut(&r) {
                g.norms.push(path);
            }
        }
        for (path, s) in self.consumers.clone() {
            let (r, per) = resolve(&mut self, s);
            if let Some(g) = by_root.get_mut(&r) {
                g.consumers.push((path, per));
            }
        }
        order
            .into_iter()
            .filter_map(|r| by_root.remove(&r))
            .collect()
    }
}

/// Per layer, what a structural prune keeps: output channels, input features (expanded through
/// flattens) and BatchNorm channels, by layer path. Layers not listed keep everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerKeep {
    pub outputs: BTreeMap<String, Vec<usize>>,
    pub inputs: BTreeMap<String, Vec<usize>>,
    pub norms: BTreeMap<String, Vec<usize>>,
}

impl LayerKeep {
    /// Spreads each group's kept channels over its members. Groups not in `keep` are untouched.
    pub fn from_groups(groups: &[Group], keep: &ChannelKeep) -> Self {
        let mut out = Self::default();
        for g in groups {
            let Some(k) = keep.get(&g.name) else {
                continue;
            };
            for p in &g.producers {
                out.outputs.insert(p.clone(), k.clone());
            }
            for n in &g.norms {
                out.norms.insert(n.clone(), k.clone());
            }
            for (c, per) in &g.consumers {
                let features = k.iter().flat_map(|&ch| ch * per..(ch + 1) * per).collect();
                out.inputs.insert(c.clone(), features);
            }
        }
        out
    }

    pub fn output(&self, path: &str) -> Option<&[usize]> {
        self.outputs.get(path).map(Vec::as_slice)
    }
    pub fn input(&self, path: &str) -> Option<&[usize]> {
        self.inputs.get(path).map(Vec::as_slice)
    }
    pub fn norm(&self, path: &str) -> Option<&[usize]> {
        self.norms.get(path).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_groups_pair_producer_and_consumer() {
        let (mut g, x) = GraphBuilder::new(784);
        let h1 = g.layer("fc1", x, 300);
        let h2 = g.layer("fc2", h1, 100);
        let y = g.layer("fc3", h2, 10);
        g.output(y);
        let groups = g.groups();
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].name, "fc1");
        assert_eq!(groups[0].consumers, vec![("fc2".to_string(), 1)]);
        assert!(groups[0].prunable && groups[1].prunable);
        assert!(!groups[2].prunable, "the logits are not prunable");
    }

    #[test]
    fn flatten_expands_consumer_features() {
        let (mut g, x) = GraphBuilder::new(1);
        let c = g.layer("conv", x, 3);
        let f = g.flatten(c, 4);
        let y = g.layer("fc", f, 10);
        g.output(y);
        let groups = g.groups();
        assert_eq!(groups[0].consumers, vec![("fc".to_string(), 4)]);
        let keep: ChannelKeep = [("conv".to_string(), vec![0, 2])].into();
        let lk = LayerKeep::from_groups(&groups, &keep);
        assert_eq!(lk.input("fc"), Some(&[0, 1, 2, 3, 8, 9, 10, 11][..]));
        assert_eq!(lk.output("conv"), Some(&[0, 2][..]));
        assert_eq!(lk.output("fc"), None);
    }

    #[test]
    fn add_joins_spaces_and_input_stays_fixed() {
        let (mut g, x) = GraphBuilder::new(3);
        let a = g.layer("a", x, 8);
        let a = g.norm("bn_a", a);
        let b = g.layer("b", a, 8);
        let s = g.add(&[b, a]);
        let y = g.layer("fc", s, 2);
        g.output(y);
        let groups = g.groups();
        assert_eq!(groups.len(), 2);
        let r = &groups[0];
        assert!(r.residual && r.prunable);
        assert_eq!(r.name, "residual:a");
        assert_eq!(r.producers, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(r.norms, vec!["bn_a".to_string()]);
        assert_eq!(
            r.consumers,
            vec![("b".to_string(), 1), ("fc".to_string(), 1)]
        );
        // An add with the network input fixes the joined group.
        let (mut g, x) = GraphBuilder::new(3);
        let a = g.layer("a", x, 3);
        g.add(&[a, x]);
        assert!(!g.groups()[0].prunable);
    }
}
