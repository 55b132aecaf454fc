//! The directed multigraph under [`super::Graph`]: petgraph's `StableGraph` layout (slots that
//! keep their index, a last-in-first-out free list, each node's edges in a linked list, newest
//! first) with lists linked both ways, so that removing an edge costs O(1) instead of a walk of
//! its source's out-edges. With petgraph's singly linked lists, removing the readers of a
//! constant read by N nodes one by one cost O(N²).

use std::cell::Cell;
use std::ops::{Index, IndexMut};

use petgraph::graph::{EdgeIndex, NodeIndex};
use petgraph::Direction;

const END: u32 = u32::MAX;

thread_local! {
    static VISITED: Cell<u64> = const { Cell::new(0) };
}

/// Counts `n` visits (see [`visited`]): for walks outside the graph's own iterators.
pub(crate) fn visit(n: usize) {
    VISITED.with(|c| c.set(c.get().wrapping_add(n as u64)));
}

/// Graph elements this thread has visited so far: every node and edge an iteration over a
/// graph yielded (each node of a whole-graph walk, each edge of a node's list) and every slot a
/// copy of a graph copied. The work of a rule run is the difference across it; a driver or rule
/// that walks the whole graph (or a node's thousands of readers) per patch makes it grow with
/// the square of the graph. Tests assert on it instead of on wall time.
pub fn visited() -> u64 {
    VISITED.with(Cell::get)
}

fn dir(d: Direction) -> usize {
    match d {
        Direction::Outgoing => 0,
        Direction::Incoming => 1,
    }
}

#[derive(Debug, Clone)]
struct NodeSlot<N> {
    weight: Option<N>,
    /// First out-edge and first in-edge (`END` for none).
    head: [u32; 2],
}

#[derive(Debug, Clone)]
struct EdgeSlot<E> {
    weight: Option<E>,
    /// Source and target.
    ends: [u32; 2],
    /// Next and previous edge in the source's out-list (`[0]`) and the target's in-list (`[1]`).
    next: [u32; 2],
    prev: [u32; 2],
}

/// A directed multigraph with stable indices and O(1) edge removal. Removed slots are reused
/// last in, first out (taking back removals in reverse order gives nodes their indices back).
#[derive(Debug)]
pub struct Adj<N, E> {
    nodes: Vec<NodeSlot<N>>,
    edges: Vec<EdgeSlot<E>>,
    free_nodes: Vec<u32>,
    free_edges: Vec<u32>,
    node_count: usize,
}

/// One edge as seen from an endpoint: the same accessors as petgraph's `EdgeRef`.
#[derive(Debug, Clone, Copy)]
pub struct EdgeRef<'a, E> {
    id: EdgeIndex,
    source: NodeIndex,
    target: NodeIndex,
    weight: &'a E,
}

impl<'a, E> EdgeRef<'a, E> {
    /// The edge's index.
    pub fn id(&self) -> EdgeIndex {
        self.id
    }
    /// The node the edge leaves.
    pub fn source(&self) -> NodeIndex {
        self.source
    }
    /// The node the edge enters.
    pub fn target(&self) -> NodeIndex {
        self.target
    }
    /// The edge's weight.
    pub fn weight(&self) -> &'a E {
        self.weight
    }
}

impl<N: Clone, E: Clone> Clone for Adj<N, E> {
    fn clone(&self) -> Self {
        visit(self.nodes.len() + self.edges.len());
        Adj {
            nodes: self.nodes.clone(),
            edges: self.edges.clone(),
            free_nodes: self.free_nodes.clone(),
            free_edges: self.free_edges.clone(),
            node_count: self.node_count,
        }
    }
}

impl<N, E> Default for Adj<N, E> {
    fn default() -> Self {
        Adj {
            nodes: Vec::new(),
            edges: Vec::new(),
            free_nodes: Vec::new(),
            free_edges: Vec::new(),
            node_count: 0,
        }
    }
}

impl<N, E> Adj<N, E> {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node, in the most recently freed slot if there is one.
    pub fn add_node(&mut self, weight: N) -> NodeIndex {
        self.node_count += 1;
        let slot = NodeSlot {
            weight: Some(weight),
            head: [END; 2],
        };
        match self.free_nodes.pop() {
            Some(i) => {
                self.nodes[i as usize] = slot;
                NodeIndex::new(i as usize)
            }
            None => {
                self.nodes.push(slot);
                NodeIndex::new(self.nodes.len() - 1)
            }
        }
    }

