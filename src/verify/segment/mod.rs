//! Segment-wise verification: verifying a model whose weights do not fit in memory beside tract.
//!
//! tract holds a whole model while it runs it, about [`TRACT_FACTOR`] times its weights. When that
//! is more than the memory limit, [`verify_within`] cuts the original and the rewritten graph at
//! the same values into consecutive segments whose weights fit (see [`cuts`] for which cuts are
//! valid), and for each segment in turn:
//!
//! 1. runs the original's segment on the original's values at its start cut (the graph inputs
//!    for the first), keeping its values at the end cut and the graph outputs it makes;
//! 2. runs the rewritten model's segment on those same original values (the **per-segment**
//!    comparison: a disagreement here was made in this segment), and on the rewritten chain's own
//!    values (the **end-to-end** chain);
//! 3. drops the segment's tract models and every value no later segment reads.
//!
//! The verdict is the end-to-end comparison of the graph outputs, judged as a whole-model run
//! judges them (tolerance or budget); the per-segment reports localize a failure.
//!
//! One model alone runs the same way ([`run_segments`], cut against itself): calibration keeps
//! from each segment the activations rules asked for ([`crate::calibrate::capture_each`]), and
//! [`run_many_within`] the graph outputs (`--quantize-tolerance`, the `--budget` search). A
//! small integer value crossing a cut (a shape computed before it) is given to the next
//! segment as a constant, as it is one inside the whole model.

pub mod cuts;
pub mod memory;

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use tract_onnx::prelude::{DatumType, Tensor};

use super::compare::{
    compare_tensors, failed_comparison, judge, report_from_outputs, verify_labeled, SetReport,
    VerifyReport,
};
use super::inputs::InputSet;
use super::metric::Budget;
use super::prepare::SMALL_INPUT;
use super::runner::{run_each, run_many, signature, Outputs, Plan};
use crate::error::{Error, Result};
use crate::onnx::proto::{GraphProto, ModelProto, ValueInfoProto};
pub use cuts::{plan, Segmentation};
use cuts::{static_types, Scan};
pub use memory::{
    default_memory_limit, format_size, parse_size, DEFAULT_RAM_FRACTION, TRACT_FACTOR,
};

/// One segment of a segment-wise verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentReport {
    /// 1-based number of the segment.
    pub index: usize,
    /// The original's first and last node in the segment (name, else first output).
    pub first_node: String,
    /// See `first_node`.
    pub last_node: String,
    /// The rewritten model's first and last node in the segment.
    pub rewritten_first_node: String,
    /// See `rewritten_first_node`.
    pub rewritten_last_node: String,
    /// Non-constant nodes of the original and of the rewritten model in the segment.
    pub nodes: (usize, usize),
    /// Bytes of the constants the segment reads, in the original and in the rewritten model.
    pub weight_bytes: (u64, u64),
    /// How many values the segment receives at its start cut.
    pub cut_values: usize,
    /// The original's values at the start cut fed into the rewritten segment, compared with the
    /// original at the end cut (and any graph output the segment makes): by the run's budget,
    /// else element-wise where the relative L2 error exceeds the tolerance (see
    /// `forgive_noise`).
    pub report: VerifyReport,
}

/// How a verification went segment by segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segmented {
    /// The memory limit that called for segments, in bytes.
    pub memory_limit: u64,
    /// The weight each segment of the original was to fit, in bytes (`memory_limit / TRACT_FACTOR`).
    pub weight_budget: u64,
    /// The segments, in order.
    pub segments: Vec<SegmentReport>,
    /// Cuts that were valid in the original but not in the rewritten model, and so not made.
    pub dropped_cuts: usize,
}

impl Segmented {
    /// The first segment whose per-segment comparison failed.
    pub fn first_failing(&self) -> Option<&SegmentReport> {
        self.segments.iter().find(|s| !s.report.passed)
    }
}

impl SegmentReport {
    /// `segment 2 of 5 (nodes `a` … `b`)`.
    pub fn describe(&self, of: usize) -> String {
        format!(
            "segment {} of {of} (nodes `{}` … `{}`)",
            self.index, self.first_node, self.last_node
        )
    }
}

