//! A training/inference sample (image plus optional label map on the same voxel grid) and the RNG that random
//! transforms draw from.

use crate::{ImagingError, Result, Volume};

/// The random number generator of all random transforms: seeded explicitly, identical streams on every platform.
pub type Rng = rand_chacha::ChaCha8Rng;

/// An image and, for training, its label map on the same voxel grid.
///
/// The label holds integer class values stored as `f32` (one channel), or several binary channels after a
/// multi-channel conversion such as `ConvertToMultiChannelBasedOnBratsClasses`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The image, `(C, X, Y, Z)`.
    pub image: Volume,
    /// The label map on the image's grid.
    pub label: Option<Volume>,
}

impl Sample {
    /// A sample without label.
    pub fn image_only(image: Volume) -> Self {
        Self { image, label: None }
    }

    /// A sample with a label map; the label must have the image's spatial shape and at least one channel.
    pub fn new(image: Volume, label: Option<Volume>) -> Result<Self> {
        let s = Self { image, label };
        s.check()?;
        Ok(s)
    }

    /// Check that the label (if any) lies on the image's voxel grid.
    pub fn check(&self) -> Result<()> {
        if let Some(label) = &self.label {
            if label.spatial_shape() != self.image.spatial_shape() {
                return Err(ImagingError::Shape(format!(
                    "label spatial shape {:?} differs from image spatial shape {:?}",
                    label.spatial_shape(),
                    self.image.spatial_shape()
                )));
            }
            if label.channels() == 0 {
                return Err(ImagingError::Shape("label has no channel".into()));
            }
        }
        if self.image.channels() == 0 {
            return Err(ImagingError::Shape("image has no channel".into()));
        }
        Ok(())
    }

    /// Apply a spatial operation to the image and (if present) the label.
    pub(crate) fn map_both(
        self,
        mut f: impl FnMut(&Volume, bool) -> Result<Volume>,
    ) -> Result<Self> {
        let image = f(&self.image, false)?;
        let label = match &self.label {
            Some(l) => Some(f(l, true)?),
            None => None,
        };
        Ok(Self { image, label })
    }

    /// [`Self::map_both`] for operations that consume their volume (in-place kernels).
    pub(crate) fn map_both_owned(
        self,
        mut f: impl FnMut(Volume, bool) -> Result<Volume>,
    ) -> Result<Self> {
        let image = f(self.image, false)?;
        let label = match self.label {
            Some(l) => Some(f(l, true)?),
            None => None,
        };
        Ok(Self { image, label })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    #[test]
    fn label_must_share_the_grid() {
        let a = Volume::diag_affine([1.0; 3]);
        let img = Volume::new(Array4::zeros((2, 3, 4, 5)), a);
        assert!(Sample::new(
            img.clone(),
            Some(Volume::new(Array4::zeros((1, 3, 4, 5)), a))
        )
        .is_ok());
        let e = Sample::new(
            img.clone(),
            Some(Volume::new(Array4::zeros((1, 3, 4, 6)), a)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[3, 4, 6]"), "{e}");
        assert!(Sample::new(img, Some(Volume::new(Array4::zeros((0, 3, 4, 5)), a))).is_err());
    }
}
