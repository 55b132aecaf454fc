//! Candidates of `lowrank`: which MatMul/Gemm/Conv weights can be factored, and how they enter
//! their op.

use super::*;

// Candidates

/// How the weight enters the op.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Form {
    /// `MatMul(X, W[K,N])`.
    Right,
    /// `MatMul(W[M,K], X)`; factored as `Wᵀ[K,M]`.
    Left,
    /// `Gemm(X, B, C)`, `W = op(B)`.
    Gemm { trans_a: bool, trans_b: bool },
    /// `Conv(X, W[M,C,k…])`; factored as `W[M, C·k…]ᵀ`.
    Conv { c_in: usize, kernel: Vec<usize> },
}

/// A layer that may be factored: its op, weight and the matrix shape `K × N` being factored.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) node: NodeId,
    pub(crate) op: &'static str,
    pub(crate) form: Form,
    pub(crate) act: ValueRef,
    pub(crate) weight: ValueRef,
    pub(crate) dims: Vec<i64>,
    /// The weight's output-channel axis (0 or 1): `N` is along it, `K` along the others.
    pub(crate) out_axis: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
}

impl Layer {
    pub(super) fn shape_text(&self) -> String {
        let d: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        format!("W[{}]", d.join("×"))
    }

    pub(crate) fn sampling(&self, g: &Graph) -> Sampling {
        match &self.form {
            Form::Right => Sampling::Rows,
            Form::Left => Sampling::BatchColumns,
            Form::Gemm { trans_a: false, .. } => Sampling::Rows,
            Form::Gemm { trans_a: true, .. } => Sampling::Columns,
            Form::Conv { kernel, .. } => {
                let nsp = kernel.len();
                let ints = |name: &str, d: usize, len: usize| -> Vec<usize> {
                    attr_ints(g, self.node, name)
                        .map(|v| v.iter().map(|x| (*x).max(0) as usize).collect())
                        .unwrap_or_else(|| vec![d; len])
                };
                let auto_pad = g
                    .node(self.node)
                    .attr("auto_pad")
                    .and_then(|a| a.s.as_ref())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_else(|| "NOTSET".into());
                Sampling::Conv {
                    kernel: kernel.clone(),
                    strides: ints("strides", 1, nsp),
                    dilations: ints("dilations", 1, nsp),
                    pads: ints("pads", 0, 2 * nsp),
                    auto_pad,
                }
            }
        }
    }
}

/// The constant behind `v` if it is an initializer or a `Constant` node's `value`.
pub(super) fn constant(g: &Graph, v: ValueRef) -> Option<&TensorProto> {
    g.const_tensor(v)
}

/// The op table's weight operand of `node` with `role`.
pub(super) fn operand(node: &NodeProto, role: WeightRole) -> Option<WeightOperand> {
    ops::weights(node).into_iter().find(|w| w.role == role)
}

/// Parses `id` as a MatMul, Gemm or Conv with a constant weight: the layer, or why not. Which
/// input is the weight and which of its axes is the output channel is the op table's word
/// ([`crate::ops::OpDef::weights`]); `K` is the weight's other axes, flattened.
pub(crate) fn parse(model: &Model, id: NodeId) -> std::result::Result<Layer, String> {
    let g = &model.graph;
    let node = g.node(id);
    let op = node.op_type();
    let p = node.op().ok_or("not an op")?;
    let ins = g.node_inputs(id);
    let get = |i: usize| ins.get(i).copied().flatten();
    let slot = |w: Option<WeightOperand>| w.map(|w| w.input).ok_or("no weight operand");
    let (op, act, weight, form, w_op) = match op {
        "MatMul" => {
            let right = operand(p, WeightRole::Kernel);
            let left = operand(p, WeightRole::LeftKernel);
            let (Some(x0), Some(x1)) = (get(slot(left)?), get(slot(right)?)) else {
                return Err("MatMul without two inputs".into());
            };
            match (constant(g, x0).is_some(), constant(g, x1).is_some()) {
                (true, true) => return Err("both inputs are constant (fold them instead)".into()),
                (false, false) => return Err("no constant weight: both inputs are computed".into()),
                (false, true) => ("MatMul", x0, x1, Form::Right, right),
                (true, false) => ("MatMul", x1, x0, Form::Left, left),
            }
        }
        "Gemm" => {
            let w = operand(p, WeightRole::Kernel);
            let (Some(a), Some(b)) = (get(0), get(slot(w)?)) else {
                return Err("Gemm without two inputs".into());
            };
            if constant(g, b).is_none() {
                return Err("B is not constant".into());
            }
            if model.opset("").is_some_and(|v| v < 7) {
                return Err("Gemm before opset 7 (broadcast attribute) is not handled".into());
            }
            let form = Form::Gemm {
                trans_a: attr_i(g, id, "transA", 0) != 0,
                trans_b: attr_i(g, id, "transB", 0) != 0,
            };
            ("Gemm", a, b, form, w)
        }
        "Conv" => {
            let w_op = operand(p, WeightRole::Kernel);
            let (Some(x), Some(w)) = (get(0), get(slot(w_op)?)) else {
                return Err("Conv without input and weight".into());
            };
            let t = constant(g, w).ok_or("weight is not constant")?;
            let group = w_op.map_or(1, |w| w.groups);
            if group != 1 {
                return Err(format!("grouped convolution (group = {group})"));
            }
            if t.dims.len() < 3 {
                return Err(format!("weight has rank {}, expected ≥ 3", t.dims.len()));
            }
            let form = Form::Conv {
                c_in: t.dims[1].max(0) as usize,
                kernel: t.dims[2..].iter().map(|d| (*d).max(0) as usize).collect(),
            };
            ("Conv", x, w, form, w_op)
        }
        other => return Err(format!("`{other}` is not factored")),
    };
    let t = constant(g, weight).expect("checked above");
    let dims = t.dims.clone();
    if t.data_type != Some(DataType::Float as i32) {
        return Err(format!(
            "weight is {}; only float32 weights are factored",
            crate::onnx::dtype::name(t.data_type.unwrap_or(0))
        ));
    }
    if !matches!(form, Form::Conv { .. }) && dims.len() != 2 {
        return Err(if dims.len() > 2 {
            format!("batched {}-D weight {:?}", dims.len(), dims)
        } else {
            format!("{}-D weight (a vector product)", dims.len())
        });
    }
    let out_axis = w_op
        .and_then(|w| w.out_axis)
        .and_then(|a| ops::infer::norm_axis(a, dims.len()))
        .ok_or("the weight has no output axis")?;
    let u = |d: i64| d.max(0) as usize;
    let n = u(dims[out_axis]);
    let k = dims
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != out_axis)
        .map(|(_, d)| u(*d))
        .product();
    Ok(Layer {
        node: id,
        op,
        form,
        act,
        weight,
        dims,
        out_axis,
        k,
        n,
    })
}