impl fmt::Display for Segmented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.segments.len();
        writeln!(
            f,
            "verified in {k} segment{} (--memory-limit {}: at most {} of weights per segment where a cut allows{}); per segment, the original's values fed into the rewritten segment:",
            if k == 1 { "" } else { "s" },
            format_size(self.memory_limit),
            format_size(self.weight_budget),
            if self.dropped_cuts > 0 {
                format!(
                    ", {} cut{} not valid in the rewritten model",
                    self.dropped_cuts,
                    if self.dropped_cuts == 1 { "" } else { "s" }
                )
            } else {
                String::new()
            }
        )?;
        for s in &self.segments {
            let worst = s
                .report
                .sets
                .iter()
                .flat_map(|x| &x.outputs)
                .filter_map(|c| c.max_abs_error)
                .fold(0.0, f64::max);
            let failed: Vec<String> = s
                .report
                .failures()
                .iter()
                .map(|(_, c)| format!("`{}`", c.output))
                .collect::<Vec<_>>();
            let mut failed_unique: Vec<String> = Vec::new();
            for n in failed {
                if !failed_unique.contains(&n) {
                    failed_unique.push(n);
                }
            }
            writeln!(
                f,
                "  {:>3}/{k}  `{}` … `{}`  {} nodes ({} rewritten), weights {} ({} rewritten), {} values in: {} (max abs {:.3e}){}",
                s.index,
                s.first_node,
                s.last_node,
                s.nodes.0,
                s.nodes.1,
                format_size(s.weight_bytes.0),
                format_size(s.weight_bytes.1),
                s.cut_values,
                if s.report.passed { "ok" } else { "FAIL" },
                worst,
                if failed_unique.is_empty() {
                    String::new()
                } else {
                    format!(", differs at {}", failed_unique.join(", "))
                }
            )?;
        }
        writeln!(
            f,
            "the table above is end to end: the rewritten segments fed their own outputs"
        )
    }
}

/// Bytes of the constants of `model` (initializers and `Constant` nodes its nodes read).
pub fn weight_bytes(model: &ModelProto) -> u64 {
    model
        .graph
        .as_ref()
        .map(|g| Scan::new(g, &HashSet::new()).total_weight())
        .unwrap_or(0)
}

/// What verifying `a` against `b` whole is estimated to need: [`TRACT_FACTOR`] times the larger
/// model's weights (tract holds one model at a time).
pub fn whole_model_need(a: &ModelProto, b: &ModelProto) -> u64 {
    TRACT_FACTOR.saturating_mul(weight_bytes(a).max(weight_bytes(b)))
}

/// Verifies `b` against `a` on `sets` as [`verify_labeled`] does when that fits in `memory_limit`
/// bytes ([`whole_model_need`]), else segment by segment with segments of at most
/// `memory_limit / TRACT_FACTOR` bytes of weights. `budget` judges the per-segment comparisons
/// of a lossy run (the caller judges the end-to-end report with [`judge`], as for a whole run).
#[allow(clippy::too_many_arguments)]
pub fn verify_within(
    a: &ModelProto,
    label_a: &str,
    b: &ModelProto,
    label_b: &str,
    sets: &[InputSet],
    tolerance: f32,
    memory_limit: u64,
    budget: Option<Budget>,
) -> Result<VerifyReport> {
    if whole_model_need(a, b) <= memory_limit {
        return verify_labeled(a, label_a, b, label_b, sets, tolerance);
    }
    verify_segmented(
        a,
        label_a,
        b,
        label_b,
        sets,
        tolerance,
        memory_limit,
        budget,
    )
}

