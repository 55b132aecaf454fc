//! Raising the default-domain opset to 21 for int4 and `block_size`.
//!
//! `DequantizeLinear` takes int4 codes and `block_size` from opset 21. The import is one number
//! for the whole model, so raising it re-reads every node at 21. Nodes whose attributes became
//! inputs are rewritten to the new signature, with the values unchanged: the op table's
//! `name<V@I` attributes (`Unsqueeze`/`Squeeze`/`ReduceSum` `axes` and `Split`'s `split` at 13,
//! the other reductions' `axes` at 18, `Slice`'s bounds at 10) become an int64 `Constant` read
//! as input `I`, and a `Split` without sizes gets `num_outputs` from 18 ([`upgraded`]).
//! [`opset_blockers`] lists the nodes that still read differently at 21: other attributes
//! the op table ([`crate::ops::OpDef::check`]) refuses (`Pad`, `Clip`, `Dropout`, ...), changed
//! meanings the attributes do not show (`Softmax`/`LogSoftmax`/`Hardmax` flattened the input
//! before 13, `Resize`'s inputs before 11, `GridSample`'s modes before 20), removed ops
//! (`Upsample`, `Scatter`) and ops the table does not know. A model with any keeps its opset
//! and its weights in float, each with a reason naming them.
//!
//! The rule's patches edit the graph only, so [`raise_opset`] is a step before the driver (the
//! command line takes it): without it, `find` leaves every weight in float with the reason.

use std::collections::{BTreeMap, HashSet};

use super::{Quantize, QuantizeConfig};
use crate::ir::builder::{attr_i, attr_t, tensor_i64_1d};
use crate::ir::Model;
use crate::onnx::proto::attribute_proto::AttributeType;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto};
use crate::onnx::visit::{subgraphs, subgraphs_mut};
use crate::ops::{self, OpDef};
use crate::rewrite::{Config, Rule};

/// What the report says about verification of int4 and block-wise weights.
pub(super) const TRACT_NOTE: &str = "tract 0.23 runs neither int4 nor `block_size`: verification \
materialises the dequantized weight, what the DequantizeLinear computes";

/// The IR version that knows the int4 type and opset 21.
const IR_VERSION_INT4: i64 = 10;

/// Why `node` reads differently at opset `to` than at `from`, or `None`. `rank` is the rank of
/// its input 0 when known.
fn changes(node: &NodeProto, from: i64, to: i64, rank: Option<usize>) -> Option<String> {
    let op = node.op_type.as_deref().unwrap_or("");
    let Some(def) = ops::lookup_node(node, Some(to)) else {
        return Some(format!(
            "the op table does not know `{op}`, so not what it means at opset {to}"
        ));
    };
    let converted = upgraded(node, def, to).map(|(n, _)| n);
    let node = converted.as_ref().unwrap_or(node);
    if let Err(e) = def.check(node, to) {
        return Some(e);
    }
    let attr_i = |name: &str| {
        node.attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
            .and_then(|a| a.i)
    };
    match op {
        "Softmax" | "LogSoftmax" | "Hardmax" if from < 13 => {
            let axis = attr_i("axis").unwrap_or(1);
            let last = axis == -1 || rank.is_some_and(|r| r > 0 && axis == r as i64 - 1);
            (!last).then(|| {
                format!(
                    "`{op}` before opset 13 flattens its input at `axis` {axis}, from 13 it works along that axis only"
                )
            })
        }
        "Resize" if from < 11 => {
            Some("`Resize` takes `roi` and `sizes` inputs from opset 11".into())
        }
        "GridSample" if from < 20 => Some("`GridSample` renames its modes at opset 20".into()),
        "Upsample" | "Scatter" => Some(format!("`{op}` is deprecated after opset {from}")),
        _ => None,
    }
}

