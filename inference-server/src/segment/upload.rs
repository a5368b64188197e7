//! Receiving a segmentation upload: chunks of an image file (kept in memory, never written to disk), a raw float32
//! volume with its geometry, or a DICOM series (a zip, or one message per file), each under the server's upload
//! limits; then loading it as a volume with `imaging`'s in-memory loaders.

use imaging::io::{self, LoadOptions};
use imaging::Volume;
use ndarray::Array4;
use tokio_stream::StreamExt;
use tonic::Streaming;

use crate::config::Limits;
use crate::dicom::DicomUpload;
use crate::error::ServeError;
use crate::ops::{accounting, UploadReservation};
use crate::proto::medmae_v1::{self as pb, segment_request::Payload, VolumeFormat};

/// A received upload, held in memory.
pub(super) enum Upload {
    /// A NIfTI or MetaImage (`.mha`) file's bytes.
    File {
        format: io::FileFormat,
        bytes: Vec<u8>,
    },
    Raw {
        geometry: pb::RawGeometry,
        bytes: Vec<u8>,
    },
    Dicom(DicomUpload),
}

/// The file format of a file upload (`None` for raw and DICOM uploads).
fn file_format(format: VolumeFormat) -> Result<Option<io::FileFormat>, ServeError> {
    match format {
        VolumeFormat::Nifti => Ok(Some(io::FileFormat::Nii)),
        VolumeFormat::NiftiGz => Ok(Some(io::FileFormat::NiiGz)),
        VolumeFormat::Metaimage => Ok(Some(io::FileFormat::Mha)),
        VolumeFormat::RawF32 | VolumeFormat::DicomZip | VolumeFormat::DicomFiles => Ok(None),
        VolumeFormat::Unspecified => Err(ServeError::invalid(
            "header.format is unspecified; set NIFTI, NIFTI_GZ, METAIMAGE, RAW_F32, DICOM_ZIP or DICOM_FILES",
        )),
    }
}

/// Receive the chunks that follow the header, enforcing the upload limits.
pub(super) async fn receive(
    stream: &mut Streaming<pb::SegmentRequest>,
    header: &pb::SegmentHeader,
    limits: &Limits,
    held: &mut UploadReservation,
) -> Result<Upload, ServeError> {
    let max_bytes = limits.max_upload_bytes;
    let max_message = limits.max_message_bytes;
    let format = VolumeFormat::try_from(header.format).map_err(|_| {
        ServeError::invalid(format!(
            "header.format {} is not a known VolumeFormat",
            header.format
        ))
    })?;
    let file = file_format(format)?;
    if header.total_bytes > max_bytes {
        return Err(ServeError::TooLarge(format!(
            "upload of {} bytes exceeds the server limit of {max_bytes} bytes",
            header.total_bytes
        )));
    }
    // A declared size is taken from the server's upload memory at once (and the buffer sized to it); bytes beyond
    // what is held are taken as they arrive.
    held.grow_to(header.total_bytes)?;
    if format == VolumeFormat::DicomFiles {
        return receive_files(stream, header, limits, held).await;
    }
    let mut total: u64 = 0;
    let next = async |stream: &mut Streaming<pb::SegmentRequest>,
                      total: &mut u64,
                      held: &mut UploadReservation|
           -> Result<Option<Vec<u8>>, ServeError> {
        match stream.next().await {
            None => Ok(None),
            Some(Err(s)) => Err(accounting::stream_error(s, max_message)),
            Some(Ok(pb::SegmentRequest {
                payload: Some(Payload::Chunk(c)),
            })) => {
                *total += c.len() as u64;
                if *total > max_bytes {
                    return Err(ServeError::TooLarge(format!(
                        "upload exceeds the server limit of {max_bytes} bytes"
                    )));
                }
                held.grow_to(*total)?;
                Ok(Some(c))
            }
            Some(Ok(pb::SegmentRequest {
                payload: Some(Payload::File(_)),
            })) => Err(ServeError::invalid(
                "`file` messages belong to DICOM_FILES uploads; this format is sent in `chunk` messages",
            )),
            Some(Ok(_)) => Err(ServeError::invalid(
                "only the first message may carry a header; later messages must be chunks",
            )),
        }
    };
    let geometry = if format == VolumeFormat::RawF32 {
        Some(
            header
                .raw_geometry
                .clone()
                .ok_or_else(|| ServeError::invalid("RAW_F32 uploads need header.raw_geometry"))?,
        )
    } else {
        None
    };
    let mut bytes = Vec::with_capacity(header.total_bytes as usize);
    while let Some(c) = next(stream, &mut total, held).await? {
        bytes.extend_from_slice(&c);
    }
    if let Some(geometry) = geometry {
        // An empty raw upload is refused by the size check against the declared geometry.
        return Ok(Upload::Raw { geometry, bytes });
    }
    if bytes.is_empty() {
        return Err(ServeError::invalid("the upload is empty"));
    }
    match (format, file) {
        (VolumeFormat::DicomZip, _) => Ok(Upload::Dicom(DicomUpload::Zip(bytes))),
        (_, Some(format)) => Ok(Upload::File { format, bytes }),
        (_, None) => Err(ServeError::Internal(format!(
            "upload format {format:?} has no receiver"
        ))),
    }
}

