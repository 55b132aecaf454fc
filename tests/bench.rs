//! `onnx-slim bench` through the binary: the table's rows on a model folder built from
//! `fixtures/mlp.onnx` (the rewritten size checked against the main job's own output), a failing
//! preset as a row, the SVG chart, bad input (exit 2), and the task metric on the shared
//! digits_mlp. Latency is only reported, never asserted.

mod common;

use std::path::{Path, PathBuf};

use onnx_slim::bench::{self, BenchOptions, Outcome, Task};
use onnx_slim::ir::builder::{seeded_f32, tensor_f32};
use onnx_slim::onnx::decode_file;
use onnx_slim::verify::{load_test_data_set, run};
use prost::Message;

use common::run::run as slim;

/// A model folder `root/name`: `fixtures/mlp.onnx` as `model.onnx`, two test sets of 4 rows
/// (`x[4,16]`), and a `meta.json` whose labels are the original's argmax except the last row of
/// the last set: the original's accuracy is 7/8.
fn model_folder(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let fixture = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mlp.onnx"));
    std::fs::copy(&fixture, dir.join("model.onnx")).expect("copy the fixture");
    let model = decode_file(&dir.join("model.onnx")).expect("decode").model;
    let mut labels = serde_json::Map::new();
    for k in 0..2u64 {
        let set = dir.join(format!("test_data_set_{k}"));
        std::fs::create_dir_all(&set).expect("mkdir");
        let t = tensor_f32("x", &seeded_f32(&[4, 16], 40 + k));
        std::fs::write(set.join("input_0.pb"), t.encode_to_vec()).expect("write pb");
        let inputs = load_test_data_set(&set, &model).expect("load the set");
        let outputs = run(&model, &inputs, "original").expect("run the fixture");
        let mut classes: Vec<usize> = common::argmax_rows(&outputs[0].1);
        if k == 1 {
            let last = classes.len() - 1;
            classes[last] = (classes[last] + 1) % 8;
        }
        labels.insert(format!("test_data_set_{k}"), serde_json::json!(classes));
    }
    let meta = serde_json::json!({"task": "classification", "labels": labels});
    std::fs::write(dir.join("meta.json"), meta.to_string()).expect("write meta.json");
    dir
}

/// The data rows of a Markdown table, as trimmed cells (pipes inside cells are escaped).
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| model |"))
        .map(|l| {
            l.trim_matches('|')
                .replace("\\|", "\u{0}")
                .split('|')
                .map(|c| c.trim().replace('\u{0}', "|"))
                .collect()
        })
        .collect()
}

fn column(name: &str) -> usize {
    bench::table::COLUMNS
        .iter()
        .position(|c| *c == name)
        .unwrap_or_else(|| panic!("no column `{name}`"))
}

