//! Choosing where to cut the original and the rewritten graph so that each segment's weights fit
//! a budget (see the parent module for how the segments are run).
//!
//! A *cut* is the set of values live between two positions of the original's topological order:
//! produced before, read after. It is used only if it is valid in both models:
//!
//! - every value in it is made by a non-constant node in both models, is a tensor (no sequence or
//!   optional value crosses a cut), and has the same element type and shape in both as far as
//!   static inference knows (a rule such as prune may keep a name and change its shape);
//! - in the rewritten graph, every node is either an ancestor of the cut or reads only cut values,
//!   values of its own side, graph inputs and constants; and each cut value is made in the same
//!   segment in both models (so a segment compares like with like).
//!
//! Constants (initializers, `Constant` nodes and nodes that compute only from constants) belong to
//! no segment: each segment takes the ones it reads, and its weight is their bytes. A node with
//! subgraphs (`If`, `Loop`, `Scan`) is one unit: its bodies stay whole with it, and the outer values
//! they read count as its inputs. The work is linear in the size of the graphs (a heap orders the
//! nodes), with no recursion on graph depth.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use crate::ir::facts::Dim;
use crate::onnx::proto::{GraphProto, NodeProto};
use crate::onnx::visit::nested_subgraphs;

/// Ops whose outputs are not tensors: such a value never crosses a cut.
const NON_TENSOR_OPS: &[&str] = &[
    "SequenceConstruct",
    "SequenceEmpty",
    "SequenceInsert",
    "SequenceErase",
    "SplitToSequence",
    "Optional",
];

/// Ops that are not functions of their inputs: never treated as constants.
const RANDOM_OPS: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// One model's graph as the planner sees it: nodes in topological order, what each reads, which
/// values are constants and what they weigh.
pub(crate) struct Scan<'a> {
    pub(crate) graph: &'a GraphProto,
    /// The non-constant nodes (indices into `graph.node`) in topological order.
    pub(crate) order: Vec<usize>,
    /// Whether node `i` computes only from constants.
    pub(crate) is_const: Vec<bool>,
    /// Position of node `i` in a topological order of every node.
    pub(crate) rank: Vec<usize>,
    /// What node `i` reads: its inputs and the outer values its subgraphs read (no empty names).
    pub(crate) reads: Vec<Vec<&'a str>>,
    /// The node making each value.
    pub(crate) producer: HashMap<&'a str, usize>,
    /// Initializer names (a graph input fed by the caller is not one).
    pub(crate) initializers: HashMap<&'a str, usize>,
    /// Bytes of each constant value (an initializer, a `Constant` node's tensor, or the
    /// constants a constant node computes from).
    weight: HashMap<&'a str, u64>,
}

impl<'a> Scan<'a> {
    /// Scans `graph`; `fed` are the graph inputs the caller gives values for.
    pub(crate) fn new(graph: &'a GraphProto, fed: &HashSet<String>) -> Scan<'a> {
        let n = graph.node.len();
        let mut initializers = HashMap::new();
        let mut weight: HashMap<&str, u64> = HashMap::new();
        for (i, t) in graph.initializer.iter().enumerate() {
            let name = t.name.as_deref().unwrap_or("");
            if !fed.contains(name) {
                initializers.insert(name, i);
                weight.insert(name, prost::Message::encoded_len(t) as u64);
            }
        }
        let mut producer = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for o in node.output.iter().filter(|o| !o.is_empty()) {
                producer.insert(o.as_str(), i);
            }
        }
        let reads: Vec<Vec<&str>> = graph.node.iter().map(node_reads).collect();
        let order_all = topological(n, &reads, &producer);
        let mut is_const = vec![false; n];
        let mut rank = vec![usize::MAX; n];
        let mut order = Vec::with_capacity(n);
        for (k, i) in order_all.into_iter().enumerate() {
            rank[i] = k;
            let node = &graph.node[i];
            let op = node.op_type.as_deref().unwrap_or("");
            let onnx = node.domain.as_deref().unwrap_or("").is_empty();
            let konst = onnx
                && (op == "Constant"
                    || (!reads[i].is_empty()
                        && !RANDOM_OPS.contains(&op)
                        && reads[i].iter().all(|r| weight.contains_key(r))));
            if konst {
                is_const[i] = true;
                let w = if op == "Constant" {
                    prost::Message::encoded_len(node) as u64
                } else {
                    reads[i].iter().filter_map(|r| weight.get(r)).sum()
                };
                for o in node.output.iter().filter(|o| !o.is_empty()) {
                    weight.insert(o.as_str(), w);
                }
            } else {
                order.push(i);
            }
        }
        Scan {
            graph,
            order,
            is_const,
            rank,
            reads,
            producer,
            initializers,
            weight,
        }
    }

