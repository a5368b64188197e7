//! Transform configs with MONAI's names and parameters: the data form of a preprocessing pipeline.
//!
//! A list of these is written into `model.json` by the trainer and read back by the server, so training and serving
//! run the same code on the same parameters. Deterministic transforms (`is_random() == false`) form the inference
//! preprocessing; random ones only run in training.

use serde::{Deserialize, Serialize};

/// Which part of a sample a transform applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The image.
    #[default]
    Image,
    /// The label map.
    Label,
}

/// Foreground selection for `CropForeground` (MONAI `select_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Select {
    /// value > threshold (MONAI default `is_positive` is threshold 0).
    Gt {
        /// Threshold.
        #[serde(default)]
        threshold: f32,
    },
    /// value != 0.
    Nonzero,
}

impl Default for Select {
    fn default() -> Self {
        Select::Gt { threshold: 0.0 }
    }
}

fn ras() -> String {
    "RAS".into()
}
fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}
fn yes() -> bool {
    true
}
fn one_usize() -> usize {
    1
}
fn three() -> usize {
    3
}
fn four() -> u32 {
    4
}
fn axes01() -> [usize; 2] {
    [0, 1]
}

/// One transform and its parameters (YAML/JSON: `{name: ScaleIntensityRange, a_min: -175, ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", deny_unknown_fields)]
pub enum TransformSpec {
    /// Reorient to the given axis codes (nibabel/MONAI `Orientation`).
    Orientation {
        /// Target axcodes, e.g. "RAS".
        #[serde(default = "ras")]
        axcodes: String,
    },
    /// Resample to voxel size `pixdim` (mm): trilinear for images, nearest for labels (MONAI `Spacing`).
    Spacing {
        /// Target spacing per spatial axis.
        pixdim: Vec<f64>,
    },
    /// Linear map [a_min, a_max] → [b_min, b_max], optionally clipped (MONAI `ScaleIntensityRange`).
    ScaleIntensityRange {
        /// Input low.
        a_min: f32,
        /// Input high.
        a_max: f32,
        /// Output low.
        b_min: f32,
        /// Output high.
        b_max: f32,
        /// Clip to [b_min, b_max].
        #[serde(default)]
        clip: bool,
    },
    /// Zero mean, unit std (MONAI `NormalizeIntensity`): over nonzero voxels only and/or per channel.
    NormalizeIntensity {
        /// Only nonzero voxels are normalised (zeros stay zero).
        #[serde(default)]
        nonzero: bool,
        /// Statistics per channel.
        #[serde(default)]
        channel_wise: bool,
    },
    /// Crop to the bounding box of the foreground of `source`, plus `margin` (MONAI `CropForeground`).
    CropForeground {
        /// Where the foreground is read.
        #[serde(default)]
        source: Source,
        /// Foreground selection.
        #[serde(default)]
        select: Select,
        /// Margin in voxels per spatial axis (one value = all axes).
        #[serde(default)]
        margin: Vec<usize>,
        /// Round the box size up to a multiple of k per axis (one value = all axes).
        #[serde(default)]
        k_divisible: Vec<usize>,
    },
    /// Pad symmetrically to at least `spatial_size` with zeros (MONAI `SpatialPad`, method symmetric).
    SpatialPad {
        /// Minimum size per spatial axis.
        spatial_size: Vec<usize>,
    },
    /// Random crop of `roi_size` (MONAI `RandSpatialCrop`, fixed size, random center).
    RandSpatialCrop {
        /// Crop size per spatial axis.
        roi_size: Vec<usize>,
    },
    /// `num_samples` crops centred on foreground with probability pos/(pos+neg) (MONAI `RandCropByPosNegLabel`).
    RandCropByPosNegLabel {
        /// Crop size per spatial axis.
        spatial_size: Vec<usize>,
        /// Positive weight.
        #[serde(default = "one")]
        pos: f64,
        /// Negative weight.
        #[serde(default = "one")]
        neg: f64,
        /// Crops per input sample.
        #[serde(default = "one_usize")]
        num_samples: usize,
        /// Image intensity threshold for valid centres (MONAI `image_threshold`, used with `image_key`).
        #[serde(default)]
        image_threshold: Option<f32>,
    },
    /// Flip along `spatial_axis` with probability `prob` (MONAI `RandFlip`).
    RandFlip {
        /// Probability.
        #[serde(default = "half")]
        prob: f64,
        /// Spatial axis (0-based).
        spatial_axis: usize,
    },
    /// Rotate by k·90° in the plane `spatial_axes`, k uniform in 0..=max_k (MONAI `RandRotate90`).
    RandRotate90 {
        /// Probability.
        #[serde(default = "half")]
        prob: f64,
        /// Maximum number of quarter turns.
        #[serde(default = "three")]
        max_k: usize,
        /// The rotation plane.
        #[serde(default = "axes01")]
        spatial_axes: [usize; 2],
    },
    /// Multiply intensities by (1 + f), f uniform in [-factors, factors] (MONAI `RandScaleIntensity`).
    RandScaleIntensity {
        /// Factor range.
        factors: f32,
        /// Probability.
        #[serde(default = "one")]
        prob: f64,
    },
    /// Add an offset uniform in [-offsets, offsets] (MONAI `RandShiftIntensity`).
    RandShiftIntensity {
        /// Offset range.
        offsets: f32,
        /// Probability.
        #[serde(default = "one")]
        prob: f64,
    },
    /// BraTS labels {1: NCR, 2: ED, 4 (or 3): ET} → channels TC, WT, ET (MONAI `ConvertToMultiChannelBasedOnBratsClasses`).
    ConvertToMultiChannelBasedOnBratsClasses {
        /// Unused placeholder kept so older configs still parse.
        #[serde(default = "yes", skip_serializing)]
        enabled: bool,
        /// Label of the enhancing tumour: 4 (BraTS 2018–2022, MONAI's default) or 3 (BraTS 2023).
        #[serde(default = "four")]
        et_label: u32,
    },
}

