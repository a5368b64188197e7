//! `medmae dataset create` (an images folder and a labels folder → an MSD-style dataset folder with `dataset.json`)
//! and `medmae dataset check` (the problems of a dataset folder, before a training run finds them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use imaging::datasets::audit::{audit, Audit, Severity};
use imaging::datasets::{decathlon, folders, Case};
use imaging::fingerprint::FingerprintOptions;
use imaging::io::FileFormat;
use serde_json::json;

/// Arguments of `dataset create` (the command line's options, parsed by clap).
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    /// Folder of images (.nii, .nii.gz, .mha, .mhd; nnU-Net `_0000` channel files are grouped).
    #[arg(long)]
    pub images: PathBuf,
    /// Folder of label maps, named like their images (optionally with _seg, _label, _mask, _gt).
    #[arg(long)]
    pub labels: PathBuf,
    /// Modality per image channel, comma-separated (e.g. CT, or T1,T2); recorded in dataset.json.
    #[arg(long, value_delimiter = ',')]
    pub modality: Vec<String>,
    /// Class names, comma-separated, index = label value (default background, class1, ...).
    #[arg(long, value_delimiter = ',')]
    pub label_names: Vec<String>,
    /// Dataset name (default: the output folder's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Symlink the files instead of copying them.
    #[arg(long)]
    pub link: bool,
    /// Dataset folder to create.
    #[arg(short, long)]
    pub output: PathBuf,
}

fn print_problems(a: &Audit) {
    for p in &a.problems {
        let sev = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &p.case {
            Some(c) => eprintln!("{sev}: case {c}: {}", p.message),
            None => eprintln!("{sev}: {}", p.message),
        }
    }
}

/// Label values found in the scanned cases, with voxel counts.
fn found_labels(a: &Audit) -> BTreeMap<u32, u64> {
    let mut found = BTreeMap::new();
    for s in &a.scans {
        for (&v, &n) in &s.fingerprint.labels {
            *found.entry(v).or_insert(0) += n;
        }
    }
    found
}

/// The name of `path` inside the dataset: `<id><extension>` (`.mhd` files are converted to `.nii.gz`).
fn target_name(id: &str, path: &Path) -> Result<(String, bool)> {
    let fmt = FileFormat::from_path(path)
        .with_context(|| format!("{}: not an image file", path.display()))?;
    Ok(match fmt {
        FileFormat::Mhd => (format!("{id}.nii.gz"), true),
        other => (format!("{id}{}", other.extension()), false),
    })
}

