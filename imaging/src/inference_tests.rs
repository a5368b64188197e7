//! Tests of the whole-volume inference path against directly computed expectations: a pointwise predictor makes
//! the blended logits equal the pointwise function of the image (every window sees the same value at a voxel), so
//! masks, probabilities and statistics can be computed without any tiling.

use super::*;
use ndarray::{Array, Dimension, IxDyn};
use spec::BlendMode;

fn spec(roi: Vec<usize>, blend: BlendMode, activation: OutputActivation) -> InferenceSpec {
    InferenceSpec {
        roi_size: roi,
        overlap: 0.25,
        blend,
        sw_batch_size: 3,
        activation,
    }
}

fn segmenter(sd: usize, blend: BlendMode, activation: OutputActivation) -> Segmenter {
    let roi = vec![4; sd];
    Segmenter::new(sd, 1, 2, vec![], &[], spec(roi, blend, activation)).unwrap()
}

/// A volume `[1, 7, 6, 5]` with values in [0, 1) that are not symmetric along any axis.
fn image() -> Array4<f32> {
    Array::from_shape_fn((1, 7, 6, 5), |(_, i, j, k)| {
        ((i * 37 + j * 11 + k * 5) % 23) as f32 / 23.0
    })
}

/// Pointwise two-channel "model": logits `[a(x), b(x)]` for every voxel of every window.
fn pointwise(
    f: impl Fn(f32) -> [f32; 2],
) -> impl FnMut(ArrayD<f32>) -> Result<ArrayD<f32>, String> {
    move |w: ArrayD<f32>| {
        let mut shape = w.shape().to_vec();
        shape[1] = 2;
        Ok(ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
            let mut src = ix.slice().to_vec();
            src[1] = 0;
            f(w[IxDyn(&src)])[ix[1]]
        }))
    }
}

fn margin(x: f32) -> [f32; 2] {
    [0.0, x - 0.5]
}

