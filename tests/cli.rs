//! The command line through the binary: every subcommand and every documented flag at least
//! once, with its exit code and what it reports; and the main command's failure path (a rule that
//! breaks its rewrite, injected through `cli::main_with_rules`: exit 1, nothing written, the
//! output that disagreed named). Models come from `fixtures/` or are built in code; every run
//! works in its own temporary folder, with relative paths, so nothing depends on the machine.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::run::{dir_with, fixture, json, ok, refused, run, Run};
use onnx_slim::error::{Error, Result};
use onnx_slim::ir::builder::{seeded_f32, tensor_f32, ModelBuilder};
use onnx_slim::ir::{Model, ValueRef};
use onnx_slim::onnx::proto::tensor_proto::{DataLocation, DataType};
use onnx_slim::onnx::proto::{ModelProto, NodeProto, TensorProto};
use onnx_slim::onnx::{decode_file, encode_model};
use onnx_slim::rewrite::{
    registry, Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire,
};
use prost::Message;
use serde_json::Value;

// ---- running the binary: `common::run` ----

fn write_model(dir: &Path, name: &str, m: &ModelProto) {
    std::fs::write(dir.join(name), encode_model(m)).expect("write model");
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

fn load(path: &Path) -> Model {
    Model::from_proto(decode_file(path).expect("decode").model).expect("model")
}

fn op_count(path: &Path, op: &str) -> usize {
    let m = load(path);
    m.graph
        .ops()
        .into_iter()
        .filter(|&id| m.graph.node(id).op_type() == op)
        .count()
}

/// The codes of the rules in a run report, and how many rewrites each made.
fn rule_rewrites(report: &Value) -> Vec<(String, usize)> {
    report["report"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                r["code"].as_str().expect("code").to_string(),
                r["rewrites"].as_array().expect("rewrites").len(),
            )
        })
        .collect()
}

fn total_rewrites(report: &Value) -> usize {
    rule_rewrites(report).iter().map(|(_, n)| n).sum()
}

/// The descriptions of a rule's rewrites in a run report.
fn rewrites_of(report: &Value, code: &str) -> Vec<String> {
    report["report"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["code"] == code)
        .flat_map(|r| r["rewrites"].as_array().expect("rewrites").iter())
        .map(|w| w["description"].as_str().expect("description").to_string())
        .collect()
}

// ---- models built in code ----

/// `x[1,8]` → `Identity` → `Relu` → `y1`, and `x` → `Sigmoid` → `y2`.
fn two_outputs() -> ModelProto {
    ModelBuilder::new(17)
        .input("x", DataType::Float, &[1, 8])
        .node("Identity", &["x"], &["xi"], vec![])
        .node("Relu", &["xi"], &["y1"], vec![])
        .node("Sigmoid", &["x"], &["y2"], vec![])
        .output("y1", DataType::Float, &[1, 8])
        .output("y2", DataType::Float, &[1, 8])
        .build()
}

/// `y = x * s` with `s` one value: `x[N,4]` (symbolic batch).
fn scaled(s: f32) -> ModelProto {
    let sarr = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1]), s);
    ModelBuilder::new(17)
        .input_sym(
            "x",
            DataType::Float,
            &[onnx_slim::ir::builder::Dim::from("N"), 4.into()],
        )
        .initializer(tensor_f32("s", &sarr))
        .node("Mul", &["x", "s"], &["y"], vec![])
        .output_sym(
            "y",
            DataType::Float,
            &[onnx_slim::ir::builder::Dim::from("N"), 4.into()],
        )
        .build()
}

/// Writes `test_data_set_0/input_0.pb` (and further inputs) into `dir`: float tensors of the
/// given names and shapes.
fn write_test_data_set(dir: &Path, inputs: &[(&str, &[usize])]) -> PathBuf {
    let set = dir.join("test_data_set_0");
    std::fs::create_dir_all(&set).expect("mkdir");
    for (i, (name, shape)) in inputs.iter().enumerate() {
        let t = tensor_f32(name, &seeded_f32(shape, 11 + i as u64));
        std::fs::write(set.join(format!("input_{i}.pb")), t.encode_to_vec()).expect("write pb");
    }
    set
}

/// Writes `name` (an `.npz`) holding one float array `x` of `shape`.
fn write_npz(path: &Path, input: &str, shape: &[u64]) {
    use npyz::WriterBuilder;
    let n: u64 = shape.iter().product();
    let mut z = npyz::npz::NpzWriter::create(path).expect("create npz");
    let mut w = z
        .array::<f32>(input, Default::default())
        .expect("array")
        .default_dtype()
        .shape(shape)
        .begin_nd()
        .expect("begin");
    w.extend((0..n).map(|i| i as f32 / n as f32))
        .expect("write");
    w.finish().expect("finish");
}

// ---- the failure path: a rule that breaks its rewrite ----

/// A rule for tests only: replaces `Relu` by `Neg`, which changes the output, while claiming to
/// be exact. The main command must refuse to write what it produces.
struct ReluToNeg;

