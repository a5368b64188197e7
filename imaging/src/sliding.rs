//! Sliding-window inference with MONAI `sliding_window_inference` semantics, generic over the predictor.
//!
//! The same tiling runs in trainer evaluation and in the server, so both see identical windows, weights and padding:
//! - `roi_size` entries of 0 take the image size on that axis (MONAI `fall_back_tuple`);
//! - an image smaller than the roi is padded with `cval`, `diff / 2` voxels before and the rest after (MONAI's
//!   symmetric constant `F.pad`), and the result is cropped back to the input size;
//! - the scan interval is `int(roi · (1 − overlap))` (at least 1; the roi itself where roi == image size), windows
//!   start at multiples of it and the last one is shifted back inside the image (MONAI `dense_patch_slices`), in
//!   row-major order over the start grid (first spatial axis slowest);
//! - outputs are blended with a constant or Gaussian importance map (`sigma = sigma_scale · roi`, values clamped
//!   below at `max(min, 1e-3)`, MONAI `compute_importance_map`) and divided by the summed weights.
//!
//! Unlike MONAI, a predictor whose output spatial size differs from the roi is rejected, not rescaled.

use ndarray::{ArrayD, ArrayViewD, Axis, CowArray, IxDyn, Slice};
use serde::{Deserialize, Serialize};
pub use spec::BlendMode;

use crate::error::ImagingError;

fn default_overlap() -> f64 {
    0.25
}
fn default_sigma() -> f64 {
    0.125
}
fn default_batch() -> usize {
    1
}

/// Parameters of a sliding-window pass (MONAI names and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlidingWindowConfig {
    /// Window size per spatial axis; 0 means the image size on that axis.
    pub roi_size: Vec<usize>,
    /// Windows passed to the predictor per call.
    #[serde(default = "default_batch")]
    pub sw_batch_size: usize,
    /// Fraction of overlap between neighbouring windows, in [0, 1).
    #[serde(default = "default_overlap")]
    pub overlap: f64,
    /// Blending of overlapping outputs.
    #[serde(default)]
    pub mode: BlendMode,
    /// Gaussian sigma as a fraction of the roi size (Gaussian mode only).
    #[serde(default = "default_sigma")]
    pub sigma_scale: f64,
    /// Value used to pad images smaller than the roi.
    #[serde(default)]
    pub cval: f32,
}

impl SlidingWindowConfig {
    /// A config with MONAI's defaults (overlap 0.25, constant blending, one window per call) for `roi_size`.
    pub fn new(roi_size: Vec<usize>) -> Self {
        Self {
            roi_size,
            sw_batch_size: default_batch(),
            overlap: default_overlap(),
            mode: BlendMode::Constant,
            sigma_scale: default_sigma(),
            cval: 0.0,
        }
    }

    fn validate(&self, spatial_dims: usize) -> Result<(), ImagingError> {
        if self.roi_size.len() != spatial_dims {
            return Err(ImagingError::config(
                "roi_size",
                format!(
                    "has {} entries but the image has {spatial_dims} spatial axes",
                    self.roi_size.len()
                ),
            ));
        }
        if self.sw_batch_size == 0 {
            return Err(ImagingError::config("sw_batch_size", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(ImagingError::config(
                "overlap",
                format!("must be in [0, 1), got {}", self.overlap),
            ));
        }
        if self.mode == BlendMode::Gaussian
            && !(self.sigma_scale > 0.0 && self.sigma_scale.is_finite())
        {
            return Err(ImagingError::config(
                "sigma_scale",
                format!("must be > 0, got {}", self.sigma_scale),
            ));
        }
        Ok(())
    }
}

/// Scan interval per axis (MONAI `_get_scan_interval`).
fn scan_interval(image_size: &[usize], roi: &[usize], overlap: f64) -> Vec<usize> {
    image_size
        .iter()
        .zip(roi)
        .map(|(&img, &r)| {
            if r == img {
                r
            } else {
                // Python's int() truncates toward zero, like `as usize` on a non-negative value.
                ((r as f64) * (1.0 - overlap)).max(1.0) as usize
            }
        })
        .collect()
}

/// Window start positions along one axis (MONAI `dense_patch_slices`); requires `roi <= size` and `interval >= 1`.
fn axis_starts(size: usize, roi: usize, interval: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut idx = 0usize;
    loop {
        let start = idx * interval;
        starts.push(start.min(size - roi));
        if start + roi >= size {
            return starts;
        }
        idx += 1;
    }
}

/// All window start corners in MONAI order (first spatial axis slowest).
pub fn window_starts(image_size: &[usize], roi: &[usize], overlap: f64) -> Vec<Vec<usize>> {
    let intervals = scan_interval(image_size, roi, overlap);
    let per_axis: Vec<Vec<usize>> = image_size
        .iter()
        .zip(roi)
        .zip(&intervals)
        .map(|((&s, &r), &i)| axis_starts(s, r.min(s), i))
        .collect();
    let mut out: Vec<Vec<usize>> = vec![Vec::new()];
    for axis in &per_axis {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                axis.iter()
                    .map(move |&s| [prefix.clone(), vec![s]].concat())
            })
            .collect();
    }
    out
}

