//! A patch: nodes to add, values to shunt, nodes to remove. Rules build patches against a
//! read-only graph; only [`Patch::apply`] mutates, and it checks the graph afterwards.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, OnceLock};

use petgraph::graph::NodeIndex;
use petgraph::Direction;
use prost::Message;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::error::{Error, Result};
use crate::ir::facts::{Facts, FactsUndo};
use crate::ir::graph::{free_names, has_subgraphs, OrderKey};
use crate::ir::{Edge, Graph, Node, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::{NodeProto, TensorProto, ValueInfoProto};
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
    declared_types: Vec<(String, i32)>,
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

    /// Adds an initializer; its name is made unique from `tensor.name` on apply. A large payload
    /// the tensor alone owns moves to the spill file ([`crate::ir::spill`]): rules make new
    /// weights one tensor at a time, and the model's new weights stay page cache, not heap.
    pub fn add_initializer(&mut self, mut tensor: TensorProto) -> Wire {
        tensor.raw_data = tensor.raw_data.take().map(crate::ir::spill::spill);
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

    /// Once the patch is applied, the declared element type (`value_info`) of the value named
    /// `name` is `elem_type`: for a rewrite that changes the type of a value it keeps.
    pub fn set_declared_type(&mut self, name: &str, elem_type: i32) {
        self.declared_types.push((name.to_string(), elem_type));
    }

    /// Connects input `slot` of existing `node` to `wire` (`None` disconnects it).
    pub fn rewire(&mut self, node: NodeId, slot: usize, wire: Option<Wire>) {
        self.rewires.push((node, slot, wire));
    }

    /// Applies the patch to `graph` and checks the result. On error the graph may be half
    /// changed: the driver applies patches to a copy, or takes them back with an [`Undo`].
    pub fn apply(self, graph: &mut Graph) -> Result<()> {
        let mut log = Undo::new(graph);
        self.apply_logged(graph, &mut log)?;
        graph.check()
    }

    /// Existing nodes this patch changes (removes, rewires, moves the readers of, takes a name
    /// from; its anchor too), and existing nodes it only wires to. The driver defers a patch
    /// whose nodes an earlier patch of the same batch changed.
    pub(crate) fn footprint(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut changes: Vec<NodeId> = self.removals.clone();
        changes.extend(self.anchor);
        changes.extend(self.rewires.iter().map(|(n, _, _)| *n));
        changes.extend(self.shunts.iter().map(|(old, _)| old.node));
        changes.extend(self.renames.iter().map(|(old, _)| old.node));
        let reads = self
            .added
            .iter()
            .flat_map(|n| n.inputs.iter().flatten())
            .chain(self.rewires.iter().filter_map(|(_, _, w)| w.as_ref()))
            .chain(self.shunts.iter().map(|(_, w)| w))
            .chain(self.renames.iter().map(|(_, w)| w))
            .filter_map(|w| match w {
                Wire::Value(v) => Some(v.node),
                Wire::New { .. } => None,
            })
            .collect();
        (changes, reads)
    }

    /// Applies the patch to `graph` without the final structural check, recording every change
    /// in `log` so that [`Undo::rollback`] can take it back (also after an error half way) and
    /// [`Undo::growth`] can measure it.
    pub(crate) fn apply_logged(self, graph: &mut Graph, log: &mut Undo) -> Result<()> {
        let bad = |reason: String| Error::Graph { reason };
        log.facts = graph.facts.take();
        let base = match self.anchor {
            Some(a) if graph.contains(a) => graph.node(a).key,
            _ => log.next_key(graph),
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
            new_ids.push(log.add_node(graph, kind, key)?);
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
                    Some(w) => log.connect(graph, resolve(*w)?, new_ids[i], slot),
                    None => {
                        if let NodeKind::Op(p) = &mut log.node_mut(graph, new_ids[i]).kind {
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
                        log.add_capture(graph, v, new_ids[i]);
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
                Some(w) => log.connect(graph, resolve(*w)?, *node, *slot),
                None => log.disconnect(graph, *node, *slot),
            }
        }
        // Shunts: data consumers move now; name-bound readers (graph outputs, subgraph
        // captures) move once the old producer is gone and its name is free.
        let mut name_bound = Vec::new();
        for (old, new) in &self.shunts {
            let new = resolve(*new)?;
            log.redirect_consumers(graph, *old, new);
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
            log.remove_node(graph, r);
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
                let nid = log.add_node(
                    graph,
                    NodeKind::Op(id),
                    OrderKey(key.0, key.1.saturating_add(1)),
                )?;
                log.connect(graph, new, nid, 0);
                ValueRef { node: nid, slot: 0 }
            } else {
                log.rename_value(graph, new, &name)?;
                new
            };
            for i in outputs {
                log.set_output(graph, i, target);
            }
            // A reader the patch removed (replaced by a new node, which captured by itself)
            // reads nothing any more.
            for c in captured_by {
                if graph.contains(c) {
                    log.add_capture(graph, target, c);
                }
            }
        }
        for (name, old, new) in renames {
            if graph.contains(old.node) {
                return Err(bad(format!(
                    "keeping the name `{name}` needs its old producer removed"
                )));
            }
            if !name.is_empty() && graph.value_name(new) != name {
                log.rename_value(graph, new, &name)?;
            }
        }
        collect_orphans(graph, log, orphans);
        log.set_declared_dims(graph, &self.declared_dims);
        log.set_declared_types(graph, &self.declared_types);
        log.update_facts(graph);
        Ok(())
    }
}

/// Whether anything reads `v`, as [`Graph::is_used`], but stopping at the first reader: a
/// constant shared by every node of a graph is a candidate of every patch that removes one.
fn has_reader(graph: &Graph, v: ValueRef) -> bool {
    graph
        .g
        .edges_directed(v.node.0, Direction::Outgoing)
        .any(|e| match *e.weight() {
            Edge::Data { out, .. } | Edge::Capture { out } => out == v.slot,
        })
        || graph.is_graph_output(v)
}

/// Removes, transitively, the nodes in `candidates` that nothing reads any more: initializers
/// and pure default-domain operators. Graph inputs, custom-domain operators and nodes with
/// subgraphs stay, as [`crate::rules::remove_dead`] would leave them.
fn collect_orphans(graph: &mut Graph, log: &mut Undo, mut candidates: Vec<NodeId>) {
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
        let used =
            (0..node.num_outputs()).any(|slot| has_reader(graph, ValueRef { node: c, slot }));
        if used {
            continue;
        }
        candidates.extend(graph.node_inputs(c).into_iter().flatten().map(|v| v.node));
        log.remove_node(graph, c);
    }
}

