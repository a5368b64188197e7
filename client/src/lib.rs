//! The client library behind `medmae-client`: connect (TLS/mTLS, bearer token), health, model listing, and
//! segmentation of a local volume or DICOM series (directory, zip or files) with upload progress.

use std::path::{Path, PathBuf};

use tokio_stream::StreamExt;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use protocol::medmae_v1::{
    self as pb, segment_request::Payload, segmentation_client::SegmentationClient, OutputFormat,
    VolumeFormat,
};
use protocol::CHUNK_BYTES;

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
    #[error(transparent)]
    File(#[from] spec::FileError),
    /// The server answered with an error status.
    #[error("server: {} ({:?})", .0.message(), .0.code())]
    Status(Status),
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
    /// Largest result (mask + probabilities) this client accepts from one segmentation; 0 =
    /// [`DEFAULT_MAX_RESULT_BYTES`]. Checked against the sizes the summary announces, before any chunk is stored.
    pub max_result_bytes: u64,
}

/// Default bound on one segmentation's result held in memory (mask + probabilities): 8 GiB, room for float
/// probabilities of several classes over a 512×512×1000 CT.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 8 << 30;

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        // Not a `source`: the message is already in this error's text.
        ClientError::Status(s)
    }
}

/// The upload format of a volume file, from its name by the imaging crate's extension rules; `None` for a name
/// the server cannot take as one upload (`.mhd` names a separate data file; DICOM is recognised by content).
pub fn upload_format(path: &Path) -> Option<VolumeFormat> {
    use imaging::io::FileFormat;
    match FileFormat::from_path(path)? {
        FileFormat::NiiGz => Some(VolumeFormat::NiftiGz),
        FileFormat::Nii => Some(VolumeFormat::Nifti),
        FileFormat::Mha => Some(VolumeFormat::Metaimage),
        FileFormat::Mhd => None,
    }
}

/// The server names streamed DICOM files by position ("file 7"); add which local file that is.
fn name_local_file(e: ClientError, paths: &[PathBuf]) -> ClientError {
    let ClientError::Status(s) = e else { return e };
    let msg = s.message();
    let index = msg.match_indices("file ").find_map(|(at, m)| {
        let digits: String = msg[at + m.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<usize>().ok()
    });
    match index
        .and_then(|k| k.checked_sub(1))
        .and_then(|i| paths.get(i))
    {
        Some(p) => ClientError::Status(Status::new(
            s.code(),
            format!("{msg} [file {} is {}]", index.unwrap_or(0), p.display()),
        )),
        None => ClientError::Status(s),
    }
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
    max_result: u64,
}

/// What to upload for segmentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentInput {
    /// A NIfTI (`.nii`, `.nii.gz`) or MetaImage (`.mha`) file.
    Volume(PathBuf),
    /// A zip archive holding a DICOM series.
    DicomZip(PathBuf),
    /// DICOM Part 10 files of one series (sent whole, one per message).
    DicomFiles(Vec<PathBuf>),
}

/// Per-request choices of a segmentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentParams {
    /// Model name ("" = the server's only segmentation model).
    pub model: String,
    /// Also return the class probabilities (.nii.gz).
    pub probabilities: bool,
    /// Label map format (unspecified = NIfTI for volumes, DICOM SEG for DICOM input).
    pub output: OutputFormat,
    /// DICOM input with several series: the SeriesInstanceUID or SeriesNumber to segment.
    pub series: String,
    /// DICOM SEG output: replace patient/study identification with placeholders.
    pub anonymize: bool,
}

