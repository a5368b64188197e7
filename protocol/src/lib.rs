//! medmae's gRPC protocol, compiled from `proto/` with protox (no system protoc): the KServe v2 / Triton
//! `inference` package and medmae's own `medmae.v1` Segmentation service, plus the protocol-level constants a
//! client and the server must agree on. Depends on tonic and prost only, so a client needs neither ONNX Runtime nor
//! tract.

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

/// Encoded size of one upload or response chunk message of the Segmentation stream, framing included: 1 MiB, the
/// smallest message limit the server accepts, so a chunk fits every server and client setting.
pub const CHUNK_MESSAGE_BYTES: usize = 1 << 20;

/// Room for a chunk message's own framing (oneof field tag and length prefix: 5 bytes for a 1 MiB payload), kept
/// generous.
pub const CHUNK_FRAMING: usize = 64;

/// Payload bytes per chunk, so that payload and framing together are at most [`CHUNK_MESSAGE_BYTES`].
pub const CHUNK_BYTES: usize = CHUNK_MESSAGE_BYTES - CHUNK_FRAMING;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_chunk_message_fits_the_smallest_message_limit() {
        use prost::Message;
        let up = medmae_v1::SegmentRequest {
            payload: Some(medmae_v1::segment_request::Payload::Chunk(vec![
                7;
                CHUNK_BYTES
            ])),
        };
        assert!(
            up.encoded_len() <= CHUNK_MESSAGE_BYTES,
            "{}",
            up.encoded_len()
        );
        assert!(up.encoded_len() > CHUNK_BYTES);
        for down in [
            medmae_v1::segment_response::Payload::MaskChunk(vec![7; CHUNK_BYTES]),
            medmae_v1::segment_response::Payload::ProbabilitiesChunk(vec![7; CHUNK_BYTES]),
        ] {
            let m = medmae_v1::SegmentResponse {
                payload: Some(down),
            };
            assert!(
                m.encoded_len() <= CHUNK_MESSAGE_BYTES,
                "{}",
                m.encoded_len()
            );
        }
    }
}
