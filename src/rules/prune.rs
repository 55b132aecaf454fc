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

use std::collections::{HashMap, HashSet};

use ndarray::{ArrayD, Axis};

use super::util::make_attr_i;
use crate::error::{Error, Result};
use crate::ir::facts::Facts;
use crate::ir::{tensor, Graph, Model, NodeId, ValueRef};
use crate::onnx::proto::tensor_proto::DataType;
use crate::ops::{self, Flow, WeightRole};
use crate::rewrite::{Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, Wire};

/// Options of the `prune` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneConfig {
    /// `--prune-zero`: remove channels that are exactly zero. The only criterion so far, so the
    /// rule acts as if it were set when it is not.
    pub zero: bool,
}

/// See the module docs.
pub struct Prune;

/// Ops whose channel input is a layer's activation, with the kernel's slots and axes.
struct Layer {
    /// Activation input slot.
    act: usize,
    /// Kernel slot.
    kernel: usize,
    /// Kernel axis of the output channels (normalised).
    out_axis: usize,
    /// Kernel axis of the input channels (normalised).
    in_axis: usize,
    /// Bias slot, its axis (normalised), when the op has one connected.
    bias: Option<usize>,
    /// `group` attribute.
    groups: i64,
}

/// Kernel and bias operands of `id` when it is a Conv, ConvTranspose, Gemm or MatMul whose kernel
/// is a constant (axes from the op table).
fn layer(g: &Graph, id: NodeId) -> Option<Layer> {
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
fn act_axis(g: &Graph, id: NodeId, rank: usize) -> Option<usize> {
    match g.node(id).op_type() {
        "Conv" | "ConvTranspose" | "Gemm" => Some(1),
        _ => rank.checked_sub(1),
    }
}

/// Whether `id` is a Gemm reading its activation transposed (then the channel is axis 0).
fn trans_a(g: &Graph, id: NodeId) -> bool {
    g.node(id).op_type() == "Gemm" && g.node(id).attr("transA").and_then(|a| a.i).unwrap_or(0) != 0
}

/// A constant operand of a group member to cut along `axis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cut {
    node: NodeId,
    slot: usize,
    axis: usize,
}

/// What a group member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
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
struct Group {
    channels: usize,
    values: Vec<(ValueRef, usize)>,
    members: Vec<(NodeId, Role)>,
    cuts: Vec<Cut>,
}

/// Why a group cannot be pruned: the node and the reason.
type Barrier = (NodeId, String);

fn label(g: &Graph, id: NodeId) -> String {
    let n = g.node(id);
    format!("`{}` ({})", n.label(), n.op_type())
}

/// The known dim `axis` of `v`.
fn dim(facts: &Facts, v: ValueRef, axis: usize) -> Option<i64> {
    facts
        .get(v)
        .shape
        .as_ref()?
        .get(axis)
        .and_then(|d| d.known())
}

fn rank(facts: &Facts, v: ValueRef) -> Option<usize> {
    facts.get(v).rank()
}

struct Walk<'a> {
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
fn closure(g: &Graph, facts: &Facts, start: NodeId) -> Option<(Group, Option<Barrier>)> {
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

/// Whether every element of `a` at index `c` of `axis` satisfies `f`.
fn slice_all(a: &ArrayD<f32>, axis: usize, c: usize, f: impl Fn(f32) -> bool) -> bool {
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
fn zero_channels(g: &Graph, group: &Group) -> Result<(Vec<bool>, Option<String>)> {
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

type Spoil<'a> = dyn FnMut(&mut Vec<bool>, NodeId, &str, &dyn Fn(usize) -> bool) + 'a;

/// Narrows `zero` to the channels the Pass op `id` maps from 0 to exactly 0.
fn pass_zero(g: &Graph, id: NodeId, zero: &mut Vec<bool>, spoil: &mut Spoil) -> Result<()> {
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
