//! Golden tests: the transforms against MONAI 1.6.1 / nibabel outputs made by
//! `tests/golden/transforms/gen_transforms.py` (float ops ≤ 1e-5 relative, labels and shapes exact, affines ≤ 1e-6).

use std::path::PathBuf;

use imaging::orient::{axcodes, reorient};
use imaging::transforms::{
    ConvertToMultiChannelBasedOnBratsClasses, CropForeground, NormalizeIntensity,
    ScaleIntensityRange, Spacing, SpatialPad,
};
use imaging::{Sample, Volume};
use ndarray::Array4;
use serde_json::Value;
use spec::{Select, Source};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/transforms")
}

fn npy(name: &str) -> Array4<f32> {
    let p = dir().join(format!("{name}.npy"));
    ndarray_npy::read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn cases(group: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(dir().join("cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v[group]
        .as_array()
        .unwrap_or_else(|| panic!("no group {group}"))
        .clone()
}

fn mat(v: &Value) -> [[f64; 4]; 4] {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x = v[i][j].as_f64().unwrap();
        }
    }
    m
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// Max |got - want| / max(1, |want|), after checking shapes.
fn rel_err(got: &Array4<f32>, want: &Array4<f32>, what: &str) -> f64 {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    got.iter()
        .zip(want.iter())
        .map(|(&g, &w)| (f64::from(g) - f64::from(w)).abs() / f64::from(w.abs()).max(1.0))
        .fold(0.0, f64::max)
}

fn assert_close(got: &Array4<f32>, want: &Array4<f32>, tol: f64, what: &str) {
    let e = rel_err(got, want, what);
    assert!(e <= tol, "{what}: max relative error {e:e} > {tol:e}");
}

fn assert_affine(got: &[[f64; 4]; 4], want: &Value, what: &str) {
    let w = mat(want);
    let e = got
        .iter()
        .flatten()
        .zip(w.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        e <= 1e-6,
        "{what}: affine differs by {e:e}\n got {got:?}\nwant {w:?}"
    );
}

#[test]
fn orientation_matches_nibabel_and_monai() {
    let input = npy("orient_in");
    let cs = cases("orientation");
    assert_eq!(cs.len(), 12);
    for c in cs {
        let tag = c["case"].as_str().unwrap();
        let affine = mat(&c["affine"]);
        assert_eq!(
            axcodes(&affine).iter().collect::<String>(),
            c["axcodes"].as_str().unwrap(),
            "{tag}: axcodes"
        );
        let v = Volume::new(input.clone(), affine);
        let (out, op) = reorient(&v, c["target"].as_str().unwrap()).unwrap();
        assert_eq!(out.data, npy(tag), "{tag}: data");
        assert_affine(&out.affine, &c["out_affine"], tag);
        let back = op.invert(&out).unwrap();
        assert_eq!(back.data, v.data, "{tag}: inverse");
        assert_affine(&back.affine, &c["affine"], tag);
    }
}

#[test]
fn spacing_matches_monai() {
    for c in cases("spacing") {
        let tag = c["case"].as_str().unwrap();
        let affine = mat(&c["affine"]);
        let pixdim: Vec<f64> = c["pixdim"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let image = Volume::new(npy(&format!("{tag}_image_in")), affine);
        let label = Volume::new(npy(&format!("{tag}_label_in")), affine);
        let out = Spacing::new(&pixdim)
            .unwrap()
            .apply(Sample::new(image, Some(label)).unwrap())
            .unwrap();
        assert_close(&out.image.data, &npy(&format!("{tag}_image")), 1e-5, tag);
        assert_affine(&out.image.affine, &c["out_affine"], tag);
        let label = out.label.unwrap();
        assert_affine(&label.affine, &c["label_out_affine"], tag);
        let want = npy(&format!("{tag}_label"));
        assert_eq!(label.data.shape(), want.shape(), "{tag}: label shape");
        let wrong = label
            .data
            .iter()
            .zip(want.iter())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            wrong,
            0,
            "{tag}: {wrong} of {} label voxels differ",
            want.len()
        );
    }
}

#[test]
fn scale_intensity_range_matches_monai() {
    let input = npy("sir_in");
    for c in cases("scale_intensity_range") {
        let f = |k: &str| c[k].as_f64().unwrap() as f32;
        let t = ScaleIntensityRange::new(
            f("a_min"),
            f("a_max"),
            f("b_min"),
            f("b_max"),
            c["clip"].as_bool().unwrap(),
        )
        .unwrap();
        let mut v = Volume::new(input.clone(), Volume::diag_affine([1.0; 3]));
        t.apply_volume(&mut v);
        assert_close(
            &v.data,
            &npy(c["case"].as_str().unwrap()),
            1e-5,
            c["case"].as_str().unwrap(),
        );
    }
}

#[test]
fn normalize_intensity_matches_monai() {
    let input = npy("ni_in");
    for c in cases("normalize_intensity") {
        let t = NormalizeIntensity::new(
            c["nonzero"].as_bool().unwrap(),
            c["channel_wise"].as_bool().unwrap(),
        )
        .unwrap();
        let mut v = Volume::new(input.clone(), Volume::diag_affine([1.0; 3]));
        t.apply_volume(&mut v);
        assert_close(
            &v.data,
            &npy(c["case"].as_str().unwrap()),
            1e-5,
            c["case"].as_str().unwrap(),
        );
    }
}

#[test]
fn crop_foreground_matches_monai() {
    let (img, lab) = (npy("cf_image_in"), npy("cf_label_in"));
    for c in cases("crop_foreground") {
        let tag = c["case"].as_str().unwrap();
        let affine = mat(&c["affine"]);
        let source = if c["source"] == "label" {
            Source::Label
        } else {
            Source::Image
        };
        let select = match &c["select"] {
            Value::Null => Select::Gt { threshold: 0.0 },
            Value::String(s) if s == "nonzero" => Select::Nonzero,
            v => Select::Gt {
                threshold: v.as_f64().unwrap() as f32,
            },
        };
        let t = CropForeground::new(
            source,
            select,
            &usizes(&c["margin"]),
            &usizes(&c["k_divisible"]),
        )
        .unwrap();
        let s = Sample::new(
            Volume::new(img.clone(), affine),
            Some(Volume::new(lab.clone(), affine)),
        )
        .unwrap();
        let (out, _) = t.apply(s).unwrap();
        assert_eq!(out.image.data, npy(&format!("{tag}_image")), "{tag}: image");
        assert_eq!(
            out.label.as_ref().unwrap().data,
            npy(&format!("{tag}_label")),
            "{tag}: label"
        );
        assert_affine(&out.image.affine, &c["out_affine"], tag);
        assert_affine(&out.label.unwrap().affine, &c["out_affine"], tag);
    }
}

#[test]
fn spatial_pad_matches_monai() {
    let input = npy("sp_in");
    for c in cases("spatial_pad") {
        let tag = c["case"].as_str().unwrap();
        let out = SpatialPad::new(&usizes(&c["spatial_size"]))
            .unwrap()
            .apply_volume(&Volume::new(input.clone(), mat(&c["affine"])));
        assert_eq!(out.data, npy(tag), "{tag}");
        assert_affine(&out.affine, &c["out_affine"], tag);
    }
}

#[test]
fn brats_conversion_matches_monai() {
    let input = Volume::new(npy("brats_in"), Volume::diag_affine([1.0; 3]));
    for c in cases("brats") {
        let t =
            ConvertToMultiChannelBasedOnBratsClasses::new(c["et_label"].as_u64().unwrap() as u32)
                .unwrap();
        assert_eq!(
            t.convert(&input).unwrap().data,
            npy(c["case"].as_str().unwrap())
        );
    }
}
