//! The one output comparison of the tests: `onnx_slim::verify::compare` itself, so a test judges
//! outputs exactly as `onnx-slim verify` and the main command do.
//!
//! Per output, reference `a` against candidate `b` at tolerance `tol`: `|a − b| ≤ tol·max(1, |a|)`
//! for floats, exact equality for integers, bools and strings; `NaN` equals only `NaN` at the
//! same position, an infinity only the same infinity; element types, shapes, and the set of
//! outputs (their count and names) must be equal. Tolerance 0 means every element equal.
//! Comparing no outputs at all is a failure too: a test that compared nothing proved nothing.

use onnx_slim::verify::compare::{compare_outputs, Comparison};
use onnx_slim::verify::Outputs;
use tract_onnx::prelude::Tensor;

/// Positional outputs named `output_0`, `output_1`, … (for runners that return bare tensors).
pub fn positional(tensors: impl IntoIterator<Item = Tensor>) -> Outputs {
    tensors
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("output_{i}"), t))
        .collect()
}

fn table(cs: &[Comparison]) -> String {
    let mut s = Comparison::header();
    for c in cs {
        s += &format!("\n{c}");
    }
    s
}

/// Compares every output of `candidate` with `reference` at `tol` (see the module docs). `Ok`
/// with the comparisons when all pass; otherwise `Err` with the table of every output.
pub fn outputs_match(
    reference: &Outputs,
    candidate: &Outputs,
    tol: f32,
) -> Result<Vec<Comparison>, String> {
    let cs = compare_outputs(reference, candidate, tol);
    if cs.is_empty() {
        return Err("no outputs to compare".into());
    }
    if cs.iter().all(|c| c.passed) {
        Ok(cs)
    } else {
        Err(format!(
            "outputs differ at tolerance {tol}:\n{}",
            table(&cs)
        ))
    }
}

/// [`outputs_match`], panicking with `what` and the table when the outputs differ.
pub fn assert_outputs_match(
    reference: &Outputs,
    candidate: &Outputs,
    tol: f32,
    what: &str,
) -> Vec<Comparison> {
    outputs_match(reference, candidate, tol).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The absolute criterion `../shared/README.md` uses against `output_N.pb` files: structurally
/// equal (names, count, dtype, shape) and `max |a − b| ≤ abs(c)` per output, NaN and infinities
/// as above; integers, bools and strings exactly equal.
pub fn outputs_within_abs(
    reference: &Outputs,
    candidate: &Outputs,
    abs: impl Fn(&Comparison) -> f64,
) -> Result<Vec<Comparison>, String> {
    // Tolerance 0: `passed` means exactly equal; for floats the absolute bound decides.
    let cs = compare_outputs(reference, candidate, 0.0);
    if cs.is_empty() {
        return Err("no outputs to compare".into());
    }
    let ok = |c: &Comparison| {
        c.passed
            || (c.note.is_none()
                && c.shape_equal
                && c.dtype.starts_with('F')
                && c.max_abs_error.is_some_and(|e| e <= abs(c)))
    };
    if cs.iter().all(ok) {
        Ok(cs)
    } else {
        Err(format!("outputs differ:\n{}", table(&cs)))
    }
}
