//! The one output comparison of the tests: `onnx_slim::verify::compare` itself, so a test judges
//! outputs exactly as `onnx-slim verify` and the main command do.
//!
//! Per output, reference `a` against candidate `b` at tolerance `tol`: `|a − b| ≤ tol·max(1, |a|)`
//! for floats, exact equality for integers, bools and strings; `NaN` equals only `NaN` at the
//! same position, an infinity only the same infinity; element types, shapes, and the set of
//! outputs (their count and names) must be equal. Tolerance 0 (the exact rules) means bit-equal:
//! on top of the library's criterion, floats must have the same bits (`-0.0` is not `0.0`), NaN
//! of any payload equal to NaN at the same position. Comparing no outputs at all is a failure
//! too: a test that compared nothing proved nothing.

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
        if tol == 0.0 {
            bit_equal(reference, candidate)?;
        }
        Ok(cs)
    } else {
        Err(format!(
            "outputs differ at tolerance {tol}:\n{}",
            table(&cs)
        ))
    }
}

/// Floats with the same bits at every position (any NaN equal to any NaN), for outputs that
/// already passed at tolerance 0 (so they pair up by name, or by position).
fn bit_equal(reference: &Outputs, candidate: &Outputs) -> Result<(), String> {
    for (k, (name, a)) in reference.iter().enumerate() {
        let b = candidate
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or(&candidate[k])
            .1
            .clone();
        if !a.datum_type().is_float() {
            continue;
        }
        // f32 and f16 → f64 keeps every value and the sign of zero apart.
        let (x, y) = (
            a.cast_to::<f64>().map_err(|e| e.to_string())?,
            b.cast_to::<f64>().map_err(|e| e.to_string())?,
        );
        let (x, y) = (
            x.to_plain_array_view::<f64>().map_err(|e| e.to_string())?,
            y.to_plain_array_view::<f64>().map_err(|e| e.to_string())?,
        );
        if let Some((i, (p, q))) = x
            .iter()
            .zip(y.iter())
            .enumerate()
            .find(|(_, (p, q))| p.to_bits() != q.to_bits() && !(p.is_nan() && q.is_nan()))
        {
            return Err(format!(
                "`{name}` is not bit-equal at tolerance 0: element {i} is {p:e} vs {q:e}"
            ));
        }
    }
    Ok(())
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
