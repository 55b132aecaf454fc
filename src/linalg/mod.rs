//! Dense linear algebra for low-rank factorisation, on [faer] in `f64`:
//!
//! - [`svd`]: thin SVD, and randomized SVD (Gaussian sketch, a few power iterations) for ranks far
//!   below `min(K, N)`;
//! - [`whiten`]: Gram matrices of activations and their Cholesky factor, for data-aware
//!   factorisation (minimise `‖XW − XAB‖` instead of `‖W − AB‖`);
//! - [`low_rank`]: the one entry point the `lowrank` rule uses: choose a rank from the spectrum
//!   and return balanced factors `A[K,r]`, `B[r,N]` with their errors;
//! - [`rank`]: the rank request for a weight: [`rank::RankMode`], the break-even rank, error
//!   budgets.
//!
//! Matrices cross the boundary as `ndarray` `f32` arrays; everything inside is `f64`.

pub mod rank;
pub mod svd;
pub mod whiten;

use std::time::Instant;

use faer::{Mat, MatRef};
use ndarray::{Array2, ArrayView2};

pub use svd::{randomized_svd, thin_svd, Decomposition, SvdMethod};
pub use whiten::{Gram, Whitener};

/// `a` as a faer `f64` matrix.
pub fn to_faer(a: ArrayView2<f32>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]] as f64)
}

/// `m` as an ndarray `f32` matrix.
pub fn from_faer(m: MatRef<f64>) -> Array2<f32> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)] as f32)
}

/// Squared Frobenius norm.
pub fn frob_sq(m: MatRef<f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            let x = m[(i, j)];
            s += x * x;
        }
    }
    s
}

/// How to pick the rank: the largest rank any target asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankRequest {
    /// A fixed rank.
    pub fixed: Option<usize>,
    /// Keep at least this fraction of the squared singular values (`1 − t²` for a relative error
    /// budget `t`).
    pub energy: Option<f64>,
    /// The largest rank worth having (beyond it the factorisation saves too little).
    pub max_rank: usize,
}

/// What [`low_rank`] found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Factors at the chosen rank.
    Factored(Factors),
    /// The request needs more than `max_rank`: `needed` is that rank when the computed spectrum
    /// shows it, `None` when it lies beyond what was computed; `error_at_max` is the relative
    /// error at `max_rank` (in the whitened norm when data-aware).
    TooHigh {
        /// The rank the request needs, if known.
        needed: Option<usize>,
        /// Relative error at `max_rank`.
        error_at_max: f64,
    },
    /// The matrix is zero: nothing to factor.
    Zero,
}

/// Balanced factors of `W ≈ A·B` and how good they are.
#[derive(Debug, Clone)]
pub struct Factors {
    /// `K × r`.
    pub a: Array2<f32>,
    /// `r × N`.
    pub b: Array2<f32>,
    /// `r`.
    pub rank: usize,
    /// `‖W − AB‖_F / ‖W‖_F`, computed from the `f32` factors actually stored.
    pub weight_error: f64,
    /// When data-aware: `‖Lᵀ(W − AB)‖_F / ‖LᵀW‖_F` with `LLᵀ = XᵀX + λI`, the relative output
    /// error on the calibration activations (ridge included).
    pub data_error: Option<f64>,
    /// Which SVD ran.
    pub method: SvdMethod,
    /// Seconds spent in the SVD and the factor assembly.
    pub seconds: f64,
}

/// Ranks at most this far below `min(K, N)` (as a fraction) use the randomized SVD.
pub const RANDOMIZED_BELOW: f64 = 0.25;
/// Smallest `min(K, N)` for which the randomized SVD is worth it.
pub const RANDOMIZED_MIN_DIM: usize = 256;
/// Power iterations of the randomized SVD.
pub const POWER_ITERS: usize = 3;

/// Oversampling for a sketch of `r` columns.
fn oversample(r: usize) -> usize {
    (r / 4).max(10)
}

