//! Volume → segmentation, the same code for the server and for offline use: the model's embedded preprocessing
//! (`imaging::transforms::Compose`), sliding-window inference over the backend (`imaging::sliding`), argmax or
//! sigmoid, then the mask mapped back onto the input's own grid and orientation, with per-label statistics.

use std::time::Instant;

use imaging::sliding::{sliding_window_inference, SlidingWindowConfig};
use imaging::transforms::Compose;
use imaging::{ImagingError, Volume};
use ndarray::{Array4, ArrayD, Axis};
use spec::OutputActivation;

use crate::error::ServeError;
use crate::model::Model;
use crate::ops::Metrics;

/// Per-request choices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentOptions {
    /// Override of the model's window overlap.
    pub overlap: Option<f64>,
    /// Also compute per-class probabilities on the input grid.
    pub probabilities: bool,
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

/// The result on the input's grid.
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

fn imaging_err(e: ImagingError) -> ServeError {
    ServeError::Internal(format!("imaging: {e}"))
}

impl From<ImagingError> for ServeError {
    fn from(e: ImagingError) -> Self {
        imaging_err(e)
    }
}

/// Sliding-window settings from the model's inference spec.
pub fn window_config(
    model: &Model,
    opts: &SegmentOptions,
) -> Result<SlidingWindowConfig, ServeError> {
    let inf = model.info.inference.as_ref().ok_or_else(|| {
        ServeError::invalid(format!(
            "model {:?} is not a segmentation model",
            model.info.name
        ))
    })?;
    let overlap = opts.overlap.unwrap_or(inf.overlap);
    if !(0.0..1.0).contains(&overlap) {
        return Err(ServeError::invalid(format!(
            "overlap must be in [0, 1), got {overlap}"
        )));
    }
    let mut cfg = SlidingWindowConfig::new(inf.roi_size.clone());
    cfg.overlap = overlap;
    cfg.sw_batch_size = inf.sw_batch_size.max(1);
    cfg.mode = inf.blend;
    Ok(cfg)
}

/// Logits `[K, X, Y, Z]` of the whole (preprocessed) volume. 2-D models run slice by slice along Z.
fn infer_logits(
    model: &Model,
    data: &Array4<f32>,
    cfg: &SlidingWindowConfig,
    metrics: Option<&Metrics>,
    windows: &mut usize,
) -> Result<Array4<f32>, ServeError> {
    let mut predict = |batch: ArrayD<f32>| -> Result<ArrayD<f32>, ServeError> {
        *windows += batch.shape().first().copied().unwrap_or(0);
        let start = Instant::now();
        let out = model.backend.run(batch);
        if let Some(m) = metrics {
            m.record_inference(
                &model.info.name,
                model.backend.name(),
                start.elapsed().as_secs_f64(),
            );
        }
        out
    };
    let bad = |e: ndarray::ShapeError| ServeError::Internal(format!("logits shape: {e}"));
    if model.info.spatial_dims == 3 {
        let out = sliding_window_inference(data.view().into_dyn(), cfg, &mut predict)?;
        return out.into_dimensionality().map_err(bad);
    }
    let [_, x, y, z] = <[usize; 4]>::try_from(data.shape())
        .map_err(|_| ServeError::Internal("volume is not 4-D".into()))?;
    let mut slices = Vec::with_capacity(z);
    for k in 0..z {
        let slice = data.index_axis(Axis(3), k);
        slices.push(sliding_window_inference(
            slice.into_dyn(),
            cfg,
            &mut predict,
        )?);
    }
    let kc = slices.first().map_or(0, |s| s.shape()[0]);
    let mut out = Array4::<f32>::zeros((kc, x, y, z));
    for (k, s) in slices.into_iter().enumerate() {
        out.index_axis_mut(Axis(3), k)
            .assign(&s.into_dimensionality::<ndarray::Ix3>().map_err(bad)?);
    }
    Ok(out)
}

/// Softmax over the channel axis of `[K, ...]`.
fn softmax(logits: &Array4<f32>) -> Array4<f32> {
    let mut p = logits.clone();
    for mut lane in p.lanes_mut(Axis(0)) {
        let max = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        lane.mapv_inplace(|v| (v - max).exp());
        let sum: f32 = lane.sum();
        lane.mapv_inplace(|v| v / sum);
    }
    p
}

