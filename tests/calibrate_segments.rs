//! Calibration within `--memory-limit`: a model whose weights do not fit is run segment by
//! segment (the cuts of segment-wise verification), and what the rules get from it is what the
//! whole-model capture gives.

mod common;

use std::path::Path;

use onnx_slim::calibrate::range::RangeMethod;
use onnx_slim::calibrate::{capture_each, capture_segmented, load_sets, ranges, Captured};
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::verify::segment::model_need;
use onnx_slim::verify::InputSet;

/// A memory limit below every model's need: segments as small as the cuts allow.
const TINY: u64 = 1;

fn decode(path: &Path) -> ModelProto {
    onnx_slim::onnx::decode_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .model
}

/// What the data-aware rules ask calibration for: the non-constant inputs of MatMul, Gemm and
/// Conv nodes (lowrank, prune, cluster, quantize), the inputs of Add, Mul and Relu (quantize's
/// activations), and one graph input (taken from the sets, not from a run).
fn wanted(model: &ModelProto) -> Vec<String> {
    let g = model.graph.as_ref().expect("graph");
    let inits: std::collections::HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let mut v: Vec<String> = Vec::new();
    for n in &g.node {
        let op = n.op_type.as_deref().unwrap_or("");
        let take = match op {
            "MatMul" | "Gemm" | "Conv" | "ConvTranspose" => 2,
            "Add" | "Mul" | "Relu" | "Sigmoid" => 2,
            _ => 0,
        };
        for i in n.input.iter().take(take) {
            if !i.is_empty() && !inits.contains(i.as_str()) && !v.contains(i) {
                v.push(i.clone());
            }
        }
    }
    if let Some(i) = g
        .input
        .iter()
        .filter_map(|i| i.name.clone())
        .find(|n| !inits.contains(n.as_str()))
    {
        if !v.contains(&i) {
            v.push(i);
        }
    }
    v
}

/// Largest difference allowed between a whole-model and a segment-wise activation, relative
/// to the value (with a floor of 1). Not every capture is bit-equal: tract's optimizer fuses a
/// Conv with the BatchNormalization, Add and Clip after it when they are in one model, and not
/// across a cut, which reassociates the float arithmetic (measured: worst 1.8e-5 in
/// ppocr_mobile_v2_cls, every activation of the other five shared models bit-equal).
const REL: f32 = 1e-4;

/// How a segment-wise capture compared with the whole-model one.
#[derive(Debug, Default)]
struct Compared {
    segments: usize,
    /// (set, value) pairs compared.
    values: usize,
    /// Of these, how many are bit-equal.
    bit_equal: usize,
    /// Values (names) differing by more than [`REL`] in some set.
    beyond: Vec<String>,
    /// Largest relative difference seen.
    worst: f32,
}

