//! A real Orthanc (Debian `orthanc`, `orthanc-dicomweb`) for the DICOM node tests: its own process on free
//! loopback ports with a temporary configuration and storage, driven over its REST API with a minimal HTTP/1.1
//! client (no extra dependency). Killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The DICOMweb plugin shipped by `orthanc-dicomweb`.
pub const DICOMWEB_PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP/1.1 exchange on 127.0.0.1:`port` (Connection: close); returns the status and the body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    content_type: &str,
) -> (u16, Vec<u8>) {
    let mut s =
        TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect :{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// An Orthanc process.
pub struct Orthanc {
    child: Child,
    /// REST port.
    pub http: u16,
    /// DICOM port.
    pub dicom: u16,
    /// Its AE title.
    pub aet: String,
    dir: tempfile::TempDir,
}

impl Orthanc {
    /// Start Orthanc with AE title `aet` (and the DICOMweb plugin when `dicomweb`); waits until REST answers.
    pub fn start(aet: &str, dicomweb: bool) -> Self {
        Self::start_with(aet, dicomweb, serde_json::json!({}))
    }

    /// [`Orthanc::start`] with extra configuration keys (e.g. DICOM TLS).
    pub fn start_with(aet: &str, dicomweb: bool, extra: serde_json::Value) -> Self {
        let exe = Path::new("/usr/sbin/Orthanc");
        assert!(
            exe.is_file(),
            "{} is missing: install orthanc (scripts/setup)",
            exe.display()
        );
        if dicomweb {
            assert!(
                Path::new(DICOMWEB_PLUGIN).is_file(),
                "{DICOMWEB_PLUGIN} is missing: install orthanc-dicomweb (scripts/setup)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("orthanc-")
            .tempdir()
            .unwrap();
        let (http, dicom) = (free_port(), free_port());
        let db = dir.path().join("db");
        let plugins: Vec<&str> = if dicomweb {
            vec![DICOMWEB_PLUGIN]
        } else {
            vec![]
        };
        let config = serde_json::json!({
            "Name": aet,
            "StorageDirectory": db,
            "IndexDirectory": db,
            "HttpPort": http,
            "DicomPort": dicom,
            "DicomAet": aet,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": plugins,
            "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
            "DicomModalities": {},
            "DicomScuTimeout": 30,
        });
        let mut config = config;
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        let cfg = dir.path().join("orthanc.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("orthanc.log")).unwrap();
        let child = Command::new(exe)
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start Orthanc");
        let mut o = Orthanc {
            child,
            http,
            dicom,
            aet: aet.into(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", http)).is_ok() && o.get("/system").0 == 200 {
                return o;
            }
            if let Ok(Some(s)) = o.child.try_wait() {
                panic!("Orthanc exited ({s}); log:\n{}", o.log());
            }
            assert!(
                Instant::now() < deadline,
                "Orthanc did not answer; log:\n{}",
                o.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Orthanc's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
    }

    /// GET.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http(self.http, "GET", path, b"", "text/plain")
    }

    /// GET a JSON document (status 200 required).
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// POST a JSON body; returns the status and the body as text.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        let (c, b) = http(
            self.http,
            "POST",
            path,
            body.to_string().as_bytes(),
            "application/json",
        );
        (c, String::from_utf8_lossy(&b).into_owned())
    }

    /// Register (or move) the DICOM modality `name` = `aet`@127.0.0.1:`port`.
    pub fn register(&self, name: &str, aet: &str, port: u16) {
        let body = serde_json::json!({"AET": aet, "Host": "127.0.0.1", "Port": port});
        let (c, b) = http(
            self.http,
            "PUT",
            &format!("/modalities/{name}"),
            body.to_string().as_bytes(),
            "application/json",
        );
        assert_eq!(
            c,
            200,
            "PUT /modalities/{name}: {}",
            String::from_utf8_lossy(&b)
        );
    }

    /// Upload the files of `dir` (`POST /instances`); returns the Orthanc id of their series.
    pub fn upload_series(&self, dir: &Path) -> String {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let mut series = String::new();
        for f in files {
            let (c, b) = http(
                self.http,
                "POST",
                "/instances",
                &std::fs::read(&f).unwrap(),
                "application/dicom",
            );
            assert_eq!(
                c,
                200,
                "POST /instances {}: {}",
                f.display(),
                String::from_utf8_lossy(&b)
            );
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            series = v["ParentSeries"].as_str().unwrap().to_string();
        }
        series
    }

    /// C-STORE the Orthanc resource `id` to modality `name` (synchronous); returns the HTTP status and body.
    pub fn store_to(&self, name: &str, id: &str) -> (u16, String) {
        self.post_json(
            &format!("/modalities/{name}/store"),
            &serde_json::json!({"Resources": [id], "Synchronous": true}),
        )
    }

    /// Orthanc ids of the instances of every series with Modality SEG.
    pub fn seg_instances(&self) -> Vec<String> {
        let all = self.json("/series?expand");
        all.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["MainDicomTags"]["Modality"] == "SEG")
            .flat_map(|s| {
                s["Instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_string())
            })
            .collect()
    }

    /// Wait until at least `n` SEG instances are stored (panics after `limit`); returns their ids.
    pub fn wait_segs(
        &self,
        n: usize,
        limit: Duration,
        context: impl Fn() -> String,
    ) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let segs = self.seg_instances();
            if segs.len() >= n {
                return segs;
            }
            assert!(
                Instant::now() < deadline,
                "{} SEG(s) in Orthanc {} after {limit:?}, expected {n}; {}",
                segs.len(),
                self.aet,
                context()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Download instance `id` into `to`.
    pub fn download(&self, id: &str, to: &Path) {
        let (c, b) = self.get(&format!("/instances/{id}/file"));
        assert_eq!(c, 200, "GET /instances/{id}/file");
        std::fs::write(to, b).unwrap();
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
