//! The `onnx-slim` binary: a thin shell over [`onnx_slim::cli`].

fn main() {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`onnx-slim show m.onnx | head`)
    // would panic; with the default action the process ends quietly, as other tools do.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(onnx_slim::cli::main());
}
