//! Coupled groups of `prune`: from a layer's output channels, every value and constant whose
//! channel axis must shrink together, following the op table's channel flow (explicit work
//! list, no recursion), or the barrier that stops it.
//!
//! Each value of a group carries a [`Map`]: where the group's channels sit on its channel axis.
//! It is the identity at the producers; a `Concat` shifts it by the sizes of the inputs before
//! (the other inputs' channels are other groups', or constants, and stay); a `Split` or `Slice`
//! on the channel axis keeps the channels inside each output's range, renumbered from its start
//! (the others are not in that output); a `Flatten` (or a `Reshape` to `[N, C·H·W]`) makes each
//! channel a block of `H·W` consecutive positions. Everything else acts position by position.

use std::collections::{HashMap, HashSet};

use crate::ir::facts::{Dim, Facts};
use crate::ir::{Graph, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::NodeProto;
use crate::ops::{self, moves, Flow, WeightRole};

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

/// Where the group's channels sit on one axis of a value or constant: channel `c` of the group,
/// for `lo ≤ c < hi`, is positions `[base + c·block, base + (c+1)·block)` of axis `axis`, of
/// size `dim`; the group's other channels are not in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Map {
    pub(super) axis: usize,
    pub(super) dim: usize,
    pub(super) lo: usize,
    pub(super) hi: usize,
    pub(super) base: i64,
    pub(super) block: usize,
}

impl Map {
    /// A producer's own `c` channels on `axis`.
    pub(super) fn identity(axis: usize, c: usize) -> Map {
        Map {
            axis,
            dim: c,
            lo: 0,
            hi: c,
            base: 0,
            block: 1,
        }
    }

    /// The same placement on another axis (of a constant operand, say).
    pub(super) fn on(self, axis: usize) -> Map {
        Map { axis, ..self }
    }

    /// The positions of group channel `c`, when it is in this value.
    pub(super) fn positions(&self, c: usize) -> Option<std::ops::Range<usize>> {
        if c < self.lo || c >= self.hi {
            return None;
        }
        let s = usize::try_from(self.base + (c * self.block) as i64).ok()?;
        Some(s..s + self.block)
    }

    /// The placement in a value whose position `p + by` is this one's `p`, of size `dim`.
    fn shifted(self, by: i64, dim: usize) -> Map {
        Map {
            base: self.base + by,
            dim,
            ..self
        }
    }

    /// The channels inside positions `[s, e)`, renumbered from `s`: `Ok(None)` when none is,
    /// `Err` when a channel's block is cut by a bound.
    fn within(self, s: i64, e: i64) -> std::result::Result<Option<Map>, ()> {
        let b = self.block as i64;
        let (lo, hi) = (self.lo as i64, self.hi as i64);
        let touch = (
            (s - self.base).div_euclid(b).max(lo),
            (e - self.base + b - 1).div_euclid(b).min(hi),
        );
        let inside = (
            (s - self.base + b - 1).div_euclid(b).max(lo),
            (e - self.base).div_euclid(b).min(hi),
        );
        if touch.1 > touch.0 && touch != inside {
            return Err(());
        }
        if inside.1 <= inside.0 {
            return Ok(None);
        }
        Ok(Some(Map {
            lo: inside.0 as usize,
            hi: inside.1 as usize,
            base: self.base - s,
            dim: (e - s) as usize,
            ..self
        }))
    }

    /// The positions removed with the group channels `remove` (ascending in, ascending out).
    pub(super) fn removed(&self, remove: &[usize]) -> Vec<usize> {
        remove
            .iter()
            .filter_map(|c| self.positions(*c))
            .flatten()
            .collect()
    }

    /// The positions kept when the group channels `remove` go, ascending.
    pub(super) fn kept(&self, remove: &[usize]) -> Vec<usize> {
        let gone: HashSet<usize> = self.removed(remove).into_iter().collect();
        (0..self.dim).filter(|p| !gone.contains(p)).collect()
    }
}

