//! Whitening for data-aware factorisation. With activations `X` (rows are samples) and
//! `G = XᵀX + λI = LLᵀ`, `‖X(W − AB)‖_F² + λ‖W − AB‖_F² = ‖Lᵀ(W − AB)‖_F²`. So the best rank-`r`
//! `AB` in that norm comes from the SVD of `LᵀW = UΣVᵀ`: `A = L⁻ᵀU_rΣ_r^½`, `B = Σ_r^½V_rᵀ`.
//! The ridge `λ` keeps directions the calibration data never visits from being thrown away.

use faer::{Mat, MatRef, Side};
use ndarray::ArrayView2;

/// `XᵀX` accumulated over batches of rows, in `f64`.
#[derive(Debug, Clone)]
pub struct Gram {
    /// `K × K`.
    pub g: Mat<f64>,
    /// Rows seen.
    pub rows: usize,
}

impl Gram {
    /// An empty Gram matrix for `k`-wide rows.
    pub fn new(k: usize) -> Gram {
        Gram {
            g: Mat::zeros(k, k),
            rows: 0,
        }
    }

    /// Width of the rows.
    pub fn dim(&self) -> usize {
        self.g.nrows()
    }

    /// Adds `XᵀX` for the rows of `x` (`rows × K`).
    pub fn add_rows(&mut self, x: ArrayView2<f32>) {
        assert_eq!(x.ncols(), self.dim());
        // Chunks bound the f64 copy to ~32 MB.
        let chunk = (4_000_000 / x.ncols().max(1)).max(1);
        let mut start = 0;
        while start < x.nrows() {
            let end = (start + chunk).min(x.nrows());
            let xf = Mat::<f64>::from_fn(end - start, x.ncols(), |i, j| x[[start + i, j]] as f64);
            faer::linalg::matmul::matmul(
                self.g.as_mut(),
                faer::Accum::Add,
                xf.transpose(),
                xf.as_ref(),
                1.0,
                faer::get_global_parallelism(),
            );
            start = end;
        }
        self.rows += x.nrows();
    }

    /// Adds another Gram of the same width.
    pub fn merge(&mut self, other: &Gram) {
        assert_eq!(other.dim(), self.dim());
        self.g += &other.g;
        self.rows += other.rows;
    }
}

/// The Cholesky factor `L` of `G + λI`.
#[derive(Debug, Clone)]
pub struct Whitener {
    l: Mat<f64>,
    /// The ridge `λ` actually added.
    pub ridge: f64,
}

impl Whitener {
    /// `L` with `LLᵀ = G + λI`, `λ = rel_ridge · trace(G)/K`. If the factorisation fails (a
    /// Gram matrix is never negative, but rounding can make it look so) the ridge grows tenfold,
    /// up to five times. Fails on an all-zero Gram matrix.
    pub fn new(gram: &Gram, rel_ridge: f64) -> Result<Whitener, String> {
        let k = gram.dim();
        let trace: f64 = (0..k).map(|i| gram.g[(i, i)]).sum();
        if !(trace > 0.0) || !trace.is_finite() {
            return Err("the calibration activations are all zero or not finite".into());
        }
        let mut ridge = (rel_ridge * trace / k as f64).max(trace * 1e-12);
        for _ in 0..6 {
            let mut g = gram.g.clone();
            for i in 0..k {
                g[(i, i)] += ridge;
            }
            if let Ok(llt) = g.llt(Side::Lower) {
                return Ok(Whitener {
                    l: llt.L().to_owned(),
                    ridge,
                });
            }
            ridge *= 10.0;
        }
        Err("the Gram matrix of the calibration activations is not positive definite".into())
    }

    /// Width.
    pub fn dim(&self) -> usize {
        self.l.nrows()
    }

    /// `LᵀW`.
    pub fn whiten(&self, w: MatRef<f64>) -> Mat<f64> {
        self.l.transpose() * w
    }

    /// `L⁻ᵀY`: solves `LᵀA = Y`.
    pub fn unwhiten(&self, mut y: Mat<f64>) -> Mat<f64> {
        faer::linalg::triangular_solve::solve_upper_triangular_in_place(
            self.l.transpose(),
            y.as_mut(),
            faer::get_global_parallelism(),
        );
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn whiten_then_unwhiten_is_identity() {
        let x = Array2::from_shape_fn((50, 6), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let mut g = Gram::new(6);
        g.add_rows(x.view());
        let wh = Whitener::new(&g, 1e-3).unwrap();
        let w = Mat::<f64>::from_fn(6, 4, |i, j| (i as f64) - 2.0 * j as f64);
        let back = wh.unwhiten(wh.whiten(w.as_ref()));
        let err: f64 = super::super::frob_sq((&back - &w).as_ref());
        assert!(err < 1e-18, "{err}");
    }
}
