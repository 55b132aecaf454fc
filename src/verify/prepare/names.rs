//! Subgraph and value-name utilities over ONNX graphs, and inlining the taken branch of an `If`.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::onnx::proto::{GraphProto, NodeProto};
use crate::onnx::visit::{subgraphs, subgraphs_mut};

pub(super) fn is_if(node: &NodeProto) -> bool {
    node.op_type.as_deref() == Some("If")
        && matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

pub(super) fn node_label(node: &NodeProto) -> String {
    match node.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => node.output.first().cloned().unwrap_or_default(),
    }
}

/// Names defined at the top level of `g`: inputs, initializers and node outputs.
fn defined_names(g: &GraphProto) -> HashSet<String> {
    let mut s: HashSet<String> = HashSet::new();
    s.extend(g.input.iter().filter_map(|i| i.name.clone()));
    s.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
    s.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|t| t.values.as_ref().and_then(|v| v.name.clone())),
    );
    for n in &g.node {
        s.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    s
}

/// Names `g` uses but does not define (the outer-scope values a subgraph captures).
fn free_names(g: &GraphProto) -> HashSet<String> {
    let local = defined_names(g);
    let mut refs: HashSet<String> = HashSet::new();
    for n in &g.node {
        refs.extend(node_uses(n));
    }
    refs.extend(g.output.iter().filter_map(|o| o.name.clone()));
    refs.retain(|r| !r.is_empty() && !local.contains(r));
    refs
}

/// Every value `node` reads: its inputs and what its subgraphs capture.
pub(super) fn node_uses(node: &NodeProto) -> HashSet<String> {
    let mut s: HashSet<String> = node
        .input
        .iter()
        .filter(|i| !i.is_empty())
        .cloned()
        .collect();
    for g in subgraphs(node) {
        s.extend(free_names(g));
    }
    s
}

/// Every value and node name anywhere in `g`, subgraphs included.
fn all_names(g: &GraphProto, values: &mut HashSet<String>, nodes: &mut HashSet<String>) {
    values.extend(defined_names(g));
    values.extend(g.output.iter().filter_map(|o| o.name.clone()));
    for n in &g.node {
        values.extend(n.input.iter().cloned());
        if let Some(name) = &n.name {
            nodes.insert(name.clone());
        }
        for sg in subgraphs(n) {
            all_names(sg, values, nodes);
        }
    }
}

/// Renames the outer-scope references of subgraph `g` per `map`, honouring names `g` redefines.
fn rename_refs(g: &mut GraphProto, map: &HashMap<String, String>) {
    let local = defined_names(g);
    let eff: HashMap<String, String> = map
        .iter()
        .filter(|(k, _)| !local.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if eff.is_empty() {
        return;
    }
    for n in &mut g.node {
        for i in &mut n.input {
            if let Some(r) = eff.get(i) {
                *i = r.clone();
            }
        }
        subgraphs_mut(n).for_each(|sg| rename_refs(sg, &eff));
    }
    for o in &mut g.output {
        if let Some(r) = o.name.as_ref().and_then(|n| eff.get(n)) {
            o.name = Some(r.clone());
        }
    }
}

fn fresh(base: &str, used: &mut HashSet<String>) -> String {
    let mut k = 1usize;
    loop {
        let cand = format!("{base}__inlined{k}");
        if used.insert(cand.clone()) {
            return cand;
        }
        k += 1;
    }
}

/// Replaces the `If` node at `idx` of the top-level graph by the nodes of its taken branch.
pub(super) fn inline_if(graph: &mut GraphProto, idx: usize, take_then: bool) -> Result<()> {
    let node = graph.node.remove(idx);
    let attr_name = if take_then {
        "then_branch"
    } else {
        "else_branch"
    };
    let mut branch = node
        .attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(attr_name))
        .and_then(|a| a.g.clone())
        .ok_or_else(|| Error::Node {
            node: node_label(&node),
            op: "If".into(),
            reason: format!("no `{attr_name}` graph"),
        })?;
    let mut used_values = HashSet::new();
    let mut used_nodes = HashSet::new();
    all_names(graph, &mut used_values, &mut used_nodes);
    used_values.extend(node.output.iter().cloned());

    let produced: HashSet<String> = branch
        .node
        .iter()
        .flat_map(|n| n.output.iter().filter(|o| !o.is_empty()).cloned())
        .collect();
    let mut map: HashMap<String, String> = HashMap::new();
    for (i, out) in branch.output.iter().enumerate() {
        let Some(bo) = out.name.as_ref() else {
            continue;
        };
        let Some(target) = node.output.get(i).filter(|t| !t.is_empty()) else {
            continue;
        };
        if produced.contains(bo) && !map.contains_key(bo) {
            map.insert(bo.clone(), target.clone());
        }
    }
    for d in defined_names(&branch) {
        if !map.contains_key(&d) && used_values.contains(&d) {
            let f = fresh(&d, &mut used_values);
            map.insert(d, f);
        } else {
            used_values.insert(d);
        }
    }
    let rename = |s: &mut String| {
        if let Some(r) = map.get(s.as_str()) {
            *s = r.clone();
        }
    };
    for n in &mut branch.node {
        n.input.iter_mut().for_each(rename);
        n.output.iter_mut().for_each(rename);
        subgraphs_mut(n).for_each(|sg| rename_refs(sg, &map));
        if let Some(name) = n.name.as_mut().filter(|n| !n.is_empty()) {
            if !used_nodes.insert(name.clone()) {
                *name = fresh(name, &mut used_nodes);
            }
        }
    }
    for t in &mut branch.initializer {
        if let Some(n) = t.name.as_mut() {
            rename(n);
        }
    }
    for s in &mut branch.sparse_initializer {
        if let Some(n) = s.values.as_mut().and_then(|v| v.name.as_mut()) {
            rename(n);
        }
    }
    let mut new_nodes = std::mem::take(&mut branch.node);
    for (i, out) in branch.output.iter().enumerate() {
        let Some(target) = node.output.get(i).filter(|t| !t.is_empty()) else {
            continue;
        };
        let Some(bo) = out.name.as_ref() else {
            return Err(Error::Node {
                node: node_label(&node),
                op: "If".into(),
                reason: format!("output {i} of `{attr_name}` has no name"),
            });
        };
        let src = map.get(bo).cloned().unwrap_or_else(|| bo.clone());
        if &src != target {
            new_nodes.push(NodeProto {
                input: vec![src],
                output: vec![target.clone()],
                name: Some(fresh(
                    &format!("{}_out{i}", node_label(&node)),
                    &mut used_nodes,
                )),
                op_type: Some("Identity".into()),
                ..Default::default()
            });
        }
    }
    graph.initializer.append(&mut branch.initializer);
    graph
        .sparse_initializer
        .append(&mut branch.sparse_initializer);
    graph.node.splice(idx..idx, new_nodes);
    Ok(())
}
