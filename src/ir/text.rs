//! The deterministic text form of a model, printed by `onnx-slim show` and compared by `diff`.
//!
//! ```text
//! ir_version: 8
//! producer: pytorch 2.1
//! opsets: ai.onnx 17
//!
//! inputs:
//!   x: float32[N,3,224,224]
//! initializers:
//!   w: float32[64,3,7,7] #1a2b3c4d
//!   shape: int64[2] = [1, -1]
//! nodes:
//!   conv1_out = Conv(x, w, b) {kernel_shape=[7,7], pads=[3,3,3,3], strides=[2,2]}  # name: Conv_0
//! outputs:
//!   y: float32[N,1000]
//! ```
//!
//! Nodes come in topological order (ties broken by file order), initializers in order of first
//! use, attributes sorted by name. Tensor data is never dumped: a tensor is its type and a short
//! content hash, or its values when it has at most 8 elements. Subgraphs of `If`/`Loop`/`Scan`
//! (and any graph attribute) are rendered beneath their node, indented, in the same format.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::graph::{free_names, Graph, NodeKind, ValueRef};
use super::{tensor, Model};
use crate::onnx::dtype;
use crate::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_proto::DataType,
    tensor_shape_proto::dimension, type_proto, AttributeProto, FunctionProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, SparseTensorProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Lists longer than this are shown as their first [`LIST_HEAD`] items, a count and a hash.
const LIST_MAX: usize = 32;
const LIST_HEAD: usize = 16;
/// Tensors with at most this many elements are shown with their values.
const SMALL_TENSOR: u64 = 8;
/// Doc strings and string attributes longer than this are cut.
const TEXT_MAX: usize = 200;

/// The text form of `model`. The same model always gives the same text.
pub fn to_text(model: &Model) -> String {
    let mut out = String::new();
    header(&model.shell, &model.graph.shell, &mut out);
    top_graph(&model.graph, &mut out);
    functions(&model.shell.functions, &mut out);
    out
}