/// Verifies segment by segment (see the module documentation), whatever the size of the models.
#[allow(clippy::too_many_arguments)]
pub fn verify_segmented(
    a: &ModelProto,
    label_a: &str,
    b: &ModelProto,
    label_b: &str,
    sets: &[InputSet],
    tolerance: f32,
    memory_limit: u64,
    budget: Option<Budget>,
) -> Result<VerifyReport> {
    if sets.is_empty() {
        return Err(Error::Usage(
            "verification needs at least one input set".into(),
        ));
    }
    let no_graph = || Error::Graph {
        reason: "the model has no graph".into(),
    };
    let ga = a.graph.as_ref().ok_or_else(no_graph)?;
    let gb = b.graph.as_ref().ok_or_else(no_graph)?;
    let fed: HashSet<String> = sets
        .iter()
        .flat_map(|s| s.names().map(str::to_string))
        .collect();
    let weight_budget = (memory_limit / TRACT_FACTOR).max(1);
    let sa = Scan::new(ga, &fed);
    let sb = Scan::new(gb, &fed);
    let seg = cuts::plan_scanned(
        &sa,
        &sb,
        &static_types(ga),
        &static_types(gb),
        weight_budget,
    );
    let k = seg.original.len();
    let outs_a_names = graph_outputs(ga);
    let outs_b_names = graph_outputs(gb);
    // The cut values each chain holds, per input set (the graph inputs are in the sets).
    let mut store_a: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); sets.len()];
    let mut store_b: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); sets.len()];
    let mut final_a: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); sets.len()];
    let mut final_b: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); sets.len()];
    let mut reports = Vec::with_capacity(k);
    for s in 0..k {
        let next_cut: &[String] = seg.cuts.get(s).map(|c| c.as_slice()).unwrap_or(&[]);
        let last = s + 1 == k;
        let want_a = segment_outputs(&sa, &seg.original[s], next_cut, &outs_a_names, last);
        let want_b = segment_outputs(&sb, &seg.rewritten[s], next_cut, &outs_b_names, last);
        let label_sa = format!("{label_a} segment {}/{k}", s + 1);
        let label_sb = format!("{label_b} segment {}/{k}", s + 1);
        let (ma, ins_a) = sub_model(a, &sa, &seg.original[s], &want_a);
        let outs_a = if want_a.is_empty() {
            vec![Vec::new(); sets.len()]
        } else {
            run_segment_many(&ma, &feeds(sets, &store_a, &ins_a), &fed, &label_sa)?
        };
        drop(ma);
        memory::release_freed_memory();
        let (mb, ins_b) = sub_model(b, &sb, &seg.rewritten[s], &want_b);
        let (outs_chain, outs_fed) = if want_b.is_empty() {
            (
                vec![Vec::new(); sets.len()],
                Ok(vec![Vec::new(); sets.len()]),
            )
        } else {
            let chain_feeds = feeds(sets, &store_b, &ins_b);
            let original_feeds = feeds(sets, &store_a, &ins_b);
            let chain = run_segment_many(&mb, &chain_feeds, &fed, &label_sb)?;
            // Where the rewritten chain's values at the cut equal the original's bit for bit
            // (an exact rewrite before it), the per-segment run would repeat the chain's.
            let same = chain_feeds
                .iter()
                .zip(&original_feeds)
                .all(|(x, y)| x.tensors == y.tensors);
            let on_original = if same {
                Ok(chain.clone())
            } else {
                run_segment_many(&mb, &original_feeds, &fed, &label_sb)
            };
            (chain, on_original)
        };
        drop(mb);
        memory::release_freed_memory();
        // Per segment: the rewritten segment on the original's values against the original.
        let set_reports: Vec<SetReport> = sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let outputs = match &outs_fed {
                    Ok(fed) => want_a
                        .iter()
                        .filter(|n| want_b.contains(n))
                        .filter_map(|n| {
                            let x = find(&outs_a[i], n)?;
                            Some(match find(&fed[i], n) {
                                Some(y) => compare_tensors(n, x, y, tolerance),
                                None => {
                                    failed_comparison(n, "not made by the rewritten segment".into())
                                }
                            })
                        })
                        .collect(),
                    Err(e) => vec![failed_comparison(
                        "(segment)",
                        format!("the rewritten segment cannot run on the original's values: {e}"),
                    )],
                };
                SetReport {
                    label: set.label.clone(),
                    passed: outputs.iter().all(|c| c.passed),
                    outputs,
                    inputs: Vec::new(),
                }
            })
            .collect();
        let mut report = VerifyReport {
            tolerance,
            budget: None,
            passed: set_reports.iter().all(|s| s.passed),
            sets: set_reports,
            segmented: None,
        };
        match budget {
            Some(b) => judge(&mut report, b),
            None => forgive_noise(&mut report, tolerance),
        }
        let label = |scan: &Scan, nodes: &[usize], first: bool| {
            let i = if first { nodes.first() } else { nodes.last() };
            i.map(|&i| node_label(&scan.graph.node[i]))
                .unwrap_or_else(|| "-".into())
        };
        reports.push(SegmentReport {
            index: s + 1,
            first_node: label(&sa, &seg.original[s], true),
            last_node: label(&sa, &seg.original[s], false),
            rewritten_first_node: label(&sb, &seg.rewritten[s], true),
            rewritten_last_node: label(&sb, &seg.rewritten[s], false),
            nodes: (seg.original[s].len(), seg.rewritten[s].len()),
            weight_bytes: (
                sa.weight_of(&seg.original[s]),
                sb.weight_of(&seg.rewritten[s]),
            ),
            cut_values: if s == 0 { 0 } else { seg.cuts[s - 1].len() },
            report,
        });
        // Keep what later segments read, and the graph outputs.
        let keep: HashSet<&str> = seg.cuts[s.min(seg.cuts.len())..]
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        advance(&mut store_a, &mut final_a, outs_a, &keep, &outs_a_names);
        advance(&mut store_b, &mut final_b, outs_chain, &keep, &outs_b_names);
    }
    let collect = |finals: &mut Vec<HashMap<String, Tensor>>, names: &[String]| -> Vec<Outputs> {
        finals
            .iter_mut()
            .zip(sets)
            .map(|(m, set)| {
                names
                    .iter()
                    .filter_map(|n| {
                        let t = m.remove(n).or_else(|| set.get(n).cloned())?;
                        Some((n.clone(), t))
                    })
                    .collect()
            })
            .collect()
    };
    let out_a = collect(&mut final_a, &outs_a_names);
    let out_b = collect(&mut final_b, &outs_b_names);
    let mut report = report_from_outputs(&out_a, &out_b, sets, tolerance);
    report.segmented = Some(Segmented {
        memory_limit,
        weight_budget,
        segments: reports,
        dropped_cuts: seg.dropped,
    });
    Ok(report)
}

