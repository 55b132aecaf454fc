//! Shape, dtype and small-value inference over a graph and the subgraphs of its nodes, for rules
//! and reports that need to know more than the file declares. The per-op rules live in the op
//! table ([`crate::ops`]); this module walks the graph and keeps the results.
//!
//! Dimensions are either known integers or symbols. A symbol stands for one unknown size: the same
//! symbol twice means the same size (graph inputs sharing a `dim_param`, a dimension copied through
//! an op); unrelated unknowns get fresh symbols. Small integer tensors (shapes and indices, at most
//! [`MAX_VALUE_LEN`] elements, rank ≤ 1) also carry their *value*, element by element, so that
//! `Gather(Shape(x), 1)` is known when dimension 1 of `x` is, even if other dimensions are not.
//!
//! Inference starts from graph inputs (their declared types, which are the contract) and constant
//! tensors, and follows the ops it knows; it never trusts the declared shapes of graph outputs
//! (exporters get them wrong). For ops it does not know it falls back to `value_info`, keeping
//! only the dtype and rank when the declaration disagrees with nothing. Anything unsure is
//! "unknown", never guessed.
//!
//! Subgraph bodies (`If`, `Loop`, `Scan`) get their own scope of facts by name over their
//! enclosing scopes ([`Facts::nested`]): their inputs and initializers, then their nodes, with
//! the values they capture looked up outward.

use std::collections::{HashMap, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::ir::{Graph, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::{type_proto, GraphProto, NodeProto, ValueInfoProto};
use crate::onnx::visit::subgraphs;
use crate::ops::{self, infer::const_fact, InferCx};

/// Longest integer tensor whose value is tracked.
pub const MAX_VALUE_LEN: usize = 64;

/// One dimension, or one element of a tracked integer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known size.
    K(i64),
    /// An unknown size; equal symbols are equal sizes.
    S(u32),
}

impl Dim {
    /// The known value.
    pub fn known(self) -> Option<i64> {
        match self {
            Dim::K(v) => Some(v),
            Dim::S(_) => None,
        }
    }
}

/// What is known about one value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fact {
    /// ONNX element type.
    pub dtype: Option<i32>,
    /// Dimensions, if the rank is known.
    pub shape: Option<Vec<Dim>>,
    /// Elements of a small integer tensor (row-major), if tracked.
    pub value: Option<Vec<Dim>>,
    /// Whether the shape was taken from `value_info` rather than inferred.
    pub declared: bool,
}

impl Fact {
    /// All dimensions known.
    pub fn static_shape(&self) -> Option<Vec<i64>> {
        self.shape.as_ref()?.iter().map(|d| d.known()).collect()
    }

    /// All elements known.
    pub fn known_value(&self) -> Option<Vec<i64>> {
        self.value.as_ref()?.iter().map(|d| d.known()).collect()
    }

    /// The rank, if known.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(Vec::len)
    }
}

/// The source of symbols: fresh ones for unknown sizes, one per `dim_param` name.
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    next: u32,
    by_name: HashMap<String, u32>,
    names: HashMap<u32, String>,
}

impl Symbols {
    /// A symbol nobody else has.
    pub fn fresh(&mut self) -> Dim {
        self.next += 1;
        Dim::S(self.next)
    }

    /// The symbol of the `dim_param` `name` (the same for the same name).
    pub fn named(&mut self, name: &str) -> Dim {
        if let Some(s) = self.by_name.get(name) {
            return Dim::S(*s);
        }
        self.next += 1;
        self.by_name.insert(name.to_string(), self.next);
        self.names.insert(self.next, name.to_string());
        Dim::S(self.next)
    }

    /// The `dim_param` name of symbol `id`, `None` for a fresh symbol.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// The declared type of `info` as a fact (0 and missing dims are unknown).
    pub fn from_info(&mut self, info: &ValueInfoProto) -> Fact {
        let Some(type_proto::Value::TensorType(t)) =
            info.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Fact::default();
        };
        use crate::onnx::proto::tensor_shape_proto::dimension::Value as DV;
        let shape = t.shape.as_ref().map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    // 0 is taken as unknown: some exporters write it for a free dim.
                    Some(DV::DimValue(v)) if *v > 0 => Dim::K(*v),
                    Some(DV::DimParam(p)) if !p.is_empty() => self.named(p),
                    _ => self.fresh(),
                })
                .collect()
        });
        Fact {
            dtype: t.elem_type.filter(|d| *d != 0),
            shape,
            value: None,
            declared: true,
        }
    }
}

