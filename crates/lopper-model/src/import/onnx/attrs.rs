//! Attribute and input access for one ONNX node, with errors that name what is missing.

use crate::onnx::proto::{AttributeProto, NodeProto};

pub(super) struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    pub(super) fn new(node: &'a NodeProto) -> Self {
        Attrs { node }
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub(super) fn int(&self, name: &str, default: i64) -> i64 {
        self.get(name).and_then(|a| a.i).unwrap_or(default)
    }

    pub(super) fn float(&self, name: &str, default: f32) -> f32 {
        self.get(name).and_then(|a| a.f).unwrap_or(default)
    }

    pub(super) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }

    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    pub(super) fn tensor(&self, name: &str) -> Option<&'a crate::onnx::proto::TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }

    pub(super) fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }

    /// Attribute names this node sets that are not in `known` (refused rather than ignored, so
    /// an option lopper does not implement never changes results silently).
    pub(super) fn unknown(&self, known: &[&str]) -> Option<String> {
        self.node
            .attribute
            .iter()
            .map(|a| a.name().to_string())
            .find(|n| !known.contains(&n.as_str()))
    }
}
