//! The client library behind `medmae-client`: connect (TLS/mTLS, bearer token), health, model listing, and
//! segmentation of a local file with upload progress.

use std::path::{Path, PathBuf};

use tokio_stream::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::proto::medmae_v1::{self as pb, segmentation_client::SegmentationClient};
use crate::segment::{format_for_path, CHUNK_BYTES};

/// Client-side failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad option or unreachable server.
    #[error("connecting to {server}: {msg}")]
    Connect {
        /// Server URL.
        server: String,
        /// What went wrong.
        msg: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The server answered with an error status.
    #[error("server: {} ({:?})", .0.message(), .0.code())]
    Status(#[from] Status),
    /// The server's answer did not follow the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// How to reach the server.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// `http://host:port` or `https://host:port`.
    pub server: String,
    /// Bearer token.
    pub token: Option<String>,
    /// CA certificate (PEM) to trust (enables TLS).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// TLS server name to verify (default: the URL's host).
    pub domain: Option<String>,
    /// Largest message accepted from the server.
    pub max_message_bytes: usize,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct TokenInterceptor(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connected client.
pub struct Client {
    channel: Channel,
    auth: TokenInterceptor,
    max: usize,
}

/// What the server returned for one volume.
#[derive(Debug, Clone)]
pub struct SegmentResult {
    /// Summary with per-label statistics.
    pub summary: pb::SegmentSummary,
    /// The label map, .nii.gz bytes.
    pub mask: Vec<u8>,
    /// Probabilities, .nii.gz bytes, if requested.
    pub probabilities: Option<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Io {
        path: path.into(),
        source,
    })
}

impl Client {
    /// Connect to the server.
    pub async fn connect(opts: &ClientOptions) -> Result<Self, ClientError> {
        let cerr = |msg: String| ClientError::Connect {
            server: opts.server.clone(),
            msg,
        };
        let mut ep = Endpoint::from_shared(opts.server.clone()).map_err(|e| cerr(e.to_string()))?;
        if opts.ca_cert.is_some() || opts.server.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &opts.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&opts.client_cert, &opts.client_key) {
                (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(read(c)?, read(k)?)),
                (None, None) => {}
                _ => {
                    return Err(cerr(
                        "--client-cert and --client-key must be given together".into(),
                    ))
                }
            }
            if let Some(d) = &opts.domain {
                tls = tls.domain_name(d.clone());
            }
            ep = ep.tls_config(tls).map_err(|e| cerr(e.to_string()))?;
        }
        let channel = ep.connect().await.map_err(|e| {
            cerr(format!(
                "{e} ({})",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let token = opts
            .token
            .as_ref()
            .map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>())
            .transpose()
            .map_err(|_| cerr("the token is not valid ASCII metadata".into()))?;
        let max = if opts.max_message_bytes == 0 {
            crate::config::DEFAULT_MAX_MESSAGE_BYTES
        } else {
            opts.max_message_bytes
        };
        Ok(Self {
            channel,
            auth: TokenInterceptor(token),
            max,
        })
    }

    fn segmentation(&self) -> SegmentationClient<InterceptedService<Channel, TokenInterceptor>> {
        SegmentationClient::with_interceptor(self.channel.clone(), self.auth.clone())
            .max_decoding_message_size(self.max)
            .max_encoding_message_size(self.max)
    }

    /// `grpc.health.v1` status of `service` ("" = the server).
    pub async fn health(&self, service: &str) -> Result<String, ClientError> {
        use tonic_health::pb::{
            health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
        };
        let mut c = HealthClient::with_interceptor(self.channel.clone(), self.auth.clone());
        let r = c
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?
            .into_inner();
        Ok(ServingStatus::try_from(r.status)
            .map(|s| s.as_str_name().to_string())
            .unwrap_or_else(|_| format!("UNKNOWN({})", r.status)))
    }

    /// The models the server has.
    pub async fn list_models(&self) -> Result<Vec<pb::ModelDescription>, ClientError> {
        Ok(self
            .segmentation()
            .list_models(pb::ListModelsRequest {})
            .await?
            .into_inner()
            .models)
    }

    /// Upload `input` and segment it with `model` ("" = the server's only segmentation model); `progress(sent, total)`
    /// is called as chunks go out.
    pub async fn segment<F>(
        &self,
        input: &Path,
        model: &str,
        probabilities: bool,
        mut progress: F,
    ) -> Result<SegmentResult, ClientError>
    where
        F: FnMut(u64, u64) + Send + 'static,
    {
        let format = format_for_path(input).ok_or_else(|| {
            ClientError::Protocol(format!(
                "{}: expected a .nii, .nii.gz or .mha file",
                input.display()
            ))
        })?;
        let bytes = read(input)?;
        let total = bytes.len() as u64;
        let header = pb::SegmentHeader {
            model_name: model.into(),
            format: format as i32,
            raw_geometry: None,
            return_probabilities: probabilities,
            overlap: 0.0,
            total_bytes: total,
        };
        let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK_BYTES).map(<[u8]>::to_vec).collect();
        let mut sent = 0u64;
        let messages = std::iter::once(pb::SegmentRequest {
            payload: Some(pb::segment_request::Payload::Header(header)),
        })
        .chain(chunks.into_iter().map(|c| pb::SegmentRequest {
            payload: Some(pb::segment_request::Payload::Chunk(c)),
        }));
        let outbound = tokio_stream::iter(messages).map(move |m| {
            if let Some(pb::segment_request::Payload::Chunk(c)) = &m.payload {
                sent += c.len() as u64;
                progress(sent, total);
            }
            m
        });
        let mut replies = self.segmentation().segment(outbound).await?.into_inner();
        let (mut summary, mut mask, mut probs) = (None, Vec::new(), Vec::new());
        while let Some(r) = replies.next().await {
            match r?.payload {
                Some(pb::segment_response::Payload::Summary(s)) => summary = Some(s),
                Some(pb::segment_response::Payload::MaskChunk(c)) => mask.extend_from_slice(&c),
                Some(pb::segment_response::Payload::ProbabilitiesChunk(c)) => {
                    probs.extend_from_slice(&c)
                }
                None => return Err(ClientError::Protocol("empty response message".into())),
            }
        }
        let summary =
            summary.ok_or_else(|| ClientError::Protocol("the server sent no summary".into()))?;
        if mask.len() as u64 != summary.mask_bytes
            || probs.len() as u64 != summary.probabilities_bytes
        {
            return Err(ClientError::Protocol(format!(
                "received {} mask / {} probability bytes, summary announced {} / {}",
                mask.len(),
                probs.len(),
                summary.mask_bytes,
                summary.probabilities_bytes
            )));
        }
        Ok(SegmentResult {
            summary,
            mask,
            probabilities: (!probs.is_empty()).then_some(probs),
        })
    }
}
