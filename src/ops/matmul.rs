//! Matrix products: `MatMul`, `Gemm`, `Einsum`, `Attention`.

use super::infer::{attr_f, attr_i, fact, known_u64, output_times, InferCx, MacCount, MacCx};
use super::{arity, Flow, Half, OpDef, WeightOperand, WeightRole, HALF, VARIADIC};
use crate::ir::facts::{Dim, Fact};
use crate::onnx::proto::NodeProto;

/// Output shape of a numpy-style matrix product of `a` and `b` (1-D operands promoted and the
/// added dim removed again).
pub(super) fn matmul_shape(cx: &mut InferCx, a: usize, b: usize) -> Option<Vec<Dim>> {
    let a = cx.x(a).shape.clone()?;
    let b = cx.x(b).shape.clone()?;
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2 = if a.len() == 1 {
        vec![Dim::K(1), a[0]]
    } else {
        a.clone()
    };
    let b2 = if b.len() == 1 {
        vec![b[0], Dim::K(1)]
    } else {
        b.clone()
    };
    let mut out = cx.broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(a2[a2.len() - 2]);
    }
    if b.len() > 1 {
        out.push(b2[b2.len() - 1]);
    }
    Some(out)
}

fn matmul(cx: &mut InferCx) -> Vec<Fact> {
    let s = matmul_shape(cx, 0, 1);
    vec![fact(cx.x(0).dtype, s)]
}

/// MatMul MACs: output elements × the reduced length.
pub(super) fn matmul_macs(cx: &MacCx) -> Option<MacCount> {
    let a = cx.x(0).shape.as_ref()?;
    let b = cx.x(1).shape.as_ref()?;
    let kb = if b.len() == 1 {
        b.first()?
    } else {
        b.get(b.len().checked_sub(2)?)?
    };
    let k = known_u64(a.last()?).or_else(|| known_u64(kb))?;
    output_times(cx.outs, k)
}

fn matmul_weights(_: &NodeProto) -> Vec<WeightOperand> {
    vec![
        WeightOperand {
            input: 1,
            role: WeightRole::Kernel,
            out_axis: Some(-1),
            in_axis: Some(-2),
            groups: 1,
        },
        WeightOperand {
            input: 0,
            role: WeightRole::LeftKernel,
            out_axis: Some(-2),
            in_axis: Some(-1),
            groups: 1,
        },
    ]
}

fn gemm(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(0).dtype;
    let (Some(a), Some(b)) = (cx.x(0).shape.clone(), cx.x(1).shape.clone()) else {
        return vec![fact(dtype, None)];
    };
    if a.len() != 2 || b.len() != 2 {
        return vec![fact(dtype, None)];
    }
    let m = if cx.attr_i("transA").unwrap_or(0) != 0 {
        a[1]
    } else {
        a[0]
    };
    let n = if cx.attr_i("transB").unwrap_or(0) != 0 {
        b[0]
    } else {
        b[1]
    };
    vec![fact(dtype, Some(vec![m, n]))]
}

fn gemm_macs(cx: &MacCx) -> Option<MacCount> {
    let a = cx.x(0).shape.as_ref()?;
    let b = cx.x(1).shape.as_ref()?;
    if a.len() != 2 || b.len() != 2 {
        return None;
    }
    let ka = if cx.attr_i("transA").unwrap_or(0) != 0 {
        &a[0]
    } else {
        &a[1]
    };
    let kb = if cx.attr_i("transB").unwrap_or(0) != 0 {
        &b[1]
    } else {
        &b[0]
    };
    output_times(cx.outs, known_u64(ka).or_else(|| known_u64(kb))?)
}

fn gemm_weights(node: &NodeProto) -> Vec<WeightOperand> {
    let tb = attr_i(node, "transB").unwrap_or(0) != 0;
    let ta = attr_i(node, "transA").unwrap_or(0) != 0;
    let (bo, bi) = if tb { (0, 1) } else { (1, 0) };
    let (ao, ai) = if ta { (1, 0) } else { (0, 1) };
    vec![
        WeightOperand {
            input: 1,
            role: WeightRole::Kernel,
            out_axis: Some(bo),
            in_axis: Some(bi),
            groups: 1,
        },
        WeightOperand {
            input: 2,
            role: WeightRole::Bias,
            out_axis: Some(-1),
            in_axis: None,
            groups: 1,
        },
        WeightOperand {
            input: 0,
            role: WeightRole::LeftKernel,
            out_axis: Some(ao),
            in_axis: Some(ai),
            groups: 1,
        },
    ]
}

/// `Einsum` without ellipsis: each letter's size from the operands, the output's letters from the
/// right-hand side (or, implicitly, the letters used once, in alphabetical order).
fn einsum(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(0).dtype;
    vec![fact(dtype, einsum_shape(cx))]
}

