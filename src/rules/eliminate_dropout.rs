//! `C003 eliminate-dropout`: removes `Dropout` nodes that run in inference mode.
//!
//! **What:** a `Dropout` whose mask output is unused and that is in inference mode (opset ≥ 12:
//! `training_mode` absent or a constant false; opsets 7–11: always; opsets 1–6: `is_test` set)
//! is replaced by its input.
//! **Why:** training exporters leave Dropout behind; in inference it is an identity.
//! **Example:** `y = Dropout(x, ratio=0.5)` → readers of `y` read `x`.
//! **Exact:** yes, bit for bit: in inference mode Dropout copies its input, whatever `ratio`.

use crate::error::Result;
use crate::ir::{Model, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

use super::util::{all_equal, attr_i, bypass, const_input, is_op, match_bypass};

/// See the module docs.
pub struct EliminateDropout;

impl Rule for EliminateDropout {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C003",
            name: "eliminate-dropout",
            group: "clean",
            summary: "remove Dropout in inference mode",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let opset = model.opset("").unwrap_or(1);
        let mut f = Findings::default();
        for id in g.ops() {
            if !is_op(g, id, "Dropout") {
                continue;
            }
            let Some(src) = g.input(id, 0) else {
                f.skip(model, id, "Dropout without an input");
                continue;
            };
            if g.is_used(ValueRef { node: id, slot: 1 }) {
                f.skip(model, id, "its mask output is used");
                continue;
            }
            if opset < 7 && attr_i(g, id, "is_test", 0) == 0 {
                f.skip(
                    model,
                    id,
                    "opset < 7 and `is_test` is not set: training mode",
                );
                continue;
            }
            if opset >= 12 && g.input(id, 2).is_some() {
                match const_input(g, id, 2) {
                    Some(t) if all_equal(t, 0.0) => {}
                    Some(_) => {
                        f.skip(model, id, "`training_mode` is true");
                        continue;
                    }
                    None => {
                        f.skip(model, id, "`training_mode` is not a constant");
                        continue;
                    }
                }
            }
            match_bypass(
                &mut f,
                model,
                id,
                src,
                format!("Dropout `{}`", g.node(id).label()),
            );
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let src = model.graph.input(m.anchor, 0).expect("checked in find");
        Ok(bypass(m.what.clone(), m.anchor, src))
    }
}
