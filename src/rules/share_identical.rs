//! `S001 share-identical`: merges byte-identical constant tensors of any size.
//!
//! **What:** initializers and `Constant` values of the top-level graph with the same dtype, dims
//! and bytes become one: every reader of a duplicate reads the first copy (in graph order), and the
//! duplicate goes. Candidates are grouped by dtype, dims and size, then by content hash, then
//! compared in full, so a hash collision can never merge different tensors.
//! **Why:** exporters duplicate tied weights (embeddings and output projections, shared
//! convolution kernels); onnxslim only merges constants under 1,000 elements.
//! **Example:** `w_a` and `w_b`, both `float32[512,512]` with equal bytes, read by two MatMuls →
//! both MatMuls read `w_a`; `w_b` is removed.
//! **Exact:** yes, bit for bit. Graph inputs with default initializers are never touched, and a
//! duplicate that is a graph output or read by a subgraph by name is skipped (merging it would
//! need a new `Identity`). Constants inside subgraphs are `share-into-subgraphs`' work.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ir::{tensor, Graph, Model, NodeId, ValueRef};
use crate::onnx::proto::TensorProto;
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

/// See the module docs.
pub struct ShareIdentical;

/// Whether `a` and `b` hold the same contents (dtype, dims, payload, everything but name, doc
/// string and metadata), floats compared bitwise. Payloads are compared where they lie: encoding
/// both to compare them copied every candidate weight.
pub(crate) fn same_contents(a: &TensorProto, b: &TensorProto) -> bool {
    // Everything but the payload fields compared by value; `raw_data` is `Bytes` (a cheap clone).
    let shell = |t: &TensorProto| TensorProto {
        name: None,
        doc_string: None,
        metadata_props: Vec::new(),
        float_data: Vec::new(),
        double_data: Vec::new(),
        int32_data: Vec::new(),
        int64_data: Vec::new(),
        uint64_data: Vec::new(),
        string_data: Vec::new(),
        raw_data: None,
        data_type: t.data_type,
        dims: t.dims.clone(),
        segment: t.segment.clone(),
        data_location: t.data_location,
        external_data: t.external_data.clone(),
    };
    let bits32 = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let bits64 = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    shell(a) == shell(b)
        && a.raw_data == b.raw_data
        && a.float_data.len() == b.float_data.len()
        && bits32(&a.float_data) == bits32(&b.float_data)
        && bits64(&a.double_data) == bits64(&b.double_data)
        && a.int32_data == b.int32_data
        && a.int64_data == b.int64_data
        && a.uint64_data == b.uint64_data
        && a.string_data == b.string_data
}

fn pinned(g: &Graph, v: ValueRef) -> bool {
    g.is_graph_output(v) || g.is_captured(v)
}

/// Constant values of the top level in graph order.
pub(crate) fn constants(g: &Graph) -> Vec<(NodeId, &TensorProto)> {
    g.topo_order()
        .into_iter()
        .filter_map(|id| {
            g.const_tensor(ValueRef { node: id, slot: 0 })
                .map(|t| (id, t))
        })
        .collect()
}

impl Rule for ShareIdentical {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "S001",
            name: "share-identical",
            group: "share",
            summary: "merge byte-identical initializers and constants of any size",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        // Cheap keys first: only tensors that share dtype, dims and size are hashed.
        let mut by_shape: BTreeMap<(i32, Vec<i64>, u64), Vec<(NodeId, &TensorProto)>> =
            BTreeMap::new();
        for (id, t) in constants(g) {
            by_shape
                .entry((
                    t.data_type.unwrap_or(0),
                    t.dims.clone(),
                    tensor::payload_bytes(t),
                ))
                .or_default()
                .push((id, t));
        }
        for group in by_shape.into_values().filter(|v| v.len() > 1) {
            let mut by_hash: BTreeMap<String, Vec<(NodeId, &TensorProto)>> = BTreeMap::new();
            for (id, t) in group {
                by_hash
                    .entry(tensor::content_hash(t))
                    .or_default()
                    .push((id, t));
            }
            for same in by_hash.into_values().filter(|v| v.len() > 1) {
                let (keep, kt) = same[0];
                for &(dup, dt) in &same[1..] {
                    if !same_contents(kt, dt) {
                        continue;
                    }
                    let dv = ValueRef { node: dup, slot: 0 };
                    if pinned(g, dv) {
                        f.skip(
                            model,
                            dup,
                            format!(
                                "equal to `{}` but a graph output or read by a subgraph by name",
                                g.value_name(ValueRef {
                                    node: keep,
                                    slot: 0
                                })
                            ),
                        );
                        continue;
                    }
                    f.matches.push(Match {
                        anchor: dup,
                        nodes: vec![keep],
                        what: format!(
                            "share `{}` ({} bytes) with its copy `{}`",
                            g.value_name(dv),
                            tensor::payload_bytes(dt),
                            g.value_name(ValueRef {
                                node: keep,
                                slot: 0
                            })
                        ),
                    });
                }
            }
        }
        f
    }

    fn independent_matches(&self) -> bool {
        // Each match removes its own duplicate (`anchor`) and moves that duplicate's readers to
        // the copy it keeps (`nodes[0]`), which no match removes: all the duplicates of one
        // tensor go in one batch, not one per `find` (they all name the same kept copy).
        true
    }

    fn rewrite(&self, _model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        let keep = ValueRef {
            node: m.nodes[0],
            slot: 0,
        };
        p.shunt(
            ValueRef {
                node: m.anchor,
                slot: 0,
            },
            Wire::Value(keep),
        );
        p.remove(m.anchor);
        Ok(p)
    }
}