/// A constant operand of a group member to cut where `map` places the removed channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cut {
    pub(super) node: NodeId,
    pub(super) slot: usize,
    pub(super) map: Map,
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
    /// A `Concat` on the channel axis: one of its inputs is the group's.
    Concat,
    /// A `Split` on the channel axis: its sizes shrink.
    Split,
    /// A `Slice`: its bounds on the channel axis move.
    Slice,
    /// A `Flatten` or `Reshape` to `[N, C·H·W]`: a `Reshape`'s explicit target shrinks.
    Reshape,
    /// A `Transpose`, `Squeeze` or `Unsqueeze` that keeps the channel axis (moved, perhaps):
    /// nothing of it changes.
    Move,
}

/// Whether `op` only moves, drops or inserts axes (of size 1): the channels keep their axis's
/// contents, wherever it goes.
fn moves_axes(op: &str) -> bool {
    matches!(op, "Transpose" | "Squeeze" | "Unsqueeze")
}

/// A coupled group: every value whose channel axis shrinks together, and the members.
#[derive(Debug, Default)]
pub(super) struct Group {
    pub(super) channels: usize,
    /// Sorted by value.
    pub(super) values: Vec<(ValueRef, Map)>,
    pub(super) members: Vec<(NodeId, Role)>,
    pub(super) cuts: Vec<Cut>,
}

impl Group {
    /// Where the group's channels sit in `v`, when it is one of the group's values.
    pub(super) fn map_of(&self, v: ValueRef) -> Option<Map> {
        self.values
            .binary_search_by(|(u, _)| u.cmp(&v))
            .ok()
            .map(|i| self.values[i].1)
    }
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
    opset: i64,
    group: Group,
    seen_values: HashMap<ValueRef, Map>,
    roles: HashSet<(NodeId, u8)>,
    /// The input through which each `Concat` of the group takes the group's channels.
    concat_slot: HashMap<NodeId, usize>,
    work: Vec<(ValueRef, Map)>,
}

type Step = std::result::Result<(), Barrier>;

