//! Tiny protobuf builders for tests that must write models field by field (bad input,
//! external data, mutation), where the library's `ModelBuilder` would hide what is being tested.
#![allow(dead_code)]

use bytes::Bytes;
use onnx_slim::onnx::proto::tensor_proto::{DataLocation, DataType};
use onnx_slim::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use onnx_slim::onnx::proto::{
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// A float32 tensor of `dims` with deterministic values in [-0.5, 0.5).
pub fn f32_tensor(name: &str, dims: &[i64], seed: u32) -> TensorProto {
    let n: i64 = dims.iter().product();
    let mut raw = Vec::with_capacity(n as usize * 4);
    for i in 0..n as u32 {
        let v = ((i.wrapping_mul(2654435761).wrapping_add(seed)) % 1000) as f32 / 1000.0 - 0.5;
        raw.extend_from_slice(&v.to_le_bytes());
    }
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    }
}

/// A tensor-typed value; a negative dim becomes the symbol `N`.
pub fn value_info(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
    let dims: Vec<String> = dims
        .iter()
        .map(|&d| if d < 0 { "N".into() } else { d.to_string() })
        .collect();
    value_info_dims(name, elem, &dims)
}

/// A tensor-typed value whose dims are numbers or symbols (`"1"`, `"batch"`).
pub fn value_info_dims<S: AsRef<str>>(name: &str, elem: DataType, dims: &[S]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.as_ref().parse::<i64>() {
                Ok(v) => dimension::Value::DimValue(v),
                Err(_) => dimension::Value::DimParam(d.as_ref().to_string()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

/// A default-domain node.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The test MLP: `x[batch,16]` → MatMul `W1[16,32]` → Add `b1[32]` → Relu → MatMul `W2[32,8]` →
/// `out[batch,8]` (a negative `batch` is the symbol `N`).
pub fn mlp_graph(batch: i64, out: &str) -> GraphProto {
    GraphProto {
        name: Some("mlp".into()),
        node: vec![
            node("MatMul", "mm1", &["x", "W1"], &["h0"]),
            node("Add", "add1", &["h0", "b1"], &["h1"]),
            node("Relu", "relu1", &["h1"], &["h"]),
            node("MatMul", "mm2", &["h", "W2"], &[out]),
        ],
        initializer: vec![
            f32_tensor("W1", &[16, 32], 1),
            f32_tensor("b1", &[32], 2),
            f32_tensor("W2", &[32, 8], 3),
        ],
        input: vec![value_info("x", DataType::Float, &[batch, 16])],
        output: vec![value_info(out, DataType::Float, &[batch, 8])],
        ..Default::default()
    }
}

/// `graph` as an IR 8 model importing the default domain at `opset`.
pub fn model(graph: GraphProto, producer: &str, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        producer_name: Some(producer.into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// Moves initializer `name`'s payload to `location` at `offset` (the caller writes the file).
pub fn make_external(m: &mut ModelProto, name: &str, location: &str, offset: u64) -> Vec<u8> {
    let g = m.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap();
    let raw = t.raw_data.take().unwrap();
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.external_data = vec![
        entry("location", location.into()),
        entry("offset", offset.to_string()),
        entry("length", raw.len().to_string()),
    ];
    t.data_location = Some(DataLocation::External as i32);
    raw.to_vec()
}
