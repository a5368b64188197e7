//! Property tests of the random transforms: crops in bounds and of roi size, the pos/neg centre ratio, flips and
//! quarter turns as involutions / cycles, intensity ranges, and determinism for a seed at any thread count.

use imaging::transforms::{
    rot90, Compose, RandCropByPosNegLabel, RandFlip, RandRotate90, RandScaleIntensity,
    RandShiftIntensity, RandSpatialCrop,
};
use imaging::{Rng, Sample, Volume};
use ndarray::Array4;
use rand::SeedableRng;
use spec::TransformSpec;

/// A sample whose image value encodes the voxel index, so a crop's position can be read back from its values.
fn indexed(shape: [usize; 3]) -> Sample {
    let n = shape.iter().product::<usize>();
    let img = Array4::from_shape_vec(
        (1, shape[0], shape[1], shape[2]),
        (0..n).map(|v| v as f32).collect(),
    )
    .unwrap();
    let mut lab = Array4::<f32>::zeros((1, shape[0], shape[1], shape[2]));
    lab[[0, 2, 3, 1]] = 1.0;
    lab[[0, shape[0] - 1, 0, shape[2] - 1]] = 2.0;
    let a = [
        [0.0, -1.5, 0.0, 3.0],
        [2.0, 0.0, 0.0, -1.0],
        [0.0, 0.0, 1.25, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    Sample::new(Volume::new(img, a), Some(Volume::new(lab, a))).unwrap()
}

fn decode(v: f32, shape: [usize; 3]) -> [usize; 3] {
    let v = v as usize;
    [
        v / (shape[1] * shape[2]),
        (v / shape[2]) % shape[1],
        v % shape[2],
    ]
}

/// Every voxel of a crop is the input voxel at start + offset, and the label went along.
fn check_crop(s: &Sample, input: &Sample, roi: [usize; 3]) -> [usize; 3] {
    let shape = input.image.spatial_shape();
    assert_eq!(s.image.spatial_shape(), roi);
    let start = decode(s.image.data[[0, 0, 0, 0]], shape);
    for a in 0..3 {
        assert!(
            start[a] + roi[a] <= shape[a],
            "crop {start:?}+{roi:?} outside {shape:?}"
        );
    }
    for ((_, i, j, k), &v) in s.image.data.indexed_iter() {
        assert_eq!(decode(v, shape), [start[0] + i, start[1] + j, start[2] + k]);
        let l = s.label.as_ref().unwrap().data[[0, i, j, k]];
        assert_eq!(
            l,
            input.label.as_ref().unwrap().data[[0, start[0] + i, start[1] + j, start[2] + k]]
        );
    }
    start
}

#[test]
fn rand_spatial_crop_in_bounds_and_covers_all_starts() {
    let input = indexed([9, 7, 5]);
    let t = RandSpatialCrop::new(&[4, 7, 3]).unwrap();
    let mut rng = Rng::seed_from_u64(1);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..300 {
        let out = t.apply(input.clone(), &mut rng).unwrap();
        seen.insert(check_crop(&out, &input, [4, 7, 3]));
    }
    // starts 0..=5 × {0} × 0..=2 are all reachable
    assert_eq!(seen.len(), 6 * 3);
    // roi larger than the image is clipped to it (MONAI does not pad)
    let out = RandSpatialCrop::new(&[20, 2, 2])
        .unwrap()
        .apply(input.clone(), &mut rng)
        .unwrap();
    assert_eq!(out.image.spatial_shape(), [9, 2, 2]);
}

#[test]
fn pos_neg_ratio_and_crop_bounds() {
    let input = indexed([10, 8, 6]);
    // roi 1: centres are not moved, so the fraction on foreground is the positive ratio.
    let t = RandCropByPosNegLabel::new(&[1], 1.0, 3.0, 4, None).unwrap();
    let mut rng = Rng::seed_from_u64(7);
    let (mut pos, mut total) = (0, 0);
    for _ in 0..1000 {
        for c in t.centers(&input, &mut rng).unwrap() {
            total += 1;
            pos += usize::from(input.label.as_ref().unwrap().data[[0, c[0], c[1], c[2]]] != 0.0);
        }
    }
    let frac = pos as f64 / total as f64;
    assert!((frac - 0.25).abs() < 0.03, "positive fraction {frac}");
    // Real crops: num_samples of them, roi-sized, inside the image.
    let t = RandCropByPosNegLabel::new(&[4, 3, 6], 2.0, 1.0, 3, None).unwrap();
    for _ in 0..50 {
        let out = t.apply(input.clone(), &mut rng).unwrap();
        assert_eq!(out.len(), 3);
        for s in &out {
            check_crop(s, &input, [4, 3, 6]);
        }
    }
    // image_threshold: background centres only where the image exceeds it (here: voxel index > 400).
    let t = RandCropByPosNegLabel::new(&[1], 0.0, 1.0, 1, Some(400.0)).unwrap();
    for _ in 0..200 {
        let c = t.centers(&input, &mut rng).unwrap()[0];
        assert!(input.image.data[[0, c[0], c[1], c[2]]] > 400.0);
    }
    let e = RandCropByPosNegLabel::new(&[11], 1.0, 1.0, 1, None)
        .unwrap()
        .apply(input.clone(), &mut rng)
        .unwrap_err();
    assert!(e.to_string().contains("larger than the image"), "{e}");
    assert!(t.apply(Sample::image_only(input.image), &mut rng).is_err());
}

#[test]
fn flips_are_involutions_and_quarter_turns_cycle() {
    let input = indexed([4, 5, 3]);
    for axis in 0..3 {
        let f = RandFlip::new(1.0, axis).unwrap();
        let once = f.flip(input.clone()).unwrap();
        assert_ne!(once.image.data, input.image.data);
        assert_eq!(f.flip(once).unwrap(), input);
    }
    for axes in [[0, 1], [1, 2], [0, 2], [2, 0]] {
        let mut v = input.image.clone();
        for k in 1..=4 {
            v = rot90(&v, 1, axes);
            assert_eq!(v == input.image, k == 4, "{axes:?} after {k}");
        }
        assert_eq!(rot90(&rot90(&input.image, 3, axes), 1, axes), input.image);
        assert_eq!(
            rot90(&input.image, 2, axes),
            rot90(&rot90(&input.image, 1, axes), 1, axes)
        );
    }
    // prob 1, max_k 1: always exactly one quarter turn; prob 0: never.
    let mut rng = Rng::seed_from_u64(3);
    let r = RandRotate90::new(1.0, 1, [0, 1])
        .unwrap()
        .apply(input.clone(), &mut rng)
        .unwrap();
    assert_eq!(r.image, rot90(&input.image, 1, [0, 1]));
    assert_eq!(
        r.label.unwrap(),
        rot90(input.label.as_ref().unwrap(), 1, [0, 1])
    );
    let r = RandRotate90::new(0.0, 3, [0, 1])
        .unwrap()
        .apply(input.clone(), &mut rng)
        .unwrap();
    assert_eq!(r, input);
    assert!(RandRotate90::new(0.5, 3, [1, 1])
        .unwrap_err()
        .to_string()
        .contains("spatial_axes"));
    assert!(RandFlip::new(1.5, 0)
        .unwrap_err()
        .to_string()
        .contains("prob"));
}

#[test]
fn intensity_augmentations_stay_in_range() {
    let input = indexed([4, 4, 3]);
    let mut rng = Rng::seed_from_u64(11);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for _ in 0..200 {
        let s = RandScaleIntensity::new(0.1, 1.0)
            .unwrap()
            .apply(input.clone(), &mut rng);
        let m = s.image.data[[0, 0, 0, 1]] / input.image.data[[0, 0, 0, 1]];
        assert!((0.9..=1.1).contains(&m));
        (lo, hi) = (lo.min(m), hi.max(m));
        assert!(s
            .image
            .data
            .iter()
            .zip(input.image.data.iter())
            .all(|(a, b)| (a - b * m).abs() <= 1e-4 * b.abs().max(1.0)));
        assert_eq!(s.label, input.label);
        let s = RandShiftIntensity::new(0.5, 1.0)
            .unwrap()
            .apply(input.clone(), &mut rng);
        let o = s.image.data[[0, 0, 0, 0]];
        assert!((-0.5..=0.5).contains(&o));
    }
    assert!(
        lo < 0.92 && hi > 1.08,
        "factors should spread over the range: {lo}..{hi}"
    );
    assert_eq!(
        RandShiftIntensity::new(0.5, 0.0)
            .unwrap()
            .apply(input.clone(), &mut rng),
        input
    );
}

fn training_pipeline() -> Compose {
    use TransformSpec as T;
    Compose::new(&[
        T::Orientation {
            axcodes: "RAS".into(),
        },
        T::RandCropByPosNegLabel {
            spatial_size: vec![4, 4, 3],
            pos: 1.0,
            neg: 1.0,
            num_samples: 3,
            image_threshold: None,
        },
        T::RandFlip {
            prob: 0.5,
            spatial_axis: 0,
        },
        T::RandRotate90 {
            prob: 0.5,
            max_k: 3,
            spatial_axes: [0, 1],
        },
        T::RandScaleIntensity {
            factors: 0.1,
            prob: 0.5,
        },
        T::RandShiftIntensity {
            offsets: 0.1,
            prob: 0.5,
        },
    ])
    .unwrap()
}

#[test]
fn same_seed_same_output_at_any_thread_count() {
    let input = indexed([10, 8, 6]);
    let compose = training_pipeline();
    let run = |threads: usize, seed: u64| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            compose
                .apply(input.clone(), &mut Rng::seed_from_u64(seed))
                .unwrap()
        })
    };
    let a = run(1, 42);
    assert_eq!(a.len(), 3);
    assert_eq!(a, run(4, 42));
    assert_eq!(a, run(2, 42));
    assert_ne!(a, run(1, 43));
}
