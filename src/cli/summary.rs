//! The human form of a run report.

use std::fmt::Write;

use crate::rewrite::driver::Stats;
use crate::rewrite::{Exactness, RunReport};

fn stats_line(s: &Stats) -> String {
    format!("{} nodes, {} params, {} bytes", s.nodes, s.params, s.bytes)
}

/// Renders `report`: one block per rule with its rewrites (first few), skips and counts.
pub fn render(report: &RunReport) -> String {
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
            "{} {} ({kind}): {} rewrites, {} skips; {} → {}",
            r.code,
            r.name,
            r.rewrites.len(),
            r.skips.len(),
            stats_line(&r.before),
            stats_line(&r.after)
        );
        for w in r.rewrites.iter().take(10) {
            let _ = writeln!(out, "    rewrote {}", w.description);
        }
        if r.rewrites.len() > 10 {
            let _ = writeln!(out, "    ... and {} more", r.rewrites.len() - 10);
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
        let _ = writeln!(out, "nothing to do: {}", idle.join(", "));
    }
    let _ = writeln!(
        out,
        "total: {} → {}{}",
        stats_line(&report.before),
        stats_line(&report.after),
        if report.stopped_early {
            " (stopped early by --max-patches)"
        } else {
            ""
        }
    );
    out
}
