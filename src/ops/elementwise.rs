//! Elementwise ops: unary math and activations, casts, broadcasting arithmetic, comparisons and
//! logic, variadic `Sum`/`Max`/..., `Where`.

use super::infer::{attr_f, attr_i, attr_s, fact, is_int, InferCx, NoopCx};
use super::{arity, Flow, Half, OpDef, Purity, HALF, VARIADIC};
use crate::ir::facts::{Dim, Fact};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::NodeProto;

const BOOL: i32 = DataType::Bool as i32;

/// Output 0 has input 0's shape and dtype.
pub(super) fn same(cx: &mut InferCx) -> Vec<Fact> {
    vec![fact(cx.x(0).dtype, cx.x(0).shape.clone())]
}

/// Output 0 has input 0's shape, and is bool.
fn same_bool(cx: &mut InferCx) -> Vec<Fact> {
    vec![fact(Some(BOOL), cx.x(0).shape.clone())]
}

fn identity(cx: &mut InferCx) -> Vec<Fact> {
    let mut f = cx.x(0).clone();
    f.declared = false;
    vec![f]
}

fn cast(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0);
    let to = cx.attr_i("to").map(|t| t as i32);
    let mut out = fact(to, i0.shape.clone());
    // Integer → integer casts of small values: exact only if no wrap-around.
    if let (Some(to), Some(v)) = (to, &i0.value) {
        let wide = to == DataType::Int64 as i32 || to == DataType::Int32 as i32;
        if wide && i0.dtype.is_some_and(is_int) {
            let fits = v.iter().all(|d| match d {
                Dim::K(k) => to == DataType::Int64 as i32 || i32::try_from(*k).is_ok(),
                Dim::S(_) => true,
            });
            if fits {
                out.value = Some(v.clone());
            }
        }
    }
    vec![out]
}

fn cast_like(cx: &mut InferCx) -> Vec<Fact> {
    vec![fact(cx.x(1).dtype, cx.x(0).shape.clone())]
}

fn cast_noop(cx: &NoopCx) -> Result<(), String> {
    let to = super::infer::attr_i(cx.node, "to").unwrap_or(-1) as i32;
    match cx
        .ins
        .first()
        .and_then(Option::as_ref)
        .and_then(|f| f.dtype)
    {
        Some(d) if d == to => Ok(()),
        Some(_) => Err("casts to another dtype".into()),
        None => Err("the input dtype is not known".into()),
    }
}

/// The broadcast shape of the present inputs.
fn broadcast_shape(cx: &mut InferCx) -> Option<Vec<Dim>> {
    let mut acc: Option<Vec<Dim>> = None;
    for i in 0..cx.ins.len() {
        if !cx.has(i) {
            continue;
        }
        let s = cx.x(i).shape.clone()?;
        acc = Some(match acc {
            None => s,
            Some(a) => cx.broadcast(&a, &s)?,
        });
    }
    acc
}

fn broadcast(cx: &mut InferCx) -> Vec<Fact> {
    let shape = broadcast_shape(cx);
    let op = cx.node.op_type.as_deref().unwrap_or("");
    let value = match op {
        "Add" | "Sub" | "Mul" | "Div" if cx.ins.len() == 2 => {
            let (a, b) = (cx.x(0).clone(), cx.x(1).clone());
            arith_value(cx, op, &a, &b, shape.as_deref())
        }
        _ => None,
    };
    let mut f = fact(cx.x(0).dtype, shape);
    f.value = value;
    vec![f]
}

fn broadcast_bool(cx: &mut InferCx) -> Vec<Fact> {
    vec![fact(Some(BOOL), broadcast_shape(cx))]
}

fn where_(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(1).dtype.or(cx.x(2).dtype);
    vec![fact(dtype, broadcast_shape(cx))]
}

