//! medmae-fuzz: a mutation fuzzer over every parser that takes outside bytes (NIfTI, MetaImage, dataset.json, the
//! training YAML config (`medmae-config`), model.json, ONNX metadata, the KServe and Segmentation request decoders).
//!
//! Two engines share the targets ([`targets`]): libFuzzer through `cargo fuzz` (coverage-guided; the binaries in
//! `fuzz_targets/` are glued on by [`engine`], with the structure-aware [`mutate`] as a custom mutator) and the
//! coverage-free loop of [`harness`] (`medmae-fuzz`, `fuzz/run`). In both a panic is a finding and a counting
//! allocator bounds memory ([`alloc`]). See `fuzz/README.md`.

pub mod alloc;
pub mod engine;
pub mod harness;
pub mod mutate;
pub mod targets;
