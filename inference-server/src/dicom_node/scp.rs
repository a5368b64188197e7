//! The listener: association negotiation (AE policy, SOP classes, transfer syntaxes, association limit, TLS) and
//! the DIMSE loop of each association (C-ECHO SCP, C-STORE SCP into the spool).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_ul::association::server::DefaultNegotiation;
use dicom_ul::association::server::{AccessControl, AsyncServerAssociation};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType,
    PresentationContextNegotiated, PresentationContextResultReason, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::dimse::{self, status, Command};
use super::metrics::DicomMetrics;
use super::{stopped, NodeCtx};

/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// Largest single instance held in memory while it arrives (a CT or MR slice is well under 1 MiB; the per-series
/// byte limit applies too).
pub const MAX_INSTANCE_BYTES: u64 = 256 << 20;

/// The storage SOP classes accepted (single-frame images the series reader decodes), with their names.
pub const STORAGE_CLASSES: [(&str, &str); 2] = [
    (uids::CT_IMAGE_STORAGE, "CT Image Storage"),
    (uids::MR_IMAGE_STORAGE, "MR Image Storage"),
];

/// A readable name for an abstract syntax UID.
pub(super) fn class_name(uid: &str) -> &'static str {
    match uid {
        uids::VERIFICATION => "Verification",
        uids::ENHANCED_CT_IMAGE_STORAGE => "Enhanced CT Image Storage",
        uids::ENHANCED_MR_IMAGE_STORAGE => "Enhanced MR Image Storage",
        uids::SEGMENTATION_STORAGE => "Segmentation Storage",
        uids::SECONDARY_CAPTURE_IMAGE_STORAGE => "Secondary Capture Image Storage",
        uids::BASIC_TEXT_SR_STORAGE => "Basic Text SR Storage",
        uids::ENCAPSULATED_PDF_STORAGE => "Encapsulated PDF Storage",
        _ => STORAGE_CLASSES
            .iter()
            .find(|(u, _)| *u == uid)
            .map_or("an unsupported SOP class", |(_, n)| n),
    }
}

/// The AE policy: the called AE title must be this node's, the calling one on the allow-list (if any).
struct Policy {
    allowed: Option<Vec<String>>,
    metrics: DicomMetrics,
}

impl AccessControl for Policy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let (calling, called) = (calling_ae_title.trim(), called_ae_title.trim());
        let reject = |reason, why: &str| {
            DicomMetrics::count(&self.metrics.associations, "rejected");
            tracing::warn!(calling_ae = ?calling, called_ae = ?called, "association rejected: {why}");
            Err(reason)
        };
        if called != this_ae_title {
            return reject(
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
                "the called AE title is not this node's (dicom.ae_title)",
            );
        }
        match &self.allowed {
            Some(list) if !list.iter().any(|a| a == calling) => reject(
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                "calling AE title not on the allow-list (dicom.allowed_calling_aes)",
            ),
            _ => Ok(()),
        }
    }
}

type Options = ServerAssociationOptions<'static, Policy, DefaultNegotiation>;

fn options(ctx: &NodeCtx, tls: Option<Arc<rustls::ServerConfig>>) -> Options {
    let c = &ctx.cfg;
    let mut o = ServerAssociationOptions::new()
        .ae_access_control(Policy {
            allowed: c.allowed_calling_aes.clone(),
            metrics: ctx.metrics.clone(),
        })
        .ae_title(c.ae_title.clone())
        .max_pdu_length(c.max_pdu)
        .strict(true)
        .read_timeout(c.association_timeout)
        .write_timeout(c.association_timeout)
        .with_abstract_syntax(uids::VERIFICATION)
        .with_transfer_syntax(EXPLICIT_VR_LE)
        .with_transfer_syntax(IMPLICIT_VR_LE);
    for (uid, _) in STORAGE_CLASSES {
        o = o.with_abstract_syntax(uid);
    }
    if let Some(t) = tls {
        o = o.tls_config(t);
    }
    o
}

/// Accept associations until `stop` turns true; at most `max_associations` at once, the rest are rejected.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<NodeCtx>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let is_tls = tls.is_some();
    let opts = Arc::new(options(&ctx, tls));
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.cfg.max_associations));
    loop {
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "DICOM listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let (ctx, opts) = (ctx.clone(), opts.clone());
                tokio::spawn(async move {
                    let _slot = permit;
                    connection(socket, peer, ctx, opts, is_tls).await;
                });
            }
            Err(_) => {
                DicomMetrics::count(&ctx.metrics.associations, "busy");
                tracing::warn!(peer = %peer.ip(), max = ctx.cfg.max_associations, "association rejected: too many associations (dicom.max_associations)");
                if !is_tls {
                    tokio::spawn(reject_busy(socket));
                }
            }
        }
    }
    ctx.metrics.up.set(0);
}

