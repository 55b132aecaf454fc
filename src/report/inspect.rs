//! `onnx-slim inspect`: what a model is made of, without running it.
//!
//! Opsets, inputs and outputs, an op histogram that includes the nodes of `If`/`Loop`/`Scan`
//! subgraphs, parameter counts and bytes per dtype, and the multiply-accumulates of `Conv`,
//! `MatMul` and `Gemm` where a small shape-inference pass can tell the shapes.
//!
//! Nothing here panics or allocates in proportion to a dim's value: dims are `u64` with checked
//! arithmetic, and a product that overflows saturates and is flagged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;

use crate::ir::text::{opsets as opsets_str, type_str};
use crate::ir::{tensor, Model, NodeKind};
use crate::onnx::dtype;
use crate::onnx::proto::{
    tensor_proto::DataType, tensor_shape_proto::dimension, type_proto, AttributeProto, GraphProto,
    NodeProto, SparseTensorProto, TensorProto, ValueInfoProto,
};
use crate::onnx::visit::subgraphs;

/// Everything `inspect` reports. Serializes to the `--json` form; `Display` is the human form.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Size of the model file in bytes, as given by the caller.
    pub file_bytes: u64,
    /// `ir_version`, if set.
    pub ir_version: Option<i64>,
    /// Producer name and version.
    pub producer: String,
    /// Opset imports, sorted by domain.
    pub opsets: Vec<Opset>,
    /// Graph inputs in declaration order (`has_default` when an initializer backs one).
    pub inputs: Vec<ValueSummary>,
    /// Graph outputs.
    pub outputs: Vec<ValueSummary>,
    /// Operator nodes, subgraphs included.
    pub nodes: u64,
    /// Of which inside subgraphs.
    pub nodes_in_subgraphs: u64,
    /// Number of subgraphs (graph attributes), nested ones included.
    pub subgraphs: u64,
    /// Number of model-local functions.
    pub functions: u64,
    /// Op histogram, most frequent first.
    pub ops: Vec<OpCount>,
    /// Constant tensors: initializers, `Constant` values, both inside subgraphs too.
    pub params: Params,
    /// Multiply-accumulates of `Conv`, `MatMul` and `Gemm`.
    pub macs: Macs,
}

/// One opset import.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Opset {
    /// `ai.onnx` for the default domain.
    pub domain: String,
    /// Version.
    pub version: i64,
}

/// A declared graph input or output.
#[derive(Debug, Clone, Serialize)]
pub struct ValueSummary {
    /// Value name.
    pub name: String,
    /// Element type (`float32`, ...), or the whole type for non-tensors.
    pub dtype: String,
    /// Dims: a number, a symbol name, or `null` for unknown; `None` when the rank is unknown.
    pub shape: Option<Vec<DimOut>>,
    /// The type as text: `float32[N,3,224,224]`.
    pub r#type: String,
    /// Whether an initializer of the same name gives it a default value.
    pub has_default: bool,
}

/// A dim in the JSON form: a number, a symbol name or `null`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DimOut {
    /// A fixed size.
    Value(i64),
    /// A symbolic size.
    Param(String),
    /// Unknown.
    Unknown,
}

/// How often an op type occurs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpCount {
    /// `Conv`, or `domain.Op` for non-default domains.
    pub op: String,
    /// Nodes, subgraphs included.
    pub count: u64,
    /// Of which inside subgraphs.
    pub in_subgraphs: u64,
}

/// Constant tensors by dtype.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Params {
    /// Number of tensors.
    pub tensors: u64,
    /// Elements over all tensors (saturating).
    pub elements: u64,
    /// Bytes over all tensors (packed size by dtype; stored size for strings).
    pub bytes: u64,
    /// Per dtype, sorted by bytes descending then name.
    pub by_dtype: Vec<DtypeParams>,
}

/// Constant tensors of one dtype.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct DtypeParams {
    /// `float32`, ...
    pub dtype: String,
    /// Number of tensors.
    pub tensors: u64,
    /// Elements.
    pub elements: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Multiply-accumulates.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Macs {
    /// Over every node whose MACs are known (saturating).
    pub total: u64,
    /// Symbolic dims that were counted as 1 (batch and the like), sorted.
    pub symbolic_dims_as_one: Vec<String>,
    /// Per op type with at least one node.
    pub by_op: Vec<OpMacs>,
    /// `Conv`/`MatMul`/`Gemm` nodes whose shapes could not be inferred.
    pub unknown_nodes: u64,
    /// Whether some product overflowed `u64` and was clamped.
    pub saturated: bool,
}