/// Element values of `a op b` for small integer tensors of rank ≤ 1.
fn arith_value(
    cx: &mut InferCx,
    op: &str,
    a: &Fact,
    b: &Fact,
    shape: Option<&[Dim]>,
) -> Option<Vec<Dim>> {
    let (va, vb) = (a.value.as_ref()?, b.value.as_ref()?);
    if !a.dtype.is_some_and(is_int) || a.dtype != b.dtype {
        return None;
    }
    let shape = shape?;
    if shape.len() > 1 {
        return None;
    }
    let n = shape.first().and_then(|d| d.known()).unwrap_or(1) as usize;
    if (va.len() != n && va.len() != 1) || (vb.len() != n && vb.len() != 1) {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let x = va[if va.len() == 1 { 0 } else { i }];
        let y = vb[if vb.len() == 1 { 0 } else { i }];
        out.push(match (op, x, y) {
            ("Add", Dim::K(p), Dim::K(q)) => p.checked_add(q).map(Dim::K)?,
            ("Sub", Dim::K(p), Dim::K(q)) => p.checked_sub(q).map(Dim::K)?,
            ("Mul", Dim::K(p), Dim::K(q)) => p.checked_mul(q).map(Dim::K)?,
            // ONNX integer Div truncates toward zero.
            ("Div", Dim::K(p), Dim::K(q)) if q != 0 => Dim::K(p.checked_div(q)?),
            ("Add" | "Sub", s @ Dim::S(_), Dim::K(0)) => s,
            ("Add", Dim::K(0), s @ Dim::S(_)) => s,
            ("Mul" | "Div", s @ Dim::S(_), Dim::K(1)) => s,
            ("Mul", Dim::K(1), s @ Dim::S(_)) => s,
            _ => cx.fresh(),
        });
    }
    Some(out)
}

const PASS: Flow = Flow::Pass { per_channel: &[] };

