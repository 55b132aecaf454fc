//! The ops that move a group's channels, rewritten for the channels that go: a `Split`'s sizes
//! shrink by the removed channels in each output, a `Slice`'s bounds on the channel axis move
//! down by the removed channels before them, a `Reshape`'s explicit `C·H·W` shrinks by the
//! removed blocks (a `-1` stays valid). `Concat` and `Flatten` need nothing. Where each op
//! spells these numbers (attribute or input, by opset) is the op table's
//! ([`crate::ops::moves`]).

use ndarray::Array1;

use super::group::{dim, rank, Group, Role};
use super::rule_err;
use crate::error::Result;
use crate::ir::facts::{Dim, Facts};
use crate::ir::{tensor, Graph, NodeId, ValueRef};
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::ops::moves::{self, Spelling};
use crate::rewrite::{Patch, Wire};
use crate::rules::util::make_attr_ints;

/// Adds to `p` the rewrite of every Split, Slice and Reshape of `group` for the removed group
/// channels `remove`.
pub(super) fn rewrite(
    g: &Graph,
    p: &mut Patch,
    group: &Group,
    remove: &[usize],
    opset: i64,
    facts: &Facts,
) -> Result<()> {
    for &(id, role) in &group.members {
        match role {
            Role::Split => split(g, p, group, id, remove, opset, facts)?,
            Role::Slice => slice(g, p, group, id, remove, opset, facts)?,
            Role::Reshape => reshape(g, p, group, id, remove, facts)?,
            _ => {}
        }
    }
    Ok(())
}

fn ints(name: &str, v: &[i64]) -> TensorProto {
    tensor::from_i64(name, &Array1::from(v.to_vec()).into_dyn())
}

/// `id` replaced by a copy with `attrs` changed and input `slot` (when given) read from a new
/// int64 constant `value`; every output keeps its name.
fn replace(
    g: &Graph,
    p: &mut Patch,
    id: NodeId,
    edit: impl FnOnce(&mut NodeProto),
    input: Option<(usize, &str, &[i64])>,
) {
    let mut node = g.node(id).op().expect("an op").clone();
    edit(&mut node);
    let mut inputs: Vec<Option<Wire>> = g
        .node_inputs(id)
        .into_iter()
        .map(|v| v.map(Wire::Value))
        .collect();
    if let Some((slot, name, value)) = input {
        let w = p.add_initializer(ints(name, value));
        if inputs.len() <= slot {
            inputs.resize(slot + 1, None);
        }
        inputs[slot] = Some(w);
    }
    node.input = vec![String::new(); inputs.len()];
    let n_out = node.output.len();
    let new = p.add_op(node, &inputs);
    for (slot, w) in new.iter().enumerate().take(n_out) {
        let old = ValueRef { node: id, slot };
        if g.node(id).output_name(slot).is_some_and(|n| !n.is_empty()) {
            p.shunt(old, *w);
            p.keep_name(old, *w);
        }
    }
    p.remove(id);
}

/// The positions of `id`'s input 0 on its channel axis that go, ascending, and the axis.
fn gone(
    group: &Group,
    g: &Graph,
    id: NodeId,
    remove: &[usize],
) -> Result<(Vec<usize>, usize, usize)> {
    let x = g
        .input(id, 0)
        .ok_or_else(|| rule_err("a moving op lost its input"))?;
    let m = group
        .map_of(x)
        .ok_or_else(|| rule_err("a moving op reads a value outside the group"))?;
    Ok((m.removed(remove), m.axis, m.dim))
}

