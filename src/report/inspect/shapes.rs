//! The shape inference behind `inspect`'s MAC counts: a scope of known shapes and small
//! integer values per (sub)graph, the ops it knows, and MACs of Conv/MatMul/Gemm.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::*;

/// A dim: known, symbolic, or unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum D {
    K(u64),
    S(String),
    U,
}

pub(super) type Shape = Vec<D>;

/// Small integer constants (shapes, axes) are kept by value; longer ones are not read at all.
const MAX_INT_CONST: u64 = 64;

pub(super) struct Scope<'p> {
    pub(super) shapes: HashMap<String, Shape>,
    pub(super) declared: HashMap<String, Shape>,
    pub(super) ints: HashMap<String, Vec<i64>>,
    pub(super) parent: Option<&'p Scope<'p>>,
}

impl<'p> Scope<'p> {
    pub(super) fn new(parent: Option<&'p Scope<'p>>) -> Scope<'p> {
        Scope {
            shapes: HashMap::new(),
            declared: HashMap::new(),
            ints: HashMap::new(),
            parent,
        }
    }

    pub(super) fn shape(&self, name: &str) -> Option<&Shape> {
        if name.is_empty() {
            return None;
        }
        self.shapes
            .get(name)
            .or_else(|| self.parent.and_then(|p| p.shape(name)))
    }

    pub(super) fn ints(&self, name: &str) -> Option<&[i64]> {
        if name.is_empty() {
            return None;
        }
        self.ints
            .get(name)
            .map(Vec::as_slice)
            .or_else(|| self.parent.and_then(|p| p.ints(name)))
    }

    pub(super) fn add_const(&mut self, t: &TensorProto) {
        let name = t.name.clone().unwrap_or_default();
        self.add_tensor(&name, t);
    }

    pub(super) fn add_tensor(&mut self, name: &str, t: &TensorProto) {
        if t.dims.iter().any(|d| *d < 0) {
            return;
        }
        self.shapes.insert(
            name.to_string(),
            t.dims.iter().map(|d| D::K(*d as u64)).collect(),
        );
        if dtype::numel(&t.dims).is_some_and(|n| n <= MAX_INT_CONST) {
            if let Ok(a) = tensor::to_i64(t) {
                self.ints
                    .insert(name.to_string(), a.iter().copied().collect());
            }
        }
    }
}

