//! `medmae-serve` configuration: command-line flags, environment variables (`MEDMAE_SERVE_*`) and an optional TOML
//! file, resolved once (flag > env > file > default) into the validated [`ServerConfig`] that is injected everywhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::backend::{BackendKind, BackendOptions};
use crate::dicom_node::config::{DicomConfig, DicomFile, DicomFlags};

pub use protocol::DEFAULT_MAX_MESSAGE_BYTES;
/// Default voxel limit per uploaded volume or tensor (all channels): 2^28 ≈ 268 M (a 645³ single-channel volume).
pub const DEFAULT_MAX_VOXELS: u64 = 1 << 28;

/// Command-line flags (each also readable from the environment variable shown in `--help`).
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "medmae-serve",
    version,
    about = "gRPC segmentation server: KServe v2 + medmae.v1.Segmentation on ONNX Runtime or tract"
)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys, e.g. `model_repository = "models"`) and a
    /// `[dicom]` section for the DICOM node.
    #[arg(long, env = "MEDMAE_SERVE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Model repository: one folder per model holding `model.onnx` or `<version>/model.onnx`.
    #[arg(long, env = "MEDMAE_SERVE_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:8001; port 0 = any free port].
    #[arg(long, env = "MEDMAE_SERVE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Prometheus `/metrics` HTTP listen address [default: 127.0.0.1:8002; "off" disables].
    #[arg(long, env = "MEDMAE_SERVE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Inference engine: ort or tract [default: ort].
    #[arg(long, env = "MEDMAE_SERVE_BACKEND")]
    pub backend: Option<BackendKind>,
    /// Intra-op threads per model (0 = engine default) [default: 0].
    #[arg(long, env = "MEDMAE_SERVE_THREADS")]
    pub threads: Option<usize>,
    /// Use ONNX Runtime's CUDA execution provider (ort backend, `cuda` build, onnxruntime-gpu); start-up fails with the
    /// reason when it cannot be used [default: false].
    #[arg(long, env = "MEDMAE_SERVE_GPU")]
    pub gpu: Option<bool>,
    /// ONNX Runtime shared library (`libonnxruntime.so`) for the ort backend.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,
    /// TLS certificate chain (PEM); enables TLS together with --tls-key.
    #[arg(long, env = "MEDMAE_SERVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MEDMAE_SERVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) for client certificates; enables mutual TLS (clients without a valid certificate are refused).
    #[arg(long, env = "MEDMAE_SERVE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// File of accepted bearer tokens, one per line; when set every RPC needs `authorization: Bearer <token>`.
    #[arg(long, env = "MEDMAE_SERVE_AUTH_TOKENS")]
    pub auth_tokens: Option<PathBuf>,
    /// Largest gRPC message accepted or sent, bytes [default: 268435456 = 256 MiB].
    #[arg(long, env = "MEDMAE_SERVE_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Largest volume or tensor, in voxels over all channels [default: 268435456].
    #[arg(long, env = "MEDMAE_SERVE_MAX_VOXELS")]
    pub max_voxels: Option<u64>,
    /// Largest segmentation upload, bytes [default: 1 GiB].
    #[arg(long, env = "MEDMAE_SERVE_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Upload bytes held in memory by all requests together (received, not yet decoded); beyond it a request is
    /// refused with RESOURCE_EXHAUSTED. At least max_upload_bytes and max_message_bytes [default: 4 × the larger].
    #[arg(long, env = "MEDMAE_SERVE_MAX_UPLOAD_MEMORY_BYTES")]
    pub max_upload_memory_bytes: Option<u64>,
    /// Most files in one DICOM series upload (streamed files or zip entries) [default: 4096].
    #[arg(long, env = "MEDMAE_SERVE_MAX_DICOM_FILES")]
    pub max_dicom_files: Option<usize>,
    /// Per-request deadline in seconds (queueing + compute) [default: 600].
    #[arg(long, env = "MEDMAE_SERVE_REQUEST_TIMEOUT")]
    pub request_timeout: Option<f64>,
    /// Requests computing at once [default: 2].
    #[arg(long, env = "MEDMAE_SERVE_MAX_CONCURRENT")]
    pub max_concurrent: Option<usize>,
    /// Requests waiting beyond those; more get RESOURCE_EXHAUSTED [default: 16].
    #[arg(long, env = "MEDMAE_SERVE_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// On SIGTERM/SIGINT, seconds to keep accepting and serving with every health service NOT_SERVING, so probes
    /// and load balancers take this replica out before connections are refused (0 = stop accepting at once)
    /// [default: 5].
    #[arg(long, env = "MEDMAE_SERVE_DRAIN_GRACE")]
    pub drain_grace: Option<f64>,
    /// After the grace period, seconds to let in-flight requests finish; requests still running then are abandoned
    /// and logged, and the exit status is 3 [default: 30].
    #[arg(long, env = "MEDMAE_SERVE_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<f64>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "MEDMAE_SERVE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// DICOM listen address; enables the DICOM node (C-ECHO/C-STORE SCP, see the `[dicom]` config section).
    #[arg(long, env = "MEDMAE_SERVE_DICOM_LISTEN")]
    pub dicom_listen: Option<SocketAddr>,
    /// AE title of the DICOM node [default: MEDMAE].
    #[arg(long, env = "MEDMAE_SERVE_DICOM_AE_TITLE")]
    pub dicom_ae_title: Option<String>,
    /// Spool directory of the DICOM node (received series and the job queue).
    #[arg(long, env = "MEDMAE_SERVE_DICOM_SPOOL", global = true)]
    pub dicom_spool: Option<PathBuf>,
    /// Crash tests only: stop at store:N, inference or sent and wait to be killed.
    #[arg(long, hide = true)]
    pub dicom_fault_pause: Option<String>,
    /// Run a maintenance command instead of the server.
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
}

