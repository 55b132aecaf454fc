//! The `lowrank` rule (L001): text before/after, every skip reason, Gemm attribute combinations
//! and Conv checked numerically in tract, the full-rank exactness oracle, idempotence (factors
//! are never re-factored), the data-aware path, and bad flags.

use std::path::Path;
use std::process::Command;

use ndarray::{Array2, ArrayD, IxDyn};
use onnx_slim::calibrate;
use onnx_slim::ir::builder::{attr_f, attr_i, attr_ints, attr_s, attr_t, seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, text, Model, NodeKind};
use onnx_slim::onnx::encode_model;
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, Rule, RunReport};
use onnx_slim::rules::lowrank::{LowrankConfig, RankMode};
use onnx_slim::verify::InputSet;
use onnx_slim::verify::Outputs;
use prost::Message;
use tract_onnx::prelude::Tensor;

mod common;

use common::compare;

fn lowrank() -> Vec<&'static dyn Rule> {
    registry::select("lowrank").expect("the lowrank rule is registered")
}

fn config(mode: Option<RankMode>, tolerance: Option<f64>) -> Config {
    Config {
        lowrank: LowrankConfig {
            mode,
            tolerance,
            // Test models are small; the default (4096) is for real ones.
            min_params: 64,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn rewrite(proto: &ModelProto, cfg: &Config) -> (Model, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let report = rewrite::run(&mut m, &lowrank(), cfg, &DriverOptions::default()).expect("runs");
    (m, report)
}

fn report_lines(r: &RunReport) -> String {
    let mut s = String::new();
    for rr in &r.rules {
        for w in &rr.rewrites {
            s += &format!("rewrote {}\n", w.description);
        }
        for k in &rr.skips {
            s += &format!("skipped {} `{}`: {}\n", k.op, k.node, k.reason);
        }
    }
    s
}

/// `a · b` with `a: [k, r]`, `b: [r, n]` seeded: a matrix of rank `r` exactly.
fn low_rank(k: usize, n: usize, r: usize, seed: u64) -> Array2<f32> {
    let a = seeded_f32(&[k, r], seed)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let b = seeded_f32(&[r, n], seed + 1)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    a.dot(&b)
}

fn set(inputs: &[(&str, ArrayD<f32>)]) -> InputSet {
    InputSet::new(
        "test",
        inputs
            .iter()
            .map(|(n, a)| (n.to_string(), Tensor::from(a.clone())))
            .collect(),
    )
}

fn run_tract(proto: &ModelProto, s: &InputSet) -> Outputs {
    let bytes = encode_model(proto);
    let plan = calibrate::compile(&bytes, s).expect("tract compiles");
    compare::positional(calibrate::run_plan(&plan, s).expect("tract runs"))
}

fn f32_view(o: &Outputs, k: usize) -> ndarray::ArrayViewD<'_, f32> {
    o[k].1.to_plain_array_view::<f32>().expect("f32 output")
}

/// The original and the rewritten model agree on `s` within `tol` (the criterion of
/// `onnx_slim::verify::compare`: `|a − b| ≤ tol·max(1, |a|)`, NaN-, dtype-, shape- and
/// output-count aware).
fn assert_same_outputs(original: &ModelProto, rewritten: &Model, s: &InputSet, tol: f32) {
    let a = run_tract(original, s);
    let b = run_tract(&rewritten.to_proto(), s);
    compare::assert_outputs_match(&a, &b, tol, "rewritten vs original");
}

fn op_count(m: &Model, op: &str) -> usize {
    m.graph
        .ops()
        .into_iter()
        .filter(|id| m.graph.node(*id).op_type() == op)
        .count()
}

// ---------------------------------------------------------------------------------------------

/// x[2,64] → MatMul W[64,48] (rank 6) → Relu → MatMul W2[48,10] (too small).
fn mlp() -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 64])
        .initializer_f32("w1", low_rank(64, 48, 6, 1).into_dyn())
        .initializer_f32("w2", seeded_f32(&[48, 10], 3))
        .node_named("fc1", "MatMul", &["x", "w1"], &["h"], vec![])
        .node_named("relu", "Relu", &["h"], &["hr"], vec![])
        .node_named("fc2", "MatMul", &["hr", "w2"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 10]);
    b.build()
}