pub(super) fn declared_shape(vi: &ValueInfoProto) -> Option<Shape> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(
            t.shape
                .as_ref()?
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(dimension::Value::DimValue(v)) if *v >= 0 => D::K(*v as u64),
                    Some(dimension::Value::DimParam(p)) if !p.is_empty() => D::S(p.clone()),
                    _ => D::U,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// Combines an inferred shape with a declared one: declared fixed dims win, then inferred fixed
/// dims, then symbols. On a rank disagreement the declaration is trusted.
fn merge(inferred: Option<Shape>, declared: Option<&Shape>) -> Option<Shape> {
    match (inferred, declared) {
        (Some(i), Some(d)) if i.len() == d.len() => Some(
            i.into_iter()
                .zip(d.iter())
                .map(|(i, d)| match (i, d) {
                    (_, D::K(v)) => D::K(*v),
                    (D::K(v), _) => D::K(v),
                    (D::S(s), _) => D::S(s),
                    (D::U, d) => d.clone(),
                })
                .collect(),
        ),
        (_, Some(d)) => Some(d.clone()),
        (i, None) => i,
    }
}

#[derive(Default)]
pub(super) struct MacAcc {
    /// op → (nodes with known MACs, MACs, nodes with unknown MACs)
    pub(super) by_op: BTreeMap<String, (u64, u64, u64)>,
    pub(super) syms: BTreeSet<String>,
    pub(super) saturated: bool,
}

pub(super) fn visit_node(
    n: &NodeProto,
    inputs: &[String],
    scope: &mut Scope,
    opset: i64,
    macs: &mut MacAcc,
) {
    let op = n.op_type.as_deref().unwrap_or("");
    let default = is_default_domain(n);
    let ins: Vec<Option<Shape>> = inputs.iter().map(|i| scope.shape(i).cloned()).collect();
    let mut outs = if default {
        infer(n, op, &ins, inputs, scope, opset)
    } else {
        Vec::new()
    };
    outs.resize(n.output.len(), None);
    for (name, inferred) in n.output.iter().zip(outs) {
        if name.is_empty() {
            continue;
        }
        if let Some(s) = merge(inferred, scope.declared.get(name)) {
            scope.shapes.insert(name.clone(), s);
        }
    }
    if default && op == "Constant" {
        if let Some(out) = n.output.first() {
            constant_value(n, out, scope);
        }
    }
    if default && matches!(op, "Conv" | "MatMul" | "Gemm") {
        let m = node_macs(n, op, &ins, scope, &mut macs.syms, &mut macs.saturated);
        let e = macs.by_op.entry(op.to_string()).or_default();
        match m {
            Some(m) => {
                e.0 += 1;
                e.1 = e.1.saturating_add(m);
            }
            None => e.2 += 1,
        }
    }
    // Subgraphs: their own scope over this one.
    for g in subgraphs(n) {
        visit_graph(g, scope, opset, macs);
    }
}

fn visit_graph(g: &GraphProto, parent: &Scope, opset: i64, macs: &mut MacAcc) {
    let mut scope = Scope::new(Some(parent));
    for vi in &g.input {
        if let Some(s) = declared_shape(vi) {
            scope.shapes.insert(name_of(vi), s);
        }
    }
    for t in &g.initializer {
        scope.add_const(t);
    }
    for vi in g.value_info.iter().chain(g.output.iter()) {
        if let Some(s) = declared_shape(vi) {
            scope.declared.insert(name_of(vi), s);
        }
    }
    for n in &g.node {
        visit_node(n, &n.input, &mut scope, opset, macs);
    }
}

fn constant_value(n: &NodeProto, out: &str, scope: &mut Scope) {
    for a in &n.attribute {
        match a.name.as_deref() {
            Some("value") => {
                if let Some(t) = &a.t {
                    scope.add_tensor(out, t);
                }
            }
            Some("value_int") => {
                scope.ints.insert(out.to_string(), vec![a.i.unwrap_or(0)]);
            }
            Some("value_ints") if a.ints.len() as u64 <= MAX_INT_CONST => {
                scope.ints.insert(out.to_string(), a.ints.clone());
            }
            _ => {}
        }
    }
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

fn attr_i(n: &NodeProto, name: &str, default: i64) -> i64 {
    attr(n, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_ints<'a>(n: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    attr(n, name).map(|a| a.ints.as_slice())
}

fn attr_s(n: &NodeProto, name: &str) -> String {
    attr(n, name)
        .and_then(|a| a.s.as_deref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default()
}

/// `axis` normalized against `rank` (negative counts from the end), or `None` if out of range.
fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis.checked_add(r)? } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

const UNARY: &[&str] = &[
    "Abs",
    "Acos",
    "Acosh",
    "Asin",
    "Asinh",
    "Atan",
    "Atanh",
    "BatchNormalization",
    "Bernoulli",
    "BitwiseNot",
    "Cast",
    "CastLike",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Cosh",
    "CumSum",
    "DequantizeLinear",
    "Dropout",
    "DynamicQuantizeLinear",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Hardmax",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "MeanVarianceNormalization",
    "Mish",
    "Neg",
    "Not",
    "QuantizeLinear",
    "Reciprocal",
    "Relu",
    "ReverseSequence",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Sinh",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tan",
    "Tanh",
    "ThresholdedRelu",
    "Trilu",
];

const BROADCAST: &[&str] = &[
    "Add",
    "And",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Or",
    "PRelu",
    "Pow",
    "Sub",
    "Sum",
    "Where",
    "Xor",
];

const REDUCE: &[&str] = &[
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
];

/// Output shapes of a default-domain node, `None` where unknown.
fn infer(
    n: &NodeProto,
    op: &str,
    ins: &[Option<Shape>],
    names: &[String],
    scope: &Scope,
    opset: i64,
) -> Vec<Option<Shape>> {
    let x = ins.first().cloned().flatten();
    let in_ints = |i: usize| names.get(i).and_then(|nm| scope.ints(nm));
    let one = |s: Option<Shape>| vec![s];
    // `axes` from input 1 (newer opsets; absent means "all") or from the attribute (older ones);
    // `Err` when the input is there but not a known constant.
    let axes_arg = |from_input: bool| -> Result<Option<Vec<i64>>, ()> {
        if !from_input {
            return Ok(attr_ints(n, "axes").map(<[i64]>::to_vec));
        }
        if names.get(1).is_some_and(|n| !n.is_empty()) {
            in_ints(1).map(|a| Some(a.to_vec())).ok_or(())
        } else {
            Ok(None)
        }
    };
    if UNARY.contains(&op) {
        // Extra outputs (Dropout mask, MaxPool indices, ...) are left unknown, except those that
        // are known to share the input's shape.
        return match op {
            "Dropout" => vec![x.clone(), x],
            _ => one(x),
        };
    }
    if BROADCAST.contains(&op) {
        let mut acc: Option<Shape> = None;
        for (i, s) in ins.iter().enumerate() {
            if names.get(i).is_none_or(|n| n.is_empty()) {
                continue;
            }
            let s = match s {
                Some(s) => s,
                None => return one(None),
            };
            acc = Some(match acc {
                None => s.clone(),
                Some(a) => match broadcast(&a, s) {
                    Some(b) => b,
                    None => return one(None),
                },
            });
        }
        return one(acc);
    }
    if REDUCE.contains(&op) {
        let Some(x) = x else { return one(None) };
        let axes_from_input = if op == "ReduceSum" {
            opset >= 13
        } else {
            opset >= 18
        };
        let Ok(axes) = axes_arg(axes_from_input) else {
            return one(None);
        };
        let keep = attr_i(n, "keepdims", 1) != 0;
        let axes: Vec<usize> = match axes {
            Some(a) if !a.is_empty() => {
                let mut v = Vec::new();
                for ax in a {
                    match norm_axis(ax, x.len()) {
                        Some(ax) => v.push(ax),
                        None => return one(None),
                    }
                }
                v
            }
            _ if attr_i(n, "noop_with_empty_axes", 0) != 0 => return one(Some(x)),
            _ => (0..x.len()).collect(),
        };
        let out = x
            .into_iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&i), keep) {
                (false, _) => Some(d),
                (true, true) => Some(D::K(1)),
                (true, false) => None,
            })
            .collect();
        return one(Some(out));
    }
    match op {
        "Constant" => {
            for a in &n.attribute {
                match a.name.as_deref() {
                    Some("value") => {
                        if let Some(t) = &a.t {
                            if t.dims.iter().all(|d| *d >= 0) {
                                return one(Some(t.dims.iter().map(|d| D::K(*d as u64)).collect()));
                            }
                        }
                    }
                    Some("value_float") | Some("value_int") | Some("value_string") => {
                        return one(Some(vec![]))
                    }
                    Some("value_floats") => return one(Some(vec![D::K(a.floats.len() as u64)])),
                    Some("value_ints") => return one(Some(vec![D::K(a.ints.len() as u64)])),
                    Some("value_strings") => return one(Some(vec![D::K(a.strings.len() as u64)])),
                    _ => {}
                }
            }
            one(None)
        }
        "Conv" => one(conv_shape(
            n,
            x.as_ref(),
            ins.get(1).cloned().flatten().as_ref(),
        )),
        "MaxPool" | "AveragePool" | "LpPool" => {
            let s = pool_shape(n, x.as_ref());
            if op == "MaxPool" {
                vec![s.clone(), s]
            } else {
                one(s)
            }
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => one(x.and_then(|x| {
            (x.len() >= 2).then(|| {
                x.iter()
                    .enumerate()
                    .map(|(i, d)| if i < 2 { d.clone() } else { D::K(1) })
                    .collect()
            })
        })),
        "MatMul" => one(matmul_shape(
            x.as_ref(),
            ins.get(1).cloned().flatten().as_ref(),
        )),
        "Gemm" => {
            let (Some(a), Some(b)) = (x.as_ref(), ins.get(1).cloned().flatten()) else {
                return one(None);
            };
            if a.len() != 2 || b.len() != 2 {
                return one(None);
            }
            let m = if attr_i(n, "transA", 0) != 0 {
                &a[1]
            } else {
                &a[0]
            };
            let nn = if attr_i(n, "transB", 0) != 0 {
                &b[0]
            } else {
                &b[1]
            };
            one(Some(vec![m.clone(), nn.clone()]))
        }
        "Flatten" => {
            let Some(x) = x else { return one(None) };
            let r = x.len();
            let axis = attr_i(n, "axis", 1);
            let axis = if axis < 0 { axis + r as i64 } else { axis };
            if axis < 0 || axis > r as i64 {
                return one(None);
            }
            let (a, b) = x.split_at(axis as usize);
            one(Some(vec![product(a), product(b)]))
        }
        "Reshape" => {
            let Some(target) = in_ints(1) else {
                return one(None);
            };
            one(reshape_shape(
                x.as_ref(),
                target,
                attr_i(n, "allowzero", 0) != 0,
            ))
        }
        "Transpose" => {
            let Some(x) = x else { return one(None) };
            let perm: Vec<i64> = match attr_ints(n, "perm") {
                Some(p) if !p.is_empty() => p.to_vec(),
                _ => (0..x.len() as i64).rev().collect(),
            };
            if perm.len() != x.len() {
                return one(None);
            }
            let mut out = Vec::with_capacity(perm.len());
            for p in perm {
                match norm_axis(p, x.len()) {
                    Some(p) => out.push(x[p].clone()),
                    None => return one(None),
                }
            }
            one(Some(out))
        }
        "Concat" => {
            let shapes: Vec<&Shape> = match ins
                .iter()
                .zip(names)
                .filter(|(_, nm)| !nm.is_empty())
                .map(|(s, _)| s.as_ref())
                .collect::<Option<Vec<_>>>()
            {
                Some(s) if !s.is_empty() => s,
                _ => return one(None),
            };
            let r = shapes[0].len();
            if shapes.iter().any(|s| s.len() != r) {
                return one(None);
            }
            let Some(axis) = norm_axis(attr_i(n, "axis", 0), r) else {
                return one(None);
            };
            let mut out = shapes[0].clone();
            let mut sum = Some(0u64);
            for s in &shapes {
                sum = match (&s[axis], sum) {
                    (D::K(v), Some(acc)) => acc.checked_add(*v),
                    _ => None,
                };
            }
            out[axis] = sum.map_or(D::U, D::K);
            for (i, d) in out.iter_mut().enumerate() {
                if i != axis && !matches!(d, D::K(_)) {
                    if let Some(k) = shapes.iter().find_map(|s| match &s[i] {
                        D::K(v) => Some(*v),
                        _ => None,
                    }) {
                        *d = D::K(k);
                    }
                }
            }
            one(Some(out))
        }
        "Squeeze" => {
            let Some(x) = x else { return one(None) };
            let Ok(axes) = axes_arg(opset >= 13) else {
                return one(None);
            };
            match axes {
                Some(a) if !a.is_empty() => {
                    let mut drop = Vec::new();
                    for ax in a {
                        match norm_axis(ax, x.len()) {
                            Some(ax) => drop.push(ax),
                            None => return one(None),
                        }
                    }
                    one(Some(
                        x.into_iter()
                            .enumerate()
                            .filter(|(i, _)| !drop.contains(i))
                            .map(|(_, d)| d)
                            .collect(),
                    ))
                }
                _ => {
                    if x.iter().any(|d| !matches!(d, D::K(_))) {
                        return one(None);
                    }
                    one(Some(x.into_iter().filter(|d| *d != D::K(1)).collect()))
                }
            }
        }
        "Unsqueeze" => {
            let Some(x) = x else { return one(None) };
            let Ok(Some(axes)) = axes_arg(opset >= 13) else {
                return one(None);
            };
            let r = x.len() + axes.len();
            let mut at = Vec::new();
            for ax in axes {
                match norm_axis(ax, r) {
                    Some(a) if !at.contains(&a) => at.push(a),
                    _ => return one(None),
                }
            }
            let mut src = x.into_iter();
            let out = (0..r)
                .map(|i| {
                    if at.contains(&i) {
                        D::K(1)
                    } else {
                        src.next().unwrap_or(D::U)
                    }
                })
                .collect();
            one(Some(out))
        }
        "Expand" => {
            let (Some(x), Some(t)) = (x, in_ints(1)) else {
                return one(None);
            };
            if t.iter().any(|d| *d < 0) {
                return one(None);
            }
            let t: Shape = t.iter().map(|d| D::K(*d as u64)).collect();
            one(broadcast(&x, &t))
        }
        "Shape" => {
            let Some(x) = x else { return one(None) };
            let r = x.len() as i64;
            let clamp = |v: i64| {
                let v = if v < 0 { v.saturating_add(r) } else { v };
                v.clamp(0, r)
            };
            let start = clamp(attr_i(n, "start", 0));
            let end = attr(n, "end").and_then(|a| a.i).map_or(r, clamp);
            one(Some(vec![D::K((end - start).max(0) as u64)]))
        }
        "Size" => one(Some(vec![])),
        _ => vec![],
    }
}

/// Numpy broadcasting of two shapes; `None` when they cannot broadcast.
fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
    let r = a.len().max(b.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = (i + a.len())
            .checked_sub(r)
            .map_or(D::K(1), |j| a[j].clone());
        let db = (i + b.len())
            .checked_sub(r)
            .map_or(D::K(1), |j| b[j].clone());
        out.push(match (da, db) {
            (D::K(1), d) | (d, D::K(1)) => d,
            (D::K(x), D::K(y)) if x == y => D::K(x),
            (D::K(_), D::K(_)) => return None,
            (D::K(x), _) | (_, D::K(x)) => D::K(x),
            (D::S(x), D::S(y)) if x == y => D::S(x),
            _ => D::U,
        });
    }
    Some(out)
}