/// How many nodes a patch's update of the facts may infer again ([`Facts::update`]): this many,
/// plus [`UPDATE_PER_NODE`] per node the patch changed.
const UPDATE_BASE: usize = 256;
/// See [`UPDATE_BASE`].
const UPDATE_PER_NODE: usize = 8;

/// One change [`Patch::apply_logged`] made, with what taking it back needs.
#[derive(Debug)]
enum Change {
    Added(NodeId),
    Removed {
        id: NodeId,
        node: Arc<Node>,
        edges: Vec<(NodeIndex, NodeIndex, Edge)>,
    },
    Weight {
        id: NodeId,
        old: Arc<Node>,
    },
    EdgeAdded(NodeIndex, NodeIndex, Edge),
    EdgeRemoved(NodeIndex, NodeIndex, Edge),
    Output(usize, ValueRef),
    Name(String, Option<ValueRef>),
    ValueInfo(usize, ValueInfoProto),
    NextMajor(u64),
}

/// What one patch changed in a graph, recorded as it was applied: enough to measure its growth
/// from the nodes it touched alone ([`Undo::growth`]) and to take it back ([`Undo::rollback`]),
/// each in time proportional to the patch, not to the graph.
#[derive(Debug)]
pub(crate) struct Undo {
    changes: Vec<Change>,
    /// Each node whose weight, incoming edges or inputs' names the patch changed: its weight
    /// before the first such change (`None` if the patch added it) and its encoded bytes then.
    before: FxHashMap<NodeId, (Option<Arc<Node>>, u64)>,
    /// Nodes whose weight is already saved in `changes` (once per patch is enough).
    saved: FxHashSet<NodeId>,
    value_info_edits: i64,
    dirty: bool,
    /// The graph's facts as the patch found them, taken out while it applies (every mutation
    /// drops them) and brought up to date at its end ([`Facts::update`]), when it had some.
    facts: Option<Arc<Facts>>,
    /// What takes that update back.
    facts_undo: Option<FactsUndo>,
    consts: OnceLock<Arc<crate::ir::graph::SmallConsts>>,
    memo: crate::ir::graph::Memo,
}

