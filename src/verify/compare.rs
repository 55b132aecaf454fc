//! Comparing the outputs of two models, and the verification report.
//!
//! Per output, with `a` the reference value and `b` the candidate at the same position:
//!
//! - **max abs error**: `max |a − b|`;
//! - **max rel error**: `max |a − b| / max(|a|, |b|, f64::MIN_POSITIVE)` (0 where `a == b`);
//! - **cosine**: `Σab / (‖a‖·‖b‖)` over the positions where both are finite (1 when both norms
//!   are 0, 0 when only one is);
//! - **argmax agreement**: the fraction of positions along all but the last axis where the index
//!   of the largest value along the last axis is the same in `a` and `b`, for outputs that look
//!   like scores (n/a when the last axis has fewer than 2 elements, and for a state the model
//!   carries from one call to the next: an output of the shape of one of the inputs, such as
//!   silero_vad's `stateN`);
//! - **pass**: float outputs pass when every element satisfies `|a − b| ≤ tol · max(1, |a|)`, a
//!   relative tolerance with an absolute floor of `tol` for values below 1 in magnitude (so a
//!   max rel error above `tol` passes where the values are small). The default `tol` is
//!   [`DEFAULT_TOLERANCE`], for the main command and `verify` alike. `NaN`
//!   in both at the same place counts as equal, so do equal infinities; `NaN` in only one, or
//!   an infinity against anything else, fails.
//!   Integer, bool and string outputs must be exactly equal. Shapes and element types must be
//!   equal.

use std::fmt;

use serde::Serialize;
use tract_onnx::prelude::{DatumType, Tensor};

use super::inputs::InputSet;
use super::metric::{worst, Budget, Worst};
use super::runner::{run_many, Outputs};
use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;

/// The element-wise tolerance of the main command and of `verify` when `--tolerance` is not
/// given (the main command raises it to the largest tolerance of a rule that rewrote).
pub const DEFAULT_TOLERANCE: f32 = 1e-5;

/// The element-wise criterion at `tol`, as the reports print it.
pub fn criterion(tol: f32) -> String {
    format!("|a − b| ≤ {tol} · max(1, |a|) for every element")
}

/// How one output of the candidate compares with the reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Output name (`a_name/b_name` when the models name it differently).
    pub output: String,
    /// Element type of the reference, e.g. `F32` (`F32/F16` when they differ).
    pub dtype: String,
    /// Shape of the reference output.
    pub shape: Vec<usize>,
    /// Shape of the candidate output.
    pub other_shape: Vec<usize>,
    /// Whether both shapes are equal.
    pub shape_equal: bool,
    /// Number of elements compared (0 when shapes differ).
    pub elements: usize,
    /// Largest `|a − b|`; `None` for strings or when shapes differ.
    pub max_abs_error: Option<f64>,
    /// Largest `|a − b| / max(|a|, |b|, tiny)`; `None` for strings or when shapes differ.
    pub max_rel_error: Option<f64>,
    /// `‖a − b‖₂ / ‖a‖₂` (`‖b‖₂` where `‖a‖ = 0`), infinite where a `NaN` or an infinity is
    /// not matched by the same value; `None` unless both outputs are float and of one shape.
    pub rel_l2: Option<f64>,
    /// Cosine similarity of the two outputs; `None` for bools, strings or when shapes differ.
    pub cosine: Option<f64>,
    /// Fraction of rows whose argmax along the last axis agrees; `None` when not applicable.
    pub argmax_agreement: Option<f64>,
    /// Number of elements that fail the criterion.
    pub mismatched: usize,
    /// Whether the output passes (see the module documentation).
    pub passed: bool,
    /// Why the comparison failed when that is not a matter of values (dtype, shape, missing).
    pub note: Option<String>,
    /// The loss under the budget this output was judged by, if a budget judged it (see [`judge`]).
    pub loss: Option<f64>,
}

/// The comparisons of all outputs for one input set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetReport {
    /// Label of the input set.
    pub label: String,
    /// One comparison per output.
    pub outputs: Vec<Comparison>,
    /// Whether every output passed.
    pub passed: bool,
    /// The inputs fed, as `name [d1, d2]` or, for at most 4 elements, `name = value`.
    pub inputs: Vec<String>,
}

