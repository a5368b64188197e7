//! DICOM target: one uploaded file (a `.dcm` slice or a `.zip` of slices) through `imaging::dicom::read_series_memory`
//! with the server's untrusted-input options (file, byte and voxel caps; neutral names).

use std::path::PathBuf;

use imaging::dicom::{read_series_memory, DicomOptions};

use super::{seed_bytes, Env, Target, MAX_VOXELS};
use crate::mutate::Hints;

/// Tags worth inserting: image geometry, pixel description and transfer syntax.
const DICOM_DICT: &[&str] = &[
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50",
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

/// `read_series_memory` on one file.
pub struct Dicom {
    seeds: Vec<Vec<u8>>,
}

impl Dicom {
    /// Seeds: `seeds/dicom` (a 3-slice SimpleITK series and its zip).
    pub fn new(env: &Env) -> Result<Self, String> {
        Ok(Self {
            seeds: seed_bytes(env, "dicom", &[".dcm", ".zip"])?,
        })
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
        let name = if input.starts_with(b"PK") {
            "upload.zip"
        } else {
            "slice.dcm"
        };
        let opts = DicomOptions {
            max_files: 64,
            max_total_bytes: 8 << 20,
            max_voxels: MAX_VOXELS,
            neutral_names: true,
        };
        let s = read_series_memory(vec![(PathBuf::from(name), input.to_vec())], None, &opts)
            .map_err(|e| e.to_string())?;
        assert!(
            s.volume.data.len() as u64 <= MAX_VOXELS,
            "a volume over the voxel cap was returned"
        );
        Ok(())
    }
}