impl Undo {
    /// An empty record for a patch about to be applied to `graph`.
    pub(crate) fn new(graph: &Graph) -> Undo {
        Undo {
            changes: Vec::new(),
            before: FxHashMap::default(),
            saved: FxHashSet::default(),
            value_info_edits: graph.value_info_edits,
            dirty: graph.dirty,
            facts: None,
            facts_undo: None,
            consts: graph.consts.clone(),
            memo: graph.memo.clone(),
        }
    }

    /// Remembers `id` as it is now, before its first change by this patch.
    fn snap(&mut self, graph: &Graph, id: NodeId) {
        if !self.before.contains_key(&id) && graph.contains(id) {
            let bytes = graph.node_bytes(id);
            self.before.insert(id, (Some(graph.g[id.0].clone()), bytes));
        }
    }

    /// Saves `id`'s weight before it is mutated in place.
    fn save_weight(&mut self, graph: &Graph, id: NodeId) {
        self.snap(graph, id);
        if graph.contains(id) && self.saved.insert(id) {
            self.changes.push(Change::Weight {
                id,
                old: graph.g[id.0].clone(),
            });
        }
    }

    fn next_key(&mut self, graph: &mut Graph) -> OrderKey {
        self.changes.push(Change::NextMajor(graph.next_major));
        graph.next_key()
    }

    fn add_node(&mut self, graph: &mut Graph, kind: NodeKind, key: OrderKey) -> Result<NodeId> {
        let id = graph.add_node(kind, key)?;
        self.before.entry(id).or_insert((None, 0));
        self.changes.push(Change::Added(id));
        Ok(id)
    }

    fn data_edge_into(graph: &Graph, to: NodeId, inp: usize) -> Option<(NodeIndex, Edge)> {
        graph
            .g
            .edges_directed(to.0, Direction::Incoming)
            .find(|e| matches!(*e.weight(), Edge::Data { inp: i, .. } if i == inp))
            .map(|e| (e.source(), *e.weight()))
    }

    fn connect(&mut self, graph: &mut Graph, from: ValueRef, to: NodeId, inp: usize) {
        self.save_weight(graph, to);
        if let Some((src, e)) = Self::data_edge_into(graph, to, inp) {
            self.changes.push(Change::EdgeRemoved(src, to.0, e));
        }
        graph.connect(from, to, inp);
        self.changes.push(Change::EdgeAdded(
            from.node.0,
            to.0,
            Edge::Data {
                out: from.slot,
                inp,
            },
        ));
    }

    fn disconnect(&mut self, graph: &mut Graph, to: NodeId, inp: usize) {
        self.snap(graph, to);
        if let Some((src, e)) = Self::data_edge_into(graph, to, inp) {
            self.changes.push(Change::EdgeRemoved(src, to.0, e));
        }
        graph.disconnect(to, inp);
    }

    fn add_capture(&mut self, graph: &mut Graph, from: ValueRef, to: NodeId) {
        graph.add_capture(from, to);
        self.changes.push(Change::EdgeAdded(
            from.node.0,
            to.0,
            Edge::Capture { out: from.slot },
        ));
    }

    fn redirect_consumers(&mut self, graph: &mut Graph, old: ValueRef, new: ValueRef) {
        for (node, inp) in graph.consumers(old) {
            self.connect(graph, new, node, inp);
        }
    }

    fn set_output(&mut self, graph: &mut Graph, index: usize, v: ValueRef) {
        self.changes
            .push(Change::Output(index, graph.outputs[index].0));
        graph.set_output(index, v);
    }

    fn rename_value(&mut self, graph: &mut Graph, v: ValueRef, new: &str) -> Result<()> {
        // The readers of `v` write its name among their inputs.
        for (c, _) in graph.consumers(v) {
            self.snap(graph, c);
        }
        self.save_weight(graph, v.node);
        let old = graph.value_name(v).to_string();
        self.changes
            .push(Change::Name(old.clone(), graph.names.get(&old).copied()));
        self.changes
            .push(Change::Name(new.to_string(), graph.names.get(new).copied()));
        graph.rename_value(v, new)
    }