/// The result of [`verify`]: every output of every input set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The tolerance used (the element-wise criterion), when no `budget` judges the outputs.
    pub tolerance: f32,
    /// The model-level budget the outputs were judged by instead of `tolerance` (a lossy
    /// rewrite; see [`judge`]), with the worst loss seen under it.
    pub budget: Option<(Budget, Worst)>,
    /// One report per input set.
    pub sets: Vec<SetReport>,
    /// Whether every output of every set passed.
    pub passed: bool,
    /// How the models were verified segment by segment, when they were (see
    /// [`super::segment`]); the sets above are then the end-to-end comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segmented: Option<super::segment::Segmented>,
}

impl VerifyReport {
    /// The largest max abs error over every output and set (0 when none is numeric).
    pub fn max_abs_error(&self) -> f64 {
        self.sets
            .iter()
            .flat_map(|s| &s.outputs)
            .filter_map(|c| c.max_abs_error)
            .fold(0.0, f64::max)
    }

    /// The comparisons that failed, with the label of their set.
    pub fn failures(&self) -> Vec<(&str, &Comparison)> {
        self.sets
            .iter()
            .flat_map(|s| s.outputs.iter().map(move |c| (s.label.as_str(), c)))
            .filter(|(_, c)| !c.passed)
            .collect()
    }
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(0.0) => "0".into(),
        Some(x) if x.is_nan() => "nan".into(),
        Some(x) if x.abs() >= 1e-3 && x.abs() < 1e4 => format!("{x:.4}"),
        Some(x) => format!("{x:.2e}"),
    }
}

impl Comparison {
    /// Column titles matching the rows [`Comparison`]'s `Display` prints.
    pub fn header() -> String {
        Self::header_with(24, 18)
    }

    /// [`Comparison::header`] with the output column `name` and shape column `shape` wide.
    pub fn header_with(name: usize, shape: usize) -> String {
        format!(
            "{:<name$} {:<7} {:<shape$} {:>10} {:>10} {:>10} {:>8} {:>8} {:>6}",
            "output",
            "dtype",
            "shape",
            "max abs",
            "max rel",
            "rel l2",
            "cosine",
            "argmax",
            "result"
        )
    }
}

impl Comparison {
    fn shape_text(&self) -> String {
        if self.shape_equal {
            format!("{:?}", self.shape)
        } else {
            format!("{:?}/{:?}", self.shape, self.other_shape)
        }
    }

    /// The row of [`Comparison`]'s `Display` with the output column `name` and shape column
    /// `shape` wide (wider values are written whole, and the row is longer).
    pub fn row(&self, name: usize, shape: usize) -> String {
        let cos = match self.cosine {
            Some(c) if c.is_finite() => format!("{c:.6}"),
            other => num(other),
        };
        let argmax = match self.argmax_agreement {
            Some(a) => format!("{:.1}%", a * 100.0),
            None => "n/a".into(),
        };
        let mut s = format!(
            "{:<name$} {:<7} {:<shape$} {:>10} {:>10} {:>10} {:>8} {:>8} {:>6}",
            self.output,
            self.dtype,
            self.shape_text(),
            num(self.max_abs_error),
            num(self.max_rel_error),
            num(self.rel_l2),
            cos,
            argmax,
            if self.passed { "ok" } else { "FAIL" }
        );
        if !self.passed {
            if let Some(n) = &self.note {
                s += &format!("  ({n})");
            } else if self.loss.is_some() {
                s += "  (over the budget)";
            } else if self.mismatched > 0 {
                s += &format!("  ({} of {} elements off)", self.mismatched, self.elements);
            }
        }
        s
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.row(24, 18))
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = || self.sets.iter().flat_map(|s| &s.outputs);
        let label = self
            .sets
            .iter()
            .map(|s| s.label.chars().count())
            .fold(20, usize::max);
        let name = all().map(|c| c.output.chars().count()).fold(24, usize::max);
        let shape = all().map(|c| c.shape_text().len()).fold(18, usize::max);
        writeln!(
            f,
            "{:<label$} {}",
            "input set",
            Comparison::header_with(name, shape).trim_end()
        )?;
        for s in &self.sets {
            for c in &s.outputs {
                writeln!(f, "{:<label$} {}", s.label, c.row(name, shape))?;
            }
        }
        let first = self.sets.first().map(|s| &s.inputs);
        if self.sets.iter().all(|s| Some(&s.inputs) == first) {
            if let Some(inputs) = first.filter(|i| !i.is_empty()) {
                let every = if self.sets.len() > 1 {
                    " (every set)"
                } else {
                    ""
                };
                writeln!(f, "inputs{every}: {}", inputs.join(", "))?;
            }
        } else {
            // One entry per distinct list of inputs, in order of first use, with its set count.
            let mut groups: Vec<(&Vec<String>, usize)> = Vec::new();
            for s in &self.sets {
                match groups.iter_mut().find(|(i, _)| **i == s.inputs) {
                    Some((_, n)) => *n += 1,
                    None => groups.push((&s.inputs, 1)),
                }
            }
            let text: Vec<String> = groups
                .iter()
                .map(|(i, n)| {
                    format!(
                        "{} ({n} set{})",
                        i.join(", "),
                        if *n == 1 { "" } else { "s" }
                    )
                })
                .collect();
            writeln!(f, "inputs: {}", text.join("; "))?;
        }
        if let Some(sg) = &self.segmented {
            write!(f, "{sg}")?;
        }
        let sets = format!(
            "{} input set{}",
            self.sets.len(),
            if self.sets.len() == 1 { "" } else { "s" }
        );
        match &self.budget {
            None => write!(
                f,
                "{} at tolerance {} ({sets}; pass: {})",
                if self.passed { "passed" } else { "FAILED" },
                self.tolerance,
                criterion(self.tolerance),
            ),
            Some((budget, w)) => write!(
                f,
                "{}: the worst output is `{}` on {} at {}; the budget is {} ({sets})",
                if self.passed {
                    "within budget"
                } else {
                    "OVER BUDGET"
                },
                w.output,
                w.set,
                budget.metric.describe(w.loss),
                budget.describe(),
            ),
        }
    }
}

