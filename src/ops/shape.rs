//! Shape ops: `Shape`, `Reshape`, `Flatten`, `Transpose`, `Squeeze`/`Unsqueeze`, `Concat`,
//! `Split`, `Slice`, `Gather`, `Expand`, `Tile`, `Pad`, constants and friends. Small integer
//! values (shapes, indices) are carried through them.

use super::infer::{
    self, attr_i, attr_ints, const_fact, fact, norm_axis, product, slice_bounds, slice_len,
    InferCx, NoopCx,
};
use super::{
    arity, elementwise::same, Flow, Half, OpDef, Purity, WeightOperand, WeightRole, VARIADIC,
};
use crate::ir::facts::{Dim, Fact, MAX_VALUE_LEN};
use crate::onnx::proto::{tensor_proto::DataType, NodeProto};

const I64: i32 = DataType::Int64 as i32;

fn input_fact(cx: &NoopCx, i: usize) -> Option<Fact> {
    cx.ins.get(i).cloned().flatten()
}

fn constant(cx: &mut InferCx) -> Vec<Fact> {
    for a in &cx.node.attribute {
        let f = match a.name.as_deref() {
            Some("value") => match &a.t {
                Some(t) => const_fact(t),
                None => continue,
            },
            Some("sparse_value") => match &a.sparse_tensor {
                Some(s) => fact(
                    s.values.as_ref().and_then(|v| v.data_type),
                    Some(s.dims.iter().map(|d| Dim::K(*d)).collect()),
                ),
                None => continue,
            },
            Some("value_int") => Fact {
                value: Some(vec![Dim::K(a.i.unwrap_or(0))]),
                ..fact(Some(I64), Some(vec![]))
            },
            Some("value_ints") => Fact {
                value: (a.ints.len() <= MAX_VALUE_LEN)
                    .then(|| a.ints.iter().map(|v| Dim::K(*v)).collect()),
                ..fact(Some(I64), Some(vec![Dim::K(a.ints.len() as i64)]))
            },
            Some("value_float") => fact(Some(DataType::Float as i32), Some(vec![])),
            Some("value_floats") => fact(
                Some(DataType::Float as i32),
                Some(vec![Dim::K(a.floats.len() as i64)]),
            ),
            Some("value_string") => fact(Some(DataType::String as i32), Some(vec![])),
            Some("value_strings") => fact(
                Some(DataType::String as i32),
                Some(vec![Dim::K(a.strings.len() as i64)]),
            ),
            _ => continue,
        };
        return vec![f];
    }
    vec![]
}

fn shape(cx: &mut InferCx) -> Vec<Fact> {
    let Some(s) = &cx.x(0).shape else {
        return vec![fact(Some(I64), None)];
    };
    let r = s.len() as i64;
    let norm = |x: i64| (if x < 0 { x.saturating_add(r) } else { x }).clamp(0, r) as usize;
    let start = norm(cx.attr_i("start").unwrap_or(0));
    let end = norm(cx.attr_i("end").unwrap_or(r));
    let v: Vec<Dim> = if start < end {
        s[start..end].to_vec()
    } else {
        vec![]
    };
    vec![Fact {
        shape: Some(vec![Dim::K(v.len() as i64)]),
        value: Some(v),
        ..fact(Some(I64), None)
    }]
}

fn size(cx: &mut InferCx) -> Vec<Fact> {
    let value = cx
        .x(0)
        .static_shape()
        .and_then(|s| s.iter().try_fold(1i64, |a, d| a.checked_mul(*d)))
        .map(|n| vec![Dim::K(n)]);
    vec![Fact {
        value,
        ..fact(Some(I64), Some(vec![]))
    }]
}

