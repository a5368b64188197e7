//! The tch side of whole-volume inference: a UNETR as the window predictor of `imaging::inference` (the one path
//! shared with the server), tensor ↔ array conversion, and Dice (`imaging::metrics`). Used by fine-tuning
//! validation, `evaluate` and `predict`.

use imaging::inference::{InferenceError, WindowPredictor};
use imaging::metrics::{dice_labels, dice_multilabel, DiceOptions};
use models::Unetr;
use ndarray::{Array4, ArrayD, Axis, IxDyn};
use spec::OutputActivation;
use tch::{Device, Tensor};

use crate::error::{Result, TrainError};

/// ndarray → tensor (copies; any layout).
pub fn array_to_tensor(a: &ArrayD<f32>, device: Device) -> Result<Tensor> {
    let shape: Vec<i64> = a.shape().iter().map(|&s| s as i64).collect();
    let data: Vec<f32> = a.iter().copied().collect();
    Ok(Tensor::f_from_slice(&data)?
        .f_view(shape.as_slice())?
        .f_to_device(device)?)
}

/// tensor → ndarray (f32, on the CPU).
pub fn tensor_to_array(t: &Tensor) -> Result<ArrayD<f32>> {
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    let flat = t
        .f_to_device(Device::Cpu)?
        .f_to_kind(tch::Kind::Float)?
        .f_contiguous()?
        .f_view([-1])?;
    let data = Vec::<f32>::try_from(&flat)?;
    ArrayD::from_shape_vec(IxDyn(&shape), data)
        .map_err(|e| TrainError::Data(format!("tensor to array: {e}")))
}

/// A tch UNETR as the inference path's window predictor: windows `[B, C, roi…]` → logits `[B, K, roi…]`, run
/// without autograd on the model's device.
pub struct TchPredictor<'a> {
    net: &'a Unetr,
    device: Device,
}

impl<'a> TchPredictor<'a> {
    /// Predict with `net`, whose variables live on `device`.
    pub fn new(net: &'a Unetr, device: Device) -> Self {
        Self { net, device }
    }
}

impl WindowPredictor for TchPredictor<'_> {
    type Error = TrainError;
    fn predict(&mut self, windows: ArrayD<f32>) -> Result<ArrayD<f32>> {
        let _guard = tch::no_grad_guard();
        let x = array_to_tensor(&windows, self.device)?;
        tensor_to_array(&self.net.forward(&x, false)?)
    }
}

/// The trainer's error for a failure of the inference path; `input` names the volume in data errors.
pub fn inference_error(e: InferenceError<TrainError>, input: &str) -> TrainError {
    match e {
        InferenceError::Predictor(e) => e,
        InferenceError::Input(msg) => TrainError::Data(format!("{input}: {msg}")),
        InferenceError::Preprocess(e) => TrainError::Data(format!("{input}: preprocessing: {e}")),
        InferenceError::Imaging(e) => e.into(),
    }
}

/// Per-class Dice of a predicted label map against the target (MONAI `DiceMetric`, background excluded for softmax;
/// classes absent from the target are NaN).
pub fn dice(
    pred: &Array4<f32>,
    target: &Array4<f32>,
    activation: OutputActivation,
    k: usize,
) -> Result<Vec<f64>> {
    let opts = DiceOptions::default();
    Ok(match activation {
        OutputActivation::Softmax => {
            dice_labels(pred.view().into_dyn(), target.view().into_dyn(), k, &opts)?
        }
        OutputActivation::Sigmoid => {
            dice_multilabel(pred.view().into_dyn(), target.view().into_dyn(), 0.5, &opts)?
        }
    })
}

/// A single-channel display map of a label volume (sigmoid channels: later channels drawn over earlier ones).
pub fn display_labels(labels: &Array4<f32>) -> ndarray::Array3<u8> {
    let (c, x, y, z) = labels.dim();
    if c == 1 {
        return labels
            .index_axis(Axis(0), 0)
            .mapv(|v| v.clamp(0.0, 255.0) as u8);
    }
    let mut out = ndarray::Array3::zeros((x, y, z));
    for ch in 0..c {
        for (o, &v) in out.iter_mut().zip(labels.index_axis(Axis(0), ch).iter()) {
            if v > 0.0 {
                *o = (ch + 1) as u8;
            }
        }
    }
    out
}
