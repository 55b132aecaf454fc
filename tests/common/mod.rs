//! Helpers shared by the integration tests: where the shared data is, and loud skips without it.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod proto;

/// `../shared` relative to the crate root.
pub fn shared_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"))
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