fn gather(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let idx = cx.x(1).clone();
    let mut out = fact(i0.dtype, None);
    let (Some(ds), Some(is)) = (&i0.shape, &idx.shape) else {
        return vec![out];
    };
    let Some(a) = norm_axis(cx.attr_i("axis").unwrap_or(0), ds.len()) else {
        return vec![out];
    };
    let mut s = ds[..a].to_vec();
    s.extend(is.iter().copied());
    s.extend(ds[a + 1..].iter().copied());
    if let (Some(dv), Some(iv), 1) = (&i0.value, idx.known_value(), ds.len()) {
        let n = dv.len() as i64;
        out.value = iv
            .iter()
            .map(|&i| {
                let i = if i < 0 { i + n } else { i };
                (0..n).contains(&i).then(|| dv[i as usize])
            })
            .collect();
    }
    out.shape = Some(s);
    vec![out]
}

/// Gather's data is a table read by index along `axis` (an embedding when `axis = 0`): each
/// index picks one slice along it.
fn gather_weights(node: &NodeProto) -> Vec<WeightOperand> {
    vec![WeightOperand {
        input: 0,
        role: WeightRole::Table,
        out_axis: Some(attr_i(node, "axis").unwrap_or(0)),
        in_axis: None,
        groups: 1,
    }]
}

fn gather_elements(cx: &mut InferCx) -> Vec<Fact> {
    vec![fact(cx.x(0).dtype, cx.x(1).shape.clone())]
}

fn squeeze(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    let (Some(s), Ok(axes)) = (&i0.shape, cx.attr_or_input("axes", 1)) else {
        return vec![out];
    };
    out.shape = match axes.filter(|a| !a.is_empty()) {
        Some(axes) => {
            let mut drop = Vec::new();
            for a in axes {
                match norm_axis(a, s.len()) {
                    Some(a) => drop.push(a),
                    None => return vec![out],
                }
            }
            Some(
                s.iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, d)| *d)
                    .collect(),
            )
        }
        None if s.iter().all(|d| d.known().is_some()) => {
            Some(s.iter().copied().filter(|d| *d != Dim::K(1)).collect())
        }
        None => None,
    };
    if out.shape.as_ref().is_some_and(|s| s.len() <= 1) {
        out.value = i0.value.clone();
    }
    vec![out]
}

fn unsqueeze(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    let (Some(s), Ok(Some(axes))) = (&i0.shape, cx.attr_or_input("axes", 1)) else {
        return vec![out];
    };
    let r = s.len() + axes.len();
    let mut at = Vec::new();
    for a in &axes {
        match norm_axis(*a, r) {
            Some(a) if !at.contains(&a) => at.push(a),
            _ => return vec![out],
        }
    }
    let mut src = s.iter();
    let mut shape = Vec::with_capacity(r);
    for i in 0..r {
        if at.contains(&i) {
            shape.push(Dim::K(1));
        } else if let Some(d) = src.next() {
            shape.push(*d);
        }
    }
    if shape.len() <= 1 {
        out.value = i0.value.clone();
    }
    out.shape = Some(shape);
    vec![out]
}

fn concat(cx: &mut InferCx) -> Vec<Fact> {
    let ins: Vec<Fact> = (0..cx.ins.len())
        .filter(|i| cx.has(*i))
        .map(|i| cx.x(i).clone())
        .collect();
    let mut out = fact(ins.first().and_then(|f| f.dtype), None);
    let shapes: Option<Vec<Vec<Dim>>> = ins.iter().map(|f| f.shape.clone()).collect();
    let Some(shapes) = shapes.filter(|s| !s.is_empty()) else {
        return vec![out];
    };
    let r = shapes[0].len();
    let Some(a) = norm_axis(cx.attr_i("axis").unwrap_or(0), r) else {
        return vec![out];
    };
    if shapes.iter().any(|s| s.len() != r) {
        return vec![out];
    }
    let mut shape = shapes[0].clone();
    let sum = shapes
        .iter()
        .try_fold(0i64, |acc, s| acc.checked_add(s[a].known()?));
    shape[a] = match sum {
        Some(v) => Dim::K(v),
        None => cx.fresh(),
    };
    for (d, dim) in shape.iter_mut().enumerate() {
        if d != a && dim.known().is_none() {
            if let Some(k) = shapes.iter().find(|s| s[d].known().is_some()) {
                *dim = k[d];
            }
        }
    }
    if r == 1 {
        let vals: Option<Vec<Vec<Dim>>> = ins.iter().map(|f| f.value.clone()).collect();
        out.value = vals
            .map(|v| v.concat())
            .filter(|v| v.len() <= MAX_VALUE_LEN);
    }
    out.shape = Some(shape);
    vec![out]
}

