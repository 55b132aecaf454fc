//! The budget search: as small as possible while the outputs move at most this much
//! (`--budget`), or this small with the least damage (`--target-size`).
//!
//! It drives the existing lossy rules and the verifier; it is not a second pipeline:
//!
//! 1. **Options.** Each rule in the selection offers variants of its configuration
//!    ([`Rule::search_variants`]): the user's own when a rule flag was given (`--lowrank-rank
//!    128` pins that one), else a ladder (`prune` removing 25 or 50 % of each coupled group's
//!    channels; `lowrank` at 50, 30, 20 and 10 % of each weight's parameters; `quantize` as
//!    configured, int8 per channel by default; `cluster` at 4 and 8 bits per tensor). A coupled
//!    group's options are: unchanged or one `Structure` variant (prune). A layer's options are:
//!    unchanged, one variant of one rule, or a `Factor` variant (lowrank) followed by a `Store`
//!    variant (quantize or cluster, whichever) of its two factors: `Store` variants are
//!    alternatives, one per layer.
//!    Structure variants are applied first, so the others act on the smaller layers.
//! 2. **Sensitivity.** One `find` per variant on the model; then, per match, the rule's own
//!    patch is applied alone to a copy and the copy runs in tract on the measuring inputs
//!    (`--calibration`, else the verification inputs); its loss against the original's outputs
//!    (computed once) is recorded, with the bytes (or MACs) it saves.
//! 3. **Allocation.** Greedy by saving per unit of loss over every layer's options (a
//!    multiple-choice knapsack), with losses added as independent errors add: `1 − cosine`
//!    and squared relative L2 add, max abs and argmax disagreement add linearly. A layer
//!    combining both rules is estimated as the sum of their losses.
//! 4. **Structure first.** When the allocation picks `Structure` options, they are applied
//!    together and the pruned model's own loss is measured (pruned groups compound through
//!    depth far beyond the sum of their losses alone); if it is over [`STRUCTURE_SHARE`] of the
//!    budget, the longest prefix, by saving per unit of loss, that fits is found by bisection.
//!    The other variants are measured again on the pruned model (each counted for what it adds
//!    to its loss) and allocated within what is left. The search without structure options
//!    runs too, and of the two verified results the one better at the objective is kept.
//! 5. **Verification and back-off.** The choices are applied through the driver, one run per
//!    variant, scoped to the chosen layers; the result is encoded, decoded and verified against
//!    the original on the verification inputs under the budget. If it fails, the estimates
//!    missed what the verification inputs do: each chosen option is measured alone on the input
//!    set that failed, its loss becomes the larger of the two measurements, and the allocation
//!    runs again. If that changes nothing, the allocation runs under a limit scaled down by how
//!    far the estimate was off (dropping first the choices that save least per unit of loss);
//!    if that changes nothing either, the choice with the largest estimated loss falls back to
//!    its next gentler option. The whole is applied and verified again each time — until it
//!    passes or nothing lossy is left.
//!
//! Deterministic: matches come in the driver's order, ties are broken by layer label and option
//! order, and the measuring inputs are fixed, so the same inputs give the same bytes.

mod progress;
mod settle;

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::{tensor, Model};
use crate::onnx::proto::ModelProto;
use crate::rewrite::{self, Config, DriverOptions, Rule, RunReport, Stage};
use crate::verify::{self, Budget, InputSet, Metric, Outputs, VerifyReport};

pub use progress::Progress;
use settle::{added, settle, Ctx, Pass};

/// tract runs timed per option under `--objective latency` (the median counts).
pub const LATENCY_RUNS: usize = 5;
/// The part of the budget the structure options (prune) may spend together, measured; the rest
/// is left to the per-layer options measured on the pruned model.
pub const STRUCTURE_SHARE: f64 = 0.5;
/// Most back-off steps before the search gives up every lossy change.
pub const MAX_BACKOFF: usize = 24;

/// What the search minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Bytes of the model's constants.
    Size,
    /// Multiply-accumulates of Conv, MatMul and Gemm.
    Macs,
    /// tract latency, measured per option (median of [`LATENCY_RUNS`] runs on the first
    /// measuring input set): noisy, so unlike the others not deterministic.
    Latency,
}

impl Objective {
    /// The name `--objective` takes.
    pub fn name(self) -> &'static str {
        match self {
            Objective::Size => "size",
            Objective::Macs => "macs",
            Objective::Latency => "latency",
        }
    }
}