/// Product of dims: fixed if all are fixed, a lone symbol times 1 stays that symbol, else unknown.
fn product(dims: &[D]) -> D {
    let mut k = 1u64;
    let mut sym: Option<&D> = None;
    for d in dims {
        match d {
            D::K(v) => match k.checked_mul(*v) {
                Some(p) => k = p,
                None => return D::U,
            },
            D::S(_) if sym.is_none() => sym = Some(d),
            _ => return D::U,
        }
    }
    match sym {
        None => D::K(k),
        Some(s) if k == 1 => s.clone(),
        _ => D::U,
    }
}

fn matmul_shape(a: Option<&Shape>, b: Option<&Shape>) -> Option<Shape> {
    let (a, b) = (a?, b?);
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2: Shape = if a.len() == 1 {
        vec![D::K(1), a[0].clone()]
    } else {
        a.clone()
    };
    let b2: Shape = if b.len() == 1 {
        vec![b[0].clone(), D::K(1)]
    } else {
        b.clone()
    };
    let batch = broadcast(&a2[..a2.len() - 2].to_vec(), &b2[..b2.len() - 2].to_vec())?;
    let mut out = batch;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2].clone());
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1].clone());
    }
    Some(out)
}

/// Output length of a sliding window; `None` when it does not fit or a value is absurd.
#[allow(clippy::too_many_arguments)]
fn window_out(
    h: u64,
    k: u64,
    s: u64,
    d: u64,
    pb: u64,
    pe: u64,
    auto_pad: &str,
    ceil: bool,
) -> Option<u64> {
    if s == 0 || k == 0 || d == 0 {
        return None;
    }
    let ek = d.checked_mul(k - 1)?.checked_add(1)?;
    match auto_pad {
        "SAME_UPPER" | "SAME_LOWER" => Some(h.div_ceil(s)),
        "VALID" => Some(h.checked_sub(ek)? / s + 1),
        _ => {
            let total = h.checked_add(pb)?.checked_add(pe)?;
            let num = total.checked_sub(ek)?;
            let mut out = if ceil { num.div_ceil(s) } else { num / s } + 1;
            // With ceil_mode, the last window must start inside the input or left padding.
            if ceil && (out - 1).checked_mul(s)? >= h.checked_add(pb)? {
                out -= 1;
            }
            Some(out)
        }
    }
}

