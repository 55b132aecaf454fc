//! `onnx-slim inspect`: what a model is made of, without running it.
//!
//! Opsets, inputs and outputs, an op histogram that includes the nodes of `If`/`Loop`/`Scan`
//! subgraphs, parameter counts and bytes per dtype, and the multiply-accumulates of `Conv`,
//! `MatMul` and `Gemm` where the facts ([`crate::ir::facts`], subgraphs included) tell the shapes,
//! counted by the op table ([`crate::ops`]).
//!
//! Nothing here panics or allocates in proportion to a dim's value: dims are `u64` with checked
//! arithmetic, and a product that overflows saturates and is flagged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use prost::Message;
use serde::Serialize;

use crate::ir::facts::{Defaults, Fact, Facts, Symbols};
use crate::ir::text::{opsets as opsets_str, type_str};
use crate::ir::{tensor, Model, NodeKind, ValueRef};
use crate::onnx::dtype;
use crate::onnx::proto::{
    tensor_proto::DataType, tensor_shape_proto::dimension, type_proto, GraphProto, NodeProto,
    SparseTensorProto, TensorProto, ValueInfoProto,
};
use crate::onnx::visit::subgraphs;
use crate::ops::{self, MacCx};

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

    // MACs, from the facts of the graph and of its subgraphs. Inputs with defaults count at
    // their defaults' shapes, as stored.
    let facts = Facts::infer_with(g, model.opset(""), Defaults::AsValues);
    let nested = facts.nested(g);
    let syms = nested.symbols();
    let mut macs = MacAcc::default();
    for &id in &order {
        let Some(n) = g.node(id).op() else { continue };
        let ins: Vec<Option<Fact>> = g
            .node_inputs(id)
            .into_iter()
            .map(|v| v.map(|v| facts.get(v).clone()))
            .collect();
        let outs: Vec<Fact> = (0..n.output.len())
            .map(|slot| facts.get(ValueRef { node: id, slot }).clone())
            .collect();
        macs.node(n, &ins, &outs, syms);
    }
    for (i, scope) in nested.scopes.iter().enumerate() {
        for n in &scope.graph.node {
            let ins: Vec<Option<Fact>> = n
                .input
                .iter()
                .map(|name| (!name.is_empty()).then(|| nested.get(i, name).clone()))
                .collect();
            let outs: Vec<Fact> = n.output.iter().map(|o| nested.get(i, o).clone()).collect();
            macs.node(n, &ins, &outs, syms);
        }
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

    /// A sparse tensor counts its dense elements (what the model computes with) and the bytes
    /// of its values and of its encoded indices (what the file stores).
    fn sparse(&mut self, s: &SparseTensorProto) {
        let Some(v) = &s.values else { return };
        let dt = v.data_type.unwrap_or(0);
        let elements = dtype::numel(&s.dims).unwrap_or(0);
        let values = dtype::byte_len(dt, &v.dims).unwrap_or_else(|| tensor::payload_bytes(v));
        // Indices are usually `int64_data` varints: their encoded length, not 8 bytes each.
        let indices = s.indices.as_ref().map_or(0, |t| t.encoded_len() as u64);
        let bytes = values.saturating_add(indices);
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
    ops::is_default_domain(n.domain.as_deref().unwrap_or(""))
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
// MACs

#[derive(Default)]
struct MacAcc {
    /// op → (nodes with known MACs, MACs, nodes with unknown MACs)
    by_op: BTreeMap<String, (u64, u64, u64)>,
    syms: BTreeSet<String>,
    saturated: bool,
}

impl MacAcc {
    /// Counts `n` if the op table gives its MACs. A count that leans on a size no `dim_param`
    /// names (a fresh symbol) is unknown.
    fn node(&mut self, n: &NodeProto, ins: &[Option<Fact>], outs: &[Fact], syms: &Symbols) {
        let Some(f) = ops::lookup_node(n, None).and_then(|d| d.macs) else {
            return;
        };
        let count = f(&MacCx { node: n, ins, outs });
        let names: Option<Vec<&str>> = count
            .as_ref()
            .map(|c| c.syms.iter().map(|s| syms.name(*s)).collect())
            .unwrap_or(None);
        let e = self.by_op.entry(op_key(n)).or_default();
        match (count, names) {
            (Some(c), Some(names)) => {
                e.0 += 1;
                e.1 = e.1.saturating_add(c.macs);
                self.saturated |= c.saturated;
                self.syms.extend(names.into_iter().map(str::to_string));
            }
            _ => e.2 += 1,
        }
    }
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

    #[test]
    fn separators() {
        assert_eq!(sep(0), "0");
        assert_eq!(sep(999), "999");
        assert_eq!(sep(1000), "1,000");
        assert_eq!(sep(1234567), "1,234,567");
    }
}
