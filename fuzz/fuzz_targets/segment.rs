//! libFuzzer target `segment` (see fuzz/README.md): `cargo +nightly fuzz run segment`.
#![no_main]
medmae_fuzz::libfuzzer_target!("segment");