impl Rule for ReluToNeg {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "T901",
            name: "test-relu-to-neg",
            group: "test",
            summary: "replace Relu by Neg (wrong on purpose)",
            exactness: Exactness::Exact { tolerance: 0.0 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        for id in g.ops() {
            if g.node(id).op_type() == "Relu" {
                f.matches.push(Match {
                    anchor: id,
                    nodes: vec![],
                    what: format!("Relu `{}`", g.node(id).label()),
                });
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let src = model.graph.input(m.anchor, 0).ok_or_else(|| Error::Rule {
            rule: "test-relu-to-neg".into(),
            reason: "Relu without an input".into(),
        })?;
        let mut p = Patch::new(format!("{} → Neg", m.what), Some(m.anchor));
        let neg = NodeProto {
            op_type: Some("Neg".into()),
            name: Some("n".into()),
            output: vec!["n".into()],
            ..Default::default()
        };
        let out = p.add_op(neg, &[Some(Wire::Value(src))]);
        p.shunt(
            ValueRef {
                node: m.anchor,
                slot: 0,
            },
            out[0],
        );
        p.remove(m.anchor);
        Ok(p)
    }
}

/// Set in the child process of the failure-path test: the arguments, one per line.
const CHILD_ARGS: &str = "ONNX_SLIM_TEST_CLI_CHILD_ARGS";

fn main_with_relu_to_neg(args: &[&str]) -> i32 {
    let argv = std::iter::once("onnx-slim").chain(args.iter().copied());
    onnx_slim::cli::main_with_rules(argv, &[&ReluToNeg])
}

/// The whole command line (parsing, the main job, the one error line, the exit code) with the
/// breaking rule added, in a child process (this test binary again, running this test alone), so
/// that what it prints can be read.
#[test]
fn a_rewrite_that_breaks_an_output_exits_1_writes_nothing_and_names_that_output() {
    if let Ok(args) = std::env::var(CHILD_ARGS) {
        let args: Vec<&str> = args.lines().collect();
        std::process::exit(main_with_relu_to_neg(&args));
    }
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "m.onnx", &two_outputs());
    let args = ["m.onnx", "out.onnx", "--report-json", "report.json"];
    let o = Command::new(std::env::current_exe().unwrap())
        .args([
            "a_rewrite_that_breaks_an_output_exits_1_writes_nothing_and_names_that_output",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ARGS, args.join("\n"))
        .current_dir(d.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    let why = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(o.status.code(), Some(1), "{why}");
    // Nothing written: no OUT, no temp file, no report.
    assert_eq!(listing(d.path()), set(&["m.onnx"]), "{why}");
    // The rewrite was made and reported, the failing output is named in the table...
    assert!(
        stdout.contains("T901 test-relu-to-neg (exact): 1 rewrite,"),
        "{why}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some(name))
            .unwrap_or_else(|| panic!("no row for `{name}`: {why}"))
            .to_string()
    };
    assert!(row("y1").trim_end().ends_with("elements off)"), "{why}");
    assert!(row("y1").contains("FAIL"), "{why}");
    assert!(row("y2").contains(" ok"), "{why}");
    // ...and in the one error line, without the output that agreed.
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{why}");
    assert!(
        errors[0].starts_with("error: verification failed: output `y1` differs beyond tolerance"),
        "{why}"
    );
    assert!(!errors[0].contains("y2"), "{why}");
    assert!(errors[0].contains("nothing was written"), "{why}");
}

#[test]
fn max_patches_finds_the_rewrite_that_breaks_verification() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "m.onnx", &two_outputs());
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    // Patch 1 is eliminate-identity (sound), patch 2 the broken one.
    let code = main_with_relu_to_neg(&[
        &p("m.onnx"),
        &p("one.onnx"),
        "--max-patches",
        "1",
        "--report-json",
        &p("one.json"),
    ]);
    assert_eq!(code, 0);
    let r = json(&d.path().join("one.json"));
    assert_eq!(r["report"]["stopped_early"], true);
    assert_eq!(
        rule_rewrites(&r)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>(),
        vec![("C001".to_string(), 1)]
    );
    assert_eq!(r["verification"]["passed"], true);
    assert_eq!(op_count(&d.path().join("one.onnx"), "Identity"), 0);
    assert_eq!(op_count(&d.path().join("one.onnx"), "Relu"), 1);

    let code = main_with_relu_to_neg(&[&p("m.onnx"), &p("two.onnx"), "--max-patches", "2"]);
    assert_eq!(code, 1);
    assert!(!d.path().join("two.onnx").exists());
    assert_eq!(listing(d.path()), set(&["m.onnx", "one.onnx", "one.json"]));
}

#[test]
fn no_verify_writes_the_broken_rewrite_so_the_failure_is_verifications() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "m.onnx", &two_outputs());
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let code = main_with_relu_to_neg(&[&p("m.onnx"), &p("out.onnx"), "--no-verify"]);
    assert_eq!(code, 0);
    assert_eq!(op_count(&d.path().join("out.onnx"), "Neg"), 1);
    assert_eq!(op_count(&d.path().join("out.onnx"), "Relu"), 0);
    // And `verify` on the pair fails with exit 1, naming `y1` as the output that disagrees.
    let r = run(d.path(), &["verify", "m.onnx", "out.onnx"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let fails: Vec<&str> = r.stdout.lines().filter(|l| l.contains(" FAIL ")).collect();
    assert_eq!(fails.len(), 1, "{r:?}");
    assert!(fails[0].contains(" y1 "), "{r:?}");
}

// ---- subcommands ----

#[test]
fn inspect_prints_the_model_and_its_ops() {
    let d = dir_with(&["mlp.onnx"]);
    let r = ok(d.path(), &["inspect", "mlp.onnx"]);
    assert!(r.stdout.contains("float32[N,16]"), "{r:?}");
    for op in ["MatMul", "Add", "Relu"] {
        assert!(
            r.stdout.lines().any(|l| l.trim_start().starts_with(op)),
            "{r:?}"
        );
    }
    assert!(r.stderr.is_empty(), "{r:?}");
}

#[test]
fn inspect_json_is_json_with_inputs_outputs_and_counts() {
    let d = dir_with(&["mlp.onnx"]);
    let r = ok(d.path(), &["inspect", "mlp.onnx", "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).expect("inspect --json prints JSON");
    assert_eq!(v["file_bytes"], file_len(&d.path().join("mlp.onnx")));
    assert_eq!(v["inputs"][0]["name"], "x");
    assert_eq!(v["outputs"][0]["name"], "y");
    assert_eq!(v["nodes"], 5);
    assert_eq!(v["params"]["elements"], 16 * 32 + 32 + 32 * 8 + 8);
}

#[test]
fn subcommands_refuse_a_missing_model_with_exit_2() {
    let d = dir_with(&["mlp.onnx"]);
    for args in [
        vec!["inspect", "nope.onnx"],
        vec!["inspect", "nope.onnx", "--json"],
        vec!["show", "nope.onnx"],
        vec!["diff", "mlp.onnx", "nope.onnx"],
        vec!["verify", "nope.onnx", "mlp.onnx"],
        vec!["nope.onnx", "out.onnx"],
    ] {
        let e = refused(d.path(), &args);
        assert!(e.contains("`nope.onnx`"), "{args:?}: {e}");
    }
    assert_eq!(listing(d.path()), set(&["mlp.onnx"]));
}

#[test]
fn show_prints_the_text_form_of_the_library() {
    let d = dir_with(&["conv.onnx"]);
    let r = ok(d.path(), &["show", "conv.onnx"]);
    let want = onnx_slim::ir::text::to_text(&load(&fixture("conv.onnx")));
    assert_eq!(r.stdout, want);
    assert!(r.stdout.contains("BatchNormalization"), "{r:?}");
}

#[test]
fn diff_shows_the_ops_a_rewrite_removed() {
    let d = dir_with(&["conv.onnx"]);
    ok(d.path(), &["conv.onnx", "out.onnx"]);
    let r = ok(d.path(), &["diff", "conv.onnx", "out.onnx"]);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("BatchNormalization") && l.contains("-1")),
        "{r:?}"
    );
    assert!(r.stdout.lines().any(|l| l.starts_with("-")), "{r:?}");
    // The same model twice: no line of the text forms differs.
    let same = ok(d.path(), &["diff", "conv.onnx", "conv.onnx"]);
    assert!(
        !same
            .stdout
            .lines()
            .any(|l| (l.starts_with('-') && !l.starts_with("---"))
                || (l.starts_with('+') && !l.starts_with("+++"))),
        "{same:?}"
    );
}

#[test]
fn verify_passes_equal_models_and_fails_different_ones_with_exit_1() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "a.onnx", &scaled(1.0));
    write_model(d.path(), "b.onnx", &scaled(1.001));
    let r = ok(d.path(), &["verify", "a.onnx", "a.onnx"]);
    assert!(r.stdout.contains("passed at tolerance 0.00001"), "{r:?}");
    let r = run(d.path(), &["verify", "a.onnx", "b.onnx"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("FAILED at tolerance 0.00001"), "{r:?}");
}