fn concat_noop(cx: &NoopCx) -> Result<(), String> {
    if cx.node.input.len() == 1 && cx.ins.first().is_some_and(Option::is_some) {
        Ok(())
    } else {
        Err("several inputs".into())
    }
}

fn split(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let n = cx.n_out();
    let mut outs = vec![fact(i0.dtype, None); n];
    let Some(s) = &i0.shape else { return outs };
    let Some(a) = norm_axis(cx.attr_i("axis").unwrap_or(0), s.len()) else {
        return outs;
    };
    let Ok(sizes) = cx.attr_or_input("split", 1) else {
        return outs;
    };
    let sizes: Vec<i64> = match sizes {
        Some(v) if v.len() == n => v,
        Some(_) => return outs,
        None => {
            let Some(len) = s[a].known() else { return outs };
            let parts = cx.attr_i("num_outputs").unwrap_or(n as i64).max(1);
            let Some(chunk) = len.checked_add(parts - 1).map(|v| v / parts) else {
                return outs;
            };
            (0..n as i64)
                .map(|k| len.saturating_sub(k.saturating_mul(chunk)).clamp(0, chunk))
                .collect()
        }
    };
    for (o, len) in outs.iter_mut().zip(sizes) {
        let mut sh = s.clone();
        sh[a] = Dim::K(len);
        o.shape = Some(sh);
    }
    outs
}

fn reshape(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let allowzero = cx.attr_i("allowzero").unwrap_or(0) != 0;
    let target = cx.x(1).value.clone().or_else(|| {
        cx.attr_ints("shape")
            .map(|v| v.into_iter().map(Dim::K).collect())
    });
    let mut out = fact(i0.dtype, None);
    if let Some(t) = target {
        out.shape = infer::reshape(cx.syms, i0.shape.as_deref(), &t, allowzero);
    }
    if out.shape.as_ref().is_some_and(|s| s.len() <= 1) {
        out.value = i0.value.clone();
    }
    vec![out]
}

fn reshape_noop(cx: &NoopCx) -> Result<(), String> {
    let x = input_fact(cx, 0).unwrap_or_default();
    let target = input_fact(cx, 1).ok_or("no shape input")?;
    let t = target
        .value
        .as_ref()
        .ok_or("the target shape is not known")?;
    let s = x.shape.as_ref().ok_or("the input shape is not known")?;
    if t.len() != s.len() {
        return Err("changes the rank".into());
    }
    let allowzero = attr_i(cx.node, "allowzero").unwrap_or(0) != 0;
    let mut minus_one = 0;
    for (ti, si) in t.iter().zip(s) {
        match (ti, si) {
            (Dim::K(0), _) if !allowzero => {}
            (Dim::K(-1), _) => minus_one += 1,
            (a, b) if a == b => {}
            _ => return Err("the target differs from the input shape".into()),
        }
    }
    if minus_one > 1 {
        return Err("several -1 in the target".into());
    }
    Ok(())
}

fn flatten(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    if let Some(s) = &i0.shape {
        let r = s.len() as i64;
        let a = cx.attr_i("axis").unwrap_or(1);
        let a = if a < 0 { a + r } else { a };
        if (0..=r).contains(&a) {
            let (x, y) = s.split_at(a as usize);
            let p = product(cx.syms, x);
            let q = product(cx.syms, y);
            out.shape = Some(vec![p, q]);
        }
    }
    vec![out]
}

