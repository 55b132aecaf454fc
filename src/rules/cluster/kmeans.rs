//! Deterministic one-dimensional k-means: a codebook of at most `k` float32 centroids and one
//! code per value.
//!
//! Values that take at most `k` distinct bit patterns keep them exactly (the codebook is those
//! values). Otherwise the centroids start evenly spaced over `[min, max]` (linear
//! initialisation, as Deep Compression found best: it keeps the few large weights that matter
//! most) and Lloyd's iterations move each to the mean of the values nearest to it. In one
//! dimension the nearest centroid of sorted values is a contiguous run between the midpoints of
//! neighbouring centroids, so each iteration is `k` binary searches over the sorted values and
//! prefix sums (`O(k log n)`), after one sort. When any value is zero, one centroid is exactly
//! 0 and stays there, so zeros (pruned or sparse weights) come back exactly zero.

/// Most Lloyd iterations; they usually settle well before.
pub const MAX_ITERATIONS: usize = 200;

/// A codebook and the code of every value.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    /// The centroids, ascending (at most `k`; fewer when the values have fewer distinct ones).
    pub centroids: Vec<f32>,
    /// For each value, the index of its centroid.
    pub codes: Vec<u8>,
}

impl Codebook {
    /// The value each code stands for.
    pub fn decoded(&self) -> impl Iterator<Item = f32> + '_ {
        self.codes.iter().map(|c| self.centroids[*c as usize])
    }
}

/// Clusters `values` (finite) into at most `k` (2 ≤ k ≤ 256) centroids. Deterministic.
pub fn cluster(values: &[f32], k: usize) -> Codebook {
    cluster_weighted(values, None, k)
}

/// [`cluster`] minimising `Σ wᵢ (vᵢ − c(vᵢ))²`: with `weights` (one per value, finite and
/// ≥ 0; `None` is all ones) each centroid settles on the weighted mean of its values, so the
/// values that matter more are fitted better. The assignment (nearest centroid), the linear
/// initialisation, the lossless case and the fixed zero are those of [`cluster`]; all weights
/// equal give exactly [`cluster`]'s codebook. A centroid whose values all weigh 0 stays where it is.
pub fn cluster_weighted(values: &[f32], weights: Option<&[f64]>, k: usize) -> Codebook {
    debug_assert!((2..=256).contains(&k));
    debug_assert!(weights.is_none_or(|w| w.len() == values.len()));
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let sorted: Vec<f32> = order.iter().map(|&i| values[i]).collect();
    let mut distinct = sorted.clone();
    distinct.dedup_by(|a, b| a.to_bits() == b.to_bits());
    if distinct.len() <= k {
        // Lossless: every value is its own centroid (−0.0 and 0.0 apart, ordered by total_cmp).
        let codes = values
            .iter()
            .map(|v| distinct.partition_point(|c| c.total_cmp(v).is_lt()) as u8)
            .collect();
        return Codebook {
            centroids: distinct,
            codes,
        };
    }
    let xs: Vec<f64> = sorted.iter().map(|v| *v as f64).collect();
    // Prefix sums of w·x and of w (w = 1 unweighted: the sums are then exact counts).
    let mut prefix = Vec::with_capacity(xs.len() + 1);
    let mut mass = Vec::with_capacity(xs.len() + 1);
    prefix.push(0.0f64);
    mass.push(0.0f64);
    for (j, x) in xs.iter().enumerate() {
        let w = weights.map_or(1.0, |w| w[order[j]]);
        prefix.push(prefix[j] + w * x);
        mass.push(mass[j] + w);
    }
    let (lo, hi) = (xs[0], xs[xs.len() - 1]);
    let mut c: Vec<f64> = (0..k)
        .map(|i| lo + (hi - lo) * i as f64 / (k - 1) as f64)
        .collect();
    // Zero is its own centroid, fixed: the nearest initial centroid moves to exactly 0.
    let has_zero = xs.iter().any(|x| *x == 0.0);
    let fixed = has_zero.then(|| {
        let z = (0..k)
            .min_by(|&a, &b| c[a].abs().total_cmp(&c[b].abs()))
            .unwrap_or(0);
        c[z] = 0.0;
        z
    });
    for _ in 0..MAX_ITERATIONS {
        let bounds = runs(&xs, &c);
        let mut moved = false;
        for j in 0..k {
            let (a, b) = (bounds[j], bounds[j + 1]);
            let m = mass[b] - mass[a];
            if Some(j) == fixed || b <= a || m <= 0.0 {
                continue;
            }
            let mean = (prefix[b] - prefix[a]) / m;
            if mean != c[j] {
                moved = true;
                c[j] = mean;
            }
        }
        if !moved {
            break;
        }
    }
    // The centroids as float32, ascending and distinct; empty ones dropped.
    let bounds = runs(&xs, &c);
    let mut centroids: Vec<f32> = (0..k)
        .filter(|&j| bounds[j + 1] > bounds[j] || Some(j) == fixed)
        .map(|j| c[j] as f32)
        .collect();
    centroids.sort_by(f32::total_cmp);
    centroids.dedup_by(|a, b| a.to_bits() == b.to_bits());
    let codes = values.iter().map(|v| nearest(&centroids, *v)).collect();
    Codebook { centroids, codes }
}

