//! Helpers shared by the `rules_prune*` test files: running the rule, comparing outputs in
//! tract, and weights with chosen channels zeroed.
#![allow(dead_code)]

use crate::common::compare::assert_outputs_match;
use crate::common::skips;
use ndarray::{ArrayD, Axis};
use onnx_slim::ir::builder::{seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::prune::{Importance, PruneConfig};
use onnx_slim::verify::{self, InputSet};

pub const F32: DataType = DataType::Float;

pub fn prune(proto: &ModelProto) -> (ModelProto, RunReport) {
    prune_with(
        proto,
        PruneConfig {
            zero: true,
            ..Default::default()
        },
    )
}

pub fn prune_with(proto: &ModelProto, prune: PruneConfig) -> (ModelProto, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        prune,
        ..Default::default()
    };
    let rules = registry::select("prune").expect("prune is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m.to_proto(), report)
}

/// Runs both models in tract on the same random inputs; the outputs agree within `tol`.
pub fn same_outputs(a: &ModelProto, b: &ModelProto, tol: f32) {
    let sets: Vec<InputSet> = (0..2)
        .map(|seed| verify::inputs::random_inputs(a, &[], seed).expect("inputs"))
        .collect();
    let oa = verify::run_many(a, &sets, "original").expect("original runs");
    let ob = verify::run_many(b, &sets, "pruned").expect("pruned runs");
    for (x, y) in oa.iter().zip(&ob) {
        assert_outputs_match(x, y, tol, "pruned against original");
    }
}

/// `w` with the slices at `zero` of `axis` set to 0.
pub fn zeroed(mut w: ArrayD<f32>, axis: usize, zero: &[usize]) -> ArrayD<f32> {
    for &c in zero {
        w.index_axis_mut(Axis(axis), c).fill(0.0);
    }
    w
}

pub fn seeded(shape: &[usize], seed: u64) -> ArrayD<f32> {
    seeded_f32(shape, seed)
}

/// `x[2,8]` → MatMul `w1[8,12]` + `b1` → Relu → MatMul `w2[12,4]` → `y`, with hidden neurons
/// `zero` of `w1` and `b1` set to 0.
pub fn mlp(zero: &[usize]) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[2, 8])
        .initializer_f32("w1", zeroed(seeded(&[8, 12], 1), 1, zero))
        .initializer_f32("b1", zeroed(seeded(&[12], 2), 0, zero))
        .initializer_f32("w2", seeded(&[12, 4], 3))
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node("Add", &["h", "b1"], &["hb"], vec![])
        .node("Relu", &["hb"], &["r"], vec![])
        .node("MatMul", &["r", "w2"], &["y"], vec![])
        .output("y", F32, &[2, 4]);
    b.build()
}

/// The input of the Conv whose output is `y`, at `slot`.
pub fn input_of(m: &ModelProto, y: &str, slot: usize) -> Option<String> {
    m.graph
        .as_ref()?
        .node
        .iter()
        .find(|n| n.output.first().map(String::as_str) == Some(y))?
        .input
        .get(slot)
        .filter(|s| !s.is_empty())
        .cloned()
}

/// The MLP with its hidden activation also read by `extra` (a graph output or a barrier op).
pub fn mlp_with(extra: impl FnOnce(&mut ModelBuilder)) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    let zero = [0, 3];
    b.input("x", F32, &[2, 8])
        .initializer_f32("w1", zeroed(seeded(&[8, 12], 1), 1, &zero))
        .initializer_f32("w2", seeded(&[12, 4], 3))
        .node_named("fc1", "MatMul", &["x", "w1"], &["h"], vec![])
        .node("Relu", &["h"], &["r"], vec![])
        .node("MatMul", &["r", "w2"], &["y"], vec![])
        .output("y", F32, &[2, 4]);
    extra(&mut b);
    b.build()
}

pub fn assert_barrier(original: &ModelProto, want: &str) {
    let (pruned, report) = prune(original);
    assert_eq!(report.patches(), 0, "{:?}", skips(&report));
    assert_eq!(&pruned, original);
    let s = skips(&report);
    assert!(
        s.iter()
            .any(|s| s.contains("`fc1`: its channels reach a barrier") && s.contains(want)),
        "want `{want}` in {s:?}"
    );
}

/// The shared model `name` and its folder; `None` (with a loud skip) without `../shared`.
pub fn shared(name: &str) -> Option<(std::path::PathBuf, ModelProto)> {
    let dir = crate::common::shared_models()?
        .into_iter()
        .find(|d| d.ends_with(name))
        .unwrap_or_else(|| panic!("{name} is missing from ../shared/models"));
    let m = onnx_slim::onnx::decode_file(&dir.join("model.onnx"))
        .expect("loads")
        .model;
    Some((dir, m))
}

/// Sets the slices `zero` along `axis` of initializer `name` to 0; returns its dims.
pub fn zero_initializer(m: &mut ModelProto, name: &str, axis: usize, zero: &[usize]) -> Vec<i64> {
    let g = m.graph.as_mut().expect("a graph");
    let t = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no initializer `{name}`"));
    let a = zeroed(tensor::to_f32(t).expect("f32"), axis, zero);
    *t = tensor::from_f32(name, &a);
    t.dims.clone()
}

pub fn params(m: &ModelProto) -> u64 {
    let model = Model::from_proto(m.clone()).expect("valid");
    onnx_slim::rewrite::driver::Stats::of(&model.graph).params
}

pub fn ratio(r: f64, importance: Importance, exclude: &[&str]) -> PruneConfig {
    PruneConfig {
        ratio: Some(r),
        importance,
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Runs `--rules prune` on `fixtures/prune.onnx` with each case's flags and asserts the exit
/// code 2, one `error: ` line containing the case's text, and no output file.
pub fn assert_refused(cases: &[(&[&str], &str)]) {
    for (args, want) in cases {
        let d = tempfile::tempdir().expect("temp dir");
        let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/prune.onnx");
        let out = d.path().join("out.onnx");
        let o = std::process::Command::new(crate::common::bin())
            .arg(&input)
            .arg(&out)
            .args(["--rules", "prune"])
            .args(*args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(want),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?}: nothing is written");
    }
}
