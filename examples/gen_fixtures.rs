//! Writes the small models in `fixtures/`: `cargo run --example gen_fixtures`.
//!
//! Generation is deterministic (seeded weights, fixed producer, no timestamps), so running it
//! again gives the same bytes; `tests/fixtures.rs` includes this file and checks exactly that.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use onnx_slim::ir::builder::{
    attr_f, attr_floats, attr_g, attr_graphs, attr_i, attr_ints, attr_ref, attr_s, attr_sparse,
    attr_sparse_tensors, attr_strings, attr_t, attr_tensors, attr_tp, attr_type_protos, seeded_f32,
    tensor_f32, tensor_i64_1d, tensor_type, value_info, Dim, ModelBuilder,
};
use onnx_slim::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, type_proto, FunctionProto, ModelProto,
    OperatorSetIdProto, SparseTensorProto, TypeProto,
};

const F32: DataType = DataType::Float;

fn base(opset: i64, name: &str) -> ModelBuilder {
    let mut b = ModelBuilder::new(opset);
    b.producer("onnx-slim-fixtures", "1").graph_name(name);
    b
}

/// Seeded weights scaled by `scale`.
fn w(shape: &[usize], seed: u64, scale: f32) -> ArrayD<f32> {
    seeded_f32(shape, seed).mapv(|v| v * scale)
}

/// `x[N,16]` → MatMul 16x32 + Add + Relu → MatMul 32x8 + Add → `y[N,8]`.
pub fn mlp() -> ModelProto {
    let mut b = base(17, "mlp");
    b.input_sym("x", F32, &["N".into(), 16.into()])
        .initializer_f32("w1", w(&[16, 32], 1, 0.25))
        .initializer_f32("b1", w(&[32], 2, 0.1))
        .initializer_f32("w2", w(&[32, 8], 3, 0.18))
        .initializer_f32("b2", w(&[8], 4, 0.1))
        .node("MatMul", &["x", "w1"], &["h1"], vec![])
        .node("Add", &["h1", "b1"], &["h1_bias"], vec![])
        .node("Relu", &["h1_bias"], &["h1_relu"], vec![])
        .node("MatMul", &["h1_relu", "w2"], &["h2"], vec![])
        .node("Add", &["h2", "b2"], &["y"], vec![])
        .output_sym("y", F32, &["N".into(), 8.into()]);
    b.build()
}

