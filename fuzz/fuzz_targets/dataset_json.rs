//! libFuzzer target `dataset_json` (see fuzz/README.md): `cargo +nightly fuzz run dataset_json`.
#![no_main]
medmae_fuzz::libfuzzer_target!("dataset_json");