/// The factors' content hashes depend on float rounding inside the SVD; the snapshot keeps
/// their names and shapes only.
fn redact_factor_hashes(text: &str) -> String {
    text.lines()
        .map(|l| match (l.contains(".lowrank"), l.rfind(" #")) {
            (true, Some(i)) if l.len() == i + 10 => format!("{} #<factor>", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn snapshot_of_a_small_model_before_and_after() {
    let proto = mlp();
    let before = text::to_text(&Model::from_proto(proto.clone()).unwrap());
    let (after, report) = rewrite(&proto, &config(None, Some(1e-4)));
    insta::assert_snapshot!(
        "mlp_before_after",
        format!(
            "--- before\n{before}\n--- after\n{}\n--- report\n{}",
            redact_factor_hashes(&text::to_text(&after)),
            report_lines(&report)
        )
    );
    let x = seeded_f32(&[2, 64], 9);
    assert_same_outputs(&proto, &after, &set(&[("x", x)]), 1e-4);
}

#[test]
fn every_skip_reason_is_reported() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[4, 64])
        .input("z", DataType::Float, &[64, 64])
        .input("img", DataType::Float, &[1, 8, 6, 6])
        .input("xb", DataType::Float, &[3, 4, 64])
        // shared by two MatMuls
        .initializer_f32("shared", seeded_f32(&[64, 64], 1))
        .node_named("shared_a", "MatMul", &["x", "shared"], &["s1"], vec![])
        .node_named("shared_b", "MatMul", &["x", "shared"], &["s2"], vec![])
        // not constant
        .node_named("computed", "MatMul", &["x", "z"], &["c"], vec![])
        // batched 3-D weight
        .initializer_f32("w3", seeded_f32(&[3, 64, 64], 2))
        .node_named("batched", "MatMul", &["xb", "w3"], &["b3"], vec![])
        // too small
        .initializer_f32("tiny", seeded_f32(&[64, 8], 3))
        .node_named("small", "MatMul", &["x", "tiny"], &["t"], vec![])
        // full-rank random weight: no rank below the break-even keeps energy 0.95
        .initializer_f32("dense", seeded_f32(&[64, 96], 4))
        .node_named("no_saving", "MatMul", &["x", "dense"], &["d"], vec![])
        // grouped convolution
        .initializer_f32("gw", seeded_f32(&[64, 4, 3, 3], 5))
        .node_named(
            "grouped",
            "Conv",
            &["img", "gw"],
            &["g"],
            vec![attr_i("group", 2), attr_ints("pads", &[1, 1, 1, 1])],
        )
        // Gemm whose B is computed
        .node_named("gemm_b", "Gemm", &["x", "z"], &["gb"], vec![])
        // both inputs constant
        .initializer_f32("k1", seeded_f32(&[64, 64], 6))
        .initializer_f32("k2", seeded_f32(&[64, 64], 7))
        .node_named("folded", "MatMul", &["k1", "k2"], &["k"], vec![])
        // low-rank but the saving asked for is too high
        .initializer_f32("lr", low_rank(64, 64, 20, 8).into_dyn())
        .node_named("min_saving", "MatMul", &["x", "lr"], &["m"], vec![]);
    for o in ["s1", "s2", "c", "b3", "t", "d", "g", "gb", "k", "m"] {
        b.output(o, DataType::Float, &[]);
    }
    let proto = b.build();
    let mut cfg = config(None, None);
    cfg.lowrank.min_saving = 0.5;
    cfg.lowrank.min_params = 1024;
    let (after, report) = rewrite(&proto, &cfg);
    assert_eq!(report.patches(), 0, "{}", report_lines(&report));
    assert_eq!(op_count(&after, "MatMul"), 8);
    insta::assert_snapshot!("skip_reasons", report_lines(&report));
}

#[test]
fn gemm_every_attribute_combination_matches_tract() {
    let (m, k, n, r) = (5usize, 48usize, 40usize, 4usize);
    let mut checked = 0;
    for opset in [13i64, 9] {
        for trans_a in [0i64, 1] {
            for trans_b in [0i64, 1] {
                for (alpha, beta) in [(1.0f32, 1.0f32), (0.5, 2.0)] {
                    for c in ["none", "vector", "matrix", "scalar"] {
                        if opset < 11 && c == "none" {
                            continue; // C is required before opset 11
                        }
                        let w = low_rank(k, n, r, 11);
                        let bmat = if trans_b == 1 { w.t().to_owned() } else { w };
                        let mut bld = ModelBuilder::new(opset);
                        let a_shape = if trans_a == 1 { [k, m] } else { [m, k] };
                        bld.input(
                            "a",
                            DataType::Float,
                            &[a_shape[0] as i64, a_shape[1] as i64],
                        )
                        .initializer_f32("b", bmat.into_dyn());
                        let mut ins = vec!["a", "b"];
                        let c_arr = match c {
                            "vector" => Some(seeded_f32(&[n], 12)),
                            "matrix" => Some(seeded_f32(&[m, n], 13)),
                            "scalar" => Some(seeded_f32(&[1], 14)),
                            _ => None,
                        };
                        if let Some(ca) = c_arr {
                            bld.initializer_f32("c", ca);
                            ins.push("c");
                        }
                        bld.node_named(
                            "gemm",
                            "Gemm",
                            &ins,
                            &["y"],
                            vec![
                                attr_i("transA", trans_a),
                                attr_i("transB", trans_b),
                                attr_f("alpha", alpha),
                                attr_f("beta", beta),
                            ],
                        )
                        .output(
                            "y",
                            DataType::Float,
                            &[m as i64, n as i64],
                        );
                        let proto = bld.build();
                        let (after, report) = rewrite(&proto, &config(None, Some(1e-5)));
                        let what = format!(
                            "opset {opset} transA {trans_a} transB {trans_b} alpha {alpha} beta {beta} C {c}"
                        );
                        assert_eq!(report.patches(), 1, "{what}: {}", report_lines(&report));
                        assert!(
                            report_lines(&report).contains("rank 4 "),
                            "{what}: {}",
                            report_lines(&report)
                        );
                        let x = seeded_f32(&a_shape, 15);
                        let a = run_tract(&proto, &set(&[("a", x.clone())]));
                        let b = run_tract(&after.to_proto(), &set(&[("a", x)]));
                        compare::assert_outputs_match(&a, &b, 1e-4, &what);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 56);
}

fn conv_model(auto_pad: Option<&str>, bias: bool, as_constant: bool) -> ModelProto {
    let (m, c, kh, kw) = (32usize, 16usize, 3usize, 3usize);
    let w = low_rank(m, c * kh * kw, 5, 21)
        .into_shape_with_order(IxDyn(&[m, c, kh, kw]))
        .unwrap();
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[1, c as i64, 11, 13]);
    if as_constant {
        b.node_named(
            "w_const",
            "Constant",
            &[],
            &["w"],
            vec![attr_t("value", tensor::from_f32("w", &w))],
        );
    } else {
        b.initializer_f32("w", w);
    }
    let mut ins = vec!["x", "w"];
    if bias {
        b.initializer_f32("bias", seeded_f32(&[m], 22));
        ins.push("bias");
    }
    let mut attrs = vec![
        attr_ints("kernel_shape", &[kh as i64, kw as i64]),
        attr_ints("strides", &[2, 1]),
        attr_ints("dilations", &[1, 2]),
    ];
    match auto_pad {
        Some(p) => attrs.push(attr_s("auto_pad", p.as_bytes())),
        None => attrs.push(attr_ints("pads", &[1, 2, 0, 1])),
    }
    b.node_named("conv", "Conv", &ins, &["y"], attrs)
        .output("y", DataType::Float, &[]);
    b.build()
}

#[test]
fn conv_is_factored_into_kxk_then_1x1_and_matches_tract() {
    for (auto_pad, bias, constant) in [
        (None, true, false),
        (None, false, true),
        (Some("SAME_UPPER"), true, false),
        (Some("VALID"), true, true),
    ] {
        let proto = conv_model(auto_pad, bias, constant);
        let (after, report) = rewrite(&proto, &config(None, Some(1e-5)));
        let lines = report_lines(&report);
        assert_eq!(report.patches(), 1, "{lines}");
        assert!(lines.contains("Conv 3×3 16→5 + Conv 1×1 5→32"), "{lines}");
        assert_eq!(op_count(&after, "Conv"), 2);
        // Factors keep the kind of the original weight.
        let consts = after
            .graph
            .ops()
            .into_iter()
            .filter(|id| after.graph.node(*id).op_type() == "Constant")
            .count();
        assert_eq!(consts, if constant { 2 } else { 0 }, "{auto_pad:?}");
        let x = seeded_f32(&[1, 16, 11, 13], 23);
        assert_same_outputs(&proto, &after, &set(&[("x", x)]), 1e-4);
    }
}

#[test]
fn matmul_with_the_weight_on_the_left_matches_tract() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 40, 7])
        .initializer_f32("w", low_rank(36, 40, 3, 31).into_dyn())
        .node_named("left", "MatMul", &["w", "x"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 36, 7]);
    let proto = b.build();
    let (after, report) = rewrite(&proto, &config(None, Some(1e-5)));
    assert_eq!(report.patches(), 1, "{}", report_lines(&report));
    assert!(report_lines(&report).contains("rank 3 "));
    let x = seeded_f32(&[2, 40, 7], 32);
    assert_same_outputs(&proto, &after, &set(&[("x", x)]), 1e-4);
}

/// At full rank (allowed here by a negative minimum saving) the factors reproduce the weight:
/// outputs match the original within 1e-4 relative, for MatMul, Gemm and Conv.
#[test]
fn full_rank_is_exact() {
    let mut b = ModelBuilder::new(13);
    b.input("x", DataType::Float, &[3, 24])
        .input("img", DataType::Float, &[1, 6, 7, 7])
        .initializer_f32("w", seeded_f32(&[24, 20], 41))
        .node_named("mm", "MatMul", &["x", "w"], &["h"], vec![])
        .initializer_f32("gb", seeded_f32(&[30, 20], 42))
        .initializer_f32("gc", seeded_f32(&[30], 43))
        .node_named(
            "gemm",
            "Gemm",
            &["h", "gb", "gc"],
            &["y"],
            vec![attr_i("transB", 1), attr_f("alpha", 0.7)],
        )
        .initializer_f32("cw", seeded_f32(&[12, 6, 3, 3], 44))
        .node_named(
            "conv",
            "Conv",
            &["img", "cw"],
            &["z"],
            vec![attr_ints("pads", &[1, 1, 1, 1])],
        )
        .output("y", DataType::Float, &[3, 30])
        .output("z", DataType::Float, &[1, 12, 7, 7]);
    let proto = b.build();
    let mut cfg = config(Some(RankMode::Rank(1000)), None);
    cfg.lowrank.min_saving = -10.0;
    cfg.lowrank.min_params = 1;
    let (after, report) = rewrite(&proto, &cfg);
    let lines = report_lines(&report);
    assert_eq!(report.patches(), 3, "{lines}");
    for want in ["rank 20 ", "rank 20 ", "rank 12 "] {
        assert!(lines.contains(want), "{lines}");
    }
    let s = set(&[
        ("x", seeded_f32(&[3, 24], 45)),
        ("img", seeded_f32(&[1, 6, 7, 7], 46)),
    ]);
    assert_same_outputs(&proto, &after, &s, 1e-4);
}

/// A second run finds nothing: the factors form low-rank pairs, which are never factored again,
/// whatever the options (a thin factor could otherwise be cut further at a lower rank).
#[test]
fn second_run_finds_nothing_and_factors_are_not_refactored() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 128])
        .initializer_f32("w", seeded_f32(&[128, 128], 51))
        .node_named("fc", "MatMul", &["x", "w"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 128]);
    let proto = b.build();
    let cfg = config(Some(RankMode::Rank(40)), None);
    let (once, r1) = rewrite(&proto, &cfg);
    assert_eq!(r1.patches(), 1);
    // The same options, then a much more aggressive pass over the result.
    for again in [cfg.clone(), config(Some(RankMode::Rank(2)), None)] {
        let (twice, r2) = rewrite(&once.to_proto(), &again);
        let lines = report_lines(&r2);
        assert_eq!(r2.patches(), 0, "{lines}");
        assert_eq!(text::to_text(&twice), text::to_text(&once));
        assert!(
            lines.contains("already a low-rank pair: first factor (rank 40)"),
            "{lines}"
        );
        assert!(
            lines.contains("already a low-rank pair: second factor (rank 40)"),
            "{lines}"
        );
    }
    // Without the pair, a thin [128×40] factor alone cannot save anything at rank ≥ 36
    // (r·168 < 0.9·5120 needs r ≤ 27): the saving rule also protects it.
    let mut alone = ModelBuilder::new(17);
    let a = once
        .graph
        .const_nodes()
        .into_iter()
        .find_map(|id| match &once.graph.node(id).kind {
            NodeKind::Initializer(t) if t.dims == vec![128, 40] => Some(tensor::to_f32(t).unwrap()),
            _ => None,
        })
        .expect("the first factor");
    alone
        .input("x", DataType::Float, &[2, 128])
        .initializer_f32("a", a)
        .node_named("thin", "MatMul", &["x", "a"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 40]);
    let (_, r3) = rewrite(&alone.build(), &config(None, Some(0.01)));
    assert_eq!(r3.patches(), 0, "{}", report_lines(&r3));
}