/// Answer an association request with A-ASSOCIATE-RJ (transient, local limit exceeded).
async fn reject_busy(mut socket: TcpStream) {
    let read = async {
        let mut head = [0u8; 6];
        socket.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        if head[0] != 0x01 || len > 64 << 10 {
            return Ok(false);
        }
        let mut body = vec![0u8; len];
        socket.read_exact(&mut body).await.map(|_| true)
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(5), read).await,
        Ok(Ok(true))
    ) {
        return;
    }
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut out = Vec::new();
    if dicom_ul::write_pdu(&mut out, &rj).is_ok() {
        let _ = socket.write_all(&out).await;
    }
}

async fn connection(
    socket: TcpStream,
    peer: SocketAddr,
    ctx: Arc<NodeCtx>,
    opts: Arc<Options>,
    tls: bool,
) {
    let ip = peer.ip();
    if tls {
        match opts.establish_tls_async(socket).await {
            Ok(a) => association(a, ip, ctx).await,
            Err(e) => {
                tracing::info!(peer = %ip, error = %e, "DICOM TLS association not established")
            }
        }
    } else {
        match opts.establish_async(socket).await {
            Ok(a) => association(a, ip, ctx).await,
            Err(e) => tracing::info!(peer = %ip, error = %e, "DICOM association not established"),
        }
    }
}

/// What a DIMSE message is waiting for.
enum Phase {
    /// Between messages, or collecting command fragments.
    Command(Vec<u8>),
    /// Collecting the data set of `cmd`.
    Data {
        cmd: Command,
        pc: u8,
        buf: Vec<u8>,
        overflow: bool,
    },
}

/// Who is on the other end of an association.
pub(super) struct Peer {
    pub(super) ip: std::net::IpAddr,
    pub(super) ae: String,
    pub(super) contexts: Vec<PresentationContextNegotiated>,
}

