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
//! inference (see `infer`); when they are not known the node stays. Each op's no-op case is
//! stated with the op, in the op table ([`crate::ops::OpDef::noop`]).

use crate::error::Result;
use crate::ir::{Model, NodeId, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

use super::util::{bypass, match_bypass};
use crate::ir::facts::{Fact, Facts};
use crate::ops::{self, NoopCx};

/// See the module docs.
pub struct EliminateNoop;

/// `Ok(())` if `id` is a no-op by its op table entry ([`crate::ops::OpDef::noop`]), else why not.
fn noop(model: &Model, facts: &Facts, id: NodeId) -> std::result::Result<(), String> {
    let g = &model.graph;
    let p = g.node(id).op().ok_or("not an op")?;
    let f = ops::lookup_node(p, None)
        .and_then(|d| d.noop)
        .ok_or("not handled")?;
    g.input(id, 0).ok_or("no data input")?;
    let ins: Vec<Option<Fact>> = g
        .node_inputs(id)
        .iter()
        .map(|i| i.map(|v| facts.get(v).clone()))
        .collect();
    f(&NoopCx {
        node: p,
        opset: model.opset("").unwrap_or(1),
        ins: &ins,
        out: facts.get(ValueRef { node: id, slot: 0 }),
    })
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
            .filter(|id| {
                g.node(*id)
                    .op()
                    .and_then(|p| ops::lookup_node(p, None))
                    .is_some_and(|d| d.noop.is_some())
            })
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