#[test]
fn softmax_argmax_sigmoid_and_voxel_volume_by_hand() {
    let l = Array4::from_shape_vec((3, 2, 1, 1), vec![0.0, 5.0, 2.0, 5.0, 1.0, -1.0]).unwrap();
    let m = label_map(&l, OutputActivation::Softmax);
    assert_eq!(
        m.iter().copied().collect::<Vec<_>>(),
        vec![1.0, 0.0],
        "the first maximum wins a tie"
    );
    let p = probabilities(&l, OutputActivation::Softmax);
    let e = [0.0f32.exp(), 2.0f32.exp(), 1.0f32.exp()];
    assert!((p[[1, 0, 0, 0]] - e[1] / (e[0] + e[1] + e[2])).abs() < 1e-6);
    assert!((p.index_axis(Axis(1), 1).sum() - 1.0).abs() < 1e-6);

    let l = Array4::from_shape_vec((1, 3, 1, 1), vec![-1.0, 0.0, 2.0]).unwrap();
    let p = probabilities(&l, OutputActivation::Sigmoid);
    for (got, want) in p.iter().zip([0.268_941_4, 0.5, 0.880_797_1]) {
        assert!((got - want).abs() < 1e-6, "{got} {want}");
    }
    let m = label_map(&l, OutputActivation::Sigmoid);
    assert_eq!(m.iter().copied().collect::<Vec<_>>(), vec![0.0, 0.0, 1.0]);

    let a = Volume::affine_from(
        [1.5, 2.0, 2.5],
        [0.0; 3],
        [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    );
    assert!((voxel_ml(&a) - 0.0075).abs() < 1e-12);
}

#[test]
fn logits_of_a_pointwise_model_equal_the_pointwise_function_in_2d_and_3d() {
    let img = image();
    // 3-D: 2 windows per axis (7, 6, 5 with roi 4, interval 3), in 3 calls of at most 3; 2-D: 2 × 2 windows per
    // slice (2 calls each), 5 slices.
    for (sd, windows, want_calls) in [(3, 8, 3), (2, 20, 10)] {
        for blend in [BlendMode::Constant, BlendMode::Gaussian] {
            let s = segmenter(sd, blend, OutputActivation::Softmax);
            let mut calls = 0;
            let mut model = pointwise(|x| [2.0 * x, 1.0 - x]);
            let mut counted = |w: ArrayD<f32>| {
                calls += 1;
                assert!(w.shape()[0] <= 3, "sw_batch_size bounds a batch");
                model(w)
            };
            let (logits, n) = s.logits(img.view(), None, &mut counted).unwrap();
            assert_eq!(n, windows, "{sd}-D windows");
            assert_eq!(calls, want_calls, "{sd}-D predictor calls");
            assert_eq!(logits.shape(), &[2, 7, 6, 5]);
            for ((c, i, j, k), &v) in logits.indexed_iter() {
                let x = img[[0, i, j, k]];
                let want = if c == 0 { 2.0 * x } else { 1.0 - x };
                assert!((v - want).abs() < 1e-5, "{sd}-D {blend:?} {c} {i} {j} {k}");
            }
        }
    }
}

#[test]
fn segment_restores_mask_probabilities_and_statistics_on_the_input_grid() {
    // The input is stored left-right flipped (negative x spacing); the model's preprocessing reorients to RAS,
    // so the restored outputs must be flipped back onto the input's own voxels.
    let affine = Volume::affine_from(
        [2.0, 2.0, 2.0],
        [10.0, 0.0, 0.0],
        [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    let vol = Volume::new(image(), affine);
    let pre = [TransformSpec::Orientation {
        axcodes: "RAS".into(),
    }];
    let labels = vec!["background".to_string(), "bright".to_string()];
    let inf = spec(
        vec![4, 4, 4],
        BlendMode::Gaussian,
        OutputActivation::Softmax,
    );
    let s = Segmenter::new(3, 1, 2, labels, &pre, inf).unwrap();
    let opts = SegmentOptions {
        overlap: Some(0.5),
        probabilities: true,
        ..Default::default()
    };
    let seg = s
        .segment(vol.clone(), &opts, &mut pointwise(margin))
        .unwrap();
    assert_eq!(seg.mask.affine, affine);
    assert_eq!(seg.mask.data.shape(), &[1, 7, 6, 5]);
    let probs = seg.probabilities.unwrap();
    let mut bright = 0u64;
    for ((_, i, j, k), &x) in vol.data.indexed_iter() {
        let want = f32::from(x > 0.5);
        bright += u64::from(x > 0.5);
        assert_eq!(seg.mask.data[[0, i, j, k]], want, "{i} {j} {k}");
        let p1 = 1.0 / (1.0 + (-(x - 0.5)).exp());
        assert!((probs.data[[1, i, j, k]] - p1).abs() < 1e-5);
        assert!((probs.data[[0, i, j, k]] - (1.0 - p1)).abs() < 1e-5);
    }
    assert_eq!(seg.labels.len(), 2);
    assert_eq!(
        (seg.labels[1].name.as_str(), seg.labels[1].voxels),
        ("bright", bright)
    );
    assert_eq!(seg.labels[0].voxels + bright, 7 * 6 * 5);
    assert!((seg.labels[1].volume_ml - bright as f64 * 0.008).abs() < 1e-9);
    // overlap 0.5 with roi 4: interval 2, windows at 0, 2, 3 | 0, 2 | 0, 1 per axis.
    assert_eq!(seg.windows, 3 * 2 * 2);
}

#[test]
fn sigmoid_models_threshold_every_channel() {
    let s = segmenter(2, BlendMode::Constant, OutputActivation::Sigmoid);
    let vol = Volume::new(image(), Volume::diag_affine([1.0; 3]));
    let seg = s
        .segment(
            vol.clone(),
            &SegmentOptions::default(),
            &mut pointwise(|x| [x - 0.5, 0.3 - x]),
        )
        .unwrap();
    assert_eq!(seg.mask.data.shape(), &[2, 7, 6, 5]);
    assert!(seg.probabilities.is_none());
    let x = vol.data.index_axis(Axis(0), 0);
    let want0 = x.iter().filter(|&&v| v > 0.5).count() as u64;
    let want1 = x.iter().filter(|&&v| v < 0.3).count() as u64;
    assert_eq!((seg.labels[0].voxels, seg.labels[1].voxels), (want0, want1));
    assert_eq!(
        (seg.labels[0].name.as_str(), seg.labels[1].name.as_str()),
        ("label_0", "label_1")
    );
    for ((c, i, j, k), &m) in seg.mask.data.indexed_iter() {
        let v = x[[i, j, k]];
        assert_eq!(m, f32::from(if c == 0 { v > 0.5 } else { v < 0.3 }));
    }
}

#[test]
fn errors_say_whose_fault_they_are() {
    let s = segmenter(3, BlendMode::Constant, OutputActivation::Softmax);
    let opts = SegmentOptions::default();
    let two = Volume::new(Array4::zeros((2, 7, 6, 5)), Volume::diag_affine([1.0; 3]));
    let e = s.segment(two, &opts, &mut pointwise(margin)).unwrap_err();
    assert!(
        matches!(&e, InferenceError::Input(m) if m.contains("the volume has 2 channels; the model takes 1")),
        "{e}"
    );
    let flat = Volume::new(Array4::zeros((1, 7, 6, 1)), Volume::diag_affine([1.0; 3]));
    let e = s.segment(flat, &opts, &mut pointwise(margin)).unwrap_err();
    assert!(matches!(e, InferenceError::Input(_)), "{e}");
    let vol = Volume::new(image(), Volume::diag_affine([1.0; 3]));
    let mut failing = |_: ArrayD<f32>| -> Result<ArrayD<f32>, String> { Err("engine down".into()) };
    let e = s.segment(vol.clone(), &opts, &mut failing).unwrap_err();
    assert!(matches!(&e, InferenceError::Predictor(m) if m == "engine down"));
    let mut three = |w: ArrayD<f32>| -> Result<ArrayD<f32>, String> {
        let mut shape = w.shape().to_vec();
        shape[1] = 3;
        Ok(ArrayD::zeros(IxDyn(&shape)))
    };
    let e = s.segment(vol.clone(), &opts, &mut three).unwrap_err();
    assert!(e.to_string().contains("3 channels"), "{e}");
    let bad = SegmentOptions {
        overlap: Some(1.0),
        probabilities: false,
        ..Default::default()
    };
    let e = s.segment(vol, &bad, &mut pointwise(margin)).unwrap_err();
    assert!(
        matches!(&e, InferenceError::Input(m) if m.contains("overlap")),
        "{e}"
    );
}

#[test]
fn construction_validates_the_spec() {
    let inf = || {
        spec(
            vec![4, 4, 4],
            BlendMode::Constant,
            OutputActivation::Softmax,
        )
    };
    let e = Segmenter::new(3, 1, 2, vec!["a".into()], &[], inf()).unwrap_err();
    assert!(e.to_string().contains("labels"), "{e}");
    let e = Segmenter::new(2, 1, 2, vec![], &[], inf()).unwrap_err();
    assert!(e.to_string().contains("roi_size"), "{e}");
    let mut over = inf();
    over.overlap = 1.5;
    let e = Segmenter::new(3, 1, 2, vec![], &[], over).unwrap_err();
    assert!(e.to_string().contains("inference.overlap"), "{e}");
    let flip = [TransformSpec::RandFlip {
        prob: 0.5,
        spatial_axis: 0,
    }];
    let e = Segmenter::new(3, 1, 2, vec![], &flip, inf()).unwrap_err();
    assert!(e.to_string().contains("RandFlip"), "{e}");
}

#[test]
fn a_resampled_grid_over_the_value_limit_is_refused_before_it_is_allocated() {
    // 7×6×5 voxels of 1 m: resampling to 1.5 mm would need 4667×4000×3334 ≈ 6.2e10 values.
    let vol = Volume::new(image(), Volume::diag_affine([1000.0; 3]));
    let pre = [TransformSpec::Spacing {
        pixdim: vec![1.5, 1.5, 1.5],
    }];
    let s = Segmenter::new(
        3,
        1,
        2,
        vec![],
        &pre,
        spec(vec![4; 3], BlendMode::Constant, OutputActivation::Softmax),
    )
    .unwrap();
    let calls = std::cell::Cell::new(0usize);
    let mut counting = |w: ArrayD<f32>| -> Result<ArrayD<f32>, String> {
        calls.set(calls.get() + 1);
        pointwise(margin)(w)
    };
    let e = s
        .segment(vol.clone(), &SegmentOptions::default(), &mut counting)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, InferenceError::Preprocess(ImagingError::Limit(_)))
            && msg.contains("Spacing")
            && msg.contains(&crate::io::DEFAULT_MAX_VOXELS.to_string()),
        "{msg}"
    );
    assert_eq!(calls.get(), 0);

    // The caller's limit applies to the logits too: 2 classes on the 7×6×5 grid are 420 values.
    let tight = SegmentOptions {
        max_values: Some(400),
        ..Default::default()
    };
    let plain = segmenter(3, BlendMode::Constant, OutputActivation::Softmax);
    let small = Volume::new(image(), Volume::diag_affine([1.0; 3]));
    let e = plain
        .segment(small.clone(), &tight, &mut counting)
        .unwrap_err();
    assert!(
        matches!(&e, InferenceError::Imaging(ImagingError::Limit(m)) if m.contains("logits") && m.contains("420")),
        "{e}"
    );
    let fits = SegmentOptions {
        max_values: Some(420),
        ..Default::default()
    };
    plain.segment(small, &fits, &mut counting).unwrap();
    assert!(calls.get() > 0);
}
