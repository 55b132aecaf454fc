//! `prune` through the ops that move channels: Concat and Split (offset mapping), Slice on the
//! channel axis, Flatten/Reshape into a Gemm; their barriers, and onnxruntime on the results.

mod common;
mod prune;

use common::{initializer_dims as dims, skips};
use ndarray::{ArrayD, Axis, IxDyn};
use onnx_slim::ir::builder::{attr_i, attr_ints, ModelBuilder};
use onnx_slim::ir::tensor;
use onnx_slim::onnx::proto::ModelProto;
use onnx_slim::rules::prune::{Importance, PruneConfig};
use prune::*;

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
