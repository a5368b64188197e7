//! medmae-fuzz: a mutation fuzzer over every parser that takes outside bytes (NIfTI, MetaImage, dataset.json, the
//! trainer's YAML config, model.json, ONNX metadata, the KServe and Segmentation request decoders).
//!
//! No coverage-guided engine builds here on the stable toolchain without network access to its tooling, so this
//! is an honest coverage-free harness: seeds are real files, mutants come from [`mutate`], every execution runs
//! under `catch_unwind` (a panic is a failure), a counting allocator bounds memory ([`alloc`]) and a watchdog
//! reports hangs. See `fuzz/README.md`.

pub mod alloc;
pub mod harness;
pub mod mutate;
pub mod targets;

// The trainer's real config module (`trainer/src/config`), compiled without libtorch: its two crate-level
// dependencies (`crate::error`, `crate::device`) are provided by the small shims below.
#[path = "../../trainer/src/config/mod.rs"]
#[allow(clippy::all, missing_docs)]
pub mod config;
pub mod device;
pub mod error;
