//! Applies rules to a fixed point, one checked patch at a time, and reports what each rule did.

use std::collections::BTreeSet;

use serde::Serialize;

use super::rule::{Exactness, Rule, Skip};
use super::Config;
use crate::error::{Error, Result};
use crate::ir::{tensor, Graph, Model, ValueRef};
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
        for id in graph.topo_order() {
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

/// Upper bound on patches per rule per round; a rule that hits it does not converge.
const MAX_PATCHES_PER_RULE: usize = 200_000;
/// Upper bound on rounds over all rules.
const MAX_ROUNDS: usize = 16;

/// Builds `m`'s patch and applies it to a copy of the graph: the copy if the patch applies,
/// checks and does not grow the encoded graph, else why not.
fn apply_one(
    rule: &dyn Rule,
    model: &Model,
    m: &super::rule::Match,
    config: &Config,
) -> Result<(Graph, String)> {
    let patch = rule.rewrite(model, m, config)?;
    let description = if patch.description.is_empty() {
        m.what.clone()
    } else {
        patch.description.clone()
    };
    let may_grow = patch.may_grow();
    let mut g = model.graph.clone();
    patch.apply(&mut g)?;
    let growth = g.encoded_delta(&model.graph);
    if growth > 0 && !may_grow {
        return Err(Error::Rule {
            rule: rule.meta().name.to_string(),
            reason: format!("the rewrite would grow the model by {growth} bytes"),
        });
    }
    Ok((g, description))
}

/// Runs `rules` in order, each to its own fixed point, and repeats the sequence until a round
/// changes nothing. Each patch is applied to a copy of the graph and checked; a patch that fails,
/// or that would make the encoded graph larger, becomes a skip with its reason and its match is
/// not tried again.
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
            let mut failed: BTreeSet<String> = BTreeSet::new();
            let mut applied = 0usize;
            loop {
                if opts.max_patches.is_some_and(|m| total >= m) {
                    stopped_early = true;
                    break 'rounds;
                }
                let findings = rule.find(model, config);
                let in_scope = |label: &str| opts.scope.as_ref().is_none_or(|s| s.contains(label));
                skips[ri].extend(findings.skips.into_iter().filter(|s| in_scope(&s.node)));
                let mut progressed = false;
                for m in findings.matches {
                    if failed.contains(&m.what)
                        || !(in_scope(&model.graph.node(m.anchor).label()) || in_scope(&m.what))
                    {
                        continue;
                    }
                    if progressed && opts.max_patches.is_some_and(|mp| total >= mp) {
                        stopped_early = true;
                        break 'rounds;
                    }
                    match apply_one(*rule, model, &m, config) {
                        Ok((g, description)) => {
                            model.graph = g;
                            reports[ri].rewrites.push(Rewrite { description });
                            applied += 1;
                            total += 1;
                            changed = true;
                            progressed = true;
                            if !rule.independent_matches() {
                                break;
                            }
                        }
                        Err(e) => {
                            let n = model.graph.node(m.anchor);
                            skips[ri].insert(Skip {
                                node: n.label(),
                                op: n.op_type().to_string(),
                                reason: e.to_string(),
                            });
                            failed.insert(m.what);
                        }
                    }
                    if applied > MAX_PATCHES_PER_RULE {
                        return Err(Error::Rule {
                            rule: rule.meta().name.to_string(),
                            reason: format!("did not converge after {applied} patches"),
                        });
                    }
                }
                if !progressed {
                    break;
                }
            }
            if applied > 0 {
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
