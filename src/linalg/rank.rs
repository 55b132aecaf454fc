//! Rank selection for low-rank factorisation: pure arithmetic on matrix sizes, rank options and
//! error budgets that turns the `lowrank` rule's settings into a [`RankRequest`] for
//! [`low_rank`](super::low_rank).

use super::RankRequest;

/// How the rank of each layer is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RankMode {
    /// Keep at least this fraction of the squared singular values.
    Energy(f64),
    /// This rank.
    Rank(usize),
    /// This fraction of the parameters: `r = ⌊ratio·K·N/(K+N)⌋`.
    Ratio(f64),
}

/// Largest rank that still saves more than `min_saving` of `k·n` (capped at `min(k, n)`).
pub(crate) fn max_rank(k: usize, n: usize, min_saving: f64) -> usize {
    let budget = (k * n) as f64 * (1.0 - min_saving);
    let lim = budget / (k + n) as f64;
    let r = if lim.fract() == 0.0 {
        lim as i64 - 1
    } else {
        lim.floor() as i64
    };
    (r.max(0) as usize).min(k.min(n))
}

/// The rank request for a `k × n` weight under the rank `mode` and `tolerance` in force (after
/// defaults), with ranks capped by [`max_rank`] for `min_saving`.
pub(crate) fn request(
    k: usize,
    n: usize,
    mode: Option<RankMode>,
    tolerance: Option<f64>,
    min_saving: f64,
) -> RankRequest {
    let mut req = RankRequest {
        fixed: None,
        energy: None,
        max_rank: max_rank(k, n, min_saving),
    };
    match mode {
        Some(RankMode::Energy(e)) => req.energy = Some(e),
        Some(RankMode::Rank(r)) => req.fixed = Some(r),
        Some(RankMode::Ratio(p)) => {
            req.fixed = Some((((k * n) as f64 * p) / (k + n) as f64).floor().max(1.0) as usize)
        }
        None => {}
    }
    if let Some(t) = tolerance {
        let e = (1.0 - t * t).max(0.0);
        req.energy = Some(req.energy.map_or(e, |x: f64| x.max(e)));
    }
    req
}

/// The per-layer relative error that the rank `mode` and `tolerance` in force allow, when they
/// bound it (energy `E` bounds it by `√(1−E)`); `None` for a fixed rank or ratio without a
/// tolerance.
pub(crate) fn error_budget(mode: Option<RankMode>, tolerance: Option<f64>) -> Option<f64> {
    let from_mode = match mode {
        Some(RankMode::Energy(e)) => Some((1.0 - e).max(0.0).sqrt()),
        _ => None,
    };
    match (from_mode, tolerance) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