#[test]
fn verify_tolerance_sets_the_threshold() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "a.onnx", &scaled(1.0));
    write_model(d.path(), "b.onnx", &scaled(1.001));
    // A relative error of 1e-3: passes at 1e-2, fails at 1e-4.
    let r = ok(
        d.path(),
        &["verify", "a.onnx", "b.onnx", "--tolerance", "0.01"],
    );
    assert!(r.stdout.contains("passed at tolerance 0.01"), "{r:?}");
    let r = run(
        d.path(),
        &["verify", "a.onnx", "b.onnx", "--tolerance", "0.0001"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    let r = run(
        d.path(),
        &["verify", "a.onnx", "b.onnx", "--tolerance", "x"],
    );
    assert_eq!(r.code, Some(2), "{r:?}");
}

#[test]
fn verify_report_json_holds_every_comparison() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "a.onnx", &scaled(1.0));
    write_model(d.path(), "b.onnx", &scaled(1.001));
    let r = run(
        d.path(),
        &["verify", "a.onnx", "b.onnx", "--report-json", "v.json"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    let v = json(&d.path().join("v.json"));
    assert_eq!(v["passed"], false);
    assert!((v["tolerance"].as_f64().unwrap() - 1e-5).abs() < 1e-9);
    let sets = v["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0]["label"], "random seed 0");
    let c = &sets[0]["outputs"][0];
    assert_eq!(c["output"], "y");
    assert_eq!(c["passed"], false);
    assert_eq!(c["shape"], serde_json::json!([1, 4]));
    let rel = c["max_rel_error"].as_f64().unwrap();
    assert!(rel > 5e-4 && rel < 2e-3, "{rel}");
}

#[test]
fn verify_inputs_from_a_folder_and_from_an_npz() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "a.onnx", &scaled(1.0));
    write_model(d.path(), "b.onnx", &scaled(1.0));
    let data = d.path().join("data");
    write_test_data_set(&data, &[("x", &[3, 4])]);
    write_npz(&d.path().join("x.npz"), "x", &[5, 4]);
    for (inputs, label, rows) in [
        ("data", "test_data_set_0", 3),
        ("data/test_data_set_0", "test_data_set_0", 3),
        ("x.npz", "x.npz", 5),
    ] {
        ok(
            d.path(),
            &[
                "verify",
                "a.onnx",
                "b.onnx",
                "--inputs",
                inputs,
                "--report-json",
                "v.json",
            ],
        );
        let v = json(&d.path().join("v.json"));
        assert_eq!(v["sets"][0]["label"], label, "{inputs}");
        assert_eq!(
            v["sets"][0]["outputs"][0]["shape"],
            serde_json::json!([rows, 4]),
            "{inputs}"
        );
    }
    let e = refused(
        d.path(),
        &["verify", "a.onnx", "b.onnx", "--inputs", "nope"],
    );
    assert!(e.contains("`nope`"), "{e}");
}

#[test]
fn verify_input_shape_sets_the_shape_of_random_inputs() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "a.onnx", &scaled(1.0));
    ok(
        d.path(),
        &[
            "verify",
            "a.onnx",
            "a.onnx",
            "--input-shape",
            "x=5,4",
            "--report-json",
            "v.json",
        ],
    );
    let v = json(&d.path().join("v.json"));
    assert_eq!(v["sets"][0]["label"], "random seed 0");
    assert_eq!(
        v["sets"][0]["outputs"][0]["shape"],
        serde_json::json!([5, 4])
    );
    // Without it the symbolic batch is 1.
    ok(
        d.path(),
        &["verify", "a.onnx", "a.onnx", "--report-json", "v.json"],
    );
    let v = json(&d.path().join("v.json"));
    assert_eq!(
        v["sets"][0]["outputs"][0]["shape"],
        serde_json::json!([1, 4])
    );
    // Names and ranks are checked.
    let e = refused(
        d.path(),
        &["verify", "a.onnx", "a.onnx", "--input-shape", "z=5,4"],
    );
    assert!(e.contains("no input `z`"), "{e}");
    let e = refused(
        d.path(),
        &["verify", "a.onnx", "a.onnx", "--input-shape", "x=5"],
    );
    assert!(e.contains("rank"), "{e}");
    let e = refused(
        d.path(),
        &["verify", "a.onnx", "a.onnx", "--input-shape", "x=5,3"],
    );
    assert!(e.contains("fixed size 4"), "{e}");
    // An input named twice, or a shape with no element, would verify something else than asked.
    let e = refused(
        d.path(),
        &[
            "verify",
            "a.onnx",
            "a.onnx",
            "--input-shape",
            "x=2,4",
            "--input-shape",
            "x=3,4",
        ],
    );
    assert!(e.contains("`--input-shape x=...` is given twice"), "{e}");
    let e = refused(
        d.path(),
        &["verify", "a.onnx", "a.onnx", "--input-shape", "x=0,4"],
    );
    assert!(e.contains("no element to compare"), "{e}");
}

