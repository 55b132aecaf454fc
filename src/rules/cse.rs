//! `C013 eliminate-common-subexpressions`: merges operators that compute the same thing.
//!
//! **What:** two operators of the same type and domain, with byte-identical attributes and the
//! same inputs (the same values, or constant tensors of equal dtype, dims and contents) compute
//! the same outputs: readers of the later one read the earlier one, and the later one goes.
//! **Why:** traced exporters repeat `Shape(x)`, identical slices and identical shape arithmetic.
//! **Example:** `a = Shape(x); b = Shape(x)` → readers of `b` read `a`.
//! **Exact:** yes, bit for bit. Never for random ops, ops with subgraphs, ops outside the default
//! domain or `Constant` nodes (duplicate constants are a `share` concern); never when both
//! outputs' names are pinned (graph outputs, subgraph captures).

use std::collections::HashMap;

use prost::Message;

use crate::error::{Error, Result};
use crate::ir::graph::has_subgraphs;
use crate::ir::{tensor, Graph, Model, NodeId, ValueRef};
use crate::onnx::proto::TensorProto;
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::util::is_random;

/// See the module docs.
pub struct EliminateCommonSubexpressions;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum InKey {
    None,
    Value(ValueRef),
    Const(i32, Vec<i64>, String),
}

fn tensor_bytes(t: &TensorProto) -> Vec<u8> {
    let mut t = t.clone();
    t.name = None;
    t.doc_string = None;
    t.encode_to_vec()
}

fn key(g: &Graph, id: NodeId) -> Option<(String, String, Vec<Vec<u8>>, Vec<InKey>, usize)> {
    let node = g.node(id);
    let p = node.op()?;
    let op = node.op_type();
    if !node.domain().is_empty() || op == "Constant" || is_random(op) || has_subgraphs(p) {
        return None;
    }
    let mut attrs: Vec<Vec<u8>> = p.attribute.iter().map(|a| a.encode_to_vec()).collect();
    attrs.sort();
    let ins = g
        .node_inputs(id)
        .into_iter()
        .map(|i| match i {
            None => InKey::None,
            Some(v) => match g.const_tensor(v) {
                // Large constants are keyed by identity: hashing every weight on every search
                // dominated the run time, and merging equal large weights is `share`'s job.
                Some(t) if tensor::payload_bytes(t) > 4096 => InKey::Value(v),
                Some(t) => InKey::Const(
                    t.data_type.unwrap_or(0),
                    t.dims.clone(),
                    tensor::content_hash(t),
                ),
                None => InKey::Value(v),
            },
        })
        .collect();
    Some((
        op.to_string(),
        node.domain().to_string(),
        attrs,
        ins,
        p.output.len(),
    ))
}

/// Whether `a` and `b` (same key) really read the same inputs (full constant comparison).
fn same_inputs(g: &Graph, a: NodeId, b: NodeId) -> bool {
    let (ia, ib) = (g.node_inputs(a), g.node_inputs(b));
    ia.len() == ib.len()
        && ia.iter().zip(&ib).all(|(x, y)| match (x, y) {
            (None, None) => true,
            (Some(x), Some(y)) if x == y => true,
            (Some(x), Some(y)) => match (g.const_tensor(*x), g.const_tensor(*y)) {
                (Some(s), Some(t)) => tensor_bytes(s) == tensor_bytes(t),
                _ => false,
            },
            _ => false,
        })
}

fn pinned(g: &Graph, v: ValueRef) -> bool {
    g.is_graph_output(v) || g.is_captured(v)
}

fn blocker(g: &Graph, keep: NodeId, dup: NodeId) -> Option<&'static str> {
    for slot in 0..g.node(dup).num_outputs() {
        let d = ValueRef { node: dup, slot };
        let k = ValueRef { node: keep, slot };
        if pinned(g, d) && pinned(g, k) {
            return Some("both outputs are graph outputs or captured");
        }
        if g.is_used(d) && g.node(keep).output_name(slot).is_none() {
            return Some("the first node does not name an output the second one's readers need");
        }
    }
    None
}

impl Rule for EliminateCommonSubexpressions {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C013",
            name: "eliminate-common-subexpressions",
            group: "clean",
            summary: "merge operators with the same type, attributes and inputs",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let mut seen: HashMap<_, Vec<NodeId>> = HashMap::new();
        for id in g.ops() {
            let Some(k) = key(g, id) else { continue };
            let firsts = seen.entry(k).or_default();
            match firsts.iter().find(|a| same_inputs(g, **a, id)) {
                Some(&keep) => match blocker(g, keep, id) {
                    None => f.matches.push(Match {
                        anchor: id,
                        nodes: vec![keep],
                        what: format!(
                            "{} `{}` repeats `{}`",
                            g.node(id).op_type(),
                            g.node(id).label(),
                            g.node(keep).label()
                        ),
                    }),
                    Some(reason) => f.skip(model, id, reason),
                },
                None => firsts.push(id),
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let keep = *m.nodes.first().ok_or_else(|| Error::Rule {
            rule: "eliminate-common-subexpressions".into(),
            reason: "no node to keep".into(),
        })?;
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        for slot in 0..g.node(m.anchor).num_outputs() {
            let d = ValueRef {
                node: m.anchor,
                slot,
            };
            if g.node(m.anchor).output_name(slot).is_some() && g.is_used(d) {
                p.shunt(d, Wire::Value(ValueRef { node: keep, slot }));
            }
        }
        p.remove(m.anchor);
        Ok(p)
    }
}
