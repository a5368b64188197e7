//! Slice extraction end to end: PNG/.npy files, label PNGs and the CSV/JSON manifest, read back as true-2D and
//! pseudo-3D samples.

use imaging::loader::SampleSource;
use imaging::pseudo3d::{load_slice_sample, replicate_depth, SliceSource};
use imaging::slices::{
    read_manifest, read_png, select_slices, write_case_slices, write_manifest, ChannelLayout,
    Provenance, SliceOptions, SliceSelection,
};
use imaging::Volume;
use ndarray::{Array3, Array4, Axis};

#[test]
fn writes_pngs_labels_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = Array4::from_shape_fn((2, 5, 4, 3), |(c, x, y, z)| {
        (c * 50 + x * 7 + y * 3 + z) as f32
    });
    let mut lab = Array4::<f32>::zeros((1, 5, 4, 3));
    lab[(0, 2, 1, 1)] = 2.0;
    let img = Volume::new(data, Volume::diag_affine([0.5, 0.75, 2.0]));
    let label = Volume::new(lab, img.affine);
    let src = Provenance {
        case: "c1".into(),
        images: vec!["a.nii.gz".into()],
        label: Some("l.nii.gz".into()),
    };
    let opts = SliceOptions {
        selection: SliceSelection::All,
        ..SliceOptions::default()
    };
    let recs = write_case_slices(&img, Some(&label), &src, dir.path(), &opts).unwrap();
    assert_eq!(recs.len(), 3);
    assert_eq!(
        recs[1].image_files,
        vec!["images/c1_a2_s0001_c0.png", "images/c1_a2_s0001_c1.png"]
    );
    assert_eq!(
        (recs[1].classes.clone(), recs[0].has_foreground),
        (vec![2], false)
    );
    assert_eq!((recs[1].size, recs[1].pixel_spacing), ([4, 5], [0.5, 0.75]));
    let png = read_png(&dir.path().join(&recs[1].image_files[0])).unwrap();
    assert_eq!(png.dim(), (4, 5));
    // Channel 0 spans 0..=(28 + 9 + 2) = 39; pixel (row 0, col 4) is x=4, y=3, z=1 -> 38.
    assert_eq!(
        png[(0, 4)],
        ((38.0f64 / 39.0) * 255.0).round_ties_even() as u8
    );
    let lp = read_png(&dir.path().join(recs[1].label_file.as_ref().unwrap())).unwrap();
    assert_eq!(
        lp[(2, 2)],
        2,
        "label at x=2, y=1 lands on row 4-1-1=2, col 2"
    );
    let (csv, json) = write_manifest(dir.path(), &recs).unwrap();
    assert_eq!(read_manifest(&json).unwrap(), recs);
    let text = std::fs::read_to_string(csv).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.lines().nth(2).unwrap().ends_with(",true,2"), "{text}");
    let stacked = SliceOptions {
        layout: ChannelLayout::Stacked,
        selection: SliceSelection::Middle,
        ..SliceOptions::default()
    };
    let recs = write_case_slices(&img, None, &src, dir.path(), &stacked).unwrap();
    let arr: Array3<u8> = ndarray_npy::read_npy(dir.path().join(&recs[0].image_files[0])).unwrap();
    assert_eq!(arr.dim(), (2, 4, 5));
    assert_eq!(arr.index_axis(Axis(0), 0), png);
}

#[test]
fn manifest_rows_become_2d_and_pseudo_3d_samples() {
    let dir = tempfile::tempdir().unwrap();
    let data = Array4::from_shape_fn((1, 6, 5, 4), |(_, x, y, z)| (x + 2 * y + 3 * z) as f32);
    let mut lab = Array4::<f32>::zeros((1, 6, 5, 4));
    lab[(0, 1, 2, 3)] = 1.0;
    let img = Volume::new(data, Volume::diag_affine([1.0, 1.0, 3.0]));
    let label = Volume::new(lab, img.affine);
    let opts = SliceOptions {
        selection: SliceSelection::All,
        ..SliceOptions::default()
    };
    let recs = write_case_slices(
        &img,
        Some(&label),
        &Provenance {
            case: "v".into(),
            ..Provenance::default()
        },
        dir.path(),
        &opts,
    )
    .unwrap();
    let src = SliceSource {
        records: recs.clone(),
        root: dir.path().to_path_buf(),
    };
    assert_eq!(src.len(), 4);
    assert!(src.identity(0).unwrap() != src.identity(1).unwrap());
    let s = src.load(3).unwrap();
    let (direct, _) = load_slice_sample(&recs[3], dir.path()).unwrap();
    assert_eq!(s.image, direct);
    assert_eq!(s.image.spatial_shape(), [6, 5, 1]);
    let l = s.label.unwrap();
    assert_eq!(l.data[(0, 1, 2, 0)], 1.0);
    let p3 = replicate_depth(&s.image, 8).unwrap();
    assert_eq!(p3.spatial_shape(), [6, 5, 8]);
    assert!(src.load(4).unwrap_err().to_string().contains("outside"));
}

#[test]
fn selection_modes() {
    let mut lab = Array3::<f32>::zeros((4, 4, 7));
    lab[(1, 1, 2)] = 1.0;
    lab[(1, 1, 5)] = 3.0;
    lab[(2, 1, 5)] = 3.0;
    let v = Some(lab.view());
    assert_eq!(
        select_slices([4, 4, 7], None, 2, &SliceSelection::Middle).unwrap(),
        vec![3]
    );
    assert_eq!(
        select_slices([4, 4, 7], None, 2, &SliceSelection::All)
            .unwrap()
            .len(),
        7
    );
    assert_eq!(
        select_slices([4, 4, 7], None, 2, &SliceSelection::EveryK { k: 3 }).unwrap(),
        vec![0, 3, 6]
    );
    assert_eq!(
        select_slices(
            [4, 4, 7],
            v,
            2,
            &SliceSelection::Foreground { min_voxels: 1 }
        )
        .unwrap(),
        vec![2, 5]
    );
    assert_eq!(
        select_slices(
            [4, 4, 7],
            v,
            2,
            &SliceSelection::Foreground { min_voxels: 2 }
        )
        .unwrap(),
        vec![5]
    );
    assert_eq!(
        select_slices(
            [4, 4, 7],
            v,
            0,
            &SliceSelection::Foreground { min_voxels: 1 }
        )
        .unwrap(),
        vec![1, 2]
    );
    assert!(select_slices(
        [4, 4, 7],
        None,
        2,
        &SliceSelection::Foreground { min_voxels: 1 }
    )
    .unwrap_err()
    .to_string()
    .contains("needs a label"));
    assert!(select_slices([4, 4, 7], None, 2, &SliceSelection::EveryK { k: 0 }).is_err());
}
