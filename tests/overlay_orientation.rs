//! The trainer's overlay pictures and `medmae compare --overlay` draw the same thing the same way: on an asymmetric
//! phantom stored in LPS voxel order with a lesion in the patient's right-anterior-superior region, both PNGs are
//! identical, the lesion is at the top-left of the axial reference panel (radiological: the patient's right on the
//! left, anterior up), panels are at least 256 px and titled.

use std::path::Path;
use std::process::Command;

use imaging::datasets::Case;
use imaging::draw::{panel_size, GAP, MIN_PANEL_PX};
use imaging::io::NiftiDtype;
use imaging::Volume;
use medmae_tests::{bin, run};
use ndarray::Array4;
use spec::{OutputActivation, TransformSpec};

const SHAPE: (usize, usize, usize) = (24, 20, 16);

/// LPS storage: voxel i runs towards the patient's left, j towards posterior, k towards superior.
fn write_phantom(dir: &Path) -> Case {
    let mut affine = Volume::diag_affine([1.5, 1.5, 2.0]);
    affine[0][0] = -1.5;
    affine[1][1] = -1.5;
    let (x, y, z) = SHAPE;
    let img = Array4::from_shape_fn((1, x, y, z), |(_, i, j, k)| {
        100.0 + (i + 2 * j + 3 * k) as f32
    });
    let mut lab = Array4::<f32>::zeros((1, x, y, z));
    // Right (small i), anterior (small j), superior (large k).
    for i in 1..6 {
        for j in 1..5 {
            for k in 11..15 {
                lab[[0, i, j, k]] = 1.0;
            }
        }
    }
    let (ip, lp) = (dir.join("img.nii.gz"), dir.join("lab.nii.gz"));
    imaging::io::save_nifti(&Volume::new(img, affine), &ip, NiftiDtype::F32).unwrap();
    imaging::io::save_nifti(&Volume::new(lab, affine), &lp, NiftiDtype::U8).unwrap();
    Case::new(vec![ip], Some(lp))
}

#[test]
fn compare_and_trainer_overlays_agree_and_are_radiological() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let case = write_phantom(t);
    let names = vec!["background".to_string(), "lesion".to_string()];

    let cmp = t.join("compare.png");
    let label = case.label.clone().unwrap();
    let out = run(Command::new(bin("medmae"))
        .arg("compare")
        .arg(&label)
        .arg(&label)
        .arg("--image")
        .arg(&case.images[0])
        .arg("--overlay")
        .arg(&cmp)
        .args(["--names", "background,lesion"]));
    assert!(
        out.contains("axial slice 11"),
        "the most-foreground slice (k = 11..14 tie; the lowest wins): {out}"
    );

    // The trainer's path: the validation sample after its transforms, the prediction equal to the reference.
    let sample = trainer::data::load_val_case(
        &case,
        &[TransformSpec::Orientation {
            axcodes: "RAS".into(),
        }],
    )
    .unwrap();
    let pred = sample.label.as_ref().unwrap().data.clone();
    let row = trainer::finetune::overlay_row(&case.id, &sample, &pred).unwrap();
    let pic =
        trainer::finetune::overlay_picture(&[row], &names, OutputActivation::Softmax).unwrap();
    let from_compare = image::open(&cmp).unwrap().to_rgb8();
    assert_eq!(pic.dimensions(), from_compare.dimensions());
    assert!(
        pic == from_compare,
        "the trainer and compare draw identical pictures"
    );

    // Layout: axial RAS slice = (rows Y = 20, cols X = 24) at 1.5 mm → a 307×256 panel.
    let (w, h) = panel_size(SHAPE.1, SHAPE.0, [1.5, 1.5]);
    assert_eq!((w, h), (307, 256));
    assert!(w.min(h) >= MIN_PANEL_PX);
    let title_h = imaging::draw::text::LINE_HEIGHT + 4;
    let (x0, y0) = (GAP + w + GAP, GAP + title_h); // the reference panel
    let coloured: Vec<(u32, u32)> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let p = pic.get_pixel(x0 + x, y0 + y).0;
            i32::from(p[0]) - i32::from(p[1]) > 60 // class 1 red on grey (yellow edge letters: ≤ 45)
        })
        .collect();
    assert!(!coloured.is_empty(), "the lesion is drawn");
    let cx = coloured.iter().map(|p| p.0 as f64).sum::<f64>() / coloured.len() as f64;
    let cy = coloured.iter().map(|p| p.1 as f64).sum::<f64>() / coloured.len() as f64;
    assert!(
        cx < w as f64 / 3.0 && cy < h as f64 / 3.0,
        "patient right-anterior is top-left: centroid ({cx:.0}, {cy:.0}) in a {w}x{h} panel"
    );
    // Titles: light text pixels in the band above each of the three panels.
    for p in 0..3 {
        let x = GAP + p * (w + GAP);
        let lit = (GAP..GAP + title_h)
            .flat_map(|y| (x..x + 80).map(move |x| (x, y)))
            .filter(|&(x, y)| pic.get_pixel(x, y).0.iter().all(|&c| c > 150))
            .count();
        assert!(lit > 10, "panel {p} has a title");
    }
}
