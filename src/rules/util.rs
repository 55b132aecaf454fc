//! Small helpers shared by rules.

use crate::ir::{Graph, NodeId};
use crate::onnx::proto::AttributeProto;

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

/// A float attribute.
pub fn make_attr_f(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(crate::onnx::proto::attribute_proto::AttributeType::Float as i32),
        f: Some(v),
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
