//! Interop: models written by onnx-slim pass `onnx.checker` and run in onnxruntime with the same
//! outputs as the originals. Uses the pinned virtualenv that `.ci/run` makes at `target/venv`
//! (or `ONNX_SLIM_PYTHON`). Every rule selection that ships adds itself to `SELECTIONS`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Rule selections checked, with the tolerance onnxruntime's outputs must meet.
const SELECTIONS: &[(&str, f32)] = &[("none", 0.0), ("clean", 1e-4), ("clean,share", 1e-4)];

/// Fixtures that are not meant to run (they exercise the encoder, not a runtime).
const NOT_RUNNABLE: &[&str] = &["all_attr_types.onnx"];

fn python() -> Option<PathBuf> {
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
    if std::env::var_os("ONNX_SLIM_REQUIRE_ORT").is_some() {
        panic!(
            "ONNX_SLIM_REQUIRE_ORT is set but `{}` does not exist (run .ci/run)",
            p.display()
        );
    }
    common::skip_loudly(&format!(
        "SKIPPED: no onnxruntime virtualenv at `{}` (made by .ci/run)",
        p.display()
    ));
    None
}

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
        let chk = Command::new(py)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ort_check.py"))
            .args([model.as_os_str(), out.as_os_str()])
            .arg(tol.max(1e-6).to_string())
            .args(data)
            .output()
            .unwrap();
        if !chk.status.success() {
            failures.push(format!(
                "{} --rules {rules}: {}{}",
                model.display(),
                String::from_utf8_lossy(&chk.stdout),
                String::from_utf8_lossy(&chk.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
    }
}

#[test]
fn rewritten_shared_models_load_and_match_in_onnxruntime() {
    let Some(py) = python() else { return };
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
    let Some(py) = python() else { return };
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