    fn live(&self, ix: NodeIndex) -> bool {
        self.nodes
            .get(ix.index())
            .is_some_and(|n| n.weight.is_some())
    }

    /// Adds an edge `a → b` at the head of both lists. Panics if either node does not exist.
    pub fn add_edge(&mut self, a: NodeIndex, b: NodeIndex, weight: E) -> EdgeIndex {
        assert!(
            self.live(a) && self.live(b),
            "add_edge between missing nodes"
        );
        let ends = [a.index() as u32, b.index() as u32];
        let next = [self.nodes[a.index()].head[0], self.nodes[b.index()].head[1]];
        let slot = EdgeSlot {
            weight: Some(weight),
            ends,
            next,
            prev: [END; 2],
        };
        let e = match self.free_edges.pop() {
            Some(i) => {
                self.edges[i as usize] = slot;
                i
            }
            None => {
                self.edges.push(slot);
                (self.edges.len() - 1) as u32
            }
        };
        for d in 0..2 {
            if next[d] != END {
                self.edges[next[d] as usize].prev[d] = e;
            }
            self.nodes[ends[d] as usize].head[d] = e;
        }
        EdgeIndex::new(e as usize)
    }

    /// Removes edge `e` in O(1); its weight, or `None` if it did not exist.
    pub fn remove_edge(&mut self, e: EdgeIndex) -> Option<E> {
        let i = e.index();
        let slot = self.edges.get_mut(i)?;
        let weight = slot.weight.take()?;
        let (ends, next, prev) = (slot.ends, slot.next, slot.prev);
        for d in 0..2 {
            match prev[d] {
                END => self.nodes[ends[d] as usize].head[d] = next[d],
                p => self.edges[p as usize].next[d] = next[d],
            }
            if next[d] != END {
                self.edges[next[d] as usize].prev[d] = prev[d];
            }
        }
        self.free_edges.push(i as u32);
        Some(weight)
    }

    /// Removes node `ix` and its edges, in time proportional to its own edges.
    pub fn remove_node(&mut self, ix: NodeIndex) -> Option<N> {
        if !self.live(ix) {
            return None;
        }
        for d in 0..2 {
            while let Some(e) = Some(self.nodes[ix.index()].head[d]).filter(|&e| e != END) {
                self.remove_edge(EdgeIndex::new(e as usize));
            }
        }
        self.node_count -= 1;
        self.free_nodes.push(ix.index() as u32);
        self.nodes[ix.index()].weight.take()
    }

    /// Whether node `ix` exists.
    pub fn contains_node(&self, ix: NodeIndex) -> bool {
        self.live(ix)
    }

    /// The weight of node `ix`, if it exists.
    pub fn node_weight(&self, ix: NodeIndex) -> Option<&N> {
        self.nodes.get(ix.index())?.weight.as_ref()
    }

    /// Weights of every node, in index order.
    pub fn node_weights(&self) -> impl Iterator<Item = &N> {
        self.nodes.iter().filter_map(|n| {
            visit(1);
            n.weight.as_ref()
        })
    }

    /// Every node's index, in increasing order.
    pub fn node_indices(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                visit(1);
                n.weight.is_some()
            })
            .map(|(i, _)| NodeIndex::new(i))
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// One more than the largest node index ever used (a bound for tables indexed by node).
    pub fn node_bound(&self) -> usize {
        self.nodes.len()
    }

    /// The edges leaving (`Outgoing`) or entering (`Incoming`) `ix`, newest first; none if `ix`
    /// does not exist.
    pub fn edges_directed(
        &self,
        ix: NodeIndex,
        d: Direction,
    ) -> impl Iterator<Item = EdgeRef<'_, E>> + '_ {
        let d = dir(d);
        let mut e = self.nodes.get(ix.index()).map_or(END, |n| n.head[d]);
        std::iter::from_fn(move || {
            if e == END {
                return None;
            }
            visit(1);
            let slot = &self.edges[e as usize];
            let r = EdgeRef {
                id: EdgeIndex::new(e as usize),
                source: NodeIndex::new(slot.ends[0] as usize),
                target: NodeIndex::new(slot.ends[1] as usize),
                weight: slot.weight.as_ref().expect("linked edges are live"),
            };
            e = slot.next[d];
            Some(r)
        })
    }
}

