//! Your own data in one step (README "Your own data"), with no `--set` and no hand-written config:
//! - a dataset made here — four ellipsoid phantoms (MR-like intensities, different spacings) and one real MRI shipped
//!   by Debian's `insighttoolkit5-examples` (`KmeansTest_T1UCharRaw.nii.gz`, stored LSA, 2×2×3 mm, labelled with its
//!   skull-strip mask), as separate `images/` and `labels/` folders — goes through `medmae dataset create` →
//!   `medmae dataset check` → `medmae-train plan --preset tiny` → `pretrain` → `finetune` → `evaluate`; the planned
//!   spacing, normalisation, classes and split are asserted, the pictures' sizes checked and the Dice reported;
//! - plan-only on CT phantoms: the window is the foreground's 0.5–99.5 percentiles as numpy computes them, and three
//!   cases give a held-out validation case.

use std::path::{Path, PathBuf};
use std::process::Command;

use imaging::io::NiftiDtype;
use imaging::synthetic::{phantom, PhantomConfig};
use imaging::Volume;
use medmae_tests::{bin, run};

const ITK: &str = "/usr/share/doc/insighttoolkit5-examples/examples/Data";

/// One foreground class (an ellipsoid) on a noisy background; `scale`·v + `offset` maps the phantom's 0..1
/// intensities to the modality's range.
fn write_phantom(dir: &Path, id: &str, seed: u64, spacing: [f64; 3], scale: f32, offset: f32) {
    let cfg = PhantomConfig::new([40, 28, 40], spacing, 1, 1).with_radius_fraction([0.2, 0.3]);
    let p = phantom(&cfg, seed).unwrap();
    let img = Volume::new(p.image.data.mapv(|v| v * scale + offset), p.image.affine);
    imaging::io::save_nifti(
        &img,
        &dir.join("images").join(format!("{id}.nii.gz")),
        NiftiDtype::F32,
    )
    .unwrap();
    let lab = dir.join("labels").join(format!("{id}_seg.nii.gz"));
    imaging::io::save_nifti(&p.label, &lab, NiftiDtype::U8).unwrap();
}

/// The real MRI with its skull-strip mask (values 4–6 inside the brain) as label 1, on the image's grid.
fn write_real(dir: &Path) {
    let itk = Path::new(ITK);
    assert!(
        itk.is_dir(),
        "{ITK} is missing: install the Debian package insighttoolkit5-examples (scripts/setup)"
    );
    std::fs::copy(
        itk.join("KmeansTest_T1UCharRaw.nii.gz"),
        dir.join("images/kmeans.nii.gz"),
    )
    .unwrap();
    let mask = imaging::io::load(&itk.join("KmeansTest_T1RawSkullStrip.nii.gz")).unwrap();
    let brain = Volume::new(
        mask.data.mapv(|v| f32::from(u8::from(v > 0.0))),
        mask.affine,
    );
    imaging::io::save_nifti(&brain, &dir.join("labels/kmeans.nii.gz"), NiftiDtype::U8).unwrap();
}

fn folders(t: &Path) -> PathBuf {
    let src = t.join("src");
    std::fs::create_dir_all(src.join("images")).unwrap();
    std::fs::create_dir_all(src.join("labels")).unwrap();
    src
}

fn yaml(path: &Path) -> yaml_serde::Value {
    yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &yaml_serde::Value) -> Vec<f64> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The newest PNG in `dir` whose name starts with `prefix`.
fn png(dir: &Path, prefix: &str) -> image::RgbImage {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    files.sort();
    let last = files
        .last()
        .unwrap_or_else(|| panic!("no {prefix}*.png in {}", dir.display()));
    image::open(last).unwrap().to_rgb8()
}