/// The index of the centroid nearest to `v` (ties to the lower one); a zero `v` maps to an
/// exactly zero centroid when there is one.
fn nearest(centroids: &[f32], v: f32) -> u8 {
    let v = v as f64;
    let i = centroids.partition_point(|c| (*c as f64) < v);
    let best = match i {
        0 => 0,
        i if i == centroids.len() => i - 1,
        i => {
            let (below, above) = (centroids[i - 1] as f64, centroids[i] as f64);
            if v - below <= above - v {
                i - 1
            } else {
                i
            }
        }
    };
    best as u8
}

/// For centroids `c`, ascending, the start of each one's run of the sorted `xs` (the values
/// nearer to it than to its neighbours), then `xs.len()`: `k + 1` bounds. Linear initialisation
/// and Lloyd's updates keep the centroids ascending (a run's mean lies between the midpoints
/// with its neighbours; an empty run's centroid stays between theirs).
fn runs(xs: &[f64], c: &[f64]) -> Vec<usize> {
    let mut bounds = Vec::with_capacity(c.len() + 1);
    bounds.push(0);
    for j in 1..c.len() {
        let mid = (c[j - 1] + c[j]) / 2.0;
        let start = xs.partition_point(|x| *x < mid);
        bounds.push(start.max(bounds[j - 1]));
    }
    bounds.push(xs.len());
    bounds
}

/// `‖W − Ŵ‖ / ‖W‖` (0 for an all-zero `W`).
pub fn relative_error(values: &[f32], decoded: impl Iterator<Item = f32>) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (v, d) in values.iter().zip(decoded) {
        let e = (*v as f64) - (d as f64);
        num += e * e;
        den += (*v as f64) * (*v as f64);
    }
    if den == 0.0 {
        0.0
    } else {
        (num / den).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_distinct_values_come_back_bit_for_bit() {
        let v = [0.5f32, -0.0, 0.0, 3.25, 0.5, -1e-30, 3.25];
        let cb = cluster(&v, 16);
        let back: Vec<u32> = cb.decoded().map(f32::to_bits).collect();
        let want: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        assert_eq!(back, want);
        assert_eq!(cb.centroids.len(), 5);
    }

    #[test]
    fn zero_stays_exactly_zero_and_error_shrinks_with_k() {
        let mut v: Vec<f32> = (0..4000)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect();
        for i in (0..v.len()).step_by(3) {
            v[i] = 0.0;
        }
        let mut last = f64::INFINITY;
        for k in [4usize, 16, 64, 256] {
            let cb = cluster(&v, k);
            assert!(cb.centroids.len() <= k);
            for (x, y) in v.iter().zip(cb.decoded()) {
                if *x == 0.0 {
                    assert_eq!(y.to_bits(), 0.0f32.to_bits(), "k={k}");
                }
            }
            let e = relative_error(&v, cb.decoded());
            assert!(e < last, "k={k}: {e} ≥ {last}");
            last = e;
        }
        assert!(last < 0.01, "{last}");
    }

    #[test]
    fn lloyd_settles_two_clear_clusters_on_their_means() {
        let v = [1.0f32, 1.1, 0.9, 10.0, 10.2, 9.8, 5.0];
        // Three centroids over [0.9, 10.2]: 0.9, 5.55, 10.2 → means 1.0, 5.0, 10.0.
        let cb = cluster(&v, 3);
        assert_eq!(cb.centroids, vec![1.0, 5.0, 10.0]);
        assert_eq!(cb.codes, vec![0, 0, 0, 2, 2, 2, 1]);
    }

    #[test]
    fn the_same_values_give_the_same_codebook() {
        let v: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32).sin()).collect();
        assert_eq!(cluster(&v, 16), cluster(&v, 16));
    }

    #[test]
    fn equal_weights_give_the_unweighted_codebook() {
        let v: Vec<f32> = (0..3000)
            .map(|i| ((i * 7919 % 1013) as f32 / 500.0 - 1.0).powi(3))
            .collect();
        let w = vec![2.5f64; v.len()];
        assert_eq!(cluster_weighted(&v, Some(&w), 16), cluster(&v, 16));
    }

    #[test]
    fn heavy_values_are_fitted_better_and_zero_and_the_lossless_case_hold() {
        // 1000 values spread over [-1, 1]; the 8 heavy ones (weight 1e4) sit off the grid.
        let mut v: Vec<f32> = (0..1000).map(|i| (i as f32 / 999.0) * 2.0 - 1.0).collect();
        let heavy = [3usize, 150, 333, 401, 512, 640, 777, 901];
        for (j, &i) in heavy.iter().enumerate() {
            v[i] = -0.93 + 0.237 * j as f32 + 0.0123;
        }
        v[500] = 0.0;
        let mut w = vec![1.0f64; v.len()];
        for &i in &heavy {
            w[i] = 1e4;
        }
        let err = |cb: &Codebook| -> f64 {
            heavy
                .iter()
                .map(|&i| ((v[i] - cb.centroids[cb.codes[i] as usize]) as f64).powi(2))
                .sum()
        };
        let (plain, weighted) = (cluster(&v, 16), cluster_weighted(&v, Some(&w), 16));
        assert_ne!(plain, weighted);
        assert!(
            err(&weighted) < err(&plain) / 10.0,
            "{} vs {}",
            err(&weighted),
            err(&plain)
        );
        assert_eq!(
            weighted.centroids[weighted.codes[500] as usize].to_bits(),
            0.0f32.to_bits()
        );
        // At most k distinct values: lossless whatever the weights.
        let few: Vec<f32> = (0..400).map(|i| [0.5f32, -0.25, 0.0, 7.0][i % 4]).collect();
        let cb = cluster_weighted(&few, Some(&vec![3.0; 400]), 4);
        assert!(cb
            .decoded()
            .zip(&few)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
