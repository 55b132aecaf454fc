//! [`Graph`] → GraphProto.

use super::graph::{Edge, Graph, NodeKind};
use crate::onnx::proto::GraphProto;
use petgraph::Direction;

impl Graph {
    /// Encodes the graph. Nodes come out in topological order with ties broken by their original
    /// position, inputs and initializers in their original order; node input names are taken from
    /// the edges, so renamed or redirected values are always spelled consistently.
    pub fn to_proto(&self) -> GraphProto {
        let mut out = self.shell.clone();
        let order = self.emit_order();
        let mut inputs = Vec::new();
        let mut inits = Vec::new();
        let mut sparse = Vec::new();
        for &id in &order {
            let node = self.node(id);
            match &node.kind {
                NodeKind::Input { info, default } => {
                    inputs.push((node.key, info.clone()));
                    if let Some((t, key)) = default {
                        inits.push((*key, t.clone()));
                    }
                }
                NodeKind::Initializer(t) => inits.push((node.key, t.clone())),
                NodeKind::SparseInitializer(s) => sparse.push((node.key, s.clone())),
                NodeKind::Op(p) => {
                    let mut p = p.clone();
                    for s in p.input.iter_mut() {
                        s.clear();
                    }
                    for e in self.g.edges_directed(id.0, Direction::Incoming) {
                        if let Edge::Data { out: o, inp } = *e.weight() {
                            let name = self.g[e.source()].output_name(o).unwrap_or("");
                            if inp < p.input.len() {
                                p.input[inp] = name.to_string();
                            }
                        }
                    }
                    out.node.push(p);
                }
            }
        }
        inputs.sort_by_key(|(k, _)| *k);
        inits.sort_by_key(|(k, _)| *k);
        sparse.sort_by_key(|(k, _)| *k);
        out.input = inputs.into_iter().map(|(_, i)| i).collect();
        out.initializer = inits.into_iter().map(|(_, t)| t).collect();
        out.sparse_initializer = sparse.into_iter().map(|(_, s)| s).collect();
        out.output = self.outputs.iter().map(|(_, i)| i.clone()).collect();
        out.value_info = self
            .value_info
            .iter()
            .filter(|vi| {
                let name = vi.name.as_deref().unwrap_or("");
                self.producer(name).is_some() || self.orphan_value_info.contains(name)
            })
            .cloned()
            .collect();
        out
    }
}
