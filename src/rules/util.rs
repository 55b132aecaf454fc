//! Small helpers shared by rules.

use crate::ir::graph::small_const_key;
use crate::ir::{tensor, Graph, Model, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};
use crate::rewrite::{Findings, Match, Patch, Wire};

/// Integer attribute `name` of `node`, or `default`.
pub fn attr_i(graph: &Graph, node: NodeId, name: &str, default: i64) -> i64 {
    graph
        .node(node)
        .attr(name)
        .and_then(|a| a.i)
        .unwrap_or(default)
}

/// Float attribute `name` of `node`, or `default`.
pub fn attr_f(graph: &Graph, node: NodeId, name: &str, default: f32) -> f32 {
    graph
        .node(node)
        .attr(name)
        .and_then(|a| a.f)
        .unwrap_or(default)
}

/// Integer-list attribute `name` of `node`, if present.
pub fn attr_ints<'a>(graph: &'a Graph, node: NodeId, name: &str) -> Option<&'a [i64]> {
    graph.node(node).attr(name).map(|a| a.ints.as_slice())
}

/// An integer attribute.
pub fn make_attr_i(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// An integer-list attribute.
pub fn make_attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// Whether `node` is an operator of the default ONNX domain with type `op`.
pub fn is_op(graph: &Graph, node: NodeId, op: &str) -> bool {
    let n = graph.node(node);
    n.op().is_some() && n.domain().is_empty() && n.op_type() == op
}

/// Why `node` cannot be bypassed by making every reader of its output 0 read `src` instead, or
/// `None` if it can. Bypassing fails only when both names are pinned: the output is a graph
/// output or captured by a subgraph, and `src` is a graph input, a graph output or captured.
pub fn bypass_blocker(graph: &Graph, node: NodeId, src: ValueRef) -> Option<&'static str> {
    let out = ValueRef { node, slot: 0 };
    let name_bound = graph.is_graph_output(out) || graph.is_captured(out);
    let src_fixed = graph.is_graph_output(src)
        || graph.is_captured(src)
        || !matches!(
            graph.node(src.node).kind,
            NodeKind::Op(_) | NodeKind::Initializer(_)
        );
    if name_bound && src_fixed {
        return Some(
            "its output is a graph output or captured, and its input's name cannot change",
        );
    }
    if (1..graph.node(node).num_outputs()).any(|s| graph.is_used(ValueRef { node, slot: s })) {
        return Some("another of its outputs is used");
    }
    None
}

/// Records the bypass of `node` by `src` as a match described by `what`, or as a skip when
/// [`bypass_blocker`] says it cannot be done.
pub fn match_bypass(f: &mut Findings, model: &Model, node: NodeId, src: ValueRef, what: String) {
    match bypass_blocker(&model.graph, node, src) {
        Some(reason) => f.skip(model, node, reason),
        None => f.matches.push(Match {
            anchor: node,
            nodes: vec![],
            what,
        }),
    }
}

/// The patch that removes `node` and makes the readers of its output 0 read `src`.
pub fn bypass(description: String, node: NodeId, src: ValueRef) -> Patch {
    let mut p = Patch::new(description, Some(node));
    p.shunt(ValueRef { node, slot: 0 }, Wire::Value(src));
    p.remove(node);
    p
}

/// The constant tensor behind input `slot` of `node`.
pub fn const_input(graph: &Graph, node: NodeId, slot: usize) -> Option<&TensorProto> {
    graph.const_tensor(graph.input(node, slot)?)
}

/// Input `slot` of `node` as constant integers.
pub fn const_ints(graph: &Graph, node: NodeId, slot: usize) -> Option<Vec<i64>> {
    let t = const_input(graph, node, slot)?;
    Some(tensor::to_i64(t).ok()?.iter().copied().collect())
}

/// Whether `v` feeds exactly one node input and nothing else (no graph output, no capture).
pub fn single_use(graph: &Graph, v: ValueRef) -> bool {
    graph.consumers(v).len() == 1 && !graph.is_graph_output(v) && !graph.is_captured(v)
}

/// Ops of the default domain whose result is random (the op table's [`Purity::Random`]): never
/// folded, never deduplicated.
///
/// [`Purity::Random`]: crate::ops::Purity::Random
pub fn is_random(op: &str) -> bool {
    crate::ops::lookup("", op, None).is_some_and(|d| d.purity == crate::ops::Purity::Random)
}

/// A new operator node of the default domain.
pub fn make_node(op: &str, name: &str, n_inputs: usize, outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: vec![String::new(); n_inputs],
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Whether every element of `t` (any numeric type) equals `x`.
pub fn all_equal(t: &TensorProto, x: f64) -> bool {
    if let Ok(a) = tensor::to_f32(t) {
        return a.iter().all(|v| *v as f64 == x);
    }
    if let Ok(a) = tensor::to_i64(t) {
        return a.iter().all(|v| *v as f64 == x);
    }
    false
}

/// An existing initializer with the same dtype, dims and contents as `t`, to reuse instead of
/// adding a copy (only small tensors are compared): the one named as `t` if it is equal (what
/// an earlier patch of a batch added), else the first equal one in graph order. A hash lookup,
/// not a walk of the graph ([`Graph::small_consts`]).
pub fn existing_const(graph: &Graph, t: &TensorProto) -> Option<ValueRef> {
    let key = small_const_key(t)?;
    let named = t.name.as_deref().and_then(|n| graph.producer(n));
    if let Some(v) = named.filter(|v| {
        matches!(&graph.node(v.node).kind, NodeKind::Initializer(u)
            if small_const_key(u).as_ref() == Some(&key))
    }) {
        return Some(v);
    }
    let node = *graph.small_consts().get(&key)?;
    Some(ValueRef { node, slot: 0 })
}

/// `t` as a wire: an existing equal initializer if there is one, else a new one added to `patch`.
pub fn const_wire(graph: &Graph, patch: &mut Patch, t: TensorProto) -> Wire {
    match existing_const(graph, &t) {
        Some(v) => Wire::Value(v),
        None => patch.add_initializer(t),
    }
}

/// `Add` nodes (in topological order) with an input produced by an `op` node: the candidates of
/// the rules that fold a following Add into the op.
pub fn adds_after(graph: &Graph, op: &str) -> Vec<NodeId> {
    graph
        .ops()
        .into_iter()
        .filter(|id| is_op(graph, *id, "Add"))
        .filter(|id| {
            graph
                .node_inputs(*id)
                .iter()
                .flatten()
                .any(|v| is_op(graph, v.node, op))
        })
        .collect()
}
