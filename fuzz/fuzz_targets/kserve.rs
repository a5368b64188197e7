//! libFuzzer target `kserve` (see fuzz/README.md): `cargo +nightly fuzz run kserve`.
#![no_main]
medmae_fuzz::libfuzzer_target!("kserve");
