//! The equivalent graph for `DequantizeLinear`s tract 0.23 cannot run.
//!
//! tract-onnx 0.23.9 runs per-tensor and per-axis `DequantizeLinear` on 8-bit codes, but neither
//! int4/uint4 codes nor the `block_size` attribute (opset 21): it cannot even load an int4
//! initializer. A top-level `DequantizeLinear` whose inputs are all initializers, whose codes
//! are int4/uint4 or which has `block_size > 0`, is replaced by what it computes: an initializer
//! holding `(q − zero_point) · scale` as float32 under its output's name (the codes, scales and
//! zero points go when nothing else reads them). That is the operator's definition, elementwise,
//! in f32 as onnxruntime computes it; every other node runs as written. [`Prepared::materialised`]
//! (`super::Prepared`) names each node replaced.

use std::collections::HashSet;

use bytes::Bytes;

use super::names::{node_label, node_uses};
use crate::error::{Error, Result};
use crate::ir::tensor;
use crate::onnx::proto::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

/// Whether tract can run `node` as written (`false` for a `DequantizeLinear` on int4/uint4
/// codes or with `block_size`).
fn needs_equivalent(node: &NodeProto, codes: Option<&TensorProto>) -> bool {
    if node.op_type.as_deref() != Some("DequantizeLinear")
        || !node
            .domain
            .as_deref()
            .is_none_or(|d| d.is_empty() || d == "ai.onnx")
    {
        return false;
    }
    let blocked = attr_i(node, "block_size").is_some_and(|b| b > 0);
    let four = codes.is_some_and(|t| {
        matches!(
            DataType::try_from(t.data_type.unwrap_or(0)),
            Ok(DataType::Int4 | DataType::Uint4)
        )
    });
    blocked || four
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.i)
}

fn bad(node: &NodeProto, reason: String) -> Error {
    Error::Graph {
        reason: format!("`DequantizeLinear` `{}`: {reason}", node_label(node)),
    }
}

/// The integer values of `t` (int4/uint4 unpacked, low nibble first; other integer types as
/// [`tensor::to_i64`] reads them), row-major.
fn codes(t: &TensorProto) -> Result<Vec<i64>> {
    let dt = DataType::try_from(t.data_type.unwrap_or(0));
    let signed = match dt {
        Ok(DataType::Int4) => true,
        Ok(DataType::Uint4) => false,
        _ => return Ok(tensor::to_i64(t)?.iter().copied().collect()),
    };
    let n = crate::onnx::dtype::numel(&t.dims).unwrap_or(0) as usize;
    let bytes: Vec<u8> = match &t.raw_data {
        Some(r) if !r.is_empty() || t.int32_data.is_empty() => r.to_vec(),
        _ => t.int32_data.iter().map(|v| *v as u8).collect(),
    };
    if bytes.len() != n.div_ceil(2) {
        return Err(Error::Tensor {
            name: t.name.clone().unwrap_or_default(),
            reason: format!("{} bytes hold {n} packed 4-bit values", bytes.len()),
        });
    }
    Ok((0..n)
        .map(|i| {
            let nib = (bytes[i / 2] >> (4 * (i % 2))) & 0x0f;
            if signed && nib >= 8 {
                nib as i64 - 16
            } else {
                nib as i64
            }
        })
        .collect())
}

