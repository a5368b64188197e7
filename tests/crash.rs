//! Crash-safety of the trainer and the exporter:
//! - `kill -9` of `medmae-train pretrain` at random points (seeded; `RELIAB_CRASH_TRIALS`, default 6) never leaves a
//!   corrupt checkpoint — `checkpoints/last`, when present, is a complete checkpoint (weights, card, train state) —
//!   and `--resume` then reaches the byte-identical final weights of an uninterrupted run;
//! - a read-only output directory and a full disk give a clear error naming the path, and no partial file: the
//!   trainer leaves no `last` checkpoint pointing at incomplete data, the exporter leaves no `.onnx` and no temporary.
//!
//! As root, directory permissions do not stop writes, so the read-only and full-disk cases run the command inside a
//! user + mount namespace (`unshare -rm`) over a read-only or tiny tmpfs; as another user a `chmod 555` folder is
//! the read-only case.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use medmae_tests::{bin, repo_root};

/// `--set` overrides of a tiny MAE pretraining (a checkpoint after every optimiser step).
fn tiny(out: &Path, data: &Path) -> Vec<String> {
    [
        format!("output_dir={}", out.display()),
        format!("data.dataset.path={}", data.display()),
        "data.dataset.synthetic.phantom.shape=[32, 32, 32]".into(),
        "data.dataset.synthetic.num_training=6".into(),
        "data.dataset.synthetic.num_test=1".into(),
        "data.num_folds=3".into(),
        "data.workers=1".into(),
        "data.batch_size=2".into(),
        "data.samples_per_volume=1".into(),
        "model.encoder.embed_dim=24".into(),
        "model.encoder.depth=2".into(),
        "model.encoder.num_heads=2".into(),
        "model.decoder_embed_dim=12".into(),
        "model.decoder_depth=1".into(),
        "model.decoder_num_heads=2".into(),
        "schedule.epochs=12".into(),
        "schedule.warmup_epochs=1".into(),
        "logging.log_every_steps=1".into(),
        "logging.save_every_steps=1".into(),
        "logging.png_every_epochs=100".into(),
        "logging.tensorboard=false".into(),
        "threads=1".into(),
    ]
    .into()
}

fn train_cmd(out: &Path, data: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("medmae-train"));
    c.current_dir(repo_root())
        .args(["pretrain", "--config", "configs/demo_mae3d.yaml"])
        .args(extra);
    for s in tiny(out, data) {
        c.arg("--set").arg(s);
    }
    c
}

fn ok(mut c: Command) -> String {
    let o = c.output().expect("run medmae-train");
    assert!(
        o.status.success(),
        "{c:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Check that a safetensors file is complete: its JSON header parses and the data section is exactly as long as the
/// largest tensor end offset.
fn check_safetensors(p: &Path) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        b.len() >= 8,
        "{}: shorter than the safetensors length prefix",
        p.display()
    );
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    assert!(8 + n <= b.len(), "{}: truncated header", p.display());
    let header: serde_json::Value = serde_json::from_slice(&b[8..8 + n])
        .unwrap_or_else(|e| panic!("{}: header: {e}", p.display()));
    let end = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["data_offsets"][1].as_u64().unwrap())
        .max()
        .unwrap_or(0) as usize;
    assert_eq!(
        b.len(),
        8 + n + end,
        "{}: data section does not match the header (truncated file)",
        p.display()
    );
}

/// If `checkpoints/last` exists it must be a complete checkpoint; returns its step.
fn check_last(out: &Path) -> Option<u64> {
    let last = out.join("checkpoints/last");
    if std::fs::symlink_metadata(&last).is_err() {
        return None;
    }
    assert!(last.is_dir(), "{} is a dangling link", last.display());
    check_safetensors(&last.join("model.safetensors"));
    check_safetensors(&last.join("train_state.safetensors"));
    let card = std::fs::read_to_string(last.join("model.json")).unwrap();
    spec::ModelCard::from_json(&card).unwrap_or_else(|e| panic!("{}: {e}", last.display()));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(last.join("train_state.json")).unwrap())
            .unwrap();
    Some(state["step"].as_u64().expect("train_state.json has step"))
}

