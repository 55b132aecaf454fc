//! `P001 prune`: removes output channels (Conv) and hidden neurons (Gemm/MatMul) that the next
//! layers provably read as a constant (`--prune-zero`, exact) or that matter least
//! (`--prune-ratio`, lossy), together with every tensor coupled to them.
//!
//! **What:** a *coupled group* starts at a layer's output channels (Conv, ConvTranspose, Gemm,
//! MatMul with a constant kernel: the kernel's `out_axis` in the op table, [`crate::ops::weights`])
//! and follows the channel flow of the op table ([`crate::ops::flow`]) through `Pass` ops
//! (activations, pooling, BatchNormalization — whose per-channel inputs shrink too — PRelu, ...),
//! depthwise Conv (`group` = channels, one filter per channel: `group` shrinks with them) and the
//! elementwise `Add`, `Sub` and `Mul` (every other input with that channel dim joins the group: a
//! residual Add couples its two producers; a constant operand shrinks along that axis), and the
//! ops that move channels (each group value carries where the group's channels sit in it, see
//! `group.rs`): `Concat` on the channel axis (input `i`'s channel `c` is `offset_i + c` of the
//! output; each producer stays its own group, cutting only its block of the shared tensors
//! downstream; a constant input's block stays), `Split` on it (channel `c` is `c − offset_j` of
//! output `j`; the sizes shrink, as attribute or input by opset; an output whose channels would
//! all go keeps one), `Slice` on it with constant bounds and step 1 (channels outside are dead
//! for that reader; the bounds move), and `Flatten` (axis 1) or `Reshape` to `[N, C·H·W]` (channel
//! `c` becomes the block `[c·H·W, (c+1)·H·W)`, `H·W` from the facts; an explicit `C·H·W` in the
//! target shrinks; a `-1` there stays, also in a target computed from the batch size), and
//! `Transpose`, `Squeeze` and `Unsqueeze` that keep the channel axis (the group follows it
//! where it goes; nothing of them changes); up to the consuming layers' input axis (`in_axis`),
//! where a channel is one index or one block. `moves.rs` rewrites Split, Slice and Reshape. A
//! `Shape` reading a group value is no barrier when its list leaves out the channel axis or
//! every reader of the list is a `Slice` or `Gather` of other entries (the op table's
//! [`crate::ops::moves::vector_picks`]): what it computes does not change.
//!
//! **`--prune-zero`** (what `--rules prune` does without flags): channel `c` is removed when
//! every consuming layer provably reads one constant `k` all over it, and can take `k` in its bias
//! (see `value.rs`). The constant follows the group in dependency order: a producer whose kernel
//! slice is 0 gives its bias; a `Pass` op maps it by the op table's evaluation on a constant
//! channel ([`crate::ops::point`]: Relu(0) = 0, BatchNormalization(0) = `beta − mean·scale/√(var+ε)`,
//! HardSwish of that, Sigmoid(0) = ½, ...); a depthwise Conv gives `bias + k·Σw` (only 0 stays 0
//! when it pads its input); `Add`/`Sub` combine constants, `Mul` by 0 is 0 (a squeeze-excitation
//! gate shrinks with the branch it gates). A consumer reading `k ≠ 0` takes `k·Σ W[:, c, ...]` in
//! its bias: Conv `B` (only without padding: at the border a padded Conv reads 0 instead of `k`),
//! Gemm `C` (times `alpha/beta`; created when absent), the constant of the `Add` after a MatMul;
//! other consumers keep the channel, with the reason.
//!
//! **`--prune-ratio R`** (with `--prune-importance l1|l2|bn`): in each group, also remove the
//! channels of lowest importance (the L1 or L2 norm of each producer's kernel slice, summed over
//! the group's producers, or `|gamma|` summed over its BatchNormalizations) until `⌊R·C⌋` are
//! gone; at least one stays. With `--prune-round N` the count kept is rounded to the nearest
//! multiple of `N` ([`rounded_keep`]: never 0, never above `C`), so that tract's matrix kernels,
//! which pad output channels to their panel height, compute no padded rows when `N` is that
//! height (16 for the AVX-512 f32 kernels). A removed channel is valued as if its producers'
//! kernel slices were
//! 0, a BatchNormalization giving its expected output `beta`, and that constant is folded into
//! the consumers where they can take it (padding ignored); elsewhere it is dropped. With
//! `--calibration DIR`, MatMul, Gemm and 1×1 Conv consumers are instead re-fitted by least
//! squares on the kept channels (see `refit.rs`). The producers'
//! kernels are marked ([`RATIO_MARK`]) so that the group is not cut again. `--prune-exclude NAME`
//! leaves alone every group with a member or a weight of that name.
//!
//! One patch per group slices the producers' kernels and biases, the per-channel parameters, the
//! constant operands, the consumers' kernels and the depthwise `group`, and folds the constants;
//! the old constants are removed and the new ones keep their names.
//!
//! **Why:** training frameworks leave pruned channels in exported models as zeros (and BN keeps
//! them a constant); removing them makes the model really smaller and faster, through residual
//! connections, without going back to the training framework.
//!
//! **Example:** `h = Relu(x·W1 + b1)` with `W1[64,512]` whose columns 0..170 and `b1[0..170]` are
//! 0, `y = h·W2[512,10]` → `W1[64,342]`, `b1[342]`, `W2[342,10]`. Through a Flatten:
//! `Gemm(Flatten(Relu(Conv(x, W[4,3,3,3]))), G[16,5])` on `2×2` maps with filters 1 and 3 at 0
//! → `W[2,3,3,3]`, `G[8,5]` (rows 4..8 and 12..16 go).
//!
//! **Exact** with `--prune-zero`: ops inside a group act channel by channel, so channel `c` of any
//! of its tensors reaches the outside only through what the consuming layers read at `c`, the
//! constant `k` they now add in their bias (for finite weights); only the order of additions may
//! change (tolerance 1e-6). **Lossy** with `--prune-ratio`: verified against [`LOSSY_TOLERANCE`].
//!
//! Declared shapes (`value_info`) of the group's values get the new channel count.
//!
//! **Barriers, skipped with a reason naming the node:** graph outputs, values read by subgraphs,
//! a Concat joining two of the group's values or another axis, a Split or Slice cutting through
//! a channel's block, a Slice with a step other than 1 or bounds that are not constant int64,
//! other Reshapes, a Squeeze of the channel axis, a Flatten or Reshape reached from its output,
//! a `Shape` whose channel entry is read by anything else, Resize, Pad, grouped (non-depthwise)
//! Conv, unknown ops and every op the table calls a
//! barrier, channel dims the facts do not know, weights that are not constant float32 or that
//! are also read outside the group. With `--prune-ratio`, a group with a producer that is a
//! factor of a low-rank pair `lowrank` made is left alone: `--rules lowrank,prune` prunes first
//! (the registry's order), then factors; the next round must not cut the pair's rank.

