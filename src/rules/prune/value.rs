//! What the consuming layers of a coupled group read at a removed channel: a known constant (0
//! when the channel's producers are 0 and every op on the way maps 0 to 0; another constant
//! through a BatchNormalization shift, a bias or an activation of one), or nothing known.
//!
//! Channel `c` of every group value is followed from its producers, inputs before outputs (an
//! explicit stack, no recursion): a producer gives its bias at `c` when its kernel slice at `c`
//! is 0 (the criterion `--prune-ratio` removes channels as if it were); a `Pass` op maps the
//! constant through [`crate::ops::point`] (the op table's evaluation of the op on a constant
//! channel) with its per-channel operands at `c`; a depthwise Conv gives `bias + k·Σw` (only 0
//! stays 0 when it pads its input: the border sees the padding); `Add`/`Sub`/`Mul` combine
//! their inputs' constants (`Mul` by 0 is 0). A consumer can take a constant `k ≠ 0` in its bias
//! ([`takes_constant`]); a constant it reads at a removed channel is then folded there.

use std::collections::HashMap;

use ndarray::{ArrayD, Axis};

use super::group::{label, layer, Group, Map, Role};
use super::{const_f32, rule_err};
use crate::error::Result;
use crate::ir::{tensor, Graph, NodeId, ValueRef};
use crate::ops;

/// How removed channels are valued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Only what is provably one constant everywhere: a channel is removable when its producers'
    /// kernel slices are 0 and every consumer reads a constant it can take.
    Exact,
    /// For `--prune-ratio`: every channel is valued as if its producers' kernel slices were 0; a
    /// BatchNormalization gives its expected output `beta` (its running mean is the expected
    /// input), padding is ignored (the value away from the border), and a constant a consumer
    /// cannot take is dropped.
    Lossy,
}

/// What the consumers read at each channel once it is removed.
#[derive(Debug)]
pub(super) struct Reads {
    /// Per consumer: per channel, the constant it reads there (`None`: not known, contributes
    /// nothing once removed — only removed that way by `--prune-ratio`).
    pub(super) consumers: Vec<(NodeId, Vec<Option<f32>>)>,
    /// Per channel: whether removing it is exact (every consumer reads a constant it can take).
    pub(super) exact: Vec<bool>,
    /// Why no channel is removable exactly although some producer is 0 there (exact mode).
    pub(super) reason: Option<String>,
}

/// Whether every element of `a` at index `c` of `axis` satisfies `f`.
pub(super) fn slice_all(a: &ArrayD<f32>, axis: usize, c: usize, f: impl Fn(f32) -> bool) -> bool {
    a.index_axis(Axis(axis), c).iter().all(|x| f(*x))
}

/// The one value of the slices at `ps` of `axis`, when all their elements are equal.
fn uniform(a: &ArrayD<f32>, axis: usize, ps: std::ops::Range<usize>) -> Option<f32> {
    let mut all = ps.flat_map(|p| {
        a.index_axis(Axis(axis), p)
            .into_iter()
            .copied()
            .collect::<Vec<_>>()
    });
    let first = all.next()?;
    all.all(|x| x == first).then_some(first)
}

/// The one value of `a`, when all its elements are equal.
fn all_equal(a: &ArrayD<f32>) -> Option<f32> {
    let first = *a.iter().next()?;
    a.iter().all(|x| *x == first).then_some(first)
}

/// Whether Conv `id` pads its input (explicit pads, or `SAME_*` with a kernel larger than 1):
/// the border then reads padding, and a constant channel contributes differently there.
pub(super) fn pads_input(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    let pads = n
        .attr("pads")
        .is_some_and(|a| a.ints.iter().any(|p| *p != 0));
    let same = n
        .attr("auto_pad")
        .and_then(|a| a.s.as_deref())
        .is_some_and(|s| s.starts_with(b"SAME"));
    let big_kernel = match n.attr("kernel_shape") {
        Some(a) => a.ints.iter().any(|k| *k != 1),
        None => g
            .input(id, 1)
            .and_then(|v| g.const_tensor(v))
            .is_none_or(|t| t.dims.iter().skip(2).any(|k| *k != 1)),
    };
    pads || (same && big_kernel)
}

