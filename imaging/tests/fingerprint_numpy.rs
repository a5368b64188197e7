//! `imaging::fingerprint` against numpy/nibabel on a fixture written here: three CT-like cases (int16 Hounsfield
//! values, one stored LSA with anisotropic voxels), their label maps, and the pooled foreground / all-voxel
//! percentiles, mean and std — once with every voxel and once with the per-case stride sampling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use imaging::datasets::Case;
use imaging::fingerprint::{fingerprint, FingerprintOptions, IntensityStats, Modality};
use imaging::io::NiftiDtype;
use imaging::Volume;
use ndarray::Array4;
use rand::{Rng, SeedableRng};

fn write_case(
    dir: &Path,
    id: &str,
    shape: (usize, usize, usize),
    affine: [[f64; 4]; 4],
    seed: u64,
) -> Case {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (x, y, z) = shape;
    let mut img = Array4::<f32>::zeros((1, x, y, z));
    let mut lab = Array4::<f32>::zeros((1, x, y, z));
    for ((_, i, j, k), v) in img.indexed_iter_mut() {
        // Air around a soft-tissue body; a lesion (label 1) and a bone-like region (label 2) inside.
        let inside = i > 1 && i + 2 < x && j > 1 && j + 2 < y;
        *v = if inside {
            rng.random_range(-120..=180) as f32
        } else {
            rng.random_range(-1024..=-990) as f32
        };
        if inside && i < x / 2 && k < z / 2 {
            lab[[0, i, j, k]] = 1.0;
            *v = rng.random_range(20..=90) as f32;
        } else if inside && j > y - 4 {
            lab[[0, i, j, k]] = 2.0;
            *v = rng.random_range(300..=1200) as f32;
        }
    }
    let ip = dir.join(format!("{id}.nii.gz"));
    let lp = dir.join(format!("{id}_seg.nii.gz"));
    imaging::io::save_nifti(&Volume::new(img, affine), &ip, NiftiDtype::I16).unwrap();
    imaging::io::save_nifti(&Volume::new(lab, affine), &lp, NiftiDtype::U8).unwrap();
    Case {
        id: id.into(),
        images: vec![ip],
        label: Some(lp),
    }
}

fn reference(cap: usize, cases: &[Case]) -> serde_json::Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/fingerprint/ref_fingerprint.py");
    let files: Vec<&PathBuf> = cases
        .iter()
        .flat_map(|c| [&c.images[0], c.label.as_ref().unwrap()])
        .collect();
    let out = Command::new(medmae_test_support::python())
        .arg(&script)
        .arg(cap.to_string())
        .args(files)
        .output()
        .expect("run $MEDMAE_PYTHON");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn close(got: f64, want: &serde_json::Value, what: &str) {
    let w = want.as_f64().unwrap();
    assert!(
        (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
        "{what}: {got} vs numpy {w}"
    );
}

fn same_stats(got: &IntensityStats, want: &serde_json::Value, what: &str) {
    assert_eq!(got.count, want["count"].as_u64().unwrap(), "{what} count");
    for (g, k) in [
        (got.p00_5, "p00_5"),
        (got.p50, "p50"),
        (got.p99_5, "p99_5"),
        (got.mean, "mean"),
        (got.std, "std"),
        (got.min, "min"),
        (got.max, "max"),
    ] {
        close(g, &want[k], &format!("{what} {k}"));
    }
}

#[test]
fn fingerprint_matches_numpy_and_nibabel() {
    let t = tempfile::tempdir().unwrap();
    let lsa = [
        [-2.0, 0.0, 0.0, 10.0],
        [0.0, 0.0, 3.0, -4.0],
        [0.0, 2.0, 0.0, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let cases = vec![
        write_case(
            t.path(),
            "a",
            (20, 18, 12),
            Volume::diag_affine([0.8, 0.8, 2.5]),
            1,
        ),
        write_case(
            t.path(),
            "b",
            (16, 22, 10),
            Volume::diag_affine([0.9, 0.9, 2.0]),
            2,
        ),
        write_case(t.path(), "c", (14, 12, 16), lsa, 3),
    ];
    let declared: BTreeMap<u32, String> = [(0, "background"), (1, "lesion"), (2, "bone")]
        .map(|(k, v)| (k, v.to_string()))
        .into();
    for cap in [100_000, 300] {
        let opts = FingerprintOptions {
            max_samples_per_case: cap,
        };
        let fp = fingerprint("fixture", &cases, &declared, &["CT".into()], &opts).unwrap();
        let r = reference(cap, &cases);
        assert_eq!(fp.modality, vec![Modality::Ct]);
        for (c, rc) in fp.cases.iter().zip(r["cases"].as_array().unwrap()) {
            let v = |k: &str| -> Vec<f64> { serde_json::from_value(rc[k].clone()).unwrap() };
            assert_eq!(c.shape.map(|s| s as f64).to_vec(), v("shape"), "{}", c.id);
            assert_eq!(
                c.ras_shape.map(|s| s as f64).to_vec(),
                v("ras_shape"),
                "{}",
                c.id
            );
            for (g, w) in c
                .spacing
                .iter()
                .zip(v("zooms"))
                .chain(c.ras_spacing.iter().zip(v("ras_zooms")))
            {
                assert!((g - w).abs() < 1e-6, "{}: spacing {g} vs {w}", c.id);
            }
            assert_eq!(c.axcodes, rc["axcodes"].as_str().unwrap());
            let labels: BTreeMap<String, u64> =
                c.labels.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            let want: BTreeMap<String, u64> = serde_json::from_value(rc["labels"].clone()).unwrap();
            assert_eq!(labels, want, "{}", c.id);
        }
        assert_eq!(fp.cases[2].axcodes, "LSA");
        same_stats(
            fp.foreground[0].as_ref().unwrap(),
            &r["foreground"],
            &format!("foreground (cap {cap})"),
        );
        same_stats(
            fp.intensity[0].as_ref().unwrap(),
            &r["all"],
            &format!("all voxels (cap {cap})"),
        );
        assert_eq!(fp.labels[&2].name, "bone");
        assert_eq!(fp.labels[&1].cases, 3);
    }
}