mod group;
mod moves;
mod refit;
mod select;
mod value;

use std::collections::{HashMap, HashSet};

use ndarray::{ArrayD, Axis, IxDyn};

use super::util::make_attr_i;
use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, NodeId, ValueRef};
use crate::rewrite::{
    Config, Exactness, Findings, Match, Patch, Rule, RuleMeta, SearchVariant, Stage, Wire,
};
use group::{closure, layer, Group, Map, Role};
use value::{matmul_bias, removed_values, slice_all, Mode};

/// The verification tolerance with `--prune-ratio`: a sanity bound, as lowrank's (outputs are
/// compared element-wise, `|a − b| ≤ tol·max(1, |a|)`, and digits_mlp at 30 % keeps 99 % of its
/// argmax with logits moved by twice their size): it catches a broken rewrite (NaN, infinities,
/// wrong shapes, garbage), not accuracy loss, which the verification table's cosine and argmax
/// agreement tell.
pub const LOSSY_TOLERANCE: f32 = 50.0;

/// The fractions of each coupled group's channels a `--budget` search offers to remove, when
/// `--prune-ratio` does not pin one.
pub const SEARCH_RATIOS: [f64; 2] = [0.25, 0.5];

/// Set as `doc_string` on the kernels of the producers of a group pruned by `--prune-ratio`:
/// such a group is not pruned by ratio again (the rule reaches a fixed point).
pub const RATIO_MARK: &str = "onnx-slim prune --prune-ratio";

