//! The malformed-input catalogue (`tests/malformed/cases.tsv`): every case — a broken file uploaded through
//! `medmae.v1.Segmentation/Segment`, or a broken KServe `ModelInfer` / Segment request built here — is sent to one
//! real `medmae-serve`, which must answer with the listed gRPC code and a message containing the listed fragment,
//! stay up, and serve a good request after each case; every message follows the one error style (the input named at
//! most once, no Rust debug values such as `Some(`, an OS error never repeated). A second test sends every corpus
//! file through `medmae info` (the defaults users get) with the same style checks, and a third checks token auth on
//! every RPC and scans the server log for request file names and patient fields.

mod support_reliab;

use std::collections::BTreeSet;
use std::path::PathBuf;

use medmae_tests::repo_root;
use server::proto::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use server::proto::inference::{InferTensorContents, ModelInferRequest};
use server::proto::medmae_v1::segment_request::Payload;
use server::proto::medmae_v1::{RawGeometry, SegmentHeader, SegmentRequest, VolumeFormat};
use support_reliab::{fixtures, infer_request, kserve, segment, segmentation, serve, upload};
use tonic::Code;

/// One row of `cases.tsv`.
#[derive(Debug)]
struct Case {
    id: String,
    rpc: String,
    input: String,
    code: Code,
    fragment: String,
}

fn code(name: &str) -> Code {
    match name {
        "INVALID_ARGUMENT" => Code::InvalidArgument,
        "NOT_FOUND" => Code::NotFound,
        "RESOURCE_EXHAUSTED" => Code::ResourceExhausted,
        "FAILED_PRECONDITION" => Code::FailedPrecondition,
        "UNAUTHENTICATED" => Code::Unauthenticated,
        "DEADLINE_EXCEEDED" => Code::DeadlineExceeded,
        other => panic!("cases.tsv: unknown gRPC code {other:?}"),
    }
}

fn cases() -> Vec<Case> {
    let path = repo_root().join("tests/malformed/cases.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(
                f.len() >= 5,
                "cases.tsv: a row needs id, rpc, input, code, fragment[, note]: {l:?}"
            );
            Case {
                id: f[0].into(),
                rpc: f[1].into(),
                input: f[2].into(),
                code: code(f[3]),
                fragment: f[4].into(),
            }
        })
        .collect()
}

/// What is wrong with the style of an error message that should name `name` (exactly once when `once`, at most
/// once otherwise).
fn style_problems(msg: &str, name: &str, once: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let n = msg.matches(name).count();
    if n > 1 || (once && n == 0) {
        problems.push(format!("names {name:?} {n} times"));
    }
    if msg.contains("Some(") || msg.contains("None)") {
        problems.push("shows a Rust debug value".into());
    }
    if msg.matches("(os error").count() > 1 {
        problems.push("repeats an OS error".into());
    }
    problems
}

/// Limits the catalogue's server runs with (the table's size cases depend on them).
const MAX_VOXELS: &str = "2000000";
const MAX_UPLOAD: u64 = 4 << 20;

fn tensor(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        contents,
        ..Default::default()
    }
}

