//! Model-file and request targets: ONNX `metadata_props` (the exporter's streaming reader and the server's
//! `ModelProto` summary → `ModelInfo`), KServe `ModelInferRequest` (prost decode + the server's tensor validation),
//! and the `medmae.v1.Segmentation` upload stream (prost-decoded messages, then the server's raw-volume validation
//! or its file loading with untrusted-file options).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use imaging::io::{self, LoadOptions};
use prost::Message;
use server::kserve::tensor;
use server::model::{onnx, ModelInfo};
use server::proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use server::proto::inference::{InferTensorContents, ModelInferRequest};
use server::proto::medmae_v1::segment_request::Payload;
use server::proto::medmae_v1::{RawGeometry, SegmentHeader, SegmentRequest, VolumeFormat};

use server::config::Limits;
use server::dicom::DicomUpload;

use super::Bait;
use super::{seed_bytes, seed_files, server_limits, Env, Target};
use crate::mutate::Hints;

const MODEL_PATH: &str = "/fuzz/model.onnx";

/// Parse ONNX bytes both ways; `Ok` if either reader accepts them.
fn onnx_info(input: &[u8]) -> Result<ModelInfo, String> {
    let path = Path::new(MODEL_PATH);
    let summary = onnx::summarize(input, path).map_err(|e| e.to_string())?;
    ModelInfo::from_summary("m", "1", path, summary).map_err(|e| e.to_string())
}

const ONNX_DICT: &[&str] = &[
    "medmae.kind",
    "medmae.roi_size",
    "medmae.spatial_dims",
    "medmae.labels",
    "medmae.preprocessing",
    "medmae.inference",
    "medmae.card",
    "medmae.in_channels",
    "medmae.out_channels",
    "[16, 16, 16]",
    "[0]",
    "[-1, 16]",
    "null",
    "\"unetr\"",
    "99999999999",
    "{\"roi_size\": [1]}",
];

/// The exporter's `read_props` → `spec::OnnxMetadata` (the one reader), and the server's `summarize` → `ModelInfo`.
pub struct OnnxMeta {
    seeds: Vec<Vec<u8>>,
}

impl OnnxMeta {
    /// Seeds: `seeds/onnx_meta/*.onnx`.
    pub fn new(env: &Env) -> Result<Self, String> {
        Ok(Self {
            seeds: seed_bytes(env, "onnx_meta", &[".onnx"])?,
        })
    }
}

impl Target for OnnxMeta {
    fn name(&self) -> &'static str {
        "onnx_meta"
    }
    fn hints(&self) -> Hints {
        // `metadata_props` (field 14) is serialized after the graph: most mutations go to the last 4 KiB.
        Hints {
            dict: ONNX_DICT,
            tail: 4096,
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let path = Path::new(MODEL_PATH);
        let exported = exporter::read_props(&mut Cursor::new(input), path)
            .and_then(|m| exporter::metadata_from_props(&m, path))
            .map_err(|e| e.to_string());
        let served = onnx_info(input);
        match (exported, served) {
            (Err(a), Err(b)) => Err(format!("{a} / {b}")),
            _ => Ok(()),
        }
    }
}

fn demo_info(env: &Env) -> Result<ModelInfo, String> {
    let p = env.seeds.join("onnx_meta/demo.onnx");
    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    onnx_info(&bytes).map_err(|e| format!("{}: {e}", p.display()))
}

/// KServe `ModelInferRequest` bytes → prost decode → requested outputs and input tensor validation against the
/// demo model (input `[N, 1, 16, 16, 16]`), with the server's default voxel limit.
pub struct KServe {
    seeds: Vec<Vec<u8>>,
    info: ModelInfo,
    max_voxels: u64,
}

impl KServe {
    /// Seeds: valid requests for the demo model (raw and typed contents), encoded here.
    pub fn new(env: &Env) -> Result<Self, String> {
        let info = demo_info(env)?;
        let shape: Vec<i64> = info.input_shape(1).iter().map(|&d| d as i64).collect();
        let n: usize = info.input_shape(1).iter().product();
        let input = |contents| InferInputTensor {
            name: info.input.name.clone(),
            datatype: "FP32".into(),
            shape: shape.clone(),
            contents,
            ..Default::default()
        };
        let raw = ModelInferRequest {
            model_name: info.name.clone(),
            id: "req-1".into(),
            inputs: vec![input(None)],
            outputs: vec![InferRequestedOutputTensor {
                name: info.output.name.clone(),
                ..Default::default()
            }],
            raw_input_contents: vec![(0..n)
                .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
                .collect()],
            ..Default::default()
        };
        let typed = ModelInferRequest {
            model_name: info.name.clone(),
            inputs: vec![input(Some(InferTensorContents {
                fp32_contents: (0..n).map(|i| i as f32).collect(),
                ..Default::default()
            }))],
            ..Default::default()
        };
        Ok(Self {
            seeds: vec![raw.encode_to_vec(), typed.encode_to_vec()],
            info,
            max_voxels: server_limits(env)?.max_voxels,
        })
    }
}