    /// Whether `name` is a constant (an initializer or made by a constant node).
    pub(crate) fn is_constant(&self, name: &str) -> bool {
        self.weight.contains_key(name)
    }

    /// The non-constant node making `name`, if any.
    pub(crate) fn maker(&self, name: &str) -> Option<usize> {
        self.producer
            .get(name)
            .copied()
            .filter(|&p| !self.is_const[p])
    }

    /// Bytes of the constants node `i` reads that `counted` does not hold yet.
    fn peek_weight(&self, i: usize, counted: &HashSet<&'a str>) -> u64 {
        let mut seen: Vec<&str> = Vec::new();
        let mut w = 0;
        for r in &self.reads[i] {
            if let Some(b) = self.weight.get(r) {
                if !counted.contains(r) && !seen.contains(r) {
                    seen.push(r);
                    w += b;
                }
            }
        }
        w
    }

    /// Bytes of the constants node `i` reads that `counted` does not hold yet (adds them).
    fn new_weight(&self, i: usize, counted: &mut HashSet<&'a str>) -> u64 {
        let mut w = 0;
        for r in &self.reads[i] {
            if let Some(b) = self.weight.get(r) {
                if counted.insert(r) {
                    w += b;
                }
            }
        }
        w
    }

    /// Bytes of the constants the nodes `nodes` read, each counted once.
    pub(crate) fn weight_of(&self, nodes: &[usize]) -> u64 {
        let mut counted = HashSet::new();
        nodes
            .iter()
            .map(|&i| self.new_weight(i, &mut counted))
            .sum()
    }

    /// Bytes of every constant of the graph.
    pub(crate) fn total_weight(&self) -> u64 {
        self.weight_of(&self.order)
    }

    fn non_tensor(&self, name: &str) -> bool {
        self.producer.get(name).is_some_and(|&p| {
            let op = self.graph.node[p].op_type.as_deref().unwrap_or("");
            NON_TENSOR_OPS.contains(&op)
        })
    }
}

