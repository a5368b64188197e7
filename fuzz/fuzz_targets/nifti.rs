//! libFuzzer target `nifti` (see fuzz/README.md): `cargo +nightly fuzz run nifti`.
#![no_main]
medmae_fuzz::libfuzzer_target!("nifti");
