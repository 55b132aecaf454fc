//! `C005 eliminate-neutral-arith`: removes `x * 1`, `x / 1`, `x + 0` and `x - 0`.
//!
//! **What:** a `Mul` or `Add` with a constant operand of all ones (Mul) or all zeros (Add), on
//! either side, and a `Div` by ones or `Sub` of zeros on the right, is replaced by the other operand
//! — only when broadcasting cannot change the result's shape or dtype: the constant has the
//! operand's dtype, a rank no larger than the operand's known rank, and each of its dims is 1 or
//! equals the operand's known dim.
//! **Why:** left behind by exporters (scale factors of 1, zero biases, `x * 1.0` from tracing).
//! **Example:** `y = Mul(x, 1.0)` → readers of `y` read `x`.
//! **Exact:** yes for every finite and infinite value; `-0 + 0` gives `+0`, which compares equal.

use crate::error::Result;
use crate::ir::{Model, NodeId, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

use super::util::{all_equal, bypass, is_op, match_bypass};
use crate::ir::facts::{Dim, Facts};

/// See the module docs.
pub struct EliminateNeutral;

/// The operand slot that survives, if `id` is a neutral op.
fn neutral(model: &Model, facts: &Facts, id: NodeId) -> std::result::Result<usize, String> {
    let g = &model.graph;
    let op = g.node(id).op_type();
    let (neutral, sides): (f64, &[usize]) = match op {
        "Mul" => (1.0, &[1, 0]),
        "Add" => (0.0, &[1, 0]),
        "Div" => (1.0, &[1]),
        "Sub" => (0.0, &[1]),
        _ => return Err("not handled".into()),
    };
    let ins = g.node_inputs(id);
    if ins.len() != 2 || ins.iter().any(|i| i.is_none()) {
        return Err("not two inputs".into());
    }
    for &c in sides {
        let Some(t) = g.const_tensor(ins[c].expect("checked")) else {
            continue;
        };
        if !all_equal(t, neutral) {
            continue;
        }
        let keep = 1 - c;
        let x = facts.get(ins[keep].expect("checked"));
        if x.dtype != t.data_type {
            return Err("the constant's dtype differs from the operand's (or is not known)".into());
        }
        let Some(s) = &x.shape else {
            return Err("the operand's shape is not known".into());
        };
        if t.dims.len() > s.len() {
            return Err("the constant has a higher rank: broadcasting grows the output".into());
        }
        let off = s.len() - t.dims.len();
        for (i, d) in t.dims.iter().enumerate() {
            if *d != 1 && s[off + i] != Dim::K(*d) {
                return Err("broadcasting may change the output shape".into());
            }
        }
        return Ok(keep);
    }
    Err("no neutral constant".into())
}

impl Rule for EliminateNeutral {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C005",
            name: "eliminate-neutral-arith",
            group: "clean",
            summary: "remove Mul/Div by one and Add/Sub of zero when broadcasting changes nothing",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let candidates: Vec<NodeId> = g
            .ops()
            .into_iter()
            .filter(|id| {
                ["Mul", "Add", "Div", "Sub"]
                    .iter()
                    .any(|op| is_op(g, *id, op))
            })
            .collect();
        if candidates.is_empty() {
            return f;
        }
        let facts = g.facts();
        for id in candidates {
            match neutral(model, &facts, id) {
                Ok(keep) => {
                    let src = g.input(id, keep).expect("checked");
                    let what = format!("neutral {} `{}`", g.node(id).op_type(), g.node(id).label());
                    match_bypass(&mut f, model, id, src, what);
                }
                Err(reason) if reason.contains("not known") || reason.contains("broadcast") => {
                    f.skip(model, id, reason)
                }
                Err(_) => {}
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let facts = g.facts();
        let keep = neutral(model, &facts, m.anchor).map_err(|reason| crate::Error::Rule {
            rule: "eliminate-neutral-arith".into(),
            reason,
        })?;
        let src = g.input(m.anchor, keep).expect("checked");
        let _ = ValueRef {
            node: m.anchor,
            slot: 0,
        };
        Ok(bypass(m.what.clone(), m.anchor, src))
    }
}