/// What node `node` reads: its non-empty inputs, then every name its (nested) subgraphs read
/// that none of them defines, each once.
fn node_reads(node: &NodeProto) -> Vec<&str> {
    let mut out: Vec<&str> = node
        .input
        .iter()
        .filter(|s| !s.is_empty())
        .map(String::as_str)
        .collect();
    let mut bodies = Vec::new();
    nested_subgraphs(node, &mut bodies);
    if bodies.is_empty() {
        return out;
    }
    let mut defined: HashSet<&str> = HashSet::new();
    for g in &bodies {
        defined.extend(g.input.iter().filter_map(|v| v.name.as_deref()));
        defined.extend(g.initializer.iter().filter_map(|t| t.name.as_deref()));
        for n in &g.node {
            defined.extend(n.output.iter().map(String::as_str));
        }
    }
    let mut seen: HashSet<&str> = out.iter().copied().collect();
    for g in &bodies {
        for n in &g.node {
            for i in n.input.iter().filter(|s| !s.is_empty()) {
                if !defined.contains(i.as_str()) && seen.insert(i) {
                    out.push(i);
                }
            }
        }
        for o in &g.output {
            if let Some(name) = o.name.as_deref() {
                if !defined.contains(name) && seen.insert(name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// A topological order of the nodes, the file order where that is one (Kahn's algorithm taking
/// the lowest ready index first); nodes on a cycle are left out (tract refuses such a graph).
fn topological(n: usize, reads: &[Vec<&str>], producer: &HashMap<&str, usize>) -> Vec<usize> {
    let mut pending = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, rs) in reads.iter().enumerate() {
        for r in rs {
            if let Some(&p) = producer.get(r) {
                if p != i {
                    pending[i] += 1;
                    readers[p].push(i);
                }
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| pending[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &r in &readers[i] {
            pending[r] -= 1;
            if pending[r] == 0 {
                ready.push(Reverse(r));
            }
        }
    }
    order
}

/// Static element type and shape of the values of one model, by name, for the same-shape test.
pub(crate) type Shapes = HashMap<String, (Option<i32>, Option<Vec<Option<i64>>>)>;

/// The static types of `graph`'s values (empty when the graph cannot be built).
pub(crate) fn static_types(graph: &GraphProto) -> Shapes {
    let Ok(g) = crate::ir::Graph::from_proto(graph.clone()) else {
        return Shapes::new();
    };
    let facts = g.facts();
    let mut out = Shapes::new();
    for id in g.ops() {
        let node = g.node(id);
        for slot in 0..node.num_outputs() {
            let Some(name) = node.output_name(slot) else {
                continue;
            };
            let Some(v) = g.producer(name) else { continue };
            let f = facts.get(v);
            let shape = f.shape.as_ref().map(|s| {
                s.iter()
                    .map(|d| match d {
                        Dim::K(k) => Some(*k),
                        Dim::S(_) => None,
                    })
                    .collect()
            });
            out.insert(name.to_string(), (f.dtype, shape));
        }
    }
    out
}

/// Whether what is known of `a` and `b` agrees (unknowns agree with anything).
fn same_type(
    a: Option<&(Option<i32>, Option<Vec<Option<i64>>>)>,
    b: Option<&(Option<i32>, Option<Vec<Option<i64>>>)>,
) -> bool {
    let (Some((da, sa)), Some((db, sb))) = (a, b) else {
        return true;
    };
    if let (Some(x), Some(y)) = (da, db) {
        if x != y {
            return false;
        }
    }
    if let (Some(x), Some(y)) = (sa, sb) {
        if x.len() != y.len() {
            return false;
        }
        if x.iter()
            .zip(y)
            .any(|(p, q)| matches!((p, q), (Some(p), Some(q)) if p != q))
        {
            return false;
        }
    }
    true
}

/// The segments of both models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segmentation {
    /// `cuts[k]` is the set of values passed from segment `k` to segment `k + 1` (and on), in
    /// the order the original makes them.
    pub cuts: Vec<Vec<String>>,
    /// The original's non-constant nodes of each segment, in topological order.
    pub original: Vec<Vec<usize>>,
    /// The rewritten model's non-constant nodes of each segment, in topological order.
    pub rewritten: Vec<Vec<usize>>,
    /// Cuts the planner wanted but dropped because they were not valid in the rewritten model.
    pub dropped: usize,
}

/// Cuts the original `a` and the rewritten `b` into consecutive segments whose weights (the bytes
/// of the constants a segment reads, in the original) are at most `budget` where a valid cut
/// allows it (see the module documentation); `fed` are the graph inputs the caller gives. One
/// segment when no cut is valid.
pub fn plan(a: &GraphProto, b: &GraphProto, fed: &HashSet<String>, budget: u64) -> Segmentation {
    let sa = Scan::new(a, fed);
    let sb = Scan::new(b, fed);
    let (ta, tb) = (static_types(a), static_types(b));
    plan_scanned(&sa, &sb, &ta, &tb, budget)
}

pub(crate) fn plan_scanned(
    sa: &Scan,
    sb: &Scan,
    ta: &Shapes,
    tb: &Shapes,
    budget: u64,
) -> Segmentation {
    let n = sa.order.len();
    let eligible_value = |v: &str| {
        sb.maker(v).is_some()
            && !sa.non_tensor(v)
            && !sb.non_tensor(v)
            && same_type(ta.get(v), tb.get(v))
    };
    // Position in the original's order of each value's maker, and of its last reader.
    let mut made_at: HashMap<&str, usize> = HashMap::new();
    let mut last_read: HashMap<&str, usize> = HashMap::new();
    for (p, &i) in sa.order.iter().enumerate() {
        for r in &sa.reads[i] {
            if sa.maker(r).is_some() {
                last_read.insert(r, p);
            }
        }
        for o in sa.graph.node[i].output.iter().filter(|o| !o.is_empty()) {
            made_at.insert(o.as_str(), p);
        }
    }
    // eligible[p]: every value live at the boundary before position p may cross a cut.
    let mut eligible = vec![false; n + 1];
    let mut ineligible_live = 0usize;
    let mut dies_at: Vec<Vec<&str>> = vec![Vec::new(); n + 1];
    for (v, &last) in &last_read {
        if let Some(&m) = made_at.get(v) {
            if m < last {
                dies_at[last].push(v);
            }
        }
    }
    let mut bad: HashSet<&str> = HashSet::new();
    for p in 0..n {
        eligible[p] = p > 0 && ineligible_live == 0;
        // Values read for the last time at p stop being live after it.
        for v in &dies_at[p] {
            if bad.remove(v) {
                ineligible_live -= 1;
            }
        }
        for o in sa.graph.node[sa.order[p]]
            .output
            .iter()
            .filter(|o| !o.is_empty())
        {
            let live = last_read.get(o.as_str()).is_some_and(|&l| l > p);
            if live && !eligible_value(o) && bad.insert(o.as_str()) {
                ineligible_live += 1;
            }
        }
    }
    let mut positions = greedy(sa, &eligible, budget);
    let mut dropped = 0;
    loop {
        let cuts = live_sets(sa, &positions, &made_at, &last_read);
        match assign_rewritten(sb, &cuts) {
            Ok(rewritten) => {
                let mut bounds = vec![0];
                bounds.extend(&positions);
                bounds.push(n);
                let original = bounds
                    .windows(2)
                    .map(|w| sa.order[w[0]..w[1]].to_vec())
                    .collect();
                return Segmentation {
                    cuts,
                    original,
                    rewritten,
                    dropped,
                };
            }
            Err(offending) => {
                dropped += offending.len();
                let mut k = 0;
                positions.retain(|_| {
                    k += 1;
                    !offending.contains(&(k - 1))
                });
            }
        }
    }
}

/// Positions (in the original's order) before which to cut: a segment grows until the next node
/// would take its weight over `budget`; it then ends at the last eligible boundary in it, else at
/// the first eligible one after.
fn greedy(sa: &Scan, eligible: &[bool], budget: u64) -> Vec<usize> {
    let n = sa.order.len();
    let mut cuts = Vec::new();
    let (mut start, mut w, mut p) = (0usize, 0u64, 0usize);
    let mut counted: HashSet<&str> = HashSet::new();
    let mut last_ok: Option<usize> = None;
    let mut over = false;
    while p < n {
        if over && eligible[p] && p > start {
            cuts.push(p);
            (start, w, over, last_ok) = (p, 0, false, None);
            counted.clear();
            continue;
        }
        let nw = sa.peek_weight(sa.order[p], &counted);
        if p > start && w + nw > budget && !over {
            let cut = if eligible[p] { Some(p) } else { last_ok };
            match cut {
                Some(c) => {
                    cuts.push(c);
                    (start, w, last_ok) = (c, 0, None);
                    counted.clear();
                    p = c;
                    continue;
                }
                None => over = true,
            }
        }
        sa.new_weight(sa.order[p], &mut counted);
        w += nw;
        p += 1;
        if p < n && eligible[p] {
            last_ok = Some(p);
        }
    }
    cuts
}

/// The values live at each cut position, in the order the original makes them (one sweep).
fn live_sets(
    sa: &Scan,
    positions: &[usize],
    made_at: &HashMap<&str, usize>,
    last_read: &HashMap<&str, usize>,
) -> Vec<Vec<String>> {
    let n = sa.order.len();
    let mut dies_at: Vec<Vec<&str>> = vec![Vec::new(); n + 1];
    for (v, &l) in last_read {
        dies_at[l].push(v);
    }
    let mut live: BTreeMap<(usize, usize), &str> = BTreeMap::new();
    let mut key: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut out = Vec::with_capacity(positions.len());
    let mut next = positions.iter().peekable();
    for p in 0..=n {
        while next.peek().is_some_and(|&&c| c == p) {
            next.next();
            out.push(live.values().map(|v| v.to_string()).collect());
        }
        if p == n {
            break;
        }
        for v in &dies_at[p] {
            if let Some(k) = key.remove(v) {
                live.remove(&k);
            }
        }
        for (slot, o) in sa.graph.node[sa.order[p]].output.iter().enumerate() {
            let o = o.as_str();
            if !o.is_empty()
                && made_at.get(o) == Some(&p)
                && last_read.get(o).is_some_and(|&l| l > p)
            {
                live.insert((p, slot), o);
                key.insert(o, (p, slot));
            }
        }
    }
    out
}

/// Assigns the rewritten model's nodes to segments: a node goes to the first segment whose end
/// cut it is an ancestor of, else (nodes that lead only to graph outputs) as late as its readers
/// and inputs allow. `Err` lists the cuts (indices into `cuts`) that do not separate the
/// rewritten graph.
fn assign_rewritten(sb: &Scan, cuts: &[Vec<String>]) -> Result<Vec<Vec<usize>>, HashSet<usize>> {
    let n = sb.graph.node.len();
    let mut seg: Vec<Option<usize>> = vec![None; n];
    // The cuts holding each value: an interval, as liveness in the original is one.
    let mut span: HashMap<&str, (usize, usize)> = HashMap::new();
    for (k, cut) in cuts.iter().enumerate() {
        for v in cut {
            span.entry(v.as_str())
                .and_modify(|s| s.1 = k)
                .or_insert((k, k));
        }
    }
    let mut stack = Vec::new();
    for (k, cut) in cuts.iter().enumerate() {
        for v in cut {
            if let Some(m) = sb.maker(v) {
                stack.push(m);
            }
        }
        while let Some(i) = stack.pop() {
            if seg[i].is_some() {
                continue;
            }
            seg[i] = Some(k);
            for r in &sb.reads[i] {
                if let Some(m) = sb.maker(r) {
                    if seg[m].is_none() {
                        stack.push(m);
                    }
                }
            }
        }
    }
    // The other nodes lead only to graph outputs: each goes as late as its readers and the
    // values it reads allow (a cut value is there until the segment after the last cut holding
    // it, another value only in the segment making it).
    let last = cuts.len();
    let mut readers_min: Vec<usize> = vec![last; n];
    for &i in sb.order.iter().rev() {
        let s = match seg[i] {
            Some(s) => s,
            None => {
                let mut s = readers_min[i];
                for r in &sb.reads[i] {
                    if let Some(sm) = sb.maker(r).and_then(|m| seg[m]) {
                        s = s.min(span.get(r).map_or(sm, |&(_, hi)| hi + 1));
                    }
                }
                seg[i] = Some(s);
                s
            }
        };
        for r in &sb.reads[i] {
            if let Some(m) = sb.maker(r) {
                readers_min[m] = readers_min[m].min(s);
            }
        }
    }
    let mut offending = HashSet::new();
    for &i in &sb.order {
        let s = seg[i].unwrap_or(0);
        for r in &sb.reads[i] {
            let Some(m) = sb.maker(r) else { continue };
            let sm = seg[m].unwrap_or(0);
            if sm > s {
                // Read before it is made: no cut between the two may stay.
                offending.extend(s..sm);
                continue;
            }
            // `r` crosses cuts sm .. s-1 (cut k lies between segments k and k + 1).
            let (lo, hi) = span.get(r).copied().unwrap_or((usize::MAX, 0));
            for k in sm..s {
                if !(lo <= k && k <= hi) {
                    offending.insert(k);
                }
            }
        }
    }
    // Each cut value is made in the same segment in both models: the one before its first cut.
    for (v, &(lo, _)) in &span {
        match sb.maker(v).and_then(|m| seg[m]) {
            Some(s) if s == lo => {}
            _ => {
                offending.insert(lo);
            }
        }
    }
    if !offending.is_empty() {
        return Err(offending);
    }
    let mut segments = vec![Vec::new(); cuts.len() + 1];
    for &i in &sb.order {
        segments[seg[i].unwrap_or(0)].push(i);
    }
    Ok(segments)
}
