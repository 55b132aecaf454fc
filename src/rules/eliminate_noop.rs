//! `C004 eliminate-noop`: removes operators that provably return their input unchanged.
//!
//! **What:** `Cast` to the input's own dtype; `Reshape` to the input's own shape (each target
//! entry equal to the known input dim, a `0` copying it, or one `-1` with every other dim equal);
//! `Transpose` with the identity permutation; `Slice` taking every element (start 0, end at or
//! past the dim or `INT_MAX`, step 1); `Pad` with all pads zero; `Expand` whose output shape
//! provably equals the input shape; `Tile` with all repeats 1; `Concat` of a single input.
//! **Why:** exporters emit these around shape plumbing; each costs a copy at run time.
//! **Example:** `y = Transpose(x, perm=[0,1,2])` → readers of `y` read `x`.
//! **Exact:** yes, bit for bit. Shapes and dtypes come from the graph's inputs and constants by
//! inference (see `infer`); when they are not known the node stays.

use crate::error::Result;
use crate::ir::{Model, NodeId, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

use super::util::{attr_i, attr_ints, bypass, const_ints, is_op, match_bypass};
use crate::ir::facts::{Dim, Facts};

/// See the module docs.
pub struct EliminateNoop;

const OPS: &[&str] = &[
    "Cast",
    "Reshape",
    "Transpose",
    "Slice",
    "Pad",
    "Expand",
    "Tile",
    "Concat",
];

/// `Ok(())` if `id` is a no-op, else why not.
fn noop(model: &Model, facts: &Facts, id: NodeId) -> std::result::Result<(), String> {
    let g = &model.graph;
    let node = g.node(id);
    let src = g.input(id, 0).ok_or("no data input")?;
    let x = facts.get(src);
    let out = facts.get(ValueRef { node: id, slot: 0 });
    let unknown_shape = || "the input shape is not known".to_string();
    match node.op_type() {
        "Cast" => {
            let to = attr_i(g, id, "to", -1) as i32;
            match x.dtype {
                Some(d) if d == to => Ok(()),
                Some(_) => Err("casts to another dtype".into()),
                None => Err("the input dtype is not known".into()),
            }
        }
        "Reshape" => {
            let target = facts.get(g.input(id, 1).ok_or("no shape input")?);
            let t = target
                .value
                .as_ref()
                .ok_or("the target shape is not known")?;
            let s = x.shape.as_ref().ok_or_else(unknown_shape)?;
            if t.len() != s.len() {
                return Err("changes the rank".into());
            }
            let allowzero = attr_i(g, id, "allowzero", 0) != 0;
            let mut minus_one = 0;
            for (ti, si) in t.iter().zip(s) {
                match (ti, si) {
                    (Dim::K(0), _) if !allowzero => {}
                    (Dim::K(-1), _) => minus_one += 1,
                    (a, b) if a == b => {}
                    _ => return Err("the target differs from the input shape".into()),
                }
            }
            if minus_one > 1 {
                return Err("several -1 in the target".into());
            }
            Ok(())
        }
        "Transpose" => {
            let perm = attr_ints(g, id, "perm").unwrap_or(&[]);
            if perm.is_empty() {
                return match x.rank() {
                    Some(r) if r <= 1 => Ok(()),
                    Some(_) => Err("reverses the axes".into()),
                    None => Err("the input rank is not known".into()),
                };
            }
            if perm.iter().enumerate().all(|(i, p)| *p == i as i64) {
                Ok(())
            } else {
                Err("the permutation is not the identity".into())
            }
        }
        "Slice" => {
            if model.opset("").unwrap_or(1) < 10 {
                return Err("Slice-1 (attributes) is not handled".into());
            }
            let starts = const_ints(g, id, 1).ok_or("starts are not constant")?;
            let ends = const_ints(g, id, 2).ok_or("ends are not constant")?;
            let axes = match g.input(id, 3) {
                Some(_) => const_ints(g, id, 3).ok_or("axes are not constant")?,
                None => (0..starts.len() as i64).collect(),
            };
            let steps = match g.input(id, 4) {
                Some(_) => const_ints(g, id, 4).ok_or("steps are not constant")?,
                None => vec![1; starts.len()],
            };
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err("parameters of different lengths".into());
            }
            for i in 0..starts.len() {
                if steps[i] != 1 || starts[i] != 0 {
                    return Err("a step is not 1 or a start is not 0".into());
                }
                if ends[i] >= i32::MAX as i64 {
                    continue;
                }
                let s = x.shape.as_ref().ok_or_else(unknown_shape)?;
                let r = s.len() as i64;
                let a = if axes[i] < 0 { axes[i] + r } else { axes[i] };
                let d = s
                    .get(a as usize)
                    .and_then(|d| d.known())
                    .ok_or("a sliced dim is not known")?;
                if ends[i] < d {
                    return Err("takes part of an axis".into());
                }
            }
            Ok(())
        }
        "Pad" => {
            let pads: Vec<i64> = if model.opset("").unwrap_or(1) < 11 {
                attr_ints(g, id, "pads").ok_or("no pads")?.to_vec()
            } else {
                const_ints(g, id, 1).ok_or("pads are not constant")?
            };
            if pads.iter().all(|p| *p == 0) {
                Ok(())
            } else {
                Err("pads are not all zero".into())
            }
        }
        "Expand" | "Tile" => {
            if node.op_type() == "Tile" {
                let reps = const_ints(g, id, 1).ok_or("repeats are not constant")?;
                return if reps.iter().all(|r| *r == 1) {
                    Ok(())
                } else {
                    Err("repeats are not all 1".into())
                };
            }
            let (Some(a), Some(b)) = (&x.shape, &out.shape) else {
                return Err("shapes are not known".into());
            };
            if a == b && x.dtype.is_some() {
                Ok(())
            } else {
                Err("the output shape may differ from the input shape".into())
            }
        }
        "Concat" => {
            if g.node_inputs(id).iter().filter(|i| i.is_some()).count() == 1
                && g.node_inputs(id).len() == 1
            {
                Ok(())
            } else {
                Err("several inputs".into())
            }
        }
        _ => Err("not handled".into()),
    }
}

impl Rule for EliminateNoop {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C004",
            name: "eliminate-noop",
            group: "clean",
            summary:
                "remove Cast/Reshape/Transpose/Slice/Pad/Expand/Tile/Concat that change nothing",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let candidates: Vec<NodeId> = g
            .ops()
            .into_iter()
            .filter(|id| OPS.iter().any(|op| is_op(g, *id, op)))
            .collect();
        if candidates.is_empty() {
            return f;
        }
        let facts = g.facts();
        for id in candidates {
            match noop(model, &facts, id) {
                Ok(()) => {
                    let src = g.input(id, 0).expect("checked");
                    let what = format!("no-op {} `{}`", g.node(id).op_type(), g.node(id).label());
                    match_bypass(&mut f, model, id, src, what);
                }
                Err(reason) if reason.contains("not known") => f.skip(model, id, reason),
                Err(_) => {}
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let src = model.graph.input(m.anchor, 0).expect("checked in find");
        Ok(bypass(m.what.clone(), m.anchor, src))
    }
}