#[test]
fn bench_measures_each_preset_and_a_failing_one_becomes_a_row() {
    let d = tempfile::tempdir().expect("tempdir");
    model_folder(d.path(), "mlp_dir");
    let r = slim(
        d.path(),
        &[
            "bench",
            "mlp_dir",
            "--preset",
            "--rules clean",
            "--preset",
            "--rules quantize",
            "--preset=--rules nope",
            "--runs",
            "2",
            "--out",
            "results.md",
            "--svg",
            "chart.svg",
        ],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(r.stdout.contains("wrote `results.md`: 3 rows"), "{r:?}");
    let table = std::fs::read_to_string(d.path().join("results.md")).expect("the table");
    let header = table
        .lines()
        .find(|l| l.starts_with("| model |"))
        .expect("a header row");
    assert_eq!(header, format!("| {} |", bench::table::COLUMNS.join(" | ")));
    let rows = rows(&table);
    assert_eq!(rows.len(), 3, "{table}");
    for (row, preset) in
        rows.iter()
            .zip(["`--rules clean`", "`--rules quantize`", "`--rules nope`"])
    {
        assert_eq!(row.len(), bench::table::COLUMNS.len(), "{row:?}");
        assert_eq!(row[0], "mlp_dir");
        assert_eq!(row[1], preset);
    }

    // The rewritten size is the size of the file the main job writes with the same arguments.
    let original = std::fs::metadata(d.path().join("mlp_dir/model.onnx"))
        .expect("stat")
        .len();
    let q = slim(
        d.path(),
        &["mlp_dir/model.onnx", "q.onnx", "--rules", "quantize"],
    );
    assert_eq!(q.code, Some(0), "{q:?}");
    let rewritten = std::fs::metadata(d.path().join("q.onnx"))
        .expect("stat")
        .len();
    assert!(rewritten < original);
    let quant = &rows[1];
    assert_eq!(
        quant[column("size (bytes)")],
        format!("{original} → {rewritten}")
    );
    assert_eq!(
        quant[column("size ratio")],
        format!("{:.4}", rewritten as f64 / original as f64)
    );
    // The original's accuracy is 7/8 by construction; clean changes nothing it computes.
    let clean = &rows[0];
    assert!(
        clean[column("task metric")].starts_with("87.50 % → 87.50 %"),
        "{clean:?}"
    );
    assert_eq!(clean[column("argmax agreement")], "100.00 %");
    assert!(quant[column("task metric")].starts_with("87.50 % → "));
    for row in &rows[..2] {
        assert!(row[column("latency ms")].contains(" → "), "{row:?}");
        assert!(row[column("worst cosine")].starts_with('1'), "{row:?}");
    }

    let failed = &rows[2];
    assert_eq!(failed[column("size (bytes)")], "–");
    let note = &failed[column("note")];
    assert!(
        note.starts_with("failed (exit 2): error: unknown rule `nope`"),
        "{note}"
    );
    assert!(!note.contains('\n'));

    let svg = std::fs::read_to_string(d.path().join("chart.svg")).expect("the chart");
    assert!(svg.trim_start().starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("mlp_dir"));
    assert!(svg.contains("--rules quantize"));
    // Two measured presets, two points; the failed one has none.
    assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
}

#[test]
fn bench_prints_the_table_on_stdout_by_default_with_the_default_presets() {
    let d = tempfile::tempdir().expect("tempdir");
    model_folder(d.path(), "m");
    let r = slim(d.path(), &["bench", "m", "--runs", "1"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let presets: Vec<String> = rows(&r.stdout).iter().map(|r| r[1].clone()).collect();
    assert_eq!(presets, ["`--rules clean`", "`--rules quantize`"], "{r:?}");
    assert!(r.stdout.contains("median of 1 tract run(s)"));
}

#[test]
fn bench_refuses_bad_input_with_one_line_and_exit_2() {
    let d = tempfile::tempdir().expect("tempdir");
    model_folder(d.path(), "m");
    std::fs::create_dir_all(d.path().join("empty")).expect("mkdir");
    std::fs::create_dir_all(d.path().join("no_sets")).expect("mkdir");
    std::fs::copy(
        d.path().join("m/model.onnx"),
        d.path().join("no_sets/model.onnx"),
    )
    .expect("copy");
    let cases: [(&[&str], &str); 6] = [
        (&["bench", "m", "empty"], "`empty` has no `model.onnx`"),
        (&["bench", "missing"], "`missing` is not a folder"),
        (&["bench", "no_sets"], "no `test_data_set_*`"),
        (
            &["bench", "m", "--runs", "0"],
            "`--runs` must be at least 1",
        ),
        (&["bench", "m", "--bogus"], "--bogus"),
        (&["bench"], "MODEL_DIR"),
    ];
    for (args, says) in cases {
        let r = slim(d.path(), args);
        assert_eq!(r.code, Some(2), "{args:?}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {r:?}");
        assert!(r.stderr.starts_with("error: "), "{args:?}: {r:?}");
        assert!(r.stderr.contains(says), "{args:?}: {r:?}");
        assert!(!r.stderr.contains("panicked"), "{args:?}: {r:?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:?}");
    }
    // Nothing is measured or written when one folder is bad.
    let r = slim(d.path(), &["bench", "m", "empty", "--out", "t.md"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(!d.path().join("t.md").exists());
}

#[test]
fn bench_scores_digits_mlp_against_its_labels() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let Some(dir) = models.into_iter().find(|p| p.ends_with("digits_mlp")) else {
        common::skip_loudly("SKIPPED: ../shared/models/digits_mlp not found");
        return;
    };
    let opts = BenchOptions {
        dirs: vec![dir.clone()],
        presets: vec!["--rules clean".into()],
        runs: 1,
        exe: common::bin(),
    };
    let measured = bench::run(&opts, &mut |_| {}).expect("bench digits_mlp");
    assert_eq!(measured.len(), 1);
    let Outcome::Measured(m) = &measured[0].outcome else {
        panic!("{:?}", measured[0]);
    };
    // ../shared/README.md: 97.78 % on 360 held-out digits, i.e. 352 right.
    let Task::Accuracy(acc) = &m.task else {
        panic!("{:?}", m.task);
    };
    assert_eq!(acc.original, (352, 360));
    assert_eq!(acc.rewritten, (352, 360));
    assert_eq!(bench::table::percent(acc.original), "97.78 %");
    assert_eq!(m.argmax_agreement, Some(1.0));

    // The same through the binary.
    let d = tempfile::tempdir().expect("tempdir");
    let dir = dir.to_string_lossy().into_owned();
    let r = slim(
        d.path(),
        &["bench", &dir, "--preset", "--rules clean", "--runs", "1"],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let rows = rows(&r.stdout);
    assert_eq!(rows.len(), 1, "{r:?}");
    assert_eq!(rows[0][0], "digits_mlp");
    assert_eq!(rows[0][column("task metric")], "97.78 % → 97.78 %");
}

#[test]
fn presets_name_the_model_folder_with_dir() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = model_folder(d.path(), "m");
    let calib = dir.join("calibration/test_data_set_0");
    std::fs::create_dir_all(&calib).expect("mkdir");
    std::fs::copy(
        dir.join("test_data_set_0/input_0.pb"),
        calib.join("input_0.pb"),
    )
    .expect("copy");
    let r = slim(
        d.path(),
        &[
            "bench",
            "m",
            "--runs",
            "1",
            "--preset",
            "--rules quantize --quantize-tolerance 0.5 --calibration {dir}/calibration",
            "--preset",
            "--rules quantize --inputs {dir}/nowhere",
        ],
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    let rows = rows(&r.stdout);
    assert_eq!(rows.len(), 2, "{r:?}");
    // The preset is shown as given; the main job got the folder.
    assert_eq!(
        rows[0][1],
        "`--rules quantize --quantize-tolerance 0.5 --calibration {dir}/calibration`"
    );
    assert!(rows[0][column("note")].ends_with("patches"), "{rows:?}");
    let note = &rows[1][column("note")];
    assert!(note.starts_with("failed (exit "), "{note}");
    assert!(note.contains("m/nowhere"), "{note}");
}

#[test]
fn bench_help_lists_its_flags() {
    let d = tempfile::tempdir().expect("tempdir");
    let r = slim(d.path(), &["bench", "--help"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for flag in ["MODEL_DIR", "--preset", "--runs", "--out", "--svg"] {
        assert!(r.stdout.contains(flag), "{flag} not in bench --help: {r:?}");
    }
    let r = slim(d.path(), &["--help"]);
    assert!(r.stdout.contains("bench"), "{r:?}");
}