/// A small deterministic generator for kill times (xorshift).
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn kill_9_at_random_points_never_corrupts_and_resume_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("data");
    // Uninterrupted reference (also generates the phantoms, shared read-only by the trials).
    let start = Instant::now();
    ok(train_cmd(&t.join("full"), &data, &[]));
    let full_secs = start.elapsed().as_secs_f64();
    let reference = std::fs::read(t.join("full/checkpoints/last/model.safetensors")).unwrap();
    let final_step = check_last(&t.join("full")).expect("the full run has a last checkpoint");
    let trials: usize = std::env::var("RELIAB_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut report = Vec::new();
    for i in 0..trials {
        let out = t.join(format!("crash{i}"));
        let delay = Duration::from_secs_f64((0.1 + rng.unit() * 0.75) * full_secs);
        let mut child = train_cmd(&out, &data, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let spawned = Instant::now();
        let killed = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if spawned.elapsed() >= delay {
                break true;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if killed {
            let _ = Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status();
        }
        let status = child.wait().unwrap();
        let step = check_last(&out);
        // A kill can land in the middle of a metrics append; make every other killed trial end that way for
        // certain (an incomplete last line), which resume must drop rather than refuse.
        if killed && i % 2 == 1 && out.join("metrics.jsonl").exists() {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(out.join("metrics.jsonl"))
                .unwrap();
            f.write_all(b"{\"step\": 999999, \"loss\": 0.12").unwrap();
        }
        // Resume from the last checkpoint if there is one; otherwise the run starts over.
        let resume: &[&str] = if step.is_some() { &["--resume"] } else { &[] };
        ok(train_cmd(&out, &data, resume));
        assert_eq!(check_last(&out), Some(final_step));
        let resumed = std::fs::read(out.join("checkpoints/last/model.safetensors")).unwrap();
        assert!(resumed == reference, "trial {i}: weights after kill at {delay:?} (step {step:?}) and --resume differ from the uninterrupted run");
        report.push(format!("{{\"delay_s\": {:.2}, \"killed\": {killed}, \"status\": \"{status}\", \"checkpoint_step\": {}}}", delay.as_secs_f64(), step.map_or("null".into(), |s| s.to_string())));
    }
    let killed_mid_run = report
        .iter()
        .filter(|r| r.contains("\"killed\": true"))
        .count();
    let after_checkpoint = report
        .iter()
        .filter(|r| r.contains("\"killed\": true") && !r.contains("\"checkpoint_step\": null"))
        .count();
    assert!(
        killed_mid_run >= trials.div_ceil(2),
        "only {killed_mid_run} of {trials} trials killed the trainer mid-run: {report:?}"
    );
    assert!(
        after_checkpoint >= 1,
        "no trial was killed after a checkpoint: {report:?}"
    );
    println!("CRASH {{\"trials\": {trials}, \"killed\": {killed_mid_run}, \"killed_after_a_checkpoint\": {after_checkpoint}, \"final_step\": {final_step}, \"full_run_s\": {full_secs:.1}, \"runs\": [{}]}}", report.join(", "));
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Marks the start of the limited dir's listing on stderr.
const LISTING: &str = "--- files left in the limited dir ---";

/// Run `cmd` with `dir` read-only (`mount_opts` = "ro") or a tiny tmpfs ("size=96k"): as root in a user + mount
/// namespace, otherwise (read-only only) with `chmod 555`. Returns the output and the files left in `dir`.
fn run_limited(dir: &Path, mount_opts: &str, cmd: &Command) -> (Output, Vec<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let argv: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    // 1) A tmpfs (read-only or tiny) in a user + mount namespace, where the kernel allows one.
    let d = shell_quote(&dir.to_string_lossy());
    let script = format!(
        "mount -t tmpfs -o {mount_opts} tmpfs {d} || exit 97; cd {} && {}; rc=$?; echo '{LISTING}' >&2; find {d} -mindepth 1 >&2; exit $rc",
        shell_quote(&repo_root().to_string_lossy()),
        argv.join(" ")
    );
    let mut o = Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.code() != Some(97) && !err.starts_with("unshare:") {
        let (before, after) = err.split_once(LISTING).unwrap_or((&err, ""));
        let left = after
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        o.stderr = before.as_bytes().to_vec();
        return (o, left);
    }
    // 2) No user namespaces (e.g. CI runners that forbid them): `chmod 555` for read-only (not for root, whom
    // permissions do not stop), and a file-size limit for a full disk (writes fail with EFBIG, SIGXFSZ ignored).
    let mut c = Command::new("sh");
    c.current_dir(repo_root());
    if mount_opts == "ro" {
        assert!(
            !is_root(),
            "as root without user namespaces there is no read-only dir to test: {err}"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        c.args(["-c", &format!("exec {}", argv.join(" "))]);
    } else {
        c.args([
            "-c",
            &format!("trap '' XFSZ; ulimit -f 192; exec {}", argv.join(" ")),
        ]);
    }
    let o = c.output().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    (o, walk(dir))
}

fn walk(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .flat_map(|e| {
                    let p = e.path();
                    let mut v = vec![p.to_string_lossy().into_owned()];
                    if p.is_dir() && !p.is_symlink() {
                        v.extend(walk(&p));
                    }
                    v
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn read_only_or_full_output_dir_gives_a_clear_error_and_no_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let data = t.join("data");
    let golden = repo_root().join("exporter/tests/golden/unetr2d_monai");
    for (case, opts) in [("read-only", "ro"), ("full disk", "size=96k")] {
        let dir = t.join(format!("out-{}", case.replace(' ', "-")));
        // Exporter: no .onnx and no temporary left behind.
        let mut export = Command::new(bin("medmae-export"));
        export
            .arg("--checkpoint")
            .arg(&golden)
            .arg("-o")
            .arg(dir.join("model.onnx"));
        let (o, left) = run_limited(&dir, opts, &export);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "medmae-export into a {case} dir succeeded"
        );
        assert!(
            err.contains(&dir.to_string_lossy().into_owned()),
            "{case}: the exporter error names the path: {err}"
        );
        assert!(
            err.contains("Read-only")
                || err.contains("Permission denied")
                || err.contains("No space left")
                || err.contains("File too large"),
            "{case}: the exporter error says why: {err}"
        );
        assert!(left.is_empty(), "{case}: the exporter left {left:?}");
        // Trainer (phantoms generated outside the limited dir): no checkpoint pointing at incomplete data.
        let run = dir.join("run");
        let mut train = train_cmd(&run, &data, &["--max-steps", "2"]);
        train
            .arg("--set")
            .arg(format!("data.cache_dir={}", t.join("cache").display()));
        if case == "read-only" {
            // The data must exist before the output dir becomes read-only.
            ok(train_cmd(&t.join("warm"), &data, &["--max-steps", "1"]));
        }
        let (o, left) = run_limited(&dir, opts, &train);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "medmae-train into a {case} dir succeeded"
        );
        assert!(
            err.contains(&dir.to_string_lossy().into_owned()),
            "{case}: the trainer error names the path: {err}"
        );
        assert!(
            err.contains("Read-only")
                || err.contains("Permission denied")
                || err.contains("No space left")
                || err.contains("File too large"),
            "{case}: the trainer error says why: {err}"
        );
        assert!(
            !left.iter().any(|p| p.ends_with("checkpoints/last")),
            "{case}: a last checkpoint was left: {left:?}"
        );
        let d = dir.to_string_lossy().into_owned();
        assert!(
            !left
                .iter()
                .any(|p| p.strip_prefix(&d).is_some_and(|rel| rel.contains(".tmp"))),
            "{case}: a partial checkpoint was left: {left:?}\ntrainer stderr:\n{err}"
        );
        println!("{case}: exporter and trainer refused cleanly; left behind: {left:?}");
    }
}
