//! Applies rules to a fixed point, the non-overlapping matches of each `find` as one batch of
//! patches measured one by one and checked together, and reports what each rule did.

use std::collections::BTreeSet;

use serde::Serialize;

use rustc_hash::FxHashSet;

use super::patch::Undo;
use super::rule::{Exactness, Match, Rule, Skip};
use super::{Config, Patch};
use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, NodeId, ValueRef};
use crate::onnx::proto::TensorProto;
use crate::onnx::visit::nested_subgraphs;

/// How the driver runs.
#[derive(Debug, Clone, Default)]
pub struct DriverOptions {
    /// Stop after this many patches in total (to bisect a numerics problem).
    pub max_patches: Option<usize>,
    /// Apply only matches whose anchor node has one of these labels, or whose description
    /// (`Match::what`) is one of them, and report only the skips of those nodes (the budget
    /// search applies each layer's chosen option this way).
    pub scope: Option<BTreeSet<String>>,
}

/// Node, parameter and byte counts of a graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Operator nodes of the top level (the count other tools report).
    pub nodes: usize,
    /// Elements of constant tensors (initializers and `Constant` values), subgraphs included.
    pub params: u64,
    /// Bytes of those tensors' payloads.
    pub bytes: u64,
}

impl Stats {
    /// Counts `graph`.
    pub fn of(graph: &Graph) -> Stats {
        let mut s = Stats {
            nodes: graph.op_count(),
            ..Default::default()
        };
        let mut add = |t: &TensorProto| {
            s.params = s.params.saturating_add(tensor::numel(t).unwrap_or(0));
            s.bytes = s.bytes.saturating_add(tensor::payload_bytes(t));
        };
        // Sums do not depend on the order: no topological sort needed.
        for id in graph.g.node_indices().map(NodeId) {
            if let Some(t) = graph.const_tensor(ValueRef { node: id, slot: 0 }) {
                add(t);
            }
            if let Some(p) = graph.node(id).op() {
                let mut subs = Vec::new();
                nested_subgraphs(p, &mut subs);
                for sub in subs {
                    sub.initializer.iter().for_each(&mut add);
                    sub.node
                        .iter()
                        .filter(|n| {
                            n.op_type.as_deref() == Some("Constant")
                                && n.domain.as_deref().unwrap_or("").is_empty()
                        })
                        .flat_map(|n| &n.attribute)
                        .filter(|a| a.name.as_deref() == Some("value"))
                        .filter_map(|a| a.t.as_ref())
                        .for_each(&mut add);
                }
            }
        }
        s
    }
}

/// One applied patch.
#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    /// What changed.
    pub description: String,
}

/// What one rule did.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// Stable code.
    pub code: &'static str,
    /// Name.
    pub name: &'static str,
    /// Exact or lossy, with the tolerance used for verification.
    pub exactness: Exactness,
    /// Patches applied, in order.
    pub rewrites: Vec<Rewrite>,
    /// Places left alone, with reasons (deduplicated).
    pub skips: Vec<Skip>,
    /// Counts of the model just before the rule first changed it.
    pub before: Stats,
    /// `before` plus the changes made by this rule's own patches (in every round).
    pub after: Stats,
}

/// What a whole run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Per rule, in the order run.
    pub rules: Vec<RuleReport>,
    /// Counts before any rule.
    pub before: Stats,
    /// Counts after all rules.
    pub after: Stats,
    /// Whether `--max-patches` stopped the run early.
    pub stopped_early: bool,
}

impl RunReport {
    /// Patches applied by all rules.
    pub fn patches(&self) -> usize {
        self.rules.iter().map(|r| r.rewrites.len()).sum()
    }

    /// The skips of layers whose calibration failed (their reason holds
    /// [`crate::calibrate::FAILED`]), of every rule: each such layer was left as it was.
    pub fn calibration_failures(&self) -> Vec<&Skip> {
        self.rules
            .iter()
            .flat_map(|r| &r.skips)
            .filter(|s| s.reason.contains(crate::calibrate::FAILED))
            .collect()
    }

    /// Whether a rule that changes the outputs (see [`Rule::lossy`]) rewrote something: the run
    /// is then judged by a model-level budget, not element by element.
    pub fn lossy(&self, rules: &[&dyn Rule], config: &Config) -> bool {
        rules.iter().any(|r| {
            r.lossy(config)
                && self
                    .rules
                    .iter()
                    .any(|rr| rr.code == r.meta().code && !rr.rewrites.is_empty())
        })
    }

