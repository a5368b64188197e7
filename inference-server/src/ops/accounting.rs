//! Accounting at the gRPC edge, around every call: which calls are running now (so a drain that runs out of time
//! can name what it abandons), and the outcome of every call no handler recorded itself — refused by the transport
//! (a request message over `max_message_bytes`), by authentication, an unknown method, health and reflection — in
//! `medmae_requests_total` with its final status. A request message over the limit is answered RESOURCE_EXHAUSTED
//! naming `max_message_bytes` (tonic itself says OUT_OF_RANGE). Long-lived health `Watch` streams are ended when the
//! listener stops accepting, so they cannot hold a drain open.
//!
//! Handlers record their own outcome through [`crate::state::Shared::instrument`], which calls [`handled`] with the
//! resolved model name; the call is found through a task-local set around the handler's future ([`within`] carries
//! it onto tasks a handler spawns).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tokio::sync::watch;
use tonic::{Code, Status};

use super::Metrics;
use crate::error::{code_label, ServeError};

/// The health service's streaming method, ended at drain.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
/// Label for a service or method the server does not have.
const UNKNOWN: &str = "_unknown";

tokio::task_local! {
    static CURRENT: Arc<Call>;
}

/// One gRPC call while it runs.
#[derive(Debug)]
pub struct Call {
    /// Service label ("kserve", "segmentation", "health", "reflection", or the full name of another service).
    pub service: String,
    /// Method name ("_unknown" for a path the server does not serve).
    pub method: String,
    started: Instant,
    recorded: AtomicBool,
    model: Mutex<String>,
}

impl Call {
    fn new(service: String, method: String) -> Self {
        Self {
            service,
            method,
            started: Instant::now(),
            recorded: AtomicBool::new(false),
            model: Mutex::new(String::new()),
        }
    }

    /// Seconds since the call arrived.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The model label its handler resolved ("" if none).
    pub fn model(&self) -> String {
        self.model
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn recorded(&self) -> bool {
        self.recorded.load(Ordering::SeqCst)
    }
}

/// Name the model the current call is for (its metrics label), as soon as the handler knows it. Outside a call:
/// nothing.
pub fn label_model(model: &str) {
    let _ = CURRENT.try_with(|c| {
        *c.model.lock().unwrap_or_else(PoisonError::into_inner) = model.to_string();
    });
}

/// Mark the current call as recorded by its handler, under the model label `model`. Outside a call: nothing.
pub fn handled(model: &str) {
    label_model(model);
    let _ = CURRENT.try_with(|c| c.recorded.store(true, Ordering::SeqCst));
}

/// Run `fut` as part of the current call (for work a handler spawns onto another task).
pub fn within<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let current = CURRENT.try_with(Arc::clone).ok();
    async move {
        match current {
            Some(c) => CURRENT.scope(c, fut).await,
            None => fut.await,
        }
    }
}

/// A request message over `max_message_bytes`, as tonic reports it (OUT_OF_RANGE "decoded message length too
/// large"), turned into the server's RESOURCE_EXHAUSTED naming the limit; `None` for any other status.
pub fn message_too_large(status: &Status, limit: usize) -> Option<ServeError> {
    let m = status.message();
    if status.code() != Code::OutOfRange || !m.contains("decoded message length too large") {
        return None;
    }
    let found = m
        .split("found ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .map_or_else(String::new, |n| format!(" of {n} bytes"));
    Some(ServeError::TooLarge(format!(
        "request message{found} exceeds the server limit max_message_bytes = {limit} bytes"
    )))
}

/// A failure reading a request stream as the server's error: a message over the limit as [`message_too_large`],
/// anything else (the client cancelled, the connection broke) with the transport's own status.
pub fn stream_error(status: Status, limit: usize) -> ServeError {
    message_too_large(&status, limit).unwrap_or(ServeError::Transport(status))
}

/// The calls running now.
#[derive(Debug)]
pub struct Calls {
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, Arc<Call>>>,
    closing: watch::Sender<bool>,
}

impl Default for Calls {
    fn default() -> Self {
        Self::new()
    }
}

impl Calls {
    /// No calls yet.
    pub fn new() -> Self {
        Self {
            next: AtomicU64::new(0),
            running: Mutex::new(BTreeMap::new()),
            closing: watch::channel(false).0,
        }
    }

    fn begin(self: &Arc<Self>, call: Arc<Call>) -> Running {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, call);
        Running {
            calls: self.clone(),
            id,
        }
    }

    /// The calls running now, oldest first.
    pub fn running(&self) -> Vec<Arc<Call>> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// End every health `Watch` stream (now and any opened later) with UNAVAILABLE.
    pub fn close_watches(&self) {
        self.closing.send_replace(true);
    }
}

