//! The `--prune-zero` criterion: which channels of a coupled group every consuming layer
//! provably reads as 0.

use std::collections::HashMap;

use ndarray::{ArrayD, Axis};

use super::group::{label, layer, Group, Role};
use super::{const_f32, rule_err};
use crate::error::Result;
use crate::ir::{tensor, Graph, NodeId, ValueRef};

/// Whether every element of `a` at index `c` of `axis` satisfies `f`.
pub(super) fn slice_all(a: &ArrayD<f32>, axis: usize, c: usize, f: impl Fn(f32) -> bool) -> bool {
    a.index_axis(Axis(axis), c).iter().all(|x| f(*x))
}

/// Per channel: whether every value the group's consuming layers read is provably 0 there, so
/// that removing the channel from every tensor of the group leaves every consumer's output
/// unchanged (ops inside a group act channel by channel, so channel `c` of any of its tensors
/// reaches the outside only through channel `c` of what the consumers read). Each value's zero
/// channels follow from its inputs' in dependency order: a producer's from its kernel and bias,
/// a `Pass` op and a depthwise Conv keep those they map from 0 to 0, `Add`/`Sub` those zero in
/// every input, `Mul` those zero in some input. The reason names the first member that keeps
/// channels some producer zeroes (reported when no channel goes).
pub(super) fn zero_channels(g: &Graph, group: &Group) -> Result<(Vec<bool>, Option<String>)> {
    let c = group.channels;
    let spoiler: std::cell::RefCell<Option<String>> = std::cell::RefCell::new(None);
    let cut_of =
        |id: NodeId, slot: usize| group.cuts.iter().find(|k| k.node == id && k.slot == slot);
    let in_group = |u: ValueRef| group.values.binary_search_by(|(v, _)| v.cmp(&u)).is_ok();
    // The member that computes each group value.
    let mut maker: HashMap<NodeId, Role> = HashMap::new();
    for &(id, role) in &group.members {
        if role != Role::Consumer {
            maker.insert(id, role);
        }
    }
    // Producers: their kernel slice and bias at c are 0.
    let mut owns: HashMap<NodeId, Vec<bool>> = HashMap::new();
    for (&id, _) in maker.iter().filter(|(_, r)| **r == Role::Producer) {
        let l = layer(g, id).ok_or_else(|| rule_err("a producer is no longer a layer"))?;
        let w = const_f32(g, id, l.kernel)?;
        let mut own: Vec<bool> = (0..c)
            .map(|ch| slice_all(&w, l.out_axis, ch, |x| x == 0.0))
            .collect();
        if let Some(b) = l.bias {
            let bias = const_f32(g, id, b)?;
            match cut_of(id, b) {
                Some(k) => {
                    for (ch, z) in own.iter_mut().enumerate() {
                        *z = *z && slice_all(&bias, k.axis, ch, |x| x == 0.0);
                    }
                }
                None if bias.iter().all(|x| *x == 0.0) => {}
                None => own.iter_mut().for_each(|z| *z = false),
            }
        }
        owns.insert(id, own);
    }
    let some_producer_zero = owns.values().any(|o| o.iter().any(|z| *z));
    let mut spoil = |zero: &mut Vec<bool>, id: NodeId, why: &str, keep: &dyn Fn(usize) -> bool| {
        let before = zero.iter().filter(|z| **z).count();
        for (ch, z) in zero.iter_mut().enumerate() {
            *z = *z && keep(ch);
        }
        let mut s = spoiler.borrow_mut();
        if s.is_none() && zero.iter().filter(|z| **z).count() < before {
            *s = Some(format!("{} {why}", label(g, id)));
        }
    };
    // Zero channels of every group value, inputs before outputs (an explicit stack).
    let mut masks: HashMap<ValueRef, Vec<bool>> = HashMap::new();
    for &(root, _) in &group.values {
        let mut stack = vec![(root, false)];
        while let Some((v, ready)) = stack.pop() {
            if masks.contains_key(&v) {
                continue;
            }
            let role = *maker
                .get(&v.node)
                .ok_or_else(|| rule_err("a group value has no maker"))?;
            let inputs: Vec<Option<ValueRef>> = if role == Role::Producer {
                vec![]
            } else {
                g.node_inputs(v.node)
            };
            if !ready {
                stack.push((v, true));
                for u in inputs.iter().flatten() {
                    if in_group(*u) && !masks.contains_key(u) {
                        stack.push((*u, false));
                    }
                }
                continue;
            }
            let id = v.node;
            let first = |masks: &HashMap<ValueRef, Vec<bool>>| -> Result<Vec<bool>> {
                inputs
                    .first()
                    .copied()
                    .flatten()
                    .and_then(|u| masks.get(&u).cloned())
                    .ok_or_else(|| rule_err("a channel input is not in the group"))
            };
            let m = match role {
                Role::Consumer => unreachable!("consumers make no group value"),
                Role::Producer => owns[&id].clone(),
                Role::Pass => {
                    let mut m = first(&masks)?;
                    pass_zero(g, id, &mut m, &mut spoil)?;
                    m
                }
                Role::Depthwise => {
                    let mut m = first(&masks)?;
                    let l = layer(g, id).ok_or_else(|| rule_err("a depthwise Conv is gone"))?;
                    let b = match l.bias {
                        Some(b) => Some(const_f32(g, id, b)?),
                        None => None,
                    };
                    let w = const_f32(g, id, l.kernel)?;
                    spoil(&mut m, id, "maps 0 to its nonzero bias", &|ch| {
                        slice_all(&w, 0, ch, f32::is_finite)
                            && b.as_ref().is_none_or(|b| slice_all(b, 0, ch, |x| x == 0.0))
                    });
                    m
                }
                Role::Broadcast => {
                    let mul = g.node(id).op_type() == "Mul";
                    // Per input: its zero channels, and what to call it.
                    let mut per_input: Vec<(Vec<bool>, String)> = Vec::new();
                    for (slot, u) in inputs.iter().enumerate() {
                        let u = u.ok_or_else(|| rule_err("a broadcast input is missing"))?;
                        let name = format!("`{}`", g.value_name(u));
                        if let Some(m) = masks.get(&u) {
                            per_input.push((m.clone(), name));
                            continue;
                        }
                        let t = g.const_tensor(u).map(tensor::to_f32).transpose()?;
                        let z = match (cut_of(id, slot), t) {
                            (Some(k), Some(t)) => (0..c)
                                .map(|ch| slice_all(&t, k.axis, ch, |x| x == 0.0))
                                .collect(),
                            (None, Some(t)) => vec![t.iter().all(|x| *x == 0.0); c],
                            _ => vec![false; c],
                        };
                        let what = if g.const_tensor(u).is_some() {
                            format!("the constant {name}")
                        } else {
                            format!("{name}, broadcast over the channels,")
                        };
                        per_input.push((z, what));
                    }
                    if mul {
                        (0..c)
                            .map(|ch| per_input.iter().any(|(z, _)| z[ch]))
                            .collect()
                    } else {
                        let any: Vec<bool> = (0..c)
                            .map(|ch| per_input.iter().any(|(z, _)| z[ch]))
                            .collect();
                        let all: Vec<bool> = (0..c)
                            .map(|ch| per_input.iter().all(|(z, _)| z[ch]))
                            .collect();
                        let mut s = spoiler.borrow_mut();
                        if s.is_none() && all != any {
                            if let Some((_, what)) = per_input
                                .iter()
                                .find(|(z, _)| z.iter().zip(&any).any(|(z, a)| *a && !*z))
                            {
                                *s = Some(format!(
                                    "{} adds {what} nonzero in channels its other inputs zero",
                                    label(g, id)
                                ));
                            }
                        }
                        all
                    }
                }
            };
            masks.insert(v, m);
        }
    }
    // What the consumers read must be zero, and their removed kernel slices finite (0·w = 0).
    let mut zero = vec![true; c];
    let mut consumers = 0;
    for &(id, role) in &group.members {
        if role != Role::Consumer {
            continue;
        }
        consumers += 1;
        let l = layer(g, id).ok_or_else(|| rule_err("a consumer is no longer a layer"))?;
        let read = g
            .input(id, l.act)
            .and_then(|u| masks.get(&u))
            .ok_or_else(|| rule_err("a consumer reads a value outside the group"))?;
        for (z, r) in zero.iter_mut().zip(read) {
            *z = *z && *r;
        }
        let w = const_f32(g, id, l.kernel)?;
        spoil(&mut zero, id, "has non-finite weights", &|ch| {
            slice_all(&w, l.in_axis, ch, f32::is_finite)
        });
    }
    if consumers == 0 {
        zero.iter_mut().for_each(|z| *z = false);
    }
    let reason = (some_producer_zero && !zero.iter().any(|z| *z)).then(|| {
        spoiler
            .into_inner()
            .unwrap_or_else(|| "no channel is zero where the group's layers read it".into())
    });
    Ok((zero, reason))
}

