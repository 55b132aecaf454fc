//! Model-level error metrics and the budget a lossy rewrite is judged by.
//!
//! A lossy rewrite is not judged element by element (a quantized model moves every element a
//! little) but by what it does to each output as a whole, the worst output on the worst input
//! set. Each metric is expressed as a **loss** that is 0 for identical outputs and grows with
//! the damage, so that a budget is always "loss ≤ limit":
//!
//! | metric | loss of one output | a budget of 0.01 means |
//! |---|---|---|
//! | `cosine` | `1 − cosine(a, b)` | cosine ≥ 0.99 |
//! | `rel-l2` | `‖a − b‖₂ / ‖a‖₂` | relative L2 error ≤ 1 % |
//! | `argmax` | `1 − argmax agreement` along the last axis | ≥ 99 % of the rows keep their argmax |
//! | `max-abs` | `max |a − b|` | no element moves by more than 0.01 |
//!
//! Whatever the metric, an output whose shape or element type changed, that went missing, or
//! that has a `NaN` or an infinity the reference does not have at the same place has an
//! infinite loss. Outputs that are not float (integers, bools, strings) have the fraction of
//! their elements that changed as their loss. An output with a last axis shorter than 2 has no
//! argmax; under `argmax` it is judged by `1 − cosine` instead. Outputs equal value for value
//! have no loss under any metric.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::compare::{Comparison, VerifyReport};
use crate::error::{Error, Result};

/// How the damage to an output is measured; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// `1 − cosine`.
    Cosine,
    /// `‖a − b‖ / ‖a‖`.
    RelL2,
    /// `1 − argmax agreement`.
    Argmax,
    /// `max |a − b|`.
    MaxAbs,
}

impl Metric {
    /// Every metric, in the order the help text lists them.
    pub const ALL: [Metric; 4] = [
        Metric::Cosine,
        Metric::RelL2,
        Metric::Argmax,
        Metric::MaxAbs,
    ];

    /// The name `--budget-metric` takes.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::RelL2 => "rel-l2",
            Metric::Argmax => "argmax",
            Metric::MaxAbs => "max-abs",
        }
    }

    /// The loss of one compared output (see the module documentation).
    pub fn loss(self, c: &Comparison) -> f64 {
        if c.note.is_some() || !c.shape_equal {
            return f64::INFINITY;
        }
        let Some(rel_l2) = c.rel_l2 else {
            // Not a float output: the fraction of elements that changed.
            return if c.elements == 0 {
                0.0
            } else {
                c.mismatched as f64 / c.elements as f64
            };
        };
        if !rel_l2.is_finite() {
            return f64::INFINITY;
        }
        if rel_l2 == 0.0 {
            // Equal outputs: no loss, whatever the rounding of the cosine says.
            return 0.0;
        }
        let cosine = || c.cosine.map_or(f64::INFINITY, |x| (1.0 - x).max(0.0));
        match self {
            Metric::Cosine => cosine(),
            Metric::RelL2 => rel_l2,
            Metric::Argmax => match c.argmax_agreement {
                Some(a) => 1.0 - a,
                None => cosine(),
            },
            Metric::MaxAbs => c.max_abs_error.unwrap_or(f64::INFINITY),
        }
    }

    /// The loss as a user reads it: `cosine 0.98731`, `rel-l2 0.0214`, `argmax agreement
    /// 97.50 %`, `max abs 0.31`.
    pub fn describe(self, loss: f64) -> String {
        if loss.is_infinite() {
            return format!(
                "{} ∞ (a NaN, an infinity, a changed shape or a missing output)",
                self.name()
            );
        }
        match self {
            Metric::Cosine => format!("cosine {:.5}", 1.0 - loss),
            Metric::RelL2 if loss == 0.0 => "rel-l2 0".into(),
            Metric::MaxAbs if loss == 0.0 => "max abs 0".into(),
            Metric::RelL2 if loss < 1e-3 => format!("rel-l2 {loss:.2e}"),
            Metric::RelL2 => format!("rel-l2 {loss:.4}"),
            Metric::Argmax => format!("argmax agreement {:.2} %", 100.0 * (1.0 - loss)),
            Metric::MaxAbs if loss < 1e-3 => format!("max abs {loss:.2e}"),
            Metric::MaxAbs => format!("max abs {loss:.4}"),
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Metric> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--budget-metric must be one of cosine, rel-l2, argmax, max-abs; got `{s}`"
                ))
            })
    }
}

