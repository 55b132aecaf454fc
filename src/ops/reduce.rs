//! Reductions: `Reduce*`, `ArgMax`/`ArgMin`, `TopK`.

use super::infer::{fact, norm_axis, InferCx};
use super::{arity, Half, OpDef, HALF};
use crate::ir::facts::{Dim, Fact};
use crate::onnx::proto::tensor_proto::DataType;

/// `x` with `axes` reduced (kept as 1 with `keepdims`); `None` on a bad axis.
fn reduced(x: &[Dim], axes: &[usize], keep: bool) -> Vec<Dim> {
    x.iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keep) {
            (false, _) => Some(*d),
            (true, true) => Some(Dim::K(1)),
            (true, false) => None,
        })
        .collect()
}

fn reduce(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    let (Some(x), Ok(axes)) = (&i0.shape, cx.attr_or_input("axes", 1)) else {
        return vec![out];
    };
    let keep = cx.attr_i("keepdims").unwrap_or(1) != 0;
    let axes: Vec<usize> = match axes.filter(|a| !a.is_empty()) {
        Some(a) => {
            let mut v = Vec::new();
            for ax in a {
                match norm_axis(ax, x.len()) {
                    Some(ax) => v.push(ax),
                    None => return vec![out],
                }
            }
            v
        }
        None if cx.attr_i("noop_with_empty_axes").unwrap_or(0) != 0 => {
            out.shape = Some(x.clone());
            return vec![out];
        }
        None => (0..x.len()).collect(),
    };
    out.shape = Some(reduced(x, &axes, keep));
    vec![out]
}

fn arg(cx: &mut InferCx) -> Vec<Fact> {
    let mut out = fact(Some(DataType::Int64 as i32), None);
    if let Some(x) = cx.x(0).shape.clone() {
        let keep = cx.attr_i("keepdims").unwrap_or(1) != 0;
        if let Some(a) = norm_axis(cx.attr_i("axis").unwrap_or(0), x.len()) {
            out.shape = Some(reduced(&x, &[a], keep));
        }
    }
    vec![out]
}

fn top_k(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let k = cx
        .attr_i("k")
        .or_else(|| cx.val(1).filter(|v| v.len() == 1).map(|v| v[0]));
    let shape = match (&i0.shape, k) {
        (Some(s), Some(k)) => norm_axis(cx.attr_i("axis").unwrap_or(-1), s.len()).map(|a| {
            let mut s = s.clone();
            s[a] = Dim::K(k);
            s
        }),
        _ => None,
    };
    vec![
        fact(i0.dtype, shape.clone()),
        fact(Some(DataType::Int64 as i32), shape),
    ]
}

/// A `Reduce*` op; `axes` moved from attribute to input at `axes_input` (13 for ReduceSum, 18
/// for the others).
const fn reduce_op(op: &'static str, attrs: &'static str, eval: bool) -> OpDef {
    OpDef {
        attrs,
        infer: reduce,
        eval,
        half: match op.as_bytes() {
            b"ReduceMean" | b"ReduceMax" | b"ReduceMin" => HALF,
            _ => Half::Float32("sums or multiplies beyond float16's range"),
        },
        ..OpDef::new(op, 1, arity(1, 2), arity(1, 1))
    }
}

const R18: &str = "axes<18@1 keepdims noop_with_empty_axes>=18";

pub(super) const OPS: &[OpDef] = &[
    reduce_op(
        "ReduceSum",
        "axes<13@1 keepdims noop_with_empty_axes>=13",
        true,
    ),
    reduce_op("ReduceMean", R18, true),
    reduce_op("ReduceMax", R18, true),
    reduce_op("ReduceMin", R18, true),
    reduce_op("ReduceProd", R18, true),
    reduce_op("ReduceL1", R18, false),
    reduce_op("ReduceL2", R18, false),
    reduce_op("ReduceLogSum", R18, false),
    reduce_op("ReduceLogSumExp", R18, false),
    reduce_op("ReduceSumSquare", R18, false),
    OpDef {
        attrs: "axis keepdims select_last_index>=12",
        infer: arg,
        eval: true,
        half: HALF,
        ..OpDef::new("ArgMax", 1, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: "axis keepdims select_last_index>=12",
        infer: arg,
        eval: true,
        half: HALF,
        ..OpDef::new("ArgMin", 1, arity(1, 1), arity(1, 1))
    },
    OpDef {
        attrs: "axis k<10 largest>=11 sorted>=11",
        infer: top_k,
        ..OpDef::new("TopK", 1, arity(1, 2), arity(2, 2))
    },
];
