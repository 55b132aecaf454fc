//! `P001 prune`: removes output channels (Conv) and hidden neurons (Gemm/MatMul) that are exactly
//! zero, together with every tensor coupled to them.
//!
//! **What:** a *coupled group* starts at a layer's output channels (Conv, ConvTranspose, Gemm,
//! MatMul with a constant kernel: the kernel's `out_axis` in the op table, [`crate::ops::weights`])
//! and follows the channel flow of the op table ([`crate::ops::flow`]) through `Pass` ops
//! (activations, pooling, BatchNormalization — whose per-channel inputs shrink too — PRelu, ...),
//! depthwise Conv (`group` = channels, one filter per channel: `group` shrinks with them) and the
//! elementwise `Add`, `Sub` and `Mul` (every other input with that channel dim joins the group: a
//! residual Add couples its two producers; a constant operand shrinks along that axis), up to the
//! consuming layers' input axis (`in_axis`). With `--prune-zero` (the only criterion so far, and
//! what `--rules prune` does without flags) channel `c` of a group is removed when what every
//! consuming layer reads is provably 0 at `c`. Zero channels follow the group in dependency order:
//! a producer's are those whose kernel slice and bias are 0; a `Pass` op keeps those it maps from
//! 0 to 0 (Relu yes; BatchNormalization only where `beta = 0` and `mean·scale = 0`; Sigmoid
//! never), a depthwise Conv those where its bias is 0, `Add`/`Sub` those 0 in every input, `Mul`
//! those 0 in some input (a squeeze-excitation gate shrinks with the branch it gates). One patch
//! per group slices the producers' kernels and biases, the per-channel parameters, the constant
//! operands, the consumers' kernels and the depthwise `group`; the old constants are removed and
//! the new ones keep their names. At least one channel stays in every group.
//!
//! **Why:** training frameworks leave pruned channels in exported models as zeros; removing them
//! makes the model really smaller and faster, through residual connections, without going back
//! to the training framework.
//!
//! **Example:** `h = Relu(x·W1 + b1)` with `W1[64,512]` whose columns 0..170 and `b1[0..170]` are
//! 0, `y = h·W2[512,10]` → `W1[64,342]`, `b1[342]`, `W2[342,10]`.
//!
//! **Exact:** yes: ops inside a group act channel by channel, so channel `c` of any of its tensors
//! reaches the outside only through what the consuming layers read at `c`, which is 0 (for finite
//! inputs: `0·x = 0`); removed kernel slices are finite, so they contributed exactly 0. Only the
//! order of additions of the remaining terms may change (tolerance 1e-6).
//!
//! Declared shapes (`value_info`) of the group's values get the new channel count.
//!
//! **Barriers, skipped with a reason naming the node:** graph outputs, values read by subgraphs,
//! Concat, Split, Slice, Reshape/Flatten, Transpose, Resize, Pad, grouped (non-depthwise) Conv, unknown ops and every
//! op the table calls a barrier, channel dims the facts do not know, weights that are not
//! constant float32 or that are also read outside the group.

mod group;
mod zero;

use std::collections::{HashMap, HashSet};

use ndarray::{ArrayD, Axis};

use super::util::make_attr_i;
use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, NodeId, ValueRef};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};
use group::{closure, layer, Group, Role};
use zero::{slice_all, zero_channels};

/// Options of the `prune` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneConfig {
    /// `--prune-zero`: remove channels that are exactly zero. The only criterion so far, so the
    /// rule acts as if it were set when it is not.
    pub zero: bool,
}

/// See the module docs.
pub struct Prune;

/// The f32 contents of input `slot` of `id` (checked constant float32 by the walk).
fn const_f32(g: &Graph, id: NodeId, slot: usize) -> Result<ArrayD<f32>> {
    let v = g
        .input(id, slot)
        .ok_or_else(|| rule_err("a cut operand is missing"))?;
    let t = g
        .const_tensor(v)
        .ok_or_else(|| rule_err("a cut operand is not constant"))?;
    tensor::to_f32(t)
}

fn rule_err(reason: impl Into<String>) -> Error {
    Error::Rule {
        rule: "prune".into(),
        reason: reason.into(),
    }
}

/// The channels to remove from `group` (at least one stays), or why none.
fn plan(g: &Graph, group: &Group) -> Result<std::result::Result<Vec<usize>, Option<String>>> {
    let (zero, reason) = zero_channels(g, group)?;
    let mut remove: Vec<usize> = (0..group.channels).filter(|c| zero[*c]).collect();
    if remove.len() == group.channels {
        remove.remove(0);
    }
    Ok(if remove.is_empty() {
        Err(reason)
    } else {
        Ok(remove)
    })
}

