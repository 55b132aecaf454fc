//! GraphProto → [`Graph`], with the structural checks that make the IR trustworthy.

use std::collections::{BTreeSet, HashMap, HashSet};

use rustc_hash::FxHashMap;

use super::graph::{free_names, has_subgraphs, Edge, Graph, NodeKind, OrderKey, ValueRef};
use crate::error::{Error, Result};
use crate::onnx::proto::GraphProto;
use crate::onnx::visit::subgraphs;

impl Graph {
    /// Builds the IR from `proto`. Refuses duplicate value names, node inputs and graph outputs
    /// that nothing produces, subgraph reads of unknown names, and cycles.
    pub fn from_proto(mut proto: GraphProto) -> Result<Graph> {
        let mut g = Graph::empty();
        let inputs = std::mem::take(&mut proto.input);
        let initializers = std::mem::take(&mut proto.initializer);
        let sparse = std::mem::take(&mut proto.sparse_initializer);
        let nodes = std::mem::take(&mut proto.node);
        let outputs = std::mem::take(&mut proto.output);
        g.value_info = std::mem::take(&mut proto.value_info);
        let mut at: FxHashMap<String, Vec<usize>> = FxHashMap::default();
        for (i, vi) in g.value_info.iter().enumerate() {
            at.entry(vi.name.clone().unwrap_or_default())
                .or_default()
                .push(i);
        }
        g.value_info_at = std::sync::Arc::new(at);
        g.shell = proto;

        let dup = |name: &str| Error::Graph {
            reason: format!("duplicate value name `{name}`"),
        };
        let mut input_pos: HashMap<String, usize> = HashMap::new();
        for (i, info) in inputs.iter().enumerate() {
            let name = info.name.clone().unwrap_or_default();
            if input_pos.insert(name.clone(), i).is_some() {
                return Err(dup(&name));
            }
        }
        let mut defaults: HashMap<usize, (crate::onnx::proto::TensorProto, OrderKey)> =
            HashMap::new();
        let mut plain = Vec::new();
        let mut init_names = HashSet::new();
        for (i, t) in initializers.into_iter().enumerate() {
            let name = t.name.clone().unwrap_or_default();
            if !init_names.insert(name.clone()) {
                return Err(dup(&name));
            }
            let key = OrderKey(i as u64, 0);
            match input_pos.get(&name) {
                Some(&pos) => {
                    defaults.insert(pos, (t, key));
                }
                None => plain.push((t, key)),
            }
        }
        for (i, info) in inputs.into_iter().enumerate() {
            let default = defaults.remove(&i);
            g.add_node(NodeKind::Input { info, default }, OrderKey(i as u64, 0))?;
        }
        for (t, key) in plain {
            g.add_node(NodeKind::Initializer(t), key)?;
        }
        for (i, s) in sparse.into_iter().enumerate() {
            g.add_node(NodeKind::SparseInitializer(s), OrderKey(i as u64, 0))?;
        }
        let mut ops = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.into_iter().enumerate() {
            ops.push(g.add_node(NodeKind::Op(n), OrderKey(i as u64, 0))?);
        }
        g.next_major = ops.len() as u64 + g.node_count() as u64;

        for &id in &ops {
            let (label, op_type) = (g.node(id).label(), g.node(id).op_type().to_string());
            let p = g.node(id).op().cloned().unwrap_or_default();
            for (slot, name) in p.input.iter().enumerate() {
                if name.is_empty() {
                    continue;
                }
                let from = g.producer(name).ok_or_else(|| Error::Node {
                    node: label.clone(),
                    op: op_type.clone(),
                    reason: format!("input `{name}` is produced by nothing"),
                })?;
                // A fresh node: add the edge directly (`connect` scans the node's existing
                // edges, which is quadratic for a node with very many inputs).
                g.g.add_edge(
                    from.node.0,
                    id.0,
                    Edge::Data {
                        out: from.slot,
                        inp: slot,
                    },
                );
            }
            if has_subgraphs(&p) {
                let mut free = BTreeSet::new();
                for sub in subgraphs(&p) {
                    free_names(sub, &mut free);
                }
                for name in free {
                    let from = g.producer(&name).ok_or_else(|| Error::Node {
                        node: g.node(id).label(),
                        op: g.node(id).op_type().to_string(),
                        reason: format!("a subgraph reads `{name}`, which nothing produces"),
                    })?;
                    g.add_capture(from, id);
                }
            }
        }
        for info in outputs {
            let name = info.name.clone().unwrap_or_default();
            let v: ValueRef = g.producer(&name).ok_or_else(|| Error::Graph {
                reason: format!("graph output `{name}` is produced by nothing"),
            })?;
            g.outputs.push((v, info));
        }
        g.orphan_value_info = g
            .value_info
            .iter()
            .map(|vi| vi.name.clone().unwrap_or_default())
            .filter(|n| g.producer(n).is_none())
            .collect();
        if let Some(c) = g.node_on_cycle() {
            let cyclic = g.node(c).label();
            return Err(Error::Graph {
                reason: format!("the graph has a cycle through node `{cyclic}`"),
            });
        }
        g.dirty = false;
        Ok(g)
    }
}
