//! A pipeline of transforms built from `TransformSpec`s (YAML/JSON/model.json): training application with random
//! transforms and fan-out, and inference preprocessing with an [`Inverse`].

use std::path::Path;

use super::inverse::{Inverse, InverseStep};
use super::{
    ConvertToMultiChannelBasedOnBratsClasses, CropForeground, NormalizeIntensity, Orientation,
    RandCropByPosNegLabel, RandFlip, RandRotate90, RandScaleIntensity, RandShiftIntensity,
    RandSpatialCrop, ScaleIntensityRange, Spacing, SpatialPad,
};
use crate::{ImagingError, Result, Rng, Sample, Volume};
use spec::{Source, TransformSpec};

/// A built transform.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Orientation(Orientation),
    Spacing(Spacing),
    ScaleIntensityRange(ScaleIntensityRange),
    NormalizeIntensity(NormalizeIntensity),
    CropForeground(CropForeground),
    SpatialPad(SpatialPad),
    RandSpatialCrop(RandSpatialCrop),
    RandCropByPosNegLabel(RandCropByPosNegLabel),
    RandFlip(RandFlip),
    RandRotate90(RandRotate90),
    RandScaleIntensity(RandScaleIntensity),
    RandShiftIntensity(RandShiftIntensity),
    Brats(ConvertToMultiChannelBasedOnBratsClasses),
}

fn build(spec: &TransformSpec) -> Result<Step> {
    use TransformSpec as T;
    Ok(match spec {
        T::Orientation { axcodes } => Step::Orientation(Orientation::new(axcodes)?),
        T::Spacing { pixdim } => Step::Spacing(Spacing::new(pixdim)?),
        T::ScaleIntensityRange {
            a_min,
            a_max,
            b_min,
            b_max,
            clip,
        } => Step::ScaleIntensityRange(ScaleIntensityRange::new(
            *a_min, *a_max, *b_min, *b_max, *clip,
        )?),
        T::NormalizeIntensity {
            nonzero,
            channel_wise,
        } => Step::NormalizeIntensity(NormalizeIntensity::new(*nonzero, *channel_wise)?),
        T::CropForeground {
            source,
            select,
            margin,
            k_divisible,
        } => Step::CropForeground(CropForeground::new(*source, *select, margin, k_divisible)?),
        T::SpatialPad { spatial_size } => Step::SpatialPad(SpatialPad::new(spatial_size)?),
        T::RandSpatialCrop { roi_size } => Step::RandSpatialCrop(RandSpatialCrop::new(roi_size)?),
        T::RandCropByPosNegLabel {
            spatial_size,
            pos,
            neg,
            num_samples,
            image_threshold,
        } => Step::RandCropByPosNegLabel(RandCropByPosNegLabel::new(
            spatial_size,
            *pos,
            *neg,
            *num_samples,
            *image_threshold,
        )?),
        T::RandFlip { prob, spatial_axis } => Step::RandFlip(RandFlip::new(*prob, *spatial_axis)?),
        T::RandRotate90 {
            prob,
            max_k,
            spatial_axes,
        } => Step::RandRotate90(RandRotate90::new(*prob, *max_k, *spatial_axes)?),
        T::RandScaleIntensity { factors, prob } => {
            Step::RandScaleIntensity(RandScaleIntensity::new(*factors, *prob)?)
        }
        T::RandShiftIntensity { offsets, prob } => {
            Step::RandShiftIntensity(RandShiftIntensity::new(*offsets, *prob)?)
        }
        T::ConvertToMultiChannelBasedOnBratsClasses { et_label, .. } => {
            Step::Brats(ConvertToMultiChannelBasedOnBratsClasses::new(*et_label)?)
        }
    })
}

/// Prefix an error with the position and name of the transform it came from.
fn at(i: usize, spec: &TransformSpec) -> impl Fn(ImagingError) -> ImagingError + '_ {
    move |e| match e {
        ImagingError::Config { field, msg } => ImagingError::Config {
            field: format!("transforms[{i}].{field}"),
            msg: format!("{}: {msg}", spec.name()),
        },
        ImagingError::Shape(msg) => {
            ImagingError::Shape(format!("transforms[{i}] ({}): {msg}", spec.name()))
        }
        other => other,
    }
}

/// An ordered pipeline of transforms.
#[derive(Debug, Clone, PartialEq)]
pub struct Compose {
    specs: Vec<TransformSpec>,
    steps: Vec<Step>,
}

impl Compose {
    /// Build and validate every transform; errors name `transforms[i].field`.
    pub fn new(specs: &[TransformSpec]) -> Result<Self> {
        let steps = specs
            .iter()
            .enumerate()
            .map(|(i, s)| build(s).map_err(at(i, s)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            specs: specs.to_vec(),
            steps,
        })
    }

