//! The one whole-volume inference path, shared by fine-tuning validation, `medmae-train evaluate`/`predict` (tch)
//! and `medmae-serve` (ONNX Runtime, tract):
//! preprocess per the model's spec ([`Compose::preprocess`]) → 3-D sliding window, or a 2-D window over every Z slice
//! ([`crate::sliding`]) → activation (softmax / sigmoid) → argmax / per-channel threshold → restore onto the input grid
//! ([`crate::transforms::Inverse`]), with optional probabilities and per-label voxel counts and volumes.
//!
//! The engine is abstracted as a [`WindowPredictor`]: a batch of windows `[B, C, roi…]` in, logits `[B, K, roi…]` out.
//! Everything else — window placement, blending, activation, thresholds, restoration — is decided here, once.

use ndarray::{Array4, ArrayD, ArrayView4, Axis};
use spec::{InferenceSpec, ModelCard, ModelConfig, OnnxMetadata, OutputActivation, TransformSpec};

use crate::error::ImagingError;
use crate::sliding::{sliding_window_inference, SlidingWindowConfig};
use crate::transforms::{linalg, Compose};
use crate::Volume;

/// A model as the inference path sees it: a batch of windows `[B, C, roi…]` in, logits `[B, K, roi…]` out.
pub trait WindowPredictor {
    /// The engine's error, passed through as [`InferenceError::Predictor`].
    type Error;
    /// Run the model on one batch of windows.
    fn predict(&mut self, windows: ArrayD<f32>) -> Result<ArrayD<f32>, Self::Error>;
}

impl<F, E> WindowPredictor for F
where
    F: FnMut(ArrayD<f32>) -> Result<ArrayD<f32>, E>,
{
    type Error = E;
    fn predict(&mut self, windows: ArrayD<f32>) -> Result<ArrayD<f32>, E> {
        self(windows)
    }
}

/// Why a volume could not be segmented, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError<E> {
    /// The volume does not fit the model (channels, shape).
    #[error("{0}")]
    Input(String),
    /// The model's preprocessing could not be applied to this volume.
    #[error("preprocessing the volume: {0}")]
    Preprocess(#[source] ImagingError),
    /// The predictor (the inference engine) failed.
    #[error("{0}")]
    Predictor(E),
    /// Tiling, blending or restoring failed (e.g. the predictor returned logits of the wrong shape).
    #[error("{0}")]
    Imaging(#[from] ImagingError),
}

/// Per-request choices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentOptions {
    /// Override of the model's window overlap.
    pub overlap: Option<f64>,
    /// Also compute per-class probabilities on the input grid.
    pub probabilities: bool,
    /// At most this many values in any array of the path (the preprocessed image, the logits on its grid), checked
    /// before each is allocated; `None` = [`crate::io::DEFAULT_MAX_VOXELS`]. A server passes its own voxel limit.
    pub max_values: Option<u64>,
}

/// Voxel count and volume of one label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelStat {
    /// Label value (softmax models) or channel index (sigmoid models).
    pub value: u32,
    /// Label name.
    pub name: String,
    /// Voxels on the input grid.
    pub voxels: u64,
    /// Millilitres.
    pub volume_ml: f64,
}

/// A segmentation on the input's grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Label map: one channel of label values (softmax), or one binary channel per class (sigmoid).
    pub mask: Volume,
    /// Class probabilities, one channel per class, if asked for.
    pub probabilities: Option<Volume>,
    /// Statistics per label (background included).
    pub labels: Vec<LabelStat>,
    /// Model windows run.
    pub windows: usize,
}

/// Everything the inference path needs to know about a segmentation model, checked once when it is built.
#[derive(Debug, Clone)]
pub struct Segmenter {
    spatial_dims: usize,
    in_channels: usize,
    out_channels: usize,
    labels: Vec<String>,
    compose: Compose,
    inference: InferenceSpec,
    /// How errors about the input name the model (`model "liver"`; default `the model`).
    name: Option<String>,
}

