//! Prometheus metrics (OpenMetrics text at `/metrics`): request counts and latency per service/method/model/status,
//! queue depth, requests computing, and backend inference time per model.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// gRPC service ("kserve", "segmentation").
    pub service: String,
    /// RPC method.
    pub method: String,
    /// Model name ("" when the request names none, "_unknown" when it names one the server lacks).
    pub model: String,
    /// Status code label ("ok", "invalid_argument", ...).
    pub status: String,
}

/// Labels of a backend call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InferenceLabels {
    /// Model name.
    pub model: String,
    /// Engine ("ort-cpu", "tract", ...).
    pub backend: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// Every metric the server exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// Requests finished.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency in seconds.
    pub latency: HistogramFamily<RequestLabels>,
    /// Backend call time in seconds (one call = one batch of windows).
    pub inference: HistogramFamily<InferenceLabels>,
    /// Requests waiting for a compute slot.
    pub queue_depth: Gauge,
    /// Requests holding a compute slot.
    pub in_flight: Gauge,
    /// Upload bytes held in memory (received, not yet decoded).
    pub upload_bytes: Gauge,
    /// Requests refused by authentication.
    pub auth_failures: Counter,
    /// The DICOM node's metrics (`medmae_dicom_*`).
    pub dicom: crate::dicom_node::metrics::DicomMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("medmae");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(latency_histogram);
        let inference: HistogramFamily<InferenceLabels> =
            Family::new_with_constructor(latency_histogram);
        let queue_depth = Gauge::default();
        let in_flight = Gauge::default();
        let upload_bytes = Gauge::default();
        let auth_failures = Counter::default();
        registry.register(
            "requests",
            "gRPC requests finished, by service, method, model and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "gRPC request latency in seconds",
            latency.clone(),
        );
        registry.register(
            "inference_duration_seconds",
            "Backend time per batch of windows in seconds",
            inference.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a compute slot",
            queue_depth.clone(),
        );
        registry.register("in_flight", "Requests computing now", in_flight.clone());
        registry.register(
            "upload_bytes",
            "Upload bytes held in memory (received and not yet decoded)",
            upload_bytes.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for a missing or invalid bearer token",
            auth_failures.clone(),
        );
        let dicom = crate::dicom_node::metrics::DicomMetrics::register(&mut registry);
        Self {
            registry,
            dicom,
            requests,
            latency,
            inference,
            queue_depth,
            in_flight,
            upload_bytes,
            auth_failures,
        }
    }

    /// Record a finished request.
    pub fn record(&self, service: &str, method: &str, model: &str, status: &str, seconds: f64) {
        let l = RequestLabels {
            service: service.into(),
            method: method.into(),
            model: model.into(),
            status: status.into(),
        };
        self.requests.get_or_create(&l).inc();
        self.latency.get_or_create(&l).observe(seconds);
    }

    /// Record one backend call.
    pub fn record_inference(&self, model: &str, backend: &str, seconds: f64) {
        self.inference
            .get_or_create(&InferenceLabels {
                model: model.into(),
                backend: backend.into(),
            })
            .observe(seconds);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serve `GET /metrics` on an already bound listener (plain HTTP; with `auth`, the same bearer tokens as gRPC are
/// required in an `authorization: Bearer <token>` header, as Prometheus sends them with `authorization.credentials_file`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: std::sync::Arc<Metrics>,
    auth: Option<super::BearerAuth>,
) -> std::io::Result<()> {
    use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let (m, auth) = (metrics.clone(), auth.clone());
            async move {
                if let Some(a) = &auth {
                    let value = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
                    if let Err(e) = a.check_value(value) {
                        m.auth_failures.inc();
                        return (StatusCode::UNAUTHORIZED, e.message().to_string()).into_response();
                    }
                }
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
                    .into_response()
            }
        }),
    );
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_families() {
        let m = Metrics::new();
        m.record("kserve", "ModelInfer", "demo", "ok", 0.01);
        m.record("kserve", "ModelInfer", "demo", "ok", 0.02);
        m.record_inference("demo", "tract", 0.5);
        m.queue_depth.set(3);
        let t = m.render();
        assert!(t.contains(r#"medmae_requests_total{service="kserve",method="ModelInfer",model="demo",status="ok"} 2"#), "{t}");
        assert!(t.contains("medmae_request_duration_seconds_bucket"), "{t}");
        assert!(
            t.contains(
                r#"medmae_inference_duration_seconds_count{model="demo",backend="tract"} 1"#
            ),
            "{t}"
        );
        assert!(t.contains("medmae_queue_depth 3"), "{t}");
        assert!(t.ends_with("# EOF\n"));
    }
}
