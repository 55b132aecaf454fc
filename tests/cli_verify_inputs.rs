//! What a model runs on, through the binary: the calibration inputs (refused up front when they
//! are unusable, warned about and counted when they fail for a layer, prepared as verification
//! prepares the model), the verification inputs (`--input NAME=VALUE`, `--input-shape`, no
//! silent size of 1 for a symbolic dim beyond the batch, the shapes used printed), one default
//! tolerance for the main command and `verify`, argmax only for score-like outputs, tract
//! failures that say what to try, and `inspect --input-shape`.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::proto::f32_tensor;
use common::run::{dir_with, json, ok, refused, run};
use onnx_slim::onnx::proto::tensor_proto::DataType;
use onnx_slim::onnx::proto::TensorProto;
use prost::Message;

const SILERO: &str = "silero_vad_v6_16k_op15";

/// `../shared/models/NAME`, or `None` (and a loud skip) without the shared data.
fn shared_model(name: &str) -> Option<PathBuf> {
    let dir = common::shared_dir().join("models").join(name);
    if dir.join("model.onnx").is_file() {
        Some(dir)
    } else {
        common::skip_loudly(&format!("SKIPPED: {} not found", dir.display()));
        None
    }
}

/// Writes `tensors` as `dir/input_K.pb`, K in order (a `test_data_set_N` folder).
fn write_set(dir: &Path, tensors: &[TensorProto]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (k, t) in tensors.iter().enumerate() {
        std::fs::write(dir.join(format!("input_{k}.pb")), t.encode_to_vec()).expect("write pb");
    }
}

fn i64_scalar(name: &str, v: i64) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![],
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(Bytes::from(v.to_le_bytes().to_vec())),
        ..Default::default()
    }
}

/// Copies `model.onnx` of a shared model alone into `dir` as `name` (no test data beside it).
fn alone(dir: &Path, model: &str, name: &str) -> Option<()> {
    let src = shared_model(model)?.join("model.onnx");
    std::fs::copy(src, dir.join(name)).expect("copy model");
    Some(())
}

// ---- calibration ----

#[test]
fn a_calibration_folder_without_input_sets_is_refused() {
    let d = dir_with(&["lowrank.onnx"]);
    std::fs::create_dir(d.path().join("empty")).unwrap();
    let e = refused(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--rules",
            "lowrank",
            "--calibration",
            "empty",
        ],
    );
    assert!(e.contains("`empty`"), "{e}");
    assert!(!d.path().join("out.onnx").exists());
}

#[test]
fn a_calibration_set_that_contradicts_the_declared_shapes_is_refused_up_front() {
    let d = dir_with(&["lowrank.onnx"]);
    // `img` is declared [1, 16, 6, 6].
    write_set(
        &d.path().join("calib/test_data_set_0"),
        &[
            f32_tensor("x", &[1, 64], 1),
            f32_tensor("img", &[1, 16, 6, 5], 2),
        ],
    );
    let e = refused(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--rules",
            "lowrank",
            "--calibration",
            "calib",
        ],
    );
    assert!(
        e.contains("input `img` of calibration set `test_data_set_0` has shape [1, 16, 6, 5]"),
        "{e}"
    );
    assert!(!d.path().join("out.onnx").exists());
}

#[test]
fn a_calibration_that_fails_in_tract_is_a_warning_and_a_count_in_the_json_report() {
    let d = tempfile::tempdir().unwrap();
    let Some(dir) = shared_model(SILERO) else {
        return;
    };
    // 100 samples: the STFT leaves the LSTM an input tract cannot type, on every layer's capture.
    write_set(
        &d.path().join("calib/test_data_set_0"),
        &[
            f32_tensor("input", &[1, 100], 1),
            f32_tensor("state", &[2, 1, 128], 2),
            i64_scalar("sr", 16000),
        ],
    );
    let model = dir.join("model.onnx");
    let r = ok(
        d.path(),
        &[
            model.to_str().unwrap(),
            "out.onnx",
            "--rules",
            "lowrank",
            "--calibration",
            "calib",
            "--report-json",
            "r.json",
        ],
    );
    let warning: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: calibration failed for 5 layers"))
        .collect();
    assert_eq!(warning.len(), 1, "{r:?}");
    assert!(warning[0].contains("LSTM"), "{r:?}");
    let v = json(&d.path().join("r.json"));
    assert_eq!(v["calibration_failures"], 5, "{v}");
}

