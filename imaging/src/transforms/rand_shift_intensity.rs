//! MONAI `RandShiftIntensity`: with probability `prob`, add an offset uniform in `[-offsets, offsets]` to the image.

use super::{check_prob, map_inplace, rand_unit};
use crate::{ImagingError, Result, Rng, Sample};

/// Random intensity offset.
#[derive(Debug, Clone, PartialEq)]
pub struct RandShiftIntensity {
    offsets: f32,
    prob: f64,
}

impl RandShiftIntensity {
    /// Build; `offsets` finite (sign ignored).
    pub fn new(offsets: f32, prob: f64) -> Result<Self> {
        check_prob(prob)?;
        if !offsets.is_finite() {
            return Err(ImagingError::config(
                "offsets",
                format!("expected a finite number, got {offsets}"),
            ));
        }
        Ok(Self {
            offsets: offsets.abs(),
            prob,
        })
    }

    /// Shift with probability `prob` (one draw, plus one for the offset when applied).
    pub fn apply(&self, mut sample: Sample, rng: &mut Rng) -> Sample {
        if rand_unit(rng) < self.prob {
            let o =
                (-f64::from(self.offsets) + rand_unit(rng) * 2.0 * f64::from(self.offsets)) as f32;
            map_inplace(&mut sample.image.data, |x| x + o);
        }
        sample
    }
}