/// Spatial output dims for a Conv/Pool over `x` (rank r) with `kernel` (r - 2 values).
fn spatial_out(n: &NodeProto, x: &Shape, kernel: &[u64], ceil: bool) -> Option<Vec<D>> {
    let sp = x.len().checked_sub(2)?;
    if kernel.len() != sp {
        return None;
    }
    let get = |name: &str, len: usize, default: u64| -> Option<Vec<u64>> {
        match attr_ints(n, name) {
            Some(v) if !v.is_empty() => {
                if v.len() != len || v.iter().any(|x| *x < 0) {
                    None
                } else {
                    Some(v.iter().map(|x| *x as u64).collect())
                }
            }
            _ => Some(vec![default; len]),
        }
    };
    let strides = get("strides", sp, 1)?;
    let dil = get("dilations", sp, 1)?;
    let pads = get("pads", 2 * sp, 0)?;
    let auto_pad = attr_s(n, "auto_pad");
    Some(
        (0..sp)
            .map(|i| match x[2 + i] {
                D::K(h) => window_out(
                    h,
                    kernel[i],
                    strides[i],
                    dil[i],
                    pads[i],
                    pads[sp + i],
                    &auto_pad,
                    ceil,
                )
                .map_or(D::U, D::K),
                _ => D::U,
            })
            .collect(),
    )
}

