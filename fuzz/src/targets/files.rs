//! Image-file targets: NIfTI-1 (`.nii` and `.nii.gz`) and MetaImage (`.mha`, `.mhd` with data files), read through
//! `imaging::io` with the server's options for untrusted files (voxel cap, confined data files). Oracle beyond "no
//! panic": a file that loads must also probe, with the same number of values.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use imaging::io::{self, LoadOptions};

use super::{read_dir, seed_files, Env, Target, MAX_SEED_BYTES};
use crate::mutate::{Hints, Rng};

/// The options `medmae info` / `convert` use unless `--allow-external-data` is given: the library defaults
/// (voxel cap, header cap, data files confined to the header's folder).
fn opts() -> LoadOptions {
    LoadOptions::default()
}

/// Probe and load `path`; a loaded file must probe to the same value count.
fn probe_and_load(path: &Path) -> Result<(), String> {
    let h = io::probe_with(path, &opts());
    let v = io::load_with(path, &opts());
    match (h, v) {
        (Ok(h), Ok(v)) => {
            assert_eq!(
                h.len(),
                v.data.len() as u64,
                "probe and load disagree on the value count"
            );
            assert_eq!(
                h.shape,
                v.spatial_shape(),
                "probe and load disagree on the shape"
            );
            Ok(())
        }
        (Err(e), Ok(_)) => panic!("load succeeded but probe failed: {e}"),
        (_, Err(e)) => Err(e.to_string()),
    }
}

/// NIfTI-1 header fields `(offset, width)`: sizeof_hdr, dim[0..8], intent, datatype, bitpix, slice_start,
/// pixdim[0..8], vox_offset, scl_slope/inter, slice_end/code, xyzt_units, qform/sform codes, quatern_*, srow_*.
const NIFTI_FIELDS: &[(usize, usize)] = &[
    (0, 4),
    (40, 2),
    (42, 2),
    (44, 2),
    (46, 2),
    (48, 2),
    (50, 2),
    (52, 2),
    (54, 2),
    (68, 2),
    (70, 2),
    (72, 2),
    (74, 2),
    (76, 4),
    (80, 4),
    (84, 4),
    (88, 4),
    (92, 4),
    (96, 4),
    (100, 4),
    (104, 4),
    (108, 4),
    (112, 4),
    (116, 4),
    (120, 2),
    (122, 1),
    (123, 1),
    (252, 2),
    (254, 2),
    (256, 4),
    (260, 4),
    (264, 4),
    (268, 4),
    (272, 4),
    (276, 4),
    (280, 4),
    (284, 4),
    (288, 4),
    (292, 4),
    (296, 4),
    (300, 4),
    (312, 4),
    (324, 4),
    (344, 4),
    (348, 4),
];

/// The NIfTI target: raw `.nii` mutants, a share of them gzip-compressed into `.nii.gz`.
pub struct Nifti {
    seeds: Vec<Vec<u8>>,
    nii: PathBuf,
    gz: PathBuf,
}

fn gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_SEED_BYTES + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() as u64 <= MAX_SEED_BYTES).then_some(out)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

impl Nifti {
    /// Seeds: `seeds/nifti` plus the NIfTI files of the extra folders (gzip ones decompressed).
    pub fn new(env: &Env, work: PathBuf) -> Result<Self, String> {
        let mut files = seed_files(env, "nifti", &[".nii", ".nii.gz"])?;
        for d in &env.extra {
            files.extend(read_dir(d, &[".nii", ".nii.gz"]));
        }
        let seeds = files
            .into_iter()
            .filter_map(|(_, b)| {
                if b.starts_with(&[0x1f, 0x8b]) {
                    gunzip(&b)
                } else {
                    Some(b)
                }
            })
            .collect();
        Ok(Self {
            seeds,
            nii: work.join("f.nii"),
            gz: work.join("f.nii.gz"),
        })
    }
}

impl Target for Nifti {
    fn name(&self) -> &'static str {
        "nifti"
    }
    fn hints(&self) -> Hints {
        Hints {
            fields: NIFTI_FIELDS,
            head: 352,
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let path = if input.starts_with(&[0x1f, 0x8b]) {
            &self.gz
        } else {
            &self.nii
        };
        std::fs::write(path, input).map_err(|e| format!("scratch write: {e}"))?;
        probe_and_load(path)
    }
    fn post(&self, mutant: Vec<u8>, rng: &mut Rng) -> Vec<u8> {
        if rng.chance(0.25) {
            let mut z = gzip(&mutant);
            if rng.chance(0.2) && !z.is_empty() {
                // Damage the compressed stream too (CRC, length, deflate blocks).
                let at = rng.below(z.len());
                z[at] ^= 1 << rng.below(8);
            }
            z
        } else {
            mutant
        }
    }
}