/// How `--prune-ratio` ranks the channels of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Importance {
    /// Sum over the group's producers of the L1 norm of the channel's kernel slice.
    #[default]
    L1,
    /// Sum over the group's producers of the L2 norm of the channel's kernel slice.
    L2,
    /// Sum over the group's BatchNormalizations of `|gamma|` of the channel.
    Bn,
}

/// Options of the `prune` rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneConfig {
    /// `--prune-zero`: remove channels that consumers provably read as a constant (0, or a
    /// constant they take in their bias). What the rule does without `--prune-ratio`, so it acts
    /// as if it were set when it is not.
    pub zero: bool,
    /// `--prune-ratio R`, in (0, 1): also remove the lowest-importance fraction `R` of each
    /// group's channels (lossy); at least one channel stays.
    pub ratio: Option<f64>,
    /// `--prune-importance`: how `ratio` ranks channels.
    pub importance: Importance,
    /// `--prune-exclude`: node or weight names whose groups are left alone.
    pub exclude: Vec<String>,
    /// `--prune-round N`: with `ratio`, the channels each group keeps are rounded to a multiple
    /// of `N` (see [`rounded_keep`]). `None` (or 1) keeps `C − ⌊R·C⌋`.
    pub round: Option<usize>,
}

/// How many of `c` channels a group keeps at `--prune-ratio r` and `--prune-round n`: `c − ⌊r·c⌋`
/// (at least 1), rounded to the *nearest* multiple of `n` (a tie rounds up, keeping more), but
/// never to 0 and never above `c`: where the nearest multiple is 0 (the group has fewer than
/// `n/2` channels to keep) the count stays unrounded, and where it is above `c` the group keeps
/// all `c` (the ratio removes nothing from it).
///
/// Why nearest, not up (Torch-Pruning's `round_to` keeps `⌈k/n⌉·n`): tract's matrix kernels
/// pad the output-channel dimension to their panel height anyway, so rounding the kept count
/// *up* never saves a panel over the unrounded count; it only keeps more channels. Rounding
/// *down* always removes more than asked. The nearest multiple saves a panel where the ratio
/// came within half a multiple of one and keeps the removed fraction near `r` on average; the
/// removed fraction then differs from `r` per group (the report says how many go from each).
pub fn rounded_keep(c: usize, r: f64, n: Option<usize>) -> usize {
    let keep = c - ((r * c as f64).floor() as usize).min(c - 1);
    let Some(n) = n.filter(|n| *n > 1) else {
        return keep;
    };
    let down = keep / n * n;
    let up = down + n;
    let nearest = if keep - down < up - keep { down } else { up };
    if nearest == 0 {
        keep
    } else if nearest > c {
        c
    } else {
        nearest
    }
}

impl PruneConfig {
    /// Builds the options from the command-line flags, refusing values it does not know.
    pub fn from_flags(
        zero: bool,
        ratio: Option<f64>,
        importance: Option<&str>,
        exclude: &[String],
        round: Option<i64>,
    ) -> Result<PruneConfig> {
        let mut cfg = PruneConfig {
            zero,
            ..Default::default()
        };
        if let Some(r) = ratio {
            if !(r.is_finite() && r > 0.0 && r < 1.0) {
                return Err(Error::Usage(format!(
                    "--prune-ratio must be in (0, 1), got `{r}`"
                )));
            }
            cfg.ratio = Some(r);
        }
        cfg.importance = match importance {
            None | Some("l1") => Importance::L1,
            Some("l2") => Importance::L2,
            Some("bn") => Importance::Bn,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--prune-importance must be `l1`, `l2` or `bn`, got `{other}`"
                )))
            }
        };
        if importance.is_some() && ratio.is_none() {
            return Err(Error::Usage(
                "--prune-importance ranks channels for --prune-ratio; give --prune-ratio too"
                    .into(),
            ));
        }
        if let Some(n) = round {
            if n < 1 {
                return Err(Error::Usage(format!(
                    "--prune-round must be a whole number of channels, at least 1, got `{n}`"
                )));
            }
            if ratio.is_none() {
                return Err(Error::Usage(
                    "--prune-round rounds the channels --prune-ratio keeps; give --prune-ratio too"
                        .into(),
                ));
            }
            cfg.round = usize::try_from(n).ok();
        }
        cfg.exclude = exclude
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        Ok(cfg)
    }
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