impl Segmenter {
    /// A segmenter for a model with this geometry, preprocessing and inference spec (all validated here).
    pub fn new(
        spatial_dims: usize,
        in_channels: usize,
        out_channels: usize,
        labels: Vec<String>,
        preprocessing: &[TransformSpec],
        inference: InferenceSpec,
    ) -> Result<Self, ImagingError> {
        let to_config = |e: spec::SpecError| ImagingError::config(e.field, e.msg);
        inference.validate("inference").map_err(to_config)?;
        if inference.roi_size.len() != spatial_dims {
            return Err(ImagingError::config(
                "inference.roi_size",
                format!(
                    "{:?} does not have one size per spatial axis of a {spatial_dims}-D model",
                    inference.roi_size
                ),
            ));
        }
        if in_channels == 0 || out_channels == 0 {
            return Err(ImagingError::config(
                "in_channels/out_channels",
                "must be at least 1",
            ));
        }
        if !labels.is_empty() && labels.len() != out_channels {
            return Err(ImagingError::config(
                "labels",
                format!("{} names for {out_channels} output channels", labels.len()),
            ));
        }
        if let Some(t) = preprocessing.iter().find(|t| t.is_random()) {
            return Err(ImagingError::config(
                "preprocessing",
                format!("{} is a random transform", t.name()),
            ));
        }
        Ok(Self {
            spatial_dims,
            in_channels,
            out_channels,
            labels,
            compose: Compose::new(preprocessing)?,
            inference,
            name: None,
        })
    }

    /// The same segmenter, naming the model `name` in errors about an input it cannot take.
    pub fn named(self, name: &str) -> Self {
        Self {
            name: Some(name.to_string()),
            ..self
        }
    }

    /// The segmenter of a UNETR checkpoint's `model.json`.
    pub fn from_card(card: &ModelCard) -> Result<Self, ImagingError> {
        let ModelConfig::Unetr(u) = &card.model else {
            return Err(ImagingError::config(
                "model.kind",
                "only UNETR models segment volumes",
            ));
        };
        let inference = card.inference.clone().ok_or_else(|| {
            ImagingError::config("inference", "a segmentation model needs an inference spec")
        })?;
        Self::new(
            u.encoder.spatial_dims,
            u.encoder.in_channels,
            u.out_channels,
            card.labels.clone(),
            &card.preprocessing,
            inference,
        )
    }

    /// The segmenter of an ONNX export's metadata (a `unetr` export: the one kind with an inference spec).
    pub fn from_metadata(meta: &OnnxMetadata) -> Result<Self, ImagingError> {
        let inference = meta.inference.clone().ok_or_else(|| {
            ImagingError::config(
                spec::onnx::keys::INFERENCE,
                format!("a {} export does not segment volumes", meta.kind),
            )
        })?;
        Self::new(
            meta.spatial_dims,
            meta.in_channels,
            meta.out_channels,
            meta.labels.clone(),
            &meta.preprocessing,
            inference,
        )
    }

    /// The model's sliding-window defaults.
    pub fn inference(&self) -> &InferenceSpec {
        &self.inference
    }

    /// 2 (slice by slice) or 3.
    pub fn spatial_dims(&self) -> usize {
        self.spatial_dims
    }

