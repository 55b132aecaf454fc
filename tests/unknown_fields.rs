//! Fields this build does not know (a model written by a newer ONNX) at model, graph, node,
//! tensor and attribute level: an untouched model is written back byte for byte, and a rewrite
//! that must re-encode says in its report that they are not kept.

mod common;

use std::process::Command;

use onnx_slim::ir::builder::{attr_f, seeded_f32, tensor_f32, ModelBuilder};
use onnx_slim::onnx::proto::tensor_proto::DataType;
use prost::Message;

/// Field 9999 (never used by ONNX), varint 42.
fn unknown() -> Vec<u8> {
    let mut v = Vec::new();
    prost::encoding::encode_key(9999, prost::encoding::WireType::Varint, &mut v);
    prost::encoding::encode_varint(42, &mut v);
    v
}

/// Field `tag` holding the message `bytes`.
fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut v);
    prost::encoding::encode_varint(bytes.len() as u64, &mut v);
    v.extend_from_slice(bytes);
    v
}

/// x → LeakyRelu(alpha) → Add(W) → y (`extra` nodes after it, to give clean something to do),
/// with an unknown field in the model, the graph, the first node, its attribute and `W`.
fn model_with_unknown_fields(identity: bool) -> Vec<u8> {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[1, 4])
        .node_named(
            "act",
            "LeakyRelu",
            &["x"],
            &["h"],
            vec![attr_f("alpha", 0.1)],
        )
        .node_named(
            "add",
            "Add",
            &["h", "W"],
            &[if identity { "z" } else { "y" }],
            vec![],
        );
    if identity {
        b.node_named("id", "Identity", &["z"], &["y"], vec![]);
    }
    b.output("y", DataType::Float, &[1, 4]);
    let mut m = b.build();
    let mut g = m.graph.take().expect("a graph");
    let mut nodes = std::mem::take(&mut g.node);
    let mut act = nodes.remove(0);
    let attr = act.attribute.remove(0);
    let w = tensor_f32("W", &seeded_f32(&[1, 4], 1));
    // node: its fields, the attribute (field 5) with an unknown field, an unknown field
    let mut node = act.encode_to_vec();
    node.extend(field(5, &[attr.encode_to_vec(), unknown()].concat()));
    node.extend(unknown());
    // graph: its fields, the first node (field 1), the others, W (field 5), an unknown field
    let mut graph = g.encode_to_vec();
    graph.extend(field(1, &node));
    for n in &nodes {
        graph.extend(field(1, &n.encode_to_vec()));
    }
    graph.extend(field(5, &[w.encode_to_vec(), unknown()].concat()));
    graph.extend(unknown());
    // model: its fields, the graph (field 7), an unknown field
    let mut bytes = m.encode_to_vec();
    bytes.extend(field(7, &graph));
    bytes.extend(unknown());
    bytes
}

fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run onnx-slim")
}

#[test]
fn the_built_model_really_holds_unknown_fields() {
    // Decoding and re-encoding loses exactly the five unknown fields (4 bytes each).
    let bytes = model_with_unknown_fields(false);
    let decoded = onnx_slim::onnx::proto::ModelProto::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(bytes.len() - decoded.encoded_len(), 5 * unknown().len());
}

#[test]
fn an_untouched_model_keeps_unknown_fields_byte_for_byte() {
    let d = tempfile::tempdir().expect("temp dir");
    let bytes = model_with_unknown_fields(false);
    std::fs::write(d.path().join("in.onnx"), &bytes).expect("write");
    for rules in ["none", "clean"] {
        let o = run(d.path(), &["in.onnx", "out.onnx", "--rules", rules]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        let out = std::fs::read(d.path().join("out.onnx")).expect("written");
        assert_eq!(out, bytes, "--rules {rules}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("byte for byte"),
            "{o:?}"
        );
    }
}

#[test]
fn a_rewrite_says_the_unknown_fields_are_not_kept() {
    let d = tempfile::tempdir().expect("temp dir");
    let bytes = model_with_unknown_fields(true);
    let decoded = onnx_slim::onnx::proto::ModelProto::decode(bytes.as_slice()).expect("decodes");
    let lost = bytes.len() - decoded.encoded_len();
    assert_eq!(lost, 5 * unknown().len());
    std::fs::write(d.path().join("in.onnx"), &bytes).expect("write");
    let o = run(d.path(), &["in.onnx", "out.onnx", "--rules", "clean"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!(
            "note: {lost} bytes of the input are not decoded by this build"
        )),
        "{stdout}"
    );
}
