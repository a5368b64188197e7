//! The server's typed error and its mapping onto gRPC status codes (what tritonclient users see as `StatusCode.X`).

use std::path::PathBuf;
use tonic::{Code, Status};

/// Everything that can go wrong loading models or serving a request.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request names a model the repository does not have.
    #[error("unknown model {name:?}; available: {available}")]
    ModelNotFound {
        /// Requested name.
        name: String,
        /// Comma-separated names that exist.
        available: String,
    },
    /// The request names a model version that is not loaded.
    #[error("model {name:?} has no version {version:?} (loaded: {loaded:?})")]
    VersionNotFound {
        /// Model.
        name: String,
        /// Requested version.
        version: String,
        /// The loaded version.
        loaded: String,
    },
    /// The request is malformed (wrong datatype, shape, contents, file format, options).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request exceeds a configured limit (voxels, upload bytes).
    #[error("{0}")]
    TooLarge(String),
    /// Every worker is busy and the queue is full.
    #[error("server busy: {in_flight} requests running and {queued} queued (limits {max_concurrent} + {max_queue}); retry later")]
    Busy {
        /// Running now.
        in_flight: usize,
        /// Waiting now.
        queued: usize,
        /// Configured concurrency.
        max_concurrent: usize,
        /// Configured queue length.
        max_queue: usize,
    },
    /// The request ran past the server's deadline.
    #[error("request exceeded the server deadline of {0} s")]
    Deadline(f64),
    /// A compute job stopped because the request it served was abandoned (deadline passed, client gone); nobody
    /// receives this error, it only ends the job.
    #[error("abandoned: the request was given up before its computation finished")]
    Abandoned,
    /// A model file or its metadata is unusable (at start-up).
    #[error("{path}: {msg}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong and what was expected.
        msg: String,
    },
    /// The inference engine failed.
    #[error("{backend} backend: {msg}")]
    Backend {
        /// "ort" or "tract".
        backend: &'static str,
        /// Engine message.
        msg: String,
    },
    /// Reading the request stream failed in the transport (the client cancelled, the connection broke).
    #[error("the request stream failed: {}", .0.message())]
    Transport(Status),
    /// The server could not start (bind, TLS files, runtime).
    #[error("start-up: {0}")]
    Startup(String),
    /// A server-side processing failure that is not the client's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    /// The gRPC status code for this error.
    pub fn code(&self) -> Code {
        match self {
            ServeError::ModelNotFound { .. } | ServeError::VersionNotFound { .. } => Code::NotFound,
            ServeError::InvalidArgument(_) => Code::InvalidArgument,
            ServeError::TooLarge(_) | ServeError::Busy { .. } => Code::ResourceExhausted,
            ServeError::Deadline(_) => Code::DeadlineExceeded,
            ServeError::Abandoned => Code::Cancelled,
            ServeError::Model { .. } => Code::FailedPrecondition,
            ServeError::Transport(s) => s.code(),
            ServeError::Backend { .. } | ServeError::Internal(_) | ServeError::Startup(_) => {
                Code::Internal
            }
        }
    }

    /// Short label for metrics (`status` label values).
    pub fn metric_label(&self) -> &'static str {
        code_label(self.code())
    }

    /// Shorthand for an invalid-argument error.
    pub fn invalid(msg: impl Into<String>) -> Self {
        ServeError::InvalidArgument(msg.into())
    }

    /// The message as logged: the client's text with DICOM UIDs (study, series, instance — linkable to a patient in
    /// the archive) replaced by `<uid>`.
    pub fn log_text(&self) -> String {
        redact_uids(&self.to_string())
    }
}

/// Replace every token that looks like a DICOM UID (digits in at least five dot-separated components, e.g.
/// `1.2.840.113619.2.55`) by `<uid>`; numbers, versions and IPv4 addresses stay.
pub fn redact_uids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() >= 5 && parts.iter().all(|p| !p.is_empty()) {
            out.push_str("<uid>");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for ch in text.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            token.push(ch);
        } else {
            flush(&mut token, &mut out);
            out.push(ch);
        }
    }
    flush(&mut token, &mut out);
    out
}

impl From<ServeError> for Status {
    fn from(e: ServeError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// Lower-case status label used in metrics, e.g. `ok`, `invalid_argument`.
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_protocol() {
        let nf = ServeError::ModelNotFound {
            name: "x".into(),
            available: "a, b".into(),
        };
        assert_eq!(nf.code(), Code::NotFound);
        let s: Status = nf.into();
        assert!(s.message().contains("\"x\"") && s.message().contains("a, b"));
        assert_eq!(ServeError::invalid("bad").code(), Code::InvalidArgument);
        let busy = ServeError::Busy {
            in_flight: 2,
            queued: 4,
            max_concurrent: 2,
            max_queue: 4,
        };
        assert_eq!(busy.code(), Code::ResourceExhausted);
        assert_eq!(busy.metric_label(), "resource_exhausted");
        assert_eq!(ServeError::Deadline(1.0).code(), Code::DeadlineExceeded);
    }

    #[test]
    fn logged_text_has_no_uids() {
        let e = ServeError::invalid(
            "2 series found: 1.2.826.0.1.3680043.8.498.5.2 #7 (CT 24 files), 1.2.3.4.5 #8; limit 0.25 on 127.0.0.1.",
        );
        assert_eq!(
            e.log_text(),
            "2 series found: <uid> #7 (CT 24 files), <uid> #8; limit 0.25 on 127.0.0.1."
        );
        assert!(e.to_string().contains("1.2.826.0.1.3680043.8.498.5.2"));
    }
}