/// Receive a DICOM series sent as one `file` message per file, enforcing the file-count and byte limits.
async fn receive_files(
    stream: &mut Streaming<pb::SegmentRequest>,
    header: &pb::SegmentHeader,
    limits: &Limits,
    held: &mut UploadReservation,
) -> Result<Upload, ServeError> {
    let (max_bytes, max_files) = (limits.max_upload_bytes, limits.max_dicom_files);
    let too_many = |n: usize| {
        ServeError::TooLarge(format!(
            "DICOM upload of {n} files exceeds the server limit of {max_files} files"
        ))
    };
    if header.file_count as usize > max_files {
        return Err(too_many(header.file_count as usize));
    }
    let (mut files, mut total) = (Vec::new(), 0u64);
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|s| accounting::stream_error(s, limits.max_message_bytes))?;
        match msg.payload {
            Some(Payload::File(f)) => {
                total += f.len() as u64;
                if total > max_bytes {
                    return Err(ServeError::TooLarge(format!(
                        "DICOM upload exceeds the server limit of {max_bytes} bytes"
                    )));
                }
                held.grow_to(total)?;
                if files.len() == max_files {
                    return Err(too_many(max_files + 1));
                }
                files.push(f);
            }
            Some(Payload::Chunk(_)) => return Err(ServeError::invalid(
                "DICOM_FILES uploads send one whole file per `file` message, not `chunk` messages",
            )),
            _ => {
                return Err(ServeError::invalid(
                    "only the first message may carry a header; later messages must be files",
                ))
            }
        }
    }
    if files.is_empty() {
        return Err(ServeError::invalid("the DICOM upload holds no files"));
    }
    Ok(Upload::Dicom(DicomUpload::Files(files)))
}

/// The channels and spatial shape a `RAW_F32` header declares, checked (three positive dims, no overflow, at most
/// `max_voxels` values over all channels) before any byte of the upload is read.
pub(super) fn raw_shape(
    g: &pb::RawGeometry,
    max_voxels: u64,
) -> Result<(u64, [u64; 3]), ServeError> {
    let [x, y, z] = <[u64; 3]>::try_from(g.shape.as_slice()).map_err(|_| {
        ServeError::invalid(format!(
            "raw_geometry.shape needs 3 values (X, Y, Z), got {}",
            g.shape.len()
        ))
    })?;
    let c = u64::from(g.channels);
    let n = [c, x, y, z]
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n > 0)
        .ok_or_else(|| ServeError::invalid("raw_geometry has a zero or overflowing dimension"))?;
    if n > max_voxels {
        return Err(ServeError::TooLarge(format!(
            "volume of {n} voxels exceeds the server limit of {max_voxels}"
        )));
    }
    Ok((c, [x, y, z]))
}

