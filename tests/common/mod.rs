//! Helpers shared by the integration tests: where the shared data is, and loud skips without it.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod compare;
pub mod memory;
pub mod ort;
pub mod proto;
pub mod readme;
pub mod run;

/// `../shared` relative to the crate root, or `$ONNX_SLIM_SHARED` when set (set it to a missing
/// folder to run the suite as a user's clone without `../shared` does).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("ONNX_SLIM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared")))
}

fn skip(what: &str) {
    skip_loudly(&format!(
        "SKIPPED: {what} not found at {} (a user's clone has no ../shared)",
        shared_dir().display()
    ));
}

/// Prints a skip notice straight to stderr: the test harness captures `eprintln!` of passing
/// tests, and a skip must be seen.
pub fn skip_loudly(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{message}");
}

/// Every `test_*` case folder of the ONNX node suite, sorted; `None` (and a loud message) if absent.
pub fn node_test_cases() -> Option<Vec<PathBuf>> {
    let dir = shared_dir().join("onnx-node-tests");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        skip("../shared/onnx-node-tests");
        return None;
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    Some(v)
}

/// Every model folder under `../shared/models`, sorted; `None` (and a loud message) if absent.
pub fn shared_models() -> Option<Vec<PathBuf>> {
    let dir = shared_dir().join("models");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        skip("../shared/models");
        return None;
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    Some(v)
}

/// Path of the release-or-debug binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_onnx-slim"))
}

/// The node-suite cases tract cannot run (or whose original disagrees with the expected
/// outputs), one `name<TAB>reason` a line: the explicit allow-list of cases a node-suite test may
/// leave uncompared. `tests/node_suite.rs` checks it is exact; regenerate it with
/// `ONNX_SLIM_WRITE_SKIPS=1 cargo test --release --test node_suite`.
pub const NODE_SUITE_SKIPS: &str = "tests/node_suite_skips.txt";

fn node_suite_skips_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(NODE_SUITE_SKIPS)
}

/// [`NODE_SUITE_SKIPS`]: case name → why tract cannot compare it.
pub fn node_suite_skips() -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(node_suite_skips_path())
        .unwrap_or_else(|e| panic!("{NODE_SUITE_SKIPS}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, why) = l.split_once('\t').unwrap_or((l, ""));
            (name.to_string(), why.to_string())
        })
        .collect()
}

/// Writes [`NODE_SUITE_SKIPS`] (only when regenerating it on purpose).
pub fn write_node_suite_skips(skips: &[(String, String)]) {
    let mut s = String::from(
        "# Node-suite cases tract cannot run or that tract runs differently from the expected\n\
         # outputs: the only cases tests/node_suite.rs and tests/rules_clean.rs may leave\n\
         # uncompared. Written by ONNX_SLIM_WRITE_SKIPS=1 cargo test --release --test node_suite\n",
    );
    for (name, why) in skips {
        let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
        s += &format!("{name}\t{why}\n");
    }
    std::fs::write(node_suite_skips_path(), s).expect("write the node-suite skip list");
}

/// The folder name of a node-suite case (`test_abs`).
pub fn case_name(case: &std::path::Path) -> String {
    case.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The expected outputs (`output_K.pb`) of the test set folder `set_dir`, named after the
/// tensor's own name or else the model's K-th graph output, in order.
pub fn expected_outputs(
    set_dir: &std::path::Path,
    model: &onnx_slim::onnx::proto::ModelProto,
) -> onnx_slim::verify::Outputs {
    use onnx_slim::verify::{inputs::numbered_pb_files, read_tensor_proto, tensor_from_proto};
    let graph_outputs: Vec<String> = model
        .graph
        .as_ref()
        .map(|g| g.output.iter().filter_map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    numbered_pb_files(set_dir, "output")
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let proto = read_tensor_proto(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let t = tensor_from_proto(&proto).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = proto
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .or_else(|| graph_outputs.get(k).cloned())
                .unwrap_or_else(|| format!("output_{k}"));
            (name, t)
        })
        .collect()
}

/// Every fixture `cargo run --example gen_fixtures` writes (`tests/fixtures.rs` checks the
/// generator makes exactly these).
pub const FIXTURES: [&str; 11] = [
    "all_attr_types.onnx",
    "clean_kinds.onnx",
    "constants.onnx",
    "conv.onnx",
    "gemm_attrs.onnx",
    "if_subgraph.onnx",
    "lowrank.onnx",
    "mlp.onnx",
    "prune.onnx",
    "subgraph_constants.onnx",
    "tied_weights.onnx",
];

/// Paths of the `.onnx` files in `fixtures/`, sorted; asserts they are exactly [`FIXTURES`].
pub fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    let names: Vec<String> = v.iter().map(|p| case_name(p)).collect();
    assert_eq!(names, FIXTURES, "the fixtures in {}", dir.display());
    v
}