/// The outputs of the segment of `nodes`: the values of its end cut `next_cut` it makes, then
/// those of `also` it makes, and the constants among `also` when `constants_here`.
fn segment_outputs(
    scan: &Scan,
    nodes: &[usize],
    next_cut: &[String],
    also: &[String],
    constants_here: bool,
) -> Vec<String> {
    let made: HashSet<&str> = nodes
        .iter()
        .flat_map(|&i| scan.graph.node[i].output.iter().map(String::as_str))
        .collect();
    let mut w: Vec<String> = next_cut
        .iter()
        .filter(|v| made.contains(v.as_str()))
        .cloned()
        .collect();
    let mut seen: HashSet<&str> = next_cut
        .iter()
        .filter(|v| made.contains(v.as_str()))
        .map(String::as_str)
        .collect();
    for o in also {
        let here = made.contains(o.as_str())
            || (constants_here && scan.is_constant(o) && !made.contains(o.as_str()));
        if here && seen.insert(o.as_str()) {
            w.push(o.clone());
        }
    }
    w
}

/// What tract is estimated to need to hold `model` whole: [`TRACT_FACTOR`] times its weights.
pub fn model_need(model: &ModelProto) -> u64 {
    TRACT_FACTOR.saturating_mul(weight_bytes(model))
}

