//! Helpers shared by the `rules_quantize*` test files: running the rule, reading the
//! `DequantizeLinear`s it made, comparing in tract, and weights on the int8 grid.
#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{attr_i, seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::quantize::QuantizeConfig;
use onnx_slim::verify::{self, compare, InputSet};

pub fn quantize(proto: &ModelProto, cfg: QuantizeConfig) -> (Model, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        quantize: cfg,
        ..Default::default()
    };
    let rules = registry::select("quantize").expect("quantize is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m, report)
}

pub fn small() -> QuantizeConfig {
    // Test weights are small; the default minimum is for real models.
    QuantizeConfig {
        min_elements: 16,
        ..Default::default()
    }
}

pub fn rewrites(r: &RunReport) -> Vec<String> {
    r.rules
        .iter()
        .flat_map(|rr| rr.rewrites.iter().map(|w| w.description.clone()))
        .collect()
}

/// The `DequantizeLinear` nodes: (output name, axis attribute, scale length, code dtype).
pub fn dequantizers(m: &Model) -> Vec<(String, Option<i64>, usize, i32)> {
    let g = &m.graph;
    let mut v: Vec<_> = g
        .ops()
        .into_iter()
        .filter(|id| g.node(*id).op_type() == "DequantizeLinear")
        .map(|id| {
            let n = g.node(id);
            let axis = n.attr("axis").and_then(|a| a.i);
            let scale = g
                .input(id, 1)
                .and_then(|v| g.const_tensor(v))
                .expect("const scale");
            let codes = g
                .input(id, 0)
                .and_then(|v| g.const_tensor(v))
                .expect("const codes");
            (
                n.output_name(0).unwrap_or("").to_string(),
                axis,
                tensor::numel(scale).unwrap_or(0) as usize,
                codes.data_type.unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

/// Asserts a lossy rewrite passes at the rule's own tolerance and keeps every output's cosine
/// at 0.999 or above.
pub fn assert_close(a: &ModelProto, b: &Model, what: &str) {
    let r = compare_in_tract(a, b, onnx_slim::rules::quantize::VERIFY_TOLERANCE);
    assert!(r.passed, "{what}: {r}");
    for c in &r.sets[0].outputs {
        let cos = c.cosine.expect("float outputs have a cosine");
        assert!(cos >= 0.999, "{what}: cosine {cos}\n{r}");
    }
}

pub fn random_set(proto: &ModelProto) -> Vec<InputSet> {
    vec![verify::inputs::random_inputs(proto, &[], 7).expect("random inputs")]
}

/// Runs both in tract and compares at `tol` (NaN-aware, counts outputs); returns the report.
pub fn compare_in_tract(a: &ModelProto, b: &Model, tol: f32) -> compare::VerifyReport {
    let sets = random_set(a);
    let r = compare::verify(a, &b.to_proto(), &sets, tol).expect("tract runs both");
    let outputs = a.graph.as_ref().map_or(0, |g| g.output.len());
    assert_eq!(r.sets.len(), 1);
    assert_eq!(r.sets[0].outputs.len(), outputs, "every output compared");
    r
}

/// A weight on the int8 grid: `q · 2^-e(c)` along `axis`, with `max |q| = 127` in every
/// channel, so that the quantizer's scale `max|w|/127` is the power of two itself.
pub fn on_grid(dims: &[usize], axis: usize, seed: u64) -> ArrayD<f32> {
    let noise = seeded_f32(dims, seed);
    let mut w = ArrayD::<f32>::zeros(IxDyn(dims));
    let channels = dims[axis];
    let mut first = vec![true; channels];
    for (idx, v) in w.indexed_iter_mut() {
        let c = idx[axis];
        let q = if first[c] {
            first[c] = false;
            if c % 2 == 0 {
                127.0
            } else {
                -127.0
            }
        } else {
            (noise[&idx] * 126.0).round().clamp(-126.0, 126.0)
        };
        *v = q * (2f32).powi(-((c % 5) as i32) - 3);
    }
    w
}

/// x[2,K] → MatMul(W1[K,H]) → Relu → Gemm(·, W2[N,H], transB=1) → y[2,N] (the tests use
/// K=16, H=32, N=8 unless they say otherwise).
pub fn mlp(w1: ArrayD<f32>, w2: ArrayD<f32>, opset: i64) -> ModelProto {
    let (k, n) = (w1.shape()[0] as i64, w2.shape()[0] as i64);
    let mut b = ModelBuilder::new(opset);
    b.input("x", DataType::Float, &[2, k])
        .initializer_f32("W1", w1)
        .initializer_f32("W2", w2)
        .node_named("fc1", "MatMul", &["x", "W1"], &["h"], vec![])
        .node_named("relu", "Relu", &["h"], &["hr"], vec![])
        .node_named(
            "fc2",
            "Gemm",
            &["hr", "W2"],
            &["y"],
            vec![attr_i("transB", 1)],
        )
        .output("y", DataType::Float, &[2, n]);
    b.build()
}

/// One op reading weight `W` of `dims`, the activation `x` of `x_dims` on input `x_slot`.
pub fn single(
    op: &str,
    w: ArrayD<f32>,
    x_dims: &[i64],
    inputs: &[&str],
    attrs: Vec<onnx_slim::onnx::proto::AttributeProto>,
    y_dims: &[i64],
) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, x_dims)
        .initializer_f32("W", w)
        .node_named("op", op, inputs, &["y"], attrs)
        .output("y", DataType::Float, y_dims);
    b.build()
}
