//! `C007 static-reshape-shape`: gives `Reshape` a constant target shape when the output shape is
//! known up to one dimension.
//!
//! **What:** a `Reshape` whose target is computed at run time (`Shape` → `Gather` → `Concat` …)
//! and whose output shape is inferred with every dimension known but at most one gets the
//! constant target `[d0, …, -1, …]` (`-1` at the unknown dimension). The shape computation then
//! usually becomes dead and `remove-dead` drops it.
//! **Why:** traced exporters (PyTorch `x.view(x.size(0), -1)`) spell every reshape as a chain of
//! shape ops; the constant target is what they meant.
//! **Example:** `Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [1, 256]))` with `x` of shape
//! `[W, 1, 64, 4]` → `Reshape(x, [-1, 1, 256])`.
//! **Exact:** yes, bit for bit: both targets give the same output shape for every input the
//! original accepts (the `-1` dim is the only one left, so it is the product of the rest). The
//! output shape must come from inference, not from a `value_info` declaration, and must have no
//! zero dims (where `-1` would be ambiguous).

use crate::error::Result;
use crate::ir::{tensor, Model, NodeId, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta};

use super::util::{const_wire, is_op};
use crate::ir::facts::{Dim, Facts};

/// See the module docs.
pub struct StaticReshape;

fn target(
    g: &crate::ir::Graph,
    facts: &Facts,
    id: NodeId,
) -> std::result::Result<Vec<i64>, String> {
    let shape_in = g.input(id, 1).ok_or("no shape input")?;
    if g.const_tensor(shape_in).is_some() {
        return Err(String::new());
    }
    let out = facts.get(ValueRef { node: id, slot: 0 });
    if out.declared {
        return Err("the output shape is only declared, not inferred".into());
    }
    let s = out.shape.as_ref().ok_or("the output shape is not known")?;
    let unknown = s.iter().filter(|d| matches!(d, Dim::S(_))).count();
    if unknown > 1 {
        return Err(format!("{unknown} output dims are not known"));
    }
    if s.iter().any(|d| matches!(d, Dim::K(v) if *v <= 0)) {
        return Err("a zero-sized output dim".into());
    }
    Ok(s.iter()
        .map(|d| match d {
            Dim::K(v) => *v,
            Dim::S(_) => -1,
        })
        .collect())
}

impl Rule for StaticReshape {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C007",
            name: "static-reshape-shape",
            group: "clean",
            summary:
                "give Reshape a constant target when its output shape is known but for one dim",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let candidates: Vec<NodeId> = g
            .ops()
            .into_iter()
            .filter(|id| is_op(g, *id, "Reshape"))
            .filter(|id| g.input(*id, 1).is_some_and(|v| g.const_tensor(v).is_none()))
            .collect();
        if candidates.is_empty() {
            return f;
        }
        let facts = g.facts();
        for id in candidates {
            match target(g, &facts, id) {
                Ok(t) => f.matches.push(Match {
                    anchor: id,
                    nodes: vec![],
                    what: format!("Reshape `{}` to constant {t:?}", g.node(id).label()),
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
        let t = target(g, &facts, m.anchor).map_err(|reason| crate::Error::Rule {
            rule: "static-reshape-shape".into(),
            reason,
        })?;
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        let name = format!("{}_shape", g.node(m.anchor).label());
        let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[t.len()]), t).expect("1-D");
        let w = const_wire(g, &mut p, tensor::from_i64(&name, &arr));
        p.rewire(m.anchor, 1, Some(w));
        Ok(p)
    }
}