/// Index of the largest value of every row along the last axis of a float32 output (the first
/// one on ties); a NaN fails the test.
pub fn argmax_rows(t: &tract_onnx::prelude::Tensor) -> Vec<usize> {
    let a = t.to_plain_array_view::<f32>().expect("f32 output");
    let last = *a.shape().last().expect("rank ≥ 1");
    let flat: Vec<f32> = a.iter().copied().collect();
    flat.chunks(last.max(1))
        .map(|row| {
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                assert!(!v.is_nan(), "NaN in an output");
                if *v > row[best] {
                    best = i;
                }
            }
            best
        })
        .collect()
}

/// Accuracy of the model at `model` on the test sets of the shared model folder `dir`: the argmax
/// of output 0's rows (run in tract) against `meta.json`'s integer labels; `(correct, total)`.
pub fn accuracy(dir: &std::path::Path, model: &std::path::Path) -> (usize, usize) {
    let proto = onnx_slim::onnx::decode_file(model).expect("decode").model;
    let sets = onnx_slim::verify::load_test_data_sets(dir, &proto).expect("test sets");
    let outs = onnx_slim::verify::run_many(&proto, &sets, "model").expect("runs in tract");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
            .expect("meta.json is JSON");
    let (mut ok, mut n) = (0, 0);
    for (s, o) in sets.iter().zip(&outs) {
        let labels = meta["labels"][&s.label].as_array().expect("labels per set");
        let got = argmax_rows(&o[0].1);
        assert_eq!(got.len(), labels.len(), "{}", s.label);
        n += got.len();
        ok += got
            .iter()
            .zip(labels)
            .filter(|(p, l)| Some(**p as u64) == l.as_u64())
            .count();
    }
    (ok, n)
}

/// The pinned Python with onnx + onnxruntime (`ONNX_SLIM_PYTHON`, else `target/venv`, made by
/// `.ci/run`); `None` with a loud skip when absent, a panic when `ONNX_SLIM_REQUIRE_ORT` is set.
pub fn ort_python() -> Option<PathBuf> {
    let p = std::env::var_os("ONNX_SLIM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/venv/bin/python"
            ))
        });
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("ONNX_SLIM_REQUIRE_ORT").is_none(),
        "ONNX_SLIM_REQUIRE_ORT is set but `{}` does not exist (run .ci/run)",
        p.display()
    );
    skip_loudly(&format!(
        "SKIPPED: no onnxruntime virtualenv at `{}` (made by .ci/run)",
        p.display()
    ));
    None
}

/// The README's metrics of `outs` on `sets`: accuracy against `meta.json`'s labels where the
/// model has labels, argmax agreement of output 0 with the original's outputs, and the smallest
/// cosine of any output of any set against the original's — all in percent, two decimals.
pub fn readme_metrics(
    dir: &std::path::Path,
    sets: &[onnx_slim::verify::InputSet],
    original: &[onnx_slim::verify::Outputs],
    outs: &[onnx_slim::verify::Outputs],
) -> String {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
            .expect("meta.json is JSON");
    let (mut ok, mut agree, mut n) = (0usize, 0usize, 0usize);
    let mut min_cos = f64::INFINITY;
    let mut compared = 0;
    for ((s, a), b) in sets.iter().zip(original).zip(outs) {
        let want = argmax_rows(&a[0].1);
        let got = argmax_rows(&b[0].1);
        assert_eq!(want.len(), got.len(), "{}", s.label);
        n += got.len();
        agree += want.iter().zip(&got).filter(|(x, y)| x == y).count();
        if let Some(labels) = meta["labels"][&s.label].as_array() {
            assert_eq!(labels.len(), got.len(), "{}", s.label);
            ok += got
                .iter()
                .zip(labels)
                .filter(|(p, l)| Some(**p as u64) == l.as_u64())
                .count();
        }
        for c in onnx_slim::verify::compare::compare_outputs(a, b, f32::INFINITY) {
            assert!(c.shape_equal, "{}: {c:?}", s.label);
            min_cos = min_cos.min(c.cosine.expect("float outputs"));
            compared += 1;
        }
    }
    assert!(n > 0 && compared > 0);
    let pct = |k: usize| format!("{:.2}", 100.0 * k as f64 / n as f64);
    // Class labels are arrays of integers (captcha_crnn's are strings: text for reference).
    let classes = sets.iter().all(|s| meta["labels"][&s.label].is_array());
    let acc = if classes {
        format!("accuracy {} %, ", pct(ok))
    } else {
        String::new()
    };
    format!("{acc}agreement {} %, min cosine {:.5}", pct(agree), min_cos)
}

/// Every skip of a run, as `Op \`node\`: reason`, in report order.
pub fn skips(r: &onnx_slim::rewrite::RunReport) -> Vec<String> {
    r.rules
        .iter()
        .flat_map(|rr| {
            rr.skips
                .iter()
                .map(|s| format!("{} `{}`: {}", s.op, s.node, s.reason))
        })
        .collect()
}

/// Dims of the initializer `name` of `m` (panics naming it when there is none).
pub fn initializer_dims(m: &onnx_slim::onnx::proto::ModelProto, name: &str) -> Vec<i64> {
    m.graph
        .as_ref()
        .and_then(|g| {
            g.initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(name))
        })
        .unwrap_or_else(|| panic!("no initializer `{name}`"))
        .dims
        .clone()
}
