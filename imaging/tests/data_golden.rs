//! Golden tests against MONAI 1.6 / numpy: sliding-window inference, Dice and HD95, slice extraction and 0–255
//! normalisation. Fixtures come from `tests/golden/data/gen_data.py` (see its header to regenerate).

use std::path::{Path, PathBuf};

use imaging::metrics::{
    dice_labels, dice_multilabel, hausdorff_labels, hausdorff_multilabel, DiceOptions,
    HausdorffOptions,
};
use imaging::slices::{
    display_slice, intensity_window, select_slices, to_u8, write_case_slices, Normalization,
    Provenance, SliceOptions, SliceSelection,
};
use imaging::sliding::{sliding_window_inference, BlendMode, SlidingWindowConfig};
use imaging::{ImagingError, Volume};
use ndarray::{Array2, Array3, Array4, ArrayD, Axis, Dimension, Ix3, IxDyn};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/data")
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("golden.json")).unwrap()).unwrap()
}

fn npy_f32(name: &str) -> ArrayD<f32> {
    ndarray_npy::read_npy(dir().join(name)).unwrap()
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        other => other.as_f64().unwrap(),
    }
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

fn assert_close(got: &[f64], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= rel * w.abs().max(1.0);
        assert!(ok, "{what}[{i}]: got {g}, MONAI {w}");
    }
}

/// The generator's toy predictor: zero-padded 3^n mean filter per channel, then out[k] = Σ_c W[k,c] y[c] + b[k].
fn toy_predictor(x: ArrayD<f32>, w: &[Vec<f32>], b: &[f32]) -> ArrayD<f32> {
    let shape = x.shape().to_vec();
    let nd = shape.len() - 2;
    let spatial = &shape[2..];
    let mut filtered = ArrayD::<f32>::zeros(IxDyn(&shape));
    let norm = 3f32.powi(nd as i32);
    for (idx, v) in filtered.indexed_iter_mut() {
        let mut acc = 0.0f32;
        for off in 0..3usize.pow(nd as u32) {
            let mut src = idx.slice().to_vec();
            let mut inside = true;
            for d in 0..nd {
                let delta = (off / 3usize.pow(d as u32)) % 3;
                let p = src[2 + d] as isize + delta as isize - 1;
                inside &= p >= 0 && (p as usize) < spatial[d];
                src[2 + d] = p.max(0) as usize;
            }
            if inside {
                acc += x[IxDyn(&src)];
            }
        }
        *v = acc / norm;
    }
    let mut out_shape = shape.clone();
    out_shape[1] = w.len();
    ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
        let mut src = idx.slice().to_vec();
        let k = src[1];
        let mut acc = b[k];
        for (c, wkc) in w[k].iter().enumerate() {
            src[1] = c;
            acc += wkc * filtered[IxDyn(&src)];
        }
        acc
    })
}