/// What to remove from a group, and what its consumers read there.
struct Plan {
    /// Channels to remove, ascending.
    remove: Vec<usize>,
    /// How many of them go exactly.
    exact: usize,
    /// Per consumer: per removed channel (in `remove`'s order), the constant it reads there.
    folds: Vec<(NodeId, Vec<Option<f32>>)>,
    /// Whether `--prune-ratio` chose channels (the producers' kernels are then marked).
    lossy: bool,
}

/// Whether a producer of `group` carries [`RATIO_MARK`].
fn marked(g: &Graph, group: &Group) -> bool {
    group.members.iter().any(|&(id, role)| {
        role == Role::Producer
            && layer(g, id)
                .and_then(|l| g.input(id, l.kernel))
                .and_then(|v| g.const_tensor(v))
                .is_some_and(|t| t.doc_string.as_deref() == Some(RATIO_MARK))
    })
}

/// The name suffixes `lowrank` gives the two factors of a pair it made (`lowrank`'s
/// `FIRST_SUFFIX` and `SECOND_SUFFIX`): the first factor's output channels are the pair's rank,
/// which lowrank chose; the second's are the factored layer's, which prune had its turn at.
const LOWRANK_FACTORS: [&str; 2] = ["/lowrank1", "/lowrank2"];

/// The first producer of `group` that is a factor of a low-rank pair `lowrank` made.
fn lowrank_factor(g: &Graph, group: &Group) -> Option<String> {
    group
        .members
        .iter()
        .filter(|(_, r)| *r == Role::Producer)
        .map(|(id, _)| g.node(*id).label())
        .find(|l| LOWRANK_FACTORS.iter().any(|s| l.ends_with(s)))
}

/// The channels to remove from `group` (at least one stays in each of its values), or why none.
fn plan(
    g: &Graph,
    group: &Group,
    cfg: &PruneConfig,
) -> Result<std::result::Result<Plan, Option<String>>> {
    let c = group.channels;
    if let Some(name) = select::excluded(g, group, &cfg.exclude) {
        return Ok(Err(Some(format!("excluded by --prune-exclude `{name}`"))));
    }
    let exact = removed_values(g, group, Mode::Exact)?;
    let mut remove: Vec<usize> = (0..c).filter(|ch| exact.exact[*ch]).collect();
    let n_exact = remove.len();
    let mut lossy = None;
    let mut score = None;
    // `--prune-ratio` leaves the factors of a low-rank pair alone: in `--rules lowrank,prune` the
    // groups are pruned first, then what is left is factored, and the driver's next round must
    // not cut the pair's rank (lowrank's choice) nor the factored layer's channels a second time.
    let factor = lowrank_factor(g, group);
    if let Some(r) = cfg.ratio.filter(|_| !marked(g, group) && factor.is_none()) {
        let target = c - rounded_keep(c, r, cfg.round);
        if target > n_exact {
            let s = match select::importance(g, group, cfg.importance)? {
                Ok(s) => s,
                Err(why) => return Ok(Err(Some(why))),
            };
            let more = select::lowest(&s, |ch| !exact.exact[ch], target - n_exact);
            remove.extend(more);
            remove.sort_unstable();
            lossy = Some(removed_values(g, group, Mode::Lossy)?);
            score = Some(s);
        }
    }
    // Never empty a value (a layer's output, a Split's or Slice's output): each keeps the most
    // important of its channels, or the first.
    let order: Vec<usize> = match &score {
        Some(s) => select::lowest(s, |_| true, c).into_iter().rev().collect(),
        None => (0..c).collect(),
    };
    for (_, m) in &group.values {
        if m.kept(&remove).is_empty() {
            if let Some(k) = order.iter().find(|ch| m.positions(**ch).is_some()) {
                remove.retain(|ch| ch != k);
            }
        }
    }
    if remove.is_empty() {
        if let Some(f) = factor.as_ref().filter(|_| cfg.ratio.is_some()) {
            return Ok(Err(Some(format!(
                "`{f}` is a factor of a low-rank pair made by lowrank after prune's turn: its rank is lowrank's choice, and prune had its turn at its channels before"
            ))));
        }
        if let (Some(r), Some(n)) = (cfg.ratio, cfg.round.filter(|n| *n > 1)) {
            let plain = rounded_keep(c, r, None);
            if factor.is_none() && !marked(g, group) && plain < c {
                return Ok(Err(Some(format!(
                    "--prune-round {n} keeps all {c} channels (the nearest multiple of {n} to the {plain} the ratio keeps is above or at {c})"
                ))));
            }
        }
        return Ok(Err(exact.reason));
    }
    let n_exact = remove.iter().filter(|ch| exact.exact[**ch]).count();
    let folds = exact
        .consumers
        .iter()
        .map(|(id, reads)| {
            let other = lossy
                .as_ref()
                .and_then(|l| l.consumers.iter().find(|(n, _)| n == id))
                .map(|(_, r)| r);
            let vals = remove
                .iter()
                .map(|&ch| {
                    if exact.exact[ch] {
                        reads[ch]
                    } else {
                        other.and_then(|o| o[ch])
                    }
                })
                .collect();
            (*id, vals)
        })
        .collect();
    Ok(Ok(Plan {
        exact: n_exact,
        lossy: remove.len() > n_exact,
        remove,
        folds,
    }))
}