fn transpose(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    if let Some(s) = &i0.shape {
        let perm = cx
            .attr_ints("perm")
            .unwrap_or_else(|| (0..s.len() as i64).rev().collect());
        if perm.len() == s.len() {
            out.shape = perm
                .iter()
                .map(|p| norm_axis(*p, s.len()).map(|p| s[p]))
                .collect();
        }
    }
    vec![out]
}

fn transpose_noop(cx: &NoopCx) -> Result<(), String> {
    let perm = attr_ints(cx.node, "perm").unwrap_or(&[]);
    if perm.is_empty() {
        let x = input_fact(cx, 0).unwrap_or_default();
        return match x.rank() {
            Some(r) if r <= 1 => Ok(()),
            Some(_) => Err("reverses the axes".into()),
            None => Err("the input rank is not known".into()),
        };
    }
    if perm.iter().enumerate().all(|(i, p)| *p == i as i64) {
        Ok(())
    } else {
        Err("the permutation is not the identity".into())
    }
}

/// Slice parameters: (starts, ends, axes, steps) from inputs (opset ≥ 10) or attributes.
fn slice_params(cx: &InferCx) -> Option<(Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>)> {
    if cx.ins.len() >= 3 {
        let (st, en) = (cx.val(1)?, cx.val(2)?);
        let axes = if cx.has(3) {
            cx.val(3)?
        } else {
            (0..st.len() as i64).collect()
        };
        let steps = if cx.has(4) {
            cx.val(4)?
        } else {
            vec![1; st.len()]
        };
        Some((st, en, axes, steps))
    } else {
        let st = cx.attr_ints("starts")?;
        let en = cx.attr_ints("ends")?;
        let axes = cx
            .attr_ints("axes")
            .unwrap_or_else(|| (0..st.len() as i64).collect());
        let n = st.len();
        Some((st, en, axes, vec![1; n]))
    }
}

fn slice(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    let (Some(s), Some((st, en, axes, steps))) = (&i0.shape, slice_params(cx)) else {
        return vec![out];
    };
    let n = st.len();
    if en.len() != n || axes.len() != n || steps.len() != n {
        return vec![out];
    }
    let mut shape = s.clone();
    let mut value = i0.value.clone().filter(|_| s.len() == 1);
    for i in 0..n {
        let Some(a) = norm_axis(axes[i], s.len()) else {
            return vec![out];
        };
        if steps[i] == 0 {
            return vec![out];
        }
        match s[a] {
            Dim::K(len) => {
                let (b, e, step) = slice_bounds(st[i], en[i], steps[i], len);
                let l = slice_len(b, e, step);
                shape[a] = Dim::K(l);
                value = value.and_then(|v| {
                    (0..l)
                        .map(|i| {
                            let j = i.checked_mul(step)?.checked_add(b)?;
                            v.get(usize::try_from(j).ok()?).copied()
                        })
                        .collect()
                });
            }
            Dim::S(_) => {
                value = None;
                shape[a] = if st[i] == 0 && en[i] >= i64::MAX / 2 && steps[i] == 1 {
                    s[a]
                } else {
                    cx.fresh()
                };
            }
        }
    }
    out.shape = Some(shape);
    out.value = value;
    vec![out]
}

fn slice_noop(cx: &NoopCx) -> Result<(), String> {
    if cx.opset < 10 {
        return Err("Slice-1 (attributes) is not handled".into());
    }
    let val = |i: usize| input_fact(cx, i).and_then(|f| f.known_value());
    let present = |i: usize| cx.ins.get(i).is_some_and(Option::is_some);
    let starts = val(1).ok_or("starts are not constant")?;
    let ends = val(2).ok_or("ends are not constant")?;
    let axes = match present(3) {
        true => val(3).ok_or("axes are not constant")?,
        false => (0..starts.len() as i64).collect(),
    };
    let steps = match present(4) {
        true => val(4).ok_or("steps are not constant")?,
        false => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("parameters of different lengths".into());
    }
    let x = input_fact(cx, 0).unwrap_or_default();
    for i in 0..starts.len() {
        if steps[i] != 1 || starts[i] != 0 {
            return Err("a step is not 1 or a start is not 0".into());
        }
        if ends[i] >= i32::MAX as i64 {
            continue;
        }
        let s = x.shape.as_ref().ok_or("the input shape is not known")?;
        let d = norm_axis(axes[i], s.len())
            .and_then(|a| s[a].known())
            .ok_or("a sliced dim is not known")?;
        if ends[i] < d {
            return Err("takes part of an axis".into());
        }
    }
    Ok(())
}

