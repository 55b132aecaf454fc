//! Activation ranges from calibration data: min/max, a percentile, or the entropy (KL divergence)
//! threshold, collected set by set so that no activation is held longer than one tract run.
//!
//! A [`RangeCollector`] takes every value of one activation over all calibration sets
//! ([`RangeCollector::add`]) and gives the range its uint8 grid is fitted to
//! ([`RangeCollector::range`]):
//!
//! - **minmax**: the smallest and largest value seen;
//! - **percentile P** (as onnxruntime's `CalibrationMethod.Percentile`, asymmetric): `(100 − P)/2`
//!   percent of the values are cut at each end, read off a histogram of [`BINS`] bins;
//! - **entropy** (TensorRT's calibration): over a histogram of `|x|`, the threshold `T` whose
//!   clipped and requantized distribution has the smallest KL divergence from the original;
//!   the range is `[max(min, −T), min(max, T)]`.
//!
//! Histograms keep the bin width of the first set they see and grow by whole bins when a later
//! set reaches further, so merging sets never re-bins a count (when more than [`MAX_BINS`] would
//! be needed, neighbouring bins are merged in pairs, which keeps the edges aligned).

/// Bins of the first set's histogram.
pub const BINS: usize = 2048;
/// The most bins a histogram grows to before neighbouring bins are merged in pairs.
pub const MAX_BINS: usize = 1 << 16;
/// The percentile of `--quantize-calibrate percentile` without a value (onnxruntime's default).
pub const DEFAULT_PERCENTILE: f64 = 99.999;

/// How an activation's range is chosen from its calibration values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    /// Smallest and largest value.
    MinMax,
    /// Cut `(100 − P)/2` percent of the values at each end (`P` in `(50, 100]`).
    Percentile(f64),
    /// The KL-divergence threshold of `|x|` (TensorRT's entropy calibration).
    Entropy,
}

impl RangeMethod {
    /// Parses `minmax`, `percentile`, `percentile:P` or `entropy`; `None` with the reason.
    pub fn parse(s: &str) -> std::result::Result<RangeMethod, String> {
        match s {
            "minmax" => Ok(RangeMethod::MinMax),
            "entropy" => Ok(RangeMethod::Entropy),
            "percentile" => Ok(RangeMethod::Percentile(DEFAULT_PERCENTILE)),
            _ => match s.strip_prefix("percentile:") {
                Some(p) => match p.parse::<f64>() {
                    Ok(v) if v.is_finite() && v > 50.0 && v <= 100.0 => {
                        Ok(RangeMethod::Percentile(v))
                    }
                    _ => Err(format!(
                        "`percentile:P` needs a number P with 50 < P ≤ 100, got `{p}`"
                    )),
                },
                None => Err(format!(
                    "must be `minmax`, `percentile[:P]` or `entropy`, got `{s}`"
                )),
            },
        }
    }

    /// The flag spelling (`minmax`, `percentile:99.999`, `entropy`).
    pub fn name(&self) -> String {
        match self {
            RangeMethod::MinMax => "minmax".into(),
            RangeMethod::Percentile(p) => format!("percentile:{p}"),
            RangeMethod::Entropy => "entropy".into(),
        }
    }
}

/// Counts in bins of one width, the first starting at `lo`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    lo: f64,
    width: f64,
    counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram of [`BINS`] bins over `[lo, hi]` (one bin of width 1 when `hi ≤ lo`).
    fn over(lo: f64, hi: f64) -> Histogram {
        let width = if hi > lo {
            (hi - lo) / BINS as f64
        } else {
            1.0
        };
        let n = if hi > lo { BINS } else { 1 };
        Histogram {
            lo,
            width,
            counts: vec![0; n],
        }
    }

    /// Grows by whole bins until `[lo, hi]` is covered (merging pairs past [`MAX_BINS`]).
    fn cover(&mut self, lo: f64, hi: f64) {
        loop {
            let left = if lo < self.lo {
                ((self.lo - lo) / self.width).ceil() as usize
            } else {
                0
            };
            let top = self.lo + self.width * self.counts.len() as f64;
            let right = if hi > top {
                ((hi - top) / self.width).floor() as usize + 1
            } else {
                0
            };
            if left + right == 0 {
                return;
            }
            if self.counts.len() + left + right <= MAX_BINS {
                let mut c = vec![0u64; left];
                c.extend_from_slice(&self.counts);
                c.resize(c.len() + right, 0);
                self.counts = c;
                self.lo -= left as f64 * self.width;
                return;
            }
            // Merge pairs: the edges stay edges of the old bins.
            self.counts = self.counts.chunks(2).map(|p| p.iter().sum()).collect();
            self.width *= 2.0;
        }
    }

    fn add(&mut self, v: f64) {
        // Values at the top edge (and rounding at either end) land in the outermost bins.
        let i = ((v - self.lo) / self.width).floor().max(0.0) as usize;
        let last = self.counts.len() - 1;
        self.counts[i.min(last)] += 1;
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Left edge of bin `i`.
    fn edge(&self, i: usize) -> f64 {
        self.lo + self.width * i as f64
    }
}

