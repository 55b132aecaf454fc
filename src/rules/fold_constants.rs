//! `C006 fold-constants`: replaces operators whose outputs are known before run time by
//! initializers.
//!
//! **What:** an operator whose inputs are all constant is evaluated once (in tract, with the
//! model's opsets) and its outputs become initializers of the same names; an operator whose
//! integer outputs follow from known shapes (`Shape` of a statically shaped value,
//! `Gather(Shape(x), 1)` when dim 1 of `x` is known, and the `Unsqueeze`/`Concat`/arithmetic
//! built on them) becomes an initializer too, without evaluation.
//! **Why:** exporters compute shapes, pads and reshaped weights at run time; folding them removes
//! nodes and lets other rules see constants.
//! **Example:** `s = Shape(x)` with `x: f32[1,3,224,224]` → initializer `s = [1,3,224,224]`.
//! **Exact:** to float reordering (tolerance 1e-5): tract's kernels may round differently from
//! another runtime's. Never folded: `QuantizeLinear`/`DequantizeLinear` (they are the model's
//! quantization), random ops, ops with subgraphs, ops outside the default domain, and any fold
//! whose result takes more bytes than what it frees: the node itself (as encoded) and the constant
//! inputs read by it alone — `Tile`, `ConstantOfShape`, `Expand`, `Range` of big outputs stay.
//! The driver then checks the whole patch against the encoded graph. Which ops are pure, kept
//! ("never folded") or evaluated is the op table's word ([`crate::ops::OpDef::purity`] and
//! [`crate::ops::OpDef::eval`]).

use crate::error::{Error, Result};
use crate::ir::graph::has_subgraphs;
use crate::ir::{tensor, Model, NodeId, ValueRef};
use crate::onnx::dtype;
use crate::onnx::proto::{tensor_proto::DataType, TensorProto};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

use super::eval::eval_node;
use crate::ir::facts::Facts;
use crate::ops::{self, Purity};

/// See the module docs.
pub struct FoldConstants;

enum How {
    /// Values known from shapes.
    Known(Vec<Option<TensorProto>>),
    /// All inputs constant: evaluate.
    Eval,
}

fn int_tensor(name: &str, dt: i32, dims: &[i64], v: &[i64]) -> Option<TensorProto> {
    let mut raw = Vec::new();
    if dt == DataType::Int64 as i32 {
        for x in v {
            raw.extend_from_slice(&x.to_le_bytes());
        }
    } else if dt == DataType::Int32 as i32 {
        for x in v {
            raw.extend_from_slice(&i32::try_from(*x).ok()?.to_le_bytes());
        }
    } else {
        return None;
    }
    Some(TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dt),
        raw_data: Some(raw.into()),
        ..Default::default()
    })
}

/// Bytes the fold frees: the node itself, as encoded, and the distinct constant inputs read by it
/// alone. A constant also read elsewhere stays in the model, so it does not pay for the result.
fn freed_bytes(model: &Model, id: NodeId) -> u64 {
    let g = &model.graph;
    let mut seen = Vec::new();
    let mut total = g.node_bytes(id);
    for v in g.node_inputs(id).into_iter().flatten() {
        if seen.contains(&v) {
            continue;
        }
        seen.push(v);
        let only_here = g.read_only_by(v, id) && !g.is_graph_output(v);
        if !only_here {
            continue;
        }
        if let Some(t) = g.const_tensor(v) {
            total += dtype::byte_len(t.data_type.unwrap_or(0), &t.dims)
                .unwrap_or_else(|| tensor::payload_bytes(t));
        }
    }
    total
}