pub(super) type Spoil<'a> = dyn FnMut(&mut Vec<bool>, NodeId, &str, &dyn Fn(usize) -> bool) + 'a;

/// Narrows `zero` to the channels the Pass op `id` maps from 0 to exactly 0.
pub(super) fn pass_zero(
    g: &Graph,
    id: NodeId,
    zero: &mut Vec<bool>,
    spoil: &mut Spoil,
) -> Result<()> {
    let op = g.node(id).op_type();
    let scalar = |slot: usize| -> Option<f32> {
        let t = g.const_tensor(g.input(id, slot)?)?;
        tensor::to_f32(t).ok()?.iter().next().copied()
    };
    match op {
        "Relu" | "LeakyRelu" | "PRelu" | "HardSwish" | "Identity" | "Dropout" | "MaxPool"
        | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" | "LpPool" | "GlobalLpPool"
        | "Tanh" | "Neg" | "Abs" | "Elu" | "Selu" | "Erf" | "Softsign" | "Sign" | "Round"
        | "Floor" | "Ceil" | "Sin" | "Sinh" | "Asin" | "Asinh" | "Atan" | "Atanh" | "Tan"
        | "ThresholdedRelu" | "Shrink" | "Celu" | "Gelu" | "Mish" => {
            if op == "Shrink" {
                let bias = g.node(id).attr("bias").and_then(|a| a.f).unwrap_or(0.0);
                spoil(zero, id, "maps 0 to its nonzero bias", &|_| bias == 0.0);
            }
            if op == "ThresholdedRelu" {
                let alpha = g.node(id).attr("alpha").and_then(|a| a.f).unwrap_or(1.0);
                spoil(zero, id, "maps 0 to 0 only when alpha ≥ 0", &|_| {
                    alpha >= 0.0
                });
            }
            Ok(())
        }
        "Clip" => {
            let attr = |n: &str| g.node(id).attr(n).and_then(|a| a.f);
            let lo = if g.input(id, 1).is_some() {
                scalar(1)
            } else {
                Some(attr("min").unwrap_or(f32::MIN))
            };
            let hi = if g.input(id, 2).is_some() {
                scalar(2)
            } else {
                Some(attr("max").unwrap_or(f32::MAX))
            };
            let ok = matches!((lo, hi), (Some(lo), Some(hi)) if lo <= 0.0 && 0.0 <= hi);
            spoil(
                zero,
                id,
                "clips 0 to a nonzero bound (or its bounds are not constant)",
                &|_| ok,
            );
            Ok(())
        }
        "BatchNormalization" => {
            let scale = const_f32(g, id, 1)?;
            let beta = const_f32(g, id, 2)?;
            let mean = const_f32(g, id, 3)?;
            let at = |a: &ArrayD<f32>, ch: usize| {
                if a.len() == 1 {
                    a.iter().next().copied().unwrap_or(0.0)
                } else {
                    a.iter().nth(ch).copied().unwrap_or(f32::NAN)
                }
            };
            spoil(
                zero,
                id,
                "maps 0 to beta − mean·scale/√(var+ε), which is not 0",
                &|ch| at(&beta, ch) == 0.0 && (at(&mean, ch) == 0.0 || at(&scale, ch) == 0.0),
            );
            Ok(())
        }
        _ => {
            spoil(zero, id, "does not map 0 to 0", &|_| false);
            Ok(())
        }
    }
}