/// `name [1, 3, 224, 224]`, or `name = 16000` for a tensor of at most 4 elements.
pub fn describe_input(name: &str, t: &Tensor) -> String {
    if t.len() <= 4 {
        if let Ok(c) = t.cast_to::<f64>() {
            if let Ok(v) = c.to_plain_array_view::<f64>() {
                let vals: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
                return match t.rank() {
                    0 => format!("{name} = {}", vals.join(", ")),
                    _ => format!("{name} {:?} = [{}]", t.shape(), vals.join(", ")),
                };
            }
        }
    }
    format!("{name} {:?}", t.shape())
}

fn floats(t: &Tensor) -> Option<Vec<f64>> {
    let c = t.cast_to::<f64>().ok()?;
    let v = c.to_plain_array_view::<f64>().ok()?;
    Some(v.iter().copied().collect())
}

fn is_numeric(dt: DatumType) -> bool {
    dt.is_float() || dt.is_integer()
}

/// Index of the largest non-NaN value of `row` (the first one on ties), `None` if all are NaN.
fn argmax(row: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &x) in row.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i)
}

/// Compares the reference `a` with the candidate `b` for output `name` at tolerance `tol`.
pub fn compare_tensors(name: &str, a: &Tensor, b: &Tensor, tol: f32) -> Comparison {
    let (da, db) = (a.datum_type(), b.datum_type());
    let mut c = Comparison {
        output: name.to_string(),
        dtype: if da == db {
            format!("{da:?}")
        } else {
            format!("{da:?}/{db:?}")
        },
        shape: a.shape().to_vec(),
        other_shape: b.shape().to_vec(),
        shape_equal: a.shape() == b.shape(),
        elements: 0,
        max_abs_error: None,
        max_rel_error: None,
        rel_l2: None,
        cosine: None,
        argmax_agreement: None,
        mismatched: 0,
        passed: false,
        note: None,
        loss: None,
    };
    if !c.shape_equal {
        c.note = Some("shapes differ".into());
        return c;
    }
    c.elements = a.len();
    let tol = tol as f64;
    let exact = !(da.is_float() && db.is_float());
    if is_numeric(da) && is_numeric(db) {
        let (Some(x), Some(y)) = (floats(a), floats(b)) else {
            c.note = Some("cannot read values".into());
            return c;
        };
        let mut max_abs = 0f64;
        let mut max_rel = 0f64;
        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
        let (mut d2, mut unmatched) = (0f64, false);
        for (&p, &q) in x.iter().zip(&y) {
            let same = p == q || (p.is_nan() && q.is_nan());
            let diff = if same {
                0.0
            } else if p.is_nan() || q.is_nan() {
                f64::INFINITY
            } else {
                (p - q).abs()
            };
            if !same {
                if p.is_finite() && q.is_finite() {
                    d2 += diff * diff;
                } else {
                    unmatched = true;
                }
            }
            let ok = if exact {
                same
            } else {
                same || (diff.is_finite() && diff <= tol * p.abs().max(1.0))
            };
            if !ok {
                c.mismatched += 1;
            }
            max_abs = max_abs.max(diff);
            if diff > 0.0 {
                let rel = diff / p.abs().max(q.abs()).max(f64::MIN_POSITIVE);
                max_rel = max_rel.max(if rel.is_nan() { f64::INFINITY } else { rel });
            }
            if p.is_finite() && q.is_finite() {
                dot += p * q;
                na += p * p;
                nb += q * q;
            }
        }
        c.max_abs_error = Some(max_abs);
        c.max_rel_error = Some(max_rel);
        if !exact {
            c.rel_l2 = Some(if unmatched {
                f64::INFINITY
            } else if na > 0.0 {
                (d2 / na).sqrt()
            } else {
                d2.sqrt()
            });
        }
        c.cosine = Some(if na == 0.0 && nb == 0.0 {
            1.0
        } else if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            dot / (na.sqrt() * nb.sqrt())
        });
        let last = a.shape().last().copied().unwrap_or(1);
        if last >= 2 && a.len() > 1 {
            let rows = a.len() / last;
            let agree = x
                .chunks_exact(last)
                .zip(y.chunks_exact(last))
                .filter(|(p, q)| argmax(p) == argmax(q))
                .count();
            c.argmax_agreement = Some(agree as f64 / rows as f64);
        }
    } else if da == DatumType::Bool && db == DatumType::Bool {
        let (Ok(x), Ok(y)) = (
            a.to_plain_array_view::<bool>(),
            b.to_plain_array_view::<bool>(),
        ) else {
            c.note = Some("cannot read values".into());
            return c;
        };
        c.mismatched = x.iter().zip(y.iter()).filter(|(p, q)| p != q).count();
        let m = if c.mismatched > 0 { 1.0 } else { 0.0 };
        c.max_abs_error = Some(m);
        c.max_rel_error = Some(m);
    } else if da == DatumType::String && db == DatumType::String {
        let (Ok(x), Ok(y)) = (
            a.to_plain_array_view::<String>(),
            b.to_plain_array_view::<String>(),
        ) else {
            c.note = Some("cannot read values".into());
            return c;
        };
        c.mismatched = x.iter().zip(y.iter()).filter(|(p, q)| p != q).count();
    } else {
        c.note = Some(format!("cannot compare {da:?} with {db:?}"));
        return c;
    }
    if da != db {
        c.note = Some(format!("element types differ: {da:?} vs {db:?}"));
        return c;
    }
    c.passed = c.mismatched == 0;
    c
}

