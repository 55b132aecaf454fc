//! Lossless round trip: decode → IR → encode gives back the same `ModelProto`, on every model of
//! the ONNX node suite and every shared model.

mod common;

use onnx_slim::ir::Model;
use onnx_slim::onnx::{decode_bytes, decode_file, encode_model};
use std::path::Path;

fn round_trip(path: &Path) -> Result<(), String> {
    let loaded = decode_file(path).map_err(|e| e.to_string())?;
    let original = loaded.model.clone();
    let ir = Model::from_proto(loaded.model).map_err(|e| e.to_string())?;
    let back = ir.to_proto();
    // Compared as encoded bytes: prost's encoding is deterministic, and unlike `==` on the
    // messages it treats NaN attributes as equal to themselves.
    let want = encode_model(&original);
    let bytes = encode_model(&back);
    if bytes != want {
        return Err("IR → proto differs from the decoded model".into());
    }
    let again = decode_bytes(bytes.into(), path).map_err(|e| e.to_string())?;
    if encode_model(&again) != want {
        return Err("encoded bytes decode to a different model".into());
    }
    Ok(())
}

#[test]
fn every_node_suite_model_round_trips_losslessly() {
    let Some(cases) = common::node_test_cases() else {
        return;
    };
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = round_trip(&case.join("model.onnx")) {
            failures.push(format!("{}: {e}", case.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The README's count (Results, "Lossless round trip and the node suite").
    assert_eq!(cases.len(), 1765, "node-suite models compared");
}

#[test]
fn every_shared_model_round_trips_losslessly() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut compared = 0;
    for m in &models {
        round_trip(&m.join("model.onnx")).unwrap_or_else(|e| panic!("{}: {e}", m.display()));
        compared += 1;
    }
    assert_eq!(compared, 6, "shared models compared");
}
