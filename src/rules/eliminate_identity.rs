//! `C001 eliminate-identity`: removes `Identity` nodes.
//!
//! **What:** every reader of an `Identity`'s output reads its input instead.
//! **Why:** exporters leave Identity nodes behind; each costs a copy at run time.
//! **Example:** `y = Identity(x); z = Relu(y)` → `z = Relu(x)`.
//! **Exact:** yes, bit for bit. When the output is a graph output, its name is kept by renaming
//! the producer of `x`; if `x` is itself a graph input or output the node stays (skip reported).

use crate::error::Result;
use crate::ir::{Model, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

use super::util::{bypass, is_op, match_bypass};

/// See the module docs.
pub struct EliminateIdentity;

impl Rule for EliminateIdentity {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C001",
            name: "eliminate-identity",
            group: "clean",
            summary: "remove Identity nodes",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        for id in g.ops() {
            if !is_op(g, id, "Identity") {
                continue;
            }
            let Some(src) = g.input(id, 0) else {
                f.skip(model, id, "Identity without an input");
                continue;
            };
            let out = ValueRef { node: id, slot: 0 };
            let what = format!("Identity `{}`", g.value_name(out));
            match_bypass(&mut f, model, id, src, what);
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let src = model.graph.input(m.anchor, 0).expect("checked in find");
        Ok(bypass(m.what.clone(), m.anchor, src))
    }
}