impl Walk<'_> {
    fn barrier(&self, id: NodeId, why: impl Into<String>) -> Barrier {
        (id, format!("{} {}", label(self.g, id), why.into()))
    }

    fn op(&self, id: NodeId) -> &NodeProto {
        self.g
            .node(id)
            .op()
            .expect("only operators make and read group values")
    }

    fn push(&mut self, v: ValueRef, map: Map) -> Step {
        match self.seen_values.get(&v) {
            Some(m) if *m == map => Ok(()),
            Some(m) if m.axis != map.axis => Err(self.barrier(
                v.node,
                format!(
                    "gives `{}`, reached on two different channel axes",
                    self.g.value_name(v)
                ),
            )),
            Some(_) => Err(self.barrier(
                v.node,
                format!(
                    "gives `{}`, which holds the group's channels at two different places",
                    self.g.value_name(v)
                ),
            )),
            None => {
                self.seen_values.insert(v, map);
                self.work.push((v, map));
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

    /// A constant operand `slot` of `id`, cut where `map` says when given; a barrier unless
    /// constant float32.
    fn constant(&mut self, id: NodeId, slot: usize, map: Option<Map>) -> Step {
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
        if let Some(map) = map {
            let c = map.dim as i64;
            if t.dims.get(map.axis) != Some(&c) {
                return Err(self.barrier(
                    id,
                    format!(
                        "reads `{}` of dims {:?}, not {c} along axis {}",
                        self.g.value_name(v),
                        t.dims,
                        map.axis
                    ),
                ));
            }
            self.group.cuts.push(Cut {
                node: id,
                slot,
                map,
            });
        }
        Ok(())
    }

    /// A constant int64 operand `slot` of `id` that a rewrite replaces (Split sizes, Slice
    /// bounds, Reshape target); a barrier otherwise.
    fn int64_constant(&self, id: NodeId, slot: usize, what: &str) -> Step {
        let t = self.g.input(id, slot).and_then(|v| self.g.const_tensor(v));
        match t {
            Some(t) if t.data_type == Some(DataType::Int64 as i32) => Ok(()),
            _ => Err(self.barrier(id, format!("has {what} that are not a constant int64"))),
        }
    }

    /// The known dim `axis` of `v`, or a barrier at `id`.
    fn known_dim(
        &self,
        id: NodeId,
        v: ValueRef,
        axis: usize,
    ) -> std::result::Result<usize, Barrier> {
        dim(self.facts, v, axis)
            .and_then(|d| usize::try_from(d).ok())
            .ok_or_else(|| {
                self.barrier(
                    id,
                    format!(
                        "has `{}` of unknown size along axis {axis}",
                        self.g.value_name(v)
                    ),
                )
            })
    }

    /// The group value `v` (placed by `map`) comes from `id`.
    fn producer_side(&mut self, v: ValueRef, map: Map) -> Step {
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
                return self.depthwise(id, map);
            }
            if v.slot != 0 || l.act == 1 || trans_a(g, id) || act_axis(g, id, r) != Some(map.axis) {
                return Err(
                    self.barrier(id, "gives the channels on an axis pruning does not follow")
                );
            }
            if map != Map::identity(map.axis, self.group.channels) {
                return Err(self.barrier(
                    id,
                    "gives channels that meet the group's at another place (through a Concat, Split or Slice)",
                ));
            }
            if self.join(id, Role::Producer) {
                self.constant(id, l.kernel, Some(map.on(l.out_axis)))?;
                if let Some(b) = l.bias {
                    self.bias(id, b)?;
                }
            }
            return Ok(());
        }
        let moved = |role: Role| self.roles.contains(&(id, role as u8));
        match ops::flow(p) {
            Flow::Pass { .. } => self.pass(id, map),
            Flow::Broadcast => self.broadcast(id, map),
            // Reached forward already: this output's placement came from the input's.
            Flow::Concat if moved(Role::Concat) => Ok(()),
            Flow::Split if moved(Role::Split) => Ok(()),
            Flow::Slice if moved(Role::Slice) => Ok(()),
            Flow::Reshape if moved(Role::Reshape) => Ok(()),
            Flow::Transpose | Flow::Reshape if moves_axes(g.node(id).op_type()) => {
                self.move_back(id, map)
            }
            Flow::Concat => self.concat_back(id, map),
            Flow::Split => self.split_back(id, v.slot, map),
            Flow::Slice => self.slice_back(id, map),
            Flow::Reshape => Err(self.barrier(
                id,
                "regroups the channels and is reached from its output (pruning follows Flatten and Reshape forward only)",
            )),
            _ => Err(self.barrier(id, "is a barrier to channel pruning")),
        }
    }

    /// A producer's bias: cut along its last axis when it holds the channels, kept when it is
    /// one value.
    fn bias(&mut self, id: NodeId, slot: usize) -> Step {
        let v = self.g.input(id, slot).expect("checked connected");
        let dims = self
            .g
            .const_tensor(v)
            .map(|t| t.dims.clone())
            .unwrap_or_default();
        let c = self.group.channels;
        if dims.iter().product::<i64>() == 1 {
            self.constant(id, slot, None)
        } else if dims.last() == Some(&(c as i64)) && dims.len() <= 2 {
            self.constant(id, slot, Some(Map::identity(dims.len() - 1, c)))
        } else {
            Err(self.barrier(id, format!("has a bias of dims {dims:?}")))
        }
    }

    fn depthwise(&mut self, id: NodeId, map: Map) -> Step {
        let g = self.g;
        let l = layer(g, id).expect("a layer");
        let c = map.dim as i64;
        let w = g.input(id, l.kernel).and_then(|v| g.const_tensor(v));
        let one_per_channel = g.node(id).op_type() == "Conv"
            && l.groups == c
            && w.is_some_and(|t| t.dims.len() >= 2 && t.dims[0] == c && t.dims[1] == 1);
        if !one_per_channel || map.axis != 1 {
            return Err(self.barrier(
                id,
                format!(
                    "is a grouped Conv (group {}) with other than one filter per channel",
                    l.groups
                ),
            ));
        }
        if self.join(id, Role::Depthwise) {
            self.constant(id, l.kernel, Some(map.on(0)))?;
            if let Some(b) = l.bias {
                self.constant(id, b, Some(map.on(0)))?;
            }
            let x = g
                .input(id, 0)
                .ok_or_else(|| self.barrier(id, "has no input"))?;
            self.push(x, map)?;
            self.push(ValueRef { node: id, slot: 0 }, map)?;
        }
        Ok(())
    }

    fn pass(&mut self, id: NodeId, map: Map) -> Step {
        let g = self.g;
        let op = g.node(id).op_type();
        if matches!(op, "Resize" | "Pad") {
            return Err(self.barrier(id, "may change the channel axis"));
        }
        if !self.join(id, Role::Pass) {
            return Ok(());
        }
        let Flow::Pass { per_channel } = ops::flow(self.op(id)) else {
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
                self.constant(id, s, Some(map.on(0)))?;
            }
        }
        let x = g
            .input(id, 0)
            .ok_or_else(|| self.barrier(id, "has no input"))?;
        self.push(x, map)?;
        self.push(ValueRef { node: id, slot: 0 }, map)
    }

    /// `id` (Add, Sub or Mul) gives the channels where `out` places them: its output and every
    /// input with the channel dim there join; other inputs broadcast over the channels.
    fn broadcast(&mut self, id: NodeId, out: Map) -> Step {
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
        let y = ValueRef { node: id, slot: 0 };
        let r_out =
            rank(self.facts, y).ok_or_else(|| self.barrier(id, "has an output of unknown rank"))?;
        self.push(y, out)?;
        for (slot, u) in g.node_inputs(id).into_iter().enumerate() {
            let u = u.ok_or_else(|| self.barrier(id, "has a missing input"))?;
            let r_u = rank(self.facts, u)
                .ok_or_else(|| self.barrier(id, "has an input of unknown rank"))?;
            let Some(au) = (out.axis + r_u).checked_sub(r_out) else {
                continue;
            };
            match dim(self.facts, u, au) {
                Some(1) => {}
                Some(d) if d == out.dim as i64 => {
                    if g.const_tensor(u).is_some() {
                        self.constant(id, slot, Some(out.on(au)))?;
                    } else {
                        self.push(u, out.on(au))?;
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

    /// Where each input axis of Transpose, Squeeze or Unsqueeze `id` goes in its output (see
    /// [`moves::axis_moves`]), or a barrier.
    fn axis_moves(&self, id: NodeId) -> std::result::Result<Vec<Option<usize>>, Barrier> {
        let g = self.g;
        let x = g
            .input(id, 0)
            .ok_or_else(|| self.barrier(id, "has no input"))?;
        let dims: Vec<Option<i64>> = self
            .facts
            .get(x)
            .shape
            .as_ref()
            .ok_or_else(|| self.barrier(id, "has an input of unknown rank"))?
            .iter()
            .map(|d| d.known())
            .collect();
        let value = |s: usize| g.input(id, s).and_then(|v| self.facts.get(v).known_value());
        moves::axis_moves(self.op(id), &dims, value)
            .ok_or_else(|| self.barrier(id, "has axes that are not known"))
    }

    /// The group's channels enter Transpose, Squeeze or Unsqueeze `c`: they go on along the axis
    /// the channel axis becomes, unless it squeezes that axis.
    fn move_fwd(&mut self, c: NodeId, slot: usize, map: Map) -> Step {
        if slot != 0 {
            return Err(self.barrier(c, "reads the channels as its axes"));
        }
        let to = self.axis_moves(c)?;
        let Some(Some(axis)) = to.get(map.axis).copied() else {
            return Err(self.barrier(c, "removes the channel axis"));
        };
        self.join(c, Role::Move);
        self.push(ValueRef { node: c, slot: 0 }, map.on(axis))
    }

    /// The group's channels leave Transpose, Squeeze or Unsqueeze `id`: they sit in its input on
    /// the axis that becomes the channel axis.
    fn move_back(&mut self, id: NodeId, map: Map) -> Step {
        let to = self.axis_moves(id)?;
        let Some(axis) = to.iter().position(|a| *a == Some(map.axis)) else {
            return Err(self.barrier(id, "makes the channel axis"));
        };
        let x = self
            .g
            .input(id, 0)
            .ok_or_else(|| self.barrier(id, "has no input"))?;
        self.join(id, Role::Move);
        self.push(x, map.on(axis))
    }

    /// Records that Concat `id` takes the group's channels through input `slot`.
    fn join_concat(&mut self, id: NodeId, slot: usize) -> Step {
        match self.concat_slot.get(&id) {
            Some(s) if *s != slot => Err(self.barrier(id, "joins two of the group's values")),
            Some(_) => Ok(()),
            None => {
                self.concat_slot.insert(id, slot);
                self.join(id, Role::Concat);
                Ok(())
            }
        }
    }

    /// The channel axis of Concat `id` and the offset and size of each input along it.
    fn concat_layout(
        &self,
        id: NodeId,
        axis: usize,
    ) -> std::result::Result<Vec<(ValueRef, i64, usize)>, Barrier> {
        let g = self.g;
        let y = ValueRef { node: id, slot: 0 };
        let r =
            rank(self.facts, y).ok_or_else(|| self.barrier(id, "has an output of unknown rank"))?;
        if moves::axis(self.op(id), r) != Some(axis) {
            return Err(self.barrier(id, "joins along another axis than the channels"));
        }
        let mut off = 0i64;
        let mut out = Vec::new();
        for u in g.node_inputs(id) {
            let u = u.ok_or_else(|| self.barrier(id, "has a missing input"))?;
            let d = self.known_dim(id, u, axis)?;
            out.push((u, off, d));
            off += d as i64;
        }
        Ok(out)
    }

    /// The group's channels enter Concat `c` through input `slot`: they move by the sizes of the
    /// inputs before it.
    fn concat_fwd(&mut self, c: NodeId, slot: usize, map: Map) -> Step {
        let layout = self.concat_layout(c, map.axis)?;
        self.join_concat(c, slot)?;
        let y = ValueRef { node: c, slot: 0 };
        let d = self.known_dim(c, y, map.axis)?;
        self.push(y, map.shifted(layout[slot].1, d))
    }

    /// The group's channels leave Concat `id`: they come from the one input that holds them.
    fn concat_back(&mut self, id: NodeId, map: Map) -> Step {
        let layout = self.concat_layout(id, map.axis)?;
        let first = map.base + (map.lo * map.block) as i64;
        let last = map.base + (map.hi * map.block) as i64;
        let Some(slot) = layout
            .iter()
            .position(|(_, off, d)| *off <= first && last <= off + *d as i64)
        else {
            return Err(self.barrier(id, "gives the group's channels from several of its inputs"));
        };
        self.join_concat(id, slot)?;
        let (u, off, d) = layout[slot];
        self.push(u, map.shifted(-off, d))
    }

    /// Split `id` on the channel axis: each output's range of positions, in order.
    fn split_layout(&self, id: NodeId, axis: usize) -> std::result::Result<Vec<i64>, Barrier> {
        let g = self.g;
        let x = g
            .input(id, 0)
            .ok_or_else(|| self.barrier(id, "has no input"))?;
        let r =
            rank(self.facts, x).ok_or_else(|| self.barrier(id, "has an input of unknown rank"))?;
        if moves::axis(self.op(id), r) != Some(axis) {
            return Err(self.barrier(id, "splits another axis than the channels"));
        }
        if g.input(id, 1).is_some() {
            self.int64_constant(id, 1, "sizes")?;
        }
        let mut offs = vec![0i64];
        for j in 0..g.node(id).num_outputs() {
            let d = self.known_dim(id, ValueRef { node: id, slot: j }, axis)?;
            offs.push(offs[j] + d as i64);
        }
        Ok(offs)
    }

    /// The group's channels enter Split `c`: each output holds those inside its range.
    fn split_fwd(&mut self, c: NodeId, slot: usize, map: Map) -> Step {
        if slot != 0 {
            return Err(self.barrier(c, "reads the channels as its sizes"));
        }
        let offs = self.split_layout(c, map.axis)?;
        self.join(c, Role::Split);
        for j in 0..offs.len() - 1 {
            match map.within(offs[j], offs[j + 1]) {
                Err(()) => return Err(self.barrier(c, "cuts through a channel's block")),
                Ok(None) => {}
                Ok(Some(m)) => self.push(ValueRef { node: c, slot: j }, m)?,
            }
        }
        Ok(())
    }

    /// The group's channels leave Split `id` through output `j`: they sit in its input at that
    /// output's offset.
    fn split_back(&mut self, id: NodeId, j: usize, map: Map) -> Step {
        let offs = self.split_layout(id, map.axis)?;
        let x = self
            .g
            .input(id, 0)
            .ok_or_else(|| self.barrier(id, "has no input"))?;
        let d = self.known_dim(id, x, map.axis)?;
        self.join(id, Role::Split);
        self.push(x, map.shifted(offs[j], d))
    }

    /// What Slice `id` does on the channel axis `axis` of a dim `len`: `Some((b, e))` when it
    /// keeps positions `[b, e)` of it, `None` when it leaves the axis alone.
    fn slice_range(
        &self,
        id: NodeId,
        axis: usize,
        len: usize,
    ) -> std::result::Result<Option<(i64, i64)>, Barrier> {
        let g = self.g;
        let x = g
            .input(id, 0)
            .ok_or_else(|| self.barrier(id, "has no input"))?;
        let r =
            rank(self.facts, x).ok_or_else(|| self.barrier(id, "has an input of unknown rank"))?;
        let value = |s: usize| g.input(id, s).and_then(|v| self.facts.get(v).known_value());
        let p = moves::slice_params(self.op(id), self.opset, value)
            .ok_or_else(|| self.barrier(id, "has bounds that are not constant"))?;
        match p.on_axis(axis, r, len as i64) {
            Err(why) => Err(self.barrier(id, why)),
            Ok(None) => Ok(None),
            Ok(Some((_, b, e))) => {
                for at in [p.starts_at, p.ends_at] {
                    if let moves::Spelling::Input(s) = at {
                        self.int64_constant(id, s, "bounds")?;
                    }
                }
                Ok(Some((b, e)))
            }
        }
    }

    /// The group's channels enter Slice `c`: those inside its bounds go on, renumbered.
    fn slice_fwd(&mut self, c: NodeId, slot: usize, map: Map) -> Step {
        if slot != 0 {
            return Err(self.barrier(c, "reads the channels as its bounds"));
        }
        let range = self.slice_range(c, map.axis, map.dim)?;
        self.join(c, Role::Slice);
        let y = ValueRef { node: c, slot: 0 };
        match range {
            None => self.push(y, map),
            Some((b, e)) => match map.within(b, e) {
                Err(()) => Err(self.barrier(c, "cuts through a channel's block")),
                Ok(None) => Ok(()),
                Ok(Some(m)) => self.push(y, m),
            },
        }
    }

    /// The group's channels leave Slice `id`: they sit in its input at its start.
    fn slice_back(&mut self, id: NodeId, map: Map) -> Step {
        let x = self
            .g
            .input(id, 0)
            .ok_or_else(|| self.barrier(id, "has no input"))?;
        let d = self.known_dim(id, x, map.axis)?;
        let range = self.slice_range(id, map.axis, d)?;
        self.join(id, Role::Slice);
        match range {
            None => self.push(x, map),
            Some((b, _)) => self.push(x, map.shifted(b, d)),
        }
    }

    /// The group's channels enter Flatten or Reshape `c`: followed when it makes `[N, C·H·W]`
    /// of `[N, C, H, W, ...]`, each channel then a block of `H·W` positions.
    fn reshape_fwd(&mut self, c: NodeId, slot: usize, map: Map) -> Step {
        let g = self.g;
        let not = || {
            self.barrier(
                c,
                "regroups the channels (pruning follows only a Flatten or Reshape of [N, C, ...] to [N, C·...])",
            )
        };
        if slot != 0 {
            return Err(self.barrier(c, "reads the channels as its shape"));
        }
        let x = g
            .input(c, 0)
            .ok_or_else(|| self.barrier(c, "has no input"))?;
        let y = ValueRef { node: c, slot: 0 };
        let (Some(rx), Some(ry)) = (rank(self.facts, x), rank(self.facts, y)) else {
            return Err(not());
        };
        if map.axis != 1 || ry != 2 || rx < 2 {
            return Err(not());
        }
        match g.node(c).op_type() {
            "Flatten" if moves::axis(self.op(c), rx) == Some(1) => {}
            "Reshape" => {
                if moves::reshape_target(self.opset) != moves::Spelling::Input(1) {
                    return Err(self.barrier(c, "takes its shape as an attribute (opset < 5)"));
                }
                let n_in = self
                    .facts
                    .get(x)
                    .shape
                    .as_ref()
                    .and_then(|s| s.first().copied());
                let n_out = self
                    .facts
                    .get(y)
                    .shape
                    .as_ref()
                    .and_then(|s| s.first().copied());
                // `[N, -1]` stays valid whatever the channel count, also when `N` is computed
                // (from a `Shape` that the walk checks reads no channel count); an explicit
                // `C·H·W` must be a constant the rewrite can shrink.
                let target = g.input(c, 1).and_then(|v| self.facts.get(v).value.clone());
                let Some(target) = target.filter(|t| t.len() == 2) else {
                    return Err(not());
                };
                if n_in.is_none() || n_in != n_out {
                    return Err(not());
                }
                match target[1] {
                    Dim::K(-1) => {}
                    Dim::K(_) => self.int64_constant(c, 1, "a shape")?,
                    Dim::S(_) => return Err(not()),
                }
            }
            _ => return Err(not()),
        }
        let mut hw = 1usize;
        for a in 2..rx {
            hw = hw.saturating_mul(self.known_dim(c, x, a)?);
        }
        let out = Map {
            axis: 1,
            dim: map.dim * hw,
            lo: map.lo,
            hi: map.hi,
            base: map.base * hw as i64,
            block: map.block * hw,
        };
        if dim(self.facts, y, 1) != Some(out.dim as i64) {
            return Err(not());
        }
        self.join(c, Role::Reshape);
        self.push(y, out)
    }

    /// The group value placed by `map` is read by `c` at `slot`.
    fn consumer_side(&mut self, c: NodeId, slot: usize, map: Map) -> Step {
        let g = self.g;
        let p = self.op(c);
        if let Some(l) = layer(g, c) {
            let conv_like = matches!(g.node(c).op_type(), "Conv" | "ConvTranspose");
            if conv_like && l.groups != 1 {
                if slot != 0 {
                    return Err(self.barrier(c, "reads the channels as a weight"));
                }
                return self.depthwise(c, map);
            }
            let r = g
                .input(c, slot)
                .and_then(|v| rank(self.facts, v))
                .unwrap_or(0);
            if slot != l.act || trans_a(g, c) || act_axis(g, c, r) != Some(map.axis) {
                return Err(
                    self.barrier(c, "reads the channels on an input pruning does not follow")
                );
            }
            if self.join(c, Role::Consumer) {
                self.constant(c, l.kernel, Some(map.on(l.in_axis)))?;
            }
            return Ok(());
        }
        if g.node(c).op_type() == "Shape" && g.node(c).domain().is_empty() {
            return self.shape_reader(c, map);
        }
        match ops::flow(p) {
            Flow::Pass { .. } if slot == 0 => self.pass(c, map),
            Flow::Broadcast => {
                let u = g.input(c, slot).expect("it reads it");
                let out = ValueRef { node: c, slot: 0 };
                let (Some(r_u), Some(r_out)) = (rank(self.facts, u), rank(self.facts, out)) else {
                    return Err(self.barrier(c, "has operands of unknown rank"));
                };
                match (map.axis + r_out).checked_sub(r_u) {
                    Some(a) => self.broadcast(c, map.on(a)),
                    None => Err(self.barrier(c, "has an input of higher rank than its output")),
                }
            }
            Flow::Concat => self.concat_fwd(c, slot, map),
            Flow::Split => self.split_fwd(c, slot, map),
            Flow::Slice => self.slice_fwd(c, slot, map),
            Flow::Reshape if matches!(g.node(c).op_type(), "Flatten" | "Reshape") => {
                self.reshape_fwd(c, slot, map)
            }
            Flow::Transpose | Flow::Reshape if moves_axes(g.node(c).op_type()) => {
                self.move_fwd(c, slot, map)
            }
            _ => Err(self.barrier(c, "is a barrier to channel pruning")),
        }
    }

    /// The group value placed by `map` is read by `Shape` `c`: no barrier when its list of sizes
    /// leaves out the channel axis, or when every reader of that list is a `Slice` or `Gather`
    /// that picks other entries (the batch size of a `Reshape` to `[N, -1]`, say): what it gives
    /// does not change with the channel count. It joins no role: nothing of it is rewritten.
    fn shape_reader(&mut self, c: NodeId, map: Map) -> Step {
        let g = self.g;
        let x = g
            .input(c, 0)
            .ok_or_else(|| self.barrier(c, "has no input"))?;
        let r =
            rank(self.facts, x).ok_or_else(|| self.barrier(c, "reads a value of unknown rank"))?;
        let axes = moves::shape_axes(self.op(c), r);
        if !axes.contains(&map.axis) {
            return Ok(());
        }
        let at = map.axis - axes.start;
        let y = ValueRef { node: c, slot: 0 };
        if g.is_graph_output(y) || g.is_captured(y) {
            return Err(self.barrier(c, "gives the channel count to a graph output or subgraph"));
        }
        for (reader, slot) in g.consumers(y) {
            let value = |s: usize| {
                g.input(reader, s)
                    .and_then(|v| self.facts.get(v).known_value())
            };
            let picks = match (slot, g.node(reader).op()) {
                (0, Some(op)) => moves::vector_picks(op, self.opset, axes.len(), value),
                _ => None,
            };
            if picks.is_none_or(|p| p.contains(&at)) {
                return Err(self.barrier(
                    c,
                    format!(
                        "gives the channel count to {}, which may read it",
                        label(g, reader)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn value(&mut self, v: ValueRef, map: Map) -> Step {
        let g = self.g;
        let name = g.value_name(v);
        if g.is_graph_output(v) {
            return Err((v.node, format!("`{name}` is a graph output")));
        }
        if g.is_captured(v) {
            return Err((v.node, format!("`{name}` is read by a subgraph")));
        }
        let (c, axis) = (map.dim as i64, map.axis);
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
        self.producer_side(v, map)?;
        for (c, slot) in g.consumers(v) {
            self.consumer_side(c, slot, map)?;
        }
        Ok(())
    }
}

/// The coupled group that starts at producer `start`'s output channels, and the barrier that
/// stopped the walk, if one did (the group is then partial). `None` when `start` is not a
/// producer pruning knows. `opset` is the model's default-domain opset (where Split and Slice
/// spell their parameters).
pub(super) fn closure(
    g: &Graph,
    facts: &Facts,
    opset: i64,
    start: NodeId,
) -> Option<(Group, Option<Barrier>)> {
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
        opset,
        group: Group {
            channels,
            ..Default::default()
        },
        seen_values: HashMap::new(),
        roles: HashSet::new(),
        concat_slot: HashMap::new(),
        work: Vec::new(),
    };
    let run = |w: &mut Walk| -> Step {
        w.push(out, Map::identity(axis, channels))?;
        while let Some((v, m)) = w.work.pop() {
            w.value(v, m)?;
        }
        Ok(())
    };
    let barrier = run(&mut w).err();
    w.group.values = w.seen_values.into_iter().collect();
    w.group.values.sort_by_key(|(v, _)| *v);
    Some((w.group, barrier))
}
