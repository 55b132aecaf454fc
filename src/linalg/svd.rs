//! Thin and randomized SVD on faer.

use faer::{Mat, MatRef};
use serde::Serialize;

use super::frob_sq;

/// Which SVD computed a decomposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SvdMethod {
    /// faer's thin SVD of the whole matrix.
    Thin,
    /// Randomized SVD (Halko, Martinsson, Tropp 2011): a Gaussian sketch of `sketch` columns,
    /// `power_iters` re-orthonormalised power iterations, then a thin SVD of `QᵀM`.
    Randomized {
        /// Columns of the sketch (rank cap plus oversampling).
        sketch: usize,
        /// Power iterations.
        power_iters: usize,
    },
}

impl std::fmt::Display for SvdMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SvdMethod::Thin => write!(f, "thin SVD"),
            SvdMethod::Randomized {
                sketch,
                power_iters,
            } => write!(f, "randomized SVD ({sketch} cols, {power_iters} power its)"),
        }
    }
}

/// `M ≈ U diag(s) Vᵀ`, leading part of the spectrum.
#[derive(Debug, Clone)]
pub struct Decomposition {
    /// `K × l`, orthonormal columns.
    pub u: Mat<f64>,
    /// `l` singular values, non-increasing.
    pub s: Vec<f64>,
    /// `N × l`, orthonormal columns.
    pub v: Mat<f64>,
    /// `‖M‖_F²` (≥ `Σ s²`; equal for a thin SVD).
    pub total_sq: f64,
    /// How it was computed.
    pub method: SvdMethod,
}

impl Decomposition {
    /// `‖M − M_r‖_F / ‖M‖_F` for the rank-`r` truncation. Exact for a thin SVD; for a randomized
    /// one it is the error of `Q·(QᵀM)_r`, which is what the factors use (the identity
    /// `‖M − QB_r‖² = ‖M‖² − Σ_{i≤r} σ_i(B)²` holds because `Q` is orthonormal).
    pub fn rel_error(&self, r: usize) -> f64 {
        if self.total_sq <= 0.0 {
            return 0.0;
        }
        let kept: f64 = self.s.iter().take(r).map(|x| x * x).sum();
        ((self.total_sq - kept).max(0.0) / self.total_sq).sqrt()
    }

    /// The smallest rank keeping at least `energy` of `‖M‖_F²`, if within the computed part.
    pub fn rank_for_energy(&self, energy: f64) -> Option<usize> {
        let target = energy * self.total_sq;
        let mut acc = 0.0;
        for (i, x) in self.s.iter().enumerate() {
            acc += x * x;
            // A relative slack of 1e-12 absorbs rounding when `energy` is 1.
            if acc >= target * (1.0 - 1e-12) {
                return Some(i + 1);
            }
        }
        None
    }
}

/// Thin SVD of `m` (all `min(K, N)` singular triplets).
pub fn thin_svd(m: MatRef<f64>) -> Decomposition {
    let total_sq = frob_sq(m);
    match m.thin_svd() {
        Ok(svd) => Decomposition {
            u: svd.U().to_owned(),
            s: (0..svd.S().dim())
                .map(|i| svd.S().column_vector()[i])
                .collect(),
            v: svd.V().to_owned(),
            total_sq,
            method: SvdMethod::Thin,
        },
        // faer only fails to converge on non-finite input; report an empty spectrum.
        Err(_) => Decomposition {
            u: Mat::zeros(m.nrows(), 0),
            s: vec![],
            v: Mat::zeros(m.ncols(), 0),
            total_sq,
            method: SvdMethod::Thin,
        },
    }
}

/// A seeded standard-normal generator (SplitMix64 + Box–Muller); no dependency, reproducible.
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Normal {
            state: seed,
            spare: None,
        }
    }
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn next(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

fn orthonormal_basis(y: MatRef<f64>) -> Mat<f64> {
    y.qr().compute_thin_Q()
}

/// Randomized SVD of `m` with a sketch of `sketch` columns and `power_iters` power iterations.
/// Returns the leading `sketch` triplets of `Q(QᵀM)`; the caller uses fewer than it computed.
pub fn randomized_svd(
    m: MatRef<f64>,
    sketch: usize,
    power_iters: usize,
    seed: u64,
) -> Decomposition {
    let (k, n) = (m.nrows(), m.ncols());
    let l = sketch.min(k).min(n).max(1);
    let total_sq = frob_sq(m);
    let mut rng = Normal::new(seed);
    let omega = Mat::<f64>::from_fn(n, l, |_, _| rng.next());
    let mut q = orthonormal_basis((m * &omega).as_ref());
    for _ in 0..power_iters {
        let z = orthonormal_basis((m.transpose() * &q).as_ref());
        q = orthonormal_basis((m * &z).as_ref());
    }
    let b = q.transpose() * m; // l × N
    let small = thin_svd(b.as_ref());
    Decomposition {
        u: &q * &small.u,
        s: small.s,
        v: small.v,
        total_sq,
        method: SvdMethod::Randomized {
            sketch: l,
            power_iters,
        },
    }
}
