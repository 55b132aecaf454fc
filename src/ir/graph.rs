//! The graph: nodes, edges, values and the queries rules use. Only `ir` and `rewrite` mutate it.

use std::any::Any;
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use petgraph::graph::{EdgeIndex, NodeIndex};
use petgraph::Direction;
use prost::Message;
use rustc_hash::FxHashMap;

use super::adj::Adj;
use super::facts::Facts;
use crate::error::{Error, Result};
use crate::onnx::proto::{
    tensor_proto::DataType, type_proto, AttributeProto, GraphProto, NodeProto, SparseTensorProto,
    TensorProto, ValueInfoProto,
};
use crate::onnx::visit::subgraphs;

/// A node of the graph. Opaque outside the IR: rules hold ids, never petgraph indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex);

/// One value: output `slot` of `node`. Every value has exactly one producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueRef {
    /// The producer.
    pub node: NodeId,
    /// Which of the producer's outputs.
    pub slot: usize,
}

/// What a node is.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A graph input; `default` is an initializer of the same name (a default value, IR < 4 style).
    Input {
        /// The declared input.
        info: ValueInfoProto,
        /// Initializer with the same name, if any, and its position among initializers.
        default: Option<(TensorProto, OrderKey)>,
    },
    /// A dense initializer that is not a graph input.
    Initializer(TensorProto),
    /// A sparse initializer; its value is named after `values.name`.
    SparseInitializer(SparseTensorProto),
    /// An operator, including `Constant`. Its `input` names are refreshed from the edges on encode.
    Op(NodeProto),
}

/// Position of a node in the original file (`major`) and among nodes a patch put there (`minor`).
/// Encoding emits nodes in topological order, breaking ties by this key, so an untouched graph
/// comes back in its original order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct OrderKey(pub u64, pub u32);

/// A node and its position key.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What it is.
    pub kind: NodeKind,
    /// Where it goes on encode.
    pub key: OrderKey,
}

/// An edge from an output slot to an input slot, or a capture by a subgraph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Output `out` of the source feeds input `inp` of the target.
    Data {
        /// Output slot of the producer.
        out: usize,
        /// Input slot of the consumer.
        inp: usize,
    },
    /// A subgraph of the target (If/Loop/Scan) reads output `out` of the source by name.
    Capture {
        /// Output slot of the producer.
        out: usize,
    },
}

/// The top-level graph of a model.
#[derive(Debug, Clone)]
pub struct Graph {
    // Nodes are shared between copies of the graph (the driver applies each patch to a copy),
    // so a copy costs a reference count per node, not a copy of every tensor.
    pub(crate) g: Adj<Arc<Node>, Edge>,
    /// Every `GraphProto` field the IR does not model (name, doc string, annotations, metadata).
    pub shell: GraphProto,
    /// Graph outputs in order; the value's name always equals the declared name.
    pub(crate) outputs: Vec<(ValueRef, ValueInfoProto)>,
    /// `value_info` entries in their original order.
    pub(crate) value_info: Vec<ValueInfoProto>,
    /// Where each name's entries sit in `value_info` (built once: entries are edited in place,
    /// never added, removed or moved), so that edits and lookups cost per name, not per entry.
    pub(crate) value_info_at: Arc<FxHashMap<String, Vec<usize>>>,
    /// `value_info` names that named no value when decoded; kept verbatim.
    pub(crate) orphan_value_info: HashSet<String>,
    /// Encoded bytes that edits of `value_info` entries ([`Graph::set_declared_dims`]) added
    /// since decoding (negative: removed), so that [`Graph::encoded_delta`] counts them.
    pub(crate) value_info_edits: i64,
    // Looked up on every edit and check: a fast non-cryptographic hash (names are not
    // attacker-chosen keys of a long-lived service).
    pub(crate) names: FxHashMap<String, ValueRef>,
    pub(crate) next_major: u64,
    /// Set by every mutation. An untouched graph is emitted in its original node order even when
    /// that order is not topological (some exporters write such files and runtimes accept them).
    pub(crate) dirty: bool,
    /// Inferred facts, computed on first use and dropped by every mutation. Copies made by the
    /// driver share them until they are changed.
    pub(crate) facts: OnceLock<Arc<Facts>>,
    /// Small initializers by contents ([`Graph::small_consts`]), built on first use and dropped
    /// by every mutation, as the facts are.
    pub(crate) consts: OnceLock<Arc<SmallConsts>>,
    /// Whole-graph analyses of rules ([`Graph::memo`]), shared by the copies of one version
    /// of the graph and dropped (replaced) by every mutation.
    pub(crate) memo: Memo,
}

