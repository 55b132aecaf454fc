//! Normalisations and `Dropout`: shape-preserving ops whose extra inputs are per-channel or
//! per-feature parameters. Those normalising across channels (layer, group, RMS, LRN,
//! mean-variance) are channel-flow barriers: removing a channel changes the others.

use super::elementwise::same;
use super::infer::{attr_f, attr_i, fact, norm_axis, InferCx};
use super::{arity, Flow, Half, OpDef, HALF};
use crate::ir::facts::{Dim, Fact};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::NodeProto;

fn dropout(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    vec![
        fact(i0.dtype, i0.shape.clone()),
        fact(Some(DataType::Bool as i32), i0.shape),
    ]
}

/// Output 0 is the input's; the training-mode outputs (running or saved mean and variance) are
/// per channel, shaped like the input mean.
fn batch_norm(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let stat = fact(cx.x(3).dtype, cx.x(3).shape.clone());
    let mut outs = vec![fact(i0.dtype, i0.shape)];
    outs.resize(cx.n_out().max(1), stat);
    outs
}

fn layer_norm(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let stash = cx.attr_i("stash_type").unwrap_or(1) as i32;
    let stats = i0.shape.as_ref().and_then(|s| {
        let a = norm_axis(cx.attr_i("axis").unwrap_or(-1), s.len())?;
        let mut out = s[..a].to_vec();
        out.extend(std::iter::repeat_n(Dim::K(1), s.len() - a));
        Some(out)
    });
    vec![
        fact(i0.dtype, i0.shape.clone()),
        fact(Some(stash), stats.clone()),
        fact(Some(stash), stats),
    ]
}

/// A constant channel `x` through BatchNormalization in inference mode:
/// `(x − mean)/√(var + ε)·scale + B` (training mode: `None`).
fn batch_norm_point(node: &NodeProto, x: f32, operands: &[Option<f32>]) -> Option<f32> {
    if attr_i(node, "training_mode").unwrap_or(0) != 0 {
        return None;
    }
    let at = |i: usize| operands.get(i).copied().flatten();
    let eps = attr_f(node, "epsilon").unwrap_or(1e-5);
    Some((x - at(3)?) / (at(4)? + eps).sqrt() * at(1)? + at(2)?)
}

/// A constant channel through InstanceNormalization: its mean is itself and its variance 0, so
/// it becomes the bias `B`.
fn instance_norm_point(_: &NodeProto, x: f32, operands: &[Option<f32>]) -> Option<f32> {
    x.is_finite().then_some(())?;
    operands.get(2).copied().flatten()
}

/// Dropout in inference mode (no `training_mode` input, or a constant 0) is the identity.
fn dropout_point(node: &NodeProto, x: f32, operands: &[Option<f32>]) -> Option<f32> {
    match node.input.get(2).filter(|s| !s.is_empty()) {
        None => Some(x),
        Some(_) => (operands.get(2).copied().flatten() == Some(0.0)).then_some(x),
    }
}

pub(super) const OPS: &[OpDef] = &[
    OpDef {
        attrs: "epsilon momentum consumed_inputs<6 is_test<7 spatial<9 training_mode>=14",
        infer: batch_norm,
        flow: Flow::Pass {
            per_channel: &[1, 2, 3, 4],
        },
        point: Some(batch_norm_point),
        half: HALF,
        ..OpDef::new("BatchNormalization", 1, arity(5, 5), arity(1, 5))
    },
    OpDef {
        attrs: "epsilon consumed_inputs<6",
        infer: same,
        flow: Flow::Pass {
            per_channel: &[1, 2],
        },
        point: Some(instance_norm_point),
        half: Half::Float32(
            "accumulates a mean and variance over many elements, which float16 loses",
        ),
        ..OpDef::new("InstanceNormalization", 1, arity(3, 3), arity(1, 1))
    },
    OpDef {
        attrs: "axis epsilon stash_type",
        infer: layer_norm,
        half: Half::Float32(
            "accumulates a mean and variance over many elements, which float16 loses",
        ),
        ..OpDef::new("LayerNormalization", 17, arity(2, 3), arity(1, 3))
    },
    OpDef {
        attrs: "axis epsilon stash_type",
        infer: same,
        ..OpDef::new("RMSNormalization", 23, arity(2, 2), arity(1, 1))
    },
    OpDef {
        attrs: "interleaved num_heads rotary_embedding_dim",
        infer: same,
        ..OpDef::new("RotaryEmbedding", 23, arity(3, 4), arity(1, 1))
    },
    OpDef {
        attrs: "epsilon num_groups stash_type>=21",
        infer: same,
        half: Half::Float32(
            "accumulates a mean and variance over many elements, which float16 loses",
        ),
        ..OpDef::new("GroupNormalization", 18, arity(3, 3), arity(1, 1))
    },
    OpDef {
        attrs: "alpha beta bias size",
        infer: same,
        ..OpDef::new("LRN", 1, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: "axes",
        infer: same,
        half: Half::Float32(
            "accumulates a mean and variance over many elements, which float16 loses",
        ),
        ..OpDef::new("MeanVarianceNormalization", 9, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: "ratio<12 consumed_inputs<6 is_test<7 seed>=12",
        infer: dropout,
        flow: Flow::Pass { per_channel: &[] },
        point: Some(dropout_point),
        half: Half::Move,
        ..OpDef::new("Dropout", 1, arity(1, 3), arity(1, 2))
    },
];