impl std::str::FromStr for Objective {
    type Err = Error;
    fn from_str(s: &str) -> Result<Objective> {
        match s {
            "size" => Ok(Objective::Size),
            "macs" => Ok(Objective::Macs),
            "latency" => Ok(Objective::Latency),
            _ => Err(Error::Usage(format!(
                "--objective must be `size`, `macs` or `latency`, got `{s}`"
            ))),
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Goal {
    /// The most the outputs may move; with `target_size`, only reported against.
    pub budget: Budget,
    /// `--target-size R`: reach `R ×` the input file's bytes with the least loss.
    pub target_size: Option<f64>,
    /// What to minimise under the budget.
    pub objective: Objective,
    /// `--sparse-storage`: the result is written with sparse initializers where smaller, so an
    /// option's bytes saved include what zeroed weights save there (`sparsify` saves only so).
    pub sparse_storage: bool,
}

/// One variant of one lossy rule.
struct Variant<'a> {
    rule: &'a dyn Rule,
    config: Config,
    name: String,
    stage: Stage,
}

/// One way to change one layer (by variant index): a `Structure` variant alone (its layers are
/// the coupled groups, keyed apart from the layers the other stages change), or a `Factor`
/// variant, a `Store` variant, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct OptionKey {
    structure: Option<usize>,
    factor: Option<usize>,
    store: Option<usize>,
}

impl OptionKey {
    const NONE: OptionKey = OptionKey {
        structure: None,
        factor: None,
        store: None,
    };

    fn parts(self) -> impl Iterator<Item = usize> {
        [self.structure, self.factor, self.store]
            .into_iter()
            .flatten()
    }
}

/// What the search allocates options to: the driver scope its options apply to (the anchor's
/// label, or the match's description), and whether it is a group — a `Structure` variant's
/// match changes a group of coupled layers, so its options are kept apart from the per-layer
/// options of the other stages on the same anchor. Shown as the scope, with ` (channels)` for
/// a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Layer {
    scope: String,
    group: bool,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.scope)?;
        if self.group {
            f.write_str(" (channels)")?;
        }
        Ok(())
    }
}

/// An option with its estimated cost and saving.
#[derive(Debug, Clone)]
struct Costed {
    key: OptionKey,
    /// Additive loss (see [`additive`]).
    loss: f64,
    saved_bytes: f64,
    saved_macs: f64,
    saved_us: f64,
}

/// One variant applied alone to one layer, measured.
#[derive(Debug, Clone)]
struct Measured {
    loss: f64,
    saved_bytes: i64,
    saved_macs: i64,
    /// Microseconds of tract latency saved (only measured for `--objective latency`).
    saved_us: f64,
}

/// The choice made for one layer, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    /// The layer's node label.
    pub layer: String,
    /// What was chosen: `unchanged`, `lowrank ratio 0.2`, `quantize int8 per channel`, or both.
    pub choice: String,
    /// The loss of each rule's option measured alone, under the budget's metric.
    pub measured: Vec<(String, f64)>,
    /// Estimated bytes saved.
    pub saved_bytes: i64,
}

/// What the search did.
#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    /// The budget (what verification holds the result to).
    pub budget: Budget,
    /// `--target-size`, when given.
    pub target_size: Option<f64>,
    /// What was minimised.
    pub objective: Objective,
    /// Where losses were measured: `calibration (4 sets)` or `verification inputs (3 sets)`.
    pub measured_on: String,
    /// Single-option models run in tract.
    pub candidates: usize,
    /// Per layer with at least one option, in label order.
    pub choices: Vec<Choice>,
    /// Back-off steps taken, each with the verification result that caused it.
    pub backoffs: Vec<String>,
    /// What became of the structure options (prune): how many were kept together, and whether
    /// the search with them or without them won.
    pub structure: Vec<String>,
}

/// The outcome: the rewritten model, what the rules did, the search, and the verification of
/// the bytes to be written (already judged by the budget).
pub struct Outcome {
    /// The model after the lossless rules and the chosen lossy options.
    pub model: Model,
    /// The proto of `model`, decoded from its encoding (what is written).
    pub proto: ModelProto,
    /// Every rule's report.
    pub report: RunReport,
    /// The search.
    pub search: SearchReport,
    /// The final verification, judged by the budget.
    pub verification: VerifyReport,
}

/// Loss in the space where independent errors add.
fn additive(metric: Metric, loss: f64) -> f64 {
    match metric {
        Metric::RelL2 => loss * loss,
        Metric::Cosine | Metric::Argmax | Metric::MaxAbs => loss,
    }
}

