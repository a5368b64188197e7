//! libFuzzer target `yaml_config` (see fuzz/README.md): `cargo +nightly fuzz run yaml_config`.
#![no_main]
medmae_fuzz::libfuzzer_target!("yaml_config");
