//! Inputs the fuzzer found, minimised by hand: each must now be rejected with an error (not a panic, not an
//! unbounded allocation).

use std::path::PathBuf;

use medmae_fuzz::targets::{self, Env};

#[global_allocator]
static ALLOC: medmae_fuzz::alloc::Counting = medmae_fuzz::alloc::Counting;

/// The allocation peaks measured here are process-wide: the tests take this lock so that none runs beside another.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn env() -> Env {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Env {
        seeds: here.join("seeds"),
        extra: Vec::new(),
        work: std::env::temp_dir().join(format!("medmae-fuzz-test-{}", std::process::id())),
    }
}

fn seed(path: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(path),
    )
    .unwrap()
}

#[test]
fn model_json_with_a_huge_decoder_depth_is_rejected_before_sizing_weights() {
    let _serial = serial();
    // Found by `model_json`: decoder_depth = i64::MAX passed validation, then expected_weights tried to allocate
    // one entry per block (a 1.5 GiB request).
    let card = seed("model_json/mae3d.json").replacen(
        "\"decoder_depth\": 2",
        "\"decoder_depth\": 9223372036854775807",
        1,
    );
    assert!(
        card.contains("9223372036854775807"),
        "the seed still has decoder_depth 2"
    );
    let err = spec::ModelCard::from_json(&card).unwrap_err();
    assert!(err.to_string().contains("mae.decoder.depth"), "{err}");
    let mut t = targets::make("model_json", &env()).unwrap();
    assert!(t.run(card.as_bytes()).is_err());
}

#[test]
fn yaml_config_with_a_huge_num_samples_is_rejected_without_overflow() {
    let _serial = serial();
    // Found by `yaml_config`: num_samples = i64::MAX overflowed batch_size × samples × accum_steps (used for the lr).
    let yaml = seed("yaml_config/demo_unetr3d.yaml");
    let mut t = targets::make("yaml_config", &env()).unwrap();
    t.run(yaml.as_bytes()).expect("the seed itself is valid");
    let bad = format!("#set data.train_transforms.1.num_samples=9223372036854775807\n{yaml}");
    let err = t.run(bad.as_bytes()).unwrap_err();
    assert!(
        err.contains("data.batch_size") || err.contains("num_samples"),
        "{err}"
    );
}

#[test]
fn every_target_accepts_its_seeds_and_survives_a_short_run() {
    let _serial = serial();
    let env = env();
    let dir = tempfile::tempdir().unwrap();
    for name in targets::NAMES {
        let mut t = targets::make(name, &env).unwrap();
        let s = medmae_fuzz::harness::fuzz(t.as_mut(), 300, 3, dir.path());
        assert!(s.failures.is_empty(), "{name}: {:?}", s.failures);
        assert!(
            s.seeds_rejected.is_empty(),
            "{name}: {:?}",
            s.seeds_rejected
        );
        assert!(
            s.accepted > 0 && s.rejected > 0,
            "{name}: accepted {} rejected {}",
            s.accepted,
            s.rejected
        );
    }
}

