//! Convolutions and pooling: `Conv`, `ConvTranspose`, `MaxPool`, `AveragePool`, `LpPool` and the
//! global pools.

use super::infer::{
    attr_i, attr_ints, fact, known_u64, output_times, spatial_out, InferCx, MacCount, MacCx,
};
use super::{arity, Flow, OpDef, WeightOperand, WeightRole, HALF};
use crate::ir::facts::{Dim, Fact};
use crate::onnx::proto::{tensor_proto::DataType, NodeProto};

/// Output 0 of a Conv-like op (Conv, ConvInteger, QLinearConv) reading `x` and weight `w`.
pub(super) fn conv_shape(cx: &mut InferCx, x: usize, w: usize) -> Option<Vec<Dim>> {
    let xs = cx.x(x).shape.clone()?;
    let ws = cx.x(w).shape.clone()?;
    if xs.len() < 3 || ws.len() != xs.len() {
        return None;
    }
    let kernel: Vec<i64> = match cx.attr_ints("kernel_shape") {
        Some(k) => k,
        None => ws[2..].iter().map(|d| d.known()).collect::<Option<_>>()?,
    };
    let mut out = vec![xs[0], ws[0]];
    out.extend(spatial_out(cx, &xs, &kernel, false)?);
    Some(out)
}

fn conv(cx: &mut InferCx) -> Vec<Fact> {
    let s = conv_shape(cx, 0, 1);
    vec![fact(cx.x(0).dtype, s)]
}

/// Conv MACs: output elements × `C_in / group × kernel`, read off the weight.
pub(super) fn conv_macs(cx: &MacCx) -> Option<MacCount> {
    let w = cx.x(1).shape.as_ref()?;
    if w.len() < 3 {
        return None;
    }
    let reduce = w[1..]
        .iter()
        .try_fold(1u64, |acc, d| Some(acc.saturating_mul(known_u64(d)?)))?;
    output_times(cx.outs, reduce)
}

fn conv_weights(node: &NodeProto) -> Vec<WeightOperand> {
    let groups = attr_i(node, "group").unwrap_or(1);
    vec![
        WeightOperand {
            input: 1,
            role: WeightRole::Kernel,
            out_axis: Some(0),
            in_axis: Some(1),
            groups,
        },
        WeightOperand {
            input: 2,
            role: WeightRole::Bias,
            out_axis: Some(0),
            in_axis: None,
            groups,
        },
    ]
}

fn deform_conv(cx: &mut InferCx) -> Vec<Fact> {
    let s = conv_shape(cx, 0, 1);
    vec![fact(cx.x(0).dtype, s)]
}

/// Conv's, with the bias at input 3 (input 2 is the offsets).
fn deform_conv_weights(node: &NodeProto) -> Vec<WeightOperand> {
    let mut w = conv_weights(node);
    w[1].input = 3;
    w
}

fn conv_transpose(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(0).dtype;
    vec![fact(dtype, conv_transpose_shape(cx))]
}