fn missing(name: &str, which: &str) -> Comparison {
    failed_comparison(name, format!("missing in the {which} model"))
}

/// A comparison of output `name` that failed for the reason `note`, with no values.
pub(crate) fn failed_comparison(name: &str, note: String) -> Comparison {
    Comparison {
        output: name.to_string(),
        dtype: "-".into(),
        shape: vec![],
        other_shape: vec![],
        shape_equal: false,
        elements: 0,
        max_abs_error: None,
        max_rel_error: None,
        rel_l2: None,
        cosine: None,
        argmax_agreement: None,
        mismatched: 0,
        passed: false,
        note: Some(note),
        loss: None,
    }
}

/// Compares every output of the reference `a` with the candidate `b`.
///
/// Outputs are matched by name; when the two sets of names differ but their counts agree, by
/// position (named `a_name/b_name`). An output only one side has is a failed comparison.
pub fn compare_outputs(a: &Outputs, b: &Outputs, tol: f32) -> Vec<Comparison> {
    let same_names = a.len() == b.len() && a.iter().all(|(n, _)| b.iter().any(|(m, _)| m == n));
    if !same_names && a.len() == b.len() {
        return a
            .iter()
            .zip(b)
            .map(|((na, ta), (nb, tb))| {
                let name = if na == nb {
                    na.clone()
                } else {
                    format!("{na}/{nb}")
                };
                compare_tensors(&name, ta, tb, tol)
            })
            .collect();
    }
    let mut out: Vec<Comparison> = a
        .iter()
        .map(|(n, ta)| match b.iter().find(|(m, _)| m == n) {
            Some((_, tb)) => compare_tensors(n, ta, tb, tol),
            None => missing(n, "candidate"),
        })
        .collect();
    for (n, _) in b {
        if !a.iter().any(|(m, _)| m == n) {
            out.push(missing(n, "reference"));
        }
    }
    out
}