/// The KServe request of a `infer` case.
fn infer_case(input: &str) -> ModelInferRequest {
    let good = infer_request("demo", 1);
    let raw = good.raw_input_contents[0].clone();
    let with = |inputs: Vec<InferInputTensor>, raw_contents: Vec<Vec<u8>>| ModelInferRequest {
        model_name: "demo".into(),
        inputs,
        raw_input_contents: raw_contents.into_iter().map(Into::into).collect(),
        ..Default::default()
    };
    let shape = [1, 1, 16, 16, 16];
    let fp32 = |n: usize| {
        Some(InferTensorContents {
            fp32_contents: vec![0.5; n],
            ..Default::default()
        })
    };
    match input {
        "unknown_model" => ModelInferRequest {
            model_name: "no-such-model".into(),
            ..good
        },
        "unknown_version" => ModelInferRequest {
            model_version: "7".into(),
            ..good
        },
        "no_inputs" => with(vec![], vec![]),
        "two_inputs" => with(
            vec![
                tensor("input", "FP32", &shape, None),
                tensor("input", "FP32", &shape, None),
            ],
            vec![raw.to_vec(), raw.to_vec()],
        ),
        "wrong_input_name" => with(
            vec![tensor("image", "FP32", &shape, None)],
            vec![raw.to_vec()],
        ),
        "unknown_datatype" => with(
            vec![tensor("input", "FLOAT128", &shape, None)],
            vec![raw.to_vec()],
        ),
        "fp64_datatype" => with(
            vec![tensor("input", "FP64", &shape, None)],
            vec![raw.to_vec()],
        ),
        "rank_4" => with(
            vec![tensor("input", "FP32", &[1, 1, 16, 16], None)],
            vec![raw[..4096].to_vec()],
        ),
        "negative_dim" => with(
            vec![tensor("input", "FP32", &[1, 1, -16, 16, 16], None)],
            vec![raw.to_vec()],
        ),
        "wrong_roi" => with(
            vec![tensor("input", "FP32", &[1, 1, 8, 16, 16], None)],
            vec![raw[..8192].to_vec()],
        ),
        "raw_truncated" => with(
            vec![tensor("input", "FP32", &shape, None)],
            vec![raw[..1000].to_vec()],
        ),
        "raw_too_long" => with(
            vec![tensor("input", "FP32", &shape, None)],
            vec![[raw.to_vec(), vec![0; 8]].concat()],
        ),
        "raw_count_mismatch" => with(
            vec![tensor("input", "FP32", &shape, None)],
            vec![raw.to_vec(), raw.to_vec()],
        ),
        "raw_and_typed" => with(
            vec![tensor("input", "FP32", &shape, fp32(4096))],
            vec![raw.to_vec()],
        ),
        "no_data" => with(vec![tensor("input", "FP32", &shape, None)], vec![]),
        "typed_wrong_field" => with(
            vec![tensor(
                "input",
                "FP32",
                &shape,
                Some(InferTensorContents {
                    int_contents: vec![1; 4096],
                    ..Default::default()
                }),
            )],
            vec![],
        ),
        "typed_count_mismatch" => with(vec![tensor("input", "FP32", &shape, fp32(100))], vec![]),
        "batch_over_limit" => with(
            vec![tensor("input", "FP32", &[1_000_000, 1, 16, 16, 16], None)],
            vec![raw.to_vec()],
        ),
        "overflowing_shape" => with(
            vec![tensor("input", "FP32", &[i64::MAX, 1, 16, 16, 16], None)],
            vec![raw.to_vec()],
        ),
        "unknown_output" => ModelInferRequest {
            outputs: vec![InferRequestedOutputTensor {
                name: "probabilities".into(),
                ..Default::default()
            }],
            ..good
        },
        other => panic!("cases.tsv: no infer builder {other:?}"),
    }
}

fn header(
    model: &str,
    format: VolumeFormat,
    total: u64,
    raw: Option<RawGeometry>,
) -> SegmentRequest {
    SegmentRequest {
        payload: Some(Payload::Header(SegmentHeader {
            model_name: model.into(),
            format: format as i32,
            total_bytes: total,
            raw_geometry: raw,
            ..Default::default()
        })),
    }
}

fn chunk(b: Vec<u8>) -> SegmentRequest {
    SegmentRequest {
        payload: Some(Payload::Chunk(b)),
    }
}

fn geometry(shape: &[u64]) -> RawGeometry {
    RawGeometry {
        channels: 1,
        shape: shape.to_vec(),
        ..Default::default()
    }
}

