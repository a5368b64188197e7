//! libFuzzer target `onnx_meta` (see fuzz/README.md): `cargo +nightly fuzz run onnx_meta`.
#![no_main]
medmae_fuzz::libfuzzer_target!("onnx_meta");
