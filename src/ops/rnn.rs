//! Recurrent layers: `LSTM`, `GRU`, `RNN`.

use super::infer::{fact, InferCx};
use super::{arity, Flow, OpDef, WeightOperand, WeightRole};
use crate::ir::facts::{Dim, Fact};
use crate::onnx::proto::NodeProto;

fn rnn(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let dirs = match cx.attr_s("direction").as_deref() {
        Some("bidirectional") => 2,
        _ => 1,
    };
    let layout = cx.attr_i("layout").unwrap_or(0);
    let hidden = cx.attr_i("hidden_size").or_else(|| {
        // R is [dirs, gates·H, H].
        cx.x(2).shape.as_ref().and_then(|s| s.get(2)?.known())
    });
    let n = cx.n_out();
    let (Some(s), Some(h)) = (&i0.shape, hidden) else {
        return vec![fact(i0.dtype, None); n];
    };
    if s.len() != 3 {
        return vec![fact(i0.dtype, None); n];
    }
    let (seq, batch) = if layout == 0 {
        (s[0], s[1])
    } else {
        (s[1], s[0])
    };
    let (d, h) = (Dim::K(dirs), Dim::K(h));
    let (y, yh) = if layout == 0 {
        (vec![seq, d, batch, h], vec![d, batch, h])
    } else {
        (vec![batch, seq, d, h], vec![batch, d, h])
    };
    (0..n)
        .map(|slot| {
            fact(
                i0.dtype,
                Some(if slot == 0 { y.clone() } else { yh.clone() }),
            )
        })
        .collect()
}

/// W `[dirs, gates·H, I]`, R `[dirs, gates·H, H]`, B `[dirs, 2·gates·H]`: the output axis is 1
/// (gate-major: gate `g`, unit `u` at `g·H + u`).
fn rnn_weights(_: &NodeProto) -> Vec<WeightOperand> {
    let w = |input, role, in_axis| WeightOperand {
        input,
        role,
        out_axis: Some(1),
        in_axis,
        groups: 1,
    };
    vec![
        w(1, WeightRole::Kernel, Some(2)),
        w(2, WeightRole::Recurrent, Some(2)),
        w(3, WeightRole::Bias, None),
    ]
}

const COMMON: &str = "activation_alpha activation_beta activations clip direction hidden_size \
                      layout>=14 output_sequence<7";

pub(super) const OPS: &[OpDef] = &[
    OpDef {
        attrs: "activation_alpha activation_beta activations clip direction hidden_size \
                input_forget layout>=14 output_sequence<7",
        infer: rnn,
        weights: Some(rnn_weights),
        flow: Flow::Layer,
        ..OpDef::new("LSTM", 1, arity(3, 8), arity(0, 3))
    },
    OpDef {
        attrs: "activation_alpha activation_beta activations clip direction hidden_size \
                layout>=14 linear_before_reset>=3 output_sequence<7",
        infer: rnn,
        weights: Some(rnn_weights),
        flow: Flow::Layer,
        ..OpDef::new("GRU", 1, arity(3, 6), arity(0, 2))
    },
    OpDef {
        attrs: COMMON,
        infer: rnn,
        weights: Some(rnn_weights),
        flow: Flow::Layer,
        ..OpDef::new("RNN", 1, arity(3, 6), arity(0, 2))
    },
];
