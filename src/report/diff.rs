//! `onnx-slim diff`: what changed between two models.
//!
//! A table of op types whose count changed (subgraphs included), totals for nodes, parameters
//! and bytes of constant tensors, then a unified diff of the two text forms
//! ([`crate::ir::text::to_text`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::ir::text::to_text;
use crate::ir::Model;
use crate::report::inspect::inspect;

/// The diff of `a` (before) and `b` (after), or `no differences` when their text forms and
/// counts are the same.
pub fn diff(a: &Model, b: &Model) -> String {
    let ta = to_text(a);
    let tb = to_text(b);
    let ia = inspect(a, 0);
    let ib = inspect(b, 0);

    let ops: BTreeSet<&str> = ia
        .ops
        .iter()
        .chain(ib.ops.iter())
        .map(|o| o.op.as_str())
        .collect();
    let mut rows: Vec<(String, u64, u64)> = ops
        .into_iter()
        .map(|op| (op.to_string(), ia.op_count(op), ib.op_count(op)))
        .filter(|(_, x, y)| x != y)
        .collect();
    // Biggest changes first, then by name.
    rows.sort_by(|x, y| {
        let dx = x.1.abs_diff(x.2);
        let dy = y.1.abs_diff(y.2);
        dy.cmp(&dx).then_with(|| x.0.cmp(&y.0))
    });
    let totals = [
        ("nodes", ia.nodes, ib.nodes),
        ("parameters", ia.params.elements, ib.params.elements),
        ("constant bytes", ia.params.bytes, ib.params.bytes),
    ];

    if ta == tb && rows.is_empty() && totals.iter().all(|(_, x, y)| x == y) {
        return "no differences\n".into();
    }

    let w = rows
        .iter()
        .map(|r| r.0.len())
        .chain(totals.iter().map(|t| t.0.len()))
        .max()
        .unwrap_or(0)
        .max(2);
    let nums: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.1, r.2))
        .chain(totals.iter().map(|t| (t.1, t.2)))
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect();
    let wb = nums.iter().map(|n| n.0.len()).max().unwrap_or(0).max(6);
    let wa = nums.iter().map(|n| n.1.len()).max().unwrap_or(0).max(5);

    let mut out = String::new();
    writeln!(
        out,
        "{:w$}  {:>wb$}  {:>wa$}  change",
        "op", "before", "after"
    )
    .unwrap();
    for (op, x, y) in &rows {
        writeln!(
            out,
            "{op:w$}  {x:>wb$}  {y:>wa$}  {}",
            change(*x, *y, false)
        )
        .unwrap();
    }
    writeln!(out, "{}", "-".repeat(w + wb + wa + 14)).unwrap();
    for (name, x, y) in totals {
        writeln!(out, "{name:w$}  {x:>wb$}  {y:>wa$}  {}", change(x, y, true)).unwrap();
    }
    out.push('\n');
    if ta == tb {
        out.push_str("text forms are identical\n");
    } else {
        let d = similar::TextDiff::from_lines(&ta, &tb);
        out.push_str(
            &d.unified_diff()
                .context_radius(3)
                .header("a", "b")
                .to_string(),
        );
    }
    out
}

/// `+3`, `-2`, `0`; with `pct`, also the relative change: `-120 (-12.5%)`.
fn change(x: u64, y: u64, pct: bool) -> String {
    let d = if y >= x {
        format!("+{}", y - x)
    } else {
        format!("-{}", x - y)
    };
    if x == y {
        return "0".into();
    }
    if pct && x > 0 {
        let p = (y as f64 - x as f64) / x as f64 * 100.0;
        format!("{d} ({p:+.1}%)")
    } else {
        d
    }
}