fn split(
    g: &Graph,
    p: &mut Patch,
    group: &Group,
    id: NodeId,
    remove: &[usize],
    opset: i64,
    facts: &Facts,
) -> Result<()> {
    let (gone, axis, _) = gone(group, g, id, remove)?;
    if gone.is_empty() {
        return Ok(());
    }
    let mut sizes = Vec::new();
    let mut off = 0usize;
    for j in 0..g.node(id).num_outputs() {
        let d = dim(facts, ValueRef { node: id, slot: j }, axis)
            .and_then(|d| usize::try_from(d).ok())
            .ok_or_else(|| rule_err("a Split output's size is not known"))?;
        let lost = gone.iter().filter(|q| (off..off + d).contains(q)).count();
        if lost == d {
            return Err(rule_err("a Split output would be empty"));
        }
        sizes.push((d - lost) as i64);
        off += d;
    }
    let label = g.node(id).label();
    let drop = |n: &mut NodeProto| {
        n.attribute
            .retain(|a| !matches!(a.name.as_deref(), Some("split") | Some("num_outputs")))
    };
    match moves::split_sizes(opset) {
        Spelling::Attr(name) => {
            let sizes = sizes.clone();
            replace(
                g,
                p,
                id,
                |n| {
                    drop(n);
                    n.attribute.push(make_attr_ints(name, &sizes));
                },
                None,
            )
        }
        Spelling::Input(slot) => replace(
            g,
            p,
            id,
            drop,
            Some((slot, &format!("{label}_split"), &sizes)),
        ),
    }
    Ok(())
}

fn slice(
    g: &Graph,
    p: &mut Patch,
    group: &Group,
    id: NodeId,
    remove: &[usize],
    opset: i64,
    facts: &Facts,
) -> Result<()> {
    let (gone, axis, len) = gone(group, g, id, remove)?;
    if gone.is_empty() {
        return Ok(());
    }
    let x = g
        .input(id, 0)
        .ok_or_else(|| rule_err("a Slice lost its input"))?;
    let r = rank(facts, x).ok_or_else(|| rule_err("a Slice input's rank is not known"))?;
    let value = |s: usize| g.input(id, s).and_then(|v| facts.get(v).known_value());
    let node = g.node(id).op().ok_or_else(|| rule_err("not an op"))?;
    let params = moves::slice_params(node, opset, value)
        .ok_or_else(|| rule_err("a Slice's bounds are not known"))?;
    let Some((i, b, e)) = params.on_axis(axis, r, len as i64).map_err(rule_err)? else {
        return Ok(());
    };
    let before = |q: i64| q - gone.iter().filter(|p| (**p as i64) < q).count() as i64;
    let mut starts = params.starts.clone();
    let mut ends = params.ends.clone();
    starts[i] = before(b);
    ends[i] = before(e);
    match (params.starts_at, params.ends_at) {
        (Spelling::Input(s), Spelling::Input(t)) => {
            for (slot, v) in [(s, &starts), (t, &ends)] {
                let old = g
                    .input(id, slot)
                    .ok_or_else(|| rule_err("a Slice lost a bound"))?;
                let w = p.add_initializer(ints(g.value_name(old), v));
                p.rewire(id, slot, Some(w));
            }
        }
        (Spelling::Attr(sn), Spelling::Attr(en)) => replace(
            g,
            p,
            id,
            |n| {
                n.attribute
                    .retain(|a| a.name.as_deref() != Some(sn) && a.name.as_deref() != Some(en));
                n.attribute.push(make_attr_ints(sn, &starts));
                n.attribute.push(make_attr_ints(en, &ends));
            },
            None,
        ),
        _ => return Err(rule_err("a Slice spells its bounds two ways")),
    }
    Ok(())
}

fn reshape(
    g: &Graph,
    p: &mut Patch,
    group: &Group,
    id: NodeId,
    remove: &[usize],
    facts: &Facts,
) -> Result<()> {
    if g.node(id).op_type() != "Reshape" {
        return Ok(());
    }
    let y = ValueRef { node: id, slot: 0 };
    let m = group
        .map_of(y)
        .ok_or_else(|| rule_err("a Reshape's output is not in the group"))?;
    let shape = g
        .input(id, 1)
        .ok_or_else(|| rule_err("a Reshape lost its shape"))?;
    let target = facts.get(shape);
    if target
        .value
        .as_ref()
        .is_some_and(|t| t.len() == 2 && t[1] == Dim::K(-1))
    {
        return Ok(());
    }
    let target = target
        .known_value()
        .filter(|t| t.len() == 2)
        .ok_or_else(|| rule_err("a Reshape's target is not known"))?;
    let new = [target[0], (m.dim - m.removed(remove).len()) as i64];
    let w = p.add_initializer(ints(g.value_name(shape), &new));
    p.rewire(id, 1, Some(w));
    Ok(())
}