/// Calibration data in a temp dir; the data-aware factors lose less on those activations than
/// plain SVD at the same rank.
#[test]
fn data_aware_beats_plain_svd_on_the_calibration_activations() {
    let (k, n, r) = (48usize, 40usize, 6usize);
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[64, k as i64])
        .initializer_f32("w", seeded_f32(&[k, n], 61))
        .node_named("fc", "MatMul", &["x", "w"], &["y"], vec![])
        .output("y", DataType::Float, &[64, n as i64]);
    let proto = b.build();
    // Activations that live mostly in an 8-dimensional subspace, plus a little noise.
    let basis = seeded_f32(&[8, k], 62)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut all_x = Vec::new();
    for s in 0..3u64 {
        let coef = seeded_f32(&[64, 8], 70 + s)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let noise = seeded_f32(&[64, k], 80 + s)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let x = coef.dot(&basis) * 4.0 + noise * 0.05;
        let set_dir = dir.path().join(format!("test_data_set_{s}"));
        std::fs::create_dir(&set_dir).unwrap();
        let t = tensor::from_f32("x", &x.clone().into_dyn());
        std::fs::write(set_dir.join("input_0.pb"), t.encode_to_vec()).unwrap();
        all_x.push(x);
    }
    let x = ndarray::concatenate(
        ndarray::Axis(0),
        &all_x.iter().map(|a| a.view()).collect::<Vec<_>>(),
    )
    .unwrap();
    let w = seeded_f32(&[k, n], 61)
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let plain_cfg = config(Some(RankMode::Rank(r)), None);
    let mut aware_cfg = plain_cfg.clone();
    aware_cfg.calibration = vec![dir.path().to_path_buf()];
    let err = |cfg: &Config| -> f32 {
        let (m, report) = rewrite(&proto, cfg);
        assert_eq!(report.patches(), 1, "{}", report_lines(&report));
        let factor = |dims: [i64; 2]| {
            m.graph
                .const_nodes()
                .into_iter()
                .find_map(|id| match &m.graph.node(id).kind {
                    NodeKind::Initializer(t) if t.dims == dims => Some(
                        tensor::to_f32(t)
                            .unwrap()
                            .into_dimensionality::<ndarray::Ix2>()
                            .unwrap(),
                    ),
                    _ => None,
                })
                .expect("factor")
        };
        let ab = factor([k as i64, r as i64]).dot(&factor([r as i64, n as i64]));
        let diff = x.dot(&w) - x.dot(&ab);
        let num: f32 = diff.iter().map(|v| v * v).sum();
        let den: f32 = x.dot(&w).iter().map(|v| v * v).sum();
        (num / den).sqrt()
    };
    let plain = err(&plain_cfg);
    let aware = err(&aware_cfg);
    assert!(
        aware <= plain,
        "data-aware error {aware} should not exceed plain SVD error {plain}"
    );
    assert!(aware < 0.5 * plain, "data-aware {aware} vs plain {plain}");
    // The report says it was data-aware, with the number of calibration rows.
    let (_, report) = rewrite(&proto, &aware_cfg);
    assert!(
        report_lines(&report).contains("(data-aware, 192 rows)"),
        "{}",
        report_lines(&report)
    );
    // Calibration that cannot be read is a loud skip, not a silent plain SVD.
    let mut broken = plain_cfg.clone();
    broken.calibration = vec![dir.path().join("missing")];
    let (_, report) = rewrite(&proto, &broken);
    assert_eq!(report.patches(), 0);
    assert!(report_lines(&report).contains("calibration failed"));
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_onnx-slim")
}