fn conv_shape(n: &NodeProto, x: Option<&Shape>, w: Option<&Shape>) -> Option<Shape> {
    let (x, w) = (x?, w?);
    if x.len() < 3 || w.len() != x.len() {
        return None;
    }
    let kernel: Vec<u64> = match attr_ints(n, "kernel_shape") {
        Some(k) if !k.is_empty() => {
            if k.iter().any(|v| *v < 0) {
                return None;
            }
            k.iter().map(|v| *v as u64).collect()
        }
        _ => w[2..]
            .iter()
            .map(|d| match d {
                D::K(v) => Some(*v),
                _ => None,
            })
            .collect::<Option<_>>()?,
    };
    let mut out = vec![x[0].clone(), w[0].clone()];
    out.extend(spatial_out(n, x, &kernel, false)?);
    Some(out)
}

fn pool_shape(n: &NodeProto, x: Option<&Shape>) -> Option<Shape> {
    let x = x?;
    let k = attr_ints(n, "kernel_shape")?;
    if k.iter().any(|v| *v < 0) || x.len() < 3 {
        return None;
    }
    let kernel: Vec<u64> = k.iter().map(|v| *v as u64).collect();
    let mut out = vec![x[0].clone(), x[1].clone()];
    out.extend(spatial_out(n, x, &kernel, attr_i(n, "ceil_mode", 0) != 0)?);
    Some(out)
}