/// Maintenance commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServeCommand {
    /// Inspect and manage the DICOM node's spool and job queue (uses --dicom-spool or the config's [dicom] spool).
    Queue(crate::dicom_node::cli::QueueArgs),
}

/// The same settings as read from the TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    model_repository: Option<PathBuf>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<String>,
    backend: Option<BackendKind>,
    threads: Option<usize>,
    gpu: Option<bool>,
    ort_library: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    auth_tokens: Option<PathBuf>,
    max_message_bytes: Option<usize>,
    max_voxels: Option<u64>,
    max_upload_bytes: Option<u64>,
    max_upload_memory_bytes: Option<u64>,
    max_dicom_files: Option<usize>,
    request_timeout: Option<f64>,
    max_concurrent: Option<usize>,
    max_queue: Option<usize>,
    drain_grace: Option<f64>,
    drain_timeout: Option<f64>,
    log_format: Option<String>,
    dicom: Option<DicomFile>,
}

/// TLS files.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Client CA (PEM) for mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// Request limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest gRPC message (decode and encode).
    pub max_message_bytes: usize,
    /// Largest volume/tensor in voxels (all channels).
    pub max_voxels: u64,
    /// Largest segmentation upload in bytes (for DICOM also the total of the inflated files).
    pub max_upload_bytes: u64,
    /// Upload bytes held in memory by all requests together.
    pub max_upload_memory_bytes: u64,
    /// Most files in one DICOM series upload.
    pub max_dicom_files: usize,
    /// Deadline per request.
    pub request_timeout: Duration,
    /// Concurrent computations.
    pub max_concurrent: usize,
    /// Queue length.
    pub max_queue: usize,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Model repository.
    pub model_repository: PathBuf,
    /// gRPC address.
    pub listen: SocketAddr,
    /// Metrics address (None = disabled).
    pub metrics_listen: Option<SocketAddr>,
    /// Engine settings.
    pub backend: BackendOptions,
    /// TLS (None = plaintext).
    pub tls: Option<TlsConfig>,
    /// Token file (None = no auth).
    pub auth_tokens: Option<PathBuf>,
    /// Limits.
    pub limits: Limits,
    /// Accepting and serving after the first signal, health NOT_SERVING.
    pub drain_grace: Duration,
    /// Then the longest wait for in-flight requests.
    pub drain_timeout: Duration,
    /// JSON logs.
    pub json_logs: bool,
    /// The DICOM node (None = off).
    pub dicom: Option<DicomConfig>,
}