/// Captures `values` whole (no limit) and segment by segment at [`TINY`] and compares every
/// set's every value element by element (NaN on one side only is a difference: compared as
/// bits first); each value must reach the callback once per set.
fn compare_capture(
    name: &str,
    model: &ModelProto,
    values: &[String],
    sets: &[InputSet],
) -> Compared {
    let mut whole: Vec<Captured> = vec![Captured::new(); sets.len()];
    capture_each(model, values, sets, u64::MAX, |i, c| {
        whole[i].extend(c);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{name}: whole capture: {e}"));
    let mut seg: Vec<Captured> = vec![Captured::new(); sets.len()];
    let mut calls = vec![std::collections::HashMap::<String, usize>::new(); sets.len()];
    let segments = capture_segmented(model, values, sets, TINY, |i, c| {
        for k in c.keys() {
            *calls[i].entry(k.clone()).or_default() += 1;
        }
        seg[i].extend(c);
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{name}: segment-wise capture: {e}"));
    let mut out = Compared {
        segments,
        ..Default::default()
    };
    for (i, (w, s)) in whole.iter().zip(&seg).enumerate() {
        assert_eq!(
            w.keys().collect::<Vec<_>>(),
            s.keys().collect::<Vec<_>>(),
            "{name} set {i}: the values captured"
        );
        assert!(
            calls[i].values().all(|&n| n == 1),
            "{name} set {i}: a value handed twice: {:?}",
            calls[i]
        );
        for (k, a) in w {
            let b = &s[k];
            assert_eq!(a.shape(), b.shape(), "{name} set {i} `{k}`: shape");
            let mut equal = true;
            for (x, y) in a.iter().zip(b.iter()) {
                if x.to_bits() == y.to_bits() {
                    continue;
                }
                equal = false;
                let rel = if x.is_nan() || y.is_nan() {
                    f32::INFINITY
                } else {
                    (x - y).abs() / x.abs().max(1.0)
                };
                out.worst = out.worst.max(rel);
                if !(rel <= REL) && !out.beyond.contains(k) {
                    out.beyond.push(k.clone());
                }
            }
            out.bit_equal += usize::from(equal);
            out.values += 1;
        }
    }
    out
}

/// The ranges of `values` whole and segment by segment (a limit below the model's need, so
/// [`ranges`] takes the segment-wise path itself), by min-max and by histogram (percentile):
/// the same number of values seen, and min, max and range within [`REL`]. Returns the ranges
/// compared and how many of them are bit-equal, skipping the values of `skip`.
fn compare_ranges(
    name: &str,
    model: &ModelProto,
    values: &[String],
    sets: &[InputSet],
    skip: &[String],
) -> (usize, usize) {
    let limit = (model_need(model) / 2).max(1);
    assert!(limit < model_need(model), "{name}: no weights");
    let (mut n, mut equal) = (0, 0);
    for method in [RangeMethod::MinMax, RangeMethod::Percentile(99.9)] {
        let w =
            ranges(model, values, sets, method, u64::MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
        let s =
            ranges(model, values, sets, method, limit).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(w.len(), s.len());
        for (k, a) in w.iter().filter(|(k, _)| !skip.contains(k)) {
            let b = &s[k];
            let m = method.name();
            assert_eq!(a.count(), b.count(), "{name} `{k}` {m}: values seen");
            let (ra, rb) = (a.range(), b.range());
            assert_eq!(ra.is_ok(), rb.is_ok(), "{name} `{k}` {m}: {ra:?} {rb:?}");
            for (x, y) in [a.min_max(), ra.ok()]
                .into_iter()
                .zip([b.min_max(), rb.ok()])
            {
                let (Some(x), Some(y)) = (x, y) else {
                    assert_eq!(x.is_some(), y.is_some(), "{name} `{k}` {m}");
                    continue;
                };
                let close = |p: f32, q: f32| (p - q).abs() <= REL * p.abs().max(1.0);
                assert!(
                    close(x.0, y.0) && close(x.1, y.1),
                    "{name} `{k}` {m}: {x:?} whole, {y:?} segment-wise"
                );
            }
            let bits = |r: Option<(f32, f32)>| r.map(|(x, y)| (x.to_bits(), y.to_bits()));
            equal += usize::from(
                bits(a.min_max()) == bits(b.min_max())
                    && bits(a.range().ok()) == bits(b.range().ok()),
            );
            n += 1;
        }
    }
    (n, equal)
}

#[test]
fn segment_wise_capture_equals_whole_capture_on_the_shared_models() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut cases = Vec::new();
    let (mut values, mut bit_equal, mut ranges_n, mut ranges_equal) = (0, 0, 0, 0);
    for dir in &models {
        let name = common::case_name(dir);
        let model = decode(&dir.join("model.onnx"));
        let sets =
            load_sets(&[dir.join("calibration")], &model).unwrap_or_else(|e| panic!("{name}: {e}"));
        let wanted = wanted(&model);
        let c = compare_capture(&name, &model, &wanted, &sets);
        let (r, re) = compare_ranges(&name, &model, &wanted, &sets, &[]);
        eprintln!(
            "{name}: {} sets, {} segments; {} of {} activations bit-equal (worst relative {:.1e}); {re} of {r} ranges bit-equal",
            sets.len(),
            c.segments,
            c.bit_equal,
            c.values,
            c.worst
        );
        assert!(c.segments > 1, "{name}: one segment only");
        assert!(c.beyond.is_empty(), "{name}: {:?} differ", c.beyond);
        assert_eq!(c.values, sets.len() * wanted.len(), "{name}");
        values += c.values;
        bit_equal += c.bit_equal;
        ranges_n += r;
        ranges_equal += re;
        cases.push(name);
    }
    eprintln!(
        "{bit_equal} of {values} activations and {ranges_equal} of {ranges_n} ranges bit-equal"
    );
    assert_eq!(cases.len(), 6, "{cases:?}");
    // The README's figures.
    assert_eq!((bit_equal, values), (942, 1326));
    assert_eq!((ranges_equal, ranges_n), (1170, 1198));
}

#[test]
fn segment_wise_capture_equals_whole_capture_on_the_fixtures() {
    let mut cases = Vec::new();
    for path in common::fixtures() {
        let name = common::case_name(&path);
        let model = decode(&path);
        let Ok(sets) = (0..3)
            .map(|seed| onnx_slim::verify::inputs::random_inputs(&model, &[], seed))
            .collect::<onnx_slim::error::Result<Vec<_>>>()
        else {
            continue;
        };
        let values = wanted(&model);
        let c = compare_capture(&name, &model, &values, &sets);
        let (r, re) = compare_ranges(&name, &model, &values, &sets, &c.beyond);
        eprintln!(
            "{name}: {} segments; {} of {} activations bit-equal; {re} of {r} ranges bit-equal; beyond: {:?}",
            c.segments, c.bit_equal, c.values, c.beyond
        );
        assert_eq!(c.values, sets.len() * values.len(), "{name}");
        cases.push((name, c.segments, c.beyond));
    }
    let names: Vec<&str> = cases.iter().map(|(n, _, _)| n.as_str()).collect();
    // all_attr_types has inputs random sets cannot fill.
    let runnable: Vec<&str> = common::FIXTURES
        .into_iter()
        .filter(|f| *f != "all_attr_types.onnx")
        .collect();
    assert_eq!(names, runnable, "{cases:?}");
    for (name, segments, beyond) in &cases {
        // gemm_attrs is one Gemm: nothing to cut.
        assert!(
            *segments > 1 || name == "gemm_attrs.onnx",
            "{name}: {segments}"
        );
        // clean_kinds: the whole model in tract takes the wrong columns in a strided Slice
        // of a strided Slice (see the next test); the segment-wise run is right.
        let known: &[&str] = if name == "clean_kinds.onnx" {
            &["flat", "r1", "r2", "sum"]
        } else {
            &[]
        };
        assert_eq!(beyond, known, "{name}");
    }
}

/// The exactness oracle of the one fixture where whole and segment-wise captures differ:
/// `cols = Slice(rows, 1.., axis 3, step 2)` of `rows = Slice(shifted, 0.., axis 2, step 2)` is
/// `shifted[:, :, ::2, 1::2]` exactly, and the segment-wise capture gives exactly that (so does
/// onnxruntime); the whole-model tract plan gives `shifted[:, :, ::2, ::2]`.
#[test]
fn segment_wise_capture_of_a_strided_slice_is_exact() {
    let path = common::run::fixture("clean_kinds.onnx");
    let model = decode(&path);
    let sets: Vec<InputSet> = (0..3)
        .map(|seed| onnx_slim::verify::inputs::random_inputs(&model, &[], seed).unwrap())
        .collect();
    let values: Vec<String> = ["shifted", "cols", "flat"].map(String::from).to_vec();
    let mut seg = vec![Captured::new(); sets.len()];
    let segments = capture_segmented(&model, &values, &sets, TINY, |i, c| {
        seg[i].extend(c);
        Ok(())
    })
    .unwrap();
    assert!(segments > 1);
    for c in &seg {
        let expected: Vec<u32> = c["shifted"]
            .slice(ndarray::s![.., .., ..;2, 1..;2])
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(expected.len(), 64);
        for v in ["cols", "flat"] {
            let got: Vec<u32> = c[v].iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, expected, "`{v}`");
        }
    }
}

/// Static quantization (`--quantize-activations --calibration DIR`) under `--memory-limit 1K`
/// (calibration and verification segment by segment) writes what it writes without the limit:
/// byte for byte where the captured ranges are bit-equal (see the shared-model capture test),
/// else the same graph with every initializer within [`REL`] (a scale) or one step (a zero
/// point); a model the budget refuses is refused with the same message.
#[test]
fn quantize_with_calibration_under_a_memory_limit_writes_the_same_model() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mut identical, mut close, mut refused_alike) = (Vec::new(), Vec::new(), Vec::new());
    for dir in &models {
        let name = common::case_name(dir);
        let src = dir.join("model.onnx");
        let cal = dir.join("calibration");
        let outs = [
            tmp.path().join(format!("{name}.onnx")),
            tmp.path().join(format!("{name}_limited.onnx")),
        ];
        let runs: Vec<common::run::Run> = outs
            .iter()
            .zip([None, Some("1K")])
            .map(|(out, limit)| {
                let mut args = vec![
                    src.to_str().unwrap(),
                    out.to_str().unwrap(),
                    "--rules",
                    "quantize",
                    "--quantize-activations",
                    "--calibration",
                    cal.to_str().unwrap(),
                ];
                if let Some(l) = limit {
                    args.extend(["--memory-limit", l]);
                }
                common::run::run(tmp.path(), &args)
            })
            .collect();
        assert_eq!(
            runs[0].code, runs[1].code,
            "{name}: {:?}\n{:?}",
            runs[0], runs[1]
        );
        if runs[0].code != Some(0) {
            assert_eq!(runs[0].stderr, runs[1].stderr, "{name}");
            assert!(!outs[0].exists() && !outs[1].exists(), "{name}");
            refused_alike.push(name);
            continue;
        }
        assert!(
            runs[1].stdout.contains("verified in ") && runs[1].stdout.contains(" segments"),
            "{name}: {:?}",
            runs[1]
        );
        let (a, b) = (
            std::fs::read(&outs[0]).unwrap(),
            std::fs::read(&outs[1]).unwrap(),
        );
        if a == b {
            identical.push(name);
            continue;
        }
        let (ma, mb) = (decode(&outs[0]), decode(&outs[1]));
        let (ga, gb) = (ma.graph.unwrap(), mb.graph.unwrap());
        assert_eq!(ga.node, gb.node, "{name}: the graphs");
        assert_eq!(ga.initializer.len(), gb.initializer.len(), "{name}");
        let mut differing = 0;
        for (x, y) in ga.initializer.iter().zip(&gb.initializer) {
            assert_eq!(
                (&x.name, &x.dims, x.data_type),
                (&y.name, &y.dims, y.data_type)
            );
            if x == y {
                continue;
            }
            differing += 1;
            let values = |t: &onnx_slim::onnx::proto::TensorProto| -> Vec<f64> {
                match onnx_slim::ir::tensor::to_f32(t) {
                    Ok(a) => a.iter().map(|&v| v as f64).collect(),
                    Err(_) => onnx_slim::ir::tensor::to_i64(t)
                        .unwrap()
                        .iter()
                        .map(|&v| v as f64)
                        .collect(),
                }
            };
            let float = onnx_slim::ir::tensor::to_f32(x).is_ok();
            for (p, q) in values(x).iter().zip(&values(y)) {
                let ok = if float {
                    (p - q).abs() <= REL as f64 * p.abs().max(1.0)
                } else {
                    (p - q).abs() <= 1.0
                };
                assert!(ok, "{name} `{:?}`: {p} and {q}", x.name);
            }
        }
        eprintln!("{name}: {differing} initializers differ, all within tolerance");
        assert!(differing > 0);
        close.push(name);
    }
    eprintln!("identical {identical:?}, close {close:?}, refused alike {refused_alike:?}");
    assert_eq!(identical.len() + close.len() + refused_alike.len(), 6);
    // The four whose captured ranges are bit-equal, less silero_vad, which the budget refuses.
    assert_eq!(
        identical,
        ["captcha_crnn", "ddddocr_det_yolox", "digits_mlp"],
        "{close:?}"
    );
}

/// `--memory-limit` reaches calibration: the same static quantization run in this thread
/// captures segment by segment under a limit below the model's weights, and whole without one.
#[test]
fn memory_limit_sends_calibration_segment_by_segment() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let dir = models
        .iter()
        .find(|d| common::case_name(d) == "digits_mlp")
        .expect("digits_mlp");
    let tmp = tempfile::tempdir().unwrap();
    let mut counts = Vec::new();
    for (i, limit) in [None, Some("1K")].into_iter().enumerate() {
        // A calibration path of its own per run: quantize caches ranges by path.
        let cal = tmp.path().join(format!("calibration{i}"));
        std::os::unix::fs::symlink(dir.join("calibration"), &cal).unwrap();
        let out = tmp.path().join(format!("out{i}.onnx"));
        let mut argv = vec![
            "onnx-slim".to_string(),
            dir.join("model.onnx").to_string_lossy().into_owned(),
            out.to_string_lossy().into_owned(),
            "--rules".into(),
            "quantize".into(),
            "--quantize-activations".into(),
            "--calibration".into(),
            cal.to_string_lossy().into_owned(),
        ];
        if let Some(l) = limit {
            argv.extend(["--memory-limit".into(), l.into()]);
        }
        let before = onnx_slim::calibrate::segment_wise_captures();
        let o = onnx_slim::cli::embed::run(
            argv,
            &onnx_slim::cli::embed::Embed {
                capture: true,
                ..Default::default()
            },
        );
        assert_eq!(o.code, 0, "{o:?}");
        counts.push(onnx_slim::calibrate::segment_wise_captures() - before);
    }
    assert_eq!(counts[0], 0);
    assert!(counts[1] >= 1, "{counts:?}");
}