/// `x[1,3,8,8]` → Conv 3→8 3x3 pads 1 → BatchNormalization → Relu → GlobalAveragePool → Flatten
/// → Gemm 8→4 (transB) → `y[1,4]`.
pub fn conv() -> ModelProto {
    let mut b = base(17, "conv");
    b.input("x", F32, &[1, 3, 8, 8])
        .initializer_f32("conv_w", w(&[8, 3, 3, 3], 10, 0.3))
        .initializer_f32("conv_b", w(&[8], 11, 0.1))
        .initializer_f32("bn_scale", w(&[8], 12, 0.2).mapv(|v| v + 1.0))
        .initializer_f32("bn_bias", w(&[8], 13, 0.1))
        .initializer_f32("bn_mean", w(&[8], 14, 0.1))
        .initializer_f32("bn_var", w(&[8], 15, 0.2).mapv(|v| v.abs() + 0.5))
        .initializer_f32("fc_w", w(&[4, 8], 16, 0.35))
        .initializer_f32("fc_b", w(&[4], 17, 0.1))
        .node(
            "Conv",
            &["x", "conv_w", "conv_b"],
            &["conv_out"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("strides", &[1, 1]),
            ],
        )
        .node(
            "BatchNormalization",
            &["conv_out", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
            &["bn_out"],
            vec![attr_f("epsilon", 1e-5)],
        )
        .node("Relu", &["bn_out"], &["relu_out"], vec![])
        .node("GlobalAveragePool", &["relu_out"], &["pool_out"], vec![])
        .node("Flatten", &["pool_out"], &["flat"], vec![attr_i("axis", 1)])
        .node(
            "Gemm",
            &["flat", "fc_w", "fc_b"],
            &["y"],
            vec![attr_i("transB", 1)],
        )
        .output("y", F32, &[1, 4]);
    b.build()
}

/// `y = 0.5 * a^T @ B^T + 2.0 * C` with `a[4,3]`, `B[5,4]`, `C[5]` → `y[3,5]`.
pub fn gemm_attrs() -> ModelProto {
    let mut b = base(17, "gemm_attrs");
    b.input("a", F32, &[4, 3])
        .initializer_f32("B", w(&[5, 4], 20, 1.0))
        .initializer_f32("C", w(&[5], 21, 1.0))
        .node(
            "Gemm",
            &["a", "B", "C"],
            &["y"],
            vec![
                attr_f("alpha", 0.5),
                attr_f("beta", 2.0),
                attr_i("transA", 1),
                attr_i("transB", 1),
            ],
        )
        .output("y", F32, &[3, 5]);
    b.build()
}

/// `y = If(cond)`: the then branch adds `xs = x * x` and the initializer `w`, both read from the
/// outer scope; the else branch multiplies `x` by a `Constant` of its own.
pub fn if_subgraph() -> ModelProto {
    let mut then_b = ModelBuilder::subgraph("then_body");
    then_b
        .node("Add", &["xs", "w"], &["then_out"], vec![])
        .output("then_out", F32, &[2, 3]);
    let mut else_b = ModelBuilder::subgraph("else_body");
    else_b
        .node(
            "Constant",
            &[],
            &["c"],
            vec![attr_t("value", tensor_f32("", &w(&[3], 31, 1.0)))],
        )
        .node("Mul", &["x", "c"], &["else_out"], vec![])
        .output("else_out", F32, &[2, 3]);

    let mut b = base(17, "if_subgraph");
    b.input("cond", DataType::Bool, &[])
        .input("x", F32, &[2, 3])
        .initializer_f32("w", w(&[2, 3], 30, 1.0))
        .node("Mul", &["x", "x"], &["xs"], vec![])
        .node(
            "If",
            &["cond"],
            &["y"],
            vec![
                attr_g("else_branch", else_b.build_graph()),
                attr_g("then_branch", then_b.build_graph()),
            ],
        )
        .output("y", F32, &[2, 3]);
    b.build()
}

/// Weights as `Constant` nodes, an `Identity`, a `Dropout` (inference: a no-op) and two
/// initializers with the same contents under different names.
pub fn constants() -> ModelProto {
    let s = w(&[4], 42, 1.0);
    let mut b = base(17, "constants");
    b.input("x", F32, &[1, 4])
        .initializer_f32("s1", s.clone())
        .initializer_f32("s2", s)
        .node(
            "Constant",
            &[],
            &["W"],
            vec![attr_t("value", tensor_f32("", &w(&[4, 4], 40, 0.5)))],
        )
        .node(
            "Constant",
            &[],
            &["B"],
            vec![attr_t("value", tensor_f32("", &w(&[4], 41, 0.1)))],
        )
        .node("MatMul", &["x", "W"], &["h"], vec![])
        .node("Add", &["h", "B"], &["h_bias"], vec![])
        .node("Identity", &["h_bias"], &["h_id"], vec![])
        .node("Dropout", &["h_id"], &["h_drop"], vec![])
        .node("Mul", &["h_drop", "s1"], &["h_scaled"], vec![])
        .node("Add", &["h_scaled", "s2"], &["y"], vec![])
        .output("y", F32, &[1, 4]);
    b.build()
}

/// Something for each clean-up rule the other fixtures leave idle, so that every rule fires on
/// some fixture (`tests/harness.rs`):
///
/// - no-ops: `Cast` to float, `Transpose` with the identity permutation, a `Slice` taking all of
///   axis 1, a `Pad` of zeros, a single-input `Concat`, a `Reshape` to the input's own shape;
/// - neutral arithmetic: `Mul` by `one[1]`, `Add` of `zero[8]`;
/// - a constant subgraph: `k = k1 + k2` of two initializers, feeding a `Mul`;
/// - a `Reshape` whose target is `Concat(Gather(Shape(v), [0]), [-1])` of a static `v`;
/// - a `Slice` of a `Slice` on other axes (rows, then columns, step 2);
/// - `Conv` (no bias) then `Add` of a constant `[1,4,1,1]`;
/// - an `LSTM` (hidden 4) with all-zero `initial_h` and `initial_c` initializers;
/// - two identical `Relu`s of the same value.
///
/// `x[1,3,8,8]` → … → `y[1,64]`; `s[3,1,5]` → LSTM → `yh[1,1,4]`.
pub fn clean_kinds() -> ModelProto {
    let (hidden, input) = (4usize, 5usize);
    let zeros = |shape: &[usize]| ArrayD::<f32>::zeros(IxDyn(shape));
    let mut b = base(17, "clean_kinds");
    b.input("x", F32, &[1, 3, 8, 8])
        .input("s", F32, &[3, 1, input as i64])
        .initializer(tensor_i64_1d("i0", &[0]))
        .initializer(tensor_i64_1d("i1", &[1]))
        .initializer(tensor_i64_1d("max", &[i64::MAX]))
        .initializer(tensor_i64_1d("two", &[2]))
        .initializer(tensor_i64_1d("axis2", &[2]))
        .initializer(tensor_i64_1d("axis3", &[3]))
        // merge-slices gets parameters of its own: when they are shared with other nodes the
        // merged Slice's new parameters cost more bytes than the merge frees (see issue note).
        .initializer(tensor_i64_1d("ms_begin_rows", &[0]))
        .initializer(tensor_i64_1d("ms_begin_cols", &[1]))
        .initializer(tensor_i64_1d("ms_end", &[i64::MAX]))
        .initializer(tensor_i64_1d("no_pads", &[0; 8]))
        .initializer(tensor_i64_1d("same_shape", &[1, 4, 4, 4]))
        .initializer(tensor_i64_1d("minus1", &[-1]))
        .initializer_f32("conv_w", w(&[4, 3, 3, 3], 60, 0.3))
        .initializer_f32("conv_c", w(&[1, 4, 1, 1], 61, 0.1))
        .initializer_f32("one", ArrayD::from_elem(IxDyn(&[1]), 1.0))
        .initializer_f32("zero", zeros(&[8]))
        .initializer_f32("k1", w(&[64], 62, 0.5))
        .initializer_f32("k2", w(&[64], 63, 0.5))
        .initializer_f32("lstm_w", w(&[1, 4 * hidden, input], 64, 0.5))
        .initializer_f32("lstm_r", w(&[1, 4 * hidden, hidden], 65, 0.5))
        .initializer_f32("h0", zeros(&[1, 1, hidden]))
        .initializer_f32("c0", zeros(&[1, 1, hidden]))
        // eliminate-noop
        .node(
            "Cast",
            &["x"],
            &["x_cast"],
            vec![attr_i("to", DataType::Float as i64)],
        )
        .node(
            "Transpose",
            &["x_cast"],
            &["x_t"],
            vec![attr_ints("perm", &[0, 1, 2, 3])],
        )
        .node("Slice", &["x_t", "i0", "max", "i1"], &["x_all"], vec![])
        // fuse-conv-add
        .node(
            "Conv",
            &["x_all", "conv_w"],
            &["conv"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        )
        .node("Add", &["conv", "conv_c"], &["conv_add"], vec![])
        // eliminate-neutral-arith
        .node("Mul", &["conv_add", "one"], &["scaled"], vec![])
        .node("Add", &["scaled", "zero"], &["shifted"], vec![])
        // merge-slices
        .node(
            "Slice",
            &["shifted", "ms_begin_rows", "ms_end", "axis2", "two"],
            &["rows"],
            vec![],
        )
        .node(
            "Slice",
            &["rows", "ms_begin_cols", "ms_end", "axis3", "two"],
            &["cols"],
            vec![],
        )
        // eliminate-noop
        .node("Pad", &["cols", "no_pads"], &["padded"], vec![])
        .node("Concat", &["padded"], &["joined"], vec![attr_i("axis", 1)])
        .node("Reshape", &["joined", "same_shape"], &["same"], vec![])
        // static-reshape-shape (and fold-constants, from the known shape)
        .node("Shape", &["same"], &["same_dims"], vec![])
        .node(
            "Gather",
            &["same_dims", "i0"],
            &["batch"],
            vec![attr_i("axis", 0)],
        )
        .node(
            "Concat",
            &["batch", "minus1"],
            &["flat_shape"],
            vec![attr_i("axis", 0)],
        )
        .node("Reshape", &["same", "flat_shape"], &["flat"], vec![])
        // eliminate-common-subexpressions
        .node("Relu", &["flat"], &["r1"], vec![])
        .node("Relu", &["flat"], &["r2"], vec![])
        .node("Add", &["r1", "r2"], &["sum"], vec![])
        // fold-constants
        .node("Add", &["k1", "k2"], &["k"], vec![])
        .node("Mul", &["sum", "k"], &["y"], vec![])
        // drop-zero-rnn-state
        .node(
            "LSTM",
            &["s", "lstm_w", "lstm_r", "", "", "h0", "c0"],
            &["lstm_y", "yh"],
            vec![attr_i("hidden_size", hidden as i64)],
        )
        .output("y", F32, &[1, 64])
        .output("yh", F32, &[1, 1, hidden as i64]);
    b.build()
}

/// The seeded product `A[m,r]·B[r,n]` scaled by `scale`: exactly rank `r`. Summed in a fixed
/// order in `f64` (no BLAS, no FMA), so every platform gets the same bits.
fn low_rank(m: usize, n: usize, r: usize, seed: u64, scale: f64) -> ArrayD<f32> {
    let a = seeded_f32(&[m, r], seed);
    let b = seeded_f32(&[r, n], seed + 1);
    let a = a.as_slice().expect("standard layout");
    let b = b.as_slice().expect("standard layout");
    let data = (0..m * n)
        .map(|ij| {
            let (i, j) = (ij / n, ij % n);
            let s: f64 = (0..r)
                .map(|k| a[i * r + k] as f64 * b[k * n + j] as f64)
                .sum();
            (s * scale) as f32
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[m, n]), data).expect("shape and data agree")
}

/// Weights of exact rank 4, big enough for `lowrank`'s defaults (≥ 4096 parameters):
/// `x[1,64]` → MatMul `W1[64,64]` → Relu → Gemm `W2[64,64]` (`transB=1`) + `b2` → `y[1,64]`, and
/// `img[1,16,6,6]` → Conv `Wc[32,16,3,3]` (flattened `[32,144]`, rank 4) pads 1 + bias →
/// `z[1,32,6,6]`.
pub fn lowrank() -> ModelProto {
    let conv_w = low_rank(32, 16 * 9, 4, 74, 0.1)
        .into_shape_with_order(IxDyn(&[32, 16, 3, 3]))
        .expect("same size");
    let mut b = base(17, "lowrank");
    b.input("x", F32, &[1, 64])
        .input("img", F32, &[1, 16, 6, 6])
        .initializer_f32("w1", low_rank(64, 64, 4, 70, 0.1))
        .initializer_f32("w2", low_rank(64, 64, 4, 72, 0.1))
        .initializer_f32("b2", w(&[64], 73, 0.1))
        .initializer_f32("conv_w", conv_w)
        .initializer_f32("conv_b", w(&[32], 76, 0.1))
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node("Relu", &["h"], &["h_relu"], vec![])
        .node(
            "Gemm",
            &["h_relu", "w2", "b2"],
            &["y"],
            vec![attr_i("transB", 1)],
        )
        .node(
            "Conv",
            &["img", "conv_w", "conv_b"],
            &["z"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        )
        .output("y", F32, &[1, 64])
        .output("z", F32, &[1, 32, 6, 6]);
    b.build()
}

/// Tied weights, as tied encoder/decoder exports write them: `x[1,16]` → MatMul `enc[16,32]` →
/// Relu → MatMul `dec[32,16]` → `y[1,16]`, where `dec` is `encᵀ` bit for bit (2 KiB each, above
/// `share-transposed`'s 1 KiB floor).
pub fn tied_weights() -> ModelProto {
    let enc = w(&[16, 32], 80, 0.25);
    let dec = enc.t().as_standard_layout().to_owned();
    let mut b = base(17, "tied_weights");
    b.input("x", F32, &[1, 16])
        .initializer_f32("enc", enc)
        .initializer_f32("dec", dec)
        .node("MatMul", &["x", "enc"], &["h"], vec![])
        .node("Relu", &["h"], &["h_relu"], vec![])
        .node("MatMul", &["h_relu", "dec"], &["y"], vec![])
        .output("y", F32, &[1, 16]);
    b.build()
}

/// `y = If(cond)` whose two branches each hold a `Constant` equal to the top-level initializer
/// `scale`, and a `Constant` `bias` equal to the other branch's (and to none at the top level);
/// the else branch nests a `Loop`-free `If` with one more copy of `bias`. For
/// `share-into-subgraphs`.
pub fn subgraph_constants() -> ModelProto {
    let scale = w(&[3], 90, 1.0);
    let bias = w(&[3], 91, 1.0);
    let konst = |name: &str, v: &ArrayD<f32>| {
        (
            "Constant",
            name.to_string(),
            vec![attr_t("value", tensor_f32("", v))],
        )
    };
    let mut inner = ModelBuilder::subgraph("inner_then");
    let (op, out, attrs) = konst("bias_inner", &bias);
    inner
        .node(op, &[], &[&out], attrs)
        .node("Sub", &["x", "bias_inner"], &["inner_out"], vec![])
        .output("inner_out", F32, &[2, 3]);
    let mut inner_else = ModelBuilder::subgraph("inner_else");
    inner_else
        .node("Neg", &["x"], &["inner_else_out"], vec![])
        .output("inner_else_out", F32, &[2, 3]);
    let mut then_b = ModelBuilder::subgraph("then_body");
    let (op, out, attrs) = konst("scale_then", &scale);
    then_b.node(op, &[], &[&out], attrs);
    let (op, out, attrs) = konst("bias_then", &bias);
    then_b
        .node(op, &[], &[&out], attrs)
        .node("Mul", &["x", "scale_then"], &["t1"], vec![])
        .node("Add", &["t1", "bias_then"], &["then_out"], vec![])
        .output("then_out", F32, &[2, 3]);
    let mut else_b = ModelBuilder::subgraph("else_body");
    let (op, out, attrs) = konst("scale_else", &scale);
    else_b.node(op, &[], &[&out], attrs);
    let (op, out, attrs) = konst("bias_else", &bias);
    else_b
        .node(op, &[], &[&out], attrs)
        .node("Div", &["x", "scale_else"], &["e1"], vec![])
        .node(
            "If",
            &["cond"],
            &["e2"],
            vec![
                attr_g("else_branch", inner_else.build_graph()),
                attr_g("then_branch", inner.build_graph()),
            ],
        )
        .node("Add", &["e1", "e2"], &["e3"], vec![])
        .node("Add", &["e3", "bias_else"], &["else_out"], vec![])
        .output("else_out", F32, &[2, 3]);
    let mut b = base(17, "subgraph_constants");
    b.input("cond", DataType::Bool, &[])
        .input("x", F32, &[2, 3])
        .initializer_f32("scale", scale)
        .node("Mul", &["x", "scale"], &["xs"], vec![])
        .node(
            "If",
            &["cond"],
            &["yi"],
            vec![
                attr_g("else_branch", else_b.build_graph()),
                attr_g("then_branch", then_b.build_graph()),
            ],
        )
        .node("Add", &["xs", "yi"], &["y"], vec![])
        .output("y", F32, &[2, 3]);
    b.build()
}

fn tp_tensor(dt: DataType, dims: &[Dim]) -> TypeProto {
    tensor_type(dt, Some(dims))
}

/// One node in the custom domain `com.example` with an attribute of every `AttributeProto`
/// type, a call of a model-local function (whose body uses `ref_attr_name`), a graph input with
/// a default initializer, a sparse initializer, `value_info`, metadata and doc strings. For
/// round-trip and `show` tests; it is not meant to run.
pub fn all_attr_types() -> ModelProto {
    let sub = |name: &str, op: &str| {
        let mut g = ModelBuilder::subgraph(name);
        g.input("a", F32, &[2])
            .node(op, &["a"], &["b"], vec![])
            .output("b", F32, &[2]);
        g.build_graph()
    };
    let sparse = |seed: u64| SparseTensorProto {
        values: Some(tensor_f32("", &w(&[2], seed, 1.0))),
        indices: Some(tensor_i64_1d("", &[1, 7])),
        dims: vec![3, 3],
    };
    let boxed = |t: TypeProto| Some(Box::new(t));
    let type_protos = vec![
        tp_tensor(F32, &[2.into(), 3.into()]),
        TypeProto {
            value: Some(type_proto::Value::SequenceType(Box::new(
                type_proto::Sequence {
                    elem_type: boxed(tp_tensor(DataType::Int64, &[Dim::Unknown])),
                },
            ))),
            ..Default::default()
        },
        TypeProto {
            value: Some(type_proto::Value::MapType(Box::new(type_proto::Map {
                key_type: Some(DataType::Int64 as i32),
                value_type: boxed(tp_tensor(F32, &[])),
            }))),
            ..Default::default()
        },
        TypeProto {
            value: Some(type_proto::Value::OptionalType(Box::new(
                type_proto::Optional {
                    elem_type: boxed(tensor_type(F32, None)),
                },
            ))),
            ..Default::default()
        },
        TypeProto {
            value: Some(type_proto::Value::SparseTensorType(
                type_proto::SparseTensor {
                    elem_type: Some(F32 as i32),
                    shape: Some(onnx_slim::ir::builder::shape_proto(&[3.into(), 3.into()])),
                },
            )),
            ..Default::default()
        },
        TypeProto {
            value: Some(type_proto::Value::OpaqueType(type_proto::Opaque {
                domain: Some("com.example".into()),
                name: Some("Handle".into()),
            })),
            ..Default::default()
        },
    ];
    let long: Vec<i64> = (0..40).map(|i| i * i - 20).collect();

    let function = FunctionProto {
        name: Some("ScaledAdd".into()),
        domain: Some("com.example".into()),
        input: vec!["a".into(), "b".into()],
        output: vec!["c".into()],
        attribute: vec!["alpha".into()],
        node: {
            let mut f = ModelBuilder::subgraph("ScaledAdd");
            f.node("Add", &["a", "b"], &["s"], vec![])
                .node(
                    "Constant",
                    &[],
                    &["k"],
                    vec![attr_ref("value_float", AttributeType::Float, "alpha")],
                )
                .node("Mul", &["s", "k"], &["c"], vec![]);
            f.build_graph().node
        },
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        doc_string: Some("c = (a + b) * alpha".into()),
        ..Default::default()
    };

    let mut b = base(17, "all_attr_types");
    b.opset("com.example", 1)
        .doc("every attribute type, for round-trip and show tests")
        .graph_doc("the main graph")
        .metadata("author", "onnx-slim fixtures")
        .metadata("license", "MIT OR Apache-2.0")
        .function(function)
        .input_sym("x", F32, &["N".into(), Dim::Unknown, 3.into()])
        .input("scale", F32, &[1])
        .initializer_f32("scale", w(&[1], 50, 1.0))
        .sparse_initializer(SparseTensorProto {
            values: Some(tensor_f32("sp", &w(&[2], 51, 1.0))),
            indices: Some(tensor_i64_1d("", &[0, 5])),
            dims: vec![2, 3],
        })
        .node_in(
            "com.example",
            "everything",
            "Everything",
            &["x", "scale"],
            &["y"],
            vec![
                attr_f("alpha", 0.5),
                attr_i("count", -3),
                attr_s("mode", b"linear"),
                attr_s("blob", &[0xff, 0x00, 0xfe]),
                attr_t("small", tensor_f32("", &w(&[2, 3], 52, 1.0))),
                attr_t("big", tensor_f32("", &w(&[4, 4], 53, 1.0))),
                attr_g("body", sub("body", "Neg")),
                attr_floats("scales", &[1.0, 2.5, -0.125]),
                attr_ints("sizes", &[1, 2, 3]),
                attr_ints("long_ints", &long),
                attr_strings("names", &[b"a", b"b c"]),
                attr_tensors(
                    "tables",
                    vec![
                        tensor_i64_1d("", &[1, -1]),
                        tensor_f32("", &w(&[16], 54, 1.0)),
                    ],
                ),
                attr_graphs("branches", vec![sub("g0", "Abs"), sub("g1", "Relu")]),
                attr_sparse("mask", sparse(55)),
                attr_sparse_tensors("masks", vec![sparse(56), sparse(57)]),
                attr_tp("elem_type", tp_tensor(F32, &["N".into(), 3.into()])),
                attr_type_protos("types", type_protos),
            ],
        );
    if let Some(n) = b.last_node() {
        n.doc_string = Some("a node of every attribute type".into());
    }
    b.node_in(
        "com.example",
        "call",
        "ScaledAdd",
        &["y", "y"],
        &["z"],
        vec![attr_f("alpha", 2.0)],
    )
    .value_info({
        let mut vi = value_info("y", F32, &["N".into(), Dim::Unknown, 3.into()]);
        vi.doc_string = Some("output of Everything".into());
        vi
    })
    .output_sym("z", F32, &["N".into(), Dim::Unknown, 3.into()]);
    b.build()
}

/// Zero channels behind a residual Add, for `prune`: `x[1,4,4,4]` → Conv `wa[6,4,1,1]` + `ba` and
/// Conv `wb[6,4,1,1]` → Add → Relu → Conv `wc[3,6,1,1]` → `y[1,3,4,4]`, where output channels 1
/// and 4 of both `wa` (and `ba`) and `wb` are 0: `prune` removes them from all three weights.
pub fn prune() -> ModelProto {
    let zero = |mut a: ArrayD<f32>| {
        for c in [1, 4] {
            a.index_axis_mut(ndarray::Axis(0), c).fill(0.0);
        }
        a
    };
    let k1 = || vec![attr_ints("kernel_shape", &[1, 1])];
    let mut b = base(17, "prune");
    b.input("x", F32, &[1, 4, 4, 4])
        .initializer_f32("wa", zero(w(&[6, 4, 1, 1], 80, 0.5)))
        .initializer_f32("ba", zero(w(&[6], 81, 0.1)))
        .initializer_f32("wb", zero(w(&[6, 4, 1, 1], 82, 0.5)))
        .initializer_f32("wc", w(&[3, 6, 1, 1], 83, 0.5))
        .node("Conv", &["x", "wa", "ba"], &["a"], k1())
        .node("Conv", &["x", "wb"], &["b"], k1())
        .node("Add", &["a", "b"], &["s"], vec![])
        .node("Relu", &["s"], &["r"], vec![])
        .node("Conv", &["r", "wc"], &["y"], k1())
        .output("y", F32, &[1, 3, 4, 4]);
    b.build()
}

/// Every fixture: file name and model.
pub fn fixtures() -> Vec<(&'static str, ModelProto)> {
    vec![
        ("mlp.onnx", mlp()),
        ("conv.onnx", conv()),
        ("gemm_attrs.onnx", gemm_attrs()),
        ("if_subgraph.onnx", if_subgraph()),
        ("constants.onnx", constants()),
        ("all_attr_types.onnx", all_attr_types()),
        ("clean_kinds.onnx", clean_kinds()),
        ("lowrank.onnx", lowrank()),
        ("tied_weights.onnx", tied_weights()),
        ("subgraph_constants.onnx", subgraph_constants()),
        ("prune.onnx", prune()),
    ]
}

#[allow(dead_code)]
fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    std::fs::create_dir_all(&dir).expect("create fixtures/");
    for (name, model) in fixtures() {
        let bytes = onnx_slim::onnx::encode_model(&model);
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        println!("{:>8} bytes  {}", bytes.len(), path.display());
    }
}