/// MACs of one op type.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpMacs {
    /// `Conv`, `MatMul` or `Gemm`.
    pub op: String,
    /// Nodes with known MACs.
    pub nodes: u64,
    /// Their MACs.
    pub macs: u64,
    /// Nodes of this type with unknown MACs.
    pub unknown_nodes: u64,
}

impl Inspection {
    /// The `--json` form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Count of `op` (as named in [`OpCount::op`]), 0 if absent.
    pub fn op_count(&self, op: &str) -> u64 {
        self.ops.iter().find(|o| o.op == op).map_or(0, |o| o.count)
    }

    /// MACs of `op`, if any node of that type has known MACs.
    pub fn op_macs(&self, op: &str) -> Option<u64> {
        self.macs
            .by_op
            .iter()
            .find(|o| o.op == op && o.nodes > 0)
            .map(|o| o.macs)
    }
}

/// Inspects `model`; `file_bytes` is the size of its file (0 if unknown).
pub fn inspect(model: &Model, file_bytes: u64) -> Inspection {
    let shell = &model.shell;
    let g = &model.graph;

    let producer = [
        shell.producer_name.as_deref(),
        shell.producer_version.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    let mut opsets: Vec<Opset> = shell
        .opset_import
        .iter()
        .map(|o| Opset {
            domain: match o.domain.as_deref() {
                None | Some("") => "ai.onnx".into(),
                Some(d) => d.into(),
            },
            version: o.version.unwrap_or(0),
        })
        .collect();
    opsets.sort_by(|a, b| (&a.domain, a.version).cmp(&(&b.domain, b.version)));

    let inputs = g
        .inputs()
        .into_iter()
        .filter_map(|id| match &g.node(id).kind {
            NodeKind::Input { info, default } => Some(value_summary(info, default.is_some())),
            _ => None,
        })
        .collect();
    let outputs = g
        .outputs()
        .iter()
        .map(|(_, info)| value_summary(info, false))
        .collect();

    // Histogram and parameters, walking subgraphs.
    let mut acc = Acc::default();
    let order = g.topo_order();
    for &id in &order {
        match &g.node(id).kind {
            NodeKind::Input {
                default: Some((t, _)),
                ..
            } => acc.tensor(t),
            NodeKind::Input { .. } => {}
            NodeKind::Initializer(t) => acc.tensor(t),
            NodeKind::SparseInitializer(s) => acc.sparse(s),
            NodeKind::Op(n) => acc.node(n, false),
        }
    }

    // Shapes and MACs.
    let opset = model.opset("").unwrap_or(0);
    let mut macs = MacAcc::default();
    let mut scope = Scope::new(None);
    for &id in &order {
        match &g.node(id).kind {
            NodeKind::Input { info, .. } => {
                if let Some(s) = declared_shape(info) {
                    scope.shapes.insert(name_of(info), s);
                }
            }
            NodeKind::Initializer(t) => scope.add_const(t),
            _ => {}
        }
    }
    for vi in g
        .value_infos()
        .iter()
        .chain(g.outputs().iter().map(|(_, i)| i))
    {
        if let Some(s) = declared_shape(vi) {
            scope.declared.insert(name_of(vi), s);
        }
    }
    for &id in &order {
        let Some(n) = g.node(id).op() else { continue };
        let names: Vec<String> = g
            .node_inputs(id)
            .into_iter()
            .map(|v| v.map(|v| g.value_name(v).to_string()).unwrap_or_default())
            .collect();
        visit_node(n, &names, &mut scope, opset, &mut macs);
    }

    let mut ops: Vec<OpCount> = acc
        .ops
        .into_iter()
        .map(|(op, (count, in_subgraphs))| OpCount {
            op,
            count,
            in_subgraphs,
        })
        .collect();
    ops.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.op.cmp(&b.op)));

    let mut by_dtype: Vec<DtypeParams> = acc.params.into_values().collect();
    by_dtype.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.dtype.cmp(&b.dtype)));
    let params = Params {
        tensors: by_dtype.iter().map(|d| d.tensors).sum(),
        elements: by_dtype
            .iter()
            .fold(0u64, |s, d| s.saturating_add(d.elements)),
        bytes: by_dtype.iter().fold(0u64, |s, d| s.saturating_add(d.bytes)),
        by_dtype,
    };

    let by_op: Vec<OpMacs> = macs
        .by_op
        .into_iter()
        .map(|(op, (nodes, m, unknown))| OpMacs {
            op,
            nodes,
            macs: m,
            unknown_nodes: unknown,
        })
        .collect();
    let total = by_op.iter().fold(0u64, |s, o| s.saturating_add(o.macs));
    let saturated = macs.saturated || total == u64::MAX;

    Inspection {
        file_bytes,
        ir_version: shell.ir_version,
        producer,
        opsets,
        inputs,
        outputs,
        nodes: acc.nodes,
        nodes_in_subgraphs: acc.nodes_in_subgraphs,
        subgraphs: acc.subgraphs,
        functions: shell.functions.len() as u64,
        ops,
        params,
        macs: Macs {
            total,
            symbolic_dims_as_one: macs.syms.into_iter().collect(),
            unknown_nodes: by_op.iter().map(|o| o.unknown_nodes).sum(),
            by_op,
            saturated,
        },
    }
}

