//! Intensity statistics with numpy's conventions: percentiles (`np.percentile`, linear), mean, std (ddof 0),
//! median, and the strided sampling that bounds each case's share of a pool.

use serde::{Deserialize, Serialize};

/// Intensity statistics of a pool of values (numpy conventions, see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntensityStats {
    /// Values in the pool.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// 0.5th percentile.
    pub p00_5: f64,
    /// Median.
    pub p50: f64,
    /// 99.5th percentile.
    pub p99_5: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation (ddof 0).
    pub std: f64,
}

impl IntensityStats {
    /// Statistics of `values` (sorted in place; NaNs are dropped first); `None` for an empty pool.
    pub fn from_values(values: &mut Vec<f32>) -> Option<Self> {
        values.retain(|v| !v.is_nan());
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f32::total_cmp);
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        Some(Self {
            count: values.len() as u64,
            min: f64::from(values[0]),
            p00_5: percentile_sorted(values, 0.5),
            p50: percentile_sorted(values, 50.0),
            p99_5: percentile_sorted(values, 99.5),
            max: f64::from(values[values.len() - 1]),
            mean,
            std: var.sqrt(),
        })
    }
}

/// numpy's `percentile(x, q)` (method `linear`) of an ascending, non-empty slice.
pub fn percentile_sorted(sorted: &[f32], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let pos = (q / 100.0).clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(last);
    let t = pos - lo as f64;
    let (a, b) = (f64::from(sorted[lo]), f64::from(sorted[hi]));
    // numpy's `_lerp`: a + (b - a) t, evaluated from the upper end when t ≥ 0.5.
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Every k-th element (k = ceil(n / max)) of `values`, so that at most `max` remain.
pub fn strided_sample(values: Vec<f32>, max: usize) -> Vec<f32> {
    if values.len() <= max || max == 0 {
        return values;
    }
    let k = values.len().div_ceil(max);
    values.into_iter().step_by(k).collect()
}

/// Median of a non-empty list (the mean of the two middle values for an even count, as numpy).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear_by_hand() {
        // np.percentile([1, 2, 3, 4], [0, 0.5, 50, 99.5, 100]) = [1, 1.015, 2.5, 3.985, 4]
        let v = [1.0f32, 2.0, 3.0, 4.0];
        let got: Vec<f64> = [0.0, 0.5, 50.0, 99.5, 100.0]
            .iter()
            .map(|&q| percentile_sorted(&v, q))
            .collect();
        for (g, w) in got.iter().zip([1.0, 1.015, 2.5, 3.985, 4.0]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(percentile_sorted(&[7.0], 99.5), 7.0);
        assert!(percentile_sorted(&[], 50.0).is_nan());
    }

    #[test]
    fn stats_mean_std_and_nan() {
        let mut v = vec![2.0f32, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0, f32::NAN];
        let s = IntensityStats::from_values(&mut v).unwrap();
        assert_eq!((s.count, s.mean, s.std), (8, 5.0, 2.0));
        assert_eq!((s.min, s.max, s.p50), (2.0, 9.0, 4.5));
        assert!(IntensityStats::from_values(&mut Vec::new()).is_none());
    }

    #[test]
    fn strided_sampling_keeps_every_kth() {
        let v: Vec<f32> = (0..10).map(|i| i as f32).collect();
        assert_eq!(strided_sample(v.clone(), 4), vec![0.0, 3.0, 6.0, 9.0]);
        assert_eq!(strided_sample(v.clone(), 10), v);
        assert_eq!(strided_sample(v, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
    }
}