fn conv_transpose_shape(cx: &mut InferCx) -> Option<Vec<Dim>> {
    let xs = cx.x(0).shape.clone()?;
    let ws = cx.x(1).shape.clone()?;
    if xs.len() < 3 || ws.len() != xs.len() {
        return None;
    }
    let sp = xs.len() - 2;
    let group = cx.attr_i("group").unwrap_or(1);
    let c = match ws[1] {
        Dim::K(v) => Dim::K(v.checked_mul(group)?),
        d if group == 1 => d,
        _ => cx.fresh(),
    };
    let mut out = vec![xs[0], c];
    if let Some(os) = cx.attr_ints("output_shape") {
        // Either the spatial dims or the full shape.
        let os = if os.len() == sp + 2 {
            os[2..].to_vec()
        } else {
            os
        };
        if os.len() != sp {
            return None;
        }
        out.extend(os.into_iter().map(Dim::K));
        return Some(out);
    }
    let kernel: Vec<i64> = match cx.attr_ints("kernel_shape") {
        Some(k) => k,
        None => ws[2..].iter().map(|d| d.known()).collect::<Option<_>>()?,
    };
    let strides = cx.attr_ints_or("strides", sp, 1)?;
    let dil = cx.attr_ints_or("dilations", sp, 1)?;
    let pads = cx.attr_ints_or("pads", 2 * sp, 0)?;
    let opad = cx.attr_ints_or("output_padding", sp, 0)?;
    let auto = cx.attr_s("auto_pad").unwrap_or_default();
    if kernel.len() != sp {
        return None;
    }
    for i in 0..sp {
        out.push(match xs[2 + i] {
            Dim::K(h) => {
                let v = if auto.starts_with("SAME") {
                    h.checked_mul(strides[i])?
                } else {
                    let ek = dil[i]
                        .checked_mul(kernel[i].checked_sub(1)?)?
                        .checked_add(1)?;
                    strides[i]
                        .checked_mul(h.checked_sub(1)?)?
                        .checked_add(opad[i])?
                        .checked_add(ek)?
                        .checked_sub(pads[i])?
                        .checked_sub(pads[sp + i])?
                };
                if v < 0 {
                    return None;
                }
                Dim::K(v)
            }
            Dim::S(_) => cx.fresh(),
        });
    }
    Some(out)
}

fn conv_transpose_weights(node: &NodeProto) -> Vec<WeightOperand> {
    let groups = attr_i(node, "group").unwrap_or(1);
    vec![
        WeightOperand {
            input: 1,
            role: WeightRole::Kernel,
            out_axis: Some(1),
            in_axis: Some(0),
            groups,
        },
        WeightOperand {
            input: 2,
            role: WeightRole::Bias,
            out_axis: Some(0),
            in_axis: None,
            groups,
        },
    ]
}

fn pool(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(0).dtype;
    let s = pool_shape(cx);
    let mut outs = vec![fact(dtype, s.clone())];
    if cx.n_out() > 1 {
        outs.push(fact(Some(DataType::Int64 as i32), s));
    }
    outs
}

fn pool_shape(cx: &mut InferCx) -> Option<Vec<Dim>> {
    let x = cx.x(0).shape.clone()?;
    let k = cx.attr_ints("kernel_shape")?;
    if x.len() < 3 {
        return None;
    }
    let mut out = vec![x[0], x[1]];
    let ceil = cx.attr_i("ceil_mode").unwrap_or(0) != 0;
    out.extend(spatial_out(cx, &x, &k, ceil)?);
    Some(out)
}

fn max_unpool(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(0).dtype;
    if cx.has(2) {
        let s = cx.val(2).map(|s| s.into_iter().map(Dim::K).collect());
        return vec![fact(dtype, s)];
    }
    vec![fact(dtype, max_unpool_shape(cx))]
}

/// `(in − 1)·stride − pads + kernel` per spatial dim.
fn max_unpool_shape(cx: &mut InferCx) -> Option<Vec<Dim>> {
    let x = cx.x(0).shape.clone()?;
    let k = cx.attr_ints("kernel_shape")?;
    let sp = x.len().checked_sub(2)?;
    if k.len() != sp {
        return None;
    }
    let strides = cx.attr_ints("strides").unwrap_or(vec![1; sp]);
    let pads = cx.attr_ints("pads").unwrap_or(vec![0; 2 * sp]);
    if strides.len() != sp || pads.len() != 2 * sp {
        return None;
    }
    let mut out = vec![x[0], x[1]];
    for i in 0..sp {
        out.push(match x[2 + i] {
            Dim::K(h) => Dim::K(
                h.checked_sub(1)?
                    .checked_mul(strides[i])?
                    .checked_sub(pads[i])?
                    .checked_sub(pads[sp + i])?
                    .checked_add(k[i])?,
            ),
            Dim::S(_) => cx.fresh(),
        });
    }
    Some(out)
}

