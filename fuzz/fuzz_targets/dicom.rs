//! libFuzzer target `dicom` (see fuzz/README.md): `cargo +nightly fuzz run dicom`.
#![no_main]
medmae_fuzz::libfuzzer_target!("dicom");