fn name_of(vi: &ValueInfoProto) -> String {
    vi.name.clone().unwrap_or_default()
}

fn value_summary(vi: &ValueInfoProto, has_default: bool) -> ValueSummary {
    let (dtype, shape) = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => (
            dtype::name(t.elem_type.unwrap_or(0)),
            t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(dimension::Value::DimValue(v)) => DimOut::Value(*v),
                        Some(dimension::Value::DimParam(p)) if !p.is_empty() => {
                            DimOut::Param(p.clone())
                        }
                        _ => DimOut::Unknown,
                    })
                    .collect()
            }),
        ),
        _ => (type_str(vi.r#type.as_ref()), None),
    };
    ValueSummary {
        name: name_of(vi),
        dtype,
        shape,
        r#type: type_str(vi.r#type.as_ref()),
        has_default,
    }
}

// ---------------------------------------------------------------------------------------------
// Histogram and parameters

#[derive(Default)]
struct Acc {
    ops: BTreeMap<String, (u64, u64)>,
    nodes: u64,
    nodes_in_subgraphs: u64,
    subgraphs: u64,
    params: BTreeMap<i32, DtypeParams>,
}

impl Acc {
    fn add_param(&mut self, dt: i32, elements: u64, bytes: u64) {
        let e = self.params.entry(dt).or_insert_with(|| DtypeParams {
            dtype: dtype::name(dt),
            ..Default::default()
        });
        e.tensors += 1;
        e.elements = e.elements.saturating_add(elements);
        e.bytes = e.bytes.saturating_add(bytes);
    }

    fn tensor(&mut self, t: &TensorProto) {
        let dt = t.data_type.unwrap_or(0);
        let elements = dtype::numel(&t.dims).unwrap_or(0);
        let bytes = dtype::byte_len(dt, &t.dims).unwrap_or_else(|| tensor::payload_bytes(t));
        self.add_param(dt, elements, bytes);
    }

    fn sparse(&mut self, s: &SparseTensorProto) {
        let Some(v) = &s.values else { return };
        let dt = v.data_type.unwrap_or(0);
        let elements = dtype::numel(&v.dims).unwrap_or(0);
        let bytes = [Some(v), s.indices.as_ref()]
            .into_iter()
            .flatten()
            .map(|t| {
                dtype::byte_len(t.data_type.unwrap_or(0), &t.dims)
                    .unwrap_or_else(|| tensor::payload_bytes(t))
            })
            .fold(0u64, |a, b| a.saturating_add(b));
        self.add_param(dt, elements, bytes);
    }

    fn node(&mut self, n: &NodeProto, in_subgraph: bool) {
        let e = self.ops.entry(op_key(n)).or_default();
        e.0 += 1;
        self.nodes += 1;
        if in_subgraph {
            e.1 += 1;
            self.nodes_in_subgraphs += 1;
        }
        if is_default_domain(n) && n.op_type.as_deref() == Some("Constant") {
            self.constant(n);
        }
        for g in subgraphs(n) {
            self.graph(g);
        }
    }

