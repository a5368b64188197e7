//! The inverse of inference preprocessing: maps a prediction on the preprocessed grid back onto the input image's
//! grid and orientation (undo pad/crop by cropping/zero-padding, undo Spacing by resampling to the original shape
//! and affine, undo Orientation by the inverse flip/transpose).

use ndarray::Array4;

use super::geometry::crop_pad;
use super::linalg::Mat4;
use super::resample::{resample_to, Interp};
use crate::orient::OrientOp;
use crate::{ImagingError, Result, Volume};

/// One recorded spatial step, with the grid it started from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InverseStep {
    /// A reorientation.
    Orient(OrientOp),
    /// A resampling from the grid (`affine`, `shape`).
    Resample { affine: Mat4, shape: [usize; 3] },
    /// A crop/pad by the box starting at `start` of the grid (`affine`, `shape`).
    CropPad {
        start: [i64; 3],
        affine: Mat4,
        shape: [usize; 3],
    },
}

/// How to map a volume on the preprocessed grid back to the original input grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Inverse {
    input_affine: Mat4,
    input_shape: [usize; 3],
    output_affine: Mat4,
    output_shape: [usize; 3],
    steps: Vec<InverseStep>,
}

impl Inverse {
    /// Start recording for an input grid.
    pub(crate) fn new(affine: Mat4, shape: [usize; 3]) -> Self {
        Self {
            input_affine: affine,
            input_shape: shape,
            output_affine: affine,
            output_shape: shape,
            steps: Vec::new(),
        }
    }

    /// Record a step and the grid it produced.
    pub(crate) fn push(&mut self, step: InverseStep, out: &Volume) {
        self.steps.push(step);
        self.output_affine = out.affine;
        self.output_shape = out.spatial_shape();
    }

    /// The original input grid's affine.
    pub fn input_affine(&self) -> Mat4 {
        self.input_affine
    }
    /// The original input grid's spatial shape.
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }
    /// The preprocessed grid's affine.
    pub fn output_affine(&self) -> Mat4 {
        self.output_affine
    }
    /// The preprocessed grid's spatial shape.
    pub fn output_shape(&self) -> [usize; 3] {
        self.output_shape
    }

    /// Map a label map (integer classes, any number of channels) on the preprocessed grid back to the input grid:
    /// nearest-neighbour resampling, zero outside the preprocessed region.
    pub fn restore_label(&self, label: &Volume) -> Result<Volume> {
        self.restore(label, Interp::Nearest)
    }

    /// Map per-class probabilities (or any continuous maps) back to the input grid: trilinear resampling, zero
    /// outside the preprocessed region.
    pub fn restore_probabilities(&self, probs: &Volume) -> Result<Volume> {
        self.restore(probs, Interp::Linear)
    }

    /// Map raw channel data `(C, X, Y, Z)` on the preprocessed grid back (see [`Inverse::restore_label`]).
    pub fn restore_array(&self, data: Array4<f32>, interp: Interp) -> Result<Volume> {
        self.restore(&Volume::new(data, self.output_affine), interp)
    }

    fn restore(&self, vol: &Volume, interp: Interp) -> Result<Volume> {
        if vol.spatial_shape() != self.output_shape {
            return Err(ImagingError::Shape(format!(
                "restore: volume has spatial shape {:?}, the preprocessed grid is {:?}",
                vol.spatial_shape(),
                self.output_shape
            )));
        }
        // The caller's affine is not trusted: the data lies on the preprocessed grid by contract.
        let mut v = Volume::new(vol.data.clone(), self.output_affine);
        for step in self.steps.iter().rev() {
            v = match step {
                InverseStep::Orient(op) => op.invert(&v)?,
                InverseStep::Resample { affine, shape } => {
                    let mut r = resample_to(&v, affine, *shape, interp)?;
                    r.affine = *affine;
                    r
                }
                InverseStep::CropPad {
                    start,
                    affine,
                    shape,
                } => {
                    let mut r = crop_pad(&v, start.map(|s| -s), *shape);
                    r.affine = *affine;
                    r
                }
            };
        }
        v.affine = self.input_affine;
        Ok(v)
    }
}