fn einsum_shape(cx: &mut InferCx) -> Option<Vec<Dim>> {
    let eq: String = cx
        .attr_s("equation")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if eq.contains("...") {
        return None;
    }
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != cx.ins.len() {
        return None;
    }
    let mut size: Vec<(char, Dim)> = Vec::new();
    let mut count: Vec<(char, usize)> = Vec::new();
    for (i, t) in terms.iter().enumerate() {
        let s = cx.x(i).shape.clone()?;
        if s.len() != t.chars().count() {
            return None;
        }
        for (c, d) in t.chars().zip(s) {
            match size.iter_mut().find(|(x, _)| *x == c) {
                Some((_, known)) if known.known().is_none() || *known == Dim::K(1) => *known = d,
                Some(_) => {}
                None => size.push((c, d)),
            }
            match count.iter_mut().find(|(x, _)| *x == c) {
                Some((_, n)) => *n += 1,
                None => count.push((c, 1)),
            }
        }
    }
    let out: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => {
            let mut once: Vec<char> = count
                .iter()
                .filter(|(_, n)| *n == 1)
                .map(|(c, _)| *c)
                .collect();
            once.sort();
            once
        }
    };
    out.iter()
        .map(|c| size.iter().find(|(x, _)| x == c).map(|(_, d)| *d))
        .collect()
}

/// `Attention` (opset 23): Q, K, V as `[B, heads, seq, size]`, or `[B, seq, heads·size]` with
/// the head counts in `q_num_heads` / `kv_num_heads`; past keys and values prepend to the
/// sequence. Outputs Y, present key, present value, and the QK product.
fn attention(cx: &mut InferCx) -> Vec<Fact> {
    let (qt, kt) = (cx.x(0).dtype, cx.x(1).dtype);
    let (Some(q), Some(k), Some(v)) = (
        cx.x(0).shape.clone(),
        cx.x(1).shape.clone(),
        cx.x(2).shape.clone(),
    ) else {
        return vec![fact(qt, None)];
    };
    let heads = |name: &str| cx.attr_i(name).map(Dim::K);
    let per_head = |d: Dim, h: Option<Dim>| match (d, h) {
        (Dim::K(d), Some(Dim::K(h))) if h > 0 && d % h == 0 => Some(Dim::K(d / h)),
        _ => None,
    };
    // (batch, q heads, q seq, kv heads, kv seq, head size, v head size)
    let dims = match (q.len(), k.len(), v.len()) {
        (4, 4, 4) => Some((
            q[0],
            Some(q[1]),
            q[2],
            Some(k[1]),
            k[2],
            Some(k[3]),
            Some(v[3]),
        )),
        (3, 3, 3) => {
            let (qh, kvh) = (heads("q_num_heads"), heads("kv_num_heads"));
            Some((
                q[0],
                qh,
                q[1],
                kvh,
                k[1],
                per_head(k[2], kvh),
                per_head(v[2], kvh),
            ))
        }
        _ => None,
    };
    let Some((b, qh, qs, kvh, kvs, hs, vhs)) = dims else {
        return vec![fact(qt, None)];
    };
    let total = if cx.has(4) {
        match (cx.x(4).shape.as_ref().and_then(|p| p.get(2).copied()), kvs) {
            (Some(Dim::K(p)), Dim::K(s)) => p.checked_add(s).map(Dim::K),
            _ => None,
        }
    } else {
        Some(kvs)
    };
    let y = match (q.len(), qh, vhs) {
        (4, Some(qh), Some(vhs)) => Some(vec![b, qh, qs, vhs]),
        (3, Some(Dim::K(h)), Some(Dim::K(v))) => h.checked_mul(v).map(|n| vec![b, qs, Dim::K(n)]),
        _ => None,
    };
    let present = |size: Option<Dim>| Some(vec![b, kvh?, total?, size?]);
    vec![
        fact(qt, y),
        fact(kt, present(hs)),
        fact(cx.x(2).dtype, present(vhs)),
        fact(qt, qh.zip(total).map(|(qh, t)| vec![b, qh, qs, t])),
    ]
}

/// Gemm runs in float16 in tract 0.23 only as a plain product: its expansion multiplies by
/// `alpha` and `beta` as float32 scalars, which makes the output float32.
fn gemm_half(node: &NodeProto) -> Half {
    let alpha = attr_f(node, "alpha").unwrap_or(1.0);
    let beta = attr_f(node, "beta").unwrap_or(1.0);
    let has_c = node.input.get(2).is_some_and(|c| !c.is_empty());
    if alpha != 1.0 || (has_c && beta != 0.0) {
        Half::Float32("tract 0.23 scales and adds Gemm's bias in float32 (alpha, beta)")
    } else {
        HALF
    }
}

pub(super) const OPS: &[OpDef] = &[
    OpDef {
        infer: matmul,
        macs: Some(matmul_macs),
        weights: Some(matmul_weights),
        flow: Flow::Layer,
        eval: true,
        half: HALF,
        ..OpDef::new("MatMul", 1, arity(2, 2), arity(1, 1))
    },
    OpDef {
        attrs: "alpha beta transA transB broadcast<7",
        infer: gemm,
        macs: Some(gemm_macs),
        weights: Some(gemm_weights),
        flow: Flow::Layer,
        eval: true,
        half: Half::PerNode(gemm_half),
        ..OpDef::new("Gemm", 1, arity(2, 3), arity(1, 1))
    },
    OpDef {
        attrs: "is_causal kv_num_heads q_num_heads qk_matmul_output_mode scale softcap \
                softmax_precision",
        infer: attention,
        ..OpDef::new("Attention", 23, arity(3, 7), arity(1, 4))
    },
    OpDef {
        attrs: "equation",
        infer: einsum,
        ..OpDef::new("Einsum", 12, arity(1, VARIADIC), arity(1, 1))
    },
];