fn reshape_shape(x: Option<&Shape>, target: &[i64], allowzero: bool) -> Option<Shape> {
    let mut out: Shape = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(D::U);
            }
            0 if !allowzero => out.push(x.and_then(|x| x.get(i)).cloned().unwrap_or(D::U)),
            t if t >= 0 => out.push(D::K(t as u64)),
            _ => return None,
        }
    }
    let Some(at) = infer_at else { return Some(out) };
    let Some(x) = x else { return Some(out) };
    // Cancel symbols present on both sides, then divide the fixed parts.
    let mut syms_in: Vec<&String> = Vec::new();
    let mut k_in = 1u64;
    for d in x {
        match d {
            D::K(v) => k_in = k_in.checked_mul(*v)?,
            D::S(s) => syms_in.push(s),
            D::U => return Some(out),
        }
    }
    let mut k_out = 1u64;
    for (i, d) in out.iter().enumerate() {
        if i == at {
            continue;
        }
        match d {
            D::K(v) => k_out = k_out.checked_mul(*v)?,
            D::S(s) => match syms_in.iter().position(|x| *x == s) {
                Some(p) => {
                    syms_in.remove(p);
                }
                None => return Some(out),
            },
            D::U => return Some(out),
        }
    }
    out[at] = match syms_in.len() {
        0 if k_out > 0 && k_in.is_multiple_of(k_out) => D::K(k_in / k_out),
        1 if k_out == k_in => D::S(syms_in[0].clone()),
        _ => D::U,
    };
    Some(out)
}

