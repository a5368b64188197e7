//! libFuzzer target `metaimage` (see fuzz/README.md): `cargo +nightly fuzz run metaimage`.
#![no_main]
medmae_fuzz::libfuzzer_target!("metaimage");