impl Target for KServe {
    fn name(&self) -> &'static str {
        "kserve"
    }
    fn hints(&self) -> Hints {
        // Protobuf tags, lengths and varints sit at the start of each field; the tensor data is the long tail.
        Hints {
            head: 96,
            dict: &[
                "FP32",
                "FP16",
                "BYTES",
                "input",
                "logits",
                "\u{ff}\u{ff}\u{ff}\u{ff}\u{0f}",
            ],
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let req = ModelInferRequest::decode(input).map_err(|e| e.to_string())?;
        tensor::check_requested_outputs(&req, &self.info).map_err(|e| e.to_string())?;
        let a =
            tensor::decode_input(&req, &self.info, self.max_voxels).map_err(|e| e.to_string())?;
        assert_eq!(
            a.shape()[1..],
            self.info.input_shape(1)[1..],
            "decoded tensor does not have the model's shape"
        );
        Ok(())
    }
}

/// A Segment upload stream: `[u32 LE length][SegmentRequest]...`, first a header, then chunks, processed as the
/// server does (format check, size limit, raw-volume validation or file load with untrusted-file options).
pub struct Segment {
    seeds: Vec<Vec<u8>>,
    work: PathBuf,
    limits: Limits,
    bait: Bait,
}

fn frame(msgs: &[SegmentRequest]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        let b = m.encode_to_vec();
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&b);
    }
    out
}

fn header(format: VolumeFormat, raw: Option<RawGeometry>, total: u64) -> SegmentRequest {
    SegmentRequest {
        payload: Some(Payload::Header(SegmentHeader {
            model_name: "demo".into(),
            format: format as i32,
            raw_geometry: raw,
            total_bytes: total,
            overlap: 0.25,
            ..Default::default()
        })),
    }
}

fn chunks(bytes: &[u8], size: usize) -> Vec<SegmentRequest> {
    bytes
        .chunks(size)
        .map(|c| SegmentRequest {
            payload: Some(Payload::Chunk(c.to_vec())),
        })
        .collect()
}

impl Segment {
    /// Seeds: a RAW_F32 upload, and NIfTI / MetaImage uploads of the first seeds of those targets.
    pub fn new(env: &Env, work: PathBuf) -> Result<Self, String> {
        let geo = RawGeometry {
            channels: 1,
            shape: vec![4, 3, 2],
            spacing: vec![1.0, 1.5, 2.0],
            origin: vec![0.0, -1.0, 5.0],
            direction: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        };
        let raw: Vec<u8> = (0..24).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let mut seeds = vec![frame(
            &[
                vec![header(VolumeFormat::RawF32, Some(geo), 96)],
                chunks(&raw, 40),
            ]
            .concat(),
        )];
        let small = |t: &str, e: &[&str]| -> Result<Vec<u8>, String> {
            Ok(seed_bytes(env, t, e)?
                .into_iter()
                .min_by_key(Vec::len)
                .unwrap_or_default())
        };
        for (format, bytes) in [
            (VolumeFormat::Nifti, small("nifti", &[".nii"])?),
            (VolumeFormat::NiftiGz, small("nifti", &[".nii.gz"])?),
            (VolumeFormat::Metaimage, small("metaimage", &[".mha"])?),
        ] {
            seeds.push(frame(
                &[
                    vec![header(format, None, bytes.len() as u64)],
                    chunks(&bytes, 256),
                ]
                .concat(),
            ));
        }
        let dicom = seed_files(env, "dicom", &[".dcm", ".zip"])?;
        let (zips, slices): (Vec<_>, Vec<_>) = dicom
            .into_iter()
            .map(|(_, b)| b)
            .partition(|b| b.starts_with(b"PK"));
        if let Some(z) = zips.into_iter().min_by_key(Vec::len) {
            seeds.push(frame(
                &[
                    vec![header(VolumeFormat::DicomZip, None, z.len() as u64)],
                    chunks(&z, 4096),
                ]
                .concat(),
            ));
        }
        let total = slices.iter().map(|b| b.len() as u64).sum();
        let mut files = vec![header(VolumeFormat::DicomFiles, None, total)];
        files.extend(slices.into_iter().map(|b| SegmentRequest {
            payload: Some(Payload::File(b)),
        }));
        seeds.push(frame(&files));
        // Uploads go to `work/h/`, the bait beside that folder (see `Bait`).
        let bait = Bait::new(&work)?;
        let work = work.join("h");
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        Ok(Self {
            seeds,
            work,
            limits: server_limits(env)?,
            bait,
        })
    }
}

