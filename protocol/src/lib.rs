//! medmae's gRPC protocol, compiled from `proto/` with protox (no system protoc): the KServe v2 / Triton
//! `inference` package and medmae's own `medmae.v1` Segmentation service, plus the protocol-level constants a
//! client and the server must agree on. Depends on tonic and prost only, so a client needs neither ONNX Runtime nor
//! tract.

use std::path::Path;

/// KServe v2 / Triton `inference` package.
pub mod inference {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("inference");
}

/// medmae's own services.
pub mod medmae_v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("medmae.v1");
}

/// Encoded `FileDescriptorSet` of every medmae proto (for gRPC server reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/medmae_descriptor.bin"));

/// Default gRPC message limit of server and client: 256 MiB (gRPC's own default of 4 MiB is smaller than one 128³
/// float volume).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 << 20;

/// Bytes per upload or response chunk of the Segmentation stream.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The upload format of a volume file, from its extension (`.nii.gz`, `.nii`, `.mha`; case-insensitive); `None`
/// for anything else (DICOM inputs are recognised by content, not by name).
pub fn format_for_path(path: &Path) -> Option<medmae_v1::VolumeFormat> {
    use medmae_v1::VolumeFormat;
    let n = path.file_name()?.to_str()?.to_ascii_lowercase();
    if n.ends_with(".nii.gz") {
        Some(VolumeFormat::NiftiGz)
    } else if n.ends_with(".nii") {
        Some(VolumeFormat::Nifti)
    } else if n.ends_with(".mha") {
        Some(VolumeFormat::Metaimage)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::medmae_v1::VolumeFormat;
    use super::*;

    #[test]
    fn formats_from_names() {
        assert_eq!(
            format_for_path(Path::new("/a/b.NII.GZ")),
            Some(VolumeFormat::NiftiGz)
        );
        assert_eq!(
            format_for_path(Path::new("b.nii")),
            Some(VolumeFormat::Nifti)
        );
        assert_eq!(
            format_for_path(Path::new("b.mha")),
            Some(VolumeFormat::Metaimage)
        );
        assert_eq!(format_for_path(Path::new("b.mhd")), None);
        assert_eq!(format_for_path(Path::new("dicom_dir")), None);
    }
}