/// The variants the selection offers, in the order they are applied: by stage, then selection.
fn variants<'a>(rules: &[&'a dyn Rule], config: &Config) -> Vec<Variant<'a>> {
    let mut out: Vec<Variant> = rules
        .iter()
        .flat_map(|&rule| {
            rule.search_variants(config)
                .into_iter()
                .map(move |v| Variant {
                    rule,
                    config: v.config,
                    name: v.name,
                    stage: v.stage,
                })
        })
        .collect();
    out.sort_by_key(|v| v.stage);
    out
}

fn macs(model: &Model) -> i64 {
    crate::report::inspect::inspect(model, 0).macs.total as i64
}

/// The loss of `m`'s patch applied alone to `base`, on `sets` against `reference`, with the
/// bytes and MACs it saves.
#[allow(clippy::too_many_arguments)]
fn measure_one(
    base: &Model,
    v: &Variant,
    m: &rewrite::Match,
    metric: Metric,
    sets: &[InputSet],
    reference: &[Outputs],
    base_macs: Option<i64>,
    timing: Option<(&InputSet, f64)>,
    sparse_base: Option<i64>,
) -> Result<Measured> {
    let patch = v.rule.rewrite(base, m, &v.config)?;
    let mut copy = base.clone();
    patch.apply(&mut copy.graph)?;
    let mut saved_bytes = -copy.graph.encoded_delta(&base.graph);
    // MACs need shape inference over the whole graph: only counted when they are the objective.
    let saved_macs = base_macs.map_or(0, |b| b - macs(&copy));
    let proto = copy.to_proto();
    if let Some(base_sparse) = sparse_base {
        let mut p = proto.clone();
        saved_bytes += crate::onnx::sparse::to_sparse_storage(&mut p).saved() as i64 - base_sparse;
    }
    let report = verify::segment::verify_against_within(
        reference,
        &proto,
        "candidate",
        sets,
        0.0,
        v.config.memory_limit(),
    )?;
    let loss = verify::metric::worst(&report, metric).map_or(0.0, |w| w.loss);
    let saved_us = match timing {
        Some((set, base_us)) => base_us - latency_us(&proto, set)?,
        None => 0.0,
    };
    Ok(Measured {
        loss,
        saved_bytes,
        saved_macs,
        saved_us,
    })
}