    /// Channels the model takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Channels of the logits.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// The name of output channel `i` (`label_<i>` when the model names none).
    pub fn label_name(&self, i: usize) -> String {
        self.labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("label_{i}"))
    }

    /// The sliding-window parameters of the model's spec, with the window overlap optionally overridden.
    pub fn window_config(&self, overlap: Option<f64>) -> Result<SlidingWindowConfig, ImagingError> {
        let overlap = overlap.unwrap_or(self.inference.overlap);
        if !(0.0..1.0).contains(&overlap) {
            return Err(ImagingError::config(
                "overlap",
                format!("must be in [0, 1), got {overlap}"),
            ));
        }
        let mut cfg = SlidingWindowConfig::new(self.inference.roi_size.clone());
        cfg.overlap = overlap;
        cfg.sw_batch_size = self.inference.sw_batch_size;
        cfg.mode = self.inference.blend;
        Ok(cfg)
    }

    fn check_input<E>(&self, shape: &[usize]) -> Result<(), InferenceError<E>> {
        let channels = shape.first().copied().unwrap_or(0);
        if channels != self.in_channels {
            let model = self
                .name
                .as_ref()
                .map_or_else(|| "the model".to_string(), |n| format!("model {n:?}"));
            return Err(InferenceError::Input(format!(
                "the volume has {channels} channel{}; {model} takes {}",
                if channels == 1 { "" } else { "s" },
                self.in_channels
            )));
        }
        if self.spatial_dims == 3 && shape[1..].contains(&1) {
            return Err(InferenceError::Input(format!(
                "the model is 3-D but the volume has shape {:?}",
                &shape[1..]
            )));
        }
        Ok(())
    }

    /// Logits `[K, X, Y, Z]` of a preprocessed volume `[C, X, Y, Z]` and the number of windows run: 3-D models
    /// slide a 3-D window, 2-D models a 2-D window over every Z slice.
    pub fn logits<P: WindowPredictor>(
        &self,
        image: ArrayView4<'_, f32>,
        overlap: Option<f64>,
        predictor: &mut P,
    ) -> Result<(Array4<f32>, usize), InferenceError<P::Error>> {
        self.check_input(image.shape())?;
        // The spec was validated when `self` was built: only a caller's overlap override can fail here.
        let cfg = self
            .window_config(overlap)
            .map_err(|e| InferenceError::Input(e.to_string()))?;
        let mut windows = 0usize;
        let mut run = |batch: ArrayD<f32>| {
            windows += batch.shape().first().copied().unwrap_or(0);
            predictor.predict(batch).map_err(InferenceError::Predictor)
        };
        let logits = if self.spatial_dims == 3 {
            sliding_window_inference(image.into_dyn(), &cfg, &mut run)?
        } else {
            let slices = image
                .axis_iter(Axis(3))
                .map(|plane| sliding_window_inference(plane.into_dyn(), &cfg, &mut run))
                .collect::<Result<Vec<_>, _>>()?;
            let views: Vec<_> = slices.iter().map(|s| s.view()).collect();
            ndarray::stack(Axis(3), &views)
                .map_err(|e| ImagingError::Shape(format!("stacking slice logits: {e}")))?
        };
        let logits: Array4<f32> = logits
            .into_dimensionality()
            .map_err(|e| ImagingError::Shape(format!("volume logits: {e}")))?;
        if logits.shape()[0] != self.out_channels {
            return Err(ImagingError::Shape(format!(
                "the model returned {} channels, its spec says {}",
                logits.shape()[0],
                self.out_channels
            ))
            .into());
        }
        Ok((logits, windows))
    }

    /// The label map of a preprocessed volume, on its own (preprocessed) grid: what validation scores.
    pub fn label_preprocessed<P: WindowPredictor>(
        &self,
        image: ArrayView4<'_, f32>,
        predictor: &mut P,
    ) -> Result<Array4<f32>, InferenceError<P::Error>> {
        let (logits, _) = self.logits(image, None, predictor)?;
        Ok(label_map(&logits, self.inference.activation))
    }

    /// Segment a volume as loaded from its file: preprocess, infer, and map the mask (and probabilities) back onto
    /// the volume's own grid and orientation.
    pub fn segment<P: WindowPredictor>(
        &self,
        image: Volume,
        opts: &SegmentOptions,
        predictor: &mut P,
    ) -> Result<Segmentation, InferenceError<P::Error>> {
        self.check_input(image.data.shape())?;
        let max_values = opts.max_values.unwrap_or(crate::io::DEFAULT_MAX_VOXELS);
        let (pre, inverse) = self
            .compose
            .preprocess_within(image, max_values)
            .map_err(InferenceError::Preprocess)?;
        let [x, y, z] = pre.spatial_shape();
        crate::transforms::check_grid_values(
            "the logits on the preprocessed grid",
            self.out_channels,
            [x, y, z],
            max_values,
        )?;
        let (logits, windows) = self.logits(pre.data.view(), opts.overlap, predictor)?;
        let activation = self.inference.activation;
        let mask =
            inverse.restore_label(&Volume::new(label_map(&logits, activation), pre.affine))?;
        let probabilities = opts
            .probabilities
            .then(|| {
                let p = probabilities(&logits, activation);
                inverse.restore_probabilities(&Volume::new(p, pre.affine))
            })
            .transpose()?;
        let labels = self.statistics(&mask);
        Ok(Segmentation {
            mask,
            probabilities,
            labels,
            windows,
        })
    }

    /// Voxels and millilitres per label of a mask on its grid (label values for softmax models, channels > 0.5
    /// for sigmoid models).
    pub fn statistics(&self, mask: &Volume) -> Vec<LabelStat> {
        let k = self.out_channels;
        let ml = voxel_ml(&mask.affine);
        let mut counts = vec![0u64; k];
        match self.inference.activation {
            OutputActivation::Softmax => {
                for &v in mask.data.iter() {
                    if let Some(c) = counts.get_mut(v as usize) {
                        *c += 1;
                    }
                }
            }
            OutputActivation::Sigmoid => {
                for (c, ch) in counts.iter_mut().zip(mask.data.axis_iter(Axis(0))) {
                    *c = ch.iter().filter(|&&v| v > 0.5).count() as u64;
                }
            }
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, n)| LabelStat {
                value: i as u32,
                name: self.label_name(i),
                voxels: n,
                volume_ml: n as f64 * ml,
            })
            .collect()
    }
}