    /// Adds what a later run over the same model did: its rules' rewrites and skips join those
    /// of the same code (or are appended), and its counts follow this run's.
    pub fn absorb(&mut self, later: RunReport) {
        for o in later.rules {
            let delta = |after: u64, before: u64, base: u64| (base + after).saturating_sub(before);
            match self.rules.iter_mut().find(|r| r.code == o.code) {
                Some(r) => {
                    if r.rewrites.is_empty() {
                        r.before = o.before;
                        r.after = o.before;
                    }
                    r.after = Stats {
                        nodes: (r.after.nodes + o.after.nodes).saturating_sub(o.before.nodes),
                        params: delta(o.after.params, o.before.params, r.after.params),
                        bytes: delta(o.after.bytes, o.before.bytes, r.after.bytes),
                    };
                    // A rule run again with a lossy configuration (a search's prune ratio
                    // after its exact criterion) is lossy as a whole.
                    if !o.rewrites.is_empty() && matches!(o.exactness, Exactness::Lossy { .. }) {
                        r.exactness = o.exactness;
                    }
                    r.rewrites.extend(o.rewrites);
                    for s in o.skips {
                        if !r.skips.contains(&s) {
                            r.skips.push(s);
                        }
                    }
                }
                None => self.rules.push(o),
            }
        }
        self.after = later.after;
        self.stopped_early |= later.stopped_early;
    }

    /// The largest tolerance among rules that rewrote something (0 if none did).
    pub fn tolerance(&self, rules: &[&dyn Rule], config: &Config) -> f32 {
        rules
            .iter()
            .filter(|r| {
                self.rules
                    .iter()
                    .any(|rr| rr.code == r.meta().code && !rr.rewrites.is_empty())
            })
            .map(|r| r.tolerance(config))
            .fold(0.0, f32::max)
    }
}

/// Upper bound on patches per rule per round, at least; a rule that hits it (or twice the
/// graph's node count, when larger) does not converge.
const MAX_PATCHES_PER_RULE: usize = 200_000;
/// Upper bound on rounds over all rules.
const MAX_ROUNDS: usize = 16;

/// Builds `m`'s patch and applies it to a copy of the graph: the copy if the patch applies,
/// checks and does not grow the encoded graph, else why not.
fn apply_one(
    rule: &dyn Rule,
    model: &Model,
    m: &Match,
    config: &Config,
) -> Result<(Graph, String)> {
    let patch = rule.rewrite(model, m, config)?;
    let description = describe(&patch, m);
    let may_grow = patch.may_grow();
    let mut g = model.graph.clone();
    patch.apply(&mut g)?;
    let growth = g.encoded_delta(&model.graph);
    if growth > 0 && !may_grow {
        return Err(grows(rule, growth));
    }
    Ok((g, description))
}

fn describe(patch: &Patch, m: &Match) -> String {
    if patch.description.is_empty() {
        m.what.clone()
    } else {
        patch.description.clone()
    }
}

fn grows(rule: &dyn Rule, growth: i64) -> Error {
    Error::Rule {
        rule: rule.meta().name.to_string(),
        reason: format!("the rewrite would grow the model by {growth} bytes"),
    }
}

/// What one batch did: applied patches' descriptions in order, and the matches that failed
/// (as skips, with their `what`). Matches neither applied nor failed were deferred.
#[derive(Default)]
struct Batch {
    applied: Vec<String>,
    failed: Vec<(Skip, String)>,
}

/// The skip of `m`'s anchor in `graph`, for `reason`.
fn skip_of(graph: &Graph, m: &Match, reason: String) -> Skip {
    let n = graph.node(m.anchor);
    Skip {
        node: n.label(),
        op: n.op_type().to_string(),
        reason,
    }
}