/// Removes its call from [`Calls`] when dropped (the response ended or the client went away).
#[derive(Debug)]
struct Running {
    calls: Arc<Calls>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.calls
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// gRPC paths the server serves → (service label, method), read from the services' descriptor sets.
#[derive(Debug, Default)]
pub struct Routes {
    paths: HashMap<String, (String, String)>,
}

impl Routes {
    /// Every method of every service in `sets` (encoded `FileDescriptorSet`s); `label` maps a full service name to
    /// its metrics label.
    pub fn from_descriptor_sets(
        sets: &[&[u8]],
        label: impl Fn(&str) -> Option<&'static str>,
    ) -> Result<Self, ServeError> {
        let mut paths = HashMap::new();
        for set in sets {
            let fds = prost_types::FileDescriptorSet::decode(*set)
                .map_err(|e| ServeError::Internal(format!("service descriptor set: {e}")))?;
            for file in &fds.file {
                for svc in &file.service {
                    let full = match file.package() {
                        "" => svc.name().to_string(),
                        p => format!("{p}.{}", svc.name()),
                    };
                    let service = label(&full).map_or_else(|| full.clone(), str::to_string);
                    for m in &svc.method {
                        paths.insert(
                            format!("/{full}/{}", m.name()),
                            (service.clone(), m.name().to_string()),
                        );
                    }
                }
            }
        }
        Ok(Self { paths })
    }

    fn labels(&self, path: &str) -> (String, String) {
        self.paths
            .get(path)
            .cloned()
            .unwrap_or_else(|| (UNKNOWN.into(), UNKNOWN.into()))
    }
}

/// The tower layer that accounts for every call (outermost, so authentication refusals are seen too).
#[derive(Clone)]
pub struct Accounting {
    calls: Arc<Calls>,
    metrics: Arc<Metrics>,
    routes: Arc<Routes>,
    max_message_bytes: usize,
}

impl Accounting {
    /// Account into `metrics`, registering running calls in `calls`.
    pub fn new(
        calls: Arc<Calls>,
        metrics: Arc<Metrics>,
        routes: Routes,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            calls,
            metrics,
            routes: Arc::new(routes),
            max_message_bytes,
        }
    }

    fn record(&self, call: &Call, status: &Status) {
        let label = code_label(status.code());
        self.metrics.record(
            &call.service,
            &call.method,
            &call.model(),
            label,
            call.seconds(),
        );
        if status.code() != Code::Ok {
            tracing::warn!(service = %call.service, method = %call.method, status = label, seconds = call.seconds(), error = %status.message(), "request refused");
        }
    }

    /// The response as it leaves: a trailers-only (error) answer is final now; otherwise the body reports its
    /// trailers when they pass.
    fn finish<B>(
        &self,
        call: Arc<Call>,
        running: Running,
        watch: bool,
        mut resp: http::Response<B>,
    ) -> http::Response<Observed<B>> {
        if let Some(mut status) = Status::from_header_map(resp.headers()) {
            if let Some(e) = message_too_large(&status, self.max_message_bytes) {
                status = Status::from(e);
                // Replacing grpc-status/grpc-message only fails for a message that is not a valid header value;
                // this one is ASCII.
                let _ = status.add_header(resp.headers_mut());
            }
            if !call.recorded() {
                self.record(&call, &status);
            }
            return resp.map(|inner| Observed {
                inner,
                running: Some(running),
                pending: None,
                closing: None,
                done: false,
            });
        }
        let closing = watch.then(|| {
            let mut rx = self.calls.closing.subscribe();
            Box::pin(async move {
                let _ = rx.wait_for(|c| *c).await;
            }) as Pin<Box<dyn Future<Output = ()> + Send>>
        });
        let pending = Some((self.clone(), call));
        resp.map(|inner| Observed {
            inner,
            running: Some(running),
            pending,
            closing,
            done: false,
        })
    }
}