impl<N, E> Index<NodeIndex> for Adj<N, E> {
    type Output = N;
    fn index(&self, ix: NodeIndex) -> &N {
        self.node_weight(ix).expect("no such node")
    }
}

impl<N, E> IndexMut<NodeIndex> for Adj<N, E> {
    fn index_mut(&mut self, ix: NodeIndex) -> &mut N {
        self.nodes
            .get_mut(ix.index())
            .and_then(|n| n.weight.as_mut())
            .expect("no such node")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(g: &Adj<(), u32>, n: NodeIndex) -> Vec<u32> {
        g.edges_directed(n, Direction::Outgoing)
            .map(|e| *e.weight())
            .collect()
    }

    fn inc(g: &Adj<(), u32>, n: NodeIndex) -> Vec<u32> {
        g.edges_directed(n, Direction::Incoming)
            .map(|e| *e.weight())
            .collect()
    }

    #[test]
    fn edges_unlink_from_the_middle_and_both_ends_of_a_list() {
        let mut g: Adj<(), u32> = Adj::new();
        let a = g.add_node(());
        let b = g.add_node(());
        let c = g.add_node(());
        let e: Vec<EdgeIndex> = (0..5).map(|w| g.add_edge(a, b, w)).collect();
        let f = g.add_edge(c, b, 9);
        assert_eq!(out(&g, a), [4, 3, 2, 1, 0]);
        assert_eq!(inc(&g, b), [9, 4, 3, 2, 1, 0]);
        assert_eq!(g.remove_edge(e[2]), Some(2));
        assert_eq!(g.remove_edge(e[2]), None);
        assert_eq!(g.remove_edge(e[4]), Some(4));
        assert_eq!(g.remove_edge(e[0]), Some(0));
        assert_eq!(out(&g, a), [3, 1]);
        assert_eq!(inc(&g, b), [9, 3, 1]);
        assert_eq!(g.remove_edge(f), Some(9));
        assert_eq!(inc(&g, b), [3, 1]);
        assert!(out(&g, c).is_empty());
        // A freed edge slot is reused and linked like a new one.
        g.add_edge(b, c, 7);
        assert_eq!(out(&g, b), [7]);
        assert_eq!(inc(&g, c), [7]);
        assert_eq!(inc(&g, b), [3, 1]);
    }

    #[test]
    fn a_removed_node_takes_its_edges_and_its_slot_is_reused_last_in_first_out() {
        let mut g: Adj<u8, u32> = Adj::new();
        let n: Vec<NodeIndex> = (0..4).map(|i| g.add_node(i)).collect();
        g.add_edge(n[0], n[1], 1);
        g.add_edge(n[1], n[2], 2);
        g.add_edge(n[3], n[1], 3);
        g.add_edge(n[0], n[2], 4);
        assert_eq!(g.remove_node(n[1]), Some(1));
        assert_eq!(g.remove_node(n[1]), None);
        assert_eq!(g.node_count(), 3);
        assert!(!g.contains_node(n[1]));
        assert_eq!(
            g.edges_directed(n[0], Direction::Outgoing)
                .map(|e| (e.target(), *e.weight()))
                .collect::<Vec<_>>(),
            [(n[2], 4)]
        );
        assert_eq!(g.edges_directed(n[3], Direction::Outgoing).count(), 0);
        assert_eq!(g.remove_node(n[3]), Some(3));
        assert_eq!(g.add_node(30), n[3]);
        assert_eq!(g.add_node(10), n[1]);
        assert_eq!(g.node_indices().collect::<Vec<_>>(), n);
        assert_eq!(
            g.node_weights().copied().collect::<Vec<_>>(),
            [0, 10, 2, 30]
        );
        assert_eq!(g.node_bound(), 4);
    }

    #[test]
    fn visits_count_the_nodes_and_edges_iterated_and_the_slots_copied() {
        let mut g: Adj<(), u32> = Adj::new();
        let a = g.add_node(());
        let b = g.add_node(());
        g.add_edge(a, b, 0);
        g.add_edge(a, b, 1);
        let v = visited();
        assert_eq!(out(&g, a).len(), 2);
        assert_eq!(visited() - v, 2);
        assert_eq!(g.node_indices().count(), 2);
        assert_eq!(visited() - v, 4);
        let copy = g.clone();
        assert_eq!(visited() - v, 8);
        assert_eq!(inc(&copy, a).len(), 0);
        assert_eq!(visited() - v, 8);
    }
}