/// Runs `model` on `sets` in consecutive segments, as verification runs the original: cut where
/// [`plan`] cuts the model against itself, each segment with at most `memory_limit /
/// TRACT_FACTOR` bytes of weights where a cut allows, fed the earlier segments' values at its
/// start cut (the graph inputs from the sets). For each segment and each set in order, `f` gets
/// the set's index and the values of `keep` the segment makes (constants among `keep` come with
/// the first segment; graph inputs never: the caller has them in the sets). Each value of `keep`
/// made by a node of the graph is handed once per set, so a value's sets arrive in set order.
/// Held at a time: the cut values of every set, one segment's model, one set's outputs. Returns
/// the number of segments.
pub fn run_segments(
    model: &ModelProto,
    sets: &[InputSet],
    memory_limit: u64,
    keep: &[String],
    label: &str,
    mut f: impl FnMut(usize, Outputs) -> Result<()>,
) -> Result<usize> {
    let g = model.graph.as_ref().ok_or_else(|| Error::Graph {
        reason: "the model has no graph".into(),
    })?;
    let fed: HashSet<String> = sets
        .iter()
        .flat_map(|s| s.names().map(str::to_string))
        .collect();
    let weight_budget = (memory_limit / TRACT_FACTOR).max(1);
    let scan = Scan::new(g, &fed);
    let types = static_types(g);
    let seg = cuts::plan_scanned(&scan, &scan, &types, &types, weight_budget);
    let k = seg.original.len();
    let keep_set: HashSet<&str> = keep.iter().map(String::as_str).collect();
    let mut store: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); sets.len()];
    for s in 0..k {
        let next_cut: &[String] = seg.cuts.get(s).map(|c| c.as_slice()).unwrap_or(&[]);
        let want = segment_outputs(&scan, &seg.original[s], next_cut, keep, s == 0);
        // What later segments read.
        let later: HashSet<&str> = seg.cuts[s.min(seg.cuts.len())..]
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !want.is_empty() {
            let (m, ins) = sub_model(model, &scan, &seg.original[s], &want);
            let feeds = feeds(sets, &store, &ins);
            let seg_label = format!("{label} segment {}/{k}", s + 1);
            run_segment(&m, &feeds, &fed, &seg_label, |i, outs| {
                let mut handed: Outputs = Vec::new();
                for (n, t) in outs {
                    let kept = keep_set.contains(n.as_str());
                    if later.contains(n.as_str()) {
                        if kept {
                            handed.push((n.clone(), t.clone()));
                        }
                        store[i].insert(n, t);
                    } else if kept {
                        handed.push((n, t));
                    }
                }
                f(i, handed)
            })?;
        }
        for st in &mut store {
            st.retain(|n, _| later.contains(n.as_str()));
        }
    }
    Ok(k)
}

/// Runs the model of one segment on `sets` as [`run_each`] does, except that a small integer
/// value it receives at its start cut (at most [`SMALL_INPUT`] elements, not one of the graph
/// inputs `fed`: a shape computed before the cut, say) becomes an initializer of the model for
/// the sets that carry it: tract needs a `Reshape`'s shape or a `Slice`'s bounds as constants,
/// and they are constants within the whole model. Sets with the same signature (shapes, types,
/// small values, as [`run_each`] groups them) share one compiled plan; `f` gets the sets in
/// order.
fn run_segment(
    model: &ModelProto,
    sets: &[InputSet],
    fed: &HashSet<String>,
    label: &str,
    mut f: impl FnMut(usize, Outputs) -> Result<()>,
) -> Result<()> {
    let bakes = |n: &str, t: &Tensor| {
        !fed.contains(n)
            && t.len() <= SMALL_INPUT
            && [DatumType::I64, DatumType::I32].contains(&t.datum_type())
    };
    if !sets
        .iter()
        .any(|set| set.tensors.iter().any(|(n, t)| bakes(n, t)))
    {
        return run_each(model, sets, label, f);
    }
    let mut plans: HashMap<String, Plan> = HashMap::new();
    for (index, set) in sets.iter().enumerate() {
        let (baked, rest): (Vec<_>, Vec<_>) =
            set.tensors.iter().cloned().partition(|(n, t)| bakes(n, t));
        let rest = InputSet::new(set.label.clone(), rest);
        let key = signature(set);
        let outputs = match plans.get(&key) {
            Some(plan) => plan.run(&rest)?,
            None => {
                let mut m = model.clone();
                if let Some(g) = m.graph.as_mut() {
                    g.input
                        .retain(|i| !baked.iter().any(|(n, _)| Some(n) == i.name.as_ref()));
                    for (n, t) in &baked {
                        let p =
                            crate::rules::eval::to_proto(n, t).map_err(|reason| Error::Tract {
                                model: label.to_string(),
                                reason: format!("cut value `{n}`: {reason}"),
                            })?;
                        g.initializer.push(p);
                    }
                }
                let (plan, outputs) = Plan::compile(&m, &rest, label)?;
                plans.insert(key, plan);
                outputs
            }
        };
        f(index, outputs)?;
    }
    Ok(())
}

