//! Deciding top-level `If` nodes, by the constant evaluator or by running the condition in tract.

use std::collections::{HashMap, HashSet};

use super::const_eval::{ConstEval, Val};
use super::names::{inline_if, is_if, node_label, node_uses};
use super::IfDecision;
use crate::error::Result;
use crate::onnx::proto::{GraphProto, ModelProto, ValueInfoProto};
use crate::verify::inputs::InputSet;

/// Upper bound on the number of `If` nodes inlined, against pathological recursion.
const MAX_INLINED: usize = 10_000;

/// Decides top-level `If` nodes until none is left that can be decided.
pub(super) fn decide_ifs(
    model: &mut ModelProto,
    inputs: &InputSet,
    decisions: &mut Vec<IfDecision>,
) -> Result<()> {
    let mut tract_failed: HashSet<String> = HashSet::new();
    for _ in 0..MAX_INLINED {
        let Some(graph) = model.graph.as_ref() else {
            return Ok(());
        };
        if !graph.node.iter().any(is_if) {
            return Ok(());
        }
        let consts = ConstEval::new(graph, inputs).run();
        let mut decided: Option<(usize, bool, &'static str)> = None;
        for (idx, node) in graph.node.iter().enumerate() {
            if !is_if(node) {
                continue;
            }
            let Some(cond) = node.input.first().filter(|c| !c.is_empty()) else {
                continue;
            };
            if let Some(b) = consts.get(cond).and_then(Val::truth) {
                decided = Some((idx, b, "constants"));
                break;
            }
            let key = node.output.first().cloned().unwrap_or_default();
            if tract_failed.contains(&key) {
                continue;
            }
            match cond_by_tract(model, graph, cond, inputs) {
                TractCond::Known(b) => {
                    decided = Some((idx, b, "tract"));
                    break;
                }
                // Another `If` must be decided first; try again in a later round.
                TractCond::Blocked => {}
                TractCond::Failed => {
                    tract_failed.insert(key);
                }
            }
        }
        let Some((idx, take_then, by)) = decided else {
            return Ok(());
        };
        let Some(graph) = model.graph.as_mut() else {
            return Ok(());
        };
        let label = node_label(&graph.node[idx]);
        inline_if(graph, idx, take_then)?;
        decisions.push(IfDecision {
            node: label,
            branch: if take_then {
                "then_branch"
            } else {
                "else_branch"
            },
            by,
        });
    }
    Ok(())
}

/// What tract says about an `If` condition.
enum TractCond {
    /// The condition's value.
    Known(bool),
    /// The condition depends on another `If`, not decided yet.
    Blocked,
    /// tract cannot compute it (or it is not a one-element value).
    Failed,
}

/// Computes the value of `cond` by running, in tract, the nodes it depends on.
fn cond_by_tract(
    model: &ModelProto,
    graph: &GraphProto,
    cond: &str,
    inputs: &InputSet,
) -> TractCond {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            producer.insert(o.as_str(), i);
        }
    }
    let mut needed_nodes: HashSet<usize> = HashSet::new();
    let mut needed_values: HashSet<String> = HashSet::new();
    let mut stack = vec![cond.to_string()];
    while let Some(v) = stack.pop() {
        if !needed_values.insert(v.clone()) {
            continue;
        }
        if let Some(&i) = producer.get(v.as_str()) {
            if needed_nodes.insert(i) {
                let n = &graph.node[i];
                if is_if(n) {
                    return TractCond::Blocked;
                }
                stack.extend(node_uses(n));
            }
        }
    }
    let mut order: Vec<usize> = needed_nodes.into_iter().collect();
    order.sort_unstable();
    let sub_graph = GraphProto {
        node: order.iter().map(|&i| graph.node[i].clone()).collect(),
        name: graph.name.clone(),
        initializer: graph
            .initializer
            .iter()
            .filter(|t| t.name.as_ref().is_some_and(|n| needed_values.contains(n)))
            .cloned()
            .collect(),
        sparse_initializer: graph
            .sparse_initializer
            .iter()
            .filter(|s| {
                s.values
                    .as_ref()
                    .and_then(|v| v.name.as_ref())
                    .is_some_and(|n| needed_values.contains(n))
            })
            .cloned()
            .collect(),
        input: graph
            .input
            .iter()
            .filter(|i| i.name.as_ref().is_some_and(|n| needed_values.contains(n)))
            .cloned()
            .collect(),
        output: vec![ValueInfoProto {
            name: Some(cond.to_string()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let sub_inputs = InputSet::new(
        inputs.label.clone(),
        inputs
            .tensors
            .iter()
            .filter(|(n, _)| needed_values.contains(n))
            .cloned()
            .collect(),
    );
    let sub_model = ModelProto {
        graph: Some(sub_graph),
        ..model.clone_without_graph()
    };
    let truth = crate::verify::runner::fold_or_run(&sub_model, &sub_inputs, "if condition")
        .ok()
        .and_then(|out| out.into_iter().next())
        .and_then(|t| Val::from_tensor(&t))
        .and_then(|v| v.truth());
    match truth {
        Some(b) => TractCond::Known(b),
        None => TractCond::Failed,
    }
}

trait CloneWithoutGraph {
    fn clone_without_graph(&self) -> ModelProto;
}

impl CloneWithoutGraph for ModelProto {
    fn clone_without_graph(&self) -> ModelProto {
        ModelProto {
            ir_version: self.ir_version,
            opset_import: self.opset_import.clone(),
            producer_name: self.producer_name.clone(),
            producer_version: self.producer_version.clone(),
            domain: self.domain.clone(),
            model_version: self.model_version,
            functions: self.functions.clone(),
            ..Default::default()
        }
    }
}