/// Applies `matches` in order, at most `budget` of them, to one working copy of the graph:
/// each patch is built, applied, measured over the nodes it touched, and taken back if it fails
/// or grows the model (a skip, as in [`apply_one`]). For a rule whose matches are independent,
/// each patch is built against the working copy (the earlier patches applied), as before
/// batching. For the others it is built against the graph as the batch found it, and a match
/// whose nodes (or the producers of their inputs), or whose patch's nodes, an earlier patch of
/// the batch changed is deferred to the next `find`: so every applied patch was built on ground
/// that is still as its rule saw it. The graph is checked once at the end; if that fails, the
/// batch is redone one patch at a time, each checked, as [`apply_one`] does, so that
/// correctness never depends on the batching.
fn apply_batch(
    rule: &dyn Rule,
    model: &mut Model,
    matches: &[Match],
    config: &Config,
    budget: usize,
) -> Batch {
    let mut work = model.graph.clone();
    // Nodes changed in any way by the batch's patches so far, and those changed in place.
    let mut written: FxHashSet<NodeId> = FxHashSet::default();
    let mut rewritten: FxHashSet<NodeId> = FxHashSet::default();
    let mut out = Batch::default();
    // The matches tried (applied or failed), for the one-by-one fallback.
    let mut tried: Vec<&Match> = Vec::new();
    let mut sound = true;
    let independent = rule.independent_matches();
    for m in matches {
        if out.applied.len() >= budget {
            break;
        }
        let graph = &model.graph;
        let own = || std::iter::once(m.anchor).chain(m.nodes.iter().copied());
        let stale = || {
            own().any(|n| written.contains(&n))
                || own()
                    .filter(|n| graph.contains(*n))
                    .flat_map(|n| {
                        graph
                            .node_inputs(n)
                            .into_iter()
                            .flatten()
                            .chain(graph.captures(n))
                    })
                    .any(|v| rewritten.contains(&v.node))
        };
        if !independent && stale() || independent && !own().all(|n| work.contains(n)) {
            continue;
        }
        // A rule with independent matches sees the patches before this one, as it always has
        // (one may reuse what an earlier one added); the others see the graph as it was found.
        let patch = if independent {
            std::mem::swap(&mut model.graph, &mut work);
            let p = rule.rewrite(model, m, config);
            std::mem::swap(&mut model.graph, &mut work);
            p
        } else {
            rule.rewrite(model, m, config)
        };
        let patch = match patch {
            Ok(p) => p,
            Err(e) => {
                out.failed
                    .push((skip_of(&model.graph, m, e.to_string()), m.what.clone()));
                tried.push(m);
                continue;
            }
        };
        let (changes, reads) = patch.footprint();
        if !independent
            && (changes.iter().any(|n| written.contains(n))
                || reads.iter().any(|n| rewritten.contains(n)))
        {
            continue;
        }
        tried.push(m);
        let description = describe(&patch, m);
        let may_grow = patch.may_grow();
        let mut log = Undo::new(&work);
        let result = patch.apply_logged(&mut work, &mut log).and_then(|()| {
            match log.growth(&work, &work.value_info_at) {
                g if g > 0 && !may_grow => Err(grows(rule, g)),
                _ => Ok(()),
            }
        });
        match result {
            Ok(()) => {
                written.extend(log.written());
                rewritten.extend(log.rewritten());
                out.applied.push(description);
            }
            Err(e) => {
                out.failed
                    .push((skip_of(&model.graph, m, e.to_string()), m.what.clone()));
                if log.rollback(&mut work).is_err() {
                    sound = false;
                    break;
                }
            }
        }
    }
    if sound && (out.applied.is_empty() || work.check().is_ok()) {
        if !out.applied.is_empty() {
            model.graph = work;
        }
        return out;
    }
    drop(work);
    // The batch as a whole does not hold: one patch at a time, each on a copy and checked.
    // Skips name the anchors as the batch found them (a patch of the fallback may remove one).
    let labels: Vec<Skip> = tried
        .iter()
        .map(|m| skip_of(&model.graph, m, String::new()))
        .collect();
    let mut out = Batch::default();
    for (m, label) in tried.into_iter().zip(labels) {
        if out.applied.len() >= budget {
            break;
        }
        // A match whose nodes an earlier patch removed waits for the next `find`.
        if !std::iter::once(&m.anchor)
            .chain(&m.nodes)
            .all(|n| model.graph.contains(*n))
        {
            continue;
        }
        match apply_one(rule, model, m, config) {
            Ok((g, description)) => {
                model.graph = g;
                out.applied.push(description);
            }
            Err(e) => out.failed.push((
                Skip {
                    reason: e.to_string(),
                    ..label
                },
                m.what.clone(),
            )),
        }
    }
    out
}

/// Matches of one `find` to apply together: all of them for a rule whose matches are
/// independent, else greedily those whose nodes (anchor and `nodes`) are disjoint from the
/// nodes of the matches picked before them.
fn pick(rule: &dyn Rule, candidates: Vec<Match>) -> Vec<Match> {
    if rule.independent_matches() {
        return candidates;
    }
    let mut used: FxHashSet<NodeId> = FxHashSet::default();
    candidates
        .into_iter()
        .filter(|m| {
            let own = || std::iter::once(m.anchor).chain(m.nodes.iter().copied());
            if own().any(|n| used.contains(&n)) {
                return false;
            }
            used.extend(own());
            true
        })
        .collect()
}

