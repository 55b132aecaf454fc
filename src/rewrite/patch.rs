//! A patch: nodes to add, values to shunt, nodes to remove. Rules build patches against a
//! read-only graph; only [`Patch::apply`] mutates, and it checks the graph afterwards.

use std::collections::{BTreeSet, HashSet};

use crate::error::{Error, Result};
use crate::ir::graph::{free_names, has_subgraphs, OrderKey};
use crate::ir::{Graph, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::onnx::visit::subgraphs;

/// A value in a patch: one already in the graph, or output `slot` of the patch's new node `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// An existing value.
    Value(ValueRef),
    /// Output `slot` of the `node`-th node added by this patch.
    New {
        /// Index into the patch's added nodes.
        node: usize,
        /// Output slot.
        slot: usize,
    },
}

#[derive(Debug, Clone)]
struct NewNode {
    kind: NodeKind,
    inputs: Vec<Option<Wire>>,
}

/// A set of changes to apply together. Built by rules, applied by the driver.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// What the patch does, for the report.
    pub description: String,
    anchor: Option<NodeId>,
    added: Vec<NewNode>,
    shunts: Vec<(ValueRef, Wire)>,
    removals: Vec<NodeId>,
    rewires: Vec<(NodeId, usize, Option<Wire>)>,
    renames: Vec<(ValueRef, Wire)>,
    declared_dims: Vec<(String, usize, i64)>,
    may_grow: bool,
}

impl Patch {
    /// An empty patch; new nodes are placed where `anchor` was in the original order.
    pub fn new(description: impl Into<String>, anchor: Option<NodeId>) -> Patch {
        Patch {
            description: description.into(),
            anchor,
            ..Default::default()
        }
    }

    /// Lets this patch make the encoded graph larger. Only for a rewrite the caller asked for
    /// knowing it can grow the model (lowrank with a negative minimum saving, used to test
    /// full-rank factors); the driver refuses growth otherwise.
    pub fn allow_growth(&mut self) {
        self.may_grow = true;
    }

    /// Whether [`Patch::allow_growth`] was called.
    pub fn may_grow(&self) -> bool {
        self.may_grow
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.shunts.is_empty()
            && self.removals.is_empty()
            && self.rewires.is_empty()
    }

    /// Adds an initializer; its name is made unique from `tensor.name` on apply.
    pub fn add_initializer(&mut self, tensor: TensorProto) -> Wire {
        self.added.push(NewNode {
            kind: NodeKind::Initializer(tensor),
            inputs: vec![],
        });
        Wire::New {
            node: self.added.len() - 1,
            slot: 0,
        }
    }

    /// Adds an operator reading `inputs` (the names in `node.input` are ignored). Output names in
    /// `node.output` are made unique on apply; use `""` for unused optional outputs. Returns one
    /// wire per output.
    pub fn add_op(&mut self, node: NodeProto, inputs: &[Option<Wire>]) -> Vec<Wire> {
        let n_out = node.output.len();
        self.added.push(NewNode {
            kind: NodeKind::Op(node),
            inputs: inputs.to_vec(),
        });
        let ix = self.added.len() - 1;
        (0..n_out)
            .map(|slot| Wire::New { node: ix, slot })
            .collect()
    }

    /// Makes everything that reads `old` (nodes, subgraphs, graph outputs) read `new` instead.
    /// Graph output names never change: if `old` is a graph output or read by a subgraph, `new`
    /// takes over its name, which requires `old`'s producer to be removed by this patch.
    pub fn shunt(&mut self, old: ValueRef, new: Wire) {
        self.shunts.push((old, new));
    }

    /// Removes `node`. Nothing outside the patch may still read it once shunts are done.
    pub fn remove(&mut self, node: NodeId) {
        if !self.removals.contains(&node) {
            self.removals.push(node);
        }
    }

    /// Once the patch is applied, `new` takes the name of `old`, whose producer the patch must
    /// remove (a no-op if `new` already has that name). Use it to keep value names stable, e.g.
    /// when a `Constant` node becomes an initializer.
    pub fn keep_name(&mut self, old: ValueRef, new: Wire) {
        self.renames.push((old, new));
    }