/// The SeriesInstanceUID (or SeriesNumber) to segment from `found`: `wanted`, or the only series; otherwise an error
/// listing the series.
pub fn pick_series<'a, T>(
    found: &'a [(imaging::dicom::SeriesInfo, T)],
    wanted: Option<&str>,
) -> Result<&'a (imaging::dicom::SeriesInfo, T), ClientError> {
    let listing = || {
        found
            .iter()
            .map(|(i, _)| {
                format!(
                    "  {}  #{}  {}  {} files  {:?}",
                    i.series_uid,
                    i.series_number.map(|n| n.to_string()).unwrap_or_default(),
                    i.modality,
                    i.files,
                    i.description
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    match wanted {
        Some(w) => found
            .iter()
            .find(|(i, _)| i.series_uid == w || i.series_number.is_some_and(|n| n.to_string() == w))
            .ok_or_else(|| {
                ClientError::Protocol(format!(
                    "no series {w:?} in the input; it holds:\n{}",
                    listing()
                ))
            }),
        None => match found {
            [one] => Ok(one),
            [] => Err(ClientError::Protocol("the input holds no DICOM series".into())),
            _ => Err(ClientError::Protocol(format!(
                "the input holds {} DICOM series; pick one with --series UID (or series number):\n{}",
                found.len(),
                listing()
            ))),
        },
    }
}

/// Decide how to upload a local path: a directory of DICOM files (grouped locally by series; `series` picks one), a
/// `.zip` of a DICOM series, a single DICOM file, or a NIfTI/MetaImage volume. Returns the input and the series to
/// ask the server for ("" when not DICOM).
pub fn resolve_input(
    path: &Path,
    series: Option<&str>,
) -> Result<(SegmentInput, String), ClientError> {
    let local = |e: imaging::ImagingError| ClientError::Protocol(format!("DICOM input: {e}"));
    if path.is_dir() {
        let groups = imaging::dicom::series_files(path).map_err(local)?;
        let (info, files) = pick_series(&groups, series)?;
        return Ok((
            SegmentInput::DicomFiles(files.clone()),
            info.series_uid.clone(),
        ));
    }
    let lower = path.to_string_lossy().to_ascii_lowercase();
    if lower.ends_with(".zip") {
        let listed = imaging::dicom::list_series(path).map_err(local)?;
        let found: Vec<_> = listed.into_iter().map(|i| (i, ())).collect();
        let (info, ()) = pick_series(&found, series)?;
        return Ok((SegmentInput::DicomZip(path.into()), info.series_uid.clone()));
    }
    if upload_format(path).is_none() && imaging::dicom::looks_like_dicom(path) {
        return Ok((
            SegmentInput::DicomFiles(vec![path.into()]),
            series.unwrap_or_default().to_string(),
        ));
    }
    if series.is_some() {
        return Err(ClientError::Protocol(format!(
            "{}: --series applies to DICOM input (a directory, a .zip or .dcm files)",
            path.display()
        )));
    }
    Ok((SegmentInput::Volume(path.into()), String::new()))
}

/// What the server returned for one volume.
#[derive(Debug, Clone)]
pub struct SegmentResult {
    /// Summary with per-label statistics.
    pub summary: pb::SegmentSummary,
    /// The label map: .nii.gz bytes, or a DICOM SEG file (see `summary.mask_format`).
    pub mask: Vec<u8>,
    /// Probabilities, .nii.gz bytes, if requested.
    pub probabilities: Option<Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| spec::FileError::io(path, e).into())
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
            protocol::DEFAULT_MAX_MESSAGE_BYTES
        } else {
            opts.max_message_bytes
        };
        Ok(Self {
            channel,
            auth: TokenInterceptor(token),
            max,
            max_result: if opts.max_result_bytes == 0 {
                DEFAULT_MAX_RESULT_BYTES
            } else {
                opts.max_result_bytes
            },
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

    /// Upload the volume file `input` and segment it with `model` ("" = the server's only segmentation model);
    /// `progress(sent, total)` is called as chunks go out.
    pub async fn segment<F>(
        &self,
        input: &Path,
        model: &str,
        probabilities: bool,
        progress: F,
    ) -> Result<SegmentResult, ClientError>
    where
        F: FnMut(u64, u64) + Send + 'static,
    {
        let params = SegmentParams {
            model: model.into(),
            probabilities,
            ..SegmentParams::default()
        };
        self.segment_input(&SegmentInput::Volume(input.into()), &params, progress)
            .await
    }

    /// Upload `input` (a volume, a DICOM zip or DICOM files) and segment it; `progress(sent, total)` is called as
    /// bytes go out.
    pub async fn segment_input<F>(
        &self,
        input: &SegmentInput,
        params: &SegmentParams,
        progress: F,
    ) -> Result<SegmentResult, ClientError>
    where
        F: FnMut(u64, u64) + Send + 'static,
    {
        match input {
            SegmentInput::Volume(path) => {
                let format = upload_format(path).ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "{}: expected a .nii, .nii.gz or .mha file, a .zip or a directory of DICOM files",
                        path.display()
                    ))
                })?;
                self.upload(format, vec![read(path)?], params, progress)
                    .await
            }
            SegmentInput::DicomZip(path) => {
                self.upload(VolumeFormat::DicomZip, vec![read(path)?], params, progress)
                    .await
            }
            SegmentInput::DicomFiles(paths) => {
                let files = paths
                    .iter()
                    .map(|p| read(p))
                    .collect::<Result<Vec<_>, _>>()?;
                self.upload(VolumeFormat::DicomFiles, files, params, progress)
                    .await
                    .map_err(|e| name_local_file(e, paths))
            }
        }
    }

    /// Send `parts` as `format`: for DICOM_FILES one `file` message per part, otherwise the single part in chunks.
    /// Public so tests can send files exactly as given (no local checks).
    pub async fn upload<F>(
        &self,
        format: VolumeFormat,
        parts: Vec<Vec<u8>>,
        params: &SegmentParams,
        mut progress: F,
    ) -> Result<SegmentResult, ClientError>
    where
        F: FnMut(u64, u64) + Send + 'static,
    {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let header = pb::SegmentHeader {
            model_name: params.model.clone(),
            format: format as i32,
            return_probabilities: params.probabilities,
            total_bytes: total,
            output: params.output as i32,
            series: params.series.clone(),
            anonymize: params.anonymize,
            file_count: if format == VolumeFormat::DicomFiles {
                u32::try_from(parts.len()).unwrap_or(u32::MAX)
            } else {
                0
            },
            ..Default::default()
        };
        let payloads: Vec<Payload> = if format == VolumeFormat::DicomFiles {
            parts.into_iter().map(Payload::File).collect()
        } else {
            parts
                .iter()
                .flat_map(|p| p.chunks(CHUNK_BYTES).map(|c| Payload::Chunk(c.to_vec())))
                .collect()
        };
        let mut sent = 0u64;
        let messages = std::iter::once(Payload::Header(header))
            .chain(payloads)
            .map(|p| pb::SegmentRequest { payload: Some(p) });
        let outbound = tokio_stream::iter(messages).map(move |m| {
            if let Some(Payload::Chunk(c) | Payload::File(c)) = &m.payload {
                sent += c.len() as u64;
                progress(sent, total);
            }
            m
        });
        let mut replies = self.segmentation().segment(outbound).await?.into_inner();
        let mut result = ResultCollector::new(self.max_result);
        while let Some(r) = replies.next().await {
            result.take(r?)?;
        }
        let (summary, mask, probs) = result.finish()?;
        Ok(SegmentResult {
            summary,
            mask,
            probabilities: (!probs.is_empty()).then_some(probs),
        })
    }
}

