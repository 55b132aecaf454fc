//! Models larger than memory: external data is mapped, never copied; rewriting writes each
//! payload straight from the map; a failing write leaves no file. Models are generated stacks
//! ([`onnx_slim::bench::stack`]), so these tests run without `../shared`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::memory::{mapped_file, peak_anon};

use onnx_slim::bench::stack::{write_stack, StackSpec};
use onnx_slim::onnx::decode_file;
use onnx_slim::onnx::proto::ModelProto;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_onnx-slim"))
}

fn small_stack(dir: &Path, hidden: usize, layers: usize) -> (StackSpec, PathBuf) {
    let spec = StackSpec {
        hidden,
        layers,
        seq: 4,
        seed: 7,
    };
    let path = write_stack(&spec, dir, "stack.onnx").expect("generate");
    (spec, path)
}

/// Initializers with a payload, by name.
fn payloads(m: &ModelProto) -> std::collections::BTreeMap<String, bytes::Bytes> {
    m.graph
        .as_ref()
        .expect("graph")
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.clone()?, t.raw_data.clone()?)))
        .collect()
}

#[test]
fn external_tensors_are_slices_of_the_mapped_data_file_not_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, path) = small_stack(dir.path(), 64, 2);
    let loaded = decode_file(&path).expect("decode");
    let data = std::fs::read(dir.path().join("stack.onnx.data")).expect("data");
    let real_data = dir
        .path()
        .join("stack.onnx.data")
        .canonicalize()
        .expect("canonical");
    let g = loaded.model.graph.as_ref().expect("graph");
    // 13 external tensors a block; `scale` is inline.
    let external: Vec<_> = g
        .initializer
        .iter()
        .filter(|t| t.name.as_deref() != Some("scale"))
        .collect();
    assert_eq!(external.len(), 13 * spec.layers);
    assert_eq!(loaded.external.tensors, 13 * spec.layers);
    assert_eq!(loaded.external.bytes, data.len() as u64);
    let base = external[0].raw_data.as_ref().expect("raw").as_ptr() as usize;
    let mut offset = 0usize;
    for t in &external {
        let raw = t.raw_data.as_ref().expect("external tensors get raw_data");
        assert_eq!(&raw[..], &data[offset..offset + raw.len()], "{:?}", t.name);
        // Laid out in memory as in the file: one region, not one allocation per tensor.
        assert_eq!(raw.as_ptr() as usize - base, offset, "{:?}", t.name);
        let file = mapped_file(raw.as_ptr() as usize);
        assert_eq!(
            file.as_deref().map(Path::new),
            Some(real_data.as_path()),
            "{:?} lies in a mapping of the data file",
            t.name
        );
        offset += raw.len();
    }
    assert_eq!(offset, data.len());
}

#[test]
fn rewriting_keeps_every_external_payload_byte_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, path) = small_stack(dir.path(), 64, 3);
    let before = payloads(&decode_file(&path).expect("decode").model);
    assert_eq!(before.len(), 13 * spec.layers + 1);
    for rules in ["none", "clean"] {
        let out = dir.path().join(format!("out_{rules}.onnx"));
        let o = Command::new(bin())
            .arg(&path)
            .arg(&out)
            .args(["--rules", rules, "--no-verify", "-q"])
            .output()
            .expect("run");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let loaded = decode_file(&out).expect("decode the output");
        assert_eq!(loaded.external.tensors, 13 * spec.layers, "--rules {rules}");
        let after = payloads(&loaded.model);
        let mut compared = 0;
        for (name, bytes) in &before {
            assert_eq!(
                after.get(name),
                Some(bytes),
                "`{name}` with --rules {rules}"
            );
            compared += 1;
        }
        assert_eq!(compared, 13 * spec.layers + 1);
        let data_len = std::fs::metadata(dir.path().join(format!("out_{rules}.onnx.data")))
            .expect("data file")
            .len();
        assert_eq!(data_len, spec.weight_bytes(), "--rules {rules}");
    }
}

#[test]
fn a_write_that_fails_midway_leaves_neither_the_model_nor_its_data_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 1.6 MB of weights; the file size limit (512 KiB) stops the data file midway.
    let (spec, path) = small_stack(dir.path(), 128, 2);
    assert!(spec.weight_bytes() > 1 << 20);
    let out = dir.path().join("out.onnx");
    // SIGXFSZ ignored: the write fails with EFBIG instead of killing the process.
    let o = Command::new("bash")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 512; exec \"$0\" \"$@\"")
        .arg(bin())
        .arg(&path)
        .arg(&out)
        .args(["--rules", "clean", "--no-verify"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("out.onnx"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["stack.onnx", "stack.onnx.data"], "{stderr}");
}

#[test]
fn rewriting_200_mb_of_external_weights_takes_a_small_fraction_of_them_in_anonymous_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    // hidden 1024: 50 MB a block, 4 blocks.
    let (spec, path) = small_stack(dir.path(), 1024, 4);
    assert!(spec.weight_bytes() > 200_000_000);
    let out = dir.path().join("out.onnx");
    let mut cmd = Command::new(bin());
    cmd.arg(&path)
        .arg(&out)
        .args(["--rules", "clean", "--no-verify", "-q"]);
    let (peak, status) = peak_anon(cmd);
    assert!(status.success());
    assert!(peak > 0, "RssAnon was read");
    // Reading the weights in (or encoding the model into one buffer) would take ≥ 200 MB.
    assert!(
        peak < 40 << 20,
        "peak RssAnon {peak} bytes for {} bytes of weights",
        spec.weight_bytes()
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("out.onnx.data"))
            .expect("data")
            .len(),
        spec.weight_bytes()
    );
}

#[test]
fn verifying_in_segments_stays_near_the_memory_limit_not_above_it_by_freed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    // hidden 1024: 50 MB a block, 8 blocks; a 150 MiB limit makes segments of 50 MiB of weights.
    let (spec, path) = small_stack(dir.path(), 1024, 8);
    assert!(spec.weight_bytes() > 400_000_000);
    let limit: u64 = 150 << 20;
    let out = dir.path().join("out.onnx");
    let mut cmd = Command::new(bin());
    cmd.arg(&path)
        .arg(&out)
        .args(["--rules", "clean", "--memory-limit", "150M"]);
    let (peak, status) = peak_anon(cmd);
    assert!(status.success());
    assert!(peak > 0, "RssAnon was read");
    // Measured: 0.15–0.17 GB; when the heap kept each dropped segment's weights (glibc's
    // raised mmap threshold), 0.29 GB.
    assert!(
        peak < limit * 14 / 10,
        "peak RssAnon {peak} bytes with --memory-limit {limit}"
    );
}