/// One line on what `plan` removes from the group after `producers` (with `--prune-round`, how
/// many it keeps and what fraction goes, which the rounding moves away from the ratio).
fn describe(
    g: &Graph,
    group: &Group,
    plan: &Plan,
    producers: &[NodeId],
    round: Option<usize>,
) -> String {
    let who = producers
        .iter()
        .map(|p| format!("`{}`", g.node(*p).label()))
        .collect::<Vec<_>>()
        .join(", ");
    let n = plan.remove.len();
    let c = group.channels;
    if plan.lossy {
        let kept = match round.filter(|n| *n > 1) {
            Some(r) => format!(
                "; {} kept, --prune-round {r}, {:.1} % removed",
                c - n,
                100.0 * n as f64 / c as f64
            ),
            None => String::new(),
        };
        format!(
            "remove {n} of {c} channels after {who} ({} of least importance, {} constant{kept})",
            n - plan.exact,
            plan.exact
        )
    } else {
        format!("remove {n} of {c} constant channels after {who}")
    }
}

impl Rule for Prune {
    fn meta(&self) -> RuleMeta {
        RuleMeta {
            code: "P001",
            name: "prune",
            group: "prune",
            summary: "remove channels and neurons that are constant (--prune-zero) or matter least (--prune-ratio), with every tensor coupled to them",
            exactness: Exactness::Exact { tolerance: 1e-6 },
        }
    }

    fn find(&self, model: &Model, config: &Config) -> Findings {
        let g = &model.graph;
        let cfg = &config.prune;
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
        let opset = model.opset("").unwrap_or(1);
        let mut done: HashSet<NodeId> = HashSet::new();
        let mut lossy: Vec<Group> = Vec::new();
        for id in starts {
            if done.contains(&id) {
                continue;
            }
            let Some(group) = closure(g, &facts, opset, id) else {
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
                None => match plan(g, &group, cfg) {
                    Ok(Ok(p)) => {
                        f.matches.push(Match {
                            anchor: id,
                            nodes: group.members.iter().map(|(n, _)| *n).collect(),
                            what: describe(g, &group, &p, &producers, cfg.round),
                        });
                        if p.lossy {
                            lossy.push(group);
                        }
                    }
                    Ok(Err(Some(reason))) => f.skip(model, id, reason),
                    Ok(Err(None)) => {}
                    Err(e) => f.skip(model, id, e.to_string()),
                },
                Some((_, reason)) => {
                    // Reported when the ratio would act, or the start has zero channels to lose.
                    if (cfg.ratio.is_some() && !marked(g, &group)) || start_has_zero_channel(g, id)
                    {
                        f.skip(model, id, format!("its channels reach a barrier: {reason}"));
                    }
                }
            }
        }
        // With --calibration, the re-fit's inputs: one tract run for every group.
        refit::capture(model, &lossy.iter().collect::<Vec<_>>(), config);
        f
    }