    fn constant(&mut self, n: &NodeProto) {
        for a in &n.attribute {
            match a.name.as_deref() {
                Some("value") => {
                    if let Some(t) = &a.t {
                        self.tensor(t)
                    }
                }
                Some("sparse_value") => {
                    if let Some(s) = &a.sparse_tensor {
                        self.sparse(s)
                    }
                }
                Some("value_float") => self.add_param(DataType::Float as i32, 1, 4),
                Some("value_floats") => {
                    let n = a.floats.len() as u64;
                    self.add_param(DataType::Float as i32, n, 4 * n)
                }
                Some("value_int") => self.add_param(DataType::Int64 as i32, 1, 8),
                Some("value_ints") => {
                    let n = a.ints.len() as u64;
                    self.add_param(DataType::Int64 as i32, n, 8 * n)
                }
                Some("value_string") => self.add_param(
                    DataType::String as i32,
                    1,
                    a.s.as_ref().map_or(0, |s| s.len() as u64),
                ),
                Some("value_strings") => self.add_param(
                    DataType::String as i32,
                    a.strings.len() as u64,
                    a.strings.iter().map(|s| s.len() as u64).sum(),
                ),
                _ => {}
            }
        }
    }

    fn graph(&mut self, g: &GraphProto) {
        self.subgraphs += 1;
        for t in &g.initializer {
            self.tensor(t);
        }
        for s in &g.sparse_initializer {
            self.sparse(s);
        }
        for n in &g.node {
            self.node(n, true);
        }
    }
}

fn is_default_domain(n: &NodeProto) -> bool {
    matches!(n.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

fn op_key(n: &NodeProto) -> String {
    let op = n.op_type.as_deref().unwrap_or("");
    if is_default_domain(n) {
        op.to_string()
    } else {
        format!("{}.{op}", n.domain.as_deref().unwrap_or(""))
    }
}

// ---------------------------------------------------------------------------------------------
// Shape inference

/// A dim: known, symbolic, or unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum D {
    K(u64),
    S(String),
    U,
}

type Shape = Vec<D>;

/// Small integer constants (shapes, axes) are kept by value; longer ones are not read at all.
const MAX_INT_CONST: u64 = 64;

struct Scope<'p> {
    shapes: HashMap<String, Shape>,
    declared: HashMap<String, Shape>,
    ints: HashMap<String, Vec<i64>>,
    parent: Option<&'p Scope<'p>>,
}

