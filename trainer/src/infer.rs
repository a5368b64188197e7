//! Whole-volume inference with a tch model: sliding windows (`imaging::sliding`), logits → label maps, and Dice
//! (`imaging::metrics`). Used by fine-tuning validation, `evaluate` and `predict`.

use imaging::metrics::{dice_labels, dice_multilabel, DiceOptions};
use imaging::sliding::{sliding_window_inference, SlidingWindowConfig};
use ndarray::{Array4, ArrayD, Axis, IxDyn};
use spec::{InferenceSpec, OutputActivation};
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

/// The sliding-window config of an inference spec.
pub fn window_config(inf: &InferenceSpec) -> SlidingWindowConfig {
    let mut c = SlidingWindowConfig::new(inf.roi_size.clone());
    c.overlap = inf.overlap;
    c.sw_batch_size = inf.sw_batch_size;
    c.mode = inf.blend;
    c
}

/// Logits `[K, X, Y, Z]` of a whole volume `[C, X, Y, Z]`: 3-D models slide a 3-D window; 2-D models slide a 2-D
/// window over every Z slice. `forward` maps `[B, C, roi…]` to `[B, K, roi…]` logits.
pub fn volume_logits(
    image: &Array4<f32>,
    spatial_dims: usize,
    cfg: &SlidingWindowConfig,
    device: Device,
    forward: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<Array4<f32>> {
    let _guard = tch::no_grad_guard();
    let predictor = |x: ArrayD<f32>| -> Result<ArrayD<f32>> {
        tensor_to_array(&forward(&array_to_tensor(&x, device)?)?)
    };
    let logits = if spatial_dims == 3 {
        sliding_window_inference(image.view().into_dyn(), cfg, predictor)?
    } else {
        let mut slices = Vec::with_capacity(image.shape()[3]);
        for z in 0..image.shape()[3] {
            let plane = image.index_axis(Axis(3), z).into_dyn();
            slices.push(sliding_window_inference(plane, cfg, predictor)?);
        }
        let views: Vec<_> = slices.iter().map(|s| s.view()).collect();
        ndarray::stack(Axis(3), &views)
            .map_err(|e| TrainError::Data(format!("stacking slice logits: {e}")))?
    };
    logits
        .into_dimensionality()
        .map_err(|e| TrainError::Data(format!("volume logits: {e}")))
}

/// Label map from logits `[K, …]`: softmax → argmax `[1, …]` (class ids); sigmoid → `[K, …]` of `logit > 0`
/// (probability > 0.5).
pub fn label_map(logits: &Array4<f32>, activation: OutputActivation) -> Array4<f32> {
    match activation {
        OutputActivation::Softmax => {
            let (_, x, y, z) = logits.dim();
            let mut out = Array4::zeros((1, x, y, z));
            for ((_, i, j, k), v) in out.indexed_iter_mut() {
                let lane = logits.slice(ndarray::s![.., i, j, k]);
                let mut best = 0usize;
                for (c, &l) in lane.iter().enumerate() {
                    if l > lane[best] {
                        best = c;
                    }
                }
                *v = best as f32;
            }
            out
        }
        OutputActivation::Sigmoid => logits.mapv(|l| f32::from(l > 0.0)),
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