/// How graph inputs with a default value (an initializer of the same name) are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Defaults {
    /// A caller may feed another value: only the dtype and rank are sure (what rewrites need).
    #[default]
    Overridable,
    /// As their default values, dims and small values (what a report on the model as stored
    /// shows: older exporters list every weight as an input with a default).
    AsValues,
}

/// Facts for every value of a graph.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    map: HashMap<ValueRef, Fact>,
    syms: Symbols,
    opset: Option<i64>,
    defaults: Defaults,
    /// The graph's `value_info` entries by name (the last of a name, as a map collected in
    /// order keeps it): patches edit entries in place, never add, remove or rename them.
    declared: FxHashMap<String, usize>,
    /// The node whose inference made each fresh symbol: re-inferring that node after a patch
    /// gives the unknown sizes it makes their old symbols back (see [`Facts::update`]).
    origin: FxHashMap<u32, NodeId>,
}

/// What [`Facts::update`] changed: the old fact of each value it set or removed, in order.
#[derive(Debug, Default)]
pub struct FactsUndo {
    old: Vec<(ValueRef, Option<Fact>)>,
}

const UNKNOWN: Fact = Fact {
    dtype: None,
    shape: None,
    value: None,
    declared: false,
};

/// Output facts of `node` from its input facts, by the op table; unknown for barriers and for
/// nodes whose number of inputs or outputs the table rejects. Where an output's shape or dtype
/// stays unknown, a `value_info` declaration fills it in.
fn infer_node<'d>(
    node: &NodeProto,
    ins: &[Option<Fact>],
    opset: Option<i64>,
    syms: &mut Symbols,
    declared: impl Fn(&str) -> Option<&'d ValueInfoProto>,
) -> Vec<Fact> {
    let n_out = node.output.len();
    let mut outs = match ops::lookup_node(node, opset).filter(|d| d.arity_fits(node)) {
        Some(def) => {
            let mut cx = InferCx {
                node,
                opset,
                ins,
                syms,
            };
            (def.infer)(&mut cx)
        }
        None => vec![],
    };
    outs.resize(n_out, Fact::default());
    for (fact, name) in outs.iter_mut().zip(&node.output) {
        if fact.shape.is_some() && fact.dtype.is_some() {
            continue;
        }
        if let Some(info) = declared(name.as_str()) {
            let d = syms.from_info(info);
            if fact.shape.is_none() && d.shape.is_some() {
                fact.shape = d.shape;
                fact.declared = true;
            }
            if fact.dtype.is_none() {
                fact.dtype = d.dtype;
            }
        }
    }
    outs
}

impl Facts {
    /// What is known about `v` (an empty fact if nothing).
    pub fn get(&self, v: ValueRef) -> &Fact {
        self.map.get(&v).unwrap_or(&UNKNOWN)
    }

    /// The symbols of these facts (names of `dim_param`s).
    pub fn symbols(&self) -> &Symbols {
        &self.syms
    }

    /// Infers facts for every value of `g`, reading version-dependent operands leniently (see
    /// [`InferCx::opset`]).
    pub fn infer(g: &Graph) -> Facts {
        Facts::infer_at(g, None)
    }

    /// Infers facts for every value of `g` at the default-domain `opset`.
    pub fn infer_at(g: &Graph, opset: Option<i64>) -> Facts {
        Facts::infer_with(g, opset, Defaults::Overridable)
    }

    /// Infers facts for every value of `g` at the default-domain `opset`, with graph inputs
    /// that have a default value taken as `defaults` says.
    pub fn infer_with(g: &Graph, opset: Option<i64>, defaults: Defaults) -> Facts {
        let mut f = Facts {
            opset,
            defaults,
            ..Facts::default()
        };
        for (i, vi) in g.value_infos().iter().enumerate() {
            if let Some(name) = vi.name.as_deref() {
                f.declared.insert(name.to_string(), i);
            }
        }
        for id in g.topo_order() {
            for (slot, fact) in f.infer_one(g, id).into_iter().enumerate() {
                f.map.insert(ValueRef { node: id, slot }, fact);
            }
        }
        f
    }