/// Where a MatMul consumer's constant goes: the `Add` that alone reads its output, with the
/// slot of its constant float32 operand (dims `[..., N]`, `[..., 1]` or a scalar).
pub(super) fn matmul_bias(g: &Graph, id: NodeId) -> Option<(NodeId, usize)> {
    let out = ValueRef { node: id, slot: 0 };
    if g.is_graph_output(out) || g.is_captured(out) {
        return None;
    }
    let readers = g.consumers(out);
    let [(add, slot)] = readers.as_slice() else {
        return None;
    };
    if g.node(*add).op_type() != "Add" || !g.node(*add).domain().is_empty() {
        return None;
    }
    let other = 1 - *slot;
    let t = g.const_tensor(g.input(*add, other)?)?;
    if t.data_type != Some(crate::onnx::proto::tensor_proto::DataType::Float as i32) {
        return None;
    }
    Some((*add, other))
}

/// Whether consumer `id` can take a nonzero constant read at a removed channel in its bias:
/// Conv without padding (any padding in lossy mode: the value away from the border), Gemm with
/// `beta ≠ 0`, MatMul with a 2-D kernel followed by an `Add` of a constant. `Err` says why not.
pub(super) fn takes_constant(g: &Graph, id: NodeId, mode: Mode) -> std::result::Result<(), String> {
    let l = layer(g, id).ok_or("is no longer a layer")?;
    match g.node(id).op_type() {
        "Conv" if mode == Mode::Exact && pads_input(g, id) => {
            Err("pads its input, so a constant channel does not add the same at the border".into())
        }
        "Conv" => Ok(()),
        "Gemm" => {
            let beta = g.node(id).attr("beta").and_then(|a| a.f).unwrap_or(1.0);
            if beta == 0.0 {
                Err("has beta = 0, so its bias cannot take a constant".into())
            } else {
                Ok(())
            }
        }
        "MatMul" => {
            let rank2 = g
                .input(id, l.kernel)
                .and_then(|v| g.const_tensor(v))
                .is_some_and(|t| t.dims.len() == 2);
            if l.act == 0 && rank2 && matmul_bias(g, id).is_some() {
                Ok(())
            } else {
                Err(
                    "is not followed by an `Add` of a constant bias to take a constant channel"
                        .into(),
                )
            }
        }
        _ => Err("spreads a constant channel unevenly".into()),
    }
}

