//! The human form of a run report (see [`crate::report::format`]).

use crate::rewrite::RunReport;

/// Renders `report` (every rewrite and the idle rules too when `verbose`).
pub fn render(report: &RunReport, verbose: bool) -> String {
    crate::report::format::render(report, verbose)
}