/// Median of [`LATENCY_RUNS`] tract runs of `model`'s compiled plan on `set`, in µs (the
/// compile is not timed).
fn latency_us(model: &ModelProto, set: &InputSet) -> Result<f64> {
    let (plan, _) = crate::verify::runner::Plan::compile(model, set, "candidate")?;
    let mut times = Vec::with_capacity(LATENCY_RUNS);
    for _ in 0..LATENCY_RUNS {
        let t = std::time::Instant::now();
        plan.run(set)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Every variant's matches on `base`, by `(variant, layer label)`.
type Matches = BTreeMap<(usize, Layer), rewrite::Match>;

/// Every measured option: `(variant, layer) → measurement`.
type Measurements = BTreeMap<(usize, Layer), Measured>;

/// Measures the variants `which` on every layer they match: `(variant, layer) → measurement`.
#[allow(clippy::too_many_arguments)]
fn sensitivity(
    base: &Model,
    variants: &[Variant],
    which: &[usize],
    metric: Metric,
    sets: &[InputSet],
    reference: &[Outputs],
    goal: &Goal,
    progress: &Progress,
) -> Result<(Measurements, Matches)> {
    let objective = goal.objective;
    let base_macs = (objective == Objective::Macs).then(|| macs(base));
    let sparse_base = goal.sparse_storage.then(|| {
        let mut p = base.to_proto();
        crate::onnx::sparse::to_sparse_storage(&mut p).saved() as i64
    });
    let base_us = match (objective, sets.first()) {
        (Objective::Latency, Some(set)) => {
            progress.message("timing the model in tract");
            Some((set, latency_us(&base.to_proto(), set)?))
        }
        _ => None,
    };
    let mut jobs = Vec::new();
    for &vi in which {
        let v = &variants[vi];
        progress.message(&format!("finding where {} applies", v.name));
        let findings = v.rule.find(base, &v.config);
        for m in findings.matches {
            jobs.push((vi, m));
        }
    }
    progress.start("measuring each option alone in tract", jobs.len() as u64);
    // A layer is its anchor's label, unless several matches of one variant share that anchor
    // (weights an `If` reads): then each is its own layer, named by its description.
    let mut per_anchor: BTreeMap<(usize, String), usize> = BTreeMap::new();
    for (vi, m) in &jobs {
        *per_anchor
            .entry((*vi, base.graph.node(m.anchor).label()))
            .or_default() += 1;
    }
    let mut out = BTreeMap::new();
    let mut matches = Matches::new();
    for (vi, m) in jobs {
        let v = &variants[vi];
        let label = base.graph.node(m.anchor).label();
        let layer = Layer {
            scope: if per_anchor[&(vi, label.clone())] > 1 {
                m.what.clone()
            } else {
                label
            },
            group: v.stage == Stage::Structure,
        };
        progress.message(&format!("{} on `{layer}`", v.name));
        // A candidate that cannot be built or run is simply not an option.
        if let Ok(x) = measure_one(
            base,
            v,
            &m,
            metric,
            sets,
            reference,
            base_macs,
            base_us,
            sparse_base,
        ) {
            out.insert((vi, layer.clone()), x);
            matches.insert((vi, layer), m);
        }
        progress.inc();
    }
    progress.finish();
    Ok((out, matches))
}

/// Every layer's options with their estimated costs (the unchanged option first).
fn options(
    variants: &[Variant],
    measured: &Measurements,
    metric: Metric,
    weight_bytes: &BTreeMap<String, f64>,
) -> BTreeMap<Layer, Vec<Costed>> {
    let mut by_layer: BTreeMap<Layer, Vec<Costed>> = BTreeMap::new();
    let none = OptionKey::NONE;
    for ((vi, layer), m) in measured {
        let list = by_layer.entry(layer.clone()).or_insert_with(|| {
            vec![Costed {
                key: none,
                loss: 0.0,
                saved_bytes: 0.0,
                saved_macs: 0.0,
                saved_us: 0.0,
            }]
        });
        let mut key = OptionKey::NONE;
        match variants[*vi].stage {
            Stage::Structure => key.structure = Some(*vi),
            Stage::Factor => key.factor = Some(*vi),
            Stage::Store => key.store = Some(*vi),
        }
        list.push(Costed {
            key,
            loss: additive(metric, m.loss),
            saved_bytes: m.saved_bytes as f64,
            saved_macs: m.saved_macs as f64,
            saved_us: m.saved_us,
        });
    }
    // A factor variant then a store variant on its factors: losses add; the store variant saves
    // on what the factors keep.
    for (layer, list) in by_layer.iter_mut() {
        let w = weight_bytes.get(&layer.scope).copied().unwrap_or(0.0);
        let lows: Vec<Costed> = list
            .iter()
            .filter(|c| c.key.factor.is_some())
            .cloned()
            .collect();
        let quants: Vec<Costed> = list
            .iter()
            .filter(|c| c.key.store.is_some())
            .cloned()
            .collect();
        for l in &lows {
            for q in &quants {
                if w <= 0.0 {
                    continue;
                }
                let kept = (1.0 - l.saved_bytes / w).clamp(0.0, 1.0);
                list.push(Costed {
                    key: OptionKey {
                        factor: l.key.factor,
                        store: q.key.store,
                        ..OptionKey::NONE
                    },
                    loss: l.loss + q.loss,
                    saved_bytes: l.saved_bytes + q.saved_bytes * kept,
                    saved_macs: l.saved_macs,
                    saved_us: l.saved_us + q.saved_us,
                });
            }
        }
    }
    by_layer
}

fn saving(c: &Costed, objective: Objective) -> f64 {
    match objective {
        Objective::Size => c.saved_bytes,
        Objective::Macs => c.saved_macs + c.saved_bytes * 1e-9,
        Objective::Latency => c.saved_us + c.saved_bytes * 1e-9,
    }
}

/// Greedy multiple-choice allocation: from each layer's current option, the upgrade with the best
/// saving per unit of added loss, until the loss limit (budget mode) or the byte target (target
/// mode) is reached. Returns the chosen option index per layer.
fn allocate(
    opts: &BTreeMap<Layer, Vec<Costed>>,
    limit: f64,
    bytes_to_save: Option<f64>,
    objective: Objective,
    start: &BTreeMap<Layer, usize>,
) -> BTreeMap<Layer, usize> {
    let mut cur: BTreeMap<Layer, usize> = opts.keys().map(|k| (k.clone(), 0)).collect();
    cur.extend(start.iter().map(|(k, v)| (k.clone(), *v)));
    let objective = if bytes_to_save.is_some() {
        Objective::Size
    } else {
        objective
    };
    loop {
        let total: f64 = cur.iter().map(|(l, &i)| opts[l][i].loss).sum();
        let saved: f64 = cur.iter().map(|(l, &i)| opts[l][i].saved_bytes).sum();
        if bytes_to_save.is_some_and(|b| saved >= b) {
            break;
        }
        let mut best: Option<(f64, &Layer, usize)> = None;
        for (layer, list) in opts {
            let c = &list[cur[layer]];
            for (i, o) in list.iter().enumerate() {
                let gain = saving(o, objective) - saving(c, objective);
                if gain <= 0.0 {
                    continue;
                }
                let dloss = o.loss - c.loss;
                if bytes_to_save.is_none() && total + dloss > limit {
                    continue;
                }
                let ratio = gain / dloss.max(1e-12);
                if best.is_none_or(|(r, _, _)| ratio > r) {
                    best = Some((ratio, layer, i));
                }
            }
        }
        match best {
            Some((_, layer, i)) => {
                let layer = layer.clone();
                cur.insert(layer, i);
            }
            None => break,
        }
    }
    cur
}

/// Applies the chosen options to a copy of `base` through the driver: one run per variant, in
/// stage order, scoped to the layers that chose it; a store variant also reaches the factors of
/// a layer factored before it.
fn apply(
    base: &Model,
    variants: &[Variant],
    opts: &BTreeMap<Layer, Vec<Costed>>,
    chosen: &BTreeMap<Layer, usize>,
) -> Result<(Model, Option<RunReport>)> {
    let mut model = base.clone();
    let mut report: Option<RunReport> = None;
    for (vi, v) in variants.iter().enumerate() {
        let mut scope = BTreeSet::new();
        for (layer, &i) in chosen {
            let k = opts[layer][i].key;
            if k.parts().any(|p| p == vi) {
                scope.insert(layer.scope.clone());
            }
            if let (true, Some(f)) = (k.store == Some(vi), k.factor) {
                scope.extend(variants[f].rule.rewritten_labels(&layer.scope));
            }
        }
        if scope.is_empty() {
            continue;
        }
        let r = rewrite::run(
            &mut model,
            &[v.rule],
            &v.config,
            &DriverOptions {
                scope: Some(scope),
                ..Default::default()
            },
        )?;
        match &mut report {
            Some(all) => all.absorb(r),
            None => report = Some(r),
        }
    }
    Ok((model, report))
}

fn describe(variants: &[Variant], key: OptionKey) -> String {
    let parts: Vec<&str> = key.parts().map(|v| variants[v].name.as_str()).collect();
    if parts.is_empty() {
        "unchanged".into()
    } else {
        parts.join(" + ")
    }
}

/// Each layer's chosen option as text, by layer.
fn describe_all(
    variants: &[Variant],
    opts: &BTreeMap<Layer, Vec<Costed>>,
    chosen: &BTreeMap<Layer, usize>,
) -> BTreeMap<Layer, String> {
    chosen
        .iter()
        .map(|(l, &i)| (l.clone(), describe(variants, opts[l][i].key)))
        .collect()
}

/// Encodes and decodes `model` (the bytes that will be written) and verifies them against the
/// original's outputs under `budget`.
fn verify_written(
    model: &Model,
    reference: &[Outputs],
    sets: &[InputSet],
    budget: Budget,
    memory_limit: u64,
) -> Result<(ModelProto, VerifyReport)> {
    // What the written bytes decode to (prost's decode(encode(m)) == m): verified as it is, with
    // no whole-model encode.
    let proto = model.to_proto();
    let mut report = verify::segment::verify_against_within(
        reference,
        &proto,
        "rewritten",
        sets,
        0.0,
        memory_limit,
    )?;
    verify::judge(&mut report, budget);
    Ok((proto, report))
}

/// Runs the search on `model` (already through the lossless rules, whose report is `lossless`):
/// `lossy` are the selected rules that offer search variants, `original` the input model,
/// `measure` the calibration inputs losses are measured on (`None`: the verification inputs)
/// and how the report names them, `verify_sets` the inputs the result is verified on,
/// `input_bytes` the input file's size (for `--target-size`).
///
/// When the allocation over every option picks structure options (prune), they are applied
/// first and the other stages are measured again on the pruned model, since an option measured
/// on the full layer says little about the same option on the smaller one; the search without
/// them runs too, and the verified result better at the objective is kept.
#[allow(clippy::too_many_arguments)]
pub fn search(
    model: Model,
    lossless: RunReport,
    lossy: &[&dyn Rule],
    config: &Config,
    goal: &Goal,
    original: &ModelProto,
    measure: (Option<&[InputSet]>, &str),
    verify_sets: &[InputSet],
    input_bytes: u64,
    progress: &Progress,
) -> Result<Outcome> {
    let (calibration, measured_on) = measure;
    let measure_sets = calibration.unwrap_or(verify_sets);
    let metric = goal.budget.metric;
    progress.message("running the original in tract");
    let memory_limit = config.memory_limit();
    let measure_ref =
        verify::segment::run_many_within(original, measure_sets, memory_limit, "original")?;
    // Without calibration inputs the losses are measured on the verification inputs: the
    // original runs on them once.
    let verify_ref = match calibration {
        Some(_) => {
            verify::segment::run_many_within(original, verify_sets, memory_limit, "original")?
        }
        None => measure_ref.clone(),
    };
    let variants = variants(lossy, config);
    let all: Vec<usize> = (0..variants.len()).collect();
    let (measured, matches) = sensitivity(
        &model,
        &variants,
        &all,
        metric,
        measure_sets,
        &measure_ref,
        goal,
        progress,
    )?;
    let weight_bytes = weight_bytes_of(&model);
    let limit = if goal.target_size.is_some() {
        f64::INFINITY
    } else {
        additive(metric, goal.budget.limit)
    };
    let budget = if goal.target_size.is_some() {
        Budget {
            metric,
            limit: f64::INFINITY,
        }
    } else {
        goal.budget
    };
    let to_save = |m: &Model| {
        let current = m.to_proto().encoded_len() as f64;
        goal.target_size
            .map(|r| (current - r * input_bytes as f64).max(0.0))
    };
    let opts = options(&variants, &measured, metric, &weight_bytes);
    let joint = allocate(
        &opts,
        limit,
        to_save(&model),
        goal.objective,
        &BTreeMap::new(),
    );
    let structure: BTreeMap<Layer, usize> = joint
        .iter()
        .filter(|(l, &i)| i != 0 && opts[*l][i].key.structure.is_some())
        .map(|(l, &i)| (l.clone(), i))
        .collect();
    let cx = Ctx {
        variants: &variants,
        goal,
        metric,
        limit,
        budget,
        weight_bytes: &weight_bytes,
        verify_ref: &verify_ref,
        verify_sets,
        input_bytes,
        progress,
        memory_limit,
    };
    let mut notes = Vec::new();
    let mut structured = None;
    if !structure.is_empty() {
        // Pruned groups compound through depth far more than their losses alone add up to:
        // measure them together, and keep the longest prefix, by saving per unit of loss, that
        // stays within STRUCTURE_SHARE of the budget (found by bisection).
        let mut order: Vec<(Layer, usize)> = structure.into_iter().collect();
        let rate = |(l, i): &(Layer, usize)| {
            let c = &opts[l][*i];
            saving(c, goal.objective) / c.loss.max(1e-12)
        };
        order.sort_by(|a, b| rate(b).total_cmp(&rate(a)).then_with(|| a.0.cmp(&b.0)));
        let probe = |k: usize| -> Result<(Model, Option<RunReport>, f64)> {
            progress.message(&format!("applying {k} structure option(s) together"));
            let some: BTreeMap<Layer, usize> = order[..k].iter().cloned().collect();
            let (pruned, report) = apply(&model, &variants, &opts, &some)?;
            let r = verify::segment::verify_against_within(
                &measure_ref,
                &pruned.to_proto(),
                "pruned",
                measure_sets,
                0.0,
                memory_limit,
            )?;
            let loss = verify::metric::worst(&r, metric).map_or(f64::INFINITY, |w| w.loss);
            Ok((pruned, report, loss))
        };
        let share = limit * STRUCTURE_SHARE;
        let fits = |loss: f64| additive(metric, loss) <= share;
        let all_of_them = probe(order.len())?;
        let (mut lo, mut hi) = (0, order.len());
        let mut kept = None;
        if fits(all_of_them.2) {
            lo = order.len();
            kept = Some(all_of_them);
        } else {
            let together = all_of_them.2;
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                let p = probe(mid)?;
                if fits(p.2) {
                    lo = mid;
                    kept = Some(p);
                } else {
                    hi = mid;
                }
            }
            notes.push(format!(
                "the {} chosen structure options together moved the outputs to {} on the \
                 measuring inputs; kept {lo} of them, those that save most per unit of loss{}",
                order.len(),
                metric.describe(together),
                kept.as_ref()
                    .map(|k| format!(" ({})", metric.describe(k.2)))
                    .unwrap_or_default()
            ));
        }
        let structure: BTreeMap<Layer, usize> = order[..lo].iter().cloned().collect();
        if let Some((pruned, pruned_report, base_loss)) = kept {
            let rest: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&v| variants[v].stage != Stage::Structure)
                .collect();
            let pass_limit = limit - additive(metric, base_loss);
            if pass_limit >= 0.0 {
                let (mut again, matches2) = sensitivity(
                    &pruned,
                    &variants,
                    &rest,
                    metric,
                    measure_sets,
                    &measure_ref,
                    goal,
                    progress,
                )?;
                for m in again.values_mut() {
                    m.loss = added(metric, m.loss, base_loss);
                }
                let pruned_bytes = weight_bytes_of(&pruned);
                let opts2 = options(&variants, &again, metric, &pruned_bytes);
                let save = to_save(&pruned);
                let mut st = Pass {
                    chosen: allocate(&opts2, pass_limit, save, goal.objective, &BTreeMap::new()),
                    opts: opts2,
                    measured: again,
                    matches: matches2,
                    rechecked: BTreeSet::new(),
                    backoffs: Vec::new(),
                    to_save: save,
                    alloc_limit: pass_limit,
                    target_tries: 0,
                    base_loss,
                };
                let cx2 = Ctx {
                    limit: pass_limit,
                    weight_bytes: &pruned_bytes,
                    ..cx
                };
                match settle(&pruned, &cx2, &mut st) {
                    Ok((out, r, proto, verification)) if verification.passed => {
                        let mut report = lossless.clone();
                        if let Some(p) = pruned_report {
                            report.absorb(p);
                        }
                        if let Some(r) = r {
                            report.absorb(r);
                        }
                        // The structure choices, then the other stages' on the pruned model.
                        let mut chosen = structure;
                        chosen.extend(st.chosen);

                        let mut all_opts = opts.clone();
                        all_opts.retain(|l, _| l.group);
                        all_opts.extend(st.opts);
                        let mut all_measured = measured.clone();
                        all_measured.retain(|(v, _), _| variants[*v].stage == Stage::Structure);
                        all_measured.extend(st.measured);
                        structured = Some(outcome(
                            &variants,
                            OutcomeParts {
                                model: out,
                                proto,
                                report,
                                verification,
                                opts: &all_opts,
                                chosen: &chosen,
                                measured: &all_measured,
                                backoffs: st.backoffs,
                                structure: notes.clone(),
                            },
                            goal,
                            measured_on,
                        ));
                    }
                    Ok((_, _, _, verification)) => {
                        notes.push(format!(
                    "the chosen structure options ({}) failed verification even with every \
                     other option dropped ({})",
                    describe_list(&variants, &opts, &structure),
                    verification.budget.as_ref().map_or(String::new(), |(b, w)| format!(
                        "`{}` on {} at {}",
                        w.output,
                        w.set,
                        b.metric.describe(w.loss)
                    ))
                ))
                    }
                    Err(e) => notes.push(format!(
                        "the chosen structure options ({}) left no solution ({e})",
                        describe_list(&variants, &opts, &structure)
                    )),
                }
            } else {
                notes.push(format!(
                    "the chosen structure options ({}) alone moved the outputs to {} on the \
                     measuring inputs",
                    describe_list(&variants, &opts, &structure),
                    metric.describe(base_loss)
                ));
            }
        }
    }
    // Without structure options: every other option, as measured on the model itself.
    let mut measured = measured;
    let mut matches = matches;
    measured.retain(|(v, _), _| variants[*v].stage != Stage::Structure);
    matches.retain(|(v, _), _| variants[*v].stage != Stage::Structure);
    let opts = options(&variants, &measured, metric, &weight_bytes);
    let save = to_save(&model);
    let mut st = Pass {
        chosen: allocate(&opts, limit, save, goal.objective, &BTreeMap::new()),
        opts,
        measured,
        matches,
        rechecked: BTreeSet::new(),
        backoffs: Vec::new(),
        to_save: save,
        alloc_limit: limit,
        target_tries: 0,
        base_loss: 0.0,
    };
    let plain = settle(&model, &cx, &mut st);
    let plain = match (plain, structured) {
        (Ok(p), s) => (p, s),
        // `--target-size` out of reach without structure options, reached with them.
        (Err(_), Some(s)) => return Ok(s),
        (Err(e), None) => return Err(e),
    };
    let ((out, rules_report, proto, verification), structured) = plain;
    if let Some(s) = structured {
        // Both passes were verified: keep the one better at the objective (ties: no pruning).
        let cost = |m: &Model, p: &ModelProto| -> Result<f64> {
            Ok(match goal.objective {
                Objective::Size => p.encoded_len() as f64,
                Objective::Macs => macs(m) as f64,
                Objective::Latency => match measure_sets.first() {
                    Some(set) => latency_us(p, set)?,
                    None => 0.0,
                },
            })
        };
        let with = cost(&s.model, &s.proto)?;
        let without = cost(&out, &proto)?;
        if with < without {
            let mut s = s;
            s.search.structure.push(format!(
                "with the structure options {} {with:.0}, without them {without:.0}: kept them",
                goal.objective.name(),
            ));
            return Ok(s);
        }
        notes.push(format!(
            "with the structure options {} {with:.0}, without them {without:.0}: kept the \
             search without them",
            goal.objective.name(),
        ));
    }
    let mut report = lossless;
    if let Some(r) = rules_report {
        report.absorb(r);
    }
    Ok(outcome(
        &variants,
        OutcomeParts {
            model: out,
            proto,
            report,
            verification,
            opts: &st.opts,
            chosen: &st.chosen,
            measured: &st.measured,
            backoffs: st.backoffs,
            structure: notes,
        },
        goal,
        measured_on,
    ))
}