#[test]
fn onnx_metadata_entry_with_a_huge_declared_length_does_not_allocate_it() {
    let _serial = serial();
    // Found by `onnx_meta`: a metadata_props entry declaring ~256 MiB in a 1 KiB file made the exporter's
    // read_props allocate the declared length before reading.
    let input = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx_meta_huge_entry.bin"),
    )
    .unwrap();
    let mut t = targets::make("onnx_meta", &env()).unwrap();
    let live = medmae_fuzz::alloc::reset_peak();
    let _ = t.run(&input);
    let used = medmae_fuzz::alloc::peak().saturating_sub(live);
    assert!(
        used < 16 << 20,
        "parsing a {}-byte file allocated {} MiB",
        input.len(),
        used >> 20
    );
    let err = exporter::read_props(
        &mut std::io::Cursor::new(&input),
        std::path::Path::new("x.onnx"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn dicom_seeds_decode() {
    let _serial = serial();
    let mut t = targets::make("dicom", &env()).unwrap();
    for (i, s) in t.seeds().to_vec().iter().enumerate() {
        t.run(s).unwrap_or_else(|e| panic!("dicom seed {i}: {e}"));
    }
}

#[test]
fn dicom_elements_with_bad_declared_lengths_do_not_allocate_them() {
    let _serial = serial();
    // Found by `dicom`: (1) a 1 KiB Implicit VR file whose (0008,DC90) declares ~2.7 GB made dicom-parser reserve
    // the declared length before reading; (2) a 14-byte UL (0000,0000) made it read 12 bytes, advance by 14 and
    // take a later header's length (775 MB) from a UID's digits. imaging::dicom now walks the element headers first.
    let cases = [
        (
            "dicom_huge_element.bin",
            "(0008,DC90)",
            "declares 2743503993 bytes",
        ),
        (
            "dicom_misaligned_ul.bin",
            "(0000,0000)",
            "not a multiple of the 4-byte",
        ),
        // (3) libFuzzer: a transfer syntax UID padded with a tab is Implicit VR to dicom-object but was walked as
        // Explicit VR, so an 821 MiB length went unchecked.
        ("dicom_ts_uid_tab.bin", "", "declares"),
    ];
    let mut t = targets::make("dicom", &env()).unwrap();
    for (file, tag, what) in cases {
        let input = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(file),
        )
        .unwrap();
        let live = medmae_fuzz::alloc::reset_peak();
        let err = t.run(&input).unwrap_err();
        let used = medmae_fuzz::alloc::peak().saturating_sub(live);
        assert!(
            used < 16 << 20,
            "{file}: parsing a {}-byte file allocated {} MiB",
            input.len(),
            used >> 20
        );
        assert!(err.contains(tag) && err.contains(what), "{file}: {err}");
    }
}

#[test]
fn a_header_reading_data_outside_its_folder_is_refused_and_the_bait_oracle_fires() {
    let _serial = serial();
    // Issue 16: the CLI did not confine data files while the fuzz targets did. The targets now use the options users
    // get (confinement is the library default) and keep a bait file beside the header folder.
    let env = env();
    let mut t = targets::make("metaimage", &env).unwrap();
    let header = "ObjectType = Image\nNDims = 3\nDimSize = 16 16 16\nElementType = MET_UCHAR\n\
                  ElementDataFile = ../bait.raw\n";
    let err = t.run(header.as_bytes()).unwrap_err();
    assert!(err.contains("outside the header's directory"), "{err}");
    // The oracle itself: a load that needs the bait (reads it) is reported as a finding.
    let work = env.work.join("bait-oracle");
    let bait = medmae_fuzz::targets::Bait::new(&work).unwrap();
    let path = work.join("bait.raw");
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        bait.check(b"../bait.raw", || {
            std::fs::read(&path).map(|_| ()).map_err(|e| e.to_string())
        })
    }));
    let msg = found.unwrap_err();
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("outside its folder"), "{msg}");
    assert!(path.exists(), "the bait is put back");
    // A load that does not touch it passes.
    bait.check(b"../bait.raw", || Ok(()));
}

#[test]
fn dicom_file_declaring_a_large_image_without_pixels_does_not_allocate_it() {
    let _serial = serial();
    // Found by the libFuzzer `dicom` target (issue 16): 1785 x 65408 pixels declared in a 686-byte file with no Pixel
    // Data (and BitsAllocated hidden behind an element that ends the header scan) made imaging::dicom allocate the
    // 445 MiB volume before decoding the (absent) pixels.
    let input = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/dicom_huge_rows_no_pixels.bin"),
    )
    .unwrap();
    let mut t = targets::make("dicom", &env()).unwrap();
    let live = medmae_fuzz::alloc::reset_peak();
    let err = t.run(&input).unwrap_err();
    let used = medmae_fuzz::alloc::peak().saturating_sub(live);
    assert!(used < 16 << 20, "allocated {} MiB", used >> 20);
    assert!(err.contains("BitsAllocated"), "{err}");
}
