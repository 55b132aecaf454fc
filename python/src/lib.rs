//! `onnx_slim._native`: the onnx-slim command line, run in-process for the Python package.
//!
//! Two functions, both over [`onnx_slim::cli::embed::run`], the very command line of the binary:
//! [`run`] collects what the command prints (the Python API reads it back), [`main`] prints it
//! (the `onnx-slim` console script). Both release the GIL while the command runs; a panic is
//! caught by the library and comes back as exit code 101, so nothing unwinds into Python.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;

use onnx_slim::cli::embed::{self, Embed};
use pyo3::prelude::*;

/// Runs the command line `argv` (program name first) and collects what it prints. Returns
/// `(exit_code, error_message_or_None, stdout, stderr)`; the GIL is released meanwhile.
#[pyfunction]
fn run(py: Python<'_>, argv: Vec<OsString>) -> (i32, Option<String>, String, String) {
    let how = Embed {
        capture: true,
        exe: None,
    };
    let o = py.detach(move || embed::run(argv, &how));
    (o.code, o.error, o.stdout, o.stderr)
}

/// Runs the command line `argv` as the binary does, printing on the process's stdout and stderr,
/// with `exe` as the program `bench` runs for its main job; returns the exit code. Restores
/// SIGPIPE's default action first, as the binary does, so `onnx-slim show m.onnx | head` ends
/// quietly: call it only from a process that is about to exit with its code.
#[pyfunction]
#[pyo3(signature = (argv, exe=None))]
fn main(py: Python<'_>, argv: Vec<OsString>, exe: Option<PathBuf>) -> i32 {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default; the process exits right after.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let how = Embed {
        capture: false,
        exe,
    };
    py.detach(move || {
        // A panic's message was printed by the panic hook, as the binary's is.
        let code = embed::run(argv, &how).code;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        code
    })
}

/// The native half of `onnx_slim`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
