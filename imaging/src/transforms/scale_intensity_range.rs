//! MONAI `ScaleIntensityRange`: map `[a_min, a_max]` linearly to `[b_min, b_max]`, optionally clipped, in `f32`
//! like MONAI (the range widths are formed in double precision, then applied in single precision).

use super::map_inplace;
use crate::{ImagingError, Result, Sample, Volume};

/// Linear intensity window.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaleIntensityRange {
    a_min: f32,
    a_max: f32,
    b_min: f32,
    b_max: f32,
    clip: bool,
}

impl ScaleIntensityRange {
    /// Build and check that every bound is finite.
    pub fn new(a_min: f32, a_max: f32, b_min: f32, b_max: f32, clip: bool) -> Result<Self> {
        for (name, v) in [
            ("a_min", a_min),
            ("a_max", a_max),
            ("b_min", b_min),
            ("b_max", b_max),
        ] {
            if !v.is_finite() {
                return Err(ImagingError::config(
                    name,
                    format!("expected a finite number, got {v}"),
                ));
            }
        }
        Ok(Self {
            a_min,
            a_max,
            b_min,
            b_max,
            clip,
        })
    }

    /// Apply to a volume in place.
    pub fn apply_volume(&self, vol: &mut Volume) {
        let (a_min, b_min) = (self.a_min, self.b_min);
        let a_width = f64::from(self.a_max) - f64::from(self.a_min);
        if a_width == 0.0 {
            // MONAI warns and only shifts when the input range is empty.
            map_inplace(&mut vol.data, |x| x - a_min + b_min);
            return;
        }
        let a_width = a_width as f32;
        let b_width = (f64::from(self.b_max) - f64::from(self.b_min)) as f32;
        let b_max = self.b_max;
        if self.clip {
            // torch.clamp(min, max): max wins when the bounds cross.
            map_inplace(&mut vol.data, |x| {
                (((x - a_min) / a_width) * b_width + b_min)
                    .max(b_min)
                    .min(b_max)
            });
        } else {
            map_inplace(&mut vol.data, |x| ((x - a_min) / a_width) * b_width + b_min);
        }
    }

    /// Apply to the image of a sample.
    pub fn apply(&self, mut sample: Sample) -> Sample {
        self.apply_volume(&mut sample.image);
        sample
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn window_and_clip() {
        let data = Array4::from_shape_vec((1, 1, 1, 4), vec![-200.0, -175.0, 37.5, 300.0]).unwrap();
        let mut v = Volume::new(data, Volume::diag_affine([1.0; 3]));
        let mut c = v.clone();
        ScaleIntensityRange::new(-175.0, 250.0, 0.0, 1.0, false)
            .unwrap()
            .apply_volume(&mut v);
        ScaleIntensityRange::new(-175.0, 250.0, 0.0, 1.0, true)
            .unwrap()
            .apply_volume(&mut c);
        let want = [-25.0 / 425.0, 0.0, 0.5, 475.0 / 425.0];
        for (g, w) in v.data.iter().zip(want) {
            assert!((g - w).abs() < 1e-6);
        }
        assert_eq!(
            c.data.iter().copied().collect::<Vec<_>>(),
            vec![0.0, 0.0, 0.5, 1.0]
        );
        assert!(ScaleIntensityRange::new(f32::NAN, 1.0, 0.0, 1.0, true)
            .unwrap_err()
            .to_string()
            .contains("a_min"));
    }
}