impl<'p> Scope<'p> {
    fn new(parent: Option<&'p Scope<'p>>) -> Scope<'p> {
        Scope {
            shapes: HashMap::new(),
            declared: HashMap::new(),
            ints: HashMap::new(),
            parent,
        }
    }

    fn shape(&self, name: &str) -> Option<&Shape> {
        if name.is_empty() {
            return None;
        }
        self.shapes
            .get(name)
            .or_else(|| self.parent.and_then(|p| p.shape(name)))
    }

    fn ints(&self, name: &str) -> Option<&[i64]> {
        if name.is_empty() {
            return None;
        }
        self.ints
            .get(name)
            .map(Vec::as_slice)
            .or_else(|| self.parent.and_then(|p| p.ints(name)))
    }

    fn add_const(&mut self, t: &TensorProto) {
        let name = t.name.clone().unwrap_or_default();
        self.add_tensor(&name, t);
    }

    fn add_tensor(&mut self, name: &str, t: &TensorProto) {
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

fn declared_shape(vi: &ValueInfoProto) -> Option<Shape> {
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
struct MacAcc {
    /// op → (nodes with known MACs, MACs, nodes with unknown MACs)
    by_op: BTreeMap<String, (u64, u64, u64)>,
    syms: BTreeSet<String>,
    saturated: bool,
}

fn visit_node(n: &NodeProto, inputs: &[String], scope: &mut Scope, opset: i64, macs: &mut MacAcc) {
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

// ---------------------------------------------------------------------------------------------
// Human form

/// `1234567` → `1,234,567`.
fn sep(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `3,531 bytes (3.4 KiB)`; the unit part only from 1 KiB up.
fn human_bytes(v: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut f = v as f64;
    let mut u = 0;
    while f >= 1024.0 && u + 1 < UNITS.len() {
        f /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{} bytes", sep(v))
    } else {
        format!("{} bytes ({f:.1} {})", sep(v), UNITS[u])
    }
}

/// `1,234,567 (1.23M)`; the short form only from 1,000 up.
fn human_count(v: u64) -> String {
    let f = v as f64;
    let short = if v >= 1_000_000_000 {
        format!("{:.2}G", f / 1e9)
    } else if v >= 1_000_000 {
        format!("{:.2}M", f / 1e6)
    } else if v >= 1_000 {
        format!("{:.1}k", f / 1e3)
    } else {
        return sep(v);
    };
    format!("{} ({short})", sep(v))
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file size   {}", human_bytes(self.file_bytes))?;
        match self.ir_version {
            Some(v) => writeln!(f, "ir_version  {v}")?,
            None => writeln!(f, "ir_version  ?")?,
        }
        if !self.producer.is_empty() {
            writeln!(f, "producer    {}", self.producer)?;
        }
        let opsets: Vec<_> = self
            .opsets
            .iter()
            .map(|o| crate::onnx::proto::OperatorSetIdProto {
                domain: Some(o.domain.clone()),
                version: Some(o.version),
            })
            .collect();
        writeln!(f, "opsets      {}", opsets_str(&opsets))?;

        let width = self
            .inputs
            .iter()
            .chain(&self.outputs)
            .map(|v| v.name.len())
            .max()
            .unwrap_or(0);
        writeln!(f, "\ninputs")?;
        for v in &self.inputs {
            let d = if v.has_default {
                "  (has a default)"
            } else {
                ""
            };
            writeln!(f, "  {:width$}  {}{d}", v.name, v.r#type)?;
        }
        writeln!(f, "outputs")?;
        for v in &self.outputs {
            writeln!(f, "  {:width$}  {}", v.name, v.r#type)?;
        }

        write!(
            f,
            "\nops: {} nodes, {} types",
            sep(self.nodes),
            self.ops.len()
        )?;
        if self.subgraphs > 0 {
            write!(
                f,
                " ({} of them in {} subgraphs)",
                sep(self.nodes_in_subgraphs),
                self.subgraphs
            )?;
        }
        writeln!(f)?;
        let w = self.ops.iter().map(|o| o.op.len()).max().unwrap_or(0);
        for o in &self.ops {
            write!(f, "  {:w$}  {:>7}", o.op, sep(o.count))?;
            if o.in_subgraphs > 0 {
                write!(f, "  ({} in subgraphs)", sep(o.in_subgraphs))?;
            }
            writeln!(f)?;
        }
        if self.functions > 0 {
            writeln!(f, "functions: {}", self.functions)?;
        }

        writeln!(
            f,
            "\nparameters: {} in {} tensors, {}",
            human_count(self.params.elements),
            sep(self.params.tensors),
            human_bytes(self.params.bytes)
        )?;
        let w = self
            .params
            .by_dtype
            .iter()
            .map(|d| d.dtype.len())
            .max()
            .unwrap_or(0);
        for d in &self.params.by_dtype {
            writeln!(
                f,
                "  {:w$}  {:>6} tensors  {:>14} elements  {:>14} bytes",
                d.dtype,
                sep(d.tensors),
                sep(d.elements),
                sep(d.bytes)
            )?;
        }

        let m = &self.macs;
        write!(f, "\nMACs")?;
        if !m.symbolic_dims_as_one.is_empty() {
            write!(
                f,
                " (symbolic dims = 1: {})",
                m.symbolic_dims_as_one.join(", ")
            )?;
        }
        write!(f, ": {}", human_count(m.total))?;
        if m.saturated {
            write!(f, " (saturated: some product overflowed u64)")?;
        }
        writeln!(f)?;
        for o in &m.by_op {
            write!(
                f,
                "  {:6}  {:>6} nodes  {:>18}",
                o.op,
                sep(o.nodes),
                sep(o.macs)
            )?;
            if o.unknown_nodes > 0 {
                write!(f, "  (+{} with unknown shapes)", sep(o.unknown_nodes))?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "  unknown: {} Conv/MatMul/Gemm nodes whose shapes could not be inferred",
            sep(m.unknown_nodes)
        )?;
        Ok(())
    }
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

    #[test]
    fn separators() {
        assert_eq!(sep(0), "0");
        assert_eq!(sep(999), "999");
        assert_eq!(sep(1000), "1,000");
        assert_eq!(sep(1234567), "1,234,567");
    }
}