/// [`OpDef::point`] of the unary ops, the activations with parameters (`Clip`, `PRelu`) and
/// `Identity`, `Cast` to float32: the ONNX formula on one f32 (attribute defaults of the spec).
/// `Erf` and exact `Gelu` only at 0 (no exact f32 evaluation elsewhere); ops on other types
/// (`Not`, `IsNaN`, ...) and the mixing ones (`Softmax`, ...) give `None`.
pub(super) fn point(node: &NodeProto, x: f32, operands: &[Option<f32>]) -> Option<f32> {
    let f = |name: &str, default: f32| attr_f(node, name).unwrap_or(default);
    let operand = |i: usize| operands.get(i).copied().flatten();
    let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
    let softplus = |v: f32| if v > 20.0 { v } else { v.exp().ln_1p() };
    Some(match node.op_type.as_deref()? {
        "Identity" => x,
        "Cast" => {
            if attr_i(node, "to") != Some(DataType::Float as i64) {
                return None;
            }
            x
        }
        "Abs" => x.abs(),
        "Neg" => -x,
        "Relu" => x.max(0.0),
        "LeakyRelu" => {
            if x < 0.0 {
                f("alpha", 0.01) * x
            } else {
                x
            }
        }
        "PRelu" => {
            if x < 0.0 {
                operand(1)? * x
            } else {
                x
            }
        }
        "Elu" => {
            if x < 0.0 {
                f("alpha", 1.0) * x.exp_m1()
            } else {
                x
            }
        }
        "Celu" => {
            let a = f("alpha", 1.0);
            x.max(0.0) + (a * (x / a).exp_m1()).min(0.0)
        }
        "Selu" => {
            let (a, g) = (f("alpha", 1.673_263_2), f("gamma", 1.050_701));
            if x <= 0.0 {
                g * a * x.exp_m1()
            } else {
                g * x
            }
        }
        "ThresholdedRelu" => {
            if x > f("alpha", 1.0) {
                x
            } else {
                0.0
            }
        }
        "Shrink" => {
            let (b, l) = (f("bias", 0.0), f("lambd", 0.5));
            if x < -l {
                x + b
            } else if x > l {
                x - b
            } else {
                0.0
            }
        }
        "HardSigmoid" => (f("alpha", 0.2) * x + f("beta", 0.5)).clamp(0.0, 1.0),
        "HardSwish" => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        "Sigmoid" => sigmoid(x),
        "Swish" => x * sigmoid(f("alpha", 1.0) * x),
        "Softplus" => softplus(x),
        "Softsign" => x / (1.0 + x.abs()),
        "Mish" => x * softplus(x).tanh(),
        "Tanh" => x.tanh(),
        "Exp" => x.exp(),
        "Log" => x.ln(),
        "Sqrt" => x.sqrt(),
        "Reciprocal" => x.recip(),
        "Sign" => {
            if x == 0.0 {
                0.0
            } else {
                x.signum()
            }
        }
        "Floor" => x.floor(),
        "Ceil" => x.ceil(),
        "Round" => x.round_ties_even(),
        "Sin" => x.sin(),
        "Cos" => x.cos(),
        "Tan" => x.tan(),
        "Sinh" => x.sinh(),
        "Cosh" => x.cosh(),
        "Asin" => x.asin(),
        "Acos" => x.acos(),
        "Atan" => x.atan(),
        "Asinh" => x.asinh(),
        "Acosh" => x.acosh(),
        "Atanh" => x.atanh(),
        "Erf" | "Gelu" if x == 0.0 => 0.0,
        "Gelu" if attr_s(node, "approximate").as_deref() == Some("tanh") => {
            let c = (2.0 / std::f32::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
        }
        "Clip" => {
            // Bounds: attributes before opset 11, inputs 1 and 2 after (absent: unbounded).
            let bound = |slot: usize, name: &str, default: f32| -> Option<f32> {
                match attr_f(node, name) {
                    Some(v) => Some(v),
                    None if node.input.get(slot).is_some_and(|s| !s.is_empty()) => operand(slot),
                    None => Some(default),
                }
            };
            let (lo, hi) = (bound(1, "min", f32::MIN)?, bound(2, "max", f32::MAX)?);
            x.max(lo).min(hi)
        }
        _ => return None,
    })
}

/// A one-input, one-output op keeping shape and dtype; channels pass.
const fn unary(op: &'static str, since: i64, attrs: &'static str) -> OpDef {
    OpDef {
        attrs,
        infer: same,
        flow: PASS,
        point: Some(point),
        half: HALF,
        ..OpDef::new(op, since, arity(1, 1), arity(1, 1))
    }
}

/// [`unary`], evaluated by fold-constants.
const fn unary_ev(op: &'static str, since: i64, attrs: &'static str) -> OpDef {
    OpDef {
        eval: true,
        ..unary(op, since, attrs)
    }
}

/// A broadcasting op of `n` inputs (`min..=max`) whose output has input 0's dtype.
const fn binary(op: &'static str, since: i64, attrs: &'static str) -> OpDef {
    OpDef {
        attrs,
        infer: broadcast,
        flow: Flow::Broadcast,
        half: HALF,
        ..OpDef::new(op, since, arity(2, 2), arity(1, 1))
    }
}

/// [`binary`] with a bool output.
const fn compare(op: &'static str, since: i64, attrs: &'static str) -> OpDef {
    OpDef {
        infer: broadcast_bool,
        ..binary(op, since, attrs)
    }
}

/// A variadic broadcasting op (`Sum`, `Max`, ...).
const fn variadic(op: &'static str, since: i64) -> OpDef {
    OpDef {
        inputs: arity(1, VARIADIC),
        eval: true,
        ..binary(op, since, "consumed_inputs<6")
    }
}

/// An op that mixes values along an axis (softmax, normalisation over an axis, cumulative and
/// triangular ops): channels do not flow through it.
const fn mixes(d: OpDef) -> OpDef {
    OpDef {
        flow: Flow::Barrier,
        point: None,
        ..d
    }
}

const fn ev(d: OpDef) -> OpDef {
    OpDef { eval: true, ..d }
}

const OLD: &str = "consumed_inputs<6";
const OLD_BC: &str = "broadcast<7 axis<7 consumed_inputs<6";

pub(super) const OPS: &[OpDef] = &[
    unary_ev("Abs", 1, OLD),
    unary("Acos", 7, ""),
    unary("Acosh", 9, ""),
    unary("Asin", 7, ""),
    unary("Asinh", 9, ""),
    unary("Atan", 7, ""),
    unary("Atanh", 9, ""),
    unary("BitwiseNot", 18, ""),
    unary_ev("Ceil", 1, OLD),
    unary("Celu", 12, "alpha"),
    unary("Cos", 7, ""),
    unary("Cosh", 9, ""),
    unary("Elu", 1, "alpha consumed_inputs<6"),
    unary_ev("Erf", 9, ""),
    unary_ev("Exp", 1, OLD),
    unary_ev("Floor", 1, OLD),
    unary("Gelu", 20, "approximate"),
    unary("HardSigmoid", 1, "alpha beta consumed_inputs<6"),
    unary("HardSwish", 14, ""),
    mixes(unary("Hardmax", 1, "axis")),
    unary("LeakyRelu", 1, "alpha consumed_inputs<6"),
    unary_ev("Log", 1, OLD),
    mixes(unary("LogSoftmax", 1, "axis")),
    mixes(unary("LpNormalization", 1, "axis p")),
    unary("Mish", 18, ""),
    unary("Swish", 24, "alpha"),
    unary_ev("Neg", 1, OLD),
    unary_ev("Reciprocal", 1, OLD),
    unary_ev("Relu", 1, OLD),
    unary("Round", 11, ""),
    unary("Selu", 1, "alpha gamma consumed_inputs<6"),
    unary("Shrink", 9, "bias lambd"),
    unary_ev("Sigmoid", 1, OLD),
    unary_ev("Sign", 9, ""),
    unary("Sin", 7, ""),
    unary("Sinh", 9, ""),
    mixes(unary_ev("Softmax", 1, "axis")),
    unary("Softplus", 1, ""),
    unary("Softsign", 1, ""),
    unary_ev("Sqrt", 1, OLD),
    unary("Tan", 7, ""),
    unary_ev("Tanh", 1, OLD),
    unary("ThresholdedRelu", 10, "alpha"),
    OpDef {
        infer: identity,
        eval: true,
        half: Half::Move,
        ..unary("Identity", 1, "")
    },
    OpDef {
        infer: same_bool,
        eval: true,
        ..unary("Not", 1, "")
    },
    OpDef {
        infer: same_bool,
        ..unary("IsNaN", 9, "")
    },
    OpDef {
        infer: same_bool,
        ..unary("IsInf", 10, "detect_negative detect_positive")
    },
    OpDef {
        infer: cast,
        eval: true,
        noop: Some(cast_noop),
        half: Half::AnyInput,
        ..unary("Cast", 1, "to saturate>=19 round_mode>=25")
    },
    OpDef {
        inputs: arity(2, 2),
        infer: cast_like,
        half: Half::Float32("its output type follows its second input"),
        ..unary("CastLike", 15, "saturate>=19")
    },
    OpDef {
        inputs: arity(1, 3),
        eval: true,
        ..unary("Clip", 1, "min<11 max<11 consumed_inputs<6")
    },
    OpDef {
        inputs: arity(2, 2),
        flow: Flow::Barrier,
        half: Half::Float32("accumulates along an axis, beyond float16's range and precision"),
        ..unary("CumSum", 11, "exclusive reverse")
    },
    OpDef {
        inputs: arity(2, 2),
        flow: Flow::Barrier,
        half: Half::Float32("accumulates along an axis, beyond float16's range and precision"),
        ..unary("CumProd", 26, "exclusive reverse")
    },
    OpDef {
        inputs: arity(1, 2),
        flow: Flow::Barrier,
        half: Half::Move,
        ..unary("Trilu", 14, "upper")
    },
    OpDef {
        inputs: arity(2, 2),
        flow: Flow::Barrier,
        half: Half::Move,
        ..unary("ReverseSequence", 10, "batch_axis time_axis")
    },
    ev(binary("Add", 1, OLD_BC)),
    ev(binary("Sub", 1, OLD_BC)),
    ev(binary("Mul", 1, OLD_BC)),
    ev(binary("Div", 1, OLD_BC)),
    ev(binary("Pow", 1, "broadcast<7 axis<7")),
    binary("Mod", 10, "fmod"),
    binary("BitShift", 11, "direction"),
    binary("BitwiseAnd", 18, ""),
    binary("BitwiseOr", 18, ""),
    binary("BitwiseXor", 18, ""),
    OpDef {
        flow: Flow::Pass { per_channel: &[1] },
        point: Some(point),
        ..binary("PRelu", 1, "consumed_inputs<6")
    },
    ev(compare("And", 1, "broadcast<7 axis<7")),
    ev(compare("Or", 1, "broadcast<7 axis<7")),
    ev(compare("Xor", 1, "broadcast<7 axis<7")),
    ev(compare("Equal", 1, "broadcast<7 axis<7")),
    ev(compare("Greater", 1, "broadcast<7 axis<7")),
    ev(compare("Less", 1, "broadcast<7 axis<7")),
    ev(compare("GreaterOrEqual", 12, "")),
    ev(compare("LessOrEqual", 12, "")),
    variadic("Sum", 1),
    variadic("Max", 1),
    variadic("Min", 1),
    OpDef {
        eval: false,
        ..variadic("Mean", 1)
    },
    OpDef {
        inputs: arity(3, 3),
        infer: where_,
        eval: true,
        ..binary("Where", 9, "")
    },
    // Random ops: shapes known, never folded.
    OpDef {
        inputs: arity(1, 1),
        infer: bernoulli,
        purity: Purity::Random,
        half: Half::Float32("a random op: its `dtype` attribute fixes its output type"),
        ..unary("Bernoulli", 15, "dtype seed")
    },
];

fn bernoulli(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.attr_i("dtype").map(|d| d as i32).or(cx.x(0).dtype);
    vec![fact(dtype, cx.x(0).shape.clone())]
}