/// Build a volume from a `RAW_F32` upload: geometry, voxel limit and byte count are validated first (public so the
/// fuzzer in `fuzz/` can drive it).
pub fn raw_volume(
    g: &pb::RawGeometry,
    bytes: &[u8],
    max_voxels: u64,
) -> Result<Volume, ServeError> {
    let (c, [x, y, z]) = raw_shape(g, max_voxels)?;
    let n = c * x * y * z;
    if bytes.len() as u64 != n * 4 {
        return Err(ServeError::invalid(format!(
            "raw upload is {} bytes; shape {c}x{x}x{y}x{z} float32 needs {}",
            bytes.len(),
            n * 4
        )));
    }
    let three = |v: &[f64], default: f64, field: &str| -> Result<[f64; 3], ServeError> {
        match v.len() {
            0 => Ok([default; 3]),
            3 => Ok([v[0], v[1], v[2]]),
            k => Err(ServeError::invalid(format!(
                "raw_geometry.{field} needs 3 values, got {k}"
            ))),
        }
    };
    let spacing = three(&g.spacing, 1.0, "spacing")?;
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(ServeError::invalid(format!(
            "raw_geometry.spacing must be positive, got {spacing:?}"
        )));
    }
    let origin = three(&g.origin, 0.0, "origin")?;
    let direction = match g.direction.len() {
        0 => [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        9 => [
            [g.direction[0], g.direction[1], g.direction[2]],
            [g.direction[3], g.direction[4], g.direction[5]],
            [g.direction[6], g.direction[7], g.direction[8]],
        ],
        k => {
            return Err(ServeError::invalid(format!(
                "raw_geometry.direction needs 9 values (row-major 3x3), got {k}"
            )))
        }
    };
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let shape = (c as usize, x as usize, y as usize, z as usize);
    let data =
        Array4::from_shape_vec(shape, data).map_err(|e| ServeError::Internal(e.to_string()))?;
    let affine = Volume::affine_from(spacing, origin, direction);
    // The geometry a file loader would refuse (non-finite origin, singular direction) is refused here too.
    io::check_affine(
        std::path::Path::new("raw upload"),
        "raw_geometry (spacing, origin, direction)",
        &affine,
    )
    .map_err(|e| ServeError::invalid(e.to_string()))?;
    Ok(Volume::new(data, affine))
}

/// Name under which errors about an uploaded file refer to it.
pub(super) const UPLOAD_NAME: &str = "uploaded volume";

/// Load the uploaded file from memory (a MetaImage upload must hold its data: `ElementDataFile = LOCAL`); errors
/// name "uploaded volume".
pub(super) fn load_upload(upload: &Upload, max_voxels: u64) -> Result<Volume, ServeError> {
    match upload {
        Upload::Raw { geometry, bytes } => raw_volume(geometry, bytes, max_voxels),
        Upload::Dicom(_) => Err(ServeError::Internal(
            "a DICOM upload reached the volume loader".into(),
        )),
        Upload::File { format, bytes } => {
            let opts = LoadOptions {
                max_voxels,
                ..LoadOptions::default()
            };
            io::load_bytes(bytes, *format, UPLOAD_NAME, &opts).map_err(|e| match e {
                imaging::ImagingError::TooLarge { .. } => ServeError::TooLarge(e.to_string()),
                _ => ServeError::invalid(e.to_string()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_volume_checks_geometry_and_size() {
        let g = pb::RawGeometry {
            channels: 1,
            shape: vec![2, 3, 4],
            spacing: vec![1.0, 2.0, 3.0],
            origin: vec![],
            direction: vec![],
        };
        let bytes: Vec<u8> = (0..24).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let v = raw_volume(&g, &bytes, 100).unwrap();
        assert_eq!(v.spatial_shape(), [2, 3, 4]);
        assert_eq!(v.spacing(), [1.0, 2.0, 3.0]);
        assert_eq!(v.data[[0, 1, 2, 3]], 23.0);
        assert!(raw_volume(&g, &bytes[..90], 100)
            .unwrap_err()
            .to_string()
            .contains("90 bytes"));
        assert!(matches!(
            raw_volume(&g, &bytes, 10).unwrap_err(),
            ServeError::TooLarge(_)
        ));
        let bad = pb::RawGeometry {
            shape: vec![2, 3],
            ..g.clone()
        };
        assert!(raw_volume(&bad, &bytes, 100)
            .unwrap_err()
            .to_string()
            .contains("3 values"));
        let bad = pb::RawGeometry {
            spacing: vec![1.0, 0.0, 1.0],
            ..g.clone()
        };
        assert!(raw_volume(&bad, &bytes, 100)
            .unwrap_err()
            .to_string()
            .contains("spacing"));
        // Geometry a file loader refuses: a non-finite origin, a singular direction matrix.
        for (bad, expected) in [
            (
                pb::RawGeometry {
                    origin: vec![0.0, f64::NAN, 0.0],
                    ..g.clone()
                },
                "affine entry [1][3] is NaN",
            ),
            (
                pb::RawGeometry {
                    // Two equal columns (voxel axes 0 and 1 both along x).
                    direction: vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                    ..g.clone()
                },
                "singular",
            ),
        ] {
            let e = raw_volume(&bad, &bytes, 100).unwrap_err();
            assert!(
                matches!(&e, ServeError::InvalidArgument(m) if m.contains("raw_geometry") && m.contains(expected)),
                "{e}"
            );
        }
    }
}
