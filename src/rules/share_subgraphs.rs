//! `S003 share-into-subgraphs`: merges constants inside `If`/`Loop`/`Scan` bodies with equal
//! constants elsewhere, through the scoping rules of ONNX.
//!
//! **What:** an initializer or `Constant` of a subgraph whose dtype, dims and bytes equal a
//! top-level constant is dropped, and the subgraph reads the top-level value by name instead
//! (an outer-scope reference, which every subgraph may make). When no top-level copy exists but
//! two or more subgraph constants are equal (the two branches of an `If`, nested bodies), one
//! top-level initializer is created and all of them read it.
//! **Why:** exporters trace each branch separately and repeat every constant in each: silero_vad
//! has dozens of equal `Constant`s across its branches; onnxslim and onnx-simplifier leave
//! subgraph constants alone.
//! **Example:** `If(c) then {k = Constant([1]); y = Add(a, k)} else {k2 = Constant([1]); ...}`
//! with a top-level initializer `one = [1]` → both branches read `one`; their `Constant`s go.
//! **Exact:** yes, bit for bit (equal contents, compared in full after a hash). Left alone, with
//! a reason: a constant that is a subgraph output (runtimes differ on outputs that are outer
//! values), one whose name is defined twice in the model, one whose replacement name is defined
//! inside the same node's subgraphs (it would be shadowed), initializers that are also subgraph
//! inputs, and string or external tensors. The driver refuses the patch if it grows the model.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::ir::graph::has_subgraphs;
use crate::ir::{tensor, Graph, Model, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::visit::{nested_subgraphs, subgraphs_mut};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::constant_to_initializer::constant_value;
use super::share_identical::same_contents;

/// See the module docs.
pub struct ShareIntoSubgraphs;

/// Calls `f` on every subgraph of `n` in the same preorder as [`nested_subgraphs`]. `f` may drop nodes
/// without subgraphs (`Constant`s) but must keep those with, so the numbering stays valid.
fn nested_mut(n: &mut NodeProto, next: &mut usize, f: &mut impl FnMut(usize, &mut GraphProto)) {
    for sub in subgraphs_mut(n) {
        f(*next, sub);
        *next += 1;
        for inner in &mut sub.node {
            nested_mut(inner, next, f);
        }
    }
}

/// Every value name a graph defines (inputs, initializers, node outputs), not recursing.
fn defined(g: &GraphProto) -> impl Iterator<Item = &str> {
    g.input
        .iter()
        .filter_map(|i| i.name.as_deref())
        .chain(g.initializer.iter().filter_map(|t| t.name.as_deref()))
        .chain(
            g.sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().and_then(|v| v.name.as_deref())),
        )
        .chain(
            g.node
                .iter()
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .filter(|s| !s.is_empty())
}

/// A constant defined inside a subgraph of the top-level node `top`.
struct Member {
    top: NodeId,
    sub: usize,
    name: String,
    tensor: TensorProto,
}

/// Equal constants: the top-level value they will read (`None`: a new initializer is hoisted)
/// and the subgraph constants that go.
struct Class {
    target: Option<ValueRef>,
    members: Vec<Member>,
    what: String,
}

/// The tensor with its name cleared, if it may be shared.
fn shareable(t: &TensorProto) -> std::result::Result<TensorProto, &'static str> {
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err("the value is stored externally");
    }
    if t.data_type == Some(crate::onnx::proto::tensor_proto::DataType::String as i32) {
        return Err("string tensors are not shared");
    }
    let mut t = t.clone();
    t.name = None;
    t.doc_string = None;
    t.metadata_props.clear();
    Ok(t)
}

