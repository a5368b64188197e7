//! DICOM target: one uploaded file (a `.dcm` slice or a `.zip` of slices) read the two ways users reach the DICOM
//! reader: the server's `medmae.v1.Segmentation` upload (`server::dicom::decode` as `DICOM_ZIP` or a one-file
//! `DICOM_FILES` upload, with the server's default limits) and `medmae info FILE` (the bytes saved as `.zip` or
//! `.dcm`, then `read_seg_summary` for a SEG or `read_series` with the library defaults, as the CLI does).

use std::path::PathBuf;

use imaging::dicom;
use server::config::Limits;
use server::dicom::DicomUpload;

use super::{seed_bytes, server_limits, Env, Target};
use crate::mutate::Hints;

/// Tags worth inserting: image geometry, pixel description and transfer syntax.
const DICOM_DICT: &[&str] = &[
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.5.1.4.1.1.66.4",
    "DICM",
    "\u{28}\u{0}\u{10}\u{0}",
    "\u{28}\u{0}\u{11}\u{0}",
    "\u{28}\u{0}\u{100}",
    "\u{e0}\u{7f}\u{10}\u{0}",
    "OW",
    "UL",
    "SQ",
    "\u{ff}\u{ff}\u{ff}\u{ff}",
];

/// The server upload and the CLI file read of one input.
pub struct Dicom {
    seeds: Vec<Vec<u8>>,
    limits: Limits,
    zip: PathBuf,
    dcm: PathBuf,
}

impl Dicom {
    /// Seeds: `seeds/dicom` (a 3-slice SimpleITK series and its zip).
    pub fn new(env: &Env, work: PathBuf) -> Result<Self, String> {
        // One folder per scratch file: `read_series` of a file reads only that file, but keep them apart anyway.
        let (zdir, ddir) = (work.join("zip"), work.join("dcm"));
        for d in [&zdir, &ddir] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(Self {
            seeds: seed_bytes(env, "dicom", &[".dcm", ".zip"])?,
            limits: server_limits(env)?,
            zip: zdir.join("upload.zip"),
            dcm: ddir.join("slice.dcm"),
        })
    }

    /// `medmae info PATH` on the saved bytes: a SEG is summarised, anything else read as a series.
    fn cli(&self, input: &[u8]) -> Result<usize, String> {
        let path = if input.starts_with(b"PK") {
            &self.zip
        } else {
            &self.dcm
        };
        std::fs::write(path, input).map_err(|e| format!("scratch write: {e}"))?;
        if dicom::is_seg_file(path) {
            return dicom::read_seg_summary(path)
                .map(|_| 0)
                .map_err(|e| e.to_string());
        }
        if !dicom::looks_like_dicom(path) {
            return Err("not DICOM".into());
        }
        dicom::read_series(path, None)
            .map(|v| v.data.len())
            .map_err(|e| e.to_string())
    }
}

impl Target for Dicom {
    fn name(&self) -> &'static str {
        "dicom"
    }
    fn hints(&self) -> Hints {
        Hints {
            dict: DICOM_DICT,
            head: 700,
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let upload = if input.starts_with(b"PK") {
            DicomUpload::Zip(input.to_vec())
        } else {
            DicomUpload::Files(vec![input.to_vec()])
        };
        let served = server::dicom::decode(upload, "", &self.limits).map_err(|e| e.to_string());
        if let Ok(s) = &served {
            assert!(
                s.volume.data.len() as u64 <= self.limits.max_voxels,
                "a volume over the server's voxel cap was returned"
            );
        }
        let cli = self.cli(input);
        if let Ok(n) = cli {
            assert!(
                n as u64 <= imaging::io::DEFAULT_MAX_VOXELS,
                "a volume over the default voxel cap was returned"
            );
        }
        match (served, cli) {
            (Err(a), Err(b)) => Err(format!("{a} / {b}")),
            _ => Ok(()),
        }
    }
}
