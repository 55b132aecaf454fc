//! The `--prune-ratio` criterion: which channels of a coupled group matter least, and the
//! `--prune-exclude` protection.

use ndarray::Axis;

use super::group::{layer, Group, Role};
use super::{const_f32, rule_err, Importance};
use crate::error::Result;
use crate::ir::Graph;

/// Per channel of `group`: its importance, summed over the group's producers (L1 or L2 norm of
/// each producer's kernel slice of that output channel) or its BatchNormalizations (`|gamma|`).
/// `Err` says why the group cannot be ranked.
pub(super) fn importance(
    g: &Graph,
    group: &Group,
    how: Importance,
) -> Result<std::result::Result<Vec<f64>, String>> {
    let c = group.channels;
    let mut score = vec![0.0f64; c];
    let mut sources = 0;
    for &(id, role) in &group.members {
        match (how, role) {
            (Importance::L1 | Importance::L2, Role::Producer) => {
                let l = layer(g, id).ok_or_else(|| rule_err("a producer is no longer a layer"))?;
                let w = const_f32(g, id, l.kernel)?;
                for (ch, s) in score.iter_mut().enumerate() {
                    let slice = w.index_axis(Axis(l.out_axis), ch);
                    *s += match how {
                        Importance::L1 => slice.iter().map(|x| f64::from(x.abs())).sum::<f64>(),
                        _ => slice
                            .iter()
                            .map(|x| f64::from(*x) * f64::from(*x))
                            .sum::<f64>()
                            .sqrt(),
                    };
                }
                sources += 1;
            }
            (Importance::Bn, Role::Pass) if g.node(id).op_type() == "BatchNormalization" => {
                let scale = const_f32(g, id, 1)?;
                let map = group
                    .cuts
                    .iter()
                    .find(|k| k.node == id && k.slot == 1)
                    .map(|k| k.map);
                for (ch, s) in score.iter_mut().enumerate() {
                    let gamma = match map {
                        None => scale.iter().next().copied(),
                        Some(m) => match m.positions(ch) {
                            Some(ps) => scale.iter().nth(ps.start).copied(),
                            // Not through this BatchNormalization: it says nothing.
                            None => Some(0.0),
                        },
                    };
                    *s += f64::from(gamma.unwrap_or(f32::NAN).abs());
                }
                sources += 1;
            }
            _ => {}
        }
    }
    if sources == 0 {
        return Ok(Err(
            "has no BatchNormalization to rank its channels by (--prune-importance bn)".into(),
        ));
    }
    if score.iter().any(|s| !s.is_finite()) {
        return Ok(Err("has a channel whose importance is not finite".into()));
    }
    Ok(Ok(score))
}

/// The first name of `exclude` that names a member of `group` (node name or output) or a weight
/// it cuts.
pub(super) fn excluded<'a>(g: &Graph, group: &Group, exclude: &'a [String]) -> Option<&'a str> {
    if exclude.is_empty() {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    for &(id, _) in &group.members {
        let n = g.node(id);
        names.push(n.label());
        if let Some(o) = n.output_name(0) {
            names.push(o.to_string());
        }
    }
    for k in &group.cuts {
        if let Some(v) = g.input(k.node, k.slot) {
            names.push(g.value_name(v).to_string());
        }
    }
    exclude
        .iter()
        .find(|e| names.iter().any(|n| n == *e))
        .map(String::as_str)
}

/// The `n` channels of lowest `score` among those `allowed`, lowest first (ties by index).
pub(super) fn lowest(score: &[f64], allowed: impl Fn(usize) -> bool, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..score.len()).filter(|c| allowed(*c)).collect();
    order.sort_by(|a, b| score[*a].total_cmp(&score[*b]).then(a.cmp(b)));
    order.truncate(n);
    order
}