/// Log refused presentation contexts, one line per reason naming a few SOP classes. SCUs such as Orthanc and
/// storescu propose every storage class, and several contexts per class with different transfer syntaxes, so a
/// refusal is a warning only when no context of that SOP class was accepted.
fn log_contexts(peer: &Peer) {
    use PresentationContextResultReason as R;
    let accepted = |uid: &str| {
        peer.contexts
            .iter()
            .any(|p| p.reason == R::Acceptance && p.abstract_syntax == uid)
    };
    let list = |ts_refusal: bool| -> Vec<String> {
        let mut v: Vec<String> = peer
            .contexts
            .iter()
            .filter(|p| {
                p.reason != R::Acceptance
                    && (p.reason == R::TransferSyntaxesNotSupported) == ts_refusal
            })
            .filter(|p| !accepted(&p.abstract_syntax))
            .map(|p| format!("{} ({})", p.abstract_syntax, class_name(&p.abstract_syntax)))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let shown = |v: &[String]| {
        let mut s = v.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 3 {
            s.push_str(&format!(" and {} more", v.len() - 3));
        }
        s
    };
    let ts = list(true);
    if !ts.is_empty() {
        tracing::warn!(
            calling_ae = ?peer.ae, sop_classes = %shown(&ts),
            "presentation context refused: none of the proposed transfer syntaxes is supported (this node accepts \
             Explicit VR Little Endian and Implicit VR Little Endian only)"
        );
    }
    let classes = list(false);
    if !classes.is_empty() {
        tracing::info!(
            calling_ae = ?peer.ae, count = classes.len(), sop_classes = %shown(&classes),
            "presentation context refused: SOP class not accepted (this node stores CT and MR Image Storage and \
             answers Verification)"
        );
    }
}

async fn association<S>(
    mut assoc: AsyncServerAssociation<S>,
    ip: std::net::IpAddr,
    ctx: Arc<NodeCtx>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    use dicom_ul::association::Association;
    let peer = Peer {
        ip,
        ae: assoc.peer_ae_title().trim().to_string(),
        contexts: assoc.presentation_contexts().to_vec(),
    };
    let m = &ctx.metrics;
    DicomMetrics::count(&m.associations, "accepted");
    m.associations_active.inc();
    let accepted = peer
        .contexts
        .iter()
        .filter(|p| p.reason == PresentationContextResultReason::Acceptance)
        .count();
    tracing::info!(peer = %peer.ip, calling_ae = ?peer.ae, contexts = accepted, refused = peer.contexts.len() - accepted, "association accepted");
    log_contexts(&peer);
    let mut touched: Vec<String> = Vec::new();
    let mut phase = Phase::Command(Vec::new());
    let end = loop {
        let pdu = match assoc.receive().await {
            Ok(p) => p,
            Err(e) => break format!("ended without release: {e}"),
        };
        match pdu {
            Pdu::PData { data } => {
                for pdv in data {
                    match step(&ctx, &peer, &mut phase, pdv, &mut touched).await {
                        Ok(Some((pc, reply))) => {
                            let msg = Pdu::PData {
                                data: vec![PDataValue {
                                    presentation_context_id: pc,
                                    value_type: PDataValueType::Command,
                                    is_last: true,
                                    data: reply,
                                }],
                            };
                            if let Err(e) = assoc.send(&msg).await {
                                m.associations_active.dec();
                                tracing::info!(calling_ae = ?peer.ae, error = %e, "association lost while answering");
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(why) => {
                            m.associations_active.dec();
                            tracing::warn!(calling_ae = ?peer.ae, "association aborted: {why}");
                            let _ = assoc.abort().await;
                            return;
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP).await;
                if ctx.cfg.complete_on_release {
                    for s in &touched {
                        ctx.spool.request_close(s);
                    }
                    ctx.wake.notify_one();
                }
                break "released".to_string();
            }
            Pdu::AbortRQ { .. } => break "aborted by the peer".to_string(),
            other => break format!("unexpected {}", other.short_description()),
        }
    };
    m.associations_active.dec();
    tracing::info!(calling_ae = ?peer.ae, series = touched.len(), "association {end}");
}

/// Feed one P-DATA value; returns a response to send (on a presentation context) when a message is complete.
async fn step(
    ctx: &Arc<NodeCtx>,
    peer: &Peer,
    phase: &mut Phase,
    pdv: PDataValue,
    touched: &mut Vec<String>,
) -> Result<Option<(u8, Vec<u8>)>, String> {
    let pc_id = pdv.presentation_context_id;
    match pdv.value_type {
        PDataValueType::Command => {
            let Phase::Command(buf) = phase else {
                return Err("a command fragment arrived while a data set was expected".into());
            };
            if buf.len() + pdv.data.len() > dimse::MAX_COMMAND_BYTES {
                return Err(format!(
                    "command set over {} bytes",
                    dimse::MAX_COMMAND_BYTES
                ));
            }
            buf.extend_from_slice(&pdv.data);
            if !pdv.is_last {
                return Ok(None);
            }
            let cmd = dimse::parse_command(buf).map_err(|e| e.to_string())?;
            buf.clear();
            if cmd.has_data_set {
                *phase = Phase::Data {
                    cmd,
                    pc: pc_id,
                    buf: Vec::new(),
                    overflow: false,
                };
                return Ok(None);
            }
            Ok(Some((pc_id, answer_without_data(peer, &cmd))))
        }
        PDataValueType::Data => {
            let Phase::Data {
                pc, buf, overflow, ..
            } = phase
            else {
                return Err("a data fragment arrived without a command".into());
            };
            if *pc != pc_id {
                return Err("data set fragments switched presentation context".into());
            }
            if !*overflow {
                if (buf.len() + pdv.data.len()) as u64
                    > ctx.cfg.max_series_bytes.min(MAX_INSTANCE_BYTES)
                {
                    *overflow = true;
                    *buf = Vec::new();
                } else {
                    buf.extend_from_slice(&pdv.data);
                }
            }
            if !pdv.is_last {
                return Ok(None);
            }
            match std::mem::replace(phase, Phase::Command(Vec::new())) {
                Phase::Data {
                    cmd, buf, overflow, ..
                } if cmd.field == dimse::C_STORE_RQ => {
                    let code =
                        super::store::store(ctx, peer, &cmd, pc_id, buf, overflow, touched).await;
                    Ok(Some((
                        pc_id,
                        dimse::store_rsp(cmd.message_id, &cmd.sop_class, &cmd.sop_instance, code),
                    )))
                }
                Phase::Data { cmd, .. } => Ok(Some((pc_id, unsupported(peer, &cmd)))),
                Phase::Command(_) => Err("internal: data phase lost".into()),
            }
        }
    }
}

fn unsupported(peer: &Peer, cmd: &Command) -> Vec<u8> {
    tracing::warn!(calling_ae = ?peer.ae, command = %format!("{:04X}H", cmd.field), "DIMSE operation refused: this node performs C-ECHO and C-STORE only (status 0211H)");
    dimse::bare_rsp(cmd.field, cmd.message_id, status::UNRECOGNIZED_OPERATION)
}

fn answer_without_data(peer: &Peer, cmd: &Command) -> Vec<u8> {
    match cmd.field {
        dimse::C_ECHO_RQ => {
            tracing::debug!(calling_ae = ?peer.ae, "C-ECHO answered");
            dimse::echo_rsp(cmd.message_id, status::SUCCESS)
        }
        dimse::C_STORE_RQ => {
            tracing::warn!(calling_ae = ?peer.ae, "C-STORE refused: the request announced no data set (status C000H)");
            dimse::store_rsp(
                cmd.message_id,
                &cmd.sop_class,
                &cmd.sop_instance,
                status::CANNOT_UNDERSTAND,
            )
        }
        _ => unsupported(peer, cmd),
    }
}