#[test]
fn silero_vad_calibrates_through_the_preparation_verification_uses() {
    let d = tempfile::tempdir().unwrap();
    let Some(dir) = shared_model(SILERO) else {
        return;
    };
    let model = dir.join("model.onnx");
    let calib = dir.join("calibration");
    let r = ok(
        d.path(),
        &[
            model.to_str().unwrap(),
            "out.onnx",
            "--rules",
            "lowrank",
            "--calibration",
            calib.to_str().unwrap(),
            "--budget",
            "0.2",
            "--report-json",
            "r.json",
        ],
    );
    assert!(!r.stderr.contains("calibration failed"), "{r:?}");
    let v = json(&d.path().join("r.json"));
    assert_eq!(v["calibration_failures"], 0, "{v}");
    let rewrites: Vec<String> = v["report"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["code"] == "L001")
        .flat_map(|r| r["rewrites"].as_array().unwrap().clone())
        .map(|w| w["description"].as_str().unwrap().to_string())
        .collect();
    // The search factors the four encoder Convs (and the STFT's), each on its captured
    // activations: the capture ran with the `If`s decided.
    assert!(rewrites.len() >= 4, "{rewrites:?}");
    assert!(
        rewrites.iter().all(|w| w.contains("(data-aware, ")),
        "{rewrites:?}"
    );
}

#[test]
fn budget_with_an_option_flag_of_a_lossy_rule_runs_that_rule() {
    let d = dir_with(&["lowrank.onnx"]);
    ok(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--budget",
            "0.5",
            "--lowrank-rank",
            "4",
            "--report-json",
            "r.json",
        ],
    );
    let v = json(&d.path().join("r.json"));
    let l001 = v["report"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "L001")
        .expect("lowrank ran");
    assert_eq!(l001["rewrites"].as_array().unwrap().len(), 3, "{l001}");
    // quantize was not asked for: the fixed recipe is clean and lowrank.
    assert!(v["report"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["code"] != "Q001"));
}

// ---- verification inputs ----

#[test]
fn a_symbolic_dim_beyond_the_batch_without_data_is_refused_naming_the_flag() {
    let d = tempfile::tempdir().unwrap();
    if alone(d.path(), "captcha_crnn", "captcha.onnx").is_none() {
        return;
    }
    let e = refused(d.path(), &["captcha.onnx", "out.onnx"]);
    assert!(e.contains("`image_width`"), "{e}");
    assert!(e.contains("`--input-shape input1=1,1,64,N`"), "{e}");
    assert!(!d.path().join("out.onnx").exists());
    // A lossless re-encode verifies nothing, and needs no inputs.
    ok(d.path(), &["captcha.onnx", "out.onnx", "--rules", "none"]);
    let e = refused(d.path(), &["verify", "captcha.onnx", "captcha.onnx"]);
    assert!(e.contains("`--input-shape input1=1,1,64,N`"), "{e}");
    // With the width given, it runs at that width, and says so.
    let r = ok(
        d.path(),
        &[
            "verify",
            "captcha.onnx",
            "captcha.onnx",
            "--input-shape",
            "input1=1,1,64,160",
        ],
    );
    assert!(r.stdout.contains("inputs: input1 [1, 1, 64, 160]"), "{r:?}");
}

#[test]
fn a_symbolic_batch_is_one_and_the_report_says_so() {
    let d = dir_with(&["mlp.onnx"]);
    // `x` is declared [N, 16].
    let r = ok(d.path(), &["verify", "mlp.onnx", "mlp.onnx"]);
    assert!(r.stdout.contains("inputs: x [1, 16]"), "{r:?}");
}

#[test]
fn input_values_feed_silero_its_sample_rate() {
    let d = tempfile::tempdir().unwrap();
    if alone(d.path(), SILERO, "silero.onnx").is_none() {
        return;
    }
    let e = refused(d.path(), &["silero.onnx", "out.onnx"]);
    assert!(e.contains("`--input-shape input=1,N`"), "{e}");
    let args = [
        "--input-shape",
        "input=1,512",
        "--input",
        "sr=16000",
        "--report-json",
        "r.json",
    ];
    let mut main = vec!["silero.onnx", "out.onnx"];
    main.extend(args);
    let r = ok(d.path(), &main);
    assert!(
        r.stdout
            .contains("inputs: input [1, 512], state [2, 1, 128], sr = 16000"),
        "{r:?}"
    );
    let v = json(&d.path().join("r.json"));
    assert_eq!(
        v["verification"]["sets"][0]["inputs"],
        serde_json::json!(["input [1, 512]", "state [2, 1, 128]", "sr = 16000"])
    );
    let r = ok(
        d.path(),
        &[
            "verify",
            "silero.onnx",
            "out.onnx",
            "--input-shape",
            "input=1,512",
            "--input",
            "sr=8000",
        ],
    );
    assert!(r.stdout.contains("sr = 8000"), "{r:?}");
}

#[test]
fn input_values_that_do_not_fit_are_refused() {
    let d = dir_with(&["if_subgraph.onnx", "mlp.onnx"]);
    for (model, value, want) in [
        ("mlp.onnx", "nope=1", "the model has no input `nope`"),
        (
            "mlp.onnx",
            "x=1,2",
            "give its shape with `--input-shape x=DIMS` too",
        ),
        ("if_subgraph.onnx", "cond=maybe", "`maybe` is not a bool"),
        ("mlp.onnx", "x=", "a value is empty"),
    ] {
        let e = refused(d.path(), &["verify", model, model, "--input", value]);
        assert!(e.contains(want), "{value}: {e}");
    }
}

