//! MONAI `RandScaleIntensity`: with probability `prob`, multiply the image by `1 + f`, f uniform in
//! `[-factors, factors]` (one factor for all channels).

use super::{check_prob, map_inplace, rand_unit};
use crate::{ImagingError, Result, Rng, Sample};

/// Random intensity scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RandScaleIntensity {
    factors: f32,
    prob: f64,
}

impl RandScaleIntensity {
    /// Build; `factors` finite (its sign is ignored, like MONAI's `(min(-f, f), max(-f, f))`).
    pub fn new(factors: f32, prob: f64) -> Result<Self> {
        check_prob(prob)?;
        if !factors.is_finite() {
            return Err(ImagingError::config(
                "factors",
                format!("expected a finite number, got {factors}"),
            ));
        }
        Ok(Self {
            factors: factors.abs(),
            prob,
        })
    }

    /// Scale with probability `prob` (one draw, plus one for the factor when applied).
    pub fn apply(&self, mut sample: Sample, rng: &mut Rng) -> Sample {
        if rand_unit(rng) < self.prob {
            let f = -f64::from(self.factors) + rand_unit(rng) * 2.0 * f64::from(self.factors);
            let m = (1.0 + f) as f32;
            map_inplace(&mut sample.image.data, |x| x * m);
        }
        sample
    }
}