fn expand(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    if let (Some(s), Some(t)) = (&i0.shape, cx.x(1).value.clone()) {
        out.shape = cx.broadcast(s, &t);
    }
    vec![out]
}

fn expand_noop(cx: &NoopCx) -> Result<(), String> {
    let x = input_fact(cx, 0).unwrap_or_default();
    let (Some(a), Some(b)) = (&x.shape, &cx.out.shape) else {
        return Err("shapes are not known".into());
    };
    if a == b && x.dtype.is_some() {
        Ok(())
    } else {
        Err("the output shape may differ from the input shape".into())
    }
}

fn tile(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    if let (Some(s), Some(r)) = (&i0.shape, cx.val(1)) {
        if r.len() == s.len() {
            let mut shape = Vec::with_capacity(s.len());
            for (d, r) in s.iter().zip(r) {
                shape.push(match (*d, r) {
                    (d, 1) => d,
                    (Dim::K(v), r) => match v.checked_mul(r) {
                        Some(p) if r >= 0 => Dim::K(p),
                        _ => return vec![out],
                    },
                    _ => cx.fresh(),
                });
            }
            out.shape = Some(shape);
        }
    }
    vec![out]
}

fn tile_noop(cx: &NoopCx) -> Result<(), String> {
    let reps = input_fact(cx, 1)
        .and_then(|f| f.known_value())
        .ok_or("repeats are not constant")?;
    if reps.iter().all(|r| *r == 1) {
        Ok(())
    } else {
        Err("repeats are not all 1".into())
    }
}

fn pad(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    let (Some(s), Ok(Some(p))) = (&i0.shape, cx.attr_or_input("pads", 1)) else {
        return vec![out];
    };
    let axes = if cx.has(3) {
        match cx.val(3) {
            Some(a) => a,
            None => return vec![out],
        }
    } else {
        (0..s.len() as i64).collect()
    };
    if p.len() != 2 * axes.len() {
        return vec![out];
    }
    let mut shape = s.clone();
    for (i, a) in axes.iter().enumerate() {
        let Some(a) = norm_axis(*a, s.len()) else {
            return vec![out];
        };
        let Some(extra) = p[i].checked_add(p[i + axes.len()]) else {
            return vec![out];
        };
        shape[a] = match shape[a] {
            Dim::K(n) => match n.checked_add(extra) {
                Some(v) if v >= 0 => Dim::K(v),
                _ => return vec![out],
            },
            d if extra == 0 => d,
            _ => cx.fresh(),
        };
    }
    out.shape = Some(shape);
    vec![out]
}

fn pad_noop(cx: &NoopCx) -> Result<(), String> {
    let pads: Vec<i64> = if cx.opset < 11 {
        attr_ints(cx.node, "pads").ok_or("no pads")?.to_vec()
    } else {
        input_fact(cx, 1)
            .and_then(|f| f.known_value())
            .ok_or("pads are not constant")?
    };
    if pads.iter().all(|p| *p == 0) {
        Ok(())
    } else {
        Err("pads are not all zero".into())
    }
}