#[test]
fn bad_flags_exit_2_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    std::fs::write(&input, encode_model(&mlp())).unwrap();
    let out = dir.path().join("out.onnx");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--lowrank-rank", "0"],
            "--lowrank-rank must be at least 1",
        ),
        (
            &["--lowrank-energy", "1.5"],
            "--lowrank-energy must be in (0, 1]",
        ),
        (
            &["--lowrank-energy", "0"],
            "--lowrank-energy must be in (0, 1]",
        ),
        (
            &["--lowrank-energy", "-0.5"],
            "--lowrank-energy must be in (0, 1]",
        ),
        (
            &["--lowrank-ratio", "1.2"],
            "--lowrank-ratio must be in (0, 1]",
        ),
        (
            &["--lowrank-tolerance", "-0.1"],
            "--lowrank-tolerance must be a non-negative number",
        ),
        (
            &["--lowrank-min-saving", "1"],
            "--lowrank-min-saving must be in [0, 1)",
        ),
        (
            &["--lowrank-rank", "4", "--lowrank-energy", "0.9"],
            "exclude each other",
        ),
    ];
    for (flags, want) in cases {
        let o = Command::new(bin())
            .arg(&input)
            .arg(&out)
            .args(["--rules", "lowrank"])
            .args(*flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!Path::new(&out).exists());
    }
}

