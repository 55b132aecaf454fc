//! The `onnx-slim` binary: a thin shell over [`onnx_slim::cli`].

fn main() {
    std::process::exit(onnx_slim::cli::main());
}
