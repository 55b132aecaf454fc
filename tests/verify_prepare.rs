//! `prepare` and `run` on small hand-built models: `If` nodes decided from the inputs (by the
//! constant evaluator and by tract), name clashes when inlining, errors that name what tract
//! lacks, and the input loaders.

mod common;

use common::proto::node;

use bytes::Bytes;
use onnx_slim::onnx::proto::attribute_proto::AttributeType;
use onnx_slim::onnx::proto::tensor_proto::DataType;
use onnx_slim::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};
use onnx_slim::verify::{
    load_inputs, load_npy, load_npz, load_test_data_set, load_test_data_sets, prepare,
    random_inputs, run, run_prepared, verify, InputSet,
};
use onnx_slim::Error;
use prost::Message;
use tract_onnx::prelude::Tensor;

fn vi(name: &str, elem: DataType, dims: &[&str]) -> ValueInfoProto {
    common::proto::value_info_dims(name, elem, dims)
}

fn out(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn tensor_attr(t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some("value".into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

fn constant_i64(name: &str, out: &str, v: &[i64], dims: &[i64]) -> NodeProto {
    let mut n = node("Constant", name, &[], &[out]);
    n.attribute.push(tensor_attr(TensorProto {
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        int64_data: v.to_vec(),
        ..Default::default()
    }));
    n
}

fn constant_f32(name: &str, out: &str, v: f32) -> NodeProto {
    let mut n = node("Constant", name, &[], &[out]);
    n.attribute.push(tensor_attr(TensorProto {
        data_type: Some(DataType::Float as i32),
        float_data: vec![v],
        ..Default::default()
    }));
    n
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

fn if_node(name: &str, cond: &str, outs: &[&str], then: GraphProto, els: GraphProto) -> NodeProto {
    let mut n = node("If", name, &[cond], outs);
    n.attribute.push(graph_attr("then_branch", then));
    n.attribute.push(graph_attr("else_branch", els));
    n
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(15),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// The branch a sample-rate switch does not take squeezes the batch axis: tract's analysis of
/// it fails unless the batch is 1.
fn squeeze_branch(out_name: &str) -> GraphProto {
    GraphProto {
        name: Some("else".into()),
        node: vec![
            constant_i64("sq_axes", "sq_axes", &[0], &[1]),
            node("Squeeze", "sq", &["x", "sq_axes"], &[out_name]),
        ],
        output: vec![out(out_name)],
        ..Default::default()
    }
}

/// `z = If(sr == 16000) { k = 2; If(sr > 0) { x·k } else { squeeze(x) } } else { squeeze(x) } + k`
/// with a top-level `k = 1`: the taken branch defines its own `k`, which must be renamed.
fn sample_rate_model() -> ModelProto {
    let inner_then = GraphProto {
        name: Some("inner_then".into()),
        node: vec![node("Identity", "id", &["scaled"], &["inner_out"])],
        output: vec![out("inner_out")],
        ..Default::default()
    };
    let then = GraphProto {
        name: Some("then".into()),
        node: vec![
            constant_f32("k_then", "k", 2.0),
            node("Mul", "mul", &["x", "k"], &["scaled"]),
            constant_i64("zero", "zero", &[0], &[]),
            node("Greater", "positive", &["sr", "zero"], &["pos"]),
            if_node(
                "inner_if",
                "pos",
                &["then_out"],
                inner_then,
                squeeze_branch("sq_in"),
            ),
        ],
        output: vec![out("then_out")],
        ..Default::default()
    };
    let g = GraphProto {
        name: Some("main".into()),
        input: vec![
            vi("x", DataType::Float, &["batch", "3"]),
            vi("sr", DataType::Int64, &[]),
        ],
        node: vec![
            constant_i64("c16k", "c16k", &[16000], &[]),
            node("Equal", "is16k", &["sr", "c16k"], &["cond"]),
            if_node("outer_if", "cond", &["y"], then, squeeze_branch("sq_out")),
            constant_f32("k_top", "k", 1.0),
            node("Add", "add", &["y", "k"], &["z"]),
        ],
        output: vec![vi("z", DataType::Float, &["batch", "3"])],
        value_info: vec![vi("y", DataType::Float, &["DynamicDimension.0", "3"])],
        ..Default::default()
    };
    model(g)
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

#[test]
fn if_on_a_small_input_is_decided_and_inlined() {
    let m = sample_rate_model();
    let x = Tensor::from_shape(&[4, 3], &(0..12).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
    let set = InputSet::new(
        "16k",
        vec![
            ("x".into(), x.clone()),
            ("sr".into(), Tensor::from(16000i64)),
        ],
    );
    let p = prepare(&m, &set).unwrap();
    assert_eq!(p.decided_ifs.len(), 2, "{:?}", p.decided_ifs);
    assert!(p.decided_ifs.iter().all(|d| d.by == "constants"));
    assert_eq!(p.decided_ifs[0].branch, "then_branch");
    assert!(p.undecided_ifs.is_empty());
    let g = p.model.graph.as_ref().unwrap();
    assert!(g.node.iter().all(|n| n.op_type.as_deref() != Some("If")));
    assert!(g.value_info.is_empty());
    let outputs: Vec<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .map(|s| s.as_str())
        .collect();
    let mut unique = outputs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        outputs.len(),
        "duplicate value names: {outputs:?}"
    );

    let out = run(&m, &set, "sample_rate").unwrap();
    assert_eq!(out[0].0, "z");
    assert_eq!(out[0].1.shape(), &[4, 3]);
    let want: Vec<f32> = (0..12).map(|i| 2.0 * i as f32 + 1.0).collect();
    assert_eq!(floats(&out[0].1), want);

    // Without preparation, tract analyses the squeezing branch and fails.
    let mut bound = m.clone();
    for input in &mut bound.graph.as_mut().unwrap().input {
        if input.name.as_deref() == Some("x") {
            *input = vi("x", DataType::Float, &["4", "3"]);
        }
    }
    let e = run_prepared(&bound, &set, "raw").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Tract { .. }), "{msg}");
    assert!(
        msg.starts_with("tract cannot run `raw`") && msg.contains("squeeze"),
        "{msg}"
    );
}

#[test]
fn the_else_branch_is_taken_when_the_condition_is_false() {
    let m = sample_rate_model();
    let x = Tensor::from_shape(&[1, 3], &[1f32, 2., 3.]).unwrap();
    let set = InputSet::new(
        "8k",
        vec![("x".into(), x), ("sr".into(), Tensor::from(8000i64))],
    );
    let p = prepare(&m, &set).unwrap();
    assert_eq!(p.decided_ifs.len(), 1);
    assert_eq!(p.decided_ifs[0].branch, "else_branch");
    let out = run(&m, &set, "sample_rate").unwrap();
    assert_eq!(out[0].1.shape(), &[3]);
    assert_eq!(floats(&out[0].1), vec![2., 3., 4.]);
}

/// `If(Shape(Relu(x))[0] == 1)`: the condition needs the shape of an intermediate value, which
/// the constant evaluator does not know, so tract computes it.
fn shape_switch_model() -> ModelProto {
    let then = GraphProto {
        name: Some("then".into()),
        node: vec![
            constant_i64("sq_axes", "sq_axes", &[0], &[1]),
            node("Squeeze", "sq", &["r", "sq_axes"], &["then_out"]),
        ],
        output: vec![out("then_out")],
        ..Default::default()
    };
    let els = GraphProto {
        name: Some("else".into()),
        node: vec![node("Identity", "id", &["r"], &["else_out"])],
        output: vec![out("else_out")],
        ..Default::default()
    };
    let mut gather = node("Gather", "dim0", &["shape", "zero"], &["d0"]);
    gather.attribute.push(AttributeProto {
        name: Some("axis".into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(0),
        ..Default::default()
    });
    model(GraphProto {
        name: Some("main".into()),
        input: vec![vi("x", DataType::Float, &["n", "2"])],
        node: vec![
            node("Relu", "relu", &["x"], &["r"]),
            node("Shape", "shape", &["r"], &["shape"]),
            constant_i64("zero", "zero", &[0], &[]),
            gather,
            constant_i64("one", "one", &[1], &[]),
            node("Equal", "eq", &["d0", "one"], &["cond"]),
            if_node("switch", "cond", &["y"], then, els),
        ],
        output: vec![out("y")],
        ..Default::default()
    })
}

#[test]
fn if_on_an_intermediate_shape_is_decided_by_tract() {
    let m = shape_switch_model();
    let x = Tensor::from_shape(&[3, 2], &[-1f32, 1., 2., -2., 0., 3.]).unwrap();
    let set = InputSet::new("n3", vec![("x".into(), x)]);
    let p = prepare(&m, &set).unwrap();
    assert_eq!(p.decided_ifs.len(), 1, "{:?}", p.undecided_ifs);
    assert_eq!(p.decided_ifs[0].by, "tract");
    assert_eq!(p.decided_ifs[0].branch, "else_branch");
    let out = run(&m, &set, "switch").unwrap();
    assert_eq!(floats(&out[0].1), vec![0., 1., 2., 0., 0., 3.]);

    let x = Tensor::from_shape(&[1, 2], &[-1f32, 1.]).unwrap();
    let set = InputSet::new("n1", vec![("x".into(), x)]);
    let out = run(&m, &set, "switch").unwrap();
    assert_eq!(out[0].1.shape(), &[2]);
}

#[test]
fn unsupported_ops_are_named_in_the_error() {
    let m = model(GraphProto {
        name: Some("main".into()),
        input: vec![vi("x", DataType::Float, &["2"])],
        node: vec![node("NoSuchOp", "mystery", &["x"], &["y"])],
        output: vec![out("y")],
        ..Default::default()
    });
    let set = InputSet::new(
        "s",
        vec![("x".into(), Tensor::from_shape(&[2], &[1f32, 2.]).unwrap())],
    );
    let e = run(&m, &set, "mystery.onnx").unwrap_err();
    assert!(matches!(e, Error::Tract { .. }));
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "tract cannot run `mystery.onnx`: unsupported op `NoSuchOp` (node `mystery`)"
        ),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn inputs_that_do_not_fit_are_usage_errors() {
    let m = sample_rate_model();
    let x = Tensor::from_shape(&[1, 3], &[1f32, 2., 3.]).unwrap();
    let missing = InputSet::new("s", vec![("x".into(), x.clone())]);
    assert!(matches!(prepare(&m, &missing), Err(Error::Usage(_))));
    let extra = InputSet::new(
        "s",
        vec![
            ("x".into(), x.clone()),
            ("sr".into(), Tensor::from(1i64)),
            ("bogus".into(), Tensor::from(1i64)),
        ],
    );
    assert!(matches!(prepare(&m, &extra), Err(Error::Usage(_))));
    let wrong_type = InputSet::new(
        "s",
        vec![("x".into(), x), ("sr".into(), Tensor::from(1i32))],
    );
    assert!(matches!(prepare(&m, &wrong_type), Err(Error::Usage(_))));
    let wrong_dim = InputSet::new(
        "s",
        vec![
            ("x".into(), Tensor::from_shape(&[1, 4], &[0f32; 4]).unwrap()),
            ("sr".into(), Tensor::from(1i64)),
        ],
    );
    assert!(matches!(prepare(&m, &wrong_dim), Err(Error::Usage(_))));
}

#[test]
fn verify_passes_on_identical_models_and_reports_changes() {
    let a = sample_rate_model();
    let set = random_inputs(&a, &[("x".into(), vec![2, 3])], 1).unwrap();
    // sr is random in 0..10: the else branch squeezes a batch of 2 and fails; use 16 kHz.
    let mut set = set;
    set.tensors[1].1 = Tensor::from(16000i64);
    let report = verify(&a, &a, std::slice::from_ref(&set), 1e-6).unwrap();
    assert!(report.passed, "{report}");
    // the candidate adds 1.5 instead of 1
    let mut b = a.clone();
    for n in &mut b.graph.as_mut().unwrap().node {
        if n.name.as_deref() == Some("k_top") {
            n.attribute[0].t.as_mut().unwrap().float_data = vec![1.5];
        }
    }
    let report = verify(&a, &b, &[set], 1e-3).unwrap();
    assert!(!report.passed);
    let text = report.to_string();
    assert!(text.contains("FAIL") && text.contains("FAILED"), "{text}");
    assert!((report.max_abs_error() - 0.5).abs() < 1e-6);
    assert_eq!(report.failures().len(), 1);
}

fn tensor_pb(name: Option<&str>, v: &[f32], dims: &[i64]) -> Vec<u8> {
    TensorProto {
        name: name.map(String::from),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(Bytes::from(
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
    .encode_to_vec()
}

fn relu_model() -> ModelProto {
    model(GraphProto {
        name: Some("main".into()),
        input: vec![vi("x", DataType::Float, &["n", "2"])],
        node: vec![node("Relu", "relu", &["x"], &["y"])],
        output: vec![out("y")],
        ..Default::default()
    })
}

#[test]
fn test_data_sets_load_named_and_unnamed_tensors() {
    let m = relu_model();
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in [Some("x"), None].into_iter().enumerate() {
        let set = dir.path().join(format!("test_data_set_{i}"));
        std::fs::create_dir(&set).unwrap();
        std::fs::write(
            set.join("input_0.pb"),
            tensor_pb(name, &[-1.0, 2.0], &[1, 2]),
        )
        .unwrap();
    }
    let sets = load_test_data_sets(dir.path(), &m).unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[1].label, "test_data_set_1");
    assert!(sets.iter().all(|s| s.names().collect::<Vec<_>>() == ["x"]));
    let one = load_test_data_set(&dir.path().join("test_data_set_0"), &m).unwrap();
    assert_eq!(one.get("x").unwrap().shape(), &[1, 2]);
    let out = run(&m, &one, "relu").unwrap();
    assert_eq!(floats(&out[0].1), vec![0.0, 2.0]);
    // a folder without sets, and a corrupt file
    let e = load_test_data_sets(&dir.path().join("test_data_set_0").join("nope"), &m).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    std::fs::write(
        dir.path().join("test_data_set_0").join("input_0.pb"),
        b"\xff\xff\xff",
    )
    .unwrap();
    let e = load_test_data_set(&dir.path().join("test_data_set_0"), &m).unwrap_err();
    assert!(e.to_string().contains("input_0.pb"), "{e}");
}

#[test]
fn npy_and_npz_inputs() {
    use npyz::WriterBuilder;
    let m = relu_model();
    let dir = tempfile::tempdir().unwrap();
    // float64 in the file, cast to the declared float32
    let npy = dir.path().join("x.npy");
    {
        let mut f = std::fs::File::create(&npy).unwrap();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[2, 2])
            .writer(&mut f)
            .begin_nd()
            .unwrap();
        w.extend([-1.0f64, 1.0, 2.0, -3.0]).unwrap();
        w.finish().unwrap();
    }
    let set = load_npy(&npy, &m).unwrap();
    let x = set.get("x").unwrap();
    assert_eq!(x.shape(), &[2, 2]);
    assert_eq!(floats(x), vec![-1.0, 1.0, 2.0, -3.0]);
    let via_dispatch = load_inputs(&npy, &m).unwrap();
    assert_eq!(via_dispatch[0].get("x"), Some(x));

    let npz = dir.path().join("inputs.npz");
    {
        let mut z = npyz::npz::NpzWriter::create(&npz).unwrap();
        let mut w = z
            .array::<f32>("x", Default::default())
            .unwrap()
            .default_dtype()
            .shape(&[1, 2])
            .begin_nd()
            .unwrap();
        w.extend([5.0f32, -5.0]).unwrap();
        w.finish().unwrap();
    }
    let set = load_npz(&npz, &m).unwrap();
    assert_eq!(floats(set.get("x").unwrap()), vec![5.0, -5.0]);
    let out = run(&m, &set, "relu").unwrap();
    assert_eq!(floats(&out[0].1), vec![5.0, 0.0]);

    let bad = dir.path().join("bad.npz");
    {
        let mut z = npyz::npz::NpzWriter::create(&bad).unwrap();
        let mut w = z
            .array::<f32>("not_an_input", Default::default())
            .unwrap()
            .default_dtype()
            .shape(&[1])
            .begin_nd()
            .unwrap();
        w.extend([1.0f32]).unwrap();
        w.finish().unwrap();
    }
    assert!(matches!(load_npz(&bad, &m), Err(Error::Usage(_))));
    let e = load_npy(&dir.path().join("missing.npy"), &m).unwrap_err();
    assert!(e.to_string().contains("missing.npy"), "{e}");
}

#[test]
fn random_inputs_run() {
    let m = relu_model();
    let set = random_inputs(&m, &[], 42).unwrap();
    assert_eq!(set.get("x").unwrap().shape(), &[1, 2]);
    let set = random_inputs(&m, &[("x".into(), vec![5, 2])], 42).unwrap();
    let out = run(&m, &set, "relu").unwrap();
    assert_eq!(out[0].1.shape(), &[5, 2]);
    assert_eq!(floats(&out[0].1), floats(set.get("x").unwrap()));
}

#[test]
fn an_if_whose_condition_depends_on_another_if_is_decided_after_it() {
    // z from the sample-rate switch, then `If(Shape(z)[0] == 1) { squeeze(z) } else { z }`.
    let mut m = sample_rate_model();
    let g = m.graph.as_mut().unwrap();
    let then = GraphProto {
        name: Some("then2".into()),
        node: vec![
            constant_i64("sq2_axes", "sq2_axes", &[0], &[1]),
            node("Squeeze", "sq2", &["z", "sq2_axes"], &["t2"]),
        ],
        output: vec![out("t2")],
        ..Default::default()
    };
    let els = GraphProto {
        name: Some("else2".into()),
        node: vec![node("Identity", "id2", &["z"], &["e2"])],
        output: vec![out("e2")],
        ..Default::default()
    };
    let mut gather = node("Gather", "zdim0", &["zshape", "zzero"], &["zd0"]);
    gather.attribute.push(AttributeProto {
        name: Some("axis".into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(0),
        ..Default::default()
    });
    g.node.extend([
        node("Shape", "zshape", &["z"], &["zshape"]),
        constant_i64("zzero", "zzero", &[0], &[]),
        gather,
        constant_i64("zone", "zone", &[1], &[]),
        node("Equal", "zeq", &["zd0", "zone"], &["zcond"]),
        if_node("switch2", "zcond", &["w"], then, els),
    ]);
    g.output = vec![out("w")];
    let x = Tensor::from_shape(&[3, 3], &[1f32; 9]).unwrap();
    let set = InputSet::new(
        "16k",
        vec![("x".into(), x), ("sr".into(), Tensor::from(16000i64))],
    );
    let p = prepare(&m, &set).unwrap();
    assert!(p.undecided_ifs.is_empty(), "{:?}", p.undecided_ifs);
    let last = p.decided_ifs.last().unwrap();
    assert_eq!(last.node, "switch2");
    assert_eq!(last.branch, "else_branch");
    let out = run(&m, &set, "chained").unwrap();
    assert_eq!(out[0].1.shape(), &[3, 3]);
    assert_eq!(floats(&out[0].1), vec![3f32; 9]);
}

/// tract computes `Shape` as `TDim`; the runner hands it back as the model's `int64`, so a model
/// whose output is a shape verifies against itself and against the folded constant.
#[test]
fn a_shape_output_is_int64_and_verifies() {
    let m = model(GraphProto {
        name: Some("main".into()),
        input: vec![vi("x", DataType::Float, &["3", "2"])],
        node: vec![node("Shape", "shape", &["x"], &["y"])],
        output: vec![out("y")],
        ..Default::default()
    });
    let set = InputSet::new(
        "s",
        vec![("x".into(), Tensor::from_shape(&[3, 2], &[0f32; 6]).unwrap())],
    );
    let out = run(&m, &set, "shape").unwrap();
    assert_eq!(out[0].1, Tensor::from_shape(&[2], &[3i64, 2]).unwrap());
    let mut folded = m.clone();
    let g = folded.graph.as_mut().unwrap();
    g.node = vec![constant_i64("shape", "y", &[3, 2], &[2])];
    let report = verify(&m, &folded, std::slice::from_ref(&set), 0.0).unwrap();
    assert!(report.passed, "{report}");
}
