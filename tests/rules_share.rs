//! `share-identical` and `share-transposed`: merges that are exact bit for bit.

use ndarray::ArrayD;
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::ir::{text::to_text, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{registry, run, Config, DriverOptions, RunReport};
use onnx_slim::verify::{self, compare::verify};

fn apply(proto: &ModelProto, rules: &str) -> (Model, RunReport) {
    let mut m = Model::from_proto(proto.clone()).unwrap();
    let rules = registry::select(rules).unwrap();
    let r = run(
        &mut m,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .unwrap();
    (m, r)
}

/// Outputs of the original and the rewritten model must be bitwise equal (tolerance 0).
fn assert_bit_exact(a: &ModelProto, b: &ModelProto) {
    let sets = vec![verify::inputs::random_inputs(a, &[], 7).unwrap()];
    let report = verify(a, b, &sets, 0.0).unwrap();
    assert!(report.passed, "{report}");
    assert_eq!(report.max_abs_error(), 0.0, "{report}");
}

fn two_matmuls(w_a: ArrayD<f32>, w_b: ArrayD<f32>) -> ModelProto {
    let (k, n) = (w_a.shape()[0] as i64, w_a.shape()[1] as i64);
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, k])
        .initializer_f32("w_a", w_a)
        .initializer_f32("w_b", w_b)
        .node("MatMul", &["x", "w_a"], &["ya"], vec![])
        .node("MatMul", &["x", "w_b"], &["yb"], vec![])
        .output("ya", DataType::Float, &[2, n])
        .output("yb", DataType::Float, &[2, n]);
    b.build()
}

#[test]
fn identical_weights_of_any_size_are_merged_exactly() {
    let w = seeded_f32(&[256, 64], 1);
    let proto = two_matmuls(w.clone(), w);
    let (m, r) = apply(&proto, "share-identical");
    assert_eq!(r.patches(), 1);
    let text = to_text(&m);
    assert!(text.contains("yb = MatMul(x, w_a)"), "{text}");
    assert!(!text.contains("w_b:"), "{text}");
    assert!(r.after.bytes + 256 * 64 * 4 == r.before.bytes);
    assert_bit_exact(&proto, &m.to_proto());
    let (_, again) = apply(&m.to_proto(), "share-identical");
    assert_eq!(again.patches(), 0, "a second run finds nothing");
}

#[test]
fn weights_that_differ_in_one_bit_are_not_merged() {
    let w = seeded_f32(&[16, 8], 2);
    let mut w2 = w.clone();
    w2[[3, 3]] = f32::from_bits(w2[[3, 3]].to_bits() ^ 1);
    let (_, r) = apply(&two_matmuls(w, w2), "share-identical");
    assert_eq!(r.patches(), 0);
}

#[test]
fn a_duplicate_that_is_a_graph_output_is_skipped_with_a_reason() {
    let w = seeded_f32(&[4, 4], 3);
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 4])
        .initializer_f32("w_a", w.clone())
        .initializer_f32("w_b", w)
        .node("MatMul", &["x", "w_a"], &["ya"], vec![])
        .output("ya", DataType::Float, &[2, 4])
        .output("w_b", DataType::Float, &[4, 4]);
    let (_, r) = apply(&b.build(), "share-identical");
    assert_eq!(r.patches(), 0);
    let skips = &r.rules[0].skips;
    assert!(
        skips.iter().any(|s| s.reason.contains("graph output")),
        "{skips:?}"
    );
}

#[test]
fn an_exact_transpose_is_stored_once_as_a_transpose_node() {
    let w = seeded_f32(&[64, 32], 4);
    let wt = w.t().to_owned().into_dyn();
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 64])
        .input("z", DataType::Float, &[2, 32])
        .initializer_f32("w", w)
        .initializer_f32("w_t", wt)
        .node("MatMul", &["x", "w"], &["ya"], vec![])
        .node("MatMul", &["z", "w_t"], &["yb"], vec![])
        .output("ya", DataType::Float, &[2, 32])
        .output("yb", DataType::Float, &[2, 64]);
    let proto = b.build();
    let (m, r) = apply(&proto, "share-transposed");
    assert_eq!(r.patches(), 1);
    let text = to_text(&m);
    assert!(text.contains("w_t = Transpose(w) {perm=[1,0]}"), "{text}");
    assert_eq!(r.before.bytes - r.after.bytes, 64 * 32 * 4);
    assert_bit_exact(&proto, &m.to_proto());
    let (_, again) = apply(&m.to_proto(), "share");
    assert_eq!(again.patches(), 0, "a second run finds nothing");
}

#[test]
fn a_small_transpose_is_not_worth_a_node() {
    let w = seeded_f32(&[4, 2], 5);
    let wt = w.t().to_owned().into_dyn();
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[1, 4])
        .input("z", DataType::Float, &[1, 2])
        .initializer_f32("w", w)
        .initializer_f32("w_t", wt)
        .node("MatMul", &["x", "w"], &["ya"], vec![])
        .node("MatMul", &["z", "w_t"], &["yb"], vec![])
        .output("ya", DataType::Float, &[1, 2])
        .output("yb", DataType::Float, &[1, 4]);
    let (_, r) = apply(&b.build(), "share-transposed");
    assert_eq!(r.patches(), 0);
    assert!(r.rules[0]
        .skips
        .iter()
        .any(|s| s.reason.contains("under 1024 bytes")));
}
