//! The DICOM node of the real `medmae-serve` against real DICOM software: Orthanc (a PACS, with its DICOMweb
//! plugin), dcmtk's `echoscu`/`storescu` and dicom3tools' `dciodvfy`, all installed by `scripts/setup`.
//!
//! - Round trip: a CT series uploaded to Orthanc is C-STOREd by Orthanc to the node, which segments it and sends the
//!   SEG back to Orthanc (C-STORE) and to a second Orthanc (STOW-RS); both SEGs reference the source series, hold the
//!   gRPC path's mask voxel for voxel, and `dciodvfy` finds no error.
//! - dcmtk interoperates (C-ECHO, C-STORE); a calling AE off the allow-list is rejected; refusals (transfer syntax,
//!   SOP class, no pixel data, over the series limit) get the right result and a clear log line, and the node keeps
//!   running.
//! - DICOM TLS both ways (dcmtk with client certificates in, Orthanc with DICOM TLS out) and the association limit.
//! - kill -9 during reception, during inference and between a delivery and its record, then restart: every series
//!   is delivered exactly once (SEGs counted in Orthanc).

#[allow(dead_code)]
#[path = "integration/common.rs"]
mod common;
#[path = "integration/dicom_series.rs"]
mod dicom_series;
#[path = "integration/node_support.rs"]
mod node_support;
#[path = "integration/orthanc.rs"]
mod orthanc;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Pki, ServeProcess};
use dicom_series::read_seg;
use node_support::{
    assert_log_clean, dciodvfy_errors, dcmtk, dicom_port, files_of, node_dir, queue_list,
    series_uid, start_node, wait_log, wait_metric, write_config,
};
use orthanc::Orthanc;

/// Each SEG in `segs` references the series in `source` (every instance) and holds, voxel for voxel, the mask of
/// the gRPC Segmentation service on the same series (run through medmae-client into `via_grpc`).
fn assert_same_as_grpc(srv: &ServeProcess, source: &Path, segs: &[&Path], via_grpc: &Path) {
    // The gRPC Segmentation service on the same series, through medmae-client.
    let run = Command::new(medmae_test_support::workspace_bin("medmae-client"))
        .args([
            "--server",
            &srv.url(),
            "segment",
            source.to_str().unwrap(),
            "-o",
        ])
        .arg(via_grpc)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "medmae-client: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (grpc_masks, _) = read_seg(via_grpc, source);
    assert!(grpc_masks.iter().any(|&v| v == 1), "the gRPC mask is empty");
    for seg in segs {
        let (masks, j) = read_seg(seg, source);
        assert_eq!(
            j["referenced_series"][0],
            series_uid(source.file_name().unwrap().to_str().unwrap()),
            "{}",
            seg.display()
        );
        assert_eq!(j["referenced_instances"], j["source_instances"]);
        assert_eq!(j["referenced_instances"].as_array().unwrap().len(), 24);
        assert_eq!(
            masks,
            grpc_masks,
            "{} differs from the gRPC path's mask",
            seg.display()
        );
    }
}

