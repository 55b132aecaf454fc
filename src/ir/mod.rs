//! The graph IR: a stable-index multigraph (petgraph's `StableGraph` layout, with lists linked
//! both ways) whose nodes are graph inputs, initializers and operators, and whose edges carry
//! output and input slots.
//!
//! Decoding ([`Model::from_proto`]) and encoding ([`Model::to_proto`]) are lossless: every field of
//! the `ModelProto` that the IR does not model explicitly is kept verbatim, subgraphs of
//! `If`/`Loop`/`Scan` stay inside their node's attributes, and the original order of nodes,
//! initializers and inputs is restored.

mod adj;
mod build;
pub mod builder;
mod emit;
pub mod facts;
pub mod graph;
pub mod spill;
pub mod tensor;
pub mod text;

pub use adj::visited;
pub use graph::{Edge, Graph, Node, NodeId, NodeKind, ValueRef};

use crate::error::Result;
use crate::onnx::proto::ModelProto;

/// A model: the top-level graph as IR plus every other `ModelProto` field, untouched.
#[derive(Debug, Clone)]
pub struct Model {
    /// The `ModelProto` without its graph (opsets, metadata, functions, training info, ...).
    pub shell: ModelProto,
    /// The top-level graph.
    pub graph: Graph,
}

impl Model {
    /// Builds the IR from a decoded model, checking the graph's structure.
    pub fn from_proto(mut proto: ModelProto) -> Result<Model> {
        let graph_proto = proto.graph.take().unwrap_or_default();
        let graph = Graph::from_proto(graph_proto)?;
        Ok(Model {
            shell: proto,
            graph,
        })
    }

    /// Encodes the IR back into a `ModelProto`.
    pub fn to_proto(&self) -> ModelProto {
        let mut proto = self.shell.clone();
        proto.graph = Some(self.graph.to_proto());
        proto
    }

    /// The opset version imported for `domain` (`""` is the default ONNX domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        self.shell
            .opset_import
            .iter()
            .find(|o| {
                let d = o.domain.as_deref().unwrap_or("");
                d == domain || (domain.is_empty() && d == "ai.onnx")
            })
            .and_then(|o| o.version)
    }
}