/// Finds the classes and the constants left alone (with reasons).
fn analyse(model: &Model) -> (Vec<Class>, Vec<(NodeId, String)>) {
    let g = &model.graph;
    let tops: Vec<NodeId> = g
        .ops()
        .into_iter()
        .filter(|id| g.node(*id).op().is_some_and(has_subgraphs))
        .collect();
    if tops.is_empty() {
        return (vec![], vec![]);
    }
    // How often each name is defined anywhere in the model, and which names each top node's
    // subgraphs define (for shadowing).
    let mut defs: HashMap<String, usize> = HashMap::new();
    for id in g.topo_order() {
        for slot in 0..g.node(id).num_outputs() {
            let n = g.value_name(ValueRef { node: id, slot });
            if !n.is_empty() {
                *defs.entry(n.to_string()).or_default() += 1;
            }
        }
    }
    let mut inside: HashMap<NodeId, HashSet<String>> = HashMap::new();
    let mut skips = Vec::new();
    let mut members: Vec<Member> = Vec::new();
    for &top in &tops {
        let Some(p) = g.node(top).op() else { continue };
        let mut subs = Vec::new();
        nested_subgraphs(p, &mut subs);
        let names = inside.entry(top).or_default();
        // A nested body may output an outer name; renaming it there would need more care.
        let mut outputs: HashSet<&str> = HashSet::new();
        for sub in &subs {
            for n in defined(sub) {
                *defs.entry(n.to_string()).or_default() += 1;
                names.insert(n.to_string());
            }
            outputs.extend(sub.output.iter().filter_map(|o| o.name.as_deref()));
        }
        for (k, sub) in subs.iter().enumerate() {
            let inputs: HashSet<&str> =
                sub.input.iter().filter_map(|o| o.name.as_deref()).collect();
            let mut found: Vec<(String, std::result::Result<TensorProto, String>)> = Vec::new();
            for t in &sub.initializer {
                let name = t.name.clone().unwrap_or_default();
                let v = if inputs.contains(name.as_str()) {
                    Err("an initializer that is also a subgraph input (a default value)".into())
                } else {
                    shareable(t).map_err(String::from)
                };
                found.push((name, v));
            }
            for n in &sub.node {
                if n.op_type.as_deref() != Some("Constant")
                    || !n.domain.as_deref().unwrap_or("").is_empty()
                    || n.output.len() != 1
                {
                    continue;
                }
                let v = constant_value(n)
                    .map_err(String::from)
                    .and_then(|t| shareable(&t).map_err(String::from));
                found.push((n.output[0].clone(), v));
            }
            for (name, v) in found {
                let v = v.and_then(|t| {
                    if outputs.contains(name.as_str()) {
                        Err(format!("`{name}` is a subgraph output"))
                    } else {
                        Ok(t)
                    }
                });
                match v {
                    Ok(tensor) if !name.is_empty() => members.push(Member {
                        top,
                        sub: k,
                        name,
                        tensor,
                    }),
                    Ok(_) => {}
                    Err(reason) => skips.push((top, format!("`{name}` in a subgraph: {reason}"))),
                }
            }
        }
    }
    // Group by cheap keys and hash, then compare in full.
    type Key = (i32, Vec<i64>, String);
    let key = |t: &TensorProto| -> Key {
        (
            t.data_type.unwrap_or(0),
            t.dims.clone(),
            tensor::content_hash(t),
        )
    };
    let mut top_consts: BTreeMap<Key, Vec<(ValueRef, TensorProto)>> = BTreeMap::new();
    // Hashing every top-level weight is only worth it when a subgraph has a constant to share.
    let tops = if members.is_empty() {
        Vec::new()
    } else {
        g.topo_order()
    };
    for id in tops {
        let v = ValueRef { node: id, slot: 0 };
        if !matches!(g.node(id).kind, NodeKind::Initializer(_) | NodeKind::Op(_)) {
            continue;
        }
        if let Some(t) = g.const_tensor(v) {
            if let Ok(t) = shareable(t) {
                top_consts.entry(key(&t)).or_default().push((v, t));
            }
        }
    }
    // Per key, the members grouped by their full contents.
    type SameContents = Vec<(TensorProto, Vec<Member>)>;
    let mut by_key: BTreeMap<Key, SameContents> = BTreeMap::new();
    for m in members {
        let slot = by_key.entry(key(&m.tensor)).or_default();
        match slot.iter_mut().find(|(b, _)| same_contents(b, &m.tensor)) {
            Some((_, v)) => v.push(m),
            None => slot.push((m.tensor.clone(), vec![m])),
        }
    }
    let mut classes = Vec::new();
    for (k, groups) in by_key {
        for (contents, ms) in groups {
            let target = top_consts
                .get(&k)
                .and_then(|v| v.iter().find(|(_, b)| same_contents(b, &contents)))
                .map(|(v, _)| *v);
            if target.is_none() && ms.len() < 2 {
                continue;
            }
            let target_name = target.map(|v| g.value_name(v).to_string());
            let mut kept = Vec::new();
            for m in ms {
                let top_label = g.node(m.top).label();
                if defs.get(&m.name).copied().unwrap_or(0) > 1 {
                    skips.push((
                        m.top,
                        format!("`{}` is defined more than once in the model", m.name),
                    ));
                } else if target_name
                    .as_ref()
                    .is_some_and(|t| inside.get(&m.top).is_some_and(|s| s.contains(t)))
                {
                    skips.push((
                        m.top,
                        format!(
                            "`{}` equals `{}`, but `{top_label}`'s subgraphs define that name too",
                            m.name,
                            target_name.as_deref().unwrap_or("")
                        ),
                    ));
                } else {
                    kept.push(m);
                }
            }
            if kept.is_empty() || (target.is_none() && kept.len() < 2) {
                continue;
            }
            let names: Vec<String> = kept.iter().map(|m| format!("`{}`", m.name)).collect();
            let bytes = tensor::payload_bytes(&kept[0].tensor);
            let what = match &target_name {
                Some(t) => format!(
                    "subgraph constant{} {} ({bytes} bytes) read `{t}` instead",
                    if kept.len() > 1 { "s" } else { "" },
                    names.join(", ")
                ),
                None => format!(
                    "subgraph constants {} ({bytes} bytes) read one new top-level initializer",
                    names.join(", ")
                ),
            };
            classes.push(Class {
                target,
                members: kept,
                what,
            });
        }
    }
    (classes, skips)
}