/// [`run_each`] of [`run_segment`], collected.
fn run_segment_many(
    model: &ModelProto,
    sets: &[InputSet],
    fed: &HashSet<String>,
    label: &str,
) -> Result<Vec<Outputs>> {
    let mut all = Vec::with_capacity(sets.len());
    run_segment(model, sets, fed, label, |_, o| {
        all.push(o);
        Ok(())
    })?;
    Ok(all)
}

thread_local! {
    static SEGMENT_WISE_RUNS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many [`run_many_within`] calls of this thread ran their model segment by segment: what
/// shows that the runs of `--quantize-tolerance` and of a `--budget` search kept within
/// `--memory-limit` (the command runs on the calling thread, see [`crate::cli::embed::run`]).
pub fn segment_wise_runs() -> usize {
    SEGMENT_WISE_RUNS.with(|c| c.get())
}

/// [`run_many`] within `memory_limit`: whole when [`model_need`] fits, else by
/// [`run_segments`]. Each set's outputs are named after the graph outputs, in graph order (a
/// graph input that is a graph output taken from the set).
pub fn run_many_within(
    model: &ModelProto,
    sets: &[InputSet],
    memory_limit: u64,
    label: &str,
) -> Result<Vec<Outputs>> {
    if model_need(model) <= memory_limit {
        return run_many(model, sets, label);
    }
    SEGMENT_WISE_RUNS.with(|c| c.set(c.get() + 1));
    let names = graph_outputs(model.graph.as_ref().ok_or_else(|| Error::Graph {
        reason: "the model has no graph".into(),
    })?);
    let mut got: Vec<HashMap<String, Tensor>> = vec![HashMap::new(); sets.len()];
    run_segments(model, sets, memory_limit, &names, label, |i, outs| {
        got[i].extend(outs);
        Ok(())
    })?;
    got.into_iter()
        .zip(sets)
        .map(|(mut m, set)| {
            names
                .iter()
                .map(|n| {
                    let t = m.remove(n).or_else(|| set.get(n).cloned());
                    t.map(|t| (n.clone(), t)).ok_or_else(|| Error::Tract {
                        model: label.to_string(),
                        reason: format!("no segment made the graph output `{n}`"),
                    })
                })
                .collect()
        })
        .collect()
}

/// [`crate::verify::verify_against`] within `memory_limit`: the candidate `b` runs whole or
/// segment by segment ([`run_many_within`]) and its graph outputs are compared with the
/// `reference` outputs as a whole-model run compares them.
pub fn verify_against_within(
    reference: &[Outputs],
    b: &ModelProto,
    label_b: &str,
    sets: &[InputSet],
    tolerance: f32,
    memory_limit: u64,
) -> Result<VerifyReport> {
    let out_b = run_many_within(b, sets, memory_limit, label_b)?;
    Ok(report_from_outputs(reference, &out_b, sets, tolerance))
}

/// An intermediate value that fails the element-wise criterion with a relative L2 error of at
/// most `tolerance` passes in a per-segment report: float reassociation of an exact rewrite
/// (a fused Conv and BatchNormalization) moves single elements of an activation by about the
/// tolerance, while a wrong rewrite moves the whole value. The end-to-end verdict stays
/// element-wise.
fn forgive_noise(report: &mut VerifyReport, tolerance: f32) {
    for s in &mut report.sets {
        for c in &mut s.outputs {
            if !c.passed && c.note.is_none() && c.rel_l2.is_some_and(|e| e <= tolerance as f64) {
                c.passed = true;
            }
        }
        s.passed = s.outputs.iter().all(|c| c.passed);
    }
    report.passed = report.sets.iter().all(|s| s.passed);
}

fn node_label(n: &crate::onnx::proto::NodeProto) -> String {
    n.name
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(n.output.first().map(String::as_str))
        .unwrap_or("")
        .to_string()
}

fn find<'t>(outs: &'t Outputs, name: &str) -> Option<&'t Tensor> {
    outs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
}

