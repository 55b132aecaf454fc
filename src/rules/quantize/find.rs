//! Which weights to quantize and how: the readers' axes, the spelling, what stays float.

use super::captured::captured_weight;
use super::dynamic::{plan_dynamic, DynamicPlan};
use super::grid::Groups;
use super::{Granularity, Mode, QuantizeConfig, AUTO_MIN_PER_CHANNEL};
use crate::ir::{tensor, Graph, Model, NodeId, NodeKind, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::ops::{self, WeightOperand, WeightRole};
use crate::rewrite::Findings;

/// Where `id` reads weights to quantize: `(input slot, output-channel axis, input-channel axis)`
/// per weight operand, from the op table (biases excluded; they stay float). Axes may be
/// negative (counted from the end). MatMul's table entry names both sides: the weight is the constant one, the right
/// one when neither or both are.
pub(crate) fn weight_operands(g: &Graph, id: NodeId) -> Vec<(usize, i64, Option<i64>)> {
    let Some(p) = g.node(id).op() else {
        return vec![];
    };
    let is_const = |slot: usize| g.input(id, slot).and_then(|v| g.const_tensor(v)).is_some();
    let ops: Vec<WeightOperand> = ops::weights(p)
        .into_iter()
        .filter(|w| w.role != WeightRole::Bias && w.out_axis.is_some())
        .collect();
    let kernel_const = ops
        .iter()
        .any(|w| w.role == WeightRole::Kernel && is_const(w.input));
    ops.into_iter()
        .filter(|w| w.role != WeightRole::LeftKernel || (is_const(w.input) && !kernel_const))
        .filter_map(|w| Some((w.input, w.out_axis?, w.in_axis)))
        .collect()
}

/// Whether `id` reads its weight operand `slot` as an indexed table (Gather's data): a table
/// computed at run time is not a weight, so no skip is reported for it.
pub(crate) fn reads_table(g: &Graph, id: NodeId, slot: usize) -> bool {
    g.node(id).op().is_some_and(|p| {
        ops::weights(p)
            .iter()
            .any(|w| w.input == slot && w.role == WeightRole::Table)
    })
}

pub(crate) fn is_quantized_op(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    let op = n.op_type();
    op.starts_with("QLinear")
        || op.ends_with("Integer")
        || op == "DynamicQuantizeLinear"
        || (!n.domain().is_empty()
            && (op.starts_with('Q') || op.contains("Quant") || op.contains("NBits")))
}

/// How per-channel scales are spelled in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spelling {
    /// `DequantizeLinear(q, s[C], z[C], axis)`: opset 13 and above.
    Axis,
    /// `Mul(DequantizeLinear(q, 1, 0), s)` (uint8: `Mul(Sub(DequantizeLinear(q, 1, 0), z), s)`)
    /// with `s` and `z` shaped `[C, 1, …]` to broadcast along the channel axis: ops every opset
    /// from 10 has. Per-channel `DequantizeLinear` needs opset 13, and raising the opset would
    /// change the meaning of other ops.
    Mul,
}

/// One weight to quantize: the value and the axis its readers agree on.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) weight: ValueRef,
    /// `Some(axis)` for per-channel (normalised to the weight's rank), `None` for per-tensor.
    pub(crate) axis: Option<usize>,
    /// `Some(b)`: one scale per `b` consecutive elements along `axis` (`block_size`, opset 21).
    pub(super) block: Option<usize>,
    /// How per-channel scales are written (ignored per tensor).
    pub(crate) spelling: Spelling,
    /// Why per-channel was not used, or spelled differently, when it was asked for; or why a
    /// weight is quantized weight-only in dynamic mode.
    pub(crate) note: Option<String>,
    /// `--quantize-mode dynamic`: how its reader becomes `MatMulInteger`.
    pub(super) dynamic: Option<DynamicPlan>,
}

impl Candidate {
    /// How its elements share scales.
    pub(super) fn groups(&self) -> Groups {
        match (self.axis, self.block) {
            (Some(axis), Some(block)) => Groups::Block { axis, block },
            (Some(axis), None) => Groups::Channel(axis),
            (None, _) => Groups::Tensor,
        }
    }
}

pub(crate) fn weight_name(g: &Graph, v: ValueRef) -> &str {
    g.value_name(v)
}

/// Whether `id` is a default-domain op this rule quantizes weights of, not excluded by name.
pub(crate) fn quantizable_reader(g: &Graph, cfg: &QuantizeConfig, id: NodeId) -> bool {
    g.node(id).domain().is_empty()
        && !weight_operands(g, id).is_empty()
        && !cfg.exclude.iter().any(|e| *e == g.node(id).label())
}

