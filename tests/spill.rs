//! New large tensors of a rewrite wait for the writer in a temporary file, mapped, not on the
//! heap ([`onnx_slim::ir::spill`]): they are slices of that file's map, the output is the same
//! bytes as without spilling, and quantizing a model holds far less anonymous memory than its
//! int8 output. Models are generated stacks ([`onnx_slim::bench::stack`]).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use onnx_slim::bench::stack::{write_stack, StackSpec};
use onnx_slim::ir::{spill, Model};
use onnx_slim::onnx::decode_file;
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::rewrite::{registry, Config, DriverOptions};
use prost::Message;

use common::memory::{mapped_file, peak_anon};

/// The spill settings are process-wide: the tests of this file take turns.
static SETTINGS: Mutex<()> = Mutex::new(());

fn stack(dir: &Path, hidden: usize, layers: usize) -> (StackSpec, PathBuf) {
    let spec = StackSpec {
        hidden,
        layers,
        seq: 4,
        seed: 11,
    };
    let path = write_stack(&spec, dir, "stack.onnx").expect("generate");
    (spec, path)
}

/// `--rules quantize` on the model at `path`, in this process.
fn quantized(path: &Path) -> ModelProto {
    let loaded = decode_file(path).expect("decode");
    let mut model = Model::from_proto(loaded.model).expect("ir");
    let rules = registry::select("quantize").expect("rules");
    let report = onnx_slim::rewrite::run(
        &mut model,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .expect("quantize");
    assert!(report.patches() > 0, "quantize rewrote nothing");
    model.to_proto()
}

/// Int8 initializers of `m` with at least `min` bytes of payload: (name, payload).
fn int8_weights(m: &ModelProto, min: usize) -> Vec<(String, bytes::Bytes)> {
    m.graph
        .as_ref()
        .expect("graph")
        .initializer
        .iter()
        .filter(|t| t.data_type == Some(3))
        .filter_map(|t| Some((t.name.clone()?, t.raw_data.clone()?)))
        .filter(|(_, b)| b.len() >= min)
        .collect()
}

#[test]
fn a_large_new_tensor_is_a_slice_of_the_mapped_spill_file_and_a_small_one_stays_on_the_heap() {
    let _turn = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let spill_dir = tempfile::tempdir().expect("spill dir");
    // hidden 256: the MLP weights are 256×1024 floats, 256 KiB in int8; the attention ones 64 KiB.
    let (_, path) = stack(dir.path(), 256, 2);
    spill::set_dir(spill_dir.path());
    let before = spill::set_threshold(100_000);
    let q = quantized(&path);
    spill::set_threshold(before);
    let all = int8_weights(&q, 1);
    let big: Vec<_> = all.iter().filter(|(_, b)| b.len() >= 100_000).collect();
    let small: Vec<_> = all.iter().filter(|(_, b)| b.len() < 100_000).collect();
    assert_eq!(big.len(), 4, "two MLP matrices a layer, two layers");
    assert!(
        !small.is_empty(),
        "the attention matrices are below the threshold"
    );
    let spill_prefix = spill_dir.path().to_string_lossy().to_string();
    for (name, b) in &big {
        let file = mapped_file(b.as_ptr() as usize)
            .unwrap_or_else(|| panic!("`{name}` is not in a mapped file"));
        assert!(
            file.starts_with(&spill_prefix),
            "`{name}` is mapped from `{file}`, not from the spill folder"
        );
    }
    for (name, b) in &small {
        let file = mapped_file(b.as_ptr() as usize).unwrap_or_default();
        assert!(
            !file.starts_with(&spill_prefix),
            "`{name}` ({} bytes) was spilled below the threshold",
            b.len()
        );
    }
}

#[test]
fn spilled_and_unspilled_quantize_outputs_are_bit_identical() {
    let _turn = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let spill_dir = tempfile::tempdir().expect("spill dir");
    let (_, path) = stack(dir.path(), 256, 2);
    spill::set_dir(spill_dir.path());
    let before = spill::set_threshold(u64::MAX);
    let kept = quantized(&path);
    spill::set_threshold(1);
    let spilled = quantized(&path);
    spill::set_threshold(before);
    let prefix = spill_dir.path().to_string_lossy().to_string();
    let from_file = int8_weights(&spilled, 256 * 256)
        .iter()
        .filter(|(_, b)| mapped_file(b.as_ptr() as usize).is_some_and(|f| f.starts_with(&prefix)))
        .count();
    let in_kept = int8_weights(&kept, 256 * 256)
        .iter()
        .filter(|(_, b)| mapped_file(b.as_ptr() as usize).is_some_and(|f| f.starts_with(&prefix)))
        .count();
    assert_eq!(
        from_file, 12,
        "every int8 matrix (6 a layer, 2 layers) was spilled"
    );
    assert_eq!(
        in_kept, 0,
        "nothing was spilled with the threshold at its maximum"
    );
    let (a, b) = (kept.encode_to_vec(), spilled.encode_to_vec());
    assert_eq!(a.len(), b.len());
    assert!(a == b, "the spilled model encodes to other bytes");
}

#[test]
fn quantizing_400_mb_of_weights_holds_far_less_anonymous_memory_than_the_int8_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    // hidden 1024: 50 MB a block, 8 blocks; int8 output 100 MB.
    let (spec, path) = stack(dir.path(), 1024, 8);
    assert!(spec.weight_bytes() > 400_000_000);
    let out = dir.path().join("out.onnx");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onnx-slim"));
    cmd.arg(&path)
        .arg(&out)
        .args(["--rules", "quantize", "--no-verify", "-q"]);
    let (peak, status) = peak_anon(cmd);
    assert!(status.success());
    assert!(peak > 0, "RssAnon was read");
    let int8 = spec.weight_bytes() / 4;
    // Holding the int8 weights until they are written would take ≥ 100 MB (measured with
    // spilling: 48 MB, one tensor's working set).
    assert!(
        peak < int8 * 3 / 4,
        "peak RssAnon {peak} bytes for {int8} bytes of int8 weights"
    );
    let written = decode_file(&out).expect("output decodes");
    assert_eq!(
        int8_weights(&written.model, 1024 * 1024).len(),
        6 * spec.layers
    );
}