/// Number of elements of `s` with symbols as 1 (recorded in `syms`); `None` if a dim is unknown.
fn numel_as_one(s: &Shape, syms: &mut BTreeSet<String>, saturated: &mut bool) -> Option<u64> {
    let mut used = Vec::new();
    let mut p = 1u64;
    for d in s {
        match d {
            D::K(v) => {
                p = p.checked_mul(*v).unwrap_or_else(|| {
                    *saturated = true;
                    u64::MAX
                })
            }
            D::S(name) => used.push(name.clone()),
            D::U => return None,
        }
    }
    syms.extend(used);
    Some(p)
}

fn known(d: &D) -> Option<u64> {
    match d {
        D::K(v) => Some(*v),
        _ => None,
    }
}

/// MACs of a Conv/MatMul/Gemm: elements of the output times the reduction length.
fn node_macs(
    n: &NodeProto,
    op: &str,
    ins: &[Option<Shape>],
    scope: &Scope,
    syms: &mut BTreeSet<String>,
    saturated: &mut bool,
) -> Option<u64> {
    let out = scope.shape(n.output.first()?)?;
    let a = ins.first()?.as_ref()?;
    let b = ins.get(1)?.as_ref()?;
    let reduce = match op {
        // Cin/group * prod(kernel), read off the weight.
        "Conv" => {
            if b.len() < 3 {
                return None;
            }
            b[1..]
                .iter()
                .try_fold(1u64, |acc, d| Some(acc.saturating_mul(known(d)?)))?
        }
        "MatMul" => known(a.last()?).or_else(|| {
            let k = if b.len() == 1 { &b[0] } else { &b[b.len() - 2] };
            known(k)
        })?,
        "Gemm" => {
            if a.len() != 2 || b.len() != 2 {
                return None;
            }
            let ka = if attr_i(n, "transA", 0) != 0 {
                &a[0]
            } else {
                &a[1]
            };
            let kb = if attr_i(n, "transB", 0) != 0 {
                &b[1]
            } else {
                &b[0]
            };
            known(ka).or_else(|| known(kb))?
        }
        _ => return None,
    };
    let mut local = BTreeSet::new();
    let e = numel_as_one(out, &mut local, saturated)?;
    syms.extend(local);
    Some(e.checked_mul(reduce).unwrap_or_else(|| {
        *saturated = true;
        u64::MAX
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &[u64]) -> Shape {
        v.iter().map(|x| D::K(*x)).collect()
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast(&k(&[2, 1, 4]), &k(&[3, 1])), Some(k(&[2, 3, 4])));
        assert_eq!(broadcast(&k(&[2]), &k(&[3])), None);
        let n = vec![D::S("N".into()), D::K(4)];
        assert_eq!(broadcast(&n, &k(&[4])), Some(n.clone()));
    }

    #[test]
    fn reshape_cancels_symbols() {
        let x = vec![D::S("N".into()), D::K(4), D::K(2)];
        assert_eq!(
            reshape_shape(Some(&x), &[0, -1], false),
            Some(vec![D::S("N".into()), D::K(8)])
        );
        assert_eq!(
            reshape_shape(Some(&x), &[-1, 8], false),
            Some(vec![D::S("N".into()), D::K(8)])
        );
        assert_eq!(
            reshape_shape(Some(&k(&[6, 4])), &[-1, 3], false),
            Some(k(&[8, 3]))
        );
    }

    #[test]
    fn windows_never_panic_on_absurd_values() {
        assert_eq!(
            window_out(u64::MAX, u64::MAX, 1, u64::MAX, 0, 0, "", false),
            None
        );
        assert_eq!(window_out(u64::MAX, 1, 1, 1, u64::MAX, 0, "", false), None);
        assert_eq!(window_out(5, 3, 0, 1, 0, 0, "", false), None);
        assert_eq!(window_out(8, 3, 1, 1, 1, 1, "", false), Some(8));
        assert_eq!(window_out(7, 2, 2, 1, 0, 0, "", true), Some(4));
        assert_eq!(window_out(1, 3, 1, 1, 0, 0, "", false), None);
    }
}
