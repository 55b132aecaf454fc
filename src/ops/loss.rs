//! Training losses: `NegativeLogLikelihoodLoss`, `SoftmaxCrossEntropyLoss`.

use super::infer::{fact, InferCx};
use super::{arity, OpDef};
use crate::ir::facts::Fact;

/// The loss: the target's shape with `reduction = none`, a scalar with `mean` or `sum`.
fn loss_fact(cx: &InferCx) -> Fact {
    let shape = match cx.attr_s("reduction").as_deref() {
        Some("none") => cx.x(1).shape.clone(),
        _ => Some(vec![]),
    };
    fact(cx.x(0).dtype, shape)
}

fn nll(cx: &mut InferCx) -> Vec<Fact> {
    vec![loss_fact(cx)]
}

fn sce(cx: &mut InferCx) -> Vec<Fact> {
    vec![loss_fact(cx), fact(cx.x(0).dtype, cx.x(0).shape.clone())]
}

pub(super) const OPS: &[OpDef] = &[
    OpDef {
        attrs: "ignore_index reduction",
        infer: nll,
        ..OpDef::new("NegativeLogLikelihoodLoss", 12, arity(2, 3), arity(1, 1))
    },
    OpDef {
        attrs: "ignore_index reduction",
        infer: sce,
        ..OpDef::new("SoftmaxCrossEntropyLoss", 12, arity(2, 3), arity(1, 2))
    },
];