    fn node_mut<'g>(&mut self, graph: &'g mut Graph, id: NodeId) -> &'g mut Node {
        self.save_weight(graph, id);
        graph.node_mut(id)
    }

    fn remove_node(&mut self, graph: &mut Graph, id: NodeId) {
        if !graph.contains(id) {
            return;
        }
        self.snap(graph, id);
        let mut edges = Vec::new();
        for e in graph.g.edges_directed(id.0, Direction::Incoming) {
            edges.push((e.source(), e.target(), *e.weight()));
        }
        for e in graph.g.edges_directed(id.0, Direction::Outgoing) {
            edges.push((e.source(), e.target(), *e.weight()));
        }
        // Readers losing an input write a different name for it.
        for &(_, t, e) in &edges {
            if t != id.0 && matches!(e, Edge::Data { .. }) {
                self.snap(graph, NodeId(t));
            }
        }
        let node = &graph.g[id.0];
        let names: Vec<(String, Option<ValueRef>)> = (0..node.num_outputs())
            .filter_map(|slot| node.output_name(slot))
            .filter(|name| graph.names.get(*name).map(|v| v.node) == Some(id))
            .map(|name| (name.to_string(), graph.names.get(name).copied()))
            .collect();
        self.changes
            .extend(names.into_iter().map(|(n, v)| Change::Name(n, v)));
        if let Some(node) = graph.remove_node(id) {
            self.changes.push(Change::Removed { id, node, edges });
        }
    }

    fn set_declared_dims(&mut self, graph: &mut Graph, edits: &[(String, usize, i64)]) {
        if edits.is_empty() {
            return;
        }
        let names: HashSet<&str> = edits.iter().map(|(n, _, _)| n.as_str()).collect();
        self.keep_value_infos(graph, names);
        graph.set_declared_dims(edits);
    }

    fn set_declared_types(&mut self, graph: &mut Graph, edits: &[(String, i32)]) {
        if edits.is_empty() {
            return;
        }
        let names: HashSet<&str> = edits.iter().map(|(n, _)| n.as_str()).collect();
        self.keep_value_infos(graph, names);
        graph.set_declared_types(edits);
    }

    /// Logs the `value_info` entries named in `names` as they are, before an edit.
    fn keep_value_infos(&mut self, graph: &Graph, names: HashSet<&str>) {
        for name in names {
            for &i in graph.value_info_at.get(name).into_iter().flatten() {
                self.changes
                    .push(Change::ValueInfo(i, graph.value_info[i].clone()));
            }
        }
    }

    /// Brings the facts the graph had before the patch up to date with it, in proportion to
    /// what the patch changed: the rules building the next patches of a batch read them.
    fn update_facts(&mut self, graph: &mut Graph) {
        let Some(mut facts) = self.facts.take() else {
            return;
        };
        let mut renewed: Vec<NodeId> = Vec::new();
        let mut changed: Vec<NodeId> = Vec::new();
        for c in &self.changes {
            match c {
                Change::Added(id) => renewed.push(*id),
                Change::Removed { id, edges, .. } => {
                    renewed.push(*id);
                    changed.extend(
                        edges
                            .iter()
                            .filter(|(_, t, e)| *t != id.0 && matches!(e, Edge::Data { .. }))
                            .map(|(_, t, _)| NodeId(*t)),
                    );
                }
                Change::Weight { id, .. } => changed.push(*id),
                Change::EdgeAdded(_, t, e) | Change::EdgeRemoved(_, t, e) => {
                    if matches!(e, Edge::Data { .. }) {
                        changed.push(NodeId(*t));
                    }
                }
                Change::ValueInfo(i, _) => {
                    if let Some(v) = graph
                        .value_info
                        .get(*i)
                        .and_then(|vi| vi.name.as_deref())
                        .and_then(|n| graph.producer(n))
                    {
                        changed.push(v.node);
                    }
                }
                Change::Output(..) | Change::Name(..) | Change::NextMajor(_) => {}
            }
        }
        // A patch whose effect on the facts spreads far beyond its own nodes (a dtype changed at
        // the top of a long graph, say) drops them instead: inferring them afresh once is then
        // cheaper than updating them patch by patch.
        let limit = UPDATE_BASE + UPDATE_PER_NODE * (renewed.len() + changed.len());
        let undo = Arc::make_mut(&mut facts).update(graph, renewed, changed, limit);
        if undo.is_some() {
            graph.facts = OnceLock::from(facts);
        }
        self.facts_undo = undo;
    }

    /// Nodes the patch added, removed, changed, or whose edges it changed.
    pub(crate) fn written(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.changes.iter().flat_map(|c| {
            let (a, b) = match c {
                Change::Added(id) | Change::Weight { id, .. } => (Some(*id), None),
                Change::Removed { id, edges, .. } => {
                    return Box::new(
                        std::iter::once(*id)
                            .chain(edges.iter().flat_map(|(s, t, _)| [NodeId(*s), NodeId(*t)])),
                    ) as Box<dyn Iterator<Item = NodeId>>
                }
                Change::EdgeAdded(s, t, _) | Change::EdgeRemoved(s, t, _) => {
                    (Some(NodeId(*s)), Some(NodeId(*t)))
                }
                _ => (None, None),
            };
            Box::new(a.into_iter().chain(b))
        })
    }

    /// Nodes the patch added, removed or changed in place (renamed, rewired), but not those that
    /// only gained or lost readers.
    pub(crate) fn rewritten(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.changes.iter().filter_map(|c| match c {
            Change::Added(id) | Change::Weight { id, .. } | Change::Removed { id, .. } => Some(*id),
            _ => None,
        })
    }

    /// How many bytes the patch added to the encoded graph (negative: removed), counted as
    /// [`Graph::encoded_delta`] counts them but over the nodes the patch touched only: nodes
    /// whose weight changed count with their bytes after minus before, and the `value_info` of
    /// values that no longer exist is dropped. `value_info` maps a name to its entries.
    pub(crate) fn growth(&self, graph: &Graph, value_info: &FxHashMap<String, Vec<usize>>) -> i64 {
        let mut delta = graph.value_info_edits - self.value_info_edits;
        let mut gone: FxHashSet<&str> = FxHashSet::default();
        for (id, (old, bytes)) in &self.before {
            let now = graph.g.node_weight(id.0);
            if let (Some(o), Some(n)) = (old, now) {
                if Arc::ptr_eq(o, n) {
                    continue;
                }
            }
            if now.is_some() {
                delta += graph.node_bytes(*id) as i64;
            }
            if let Some(o) = old {
                delta -= *bytes as i64;
                gone.extend(
                    (0..o.num_outputs())
                        .filter_map(|slot| o.output_name(slot))
                        .filter(|n| graph.producer(n).is_none()),
                );
            }
        }
        for name in gone {
            if graph.orphan_value_info.contains(name) {
                continue;
            }
            for &i in value_info.get(name).into_iter().flatten() {
                let n = graph.value_info[i].encoded_len();
                delta -= (1 + prost::length_delimiter_len(n) + n) as i64;
            }
        }
        delta
    }

    /// Takes the patch back: `graph` is as it was before [`Patch::apply_logged`] (node ids
    /// included; edge order within a node may differ). An error means a removed node could not
    /// get its id back, and `graph` must be discarded.
    pub(crate) fn rollback(self, graph: &mut Graph) -> Result<()> {
        // The facts as the patch found them: those it took out (it stopped before updating
        // them), or the updated ones with the update taken back.
        let facts = match (self.facts, self.facts_undo) {
            (Some(f), _) => Some(f),
            (None, Some(undo)) => graph.facts.take().map(|mut f| {
                Arc::make_mut(&mut f).undo(undo);
                f
            }),
            (None, None) => None,
        };
        for c in self.changes.into_iter().rev() {
            match c {
                Change::Added(id) => {
                    if let Some(node) = graph.g.remove_node(id.0) {
                        for slot in 0..node.num_outputs() {
                            if let Some(name) = node.output_name(slot) {
                                if graph.names.get(name).map(|v| v.node) == Some(id) {
                                    graph.names.remove(name);
                                }
                            }
                        }
                    }
                }
                Change::Removed { id, node, edges } => {
                    // The free list of a `StableGraph` is last in, first out: undoing in
                    // reverse order gives the node its slot back.
                    let ix = graph.g.add_node(node);
                    if ix != id.0 {
                        return Err(Error::Graph {
                            reason: "a patch could not be taken back: a node changed its id".into(),
                        });
                    }
                    for (s, t, e) in edges {
                        graph.g.add_edge(s, t, e);
                    }
                }
                Change::Weight { id, old } => graph.g[id.0] = old,
                Change::EdgeAdded(s, t, w) => {
                    let e = graph
                        .g
                        .edges_directed(t, Direction::Incoming)
                        .find(|e| e.source() == s && *e.weight() == w)
                        .map(|e| e.id());
                    if let Some(e) = e {
                        graph.g.remove_edge(e);
                    }
                }
                Change::EdgeRemoved(s, t, w) => {
                    graph.g.add_edge(s, t, w);
                }
                Change::Output(i, v) => graph.outputs[i].0 = v,
                Change::Name(name, old) => match old {
                    Some(v) => {
                        graph.names.insert(name, v);
                    }
                    None => {
                        graph.names.remove(&name);
                    }
                },
                Change::ValueInfo(i, vi) => graph.value_info[i] = vi,
                Change::NextMajor(m) => graph.next_major = m,
            }
        }
        graph.value_info_edits = self.value_info_edits;
        graph.dirty = self.dirty;
        graph.facts = facts.map(OnceLock::from).unwrap_or_default();
        graph.consts = self.consts;
        graph.memo = self.memo;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use prost::Message;

    use super::Undo;
    use crate::ir::Model;
    use crate::onnx::decode_file;
    use crate::rewrite::{registry, Config};

    /// For up to five patches of every rule on every fixture: the growth measured over the
    /// touched nodes equals [`crate::ir::Graph::encoded_delta`] over the whole graph, and taking
    /// the patch back gives the very graph it was applied to (same nodes, same bytes).
    #[test]
    fn local_growth_matches_the_whole_graph_delta_and_rollback_restores_the_graph() {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("fixtures")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        paths.sort();
        let config = Config::default();
        let mut measured = 0;
        for path in &paths {
            let model =
                Model::from_proto(decode_file(path).expect("decodes").model).expect("builds");
            let bytes = model.graph.to_proto().encode_to_vec();
            for rule in registry::all() {
                for m in rule.find(&model, &config).matches.into_iter().take(5) {
                    let Ok(patch) = rule.rewrite(&model, &m, &config) else {
                        continue;
                    };
                    let label = format!("{} on {}: {}", rule.meta().name, path.display(), m.what);
                    let mut g = model.graph.clone();
                    let mut log = Undo::new(&g);
                    if patch.apply_logged(&mut g, &mut log).is_ok() {
                        let local = log.growth(&g, &g.value_info_at);
                        assert_eq!(local, g.encoded_delta(&model.graph), "{label}");
                        measured += 1;
                    }
                    log.rollback(&mut g).expect("rolls back");
                    assert_eq!(g.encoded_delta(&model.graph), 0, "{label}");
                    assert_eq!(g.node_count(), model.graph.node_count(), "{label}");
                    for ix in model.graph.g.node_indices() {
                        let same =
                            g.g.node_weight(ix)
                                .is_some_and(|n| std::sync::Arc::ptr_eq(n, &model.graph.g[ix]));
                        assert!(same, "{label}: node {ix:?} not restored");
                    }
                    g.check().expect("checks after rollback");
                    assert!(
                        g.to_proto().encode_to_vec() == bytes,
                        "{label}: bytes differ"
                    );
                }
            }
        }
        assert!(measured >= 20, "only {measured} patches measured");
    }

    /// Up to eight patches of every rule on every fixture, applied one after the other to a
    /// graph whose facts are inferred: after each, the facts the patch brought up to date equal a
    /// fresh inference of the patched graph (up to the numbering of symbols), and taking the
    /// last patch back gives the facts before it.
    #[test]
    fn facts_updated_by_a_patch_equal_a_fresh_inference() {
        use crate::ir::facts::Facts;
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("fixtures")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        paths.sort();
        let config = Config::default();
        let mut compared = 0;
        for path in &paths {
            let original =
                Model::from_proto(decode_file(path).expect("decodes").model).expect("builds");
            for rule in registry::all() {
                let mut model = original.clone();
                model.graph.facts();
                let matches = rule.find(&model, &config).matches;
                for m in matches.into_iter().take(8) {
                    if !std::iter::once(&m.anchor)
                        .chain(&m.nodes)
                        .all(|n| model.graph.contains(*n))
                    {
                        continue;
                    }
                    let Ok(patch) = rule.rewrite(&model, &m, &config) else {
                        continue;
                    };
                    let label = format!("{} on {}: {}", rule.meta().name, path.display(), m.what);
                    let before = model.graph.facts();
                    let mut g = model.graph.clone();
                    let mut log = Undo::new(&g);
                    if patch.apply_logged(&mut g, &mut log).is_err() || g.check().is_err() {
                        continue;
                    }
                    let updated = g.facts.get().cloned().expect("the patch kept the facts");
                    let fresh = Facts::infer(&g);
                    if let Err(e) = updated.same_up_to_symbols(&fresh, &g) {
                        panic!("{label}: {e}");
                    }
                    compared += 1;
                    let mut back = g.clone();
                    log.rollback(&mut back).expect("rolls back");
                    let restored = back.facts.get().cloned().expect("facts restored");
                    if let Err(e) = restored.same_up_to_symbols(&before, &back) {
                        panic!("{label}, taken back: {e}");
                    }
                    model.graph = g;
                }
            }
        }
        assert!(compared >= 60, "only {compared} patches compared");
        println!("{compared} patches compared");
    }
}