/// The importance map of a window (MONAI `compute_importance_map`), shape `roi`.
pub fn importance_map(roi: &[usize], mode: BlendMode, sigma_scale: f64) -> ArrayD<f32> {
    let mut map = ArrayD::<f32>::ones(IxDyn(roi));
    if mode == BlendMode::Gaussian {
        for (axis, &size) in roi.iter().enumerate() {
            let sigma = size as f64 * sigma_scale;
            // torch computes in f32 with the f64 scalar cast to f32.
            let denom = (-2.0 * sigma * sigma) as f32;
            let half = (size as f32 - 1.0) / 2.0;
            let g: Vec<f32> = (0..size)
                .map(|k| k as f32 - half)
                .map(|x| (x * x / denom).exp())
                .collect();
            for (i, mut lane) in map.axis_iter_mut(Axis(axis)).enumerate() {
                lane.mapv_inplace(|v| v * g[i]);
            }
        }
    }
    let min = map.iter().copied().fold(f32::INFINITY, f32::min);
    let floor = min.max(1e-3);
    map.mapv_inplace(|v| v.max(floor));
    map
}

fn window_slice(start: &[usize], roi: &[usize], leading: usize) -> Vec<ndarray::SliceInfoElem> {
    let mut s: Vec<ndarray::SliceInfoElem> = (0..leading).map(|_| Slice::from(..).into()).collect();
    s.extend(
        start
            .iter()
            .zip(roi)
            .map(|(&a, &r)| ndarray::SliceInfoElem::from(Slice::from(a..a + r))),
    );
    s
}

