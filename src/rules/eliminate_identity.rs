//! `C001 eliminate-identity`: removes `Identity` nodes.
//!
//! **What:** every reader of an `Identity`'s output reads its input instead.
//! **Why:** exporters leave Identity nodes behind; each costs a copy at run time.
//! **Example:** `y = Identity(x); z = Relu(y)` → `z = Relu(x)`.
//! **Exact:** yes, bit for bit. When the output is a graph output, its name is kept by renaming
//! the producer of `x`; if `x` is itself a graph input or output the node stays (skip reported).

use crate::error::Result;
use crate::ir::{Model, NodeKind, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::util::is_op;

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
            let name_bound = g.is_graph_output(out) || g.is_captured(out);
            let src_fixed = g.is_graph_output(src)
                || g.is_captured(src)
                || !matches!(
                    g.node(src.node).kind,
                    NodeKind::Op(_) | NodeKind::Initializer(_)
                );
            if name_bound && src_fixed {
                f.skip(
                    model,
                    id,
                    "its output is a graph output or captured, and its input's name cannot change",
                );
                continue;
            }
            f.matches.push(Match {
                anchor: id,
                nodes: vec![],
                what: format!("Identity `{}`", g.value_name(out)),
            });
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        if let Some(src) = g.input(m.anchor, 0) {
            p.shunt(
                ValueRef {
                    node: m.anchor,
                    slot: 0,
                },
                Wire::Value(src),
            );
        }
        p.remove(m.anchor);
        Ok(p)
    }
}