#[test]
fn verify_input_shape_wins_over_test_data_beside_the_model() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "a.onnx", &scaled(1.0));
    write_test_data_set(d.path(), &[("x", &[2, 4])]);
    ok(
        d.path(),
        &["verify", "a.onnx", "a.onnx", "--report-json", "v.json"],
    );
    let v = json(&d.path().join("v.json"));
    assert_eq!(v["sets"][0]["label"], "test_data_set_0");
    assert_eq!(
        v["sets"][0]["outputs"][0]["shape"],
        serde_json::json!([2, 4])
    );
    ok(
        d.path(),
        &[
            "verify",
            "a.onnx",
            "a.onnx",
            "--input-shape",
            "x=3,4",
            "--report-json",
            "v.json",
        ],
    );
    let v = json(&d.path().join("v.json"));
    assert_eq!(v["sets"][0]["label"], "random seed 0");
    assert_eq!(
        v["sets"][0]["outputs"][0]["shape"],
        serde_json::json!([3, 4])
    );
}

#[test]
fn verify_input_shape_that_conflicts_with_the_inputs_is_refused_naming_the_input() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "a.onnx", &scaled(1.0));
    write_npz(&d.path().join("x.npz"), "x", &[2, 4]);
    write_test_data_set(&d.path().join("data"), &[("x", &[2, 4])]);
    for inputs in ["x.npz", "data"] {
        let e = refused(
            d.path(),
            &[
                "verify",
                "a.onnx",
                "a.onnx",
                "--inputs",
                inputs,
                "--input-shape",
                "x=3,4",
            ],
        );
        assert!(
            e.contains("`--input-shape x=3,4` conflicts with input `x`") && e.contains("[2, 4]"),
            "{e}"
        );
        // The same shape as the data is fine.
        ok(
            d.path(),
            &[
                "verify",
                "a.onnx",
                "a.onnx",
                "--inputs",
                inputs,
                "--input-shape",
                "x=2,4",
            ],
        );
    }
    let e = refused(
        d.path(),
        &[
            "verify",
            "a.onnx",
            "a.onnx",
            "--inputs",
            "x.npz",
            "--input-shape",
            "q=2,4",
        ],
    );
    assert!(e.contains("no input `q`"), "{e}");
}

#[test]
fn seed_changes_the_random_inputs() {
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), "a.onnx", &scaled(1.0));
    let r = ok(d.path(), &["verify", "a.onnx", "a.onnx", "--seed", "7"]);
    assert!(r.stdout.contains("random seed 7"), "{r:?}");
}

// ---- the main command ----

#[test]
fn the_main_command_verifies_and_reports_what_it_wrote() {
    let d = dir_with(&["conv.onnx"]);
    let r = ok(d.path(), &["conv.onnx", "out.onnx"]);
    assert!(
        r.stdout.contains("C009 fuse-batchnorm (exact): 1 rewrite,"),
        "{r:?}"
    );
    assert!(
        r.stdout.contains("verification in tract (tolerance"),
        "{r:?}"
    );
    assert!(r.stdout.contains("passed at tolerance"), "{r:?}");
    let out = file_len(&d.path().join("out.onnx"));
    assert!(
        r.stdout.contains(&format!(
            "wrote `out.onnx`: {} bytes, input {} bytes (",
            onnx_slim::report::format::sep(out),
            onnx_slim::report::format::sep(file_len(&d.path().join("conv.onnx")))
        )),
        "{r:?}"
    );
    assert_eq!(
        op_count(&d.path().join("out.onnx"), "BatchNormalization"),
        0
    );
}

#[test]
fn report_json_holds_bytes_rules_and_verification() {
    let d = dir_with(&["conv.onnx"]);
    ok(
        d.path(),
        &["conv.onnx", "out.onnx", "--report-json", "r.json"],
    );
    let r = json(&d.path().join("r.json"));
    assert_eq!(r["input_bytes"], file_len(&d.path().join("conv.onnx")));
    assert_eq!(r["output_bytes"], file_len(&d.path().join("out.onnx")));
    assert!(r["output_bytes"].as_u64() < r["input_bytes"].as_u64());
    assert_eq!(r["input"], "conv.onnx");
    assert_eq!(r["output"], "out.onnx");
    let acted: Vec<(String, usize)> = rule_rewrites(&r)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert!(acted.contains(&("C009".to_string(), 1)), "{acted:?}");
    // Every clean rule is listed, acted or not.
    let clean: Vec<&str> = registry::select("clean")
        .unwrap()
        .iter()
        .map(|r| r.meta().code)
        .collect();
    let listed: Vec<String> = rule_rewrites(&r).into_iter().map(|(c, _)| c).collect();
    assert_eq!(listed, clean);
    let before = r["report"]["before"]["nodes"].as_u64().unwrap();
    let after = r["report"]["after"]["nodes"].as_u64().unwrap();
    assert_eq!(before, 6);
    assert!(after < before, "{after}");
    assert_eq!(r["report"]["stopped_early"], false);
    let v = &r["verification"];
    assert_eq!(v["passed"], true);
    assert_eq!(v["sets"][0]["outputs"][0]["output"], "y");
    assert_eq!(v["sets"][0]["outputs"][0]["passed"], true);
}

