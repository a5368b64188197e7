//! The segmentation service through `medmae-client`: the returned mask equals the offline pipeline's, errors on
//! corrupt uploads are INVALID_ARGUMENT and the server keeps serving.

use std::process::Command;

use client::{Client, ClientError, ClientOptions};
use server::backend::{BackendKind, BackendOptions};
use server::model::Repository;
use server::pipeline::{segment_volume, SegmentOptions};
use tonic::Code;

use crate::common::*;

#[test]
fn medmae_client_segment_equals_the_offline_pipeline() {
    let srv = start_server("repo", &["--backend", "ort"]);
    let out = tempfile::tempdir().unwrap();
    let mask_path = out.path().join("mask.nii.gz");
    let prob_path = out.path().join("prob.nii.gz");
    let volume = fixtures().join("volume.nii.gz");
    let client = |args: &[&str]| {
        let o = Command::new(medmae_test_support::workspace_bin("medmae-client"))
            .arg("--server")
            .arg(srv.url())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "medmae-client {args:?}: {}\nserver:\n{}",
            String::from_utf8_lossy(&o.stderr),
            srv.logs()
        );
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(client(&["health"]).trim(), "SERVING");
    assert!(client(&["models"]).contains("demo\tversion 1\tunetr"));
    let json = client(&[
        "segment",
        volume.to_str().unwrap(),
        "-o",
        mask_path.to_str().unwrap(),
        "--model",
        "demo",
        "--probabilities",
        prob_path.to_str().unwrap(),
        "--json",
        "--quiet",
    ]);
    let summary: serde_json::Value = serde_json::from_str(json.trim()).unwrap();

    let served = imaging::io::load(&mask_path).unwrap();
    let input = imaging::io::load(&volume).unwrap();
    assert_eq!(served.spatial_shape(), input.spatial_shape());
    for (r, row) in served.affine.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            assert!(
                (v - input.affine[r][c]).abs() < 1e-4,
                "mask affine differs from the input's: {:?} vs {:?}",
                served.affine,
                input.affine
            );
        }
    }

    let opts = BackendOptions {
        kind: BackendKind::Ort,
        threads: 1,
        use_gpu: false,
        ort_library: std::env::var_os("ORT_DYLIB_PATH").map(Into::into),
    };
    let repo = Repository::load(&fixtures().join("repo"), &opts).unwrap();
    let model = repo.get("demo", "").unwrap();
    let offline = segment_volume(
        &model,
        input,
        &SegmentOptions {
            overlap: None,
            probabilities: true,
            ..Default::default()
        },
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        served.data, offline.mask.data,
        "served mask differs from the offline pipeline"
    );
    let labels = summary["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 3);
    for (l, o) in labels.iter().zip(&offline.labels) {
        assert_eq!(l["voxels"].as_u64().unwrap(), o.voxels);
        assert_eq!(l["name"].as_str().unwrap(), o.name);
    }
    let total: u64 = labels.iter().map(|l| l["voxels"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, served.data.len());
    assert!(
        labels[2]["voxels"].as_u64().unwrap() > 0,
        "the bright core should be segmented: {summary}"
    );

    let probs = imaging::io::load(&prob_path).unwrap();
    assert_eq!(probs.channels(), 3);
    let p = offline.probabilities.unwrap();
    let max_diff = probs
        .data
        .iter()
        .zip(p.data.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-6, "probabilities differ by {max_diff}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_uploads_are_invalid_argument_and_serving_continues() {
    let srv = start_server("repo", &["--backend", "tract"]);
    let c = Client::connect(&ClientOptions {
        server: srv.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    for (file, text) in [
        ("corrupt.nii.gz", "uploaded volume"),
        ("truncated.nii", "uploaded volume"),
    ] {
        match c
            .segment(&fixtures().join(file), "demo", false, |_, _| {})
            .await
        {
            Err(ClientError::Status(s)) => {
                assert_eq!(s.code(), Code::InvalidArgument, "{file}: {}", s.message());
                assert!(
                    s.message().contains(text) && !s.message().contains("medmae-upload"),
                    "{file}: {}",
                    s.message()
                );
            }
            other => panic!("{file}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
    match c
        .segment(&fixtures().join("volume.nii.gz"), "nope", false, |_, _| {})
        .await
    {
        Err(ClientError::Status(s)) => assert_eq!(s.code(), Code::NotFound),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let p = progress.clone();
    let r = c
        .segment(
            &fixtures().join("volume.nii.gz"),
            "",
            false,
            move |sent, _| p.store(sent, std::sync::atomic::Ordering::SeqCst),
        )
        .await
        .unwrap();
    assert_eq!(r.summary.model_name, "demo");
    assert_eq!(
        progress.load(std::sync::atomic::Ordering::SeqCst),
        std::fs::metadata(fixtures().join("volume.nii.gz"))
            .unwrap()
            .len()
    );
    assert!(r.summary.windows > 0 && r.mask.len() as u64 == r.summary.mask_bytes);
    let logs = srv.logs();
    assert!(
        !logs.contains("volume.nii.gz") && !logs.contains("corrupt.nii.gz"),
        "file names leaked into logs:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_float_upload_with_geometry_matches_the_offline_pipeline() {
    use server::proto::medmae_v1::{
        segment_request::Payload, segment_response, segmentation_client::SegmentationClient,
        RawGeometry, SegmentHeader, SegmentRequest, VolumeFormat,
    };
    let srv = start_server("repo", &["--backend", "tract"]);
    let (x, y, z) = (20usize, 18usize, 17usize);
    let data = values(x * y * z, 11);
    let spacing = [1.2, 0.9, 2.0];
    let header = SegmentHeader {
        model_name: "demo".into(),
        format: VolumeFormat::RawF32 as i32,
        raw_geometry: Some(RawGeometry {
            channels: 1,
            shape: vec![x as u64, y as u64, z as u64],
            spacing: spacing.to_vec(),
            origin: vec![5.0, -3.0, 1.0],
            direction: vec![],
        }),
        ..Default::default()
    };
    let bytes = le(&data);
    let msgs = vec![
        SegmentRequest {
            payload: Some(Payload::Header(header.clone())),
        },
        SegmentRequest {
            payload: Some(Payload::Chunk(bytes[..5000].to_vec())),
        },
        SegmentRequest {
            payload: Some(Payload::Chunk(bytes[5000..].to_vec())),
        },
    ];
    let mut c = SegmentationClient::connect(srv.url()).await.unwrap();
    let mut replies = c
        .segment(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    let mut mask = Vec::new();
    let mut summary = None;
    while let Some(m) = replies.message().await.unwrap() {
        match m.payload.unwrap() {
            segment_response::Payload::Summary(s) => summary = Some(s),
            segment_response::Payload::MaskChunk(b) => mask.extend(b),
            segment_response::Payload::ProbabilitiesChunk(_) => panic!("not requested"),
        }
    }
    let summary = summary.unwrap();
    assert_eq!(summary.shape, vec![x as u64, y as u64, z as u64]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mask.nii.gz");
    std::fs::write(&p, &mask).unwrap();
    let served = imaging::io::load(&p).unwrap();

    let affine = imaging::Volume::affine_from(
        spacing,
        [5.0, -3.0, 1.0],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    let input = imaging::Volume::new(
        ndarray::Array4::from_shape_vec((1, x, y, z), data).unwrap(),
        affine,
    );
    let opts = BackendOptions {
        kind: BackendKind::Tract,
        threads: 1,
        use_gpu: false,
        ort_library: None,
    };
    let repo = Repository::load(&fixtures().join("repo"), &opts).unwrap();
    let offline = segment_volume(
        &repo.get("demo", "").unwrap(),
        input,
        &SegmentOptions::default(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(served.data, offline.mask.data);
    let ml: f64 = summary.labels.iter().map(|l| l.volume_ml).sum();
    assert!(
        (ml - (x * y * z) as f64 * 1.2 * 0.9 * 2.0 / 1000.0).abs() < 1e-9,
        "{ml}"
    );

    // A raw upload whose byte count does not match its geometry.
    let short = vec![
        SegmentRequest {
            payload: Some(Payload::Header(header)),
        },
        SegmentRequest {
            payload: Some(Payload::Chunk(bytes[..100].to_vec())),
        },
    ];
    let e = c.segment(tokio_stream::iter(short)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("raw upload is 100 bytes"),
        "{}",
        e.message()
    );
}

/// An upload of several full chunks (a 1.2 MiB uncompressed NIfTI) passes a server at the smallest message limit it
/// accepts: a chunk message, framing included, is at most 1 MiB.
#[test]
fn multi_chunk_upload_passes_the_smallest_message_limit() {
    let srv = start_server(
        "repo",
        &["--backend", "ort", "--max-message-bytes", "1048576"],
    );
    let dir = tempfile::tempdir().unwrap();
    let shape = (1, 80, 80, 48);
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let data = ndarray::Array4::from_shape_vec(shape, values(n, 3)).unwrap();
    let mut affine = [[0.0; 4]; 4];
    for (i, row) in affine.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let vol = imaging::Volume::new(data, affine);
    let input = dir.path().join("big.nii");
    let bytes =
        imaging::io::encode_nifti(&vol, "big.nii", imaging::io::NiftiDtype::F32, false).unwrap();
    assert!(
        bytes.len() > protocol::CHUNK_MESSAGE_BYTES,
        "{} bytes",
        bytes.len()
    );
    std::fs::write(&input, bytes).unwrap();
    let (mask, probs) = (dir.path().join("mask.nii.gz"), dir.path().join("probs.nii"));
    let o = Command::new(medmae_test_support::workspace_bin("medmae-client"))
        .args(["--server", &srv.url(), "segment"])
        .arg(&input)
        .arg("-o")
        .arg(&mask)
        .args(["--model", "demo", "--quiet", "--probabilities"])
        .arg(&probs)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "medmae-client: {}\nserver:\n{}",
        String::from_utf8_lossy(&o.stderr),
        srv.logs()
    );
    assert_eq!(
        imaging::io::load(&mask).unwrap().spatial_shape(),
        [80, 80, 48]
    );
    // `.nii` outputs are stored uncompressed: the NIfTI-1 header size first, not the gzip magic.
    let raw = std::fs::read(&probs).unwrap();
    assert_eq!(
        &raw[..4],
        &348i32.to_le_bytes(),
        "probabilities .nii is not a plain NIfTI"
    );
    assert_eq!(
        imaging::io::load(&probs).unwrap().data.shape()[1..],
        [80, 80, 48]
    );
}

/// Output names the client cannot produce are refused before it connects (the server here does not exist).
#[test]
fn unsupported_output_names_are_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let volume = fixtures().join("volume.nii.gz");
    for (flag, name, expected) in [
        (
            "-o",
            "mask.mha",
            "expected a name ending in .nii.gz or .nii, or .dcm",
        ),
        (
            "--probabilities",
            "probs.dcm",
            "expected a name ending in .nii.gz or .nii",
        ),
    ] {
        let mut args = vec![
            "--server",
            "http://127.0.0.1:9",
            "segment",
            volume.to_str().unwrap(),
        ];
        let target = dir.path().join(name);
        let other = dir.path().join("mask.nii.gz");
        if flag == "-o" {
            args.extend(["-o", target.to_str().unwrap()]);
        } else {
            args.extend([
                "-o",
                other.to_str().unwrap(),
                flag,
                target.to_str().unwrap(),
            ]);
        }
        let o = Command::new(medmae_test_support::workspace_bin("medmae-client"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(name) && err.contains(expected), "{err}");
        assert!(!target.exists() && !other.exists());
    }
}

/// The model's preprocessing is bounded by the server's voxel limit before it allocates: a small raw upload whose
/// geometry claims 1 m voxels (the demo model resamples to 1.5 mm) is RESOURCE_EXHAUSTED naming Spacing and the limit,
/// and an overlap outside [0, 1) is refused before the upload is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preprocessing_beyond_the_voxel_limit_and_bad_overlaps_are_refused() {
    use server::proto::medmae_v1::{
        segment_request::Payload, segmentation_client::SegmentationClient, RawGeometry,
        SegmentHeader, SegmentRequest, VolumeFormat,
    };
    let srv = start_server("repo", &["--backend", "ort"]);
    let mut c = SegmentationClient::connect(srv.url()).await.unwrap();
    let request = |spacing: f64, overlap: f32| {
        let header = SegmentHeader {
            model_name: "demo".into(),
            format: VolumeFormat::RawF32 as i32,
            raw_geometry: Some(RawGeometry {
                channels: 1,
                shape: vec![8, 8, 8],
                spacing: vec![spacing; 3],
                ..Default::default()
            }),
            overlap,
            ..Default::default()
        };
        vec![
            SegmentRequest {
                payload: Some(Payload::Header(header)),
            },
            SegmentRequest {
                payload: Some(Payload::Chunk(le(&values(512, 1)))),
            },
        ]
    };
    let mut send = async |msgs: Vec<SegmentRequest>| match c.segment(tokio_stream::iter(msgs)).await
    {
        Ok(r) => collect_segment(r.into_inner()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let e = send(request(1000.0, 0.0)).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(
        e.message().contains("Spacing") && e.message().contains("268435456"),
        "{}",
        e.message()
    );
    for overlap in [-0.25f32, 1.0, f32::NAN] {
        let e = send(request(1.0, overlap)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
        assert!(e.message().contains("header.overlap"), "{}", e.message());
    }
    send(request(1.0, 0.5)).await.unwrap();
}
