//! medmae-fuzz: a mutation fuzzer over every parser that takes outside bytes (NIfTI, MetaImage, dataset.json, the
//! training YAML config (`medmae-config`), model.json, ONNX metadata, the KServe and Segmentation request decoders).
//!
//! No coverage-guided engine builds here on the stable toolchain without network access to its tooling, so this
//! is an honest coverage-free harness: seeds are real files, mutants come from [`mutate`], every execution runs
//! under `catch_unwind` (a panic is a failure), a counting allocator bounds memory ([`alloc`]) and a watchdog
//! reports hangs. See `fuzz/README.md`.

pub mod alloc;
pub mod engine;
pub mod harness;
pub mod mutate;
pub mod targets;
