//! Raising the default-domain opset to 21 for int4 and `block_size`, when nothing else changes.
//!
//! `DequantizeLinear` takes int4 codes and `block_size` from opset 21. The import is one number
//! for the whole model, so raising it re-reads every node at 21: [`opset_blockers`] lists the
//! nodes whose signature or meaning differs between the model's opset and 21 — attributes that
//! became inputs (`Unsqueeze`/`Squeeze`/`ReduceSum` `axes` at 13, `Split`'s `split` at 13, the
//! other reductions' `axes` at 18, `Pad`, `Clip`, `Slice`, `Dropout`, ...: whatever the op table
//! ([`crate::ops::OpDef::check`]) refuses at 21), changed meanings the attributes do not show
//! (`Softmax`/`LogSoftmax`/`Hardmax` flattened the input before 13, `Resize`'s inputs before 11,
//! `GridSample`'s modes before 20), removed ops (`Upsample`, `Scatter`) and ops the table does
//! not know. The rule rewrites none of these: a model with any keeps its opset and its weights
//! in float, each with a reason naming them (captcha_crnn's `Unsqueeze` with `axes`).
//!
//! The rule's patches edit the graph only, so [`raise_opset`] is a step before the driver (the
//! command line takes it): without it, `find` leaves every weight in float with the reason.

use std::collections::BTreeMap;

use super::{Quantize, QuantizeConfig};
use crate::ir::Model;
use crate::onnx::proto::NodeProto;
use crate::onnx::visit::subgraphs;
use crate::ops;
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
    fn walk(nodes: &[NodeProto], from: i64, to: i64, note: &mut dyn FnMut(&NodeProto, String)) {
        for n in nodes {
            if ops::is_default_domain(n.domain.as_deref().unwrap_or("")) {
                if let Some(r) = changes(n, from, to, None) {
                    note(n, r);
                }
            }
            for sub in subgraphs(n) {
                walk(&sub.node, from, to, note);
            }
        }
    }
    for id in g.ops() {
        let Some(n) = g.node(id).op() else { continue };
        if ops::is_default_domain(n.domain.as_deref().unwrap_or("")) {
            let rank = g.input(id, 0).and_then(|v| facts.get(v).rank());
            if let Some(r) = changes(n, from, to, rank) {
                note(n, r);
            }
        }
        for sub in subgraphs(n) {
            walk(&sub.node, from, to, &mut note);
        }
    }
    // Model-local functions read the model's default-domain opset too.
    for f in &model.shell.functions {
        walk(&f.node, from, to, &mut note);
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
/// no node reads differently at the new opset ([`opset_blockers`]), and the rule then finds a
/// weight to quantize. Returns what was done, or `None` when nothing changed (the rule's skips
/// say why). Run it before the driver; the graph itself is not touched.
pub fn raise_opset(model: &mut Model, config: &Config) -> Option<String> {
    let cfg: &QuantizeConfig = &config.quantize;
    let needs = cfg.needs_opset();
    let from = model.opset("").unwrap_or(1);
    if from >= needs || !opset_blockers(model, needs).is_empty() {
        return None;
    }
    let saved = (model.shell.opset_import.clone(), model.shell.ir_version);
    set_opset(model, needs);
    if Quantize.find(model, config).matches.is_empty() {
        (model.shell.opset_import, model.shell.ir_version) = saved;
        return None;
    }
    Some(format!(
        "quantize: raised the default-domain opset from {from} to {needs} for int4 and `block_size` (no op reads differently at {needs})"
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