fn header(m: &ModelProto, g: &GraphProto, out: &mut String) {
    match m.ir_version {
        Some(v) => writeln!(out, "ir_version: {v}").unwrap(),
        None => out.push_str("ir_version: ?\n"),
    }
    let producer = [m.producer_name.as_deref(), m.producer_version.as_deref()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if !producer.is_empty() {
        writeln!(out, "producer: {}", esc(&producer)).unwrap();
    }
    writeln!(out, "opsets: {}", opsets(&m.opset_import)).unwrap();
    if let Some(d) = m.domain.as_deref().filter(|d| !d.is_empty()) {
        writeln!(out, "domain: {}", esc(d)).unwrap();
    }
    if let Some(v) = m.model_version {
        writeln!(out, "model_version: {v}").unwrap();
    }
    if let Some(d) = m.doc_string.as_deref().filter(|d| !d.is_empty()) {
        writeln!(out, "doc: {}", quote(d)).unwrap();
    }
    metadata(&m.metadata_props, "", out);
    if !m.training_info.is_empty() {
        writeln!(out, "training_info: {} entries", m.training_info.len()).unwrap();
    }
    if let Some(n) = g.name.as_deref().filter(|n| !n.is_empty()) {
        writeln!(out, "graph: {}", esc(n)).unwrap();
    }
    if let Some(d) = g.doc_string.as_deref().filter(|d| !d.is_empty()) {
        writeln!(out, "graph doc: {}", quote(d)).unwrap();
    }
    metadata(&g.metadata_props, "graph ", out);
}

fn metadata(props: &[StringStringEntryProto], prefix: &str, out: &mut String) {
    for p in props {
        writeln!(
            out,
            "{prefix}metadata: {} = {}",
            esc(p.key.as_deref().unwrap_or("")),
            quote(p.value.as_deref().unwrap_or(""))
        )
        .unwrap();
    }
}

/// Opset imports sorted by domain, e.g. `ai.onnx 17, com.microsoft 1`.
pub fn opsets(imports: &[OperatorSetIdProto]) -> String {
    let mut v: Vec<(String, i64)> = imports
        .iter()
        .map(|o| {
            let d = match o.domain.as_deref() {
                None | Some("") => "ai.onnx",
                Some(d) => d,
            };
            (esc(d).into_owned(), o.version.unwrap_or(0))
        })
        .collect();
    v.sort();
    if v.is_empty() {
        return "(none)".into();
    }
    v.iter()
        .map(|(d, n)| format!("{d} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn top_graph(g: &Graph, out: &mut String) {
    let order = g.topo_order();
    let inputs = g.inputs();
    if !inputs.is_empty() {
        out.push_str("\ninputs:\n");
        for id in inputs {
            if let NodeKind::Input { info, default } = &g.node(id).kind {
                write!(out, "  {}", value_info_str(info)).unwrap();
                if let Some((t, _)) = default {
                    write!(out, " (default {})", tensor_summary(t)).unwrap();
                }
                out.push('\n');
            }
        }
    }

    // Initializers in order of first use, then unused ones by name.
    let mut seen = HashSet::new();
    let mut inits = Vec::new();
    let is_init = |v: &ValueRef| {
        matches!(
            g.node(v.node).kind,
            NodeKind::Initializer(_) | NodeKind::SparseInitializer(_)
        )
    };
    for &id in &order {
        if g.node(id).op().is_none() {
            continue;
        }
        let used = g
            .node_inputs(id)
            .into_iter()
            .flatten()
            .chain(g.captures(id));
        for v in used {
            if is_init(&v) && seen.insert(v.node) {
                inits.push(v.node);
            }
        }
    }
    for (v, _) in g.outputs() {
        if is_init(v) && seen.insert(v.node) {
            inits.push(v.node);
        }
    }
    let mut unused: Vec<_> = order
        .iter()
        .filter(|id| {
            matches!(
                g.node(**id).kind,
                NodeKind::Initializer(_) | NodeKind::SparseInitializer(_)
            ) && !seen.contains(*id)
        })
        .map(|id| (g.node(*id).label(), *id))
        .collect();
    unused.sort();
    inits.extend(unused.into_iter().map(|(_, id)| id));
    if !inits.is_empty() {
        out.push_str("initializers:\n");
        for id in inits {
            match &g.node(id).kind {
                NodeKind::Initializer(t) => writeln!(
                    out,
                    "  {}: {}",
                    esc(t.name.as_deref().unwrap_or("")),
                    tensor_summary(t)
                )
                .unwrap(),
                NodeKind::SparseInitializer(s) => writeln!(
                    out,
                    "  {}: {}",
                    s.values
                        .as_ref()
                        .and_then(|v| v.name.as_deref())
                        .unwrap_or(""),
                    sparse_summary(s)
                )
                .unwrap(),
                _ => {}
            }
        }
    }

    let ops: Vec<_> = order
        .iter()
        .copied()
        .filter(|id| g.node(*id).op().is_some())
        .collect();
    if !ops.is_empty() {
        out.push_str("nodes:\n");
        for id in ops {
            let Some(p) = g.node(id).op() else { continue };
            let inputs: Vec<String> = g
                .node_inputs(id)
                .into_iter()
                .map(|v| v.map(|v| g.value_name(v).to_string()).unwrap_or_default())
                .collect();
            node(p, &inputs, 2, out);
        }
    }
    if !g.outputs().is_empty() {
        out.push_str("outputs:\n");
        for (_, info) in g.outputs() {
            writeln!(out, "  {}", value_info_str(info)).unwrap();
        }
    }
    if !g.value_infos().is_empty() {
        out.push_str("value_info:\n");
        for info in g.value_infos() {
            writeln!(out, "  {}", value_info_str(info)).unwrap();
        }
    }
}

/// A subgraph: its sections at `indent`, items at `indent + 2`.
fn graph_proto(g: &GraphProto, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    if let Some(d) = g.doc_string.as_deref().filter(|d| !d.is_empty()) {
        writeln!(out, "{pad}doc: {}", quote(d)).unwrap();
    }
    let mut free = BTreeSet::new();
    free_names(g, &mut free);
    if !free.is_empty() {
        writeln!(
            out,
            "{pad}captures: {}",
            free.iter().map(|n| esc(n)).collect::<Vec<_>>().join(", ")
        )
        .unwrap();
    }
    let section = |title: &str, items: &[ValueInfoProto], out: &mut String| {
        if !items.is_empty() {
            writeln!(out, "{pad}{title}:").unwrap();
            for i in items {
                writeln!(out, "{pad}  {}", value_info_str(i)).unwrap();
            }
        }
    };
    section("inputs", &g.input, out);
    if !g.initializer.is_empty() || !g.sparse_initializer.is_empty() {
        writeln!(out, "{pad}initializers:").unwrap();
        for t in &g.initializer {
            writeln!(
                out,
                "{pad}  {}: {}",
                esc(t.name.as_deref().unwrap_or("")),
                tensor_summary(t)
            )
            .unwrap();
        }
        for s in &g.sparse_initializer {
            let name = s.values.as_ref().and_then(|v| v.name.as_deref());
            writeln!(
                out,
                "{pad}  {}: {}",
                esc(name.unwrap_or("")),
                sparse_summary(s)
            )
            .unwrap();
        }
    }
    if !g.node.is_empty() {
        writeln!(out, "{pad}nodes:").unwrap();
        for n in &g.node {
            node(n, &n.input, indent + 2, out);
        }
    }
    section("outputs", &g.output, out);
    section("value_info", &g.value_info, out);
}

/// One node line, then its subgraphs beneath it.
fn node(n: &NodeProto, inputs: &[String], indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    out.push_str(&pad);
    if n.output.is_empty() {
        out.push_str("() = ");
    } else {
        out.push_str(&join_names(&n.output));
        out.push_str(" = ");
    }
    out.push_str(&op_name(n));
    out.push('(');
    out.push_str(&join_names(inputs));
    out.push(')');
    let mut attrs: Vec<&AttributeProto> = n.attribute.iter().collect();
    attrs.sort_by(|a, b| a.name.cmp(&b.name));
    if !attrs.is_empty() {
        out.push_str(" {");
        for (i, a) in attrs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write!(
                out,
                "{}={}",
                esc(a.name.as_deref().unwrap_or("")),
                attr_value(a)
            )
            .unwrap();
        }
        out.push('}');
    }
    if let Some(name) = n.name.as_deref().filter(|s| !s.is_empty()) {
        write!(out, "  # name: {}", esc(name)).unwrap();
    }
    out.push('\n');
    for a in attrs {
        let aname = esc(a.name.as_deref().unwrap_or(""));
        if let Some(g) = &a.g {
            writeln!(out, "{pad}  {aname}: {}", graph_label(g)).unwrap();
            graph_proto(g, indent + 4, out);
        }
        for (i, g) in a.graphs.iter().enumerate() {
            writeln!(out, "{pad}  {aname}[{i}]: {}", graph_label(g)).unwrap();
            graph_proto(g, indent + 4, out);
        }
    }
}

/// `Conv`, or `com.microsoft.FusedConv` for a non-default domain (`:overload` appended if set).
pub fn op_name(n: &NodeProto) -> String {
    let op = n.op_type.as_deref().unwrap_or("");
    let mut s = match n.domain.as_deref() {
        None | Some("") | Some("ai.onnx") => esc(op).into_owned(),
        Some(d) => format!("{}.{}", esc(d), esc(op)),
    };
    if let Some(o) = n.overload.as_deref().filter(|o| !o.is_empty()) {
        s.push(':');
        s.push_str(&esc(o));
    }
    s
}

fn graph_label(g: &GraphProto) -> String {
    match g.name.as_deref().filter(|n| !n.is_empty()) {
        Some(n) => format!("graph {}", esc(n)),
        None => "graph".into(),
    }
}

fn attr_type(a: &AttributeProto) -> AttributeType {
    if let Some(t) = a.r#type.and_then(|t| AttributeType::try_from(t).ok()) {
        if t != AttributeType::Undefined {
            return t;
        }
    }
    use AttributeType::*;
    if a.f.is_some() {
        Float
    } else if a.i.is_some() {
        Int
    } else if a.s.is_some() {
        String
    } else if a.t.is_some() {
        Tensor
    } else if a.g.is_some() {
        Graph
    } else if a.sparse_tensor.is_some() {
        SparseTensor
    } else if a.tp.is_some() {
        TypeProto
    } else if !a.floats.is_empty() {
        Floats
    } else if !a.ints.is_empty() {
        Ints
    } else if !a.strings.is_empty() {
        Strings
    } else if !a.tensors.is_empty() {
        Tensors
    } else if !a.graphs.is_empty() {
        Graphs
    } else if !a.sparse_tensors.is_empty() {
        SparseTensors
    } else if !a.type_protos.is_empty() {
        TypeProtos
    } else {
        Undefined
    }
}

/// The value of an attribute as shown in a node line.
pub fn attr_value(a: &AttributeProto) -> String {
    if let Some(r) = a.ref_attr_name.as_deref().filter(|r| !r.is_empty()) {
        return format!("@{r}");
    }
    use AttributeType::*;
    match attr_type(a) {
        Float => a.f.map_or("?".into(), |f| format!("{f:?}")),
        Int => a.i.map_or("?".into(), |i| i.to_string()),
        String => a.s.as_deref().map_or("?".into(), bytes_str),
        Tensor => a.t.as_ref().map_or("?".into(), tensor_summary),
        Graph => {
            a.g.as_ref()
                .map_or("?".into(), |g| format!("<{}>", graph_label(g)))
        }
        SparseTensor => a.sparse_tensor.as_ref().map_or("?".into(), sparse_summary),
        TypeProto => type_str(a.tp.as_ref()),
        Floats => list(&a.floats, ",", |f| format!("{f:?}")),
        Ints => list(&a.ints, ",", |i| i.to_string()),
        Strings => list(&a.strings, ", ", |s| bytes_str(s)),
        Tensors => list(&a.tensors, ", ", tensor_summary),
        Graphs => list(&a.graphs, ", ", |g| format!("<{}>", graph_label(g))),
        SparseTensors => list(&a.sparse_tensors, ", ", sparse_summary),
        TypeProtos => list(&a.type_protos, ", ", |t| type_str(Some(t))),
        Undefined => "?".into(),
    }
}

/// `[a, b, c]` (numbers: `[1,2,3]`, joined by `sep`); long lists are cut after [`LIST_HEAD`]
/// items and end with a count and a hash of every item, so a change anywhere still shows.
fn list<T>(items: &[T], sep: &str, f: impl Fn(&T) -> String) -> String {
    if items.len() <= LIST_MAX {
        return format!("[{}]", items.iter().map(&f).collect::<Vec<_>>().join(sep));
    }
    let mut h = Sha256::new();
    for it in items {
        let s = f(it);
        h.update((s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    let d = h.finalize();
    let hash: String = d.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!(
        "[{}{sep}... {} items #{hash}]",
        items[..LIST_HEAD]
            .iter()
            .map(&f)
            .collect::<Vec<_>>()
            .join(sep),
        items.len()
    )
}

/// A string attribute: quoted if UTF-8, else hex.
fn bytes_str(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => quote(s),
        Err(_) => {
            let hex: String = b.iter().take(32).map(|x| format!("{x:02x}")).collect();
            if b.len() > 32 {
                format!("0x{hex}... ({} bytes)", b.len())
            } else {
                format!("0x{hex}")
            }
        }
    }
}

/// `names` escaped and joined with `, `.
fn join_names(names: &[String]) -> String {
    names.iter().map(|n| esc(n)).collect::<Vec<_>>().join(", ")
}

/// A name as the text form prints it: control characters and backslashes escaped (`\n`, `\\`),
/// so that a name from a model file can neither break a line nor forge one.
pub fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A quoted, escaped string, cut after [`TEXT_MAX`] characters.
fn quote(s: &str) -> String {
    let n = s.chars().count();
    if n <= TEXT_MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(TEXT_MAX).collect();
        format!("{cut:?}... ({n} chars)")
    }
}

/// `float32[512,64]`: the element type and dims of a tensor.
pub fn tensor_type_str(t: &TensorProto) -> String {
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    format!(
        "{}[{}]",
        dtype::name(t.data_type.unwrap_or(0)),
        dims.join(",")
    )
}

/// A tensor without its data: `float32[512,64] #1a2b3c4d`, or with its values when it has at most
/// 8 elements: `int64[2] = [1, -1]`, `float32[] = 0.5`.
pub fn tensor_summary(t: &TensorProto) -> String {
    let ty = tensor_type_str(t);
    let external = t.data_location == Some(DataLocation::External as i32)
        && t.raw_data.as_ref().is_none_or(|r| r.is_empty());
    if external {
        return format!("{ty} (external) #{}", tensor::content_hash(t));
    }
    if let Some(n) = dtype::numel(&t.dims).filter(|n| *n <= SMALL_TENSOR) {
        if let Some(vals) = small_values(t, n as usize) {
            if t.dims.is_empty() && vals.len() == 1 {
                return format!("{ty} = {}", vals[0]);
            }
            return format!("{ty} = [{}]", vals.join(", "));
        }
    }
    format!("{ty} #{}", tensor::content_hash(t))
}

/// The values of a tiny tensor as text, or `None` if they cannot be decoded.
fn small_values(t: &TensorProto, n: usize) -> Option<Vec<String>> {
    let dt = DataType::try_from(t.data_type.unwrap_or(0)).ok()?;
    use DataType as T;
    let raw = t.raw_data.as_deref().filter(|r| !r.is_empty());
    let v: Vec<String> = match dt {
        T::Float | T::Float16 => tensor::to_f32(t)
            .ok()?
            .iter()
            .map(|f| format!("{f:?}"))
            .collect(),
        T::Double => match raw {
            Some(r) if r.len() == 8 * n => r
                .chunks_exact(8)
                .map(|c| format!("{:?}", f64::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            Some(_) => return None,
            None => t.double_data.iter().map(|d| format!("{d:?}")).collect(),
        },
        T::Bfloat16 => match raw {
            Some(r) if r.len() == 2 * n => r
                .chunks_exact(2)
                .map(|c| {
                    let bits = (u16::from_le_bytes([c[0], c[1]]) as u32) << 16;
                    format!("{:?}", f32::from_bits(bits))
                })
                .collect(),
            Some(_) => return None,
            None => t
                .int32_data
                .iter()
                .map(|b| format!("{:?}", f32::from_bits((*b as u32 & 0xffff) << 16)))
                .collect(),
        },
        T::Bool => tensor::to_i64(t)
            .ok()?
            .iter()
            .map(|b| (*b != 0).to_string())
            .collect(),
        T::Uint64 if raw.is_none() => t.uint64_data.iter().map(|v| v.to_string()).collect(),
        T::Uint64 => match raw {
            Some(r) if r.len() == 8 * n => r
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()).to_string())
                .collect(),
            _ => return None,
        },
        T::Int64 | T::Int32 | T::Int16 | T::Int8 | T::Uint32 | T::Uint16 | T::Uint8 => {
            tensor::to_i64(t)
                .ok()?
                .iter()
                .map(|v| v.to_string())
                .collect()
        }
        T::String => t.string_data.iter().map(|s| bytes_str(s)).collect(),
        _ => return None,
    };
    (v.len() == n).then_some(v)
}

/// A sparse tensor: `sparse float32[10,10] nnz=3 #1a2b3c4d` (hash of values and indices).
pub fn sparse_summary(s: &SparseTensorProto) -> String {
    let dt = s.values.as_ref().and_then(|v| v.data_type).unwrap_or(0);
    let dims: Vec<String> = s.dims.iter().map(|d| d.to_string()).collect();
    let nnz = s
        .values
        .as_ref()
        .and_then(|v| v.dims.first().copied())
        .unwrap_or(0);
    let mut h = Sha256::new();
    for t in s.values.iter().chain(s.indices.iter()) {
        h.update(tensor::content_hash(t).as_bytes());
    }
    let d = h.finalize();
    let hash: String = d.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!(
        "sparse {}[{}] nnz={nnz} #{hash}",
        dtype::name(dt),
        dims.join(",")
    )
}

/// `x: float32[N,3,224,224]`.
pub fn value_info_str(vi: &ValueInfoProto) -> String {
    format!(
        "{}: {}",
        esc(vi.name.as_deref().unwrap_or("")),
        type_str(vi.r#type.as_ref())
    )
}

/// A type: `float32[N,16]` (`?` for an unknown dim, `[...]` for an unknown rank),
/// `seq(float32[3])`, `map(int64, float32[])`, `optional(...)`, `sparse float32[4,4]`,
/// `opaque(domain.name)`, or `?` when absent.
pub fn type_str(tp: Option<&TypeProto>) -> String {
    let Some(value) = tp.and_then(|t| t.value.as_ref()) else {
        return "?".into();
    };
    match value {
        type_proto::Value::TensorType(t) => {
            format!(
                "{}{}",
                dtype::name(t.elem_type.unwrap_or(0)),
                shape_str(t.shape.as_ref())
            )
        }
        type_proto::Value::SequenceType(s) => {
            format!("seq({})", type_str(s.elem_type.as_deref()))
        }
        type_proto::Value::MapType(m) => format!(
            "map({}, {})",
            dtype::name(m.key_type.unwrap_or(0)),
            type_str(m.value_type.as_deref())
        ),
        type_proto::Value::OptionalType(o) => {
            format!("optional({})", type_str(o.elem_type.as_deref()))
        }
        type_proto::Value::SparseTensorType(t) => format!(
            "sparse {}{}",
            dtype::name(t.elem_type.unwrap_or(0)),
            shape_str(t.shape.as_ref())
        ),
        type_proto::Value::OpaqueType(o) => {
            let d = o.domain.as_deref().unwrap_or("");
            let n = o.name.as_deref().unwrap_or("");
            if d.is_empty() {
                format!("opaque({n})")
            } else {
                format!("opaque({d}.{n})")
            }
        }
    }
}

/// `[N,3,?]`, or `[...]` when the rank is unknown.
pub fn shape_str(s: Option<&TensorShapeProto>) -> String {
    let Some(s) = s else {
        return "[...]".into();
    };
    let dims: Vec<String> = s
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(v)) => v.to_string(),
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => p.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(","))
}

fn functions(fs: &[FunctionProto], out: &mut String) {
    if fs.is_empty() {
        return;
    }
    out.push_str("\nfunctions:\n");
    for f in fs {
        let name = match f.domain.as_deref() {
            None | Some("") => esc(f.name.as_deref().unwrap_or("")).into_owned(),
            Some(d) => format!("{}.{}", esc(d), esc(f.name.as_deref().unwrap_or(""))),
        };
        let overload = f
            .overload
            .as_deref()
            .filter(|o| !o.is_empty())
            .map(|o| format!(":{o}"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {name}{overload}({}) -> ({})",
            join_names(&f.input),
            join_names(&f.output)
        )
        .unwrap();
        if let Some(d) = f.doc_string.as_deref().filter(|d| !d.is_empty()) {
            writeln!(out, "    doc: {}", quote(d)).unwrap();
        }
        let mut attrs: Vec<String> = f.attribute.clone();
        attrs.extend(
            f.attribute_proto
                .iter()
                .map(|a| format!("{}={}", a.name.as_deref().unwrap_or(""), attr_value(a))),
        );
        if !attrs.is_empty() {
            writeln!(out, "    attributes: {}", attrs.join(", ")).unwrap();
        }
        if !f.opset_import.is_empty() {
            writeln!(out, "    opsets: {}", opsets(&f.opset_import)).unwrap();
        }
        if !f.node.is_empty() {
            out.push_str("    nodes:\n");
            for n in &f.node {
                node(n, &n.input, 6, out);
            }
        }
        if !f.value_info.is_empty() {
            out.push_str("    value_info:\n");
            for vi in &f.value_info {
                writeln!(out, "      {}", value_info_str(vi)).unwrap();
            }
        }
    }
}
