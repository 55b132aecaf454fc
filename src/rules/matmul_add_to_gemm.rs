//! `C011 matmul-add-to-gemm`: turns `MatMul` + bias `Add` into one `Gemm`.
//!
//! **What:** `Add(MatMul(A, W), b)` where `A` is known to be rank 2, `W` is a constant float32
//! `[K, N]` and `b` a constant float32 `[N]` or `[1, N]`, and the MatMul's output is read by the
//! Add alone, becomes `Gemm(A, W, b)` with default attributes.
//! **Why:** a fully connected layer is one op; runtimes fuse the bias into the matrix product.
//! **Example:** `y = Add(MatMul(x, W), b)` → `y = Gemm(x, W, b)`.
//! **Exact:** to float reordering (tolerance 1e-5).

use crate::error::{Error, Result};
use crate::ir::{Model, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::util::{adds_after, is_op, make_node, single_use};
use crate::ir::facts::Facts;

/// See the module docs.
pub struct MatMulAddToGemm;

/// (matmul, bias slot of the Add).
fn plan(model: &Model, facts: &Facts, add: NodeId) -> std::result::Result<(NodeId, usize), String> {
    let g = &model.graph;
    let ins = g.node_inputs(add);
    if ins.len() != 2 || ins.iter().any(|i| i.is_none()) {
        return Err(String::new());
    }
    for side in 0..2 {
        let y = ins[side].expect("checked");
        let bv = ins[1 - side].expect("checked");
        if !is_op(g, y.node, "MatMul") {
            continue;
        }
        let mm = y.node;
        let Some(bt) = g.const_tensor(bv) else {
            continue;
        };
        if !single_use(g, y) {
            return Err("the MatMul output has other consumers".into());
        }
        let a = g.input(mm, 0).ok_or("no A")?;
        if facts.get(a).rank() != Some(2) {
            return Err("the MatMul activation is not known to be rank 2".into());
        }
        let wt = g
            .input(mm, 1)
            .and_then(|w| g.const_tensor(w))
            .ok_or("the MatMul weight is not constant")?;
        if wt.dims.len() != 2 || wt.data_type != Some(DataType::Float as i32) {
            return Err("the MatMul weight is not a 2-D float32 constant".into());
        }
        if facts.get(a).dtype != Some(DataType::Float as i32) {
            return Err("the activation is not known to be float32".into());
        }
        let n = wt.dims[1];
        let ok =
            bt.data_type == Some(DataType::Float as i32) && (bt.dims == [n] || bt.dims == [1, n]);
        if !ok {
            return Err("the bias is not a float32 [N] or [1, N] constant".into());
        }
        return Ok((mm, 1 - side));
    }
    Err(String::new())
}

impl Rule for MatMulAddToGemm {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C011",
            name: "matmul-add-to-gemm",
            group: "clean",
            summary: "turn MatMul of a rank-2 activation by a constant plus a bias Add into Gemm",
            exactness: Exactness::Exact { tolerance: 1e-5 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let adds = adds_after(g, "MatMul");
        if adds.is_empty() {
            return f;
        }
        let facts = g.facts();
        for id in adds {
            match plan(model, &facts, id) {
                Ok((mm, _)) => f.matches.push(Match {
                    anchor: id,
                    nodes: vec![mm],
                    what: format!(
                        "MatMul `{}` + Add `{}` → Gemm",
                        g.node(mm).label(),
                        g.node(id).label()
                    ),
                }),
                Err(reason) if !reason.is_empty() => f.skip(model, id, reason),
                Err(_) => {}
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let facts = g.facts();
        let (mm, bslot) = plan(model, &facts, m.anchor).map_err(|reason| Error::Rule {
            rule: "matmul-add-to-gemm".into(),
            reason,
        })?;
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        let out = ValueRef {
            node: m.anchor,
            slot: 0,
        };
        let node = make_node("Gemm", &g.node(mm).label(), 3, &[g.value_name(out)]);
        let new = p.add_op(
            node,
            &[
                g.input(mm, 0).map(Wire::Value),
                g.input(mm, 1).map(Wire::Value),
                g.input(m.anchor, bslot).map(Wire::Value),
            ],
        );
        p.shunt(out, new[0]);
        p.keep_name(out, new[0]);
        p.remove(m.anchor);
        p.remove(mm);
        Ok(p)
    }
}
