//! The hospital-side inference server: `medmae-serve` (KServe v2 + `medmae.v1.Segmentation` over tonic, on ONNX
//! Runtime or tract). Its clients use the `medmae-protocol` and `medmae-client` crates.
//!
//! Layout: `proto` (the generated gRPC code of `medmae-protocol`), `model` (ONNX metadata and the model repository), `backend` (the inference
//! engines behind one trait), `pipeline` (volume → mask, the same code the offline path calls), `kserve` and
//! `segment` (the two gRPC services), `dicom_node` (the optional DIMSE listener: C-STORE in, DICOM SEG out), `ops`
//! (auth, admission, metrics), `config` and `server` (wiring).

pub mod backend;
pub mod config;
pub mod dicom;
pub mod dicom_node;
pub mod error;
pub mod kserve;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod proto;
pub mod segment;
pub mod server;
pub mod state;

pub use error::ServeError;