impl Rule for Prune {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "P001",
            name: "prune",
            group: "prune",
            summary: "remove channels and neurons that are exactly zero, with every tensor coupled to them (--prune-zero)",
            exactness: Exactness::Exact { tolerance: 1e-6 },
        }
    }

    fn find(&self, model: &Model, _config: &Config) -> Findings {
        let g = &model.graph;
        let mut f = Findings::default();
        let starts: Vec<NodeId> = g
            .ops()
            .into_iter()
            .filter(|id| layer(g, *id).is_some())
            .collect();
        if starts.is_empty() {
            return f;
        }
        let facts = g.facts();
        let mut done: HashSet<NodeId> = HashSet::new();
        for id in starts {
            if done.contains(&id) {
                continue;
            }
            let Some(group) = closure(g, &facts, id) else {
                continue;
            };
            let (group, barrier) = group;
            let producers: Vec<NodeId> = group
                .members
                .iter()
                .filter(|(_, r)| *r == Role::Producer)
                .map(|(n, _)| *n)
                .collect();
            done.extend(producers.iter().copied());
            match barrier {
                None => match plan(g, &group) {
                    Ok(Ok(remove)) => f.matches.push(Match {
                        anchor: id,
                        nodes: group.members.iter().map(|(n, _)| *n).collect(),
                        what: format!(
                            "remove {} of {} zero channels after {}",
                            remove.len(),
                            group.channels,
                            producers
                                .iter()
                                .map(|p| format!("`{}`", g.node(*p).label()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }),
                    Ok(Err(Some(reason))) => f.skip(model, id, reason),
                    Ok(Err(None)) => {}
                    Err(e) => f.skip(model, id, e.to_string()),
                },
                Some((_, reason)) => {
                    // Reported only when the start has zero channels to lose.
                    if start_has_zero_channel(g, id) {
                        f.skip(model, id, format!("its channels reach a barrier: {reason}"));
                    }
                }
            }
        }
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, _config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let facts = g.facts();
        let group = match closure(g, &facts, m.anchor) {
            Some((group, None)) => group,
            Some((_, Some((_, reason)))) => return Err(rule_err(reason)),
            None => return Err(rule_err("the anchor is no longer a layer")),
        };
        let remove = match plan(g, &group)? {
            Ok(r) => r,
            Err(reason) => {
                return Err(rule_err(
                    reason.unwrap_or_else(|| "no channel is zero any more".into()),
                ))
            }
        };
        let removed: HashSet<usize> = remove.iter().copied().collect();
        let keep: Vec<usize> = (0..group.channels)
            .filter(|c| !removed.contains(c))
            .collect();
        let mut p = Patch::new(m.what.clone(), Some(m.anchor));
        // Every cut constant, with the axes it is cut along and the (node, slot) pairs reading it.
        let mut by_value: Vec<(ValueRef, Vec<usize>, Vec<(NodeId, usize)>)> = Vec::new();
        for k in &group.cuts {
            let v = g
                .input(k.node, k.slot)
                .ok_or_else(|| rule_err("a cut operand is missing"))?;
            match by_value.iter_mut().find(|(u, _, _)| *u == v) {
                Some((_, axes, readers)) => {
                    if !axes.contains(&k.axis) {
                        axes.push(k.axis);
                    }
                    readers.push((k.node, k.slot));
                }
                None => by_value.push((v, vec![k.axis], vec![(k.node, k.slot)])),
            }
        }
        let depthwise: Vec<NodeId> = group
            .members
            .iter()
            .filter(|(_, r)| *r == Role::Depthwise)
            .map(|(n, _)| *n)
            .collect();
        let mut new_of: HashMap<(NodeId, usize), Wire> = HashMap::new();
        for (v, axes, mut readers) in by_value {
            readers.sort();
            readers.dedup();
            let mut all = g.consumers(v);
            all.sort();
            if all != readers || g.is_graph_output(v) || g.is_captured(v) {
                return Err(rule_err(format!(
                    "`{}` is also read outside the group",
                    g.value_name(v)
                )));
            }
            let t = g.const_tensor(v).ok_or_else(|| rule_err("not constant"))?;
            let mut a = tensor::to_f32(t)?;
            for ax in axes {
                a = a.select(Axis(ax), &keep);
            }
            let name = g.value_name(v).to_string();
            let w = p.add_initializer(tensor::from_f32(&name, &a));
            for (n, s) in readers {
                new_of.insert((n, s), w);
                if !depthwise.contains(&n) {
                    p.rewire(n, s, Some(w));
                }
            }
            p.remove(v.node);
            p.keep_name(v, w);
        }
        for id in depthwise {
            let mut node = g.node(id).op().expect("an op").clone();
            node.attribute
                .retain(|a| a.name.as_deref() != Some("group"));
            node.attribute.push(make_attr_i("group", keep.len() as i64));
            let inputs: Vec<Option<Wire>> = g
                .node_inputs(id)
                .into_iter()
                .enumerate()
                .map(|(s, v)| new_of.get(&(id, s)).copied().or(v.map(Wire::Value)))
                .collect();
            node.input = vec![String::new(); inputs.len()];
            let old = ValueRef { node: id, slot: 0 };
            let new = p.add_op(node, &inputs);
            p.shunt(old, new[0]);
            p.keep_name(old, new[0]);
            p.remove(id);
        }
        // Declared shapes (`value_info`) of the group's values follow their channel dim.
        for (v, axis) in &group.values {
            p.set_declared_dim(g.value_name(*v), *axis, keep.len() as i64);
        }
        Ok(p)
    }

    fn independent_matches(&self) -> bool {
        // Each rewrite rebuilds its group from the anchor on the current graph, and groups share
        // no member whose identity a rewrite changes (only depthwise Convs are replaced, and a
        // depthwise Conv belongs to one group).
        true
    }
}

/// Whether some output channel of the start layer `id` has a zero kernel slice (and bias): the
/// groups whose barrier is worth reporting.
fn start_has_zero_channel(g: &Graph, id: NodeId) -> bool {
    let Some(l) = layer(g, id) else { return false };
    let Ok(w) = const_f32(g, id, l.kernel) else {
        return false;
    };
    let bias = l.bias.and_then(|b| const_f32(g, id, b).ok());
    (0..w.shape()[l.out_axis]).any(|c| {
        slice_all(&w, l.out_axis, c, |x| x == 0.0)
            && bias.as_ref().is_none_or(|b| {
                b.len() == 1 && b.iter().all(|x| *x == 0.0)
                    || b.iter().nth(c).is_some_and(|x| *x == 0.0)
            })
    })
}
