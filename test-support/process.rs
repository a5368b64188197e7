//! Child processes in tests: a bounded wait that turns a hang into a failure, and a success check that shows the
//! process's stderr.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// Waits up to `limit` for `child` and returns its status and how long it took; kills it and panics (naming
/// `what`) when it is still running then.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> (ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("polling a child process") {
            return (status, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: still running after {limit:?} (hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Panics, naming `what` and showing the process's stderr, unless `out` records a successful exit.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `script ARGS...` with [`crate::python`]; panics with its stderr when it cannot start or fails.
pub fn run_python(script: &Path, args: &[&Path]) -> Output {
    let out = Command::new(crate::python())
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert_success(&out, &script.display().to_string());
    out
}