/// What a settled pass gives, for [`outcome`].
struct OutcomeParts<'a> {
    model: Model,
    proto: ModelProto,
    report: RunReport,
    verification: VerifyReport,
    opts: &'a BTreeMap<Layer, Vec<Costed>>,
    chosen: &'a BTreeMap<Layer, usize>,
    measured: &'a Measurements,
    backoffs: Vec<String>,
    structure: Vec<String>,
}

/// The outcome and its report: every layer with options, its choice and each option's loss.
fn outcome(variants: &[Variant], p: OutcomeParts, goal: &Goal, measured_on: &str) -> Outcome {
    let choices = p
        .opts
        .iter()
        .map(|(layer, list)| {
            let i = p.chosen.get(layer).copied().unwrap_or(0);
            let measured_alone = p
                .measured
                .iter()
                .filter(|((_, l), _)| l == layer)
                .map(|((vi, _), m)| (variants[*vi].name.clone(), m.loss))
                .collect();
            Choice {
                layer: layer.to_string(),
                choice: describe(variants, list[i].key),
                measured: measured_alone,
                saved_bytes: list[i].saved_bytes.round() as i64,
            }
        })
        .collect();
    Outcome {
        model: p.model,
        proto: p.proto,
        report: p.report,
        search: SearchReport {
            budget: goal.budget,
            target_size: goal.target_size,
            objective: goal.objective,
            measured_on: measured_on.to_string(),
            candidates: p.measured.len(),
            choices,
            backoffs: p.backoffs,
            structure: p.structure,
        },
        verification: p.verification,
    }
}