/// What the group's consumers read at each channel once it is removed (see the module docs).
pub(super) fn removed_values(g: &Graph, group: &Group, mode: Mode) -> Result<Reads> {
    let c = group.channels;
    let mut spoiler: Option<String> = None;
    let cut_of =
        |id: NodeId, slot: usize| group.cuts.iter().find(|k| k.node == id && k.slot == slot);
    let in_group = |u: ValueRef| group.map_of(u).is_some();
    let mut maker: HashMap<NodeId, Role> = HashMap::new();
    for &(id, role) in &group.members {
        if role != Role::Consumer {
            maker.insert(id, role);
        }
    }
    // An operand of `id` at `slot` per channel: the cut slice's one value, or the constant's.
    let operand = |id: NodeId, slot: usize| -> Result<Vec<Option<f32>>> {
        let Some(v) = g.input(id, slot) else {
            return Ok(vec![None; c]);
        };
        let Some(t) = g.const_tensor(v) else {
            return Ok(vec![None; c]);
        };
        let a = tensor::to_f32(t)?;
        Ok(match cut_of(id, slot) {
            Some(k) => (0..c)
                .map(|ch| {
                    k.map
                        .positions(ch)
                        .and_then(|ps| uniform(&a, k.map.axis, ps))
                })
                .collect(),
            None => vec![all_equal(&a); c],
        })
    };
    // Producers: their bias where their kernel slice is 0 (lossy: everywhere).
    let mut owns: HashMap<NodeId, Vec<Option<f32>>> = HashMap::new();
    for (&id, _) in maker.iter().filter(|(_, r)| **r == Role::Producer) {
        let l = layer(g, id).ok_or_else(|| rule_err("a producer is no longer a layer"))?;
        let w = const_f32(g, id, l.kernel)?;
        let bias = match l.bias {
            Some(b) => operand(id, b)?,
            None => vec![Some(0.0); c],
        };
        let own = (0..c)
            .map(|ch| {
                let zero = mode == Mode::Lossy || slice_all(&w, l.out_axis, ch, |x| x == 0.0);
                if zero {
                    bias[ch]
                } else {
                    None
                }
            })
            .collect();
        owns.insert(id, own);
    }
    let some_producer_zero =
        mode == Mode::Exact && owns.values().any(|o| o.iter().any(Option::is_some));
    // Narrows `v` to `new`, naming the first member that loses a known channel.
    let spoil = |spoiler: &mut Option<String>,
                 old: &[Option<f32>],
                 new: &[Option<f32>],
                 id: NodeId,
                 map: Map,
                 why: &str| {
        let lost =
            (0..c).any(|ch| old[ch].is_some() && new[ch].is_none() && map.positions(ch).is_some());
        if spoiler.is_none() && lost {
            *spoiler = Some(format!("{} {why}", label(g, id)));
        }
    };
    let mut vals: HashMap<ValueRef, Vec<Option<f32>>> = HashMap::new();
    for &(root, _) in &group.values {
        let mut stack = vec![(root, false)];
        while let Some((v, ready)) = stack.pop() {
            if vals.contains_key(&v) {
                continue;
            }
            let role = *maker
                .get(&v.node)
                .ok_or_else(|| rule_err("a group value has no maker"))?;
            let map = group
                .map_of(v)
                .ok_or_else(|| rule_err("a group value has no map"))?;
            let inputs: Vec<Option<ValueRef>> = if role == Role::Producer {
                vec![]
            } else {
                g.node_inputs(v.node)
            };
            if !ready {
                stack.push((v, true));
                for u in inputs.iter().flatten() {
                    if in_group(*u) && !vals.contains_key(u) {
                        stack.push((*u, false));
                    }
                }
                continue;
            }
            let id = v.node;
            let first = |vals: &HashMap<ValueRef, Vec<Option<f32>>>| {
                inputs
                    .first()
                    .copied()
                    .flatten()
                    .and_then(|u| vals.get(&u).cloned())
                    .ok_or_else(|| rule_err("a channel input is not in the group"))
            };
            let out = match role {
                Role::Consumer => unreachable!("consumers make no group value"),
                Role::Concat | Role::Split | Role::Slice | Role::Reshape | Role::Move => inputs
                    .iter()
                    .flatten()
                    .find_map(|u| vals.get(u).cloned())
                    .ok_or_else(|| rule_err("a moved value's input is not in the group"))?,
                Role::Producer => owns[&id].clone(),
                Role::Pass => {
                    let x = first(&vals)?;
                    let node = g.node(id).op().ok_or_else(|| rule_err("not an op"))?;
                    let operands: Vec<Vec<Option<f32>>> = (0..node.input.len())
                        .map(|s| {
                            if s == 0 {
                                Ok(vec![None; c])
                            } else {
                                operand(id, s)
                            }
                        })
                        .collect::<Result<_>>()?;
                    let bn = g.node(id).op_type() == "BatchNormalization";
                    let y: Vec<Option<f32>> = (0..c)
                        .map(|ch| {
                            let at: Vec<Option<f32>> = operands.iter().map(|o| o[ch]).collect();
                            if mode == Mode::Lossy && bn {
                                return at.get(2).copied().flatten();
                            }
                            ops::point(node, x[ch]?, &at)
                        })
                        .collect();
                    spoil(
                        &mut spoiler,
                        &x,
                        &y,
                        id,
                        map,
                        "has no known constant for a constant channel",
                    );
                    y
                }
                Role::Depthwise => {
                    let x = first(&vals)?;
                    let l = layer(g, id).ok_or_else(|| rule_err("a depthwise Conv is gone"))?;
                    let bias = match l.bias {
                        Some(b) => operand(id, b)?,
                        None => vec![Some(0.0); c],
                    };
                    let w = const_f32(g, id, l.kernel)?;
                    let padded = mode == Mode::Exact && pads_input(g, id);
                    let y: Vec<Option<f32>> = (0..c)
                        .map(|ch| {
                            let k = x[ch]?;
                            let s = w.index_axis(Axis(0), map.positions(ch)?.start);
                            if !s.iter().all(|v| v.is_finite()) {
                                return None;
                            }
                            if k == 0.0 {
                                return bias[ch];
                            }
                            if padded {
                                return None;
                            }
                            let sum: f64 = s.iter().map(|v| f64::from(*v)).sum();
                            Some((f64::from(bias[ch]?) + f64::from(k) * sum) as f32)
                        })
                        .collect();
                    spoil(
                        &mut spoiler,
                        &x,
                        &y,
                        id,
                        map,
                        "pads its input, so a nonzero constant channel is not constant at the border",
                    );
                    y
                }
                Role::Broadcast => {
                    let op = g.node(id).op_type();
                    let mut per_input: Vec<Vec<Option<f32>>> = Vec::new();
                    for (slot, u) in inputs.iter().enumerate() {
                        let u = u.ok_or_else(|| rule_err("a broadcast input is missing"))?;
                        per_input.push(match vals.get(&u) {
                            Some(m) => m.clone(),
                            None => operand(id, slot)?,
                        });
                    }
                    let y: Vec<Option<f32>> = (0..c)
                        .map(|ch| {
                            let xs: Vec<Option<f32>> = per_input.iter().map(|p| p[ch]).collect();
                            match op {
                                "Mul" if xs.contains(&Some(0.0)) => Some(0.0),
                                "Mul" => xs.iter().try_fold(1.0f32, |a, x| Some(a * (*x)?)),
                                "Add" => xs.iter().try_fold(0.0f32, |a, x| Some(a + (*x)?)),
                                "Sub" => Some(
                                    xs.first().copied().flatten()?
                                        - xs.get(1).copied().flatten()?,
                                ),
                                _ => None,
                            }
                        })
                        .collect();
                    let known: Vec<Option<f32>> = (0..c)
                        .map(|ch| per_input.iter().find_map(|p| p[ch]))
                        .collect();
                    let here = |ch: usize| map.positions(ch).is_some();
                    if spoiler.is_none()
                        && (0..c).any(|ch| here(ch) && known[ch].is_some() && y[ch].is_none())
                    {
                        let culprit = inputs.iter().enumerate().find(|(s, _)| {
                            (0..c).any(|ch| {
                                here(ch) && known[ch].is_some() && per_input[*s][ch].is_none()
                            })
                        });
                        let what = culprit
                            .and_then(|(_, u)| *u)
                            .map(|u| format!("`{}`", g.value_name(u)))
                            .unwrap_or_else(|| "an input".into());
                        spoiler = Some(format!(
                            "{} reads {what}, which is not constant in channels its other inputs are",
                            label(g, id)
                        ));
                    }
                    y
                }
            };
            vals.insert(v, out);
        }
    }
    // The consumers: what they read, and whether they can take it.
    let mut exact = vec![true; c];
    let mut consumers = Vec::new();
    for &(id, role) in &group.members {
        if role != Role::Consumer {
            continue;
        }
        let l = layer(g, id).ok_or_else(|| rule_err("a consumer is no longer a layer"))?;
        let x = g
            .input(id, l.act)
            .ok_or_else(|| rule_err("a consumer lost its input"))?;
        let mut read = vals
            .get(&x)
            .cloned()
            .ok_or_else(|| rule_err("a consumer reads a value outside the group"))?;
        let map = group
            .map_of(x)
            .ok_or_else(|| rule_err("a consumer reads a value outside the group"))?;
        let w = const_f32(g, id, l.kernel)?;
        let takes = takes_constant(g, id, mode);
        for (ch, r) in read.iter_mut().enumerate() {
            let Some(ps) = map.positions(ch) else {
                // Not in what this consumer reads (sliced or split away): it reads nothing.
                *r = Some(0.0);
                continue;
            };
            let finite = ps
                .into_iter()
                .all(|p| slice_all(&w, l.in_axis, p, f32::is_finite));
            let ok = match *r {
                Some(k) => finite && (k == 0.0 || takes.is_ok()),
                None => false,
            };
            if !ok && r.is_some() && spoiler.is_none() {
                spoiler = Some(match (&takes, finite) {
                    (_, false) => format!("{} has non-finite weights", label(g, id)),
                    (Err(why), _) => format!("{} {why}", label(g, id)),
                    (Ok(()), _) => format!("{} cannot take the constant", label(g, id)),
                });
            }
            if !ok {
                exact[ch] = false;
                if takes.is_err() || !finite {
                    *r = None;
                }
            }
        }
        consumers.push((id, read));
    }
    if consumers.is_empty() {
        exact.iter_mut().for_each(|e| *e = false);
    }
    let reason = (some_producer_zero && !exact.iter().any(|e| *e)).then(|| {
        spoiler.unwrap_or_else(|| "no channel is constant where the group's layers read it".into())
    });
    Ok(Reads {
        consumers,
        exact,
        reason,
    })
}