/// How far a lossy rewrite may move the model's outputs: `metric` loss ≤ `limit` for every
/// output on every input set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budget {
    /// How the damage is measured.
    pub metric: Metric,
    /// The largest loss allowed.
    pub limit: f64,
}

impl Budget {
    /// What a lossy run is held to when no `--budget` is given: every output keeps a cosine
    /// similarity of at least 0.99 with the original's on every input set.
    pub const DEFAULT: Budget = Budget {
        metric: Metric::Cosine,
        limit: 0.01,
    };

    /// Builds the budget from the flags, refusing a limit that is negative or not a number.
    pub fn from_flags(limit: Option<f64>, metric: Option<&str>) -> Result<Budget> {
        let metric = match metric {
            Some(m) => m.parse()?,
            None => Metric::Cosine,
        };
        let limit = match limit {
            Some(l) if l.is_finite() && l >= 0.0 => l,
            Some(l) => {
                return Err(Error::Usage(format!(
                    "--budget must be a finite number ≥ 0, got `{l}`"
                )))
            }
            None if metric == Budget::DEFAULT.metric => Budget::DEFAULT.limit,
            None => {
                return Err(Error::Usage(format!(
                    "--budget-metric {metric} needs a --budget: the default budget is on cosine"
                )))
            }
        };
        if metric == Metric::Argmax && limit >= 1.0 || metric == Metric::Cosine && limit > 2.0 {
            return Err(Error::Usage(format!(
                "--budget {limit} allows any output under --budget-metric {metric}; give a smaller budget or --no-verify"
            )));
        }
        Ok(Budget { metric, limit })
    }

    /// The budget as a sentence fragment: `cosine ≥ 0.99`, `rel-l2 ≤ 0.05`.
    pub fn describe(&self) -> String {
        if self.limit.is_infinite() {
            return format!("none ({} reported only)", self.metric);
        }
        match self.metric {
            Metric::Cosine => format!("cosine ≥ {}", trim(1.0 - self.limit)),
            Metric::RelL2 => format!("rel-l2 ≤ {}", trim(self.limit)),
            Metric::Argmax => format!("argmax agreement ≥ {} %", trim(100.0 * (1.0 - self.limit))),
            Metric::MaxAbs => format!("max abs ≤ {}", trim(self.limit)),
        }
    }
}

