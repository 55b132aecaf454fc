//! `eliminate-neutral-arith` on `Div` and `Sub` (only the right operand is neutral there) and
//! `eliminate-noop` on `Tile`: what goes, what must stay, and outputs bit-equal in tract.

use std::collections::BTreeMap;

use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{tensor_f32, tensor_i64_1d, ModelBuilder};
use onnx_slim::ir::Model;
use onnx_slim::onnx::proto::tensor_proto::DataType;
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::verify::{random_inputs, verify};

/// `x[2,3]` → `Abs` → `Div(·, 1)` → `Sub(·, 0)` → `Tile(·, [1,1])` → `Sub(0, ·)` → `Div(1, ·)`
/// → `Tile(·, [2,1])` → `y[4,3]`; and `y2 = Sub(Abs(x), zeros[2,2,3])`, where the zeros
/// broadcast the result to a larger shape.
fn model() -> ModelProto {
    let full = |v: f32, dims: &[usize]| ArrayD::from_elem(IxDyn(dims), v);
    ModelBuilder::new(17)
        .input("x", DataType::Float, &[2, 3])
        .initializer(tensor_f32("one", &full(1.0, &[1])))
        .initializer(tensor_f32("zero", &full(0.0, &[1])))
        .initializer(tensor_f32("zeros3", &full(0.0, &[2, 2, 3])))
        .initializer(tensor_i64_1d("reps11", &[1, 1]))
        .initializer(tensor_i64_1d("reps21", &[2, 1]))
        .node("Abs", &["x"], &["h0"], vec![])
        .node("Div", &["h0", "one"], &["h1"], vec![])
        .node("Sub", &["h1", "zero"], &["h2"], vec![])
        .node("Tile", &["h2", "reps11"], &["h3"], vec![])
        .node("Sub", &["zero", "h3"], &["h4"], vec![])
        .node("Div", &["one", "h4"], &["h5"], vec![])
        .node("Tile", &["h5", "reps21"], &["y"], vec![])
        .node("Sub", &["h0", "zeros3"], &["y2"], vec![])
        .output("y", DataType::Float, &[4, 3])
        .output("y2", DataType::Float, &[2, 2, 3])
        .build()
}

fn ops(m: &Model) -> BTreeMap<String, usize> {
    let mut h = BTreeMap::new();
    for id in m.graph.ops() {
        *h.entry(m.graph.node(id).op_type().to_string()).or_insert(0) += 1;
    }
    h
}

fn rewrites(r: &RunReport, code: &str) -> Vec<String> {
    r.rules
        .iter()
        .filter(|x| x.code == code)
        .flat_map(|x| x.rewrites.iter().map(|w| w.description.clone()))
        .collect()
}

#[test]
fn div_by_one_sub_of_zero_and_tile_by_ones_go_while_sub_from_zero_div_into_one_and_broadcasts_stay()
{
    let original = model();
    let mut m = Model::from_proto(original.clone()).unwrap();
    let rules = registry::select("eliminate-neutral-arith,eliminate-noop,remove-dead").unwrap();
    let report = rewrite::run(
        &mut m,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .unwrap();
    let want: BTreeMap<String, usize> = [("Abs", 1), ("Div", 1), ("Sub", 2), ("Tile", 1)]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(ops(&m), want);
    // The survivors are the right ones: `Sub(0, ·)`, `Div(1, ·)`, the broadcasting `Sub` and
    // `Tile(·, [2,1])`.
    let g = &m.graph;
    let mut kept: Vec<String> = g
        .ops()
        .into_iter()
        .filter(|&id| g.node(id).op_type() != "Abs")
        .map(|id| {
            let ins: Vec<String> = g
                .node_inputs(id)
                .iter()
                .map(|v| v.map(|v| g.value_name(v).to_string()).unwrap_or_default())
                .collect();
            format!("{}({})", g.node(id).op_type(), ins.join(","))
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "Div(one,h4)",
            "Sub(h0,zeros3)",
            "Sub(zero,h0)",
            "Tile(h5,reps21)"
        ]
    );
    assert_eq!(rewrites(&report, "C005").len(), 2, "{:?}", report.rules);
    assert_eq!(rewrites(&report, "C004").len(), 1, "{:?}", report.rules);
    // Exact rules: bit-equal outputs.
    let sets = [random_inputs(&original, &[], 3).unwrap()];
    let v = verify(&original, &m.to_proto(), &sets, 0.0).unwrap();
    assert!(v.passed, "{v}");
    assert_eq!(v.sets[0].outputs.len(), 2);
    assert!(
        v.sets[0]
            .outputs
            .iter()
            .all(|c| c.max_abs_error == Some(0.0)),
        "{v}"
    );
}

#[test]
fn a_second_run_finds_nothing_more() {
    let mut m = Model::from_proto(model()).unwrap();
    let rules = registry::select("eliminate-neutral-arith,eliminate-noop").unwrap();
    rewrite::run(
        &mut m,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .unwrap();
    let again = rewrite::run(
        &mut m,
        &rules,
        &Config::default(),
        &DriverOptions::default(),
    )
    .unwrap();
    assert_eq!(again.patches(), 0);
}