#[test]
fn rules_are_selected_by_name_code_group_and_none() {
    let d = dir_with(&["clean_kinds.onnx"]);
    let codes = |spec: &str| -> Vec<String> {
        ok(
            d.path(),
            &[
                "clean_kinds.onnx",
                "out.onnx",
                "--rules",
                spec,
                "--report-json",
                "r.json",
            ],
        );
        rule_rewrites(&json(&d.path().join("r.json")))
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    };
    assert_eq!(codes("eliminate-noop"), ["C004"]);
    assert_eq!(codes("C005"), ["C005"]);
    assert_eq!(codes("c005"), ["C005"]);
    // Selected by code, the rule acts: clean_kinds has a `Mul` by one and an `Add` of zeros.
    let acted = rule_rewrites(&json(&d.path().join("r.json")));
    assert_eq!(acted, [("C005".to_string(), 2)]);
    assert_eq!(codes("C002"), ["C002"]);
    // Canonical order whatever the order given; names and codes mix.
    assert_eq!(codes("C100,eliminate-noop"), ["C004", "C100"]);
    let group = |g: &str| -> Vec<String> {
        registry::all()
            .iter()
            .filter(|r| r.meta().group == g)
            .map(|r| r.meta().code.to_string())
            .collect()
    };
    assert_eq!(codes("clean"), group("clean"));
    assert_eq!(codes("share"), group("share"));
    assert!(!group("share").is_empty());
    // The default is the clean group.
    ok(
        d.path(),
        &["clean_kinds.onnx", "out.onnx", "--report-json", "r.json"],
    );
    let listed: Vec<String> = rule_rewrites(&json(&d.path().join("r.json")))
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(listed, group("clean"));
    // none: a lossless re-encode, nothing verified.
    let r = ok(
        d.path(),
        &[
            "clean_kinds.onnx",
            "out.onnx",
            "--rules",
            "none",
            "--report-json",
            "r.json",
        ],
    );
    assert!(r.stderr.contains("no rewrite applied"), "{r:?}");
    assert!(codes("none").is_empty());
    assert_eq!(
        std::fs::read(d.path().join("out.onnx")).unwrap(),
        std::fs::read(d.path().join("clean_kinds.onnx")).unwrap()
    );
    let e = refused(
        d.path(),
        &["clean_kinds.onnx", "out.onnx", "--rules", "C999"],
    );
    assert!(e.contains("unknown rule `C999`"), "{e}");
}

#[test]
fn list_rules_shows_every_rule_with_its_code_name_and_group() {
    let d = tempfile::tempdir().unwrap();
    let r = ok(d.path(), &["--list-rules"]);
    // The rule table ends at the blank line before the groups.
    let rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    let all = registry::all();
    assert_eq!(rows.len(), all.len(), "{r:?}");
    for (row, rule) in rows.iter().zip(&all) {
        let m = rule.meta();
        assert_eq!(
            &row[..4],
            [
                m.code,
                m.name,
                m.group,
                match m.exactness {
                    Exactness::Exact { .. } => "exact",
                    Exactness::Lossy { .. } => "lossy",
                }
            ],
            "{r:?}"
        );
    }
}

#[test]
fn no_verify_skips_tract_and_says_so() {
    let d = dir_with(&["conv.onnx"]);
    let r = ok(
        d.path(),
        &[
            "conv.onnx",
            "out.onnx",
            "--no-verify",
            "--report-json",
            "r.json",
        ],
    );
    assert!(!r.stdout.contains("verification in tract"), "{r:?}");
    assert!(
        r.stderr.contains("verification skipped (--no-verify)"),
        "{r:?}"
    );
    let j = json(&d.path().join("r.json"));
    assert!(j["verification"].is_null());
    assert_eq!(
        op_count(&d.path().join("out.onnx"), "BatchNormalization"),
        0
    );
}

#[test]
fn in_place_rewrites_the_input_and_is_required_for_it() {
    let d = dir_with(&["conv.onnx"]);
    let before = std::fs::read(d.path().join("conv.onnx")).unwrap();
    let e = refused(d.path(), &["conv.onnx", "conv.onnx"]);
    assert!(e.contains("--in-place"), "{e}");
    assert_eq!(std::fs::read(d.path().join("conv.onnx")).unwrap(), before);
    ok(d.path(), &["conv.onnx", "conv.onnx", "--in-place"]);
    assert_eq!(
        op_count(&d.path().join("conv.onnx"), "BatchNormalization"),
        0
    );
    assert_eq!(listing(d.path()), set(&["conv.onnx"]));
}

/// The tensors of `path` stored as external data, by name.
fn external_tensors(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.unwrap();
    g.initializer
        .iter()
        .filter(|t: &&TensorProto| t.data_location == Some(DataLocation::External as i32))
        .map(|t| t.name.clone().unwrap_or_default())
        .collect()
}