/// `node` rewritten for opset `to` with the same meaning, and the int64 values of the inputs
/// it gains (by slot), or `None` when nothing needs to change or the op table does not say how:
/// attributes `to` no longer accepts that the table marks `name<V@I` (with `V ≤ to` and input
/// `I` free) become inputs, and a `Split` without sizes at `to ≥ 18` states `num_outputs`.
pub(super) fn upgraded(
    node: &NodeProto,
    def: &OpDef,
    to: i64,
) -> Option<(NodeProto, Vec<(usize, Vec<i64>)>)> {
    let sizes_given = node.input.get(1).is_some_and(|i| !i.is_empty());
    let states_outputs = || {
        def.op != "Split"
            || to < 18
            || sizes_given
            || node
                .attribute
                .iter()
                .any(|a| matches!(a.name.as_deref(), Some("num_outputs" | "split")))
    };
    let all_accepted = node
        .attribute
        .iter()
        .all(|a| def.accepts_attr(a.name.as_deref().unwrap_or(""), to));
    // Most nodes: nothing to do, and no copy of their (possibly large) attributes.
    if all_accepted && states_outputs() {
        return None;
    }
    let mut n = node.clone();
    let mut moved = Vec::new();
    let mut kept = Vec::new();
    for a in &node.attribute {
        let name = a.name.as_deref().unwrap_or("");
        if def.accepts_attr(name, to) {
            kept.push(a.clone());
            continue;
        }
        let (at, slot) = def.attr_input(name)?;
        let values = match a.r#type.and_then(|t| AttributeType::try_from(t).ok()) {
            Some(AttributeType::Ints) => a.ints.clone(),
            Some(AttributeType::Int) => vec![a.i?],
            _ if !a.ints.is_empty() => a.ints.clone(),
            _ => vec![a.i?],
        };
        if at > to || node.input.get(slot).is_some_and(|i| !i.is_empty()) {
            return None;
        }
        moved.push((slot, values));
    }
    n.attribute = kept;
    let split_sizes = n.input.get(1).is_some_and(|i| !i.is_empty()) || !moved.is_empty();
    let mut changed = !moved.is_empty();
    if def.op == "Split"
        && to >= 18
        && !split_sizes
        && !n
            .attribute
            .iter()
            .any(|a| a.name.as_deref() == Some("num_outputs"))
    {
        n.attribute
            .push(attr_i("num_outputs", node.output.len() as i64));
        changed = true;
    }
    changed.then_some((n, moved))
}

/// Rewrites every default-domain node of `proto` (every graph, subgraphs and model-local
/// functions) that [`upgraded`] changes for opset `to`, each moved attribute read from a new
/// `Constant` placed just before the node. Returns the nodes changed, as "`op` `name`". Walks
/// the nesting with a work list, not recursion.
fn upgrade_model(proto: &mut ModelProto, to: i64) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::new();
    {
        let mut stack: Vec<&GraphProto> = proto.graph.iter().collect();
        let note = |nodes: &[NodeProto], taken: &mut HashSet<String>| {
            for n in nodes {
                taken.extend(n.input.iter().chain(&n.output).cloned());
            }
        };
        for f in &proto.functions {
            note(&f.node, &mut taken);
            stack.extend(f.node.iter().flat_map(subgraphs));
        }
        while let Some(g) = stack.pop() {
            note(&g.node, &mut taken);
            taken.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
            taken.extend(g.input.iter().filter_map(|v| v.name.clone()));
            stack.extend(g.node.iter().flat_map(subgraphs));
        }
    }
    let mut done = Vec::new();
    let mut upgrade = |nodes: &mut Vec<NodeProto>, taken: &mut HashSet<String>| {
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes.drain(..) {
            let def = ops::is_default_domain(node.domain.as_deref().unwrap_or(""))
                .then(|| ops::lookup_node(&node, None))
                .flatten();
            let Some((mut n, moved)) = def.and_then(|d| upgraded(&node, d, to)) else {
                out.push(node);
                continue;
            };
            let label = n
                .name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| n.output.first().cloned().unwrap_or_default());
            for (slot, values) in moved {
                let base = format!("{label}_input{slot}");
                let mut name = base.clone();
                let mut k = 1;
                while !taken.insert(name.clone()) {
                    name = format!("{base}_{k}");
                    k += 1;
                }
                let mut c = crate::rules::util::make_node("Constant", &name, 0, &[&name]);
                c.attribute
                    .push(attr_t("value", tensor_i64_1d(&name, &values)));
                out.push(c);
                if n.input.len() <= slot {
                    n.input.resize(slot + 1, String::new());
                }
                n.input[slot] = name;
            }
            done.push(format!(
                "`{}` `{label}`",
                n.op_type.as_deref().unwrap_or("")
            ));
            out.push(n);
        }
        *nodes = out;
    };
    for f in &mut proto.functions {
        upgrade(&mut f.node, &mut taken);
    }
    let mut stack: Vec<&mut GraphProto> = proto.graph.iter_mut().collect();
    for f in &mut proto.functions {
        stack.extend(f.node.iter_mut().flat_map(subgraphs_mut));
    }
    while let Some(g) = stack.pop() {
        upgrade(&mut g.node, &mut taken);
        stack.extend(g.node.iter_mut().flat_map(subgraphs_mut));
    }
    done
}