/// The messages of a `segment` case: a file under `tests/malformed/files/` or a named request builder.
fn segment_case(input: &str) -> Vec<SegmentRequest> {
    let file = repo_root().join("tests/malformed/files").join(input);
    if file.is_file() {
        let bytes = std::fs::read(&file).unwrap();
        let format = match input {
            n if n.ends_with(".nii.gz") => VolumeFormat::NiftiGz,
            n if n.ends_with(".nii") => VolumeFormat::Nifti,
            _ => VolumeFormat::Metaimage,
        };
        return upload("demo", format, &bytes);
    }
    let cube: Vec<u8> = (0..16 * 16 * 16)
        .flat_map(|i| (i as f32).to_le_bytes())
        .collect();
    let raw = |g: RawGeometry, bytes: Vec<u8>| {
        vec![
            header("demo", VolumeFormat::RawF32, bytes.len() as u64, Some(g)),
            chunk(bytes),
        ]
    };
    match input {
        "chunk_first" => vec![chunk(vec![1, 2, 3])],
        "no_messages" => vec![],
        "format_unspecified" => vec![
            header("demo", VolumeFormat::Unspecified, 3, None),
            chunk(vec![1, 2, 3]),
        ],
        "format_unknown" => {
            let mut h = header("demo", VolumeFormat::Nifti, 3, None);
            if let Some(Payload::Header(x)) = h.payload.as_mut() {
                x.format = 99;
            }
            vec![h, chunk(vec![1, 2, 3])]
        }
        "unknown_model" => upload(
            "no-such-model",
            VolumeFormat::Nifti,
            &std::fs::read(fixtures().join("truncated.nii")).unwrap(),
        ),
        "declared_over_limit" => vec![
            header("demo", VolumeFormat::Nifti, MAX_UPLOAD + 1, None),
            chunk(vec![0; 16]),
        ],
        "streamed_over_limit" => {
            let mut m = vec![header("demo", VolumeFormat::Nifti, 1024, None)];
            m.extend((0..5).map(|_| chunk(vec![0; 1 << 20])));
            m
        }
        "empty_upload" => vec![header("demo", VolumeFormat::Nifti, 0, None)],
        "second_header" => vec![
            header("demo", VolumeFormat::Nifti, 3, None),
            chunk(vec![1]),
            header("demo", VolumeFormat::Nifti, 3, None),
        ],
        "raw_no_geometry" => vec![
            header("demo", VolumeFormat::RawF32, 16, None),
            chunk(vec![0; 16]),
        ],
        "raw_two_dims" => raw(geometry(&[16, 256]), cube),
        "raw_zero_dim" => raw(geometry(&[16, 0, 16]), cube),
        "raw_byte_mismatch" => raw(geometry(&[16, 16, 15]), cube),
        "raw_over_limit" => raw(geometry(&[1 << 20, 1 << 20, 1]), cube),
        "raw_bad_spacing" => raw(
            RawGeometry {
                spacing: vec![1.0, -1.0, 1.0],
                ..geometry(&[16, 16, 16])
            },
            cube,
        ),
        "raw_nan_spacing" => raw(
            RawGeometry {
                spacing: vec![1.0, f64::NAN, 1.0],
                ..geometry(&[16, 16, 16])
            },
            cube,
        ),
        "raw_bad_direction" => raw(
            RawGeometry {
                direction: vec![1.0, 0.0, 0.0, 1.0],
                ..geometry(&[16, 16, 16])
            },
            cube,
        ),
        "raw_two_channels" => raw(
            RawGeometry {
                channels: 2,
                ..geometry(&[16, 16, 8])
            },
            cube,
        ),
        other => panic!("cases.tsv: no segment builder and no file {other:?}"),
    }
}

