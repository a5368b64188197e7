//! Test-only helpers shared by the inference-server's integration tests and the workspace tests (`tests/`): the
//! Python interpreter `scripts/setup` provides, fixture scripts run once into a temporary directory, and a
//! `medmae-serve` child process on ephemeral ports with its log captured; bounded waits and success checks for
//! child processes (`process`), and the shared reader of DICOM SEG files (`python/read_seg.py`, [`read_seg`]).

mod process;

pub use process::{assert_success, run_python, wait_within};

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to print its `listening` line (models are loaded before it).
const START_LIMIT: Duration = Duration::from_secs(120);
/// How long [`ServeProcess::stop`] waits after SIGTERM before it kills.
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// The same grace when a test drops a running server (a failed test should not wait out a drain).
const DROP_LIMIT: Duration = Duration::from_secs(5);

/// Deterministic pseudo-random f32 values in [lo, hi) from a fixed 64-bit LCG (tests need no RNG crate, and a
/// seed gives the same values on every machine).
pub fn uniform_values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    const A: u64 = 6_364_136_223_846_793_005;
    const C: u64 = 1_442_695_040_888_963_407;
    let mut s = seed.wrapping_mul(A).wrapping_add(C);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(A).wrapping_add(C);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * (hi - lo) + lo
        })
        .collect()
}

/// Path of a workspace binary (`target/<profile>/<name>`) of another package than the test's own (a package's own
/// binaries have `CARGO_BIN_EXE_<name>`). `cargo test` builds another package's binary only when that package has
/// integration tests of its own, so `scripts/test` runs `cargo build --workspace --bins` first.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is not built; run the tests with scripts/test (or build the binaries first: `cargo build --workspace --bins`)",
        p.display()
    );
    p
}

/// `$MEDMAE_PYTHON` (the set-up's virtual environment), or a panic saying how to get it.
/// Every Python-referenced test fails with this message rather than skipping when it is missing.
pub fn python() -> String {
    match std::env::var("MEDMAE_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "MEDMAE_PYTHON is not set: run scripts/setup (it writes .cargo/config.toml) or export \
             MEDMAE_PYTHON=<the python of the set-up's virtual environment>"
        ),
    }
}

/// Run `script OUT_DIR` with [`python`] into a fresh temporary directory; panic with its stderr if it fails.
pub fn run_fixture_script(script: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary fixture directory");
    run_python(script, &[dir.path()]);
    dir
}

/// The MetaImage header of a 2×2×2 uint8 volume whose voxels are in `data_file` (kept as given, so a test can point it
/// anywhere).
pub fn mhd_header_text(data_file: &str) -> String {
    format!("NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = {data_file}\n")
}

/// Writes [`mhd_header_text`] for `data_file` to `dir/name` and returns its path.
pub fn write_mhd_header(dir: &Path, name: &str, data_file: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, mhd_header_text(data_file))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
    p
}

/// Reads the DICOM SEG `seg` back with highdicom (`python/read_seg.py`) for the instances of the series in `source`
/// (in SimpleITK's order), writing into `out`: `seg_labels.npy` (the combined label map, int32, slices × rows ×
/// columns), `segments.npy` (one uint8 mask per segment, last axis) and `seg.json` (segments, references,
/// identification, highdicom's volume geometry in LPS).
pub fn read_seg(seg: &Path, source: &Path, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/read_seg.py");
    run_python(&script, &[seg, source, out]);
}

/// A `medmae-serve` process listening on ephemeral 127.0.0.1 ports, its stderr (the log) in a file; SIGTERM on drop.
pub struct ServeProcess {
    child: Child,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Metrics (`/metrics`, `/healthz`) address.
    pub metrics: SocketAddr,
    /// DICOM listener, when the server was started with one (`dicom=ADDR` on its listening line).
    pub dicom: Option<SocketAddr>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    /// Start `bin` with `args` and `envs` from `cwd`, adding `--listen`/`--metrics-listen` on port 0, and wait for
    /// its `medmae-serve listening grpc=ADDR metrics=ADDR` line (a panic with the log if it exits or takes longer than
    /// two minutes). The drain grace defaults to 0 here (`MEDMAE_SERVE_DRAIN_GRACE=0`, so stopping a test server does
    /// not wait out the production default); `--drain-grace` in `args` or the variable in `envs` overrides it.
    pub fn start(bin: &Path, args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> Self {
        let dir = tempfile::tempdir().expect("temporary log directory");
        let log = dir.path().join("serve.log");
        let mut child = Command::new(bin)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .env("MEDMAE_SERVE_DRAIN_GRACE", "0")
            .envs(envs.iter().copied())
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("server log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // The first stdout line names the addresses; later lines are drained so the server never blocks on a pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = tx.send(lines.next().unwrap_or_default());
            lines.for_each(drop);
        });
        let read_log = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();
        let deadline = Instant::now() + START_LIMIT;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Disconnected) => break String::new(),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "medmae-serve did not listen within {START_LIMIT:?}; log:\n{}",
                        read_log(&log)
                    );
                }
            }
        };
        let field = |k: &str| -> Option<SocketAddr> {
            line.strip_prefix("medmae-serve listening ")?
                .split_whitespace()
                .find_map(|w| w.strip_prefix(k))?
                .parse()
                .ok()
        };
        let (Some(grpc), Some(metrics)) = (field("grpc="), field("metrics=")) else {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "medmae-serve did not start ({status:?}): stdout {line:?}; log:\n{}",
                read_log(&log)
            );
        };
        ServeProcess {
            child,
            grpc,
            metrics,
            dicom: field("dicom="),
            log,
            _dir: dir,
        }
    }

    /// `http://host:port` of the gRPC listener.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `(VmRSS, VmHWM)` in KiB from /proc: current and peak resident memory.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let get = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (get("VmRSS:"), get("VmHWM:"))
    }

    /// GET /metrics (the whole HTTP response).
    pub fn metrics_text(&self) -> String {
        self.metrics_text_as(None)
    }

    /// GET /metrics with `authorization: Bearer <token>` if a token is given (servers with `--auth-tokens`).
    pub fn metrics_text_as(&self, token: Option<&str>) -> String {
        let mut s = std::net::TcpStream::connect(self.metrics).expect("connect to /metrics");
        let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
        )
        .expect("send GET /metrics");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read /metrics");
        out
    }

    /// Value of an unlabelled gauge or counter (the first sample whose name matches), if present.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name || k.starts_with(&format!("{name}{{")))
                    .then(|| v.parse().ok())
                    .flatten()
            })
    }

    /// SIGKILL this child (a crash: no drain, no cleanup) and reap it.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9 medmae-serve");
        let _ = self.child.wait();
    }

    /// Send SIGTERM (graceful drain) to this child only.
    pub fn sigterm(&self) {
        assert!(self.send_term(), "kill -TERM {} failed", self.child.id());
    }

    fn send_term(&self) -> bool {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Wait for the process to exit, up to `limit` (a panic with the log after that).
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("wait for medmae-serve") {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "medmae-serve did not exit within {limit:?}; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait up to a minute (SIGKILL after that); the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_within(STOP_LIMIT)
    }

    fn stop_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        self.send_term();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.stop_within(DROP_LIMIT);
    }
}