impl<S> tower::Layer<S> for Accounting {
    type Service = Accounted<S>;

    fn layer(&self, inner: S) -> Accounted<S> {
        Accounted {
            inner,
            acc: self.clone(),
        }
    }
}

/// A gRPC service wrapped by [`Accounting`].
#[derive(Clone)]
pub struct Accounted<S> {
    inner: S,
    acc: Accounting,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Accounted<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        let (service, method) = self.acc.routes.labels(path);
        let watch = path == HEALTH_WATCH;
        let call = Arc::new(Call::new(service, method));
        let running = self.acc.calls.begin(call.clone());
        let fut = CURRENT.scope(call.clone(), self.inner.call(req));
        let acc = self.acc.clone();
        Box::pin(async move {
            let resp = fut.await?;
            Ok(acc.finish(call, running, watch, resp))
        })
    }
}

/// A response body that reports the call's final status (from its trailers) unless a handler recorded it, keeps
/// the call registered until it ends, and ends a health `Watch` stream when the server stops accepting.
pub struct Observed<B> {
    inner: B,
    running: Option<Running>,
    pending: Option<(Accounting, Arc<Call>)>,
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    done: bool,
}

impl<B> Observed<B> {
    /// The call is over with `status`: record it (if no handler did) and leave the running set.
    fn end(&mut self, status: &Status) {
        if let Some((acc, call)) = self.pending.take() {
            if !call.recorded() {
                acc.record(&call, status);
            }
        }
        self.running = None;
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        if self.pending.is_some() {
            self.end(&Status::cancelled("the response was not finished"));
        }
    }
}

impl<B> Body for Observed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(closing) = this.closing.as_mut() {
            if closing.as_mut().poll(cx).is_ready() {
                this.closing = None;
                this.done = true;
                let status = Status::unavailable("the server is shutting down");
                let mut trailers = http::HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                this.end(&status);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    let status = Status::from_header_map(t).unwrap_or_else(|| {
                        Status::unknown("the response trailers carry no grpc-status")
                    });
                    this.end(&status);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(&Status::internal("the response body failed")),
            Poll::Ready(None) => {
                this.done = true;
                this.end(&Status::unknown("the response ended without trailers"));
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.closing.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_request_messages_name_the_limit() {
        let s = Status::out_of_range(
            "Error, decoded message length too large: found 314572800 bytes, the limit is: 268435456 bytes",
        );
        let e = message_too_large(&s, 268435456).unwrap();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(
            e.to_string(),
            "request message of 314572800 bytes exceeds the server limit max_message_bytes = 268435456 bytes"
        );
        assert!(message_too_large(&Status::out_of_range("index 3"), 10).is_none());
        assert!(
            message_too_large(&Status::internal("decoded message length too large"), 10).is_none()
        );
    }

    #[test]
    fn routes_come_from_the_descriptor_sets() {
        let r = Routes::from_descriptor_sets(&[tonic_health::pb::FILE_DESCRIPTOR_SET], |s| {
            (s == "grpc.health.v1.Health").then_some("health")
        })
        .unwrap();
        assert_eq!(
            r.labels("/grpc.health.v1.Health/Check"),
            ("health".into(), "Check".into())
        );
        assert_eq!(
            r.labels("/grpc.health.v1.Health/Nope"),
            (UNKNOWN.into(), UNKNOWN.into())
        );
    }

    #[tokio::test]
    async fn handlers_mark_their_call_and_spawned_work_stays_inside_it() {
        let calls = Arc::new(Calls::new());
        let call = Arc::new(Call::new("kserve".into(), "ModelInfer".into()));
        let running = calls.begin(call.clone());
        assert_eq!(calls.running().len(), 1);
        handled("outside");
        CURRENT
            .scope(call.clone(), async {
                tokio::spawn(within(async { handled("demo") }))
                    .await
                    .unwrap();
            })
            .await;
        assert!(call.recorded());
        assert_eq!(call.model(), "demo");
        drop(running);
        assert!(calls.running().is_empty());
    }
}
