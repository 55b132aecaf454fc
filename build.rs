//! Generates the ONNX protobuf types from the vendored `proto/onnx-ml.proto`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx-ml.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Every `bytes` field becomes `bytes::Bytes`: decoding from a `Bytes` buffer then slices tensor
    // payloads out of the input without copying them.
    config.bytes(["."]);
    config.compile_protos(&["proto/onnx-ml.proto"], &["proto/"])?;
    Ok(())
}