/// What [`Graph::memo`] keeps: analyses by tag.
pub(crate) type Memo = Arc<Mutex<Vec<(&'static str, Arc<dyn Any + Send + Sync>)>>>;

/// The first initializer (in graph order) of each dtype, dims and contents among those of at
/// most [`SMALL_CONST`] elements, keyed by [`small_const_key`].
pub type SmallConsts = FxHashMap<Vec<i64>, NodeId>;

/// Initializers up to this many elements are indexed by contents, for reuse.
pub const SMALL_CONST: u64 = 64;

/// A key equal for two tensors exactly when they have the same dtype, dims and contents
/// (integers compared as `i64`, floats bit for bit); `None` above [`SMALL_CONST`] elements or
/// for a dtype read neither way.
pub fn small_const_key(t: &TensorProto) -> Option<Vec<i64>> {
    if super::tensor::numel(t)? > SMALL_CONST {
        return None;
    }
    let mut key = vec![t.data_type.unwrap_or(0) as i64, t.dims.len() as i64];
    key.extend(&t.dims);
    if let Ok(a) = super::tensor::to_i64(t) {
        key.push(0);
        key.extend(a.iter());
    } else if let Ok(a) = super::tensor::to_f32(t) {
        key.push(1);
        key.extend(a.iter().map(|x| x.to_bits() as i64));
    } else {
        return None;
    }
    Some(key)
}

impl Node {
    /// Bytes this node takes in the encoded graph, tag and length prefix included, with an
    /// operator's input names as stored (see [`Graph::node_bytes`] for the names its edges give).
    pub fn encoded_len(&self) -> u64 {
        fn framed(len: usize) -> u64 {
            (1 + prost::length_delimiter_len(len) + len) as u64
        }
        match &self.kind {
            NodeKind::Input { info, default } => {
                framed(info.encoded_len())
                    + default.as_ref().map_or(0, |(t, _)| framed(t.encoded_len()))
            }
            NodeKind::Initializer(t) => framed(t.encoded_len()),
            NodeKind::SparseInitializer(t) => framed(t.encoded_len()),
            NodeKind::Op(n) => framed(n.encoded_len()),
        }
    }

    /// The operator, if this node is one.
    pub fn op(&self) -> Option<&NodeProto> {
        match &self.kind {
            NodeKind::Op(n) => Some(n),
            _ => None,
        }
    }

    /// The operator type (`Conv`, ...), `"<input>"`, `"<initializer>"` or `"<sparse-initializer>"`.
    pub fn op_type(&self) -> &str {
        match &self.kind {
            NodeKind::Op(n) => n.op_type.as_deref().unwrap_or(""),
            NodeKind::Input { .. } => "<input>",
            NodeKind::Initializer(_) => "<initializer>",
            NodeKind::SparseInitializer(_) => "<sparse-initializer>",
        }
    }

    /// The domain of an operator (`""` for the default ONNX domain and non-operators).
    pub fn domain(&self) -> &str {
        match &self.kind {
            NodeKind::Op(n) => match n.domain.as_deref() {
                Some("ai.onnx") | None => "",
                Some(d) => d,
            },
            _ => "",
        }
    }

    /// Name of output `slot`, or `None` if the slot is unused (`""`) or out of range.
    pub fn output_name(&self, slot: usize) -> Option<&str> {
        let name = match &self.kind {
            NodeKind::Op(n) => n.output.get(slot).map(String::as_str),
            NodeKind::Input { info, .. } if slot == 0 => info.name.as_deref(),
            NodeKind::Initializer(t) if slot == 0 => t.name.as_deref(),
            NodeKind::SparseInitializer(s) if slot == 0 => {
                s.values.as_ref().and_then(|v| v.name.as_deref())
            }
            _ => None,
        };
        name.filter(|n| !n.is_empty())
    }

    /// Number of output slots.
    pub fn num_outputs(&self) -> usize {
        match &self.kind {
            NodeKind::Op(n) => n.output.len(),
            _ => 1,
        }
    }

    /// A label for messages: the node's name, else its first output's name.
    pub fn label(&self) -> String {
        match &self.kind {
            NodeKind::Op(n) => match n.name.as_deref() {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => n.output.first().cloned().unwrap_or_default(),
            },
            _ => self.output_name(0).unwrap_or("").to_string(),
        }
    }

    /// The attribute `name` of an operator.
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.op()?
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }
}