fn classify(model: &Model, facts: &Facts, id: NodeId) -> std::result::Result<How, String> {
    let g = &model.graph;
    let node = g.node(id);
    let p = node.op().ok_or("not an op")?;
    let ins = g.node_inputs(id);
    let all_const = !ins.is_empty()
        && ins
            .iter()
            .all(|i| i.is_none_or(|v| g.const_tensor(v).is_some()))
        && ins.iter().any(|i| i.is_some());
    // Values known from shapes.
    let mut known = Vec::new();
    let mut all_known = true;
    for (slot, name) in p.output.iter().enumerate() {
        let v = ValueRef { node: id, slot };
        if name.is_empty() || !g.is_used(v) {
            known.push(None);
            continue;
        }
        let f = facts.get(v);
        let t = match (f.known_value(), f.static_shape(), f.dtype) {
            (Some(val), Some(dims), Some(dt))
                if dims.iter().product::<i64>() == val.len() as i64 =>
            {
                int_tensor(name, dt, &dims, &val)
            }
            _ => None,
        };
        all_known &= t.is_some();
        known.push(t);
    }
    let any_used =
        known.len() > 0 && (0..p.output.len()).any(|slot| g.is_used(ValueRef { node: id, slot }));
    let candidate = any_used && (all_const || all_known);
    if !candidate {
        return Err(String::new());
    }
    let op = node.op_type();
    if !node.domain().is_empty() {
        return Err(format!("`{}` is outside the default domain", node.domain()));
    }
    let def = ops::lookup("", op, None);
    match def.map(|d| d.purity) {
        Some(Purity::Keep) => return Err(format!("{op} is never folded")),
        Some(Purity::Random) => return Err("random ops are never folded".into()),
        _ => {}
    }
    if has_subgraphs(p) {
        return Err("ops with subgraphs are never folded".into());
    }
    if all_known && known.iter().any(|t| t.is_some()) {
        return Ok(How::Known(known));
    }
    if op == "ConstantOfShape" && node.attr("value").is_none() {
        return Err(
            "ConstantOfShape without `value` is not folded (runtimes disagree on its dtype)".into(),
        );
    }
    if !def.is_some_and(|d| d.eval) {
        return Err(format!(
            "{op} is not on the list of ops folded by evaluation"
        ));
    }
    // Size guard from inferred shapes, when known.
    let in_bytes = freed_bytes(model, id);
    let mut out_bytes = 0u64;
    for slot in 0..p.output.len() {
        let f = facts.get(ValueRef { node: id, slot });
        if let (Some(dims), Some(dt)) = (f.static_shape(), f.dtype) {
            out_bytes += dtype::byte_len(dt, &dims).unwrap_or(u64::MAX / 4);
        }
    }
    if out_bytes > in_bytes {
        return Err(format!(
            "fold would grow `{}`: its result takes {out_bytes} bytes, it frees {in_bytes}",
            node.label()
        ));
    }
    Ok(How::Eval)
}

impl Rule for FoldConstants {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C006",
            name: "fold-constants",
            group: "clean",
            summary: "replace ops with constant or shape-determined outputs by initializers",
            exactness: Exactness::Exact { tolerance: 1e-5 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let facts = g.facts();
        let mut f = Findings::default();
        for id in g.ops() {
            match classify(model, &facts, id) {
                Ok(_) => f.matches.push(Match {
                    anchor: id,
                    nodes: vec![],
                    what: format!("fold {} `{}`", g.node(id).op_type(), g.node(id).label()),
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
        let err = |reason: String| Error::Rule {
            rule: "fold-constants".into(),
            reason,
        };
        let how = classify(model, &facts, m.anchor).map_err(err)?;
        let p = g.node(m.anchor).op().expect("an op");
        let outputs = match how {
            How::Known(t) => t,
            How::Eval => {
                let ins: Vec<Option<&TensorProto>> = g
                    .node_inputs(m.anchor)
                    .iter()
                    .map(|i| i.and_then(|v| g.const_tensor(v)))
                    .collect();
                let outs = eval_node(model, p, &ins).map_err(err)?;
                let in_bytes = freed_bytes(model, m.anchor);
                let mut out_bytes = 0;
                for (slot, t) in outs.iter().enumerate() {
                    let Some(t) = t else { continue };
                    if let Some(dt) = facts
                        .get(ValueRef {
                            node: m.anchor,
                            slot,
                        })
                        .dtype
                    {
                        if Some(dt) != t.data_type {
                            return Err(err(format!(
                                "tract computed {} where the op gives {}",
                                dtype::name(t.data_type.unwrap_or(0)),
                                dtype::name(dt)
                            )));
                        }
                    }
                    out_bytes += tensor::payload_bytes(t);
                }
                if out_bytes > in_bytes {
                    return Err(err(format!(
                        "fold would grow `{}`: its result takes {out_bytes} bytes, it frees {in_bytes}",
                        g.node(m.anchor).label()
                    )));
                }
                outs
            }
        };
        let mut patch = Patch::new(m.what.clone(), Some(m.anchor));
        for (slot, t) in outputs.into_iter().enumerate() {
            let v = ValueRef {
                node: m.anchor,
                slot,
            };
            if !g.is_used(v) {
                continue;
            }
            let t = t.ok_or_else(|| err("an output was not computed".into()))?;
            let w = patch.add_initializer(t);
            patch.shunt(v, w);
            patch.keep_name(v, w);
        }
        patch.remove(m.anchor);
        Ok(patch)
    }
}
