//! The committed fixtures are exactly what `cargo run --example gen_fixtures` writes today, and
//! each one survives decode → IR → encode byte for byte.

mod common;
#[path = "../examples/gen_fixtures.rs"]
mod gen_fixtures;

use std::path::Path;

use onnx_slim::ir::Model;
use onnx_slim::onnx::{decode_bytes, encode_model};

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

#[test]
fn committed_fixtures_match_the_generator() {
    let mut stale = Vec::new();
    for (name, model) in gen_fixtures::fixtures() {
        let want = encode_model(&model);
        match std::fs::read(dir().join(name)) {
            Ok(have) if have == want => {}
            Ok(have) => stale.push(format!(
                "{name}: {} bytes on disk, {} generated",
                have.len(),
                want.len()
            )),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    assert!(
        stale.is_empty(),
        "fixtures are stale; run `cargo run --example gen_fixtures`:\n{}",
        stale.join("\n")
    );
}

#[test]
fn the_generator_makes_exactly_the_listed_fixtures() {
    let names: Vec<&str> = gen_fixtures::fixtures().iter().map(|(n, _)| *n).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, common::FIXTURES);
    // And the folder holds exactly those (common::fixtures asserts it).
    assert_eq!(common::fixtures().len(), common::FIXTURES.len());
}

#[test]
fn generation_is_deterministic() {
    let a: Vec<Vec<u8>> = gen_fixtures::fixtures()
        .iter()
        .map(|(_, m)| encode_model(m))
        .collect();
    let b: Vec<Vec<u8>> = gen_fixtures::fixtures()
        .iter()
        .map(|(_, m)| encode_model(m))
        .collect();
    assert_eq!(a, b);
}

#[test]
fn every_onnx_file_in_fixtures_is_generated_and_small() {
    let names: Vec<&str> = gen_fixtures::fixtures().iter().map(|(n, _)| *n).collect();
    for e in std::fs::read_dir(dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "onnx") {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                names.contains(&name.as_str()),
                "{name} is not made by gen_fixtures"
            );
            let len = std::fs::metadata(&p).unwrap().len();
            assert!(len < 100 * 1024, "{name} is {len} bytes");
        }
    }
}

#[test]
fn fixtures_round_trip_byte_identically() {
    let mut compared = 0;
    for (name, _) in gen_fixtures::fixtures() {
        compared += 1;
        let path = dir().join(name);
        let bytes = std::fs::read(&path).unwrap();
        let proto = decode_bytes(bytes.clone().into(), &path).unwrap();
        let model = Model::from_proto(proto).unwrap_or_else(|e| panic!("{name}: {e}"));
        model.graph.check().unwrap();
        let again = encode_model(&model.to_proto());
        assert!(
            again == bytes,
            "{name}: {} bytes re-encoded, {} on disk",
            again.len(),
            bytes.len()
        );
    }
    assert_eq!(compared, common::FIXTURES.len());
}

/// Fixtures that are not meant to run, and why (printed as a skip; one that runs fails).
const NOT_RUNNABLE: &[(&str, &str)] = &[(
    "all_attr_types.onnx",
    "exercises the encoder: custom-domain ops (com.example) no runtime has",
)];

/// Every runnable fixture loads, optimizes and runs in tract (symbolic dims bound to 1).
#[test]
fn runnable_fixtures_run_in_tract() {
    use onnx_slim::onnx::proto::{tensor_shape_proto::dimension::Value, type_proto};
    use tract_onnx::prelude::*;

    let mut ran = 0;
    for (name, model) in gen_fixtures::fixtures() {
        if let Some((_, why)) = NOT_RUNNABLE.iter().find(|(n, _)| *n == name) {
            let bytes = encode_model(&model);
            assert!(
                tract_onnx::onnx()
                    .model_for_read(&mut &bytes[..])
                    .and_then(|m| m.into_optimized())
                    .is_err(),
                "{name} loads in tract now: remove it from NOT_RUNNABLE"
            );
            common::skip_loudly(&format!("SKIPPED: running {name} in tract: {why}"));
            continue;
        }
        ran += 1;
        let bytes = encode_model(&model);
        let mut im = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let mut inputs: TVec<TValue> = tvec![];
        for (i, vi) in model.graph.as_ref().unwrap().input.iter().enumerate() {
            let Some(type_proto::Value::TensorType(t)) =
                vi.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                panic!("{name}: input {i} is not a tensor");
            };
            let shape: Vec<usize> = t
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(v)) => v as usize,
                    _ => 1,
                })
                .collect();
            let tensor = if t.elem_type
                == Some(onnx_slim::onnx::proto::tensor_proto::DataType::Bool as i32)
            {
                tract_ndarray::ArrayD::from_elem(shape, true).into_tensor()
            } else {
                tract_ndarray::ArrayD::from_elem(shape, 0.5f32).into_tensor()
            };
            im.set_input_fact(
                i,
                InferenceFact::dt_shape(tensor.datum_type(), tensor.shape()),
            )
            .unwrap();
            inputs.push(tensor.into_tvalue());
        }
        let out = im
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .and_then(|p| p.run(inputs))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(!out.is_empty(), "{name}");
    }
    assert_eq!(ran, common::FIXTURES.len() - NOT_RUNNABLE.len());
}
