//! The human form of a run report: one block per rule that acted (its rewrites, first few, and
//! skips), the rules with nothing to do named only when verbose, and the totals with thousands
//! separators and percentages.

use std::fmt::Write;

use crate::rewrite::driver::Stats;
use crate::rewrite::{Exactness, RunReport};

/// `1234567` → `1,234,567`.
pub fn sep(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The change from `before` to `after` as a percentage of `before`: `−40.5 %`, `+3.0 %`,
/// `±0 %` when equal (and when `before` is 0 and `after` too; `new` when only `before` is 0).
pub fn pct(before: u64, after: u64) -> String {
    if before == after {
        return "±0 %".into();
    }
    if before == 0 {
        return "new".into();
    }
    let p = (after as f64 - before as f64) / before as f64 * 100.0;
    let sign = if p < 0.0 { '−' } else { '+' };
    format!("{sign}{:.1} %", p.abs())
}

/// `102 → 109 (+6.9 %)`, separators included.
pub fn change(before: u64, after: u64) -> String {
    format!("{} → {} ({})", sep(before), sep(after), pct(before, after))
}

/// `1 rewrite`, `2 rewrites`.
pub fn count(n: usize, what: &str) -> String {
    format!("{} {what}{}", sep(n as u64), if n == 1 { "" } else { "s" })
}

fn stats(before: &Stats, after: &Stats) -> String {
    format!(
        "nodes {}, params {}, weight bytes {}",
        change(before.nodes as u64, after.nodes as u64),
        change(before.params, after.params),
        change(before.bytes, after.bytes)
    )
}

/// How many rewrites of one rule are listed unless verbose.
const LISTED: usize = 10;

/// Renders `report`: a block per rule that rewrote or skipped something, with its first
/// [`LISTED`] rewrites (all when `verbose`) and its skips; the rules with nothing to do are
/// counted, and named when `verbose`; then the totals.
pub fn render(report: &RunReport, verbose: bool) -> String {
    let mut out = String::new();
    for r in report
        .rules
        .iter()
        .filter(|r| !r.rewrites.is_empty() || !r.skips.is_empty())
    {
        let kind = match r.exactness {
            Exactness::Exact { .. } => "exact",
            Exactness::Lossy { .. } => "lossy",
        };
        let _ = writeln!(
            out,
            "{} {} ({kind}): {}, {}; {}",
            r.code,
            r.name,
            count(r.rewrites.len(), "rewrite"),
            count(r.skips.len(), "skip"),
            stats(&r.before, &r.after)
        );
        let shown = if verbose { r.rewrites.len() } else { LISTED };
        for w in r.rewrites.iter().take(shown) {
            let _ = writeln!(out, "    rewrote {}", w.description);
        }
        if r.rewrites.len() > shown {
            let _ = writeln!(
                out,
                "    ... and {} more (--verbose lists them)",
                sep((r.rewrites.len() - shown) as u64)
            );
        }
        for s in &r.skips {
            let _ = writeln!(out, "    skipped {} `{}`: {}", s.op, s.node, s.reason);
        }
    }
    let idle: Vec<&str> = report
        .rules
        .iter()
        .filter(|r| r.rewrites.is_empty() && r.skips.is_empty())
        .map(|r| r.name)
        .collect();
    if !idle.is_empty() {
        if verbose {
            let _ = writeln!(out, "nothing to do: {}", idle.join(", "));
        } else {
            let _ = writeln!(
                out,
                "{} with nothing to do (--verbose names {})",
                count(idle.len(), "rule"),
                if idle.len() == 1 { "it" } else { "them" }
            );
        }
    }
    let failed = report.calibration_failures().len();
    if failed > 0 {
        let _ = writeln!(
            out,
            "calibration failed for {}, left unchanged",
            count(failed, "layer")
        );
    }
    let _ = writeln!(
        out,
        "total: {}, {}{}",
        count(report.patches(), "rewrite"),
        stats(&report.before, &report.after),
        if report.stopped_early {
            " (stopped early by --max-patches)"
        } else {
            ""
        }
    );
    out
}

/// Why a lossy rule run without the clean group grew the node count: one line per such rule,
/// or nothing. Its rewrite is what adds the nodes (a factored layer is two, a quantized weight
/// is read through a dequantizing node); the clean-up the rewrite itself makes possible (the
/// weights and nodes it leaves unread) is done by its patch, and the rest of the graph is left
/// as it was, which `--rules clean,RULE` cleans too.
pub fn growth_note(report: &RunReport, clean_selected: bool) -> Option<String> {
    if clean_selected || report.after.nodes <= report.before.nodes {
        return None;
    }
    let grew: Vec<String> = report
        .rules
        .iter()
        .filter(|r| {
            r.after.nodes > r.before.nodes && matches!(r.exactness, Exactness::Lossy { .. })
        })
        .map(|r| {
            let why = match r.name {
                "lowrank" => "each factored layer is two",
                "quantize" => "each quantized weight is read through a DequantizeLinear",
                _ => "its rewrites add them",
            };
            format!(
                "{} +{} ({why})",
                r.name,
                sep((r.after.nodes - r.before.nodes) as u64)
            )
        })
        .collect();
    if grew.is_empty() {
        return None;
    }
    Some(format!(
        "note: nodes {}: {}; what the rewrites left unread went with them, the rest of the graph is as it was (the clean group was not selected: `--rules clean,{}` cleans it too)",
        change(report.before.nodes as u64, report.after.nodes as u64),
        grew.join(", "),
        report
            .rules
            .iter()
            .filter(|r| !r.rewrites.is_empty())
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_percentages() {
        assert_eq!(sep(0), "0");
        assert_eq!(sep(999), "999");
        assert_eq!(sep(1000), "1,000");
        assert_eq!(sep(54_088_400), "54,088,400");
        assert_eq!(pct(102, 109), "+6.9 %");
        assert_eq!(pct(200, 100), "−50.0 %");
        assert_eq!(pct(5, 5), "±0 %");
        assert_eq!(pct(0, 3), "new");
        assert_eq!(change(1000, 250), "1,000 → 250 (−75.0 %)");
        assert_eq!(count(1, "rewrite"), "1 rewrite");
        assert_eq!(count(1200, "rewrite"), "1,200 rewrites");
    }
}

/// The last line of a run: `wrote DEST: 1,281,273 bytes, input 1,289,603 bytes (−0.6 %)`, the
/// external data file counted in (and named) where there is one on either side.
pub fn wrote(
    dest: &str,
    model_bytes: u64,
    data: Option<(&std::path::Path, u64)>,
    input_bytes: u64,
    input_data_bytes: u64,
) -> String {
    let (out_total, out_text) = match data {
        Some((p, n)) => (
            model_bytes + n,
            format!(
                "{} bytes + external data `{}`: {} bytes",
                sep(model_bytes),
                p.display(),
                sep(n)
            ),
        ),
        None => (model_bytes, format!("{} bytes", sep(model_bytes))),
    };
    let in_total = input_bytes + input_data_bytes;
    let in_text = if input_data_bytes > 0 {
        format!(
            "input {} bytes + external data {} bytes",
            sep(input_bytes),
            sep(input_data_bytes)
        )
    } else {
        format!("input {} bytes", sep(input_bytes))
    };
    format!(
        "wrote {dest}: {out_text}, {in_text} ({})",
        pct(in_total, out_total)
    )
}

/// `MACs: 485,232,640 → 301,000,000 (−38.0 %)` for the rewrite of `before` into `after`, counted
/// as `inspect` counts them (symbolic dims as 1, named); `None` where some Conv/MatMul/Gemm has
/// shapes that cannot be inferred on either side, or neither has any MACs.
pub fn macs_change(
    before: &crate::onnx::proto::ModelProto,
    after: &crate::onnx::proto::ModelProto,
) -> Option<String> {
    let macs = |p: &crate::onnx::proto::ModelProto| {
        crate::ir::Model::from_proto(p.clone())
            .ok()
            .map(|m| super::inspect::inspect(&m, 0).macs)
    };
    let (a, b) = (macs(before)?, macs(after)?);
    if a.unknown_nodes > 0 || b.unknown_nodes > 0 || a.saturated || b.saturated || a.total == 0 {
        return None;
    }
    let mut syms = a.symbolic_dims_as_one.clone();
    syms.extend(b.symbolic_dims_as_one.iter().cloned());
    syms.sort();
    syms.dedup();
    let note = if syms.is_empty() {
        String::new()
    } else {
        format!(" (symbolic dims as 1: {})", syms.join(", "))
    };
    Some(format!("MACs: {}{note}", change(a.total, b.total)))
}