/// Whether `v` is computed from integer codes by `DequantizeLinear`, directly or through the
/// `Sub`/`Mul` by constants of the per-channel spelling below opset 13 ([`Spelling::Mul`]).
pub(crate) fn behind_dequantize(g: &Graph, v: ValueRef) -> bool {
    let mut v = v;
    for _ in 0..3 {
        let id = v.node;
        match g.node(id).op_type() {
            "DequantizeLinear" => return true,
            "Mul" | "Sub" => {
                let from = [0, 1].into_iter().find(|s| {
                    g.input(id, 1 - s).and_then(|c| g.const_tensor(c)).is_some()
                        && g.input(id, *s).is_some_and(|x| g.const_tensor(x).is_none())
                });
                match from.and_then(|s| g.input(id, s)) {
                    Some(x) => v = x,
                    None => return false,
                }
            }
            _ => return false,
        }
    }
    false
}

/// Whether `v` is computed from constants alone, through at most a few ops (the decoding of
/// stored codes: `Cast`, `Add` of offsets, `Gather` from a nibble table, `Reshape`), and is not
/// itself a constant. Bounded: it looks at most [`DECODE_DEPTH`] ops deep and 32 values wide.
pub(crate) fn computed_from_constants(g: &Graph, v: ValueRef) -> bool {
    if g.const_tensor(v).is_some() {
        return false;
    }
    let mut stack = vec![(v, 0usize)];
    let mut looked = 0;
    while let Some((v, depth)) = stack.pop() {
        if g.const_tensor(v).is_some() {
            continue;
        }
        looked += 1;
        let n = g.node(v.node);
        if depth >= DECODE_DEPTH || looked > 32 || n.op().is_none() || !n.domain().is_empty() {
            return false;
        }
        let inputs = g.node_inputs(v.node);
        if inputs.iter().all(Option::is_none) || !g.captures(v.node).is_empty() {
            return false;
        }
        stack.extend(inputs.into_iter().flatten().map(|i| (i, depth + 1)));
    }
    true
}

/// How deep [`computed_from_constants`] looks.
const DECODE_DEPTH: usize = 6;

/// Whether `v` is a codebook lookup: a `Gather` from a constant table by indices computed from
/// constants (what the `cluster` rule writes).
pub(crate) fn behind_codebook(g: &Graph, v: ValueRef) -> bool {
    let id = v.node;
    g.node(id).op_type() == "Gather"
        && g.node(id).domain().is_empty()
        && g.input(id, 0).is_some_and(|t| g.const_tensor(t).is_some())
        && g.input(id, 1)
            .is_some_and(|i| computed_from_constants(g, i))
}

/// Collects every weight read by a quantizable op: the first reader and the weight, with skips
/// for the places that stay float. Linear in the graph. `needs` is the opset the rewrite needs
/// and what needs it (`(10, "DequantizeLinear")`): below it every weight is skipped saying so.
pub(crate) fn find_weights(
    model: &Model,
    cfg: &QuantizeConfig,
    f: &mut Findings,
    needs: (i64, &str),
) -> Vec<(NodeId, ValueRef)> {
    let g = &model.graph;
    let opset = model.opset("").unwrap_or(1);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for id in g.ops() {
        if is_quantized_op(g, id) {
            f.skip(model, id, "already a quantized op");
            continue;
        }
        if !g.node(id).domain().is_empty() {
            continue;
        }
        // Constant float weights its subgraphs read by name (see `captured.rs`).
        if opset >= 10 {
            for v in g.captures(id) {
                let float = g
                    .const_tensor(v)
                    .is_some_and(|t| t.data_type == Some(DataType::Float as i32));
                if float && !seen.contains(&v) && captured_weight(g, v).is_ok() {
                    seen.insert(v);
                    out.push((id, v));
                }
            }
        }
        let ops = weight_operands(g, id);
        if ops.is_empty() {
            continue;
        }
        if cfg.exclude.iter().any(|e| *e == g.node(id).label()) {
            f.skip(model, id, "excluded by --quantize-exclude");
            continue;
        }
        if opset < needs.0 {
            f.skip(
                model,
                id,
                format!("{} needs opset {}, the model has {opset}", needs.1, needs.0),
            );
            continue;
        }
        // A codebook lookup (`cluster`'s decoding): its table is no weight of the model.
        if behind_codebook(g, ValueRef { node: id, slot: 0 }) {
            continue;
        }
        for (slot, _, _) in ops {
            let Some(v) = g.input(id, slot) else { continue };
            if g.const_tensor(v).is_none() {
                if behind_dequantize(g, v) {
                    f.skip(model, id, format!("input {slot} is already quantized"));
                } else if behind_codebook(g, v) {
                    f.skip(model, id, format!("input {slot} is already clustered"));
                } else if !reads_table(g, id, slot) {
                    f.skip(model, id, format!("input {slot} is not a constant weight"));
                }
                continue;
            }
            if seen.insert(v) {
                out.push((id, v));
            }
        }
    }
    out
}

fn per_tensor_note(captured: bool) -> String {
    if captured {
        "per tensor: read inside a subgraph, where its channels may be regrouped".into()
    } else {
        "per tensor: its readers disagree on the channel axis".into()
    }
}