fn constant_of_shape(cx: &mut InferCx) -> Vec<Fact> {
    // Without `value` the spec says float32 zeros, but runtimes disagree (tract makes f64):
    // leave the dtype unknown so that no rule leans on it.
    let value = infer::attr(cx.node, "value").and_then(|a| a.t.as_ref());
    let mut out = fact(value.and_then(|t| t.data_type), cx.x(0).value.clone());
    // A small 1-D integer fill is a value too (`ConstantOfShape([n], value=1)` builds shapes).
    if let (Some(t), Some(&[Dim::K(n)])) = (value, out.shape.as_deref()) {
        let fill = const_fact(t).known_value().filter(|v| v.len() == 1);
        if let Some(v) = fill.filter(|_| (0..=MAX_VALUE_LEN as i64).contains(&n)) {
            out.value = Some(vec![Dim::K(v[0]); n as usize]);
        }
    }
    vec![out]
}

fn range(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(0).dtype;
    let scalar = |f: &Fact| f.known_value().filter(|v| v.len() == 1).map(|v| v[0]);
    let (s, l, d) = (scalar(cx.x(0)), scalar(cx.x(1)), scalar(cx.x(2)));
    let mut out = fact(dtype, None);
    if dtype.is_some_and(infer::is_int) {
        if let (Some(s), Some(l), Some(d)) = (s, l, d) {
            if d != 0 {
                let n = slice_len(s, l, d).max(0);
                out.shape = Some(vec![Dim::K(n)]);
                if n as usize <= MAX_VALUE_LEN {
                    out.value = (0..n)
                        .map(|i| i.checked_mul(d)?.checked_add(s).map(Dim::K))
                        .collect();
                }
                return vec![out];
            }
        }
    }
    out.shape = Some(vec![cx.fresh()]);
    vec![out]
}

fn depth_to_space(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    let b = cx.attr_i("blocksize").unwrap_or(0);
    let to_space = cx.node.op_type.as_deref() == Some("DepthToSpace");
    if let Some(s) = i0.static_shape().filter(|s| s.len() == 4 && b > 0) {
        let dims = || -> Option<Vec<i64>> {
            let bb = b.checked_mul(b)?;
            if to_space {
                (s[1] % bb == 0).then_some(())?;
                Some(vec![
                    s[0],
                    s[1] / bb,
                    s[2].checked_mul(b)?,
                    s[3].checked_mul(b)?,
                ])
            } else {
                (s[2] % b == 0 && s[3] % b == 0).then_some(())?;
                Some(vec![s[0], s[1].checked_mul(bb)?, s[2] / b, s[3] / b])
            }
        };
        out.shape = dims().map(|v| v.into_iter().map(Dim::K).collect());
    }
    vec![out]
}

fn gather_nd(cx: &mut InferCx) -> Vec<Fact> {
    let data = cx.x(0).clone();
    let mut out = fact(data.dtype, None);
    let (Some(d), Some(i)) = (&data.shape, cx.x(1).shape.clone()) else {
        return vec![out];
    };
    let b = cx.attr_i("batch_dims").unwrap_or(0);
    let Some(Dim::K(last)) = i.last().copied() else {
        return vec![out];
    };
    let (Ok(b), Ok(last)) = (usize::try_from(b), usize::try_from(last)) else {
        return vec![out];
    };
    if b.checked_add(last).is_none_or(|n| n > d.len()) || b >= i.len() {
        return vec![out];
    }
    let mut shape = i[..i.len() - 1].to_vec();
    shape.extend_from_slice(&d[b + last..]);
    out.shape = Some(shape);
    vec![out]
}

fn det(cx: &mut InferCx) -> Vec<Fact> {
    let x = cx.x(0).clone();
    let shape = x
        .shape
        .as_ref()
        .filter(|s| s.len() >= 2)
        .map(|s| s[..s.len() - 2].to_vec());
    vec![fact(x.dtype, shape)]
}

fn nonzero(cx: &mut InferCx) -> Vec<Fact> {
    let r = cx.x(0).rank();
    let n = cx.fresh();
    vec![fact(Some(I64), r.map(|r| vec![Dim::K(r as i64), n]))]
}