#[test]
fn orthanc_round_trip_matches_the_grpc_path_and_validates() {
    let n = node_dir();
    let pacs = Orthanc::start("ORTHANC", false);
    let web = Orthanc::start("WEBPACS", true);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        &format!(
            "allowed_calling_aes = [\"ORTHANC\"]\n\
             [[dicom.destination]]\nname = \"pacs\"\nkind = \"dimse\"\nhost = \"127.0.0.1\"\nport = {}\nae_title = \"ORTHANC\"\n\
             [[dicom.destination]]\nname = \"web\"\nkind = \"stow\"\nurl = \"http://127.0.0.1:{}/dicom-web\"\n\
             [[dicom.route]]\nmodel = \"demo\"\nmodality = [\"CT\"]\ncalling_ae = [\"ORTHANC\"]\n",
            pacs.dicom, web.http
        ),
    );
    let srv = start_node(&cfg, &[]);
    pacs.register("medmae", "MEDMAE", srv.dicom.unwrap().port());
    let id = pacs.upload_series(&n.join("s1"));
    let (code, body) = pacs.store_to("medmae", &id);
    assert_eq!(code, 200, "Orthanc store: {body}\n{}", srv.logs());
    let limit = Duration::from_secs(120);
    let segs = pacs.wait_segs(1, limit, || srv.logs());
    let web_segs = web.wait_segs(1, limit, || srv.logs() + &web.log());
    assert_eq!((segs.len(), web_segs.len()), (1, 1));

    let out = tempfile::tempdir().unwrap();
    let (via_dimse, via_stow, via_grpc) = (
        out.path().join("pacs.dcm"),
        out.path().join("web.dcm"),
        out.path().join("grpc.dcm"),
    );
    pacs.download(&segs[0], &via_dimse);
    web.download(&web_segs[0], &via_stow);
    let uid = |o: &Orthanc, id: &str| {
        o.json(&format!("/instances/{id}"))["MainDicomTags"]["SOPInstanceUID"].clone()
    };
    assert_eq!(
        uid(&pacs, &segs[0]),
        uid(&web, &web_segs[0]),
        "one SEG, delivered to both destinations"
    );

    assert_same_as_grpc(&srv, &n.join("s1"), &[&via_dimse, &via_stow], &via_grpc);
    let errors = dciodvfy_errors(&via_dimse);
    assert!(
        errors.is_empty(),
        "dciodvfy errors on the delivered SEG:\n{}",
        errors.join("\n")
    );

    wait_metric(
        &srv,
        "medmae_dicom_segs_sent_total{destination=\"pacs\"}",
        1.0,
        limit,
    );
    wait_metric(
        &srv,
        "medmae_dicom_segs_sent_total{destination=\"web\"}",
        1.0,
        limit,
    );
    wait_metric(
        &srv,
        "medmae_dicom_instances_received_total{outcome=\"stored\"}",
        24.0,
        limit,
    );
    wait_metric(
        &srv,
        "medmae_dicom_series_completed_total{outcome=\"queued\"}",
        1.0,
        limit,
    );
    wait_metric(&srv, "medmae_dicom_jobs_done_total", 1.0, limit);
    // Health reports the DICOM side; the queue CLI shows the delivered job and purges it.
    let health = Command::new(medmae_test_support::workspace_bin("medmae-client"))
        .args([
            "--server",
            &srv.url(),
            "health",
            "--service",
            "medmae.DicomNode",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    let spool = tmp.path().join("spool");
    let entries = queue_list(&spool);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(
        (
            entries[0]["kind"].as_str(),
            entries[0]["delivered"].as_str()
        ),
        (Some("done"), Some("2/2"))
    );
    let purge = Command::new(env!("CARGO_BIN_EXE_medmae-serve"))
        .args([
            "queue",
            "--config",
            cfg.to_str().unwrap(),
            "purge",
            "--done",
        ])
        .output()
        .unwrap();
    assert!(
        purge.status.success(),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    assert!(queue_list(&spool).is_empty());
    let logs = srv.logs();
    assert!(
        logs.contains("series complete: job queued") && logs.contains("job done"),
        "{logs}"
    );
    assert_log_clean(&logs);
}

#[test]
fn dcmtk_interoperates_and_refusals_are_clear() {
    let n = node_dir();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        "allowed_calling_aes = [\"STORESCU\"]\nmax_instances_per_series = 24\n[[dicom.route]]\nmodel = \"demo\"\n",
    );
    let srv = start_node(&cfg, &[]);
    let port = dicom_port(&srv);
    // `tool [options] -aet AET -aec MEDMAE host port [files]`: entries of `args` starting with '-' are options.
    let scu = |tool: &str, aet: &str, args: &[String]| {
        let (opts, files): (Vec<&String>, Vec<&String>) =
            args.iter().partition(|a| a.starts_with('-'));
        let mut all: Vec<&str> = opts.iter().map(|s| s.as_str()).collect();
        all.extend(["-aet", aet, "-aec", "MEDMAE", "127.0.0.1", port.as_str()]);
        all.extend(files.iter().map(|s| s.as_str()));
        dcmtk(tool, &all)
    };
    let limit = Duration::from_secs(60);

    // C-ECHO: accepted for an allowed AE, rejected otherwise (and a wrong called AE title).
    let (ok, text) = scu("echoscu", "STORESCU", &[]);
    assert!(ok, "echoscu: {text}\n{}", srv.logs());
    let (ok, text) = scu("echoscu", "INTRUDER", &[]);
    assert!(
        !ok && text.contains("Association Rejected"),
        "echoscu INTRUDER: {text}"
    );
    wait_log(&srv, "calling AE title not on the allow-list", limit);
    let (ok, text) = dcmtk(
        "echoscu",
        &["-aet", "STORESCU", "-aec", "OTHER", "127.0.0.1", &port],
    );
    assert!(
        !ok && text.contains("Association Rejected"),
        "echoscu -aec OTHER: {text}"
    );
    wait_log(&srv, "the called AE title is not this node's", limit);

    // C-STORE of a whole series: stored, completed on release, segmented (no destination configured).
    let (ok, text) = scu("storescu", "STORESCU", &files_of(&n.join("s2")));
    assert!(ok, "storescu: {text}\n{}", srv.logs());
    wait_metric(&srv, "medmae_dicom_jobs_done_total", 1.0, limit);

    // Unsupported transfer syntax: a presentation context proposing only RLE Lossless (a storescu association
    // profile; by default storescu adds the uncompressed syntaxes) is refused at negotiation.
    let profile = tmp.path().join("rle.cfg");
    std::fs::write(
        &profile,
        "[[TransferSyntaxes]]\n[RLE]\nTransferSyntax1 = RLELossless\n\n[[PresentationContexts]]\n[RLEOnly]\n\
         PresentationContext1 = CTImageStorage\\RLE\n\n[[Profiles]]\n[RLEOnly]\nPresentationContexts = RLEOnly\n",
    )
    .unwrap();
    let rle = n.join("rle.dcm");
    let (ok, text) = dcmtk(
        "storescu",
        &[
            "-xf",
            profile.to_str().unwrap(),
            "RLEOnly",
            "-aet",
            "STORESCU",
            "-aec",
            "MEDMAE",
            "127.0.0.1",
            &port,
            rle.to_str().unwrap(),
        ],
    );
    assert!(
        !ok && text.contains("No Acceptable Presentation Contexts"),
        "storescu rle: {text}"
    );
    wait_log(
        &srv,
        "none of the proposed transfer syntaxes is supported",
        limit,
    );

    // A SOP class the node does not store (Basic Text SR): refused at negotiation.
    let (ok, text) = scu(
        "storescu",
        "STORESCU",
        &[n.join("sr.dcm").to_str().unwrap().to_string()],
    );
    assert!(
        !ok && text.to_lowercase().contains("presentation context"),
        "storescu sr: {text}"
    );
    wait_log(
        &srv,
        "presentation context refused: SOP class not accepted",
        limit,
    );

    // CT Image Storage without pixel data: A900 (data set does not match SOP class).
    let (_, text) = scu(
        "storescu",
        "STORESCU",
        &[
            "-v".into(),
            n.join("nopixels.dcm").to_str().unwrap().to_string(),
        ],
    );
    assert!(
        text.contains("DataSetDoesNotMatchSOPClass"),
        "storescu nopixels: {text}"
    );
    wait_log(
        &srv,
        "C-STORE refused: the data set holds no pixel data",
        limit,
    );

    // Over the series limit: the 25th instance of a 24-instance limit is refused with A700 (out of resources).
    let mut over = vec!["-v".to_string()];
    over.extend(files_of(&n.join("s1")));
    over.push(n.join("extra.dcm").to_str().unwrap().to_string());
    let (_, text) = scu("storescu", "STORESCU", &over);
    assert!(
        text.contains("OutOfResources"),
        "storescu over limit: {text}"
    );
    wait_log(
        &srv,
        "already holds 24 instances (dicom.max_instances_per_series)",
        limit,
    );
    wait_metric(
        &srv,
        "medmae_dicom_instances_received_total{outcome=\"refused\"}",
        2.0,
        limit,
    );

    // Still serving.
    let (ok, text) = scu("echoscu", "STORESCU", &[]);
    assert!(ok, "echoscu after the refusals: {text}");
    wait_metric(&srv, "medmae_dicom_jobs_done_total", 2.0, limit);
    assert!(srv
        .metrics_text()
        .contains("medmae_dicom_associations_total{outcome=\"rejected\"} 2"));
    assert_log_clean(&srv.logs());
}

/// A server paused at `point` and killed with SIGKILL once the pause is logged.
fn run_until_killed(
    cfg: &Path,
    pacs: &Orthanc,
    point: &str,
    work: impl FnOnce(&ServeProcess),
) -> String {
    let mut srv = start_node(cfg, &["--dicom-fault-pause", point]);
    pacs.register("medmae", "MEDMAE", srv.dicom.unwrap().port());
    work(&srv);
    wait_log(&srv, "fault pause reached", Duration::from_secs(120));
    srv.kill9();
    srv.logs()
}

#[test]
fn kill_9_at_any_stage_delivers_every_series_exactly_once() {
    let n = node_dir();
    let pacs = Orthanc::start("ORTHANC", false);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        &format!(
            "allowed_calling_aes = [\"ORTHANC\"]\n\
             [[dicom.destination]]\nname = \"pacs\"\nkind = \"dimse\"\nhost = \"127.0.0.1\"\nport = {}\nae_title = \"ORTHANC\"\n\
             [[dicom.route]]\nmodel = \"demo\"\n",
            pacs.dicom
        ),
    );
    let ids: Vec<String> = ["s1", "s2", "s3"]
        .iter()
        .map(|s| pacs.upload_series(&n.join(s)))
        .collect();
    let mut logs = Vec::new();

    // 1. Killed during reception: paused before answering the 10th C-STORE of s1; Orthanc's store fails.
    let mut srv = start_node(&cfg, &["--dicom-fault-pause", "store:10"]);
    pacs.register("medmae", "MEDMAE", srv.dicom.unwrap().port());
    let (pacs_port, id) = (pacs.http, ids[0].clone());
    let sending = std::thread::spawn(move || {
        let body = serde_json::json!({"Resources": [id], "Synchronous": true}).to_string();
        orthanc::http(
            pacs_port,
            "POST",
            "/modalities/medmae/store",
            body.as_bytes(),
            "application/json",
        )
    });
    wait_log(&srv, "fault pause reached", Duration::from_secs(120));
    srv.kill9();
    let (code, _) = sending.join().unwrap();
    assert_ne!(
        code, 200,
        "Orthanc reported success for an interrupted store"
    );
    logs.push(srv.logs());
    // 2. The PACS sends s1 again, then s2; killed during s1's inference (s2 waits in the queue).
    logs.push(run_until_killed(&cfg, &pacs, "inference", |srv| {
        for id in &ids[..2] {
            let (code, body) = pacs.store_to("medmae", id);
            assert_eq!(code, 200, "Orthanc store: {body}\n{}", srv.logs());
        }
    }));
    // 3. Restarted: s1 is segmented again and delivered; killed before the delivery is recorded.
    logs.push(run_until_killed(&cfg, &pacs, "sent", |_| {}));
    assert_eq!(
        pacs.seg_instances().len(),
        1,
        "s1's SEG reached Orthanc before the kill"
    );

    // 4. Restarted without faults: s1 is re-sent (the same SEG instance), s2 processed, then s3 arrives.
    let srv = start_node(&cfg, &[]);
    pacs.register("medmae", "MEDMAE", srv.dicom.unwrap().port());
    let (code, body) = pacs.store_to("medmae", &ids[2]);
    assert_eq!(code, 200, "Orthanc store: {body}\n{}", srv.logs());
    let limit = Duration::from_secs(120);
    wait_metric(&srv, "medmae_dicom_jobs_done_total", 3.0, limit);
    let segs = pacs.wait_segs(3, limit, || srv.logs());
    std::thread::sleep(Duration::from_secs(2));
    let segs_after = pacs.seg_instances();
    assert_eq!(
        segs_after.len(),
        3,
        "exactly one SEG per series: {segs:?} then {segs_after:?}"
    );
    let mut referenced: Vec<String> = segs_after
        .iter()
        .map(|id| {
            let tags = pacs.json(&format!("/instances/{id}/tags?simplify"));
            tags["ReferencedSeriesSequence"][0]["SeriesInstanceUID"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    referenced.sort();
    let mut want: Vec<String> = ["s1", "s2", "s3"].iter().map(|s| series_uid(s)).collect();
    want.sort();
    assert_eq!(referenced, want);

    let spool = tmp.path().join("spool");
    let entries = queue_list(&spool);
    let done: Vec<&serde_json::Value> = entries.iter().filter(|e| e["kind"] == "done").collect();
    assert_eq!(done.len(), 3, "{entries:?}");
    assert!(done.iter().all(|e| e["delivered"] == "1/1"), "{entries:?}");
    assert_eq!(
        entries.len(),
        3,
        "nothing left open, queued, failed or held: {entries:?}"
    );
    let last = srv.logs();
    // s1's SEG was sent again after the kill (the same instance: Orthanc still holds 3), then s2's and s3's.
    assert_eq!(last.matches("SEG delivered").count(), 3, "{last}");
    logs.push(last);
    assert!(logs[1].contains("job started"), "{}", logs[1]);
    for l in &logs {
        assert_log_clean(l);
    }
}

#[test]
fn dicom_tls_both_ways_and_the_association_limit() {
    let n = node_dir();
    let pki = Pki::new();
    let pacs = Orthanc::start_with(
        "ORTHANC",
        false,
        serde_json::json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": pki.path("server.pem"),
            "DicomTlsPrivateKey": pki.path("server.key"),
            "DicomTlsTrustedCertificates": pki.path("ca.pem"),
            "DicomTlsRemoteCertificateRequired": false,
        }),
    );
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(
        tmp.path(),
        &format!(
            "allowed_calling_aes = [\"STORESCU\"]\n\
             [dicom.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\
             [[dicom.destination]]\nname = \"pacs\"\nkind = \"dimse\"\nhost = \"127.0.0.1\"\nport = {}\n\
             ae_title = \"ORTHANC\"\ntls = true\nca = {:?}\n\
             [[dicom.route]]\nmodel = \"demo\"\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem"),
            pacs.dicom,
            pki.path("ca.pem")
        ),
    );
    let srv = start_node(&cfg, &[]);
    let port = dicom_port(&srv);
    let tls = |key: &str, cert: &str| {
        vec![
            "+tls".to_string(),
            pki.path(key),
            pki.path(cert),
            "+cf".into(),
            pki.path("ca.pem"),
            "-aet".into(),
            "STORESCU".into(),
            "-aec".into(),
            "MEDMAE".into(),
            "127.0.0.1".into(),
            port.clone(),
        ]
    };
    let run = |tool: &str, args: &[String]| {
        dcmtk(tool, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let limit = Duration::from_secs(60);

    // Mutual TLS: a client certificate from the configured CA is accepted, a rogue one and plain TCP are not.
    let (ok, text) = run("echoscu", &tls("client.key", "client.pem"));
    assert!(ok, "echoscu over TLS: {text}\n{}", srv.logs());
    let (ok, text) = run("echoscu", &tls("rogue.key", "rogue.pem"));
    assert!(!ok, "echoscu with a rogue certificate: {text}");
    let (ok, _) = dcmtk(
        "echoscu",
        &["-aet", "STORESCU", "-aec", "MEDMAE", "127.0.0.1", &port],
    );
    assert!(!ok, "plain echoscu reached a TLS listener");
    wait_log(&srv, "DICOM TLS association not established", limit);

    // A series over TLS in, the SEG over TLS out to Orthanc.
    let mut store = tls("client.key", "client.pem");
    store.extend(files_of(&n.join("s3")));
    let (ok, text) = run("storescu", &store);
    assert!(ok, "storescu over TLS: {text}\n{}", srv.logs());
    pacs.wait_segs(1, Duration::from_secs(120), || srv.logs() + &pacs.log());
    wait_metric(
        &srv,
        "medmae_dicom_segs_sent_total{destination=\"pacs\"}",
        1.0,
        limit,
    );
    assert_log_clean(&srv.logs());

    // At most one association: a second one is rejected (transient, local limit exceeded) while the first is open.
    let cfg = write_config(
        &tmp.path().join("limit"),
        "allowed_calling_aes = [\"STORESCU\"]\nmax_associations = 1\n",
    );
    let srv = start_node(&cfg, &[]);
    let addr = srv.dicom.unwrap().to_string();
    let held = dicom_ul::ClientAssociationOptions::new()
        .with_abstract_syntax("1.2.840.10008.1.1")
        .calling_ae_title("STORESCU")
        .called_ae_title("MEDMAE")
        .establish(addr.as_str())
        .expect("first association");
    wait_log(&srv, "association accepted", limit);
    let port = dicom_port(&srv);
    let echo = || {
        dcmtk(
            "echoscu",
            &["-aet", "STORESCU", "-aec", "MEDMAE", "127.0.0.1", &port],
        )
    };
    let (ok, text) = echo();
    assert!(
        !ok && text.contains("Association Rejected"),
        "second association: {text}"
    );
    wait_log(&srv, "association rejected: too many associations", limit);
    held.release().expect("release");
    let start = Instant::now();
    while !echo().0 {
        assert!(
            start.elapsed() < limit,
            "no association accepted after the first was released"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(srv
        .metrics_text()
        .contains("medmae_dicom_associations_total{outcome=\"busy\"} 1"));
}
