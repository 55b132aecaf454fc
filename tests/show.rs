//! The text form (`onnx-slim show`) and `diff` of every fixture, as reviewed snapshots.

mod common;

use std::path::{Path, PathBuf};

use onnx_slim::ir::text::to_text;
use onnx_slim::ir::Model;
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::report::diff::diff;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn proto(name: &str) -> ModelProto {
    onnx_slim::onnx::decode_file(&fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .model
}

fn load(name: &str) -> Model {
    Model::from_proto(proto(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn show_mlp() {
    insta::assert_snapshot!("mlp", to_text(&load("mlp.onnx")));
}

#[test]
fn show_conv() {
    insta::assert_snapshot!("conv", to_text(&load("conv.onnx")));
}

#[test]
fn show_gemm_attrs() {
    insta::assert_snapshot!("gemm_attrs", to_text(&load("gemm_attrs.onnx")));
}

#[test]
fn show_if_subgraph() {
    insta::assert_snapshot!("if_subgraph", to_text(&load("if_subgraph.onnx")));
}

#[test]
fn show_constants() {
    insta::assert_snapshot!("constants", to_text(&load("constants.onnx")));
}

#[test]
fn show_all_attr_types() {
    insta::assert_snapshot!("all_attr_types", to_text(&load("all_attr_types.onnx")));
}

#[test]
fn show_clean_kinds() {
    insta::assert_snapshot!("clean_kinds", to_text(&load("clean_kinds.onnx")));
}

#[test]
fn show_lowrank() {
    insta::assert_snapshot!("lowrank", to_text(&load("lowrank.onnx")));
}

#[test]
fn show_tied_weights() {
    insta::assert_snapshot!("tied_weights", to_text(&load("tied_weights.onnx")));
}

/// The text only depends on the model: re-encoding and re-decoding changes nothing, and neither
/// does a second rendering.
#[test]
fn text_is_stable_across_round_trip() {
    for name in [
        "mlp.onnx",
        "conv.onnx",
        "gemm_attrs.onnx",
        "if_subgraph.onnx",
        "constants.onnx",
        "all_attr_types.onnx",
        "clean_kinds.onnx",
        "lowrank.onnx",
        "tied_weights.onnx",
    ] {
        let m = load(name);
        let again = Model::from_proto(m.to_proto()).unwrap();
        assert_eq!(to_text(&m), to_text(&again), "{name}");
        assert_eq!(to_text(&m), to_text(&m), "{name}");
    }
}

#[test]
fn diff_of_a_model_with_itself_is_empty() {
    let m = load("conv.onnx");
    assert_eq!(diff(&m, &m), "no differences\n");
}

/// `constants.onnx` with its `Identity` removed by editing the proto: the consumer reads the
/// Identity's input instead.
#[test]
fn diff_after_removing_identity() {
    let before = proto("constants.onnx");
    let mut after = before.clone();
    let g = after.graph.as_mut().unwrap();
    let pos = g
        .node
        .iter()
        .position(|n| n.op_type.as_deref() == Some("Identity"))
        .unwrap();
    let id = g.node.remove(pos);
    for n in &mut g.node {
        for i in &mut n.input {
            if *i == id.output[0] {
                *i = id.input[0].clone();
            }
        }
    }
    let d = diff(
        &Model::from_proto(before).unwrap(),
        &Model::from_proto(after).unwrap(),
    );
    assert!(d.contains("Identity"), "{d}");
    insta::assert_snapshot!("diff_constants_without_identity", d);
}

#[test]
fn diff_between_two_fixtures() {
    insta::assert_snapshot!("diff_mlp_conv", diff(&load("mlp.onnx"), &load("conv.onnx")));
}

/// Every shared model renders, deterministically, and its diff with itself is empty.
#[test]
fn shared_models_render() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models"));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        common::skip_loudly(&format!("SKIPPED: ../shared not found ({})", dir.display()));
        return;
    };
    let mut models: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path().join("model.onnx")))
        .filter(|p| p.is_file())
        .collect();
    models.sort();
    for p in models {
        let lm = onnx_slim::onnx::decode_file(&p).unwrap_or_else(|e| panic!("{e}"));
        let m = Model::from_proto(lm.model).unwrap();
        let t = to_text(&m);
        assert!(t.contains("\nnodes:\n"), "{}", p.display());
        assert_eq!(t, to_text(&m), "{}", p.display());
        assert_eq!(diff(&m, &m), "no differences\n", "{}", p.display());
    }
}