/// Assembles a segmentation's response stream: the summary first (it announces the sizes of the mask and
/// probability streams), then chunks that must add up to exactly those sizes. Memory is bounded by the client's limit
/// on the announced sizes, checked before anything is stored, and by the announcement itself while chunks arrive.
struct ResultCollector {
    limit: u64,
    summary: Option<pb::SegmentSummary>,
    mask: Vec<u8>,
    probs: Vec<u8>,
}

impl ResultCollector {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            summary: None,
            mask: Vec::new(),
            probs: Vec::new(),
        }
    }

    fn take(&mut self, r: pb::SegmentResponse) -> Result<(), ClientError> {
        use pb::segment_response::Payload as P;
        let protocol = |m: String| Err(ClientError::Protocol(m));
        match (r.payload, &self.summary) {
            (None, _) => protocol("empty response message".into()),
            (Some(P::Summary(_)), Some(_)) => protocol("the server sent a second summary".into()),
            (Some(P::Summary(s)), None) => {
                let announced = s.mask_bytes.saturating_add(s.probabilities_bytes);
                if announced > self.limit {
                    return protocol(format!(
                        "the server announced {} mask + {} probability bytes, more than this client's limit of {} \
                         bytes (max_result_bytes)",
                        s.mask_bytes, s.probabilities_bytes, self.limit
                    ));
                }
                // Within the limit, so reserving what was announced is bounded.
                self.mask.reserve_exact(s.mask_bytes as usize);
                self.probs.reserve_exact(s.probabilities_bytes as usize);
                self.summary = Some(s);
                Ok(())
            }
            (Some(P::MaskChunk(_) | P::ProbabilitiesChunk(_)), None) => {
                protocol("a result chunk came before the summary".into())
            }
            (Some(P::MaskChunk(c)), Some(s)) => {
                Self::append(&mut self.mask, &c, s.mask_bytes, "mask")
            }
            (Some(P::ProbabilitiesChunk(c)), Some(s)) => {
                Self::append(&mut self.probs, &c, s.probabilities_bytes, "probability")
            }
        }
    }

    fn append(
        to: &mut Vec<u8>,
        chunk: &[u8],
        announced: u64,
        what: &str,
    ) -> Result<(), ClientError> {
        let total = to.len() as u64 + chunk.len() as u64;
        if total > announced {
            return Err(ClientError::Protocol(format!(
                "received at least {total} {what} bytes, the summary announced {announced}"
            )));
        }
        to.extend_from_slice(chunk);
        Ok(())
    }

    fn finish(self) -> Result<(pb::SegmentSummary, Vec<u8>, Vec<u8>), ClientError> {
        let summary = self
            .summary
            .ok_or_else(|| ClientError::Protocol("the server sent no summary".into()))?;
        if self.mask.len() as u64 != summary.mask_bytes
            || self.probs.len() as u64 != summary.probabilities_bytes
        {
            return Err(ClientError::Protocol(format!(
                "received {} mask / {} probability bytes, summary announced {} / {}",
                self.mask.len(),
                self.probs.len(),
                summary.mask_bytes,
                summary.probabilities_bytes
            )));
        }
        Ok((summary, self.mask, self.probs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(mask: u64, probs: u64) -> pb::SegmentResponse {
        pb::SegmentResponse {
            payload: Some(pb::segment_response::Payload::Summary(pb::SegmentSummary {
                mask_bytes: mask,
                probabilities_bytes: probs,
                ..Default::default()
            })),
        }
    }
    fn mask(n: usize) -> pb::SegmentResponse {
        pb::SegmentResponse {
            payload: Some(pb::segment_response::Payload::MaskChunk(vec![7; n])),
        }
    }
    fn probs(n: usize) -> pb::SegmentResponse {
        pb::SegmentResponse {
            payload: Some(pb::segment_response::Payload::ProbabilitiesChunk(vec![
                1;
                n
            ])),
        }
    }
    fn collect(limit: u64, msgs: Vec<pb::SegmentResponse>) -> Result<(u64, usize, usize), String> {
        let mut c = ResultCollector::new(limit);
        for m in msgs {
            c.take(m).map_err(|e| e.to_string())?;
        }
        let (s, m, p) = c.finish().map_err(|e| e.to_string())?;
        Ok((s.mask_bytes, m.len(), p.len()))
    }

    #[test]
    fn upload_formats_from_names() {
        use std::os::unix::ffi::OsStrExt;
        let f = |n: &str| upload_format(Path::new(n));
        assert_eq!(f("/a/b.NII.GZ"), Some(VolumeFormat::NiftiGz));
        assert_eq!(f("b.nii"), Some(VolumeFormat::Nifti));
        assert_eq!(f("b.mha"), Some(VolumeFormat::Metaimage));
        assert_eq!(f("b.mhd"), None);
        assert_eq!(f("dicom_dir"), None);
        let non_utf8 = std::ffi::OsStr::from_bytes(b"scan-\xff.nii.gz");
        assert_eq!(
            upload_format(Path::new(non_utf8)),
            Some(VolumeFormat::NiftiGz)
        );
    }

    #[test]
    fn results_are_assembled_and_bounded_by_the_announcement_and_the_limit() {
        // Chunks add up to the announced sizes, in any interleaving.
        assert_eq!(
            collect(
                100,
                vec![summary(5, 8), mask(3), probs(4), mask(2), probs(4)]
            ),
            Ok((5, 5, 8))
        );
        let err = |limit, msgs| collect(limit, msgs).unwrap_err();
        // The limit is checked on the announcement, before any chunk is stored (5 + 8 > 12).
        let e = err(12, vec![summary(5, 8), mask(5)]);
        assert!(
            e.contains("5 mask + 8 probability bytes") && e.contains("limit of 12"),
            "{e}"
        );
        // Announced sizes that overflow u64 when added are over any limit.
        let e = err(u64::MAX - 1, vec![summary(u64::MAX, 2)]);
        assert!(e.contains("limit"), "{e}");
        // More than announced: refused at the chunk that crosses the announcement.
        let e = err(100, vec![summary(4, 0), mask(3), mask(3)]);
        assert!(
            e.contains("at least 6 mask bytes, the summary announced 4"),
            "{e}"
        );
        let e = err(100, vec![summary(4, 2), probs(3)]);
        assert!(e.contains("at least 3 probability bytes"), "{e}");
        // Fewer than announced, no summary, chunks first, two summaries, empty messages.
        let e = err(100, vec![summary(4, 0), mask(3)]);
        assert!(
            e.contains("received 3 mask / 0 probability bytes, summary announced 4 / 0"),
            "{e}"
        );
        assert!(err(100, vec![]).contains("no summary"));
        assert!(err(100, vec![mask(1), summary(1, 0)]).contains("before the summary"));
        assert!(err(100, vec![summary(0, 0), summary(0, 0)]).contains("second summary"));
        let empty = pb::SegmentResponse { payload: None };
        assert!(err(100, vec![summary(0, 0), empty]).contains("empty response"));
    }

    #[test]
    fn server_file_positions_name_local_files() {
        let paths = vec![PathBuf::from("/d/a.dcm"), PathBuf::from("/d/b.dcm")];
        let e = name_local_file(
            ClientError::Status(Status::invalid_argument("DICOM upload: file 2: truncated")),
            &paths,
        );
        assert!(e.to_string().contains("[file 2 is /d/b.dcm]"), "{e}");
        let e = name_local_file(
            ClientError::Status(Status::invalid_argument("2 series found")),
            &paths,
        );
        assert!(!e.to_string().contains('['), "{e}");
        let e = name_local_file(
            ClientError::Status(Status::invalid_argument("file 9: bad")),
            &paths,
        );
        assert!(!e.to_string().contains('['), "{e}");
    }
}
