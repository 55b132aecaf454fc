//! The bench results as a Markdown table.

use std::fmt::Write as _;

use super::{Outcome, Row, Task};

/// The columns of [`render`], in order.
pub const COLUMNS: [&str; 13] = [
    "model",
    "preset",
    "size (bytes)",
    "size ratio",
    "params",
    "MACs",
    "latency ms",
    "latency ratio",
    "worst cosine",
    "worst rel L2",
    "argmax agreement",
    "task metric",
    "note",
];

/// `rows` as a Markdown table, after a line saying how they were measured (`runs` timed runs).
/// Pairs read `original → rewritten`; a preset that failed has `failed (exit N): why` in its
/// note and `–` in the measured columns.
pub fn render(rows: &[Row], runs: usize) -> String {
    let mut s = format!(
        "Original → rewritten, measured in the same run. Size: the .onnx file plus external data. \
         MACs: as `onnx-slim inspect` counts them (n/a, or ≥, where it cannot infer shapes). \
         Latency: median of {runs} tract run(s) on test_data_set_0, the two models in turns, \
         compile not timed. Error: the rewritten model's outputs against the original's in tract, \
         worst over all test sets. Task metric: accuracy of the first output's argmax against \
         meta.json labels.\n\n"
    );
    let _ = writeln!(s, "| {} |", COLUMNS.join(" | "));
    let _ = writeln!(
        s,
        "|{}",
        COLUMNS
            .iter()
            .enumerate()
            .map(|(i, _)| if i < 2 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for r in rows {
        let cells = cells(r);
        let cells: Vec<String> = cells.iter().map(|c| cell(c)).collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s
}

/// The cells of one row, unescaped, in [`COLUMNS`] order.
pub fn cells(r: &Row) -> Vec<String> {
    let mut c = vec![r.model.clone(), format!("`{}`", r.preset)];
    match &r.outcome {
        Outcome::Failed { code, message } => {
            c.extend(std::iter::repeat_n("–".to_string(), 10));
            let code = code.map_or("signal".to_string(), |c| format!("exit {c}"));
            c.push(format!("failed ({code}): {message}"));
        }
        Outcome::Measured(m) => {
            c.push(format!("{} → {}", m.size.original, m.size.rewritten));
            c.push(ratio(m.size.rewritten as f64, m.size.original as f64));
            c.push(format!(
                "{} → {}",
                count(m.params.original),
                count(m.params.rewritten)
            ));
            c.push(format!(
                "{} → {}",
                macs(m.macs.original, m.macs_unknown_nodes.original),
                macs(m.macs.rewritten, m.macs_unknown_nodes.rewritten)
            ));
            match m.latency_ms {
                Some(l) => {
                    c.push(format!("{:.3} → {:.3}", l.original, l.rewritten));
                    c.push(ratio(l.rewritten, l.original));
                }
                None => c.extend(["–".to_string(), "–".to_string()]),
            }
            c.push(m.worst_cosine.map_or("–".into(), cosine));
            c.push(m.worst_rel_l2.map_or("–".into(), sci));
            c.push(
                m.argmax_agreement
                    .map_or("n/a".into(), |x| format!("{:.2} %", x * 100.0)),
            );
            c.push(match &m.task {
                Task::None => "–".into(),
                Task::NotApplicable(why) => format!("n/a ({why})"),
                Task::Accuracy(p) => format!("{} → {}", percent(p.original), percent(p.rewritten)),
            });
            let mut note = Vec::new();
            if let Some(p) = m.patches {
                note.push(if p == 1 {
                    "1 patch".to_string()
                } else {
                    format!("{p} patches")
                });
            }
            if let Some(n) = &m.note {
                note.push(n.clone());
            }
            c.push(note.join("; "));
        }
    }
    c
}

/// Accuracy as `97.78 %` from (correct, total).
pub fn percent((right, total): (usize, usize)) -> String {
    if total == 0 {
        return "n/a".into();
    }
    format!("{:.2} %", right as f64 * 100.0 / total as f64)
}

/// `a / b` to four decimals (`–` when `b` is 0).
fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        return "–".into();
    }
    format!("{:.4}", a / b)
}

/// A count with three significant digits and a k/M/G suffix from 10,000 up.
fn count(n: u64) -> String {
    let x = n as f64;
    let (v, suffix) = if n < 10_000 {
        return n.to_string();
    } else if x < 1e6 {
        (x / 1e3, "k")
    } else if x < 1e9 {
        (x / 1e6, "M")
    } else {
        (x / 1e9, "G")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{suffix}")
}

/// MACs: `n/a` when no node's MACs are known, `≥ n` when some are unknown.
fn macs(total: u64, unknown_nodes: u64) -> String {
    match (total, unknown_nodes) {
        (_, 0) => count(total),
        (0, _) => "n/a".into(),
        _ => format!("≥ {}", count(total)),
    }
}

/// A cosine: `1` when exact (within rounding), `1 − 2.07e-6` when within 1e-4 of 1, else six decimals.
fn cosine(x: f64) -> String {
    if x >= 1.0 - 4.0 * f64::EPSILON {
        "1".into()
    } else if x < 1.0 && 1.0 - x < 1e-4 {
        format!("1 − {:.2e}", 1.0 - x)
    } else {
        format!("{x:.6}")
    }
}

/// `0`, or a number in scientific notation with three significant digits.
fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.is_infinite() {
        "inf".into()
    } else {
        format!("{x:.2e}")
    }
}

/// A table cell: pipes escaped, on one line.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosines_near_one_show_their_distance() {
        assert_eq!(cosine(1.0), "1");
        assert_eq!(cosine(1.0 - 2.2e-16), "1");
        assert_eq!(cosine(1.0 - 2.5e-7), "1 − 2.50e-7");
        assert_eq!(cosine(0.93), "0.930000");
    }

    #[test]
    fn unknown_macs_are_said() {
        assert_eq!(macs(300_000, 0), "300k");
        assert_eq!(macs(0, 3), "n/a");
        assert_eq!(macs(300_000, 3), "≥ 300k");
    }

    #[test]
    fn counts_are_short() {
        assert_eq!(count(9_999), "9999");
        assert_eq!(count(300_042), "300k");
        assert_eq!(count(13_512_345), "13.5M");
        assert_eq!(count(1_234_567_890), "1.23G");
    }

    #[test]
    fn a_failed_row_has_every_column_and_its_reason() {
        let r = Row {
            model: "m".into(),
            preset: "--rules nope".into(),
            outcome: Outcome::Failed {
                code: Some(2),
                message: "error: unknown rule `nope` | x".into(),
            },
        };
        let t = render(&[r], 5);
        let line = t.lines().last().unwrap_or_default();
        assert!(
            line.contains("failed (exit 2): error: unknown rule `nope` \\| x"),
            "{line}"
        );
        assert_eq!(
            cells(&Row {
                model: "m".into(),
                preset: "p".into(),
                outcome: Outcome::Failed {
                    code: None,
                    message: "x".into()
                },
            })
            .len(),
            COLUMNS.len()
        );
    }
}