/// A setting that is missing, unreadable or out of range.
#[derive(Debug, thiserror::Error)]
#[error("config `{field}`: {msg}")]
pub struct ConfigError {
    /// Setting name.
    pub field: String,
    /// What was expected.
    pub msg: String,
}

/// A config error for `field`.
pub(crate) fn cerr(field: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        msg: msg.into(),
    }
}

/// A positive, finite number of seconds for `field`.
pub(crate) fn seconds(field: &str, v: f64) -> Result<Duration, ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(cerr(
            field,
            format!("must be a positive number of seconds, got {v}"),
        ))
    }
}

fn non_negative_seconds(field: &str, v: f64) -> Result<Duration, ConfigError> {
    if v == 0.0 {
        Ok(Duration::ZERO)
    } else {
        seconds(field, v).map_err(|_| {
            cerr(
                field,
                format!("must be zero or a positive number of seconds, got {v}"),
            )
        })
    }
}

/// Default `drain_grace` in seconds.
pub const DEFAULT_DRAIN_GRACE: f64 = 5.0;
/// Default `drain_timeout` in seconds.
pub const DEFAULT_DRAIN_TIMEOUT: f64 = 30.0;

fn existing(field: &str, p: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    match p {
        Some(p) if !p.exists() => Err(cerr(field, format!("{} does not exist", p.display()))),
        other => Ok(other),
    }
}

impl ServerConfig {
    /// Resolve flags (already merged with env by clap) over the TOML file named by `--config`, then defaults.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(p) => Self::read_file(p)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// The spool directory for `medmae-serve queue`: `--dicom-spool`, else the config file's `[dicom] spool`.
    pub fn queue_spool(args: &ServeArgs) -> Result<PathBuf, ConfigError> {
        if let Some(s) = &args.dicom_spool {
            return Ok(s.clone());
        }
        let file = match &args.config {
            Some(p) => Self::read_file(p)?,
            None => FileConfig::default(),
        };
        file.dicom
            .as_ref()
            .and_then(|d| d.spool().cloned())
            .ok_or_else(|| {
                cerr(
                    "dicom.spool",
                    "give --dicom-spool DIR or --config with a [dicom] spool",
                )
            })
    }

    fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| cerr("config", format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| cerr("config", format!("{}: {e}", path.display())))
    }

    /// Merge flags over file values and validate.
    pub fn merge(a: ServeArgs, f: FileConfig) -> Result<Self, ConfigError> {
        let model_repository = a
            .model_repository
            .or(f.model_repository)
            .ok_or_else(|| cerr("model_repository", "required (--model-repository DIR)"))?;
        if !model_repository.is_dir() {
            return Err(cerr(
                "model_repository",
                format!("{} is not a directory", model_repository.display()),
            ));
        }
        let listen = a
            .listen
            .or(f.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8001)));
        let metrics_listen = match a.metrics_listen.or(f.metrics_listen).as_deref() {
            Some("off") => None,
            Some(s) => Some(s.parse().map_err(|e| {
                cerr(
                    "metrics_listen",
                    format!("{s:?}: {e} (expected host:port or \"off\")"),
                )
            })?),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 8002))),
        };
        let backend = BackendOptions {
            kind: a.backend.or(f.backend).unwrap_or(BackendKind::Ort),
            threads: a.threads.or(f.threads).unwrap_or(0),
            use_gpu: a.gpu.or(f.gpu).unwrap_or(false),
            ort_library: existing("ort_library", a.ort_library.or(f.ort_library))?,
        };
        if backend.use_gpu && backend.kind == BackendKind::Tract {
            return Err(cerr(
                "gpu",
                "the tract backend runs on the CPU only; use --backend ort with --gpu",
            ));
        }
        let tls = match (
            existing("tls_cert", a.tls_cert.or(f.tls_cert))?,
            existing("tls_key", a.tls_key.or(f.tls_key))?,
        ) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert,
                key,
                client_ca: existing("tls_client_ca", a.tls_client_ca.or(f.tls_client_ca))?,
            }),
            (None, None) => {
                if a.tls_client_ca.is_some() || f.tls_client_ca.is_some() {
                    return Err(cerr(
                        "tls_client_ca",
                        "mutual TLS needs tls_cert and tls_key too",
                    ));
                }
                None
            }
            _ => {
                return Err(cerr(
                    "tls_cert",
                    "tls_cert and tls_key must be given together",
                ))
            }
        };
        let auth_tokens = existing("auth_tokens", a.auth_tokens.or(f.auth_tokens))?;
        let max_message_bytes = a
            .max_message_bytes
            .or(f.max_message_bytes)
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes < protocol::CHUNK_MESSAGE_BYTES {
            return Err(cerr(
                "max_message_bytes",
                format!(
                    "must be at least {} bytes (1 MiB: one upload chunk), got {max_message_bytes}",
                    protocol::CHUNK_MESSAGE_BYTES
                ),
            ));
        }
        let max_voxels = a.max_voxels.or(f.max_voxels).unwrap_or(DEFAULT_MAX_VOXELS);
        let max_upload_bytes = a.max_upload_bytes.or(f.max_upload_bytes).unwrap_or(1 << 30);
        let max_concurrent = a.max_concurrent.or(f.max_concurrent).unwrap_or(2);
        let max_dicom_files = a.max_dicom_files.or(f.max_dicom_files).unwrap_or(4096);
        if max_voxels == 0 || max_upload_bytes == 0 || max_concurrent == 0 || max_dicom_files == 0 {
            return Err(cerr(
                "max_voxels/max_upload_bytes/max_concurrent/max_dicom_files",
                "must be positive",
            ));
        }
        let max_upload_memory_bytes = a
            .max_upload_memory_bytes
            .or(f.max_upload_memory_bytes)
            .unwrap_or(
                max_upload_bytes
                    .max(max_message_bytes as u64)
                    .saturating_mul(4),
            );
        // Both kinds of upload are held under this bound: segmentation streams (up to max_upload_bytes) and KServe
        // tensor requests (one message, up to max_message_bytes).
        for (field, largest) in [
            ("max_upload_bytes", max_upload_bytes),
            ("max_message_bytes", max_message_bytes as u64),
        ] {
            if max_upload_memory_bytes < largest {
                return Err(cerr(
                    "max_upload_memory_bytes",
                    format!(
                        "{max_upload_memory_bytes} is below {field} ({largest}): the largest upload allowed \
                         could never be received"
                    ),
                ));
            }
        }
        let limits = Limits {
            max_message_bytes,
            max_voxels,
            max_upload_bytes,
            max_upload_memory_bytes,
            max_dicom_files,
            request_timeout: seconds(
                "request_timeout",
                a.request_timeout.or(f.request_timeout).unwrap_or(600.0),
            )?,
            max_concurrent,
            max_queue: a.max_queue.or(f.max_queue).unwrap_or(16),
        };
        let drain_grace = non_negative_seconds(
            "drain_grace",
            a.drain_grace
                .or(f.drain_grace)
                .unwrap_or(DEFAULT_DRAIN_GRACE),
        )?;
        let drain_timeout = seconds(
            "drain_timeout",
            a.drain_timeout
                .or(f.drain_timeout)
                .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
        )?;
        let json_logs = match a.log_format.or(f.log_format).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(o) => {
                return Err(cerr(
                    "log_format",
                    format!("expected \"text\" or \"json\", got {o:?}"),
                ))
            }
        };
        let dicom = DicomConfig::resolve(
            DicomFlags {
                listen: a.dicom_listen,
                ae_title: a.dicom_ae_title,
                spool: a.dicom_spool,
                fault_pause: a.dicom_fault_pause,
            },
            f.dicom,
        )?;
        Ok(Self {
            dicom,
            model_repository,
            listen,
            metrics_listen,
            backend,
            tls,
            auth_tokens,
            limits,
            drain_grace,
            drain_timeout,
            json_logs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut v = vec!["medmae-serve"];
        v.extend_from_slice(extra);
        ServeArgs::try_parse_from(v).unwrap()
    }

    #[test]
    fn flags_override_file_and_defaults_apply() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().to_str().unwrap().to_string();
        let file: FileConfig = toml::from_str(&format!("model_repository = {repo:?}\nbackend = \"tract\"\nmax_queue = 3\nmetrics_listen = \"off\"\n")).unwrap();
        let c = ServerConfig::merge(args(&["--max-queue", "5"]), file.clone()).unwrap();
        assert_eq!(c.backend.kind, BackendKind::Tract);
        assert_eq!(c.limits.max_queue, 5);
        assert_eq!(c.limits.max_message_bytes, 256 << 20);
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.listen.port(), 8001);
        assert_eq!(c.drain_grace, Duration::from_secs(5));
        let c = ServerConfig::merge(args(&["--backend", "ort", "--listen", "127.0.0.1:0"]), file)
            .unwrap();
        assert_eq!((c.backend.kind, c.listen.port()), (BackendKind::Ort, 0));
    }

    #[test]
    fn errors_name_the_setting() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().to_str().unwrap();
        let e = ServerConfig::merge(args(&[]), FileConfig::default()).unwrap_err();
        assert_eq!(e.field, "model_repository");
        let e = ServerConfig::merge(
            args(&["--model-repository", repo, "--tls-cert", repo]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "tls_cert");
        let e = ServerConfig::merge(
            args(&["--model-repository", repo, "--request-timeout=-1"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "request_timeout");
        let e = ServerConfig::merge(
            args(&[
                "--model-repository",
                repo,
                "--backend",
                "tract",
                "--gpu",
                "true",
            ]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "gpu");
        assert!(e.msg.contains("CPU only"), "{}", e.msg);
        let e = ServerConfig::merge(
            args(&["--model-repository", repo, "--drain-grace=-1"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert_eq!(e.field, "drain_grace");
        let c = ServerConfig::merge(
            args(&["--model-repository", repo, "--drain-grace", "0"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(c.drain_grace, Duration::ZERO);
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert!(ServeArgs::try_parse_from(["medmae-serve", "--backend", "onnx"]).is_err());
        assert!(toml::from_str::<FileConfig>("listen_addr = \"x\"").is_err());
    }

    #[test]
    fn upload_memory_bound_defaults_to_four_of_the_largest_upload_and_must_hold_one() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().to_str().unwrap();
        let merge = |extra: &[&str]| {
            let mut a = vec!["--model-repository", repo];
            a.extend_from_slice(extra);
            ServerConfig::merge(args(&a), FileConfig::default())
        };
        // Defaults: max_upload_bytes 1 GiB is the larger of the two.
        assert_eq!(merge(&[]).unwrap().limits.max_upload_memory_bytes, 4 << 30);
        // A KServe message may be the larger upload.
        let c = merge(&[
            "--max-upload-bytes",
            "1048576",
            "--max-message-bytes",
            "8388608",
        ])
        .unwrap();
        assert_eq!(c.limits.max_upload_memory_bytes, 4 * 8388608);
        for (upload, message, named) in [
            ("4194304", "1048576", "max_upload_bytes (4194304)"),
            ("1048576", "4194304", "max_message_bytes (4194304)"),
        ] {
            let e = merge(&[
                "--max-upload-memory-bytes",
                "2097152",
                "--max-upload-bytes",
                upload,
                "--max-message-bytes",
                message,
            ])
            .unwrap_err();
            assert_eq!(e.field, "max_upload_memory_bytes");
            assert!(e.msg.contains(named), "{}", e.msg);
        }
    }

    #[test]
    fn the_systemd_example_settings_are_valid_keys() {
        let text = include_str!("../../deploy/systemd/medmae-serve.toml");
        let f: FileConfig = toml::from_str(text).unwrap();
        assert_eq!(
            (f.drain_grace, f.drain_timeout),
            (Some(DEFAULT_DRAIN_GRACE), Some(DEFAULT_DRAIN_TIMEOUT))
        );
        assert_eq!(f.backend, Some(BackendKind::Ort));
    }
}
