//! Weights read inside subgraphs: a top-level constant that `If`/`Loop`/`Scan` bodies capture by
//! name (silero_vad's LSTM weights: `weight_ih` is sliced per gate, the gates concatenated in
//! ONNX order and unsqueezed, inside both branches of an `If`).
//!
//! Such a constant is a weight when every read of it inside the subgraphs goes, through data
//! movement only ([`MOVES`], on their data input), to a weight operand the op table names
//! (not a bias). It is then quantized per tensor (the data movement may regroup its channels)
//! and the `DequantizeLinear` output takes over its name at the top level, so the subgraphs read
//! the dequantized weight unchanged.

use std::collections::HashSet;

use crate::ir::{Graph, ValueRef};
use crate::onnx::proto::GraphProto;
use crate::onnx::visit::subgraphs;
use crate::ops::{self, WeightRole};

/// Ops a captured weight may pass through, on input 0 (any input of `Concat`).
const MOVES: &[&str] = &[
    "Slice",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Reshape",
    "Transpose",
    "Identity",
];

/// Follows `names` through `sub` (and the subgraphs inside it); counts weight uses in `uses`.
fn follow(sub: &GraphProto, names: &HashSet<String>, uses: &mut usize) -> Result<(), String> {
    // A name the subgraph defines itself shadows the outer one.
    let shadowed = |n: &String| {
        sub.input.iter().any(|i| i.name.as_ref() == Some(n))
            || sub.initializer.iter().any(|t| t.name.as_ref() == Some(n))
    };
    let mut live: HashSet<String> = names.iter().filter(|n| !shadowed(n)).cloned().collect();
    if live.is_empty() {
        return Ok(());
    }
    for node in &sub.node {
        let op = node.op_type.as_deref().unwrap_or("");
        let default = ops::is_default_domain(node.domain.as_deref().unwrap_or(""));
        for (slot, input) in node.input.iter().enumerate() {
            if !live.contains(input) {
                continue;
            }
            if default && MOVES.contains(&op) && (slot == 0 || op == "Concat") {
                live.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
            } else if default
                && ops::weights(node)
                    .iter()
                    .any(|w| w.input == slot && w.role != WeightRole::Bias)
            {
                *uses += 1;
            } else {
                return Err(format!(
                    "`{op}` `{}` reads it as input {slot} inside a subgraph",
                    node.name.as_deref().unwrap_or("")
                ));
            }
        }
        for g in subgraphs(node) {
            follow(g, &live, uses)?;
        }
    }
    if let Some(o) = sub
        .output
        .iter()
        .find(|o| o.name.as_ref().is_some_and(|n| live.contains(n)))
    {
        return Err(format!(
            "a subgraph returns it (as `{}`)",
            o.name.as_deref().unwrap_or("")
        ));
    }
    Ok(())
}

/// `Ok(n)` when the subgraphs capturing `weight` read it only as a weight, `n` times (see the
/// module docs); else why not. Work proportional to the capturing subgraphs.
pub(super) fn captured_weight(g: &Graph, weight: ValueRef) -> Result<usize, String> {
    let name = g.value_name(weight).to_string();
    let names: HashSet<String> = [name].into_iter().collect();
    let mut uses = 0;
    for id in g.capture_consumers(weight) {
        let Some(p) = g.node(id).op() else { continue };
        for sub in subgraphs(p) {
            follow(sub, &names, &mut uses)?;
        }
    }
    if uses == 0 {
        return Err("no subgraph reads it as a weight".into());
    }
    Ok(uses)
}