#[test]
fn an_input_value_decides_an_if() {
    let d = dir_with(&["if_subgraph.onnx"]);
    for v in ["true", "false"] {
        let r = ok(
            d.path(),
            &[
                "verify",
                "if_subgraph.onnx",
                "if_subgraph.onnx",
                "--input",
                &format!("cond={v}"),
            ],
        );
        let want = if v == "true" { "cond = 1" } else { "cond = 0" };
        assert!(r.stdout.contains(want), "{r:?}");
    }
}

#[test]
fn tract_failure_names_the_undecided_if_and_what_to_try() {
    let d = tempfile::tempdir().unwrap();
    if alone(d.path(), SILERO, "silero.onnx").is_none() {
        return;
    }
    let r = run(
        d.path(),
        &[
            "verify",
            "silero.onnx",
            "silero.onnx",
            "--input-shape",
            "input=1,100",
        ],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("\"/model/decoder/rnn/LSTM\""), "{r:?}");
    assert!(
        r.stderr
            .contains("the inputs do not decide `If` `/model/decoder/rnn/If_2`"),
        "{r:?}"
    );
    assert!(r.stderr.contains("`--input sr=16000`"), "{r:?}");
}

// ---- tolerance and the verdict ----

#[test]
fn the_main_command_and_verify_share_the_default_tolerance_and_print_its_criterion() {
    let d = dir_with(&["clean_kinds.onnx"]);
    let criterion = "pass: |a − b| ≤ 0.00001 · max(1, |a|) for every element";
    let r = ok(d.path(), &["clean_kinds.onnx", "out.onnx"]);
    assert!(
        r.stdout
            .contains("verification in tract (tolerance 0.00001)"),
        "{r:?}"
    );
    assert!(r.stdout.contains(criterion), "{r:?}");
    let r = ok(d.path(), &["verify", "clean_kinds.onnx", "out.onnx"]);
    assert!(r.stdout.contains("passed at tolerance 0.00001"), "{r:?}");
    assert!(r.stdout.contains(criterion), "{r:?}");
}

#[test]
fn verify_of_a_lossy_result_fails_element_wise_and_points_to_the_budget() {
    let d = dir_with(&["lowrank.onnx"]);
    ok(
        d.path(),
        &[
            "lowrank.onnx",
            "out.onnx",
            "--rules",
            "lowrank",
            "--lowrank-rank",
            "1",
            "--budget",
            "1",
        ],
    );
    let r = run(d.path(), &["verify", "lowrank.onnx", "out.onnx"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains("`--budget 0.01` judges B as it does"),
        "{r:?}"
    );
    let r = ok(
        d.path(),
        &["verify", "lowrank.onnx", "out.onnx", "--budget", "1"],
    );
    assert!(!r.stdout.contains("judges B as it does"), "{r:?}");
}

#[test]
fn argmax_is_reported_for_scores_and_not_for_a_carried_state() {
    let d = tempfile::tempdir().unwrap();
    let Some(dir) = shared_model(SILERO) else {
        return;
    };
    let model = dir.join("model.onnx");
    let m = model.to_str().unwrap();
    ok(d.path(), &["verify", m, m, "--report-json", "v.json"]);
    let v = json(&d.path().join("v.json"));
    let sets = v["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 4);
    for s in sets {
        let state = s["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["output"] == "stateN")
            .expect("stateN");
        // [2, 4, 128], the shape of the input `state`: no score.
        assert_eq!(state["shape"], serde_json::json!([2, 4, 128]));
        assert!(state["argmax_agreement"].is_null(), "{state}");
    }
    let d = dir_with(&["mlp.onnx"]);
    ok(
        d.path(),
        &["verify", "mlp.onnx", "mlp.onnx", "--report-json", "v.json"],
    );
    let v = json(&d.path().join("v.json"));
    assert_eq!(v["sets"][0]["outputs"][0]["argmax_agreement"], 1.0, "{v}");
}

// ---- inspect ----

#[test]
fn inspect_counts_macs_at_the_given_input_shape() {
    let d = dir_with(&["mlp.onnx"]);
    let macs = |extra: &[&str]| {
        let mut args = vec!["inspect", "mlp.onnx", "--json"];
        args.extend(extra);
        let r = ok(d.path(), &args);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
        v["macs"]["total"].as_u64().expect("total")
    };
    let one = macs(&[]);
    assert!(one > 0);
    assert_eq!(macs(&["--input-shape", "x=4,16"]), 4 * one);
    let e = refused(
        d.path(),
        &["inspect", "mlp.onnx", "--input-shape", "x=4,15"],
    );
    assert!(e.contains("fixed size 16"), "{e}");
}