/// The chosen options of `chosen`, as text.
fn describe_list(
    variants: &[Variant],
    opts: &BTreeMap<Layer, Vec<Costed>>,
    chosen: &BTreeMap<Layer, usize>,
) -> String {
    describe_all(variants, opts, chosen)
        .iter()
        .map(|(l, c)| format!("`{}` {c}", l.scope))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Bytes of the constant weights each node reads, by node label.
fn weight_bytes_of(model: &Model) -> BTreeMap<String, f64> {
    let g = &model.graph;
    let mut out = BTreeMap::new();
    for id in g.ops() {
        let bytes: u64 = g
            .node_inputs(id)
            .into_iter()
            .flatten()
            .filter_map(|v| g.const_tensor(v))
            .map(tensor::payload_bytes)
            .sum();
        if bytes > 0 {
            out.insert(g.node(id).label(), bytes as f64);
        }
    }
    out
}

impl SearchReport {
    /// The search as text for the run's report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let goal = match self.target_size {
            Some(r) => format!("target size {r}× the input, least {}", self.budget.metric),
            None => format!(
                "budget {}, objective {}",
                self.budget.describe(),
                self.objective.name()
            ),
        };
        let _ = writeln!(
            s,
            "budget search: {goal}; {} single-option models measured in tract on {}",
            self.candidates, self.measured_on
        );
        let w = self
            .choices
            .iter()
            .map(|c| c.layer.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let wc = self
            .choices
            .iter()
            .map(|c| c.choice.chars().count())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            s,
            "  {:<w$}  {:<wc$}  {:>12}  loss of each option alone ({})",
            "layer", "choice", "bytes saved", self.budget.metric
        );
        for c in &self.choices {
            let alone = c
                .measured
                .iter()
                .map(|(n, l)| format!("{n} {}", loss_text(*l)))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "  {:<w$}  {:<wc$}  {:>12}  {alone}",
                c.layer, c.choice, c.saved_bytes
            );
        }
        for n in &self.structure {
            let _ = writeln!(s, "  structure options: {n}");
        }
        for b in &self.backoffs {
            let _ = writeln!(s, "  backed off after verification: {b}");
        }
        s
    }
}

fn loss_text(l: f64) -> String {
    if l == 0.0 {
        "0".into()
    } else if l.is_infinite() {
        "∞".into()
    } else {
        format!("{l:.2e}")
    }
}