/// Factors `w` (`K × N`) at the rank `req` asks for, minimising `‖W − AB‖_F`, or with `whitener`
/// `‖Lᵀ(W − AB)‖_F` (= `‖X(W − AB)‖_F` up to the ridge). The thin SVD runs unless every rank
/// that could be accepted is far below `min(K, N)`, where a randomized SVD of `max_rank` plus
/// oversampling columns runs instead.
pub fn low_rank(w: ArrayView2<f32>, whitener: Option<&Whitener>, req: &RankRequest) -> Outcome {
    let t0 = Instant::now();
    let (k, n) = w.dim();
    let wf = to_faer(w);
    let w_sq = frob_sq(wf.as_ref());
    if w_sq == 0.0 {
        return Outcome::Zero;
    }
    let m = match whitener {
        Some(wh) => wh.whiten(wf.as_ref()),
        None => wf.clone(),
    };
    let min_dim = k.min(n);
    let cap = req.max_rank.min(min_dim);
    let sketch = cap + oversample(cap);
    let randomized = min_dim >= RANDOMIZED_MIN_DIM
        && (cap as f64) <= RANDOMIZED_BELOW * min_dim as f64
        && sketch < min_dim;
    let dec = if randomized {
        randomized_svd(m.as_ref(), sketch, POWER_ITERS, 0x5eed)
    } else {
        thin_svd(m.as_ref())
    };
    if dec.total_sq == 0.0 {
        return Outcome::Zero;
    }
    let mut rank = req.fixed.unwrap_or(0).min(min_dim);
    if let Some(e) = req.energy {
        match dec.rank_for_energy(e) {
            Some(r) => rank = rank.max(r),
            None => {
                return Outcome::TooHigh {
                    needed: None,
                    error_at_max: dec.rel_error(cap),
                }
            }
        }
    }
    let rank = rank.max(1);
    if rank > req.max_rank || rank > dec.s.len() {
        return Outcome::TooHigh {
            needed: Some(rank).filter(|r| *r <= dec.s.len()),
            error_at_max: dec.rel_error(cap),
        };
    }
    // Balanced split: A = U_r Σ_r^½ (un-whitened), B = Σ_r^½ V_rᵀ.
    let mut a = Mat::<f64>::from_fn(k, rank, |i, j| dec.u[(i, j)] * dec.s[j].sqrt());
    if let Some(wh) = whitener {
        a = wh.unwhiten(a);
    }
    let b = Mat::<f64>::from_fn(rank, n, |i, j| dec.s[i].sqrt() * dec.v[(j, i)]);
    let (a32, b32) = (from_faer(a.as_ref()), from_faer(b.as_ref()));
    let weight_error = (residual_sq(&wf, &a32, &b32) / w_sq).sqrt();
    let data_error = whitener.map(|_| dec.rel_error(rank));
    Outcome::Factored(Factors {
        a: a32,
        b: b32,
        rank,
        weight_error,
        data_error,
        method: dec.method,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `‖W − AB‖_F²` with `A`, `B` the stored `f32` factors.
pub fn residual_sq(w: &Mat<f64>, a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    let af = to_faer(a.view());
    let bf = to_faer(b.view());
    let mut r = w.clone();
    faer::linalg::matmul::matmul(
        r.as_mut(),
        faer::Accum::Add,
        af.as_ref(),
        bf.as_ref(),
        -1.0,
        faer::get_global_parallelism(),
    );
    frob_sq(r.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    }

    fn rand_mat(k: usize, n: usize, seed: u64) -> Array2<f32> {
        let mut s = seed;
        Array2::from_shape_fn((k, n), |_| lcg(&mut s))
    }

    #[test]
    fn exact_low_rank_is_recovered() {
        let p = rand_mat(40, 5, 1);
        let q = rand_mat(5, 30, 2);
        let w = p.dot(&q);
        let req = RankRequest {
            fixed: None,
            energy: Some(1.0 - 1e-10),
            max_rank: 20,
        };
        let Outcome::Factored(f) = low_rank(w.view(), None, &req) else {
            panic!("not factored")
        };
        assert_eq!(f.rank, 5);
        assert!(f.weight_error < 1e-5, "{}", f.weight_error);
    }

    #[test]
    fn randomized_matches_thin_on_decaying_spectrum() {
        // W = U diag(2^-i) Vᵀ-like: product of random matrices with a decaying middle.
        let k = 300;
        let n = 280;
        let p = rand_mat(k, 60, 3);
        let q = rand_mat(60, n, 4);
        let mut mid = Array2::<f32>::zeros((60, 60));
        for i in 0..60 {
            mid[[i, i]] = 0.8f32.powi(i as i32);
        }
        let w = p.dot(&mid).dot(&q);
        let wf = to_faer(w.view());
        let thin = thin_svd(wf.as_ref());
        let rnd = randomized_svd(wf.as_ref(), 30, POWER_ITERS, 7);
        for i in 0..10 {
            let rel = (thin.s[i] - rnd.s[i]).abs() / thin.s[0];
            assert!(rel < 1e-6, "σ{i}: {} vs {}", thin.s[i], rnd.s[i]);
        }
        assert!((thin.rel_error(10) - rnd.rel_error(10)).abs() < 1e-4);
    }
}
