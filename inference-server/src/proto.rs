//! Code generated from `proto/` by tonic-prost-build, plus the encoded descriptor set served by reflection.

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
