//! `Compose`: YAML parsing with errors naming the transform and field, deterministic prefix, fan-out, and the
//! inference preprocess → restore round trip.

use imaging::orient::axcodes;
use imaging::transforms::Compose;
use imaging::{ImagingError, Rng, Sample, Volume};
use ndarray::Array4;
use rand::SeedableRng;

const PIPELINE: &str = "
- name: Orientation
  axcodes: RAS
- name: Spacing
  pixdim: [0.5, 1.0, 2.0]
- name: ScaleIntensityRange
  a_min: 0
  a_max: 100
  b_min: 0
  b_max: 1
  clip: true
- name: CropForeground
  margin: [1, 0, 0]
- name: SpatialPad
  spatial_size: [8, 9, 3]
- name: RandCropByPosNegLabel
  spatial_size: [4, 4, 2]
  num_samples: 2
- name: RandFlip
  spatial_axis: 1
";

#[test]
fn yaml_errors_name_index_and_field() {
    let c = Compose::from_yaml(PIPELINE).unwrap();
    assert_eq!(c.len(), 7);
    assert_eq!(c.deterministic_prefix(), 5);
    let (head, tail) = c.split_at(c.deterministic_prefix());
    assert_eq!((head.len(), tail.len()), (5, 2));
    assert!(tail.specs()[0].is_random());
    assert_eq!(
        Compose::from_yaml(&format!("transforms:{}", PIPELINE.replace("\n", "\n  "))).unwrap(),
        c
    );

    let err = |y: &str| Compose::from_yaml(y).unwrap_err().to_string();
    let e = err("- name: Orientation\n- name: Spacing\n  pixdim: []\n");
    assert!(
        e.contains("transforms[1].pixdim") && e.contains("Spacing"),
        "{e}"
    );
    let e = err("- name: Orientation\n- name: RandFlip\n  spatial_axis: 1\n  prob: 2\n");
    assert!(e.contains("transforms[1].prob"), "{e}");
    let e = err("- name: Orientation\n  axcodes: RAX\n");
    assert!(e.contains("transforms[0].axcodes"), "{e}");
    let e = err("- name: Orientation\n- name: CropForeground\n  margn: 2\n");
    assert!(e.contains("transforms[1]") && e.contains("margn"), "{e}");
    let e = err("- name: Rotate\n");
    assert!(e.contains("transforms[0]") && e.contains("Rotate"), "{e}");
    assert!(err("name: Spacing").contains("list"));
    let missing = Compose::from_yaml_file("/nonexistent/pipeline.yaml").unwrap_err();
    assert!(matches!(missing, ImagingError::Io { .. }), "{missing}");
}

/// An LPS-oriented image with a bright box and a label inside it.
fn case() -> Sample {
    let mut img = Array4::<f32>::zeros((1, 7, 6, 4));
    let mut lab = Array4::<f32>::zeros((1, 7, 6, 4));
    for i in 2..5 {
        for j in 1..4 {
            for k in 1..3 {
                img[[0, i, j, k]] = 50.0 + (i * 7 + j * 3 + k) as f32;
                if i > 2 && j < 3 {
                    lab[[0, i, j, k]] = (1 + (i + j + k) % 3) as f32;
                }
            }
        }
    }
    let a = [
        [-1.0, 0.0, 0.0, 10.0],
        [0.0, -1.0, 0.0, 20.0],
        [0.0, 0.0, 2.0, -4.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    Sample::new(Volume::new(img, a), Some(Volume::new(lab, a))).unwrap()
}

#[test]
fn training_apply_fans_out() {
    let c = Compose::from_yaml(PIPELINE).unwrap();
    let out = c.apply(case(), &mut Rng::seed_from_u64(5)).unwrap();
    assert_eq!(out.len(), 2);
    for s in &out {
        assert_eq!(s.image.spatial_shape(), [4, 4, 2]);
        assert_eq!(s.label.as_ref().unwrap().spatial_shape(), [4, 4, 2]);
        assert!(s.image.data.iter().all(|&x| (0.0..=1.0).contains(&x)));
    }
}

#[test]
fn preprocess_then_restore_is_the_identity_on_labels() {
    let c = Compose::from_yaml(PIPELINE).unwrap();
    let input = case();
    let (pre, inv) = c.preprocess(input.image.clone()).unwrap();
    assert_eq!(axcodes(&pre.affine), ['R', 'A', 'S']);
    // The same deterministic transforms applied to image + label give the label on the preprocessed grid.
    let (head, _) = c.split_at(c.deterministic_prefix());
    let det = head
        .apply(input.clone(), &mut Rng::seed_from_u64(0))
        .unwrap()
        .remove(0);
    assert_eq!(det.image, pre);
    assert_eq!(inv.output_shape(), pre.spatial_shape());
    // x: 1 mm → 0.5 mm (2n - 1 voxels); the bright box (3 voxels → 5, plus 2 interpolated edges) ± 1 voxel of
    // margin gives 9 in x; y (3) and z (2) are padded to 9 and 3.
    assert_eq!(pre.spatial_shape(), [9, 9, 3]);
    let label = det.label.unwrap();
    let back = inv.restore_label(&label).unwrap();
    assert_eq!(back.affine, input.image.affine);
    assert_eq!(back.data, input.label.as_ref().unwrap().data);
    // Probabilities come back on the input grid too (linear), equal to the label where it is piecewise constant.
    let probs = inv.restore_probabilities(&label).unwrap();
    assert_eq!(probs.spatial_shape(), [7, 6, 4]);
    assert_eq!(
        probs.data[[0, 3, 1, 1]],
        input.label.as_ref().unwrap().data[[0, 3, 1, 1]]
    );
    let wrong = Volume::new(Array4::zeros((1, 2, 2, 2)), pre.affine);
    assert!(inv
        .restore_label(&wrong)
        .unwrap_err()
        .to_string()
        .contains("preprocessed grid"));
}