/// `0.99` rather than `0.9900000000000001`.
fn trim(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The worst loss of a verification: the value, the output and the input set it was seen on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Worst {
    /// The loss (see [`Metric::loss`]).
    pub loss: f64,
    /// The output it was seen on.
    pub output: String,
    /// The input set it was seen on.
    pub set: String,
}

/// The largest loss under `metric` over every output of every set of `report` (the first one on
/// ties, in set and output order); `None` when the report compares nothing.
pub fn worst(report: &VerifyReport, metric: Metric) -> Option<Worst> {
    let mut best: Option<Worst> = None;
    for s in &report.sets {
        for c in &s.outputs {
            let loss = metric.loss(c);
            let loss = if loss.is_nan() { f64::INFINITY } else { loss };
            if best.as_ref().is_none_or(|w| loss > w.loss) {
                best = Some(Worst {
                    loss,
                    output: c.output.clone(),
                    set: s.label.clone(),
                });
            }
        }
    }
    best
}

/// Every metric's worst loss over `report`, for the report of a lossy run.
pub fn summary(report: &VerifyReport) -> Vec<(Metric, Worst)> {
    Metric::ALL
        .into_iter()
        .filter_map(|m| worst(report, m).map(|w| (m, w)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::compare_tensors;
    use tract_onnx::prelude::Tensor;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_shape(shape, v).unwrap()
    }

    #[test]
    fn equal_outputs_have_no_loss_under_any_metric() {
        let a = t(&[2, 3], &[0.1, 0.7, 0.3, 1e-7, 2.0, -3.0]);
        let c = compare_tensors("y", &a, &a, 0.0);
        for m in Metric::ALL {
            assert_eq!(m.loss(&c), 0.0, "{m}");
        }
    }

    #[test]
    fn each_metric_measures_its_own_quantity() {
        let a = t(&[2, 2], &[1.0, 0.0, 0.0, 1.0]);
        let b = t(&[2, 2], &[1.0, 0.0, 1.0, 0.0]);
        let c = compare_tensors("y", &a, &b, 0.0);
        // cos = 1/2; ‖a−b‖ = √2, ‖a‖ = √2; one of two rows changes its argmax; max |a−b| = 1.
        assert!((Metric::Cosine.loss(&c) - 0.5).abs() < 1e-12);
        assert!((Metric::RelL2.loss(&c) - 1.0).abs() < 1e-12);
        assert_eq!(Metric::Argmax.loss(&c), 0.5);
        assert_eq!(Metric::MaxAbs.loss(&c), 1.0);
    }

    #[test]
    fn a_nan_the_reference_does_not_have_or_a_changed_shape_is_an_infinite_loss() {
        let a = t(&[3], &[1.0, 2.0, 3.0]);
        let b = t(&[3], &[1.0, f32::NAN, 3.0]);
        let c = compare_tensors("y", &a, &b, 0.0);
        for m in Metric::ALL {
            assert_eq!(m.loss(&c), f64::INFINITY, "{m}");
        }
        let c = compare_tensors("y", &a, &t(&[1, 3], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(Metric::Cosine.loss(&c), f64::INFINITY);
        // The same NaN at the same place is no loss.
        let c = compare_tensors("y", &b, &b, 0.0);
        assert_eq!(Metric::RelL2.loss(&c), 0.0);
    }

    #[test]
    fn integer_outputs_count_the_fraction_of_elements_that_changed() {
        let a = Tensor::from_shape(&[4], &[1i64, 2, 3, 4]).unwrap();
        let b = Tensor::from_shape(&[4], &[1i64, 2, 0, 4]).unwrap();
        let c = compare_tensors("k", &a, &b, 0.0);
        assert_eq!(Metric::Cosine.loss(&c), 0.25);
    }

    #[test]
    fn an_output_without_an_argmax_axis_is_judged_by_cosine_under_argmax() {
        let a = t(&[2, 1], &[1.0, 2.0]);
        let b = t(&[2, 1], &[2.0, 1.0]);
        let c = compare_tensors("y", &a, &b, 0.0);
        assert_eq!(Metric::Argmax.loss(&c), Metric::Cosine.loss(&c));
        assert!(Metric::Argmax.loss(&c) > 0.0);
    }

    #[test]
    fn budget_flags_are_checked_and_described() {
        assert_eq!(Budget::from_flags(None, None).unwrap(), Budget::DEFAULT);
        assert_eq!(Budget::DEFAULT.describe(), "cosine ≥ 0.99");
        let b = Budget::from_flags(Some(0.05), Some("rel-l2")).unwrap();
        assert_eq!(b.describe(), "rel-l2 ≤ 0.05");
        let b = Budget::from_flags(Some(0.02), Some("argmax")).unwrap();
        assert_eq!(b.describe(), "argmax agreement ≥ 98 %");
        for (l, m) in [
            (Some(-1.0), None),
            (Some(f64::NAN), None),
            (None, Some("max-abs")),
            (Some(0.1), Some("l1")),
            (Some(1.0), Some("argmax")),
        ] {
            let e = Budget::from_flags(l, m).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{l:?} {m:?}");
        }
    }
}