/// Collects one activation's values over the calibration sets; see the module docs.
#[derive(Debug, Clone)]
pub struct RangeCollector {
    method: RangeMethod,
    min: f64,
    max: f64,
    seen: u64,
    non_finite: u64,
    hist: Option<Histogram>,
}

impl RangeCollector {
    /// An empty collector for `method`.
    pub fn new(method: RangeMethod) -> RangeCollector {
        RangeCollector {
            method,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            seen: 0,
            non_finite: 0,
            hist: None,
        }
    }

    /// Adds the values of one calibration set (NaN and infinities are counted, not used).
    pub fn add<'a>(&mut self, values: impl IntoIterator<Item = &'a f32> + Clone) {
        let (mut lo, mut hi, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0u64);
        for v in values.clone() {
            if v.is_finite() {
                lo = lo.min(*v as f64);
                hi = hi.max(*v as f64);
                n += 1;
            } else {
                self.non_finite += 1;
            }
        }
        if n == 0 {
            return;
        }
        self.min = self.min.min(lo);
        self.max = self.max.max(hi);
        self.seen += n;
        let (hlo, hhi, abs) = match self.method {
            RangeMethod::MinMax => return,
            RangeMethod::Percentile(_) => (lo, hi, false),
            RangeMethod::Entropy => (0.0, lo.abs().max(hi.abs()), true),
        };
        let h = self.hist.get_or_insert_with(|| Histogram::over(hlo, hhi));
        h.cover(hlo, hhi);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            let v = *v as f64;
            h.add(if abs { v.abs() } else { v });
        }
    }

    /// How many finite values were added.
    pub fn count(&self) -> u64 {
        self.seen
    }

    /// The smallest and largest finite value added.
    pub fn min_max(&self) -> Option<(f32, f32)> {
        (self.seen > 0).then_some((self.min as f32, self.max as f32))
    }

    /// The range chosen by the method, within `[min, max]`; `Err` when no finite value was
    /// added.
    pub fn range(&self) -> std::result::Result<(f32, f32), String> {
        if self.seen == 0 {
            return Err(if self.non_finite > 0 {
                format!(
                    "its {} calibration values are all NaN or infinite",
                    self.non_finite
                )
            } else {
                "it has no calibration values".into()
            });
        }
        let (lo, hi) = match (&self.method, &self.hist) {
            (RangeMethod::Percentile(p), Some(h)) => percentile_range(h, *p),
            (RangeMethod::Entropy, Some(h)) => {
                let target = if self.min >= 0.0 { 255 } else { 128 };
                let t = entropy_threshold(h, target);
                (-t, t)
            }
            _ => (self.min, self.max),
        };
        Ok((
            lo.clamp(self.min, self.max) as f32,
            hi.clamp(self.min, self.max) as f32,
        ))
    }
}

/// `(100 − p)/2` percent cut at each end: the left edge of the bin where the cumulative share
/// first exceeds the cut, the right edge of the bin where it first reaches `1 − cut`.
fn percentile_range(h: &Histogram, p: f64) -> (f64, f64) {
    let total = h.total() as f64;
    let cut = (100.0 - p) / 200.0;
    let (mut lo, mut hi) = (None, None);
    let mut acc = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        acc += c;
        let share = acc as f64 / total;
        if lo.is_none() && share > cut {
            lo = Some(h.edge(i));
        }
        if hi.is_none() && share >= 1.0 - cut {
            hi = Some(h.edge(i + 1));
        }
    }
    (
        lo.unwrap_or(h.lo),
        hi.unwrap_or_else(|| h.edge(h.counts.len())),
    )
}