/// Logistic sigmoid in f32, as both the label map and the probabilities use it.
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Per-voxel probabilities of logits `[K, …]`: softmax over the channel axis, or a sigmoid per channel.
pub fn probabilities(logits: &Array4<f32>, activation: OutputActivation) -> Array4<f32> {
    match activation {
        OutputActivation::Softmax => {
            let mut p = logits.clone();
            for mut lane in p.lanes_mut(Axis(0)) {
                let max = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                lane.mapv_inplace(|v| (v - max).exp());
                let sum: f32 = lane.sum();
                lane.mapv_inplace(|v| v / sum);
            }
            p
        }
        OutputActivation::Sigmoid => logits.mapv(sigmoid),
    }
}

/// The label map of logits `[K, …]`: softmax → `[1, …]` class ids by argmax (the first maximum wins, like
/// `torch.argmax`); sigmoid → `[K, …]` of 0/1 where the channel's probability exceeds 0.5.
pub fn label_map(logits: &Array4<f32>, activation: OutputActivation) -> Array4<f32> {
    match activation {
        OutputActivation::Softmax => {
            let s = logits.shape();
            let mut m = Array4::<f32>::zeros((1, s[1], s[2], s[3]));
            for (out, lane) in m.iter_mut().zip(logits.lanes(Axis(0))) {
                let mut best = 0usize;
                for (i, &v) in lane.iter().enumerate() {
                    if v > lane[best] {
                        best = i;
                    }
                }
                *out = best as f32;
            }
            m
        }
        OutputActivation::Sigmoid => logits.mapv(|v| f32::from(sigmoid(v) > 0.5)),
    }
}

/// Volume of one voxel of an affine's grid in millilitres (|det| of its 3×3 part, mm³ → ml).
pub fn voxel_ml(affine: &[[f64; 4]; 4]) -> f64 {
    linalg::det3(&linalg::linear_part(affine)).abs() / 1000.0
}

#[cfg(test)]
#[path = "inference_tests.rs"]
mod tests;
