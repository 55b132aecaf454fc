//! `C012 drop-zero-rnn-state`: omits all-zero initial states of `LSTM`, `GRU` and `RNN`.
//!
//! **What:** an `initial_h` (or LSTM `initial_c`) input that is a constant of zeros, or a
//! `ConstantOfShape` whose value is zero, is disconnected: the spec's default initial state is
//! zeros of the same shape.
//! **Why:** PyTorch exports build the zero state at run time from the input's shape
//! (`Shape → Gather → Concat → ConstantOfShape`); dropping it makes that chain dead.
//! **Example:** `LSTM(X, W, R, B, , zeros(Concat(2, Gather(Shape(X), 1), 512)))` →
//! `LSTM(X, W, R, B)`.
//! **Exact:** yes, bit for bit: the recurrence starts from the same zeros.

use crate::error::{Error, Result};
use crate::ir::{Model, NodeId, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

use super::util::{all_equal, is_op};

/// See the module docs.
pub struct DropZeroRnnState;

fn is_zero(model: &Model, v: ValueRef) -> bool {
    let g = &model.graph;
    if let Some(t) = g.const_tensor(v) {
        return all_equal(t, 0.0);
    }
    if is_op(g, v.node, "ConstantOfShape") {
        return match g.node(v.node).attr("value").and_then(|a| a.t.as_ref()) {
            Some(t) => all_equal(t, 0.0),
            None => true,
        };
    }
    false
}

/// Input slots holding zero states.
fn zero_slots(model: &Model, id: NodeId) -> Vec<usize> {
    let g = &model.graph;
    let slots: &[usize] = if is_op(g, id, "LSTM") {
        &[5, 6]
    } else if is_op(g, id, "GRU") || is_op(g, id, "RNN") {
        &[5]
    } else {
        return vec![];
    };
    slots
        .iter()
        .copied()
        .filter(|s| g.input(id, *s).is_some_and(|v| is_zero(model, v)))
        .collect()
}

impl Rule for DropZeroRnnState {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "C012",
            name: "drop-zero-rnn-state",
            group: "clean",
            summary: "omit all-zero initial states of LSTM/GRU/RNN (the default)",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        for id in g.ops() {
            let slots = zero_slots(model, id);
            if !slots.is_empty() {
                f.matches.push(Match {
                    anchor: id,
                    nodes: vec![],
                    what: format!(
                        "zero initial state of {} `{}`",
                        g.node(id).op_type(),
                        g.node(id).label()
                    ),
                });
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let slots = zero_slots(model, m.anchor);
        if slots.is_empty() {
            return Err(Error::Rule {
                rule: "drop-zero-rnn-state".into(),
                reason: "no zero state".into(),
            });
        }
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        let mut inputs: Vec<Option<Wire>> = g
            .node_inputs(m.anchor)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if slots.contains(&i) {
                    None
                } else {
                    v.map(Wire::Value)
                }
            })
            .collect();
        while inputs.last().is_some_and(|w| w.is_none()) {
            inputs.pop();
        }
        let mut node = g.node(m.anchor).op().expect("op").clone();
        node.input = vec![String::new(); inputs.len()];
        let new = p.add_op(node.clone(), &inputs);
        for (slot, name) in node.output.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let old = ValueRef {
                node: m.anchor,
                slot,
            };
            p.shunt(old, new[slot]);
            p.keep_name(old, new[slot]);
        }
        p.remove(m.anchor);
        Ok(p)
    }
}