/// Runs one rule to its fixed point within a round: find, apply the non-overlapping matches as
/// one batch, find again, until a `find` offers nothing new. Returns the patches applied, and
/// whether `--max-patches` stopped the run with matches still on offer.
fn run_rule(
    rule: &dyn Rule,
    model: &mut Model,
    config: &Config,
    opts: &DriverOptions,
    report: &mut RuleReport,
    skips: &mut BTreeSet<Skip>,
    total: &mut usize,
) -> Result<(usize, bool)> {
    let in_scope = |label: &str| opts.scope.as_ref().is_none_or(|s| s.contains(label));
    let limit = MAX_PATCHES_PER_RULE.max(2 * model.graph.node_count());
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut applied = 0usize;
    loop {
        let findings = rule.find(model, config);
        skips.extend(findings.skips.into_iter().filter(|s| in_scope(&s.node)));
        let candidates: Vec<Match> = findings
            .matches
            .into_iter()
            .filter(|m| {
                !failed.contains(&m.what)
                    && (in_scope(&model.graph.node(m.anchor).label()) || in_scope(&m.what))
            })
            .collect();
        if candidates.is_empty() {
            return Ok((applied, false));
        }
        let budget = opts
            .max_patches
            .map_or(usize::MAX, |mp| mp.saturating_sub(*total));
        if budget == 0 {
            return Ok((applied, true));
        }
        let batch = apply_batch(rule, model, &pick(rule, candidates), config, budget);
        for (skip, what) in batch.failed {
            skips.insert(skip);
            failed.insert(what);
        }
        applied += batch.applied.len();
        *total += batch.applied.len();
        report.rewrites.extend(
            batch
                .applied
                .into_iter()
                .map(|description| Rewrite { description }),
        );
        if applied > limit {
            return Err(Error::Rule {
                rule: rule.meta().name.to_string(),
                reason: format!("did not converge after {applied} patches"),
            });
        }
    }
}

/// Runs `rules` in order, each to its own fixed point, and repeats the sequence until a round
/// changes nothing. The matches of one `find` that do not overlap are applied as one batch on
/// one copy of the graph, each patch measured and, if it fails or would make the encoded graph
/// larger, taken back and reported as a skip with its reason (its match is not tried again in
/// that round); the batch is checked once, and redone one checked patch at a time if that
/// check fails. The time per patch follows the patch's size, not the graph's.
pub fn run(
    model: &mut Model,
    rules: &[&dyn Rule],
    config: &Config,
    opts: &DriverOptions,
) -> Result<RunReport> {
    let before = Stats::of(&model.graph);
    let mut reports: Vec<RuleReport> = rules
        .iter()
        .map(|r| {
            let m = r.meta();
            RuleReport {
                code: m.code,
                name: m.name,
                exactness: if r.lossy(config) {
                    Exactness::Lossy {
                        tolerance: r.tolerance(config),
                    }
                } else {
                    m.exactness
                },
                rewrites: vec![],
                skips: vec![],
                before,
                after: before,
            }
        })
        .collect();
    let mut skips: Vec<BTreeSet<Skip>> = vec![BTreeSet::new(); rules.len()];
    let mut total = 0usize;
    let mut stopped_early = false;
    'rounds: for round in 0..MAX_ROUNDS {
        let mut changed = false;
        for (ri, rule) in rules.iter().enumerate() {
            let entry = Stats::of(&model.graph);
            if round == 0 {
                reports[ri].before = entry;
                reports[ri].after = entry;
            }
            let (applied, stop) = run_rule(
                *rule,
                model,
                config,
                opts,
                &mut reports[ri],
                &mut skips[ri],
                &mut total,
            )?;
            if applied > 0 {
                changed = true;
                // Attribute to this rule only what its own patches changed, across rounds.
                let exit = Stats::of(&model.graph);
                let r = &mut reports[ri];
                if r.rewrites.len() == applied {
                    r.before = entry;
                    r.after = entry;
                }
                r.after.nodes = (r.after.nodes + exit.nodes).saturating_sub(entry.nodes);
                r.after.params = (r.after.params + exit.params).saturating_sub(entry.params);
                r.after.bytes = (r.after.bytes + exit.bytes).saturating_sub(entry.bytes);
            }
            if stop {
                stopped_early = true;
                break 'rounds;
            }
        }
        if !changed {
            break;
        }
    }
    for (r, s) in reports.iter_mut().zip(skips) {
        r.skips = s.into_iter().collect();
    }
    Ok(RunReport {
        rules: reports,
        before,
        after: Stats::of(&model.graph),
        stopped_early,
    })
}