/// Label map `[1, ...]` by argmax (first maximum wins, like torch.argmax).
fn argmax(logits: &Array4<f32>) -> Array4<f32> {
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

/// Voxel volume in ml from an affine (|det| of the 3x3 part, mm³ → ml).
pub fn voxel_ml(affine: &[[f64; 4]; 4]) -> f64 {
    let a = affine;
    let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    det.abs() / 1000.0
}

fn stats(model: &Model, mask: &Volume, activation: OutputActivation) -> Vec<LabelStat> {
    let k = model.info.out_channels;
    let ml = voxel_ml(&mask.affine);
    let mut counts = vec![0u64; k];
    match activation {
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
            name: model.info.label_name(i),
            voxels: n,
            volume_ml: n as f64 * ml,
        })
        .collect()
}

/// Segment `image` (as loaded from the client's file) with `model`.
pub fn segment_volume(
    model: &Model,
    image: Volume,
    opts: &SegmentOptions,
    metrics: Option<&Metrics>,
) -> Result<Segmentation, ServeError> {
    let info = &model.info;
    if image.channels() != info.in_channels {
        return Err(ServeError::invalid(format!(
            "the volume has {} channels; model {:?} takes {}",
            image.channels(),
            info.name,
            info.in_channels
        )));
    }
    if info.spatial_dims == 3 && image.spatial_shape().contains(&1) {
        return Err(ServeError::invalid(format!(
            "model {:?} is 3-D but the volume has shape {:?}",
            info.name,
            image.spatial_shape()
        )));
    }
    let activation = info
        .inference
        .as_ref()
        .map(|i| i.activation)
        .unwrap_or_default();
    let cfg = window_config(model, opts)?;
    let compose = Compose::new(&info.preprocessing).map_err(|e| ServeError::Model {
        path: info.path.clone(),
        msg: format!("preprocessing: {e}"),
    })?;
    let (pre, inverse) = compose
        .preprocess(image)
        .map_err(|e| ServeError::invalid(format!("preprocessing the volume: {e}")))?;
    let mut windows = 0;
    let logits = infer_logits(model, &pre.data, &cfg, metrics, &mut windows)?;
    if logits.shape()[0] != info.out_channels {
        return Err(ServeError::Internal(format!(
            "model returned {} channels, metadata says {}",
            logits.shape()[0],
            info.out_channels
        )));
    }
    let (mask, probs) = match activation {
        OutputActivation::Softmax => (
            argmax(&logits),
            opts.probabilities.then(|| softmax(&logits)),
        ),
        OutputActivation::Sigmoid => {
            let p = logits.mapv(|v| 1.0 / (1.0 + (-v).exp()));
            (
                p.mapv(|v| if v > 0.5 { 1.0 } else { 0.0 }),
                opts.probabilities.then_some(p),
            )
        }
    };
    let mask = inverse.restore_label(&Volume::new(mask, pre.affine))?;
    let probabilities = probs
        .map(|p| inverse.restore_probabilities(&Volume::new(p, pre.affine)))
        .transpose()?;
    let labels = stats(model, &mask, activation);
    Ok(Segmentation {
        mask,
        probabilities,
        labels,
        windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_argmax_and_voxel_volume() {
        let l = Array4::from_shape_vec((3, 2, 1, 1), vec![0.0, 5.0, 2.0, 5.0, 1.0, -1.0]).unwrap();
        let m = argmax(&l);
        assert_eq!(m.iter().copied().collect::<Vec<_>>(), vec![1.0, 0.0]);
        let p = softmax(&l);
        let s: f32 = p.index_axis(Axis(1), 0).sum();
        assert!((s - 1.0).abs() < 1e-6);
        let e = [0.0f32.exp(), 2.0f32.exp(), 1.0f32.exp()];
        assert!((p[[1, 0, 0, 0]] - e[1] / (e[0] + e[1] + e[2])).abs() < 1e-6);
        let a = Volume::affine_from(
            [1.5, 2.0, 2.5],
            [0.0; 3],
            [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        );
        assert!((voxel_ml(&a) - 0.0075).abs() < 1e-12);
    }
}
