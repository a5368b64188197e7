//! libFuzzer target `model_json` (see fuzz/README.md): `cargo +nightly fuzz run model_json`.
#![no_main]
medmae_fuzz::libfuzzer_target!("model_json");