fn graph_outputs(g: &GraphProto) -> Vec<String> {
    g.output
        .iter()
        .map(|o| o.name.clone().unwrap_or_default())
        .collect()
}

/// The input sets of a segment reading `inputs`, from each set's `store` of cut values, else
/// from the set's graph inputs.
fn feeds(sets: &[InputSet], store: &[HashMap<String, Tensor>], inputs: &[String]) -> Vec<InputSet> {
    sets.iter()
        .zip(store)
        .map(|(set, st)| {
            InputSet::new(
                set.label.clone(),
                inputs
                    .iter()
                    .filter_map(|n| {
                        let t = st.get(n).or_else(|| set.get(n))?;
                        Some((n.clone(), t.clone()))
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Adds a segment's `outputs` to `store` (what later segments read) and to `finals` (graph
/// outputs); then drops from `store` every value no later cut holds.
fn advance(
    store: &mut [HashMap<String, Tensor>],
    finals: &mut [HashMap<String, Tensor>],
    outputs: Vec<Outputs>,
    keep: &HashSet<&str>,
    graph_outputs: &[String],
) {
    for ((st, fin), outs) in store.iter_mut().zip(finals.iter_mut()).zip(outputs) {
        for (n, t) in outs {
            if graph_outputs.contains(&n) {
                fin.insert(n.clone(), t.clone());
            }
            if keep.contains(n.as_str()) {
                st.insert(n, t);
            }
        }
        st.retain(|n, _| keep.contains(n.as_str()));
    }
}

/// The model of one segment: its nodes with the constant nodes they read (in topological order),
/// the initializers they read, the values they receive as inputs, and `outputs`. Returns the
/// model and its input names.
fn sub_model(
    model: &ModelProto,
    scan: &Scan,
    nodes: &[usize],
    outputs: &[String],
) -> (ModelProto, Vec<String>) {
    let g = scan.graph;
    let mut include: Vec<usize> = nodes.to_vec();
    let mut seen: HashSet<usize> = nodes.iter().copied().collect();
    let mut stack: Vec<usize> = Vec::new();
    let mut push_const = |name: &str, stack: &mut Vec<usize>| {
        if let Some(&p) = scan.producer.get(name) {
            if scan.is_const[p] && seen.insert(p) {
                stack.push(p);
            }
        }
    };
    for &i in nodes {
        for r in &scan.reads[i] {
            push_const(r, &mut stack);
        }
    }
    for o in outputs {
        push_const(o, &mut stack);
    }
    while let Some(p) = stack.pop() {
        include.push(p);
        for r in &scan.reads[p] {
            push_const(r, &mut stack);
        }
    }
    include.sort_by_key(|&i| scan.rank[i]);
    let made: HashSet<&str> = include
        .iter()
        .flat_map(|&i| g.node[i].output.iter().map(String::as_str))
        .collect();
    let mut inputs: Vec<String> = Vec::new();
    let mut inits: Vec<usize> = Vec::new();
    let mut seen_names: HashSet<&str> = HashSet::new();
    for &i in &include {
        for r in &scan.reads[i] {
            if made.contains(r) || !seen_names.insert(r) {
                continue;
            }
            match scan.initializers.get(r) {
                Some(&t) => inits.push(t),
                None => inputs.push(r.to_string()),
            }
        }
    }
    // A graph output that is an initializer as it stands.
    for o in outputs {
        if let Some(&t) = scan.initializers.get(o.as_str()) {
            if !made.contains(o.as_str()) && seen_names.insert(o) {
                inits.push(t);
            }
        }
    }
    let vi = |name: &str| ValueInfoProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let graph = GraphProto {
        node: include.iter().map(|&i| g.node[i].clone()).collect(),
        name: g.name.clone(),
        initializer: inits.iter().map(|&t| g.initializer[t].clone()).collect(),
        input: inputs.iter().map(|n| vi(n)).collect(),
        output: outputs.iter().map(|n| vi(n)).collect(),
        ..Default::default()
    };
    let sub = ModelProto {
        ir_version: model.ir_version,
        opset_import: model.opset_import.clone(),
        functions: model.functions.clone(),
        graph: Some(graph),
        ..Default::default()
    };
    (sub, inputs)
}
