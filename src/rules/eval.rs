//! Evaluating one operator on constant inputs with tract, for constant folding.
//!
//! The node is copied into a tiny model (the original model's opset imports, the constant inputs
//! as initializers, one graph output per used output), which tract loads, optimises and runs.
//! Results come back as `TensorProto`s of the dtype tract produced; callers check it against the
//! dtype the op must produce.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bytes::Bytes;
use tract_onnx::prelude::*;

use crate::ir::Model;
use crate::onnx::proto::{
    tensor_proto::DataType, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};

/// Runs `node` on `inputs` (`None` for omitted optional inputs) and returns its outputs, `None`
/// for unnamed outputs.
pub fn eval_node(
    model: &Model,
    node: &NodeProto,
    inputs: &[Option<&TensorProto>],
) -> std::result::Result<Vec<Option<TensorProto>>, String> {
    let mut n = node.clone();
    n.name = Some("fold".into());
    let mut inits = Vec::new();
    n.input = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| match t {
            Some(t) => {
                let mut t = (*t).clone();
                let name = format!("in{i}");
                t.name = Some(name.clone());
                inits.push(t);
                name
            }
            None => String::new(),
        })
        .collect();
    n.output = node
        .output
        .iter()
        .enumerate()
        .map(|(i, o)| {
            if o.is_empty() {
                String::new()
            } else {
                format!("out{i}")
            }
        })
        .collect();
    let outputs: Vec<ValueInfoProto> = n
        .output
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| ValueInfoProto {
            name: Some(o.clone()),
            ..Default::default()
        })
        .collect();
    let proto = ModelProto {
        ir_version: model.shell.ir_version.or(Some(8)),
        opset_import: model.shell.opset_import.clone(),
        graph: Some(GraphProto {
            name: Some("fold".into()),
            node: vec![n.clone()],
            initializer: inits,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    };
    let bytes = crate::onnx::encode_model(&proto);
    let run = catch_unwind(AssertUnwindSafe(|| -> TractResult<Vec<Tensor>> {
        let m = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
        let plan = m.into_optimized()?.into_runnable()?;
        let out = plan.run(tvec![])?;
        Ok(out.into_iter().map(|v| v.into_tensor()).collect())
    }));
    let tensors = match run {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Err(format!("tract cannot evaluate it: {}", e.root_cause())),
        Err(_) => return Err("tract panicked evaluating it".into()),
    };
    let mut it = tensors.into_iter();
    let mut result = Vec::new();
    for o in &node.output {
        if o.is_empty() {
            result.push(None);
            continue;
        }
        let t = it.next().ok_or("tract returned fewer outputs")?;
        result.push(Some(to_proto(o, &t)?));
    }
    Ok(result)
}

/// A tract tensor as a `TensorProto` named `name`, raw little-endian data.
pub fn to_proto(name: &str, t: &Tensor) -> std::result::Result<TensorProto, String> {
    let dt = t.datum_type();
    let (onnx, t): (DataType, std::borrow::Cow<Tensor>) = if dt == DatumType::F32 {
        (DataType::Float, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::F64 {
        (DataType::Double, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::F16 {
        (DataType::Float16, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::I64 {
        (DataType::Int64, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::I32 {
        (DataType::Int32, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::I16 {
        (DataType::Int16, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::I8 {
        (DataType::Int8, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::U64 {
        (DataType::Uint64, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::U32 {
        (DataType::Uint32, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::U16 {
        (DataType::Uint16, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::U8 {
        (DataType::Uint8, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::Bool {
        (DataType::Bool, std::borrow::Cow::Borrowed(t))
    } else if dt == DatumType::TDim {
        let c = t
            .cast_to::<i64>()
            .map_err(|e| format!("a symbolic result: {e}"))?
            .into_owned();
        (DataType::Int64, std::borrow::Cow::Owned(c))
    } else {
        return Err(format!("tract produced {dt:?}, which is not folded"));
    };
    let raw = t.as_bytes().to_vec();
    Ok(TensorProto {
        name: Some(name.to_string()),
        dims: t.shape().iter().map(|d| *d as i64).collect(),
        data_type: Some(onnx as i32),
        raw_data: Some(Bytes::from(raw)),
        ..Default::default()
    })
}
