//! Walks every tensor of a model: initializers, sparse initializers, tensor attributes (including
//! `Constant` values), subgraphs, functions and training graphs.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, SparseTensorProto, TensorProto,
};

/// Calls `f` on every [`TensorProto`] held anywhere in `model`, depth first; stops at the first error.
pub fn for_each_tensor_mut<E>(
    model: &mut ModelProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(g) = model.graph.as_mut() {
        graph_tensors_mut(g, f)?;
    }
    for func in &mut model.functions {
        for node in &mut func.node {
            node_tensors_mut(node, f)?;
        }
    }
    for ti in &mut model.training_info {
        for g in [&mut ti.initialization, &mut ti.algorithm]
            .into_iter()
            .flatten()
        {
            graph_tensors_mut(g, f)?;
        }
    }
    Ok(())
}

/// Calls `f` on every tensor in `graph` and its subgraphs.
pub fn graph_tensors_mut<E>(
    graph: &mut GraphProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    for t in &mut graph.initializer {
        f(t)?;
    }
    for s in &mut graph.sparse_initializer {
        sparse_mut(s, f)?;
    }
    for node in &mut graph.node {
        node_tensors_mut(node, f)?;
    }
    Ok(())
}

/// Calls `f` on every tensor in the attributes of `node`, subgraphs included.
pub fn node_tensors_mut<E>(
    node: &mut NodeProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    for a in &mut node.attribute {
        attribute_tensors_mut(a, f)?;
    }
    Ok(())
}

fn attribute_tensors_mut<E>(
    a: &mut AttributeProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(t) = a.t.as_mut() {
        f(t)?;
    }
    for t in &mut a.tensors {
        f(t)?;
    }
    if let Some(s) = a.sparse_tensor.as_mut() {
        sparse_mut(s, f)?;
    }
    for s in &mut a.sparse_tensors {
        sparse_mut(s, f)?;
    }
    if let Some(g) = a.g.as_mut() {
        graph_tensors_mut(g, f)?;
    }
    for g in &mut a.graphs {
        graph_tensors_mut(g, f)?;
    }
    Ok(())
}

fn sparse_mut<E>(
    s: &mut SparseTensorProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<(), E>,
) -> Result<(), E> {
    if let Some(t) = s.values.as_mut() {
        f(t)?;
    }
    if let Some(t) = s.indices.as_mut() {
        f(t)?;
    }
    Ok(())
}

/// The subgraphs held directly by `node`'s attributes (`g`, then `graphs`), in attribute order.
pub fn subgraphs(node: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    node.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
}

/// [`subgraphs`], mutably.
pub fn subgraphs_mut(node: &mut NodeProto) -> impl Iterator<Item = &mut GraphProto> {
    node.attribute
        .iter_mut()
        .flat_map(|a| a.g.iter_mut().chain(a.graphs.iter_mut()))
}

/// Every subgraph under `node`, nested ones included, in preorder (a body before the bodies of
/// its own nodes).
pub fn nested_subgraphs<'a>(node: &'a NodeProto, out: &mut Vec<&'a GraphProto>) {
    for sub in subgraphs(node) {
        out.push(sub);
        for inner in &sub.node {
            nested_subgraphs(inner, out);
        }
    }
}