/// TensorRT's entropy calibration over a histogram of `|x|`: for each candidate threshold bin
/// `i ≥ target`, the reference `P` is the first `i` bins with the rest added to the last, `Q` is
/// those `i` bins merged into `target` groups and spread back over the bins of each group where
/// `P` is nonzero, both smoothed as onnxruntime does ([`smooth`]); the threshold with the
/// smallest `KL(P‖Q)` wins, at the middle of its last bin as TensorRT
/// places it. A histogram with fewer than `target` bins gives its top edge.
fn entropy_threshold(h: &Histogram, target: usize) -> f64 {
    // The search is quadratic in the bins: a histogram grown past 2·BINS is merged in pairs.
    let mut h = h.clone();
    while h.counts.len() > 2 * BINS {
        h.counts = h.counts.chunks(2).map(|p| p.iter().sum()).collect();
        h.width *= 2.0;
    }
    let h = &h;
    let n = h.counts.len();
    if n <= target {
        return h.edge(n);
    }
    let mut best = (f64::INFINITY, n);
    let tail: Vec<u64> = {
        let mut t = vec![0u64; n + 1];
        for i in (0..n).rev() {
            t[i] = t[i + 1] + h.counts[i];
        }
        t
    };
    let mut p = vec![0f64; n];
    let mut q = vec![0f64; n];
    for i in target..=n {
        for (k, c) in h.counts[..i].iter().enumerate() {
            p[k] = *c as f64;
        }
        p[i - 1] += tail[i] as f64;
        // `target` groups of (nearly) equal width over the first `i` bins; each group's count
        // spread over the bins where P is nonzero (as onnxruntime's entropy calibrator).
        for g in 0..target {
            let (a, b) = (g * i / target, (g + 1) * i / target);
            let nonzero = p[a..b].iter().filter(|c| **c > 0.0).count();
            let sum: u64 = h.counts[a..b].iter().sum();
            let each = if nonzero > 0 {
                sum as f64 / nonzero as f64
            } else {
                0.0
            };
            for k in a..b {
                q[k] = if p[k] > 0.0 { each } else { 0.0 };
            }
        }
        let (Some(ps), Some(qs)) = (smooth(&p[..i]), smooth(&q[..i])) else {
            continue;
        };
        let (sp, sq): (f64, f64) = (ps.iter().sum(), qs.iter().sum());
        let kl: f64 = ps
            .iter()
            .zip(&qs)
            .filter(|(pk, _)| **pk > 0.0)
            .map(|(pk, qk)| {
                let (pk, qk) = (pk / sp, qk / sq);
                pk * (pk / qk).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i);
        }
    }
    h.lo + (best.1 as f64 - 0.5) * h.width
}

/// onnxruntime's `smooth_distribution`: zero counts become [`SMOOTH_EPS`], the nonzero ones
/// give that mass back evenly; `None` when every count is zero.
fn smooth(counts: &[f64]) -> Option<Vec<f64>> {
    let zeros = counts.iter().filter(|c| **c == 0.0).count();
    let nonzero = counts.len() - zeros;
    if nonzero == 0 {
        return None;
    }
    let eps1 = SMOOTH_EPS * zeros as f64 / nonzero as f64;
    Some(
        counts
            .iter()
            .map(|c| if *c == 0.0 { SMOOTH_EPS } else { c - eps1 })
            .collect(),
    )
}

/// The count an empty bin gets in the KL search (onnxruntime's `eps`).
const SMOOTH_EPS: f64 = 1e-4;

