//! `S002 share-transposed`: stores a weight that is another weight's exact transpose only once.
//!
//! **What:** when a 2-D constant `B` equals `Aᵀ` bit for bit, `B` is replaced by
//! `Transpose(A)` (same name, so readers and the text form are unchanged) and its bytes go.
//! **Why:** tied encoder/decoder weights are often exported once as `W` and once as `Wᵀ`.
//! **Example:** `w: float32[256,64]`, `w_t: float32[64,256] = wᵀ` → `w_t = Transpose(w)`.
//! **Exact:** yes, bit for bit. It adds one `Transpose` node to save the bytes of `B`, so it only
//! acts when `B` holds at least 1 KiB; symmetric square tensors are `share-identical`'s job.
//! Values that are graph outputs or read by subgraphs are skipped.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::ir::{tensor, Model, NodeId, ValueRef};
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::share_identical::constants;
use super::util::make_attr_ints;

/// Smallest payload worth a `Transpose` node.
const MIN_BYTES: u64 = 1024;

/// See the module docs.
pub struct ShareTransposed;

/// Whether `b` is exactly the transpose of `a` (2-D float32 tensors, compared bitwise). Raw
/// payloads are compared in place, stopping at the first difference: weights of the same shape
/// pair up quadratically, and converting each pair in full made that quadratic in their bytes.
fn is_transpose(a: &TensorProto, b: &TensorProto) -> bool {
    if let (Some(x), Some(y), &[r, c]) = (&a.raw_data, &b.raw_data, &a.dims[..]) {
        let size = |r: i64, c: i64| Some((r as usize).checked_mul(c as usize)?.checked_mul(4)?);
        if r >= 0
            && c >= 0
            && b.dims[..] == [c, r]
            && size(r, c) == Some(x.len())
            && y.len() == x.len()
        {
            let (r, c) = (r as usize, c as usize);
            return (0..r).all(|i| {
                (0..c).all(|j| {
                    let (p, q) = (4 * (i * c + j), 4 * (j * r + i));
                    x[p..p + 4] == y[q..q + 4]
                })
            });
        }
    }
    let (Ok(x), Ok(y)) = (tensor::to_f32(a), tensor::to_f32(b)) else {
        return false;
    };
    x.ndim() == 2
        && x.t().shape() == y.shape()
        && x.t()
            .iter()
            .zip(y.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits())
}

impl Rule for ShareTransposed {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "S002",
            name: "share-transposed",
            group: "share",
            summary: "store a weight that is another's exact transpose as Transpose of it",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let float = crate::onnx::proto::tensor_proto::DataType::Float as i32;
        let mut groups: BTreeMap<(Vec<i64>, u64), Vec<(NodeId, &TensorProto)>> = BTreeMap::new();
        for (id, t) in constants(g) {
            if t.dims.len() == 2 && t.dims[0] != t.dims[1] && t.data_type == Some(float) {
                let mut key = t.dims.clone();
                key.sort();
                groups
                    .entry((key, tensor::payload_bytes(t)))
                    .or_default()
                    .push((id, t));
            }
        }
        let mut taken: Vec<NodeId> = Vec::new();
        for group in groups.into_values().filter(|v| v.len() > 1) {
            for (i, &(a, at)) in group.iter().enumerate() {
                if taken.contains(&a) {
                    continue;
                }
                for &(b, bt) in &group[i + 1..] {
                    if taken.contains(&b) || at.dims == bt.dims || !is_transpose(at, bt) {
                        continue;
                    }
                    let bv = ValueRef { node: b, slot: 0 };
                    if tensor::payload_bytes(bt) < MIN_BYTES {
                        f.skip(
                            model,
                            b,
                            format!(
                                "transpose of `{}` but under {MIN_BYTES} bytes",
                                g.value_name(ValueRef { node: a, slot: 0 })
                            ),
                        );
                        continue;
                    }
                    if g.is_graph_output(bv) || g.is_captured(bv) {
                        f.skip(model, b, "a graph output or read by a subgraph by name");
                        continue;
                    }
                    taken.extend([a, b]);
                    f.matches.push(Match {
                        anchor: b,
                        nodes: vec![a],
                        what: format!(
                            "`{}` = Transpose(`{}`), saving {} bytes",
                            g.value_name(bv),
                            g.value_name(ValueRef { node: a, slot: 0 }),
                            tensor::payload_bytes(bt)
                        ),
                    });
                    break;
                }
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let old = ValueRef {
            node: m.anchor,
            slot: 0,
        };
        let a = ValueRef {
            node: *m.nodes.first().ok_or_else(|| Error::Rule {
                rule: "share-transposed".into(),
                reason: "match without a source".into(),
            })?,
            slot: 0,
        };
        let name = g.value_name(old).to_string();
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        let node = NodeProto {
            op_type: Some("Transpose".into()),
            name: Some(format!("{name}_shared_transpose")),
            output: vec![format!("{name}_shared")],
            attribute: vec![make_attr_ints("perm", &[1, 0])],
            ..Default::default()
        };
        let out = p.add_op(node, &[Some(Wire::Value(a))])[0];
        p.shunt(old, out);
        p.remove(m.anchor);
        p.keep_name(old, out);
        Ok(p)
    }
}