/// A name for a hoisted initializer: based on `base`, unused at the top level and in every
/// subgraph.
fn hoisted_name(g: &Graph, base: &str, taken: &HashSet<String>) -> String {
    let mut name = g.fresh_name(&format!("{base}__shared"));
    let mut i = 1;
    while taken.contains(&name) {
        name = g.fresh_name(&format!("{base}__shared{i}"));
        i += 1;
    }
    name
}

impl Rule for ShareIntoSubgraphs {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "S003",
            name: "share-into-subgraphs",
            group: "share",
            summary:
                "make subgraph constants read an equal top-level constant (hoisting one if needed)",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let mut f = Findings::default();
        let analysis = model.graph.memo("share-into-subgraphs", || analyse(model));
        let (classes, skips) = &*analysis;
        for (top, reason) in skips {
            f.skip(model, *top, reason.clone());
        }
        for c in classes {
            let mut tops: Vec<NodeId> = Vec::new();
            for m in &c.members {
                if !tops.contains(&m.top) {
                    tops.push(m.top);
                }
            }
            f.matches.push(Match {
                anchor: tops[0],
                nodes: tops,
                what: c.what.clone(),
            });
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let err = |reason: &str| Error::Rule {
            rule: "share-into-subgraphs".into(),
            reason: reason.into(),
        };
        let analysis = model.graph.memo("share-into-subgraphs", || analyse(model));
        let class = analysis
            .0
            .iter()
            .find(|c| c.what == m.what)
            .ok_or_else(|| err("the constants changed since they were found"))?;
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        let target = match class.target {
            Some(v) => g.value_name(v).to_string(),
            None => {
                let mut taken = HashSet::new();
                for &top in &m.nodes {
                    let mut subs = Vec::new();
                    if let Some(op) = g.node(top).op() {
                        nested_subgraphs(op, &mut subs);
                    }
                    for s in subs {
                        taken.extend(defined(s).map(String::from));
                    }
                }
                let name = hoisted_name(g, &class.members[0].name, &taken);
                let mut t = class.members[0].tensor.clone();
                t.name = Some(name.clone());
                p.add_initializer(t);
                name
            }
        };
        let gone: HashSet<&str> = class.members.iter().map(|m| m.name.as_str()).collect();
        for &top in &m.nodes {
            let Some(old) = g.node(top).op() else {
                return Err(err("the node with subgraphs is gone"));
            };
            let mut node = old.clone();
            let drop_in: HashSet<usize> = class
                .members
                .iter()
                .filter(|mm| mm.top == top)
                .map(|mm| mm.sub)
                .collect();
            let mut next = 0;
            nested_mut(&mut node, &mut next, &mut |k, sub| {
                if drop_in.contains(&k) {
                    sub.initializer
                        .retain(|t| !gone.contains(t.name.as_deref().unwrap_or("")));
                    sub.node.retain(|n| {
                        !(n.op_type.as_deref() == Some("Constant")
                            && n.output.len() == 1
                            && gone.contains(n.output[0].as_str()))
                    });
                }
                sub.value_info
                    .retain(|v| !gone.contains(v.name.as_deref().unwrap_or("")));
                for n in &mut sub.node {
                    for i in &mut n.input {
                        if gone.contains(i.as_str()) {
                            *i = target.clone();
                        }
                    }
                }
            });
            let inputs: Vec<Option<Wire>> = g
                .node_inputs(top)
                .into_iter()
                .map(|v| v.map(Wire::Value))
                .collect();
            let outs = p.add_op(node, &inputs);
            for (slot, w) in outs.into_iter().enumerate() {
                let v = ValueRef { node: top, slot };
                if g.value_name(v).is_empty() {
                    continue;
                }
                p.shunt(v, w);
                p.keep_name(v, w);
            }
            p.remove(top);
        }
        Ok(p)
    }
}