#[test]
fn sliding_window_matches_monai() {
    let g = golden();
    for case in g["sliding"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let x = npy_f32(&format!("{name}_in.npy"));
        let want = npy_f32(&format!("{name}_out.npy"));
        let w: Vec<Vec<f32>> = case["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| nums(r).iter().map(|&v| v as f32).collect())
            .collect();
        let b: Vec<f32> = nums(&case["bias"]).iter().map(|&v| v as f32).collect();
        let cfg = SlidingWindowConfig {
            roi_size: case["roi"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect(),
            sw_batch_size: case["sw"].as_u64().unwrap() as usize,
            overlap: case["overlap"].as_f64().unwrap(),
            mode: if case["mode"] == "gaussian" {
                BlendMode::Gaussian
            } else {
                BlendMode::Constant
            },
            sigma_scale: 0.125,
            cval: 0.0,
        };
        let mut calls = 0;
        let got = sliding_window_inference::<ImagingError, _>(x.view(), &cfg, |batch| {
            calls += 1;
            assert!(batch.shape()[0] <= cfg.sw_batch_size);
            Ok(toy_predictor(batch, &w, &b))
        })
        .unwrap();
        assert_eq!(got.shape(), want.shape(), "{name}");
        let max_err = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max_err <= 1e-5, "{name}: max abs error {max_err}");
        assert!(calls >= 1);
    }
}

#[test]
fn dice_and_hausdorff_match_monai() {
    let g = golden();
    for case in g["metrics"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let spacing = nums(&case["spacing"]);
        if name == "ml" {
            let prob = npy_f32("ml_prob.npy");
            let target = npy_f32("ml_target.npy");
            let d =
                dice_multilabel(prob.view(), target.view(), 0.5, &DiceOptions::default()).unwrap();
            assert_close(&d, &nums(&case["dice"]), 1e-6, "ml dice");
            let h = hausdorff_multilabel(
                prob.view(),
                target.view(),
                0.5,
                &HausdorffOptions::hd95(spacing),
            )
            .unwrap();
            assert_close(&h, &nums(&case["hd95"]), 1e-5, "ml hd95");
            continue;
        }
        let k = case["num_classes"].as_u64().unwrap() as usize;
        let p = npy_f32(&format!("{name}_pred.npy"));
        let t = npy_f32(&format!("{name}_target.npy"));
        for inc in [false, true] {
            for ign in [true, false] {
                let key = format!("dice_bg{}_ignore{}", u8::from(inc), u8::from(ign));
                let d = dice_labels(
                    p.view(),
                    t.view(),
                    k,
                    &DiceOptions {
                        include_background: inc,
                        ignore_empty: ign,
                    },
                )
                .unwrap();
                assert_close(&d, &nums(&case[&key]), 1e-6, &format!("{name} {key}"));
            }
        }
        for pct in [Some(95.0), None] {
            for directed in [false, true] {
                let key = format!(
                    "hd_{}_directed{}",
                    pct.map_or("None".into(), |p: f64| p.to_string()),
                    u8::from(directed)
                );
                let opts = HausdorffOptions {
                    include_background: false,
                    percentile: pct,
                    spacing: spacing.clone(),
                    directed,
                };
                let h = hausdorff_labels(p.view(), t.view(), k, &opts).unwrap();
                assert_close(&h, &nums(&case[&key]), 1e-5, &format!("{name} {key}"));
            }
        }
        let opts = HausdorffOptions {
            include_background: true,
            percentile: Some(95.0),
            spacing: vec![],
            directed: false,
        };
        let h = hausdorff_labels(p.view(), t.view(), k, &opts).unwrap();
        assert_close(
            &h,
            &nums(&case["hd95_unit_spacing_bg1"]),
            1e-5,
            &format!("{name} hd95 unit"),
        );
    }
}

#[test]
fn slices_and_normalisation_match_numpy() {
    let g = golden();
    let s = &g["slices"];
    let image: Array4<f32> = npy_f32("sl_image.npy").into_dimensionality().unwrap();
    let label: Array3<f32> = npy_f32("sl_label.npy")
        .into_dimensionality::<Ix3>()
        .unwrap();
    for (norm_name, norm) in [
        ("minmax", Normalization::MinMax),
        (
            "percentile",
            Normalization::Percentile {
                lower: 0.5,
                upper: 99.5,
            },
        ),
    ] {
        let windows: Vec<(f64, f64)> = image
            .outer_iter()
            .map(|c| intensity_window(c, &norm).unwrap())
            .collect();
        for (c, w) in windows.iter().enumerate() {
            let want = nums(&s["windows"][norm_name][c]);
            assert_eq!(
                [w.0, w.1],
                [want[0], want[1]],
                "{norm_name} window of channel {c}: bit-exact with numpy"
            );
        }
        for axis in 0..3 {
            let want: ArrayD<u8> =
                ndarray_npy::read_npy(dir().join(format!("sl_{norm_name}_axis{axis}.npy")))
                    .unwrap();
            for i in 0..image.shape()[1 + axis] {
                for (c, &(lo, hi)) in windows.iter().enumerate() {
                    let got = to_u8(
                        display_slice(image.index_axis(Axis(0), c), axis, i)
                            .unwrap()
                            .view(),
                        lo,
                        hi,
                    );
                    let exp = want
                        .index_axis(Axis(0), i)
                        .index_axis(Axis(0), c)
                        .to_owned()
                        .into_dimensionality::<ndarray::Ix2>()
                        .unwrap();
                    assert_eq!(got, exp, "{norm_name} axis {axis} slice {i} channel {c}");
                }
            }
            let fg = select_slices(
                [16, 12, 10],
                Some(label.view()),
                axis,
                &SliceSelection::Foreground { min_voxels: 1 },
            )
            .unwrap();
            let want_fg: Vec<usize> = s[format!("foreground_axis{axis}")]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(fg, want_fg, "foreground slices on axis {axis}");
        }
    }
}

#[test]
fn written_pngs_have_the_numpy_pixel_values() {
    let image: Array4<f32> = npy_f32("sl_image.npy").into_dimensionality().unwrap();
    let label: Array4<f32> = npy_f32("sl_label.npy")
        .insert_axis(Axis(0))
        .into_dimensionality()
        .unwrap();
    let affine = Volume::diag_affine([0.8, 0.9, 2.5]);
    let (img, lab) = (Volume::new(image, affine), Volume::new(label, affine));
    let out = tempfile::tempdir().unwrap();
    for axis in 0..3 {
        let opts = SliceOptions {
            axis,
            selection: SliceSelection::Foreground { min_voxels: 1 },
            normalization: Normalization::Percentile {
                lower: 0.5,
                upper: 99.5,
            },
            ..SliceOptions::default()
        };
        let src = Provenance {
            case: "golden".into(),
            ..Provenance::default()
        };
        let recs = write_case_slices(&img, Some(&lab), &src, out.path(), &opts).unwrap();
        let want: ArrayD<u8> =
            ndarray_npy::read_npy(dir().join(format!("sl_percentile_axis{axis}.npy"))).unwrap();
        let want_lab: ArrayD<u8> =
            ndarray_npy::read_npy(dir().join(format!("sl_label_axis{axis}.npy"))).unwrap();
        assert!(!recs.is_empty());
        for r in &recs {
            for (c, f) in r.image_files.iter().enumerate() {
                let decoded = image::open(out.path().join(f)).unwrap().into_luma8();
                let (w, h) = decoded.dimensions();
                let px =
                    Array2::from_shape_vec((h as usize, w as usize), decoded.into_raw()).unwrap();
                assert_eq!(
                    px.into_dyn(),
                    want.index_axis(Axis(0), r.index).index_axis(Axis(0), c),
                    "{f}"
                );
            }
            let decoded = image::open(out.path().join(r.label_file.as_ref().unwrap()))
                .unwrap()
                .into_luma8();
            let (w, h) = decoded.dimensions();
            let px = Array2::from_shape_vec((h as usize, w as usize), decoded.into_raw()).unwrap();
            assert_eq!(px.into_dyn(), want_lab.index_axis(Axis(0), r.index));
        }
    }
}