    /// The facts of `id`'s outputs from those of its inputs (already known).
    fn infer_one(&mut self, g: &Graph, id: NodeId) -> Vec<Fact> {
        let node = g.node(id);
        match &node.kind {
            NodeKind::Input {
                default: Some((t, _)),
                ..
            } if self.defaults == Defaults::AsValues => vec![const_fact(t)],
            NodeKind::Input { info, default } => {
                let mark = self.syms.next;
                let mut fact = self.syms.from_info(info);
                fact.declared = false;
                if default.is_some() {
                    // Overridable: only the dtype and rank are sure.
                    if let Some(s) = fact.shape.as_mut() {
                        for d in s.iter_mut() {
                            *d = self.syms.fresh();
                        }
                    }
                }
                self.note_origin(mark, id);
                vec![fact]
            }
            NodeKind::Initializer(_) => {
                let v = ValueRef { node: id, slot: 0 };
                vec![match g.const_tensor(v) {
                    Some(t) => const_fact(t),
                    None => Fact::default(),
                }]
            }
            // The dense shape and the values' type; the values themselves are not tracked.
            NodeKind::SparseInitializer(s) => vec![Fact {
                dtype: s
                    .values
                    .as_ref()
                    .and_then(|t| t.data_type)
                    .filter(|d| *d != 0),
                shape: Some(s.dims.iter().map(|d| Dim::K(*d)).collect()),
                value: None,
                declared: false,
            }],
            NodeKind::Op(p) => {
                let ins: Vec<Option<Fact>> = g
                    .node_inputs(id)
                    .iter()
                    .map(|i| i.map(|v| self.get(v).clone()))
                    .collect();
                let mark = self.syms.next;
                let infos = g.value_infos();
                let declared = &self.declared;
                let lookup = |name: &str| {
                    declared
                        .get(name)
                        .and_then(|i| infos.get(*i))
                        .filter(|vi| vi.name.as_deref() == Some(name))
                };
                let outs = infer_node(p, &ins, self.opset, &mut self.syms, lookup);
                self.note_origin(mark, id);
                outs
            }
        }
    }

    /// Records `id` as the origin of the fresh symbols made since the counter stood at `mark`.
    fn note_origin(&mut self, mark: u32, id: NodeId) {
        for s in mark + 1..=self.syms.next {
            if self.syms.name(s).is_none() {
                self.origin.insert(s, id);
            }
        }
    }

    /// Gives the fresh symbols `id`'s re-inference made in `outs` (those above `mark`) the
    /// symbols its earlier inference made at the same places in `old`, when each pairs with
    /// exactly one: the same unknown size of the same node's output, so the facts downstream,
    /// which copied the old symbols, stay as they are.
    fn reuse_symbols(&self, id: NodeId, mark: u32, outs: &mut [Fact], old: &[Option<Fact>]) {
        let fresh = |d: &Dim| match *d {
            Dim::S(s) if s > mark && self.syms.name(s).is_none() => Some(s),
            _ => None,
        };
        let own = |d: &Dim| match *d {
            Dim::S(s) if self.origin.get(&s) == Some(&id) => Some(s),
            _ => None,
        };
        let mut pairs: FxHashMap<u32, u32> = FxHashMap::default();
        let mut back: FxHashMap<u32, u32> = FxHashMap::default();
        let mut clash = false;
        for (new, old) in outs.iter().zip(old) {
            let Some(old) = old else { continue };
            let lists = [
                (new.shape.as_ref(), old.shape.as_ref()),
                (new.value.as_ref(), old.value.as_ref()),
            ];
            for (n, o) in lists {
                let (Some(n), Some(o)) = (n, o) else { continue };
                for (a, b) in n.iter().zip(o) {
                    if let (Some(a), Some(b)) = (fresh(a), own(b)) {
                        clash |= *pairs.entry(a).or_insert(b) != b;
                        clash |= *back.entry(b).or_insert(a) != a;
                    }
                }
            }
        }
        if clash || pairs.is_empty() {
            return;
        }
        for f in outs.iter_mut() {
            for list in [f.shape.as_mut(), f.value.as_mut()].into_iter().flatten() {
                for d in list.iter_mut() {
                    if let Dim::S(s) = *d {
                        if let Some(b) = pairs.get(&s) {
                            *d = Dim::S(*b);
                        }
                    }
                }
            }
        }
    }