/// What `node` computes from constant codes, scale and zero point (see the ONNX definition:
/// per tensor, per `axis`, or per block of `block_size` along `axis`).
fn dequantize(
    node: &NodeProto,
    x: &TensorProto,
    scale: &TensorProto,
    zp: Option<&TensorProto>,
) -> Result<TensorProto> {
    let q = codes(x)?;
    let s: Vec<f32> = tensor::to_f32(scale)?.iter().copied().collect();
    let z: Vec<i64> = match zp {
        Some(t) => codes(t)?,
        None => vec![0; s.len()],
    };
    if z.len() != s.len() {
        return Err(bad(node, "scale and zero point differ in size".into()));
    }
    let dims: Vec<usize> = x.dims.iter().map(|d| (*d).max(0) as usize).collect();
    let rank = dims.len() as i64;
    let block = attr_i(node, "block_size").unwrap_or(0).max(0) as usize;
    let group: Box<dyn Fn(usize) -> usize> = if s.len() == 1 && block == 0 {
        Box::new(|_| 0)
    } else {
        let a = attr_i(node, "axis").unwrap_or(1);
        let a = if a < 0 { a + rank } else { a };
        if !(0..rank).contains(&a) {
            return Err(bad(node, format!("axis {a} outside rank {rank}")));
        }
        let a = a as usize;
        let d = dims[a].max(1);
        let inner = dims[a + 1..].iter().product::<usize>().max(1);
        if block == 0 {
            if s.len() != dims[a] {
                return Err(bad(
                    node,
                    format!("{} scales for axis of {}", s.len(), dims[a]),
                ));
            }
            Box::new(move |i| (i / inner) % d)
        } else {
            let nb = d.div_ceil(block);
            let outer = dims[..a].iter().product::<usize>();
            if s.len() != outer * nb * inner {
                return Err(bad(
                    node,
                    format!("{} scales for blocks of {block}", s.len()),
                ));
            }
            Box::new(move |i| {
                let o = i / (inner * d);
                let di = (i / inner) % d;
                (o * nb + di / block) * inner + i % inner
            })
        }
    };
    // The output has the scale's type: float32, or float16 (the product of a code and a float16
    // scale is exact in f32, so one rounding gives float16 arithmetic's result).
    let half = scale.data_type == Some(DataType::Float16 as i32);
    if !half && scale.data_type != Some(DataType::Float as i32) {
        return Err(bad(
            node,
            "only float32 and float16 scales are materialised".into(),
        ));
    }
    let mut raw = Vec::with_capacity(q.len() * 4);
    for (i, v) in q.iter().enumerate() {
        let g = group(i);
        let y = (*v - z[g]) as f32 * s[g];
        if half {
            raw.extend_from_slice(&crate::onnx::dtype::f32_to_f16(y).to_le_bytes());
        } else {
            raw.extend_from_slice(&y.to_le_bytes());
        }
    }
    Ok(TensorProto {
        name: node.output.first().cloned(),
        dims: x.dims.clone(),
        data_type: Some(if half {
            DataType::Float16
        } else {
            DataType::Float
        } as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    })
}

/// Replaces every top-level `DequantizeLinear` tract cannot run (and whose inputs are all
/// initializers) by the initializer it computes; returns one line per node replaced.
pub(super) fn materialise_dequantize(graph: &mut GraphProto) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut removed: Vec<usize> = Vec::new();
    let mut new_inits = Vec::new();
    {
        let init = |name: &str| {
            graph
                .initializer
                .iter()
                .find(|t| !name.is_empty() && t.name.as_deref() == Some(name))
        };
        for (idx, node) in graph.node.iter().enumerate() {
            let x = node.input.first().and_then(|n| init(n));
            if !needs_equivalent(node, x) {
                continue;
            }
            let (Some(x), Some(scale)) = (x, node.input.get(1).and_then(|n| init(n))) else {
                continue;
            };
            let zp = match node.input.get(2).filter(|n| !n.is_empty()) {
                Some(n) => match init(n) {
                    Some(t) => Some(t),
                    None => continue,
                },
                None => None,
            };
            new_inits.push(dequantize(node, x, scale, zp)?);
            removed.push(idx);
            let what = match attr_i(node, "block_size").filter(|b| *b > 0) {
                Some(b) => format!(
                    "{} codes, block_size {b}",
                    crate::onnx::dtype::name(x.data_type.unwrap_or(0))
                ),
                None => format!(
                    "{} codes",
                    crate::onnx::dtype::name(x.data_type.unwrap_or(0))
                ),
            };
            done.push(format!(
                "`DequantizeLinear` `{}` ({what}) run as the float weight it computes",
                node_label(node)
            ));
        }
    }
    if removed.is_empty() {
        return Ok(done);
    }
    let gone: HashSet<usize> = removed.into_iter().collect();
    let mut dropped_inputs: HashSet<String> = HashSet::new();
    let mut kept = Vec::with_capacity(graph.node.len());
    for (i, n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        if gone.contains(&i) {
            dropped_inputs.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        } else {
            kept.push(n);
        }
    }
    graph.node = kept;
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(node_uses)
        .chain(graph.output.iter().filter_map(|o| o.name.clone()))
        .collect();
    let unused = |name: &Option<String>| {
        name.as_ref()
            .is_some_and(|n| dropped_inputs.contains(n) && !used.contains(n))
    };
    graph.initializer.retain(|t| !unused(&t.name));
    graph.input.retain(|i| !unused(&i.name));
    graph.initializer.extend(new_inits);
    Ok(done)
}

/// The top-level nodes [`materialise_dequantize`] would replace, by label, without computing.
pub(super) fn pending(graph: &GraphProto) -> Vec<String> {
    graph
        .node
        .iter()
        .filter(|node| {
            let x = node.input.first().and_then(|n| {
                graph
                    .initializer
                    .iter()
                    .find(|t| t.name.as_deref() == Some(n.as_str()))
            });
            needs_equivalent(node, x)
        })
        .map(node_label)
        .collect()
}