/// The runs of `--quantize-tolerance` (the error each candidate layer adds) and of a `--budget`
/// search (each option's loss, the written candidate) go segment by segment under `--memory-limit
/// 1K` and choose what they choose without it: the same bytes are written.
#[test]
fn tolerance_and_budget_runs_under_a_memory_limit_write_the_same_model() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let find = |n: &str| {
        models
            .iter()
            .find(|d| common::case_name(d) == n)
            .unwrap_or_else(|| panic!("{n}"))
            .clone()
    };
    let tmp = tempfile::tempdir().unwrap();
    let tolerance: &[&str] = &["--rules", "quantize", "--quantize-tolerance", "0.05"];
    let budget: &[&str] = &["--budget", "0.01"];
    let cases = [
        ("digits_mlp", tolerance),
        ("captcha_crnn", tolerance),
        ("digits_mlp", budget),
    ];
    let mut compared = 0;
    for (k, (model, flags)) in cases.iter().enumerate() {
        let dir = find(model);
        let src = dir.join("model.onnx");
        let cal = dir.join("calibration");
        let mut written = Vec::new();
        for limit in [None, Some("1K")] {
            let out = tmp.path().join(format!("{k}{}.onnx", limit.is_some()));
            let mut args = vec![src.to_str().unwrap(), out.to_str().unwrap()];
            args.extend_from_slice(flags);
            args.extend(["--calibration", cal.to_str().unwrap()]);
            if let Some(l) = limit {
                args.extend(["--memory-limit", l]);
            }
            common::run::ok(tmp.path(), &args);
            written.push(std::fs::read(&out).unwrap());
        }
        assert!(
            written[0] == written[1],
            "{model} {flags:?}: the limit changed the model"
        );
        compared += 1;
    }
    assert_eq!(compared, 3);
    // In this thread: the limit is what sends the runs segment by segment.
    let dir = find("digits_mlp");
    let mut counts = Vec::new();
    for (i, (flags, limit)) in [
        (tolerance, None),
        (tolerance, Some("1K")),
        (budget, None),
        (budget, Some("1K")),
    ]
    .into_iter()
    .enumerate()
    {
        // A calibration path of its own per run: the rules cache what they measure by path.
        let cal = tmp.path().join(format!("calibration{i}"));
        std::os::unix::fs::symlink(dir.join("calibration"), &cal).unwrap();
        let out = tmp.path().join(format!("inproc{i}.onnx"));
        let mut argv: Vec<String> = vec![
            "onnx-slim".into(),
            dir.join("model.onnx").to_string_lossy().into_owned(),
            out.to_string_lossy().into_owned(),
        ];
        argv.extend(flags.iter().map(|s| s.to_string()));
        argv.extend(["--calibration".into(), cal.to_string_lossy().into_owned()]);
        if let Some(l) = limit {
            argv.extend(["--memory-limit".into(), l.into()]);
        }
        let before = onnx_slim::verify::segment::segment_wise_runs();
        let o = onnx_slim::cli::embed::run(
            argv,
            &onnx_slim::cli::embed::Embed {
                capture: true,
                ..Default::default()
            },
        );
        assert_eq!(o.code, 0, "{o:?}");
        counts.push(onnx_slim::verify::segment::segment_wise_runs() - before);
    }
    assert_eq!((counts[0], counts[2]), (0, 0), "{counts:?}");
    assert!(counts[1] >= 2 && counts[3] >= 2, "{counts:?}");
}