    fn rewrite(&self, model: &Model, m: &Match, config: &Config) -> Result<Patch> {
        let g = &model.graph;
        let facts = g.facts();
        let opset = model.opset("").unwrap_or(1);
        let group = match closure(g, &facts, opset, m.anchor) {
            Some((group, None)) => group,
            Some((_, Some((_, reason)))) => return Err(rule_err(reason)),
            None => return Err(rule_err("the anchor is no longer a layer")),
        };
        let plan = match plan(g, &group, &config.prune)? {
            Ok(p) => p,
            Err(reason) => {
                return Err(rule_err(
                    reason.unwrap_or_else(|| "no channel is removable any more".into()),
                ))
            }
        };
        let producers: Vec<NodeId> = group
            .members
            .iter()
            .filter(|(_, r)| *r == Role::Producer)
            .map(|(n, _)| *n)
            .collect();
        let mut p = Patch::new(
            describe(g, &group, &plan, &producers, config.prune.round),
            Some(m.anchor),
        );
        // Every cut constant, with where it is cut and the (node, slot) pairs reading it.
        let mut by_value: Vec<(ValueRef, Vec<Map>, Vec<(NodeId, usize)>)> = Vec::new();
        for k in &group.cuts {
            let v = g
                .input(k.node, k.slot)
                .ok_or_else(|| rule_err("a cut operand is missing"))?;
            match by_value.iter_mut().find(|(u, _, _)| *u == v) {
                Some((_, maps, readers)) => {
                    if maps.iter().any(|m| m.axis == k.map.axis && *m != k.map) {
                        return Err(rule_err(format!(
                            "`{}` is cut at two different places",
                            g.value_name(v)
                        )));
                    }
                    if !maps.contains(&k.map) {
                        maps.push(k.map);
                    }
                    readers.push((k.node, k.slot));
                }
                None => by_value.push((v, vec![k.map], vec![(k.node, k.slot)])),
            }
        }
        // Producer kernels get the ratio mark.
        let marked_kernels: HashSet<ValueRef> = if plan.lossy {
            producers
                .iter()
                .filter_map(|&id| layer(g, id).and_then(|l| g.input(id, l.kernel)))
                .collect()
        } else {
            HashSet::new()
        };
        // With --calibration, consumers re-fitted by least squares on the kept channels; the
        // others take the constants removed channels leave in their biases.
        let refits = if plan.lossy {
            refit::refits(g, &group, &plan.remove, config)?
        } else {
            HashMap::new()
        };
        if !refits.is_empty() {
            let mut names: Vec<String> = refits
                .keys()
                .map(|id| format!("`{}`", g.node(*id).label()))
                .collect();
            names.sort();
            p.description.push_str(&format!(
                ", {} re-fitted on the calibration data",
                names.join(", ")
            ));
        }
        let mut refit_kernels: HashMap<ValueRef, &ArrayD<f32>> = HashMap::new();
        for (id, vals) in &plan.folds {
            match refits.get(id) {
                Some(r) => {
                    let l = layer(g, *id).ok_or_else(|| rule_err("a consumer is gone"))?;
                    let kv = g
                        .input(*id, l.kernel)
                        .ok_or_else(|| rule_err("a consumer lost its kernel"))?;
                    refit_kernels.insert(kv, &r.kernel);
                    let old = refit::current_bias(g, *id, r.bias.len())?;
                    let delta: Vec<f64> = r
                        .bias
                        .iter()
                        .zip(&old)
                        .map(|(n, o)| f64::from(*n) - o)
                        .collect();
                    add_to_bias(g, &mut p, *id, &delta, &by_value)?;
                }
                None => {
                    let map = layer(g, *id)
                        .and_then(|l| g.input(*id, l.act))
                        .and_then(|x| group.map_of(x))
                        .ok_or_else(|| rule_err("a consumer reads a value outside the group"))?;
                    fold(g, &mut p, *id, map, &plan.remove, vals, &by_value)?
                }
            }
        }
        let depthwise: Vec<NodeId> = group
            .members
            .iter()
            .filter(|(_, r)| *r == Role::Depthwise)
            .map(|(n, _)| *n)
            .collect();
        let mut new_of: HashMap<(NodeId, usize), Wire> = HashMap::new();
        for (v, maps, mut readers) in by_value {
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
            for m in maps {
                a = a.select(Axis(m.axis), &m.kept(&plan.remove));
            }
            if let Some(r) = refit_kernels.get(&v) {
                if r.shape() != a.shape() {
                    return Err(rule_err(format!(
                        "the re-fit of `{}` has dims {:?}, not {:?}",
                        g.value_name(v),
                        r.shape(),
                        a.shape()
                    )));
                }
                a = (*r).clone();
            }
            let name = g.value_name(v).to_string();
            let mut nt = tensor::from_f32(&name, &a);
            nt.doc_string = if marked_kernels.contains(&v) {
                Some(RATIO_MARK.to_string())
            } else {
                t.doc_string.clone()
            };
            let w = p.add_initializer(nt);
            for (n, s) in readers {
                new_of.insert((n, s), w);
                if !depthwise.contains(&n) {
                    p.rewire(n, s, Some(w));
                }
            }
            p.remove(v.node);
            p.keep_name(v, w);
        }
        let kept = |v: Option<ValueRef>| -> Result<usize> {
            let m = v
                .and_then(|v| group.map_of(v))
                .ok_or_else(|| rule_err("a member reads a value outside the group"))?;
            Ok(m.dim - m.removed(&plan.remove).len())
        };
        for id in depthwise {
            let mut node = g.node(id).op().expect("an op").clone();
            node.attribute
                .retain(|a| a.name.as_deref() != Some("group"));
            node.attribute
                .push(make_attr_i("group", kept(g.input(id, 0))? as i64));
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
        moves::rewrite(g, &mut p, &group, &plan.remove, opset, &facts)?;
        // Declared shapes (`value_info`) of the group's values follow their channel dim.
        for (v, m) in &group.values {
            let n = m.dim - m.removed(&plan.remove).len();
            p.set_declared_dim(g.value_name(*v), m.axis, n as i64);
        }
        Ok(p)
    }

    fn independent_matches(&self) -> bool {
        // Each rewrite rebuilds its group and its plan from the anchor on the current graph, and
        // groups share no member whose identity a rewrite changes (only depthwise Convs are
        // replaced, and a depthwise Conv belongs to one group; a bias a fold changes keeps its
        // name and shape).
        true
    }

    /// With `--prune-ratio` the removed channels were not constant: the outputs move, and the
    /// run is judged by the model-level budget.
    fn lossy(&self, config: &Config) -> bool {
        config.prune.ratio.is_some()
    }

    /// `--prune-ratio` as given, else [`SEARCH_RATIOS`]: one option per coupled group.
    fn search_variants(&self, config: &Config) -> Vec<SearchVariant> {
        let ratios = match config.prune.ratio {
            Some(r) => vec![r],
            None => SEARCH_RATIOS.to_vec(),
        };
        ratios
            .into_iter()
            .map(|r| {
                let mut c = config.clone();
                c.prune.ratio = Some(r);
                SearchVariant {
                    name: format!("prune ratio {r}"),
                    config: c,
                    stage: Stage::Structure,
                }
            })
            .collect()
    }

    fn tolerance(&self, config: &Config) -> f32 {
        if config.prune.ratio.is_some() {
            LOSSY_TOLERANCE
        } else {
            self.meta().exactness.tolerance()
        }
    }
}

/// Adds to consumer `id`'s bias what the removed channels `remove` contributed as the constants
/// `vals` (`None` or 0: nothing): `Σ_c k_c · Σ W[:, c, ...]` over the kernel's other axes (Gemm:
/// times `alpha/beta`), in Conv's `B`, Gemm's `C` (created when absent) or the constant of the
/// `Add` after a MatMul.
fn fold(
    g: &Graph,
    p: &mut Patch,
    id: NodeId,
    map: Map,
    remove: &[usize],
    vals: &[Option<f32>],
    cuts: &[(ValueRef, Vec<Map>, Vec<(NodeId, usize)>)],
) -> Result<()> {
    if vals.iter().all(|v| v.is_none_or(|k| k == 0.0)) {
        return Ok(());
    }
    let l = layer(g, id).ok_or_else(|| rule_err("a consumer is no longer a layer"))?;
    let w = const_f32(g, id, l.kernel)?;
    let out_axis = if l.out_axis > l.in_axis {
        l.out_axis - 1
    } else {
        l.out_axis
    };
    let m = w.shape()[l.out_axis];
    let mut delta = vec![0.0f64; m];
    for (&ch, k) in remove.iter().zip(vals) {
        let Some(k) = k.filter(|k| *k != 0.0) else {
            continue;
        };
        for pos in map.positions(ch).into_iter().flatten() {
            let slice = w.index_axis(Axis(l.in_axis), pos);
            for (o, d) in delta.iter_mut().enumerate() {
                let s: f64 = slice
                    .index_axis(Axis(out_axis), o)
                    .iter()
                    .map(|x| f64::from(*x))
                    .sum();
                *d += f64::from(k) * s;
            }
        }
    }
    let node = g.node(id);
    if node.op_type() == "Gemm" {
        let alpha = f64::from(node.attr("alpha").and_then(|a| a.f).unwrap_or(1.0));
        let beta = f64::from(node.attr("beta").and_then(|a| a.f).unwrap_or(1.0));
        delta.iter_mut().for_each(|d| *d *= alpha / beta);
    }
    add_to_bias(g, p, id, &delta, cuts)
}

/// Adds `delta` (one value per output) to consumer `id`'s bias: Conv's `B`, Gemm's `C` (created
/// when absent), the constant of the `Add` after a MatMul.
fn add_to_bias(
    g: &Graph,
    p: &mut Patch,
    id: NodeId,
    delta: &[f64],
    cuts: &[(ValueRef, Vec<Map>, Vec<(NodeId, usize)>)],
) -> Result<()> {
    let node = g.node(id);
    let m = delta.len();
    let (target, slot) = match node.op_type() {
        "Conv" | "Gemm" => (id, 2),
        "MatMul" => {
            matmul_bias(g, id).ok_or_else(|| rule_err("a MatMul consumer lost its bias"))?
        }
        other => return Err(rule_err(format!("cannot fold a constant into {other}"))),
    };
    let old = g.input(target, slot);
    if let Some(v) = old {
        if cuts.iter().any(|(u, _, _)| *u == v) {
            return Err(rule_err(format!(
                "`{}` would take a constant and lose channels at once",
                g.value_name(v)
            )));
        }
    }
    let base: ArrayD<f32> =
        match old {
            Some(v) => tensor::to_f32(g.const_tensor(v).ok_or_else(|| {
                rule_err(format!("the bias `{}` is not constant", g.value_name(v)))
            })?)?,
            None => ArrayD::zeros(IxDyn(&[m])),
        };
    // The bias broadcast to a last dim of `m`, plus `delta` along it.
    let mut shape = base.shape().to_vec();
    match shape.last_mut() {
        None => shape = vec![m],
        Some(d) if *d == m || *d == 1 => *d = m,
        Some(d) => {
            return Err(rule_err(format!(
                "the bias of {} has {d} values, not {m}",
                node.label()
            )))
        }
    }
    let mut new = base
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| rule_err("the bias does not broadcast"))?
        .to_owned();
    for mut lane in new.lanes_mut(Axis(shape.len() - 1)) {
        for (x, d) in lane.iter_mut().zip(delta) {
            *x = (f64::from(*x) + d) as f32;
        }
    }
    match old {
        Some(v) => {
            let name = g.value_name(v).to_string();
            let wire = p.add_initializer(tensor::from_f32(&name, &new));
            p.rewire(target, slot, Some(wire));
            if g.consumers(v).len() == 1 && !g.is_graph_output(v) && !g.is_captured(v) {
                p.remove(v.node);
                p.keep_name(v, wire);
            }
        }
        None => {
            let name = format!("{}.bias", node.label());
            let wire = p.add_initializer(tensor::from_f32(&name, &new));
            p.rewire(target, slot, Some(wire));
        }
    }
    Ok(())
}

/// Whether some output channel of the start layer `id` has a zero kernel slice (and bias): the
/// groups whose barrier is worth reporting.
fn start_has_zero_channel(g: &Graph, id: NodeId) -> bool {
    let Some(l) = layer(g, id) else { return false };
    let Ok(w) = const_f32(g, id, l.kernel) else {
        return false;
    };
    (0..w.shape()[l.out_axis]).any(|c| slice_all(&w, l.out_axis, c, |x| x == 0.0))
}