fn eye_like(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.attr_i("dtype").map(|d| d as i32).or(cx.x(0).dtype);
    vec![fact(dtype, cx.x(0).shape.clone())]
}

fn one_hot(cx: &mut InferCx) -> Vec<Fact> {
    let dtype = cx.x(2).dtype;
    let mut out = fact(dtype, None);
    let depth = cx.x(1).known_value().filter(|v| v.len() == 1).map(|v| v[0]);
    if let (Some(s), Some(depth)) = (cx.x(0).shape.clone(), depth) {
        let r = s.len() + 1;
        if let Some(a) = norm_axis(cx.attr_i("axis").unwrap_or(-1), r) {
            let mut shape = s;
            shape.insert(a, Dim::K(depth));
            out.shape = Some(shape);
        }
    }
    vec![out]
}

fn resize(cx: &mut InferCx) -> Vec<Fact> {
    let i0 = cx.x(0).clone();
    let mut out = fact(i0.dtype, None);
    let Some(s) = &i0.shape else { return vec![out] };
    // sizes (input 3, Resize-11+) give the shape; scales are floats, not tracked: unknown.
    if let Some(sizes) = cx.val(3) {
        let axes = cx
            .attr_ints("axes")
            .unwrap_or_else(|| (0..s.len() as i64).collect());
        if sizes.len() == axes.len() && cx.attr_s("keep_aspect_ratio_policy").is_none() {
            let mut shape = s.clone();
            for (a, v) in axes.iter().zip(sizes) {
                match norm_axis(*a, s.len()) {
                    Some(a) => shape[a] = Dim::K(v),
                    None => return vec![out],
                }
            }
            out.shape = Some(shape);
        }
    }
    vec![out]
}

const fn shape_op(
    op: &'static str,
    since: i64,
    inputs: (usize, usize),
    attrs: &'static str,
) -> OpDef {
    OpDef {
        attrs,
        eval: true,
        ..OpDef::new(op, since, arity(inputs.0, inputs.1), arity(1, 1))
    }
}

