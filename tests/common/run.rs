//! Running the binary from integration tests: one run's exit code and output, the usual
//! assertions on it, and temporary folders holding fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run printed and returned.
pub struct Run {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary in `dir` with `args`; a panic message on stderr fails the test.
pub fn run(dir: &Path, args: &[&str]) -> Run {
    let o = Command::new(super::bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run onnx-slim");
    let r = Run {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(!r.stderr.contains("panicked"), "{r:?}");
    r
}

/// Runs and asserts exit 0.
pub fn ok(dir: &Path, args: &[&str]) -> Run {
    let r = run(dir, args);
    assert_eq!(r.code, Some(0), "onnx-slim {args:?}: {r:?}");
    r
}

/// Runs and asserts exit 2 with one `error:` line on stderr; returns that line.
pub fn refused(dir: &Path, args: &[&str]) -> String {
    let r = run(dir, args);
    assert_eq!(r.code, Some(2), "onnx-slim {args:?}: {r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(r.stderr.starts_with("error: "), "{r:?}");
    r.stderr
}

/// `fixtures/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A temporary folder holding copies of `fixtures`.
pub fn dir_with(fixtures: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("temp dir");
    for f in fixtures {
        std::fs::copy(fixture(f), d.path().join(f)).expect("copy fixture");
    }
    d
}

/// A JSON file, parsed.
pub fn json(path: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(path).expect("read report");
    serde_json::from_str(&s).expect("report is JSON")
}