/// The uint8 asymmetric grid for `[lo, hi]`: the range widened to include 0, `scale =
/// (hi − lo)/255`, `zero_point = round(−lo/scale)` so that 0 is a code exactly (scale 1 and zero
/// point 0 for an all-zero range). As onnxruntime's `compute_scale_zp` for uint8.
pub fn uint8_grid(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let span = hi - lo;
    if span > 0.0 && span.is_finite() {
        let s = span / 255.0;
        let z = (-lo / s).round().clamp(0.0, 255.0);
        (s, z as u8)
    } else {
        (1.0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(method: RangeMethod, sets: &[Vec<f32>]) -> RangeCollector {
        let mut c = RangeCollector::new(method);
        for s in sets {
            c.add(s.iter());
        }
        c
    }

    #[test]
    fn minmax_is_the_extremes_over_every_set_and_skips_nan() {
        let c = collect(
            RangeMethod::MinMax,
            &[vec![0.5, -1.25, f32::NAN], vec![3.0, 0.0]],
        );
        assert_eq!(c.range().unwrap(), (-1.25, 3.0));
        assert_eq!(c.count(), 4);
    }

    #[test]
    fn all_nan_values_give_a_reason_not_a_range() {
        let c = collect(RangeMethod::MinMax, &[vec![f32::NAN, f32::INFINITY]]);
        assert!(c.range().unwrap_err().contains("NaN or infinite"));
    }

    #[test]
    fn a_range_that_grows_across_sets_keeps_every_count() {
        // The second set reaches ten times further: bins are added, no count is re-binned.
        let a: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let b: Vec<f32> = (0..1000).map(|i| -5.0 + i as f32 / 100.0).collect();
        let c = collect(RangeMethod::Percentile(100.0), &[a, b]);
        let h = c.hist.as_ref().unwrap();
        assert_eq!(h.total(), 2000);
        assert_eq!(h.width, 0.999f32 as f64 / BINS as f64);
        let (lo, hi) = c.range().unwrap();
        assert_eq!((lo, hi), (-5.0, 4.99));
    }

    #[test]
    fn percentile_cuts_the_tails_it_names() {
        // 10,000 values 0..9999 and one outlier at 1e6: 99.9 % cuts 0.05 % (5 values) per side.
        let mut v: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        v.push(1e6);
        let c = collect(RangeMethod::Percentile(99.9), &[v]);
        let (lo, hi) = c.range().unwrap();
        let width = (1e6 / BINS as f64) as f32;
        // The outlier is cut; the top is the bin edge above 9994.
        assert!(hi < 9994.0 + width + 1.0 && hi >= 9994.0, "{hi}");
        assert_eq!(lo, 0.0);
    }

    #[test]
    fn entropy_clips_a_far_outlier_and_keeps_a_uniform_range() {
        let mut v: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        let uniform = collect(RangeMethod::Entropy, &[v.clone()]);
        let (_, hi) = uniform.range().unwrap();
        assert!(hi > 0.99, "uniform [0, 1) keeps its range: {hi}");
        v.push(10.0);
        let outlier = collect(RangeMethod::Entropy, &[v]);
        let (lo, hi) = outlier.range().unwrap();
        assert_eq!(lo, 0.0);
        assert!(hi < 2.0, "the outlier at 10 is clipped: {hi}");
    }

    #[test]
    fn the_uint8_grid_holds_zero_and_the_ends_of_a_power_of_two_range() {
        // [0, 255/16] and [−8, 127/16]: scale 1/16 exactly, the ends and 0 are codes.
        assert_eq!(uint8_grid(0.0, 255.0 / 16.0), (0.0625, 0));
        assert_eq!(uint8_grid(-8.0, 127.0 / 16.0), (0.0625, 128));
        // A positive-only range is widened to 0.
        assert_eq!(uint8_grid(1.0, 2.55).1, 0);
        assert_eq!(uint8_grid(0.0, 0.0), (1.0, 0));
    }

    #[test]
    fn methods_parse_and_bad_ones_say_why() {
        assert_eq!(RangeMethod::parse("minmax"), Ok(RangeMethod::MinMax));
        assert_eq!(
            RangeMethod::parse("percentile:99.9"),
            Ok(RangeMethod::Percentile(99.9))
        );
        assert_eq!(
            RangeMethod::parse("percentile"),
            Ok(RangeMethod::Percentile(DEFAULT_PERCENTILE))
        );
        assert!(RangeMethod::parse("percentile:40").is_err());
        assert!(RangeMethod::parse("kl").unwrap_err().contains("`kl`"));
    }
}
