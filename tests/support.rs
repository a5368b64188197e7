//! Shared helpers for the workspace-level tests: locating the workspace's binaries and running them with context.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of a workspace binary built by the same `cargo test` invocation (`target/<profile>/<name>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is not built; run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

/// Run a command to completion from the repository root; panic with its output if it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A `medmae-serve` process on an ephemeral 127.0.0.1 port, terminated (SIGTERM) on drop.
pub struct Server {
    child: Child,
    /// gRPC address, `host:port`.
    pub grpc: String,
}

impl Server {
    /// Start the server with extra arguments and wait for its `listening` line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(bin("medmae-serve"))
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start medmae-serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("medmae-serve listening grpc=") {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let grpc = loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(200)) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("medmae-serve exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "medmae-serve did not start listening within 120 s"
            );
        };
        Server { child, grpc }
    }

    /// Send SIGTERM and wait; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = self.stop();
        std::mem::forget(self);
        status
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for medmae-serve")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
