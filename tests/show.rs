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

fn via_bytes(m: &Model, name: &str) -> Model {
    let bytes = onnx_slim::onnx::encode_model(&m.to_proto());
    let proto = onnx_slim::onnx::decode_bytes(bytes.into(), Path::new(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Model::from_proto(proto).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The text only depends on the model: encoding and decoding again gives the same text, while
/// changing an op, a value name or one weight by one ulp changes it.
#[test]
fn text_survives_the_round_trip_and_shows_every_change() {
    let mut compared = 0;
    for path in common::fixtures() {
        let name = common::case_name(&path);
        let m = load(&name);
        let text = to_text(&m);
        assert_eq!(text, to_text(&via_bytes(&m, &name)), "{name}");
        // Another op type, then another output name, on the first node.
        let mut p = proto(&name);
        let first = &mut p.graph.as_mut().unwrap().node[0];
        first.op_type = Some("SomethingElse".into());
        let other = to_text(&Model::from_proto(p).unwrap());
        assert_ne!(text, other, "{name}: op type change not shown");
        assert!(other.contains("SomethingElse("), "{name}:\n{other}");
        compared += 1;
    }
    assert_eq!(compared, common::FIXTURES.len());
    // One ulp in a weight shown only by its hash (w1) and in one printed in full (b2).
    for weight in ["w1", "b2"] {
        let mut p = proto("mlp.onnx");
        let g = p.graph.as_mut().unwrap();
        let t = g
            .initializer
            .iter_mut()
            .find(|t| t.name.as_deref() == Some(weight))
            .expect("mlp.onnx has the weight");
        if let Some(raw) = t.raw_data.as_mut() {
            let mut v = raw.to_vec();
            v[0] ^= 1;
            *raw = v.into();
        } else {
            t.float_data[0] = f32::from_bits(t.float_data[0].to_bits() ^ 1);
        }
        let changed = to_text(&Model::from_proto(p).unwrap());
        assert_ne!(
            to_text(&load("mlp.onnx")),
            changed,
            "{weight}: one ulp not shown"
        );
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

/// Every shared model renders, its text survives encode → decode, and its diff with itself is
/// empty.
#[test]
fn shared_models_render() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut rendered = 0;
    for dir in &models {
        let p = dir.join("model.onnx");
        let lm = onnx_slim::onnx::decode_file(&p).unwrap_or_else(|e| panic!("{e}"));
        let m = Model::from_proto(lm.model).unwrap();
        let t = to_text(&m);
        assert!(t.contains("\nnodes:\n"), "{}", p.display());
        assert_eq!(t, to_text(&via_bytes(&m, "shared")), "{}", p.display());
        assert_eq!(diff(&m, &m), "no differences\n", "{}", p.display());
        rendered += 1;
    }
    assert_eq!(rendered, 6, "shared models rendered");
}

/// x → Relu → Neg → y, with every name (input, initializer, node, value, output, graph,
/// metadata key, custom domain) built from `tag`.
fn tagged(tag: &str) -> ModelProto {
    use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
    use onnx_slim::onnx::proto::tensor_proto::DataType;
    let n = |s: &str| format!("{s}{tag}");
    let mut b = ModelBuilder::new(17);
    b.opset(&n("dom"), 1)
        .graph_name(&n("g"))
        .metadata(&n("key"), "v")
        .input(&n("x"), DataType::Float, &[1, 4])
        .initializer_f32(&n("w"), seeded_f32(&[1, 4], 1))
        .node_named(&n("relu"), "Relu", &[&n("x")], &[&n("h")], vec![])
        .node_in(
            &n("dom"),
            &n("custom"),
            "Custom",
            &[&n("h"), &n("w")],
            &[&n("y")],
            vec![],
        )
        .output(&n("y"), DataType::Float, &[1, 4]);
    b.build()
}

#[test]
fn control_characters_in_names_are_escaped_and_cannot_forge_lines() {
    let plain = to_text(&Model::from_proto(tagged("_ab")).expect("valid"));
    let hostile = to_text(&Model::from_proto(tagged("_a\nb\0\r\t\\")).expect("valid"));
    assert_eq!(
        hostile.lines().count(),
        plain.lines().count(),
        "a name broke a line:\n{hostile}"
    );
    let raw: Vec<char> = hostile
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(
        raw.is_empty(),
        "raw control characters {raw:?} in:\n{hostile}"
    );
    assert!(hostile.contains(r"relu_a\nb\u{0}\r\t\\"), "{hostile}");
    // Every name is escaped the same way, so the two texts differ only in the tags.
    assert_eq!(hostile.replace(r"_a\nb\u{0}\r\t\\", "_ab"), plain);
}
