//! `C010 fuse-conv-add`: folds a constant per-channel `Add` after a `Conv` into the Conv's bias.
//!
//! **What:** `Add(Conv(x, W[, b]), c)` where `c` is a constant float32 that broadcasts along the
//! channel axis only (shape `[M,1,…,1]`, `[1,M,1,…,1]`, or a single element) becomes
//! `Conv(x, W, b + c)`.
//! **Why:** exporters (paddle2onnx) write biases as a separate `Reshape` + `Add`.
//! **Example:** `y = Add(Conv(x, W), Reshape(b, [1, M, 1, 1]))` → `y = Conv(x, W, b)` once the
//! Reshape is folded.
//! **Exact:** to float reordering (tolerance 1e-5): the bias is added inside the convolution.
//! Only when the Conv's output is read by the Add alone, the constant does not raise the rank, and
//! the Conv's old bias (if any) is read by nothing else.

use crate::error::{Error, Result};
use crate::ir::{tensor, Model, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::util::{adds_after, is_op, single_use};
use crate::ir::facts::Facts;
use ndarray::ArrayD;

/// See the module docs.
pub struct FuseConvAdd;

fn plan(
    model: &Model,
    facts: &Facts,
    add: NodeId,
) -> std::result::Result<(NodeId, usize, ArrayD<f32>), String> {
    let g = &model.graph;
    let ins = g.node_inputs(add);
    if ins.len() != 2 || ins.iter().any(|i| i.is_none()) {
        return Err(String::new());
    }
    for side in 0..2 {
        let x = ins[side].expect("checked");
        let cv = ins[1 - side].expect("checked");
        if !is_op(g, x.node, "Conv") || x.slot != 0 {
            continue;
        }
        let Some(ct) = g.const_tensor(cv) else {
            continue;
        };
        let conv = x.node;
        if !single_use(g, x) {
            return Err("the Conv output has other consumers".into());
        }
        if ct.data_type != Some(DataType::Float as i32) {
            return Err("the added constant is not float32".into());
        }
        let wt = g
            .input(conv, 1)
            .and_then(|w| g.const_tensor(w))
            .ok_or("the Conv weight is not constant")?;
        let m = *wt.dims.first().ok_or("weight without dims")? as usize;
        let rank = facts
            .get(x)
            .rank()
            .ok_or("the Conv output rank is not known")?;
        let dims = &ct.dims;
        if dims.len() > rank {
            return Err("the constant has a higher rank than the Conv output".into());
        }
        let numel: i64 = dims.iter().product();
        let per_channel = numel == 1
            || (dims.len() + 1 >= rank && {
                let off = rank - dims.len();
                dims.iter().enumerate().all(|(i, d)| {
                    let axis = i + off;
                    if axis == 1 {
                        *d == m as i64 || *d == 1
                    } else {
                        *d == 1
                    }
                })
            });
        if !per_channel {
            return Err("the constant does not broadcast along channels only".into());
        }
        let c = tensor::to_f32(ct).map_err(|e| e.to_string())?;
        let c: Vec<f32> = c.iter().copied().collect();
        let mut bias: Vec<f32> = match g.input(conv, 2) {
            Some(bv) => {
                if !single_use(g, bv) {
                    return Err("the Conv bias is shared".into());
                }
                let bt = g.const_tensor(bv).ok_or("the Conv bias is not constant")?;
                let b = tensor::to_f32(bt).map_err(|e| e.to_string())?;
                if b.len() != m || bt.data_type != Some(DataType::Float as i32) {
                    return Err("the Conv bias has an unexpected shape".into());
                }
                b.iter().copied().collect()
            }
            None => vec![0.0; m],
        };
        for (i, b) in bias.iter_mut().enumerate() {
            *b += c[if c.len() == 1 { 0 } else { i }];
        }
        let bias = ArrayD::from_shape_vec(ndarray::IxDyn(&[m]), bias).unwrap();
        return Ok((conv, side, bias));
    }
    Err(String::new())
}

impl Rule for FuseConvAdd {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C010",
            name: "fuse-conv-add",
            group: "clean",
            summary: "fold a constant per-channel Add after a Conv into the Conv's bias",
            exactness: Exactness::Exact { tolerance: 1e-5 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let adds = adds_after(g, "Conv");
        if adds.is_empty() {
            return f;
        }
        let facts = g.facts();
        for id in adds {
            match plan(model, &facts, id) {
                Ok((conv, _, _)) => f.matches.push(Match {
                    anchor: id,
                    nodes: vec![conv],
                    what: format!(
                        "fuse Add `{}` into Conv `{}`",
                        g.node(id).label(),
                        g.node(conv).label()
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
        let (conv, _, bias) = plan(model, &facts, m.anchor).map_err(|reason| Error::Rule {
            rule: "fuse-conv-add".into(),
            reason,
        })?;
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        let label = g.node(conv).label();
        let b = p.add_initializer(tensor::from_f32(&format!("{label}_bias"), &bias));
        let out = ValueRef {
            node: m.anchor,
            slot: 0,
        };
        let mut node = g.node(conv).op().expect("op").clone();
        node.output = vec![g.value_name(out).to_string()];
        node.input = vec![String::new(); 3];
        let new = p.add_op(
            node,
            &[
                g.input(conv, 0).map(Wire::Value),
                g.input(conv, 1).map(Wire::Value),
                Some(b),
            ],
        );
        p.shunt(out, new[0]);
        p.keep_name(out, new[0]);
        p.remove(m.anchor);
        p.remove(conv);
        Ok(p)
    }
}