pub(super) const OPS: &[OpDef] = &[
    OpDef {
        infer: constant,
        purity: Purity::Keep,
        eval: false,
        ..shape_op(
            "Constant",
            1,
            (0, 0),
            "value sparse_value>=11 value_float>=12 value_floats>=12 value_int>=12 \
             value_ints>=12 value_string>=12 value_strings>=12",
        )
    },
    OpDef {
        infer: shape,
        half: Half::AnyInput,
        ..shape_op("Shape", 1, (1, 1), "start>=15 end>=15")
    },
    OpDef {
        infer: size,
        half: Half::AnyInput,
        ..shape_op("Size", 1, (1, 1), "")
    },
    OpDef {
        infer: gather,
        weights: Some(gather_weights),
        half: Half::Move,
        ..shape_op("Gather", 1, (2, 2), "axis")
    },
    OpDef {
        infer: gather_elements,
        eval: false,
        half: Half::Move,
        ..shape_op("GatherElements", 11, (2, 2), "axis")
    },
    OpDef {
        infer: squeeze,
        flow: Flow::Reshape,
        half: Half::Move,
        ..shape_op("Squeeze", 1, (1, 2), "axes<13@1")
    },
    OpDef {
        infer: unsqueeze,
        flow: Flow::Reshape,
        half: Half::Move,
        ..shape_op("Unsqueeze", 1, (1, 2), "axes<13@1")
    },
    OpDef {
        inputs: arity(1, VARIADIC),
        infer: concat,
        flow: Flow::Concat,
        noop: Some(concat_noop),
        half: Half::Move,
        ..shape_op("Concat", 1, (1, 1), "axis")
    },
    OpDef {
        outputs: arity(1, VARIADIC),
        infer: split,
        flow: Flow::Split,
        half: Half::Move,
        ..shape_op("Split", 1, (1, 2), "axis split<13@1 num_outputs>=18")
    },
    OpDef {
        infer: reshape,
        flow: Flow::Reshape,
        noop: Some(reshape_noop),
        half: Half::Move,
        ..shape_op(
            "Reshape",
            1,
            (1, 2),
            "shape<5 consumed_inputs<5 allowzero>=14",
        )
    },
    OpDef {
        infer: flatten,
        flow: Flow::Reshape,
        half: Half::Move,
        ..shape_op("Flatten", 1, (1, 1), "axis")
    },
    OpDef {
        infer: transpose,
        flow: Flow::Transpose,
        noop: Some(transpose_noop),
        half: Half::Move,
        ..shape_op("Transpose", 1, (1, 1), "perm")
    },
    OpDef {
        infer: slice,
        flow: Flow::Slice,
        noop: Some(slice_noop),
        half: Half::Move,
        ..shape_op("Slice", 1, (1, 5), "starts<10@1 ends<10@2 axes<10@3")
    },
    OpDef {
        infer: expand,
        flow: Flow::Broadcast,
        noop: Some(expand_noop),
        half: Half::Move,
        ..shape_op("Expand", 8, (2, 2), "")
    },
    OpDef {
        infer: tile,
        noop: Some(tile_noop),
        half: Half::Move,
        ..shape_op("Tile", 1, (2, 3), "")
    },
    OpDef {
        infer: pad,
        flow: Flow::Pass { per_channel: &[] },
        eval: false,
        noop: Some(pad_noop),
        half: Half::Move,
        ..shape_op("Pad", 1, (1, 4), "mode pads<11 value<11 paddings<2")
    },
    OpDef {
        infer: constant_of_shape,
        ..shape_op("ConstantOfShape", 9, (1, 1), "value")
    },
    OpDef {
        infer: range,
        ..shape_op("Range", 11, (3, 3), "")
    },
    OpDef {
        infer: depth_to_space,
        eval: false,
        half: Half::Move,
        ..shape_op("DepthToSpace", 1, (1, 1), "blocksize mode>=11")
    },
    OpDef {
        infer: depth_to_space,
        eval: false,
        half: Half::Move,
        ..shape_op("SpaceToDepth", 1, (1, 1), "blocksize")
    },
    OpDef {
        infer: gather_nd,
        eval: false,
        half: Half::Move,
        ..shape_op("GatherND", 11, (2, 2), "batch_dims>=12")
    },
    OpDef {
        infer: det,
        eval: false,
        ..shape_op("Det", 11, (1, 1), "")
    },
    OpDef {
        infer: nonzero,
        eval: false,
        ..shape_op("NonZero", 9, (1, 1), "")
    },
    OpDef {
        infer: eye_like,
        eval: false,
        ..shape_op("EyeLike", 9, (1, 1), "dtype k")
    },
    OpDef {
        infer: one_hot,
        eval: false,
        ..shape_op("OneHot", 9, (3, 3), "axis")
    },
    OpDef {
        infer: same,
        eval: false,
        ..shape_op("ScatterElements", 11, (3, 3), "axis reduction>=16")
    },
    OpDef {
        infer: same,
        eval: false,
        ..shape_op("ScatterND", 11, (3, 3), "reduction>=16")
    },
    OpDef {
        infer: same,
        eval: false,
        ..shape_op("Scatter", 9, (3, 3), "axis")
    },
    OpDef {
        infer: resize,
        flow: Flow::Pass { per_channel: &[] },
        eval: false,
        ..shape_op(
            "Resize",
            10,
            (1, 4),
            "mode antialias>=18 axes>=18 coordinate_transformation_mode>=11 cubic_coeff_a>=11 \
             exclude_outside>=11 extrapolation_value>=11 keep_aspect_ratio_policy>=18 \
             nearest_mode>=11",
        )
    },
    OpDef {
        flow: Flow::Pass { per_channel: &[] },
        eval: false,
        ..shape_op(
            "Upsample",
            7,
            (1, 2),
            "mode scales<9 height_scale<7 width_scale<7",
        )
    },
];