impl Graph {
    /// An empty graph.
    pub fn empty() -> Graph {
        Graph {
            g: Adj::new(),
            shell: GraphProto::default(),
            outputs: Vec::new(),
            value_info: Vec::new(),
            value_info_at: Arc::default(),
            orphan_value_info: HashSet::new(),
            value_info_edits: 0,
            names: FxHashMap::default(),
            next_major: 0,
            dirty: false,
            facts: OnceLock::new(),
            consts: OnceLock::new(),
            memo: Memo::default(),
        }
    }

    /// The node `id`. Panics only on an id from another graph, a programming error.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    /// Whether `id` still exists.
    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.0)
    }

    /// Number of nodes of every kind.
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Number of operator nodes.
    pub fn op_count(&self) -> usize {
        self.g
            .node_weights()
            .filter(|n| matches!(n.kind, NodeKind::Op(_)))
            .count()
    }

    /// Every node, in a deterministic topological order (ties broken by original position).
    pub fn topo_order(&self) -> Vec<NodeId> {
        // Kahn's algorithm with a min-heap on (key, index); validated graphs are acyclic.
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut indeg: Vec<usize> = vec![0; self.g.node_bound()];
        let mut heap = BinaryHeap::with_capacity(self.g.node_count());
        for ix in self.g.node_indices() {
            let d = self.g.edges_directed(ix, Direction::Incoming).count();
            indeg[ix.index()] = d;
            if d == 0 {
                heap.push(Reverse((self.g[ix].key, ix)));
            }
        }
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(Reverse((_, ix))) = heap.pop() {
            order.push(NodeId(ix));
            for e in self.g.edges_directed(ix, Direction::Outgoing) {
                let t = e.target();
                let d = &mut indeg[t.index()];
                *d -= 1;
                if *d == 0 {
                    heap.push(Reverse((self.g[t].key, t)));
                }
            }
        }
        order
    }

    /// A node on a cycle, if the graph has one (found without recursion).
    pub(crate) fn node_on_cycle(&self) -> Option<NodeId> {
        let sorted = self.topo_order();
        if sorted.len() == self.node_count() {
            return None;
        }
        let mut left = vec![false; self.g.node_bound()];
        self.g.node_indices().for_each(|ix| left[ix.index()] = true);
        sorted.iter().for_each(|id| left[id.0.index()] = false);
        // Every node Kahn's algorithm left out has a predecessor it left out: walking back from
        // one along such predecessors must come back to a node already seen, which is on a cycle.
        let mut seen = vec![false; self.g.node_bound()];
        let mut at = self.g.node_indices().find(|ix| left[ix.index()])?;
        while !seen[at.index()] {
            seen[at.index()] = true;
            at = self
                .g
                .edges_directed(at, Direction::Incoming)
                .map(|e| e.source())
                .find(|s| left[s.index()])?;
        }
        Some(NodeId(at))
    }

    /// The order in which [`Graph::to_proto`] writes nodes: original order while the graph is
    /// untouched, else topological.
    pub fn emit_order(&self) -> Vec<NodeId> {
        if self.dirty {
            return self.topo_order();
        }
        let mut v: Vec<NodeId> = self.g.node_indices().map(NodeId).collect();
        v.sort_by_key(|id| (self.node(*id).key, *id));
        v
    }

    /// Operator nodes in topological order.
    pub fn ops(&self) -> Vec<NodeId> {
        self.topo_order()
            .into_iter()
            .filter(|id| self.node(*id).op().is_some())
            .collect()
    }

    /// Graph input nodes in declaration order.
    pub fn inputs(&self) -> Vec<NodeId> {
        let mut v: Vec<_> = self
            .g
            .node_indices()
            .filter(|ix| matches!(self.g[*ix].kind, NodeKind::Input { .. }))
            .map(NodeId)
            .collect();
        v.sort_by_key(|id| (self.node(*id).key, *id));
        v
    }

    /// Graph outputs in order: the value and its declaration.
    pub fn outputs(&self) -> &[(ValueRef, ValueInfoProto)] {
        &self.outputs
    }

    /// `value_info` entries in order.
    pub fn value_infos(&self) -> &[ValueInfoProto] {
        &self.value_info
    }

    /// The producer of the value named `name`.
    pub fn producer(&self, name: &str) -> Option<ValueRef> {
        self.names.get(name).copied()
    }

    /// The name of `v`.
    pub fn value_name(&self, v: ValueRef) -> &str {
        self.node(v.node).output_name(v.slot).unwrap_or("")
    }

    /// The inputs of `id` by slot; `None` for an omitted optional input.
    pub fn node_inputs(&self, id: NodeId) -> Vec<Option<ValueRef>> {
        let n = match &self.node(id).kind {
            NodeKind::Op(p) => p.input.len(),
            _ => 0,
        };
        let mut v = vec![None; n];
        for e in self.g.edges_directed(id.0, Direction::Incoming) {
            if let Edge::Data { out, inp } = *e.weight() {
                if inp >= v.len() {
                    v.resize(inp + 1, None);
                }
                v[inp] = Some(ValueRef {
                    node: NodeId(e.source()),
                    slot: out,
                });
            }
        }
        v
    }

    /// Input `slot` of `id`, if connected.
    pub fn input(&self, id: NodeId, slot: usize) -> Option<ValueRef> {
        self.node_inputs(id).get(slot).copied().flatten()
    }

    /// Values that `id`'s subgraphs read from this graph by name.
    pub fn captures(&self, id: NodeId) -> Vec<ValueRef> {
        let mut v: Vec<_> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .filter_map(|e| match *e.weight() {
                Edge::Capture { out } => Some(ValueRef {
                    node: NodeId(e.source()),
                    slot: out,
                }),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    /// Every (consumer, input slot) reading `v`, sorted. Subgraph captures are not included.
    pub fn consumers(&self, v: ValueRef) -> Vec<(NodeId, usize)> {
        let mut c: Vec<_> = self
            .g
            .edges_directed(v.node.0, Direction::Outgoing)
            .filter_map(|e| match *e.weight() {
                Edge::Data { out, inp } if out == v.slot => Some((NodeId(e.target()), inp)),
                _ => None,
            })
            .collect();
        c.sort();
        c
    }

    /// Whether `id` is the only node reading `v` (as data; a subgraph capture is another
    /// reader). Stops at the first other reader, so that asking it of a constant every node
    /// reads costs O(1), not a walk of all its readers.
    pub fn read_only_by(&self, v: ValueRef, id: NodeId) -> bool {
        self.g
            .edges_directed(v.node.0, Direction::Outgoing)
            .all(|e| match *e.weight() {
                Edge::Data { out, .. } => out != v.slot || e.target() == id.0,
                Edge::Capture { out } => out != v.slot,
            })
    }

    /// Nodes whose subgraphs read `v` by name.
    pub fn capture_consumers(&self, v: ValueRef) -> Vec<NodeId> {
        let mut c: Vec<_> = self
            .g
            .edges_directed(v.node.0, Direction::Outgoing)
            .filter_map(|e| match *e.weight() {
                Edge::Capture { out } if out == v.slot => Some(NodeId(e.target())),
                _ => None,
            })
            .collect();
        c.sort();
        c.dedup();
        c
    }

    /// Whether a subgraph reads `v` by name.
    pub fn is_captured(&self, v: ValueRef) -> bool {
        self.g
            .edges_directed(v.node.0, Direction::Outgoing)
            .any(|e| matches!(*e.weight(), Edge::Capture { out } if out == v.slot))
    }

    /// Whether `v` is a graph output.
    pub fn is_graph_output(&self, v: ValueRef) -> bool {
        self.outputs.iter().any(|(o, _)| *o == v)
    }

    /// Whether anything reads `v`: a node, a subgraph, or the graph's outputs. Stops at the
    /// first reader.
    pub fn is_used(&self, v: ValueRef) -> bool {
        self.g
            .edges_directed(v.node.0, Direction::Outgoing)
            .any(|e| match *e.weight() {
                Edge::Data { out, .. } | Edge::Capture { out } => out == v.slot,
            })
            || self.is_graph_output(v)
    }

    /// The constant tensor behind `v`: an initializer that is not a graph input, or the `value`
    /// of a `Constant` node. `None` for anything else (including `Constant` with `value_float` & co).
    pub fn const_tensor(&self, v: ValueRef) -> Option<&TensorProto> {
        let node = self.node(v.node);
        match &node.kind {
            NodeKind::Initializer(t) => Some(t),
            NodeKind::Op(n)
                if n.op_type.as_deref() == Some("Constant") && node.domain().is_empty() =>
            {
                node.attr("value").and_then(|a| a.t.as_ref())
            }
            _ => None,
        }
    }

    /// Declared type of the value named `name`: from graph inputs, outputs, `value_info` or an
    /// initializer. Returns the element type and dims (`None` for symbolic or unknown dims).
    pub fn value_type(&self, name: &str) -> Option<(i32, Option<Vec<Option<i64>>>)> {
        if let Some(v) = self.producer(name) {
            if let Some(t) = self.const_tensor(v) {
                return Some((
                    t.data_type.unwrap_or(0),
                    Some(t.dims.iter().map(|d| Some(*d)).collect()),
                ));
            }
        }
        let from_info = |vi: &ValueInfoProto| -> Option<(i32, Option<Vec<Option<i64>>>)> {
            let tp = vi.r#type.as_ref()?;
            match tp.value.as_ref()? {
                type_proto::Value::TensorType(t) => Some((
                    t.elem_type.unwrap_or(0),
                    t.shape.as_ref().map(|s| {
                        s.dim
                            .iter()
                            .map(|d| match d.value {
                                Some(crate::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
                                _ => None,
                            })
                            .collect()
                    }),
                )),
                _ => None,
            }
        };
        for n in self.g.node_weights() {
            if let NodeKind::Input { info, .. } = &n.kind {
                if info.name.as_deref() == Some(name) {
                    return from_info(info);
                }
            }
        }
        self.value_info_at
            .get(name)
            .and_then(|at| at.first())
            .map(|&i| &self.value_info[i])
            .or_else(|| {
                self.outputs
                    .iter()
                    .map(|(_, i)| i)
                    .find(|vi| vi.name.as_deref() == Some(name))
            })
            .and_then(from_info)
    }

    /// A value name not yet used, made from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.names.contains_key(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}__{i}"))
            .find(|n| {
                super::adj::visit(1);
                !self.names.contains_key(n)
            })
            .unwrap_or_else(|| base.to_string())
    }

    /// Nodes holding a constant tensor (initializers and `Constant` nodes), in topological order.
    pub fn const_nodes(&self) -> Vec<NodeId> {
        self.topo_order()
            .into_iter()
            .filter(|id| self.const_tensor(ValueRef { node: *id, slot: 0 }).is_some())
            .collect()
    }

    /// How many bytes the encoded nodes of `self` take beyond those of `before`, a copy it was
    /// patched from: nodes shared between the two copies cancel out, so this costs a pointer
    /// comparison per node plus an encoded length per changed node.
    pub fn encoded_delta(&self, before: &Graph) -> i64 {
        let mut delta = self.value_info_edits - before.value_info_edits;
        for ix in self.g.node_indices() {
            match before.g.node_weight(ix) {
                Some(old) if Arc::ptr_eq(old, &self.g[ix]) => {}
                _ => delta += self.node_bytes(NodeId(ix)) as i64,
            }
        }
        let mut gone: HashSet<&str> = HashSet::new();
        for ix in before.g.node_indices() {
            match self.g.node_weight(ix) {
                Some(now) if Arc::ptr_eq(&before.g[ix], now) => {}
                _ => {
                    delta -= before.node_bytes(NodeId(ix)) as i64;
                    let node = &before.g[ix];
                    gone.extend(
                        (0..node.num_outputs())
                            .filter_map(|slot| node.output_name(slot))
                            .filter(|n| self.producer(n).is_none()),
                    );
                }
            }
        }
        // The encoder drops the `value_info` of values that no longer exist.
        if !gone.is_empty() {
            for name in gone
                .iter()
                .filter(|n| !self.orphan_value_info.contains(**n))
            {
                for &i in self.value_info_at.get(*name).into_iter().flatten() {
                    let n = self.value_info[i].encoded_len();
                    delta -= (1 + prost::length_delimiter_len(n) + n) as i64;
                }
            }
        }
        delta
    }

    /// Bytes node `id` takes when encoded: [`Node::encoded_len`], with an operator's input names
    /// taken from its edges, as the encoder writes them.
    pub fn node_bytes(&self, id: NodeId) -> u64 {
        let node = self.node(id);
        let NodeKind::Op(p) = &node.kind else {
            return node.encoded_len();
        };
        let field = |len: usize| (1 + prost::length_delimiter_len(len) + len) as u64;
        let stored: u64 = p.input.iter().map(|s| field(s.len())).sum();
        let actual: u64 = self
            .node_inputs(id)
            .into_iter()
            .take(p.input.len())
            .map(|v| field(v.map_or(0, |v| self.value_name(v).len())))
            .sum();
        field((p.encoded_len() as u64 - stored + actual) as usize)
    }

    /// Shape, dtype and small-value facts of every value (see [`Facts`]), inferred once per
    /// version of the graph.
    pub fn facts(&self) -> Arc<Facts> {
        self.facts
            .get_or_init(|| Arc::new(Facts::infer(self)))
            .clone()
    }

    // ---- mutation, for `ir` and `rewrite` only ----

    /// Marks the graph changed: emitted in topological order, facts inferred afresh.
    fn touch(&mut self) {
        self.dirty = true;
        self.facts = OnceLock::new();
        self.consts = OnceLock::new();
        self.memo = Memo::default();
    }

    /// The analysis `tag` of this version of the graph: `f`'s result, computed on first use and
    /// kept until the graph changes. A rule whose `rewrite` needs the whole-graph analysis its
    /// `find` made (the driver builds the patches of a batch against the graph `find` saw)
    /// computes it once per batch this way, not once per patch.
    pub fn memo<T: Any + Send + Sync>(&self, tag: &'static str, f: impl FnOnce() -> T) -> Arc<T> {
        let found = {
            let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            memo.iter()
                .find(|(t, _)| *t == tag)
                .and_then(|(_, v)| v.clone().downcast::<T>().ok())
        };
        if let Some(v) = found {
            return v;
        }
        let v = Arc::new(f());
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        memo.retain(|(t, _)| *t != tag);
        memo.push((tag, v.clone()));
        v
    }

    /// Small initializers by contents (see [`SmallConsts`]): one walk of the nodes per version
    /// of the graph, so that looking for an equal constant costs a hash, not a walk.
    pub fn small_consts(&self) -> Arc<SmallConsts> {
        self.consts
            .get_or_init(|| {
                let mut first: FxHashMap<Vec<i64>, (OrderKey, NodeId)> = FxHashMap::default();
                for ix in self.g.node_indices() {
                    let node = &self.g[ix];
                    let NodeKind::Initializer(t) = &node.kind else {
                        continue;
                    };
                    let Some(key) = small_const_key(t) else {
                        continue;
                    };
                    let here = (node.key, NodeId(ix));
                    first
                        .entry(key)
                        .and_modify(|e| *e = (*e).min(here))
                        .or_insert(here);
                }
                Arc::new(first.into_iter().map(|(k, (_, id))| (k, id)).collect())
            })
            .clone()
    }

    pub(crate) fn add_node(&mut self, kind: NodeKind, key: OrderKey) -> Result<NodeId> {
        self.touch();
        let id = NodeId(self.g.add_node(Arc::new(Node { kind, key })));
        let n = self.node(id).num_outputs();
        for slot in 0..n {
            if let Some(name) = self.node(id).output_name(slot) {
                let name = name.to_string();
                if self.names.contains_key(&name) {
                    self.g.remove_node(id.0);
                    return Err(Error::Graph {
                        reason: format!("duplicate value name `{name}`"),
                    });
                }
                self.names.insert(name, ValueRef { node: id, slot });
            }
        }
        Ok(id)
    }

    pub(crate) fn next_key(&mut self) -> OrderKey {
        self.next_major += 1;
        OrderKey(self.next_major, 0)
    }

    pub(crate) fn connect(&mut self, from: ValueRef, to: NodeId, inp: usize) {
        self.touch();
        if let Some(e) = self.data_edge_into(to, inp) {
            self.g.remove_edge(e);
        }
        self.g.add_edge(
            from.node.0,
            to.0,
            Edge::Data {
                out: from.slot,
                inp,
            },
        );
        if let NodeKind::Op(p) = &mut Arc::make_mut(&mut self.g[to.0]).kind {
            if p.input.len() <= inp {
                p.input.resize(inp + 1, String::new());
            }
        }
    }

    pub(crate) fn disconnect(&mut self, to: NodeId, inp: usize) {
        self.touch();
        if let Some(e) = self.data_edge_into(to, inp) {
            self.g.remove_edge(e);
        }
    }

    pub(crate) fn add_capture(&mut self, from: ValueRef, to: NodeId) {
        self.touch();
        self.g
            .add_edge(from.node.0, to.0, Edge::Capture { out: from.slot });
    }

    fn data_edge_into(&self, to: NodeId, inp: usize) -> Option<EdgeIndex> {
        self.g
            .edges_directed(to.0, Direction::Incoming)
            .find(|e| matches!(*e.weight(), Edge::Data { inp: i, .. } if i == inp))
            .map(|e| e.id())
    }

    pub(crate) fn set_output(&mut self, index: usize, v: ValueRef) {
        self.touch();
        self.outputs[index].0 = v;
    }

    /// Renames value `v`; refuses names already in use.
    pub(crate) fn rename_value(&mut self, v: ValueRef, new: &str) -> Result<()> {
        self.touch();
        if self.names.contains_key(new) {
            return Err(Error::Graph {
                reason: format!("cannot rename to `{new}`: the name is in use"),
            });
        }
        let old = self.value_name(v).to_string();
        match &mut Arc::make_mut(&mut self.g[v.node.0]).kind {
            NodeKind::Op(p) => {
                if let Some(o) = p.output.get_mut(v.slot) {
                    *o = new.to_string();
                }
            }
            NodeKind::Initializer(t) => t.name = Some(new.to_string()),
            NodeKind::SparseInitializer(s) => {
                if let Some(t) = s.values.as_mut() {
                    t.name = Some(new.to_string())
                }
            }
            NodeKind::Input { .. } => {
                return Err(Error::Graph {
                    reason: format!("graph input `{old}` cannot be renamed"),
                })
            }
        }
        self.names.remove(&old);
        self.names.insert(new.to_string(), v);
        Ok(())
    }

    /// Removes `id` with its edges and names; returns its weight (shared with other copies of
    /// the graph, so that keeping it to undo the removal costs no copy).
    pub(crate) fn remove_node(&mut self, id: NodeId) -> Option<Arc<Node>> {
        self.touch();
        let node = self.g.remove_node(id.0)?;
        for slot in 0..node.num_outputs() {
            if let Some(name) = node.output_name(slot) {
                if self.names.get(name).map(|v| v.node) == Some(id) {
                    self.names.remove(name);
                }
            }
        }
        Some(node)
    }

    /// Sets dim `axis` of the declared shape of each value named in `edits` to `size`, in its
    /// `value_info` entry if it has one (a rewrite that changes a value's shape keeps its
    /// declaration true). One pass over the entries, whatever the number of edits.
    pub(crate) fn set_declared_dims(&mut self, edits: &[(String, usize, i64)]) {
        use crate::onnx::proto::tensor_shape_proto::dimension::Value;
        if edits.is_empty() {
            return;
        }
        let field = |n: usize| (1 + prost::length_delimiter_len(n) + n) as i64;
        let mut delta = 0i64;
        for (name, axis, size) in edits {
            for &i in self.value_info_at.get(name).into_iter().flatten() {
                let vi = &mut self.value_info[i];
                let old = field(vi.encoded_len());
                if let Some(type_proto::Value::TensorType(t)) =
                    vi.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    if let Some(d) = t.shape.as_mut().and_then(|s| s.dim.get_mut(*axis)) {
                        d.value = Some(Value::DimValue(*size));
                    }
                }
                delta += field(vi.encoded_len()) - old;
            }
        }
        self.value_info_edits += delta;
        self.touch();
    }

    /// Sets the element type of the declared type of each value named in `edits` to its
    /// `elem_type`, in its `value_info` entry if it has one (a rewrite that changes a value's type
    /// keeps its declaration true). One pass over the entries, whatever the number of edits.
    pub(crate) fn set_declared_types(&mut self, edits: &[(String, i32)]) {
        if edits.is_empty() {
            return;
        }
        let field = |n: usize| (1 + prost::length_delimiter_len(n) + n) as i64;
        let mut delta = 0i64;
        for (name, elem) in edits {
            for &i in self.value_info_at.get(name).into_iter().flatten() {
                let vi = &mut self.value_info[i];
                let old = field(vi.encoded_len());
                if let Some(type_proto::Value::TensorType(t)) =
                    vi.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    t.elem_type = Some(*elem);
                }
                delta += field(vi.encoded_len()) - old;
            }
        }
        self.value_info_edits += delta;
        self.touch();
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.touch();
        Arc::make_mut(&mut self.g[id.0])
    }

    /// Checks the invariants every patch must keep: edges point at existing slots, data inputs
    /// are unique per slot, names are unique and indexed, outputs are named as declared, no cycle.
    pub fn check(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Graph { reason });
        // Every named output is indexed under its own name; as the index maps a name to one
        // value, this also rules out duplicate names.
        let mut named = 0usize;
        for ix in self.g.node_indices() {
            let n = &self.g[ix];
            for slot in 0..n.num_outputs() {
                if let Some(name) = n.output_name(slot) {
                    named += 1;
                    let here = ValueRef {
                        node: NodeId(ix),
                        slot,
                    };
                    match self.names.get(name) {
                        Some(v) if *v == here => {}
                        Some(_) => return bad(format!("duplicate value name `{name}`")),
                        None => return bad(format!("value `{name}` is not indexed")),
                    }
                }
            }
            let mut slots = HashSet::new();
            for e in self.g.edges_directed(ix, Direction::Incoming) {
                let out = match *e.weight() {
                    Edge::Data { out, inp } => {
                        if !slots.insert(inp) {
                            return bad(format!(
                                "input {inp} of `{}` has two producers",
                                n.label()
                            ));
                        }
                        out
                    }
                    Edge::Capture { out } => out,
                };
                if self.g[e.source()].output_name(out).is_none() {
                    return bad(format!(
                        "`{}` reads an unnamed output of `{}`",
                        n.label(),
                        self.g[e.source()].label()
                    ));
                }
            }
        }
        if named != self.names.len() {
            return bad("stale entries in the value index".into());
        }
        for (v, info) in &self.outputs {
            if !self.contains(v.node) {
                return bad(format!(
                    "graph output `{}` lost its producer",
                    info.name.as_deref().unwrap_or("")
                ));
            }
            if Some(self.value_name(*v)) != info.name.as_deref() {
                return bad(format!(
                    "graph output `{}` is produced under the name `{}`",
                    info.name.as_deref().unwrap_or(""),
                    self.value_name(*v)
                ));
            }
        }
        // Kahn's algorithm leaves out exactly the nodes on or after a cycle (and recurses on
        // nothing: petgraph's `is_cyclic_directed` recursed once per node of a chain).
        if self.topo_order().len() != self.node_count() {
            return bad("the graph has a cycle".into());
        }
        Ok(())
    }
}

/// Names a subgraph reads from enclosing scopes: used but not defined inside it.
pub(crate) fn free_names(g: &GraphProto, out: &mut BTreeSet<String>) {
    let mut defined: HashSet<&str> = HashSet::new();
    for i in &g.input {
        defined.extend(i.name.as_deref());
    }
    for t in &g.initializer {
        defined.extend(t.name.as_deref());
    }
    for s in &g.sparse_initializer {
        defined.extend(s.values.as_ref().and_then(|v| v.name.as_deref()));
    }
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    for n in &g.node {
        used.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        for sub in subgraphs(n) {
            free_names(sub, &mut used);
        }
    }
    used.extend(g.output.iter().filter_map(|o| o.name.clone()));
    out.extend(
        used.into_iter()
            .filter(|u| !u.is_empty() && !defined.contains(u.as_str())),
    );
}

/// Whether a node has subgraph attributes.
pub(crate) fn has_subgraphs(n: &NodeProto) -> bool {
    subgraphs(n).next().is_some()
}

#[allow(dead_code)]
pub(crate) fn is_float(dt: i32) -> bool {
    dt == DataType::Float as i32 || dt == DataType::Double as i32 || dt == DataType::Float16 as i32
}