/// Place `src` at `dst`: a symlink, a conversion (`.mhd` → NIfTI) or a copy; written under a temporary name and
/// renamed, so an interrupted run leaves no half file under the final name.
fn place(src: &Path, dst: &Path, convert: bool, link: bool) -> Result<()> {
    let tmp = dst.with_file_name(format!(
        ".{}.tmp",
        dst.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    let _ = std::fs::remove_file(&tmp);
    if convert {
        let v = imaging::io::load(src).with_context(|| format!("cannot read {}", src.display()))?;
        let dtype = crate::convert::parse_dtype("auto", &v)?;
        let tmp_nii = tmp.with_extension("nii.gz");
        imaging::io::save_nifti(&v, &tmp_nii, dtype)
            .with_context(|| format!("cannot write {}", tmp_nii.display()))?;
        std::fs::rename(&tmp_nii, dst)
    } else if link {
        let abs = std::path::absolute(src)?;
        std::os::unix::fs::symlink(&abs, &tmp).and_then(|_| std::fs::rename(&tmp, dst))
    } else {
        std::fs::copy(src, &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, dst))
    }
    .with_context(|| format!("cannot write {}", dst.display()))
}

/// Write `cases` (with the ids as file names) into `<out>/<images_dir>` (and `labelsTr`); returns the dataset.json
/// entries.
fn write_cases(
    out: &Path,
    images_dir: &str,
    cases: &[Case],
    link: bool,
) -> Result<Vec<serde_json::Value>> {
    let mut entries = Vec::new();
    for c in cases {
        let mut images = Vec::new();
        for (ch, p) in c.images.iter().enumerate() {
            let stem = if c.images.len() > 1 {
                format!("{}_{ch:04}", c.id)
            } else {
                c.id.clone()
            };
            let (name, convert) = target_name(&stem, p)?;
            place(p, &out.join(images_dir).join(&name), convert, link)?;
            images.push(format!("./{images_dir}/{name}"));
        }
        let image = if images.len() == 1 {
            json!(images[0])
        } else {
            json!(images)
        };
        entries.push(match &c.label {
            Some(l) => {
                let (name, convert) = target_name(&c.id, l)?;
                place(l, &out.join("labelsTr").join(&name), convert, link)?;
                json!({"image": image, "label": format!("./labelsTr/{name}")})
            }
            None => image,
        });
    }
    Ok(entries)
}

/// `medmae dataset create`.
pub fn create(a: &CreateArgs) -> Result<()> {
    let json_path = a.output.join("dataset.json");
    if json_path.exists() {
        bail!(
            "{} already exists: choose a new output folder (or remove it)",
            json_path.display()
        );
    }
    let m = folders::match_folders(&a.images, Some(&a.labels))?;
    if m.labelled.is_empty() {
        bail!(
            "no image in {} has a label map in {} (cases are matched by file name)",
            a.images.display(),
            a.labels.display()
        );
    }
    let channels = m.labelled[0].images.len();
    if !a.modality.is_empty() && a.modality.len() != channels {
        bail!(
            "--modality lists {} name(s), the images have {channels} channel file(s) per case",
            a.modality.len()
        );
    }
    let report = audit(
        &m.labelled,
        &m.unlabelled,
        &BTreeMap::new(),
        channels,
        &FingerprintOptions::default(),
    );
    print_problems(&report);
    if report.errors() > 0 {
        bail!(
            "{} error(s): nothing written (fix the files above and run again)",
            report.errors()
        );
    }
    let found = found_labels(&report);
    let max = found.keys().next_back().copied().unwrap_or(0);
    if max == 0 {
        bail!("the label maps hold no foreground (only the value 0)");
    }
    if a.label_names.len() > max as usize + 1 {
        eprintln!(
            "warning: {} label names for values 0..={max}; the extra names are declared but never found",
            a.label_names.len()
        );
    }
    let names: BTreeMap<u32, String> = (0..=max.max(a.label_names.len().saturating_sub(1) as u32))
        .map(|k| {
            let n = a.label_names.get(k as usize).cloned().unwrap_or_else(|| {
                if k == 0 {
                    "background".into()
                } else {
                    format!("class{k}")
                }
            });
            (k, n)
        })
        .collect();
    for sub in ["imagesTr", "labelsTr", "imagesTs"] {
        let d = a.output.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let training = write_cases(&a.output, "imagesTr", &m.labelled, a.link)?;
    let test = write_cases(&a.output, "imagesTs", &m.unlabelled, a.link)?;
    let name = a.name.clone().unwrap_or_else(|| {
        std::path::absolute(&a.output)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "dataset".into())
    });
    let mut doc = json!({
        "name": name,
        "description": format!("created by medmae dataset create from {} and {}", a.images.display(), a.labels.display()),
        "tensorImageSize": if channels > 1 { "4D" } else { "3D" },
        "labels": names.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "numTraining": training.len(),
        "numTest": test.len(),
        "training": training,
        "test": test,
    });
    if !a.modality.is_empty() {
        doc["modality"] = a
            .modality
            .iter()
            .enumerate()
            .map(|(i, m)| (i.to_string(), json!(m)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let tmp = a.output.join(".dataset.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&doc)?)
        .and_then(|_| std::fs::rename(&tmp, &json_path))
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    println!(
        "wrote {}: {} labelled case(s), {} unlabelled",
        json_path.display(),
        m.labelled.len(),
        m.unlabelled.len()
    );
    for (v, n) in &found {
        println!(
            "  label {v:>3} {:<24} {n} voxels",
            names.get(v).map_or("", String::as_str)
        );
    }
    if a.modality.is_empty() {
        println!(
            "  no --modality given: `medmae-train plan` guesses CT from negative (HU) intensities"
        );
    }
    Ok(())
}

/// `medmae dataset check`: print every problem; an error when there are errors.
pub fn check(dir: &Path, as_json: bool) -> Result<()> {
    let ds = decathlon::load_dir_or_file(dir).or_else(|e| match e {
        // Missing files are reported per case below; other parse errors end here.
        imaging::ImagingError::Format { ref msg, .. } if msg.contains("does not exist") => {
            let json = if dir.is_dir() {
                dir.join("dataset.json")
            } else {
                dir.to_path_buf()
            };
            let text = std::fs::read_to_string(&json)
                .with_context(|| format!("cannot read {}", json.display()))?;
            let root = json.parent().map(Path::to_path_buf).unwrap_or_default();
            Ok(decathlon::parse(&text, &json, &root)?)
        }
        e => Err(anyhow::Error::from(e)),
    })?;
    let labelled: Vec<Case> = ds
        .datalist
        .training
        .iter()
        .chain(&ds.datalist.validation)
        .cloned()
        .collect();
    let report = audit(
        &labelled,
        &ds.datalist.test,
        &ds.labels,
        ds.modality.len(),
        &FingerprintOptions::default(),
    );
    let found = found_labels(&report);
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dataset": ds.name,
                "cases": labelled.len(),
                "test_cases": ds.datalist.test.len(),
                "label_values": found,
                "errors": report.errors(),
                "problems": report.problems,
            }))?
        );
    } else {
        print_problems(&report);
        println!(
            "dataset `{}`: {} labelled case(s) ({} readable), {} test case(s); label values found {:?}; {} error(s), {} warning(s)",
            ds.name,
            labelled.len(),
            report.scans.len(),
            ds.datalist.test.len(),
            found.keys().collect::<Vec<_>>(),
            report.errors(),
            report.problems.len() - report.errors()
        );
    }
    if report.errors() > 0 {
        bail!("{} error(s) in {}", report.errors(), dir.display());
    }
    Ok(())
}
