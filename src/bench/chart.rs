//! The bench results as an SVG chart: per model one panel, size ratio (x) against output error
//! (y, `1 − worst cosine`, log scale), one labelled point per preset that was measured.

use plotters::prelude::*;

use super::{Outcome, Row};

/// Errors below this are drawn at it: the floor of the log axis (a cosine of 1 to double
/// precision has no logarithm).
pub const ERROR_FLOOR: f64 = 1e-9;

const PANEL: (u32, u32) = (560, 400);

/// One point of the chart: a preset's size ratio and `1 − worst cosine`.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The preset.
    pub label: String,
    /// Rewritten bytes / original bytes.
    pub size_ratio: f64,
    /// `1 − worst cosine`, at least [`ERROR_FLOOR`].
    pub error: f64,
}

/// The points of each model, in the order the models first appear in `rows`; failed presets and
/// rows without a cosine are left out (the table says why).
pub fn points(rows: &[Row]) -> Vec<(String, Vec<Point>)> {
    let mut out: Vec<(String, Vec<Point>)> = Vec::new();
    for r in rows {
        let i = match out.iter().position(|(m, _)| *m == r.model) {
            Some(i) => i,
            None => {
                out.push((r.model.clone(), Vec::new()));
                out.len() - 1
            }
        };
        let Outcome::Measured(m) = &r.outcome else {
            continue;
        };
        let (Some(cos), true) = (m.worst_cosine, m.size.original > 0) else {
            continue;
        };
        out[i].1.push(Point {
            label: r.preset.clone(),
            size_ratio: m.size.rewritten as f64 / m.size.original as f64,
            error: (1.0 - cos).max(ERROR_FLOOR),
        });
    }
    out
}

/// The chart of `rows` as an SVG document (one panel per model, two panels a row); an error from
/// plotters is returned as its message.
pub fn render(rows: &[Row]) -> Result<String, String> {
    let models = points(rows);
    let n = models.len().max(1);
    let cols = n.min(2);
    let lines = n.div_ceil(cols);
    let mut svg = String::new();
    {
        let size = (PANEL.0 * cols as u32, PANEL.1 * lines as u32);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((lines, cols));
        for ((model, pts), panel) in models.iter().zip(panels.iter()) {
            let x_max = pts.iter().map(|p| p.size_ratio).fold(1.0f64, f64::max) * 1.15;
            let y_max = pts.iter().map(|p| p.error).fold(1e-2f64, f64::max) * 10.0;
            let mut chart = ChartBuilder::on(panel)
                .caption(model, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..x_max, (ERROR_FLOOR / 2.0..y_max).log_scale())
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("size ratio (rewritten / original)")
                .y_desc("1 − worst cosine (at least 1e-9)")
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .draw()
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(pts.iter().enumerate().map(|(k, p)| {
                    let color = Palette99::pick(k).to_rgba();
                    EmptyElement::at((p.size_ratio, p.error))
                        + Circle::new((0, 0), 4, color.filled())
                        + Text::new(
                            short(&p.label),
                            (7, -14 + 12 * (k as i32 % 3)),
                            ("sans-serif", 12).into_font().color(&color),
                        )
                }))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A preset shortened to 40 characters for a point's label.
fn short(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_string()
    } else {
        let cut: String = s.chars().take(39).collect();
        format!("{cut}…")
    }
}