    /// Parse a YAML list of transforms (or a map with a `transforms` list).
    pub fn from_yaml(text: &str) -> Result<Self> {
        let root: yaml_serde::Value = yaml_serde::from_str(text)
            .map_err(|e| ImagingError::config("transforms", e.to_string()))?;
        let list = match &root {
            yaml_serde::Value::Mapping(m) => m
                .get("transforms")
                .cloned()
                .unwrap_or(yaml_serde::Value::Null),
            other => other.clone(),
        };
        let yaml_serde::Value::Sequence(items) = list else {
            return Err(ImagingError::config(
                "transforms",
                "expected a list of transforms",
            ));
        };
        let specs = items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let name = v
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("?")
                    .to_string();
                yaml_serde::from_value::<TransformSpec>(v).map_err(|e| {
                    ImagingError::config(format!("transforms[{i}]"), format!("{name}: {e}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(&specs)
    }

    /// Read [`Compose::from_yaml`] from a file; errors name the file.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ImagingError::io(path, e))?;
        Self::from_yaml(&text).map_err(|e| match e {
            ImagingError::Config { field, msg } => {
                ImagingError::format(path, format!("`{field}`: {msg}"))
            }
            other => other,
        })
    }

    /// The transform specs, in order.
    pub fn specs(&self) -> &[TransformSpec] {
        &self.specs
    }

    /// Number of transforms.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True when there is no transform.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Number of leading transforms that draw nothing from the RNG: their output can be cached per volume.
    pub fn deterministic_prefix(&self) -> usize {
        self.specs
            .iter()
            .position(TransformSpec::is_random)
            .unwrap_or(self.specs.len())
    }

    /// Split into the first `n` transforms and the rest (`n` clamped to the length).
    pub fn split_at(&self, n: usize) -> (Compose, Compose) {
        let n = n.min(self.steps.len());
        let head = Compose {
            specs: self.specs[..n].to_vec(),
            steps: self.steps[..n].to_vec(),
        };
        let tail = Compose {
            specs: self.specs[n..].to_vec(),
            steps: self.steps[n..].to_vec(),
        };
        (head, tail)
    }

    /// Apply every transform to a sample; crops with `num_samples` fan out, so several samples may come back.
    /// Random transforms draw from `rng` in pipeline order, sample by sample.
    pub fn apply(&self, sample: Sample, rng: &mut Rng) -> Result<Vec<Sample>> {
        sample.check()?;
        let mut samples = vec![sample];
        for (i, (step, spec)) in self.steps.iter().zip(&self.specs).enumerate() {
            let mut next = Vec::with_capacity(samples.len());
            for s in samples {
                apply_step(step, s, rng, &mut next).map_err(at(i, spec))?;
            }
            samples = next;
        }
        Ok(samples)
    }

    /// Inference preprocessing of an image alone: every deterministic transform in order (random ones are skipped,
    /// as are label-only ones: the BraTS conversion and `CropForeground` reading the label). Returns the
    /// preprocessed image and the [`Inverse`] that maps predictions back to the input grid.
    pub fn preprocess(&self, image: Volume) -> Result<(Volume, Inverse)> {
        self.preprocess_within(image, crate::io::DEFAULT_MAX_VOXELS)
    }

    /// [`Self::preprocess`] with no intermediate image of more than `max_values` values (a resampled grid is
    /// checked before it is allocated).
    pub fn preprocess_within(&self, image: Volume, max_values: u64) -> Result<(Volume, Inverse)> {
        Sample::image_only(image.clone()).check()?;
        let mut inv = Inverse::new(image.affine, image.spatial_shape());
        let mut vol = image;
        for (i, (step, spec)) in self.steps.iter().zip(&self.specs).enumerate() {
            let err = at(i, spec);
            match step {
                Step::Orientation(o) => {
                    let (s, op) = o.apply(Sample::image_only(vol)).map_err(&err)?;
                    vol = s.image;
                    inv.push(InverseStep::Orient(op), &vol);
                }
                Step::Spacing(sp) => {
                    let (affine, shape) = (vol.affine, vol.spatial_shape());
                    vol = sp
                        .apply_volume_within(&vol, false, max_values)
                        .map_err(&err)?;
                    inv.push(InverseStep::Resample { affine, shape }, &vol);
                }
                Step::ScaleIntensityRange(t) => t.apply_volume(&mut vol),
                Step::NormalizeIntensity(t) => t.apply_volume(&mut vol),
                Step::CropForeground(c) if c.source() == Source::Image => {
                    let (affine, shape) = (vol.affine, vol.spatial_shape());
                    let (s, b) = c.apply(Sample::image_only(vol)).map_err(&err)?;
                    vol = s.image;
                    if let Some(b) = b {
                        inv.push(
                            InverseStep::CropPad {
                                start: b.start,
                                affine,
                                shape,
                            },
                            &vol,
                        );
                    }
                }
                Step::SpatialPad(p) => {
                    let (affine, shape) = (vol.affine, vol.spatial_shape());
                    if let Some((start, _)) = p.plan(shape) {
                        vol = p.apply_volume(&vol);
                        inv.push(
                            InverseStep::CropPad {
                                start,
                                affine,
                                shape,
                            },
                            &vol,
                        );
                    }
                }
                Step::CropForeground(_)
                | Step::Brats(_)
                | Step::RandSpatialCrop(_)
                | Step::RandCropByPosNegLabel(_)
                | Step::RandFlip(_)
                | Step::RandRotate90(_)
                | Step::RandScaleIntensity(_)
                | Step::RandShiftIntensity(_) => {}
            }
        }
        Ok((vol, inv))
    }
}

fn apply_step(step: &Step, s: Sample, rng: &mut Rng, out: &mut Vec<Sample>) -> Result<()> {
    let one = match step {
        Step::Orientation(t) => t.apply(s)?.0,
        Step::Spacing(t) => t.apply(s)?,
        Step::ScaleIntensityRange(t) => t.apply(s),
        Step::NormalizeIntensity(t) => t.apply(s),
        Step::CropForeground(t) => t.apply(s)?.0,
        Step::SpatialPad(t) => t.apply(s)?,
        Step::RandSpatialCrop(t) => t.apply(s, rng)?,
        Step::RandCropByPosNegLabel(t) => {
            out.extend(t.apply(s, rng)?);
            return Ok(());
        }
        Step::RandFlip(t) => t.apply(s, rng)?,
        Step::RandRotate90(t) => t.apply(s, rng)?,
        Step::RandScaleIntensity(t) => t.apply(s, rng),
        Step::RandShiftIntensity(t) => t.apply(s, rng),
        Step::Brats(t) => t.apply(s)?,
    };
    out.push(one);
    Ok(())
}
