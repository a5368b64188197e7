//! Delivery of a SEG: C-STORE SCU (optionally over DICOM TLS) and STOW-RS (HTTP POST of multipart/related, over
//! http or https). Each call is one try; the worker owns retries and backoff.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::client::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociationOptions, Pdu};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::config::{Destination, Target};
use super::dimse::{self, status};
use super::scp::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use super::tls;

/// Send the SEG file `seg` (Part 10 bytes) to `dest`, calling as `our_ae`, within `timeout`.
pub async fn deliver(
    dest: &Destination,
    our_ae: &str,
    seg: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let work = async {
        match &dest.target {
            Target::Dimse {
                host,
                port,
                ae_title,
                tls_ca,
            } => {
                c_store(
                    our_ae,
                    host,
                    *port,
                    ae_title,
                    tls_ca.as_deref(),
                    seg,
                    timeout,
                )
                .await
            }
            Target::Stow {
                url,
                ca,
                token_file,
            } => stow(url, ca.as_deref(), token_file.as_deref(), seg).await,
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs_f64())))
}

fn open_seg(seg: &[u8]) -> Result<FileDicomObject<InMemDicomObject>, String> {
    let body = seg
        .get(128..)
        .ok_or_else(|| "the SEG file is shorter than a DICOM preamble".to_string())?;
    OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(body)
        .map_err(|e| format!("reading the spooled SEG: {e}"))
}

async fn c_store(
    our_ae: &str,
    host: &str,
    port: u16,
    called: &str,
    tls_ca: Option<&Path>,
    seg: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let obj = open_seg(seg)?;
    let class = obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        .to_string();
    let opts = ClientAssociationOptions::new()
        .calling_ae_title(our_ae.to_string())
        .called_ae_title(called.to_string())
        .with_presentation_context(
            class,
            vec![EXPLICIT_VR_LE.to_string(), IMPLICIT_VR_LE.to_string()],
        )
        .read_timeout(timeout)
        .write_timeout(timeout)
        .connection_timeout(timeout);
    let addr = format!("{host}:{port}");
    let refused =
        |e: dicom_ul::association::Error| format!("association with {called}@{addr}: {e}");
    match tls_ca {
        Some(ca) => {
            let cfg = tls::client_config(ca)?;
            let a = opts
                .tls_config(cfg)
                .server_name(host)
                .establish_tls_async(addr.as_str())
                .await
                .map_err(refused)?;
            send_on(a, &obj).await
        }
        None => {
            send_on(
                opts.establish_async(addr.as_str()).await.map_err(refused)?,
                &obj,
            )
            .await
        }
    }
}

async fn send_on<S>(
    mut assoc: AsyncClientAssociation<S>,
    obj: &FileDicomObject<InMemDicomObject>,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let trim = |s: &str| s.trim_end_matches('\0').to_string();
    let (class, inst) = (
        trim(obj.meta().media_storage_sop_class_uid()),
        trim(obj.meta().media_storage_sop_instance_uid()),
    );
    let Some(pc) = assoc
        .presentation_contexts()
        .iter()
        .find(|p| p.reason == PresentationContextResultReason::Acceptance)
        .cloned()
    else {
        let _ = assoc.abort().await;
        return Err(
            "the destination accepted no presentation context for Segmentation Storage".into(),
        );
    };
    let ts = TransferSyntaxRegistry
        .get(&pc.transfer_syntax)
        .ok_or_else(|| {
            format!(
                "the destination chose an unknown transfer syntax {}",
                pc.transfer_syntax
            )
        })?;
    let mut data = Vec::new();
    obj.write_dataset_with_ts(&mut data, ts)
        .map_err(|e| format!("encoding the SEG: {e}"))?;
    let cmd = dimse::store_rq(1, &class, &inst);
    let send = |value_type, is_last, data| Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc.id,
            value_type,
            is_last,
            data,
        }],
    };
    let fail = |e: dicom_ul::association::Error| format!("sending: {e}");
    assoc
        .send(&send(PDataValueType::Command, true, cmd))
        .await
        .map_err(fail)?;
    // A PDV carries a 6-byte item header inside the PDU's variable field; 0 means "no limit".
    let max = match assoc.acceptor_max_pdu_length() {
        0 => 1 << 20,
        n => (n as usize).saturating_sub(16).max(1024),
    };
    let mut chunks = data.chunks(max).peekable();
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        assoc
            .send(&send(PDataValueType::Data, last, c.to_vec()))
            .await
            .map_err(fail)?;
    }
    let code = loop {
        match assoc
            .receive()
            .await
            .map_err(|e| format!("waiting for the C-STORE response: {e}"))?
        {
            Pdu::PData { data } => {
                if let Some(v) = data
                    .iter()
                    .find(|v| v.value_type == PDataValueType::Command && v.is_last)
                {
                    let rsp = dimse::parse_command(&v.data).map_err(|e| e.to_string())?;
                    break rsp.status.unwrap_or(status::PROCESSING_FAILURE);
                }
            }
            other => {
                return Err(format!(
                    "unexpected {} instead of a C-STORE response",
                    other.short_description()
                ))
            }
        }
    };
    let _ = assoc.release().await;
    if status::stored(code) {
        Ok(())
    } else {
        Err(format!("C-STORE answered with status {code:04X}H"))
    }
}

async fn stow(
    url: &str,
    ca: Option<&Path>,
    token_file: Option<&Path>,
    seg: &[u8],
) -> Result<(), String> {
    let uri: hyper::Uri = format!("{url}/studies")
        .parse()
        .map_err(|e| format!("url: {e}"))?;
    let host = uri.host().unwrap_or_default().to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let boundary = format!("medmae-{}", super::fsutil::nonce());
    let mut body = Vec::with_capacity(seg.len() + 200);
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(seg);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut req = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(
            hyper::header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )
        .header(hyper::header::ACCEPT, "application/dicom+json");
    if let Some(t) = token_file {
        let token = std::fs::read_to_string(t).map_err(|e| format!("{}: {e}", t.display()))?;
        req = req.header(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", token.trim()),
        );
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let (code, text) = if https {
        let ca = ca.ok_or_else(|| "https destinations need `ca`".to_string())?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls::client_config(ca)?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
        post(stream, req).await?
    } else {
        post(tcp, req).await?
    };
    // 200: stored. 202: stored with warnings or partly failed (a failed-SOP sequence names the failures).
    match code {
        200 => Ok(()),
        202 if !text.contains("00081198") => Ok(()),
        _ => Err(format!("STOW-RS answered HTTP {code}")),
    }
}

async fn post<T>(io: T, req: hyper::Request<Full<Bytes>>) -> Result<(u16, String), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let rsp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let code = rsp.status().as_u16();
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("HTTP body: {e}"))?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}
