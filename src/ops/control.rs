//! Control flow and random ops: `If`, `Loop`, `Scan` (outputs from their subgraphs; not
//! inferred here), and the random generators (never folded).

use super::infer::{fact, InferCx};
use super::{arity, Flow, OpDef, Purity, VARIADIC};
use crate::ir::facts::{Dim, Fact};
use crate::onnx::proto::tensor_proto::DataType;

fn random(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx
        .attr_i("dtype")
        .map(|d| d as i32)
        .or(Some(DataType::Float as i32));
    let shape = cx
        .attr_ints("shape")
        .map(|s| s.into_iter().map(Dim::K).collect());
    vec![fact(dtype, shape)]
}

fn random_like(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.attr_i("dtype").map(|d| d as i32).or(cx.x(0).dtype);
    vec![fact(dtype, cx.x(0).shape.clone())]
}

fn multinomial(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx
        .attr_i("dtype")
        .map(|d| d as i32)
        .or(Some(DataType::Int32 as i32));
    let n = cx.attr_i("sample_size").unwrap_or(1);
    let shape = cx
        .x(0)
        .shape
        .as_ref()
        .filter(|s| s.len() == 2)
        .map(|s| vec![s[0], Dim::K(n)]);
    vec![fact(dtype, shape)]
}

const fn subgraph_op(
    op: &'static str,
    since: i64,
    inputs: (usize, usize),
    attrs: &'static str,
) -> OpDef {
    OpDef {
        attrs,
        purity: Purity::Subgraphs,
        flow: Flow::Barrier,
        ..OpDef::new(op, since, arity(inputs.0, inputs.1), arity(1, VARIADIC))
    }
}

const fn random_op(op: &'static str, inputs: usize, attrs: &'static str) -> OpDef {
    OpDef {
        attrs,
        infer: if inputs == 0 { random } else { random_like },
        purity: Purity::Random,
        ..OpDef::new(op, 1, arity(inputs, inputs), arity(1, 1))
    }
}

pub(super) const OPS: &[OpDef] = &[
    subgraph_op("If", 1, (1, 1), "else_branch then_branch"),
    subgraph_op("Loop", 1, (2, VARIADIC), "body"),
    subgraph_op(
        "Scan",
        8,
        (1, VARIADIC),
        "body num_scan_inputs directions<9 scan_input_axes>=9 scan_input_directions>=9 \
         scan_output_axes>=9 scan_output_directions>=9",
    ),
    random_op("RandomNormal", 0, "dtype mean scale seed shape"),
    random_op("RandomUniform", 0, "dtype high low seed shape"),
    random_op("RandomNormalLike", 1, "dtype mean scale seed"),
    random_op("RandomUniformLike", 1, "dtype high low seed"),
    OpDef {
        attrs: "dtype sample_size seed",
        infer: multinomial,
        purity: Purity::Random,
        ..OpDef::new("Multinomial", 7, arity(1, 1), arity(1, 1))
    },
];