/// The default-domain nodes of `model` (every graph, subgraphs and model-local functions
/// included) that read differently
/// at opset `to` than at the model's own opset, as "`op` `name`: reason", deduplicated by op and
/// reason (the first node named); empty when raising the import to `to` changes nothing.
pub fn opset_blockers(model: &Model, to: i64) -> Vec<String> {
    let from = model.opset("").unwrap_or(1);
    if from >= to {
        return vec![];
    }
    let g = &model.graph;
    let facts = g.facts();
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut note = |node: &NodeProto, reason: String| {
        let name = node
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| node.output.first().cloned().unwrap_or_default());
        found.entry(reason).or_insert(name);
    };
    // Subgraph bodies and model-local functions (which read the model's default-domain opset
    // too), from a work list rather than recursion.
    let mut bodies: Vec<&[NodeProto]> = Vec::new();
    for id in g.ops() {
        let Some(n) = g.node(id).op() else { continue };
        if ops::is_default_domain(n.domain.as_deref().unwrap_or("")) {
            let rank = g.input(id, 0).and_then(|v| facts.get(v).rank());
            if let Some(r) = changes(n, from, to, rank) {
                note(n, r);
            }
        }
        bodies.extend(subgraphs(n).map(|sub| &sub.node[..]));
    }
    bodies.extend(model.shell.functions.iter().map(|f| &f.node[..]));
    while let Some(nodes) = bodies.pop() {
        for n in nodes {
            if ops::is_default_domain(n.domain.as_deref().unwrap_or("")) {
                if let Some(r) = changes(n, from, to, None) {
                    note(n, r);
                }
            }
            bodies.extend(subgraphs(n).map(|sub| &sub.node[..]));
        }
    }
    let mut v: Vec<String> = found
        .into_iter()
        .map(|(reason, name)| format!("`{name}` ({reason})"))
        .collect();
    v.sort();
    v
}

/// Why a weight stays float when the model's opset is below what `needs` (the scheme's opset).
pub(super) fn opset_refusal(model: &Model, needs: i64) -> String {
    let opset = model.opset("").unwrap_or(1);
    let blockers = opset_blockers(model, needs);
    if blockers.is_empty() {
        format!(
            "int4 and `block_size` need DequantizeLinear at opset {needs}, the model imports \
             {opset} (`quantize::raise_opset` raises it first; the command line does)"
        )
    } else {
        const SHOWN: usize = 4;
        let more = blockers.len().saturating_sub(SHOWN);
        format!(
            "int4 and `block_size` need DequantizeLinear at opset {needs}, the model imports \
             {opset}, and raising it would change {}{}",
            blockers[..blockers.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

/// Raises the model's default-domain opset import to what the quantize configuration needs
/// (21 for int4 or `block_size`; the IR version to at least 10) when the model imports less,
/// no node reads differently at the new opset once [`upgraded`] ([`opset_blockers`]), and the
/// rule then finds a weight to quantize; nodes whose attributes became inputs are rewritten
/// first. Returns what was done, or `None` when nothing changed (the rule's skips say why).
/// Run it before the driver.
pub fn raise_opset(model: &mut Model, config: &Config) -> Option<String> {
    let cfg: &QuantizeConfig = &config.quantize;
    let needs = cfg.needs_opset();
    let from = model.opset("").unwrap_or(1);
    if from >= needs || !opset_blockers(model, needs).is_empty() {
        return None;
    }
    let mut proto = model.to_proto();
    let rewritten = upgrade_model(&mut proto, needs);
    let mut raised = Model::from_proto(proto).ok()?;
    set_opset(&mut raised, needs);
    if Quantize.find(&raised, config).matches.is_empty() {
        return None;
    }
    *model = raised;
    const SHOWN: usize = 4;
    let nodes = match rewritten.len() {
        0 => String::new(),
        n => format!(
            "; {n} node{} rewritten for it, attributes that became inputs now read from a \
             Constant: {}{}",
            if n == 1 { "" } else { "s" },
            rewritten[..n.min(SHOWN)].join(", "),
            if n > SHOWN {
                format!(" and {} more", n - SHOWN)
            } else {
                String::new()
            }
        ),
    };
    Some(format!(
        "quantize: raised the default-domain opset from {from} to {needs} for int4 and \
         `block_size` (no op reads differently at {needs}){nodes}"
    ))
}

fn set_opset(model: &mut Model, to: i64) {
    let shell = &mut model.shell;
    match shell.opset_import.iter_mut().find(|o| {
        let d = o.domain.as_deref().unwrap_or("");
        d.is_empty() || d == "ai.onnx"
    }) {
        Some(o) => o.version = Some(to),
        None => shell
            .opset_import
            .push(crate::onnx::proto::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(to),
            }),
    }
    if shell.ir_version.unwrap_or(0) < IR_VERSION_INT4 {
        shell.ir_version = Some(IR_VERSION_INT4);
    }
}