#[test]
fn own_data_create_check_plan_pretrain_finetune_evaluate() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = folders(t);
    let spacings = [
        [2.0, 3.0, 2.0],
        [2.0, 2.5, 2.0],
        [1.5, 3.0, 2.0],
        [2.0, 3.0, 2.5],
    ];
    for (i, sp) in spacings.iter().enumerate() {
        write_phantom(&src, &format!("ph{i}"), 10 + i as u64, *sp, 200.0, 0.0);
    }
    write_real(&src);

    let ds = t.join("dataset");
    let out = run(Command::new(bin("medmae"))
        .args([
            "dataset",
            "create",
            "--modality",
            "MR",
            "--label-names",
            "background,foreground",
        ])
        .arg("--images")
        .arg(src.join("images"))
        .arg("--labels")
        .arg(src.join("labels"))
        .arg("-o")
        .arg(&ds));
    assert!(out.contains("5 labelled case(s)"), "{out}");
    let check = Command::new(bin("medmae"))
        .args(["dataset", "check"])
        .arg(&ds)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    assert!(
        stderr.contains("mixed orientations: LSA (1 case(s), e.g. kmeans), RAS (4 case(s)"),
        "{stderr}"
    );

    let plan = t.join("plan");
    let table = run(Command::new(bin("medmae-train"))
        .args(["plan", "--preset", "tiny", "--device", "cpu", "--dataset"])
        .arg(&ds)
        .arg("--out")
        .arg(&plan));
    println!("{table}");
    let u = yaml(&plan.join("unetr.yaml"));
    let m = yaml(&plan.join("mae.yaml"));
    let vt = &u["data"]["val_transforms"];
    assert_eq!(vt[0]["name"], "Orientation");
    assert_eq!(
        floats(&vt[1]["pixdim"]),
        [2.0, 3.0, 2.0],
        "median RAS spacing"
    );
    assert_eq!(vt[2]["name"], "NormalizeIntensity", "MR: z-score");
    assert_eq!(vt[2]["nonzero"], true);
    assert_eq!(u["model"]["out_channels"], 2);
    assert_eq!(
        u["data"]["labels"],
        yaml_serde::from_str::<yaml_serde::Value>("[background, foreground]").unwrap()
    );
    assert_eq!(
        (u["data"]["num_folds"].as_u64(), u["data"]["fold"].as_u64()),
        (Some(5), Some(0)),
        "5 cases: folds"
    );
    assert_eq!(floats(&u["model"]["encoder"]["img_size"]), [32.0; 3]);
    assert_eq!(
        m["data"]["val_transforms"], u["data"]["val_transforms"],
        "one preprocessing"
    );
    let fp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan.join("fingerprint.json")).unwrap())
            .unwrap();
    assert_eq!(fp["cases"].as_array().unwrap().len(), 5);
    assert_eq!(fp["labels"]["1"]["cases"], 5);
    assert_eq!(fp["orientations"]["LSA"], 1);
    assert!(table.contains("kmeans") && table.contains("LSA"), "{table}");

    let train = |sub: &str| {
        run(Command::new(bin("medmae-train"))
            .arg(sub)
            .arg("--config")
            .arg(plan.join(if sub == "pretrain" {
                "mae.yaml"
            } else {
                "unetr.yaml"
            })))
    };
    train("pretrain");
    let recon = png(&plan.join("runs/mae/images"), "reconstruction");
    assert!(
        recon.width() >= 3 * 256 && recon.height() >= 256,
        "{:?}",
        recon.dimensions()
    );
    train("finetune");
    let overlay = png(&plan.join("runs/unetr/images"), "overlay");
    assert!(
        overlay.width() >= 3 * 256 && overlay.height() >= 256,
        "{:?}",
        overlay.dimensions()
    );
    let report = train("evaluate");
    let eval: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(plan.join("runs/unetr/eval/eval.json")).unwrap(),
    )
    .unwrap();
    let mean = eval["mean_dice"].as_f64().expect("eval.json has mean_dice");
    println!(
        "own data (tiny CPU plan): mean Dice {mean:.4} on {}\n{report}",
        eval["cases"]
    );
    assert!((0.0..=1.0).contains(&mean), "{eval}");
    assert!(plan.join("runs/unetr/eval/eval_overlay.png").is_file());
}

/// numpy's 0.5 / 99.5 percentiles of the pooled foreground voxels of (image, label) pairs.
fn numpy_window(pairs: &[(PathBuf, PathBuf)]) -> [f64; 2] {
    let args: Vec<String> = pairs
        .iter()
        .flat_map(|(i, l)| [i.display().to_string(), l.display().to_string()])
        .collect();
    let code = "import sys, numpy as np, nibabel as nib\n\
                a = sys.argv[1:]\n\
                fg = np.concatenate([np.asarray(nib.load(i).get_fdata(dtype=np.float32))[np.asarray(nib.load(l).get_fdata()) > 0] for i, l in zip(a[0::2], a[1::2])])\n\
                print(*np.percentile(fg, [0.5, 99.5]))";
    let out = Command::new(medmae_test_support::python())
        .args(["-c", code])
        .args(&args)
        .output()
        .unwrap();
    medmae_test_support::assert_success(&out, "numpy percentiles");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    [v[0], v[1]]
}

#[test]
fn plan_ct_window_from_foreground_percentiles_and_held_out_split() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = folders(t);
    for i in 0..3 {
        write_phantom(
            &src,
            &format!("ct{i}"),
            30 + i,
            [0.8, 0.8, 2.0],
            1200.0,
            -1000.0,
        );
    }
    let plan = t.join("plan");
    run(Command::new(bin("medmae-train"))
        .args(["plan", "--preset", "tiny", "--modality", "CT", "--images"])
        .arg(src.join("images"))
        .arg("--labels")
        .arg(src.join("labels"))
        .arg("--out")
        .arg(&plan));
    let u = yaml(&plan.join("unetr.yaml"));
    let w = &u["data"]["val_transforms"][2];
    assert_eq!(w["name"], "ScaleIntensityRange", "CT: clip and scale");
    let pairs: Vec<(PathBuf, PathBuf)> = (0..3)
        .map(|i| {
            (
                src.join(format!("images/ct{i}.nii.gz")),
                src.join(format!("labels/ct{i}_seg.nii.gz")),
            )
        })
        .collect();
    let [lo, hi] = numpy_window(&pairs);
    let (a_min, a_max) = (w["a_min"].as_f64().unwrap(), w["a_max"].as_f64().unwrap());
    assert!(
        (a_min - lo).abs() < 1e-3 * (1.0 + lo.abs()),
        "a_min {a_min} vs numpy {lo}"
    );
    assert!(
        (a_max - hi).abs() < 1e-3 * (1.0 + hi.abs()),
        "a_max {a_max} vs numpy {hi}"
    );
    assert_eq!(
        (
            w["b_min"].as_f64(),
            w["b_max"].as_f64(),
            w["clip"].as_bool()
        ),
        (Some(0.0), Some(1.0), Some(true))
    );
    // Three cases: the last one is held out in datalist.json, which both configs read.
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan.join("datalist.json")).unwrap())
            .unwrap();
    let val = list["validation"].as_array().unwrap();
    assert_eq!(val.len(), 1);
    assert!(
        val[0]["image"].as_str().unwrap().ends_with("ct2.nii.gz"),
        "{list}"
    );
    assert_eq!(list["training"].as_array().unwrap().len(), 2);
    assert!(u["data"]["num_folds"].is_null());
    assert!(u["data"]["dataset"]["path"]
        .as_str()
        .unwrap()
        .ends_with("datalist.json"));
    // Median spacing of identical cases is theirs.
    assert_eq!(
        floats(&u["data"]["val_transforms"][1]["pixdim"]),
        [0.8, 0.8, 2.0]
    );
}