    /// Brings the facts of a graph up to date after a change to it, now `g`: `renewed` are the
    /// nodes the change added or removed (a removed node's id may be reused by an added one),
    /// `changed` those whose inputs, attributes, output names or declared types it changed.
    /// Each live node of either is inferred again, and then every reader of a value whose fact
    /// changed, until no fact changes: work in proportion to the nodes whose facts the change
    /// reaches, not to the graph. The result is what [`Facts::infer_with`] on `g` gives, up to
    /// the numbering of symbols. Returns what [`Facts::undo`] needs, or `None` when more than
    /// `limit` nodes would be inferred: the facts are then half updated, for the caller to drop
    /// (a change whose effect spreads that far costs one inference of the graph when next asked).
    pub fn update(
        &mut self,
        g: &Graph,
        renewed: impl IntoIterator<Item = NodeId>,
        changed: impl IntoIterator<Item = NodeId>,
        limit: usize,
    ) -> Option<FactsUndo> {
        let mut undo = FactsUndo::default();
        let mut queue: VecDeque<NodeId> = VecDeque::new();
        let mut queued: FxHashSet<NodeId> = FxHashSet::default();
        let mut gone: FxHashSet<NodeId> = FxHashSet::default();
        for id in renewed {
            if !gone.insert(id) {
                continue;
            }
            // Inference gives every output a fact: slots from 0 up to the first without.
            for slot in 0.. {
                let v = ValueRef { node: id, slot };
                match self.map.remove(&v) {
                    Some(old) => undo.old.push((v, Some(old))),
                    None => break,
                }
            }
            if g.contains(id) && queued.insert(id) {
                queue.push_back(id);
            }
        }
        for id in changed {
            if g.contains(id) && queued.insert(id) {
                queue.push_back(id);
            }
        }
        let mut inferred = 0usize;
        while let Some(id) = queue.pop_front() {
            queued.remove(&id);
            inferred += 1;
            if inferred > limit {
                return None;
            }
            let n = g.node(id).num_outputs();
            let old: Vec<Option<Fact>> = (0..n)
                .map(|slot| self.map.get(&ValueRef { node: id, slot }).cloned())
                .collect();
            let mark = self.syms.next;
            let mut outs = self.infer_one(g, id);
            outs.resize(n, Fact::default());
            self.reuse_symbols(id, mark, &mut outs, &old);
            for (slot, (fact, old)) in outs.into_iter().zip(old).enumerate() {
                if old.as_ref() == Some(&fact) {
                    continue;
                }
                let v = ValueRef { node: id, slot };
                undo.old.push((v, old));
                self.map.insert(v, fact);
                for (c, _) in g.consumers(v) {
                    if queued.insert(c) {
                        queue.push_back(c);
                    }
                }
            }
        }
        Some(undo)
    }

    /// Takes back an [`Facts::update`] (symbols made since stay, unused).
    pub fn undo(&mut self, undo: FactsUndo) {
        for (v, old) in undo.old.into_iter().rev() {
            match old {
                Some(f) => self.map.insert(v, f),
                None => self.map.remove(&v),
            };
        }
    }

    /// Whether `self` and `other` give every value of `g` the same fact, up to a one-to-one
    /// renaming of symbols: a check of [`Facts::update`] against a fresh inference.
    pub fn same_up_to_symbols(&self, other: &Facts, g: &Graph) -> std::result::Result<(), String> {
        let mut fwd: FxHashMap<u32, u32> = FxHashMap::default();
        let mut back: FxHashMap<u32, u32> = FxHashMap::default();
        for id in g.g.node_indices().map(NodeId) {
            for slot in 0..g.node(id).num_outputs() {
                let v = ValueRef { node: id, slot };
                let (a, b) = (self.get(v), other.get(v));
                let same_dims =
                    |x: &Option<Vec<Dim>>,
                     y: &Option<Vec<Dim>>,
                     fwd: &mut FxHashMap<u32, u32>,
                     back: &mut FxHashMap<u32, u32>| match (x, y) {
                        (None, None) => true,
                        (Some(x), Some(y)) if x.len() == y.len() => {
                            x.iter().zip(y).all(|(p, q)| match (p, q) {
                                (Dim::K(p), Dim::K(q)) => p == q,
                                (Dim::S(p), Dim::S(q)) => {
                                    *fwd.entry(*p).or_insert(*q) == *q
                                        && *back.entry(*q).or_insert(*p) == *p
                                }
                                _ => false,
                            })
                        }
                        _ => false,
                    };
                if a.dtype != b.dtype
                    || a.declared != b.declared
                    || !same_dims(&a.shape, &b.shape, &mut fwd, &mut back)
                    || !same_dims(&a.value, &b.value, &mut fwd, &mut back)
                {
                    return Err(format!("`{}`: {a:?} against {b:?}", g.value_name(v)));
                }
            }
        }
        Ok(())
    }

