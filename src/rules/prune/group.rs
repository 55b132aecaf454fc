//! Coupled groups of `prune`: from a layer's output channels, every value and constant whose
//! channel axis must shrink together, following the op table's channel flow (explicit work
//! list, no recursion), or the barrier that stops it.

use std::collections::{HashMap, HashSet};

use crate::ir::facts::Facts;
use crate::ir::{Graph, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::ops::{self, Flow, WeightRole};

/// Ops whose channel input is a layer's activation, with the kernel's slots and axes.
pub(super) struct Layer {
    /// Activation input slot.
    pub(super) act: usize,
    /// Kernel slot.
    pub(super) kernel: usize,
    /// Kernel axis of the output channels (normalised).
    pub(super) out_axis: usize,
    /// Kernel axis of the input channels (normalised).
    pub(super) in_axis: usize,
    /// Bias slot, its axis (normalised), when the op has one connected.
    pub(super) bias: Option<usize>,
    /// `group` attribute.
    pub(super) groups: i64,
}

/// Kernel and bias operands of `id` when it is a Conv, ConvTranspose, Gemm or MatMul whose kernel
/// is a constant (axes from the op table).
pub(super) fn layer(g: &Graph, id: NodeId) -> Option<Layer> {
    let n = g.node(id);
    let p = n.op()?;
    if !n.domain().is_empty()
        || !matches!(n.op_type(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul")
        || ops::flow(p) != Flow::Layer
    {
        return None;
    }
    let ws = ops::weights(p);
    let k = ws.iter().find(|w| w.role == WeightRole::Kernel)?;
    let kv = g.input(id, k.input)?;
    let kt = g.const_tensor(kv)?;
    let rank = kt.dims.len() as i64;
    let norm = |a: i64| -> Option<usize> {
        let a = if a < 0 { a + rank } else { a };
        (0..rank).contains(&a).then_some(a as usize)
    };
    let bias = ws
        .iter()
        .find(|w| w.role == WeightRole::Bias)
        .map(|w| w.input)
        .filter(|s| g.input(id, *s).is_some());
    Some(Layer {
        act: if k.input == 0 { 1 } else { 0 },
        kernel: k.input,
        out_axis: norm(k.out_axis?)?,
        in_axis: norm(k.in_axis?)?,
        bias,
        groups: k.groups,
    })
}

/// The channel axis of a layer's activation input or output of rank `rank`.
pub(super) fn act_axis(g: &Graph, id: NodeId, rank: usize) -> Option<usize> {
    match g.node(id).op_type() {
        "Conv" | "ConvTranspose" | "Gemm" => Some(1),
        _ => rank.checked_sub(1),
    }
}

/// Whether `id` is a Gemm reading its activation transposed (then the channel is axis 0).
pub(super) fn trans_a(g: &Graph, id: NodeId) -> bool {
    g.node(id).op_type() == "Gemm" && g.node(id).attr("transA").and_then(|a| a.i).unwrap_or(0) != 0
}

/// A constant operand of a group member to cut along `axis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    pub(super) node: NodeId,
    pub(super) slot: usize,
    pub(super) axis: usize,
}

/// What a group member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// Its output channels are the group's; `kernel` axis `out_axis` is cut.
    Producer,
    /// Its input channels are the group's.
    Consumer,
    /// A `Pass` op.
    Pass,
    /// `Add`, `Sub` or `Mul`.
    Broadcast,
    /// A depthwise Conv with one filter per channel.
    Depthwise,
}

/// A coupled group: every value whose channel axis shrinks together, and the members.
#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) channels: usize,
    pub(super) values: Vec<(ValueRef, usize)>,
    pub(super) members: Vec<(NodeId, Role)>,
    pub(super) cuts: Vec<Cut>,
}

/// Why a group cannot be pruned: the node and the reason.
pub(super) type Barrier = (NodeId, String);

pub(super) fn label(g: &Graph, id: NodeId) -> String {
    let n = g.node(id);
    format!("`{}` ({})", n.label(), n.op_type())
}

/// The known dim `axis` of `v`.
pub(super) fn dim(facts: &Facts, v: ValueRef, axis: usize) -> Option<i64> {
    facts
        .get(v)
        .shape
        .as_ref()?
        .get(axis)
        .and_then(|d| d.known())
}

