//! The gRPC protocol (generated code and descriptor set) from the `medmae-protocol` crate, shared with
//! `medmae-client`.

pub use protocol::{inference, medmae_v1, FILE_DESCRIPTOR_SET};
