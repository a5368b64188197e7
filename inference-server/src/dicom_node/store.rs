//! C-STORE SCP: check a received instance (decoded as a one-slice series by the reader the job will use, UIDs
//! against the request), write it durably to the spool, and choose the DIMSE status; refusals are logged with the
//! status and the reason, never with UIDs or header values.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dicom_object::FileMetaTableBuilder;
use dicom_ul::pdu::PresentationContextResultReason;
use imaging::dicom::DicomOptions;
use imaging::ImagingError;

use super::config::FaultPause;
use super::dimse::{status, Command};
use super::metrics::DicomMetrics;
use super::scp::{class_name, Peer, MAX_INSTANCE_BYTES};
use super::NodeCtx;

/// Check, spool and answer one C-STORE; returns the DIMSE status.
pub(super) async fn store(
    ctx: &Arc<NodeCtx>,
    peer: &Peer,
    cmd: &Command,
    pc_id: u8,
    data: Vec<u8>,
    overflow: bool,
    touched: &mut Vec<String>,
) -> u16 {
    let m = &ctx.metrics;
    let refuse = |code: u16, why: &str| {
        DicomMetrics::count(&m.instances, "refused");
        tracing::warn!(calling_ae = ?peer.ae, sop_class = %cmd.sop_class, status = %format!("{code:04X}H"), "C-STORE refused: {why}");
        code
    };
    if overflow {
        return refuse(
            status::OUT_OF_RESOURCES,
            &format!(
                "the instance is larger than {} bytes (dicom.max_series_bytes; at most {MAX_INSTANCE_BYTES} per instance)",
                ctx.cfg.max_series_bytes.min(MAX_INSTANCE_BYTES)
            ),
        );
    }
    let accepted = peer
        .contexts
        .iter()
        .find(|p| p.id == pc_id && p.reason == PresentationContextResultReason::Acceptance);
    let Some(pc) = accepted.filter(|p| p.abstract_syntax == cmd.sop_class) else {
        return refuse(
            status::SOP_CLASS_NOT_SUPPORTED,
            &format!(
                "{} was sent on a presentation context not accepted for it",
                class_name(&cmd.sop_class)
            ),
        );
    };
    let file = match part10(cmd, &pc.transfer_syntax, &peer.ae, &data) {
        Ok(f) => f,
        Err(e) => return refuse(status::CANNOT_UNDERSTAND, &e),
    };
    drop(data);
    let (c, cmd2, ae) = (ctx.clone(), cmd.clone(), peer.ae.clone());
    let r = tokio::task::spawn_blocking(move || check_and_spool(&c, &cmd2, &ae, file)).await;
    let stored = match r {
        Ok(Ok(s)) => s,
        Ok(Err((code, why))) => return refuse(code, &why),
        Err(e) => {
            return refuse(
                status::PROCESSING_FAILURE,
                &format!("worker thread failed: {e}"),
            )
        }
    };
    DicomMetrics::count(
        &m.instances,
        if stored.duplicate {
            "duplicate"
        } else {
            "stored"
        },
    );
    tracing::debug!(series = %stored.series, duplicate = stored.duplicate, "instance spooled");
    if !touched.contains(&stored.series) {
        touched.push(stored.series.clone());
    }
    let n = ctx.stored.fetch_add(1, Ordering::SeqCst) + 1;
    if ctx.cfg.fault_pause == Some(FaultPause::Store(n)) {
        super::pause(&format!("store:{n}")).await;
    }
    status::SUCCESS
}

/// The received data set as a Part 10 file: preamble, file meta (from the command and presentation context), data.
fn part10(cmd: &Command, ts: &str, calling_ae: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(cmd.sop_class.as_str())
        .media_storage_sop_instance_uid(cmd.sop_instance.as_str())
        .transfer_syntax(ts)
        .source_application_entity_title(calling_ae)
        .build()
        .map_err(|e| format!("file meta: {e}"))?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| format!("file meta: {e}"))?;
    out.extend_from_slice(data);
    Ok(out)
}

/// What went wrong reading an instance, without header values (UIDs or free text never reach the log).
fn describe(e: &ImagingError) -> (u16, String) {
    match e {
        ImagingError::TooLarge { .. } => (
            status::OUT_OF_RESOURCES,
            "the image exceeds the voxel limit".into(),
        ),
        ImagingError::Format { msg, .. } if msg.contains("non-image object") => (
            status::DATA_SET_MISMATCH,
            "the data set holds no pixel data (a non-image object under an image SOP class)".into(),
        ),
        ImagingError::Unsupported { what, .. } => {
            (status::CANNOT_UNDERSTAND, format!("unsupported {what}"))
        }
        ImagingError::HeaderField { field, .. } => (
            status::CANNOT_UNDERSTAND,
            format!("bad header field {field}"),
        ),
        ImagingError::Truncated { what, .. } => {
            (status::CANNOT_UNDERSTAND, format!("truncated {what}"))
        }
        _ => (status::CANNOT_UNDERSTAND, "unreadable data set".into()),
    }
}

/// Decode the instance as a one-slice series (the same reader the job will use), check it against the command and
/// write it to the spool.
fn check_and_spool(
    ctx: &NodeCtx,
    cmd: &Command,
    calling_ae: &str,
    file: Vec<u8>,
) -> Result<super::spool::Stored, (u16, String)> {
    let opts = DicomOptions {
        max_files: 1,
        max_total_bytes: ctx.cfg.max_series_bytes,
        max_voxels: ctx.shared.limits.max_voxels,
        neutral_names: true,
    };
    let one = imaging::dicom::read_series_memory(
        vec![(PathBuf::from("instance"), file.clone())],
        None,
        &opts,
    )
    .map_err(|e| describe(&e))?;
    let same = one.instances.first().is_some_and(|i| {
        i.sop_instance_uid == cmd.sop_instance && i.sop_class_uid == cmd.sop_class
    });
    if !same {
        return Err((
            status::DATA_SET_MISMATCH,
            "the data set's SOP Class/Instance UID differ from the C-STORE request".into(),
        ));
    }
    ctx.spool
        .store(&one.info.series_uid, &cmd.sop_instance, calling_ae, &file)
        .map_err(|e| (status::OUT_OF_RESOURCES, e.to_string()))
}