pub(super) fn rank(facts: &Facts, v: ValueRef) -> Option<usize> {
    facts.get(v).rank()
}

pub(super) struct Walk<'a> {
    g: &'a Graph,
    facts: &'a Facts,
    group: Group,
    seen_values: HashMap<ValueRef, usize>,
    roles: HashSet<(NodeId, u8)>,
    work: Vec<(ValueRef, usize)>,
}

impl Walk<'_> {
    fn barrier(&self, id: NodeId, why: impl Into<String>) -> Barrier {
        (id, format!("{} {}", label(self.g, id), why.into()))
    }

    fn push(&mut self, v: ValueRef, axis: usize) -> std::result::Result<(), Barrier> {
        match self.seen_values.get(&v) {
            Some(a) if *a == axis => Ok(()),
            Some(_) => Err(self.barrier(
                v.node,
                format!(
                    "gives `{}`, reached on two different channel axes",
                    self.g.value_name(v)
                ),
            )),
            None => {
                self.seen_values.insert(v, axis);
                self.work.push((v, axis));
                Ok(())
            }
        }
    }

    /// Adds `id` with `role`; `false` when it was already there.
    fn join(&mut self, id: NodeId, role: Role) -> bool {
        if self.roles.insert((id, role as u8)) {
            self.group.members.push((id, role));
            true
        } else {
            false
        }
    }

    /// A constant operand `slot` of `id`, cut along `axis` when `cut`; a barrier unless constant
    /// float32.
    fn constant(
        &mut self,
        id: NodeId,
        slot: usize,
        axis: Option<usize>,
    ) -> std::result::Result<(), Barrier> {
        let v = self
            .g
            .input(id, slot)
            .ok_or_else(|| self.barrier(id, format!("has no input {slot}")))?;
        let t = self.g.const_tensor(v).ok_or_else(|| {
            self.barrier(
                id,
                format!("reads `{}`, which is not a constant", self.g.value_name(v)),
            )
        })?;
        if t.data_type != Some(DataType::Float as i32) {
            return Err(self.barrier(
                id,
                format!("reads `{}`, which is not float32", self.g.value_name(v)),
            ));
        }
        if let Some(axis) = axis {
            let c = self.group.channels as i64;
            if t.dims.get(axis) != Some(&c) {
                return Err(self.barrier(
                    id,
                    format!(
                        "reads `{}` of dims {:?}, not {c} along axis {axis}",
                        self.g.value_name(v),
                        t.dims
                    ),
                ));
            }
            self.group.cuts.push(Cut {
                node: id,
                slot,
                axis,
            });
        }
        Ok(())
    }

    /// The group value `v` (channel axis `axis`) comes from `id`.
    fn producer_side(&mut self, v: ValueRef, axis: usize) -> std::result::Result<(), Barrier> {
        let g = self.g;
        let id = v.node;
        let Some(p) = g.node(id).op() else {
            return Err((
                id,
                format!("`{}` is a graph input or constant", g.value_name(v)),
            ));
        };
        if let Some(l) = layer(g, id) {
            let r = rank(self.facts, v).unwrap_or(0);
            let conv_like = matches!(g.node(id).op_type(), "Conv" | "ConvTranspose");
            if conv_like && l.groups != 1 {
                return self.depthwise(id, axis);
            }
            if v.slot != 0 || l.act == 1 || trans_a(g, id) || act_axis(g, id, r) != Some(axis) {
                return Err(
                    self.barrier(id, "gives the channels on an axis pruning does not follow")
                );
            }
            if self.join(id, Role::Producer) {
                self.constant(id, l.kernel, Some(l.out_axis))?;
                if let Some(b) = l.bias {
                    self.bias(id, b)?;
                }
            }
            return Ok(());
        }
        match ops::flow(p) {
            Flow::Pass { .. } => self.pass(id, axis),
            Flow::Broadcast => self.broadcast(id, axis),
            _ => Err(self.barrier(id, "is a barrier to channel pruning")),
        }
    }

    /// A producer's bias: cut along its last axis when it holds the channels, kept when it is
    /// one value.
    fn bias(&mut self, id: NodeId, slot: usize) -> std::result::Result<(), Barrier> {
        let v = self.g.input(id, slot).expect("checked connected");
        let dims = self
            .g
            .const_tensor(v)
            .map(|t| t.dims.clone())
            .unwrap_or_default();
        let c = self.group.channels as i64;
        if dims.iter().product::<i64>() == 1 {
            self.constant(id, slot, None)
        } else if dims.last() == Some(&c) && dims.len() <= 2 {
            self.constant(id, slot, Some(dims.len() - 1))
        } else {
            Err(self.barrier(id, format!("has a bias of dims {dims:?}")))
        }
    }

    fn depthwise(&mut self, id: NodeId, axis: usize) -> std::result::Result<(), Barrier> {
        let g = self.g;
        let l = layer(g, id).expect("a layer");
        let c = self.group.channels as i64;
        let w = g.input(id, l.kernel).and_then(|v| g.const_tensor(v));
        let one_per_channel = g.node(id).op_type() == "Conv"
            && l.groups == c
            && w.is_some_and(|t| t.dims.len() >= 2 && t.dims[0] == c && t.dims[1] == 1);
        if !one_per_channel || axis != 1 {
            return Err(self.barrier(
                id,
                format!(
                    "is a grouped Conv (group {}) with other than one filter per channel",
                    l.groups
                ),
            ));
        }
        if self.join(id, Role::Depthwise) {
            self.constant(id, l.kernel, Some(0))?;
            if let Some(b) = l.bias {
                self.constant(id, b, Some(0))?;
            }
            let x = g
                .input(id, 0)
                .ok_or_else(|| self.barrier(id, "has no input"))?;
            self.push(x, 1)?;
            self.push(ValueRef { node: id, slot: 0 }, 1)?;
        }
        Ok(())
    }

    fn pass(&mut self, id: NodeId, axis: usize) -> std::result::Result<(), Barrier> {
        let g = self.g;
        let op = g.node(id).op_type();
        if matches!(op, "Resize" | "Pad") {
            return Err(self.barrier(id, "may change the channel axis"));
        }
        if !self.join(id, Role::Pass) {
            return Ok(());
        }
        let Flow::Pass { per_channel } = ops::flow(g.node(id).op().expect("an op")) else {
            unreachable!("checked Pass")
        };
        for s in 1..g.node(id).num_outputs() {
            if g.is_used(ValueRef { node: id, slot: s }) {
                return Err(self.barrier(id, format!("has its output {s} used")));
            }
        }
        for &s in per_channel {
            let Some(v) = g.input(id, s) else { continue };
            let numel = g.const_tensor(v).map(|t| t.dims.iter().product::<i64>());
            if numel == Some(1) {
                self.constant(id, s, None)?;
            } else {
                self.constant(id, s, Some(0))?;
            }
        }
        let x = g
            .input(id, 0)
            .ok_or_else(|| self.barrier(id, "has no input"))?;
        self.push(x, axis)?;
        self.push(ValueRef { node: id, slot: 0 }, axis)
    }

    /// `id` (Add, Sub or Mul) gives channel axis `out_axis`: its output and every input with the
    /// channel dim there join; other inputs broadcast over the channels.
    fn broadcast(&mut self, id: NodeId, out_axis: usize) -> std::result::Result<(), Barrier> {
        let g = self.g;
        if !matches!(g.node(id).op_type(), "Add" | "Sub" | "Mul") {
            return Err(self.barrier(
                id,
                "is an elementwise op pruning does not follow (only Add, Sub, Mul)",
            ));
        }
        if !self.join(id, Role::Broadcast) {
            return Ok(());
        }
        let out = ValueRef { node: id, slot: 0 };
        let r_out = rank(self.facts, out)
            .ok_or_else(|| self.barrier(id, "has an output of unknown rank"))?;
        self.push(out, out_axis)?;
        let c = self.group.channels as i64;
        for (slot, u) in g.node_inputs(id).into_iter().enumerate() {
            let u = u.ok_or_else(|| self.barrier(id, "has a missing input"))?;
            let r_u = rank(self.facts, u)
                .ok_or_else(|| self.barrier(id, "has an input of unknown rank"))?;
            let Some(au) = (out_axis + r_u).checked_sub(r_out) else {
                continue;
            };
            match dim(self.facts, u, au) {
                Some(1) => {}
                Some(d) if d == c => {
                    if g.const_tensor(u).is_some() {
                        self.constant(id, slot, Some(au))?;
                    } else {
                        self.push(u, au)?;
                    }
                }
                _ => {
                    return Err(self.barrier(
                        id,
                        format!(
                            "reads `{}`, whose channel dim is not known",
                            g.value_name(u)
                        ),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The group value `v` (channel axis `axis`) is read by `c` at `slot`.
    fn consumer_side(
        &mut self,
        c: NodeId,
        slot: usize,
        axis: usize,
    ) -> std::result::Result<(), Barrier> {
        let g = self.g;
        let Some(p) = g.node(c).op() else {
            unreachable!("only operators read values")
        };
        if let Some(l) = layer(g, c) {
            let conv_like = matches!(g.node(c).op_type(), "Conv" | "ConvTranspose");
            if conv_like && l.groups != 1 {
                if slot != 0 {
                    return Err(self.barrier(c, "reads the channels as a weight"));
                }
                return self.depthwise(c, axis);
            }
            let r = g
                .input(c, slot)
                .and_then(|v| rank(self.facts, v))
                .unwrap_or(0);
            if slot != l.act || trans_a(g, c) || act_axis(g, c, r) != Some(axis) {
                return Err(
                    self.barrier(c, "reads the channels on an input pruning does not follow")
                );
            }
            if self.join(c, Role::Consumer) {
                self.constant(c, l.kernel, Some(l.in_axis))?;
            }
            return Ok(());
        }
        match ops::flow(p) {
            Flow::Pass { .. } if slot == 0 => self.pass(c, axis),
            Flow::Broadcast => {
                let u = g.input(c, slot).expect("it reads it");
                let out = ValueRef { node: c, slot: 0 };
                let (Some(r_u), Some(r_out)) = (rank(self.facts, u), rank(self.facts, out)) else {
                    return Err(self.barrier(c, "has operands of unknown rank"));
                };
                match (axis + r_out).checked_sub(r_u) {
                    Some(a) => self.broadcast(c, a),
                    None => Err(self.barrier(c, "has an input of higher rank than its output")),
                }
            }
            _ => Err(self.barrier(c, "is a barrier to channel pruning")),
        }
    }

    fn value(&mut self, v: ValueRef, axis: usize) -> std::result::Result<(), Barrier> {
        let g = self.g;
        let name = g.value_name(v);
        if g.is_graph_output(v) {
            return Err((v.node, format!("`{name}` is a graph output")));
        }
        if g.is_captured(v) {
            return Err((v.node, format!("`{name}` is read by a subgraph")));
        }
        let c = self.group.channels as i64;
        match dim(self.facts, v, axis) {
            Some(d) if d == c => {}
            Some(d) => {
                return Err((
                    v.node,
                    format!("`{name}` has {d} channels on axis {axis}, not {c}"),
                ))
            }
            None => return Err((v.node, format!("the channel dim of `{name}` is not known"))),
        }
        self.producer_side(v, axis)?;
        for (c, slot) in g.consumers(v) {
            self.consumer_side(c, slot, axis)?;
        }
        Ok(())
    }
}

/// The coupled group that starts at producer `start`'s output channels, and the barrier that
/// stopped the walk, if one did (the group is then partial). `None` when `start` is not a producer pruning knows.
pub(super) fn closure(g: &Graph, facts: &Facts, start: NodeId) -> Option<(Group, Option<Barrier>)> {
    let l = layer(g, start)?;
    if matches!(g.node(start).op_type(), "Conv" | "ConvTranspose") && l.groups != 1 {
        return None;
    }
    if l.act != 0 || trans_a(g, start) {
        return None;
    }
    let kt = g.const_tensor(g.input(start, l.kernel)?)?;
    let channels = usize::try_from(*kt.dims.get(l.out_axis)?).ok()?;
    let out = ValueRef {
        node: start,
        slot: 0,
    };
    let axis = act_axis(g, start, rank(facts, out).unwrap_or(0))?;
    let mut w = Walk {
        g,
        facts,
        group: Group {
            channels,
            ..Default::default()
        },
        seen_values: HashMap::new(),
        roles: HashSet::new(),
        work: Vec::new(),
    };
    let run = |w: &mut Walk| -> std::result::Result<(), Barrier> {
        w.push(out, axis)?;
        while let Some((v, a)) = w.work.pop() {
            w.value(v, a)?;
        }
        Ok(())
    };
    let barrier = run(&mut w).err();
    w.group.values = w.seen_values.into_iter().collect();
    w.group.values.sort();
    Some((w.group, barrier))
}