/// Decides how `weight` is quantized, from all its readers; or why it stays float.
/// Work is proportional to the weight's readers, not to the graph.
pub(crate) fn plan(
    model: &Model,
    cfg: &QuantizeConfig,
    weight: ValueRef,
) -> std::result::Result<Candidate, String> {
    let g = &model.graph;
    let name = weight_name(g, weight);
    let t = g
        .const_tensor(weight)
        .ok_or_else(|| format!("weight `{name}` is not constant"))?;
    if cfg.exclude.iter().any(|e| e == name) {
        return Err(format!("weight `{name}` excluded by --quantize-exclude"));
    }
    if t.data_type != Some(DataType::Float as i32) {
        return Err(format!("weight `{name}` is not float32"));
    }
    let n = tensor::numel(t).unwrap_or(0);
    if n < cfg.min_elements {
        return Err(format!(
            "weight `{name}` has {n} elements, too few to pay for a DequantizeLinear (minimum {})",
            cfg.min_elements
        ));
    }
    if g.is_graph_output(weight) {
        return Err(format!("weight `{name}` is a graph output"));
    }
    let captured = g.is_captured(weight);
    if captured {
        captured_weight(g, weight).map_err(|why| {
            format!("weight `{name}` is read inside a subgraph, not only as a weight: {why}")
        })?;
    }
    if !matches!(
        g.node(weight.node).kind,
        NodeKind::Initializer(_) | NodeKind::Op(_)
    ) {
        return Err(format!("weight `{name}` is not an initializer or Constant"));
    }
    let rank = t.dims.len() as i64;
    let norm = |axis: i64| {
        (rank > 0)
            .then(|| if axis < 0 { axis + rank } else { axis })
            .filter(|a| (0..rank).contains(a))
    };
    let mut axes = Vec::new();
    let mut in_axes = Vec::new();
    for (reader, slot) in g.consumers(weight) {
        if g.node(reader).domain().is_empty()
            && !weight_operands(g, reader).is_empty()
            && !quantizable_reader(g, cfg, reader)
        {
            return Err(format!(
                "weight `{name}` is also read by `{}`, excluded by --quantize-exclude",
                g.node(reader).label()
            ));
        }
        if let Some((_, axis, in_axis)) = weight_operands(g, reader)
            .into_iter()
            .find(|(s, _, _)| *s == slot)
        {
            axes.push(norm(axis));
            in_axes.push(in_axis.and_then(norm));
        }
    }
    let opset = model.opset("").unwrap_or(1);
    if captured {
        // Channels may be regrouped on the way (Slice, Concat, Reshape): one scale.
        axes.push(None);
        in_axes.push(None);
    }
    let mut block = None;
    let (axis, note) = match cfg.granularity {
        Granularity::Tensor => (None, None),
        Granularity::Block(b) => {
            match in_axes.first() {
                Some(Some(first)) if in_axes.iter().all(|a| *a == Some(*first)) => {
                    block = Some(b);
                    (Some(*first as usize), None)
                }
                Some(Some(_)) => {
                    return Err(format!(
                        "weight `{name}`: its readers disagree on the input axis to block along"
                    ))
                }
                _ => {
                    return Err(if captured {
                        format!("weight `{name}` is read inside a subgraph, where its blocks may be regrouped")
                    } else {
                        format!("weight `{name}`: the op table names no input axis of it to block along")
                    })
                }
            }
        }
        Granularity::Auto => match axes.first() {
            Some(Some(first)) if axes.iter().all(|a| *a == Some(*first)) => {
                let c = t.dims[*first as usize].max(1) as u64;
                let per = n / c;
                if per < AUTO_MIN_PER_CHANNEL {
                    (
                        None,
                        Some(format!(
                            "per tensor (auto): {per} elements per channel, fewer than {AUTO_MIN_PER_CHANNEL}"
                        )),
                    )
                } else {
                    (Some(*first as usize), None)
                }
            }
            _ => (None, Some(per_tensor_note(captured))),
        },
        Granularity::Channel => match axes.first() {
            Some(Some(first)) if axes.iter().all(|a| *a == Some(*first)) => {
                (Some(*first as usize), None)
            }
            _ => (None, Some(per_tensor_note(captured))),
        },
    };
    let (spelling, note) = if axis.is_some() && opset < 13 {
        (
            Spelling::Mul,
            Some(format!(
                "per-channel DequantizeLinear needs opset 13, the model has {opset}"
            )),
        )
    } else {
        (Spelling::Axis, note)
    };
    let (dynamic, note) = match cfg.mode {
        Mode::Qdq => (None, note),
        Mode::Dynamic => match plan_dynamic(model, weight, &t.dims) {
            Ok(d) => (Some(d), None),
            Err(why) => (
                None,
                Some(match note {
                    Some(n) => format!("weight-only: {why}; {n}"),
                    None => format!("weight-only: {why}"),
                }),
            ),
        },
    };
    Ok(Candidate {
        weight,
        axis,
        block,
        spelling,
        note,
        dynamic,
    })
}
