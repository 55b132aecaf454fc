//! onnxruntime's side of the interop checks: the inputs of test sets and the outputs tract
//! computed, written as `test_data_set_N` folders for `scripts/ort_check.py`.

use std::path::{Path, PathBuf};

use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto, TensorProto};
use onnx_slim::verify::{self, InputSet};
use tract_onnx::prelude::{DatumType, Tensor};

/// `t` as a `TensorProto` named `name` (the element types the models here take and give).
pub fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    let (dt, raw): (DataType, Vec<u8>) = match t.datum_type() {
        DatumType::F32 => (
            DataType::Float,
            t.to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DatumType::I64 => (
            DataType::Int64,
            t.to_plain_array_view::<i64>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        other => panic!("`{name}`: no TensorProto writer for {other:?} in this test"),
    };
    TensorProto {
        name: Some(name.into()),
        dims: t.shape().iter().map(|d| *d as i64).collect(),
        data_type: Some(dt as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// Writes each set as a `test_data_set_N` folder under `root`: its inputs and the outputs tract
/// computed for `model`.
pub fn tract_test_sets(
    root: &Path,
    model: &ModelProto,
    sets: &[InputSet],
) -> Result<Vec<PathBuf>, String> {
    use prost::Message;
    let outs = verify::run_many(model, sets, "quantized").map_err(|e| e.to_string())?;
    let mut dirs = Vec::new();
    for (i, (set, out)) in sets.iter().zip(&outs).enumerate() {
        let d = root.join(format!("test_data_set_{i}"));
        std::fs::create_dir_all(&d).unwrap();
        for (k, (name, t)) in set.tensors.iter().enumerate() {
            std::fs::write(
                d.join(format!("input_{k}.pb")),
                tensor_proto(name, t).encode_to_vec(),
            )
            .unwrap();
        }
        for (k, (name, t)) in out.iter().enumerate() {
            std::fs::write(
                d.join(format!("output_{k}.pb")),
                tensor_proto(name, t).encode_to_vec(),
            )
            .unwrap();
        }
        dirs.push(d);
    }
    Ok(dirs)
}

/// Runs `scripts/ort_check.py ORIGINAL REWRITTEN TOLERANCE [args…]` with `py` (the arguments
/// after the tolerance are its flags, then test data folders). `Ok` with its report when it
/// passes; `Err` with the report and the last line of its stderr when it does not.
pub fn ort_check<S: AsRef<std::ffi::OsStr>>(
    py: &Path,
    original: &Path,
    rewritten: &Path,
    tolerance: f64,
    args: impl IntoIterator<Item = S>,
) -> Result<String, String> {
    let out = std::process::Command::new(py)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ort_check.py"))
        .args([original, rewritten])
        .arg(tolerance.to_string())
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", py.display()))?;
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(report)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("{report}{}", stderr.lines().last().unwrap_or("")))
    }
}