/// Run `predictor` over windows of `image` (`[C, spatial...]`) and blend its outputs into `[K, spatial...]`.
///
/// The predictor receives `[B, C, roi...]` with `B <= sw_batch_size` and must return `[B, K, roi...]`; K is read from
/// its first output. Errors from the predictor are passed through; shape problems become [`ImagingError`]s.
pub fn sliding_window_inference<E, F>(
    image: ArrayViewD<'_, f32>,
    cfg: &SlidingWindowConfig,
    mut predictor: F,
) -> Result<ArrayD<f32>, E>
where
    F: FnMut(ArrayD<f32>) -> Result<ArrayD<f32>, E>,
    E: From<ImagingError>,
{
    if image.ndim() < 2 {
        return Err(ImagingError::Shape(format!(
            "sliding window input must be [C, spatial...], got {:?}",
            image.shape()
        ))
        .into());
    }
    let nd = image.ndim() - 1;
    cfg.validate(nd)?;
    let channels = image.shape()[0];
    let orig: Vec<usize> = image.shape()[1..].to_vec();
    if orig.contains(&0) || channels == 0 {
        return Err(ImagingError::Shape(format!(
            "sliding window input has an empty axis: {:?}",
            image.shape()
        ))
        .into());
    }
    let roi: Vec<usize> = cfg
        .roi_size
        .iter()
        .zip(&orig)
        .map(|(&r, &s)| if r == 0 { s } else { r })
        .collect();
    let size: Vec<usize> = orig.iter().zip(&roi).map(|(&s, &r)| s.max(r)).collect();
    let pad_before: Vec<usize> = orig
        .iter()
        .zip(&roi)
        .map(|(&s, &r)| r.saturating_sub(s) / 2)
        .collect();

    let padded: CowArray<'_, f32, IxDyn> = if size == orig {
        CowArray::from(image)
    } else {
        let mut shape = vec![channels];
        shape.extend(&size);
        let mut p = ArrayD::from_elem(IxDyn(&shape), cfg.cval);
        p.slice_mut(window_slice(&pad_before, &orig, 1).as_slice())
            .assign(&image);
        CowArray::from(p)
    };

    let weights = importance_map(&roi, cfg.mode, cfg.sigma_scale);
    let starts = window_starts(&size, &roi, cfg.overlap);
    let mut count = ArrayD::<f32>::zeros(IxDyn(&size));
    for s in &starts {
        let mut c = count.slice_mut(window_slice(s, &roi, 0).as_slice());
        c += &weights;
    }

    let mut output: Option<ArrayD<f32>> = None;
    for chunk in starts.chunks(cfg.sw_batch_size) {
        let mut batch_shape = vec![chunk.len(), channels];
        batch_shape.extend(&roi);
        let mut batch = ArrayD::<f32>::zeros(IxDyn(&batch_shape));
        for (b, s) in chunk.iter().enumerate() {
            batch
                .index_axis_mut(Axis(0), b)
                .assign(&padded.slice(window_slice(s, &roi, 1).as_slice()));
        }
        let pred = predictor(batch)?;
        let shape = pred.shape();
        if shape.len() != nd + 2
            || shape[0] != chunk.len()
            || shape[2..] != roi[..]
            || shape[1] == 0
        {
            return Err(ImagingError::Shape(format!(
                "predictor returned {:?}, expected [{}, K, {}]",
                shape,
                chunk.len(),
                roi.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
        let k = shape[1];
        let out = output.get_or_insert_with(|| {
            let mut s = vec![k];
            s.extend(&size);
            ArrayD::zeros(IxDyn(&s))
        });
        if out.shape()[0] != k {
            return Err(ImagingError::Shape(format!(
                "predictor returned {k} channels after {} before",
                out.shape()[0]
            ))
            .into());
        }
        for (b, s) in chunk.iter().enumerate() {
            let p = pred.index_axis(Axis(0), b);
            let mut o = out.slice_mut(window_slice(s, &roi, 1).as_slice());
            for (mut oc, pc) in o.outer_iter_mut().zip(p.outer_iter()) {
                ndarray::Zip::from(&mut oc)
                    .and(&pc)
                    .and(&weights)
                    .for_each(|o, &p, &w| *o += p * w);
            }
        }
    }
    let mut out =
        output.ok_or_else(|| ImagingError::Shape("sliding window produced no windows".into()))?;
    for mut oc in out.outer_iter_mut() {
        oc /= &count;
    }
    if size == orig {
        Ok(out)
    } else {
        Ok(out
            .slice(window_slice(&pad_before, &orig, 1).as_slice())
            .to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array};

    #[test]
    fn starts_match_monai_dense_patch_slices() {
        // image 10, roi 4, overlap 0.5 -> interval 2: starts 0, 2, 4, 6.
        assert_eq!(axis_starts(10, 4, 2), vec![0, 2, 4, 6]);
        // interval 3 -> 0, 3, 6 (6 + 4 = 10 stops).
        assert_eq!(axis_starts(10, 4, 3), vec![0, 3, 6]);
        // interval 4 with remainder: 0, 4, then 8 is shifted back to 6.
        assert_eq!(axis_starts(10, 4, 4), vec![0, 4, 6]);
        assert_eq!(axis_starts(4, 4, 4), vec![0]);
        assert_eq!(scan_interval(&[10, 4], &[4, 4], 0.25), vec![3, 4]);
        assert_eq!(scan_interval(&[10], &[1], 0.5), vec![1]);
        let w = window_starts(&[5, 3], &[3, 3], 0.5);
        assert_eq!(w, vec![vec![0, 0], vec![1, 0], vec![2, 0]]);
    }

    #[test]
    fn gaussian_map_is_separable_and_clamped() {
        let m = importance_map(&[5, 3], BlendMode::Gaussian, 0.125);
        let g = |size: usize, k: usize| {
            let s = size as f64 * 0.125;
            let x = k as f64 - (size as f64 - 1.0) / 2.0;
            (-x * x / (2.0 * s * s)).exp()
        };
        let min = g(5, 0) * g(3, 0);
        for i in 0..5 {
            for j in 0..3 {
                let want = (g(5, i) * g(3, j)).max(min.max(1e-3));
                assert!(
                    (m[[i, j]] as f64 - want).abs() < 1e-6 * want.max(1e-3),
                    "{i} {j}"
                );
            }
        }
        assert!(importance_map(&[4, 4], BlendMode::Constant, 0.125)
            .iter()
            .all(|&v| v == 1.0));
    }

    #[test]
    fn identity_predictor_reproduces_the_image_with_padding() {
        let img =
            Array::from_shape_fn((2, 5, 3), |(c, i, j)| (c * 100 + i * 10 + j) as f32).into_dyn();
        for mode in [BlendMode::Constant, BlendMode::Gaussian] {
            let mut cfg = SlidingWindowConfig::new(vec![4, 4]);
            cfg.mode = mode;
            cfg.overlap = 0.5;
            cfg.sw_batch_size = 3;
            let mut calls = 0;
            let out = sliding_window_inference::<ImagingError, _>(img.view(), &cfg, |x| {
                calls += 1;
                assert!(x.shape()[0] <= 3 && x.shape()[2..] == [4, 4]);
                Ok(x)
            })
            .unwrap();
            assert_eq!(out.shape(), img.shape());
            for (a, b) in out.iter().zip(img.iter()) {
                assert!((a - b).abs() < 1e-4, "{a} {b}");
            }
            assert_eq!(
                calls, 1,
                "2 windows along axis 0, one along axis 1, one call of 3"
            );
        }
    }

    #[test]
    fn channel_count_comes_from_the_predictor_and_errors_pass_through() {
        let img = Array::from_elem((1, 6), 1.0f32).into_dyn();
        let cfg = SlidingWindowConfig::new(vec![4]);
        let out = sliding_window_inference::<ImagingError, _>(img.view(), &cfg, |x| {
            let b = x.shape()[0];
            Ok(ArrayD::from_shape_fn(IxDyn(&[b, 3, 4]), |i| i[1] as f32))
        })
        .unwrap();
        let want: ndarray::Array2<f32> = array![
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
        ];
        assert_eq!(out, want.into_dyn());
        let err = sliding_window_inference::<ImagingError, _>(img.view(), &cfg, |_| {
            Ok(ArrayD::zeros(IxDyn(&[1, 1, 3])))
        });
        assert!(matches!(err, Err(ImagingError::Shape(_))));
        let bad = SlidingWindowConfig {
            overlap: 1.0,
            ..cfg.clone()
        };
        let err = sliding_window_inference::<ImagingError, _>(img.view(), &bad, Ok).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        let err = sliding_window_inference::<ImagingError, _>(
            img.view(),
            &SlidingWindowConfig::new(vec![4, 4]),
            Ok,
        );
        assert!(err.unwrap_err().to_string().contains("roi_size"));
    }

    #[test]
    fn config_from_yaml_with_defaults() {
        let c: SlidingWindowConfig =
            yaml_serde::from_str("roi_size: [96, 96, 96]\nmode: gaussian\n").unwrap();
        assert_eq!(c.overlap, 0.25);
        assert_eq!(c.sw_batch_size, 1);
        assert_eq!(c.mode, BlendMode::Gaussian);
    }
}