#[test]
fn external_data_moves_tensors_at_the_threshold_to_out_data() {
    let d = dir_with(&["mlp.onnx"]);
    // W1 is 2,048 bytes, W2 1,024, b1 128, b2 32.
    let r = ok(
        d.path(),
        &["mlp.onnx", "a.onnx", "--rules", "none", "--external-data"],
    );
    assert!(r.stdout.contains("a.onnx.data`: 3,072 bytes"), "{r:?}");
    let mut ext = external_tensors(&d.path().join("a.onnx"));
    ext.sort();
    assert_eq!(ext.len(), 2, "{ext:?}");
    assert_eq!(file_len(&d.path().join("a.onnx.data")), 2048 + 1024);
    ok(
        d.path(),
        &[
            "mlp.onnx",
            "b.onnx",
            "--rules",
            "none",
            "--external-data",
            "100",
        ],
    );
    assert_eq!(external_tensors(&d.path().join("b.onnx")).len(), 3);
    ok(
        d.path(),
        &[
            "mlp.onnx",
            "c.onnx",
            "--rules",
            "none",
            "--external-data",
            "100000",
        ],
    );
    assert!(!d.path().join("c.onnx.data").exists());
    let r = run(d.path(), &["mlp.onnx", "e.onnx", "--external-data", "lots"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    // Either way the model round-trips: verify reads the external data.
    ok(
        d.path(),
        &["verify", "mlp.onnx", "b.onnx", "--tolerance", "0"],
    );
}

#[test]
fn max_patches_stops_early_and_reports_how_many() {
    let d = dir_with(&["clean_kinds.onnx"]);
    ok(
        d.path(),
        &["clean_kinds.onnx", "all.onnx", "--report-json", "all.json"],
    );
    let all = json(&d.path().join("all.json"));
    assert_eq!(all["report"]["stopped_early"], false);
    let n = total_rewrites(&all);
    assert!(n > 3, "{n}");
    let r = ok(
        d.path(),
        &[
            "clean_kinds.onnx",
            "three.onnx",
            "--max-patches",
            "3",
            "--report-json",
            "three.json",
        ],
    );
    assert!(
        r.stdout.contains("(stopped early by --max-patches)"),
        "{r:?}"
    );
    let three = json(&d.path().join("three.json"));
    assert_eq!(three["report"]["stopped_early"], true);
    assert_eq!(total_rewrites(&three), 3);
    assert_eq!(three["verification"]["passed"], true);
    let nodes = |v: &Value| v["report"]["after"]["nodes"].as_u64().unwrap();
    assert!(nodes(&three) > nodes(&all));
    let r = ok(
        d.path(),
        &[
            "clean_kinds.onnx",
            "zero.onnx",
            "--max-patches",
            "0",
            "--report-json",
            "zero.json",
        ],
    );
    assert!(r.stderr.contains("no rewrite applied"), "{r:?}");
    let zero = json(&d.path().join("zero.json"));
    assert_eq!(total_rewrites(&zero), 0);
    assert_eq!(zero["report"]["stopped_early"], true);
    let r = run(
        d.path(),
        &["clean_kinds.onnx", "x.onnx", "--max-patches", "-1"],
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(!d.path().join("x.onnx").exists());
}

#[test]
fn tolerance_overrides_the_main_commands_default() {
    let d = dir_with(&["conv.onnx"]);
    let r = ok(d.path(), &["conv.onnx", "out.onnx", "--tolerance", "0.5"]);
    assert!(
        r.stdout.contains("verification in tract (tolerance 0.5)"),
        "{r:?}"
    );
    assert!(r.stdout.contains("passed at tolerance 0.5"), "{r:?}");
}

#[test]
fn main_command_input_shape_binds_the_symbolic_batch() {
    let d = dir_with(&["mlp.onnx"]);
    ok(
        d.path(),
        &[
            "mlp.onnx",
            "out.onnx",
            "--rules",
            "matmul-add-to-gemm",
            "--input-shape",
            "x=4,16",
            "--report-json",
            "r.json",
        ],
    );
    let r = json(&d.path().join("r.json"));
    assert_eq!(total_rewrites(&r), 2);
    assert_eq!(
        r["verification"]["sets"][0]["outputs"][0]["shape"],
        serde_json::json!([4, 8])
    );
    let e = refused(
        d.path(),
        &[
            "mlp.onnx",
            "bad.onnx",
            "--rules",
            "matmul-add-to-gemm",
            "--input-shape",
            "x=4,15",
        ],
    );
    assert!(e.contains("`x`"), "{e}");
    assert!(!d.path().join("bad.onnx").exists());
}

// ---- lowrank through the command line ----

/// The ranks lowrank chose, in the order of its rewrites (read from the report).
fn ranks(report: &Value) -> Vec<usize> {
    rewrites_of(report, "L001")
        .iter()
        .map(|d| {
            let rest = d
                .split(": rank ")
                .nth(1)
                .unwrap_or_else(|| panic!("no rank in `{d}`"));
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

/// The inner dimension of the factors of weight `w` in the written model (`w.lowrank1` is
/// `[K, r]` for MatMul).
fn factor_dims(path: &Path, w: &str) -> Vec<i64> {
    let m = decode_file(path).unwrap().model;
    m.graph
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(&format!("{w}.lowrank1")))
        .unwrap_or_else(|| panic!("no `{w}.lowrank1`"))
        .dims
        .clone()
}

/// Runs lowrank on `lowrank.onnx` with `flags`; returns the report.
fn lowrank(d: &Path, out: &str, flags: &[&str]) -> (Run, Value) {
    let json_name = format!("{out}.json");
    let mut args = vec![
        "lowrank.onnx",
        out,
        "--rules",
        "lowrank",
        "--report-json",
        &json_name,
    ];
    args.extend_from_slice(flags);
    let r = ok(d, &args);
    let v = json(&d.join(&json_name));
    (r, v)
}

#[test]
fn lowrank_default_energy_finds_the_true_rank() {
    let d = dir_with(&["lowrank.onnx"]);
    let (_, v) = lowrank(d.path(), "out.onnx", &[]);
    assert_eq!(ranks(&v), [4, 4, 4]);
    assert!(rewrites_of(&v, "L001")
        .iter()
        .all(|w| w.contains("default energy 0.95")));
    assert_eq!(factor_dims(&d.path().join("out.onnx"), "w1"), [64, 4]);
    assert_eq!(v["verification"]["passed"], true);
}

#[test]
fn lowrank_energy_flag_lowers_the_rank() {
    let d = dir_with(&["lowrank.onnx"]);
    let (_, v) = lowrank(
        d.path(),
        "out.onnx",
        &["--lowrank-energy", "0.5", "--budget", "0.5"],
    );
    let r = ranks(&v);
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|&r| (1..4).contains(&r)), "{r:?}");
    assert!(rewrites_of(&v, "L001")
        .iter()
        .all(|w| w.contains("energy 0.5") && !w.contains("default")));
    assert_eq!(
        factor_dims(&d.path().join("out.onnx"), "w1"),
        [64, r[0] as i64]
    );
    // A fixed recipe is judged by the model-level budget it is given, and passes it.
    assert_eq!(v["verification"]["passed"], true);
    assert_eq!(v["verification"]["budget"][0]["limit"], 0.5);
    assert!(v["search"].is_null());
    refused(
        d.path(),
        &[
            "lowrank.onnx",
            "x.onnx",
            "--rules",
            "lowrank",
            "--lowrank-energy",
            "1.5",
        ],
    );
}

#[test]
fn lowrank_ratio_flag_keeps_that_fraction_of_parameters() {
    let d = dir_with(&["lowrank.onnx"]);
    let (_, v) = lowrank(d.path(), "out.onnx", &["--lowrank-ratio", "0.25"]);
    // r = ⌊P·K·N/(K+N)⌋: 64×64 → 8; the Conv's [32,144] → 6.
    let descs = rewrites_of(&v, "L001");
    assert!(descs.iter().all(|w| w.contains("ratio 0.25")), "{descs:?}");
    let mut r = ranks(&v);
    r.sort();
    assert_eq!(r, [6, 8, 8], "{descs:?}");
    assert_eq!(factor_dims(&d.path().join("out.onnx"), "w1"), [64, 8]);
    assert_eq!(v["verification"]["passed"], true);
}

#[test]
fn lowrank_rank_flag_fixes_the_rank() {
    let d = dir_with(&["lowrank.onnx"]);
    let (_, v) = lowrank(
        d.path(),
        "out.onnx",
        &["--lowrank-rank", "2", "--budget", "1"],
    );
    assert_eq!(ranks(&v), [2, 2, 2]);
    assert!(rewrites_of(&v, "L001")
        .iter()
        .all(|w| w.contains("rank 2 (fixed)")));
    assert_eq!(factor_dims(&d.path().join("out.onnx"), "w1"), [64, 2]);
    refused(
        d.path(),
        &[
            "lowrank.onnx",
            "x.onnx",
            "--rules",
            "lowrank",
            "--lowrank-rank",
            "2",
            "--lowrank-ratio",
            "0.5",
        ],
    );
}

#[test]
fn lowrank_tolerance_flag_picks_the_smallest_rank_within_it() {
    let d = dir_with(&["lowrank.onnx"]);
    let (_, tight) = lowrank(d.path(), "tight.onnx", &["--lowrank-tolerance", "0.001"]);
    assert_eq!(ranks(&tight), [4, 4, 4]);
    let (_, loose) = lowrank(
        d.path(),
        "loose.onnx",
        &["--lowrank-tolerance", "0.9", "--budget", "1"],
    );
    let r = ranks(&loose);
    assert!(r.iter().all(|&r| r < 4), "{r:?}");
    for w in rewrites_of(&loose, "L001") {
        assert!(w.contains("tolerance 0.9"), "{w}");
        let err: f64 = w
            .split("weight error ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(err <= 0.9, "{w}");
    }
}

#[test]
fn lowrank_min_saving_flag_leaves_weights_that_save_too_little() {
    let d = dir_with(&["lowrank.onnx"]);
    // Rank 4 saves 87.5 % of W1/W2 and 84.7 % of the Conv: 0.9 is more than any of them.
    let (r, v) = lowrank(d.path(), "out.onnx", &["--lowrank-min-saving", "0.9"]);
    assert!(rewrites_of(&v, "L001").is_empty(), "{r:?}");
    assert!(r.stderr.contains("no rewrite applied"), "{r:?}");
    let skips = v["report"]["rules"][0]["skips"].as_array().unwrap();
    assert_eq!(skips.len(), 3, "{skips:?}");
    let (_, v) = lowrank(d.path(), "out2.onnx", &["--lowrank-min-saving", "0.5"]);
    assert_eq!(ranks(&v), [4, 4, 4]);
    refused(
        d.path(),
        &[
            "lowrank.onnx",
            "x.onnx",
            "--rules",
            "lowrank",
            "--lowrank-min-saving",
            "1",
        ],
    );
}

#[test]
fn lowrank_calibration_makes_the_factors_data_aware() {
    let d = dir_with(&["lowrank.onnx"]);
    write_test_data_set(
        &d.path().join("calib"),
        &[("x", &[1, 64]), ("img", &[1, 16, 6, 6])],
    );
    let (_, v) = lowrank(d.path(), "out.onnx", &["--calibration", "calib"]);
    let descs = rewrites_of(&v, "L001");
    assert_eq!(descs.len(), 3, "{v}");
    assert!(descs.iter().all(|w| w.contains("data-aware")), "{descs:?}");
    assert_eq!(v["verification"]["passed"], true);
}

#[test]
fn external_data_with_lowrank_writes_factors_to_the_data_file_and_verifies() {
    let d = dir_with(&["lowrank.onnx"]);
    // Weights (16 KB and 18 KB) and biases (256 and 128 bytes) over 200 bytes go external.
    ok(
        d.path(),
        &[
            "lowrank.onnx",
            "ext.onnx",
            "--rules",
            "none",
            "--external-data",
            "200",
        ],
    );
    let ext_before = external_tensors(&d.path().join("ext.onnx"));
    assert_eq!(ext_before.len(), 4, "{ext_before:?}");
    let data_before = std::fs::read(d.path().join("ext.onnx.data")).unwrap();
    // OUT keeps the input's layout: tensors of at least its smallest external one (256 bytes).
    let r = ok(
        d.path(),
        &[
            "ext.onnx",
            "out.onnx",
            "--rules",
            "lowrank",
            "--report-json",
            "r.json",
        ],
    );
    assert!(r.stdout.contains("out.onnx.data`"), "{r:?}");
    let v = json(&d.path().join("r.json"));
    assert_eq!(ranks(&v), [4, 4, 4]);
    assert_eq!(v["verification"]["passed"], true);
    // The factors live in the new data file; the input's data file is untouched.
    let ext: BTreeSet<String> = external_tensors(&d.path().join("out.onnx"))
        .into_iter()
        .collect();
    for w in ["w1", "w2", "conv_w"] {
        for k in [1, 2] {
            assert!(ext.contains(&format!("{w}.lowrank{k}")), "{w}: {ext:?}");
        }
        assert!(!ext.contains(w), "{ext:?}");
    }
    assert_eq!(
        std::fs::read(d.path().join("ext.onnx.data")).unwrap(),
        data_before
    );
    let data_after = file_len(&d.path().join("out.onnx.data"));
    assert!(data_after < data_before.len() as u64 / 4, "{data_after}");
    // Read back with its data file, it matches the original.
    ok(
        d.path(),
        &["verify", "lowrank.onnx", "out.onnx", "--tolerance", "0.001"],
    );
    ok(
        d.path(),
        &["verify", "ext.onnx", "out.onnx", "--tolerance", "0.001"],
    );
}

#[test]
fn main_command_inputs_and_seed_choose_what_verification_runs_on() {
    let d = dir_with(&["mlp.onnx"]);
    write_npz(&d.path().join("x.npz"), "x", &[6, 16]);
    let args = [
        "mlp.onnx",
        "out.onnx",
        "--rules",
        "matmul-add-to-gemm",
        "--report-json",
        "r.json",
    ];
    let with = |extra: &[&str]| -> Value {
        let mut a = args.to_vec();
        a.extend_from_slice(extra);
        ok(d.path(), &a);
        json(&d.path().join("r.json"))
    };
    let v = with(&["--inputs", "x.npz"]);
    assert_eq!(v["verification"]["sets"][0]["label"], "x.npz");
    assert_eq!(
        v["verification"]["sets"][0]["outputs"][0]["shape"],
        serde_json::json!([6, 8])
    );
    let v = with(&["--seed", "9"]);
    assert_eq!(v["verification"]["sets"][0]["label"], "random seed 9");
    let e = refused(
        d.path(),
        &[
            "mlp.onnx",
            "bad.onnx",
            "--rules",
            "matmul-add-to-gemm",
            "--inputs",
            "x.npz",
            "--input-shape",
            "x=1,16",
        ],
    );
    assert!(e.contains("conflicts with input `x`"), "{e}");
    assert!(!d.path().join("bad.onnx").exists());
}

#[test]
fn help_and_version_exit_0_and_a_missing_out_exits_2() {
    let d = dir_with(&["mlp.onnx"]);
    let r = ok(d.path(), &["--help"]);
    for flag in [
        "--rules",
        "--list-rules",
        "--no-verify",
        "--in-place",
        "--report-json",
        "--external-data",
        "--max-patches",
        "--calibration",
        "--lowrank-energy",
        "--lowrank-rank",
        "--lowrank-ratio",
        "--lowrank-tolerance",
        "--lowrank-min-saving",
        "--inputs",
        "--input-shape",
        "--tolerance",
        "--seed",
    ] {
        assert!(r.stdout.contains(flag), "{flag} not in --help");
    }
    for sub in ["inspect", "show", "diff", "verify"] {
        assert!(r.stdout.contains(sub), "{sub} not in --help");
        ok(d.path(), &[sub, "--help"]);
    }
    let r = ok(d.path(), &["--version"]);
    assert!(r.stdout.contains(env!("CARGO_PKG_VERSION")), "{r:?}");
    let r = run(d.path(), &["mlp.onnx"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(listing(d.path()), set(&["mlp.onnx"]));
}

#[test]
fn verification_flags_are_checked_even_when_nothing_is_verified() {
    let d = dir_with(&["mlp.onnx"]);
    for args in [
        &[
            "mlp.onnx",
            "out.onnx",
            "--rules",
            "none",
            "--input-shape",
            "z=1",
        ][..],
        &["mlp.onnx", "out.onnx", "--no-verify", "--input-shape", "x"],
        &[
            "mlp.onnx",
            "out.onnx",
            "--no-verify",
            "--input-shape",
            "x=0,16",
        ],
        &[
            "mlp.onnx",
            "out.onnx",
            "--no-verify",
            "--inputs",
            "nope.npz",
        ],
    ] {
        let e = refused(d.path(), args);
        assert!(
            e.contains("--input-shape") || e.contains("`nope.npz`"),
            "{args:?}: {e}"
        );
    }
    assert_eq!(listing(d.path()), set(&["mlp.onnx"]));
}

#[test]
fn option_flags_of_rules_not_run_and_missing_calibration_are_refused() {
    let d = dir_with(&["lowrank.onnx"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--rules", "clean", "--lowrank-rank", "4"],
            "--lowrank-rank is an option of `lowrank`, which `--rules clean` does not run",
        ),
        (
            &["--lowrank-energy", "0.9"],
            "--lowrank-energy is an option of `lowrank`, which `--rules clean` does not run",
        ),
        (
            &["--rules", "lowrank", "--quantize-weights", "uint8"],
            "--quantize-weights is an option of `quantize`",
        ),
        (
            &["--rules", "quantize", "--prune-zero"],
            "--prune-zero is an option of `prune`",
        ),
        (
            &["--rules", "lowrank", "--calibration", "nowhere"],
            "calibration inputs `nowhere` do not exist",
        ),
        (
            &["--rules", "clean", "--calibration", "."],
            "--calibration is read by `lowrank`",
        ),
        (
            &["--rules", "quantize", "--calibration", "."],
            "--calibration is read by `lowrank`",
        ),
    ];
    for (flags, message) in cases {
        let mut args = vec!["lowrank.onnx", "out.onnx"];
        args.extend_from_slice(flags);
        let e = refused(d.path(), &args);
        assert!(e.contains(message), "{flags:?}: {e}");
    }
    assert_eq!(
        listing(d.path()),
        BTreeSet::from(["lowrank.onnx".to_string()])
    );
}

/// Runs the binary in `dir` with `args`, `stdin` piped in; returns (exit code, stdout bytes,
/// stderr text).
fn run_piped(dir: &Path, args: &[&str], stdin: &[u8]) -> (Option<i32>, Vec<u8>, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(common::bin())
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run onnx-slim");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let o = child.wait_with_output().expect("wait");
    feeder.join().expect("feeder");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (o.status.code(), o.stdout, stderr)
}

#[test]
fn dash_reads_the_model_from_stdin_and_writes_it_to_stdout_with_the_report_on_stderr() {
    let d = dir_with(&["conv.onnx"]);
    ok(d.path(), &["conv.onnx", "file.onnx"]);
    let want = std::fs::read(d.path().join("file.onnx")).expect("file");
    let input = std::fs::read(d.path().join("conv.onnx")).expect("input");
    for out in ["-", "/dev/stdout"] {
        let (code, stdout, stderr) = run_piped(d.path(), &["-", out], &input);
        assert_eq!(code, Some(0), "{out}: {stderr}");
        assert_eq!(stdout, want, "{out}: the same bytes as written to a file");
        assert!(stderr.contains("verification in tract"), "{stderr}");
        assert!(stderr.contains("wrote standard output"), "{stderr}");
    }
    // A file OUT with the JSON report on stdout: stdout is exactly the JSON.
    let (code, stdout, stderr) =
        run_piped(d.path(), &["-", "again.onnx", "--report-json", "-"], &input);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&stdout).expect("stdout is the JSON report");
    assert_eq!(v["output_bytes"], want.len() as u64);
    assert_eq!(
        std::fs::read(d.path().join("again.onnx")).expect("again"),
        want
    );
    // Other commands read `-` too.
    let (code, stdout, _) = run_piped(d.path(), &["inspect", "-", "--json"], &input);
    assert_eq!(code, Some(0));
    serde_json::from_slice::<serde_json::Value>(&stdout).expect("inspect JSON");
}

#[test]
fn stdout_cannot_carry_both_the_model_and_the_report_nor_external_data() {
    let d = dir_with(&["conv.onnx"]);
    for (args, want) in [
        (
            &["conv.onnx", "-", "--report-json", "-"][..],
            "cannot both be standard output",
        ),
        (
            &["conv.onnx", "-", "--external-data"][..],
            "--external-data needs OUT",
        ),
    ] {
        let line = refused(d.path(), args);
        assert!(line.contains(want), "{args:?}: {line}");
    }
    // Garbage on stdin: one line, exit 2, nothing on stdout.
    let (code, stdout, stderr) = run_piped(d.path(), &["-", "-"], b"not a model");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