    /// Once the patch is applied, dim `axis` of the declared shape (`value_info`) of the value
    /// named `name` is `size`: for a rewrite that changes the shape of a value it keeps.
    pub fn set_declared_dim(&mut self, name: &str, axis: usize, size: i64) {
        self.declared_dims.push((name.to_string(), axis, size));
    }

    /// Connects input `slot` of existing `node` to `wire` (`None` disconnects it).
    pub fn rewire(&mut self, node: NodeId, slot: usize, wire: Option<Wire>) {
        self.rewires.push((node, slot, wire));
    }

    /// Applies the patch to `graph` and checks the result. On error the graph may be half
    /// changed: the driver applies patches to a copy.
    pub fn apply(self, graph: &mut Graph) -> Result<()> {
        let bad = |reason: String| Error::Graph { reason };
        let base = match self.anchor {
            Some(a) if graph.contains(a) => graph.node(a).key,
            _ => graph.next_key(),
        };
        let mut new_ids: Vec<NodeId> = Vec::with_capacity(self.added.len());
        for (i, nn) in self.added.iter().enumerate() {
            let mut kind = nn.kind.clone();
            match &mut kind {
                NodeKind::Op(p) => {
                    for o in p.output.iter_mut().filter(|o| !o.is_empty()) {
                        *o = graph.fresh_name(o);
                    }
                    for s in p.input.iter_mut() {
                        s.clear();
                    }
                }
                NodeKind::Initializer(t) => {
                    t.name = Some(graph.fresh_name(t.name.as_deref().unwrap_or("const")))
                }
                _ => return Err(bad("patches may only add operators and initializers".into())),
            }
            let key = OrderKey(base.0, base.1.saturating_add(1 + i as u32));
            new_ids.push(graph.add_node(kind, key)?);
        }
        let resolve = |w: Wire| -> Result<ValueRef> {
            match w {
                Wire::Value(v) => Ok(v),
                Wire::New { node, slot } => new_ids
                    .get(node)
                    .map(|&n| ValueRef { node: n, slot })
                    .ok_or_else(|| bad(format!("patch wire to new node {node} out of range"))),
            }
        };
        for (i, nn) in self.added.iter().enumerate() {
            for (slot, w) in nn.inputs.iter().enumerate() {
                match w {
                    Some(w) => graph.connect(resolve(*w)?, new_ids[i], slot),
                    None => {
                        if let NodeKind::Op(p) = &mut graph.node_mut(new_ids[i]).kind {
                            if p.input.len() <= slot {
                                p.input.resize(slot + 1, String::new());
                            }
                        }
                    }
                }
            }
            if let NodeKind::Op(p) = &graph.node(new_ids[i]).kind {
                if has_subgraphs(p) {
                    let mut free = BTreeSet::new();
                    for sub in subgraphs(p) {
                        free_names(sub, &mut free);
                    }
                    for name in free {
                        let v = graph.producer(&name).ok_or_else(|| {
                            bad(format!(
                                "a new subgraph reads `{name}`, which nothing produces"
                            ))
                        })?;
                        graph.add_capture(v, new_ids[i]);
                    }
                }
            }
        }
        // Producers that may lose their last reader through this patch: collected now, removed
        // at the end if nothing reads them any more, so that no rule leaves orphaned weights.
        let mut orphans: Vec<NodeId> = Vec::new();
        for (node, slot, w) in &self.rewires {
            if let Some(v) = graph.input(*node, *slot) {
                orphans.push(v.node);
            }
            match w {
                Some(w) => graph.connect(resolve(*w)?, *node, *slot),
                None => graph.disconnect(*node, *slot),
            }
        }
        // Shunts: data consumers move now; name-bound readers (graph outputs, subgraph
        // captures) move once the old producer is gone and its name is free.
        let mut name_bound = Vec::new();
        for (old, new) in &self.shunts {
            let new = resolve(*new)?;
            graph.redirect_consumers(*old, new);
            orphans.push(old.node);
            let outputs: Vec<usize> = graph
                .outputs()
                .iter()
                .enumerate()
                .filter(|(_, (v, _))| v == old)
                .map(|(i, _)| i)
                .collect();
            let captured_by = graph.capture_consumers(*old);
            if !outputs.is_empty() || !captured_by.is_empty() {
                name_bound.push((
                    graph.value_name(*old).to_string(),
                    *old,
                    new,
                    outputs,
                    captured_by,
                ));
            }
        }
        let mut renames = Vec::with_capacity(self.renames.len());
        for (old, new) in &self.renames {
            renames.push((graph.value_name(*old).to_string(), *old, resolve(*new)?));
        }
        let removed: HashSet<NodeId> = self.removals.iter().copied().collect();
        for &r in &self.removals {
            if !graph.contains(r) {
                return Err(bad("patch removes a node twice".into()));
            }
            for slot in 0..graph.node(r).num_outputs() {
                let v = ValueRef { node: r, slot };
                if let Some((c, _)) = graph
                    .consumers(v)
                    .into_iter()
                    .find(|(c, _)| !removed.contains(c))
                {
                    return Err(bad(format!(
                        "patch removes `{}` but `{}` still reads it",
                        graph.node(r).label(),
                        graph.node(c).label()
                    )));
                }
            }
        }
        for &r in &self.removals {
            orphans.extend(graph.node_inputs(r).into_iter().flatten().map(|v| v.node));
            orphans.extend(graph.captures(r).into_iter().map(|v| v.node));
            graph.remove_node(r);
        }
        for (name, old, new, outputs, captured_by) in name_bound {
            if graph.contains(old.node) {
                return Err(bad(format!(
                    "shunting `{name}`, a graph output or subgraph capture, needs its producer removed"
                )));
            }
            let target = if graph.is_graph_output(new) || graph.is_captured(new) || {
                let k = &graph.node(new.node).kind;
                !matches!(k, NodeKind::Op(_) | NodeKind::Initializer(_))
            } {
                // `new` keeps its own name elsewhere: forward it under the old name.
                let mut id = NodeProto {
                    op_type: Some("Identity".into()),
                    name: Some(graph.fresh_name(&format!("{name}_identity"))),
                    output: vec![name.clone()],
                    ..Default::default()
                };
                id.input = vec![String::new()];
                let key = graph.node(new.node).key;
                let nid =
                    graph.add_node(NodeKind::Op(id), OrderKey(key.0, key.1.saturating_add(1)))?;
                graph.connect(new, nid, 0);
                ValueRef { node: nid, slot: 0 }
            } else {
                graph.rename_value(new, &name)?;
                new
            };
            for i in outputs {
                graph.set_output(i, target);
            }
            for c in captured_by {
                graph.add_capture(target, c);
            }
        }
        for (name, old, new) in renames {
            if graph.contains(old.node) {
                return Err(bad(format!(
                    "keeping the name `{name}` needs its old producer removed"
                )));
            }
            if !name.is_empty() && graph.value_name(new) != name {
                graph.rename_value(new, &name)?;
            }
        }
        collect_orphans(graph, orphans);
        graph.set_declared_dims(&self.declared_dims);
        graph.check()
    }
}

/// Removes, transitively, the nodes in `candidates` that nothing reads any more: initializers
/// and pure default-domain operators. Graph inputs, custom-domain operators and nodes with
/// subgraphs stay, as [`crate::rules::remove_dead`] would leave them.
fn collect_orphans(graph: &mut Graph, mut candidates: Vec<NodeId>) {
    while let Some(c) = candidates.pop() {
        if !graph.contains(c) {
            continue;
        }
        let node = graph.node(c);
        let removable = match &node.kind {
            NodeKind::Initializer(_) | NodeKind::SparseInitializer(_) => true,
            NodeKind::Op(p) => node.domain().is_empty() && !has_subgraphs(p),
            NodeKind::Input { .. } => false,
        };
        if !removable {
            continue;
        }
        let used = (0..node.num_outputs()).any(|slot| graph.is_used(ValueRef { node: c, slot }));
        if used {
            continue;
        }
        candidates.extend(graph.node_inputs(c).into_iter().flatten().map(|v| v.node));
        graph.remove_node(c);
    }
}