/// The relative L2 error of the candidate `b` against the reference `a`: the largest
/// `‖a − b‖₂ / ‖a‖₂` over the outputs (matched as by [`compare_outputs`]). Where `‖a‖ = 0` it is
/// `‖b‖` (0 when both are zero). Infinite when an output is missing or differs in shape or
/// element type, when a non-float output differs at all, or when a `NaN` or an infinity is not
/// matched by the same value at the same place.
pub fn relative_l2_error(a: &Outputs, b: &Outputs) -> f64 {
    let pairs: Vec<(&Tensor, Option<&Tensor>)> =
        if a.len() == b.len() && !a.iter().all(|(n, _)| b.iter().any(|(m, _)| m == n)) {
            a.iter()
                .zip(b)
                .map(|((_, x), (_, y))| (x, Some(y)))
                .collect()
        } else {
            if b.iter().any(|(n, _)| !a.iter().any(|(m, _)| m == n)) {
                return f64::INFINITY;
            }
            a.iter()
                .map(|(n, x)| (x, b.iter().find(|(m, _)| m == n).map(|(_, y)| y)))
                .collect()
        };
    let mut worst = 0f64;
    for (x, y) in pairs {
        let Some(y) = y else { return f64::INFINITY };
        if x.shape() != y.shape() || x.datum_type() != y.datum_type() {
            return f64::INFINITY;
        }
        if !x.datum_type().is_float() {
            if x != y {
                return f64::INFINITY;
            }
            continue;
        }
        let (Some(p), Some(q)) = (floats(x), floats(y)) else {
            return f64::INFINITY;
        };
        let (mut d2, mut n2) = (0f64, 0f64);
        for (&u, &v) in p.iter().zip(&q) {
            if u == v || (u.is_nan() && v.is_nan()) {
                if u.is_finite() {
                    n2 += u * u;
                }
                continue;
            }
            if !u.is_finite() || !v.is_finite() {
                return f64::INFINITY;
            }
            d2 += (u - v) * (u - v);
            n2 += u * u;
        }
        let e = if n2 > 0.0 {
            (d2 / n2).sqrt()
        } else {
            d2.sqrt()
        };
        worst = worst.max(e);
    }
    worst
}

/// Runs the reference model `a` and the candidate `b` in tract on every input set and compares
/// their outputs at `tolerance` (see the module documentation for the criterion).
///
/// A model tract cannot run is an [`Error::Tract`] naming it `original` (for `a`) or `rewritten`
/// (for `b`); outputs that disagree are not an error but a report whose `passed` is false.
pub fn verify(
    a: &ModelProto,
    b: &ModelProto,
    input_sets: &[InputSet],
    tolerance: f32,
) -> Result<VerifyReport> {
    verify_labeled(a, "original", b, "rewritten", input_sets, tolerance)
}

/// [`verify`] with the names errors give the two models (file names, typically).
pub fn verify_labeled(
    a: &ModelProto,
    label_a: &str,
    b: &ModelProto,
    label_b: &str,
    input_sets: &[InputSet],
    tolerance: f32,
) -> Result<VerifyReport> {
    if !tolerance.is_finite() || tolerance < 0.0 {
        return Err(Error::Usage(format!(
            "tolerance `{tolerance}` must be a finite non-negative number"
        )));
    }
    if input_sets.is_empty() {
        return Err(Error::Usage(
            "verification needs at least one input set".into(),
        ));
    }
    let out_a = run_many(a, input_sets, label_a)?;
    verify_against(&out_a, b, label_b, input_sets, tolerance)
}