#[test]
fn lowrank_is_listed_with_its_code_and_group() {
    let o = Command::new(bin()).arg("--list-rules").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let s = String::from_utf8_lossy(&o.stdout);
    // Columns: code, name, group, exactness, summary, separated by at least two spaces.
    let rows: Vec<Vec<&str>> = s
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let row = rows
        .iter()
        .find(|r| r.get(1) == Some(&"lowrank"))
        .unwrap_or_else(|| panic!("no rule named lowrank in\n{s}"));
    assert_eq!(row[0], "L001", "{row:?}");
    assert_eq!(row[2], "lowrank", "group: {row:?}");
    assert!(row[3].starts_with("lossy"), "{row:?}");
    assert_eq!(rows.len(), registry::all().len(), "one row per rule");
}

/// The Conv data-aware path builds `XᵀX` from im2col patches; if their layout matched the
/// weight's wrongly, the error the report states would not be the error tract measures. With a
/// negligible ridge both must agree, for explicit pads, strides, dilations and `SAME_UPPER`.
#[test]
fn conv_calibration_error_matches_tract_on_the_calibration_input() {
    for auto_pad in [None, Some("SAME_UPPER")] {
        let proto = conv_model(auto_pad, true, false);
        let x = seeded_f32(&[1, 16, 11, 13], 91);
        let dir = tempfile::tempdir().unwrap();
        let sd = dir.path().join("test_data_set_0");
        std::fs::create_dir(&sd).unwrap();
        std::fs::write(
            sd.join("input_0.pb"),
            tensor::from_f32("x", &x).encode_to_vec(),
        )
        .unwrap();
        // The weight has rank 5; rank 3 leaves a real error to compare.
        let mut cfg = config(Some(RankMode::Rank(3)), None);
        cfg.calibration = vec![dir.path().to_path_buf()];
        cfg.lowrank.ridge = 1e-9;
        let (after, report) = rewrite(&proto, &cfg);
        let lines = report_lines(&report);
        let stated: f32 = lines
            .split("calibration output error ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no calibration error in {lines}"));
        // Without the bias, the conv's output error is exactly the factored part's.
        let s = set(&[("x", x)]);
        let a = run_tract(&proto, &s);
        let b = run_tract(&after.to_proto(), &s);
        let bias = tensor::to_f32(
            after
                .graph
                .const_tensor(after.graph.producer("bias").unwrap())
                .unwrap(),
        )
        .unwrap();
        let (mut num, mut den) = (0f64, 0f64);
        let (a0, b0) = (f32_view(&a, 0), f32_view(&b, 0));
        assert_eq!(a0.shape(), b0.shape());
        for (i, (p, q)) in a0.iter().zip(b0.iter()).enumerate() {
            let c = (i / (a0.shape()[2] * a0.shape()[3])) % 32;
            num += ((p - q) as f64).powi(2);
            den += ((p - bias[c]) as f64).powi(2);
        }
        let measured = (num / den).sqrt() as f32;
        assert!(
            (measured - stated).abs() <= 2e-3 + 0.01 * stated,
            "{auto_pad:?}: report says {stated}, tract measures {measured}"
        );
        assert!(
            stated > 0.05,
            "rank 3 of a rank-5 weight should lose something"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The README's lowrank table on the shared models (its deterministic columns: parameters, MACs,
// ranks and the task metric; latencies stay in `cargo bench --bench lowrank`).

/// Parameters (= MACs per row) of MatMul/Gemm 2-D constant weights, as `benches/lowrank.rs`
/// counts them.
fn dense_params(m: &Model) -> u64 {
    let g = &m.graph;
    let mut dense = 0;
    for id in g.ops() {
        let op = g.node(id).op_type().to_string();
        if op != "MatMul" && op != "Gemm" {
            continue;
        }
        for v in g.node_inputs(id).into_iter().flatten().take(2) {
            if let Some(t) = g.const_tensor(v) {
                if t.dims.len() == 2 {
                    dense += tensor::numel(t).expect("a sized weight");
                }
            }
        }
    }
    dense
}

/// The README's metric, in percent with two decimals: accuracy against `meta.json`'s labels
/// (digits_mlp), else per-timestep argmax agreement with each set's `output_0.pb`.
fn metric(dir: &Path, sets: &[InputSet], outs: &[Outputs]) -> String {
    let (mut ok, mut n) = (0usize, 0usize);
    if dir.ends_with("digits_mlp") {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
                .expect("meta.json is JSON");
        for (s, o) in sets.iter().zip(outs) {
            let labels = meta["labels"][&s.label].as_array().expect("labels per set");
            let got = common::argmax_rows(&o[0].1);
            assert_eq!(got.len(), labels.len(), "{}", s.label);
            n += got.len();
            ok += got
                .iter()
                .zip(labels)
                .filter(|(p, l)| Some(**p as u64) == l.as_u64())
                .count();
        }
    } else {
        for (s, o) in sets.iter().zip(outs) {
            let want = common::expected_outputs(&dir.join(&s.label), &ModelProto::default());
            let (want, got) = (
                common::argmax_rows(&want[0].1),
                common::argmax_rows(&o[0].1),
            );
            assert_eq!(want.len(), got.len(), "{}", s.label);
            n += want.len();
            ok += want.iter().zip(&got).filter(|(a, b)| a == b).count();
        }
    }
    assert!(n > 0);
    format!("{:.2}", 100.0 * ok as f64 / n as f64)
}

/// One row of the README's lowrank table.
struct LowrankRow {
    model: &'static str,
    rank: Option<usize>,
    calibration: bool,
    tolerance: Option<f64>,
    /// MatMul/Gemm parameters before and after, and the reduction in percent (one decimal).
    params: (u64, u64, &'static str),
    /// The rank of the largest factored weight, when the README states it.
    rank_reported: Option<usize>,
    /// The metric of the original (digits_mlp's accuracy; captcha_crnn's outputs are the
    /// reference of its agreement) and of the rewritten model, in percent.
    metric: (Option<&'static str>, &'static str),
}

const README_LOWRANK: &[LowrankRow] = &[
    LowrankRow {
        model: "digits_mlp",
        rank: Some(128),
        calibration: false,
        tolerance: None,
        params: (300_032, 168_960, "43.7"),
        rank_reported: None,
        metric: (Some("97.78"), "97.78"),
    },
    LowrankRow {
        model: "digits_mlp",
        rank: None,
        calibration: true,
        tolerance: Some(0.05),
        params: (300_032, 49_216, "83.6"),
        rank_reported: None,
        metric: (Some("97.78"), "97.78"),
    },
    LowrankRow {
        model: "captcha_crnn",
        rank: None,
        calibration: true,
        tolerance: None,
        params: (8_407_040, 1_440_504, "82.9"),
        rank_reported: Some(156),
        metric: (None, "99.47"),
    },
    LowrankRow {
        model: "captcha_crnn",
        rank: Some(400),
        calibration: true,
        tolerance: None,
        params: (8_407_040, 3_693_600, "56.1"),
        rank_reported: None,
        metric: (None, "100.00"),
    },
    LowrankRow {
        model: "captcha_crnn",
        rank: None,
        calibration: false,
        tolerance: None,
        params: (8_407_040, 5_078_700, "39.6"),
        rank_reported: None,
        metric: (None, "93.62"),
    },
];

#[test]
fn shared_models_lowrank_to_the_readme_numbers() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut failures = Vec::new();
    let mut measured = 0;
    for model in ["digits_mlp", "captcha_crnn"] {
        let dir = models
            .iter()
            .find(|d| d.ends_with(model))
            .unwrap_or_else(|| panic!("../shared/models/{model}"));
        let original = onnx_slim::onnx::decode_file(&dir.join("model.onnx"))
            .expect("decodes")
            .model;
        let sets = onnx_slim::verify::load_test_data_sets(dir, &original).expect("test sets");
        let original_metric = (model == "digits_mlp").then(|| {
            let outs = onnx_slim::verify::run_many(&original, &sets, model).expect("runs");
            metric(dir, &sets, &outs)
        });
        for row in README_LOWRANK.iter().filter(|r| r.model == model) {
            let mut cfg = Config {
                lowrank: LowrankConfig::from_flags(None, row.rank, None, row.tolerance, None)
                    .expect("valid flags"),
                ..Default::default()
            };
            if row.calibration {
                cfg.calibration = vec![dir.join("calibration")];
            }
            let what = format!(
                "{model} rank {:?} calibration {} tolerance {:?}",
                row.rank, row.calibration, row.tolerance
            );
            let (after, report) = rewrite(&original, &cfg);
            let before_params = dense_params(&Model::from_proto(original.clone()).unwrap());
            let after_params = dense_params(&after);
            let less = format!(
                "{:.1}",
                100.0 * (1.0 - after_params as f64 / before_params as f64)
            );
            let outs = onnx_slim::verify::run_many(&after.to_proto(), &sets, "rewritten")
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let got_metric = (original_metric.clone(), metric(dir, &sets, &outs));
            let lines = report_lines(&report);
            let line = format!(
                "{what}: params {before_params} → {after_params} (−{less} %), metric {got_metric:?}"
            );
            let want_metric = (row.metric.0.map(String::from), row.metric.1.to_string());
            if (before_params, after_params) != (row.params.0, row.params.1)
                || less != row.params.2
                || got_metric != want_metric
            {
                failures.push(format!("{line}: not the README's row"));
            }
            if let Some(r) = row.rank_reported {
                if !lines.contains(&format!("rank {r} ")) {
                    failures.push(format!("{what}: no rank {r} in\n{lines}"));
                }
            }
            eprintln!("{line}");
            measured += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(measured, README_LOWRANK.len());
}