impl Target for Segment {
    fn name(&self) -> &'static str {
        "segment"
    }
    fn hints(&self) -> Hints {
        Hints {
            head: 64,
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let mut msgs = Vec::new();
        let mut rest = input;
        while rest.len() >= 4 {
            let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let body = &rest[4..];
            let n = n.min(body.len());
            msgs.push(SegmentRequest::decode(&body[..n]).map_err(|e| e.to_string())?);
            rest = &body[n..];
        }
        let mut it = msgs.into_iter();
        let Some(SegmentRequest {
            payload: Some(Payload::Header(h)),
        }) = it.next()
        else {
            return Err("the first message must carry the header".into());
        };
        let format =
            VolumeFormat::try_from(h.format).map_err(|_| format!("unknown format {}", h.format))?;
        let max = self.limits.max_upload_bytes;
        if h.total_bytes > max {
            return Err("upload over the limit".into());
        }
        if format == VolumeFormat::DicomFiles {
            return self.dicom_files(&h, it);
        }
        let mut bytes = Vec::new();
        for m in it {
            match m.payload {
                Some(Payload::Chunk(c)) => {
                    bytes.extend_from_slice(&c);
                    if bytes.len() as u64 > max {
                        return Err("upload over the limit".into());
                    }
                }
                _ => return Err("later messages must be chunks".into()),
            }
        }
        let name = match format {
            VolumeFormat::RawF32 => {
                let g = h.raw_geometry.ok_or("RAW_F32 needs raw_geometry")?;
                let v = server::segment::raw_volume(&g, &bytes, self.limits.max_voxels)
                    .map_err(|e| e.to_string())?;
                assert_eq!(
                    v.data.len() * 4,
                    bytes.len(),
                    "raw volume size differs from the upload"
                );
                return Ok(());
            }
            VolumeFormat::DicomZip => {
                if bytes.is_empty() {
                    return Err("the upload is empty".into());
                }
                return self.dicom(DicomUpload::Zip(bytes), &h.series);
            }
            VolumeFormat::Nifti => "upload.nii",
            VolumeFormat::NiftiGz => "upload.nii.gz",
            VolumeFormat::Metaimage => "upload.mha",
            VolumeFormat::Unspecified => return Err("format unspecified".into()),
            VolumeFormat::DicomFiles => unreachable!("handled above"),
        };
        if bytes.is_empty() {
            return Err("the upload is empty".into());
        }
        let path = self.work.join(name);
        std::fs::write(&path, &bytes).map_err(|e| format!("scratch write: {e}"))?;
        let opts = LoadOptions {
            max_voxels: self.limits.max_voxels,
            ..LoadOptions::default()
        };
        let load = || {
            io::load_with(&path, &opts)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        load()?;
        self.bait.check(&bytes, load);
        Ok(())
    }
}

impl Segment {
    /// A `DICOM_FILES` upload: one `file` message per file, under the server's file-count and byte limits.
    fn dicom_files(
        &self,
        h: &SegmentHeader,
        msgs: impl Iterator<Item = SegmentRequest>,
    ) -> Result<(), String> {
        let (max_bytes, max_files) = (self.limits.max_upload_bytes, self.limits.max_dicom_files);
        if h.file_count as usize > max_files {
            return Err("too many files".into());
        }
        let (mut files, mut total) = (Vec::new(), 0u64);
        for m in msgs {
            match m.payload {
                Some(Payload::File(f)) => {
                    total += f.len() as u64;
                    if total > max_bytes || files.len() == max_files {
                        return Err("upload over the limit".into());
                    }
                    files.push(f);
                }
                _ => return Err("later messages must be files".into()),
            }
        }
        if files.is_empty() {
            return Err("the DICOM upload holds no files".into());
        }
        self.dicom(DicomUpload::Files(files), &h.series)
    }

    /// The server's DICOM decoding of an upload.
    fn dicom(&self, upload: DicomUpload, series: &str) -> Result<(), String> {
        let s = server::dicom::decode(upload, series, &self.limits).map_err(|e| e.to_string())?;
        assert!(
            s.volume.data.len() as u64 <= self.limits.max_voxels,
            "a DICOM volume over the server's voxel cap was returned"
        );
        Ok(())
    }
}