/// [`verify_labeled`] against outputs of the reference already computed on `input_sets` (one
/// [`Outputs`] per set, in order): only the candidate `b` runs.
pub fn verify_against(
    reference: &[Outputs],
    b: &ModelProto,
    label_b: &str,
    input_sets: &[InputSet],
    tolerance: f32,
) -> Result<VerifyReport> {
    let out_b = run_many(b, input_sets, label_b)?;
    Ok(report_from_outputs(
        reference, &out_b, input_sets, tolerance,
    ))
}

/// The report of comparing the candidate's outputs `out_b` with the `reference` on `input_sets`
/// (one [`Outputs`] per set, in order) at `tolerance`.
pub fn report_from_outputs(
    reference: &[Outputs],
    out_b: &[Outputs],
    input_sets: &[InputSet],
    tolerance: f32,
) -> VerifyReport {
    let sets: Vec<SetReport> = input_sets
        .iter()
        .zip(reference.iter().zip(out_b))
        .map(|(set, (oa, ob))| {
            let mut outputs = compare_outputs(oa, ob, tolerance);
            for c in &mut outputs {
                // A state carried to the next call (an output shaped like an input) is no score.
                if set
                    .tensors
                    .iter()
                    .any(|(_, t)| t.shape() == c.shape.as_slice())
                {
                    c.argmax_agreement = None;
                }
            }
            SetReport {
                label: set.label.clone(),
                passed: outputs.iter().all(|c| c.passed),
                outputs,
                inputs: set
                    .tensors
                    .iter()
                    .map(|(n, t)| describe_input(n, t))
                    .collect(),
            }
        })
        .collect();
    VerifyReport {
        tolerance,
        budget: None,
        passed: sets.iter().all(|s| s.passed),
        sets,
        segmented: None,
    }
}

/// Judges `report` by a model-level `budget` instead of its element-wise tolerance: an output
/// passes when its loss under the budget's metric is finite and at most the limit (see
/// [`super::metric`]); the report keeps every metric for display.
pub fn judge(report: &mut VerifyReport, budget: Budget) {
    for s in &mut report.sets {
        for c in &mut s.outputs {
            let loss = budget.metric.loss(c);
            // An infinite loss (NaN, changed shape, missing output) fails even without a limit.
            c.passed = loss <= budget.limit && loss.is_finite();
            c.loss = Some(loss);
        }
        s.passed = s.outputs.iter().all(|c| c.passed);
    }
    report.passed = report.sets.iter().all(|s| s.passed);
    report.budget = worst(report, budget.metric).map(|w| (budget, w));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_shape(shape, v).unwrap()
    }

    #[test]
    fn criterion_has_an_absolute_floor() {
        let a = t(&[3], &[0.0, 100.0, -0.5]);
        let b = t(&[3], &[0.0009, 100.09, -0.5009]);
        assert!(compare_tensors("y", &a, &b, 1e-3).passed);
        let b = t(&[3], &[0.0011, 100.0, -0.5]);
        let c = compare_tensors("y", &a, &b, 1e-3);
        assert!(!c.passed);
        assert_eq!(c.mismatched, 1);
    }

    #[test]
    fn relative_l2_error_is_the_worst_output_and_infinite_on_nan() {
        let o = |v: &[f32]| -> Outputs {
            vec![
                ("a".into(), t(&[2], &v[..2])),
                ("b".into(), t(&[2], &v[2..])),
            ]
        };
        let base = o(&[3.0, 4.0, 1.0, 0.0]);
        assert_eq!(relative_l2_error(&base, &base), 0.0);
        // Output `a`: ‖(0, 0.5)‖ / 5 = 0.1; output `b`: ‖(0.2, 0)‖ / 1 = 0.2.
        let e = relative_l2_error(&base, &o(&[3.0, 4.5, 1.2, 0.0]));
        assert!((e - 0.2).abs() < 1e-6, "{e}");
        assert_eq!(
            relative_l2_error(&base, &o(&[3.0, f32::NAN, 1.0, 0.0])),
            f64::INFINITY
        );
        assert_eq!(relative_l2_error(&base, &base[..1].to_vec()), f64::INFINITY);
    }

    #[test]
    fn display_has_one_row() {
        let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let c = compare_tensors("logits", &a, &a, 1e-4);
        let row = c.to_string();
        assert!(!row.contains('\n'));
        assert!(row.contains("logits") && row.contains("ok"), "{row}");
    }
}