const META_DICT: &[&str] = &[
    "ObjectType = Image",
    "NDims = 3",
    "NDims = 4",
    "NDims = 0",
    "DimSize = 4 4 4",
    "DimSize = 2 3",
    "DimSize = 0 4 4",
    "DimSize = 4294967295 4294967295 4",
    "ElementType = MET_FLOAT",
    "ElementType = MET_UCHAR",
    "ElementType = MET_DOUBLE",
    "ElementType = MET_SHORT",
    "ElementType = MET_ULONG_LONG",
    "ElementType = MET_STRING",
    "ElementSpacing = 1 1 1",
    "ElementSpacing = 0 -1 nan",
    "Offset = 0 0 0",
    "TransformMatrix = 1 0 0 0 1 0 0 0 1",
    "TransformMatrix = 0 0 0 0 0 0 0 0 0",
    "BinaryData = True",
    "BinaryDataByteOrderMSB = True",
    "CompressedData = True",
    "CompressedDataSize = 5",
    "ElementNumberOfChannels = 3",
    "ElementNumberOfChannels = 0",
    "HeaderSize = -1",
    "HeaderSize = 99999",
    "ElementDataFile = LOCAL",
    "ElementDataFile = ../../../etc/passwd",
    "ElementDataFile = ../bait.raw",
    "ElementDataFile = LIST\n../bait.raw",
    "../bait.raw",
    "./../h/../bait.raw",
    "DimSize = 16 16 16",
    "ElementDataFile = /etc/passwd",
    "ElementDataFile = LIST",
    "ElementDataFile = LIST 2D",
    "ElementDataFile = slice%03d.raw 1 4 1",
    "ElementDataFile = /dev/zero",
    "AnatomicalOrientation = RAI",
    "CenterOfRotation = 0 0 0",
    " = ",
    "=",
    "\r\n",
];

/// The MetaImage target: `.mha` (LOCAL data) or `.mhd` (data files beside it, copied from the seeds' folders).
pub struct MetaImage {
    seeds: Vec<Vec<u8>>,
    mha: PathBuf,
    mhd: PathBuf,
    bait: Bait,
    head: usize,
}

/// The `ElementDataFile` value of a header, if any.
fn data_file(header: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&header[..header.len().min(8192)]);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "ElementDataFile").then(|| v.trim().to_string())
    })
}

impl MetaImage {
    /// Seeds: `seeds/metaimage` plus the extra folders; `.mhd` data files are copied into the scratch folder.
    pub fn new(env: &Env, work: PathBuf) -> Result<Self, String> {
        let bait = Bait::new(&work)?;
        let work = work.join("h");
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let mut files = seed_files(env, "metaimage", &[".mha", ".mhd"])?;
        // The seed folder's data files (`.raw`, `.raw.gz`, slice lists) go beside the scratch header.
        for (p, b) in read_dir(&env.seeds.join("metaimage"), &[""]) {
            let n = p.to_string_lossy().to_ascii_lowercase();
            if !(n.ends_with(".mha") || n.ends_with(".mhd")) {
                if let Some(name) = p.file_name() {
                    std::fs::write(work.join(name), b)
                        .map_err(|e| format!("{}: {e}", work.display()))?;
                }
            }
        }
        for d in &env.extra {
            files.extend(read_dir(d, &[".mha", ".mhd"]));
        }
        let mut seeds = Vec::new();
        for (path, bytes) in files {
            match data_file(&bytes) {
                Some(f) if f != "LOCAL" && !f.starts_with("LIST") && !f.contains('%') => {
                    let src = path.parent().unwrap_or(Path::new(".")).join(&f);
                    let small = std::fs::metadata(&src)
                        .map(|m| m.len() <= 4 * MAX_SEED_BYTES)
                        .unwrap_or(false);
                    if !small || std::fs::copy(&src, work.join(&f)).is_err() {
                        continue;
                    }
                }
                _ => {}
            }
            seeds.push(bytes);
        }
        Ok(Self {
            seeds,
            mha: work.join("f.mha"),
            mhd: work.join("f.mhd"),
            bait,
            head: 512,
        })
    }
}

impl Target for MetaImage {
    fn name(&self) -> &'static str {
        "metaimage"
    }
    fn hints(&self) -> Hints {
        Hints {
            dict: META_DICT,
            text: true,
            head: self.head,
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let local = data_file(input).is_some_and(|f| f == "LOCAL");
        let path = if local { &self.mha } else { &self.mhd };
        std::fs::write(path, input).map_err(|e| format!("scratch write: {e}"))?;
        probe_and_load(path)?;
        self.bait.check(input, || probe_and_load(path));
        Ok(())
    }
}

/// A data file just outside the folder the fuzzed headers are written to (`work/bait.raw`, headers in `work/h/`).
/// Confinement is the default, so no header may read it: one that loads, but no longer loads once the bait is moved
/// away, read data from outside its folder (`ElementDataFile = ../bait.raw` and the like) — a finding.
pub struct Bait {
    path: PathBuf,
}

impl Bait {
    /// Size of the bait: the data of e.g. a 16×16×16 `MET_UCHAR` or 8×8×8 `MET_DOUBLE` image.
    pub const BYTES: usize = 4096;

    /// Write `work/bait.raw`.
    pub fn new(work: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
        let path = work.join("bait.raw");
        let bytes: Vec<u8> = (0..Self::BYTES).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// After `input` loaded: load it again with the bait moved away; a failure means the header read the bait.
    pub fn check(&self, input: &[u8], load: impl FnOnce() -> Result<(), String>) {
        // Every way to name the bait spells "bait" (pattern forms only add digits).
        if !input.windows(4).any(|w| w.eq_ignore_ascii_case(b"bait")) {
            return;
        }
        let away = self.path.with_extension("away");
        if std::fs::rename(&self.path, &away).is_err() {
            return;
        }
        let again = load();
        let _ = std::fs::rename(&away, &self.path);
        if let Err(e) = again {
            panic!(
                "a header read {} outside its folder although data files are confined by default ({e})",
                self.path.display()
            );
        }
    }
}