impl TransformSpec {
    /// True for transforms that draw from the RNG (training-only augmentation and sampling).
    pub fn is_random(&self) -> bool {
        matches!(
            self,
            TransformSpec::RandSpatialCrop { .. }
                | TransformSpec::RandCropByPosNegLabel { .. }
                | TransformSpec::RandFlip { .. }
                | TransformSpec::RandRotate90 { .. }
                | TransformSpec::RandScaleIntensity { .. }
                | TransformSpec::RandShiftIntensity { .. }
        )
    }

    /// MONAI name of the transform.
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("name").and_then(|n| n.as_str().map(str::to_string)))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_with_monai_names_and_defaults() {
        let y = "- name: Orientation\n- name: Spacing\n  pixdim: [1.5, 1.5, 2.0]\n- name: ScaleIntensityRange\n  a_min: -175\n  a_max: 250\n  b_min: 0\n  b_max: 1\n  clip: true\n- name: CropForeground\n- name: RandFlip\n  spatial_axis: 2\n";
        let t: Vec<TransformSpec> = yaml_serde::from_str(y).unwrap();
        assert_eq!(
            t[0],
            TransformSpec::Orientation {
                axcodes: "RAS".into()
            }
        );
        assert_eq!(
            t[3],
            TransformSpec::CropForeground {
                source: Source::Image,
                select: Select::Gt { threshold: 0.0 },
                margin: vec![],
                k_divisible: vec![]
            }
        );
        assert!(t[4].is_random() && !t[2].is_random());
        assert_eq!(t[1].name(), "Spacing");
        let bad = "- name: Spacing\n  pixdim: [1, 1, 1]\n  mode: bilinear\n";
        let e = yaml_serde::from_str::<Vec<TransformSpec>>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode"), "{e}");
    }
}