async fn good_requests(url: &str, volume: &[u8]) {
    let mut k = kserve(url).await;
    let r = k
        .model_infer(infer_request("demo", 1))
        .await
        .expect("a good ModelInfer after a malformed case");
    assert_eq!(r.into_inner().outputs.len(), 1);
    let mut s = segmentation(url).await;
    let out = segment(&mut s, upload("demo", VolumeFormat::NiftiGz, volume), None)
        .await
        .expect("a good Segment after a malformed case");
    assert!(!out.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_catalogue_gets_documented_errors_and_the_server_keeps_serving() {
    let table = cases();
    assert!(
        table.len() >= 25,
        "the catalogue has {} cases; at least 25 are required",
        table.len()
    );
    let ids: BTreeSet<&str> = table.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids.len(), table.len(), "case ids must be unique");
    let repo = fixtures().join("repo");
    let max_upload = MAX_UPLOAD.to_string();
    let mut server = serve(
        &[
            "--model-repository",
            repo.to_str().unwrap(),
            "--threads",
            "1",
            "--max-voxels",
            MAX_VOXELS,
            "--max-upload-bytes",
            &max_upload,
        ],
        &[],
    );
    let url = server.url();
    let volume = std::fs::read(fixtures().join("volume.nii.gz")).unwrap();
    good_requests(&url, &volume).await;
    let mut failures = Vec::new();
    for c in &table {
        let result = match c.rpc.as_str() {
            "infer" => kserve(&url)
                .await
                .model_infer(infer_case(&c.input))
                .await
                .map(|_| ()),
            "segment" => segment(&mut segmentation(&url).await, segment_case(&c.input), None)
                .await
                .map(|_| ()),
            other => panic!("cases.tsv: unknown rpc {other:?}"),
        };
        match result {
            Ok(()) => failures.push(format!(
                "{}: succeeded; expected {:?} containing {:?}",
                c.id, c.code, c.fragment
            )),
            Err(s) if s.code() != c.code || !s.message().contains(&c.fragment) => {
                failures.push(format!(
                    "{}: got {:?} {:?}; expected {:?} containing {:?}",
                    c.id,
                    s.code(),
                    s.message(),
                    c.code,
                    c.fragment
                ))
            }
            Err(s) => {
                let from_file = repo_root()
                    .join("tests/malformed/files")
                    .join(&c.input)
                    .is_file();
                let problems = style_problems(s.message(), "uploaded volume", from_file);
                if !problems.is_empty() {
                    failures.push(format!(
                        "{}: {:?}: {}",
                        c.id,
                        s.message(),
                        problems.join(", ")
                    ));
                }
                let temp = std::env::temp_dir().to_string_lossy().into_owned();
                assert!(
                    !s.message().contains(&format!("{temp}/medmae-upload")),
                    "{}: the message leaks the server's temp path: {}",
                    c.id,
                    s.message()
                );
            }
        }
        assert!(
            server.alive(),
            "medmae-serve died on case {}; log:\n{}",
            c.id,
            server.logs()
        );
        good_requests(&url, &volume).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from cases.tsv:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    let files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("tests/malformed/files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            table.iter().any(|c| c.input == name),
            "tests/malformed/files/{name} has no row in cases.tsv"
        );
    }
    let status = server.stop().expect("medmae-serve exit status");
    assert!(
        status.success(),
        "medmae-serve exited with {status} after SIGTERM"
    );
}

/// Files of the corpus that are valid images (their rows test a model mismatch, not a broken file).
const VALID_FILES: [&str; 2] = ["nifti_two_channels.nii", "nifti2_two_channels.nii"];

#[test]
fn every_corpus_file_gets_one_styled_error_from_medmae_info() {
    let dir = repo_root().join("tests/malformed/files");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let out = std::process::Command::new(medmae_tests::bin("medmae"))
            .arg("info")
            .arg(f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if VALID_FILES.contains(&name.as_str()) {
            if !out.status.success() {
                failures.push(format!("{name}: a valid file failed: {err}"));
            }
            continue;
        }
        checked += 1;
        if out.status.success() || !err.starts_with("medmae: error: ") || err.contains("panicked") {
            failures.push(format!(
                "{name}: expected one error line, got status {} and {err:?}",
                out.status
            ));
            continue;
        }
        let problems = style_problems(&err, &f.display().to_string(), true);
        if !problems.is_empty() {
            failures.push(format!("{name}: {err:?}: {}", problems.join(", ")));
        }
    }
    assert!(checked >= 30, "only {checked} malformed files");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Patient-like strings planted in the uploaded file's name and header; none may reach the server log (distinctive
/// enough not to occur by chance in timestamps or durations).
const SECRETS: [&str; 5] = ["Zqxdoe", "Johnathan", "0047110815", "PatientName", "MRN00"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_guards_every_rpc_and_the_log_holds_no_file_names_or_patient_fields() {
    use server::proto::inference as kv2;
    use server::proto::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
    use server::proto::medmae_v1::segmentation_client::SegmentationClient;
    use server::proto::medmae_v1::ListModelsRequest;
    use tonic::transport::Channel;

    let dir = tempfile::tempdir().unwrap();
    let token = "reliab-0123456789abcdef-token";
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# accepted tokens\n{token}\n")).unwrap();
    let repo = fixtures().join("repo");
    let server = serve(
        &[
            "--model-repository",
            repo.to_str().unwrap(),
            "--threads",
            "1",
            "--auth-tokens",
            tokens.to_str().unwrap(),
        ],
        &[("MEDMAE_LOG", "debug")],
    );
    let channel = Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let volume = std::fs::read(fixtures().join("volume.nii.gz")).unwrap();

    for presented in [None, Some("wrong-token-wrong-token-wrong"), Some(token)] {
        let with_token = move |mut req: tonic::Request<()>| {
            if let Some(t) = presented {
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            Ok(req)
        };
        let mut k = GrpcInferenceServiceClient::with_interceptor(channel.clone(), with_token);
        let mut s = SegmentationClient::with_interceptor(channel.clone(), with_token);
        let mut h = tonic_health::pb::health_client::HealthClient::with_interceptor(
            channel.clone(),
            with_token,
        );
        let mut r = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::with_interceptor(channel.clone(), with_token);
        let model = || kv2::ModelMetadataRequest {
            name: "demo".into(),
            version: String::new(),
        };
        let reflection = tonic_reflection::pb::v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                ),
            ),
        };
        let results: Vec<(&str, Result<(), tonic::Status>)> = vec![
            (
                "ServerLive",
                k.server_live(kv2::ServerLiveRequest {}).await.map(|_| ()),
            ),
            (
                "ServerReady",
                k.server_ready(kv2::ServerReadyRequest {}).await.map(|_| ()),
            ),
            (
                "ModelReady",
                k.model_ready(kv2::ModelReadyRequest {
                    name: "demo".into(),
                    version: String::new(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ServerMetadata",
                k.server_metadata(kv2::ServerMetadataRequest {})
                    .await
                    .map(|_| ()),
            ),
            ("ModelMetadata", k.model_metadata(model()).await.map(|_| ())),
            (
                "ModelConfig",
                k.model_config(kv2::ModelConfigRequest {
                    name: "demo".into(),
                    version: String::new(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "ModelInfer",
                k.model_infer(infer_request("demo", 1)).await.map(|_| ()),
            ),
            (
                "ModelStreamInfer",
                async {
                    let mut st = k
                        .model_stream_infer(tokio_stream::iter(vec![infer_request("demo", 1)]))
                        .await?
                        .into_inner();
                    while st.message().await?.is_some() {}
                    Ok(())
                }
                .await,
            ),
            (
                "Segment",
                async {
                    let mut st = s
                        .segment(tokio_stream::iter(upload(
                            "demo",
                            VolumeFormat::NiftiGz,
                            &volume,
                        )))
                        .await?
                        .into_inner();
                    while st.message().await?.is_some() {}
                    Ok(())
                }
                .await,
            ),
            (
                "ListModels",
                s.list_models(ListModelsRequest {}).await.map(|_| ()),
            ),
            (
                "Health/Check",
                h.check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ()),
            ),
            (
                "Health/Watch",
                async {
                    let mut st = h
                        .watch(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await?
                        .into_inner();
                    st.message().await.map(|_| ())
                }
                .await,
            ),
            (
                "ServerReflectionInfo",
                async {
                    let mut st = r
                        .server_reflection_info(tokio_stream::iter(vec![reflection]))
                        .await?
                        .into_inner();
                    st.message().await.map(|_| ())
                }
                .await,
            ),
        ];
        assert_eq!(results.len(), 13);
        for (rpc, result) in results {
            match presented {
                Some(t) if t == token => assert!(
                    result.is_ok(),
                    "{rpc} with the valid token failed: {result:?}"
                ),
                _ => {
                    let err = result.expect_err(&format!(
                        "{rpc} without a valid token ({presented:?}) succeeded"
                    ));
                    assert_eq!(
                        err.code(),
                        Code::Unauthenticated,
                        "{rpc} ({presented:?}): {err:?}"
                    );
                }
            }
        }
    }

    // A file whose name and NIfTI header carry patient-like fields, segmented with the real client.
    let vol = imaging::io::load(&fixtures().join("volume.nii.gz")).unwrap();
    let named = dir.path().join("Zqxdoe_Johnathan_MRN0047110815.nii");
    imaging::io::save_nifti(&vol, &named, imaging::io::NiftiDtype::F32).unwrap();
    let mut bytes = std::fs::read(&named).unwrap();
    let descrip = b"PatientName=Zqxdoe^Johnathan";
    bytes[148..148 + descrip.len()].copy_from_slice(descrip);
    bytes[228..241].copy_from_slice(b"MRN0047110815");
    std::fs::write(&named, &bytes).unwrap();
    let token_file = dir.path().join("client-token");
    std::fs::write(&token_file, token).unwrap();
    let out = dir.path().join("Zqxdoe_Johnathan_mask.nii.gz");
    medmae_tests::run(
        std::process::Command::new(medmae_tests::bin("medmae-client"))
            .args([
                "--server",
                &server.url(),
                "--token-file",
                token_file.to_str().unwrap(),
                "segment",
                "--quiet",
            ])
            .arg(&named)
            .arg("-o")
            .arg(&out),
    );
    assert!(out.is_file());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = server.logs();
    assert!(
        log.contains("request finished"),
        "the debug log records requests; log:\n{log}"
    );
    for secret in SECRETS
        .iter()
        .chain([&token, &"medmae-upload-", &dir.path().to_str().unwrap()])
    {
        assert!(
            !log.contains(secret),
            "the server log contains {secret:?}:\n{log}"
        );
    }
}