fn global_pool(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0);
    let s = i0.shape.as_ref().filter(|s| s.len() >= 2).map(|s| {
        let mut out = s[..2].to_vec();
        out.extend(std::iter::repeat_n(Dim::K(1), s.len() - 2));
        out
    });
    vec![fact(i0.dtype, s)]
}

const PASS: Flow = Flow::Pass { per_channel: &[] };

/// A constant channel through pooling stays that constant, except where average or Lp pooling
/// counts padding (or, for Lp, the window size): there only 0 stays 0.
fn pool_point(node: &NodeProto, x: f32, _: &[Option<f32>]) -> Option<f32> {
    let padded = attr_ints(node, "pads").is_some_and(|p| p.iter().any(|v| *v != 0))
        || super::infer::attr_s(node, "auto_pad").is_some_and(|a| a.starts_with("SAME"));
    let exact = match node.op_type.as_deref()? {
        "MaxPool" | "GlobalMaxPool" | "GlobalAveragePool" => true,
        "AveragePool" => !padded || attr_i(node, "count_include_pad").unwrap_or(0) == 0,
        _ => false,
    };
    (exact || x == 0.0).then_some(x)
}

pub(super) const OPS: &[OpDef] = &[
    OpDef {
        attrs: "auto_pad dilations group kernel_shape pads strides",
        infer: conv,
        macs: Some(conv_macs),
        weights: Some(conv_weights),
        flow: Flow::Layer,
        half: HALF,
        ..OpDef::new("Conv", 1, arity(2, 3), arity(1, 1))
    },
    OpDef {
        attrs: "dilations group kernel_shape offset_group pads strides",
        infer: deform_conv,
        weights: Some(deform_conv_weights),
        ..OpDef::new("DeformConv", 19, arity(3, 5), arity(1, 1))
    },
    OpDef {
        attrs: "auto_pad dilations group kernel_shape output_padding output_shape pads strides",
        infer: conv_transpose,
        weights: Some(conv_transpose_weights),
        flow: Flow::Layer,
        half: HALF,
        ..OpDef::new("ConvTranspose", 1, arity(2, 3), arity(1, 1))
    },
    OpDef {
        attrs: "auto_pad kernel_shape pads strides ceil_mode>=10 dilations>=10 storage_order>=8",
        infer: pool,
        flow: PASS,
        point: Some(pool_point),
        half: HALF,
        ..OpDef::new("MaxPool", 1, arity(1, 1), arity(1, 2))
    },
    OpDef {
        attrs: "auto_pad kernel_shape pads strides ceil_mode>=10 count_include_pad>=7 \
                dilations>=19",
        infer: pool,
        flow: PASS,
        point: Some(pool_point),
        half: HALF,
        ..OpDef::new("AveragePool", 1, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: "auto_pad kernel_shape pads strides p ceil_mode>=18 dilations>=18",
        infer: pool,
        flow: PASS,
        point: Some(pool_point),
        ..OpDef::new("LpPool", 1, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: "kernel_shape pads strides",
        infer: max_unpool,
        flow: PASS,
        ..OpDef::new("MaxUnpool", 9, arity(2, 3), arity(1, 1))
    },
    OpDef {
        infer: global_pool,
        flow: PASS,
        point: Some(pool_point),
        half: HALF,
        ..OpDef::new("GlobalAveragePool", 1, arity(1, 1), arity(1, 1))
    },
    OpDef {
        infer: global_pool,
        flow: PASS,
        point: Some(pool_point),
        half: HALF,
        ..OpDef::new("GlobalMaxPool", 1, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: "p",
        infer: global_pool,
        flow: PASS,
        point: Some(pool_point),
        ..OpDef::new("GlobalLpPool", 2, arity(1, 1), arity(1, 1))
    },
];
