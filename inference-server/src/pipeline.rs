//! Volume → segmentation on the server: the model's [`Segmenter`] (`imaging::inference`, the one whole-volume path
//! the trainer's `predict`/`evaluate` run too) driven by the model's backend as its window predictor, with the time
//! of every batch recorded in the metrics.

use std::time::Instant;

use imaging::inference::{InferenceError, WindowPredictor};
use imaging::{ImagingError, Volume};
use ndarray::ArrayD;

use crate::error::ServeError;
use crate::model::Model;
use crate::ops::Metrics;
use crate::state::Cancel;

pub use imaging::inference::{LabelStat, SegmentOptions, Segmentation, Segmenter};

impl From<ImagingError> for ServeError {
    fn from(e: ImagingError) -> Self {
        ServeError::Internal(format!("imaging: {e}"))
    }
}

/// A model's backend (ORT or tract) as the inference path's window predictor.
pub struct BackendPredictor<'a> {
    model: &'a Model,
    metrics: Option<&'a Metrics>,
    cancel: Option<&'a Cancel>,
}

impl<'a> BackendPredictor<'a> {
    /// Run `model`'s backend, recording each call's duration in `metrics` when given; stop with
    /// [`ServeError::Abandoned`] before a batch once `cancel` is set.
    pub fn new(model: &'a Model, metrics: Option<&'a Metrics>, cancel: Option<&'a Cancel>) -> Self {
        Self {
            model,
            metrics,
            cancel,
        }
    }
}

impl WindowPredictor for BackendPredictor<'_> {
    type Error = ServeError;
    fn predict(&mut self, windows: ArrayD<f32>) -> Result<ArrayD<f32>, ServeError> {
        if self.cancel.is_some_and(Cancel::is_set) {
            return Err(ServeError::Abandoned);
        }
        let start = Instant::now();
        let out = self.model.backend.run(windows);
        if let Some(m) = self.metrics {
            m.record_inference(
                &self.model.info.name,
                self.model.backend.name(),
                start.elapsed().as_secs_f64(),
            );
        }
        out
    }
}

/// The server's error for a failure of the inference path: the client's volume or options are invalid arguments,
/// engine errors pass through, anything else is internal.
fn serve_error(e: InferenceError<ServeError>) -> ServeError {
    match e {
        InferenceError::Input(msg) => ServeError::invalid(msg),
        // A limit of the server (`max_voxels`), applied to the preprocessed grid and the logits before allocating.
        InferenceError::Preprocess(ImagingError::Limit(msg))
        | InferenceError::Imaging(ImagingError::Limit(msg)) => ServeError::TooLarge(format!(
            "preprocessing the volume for the model: {msg} (the server's max_voxels)"
        )),
        InferenceError::Preprocess(e) => {
            ServeError::invalid(format!("preprocessing the volume: {e}"))
        }
        InferenceError::Predictor(e) => e,
        InferenceError::Imaging(e) => e.into(),
    }
}

/// Segment `image` (as loaded from the client's upload) with `model`; stops between window batches once `cancel`
/// is set.
pub fn segment_volume(
    model: &Model,
    image: Volume,
    opts: &SegmentOptions,
    metrics: Option<&Metrics>,
    cancel: Option<&Cancel>,
) -> Result<Segmentation, ServeError> {
    let segmenter = model.segmenter.as_ref().ok_or_else(|| {
        ServeError::invalid(format!(
            "model {:?} is not a segmentation model",
            model.info.name
        ))
    })?;
    segmenter
        .segment(
            image,
            opts,
            &mut BackendPredictor::new(model, metrics, cancel),
        )
        .map_err(serve_error)
}