    /// Facts of the values inside the subgraphs of `g`'s nodes (nested ones included), each body
    /// a scope over its enclosing ones. `g` must be the graph these facts were inferred from.
    /// Bodies are inferred in preorder, a body after the whole of its enclosing graph, with an
    /// explicit work list (no recursion along the nesting).
    pub fn nested<'g>(&'g self, g: &'g Graph) -> NestedFacts<'g> {
        let mut n = NestedFacts {
            top: self,
            graph: g,
            scopes: Vec::new(),
            syms: self.syms.clone(),
        };
        let mut pending: Vec<(&'g GraphProto, Option<usize>)> = Vec::new();
        for id in g.topo_order() {
            if let Some(p) = g.node(id).op() {
                pending.extend(subgraphs(p).map(|b| (b, None)));
            }
        }
        let mut i = 0;
        while i < pending.len() {
            let (body, parent) = pending[i];
            let scope = n.infer_scope(body, parent);
            n.scopes.push(scope);
            for node in &body.node {
                pending.extend(subgraphs(node).map(|b| (b, Some(i))));
            }
            i += 1;
        }
        n
    }
}

/// The facts of one subgraph body, by value name.
#[derive(Debug)]
pub struct Scope<'g> {
    /// The body.
    pub graph: &'g GraphProto,
    /// The enclosing body (an index into [`NestedFacts::scopes`]), `None` for the top graph.
    pub parent: Option<usize>,
    values: HashMap<String, Fact>,
}

/// Facts of every subgraph body under a graph (see [`Facts::nested`]).
#[derive(Debug)]
pub struct NestedFacts<'g> {
    top: &'g Facts,
    graph: &'g Graph,
    /// The bodies in preorder: an enclosing body before the bodies inside it.
    pub scopes: Vec<Scope<'g>>,
    syms: Symbols,
}

impl<'g> NestedFacts<'g> {
    /// The symbols (those of the top graph's facts and the ones made inside the bodies).
    pub fn symbols(&self) -> &Symbols {
        &self.syms
    }

    /// What is known about the value `name` as seen from inside scope `scope`: its own values
    /// first, then the enclosing scopes', then the top graph's.
    pub fn get(&self, scope: usize, name: &str) -> &Fact {
        lookup(&self.scopes, self.top, self.graph, None, Some(scope), name)
    }

    fn infer_scope(&mut self, body: &'g GraphProto, parent: Option<usize>) -> Scope<'g> {
        let opset = self.top.opset;
        let mut values: HashMap<String, Fact> = HashMap::new();
        for vi in &body.input {
            let mut f = self.syms.from_info(vi);
            f.declared = false;
            values.insert(vi.name.clone().unwrap_or_default(), f);
        }
        for t in &body.initializer {
            values.insert(t.name.clone().unwrap_or_default(), const_fact(t));
        }
        let declared: HashMap<&str, &ValueInfoProto> = body
            .value_info
            .iter()
            .filter_map(|vi| Some((vi.name.as_deref()?, vi)))
            .collect();
        for node in &body.node {
            let ins: Vec<Option<Fact>> = node
                .input
                .iter()
                .map(|name| {
                    (!name.is_empty()).then(|| {
                        lookup(
                            &self.scopes,
                            self.top,
                            self.graph,
                            Some(&values),
                            parent,
                            name,
                        )
                        .clone()
                    })
                })
                .collect();
            let outs = infer_node(node, &ins, opset, &mut self.syms, |n| {
                declared.get(n).copied()
            });
            for (name, f) in node.output.iter().zip(outs) {
                if !name.is_empty() {
                    values.insert(name.clone(), f);
                }
            }
        }
        Scope {
            graph: body,
            parent,
            values,
        }
    }
}

/// `name` looked up in `local`, then scope `from` and its enclosing scopes, then the top graph.
fn lookup<'a>(
    scopes: &'a [Scope],
    top: &'a Facts,
    g: &Graph,
    local: Option<&'a HashMap<String, Fact>>,
    from: Option<usize>,
    name: &str,
) -> &'a Fact {
    if let Some(f) = local.and_then(|l| l.get(name)) {
        return f;
    }
    let mut at = from;
    while let Some(i) = at {
        let Some(s) = scopes.get(i) else { break };
        if let Some(f) = s.values.get(name) {
            return f;
        }
        at = s.parent;
    }
    match g.producer(name) {
        Some(v) => top.get(v),
        None => &UNKNOWN,
    }
}
