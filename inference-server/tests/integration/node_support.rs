//! Helpers of the DICOM node tests (`dicom_node.rs`): node fixtures, server config and start, log and metric waits,
//! the log scan for patient data, dcmtk and dciodvfy runs, the queue CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{start_server, ServeProcess};
use crate::dicom_series::dicom_dir;
use medmae_test_support::{assert_success, python};

/// Node fixtures: copies s1..s4 of the CT series and the refusal files (see `tests/support/make_node_series.py`).
pub fn node_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("dicomnode-")
            .tempdir()
            .unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/make_node_series.py");
        let out = Command::new(python())
            .arg(&script)
            .arg(dicom_dir().join("series"))
            .arg(dicom_dir().join("report.dcm"))
            .arg(dir.path())
            .arg("4")
            .output()
            .unwrap();
        assert_success(&out, "make_node_series.py");
        dir
    })
    .path()
}

pub fn series_uid(name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(node_dir().join("series.json")).unwrap())
            .unwrap();
    v[name].as_str().unwrap().to_string()
}

/// A server config with a `[dicom]` section: spool under `dir`, completion on release, fast retries, plus `extra`.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "[dicom]\nspool = {:?}\nae_title = \"MEDMAE\"\ncomplete_on_release = true\nseries_idle_seconds = 60\n\
         retry_initial_seconds = 0.5\nretry_max_seconds = 2\n{extra}",
        dir.join("spool")
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Start `medmae-serve` (ort backend) with `config` and a DICOM listener on a free port.
pub fn start_node(config: &Path, extra: &[&str]) -> ServeProcess {
    let mut args = vec![
        "--backend",
        "ort",
        "--config",
        config.to_str().unwrap(),
        "--dicom-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let srv = start_server("repo", &args);
    assert!(
        srv.dicom.is_some(),
        "no dicom= address; log:\n{}",
        srv.logs()
    );
    srv
}

pub fn dicom_port(srv: &ServeProcess) -> String {
    srv.dicom.map(|a| a.port().to_string()).unwrap_or_default()
}

/// Wait for `text` in the server log.
pub fn wait_log(srv: &ServeProcess, text: &str, limit: Duration) {
    let start = Instant::now();
    while !srv.logs().contains(text) {
        assert!(
            start.elapsed() < limit,
            "{text:?} not logged within {limit:?}; log:\n{}",
            srv.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the count of a metric sample (exact text before the value) reaches `want`.
pub fn wait_metric(srv: &ServeProcess, sample: &str, want: f64, limit: Duration) {
    let start = Instant::now();
    loop {
        let text = srv.metrics_text();
        let got = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        if got >= want {
            assert_eq!(got, want, "{sample} overshot");
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{sample} = {got}, want {want}; log:\n{}",
            srv.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// No patient attribute, fixture UID or file name in the log.
pub fn assert_log_clean(log: &str) {
    for s in [
        "Doe",
        "PAT-SECRET",
        "ACC-SECRET",
        "19700101",
        "1.2.826.0.1.3680043.8.498",
        "dicomnode-",
        "dicomserve-",
    ] {
        assert!(!log.contains(s), "server log contains {s:?}:\n{log}");
    }
}

/// The `Error` lines dciodvfy prints for `file` (its exit status is no verdict).
pub fn dciodvfy_errors(file: &Path) -> Vec<String> {
    let out = Command::new("dciodvfy")
        .arg(file)
        .output()
        .expect("dciodvfy is missing: install dicom3tools (scripts/setup)");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_string)
        .collect()
}

/// Run a dcmtk tool; returns (success, stdout + stderr).
pub fn dcmtk(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} is missing ({e}): install dcmtk (scripts/setup)"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub fn files_of(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// `medmae-serve queue list --json` of the spool.
pub fn queue_list(spool: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_medmae-serve"))
        .args([
            "queue",
            "--dicom-spool",
            spool.to_str().unwrap(),
            "list",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "queue list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}
