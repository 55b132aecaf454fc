//! Quantization: `QuantizeLinear`, `DequantizeLinear`, `DynamicQuantizeLinear` and the integer
//! layers (`MatMulInteger`, `ConvInteger`, `QLinearMatMul`, `QLinearConv`). The Q/DQ ops are the
//! model's own representation: never folded.

use super::conv::conv_shape;
use super::infer::{fact, InferCx};
use super::matmul::matmul_shape;
use super::{arity, OpDef, Purity};
use crate::ir::facts::Fact;
use crate::onnx::proto::tensor_proto::DataType;

fn quantize(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx
        .x(2)
        .dtype
        .filter(|_| cx.has(2))
        .or_else(|| {
            cx.attr_i("output_dtype")
                .filter(|d| *d != 0)
                .map(|d| d as i32)
        })
        .or(Some(DataType::Uint8 as i32));
    vec![fact(dtype, cx.x(0).shape.clone())]
}

fn dequantize(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx
        .attr_i("output_dtype")
        .filter(|d| *d != 0)
        .map(|d| d as i32)
        .or(cx.x(1).dtype);
    vec![fact(dtype, cx.x(0).shape.clone())]
}

fn dynamic_quantize(cx: &mut InferCx) -> Vec<Fact> {
    let u8 = Some(DataType::Uint8 as i32);
    vec![
        fact(u8, cx.x(0).shape.clone()),
        fact(Some(DataType::Float as i32), Some(vec![])),
        fact(u8, Some(vec![])),
    ]
}

fn matmul_integer(cx: &mut InferCx) -> Vec<Fact> {
    vec![fact(Some(DataType::Int32 as i32), matmul_shape(cx, 0, 1))]
}

fn conv_integer(cx: &mut InferCx) -> Vec<Fact> {
    vec![fact(Some(DataType::Int32 as i32), conv_shape(cx, 0, 1))]
}

fn qlinear_matmul(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(7).dtype;
    vec![fact(dtype, matmul_shape(cx, 0, 3))]
}

fn qlinear_conv(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(7).dtype;
    vec![fact(dtype, conv_shape(cx, 0, 3))]
}

const CONV: &str = "auto_pad dilations group kernel_shape pads strides";

pub(super) const OPS: &[OpDef] = &[
    OpDef {
        attrs: "axis>=13 saturate>=19 block_size>=21 output_dtype>=21 precision>=25",
        infer: quantize,
        purity: Purity::Keep,
        ..OpDef::new("QuantizeLinear", 10, arity(2, 3), arity(1, 1))
    },
    OpDef {
        attrs: "axis>=13 block_size>=21 output_dtype>=23",
        infer: dequantize,
        purity: Purity::Keep,
        ..OpDef::new("DequantizeLinear", 10, arity(2, 3), arity(1, 1))
    },
    OpDef {
        infer: dynamic_quantize,
        purity: Purity::Keep,
        ..OpDef::new("DynamicQuantizeLinear", 11, arity(1, 1), arity(3, 3))
    },
    OpDef {
        infer: matmul_integer,
        ..OpDef::new("MatMulInteger", 10, arity(2, 4), arity(1, 1))
    },
    OpDef {
        attrs: CONV,
        infer: conv_integer,
        ..OpDef::new("ConvInteger", 10, arity(2, 4), arity(1, 1))
    },
    OpDef {
        infer: qlinear_matmul,
        ..OpDef::new("QLinearMatMul", 10, arity(8, 8), arity(1, 1))
    },
    OpDef {
        attrs: CONV,
        infer: qlinear_conv,
        ..OpDef::new("QLinearConv", 10, arity(8, 9), arity(1, 1))
    },
];
