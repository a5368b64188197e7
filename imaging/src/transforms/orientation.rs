//! MONAI `Orientation`: reorient image and label to the target axis codes (see [`crate::orient`]).

use crate::orient::{parse_axcodes, plan, OrientOp};
use crate::{Result, Sample};

/// Reorientation to fixed axis codes.
#[derive(Debug, Clone, PartialEq)]
pub struct Orientation {
    axcodes: String,
}

impl Orientation {
    /// Build; `axcodes` like "RAS".
    pub fn new(axcodes: &str) -> Result<Self> {
        parse_axcodes(axcodes)?;
        Ok(Self {
            axcodes: axcodes.to_string(),
        })
    }

    /// Reorient image and label (planned from the image's affine); returns the operation for inversion.
    pub fn apply(&self, sample: Sample) -> Result<(Sample, OrientOp)> {
        let op = plan(
            &sample.image.affine,
            sample.image.spatial_shape(),
            &self.axcodes,
        )?;
        let out = sample.map_both_owned(|v, _| op.apply_owned(v))?;
        Ok((out, op))
    }
}