/// Name suffixes of the two nodes of a pair this rule made.
pub(super) const FIRST_SUFFIX: &str = "/lowrank1";
pub(super) const SECOND_SUFFIX: &str = "/lowrank2";

/// The labels of the two nodes the layer labelled `label` becomes.
pub(super) fn factor_labels(label: &str) -> (String, String) {
    (
        format!("{label}{FIRST_SUFFIX}"),
        format!("{label}{SECOND_SUFFIX}"),
    )
}

/// Whether `a` feeds only `b`, as `b`'s activation, and the two form a low-rank pair.
pub(super) fn pair_with(model: &Model, a: &Layer, b: &Layer) -> bool {
    let g = &model.graph;
    let out = ValueRef {
        node: a.node,
        slot: 0,
    };
    if g.consumers(out) != vec![(b.node, act_slot(b))]
        || g.is_graph_output(out)
        || g.is_captured(out)
    {
        return false;
    }
    if b.act != out || a.n != b.k {
        return false;
    }
    let compatible = match (&a.form, &b.form) {
        (Form::Left, Form::Left) => true,
        (Form::Right | Form::Gemm { .. }, Form::Right | Form::Gemm { trans_a: false, .. }) => true,
        (Form::Conv { .. }, Form::Conv { kernel, .. }) => {
            let ones =
                |name: &str| attr_ints(g, b.node, name).is_none_or(|v| v.iter().all(|x| *x == 1));
            let zeros = attr_ints(g, b.node, "pads").is_none_or(|v| v.iter().all(|x| *x == 0));
            kernel.iter().all(|k| *k == 1) && ones("strides") && zeros
        }
        _ => false,
    };
    // The pair is low-rank when its inner size is below the break-even rank of the product.
    let r = a.n;
    compatible && r * (a.k + b.n) < a.k * b.n
}

pub(super) fn act_slot(l: &Layer) -> usize {
    match l.form {
        Form::Left => 1,
        _ => 0,
    }
}

/// Why `layer` is one factor of an existing low-rank pair, if it is.
pub(super) fn in_pair(model: &Model, layer: &Layer) -> Option<String> {
    let g = &model.graph;
    // Factors this rule made carry these names, whatever their rank (a full-rank pair is no
    // low-rank pair by shape, but must not be factored again either).
    let label = g.node(layer.node).label();
    for (suffix, which) in [(FIRST_SUFFIX, "first"), (SECOND_SUFFIX, "second")] {
        if label.ends_with(suffix) {
            return Some(format!(
                "already a low-rank pair: {which} factor (rank {}) made by lowrank",
                if which == "first" { layer.n } else { layer.k }
            ));
        }
    }
    let out = ValueRef {
        node: layer.node,
        slot: 0,
    };
    if let [(next, _)] = g.consumers(out).as_slice() {
        if let Ok(b) = parse(model, *next) {
            if pair_with(model, layer, &b) {
                return Some(format!(
                    "already a low-rank pair: first factor (rank {}) of `{}`",
                    layer.n,
                    g.node(b.node).label()
                ));
            }
        }
    }
    let prev = layer.act.node;
    if g.node(prev).op().is_some() {
        if let Ok(a) = parse(model, prev) {
            if pair_with(model, &a, layer) {
                return Some(format!(
                    "already a low-rank pair: second factor (rank {}) after `{}`",
                    layer.k,
                    g.node(a.node).label()
                ));
            }
        }
    }
    None
}

/// A layer the rule may factor, or the reason it is left alone (not counting the rank choice).
pub(super) fn candidate(
    model: &Model,
    id: NodeId,
    cfg: &LowrankConfig,
) -> std::result::Result<Layer, String> {
    let g = &model.graph;
    let layer = parse(model, id)?;
    let uses = g.consumers(layer.weight).len();
    if uses > 1 {
        return Err(format!(
            "weight `{}` is shared by {uses} nodes",
            g.value_name(layer.weight)
        ));
    }
    if g.is_graph_output(layer.weight) || g.is_captured(layer.weight) {
        return Err(format!(
            "weight `{}` is also a graph output or read by a subgraph",
            g.value_name(layer.weight)
        ));
    }
    if let Some(why) = in_pair(model, &layer) {
        return Err(why);
    }
    let params = (layer.k * layer.n) as u64;
    if params < cfg.min_params {
        return Err(format!(
            "too small: {} has {params} parameters (< {})",
            layer.shape_text(),
            cfg.min_params
        ));
    }
    Ok(layer)
}
