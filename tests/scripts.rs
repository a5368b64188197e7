//! The GPU and SLURM scripts' parts that can be checked without a GPU or a scheduler: argument handling, the early
//! failure of `scripts/gpu-check` on a machine without a GPU, its result writer (the GPU section of
//! bench/RESULTS.md), and the usage message of `scripts/slurm/train.sbatch`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script(rel: &str, args: &[&str], envs: &[(&str, &str)]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new("bash")
        .arg(repo().join(rel))
        .args(args)
        .envs(envs.iter().copied())
        .env("MEDMAE_PYTHON", medmae_test_support::python())
        .env_remove("SLURM_JOB_ID")
        .output()
        .unwrap_or_else(|e| panic!("bash {rel}: {e}"));
    (out, start.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn gpu_check_arguments() {
    let (out, _) = script("scripts/gpu-check", &["--help"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("scripts/gpu-check [--only ort,train,nccl]"),
        "{}",
        text(&out)
    );
    for (args, want) in [
        (&["--bogus"][..], "unknown argument '--bogus'"),
        (&["--only", "ort,fp64"][..], "unknown check 'fp64'"),
        (&["--only"][..], "--only needs a value"),
        (&["--results"][..], "--results needs a file"),
    ] {
        let (out, _) = script("scripts/gpu-check", args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
}

#[test]
fn gpu_check_fails_early_without_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("RESULTS.md");
    std::fs::write(&results, "# results\n").unwrap();
    let res = results.to_str().unwrap();
    // No driver at all.
    let (out, took) = script(
        "scripts/gpu-check",
        &["--results", res],
        &[("NVIDIA_SMI", "/nonexistent/nvidia-smi")],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no NVIDIA GPU here"), "{}", text(&out));
    assert!(took < Duration::from_secs(10), "not early: {took:?}");
    // A driver that cannot talk to a GPU, and one that lists none.
    let failing = dir.path().join("smi-fails");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9\n",
    )
    .unwrap();
    let empty = dir.path().join("smi-empty");
    std::fs::write(&empty, "#!/bin/sh\necho 'No devices were found'\nexit 0\n").unwrap();
    for (stub, want) in [
        (&failing, "couldn't communicate with the NVIDIA driver"),
        (&empty, "lists no device"),
    ] {
        let mut perms = std::fs::metadata(stub).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(stub, perms).unwrap();
        let (out, took) = script(
            "scripts/gpu-check",
            &["--results", res],
            &[("NVIDIA_SMI", stub.to_str().unwrap())],
        );
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(
            text(&out).contains("no usable NVIDIA GPU"),
            "{}",
            text(&out)
        );
        assert!(text(&out).contains(want), "{}", text(&out));
        assert!(took < Duration::from_secs(10), "not early: {took:?}");
    }
    assert_eq!(std::fs::read_to_string(&results).unwrap(), "# results\n");
}

fn sample(figure: &str, status: &str) -> String {
    serde_json::json!({
        "date": "2026-12-07 10:00 UTC", "commit": "abc1234", "profile": "release",
        "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory": "81559 MiB", "driver": "570.1"}],
        "checks": [
            {"name": "ORT CUDA EP vs CPU", "status": "pass", "figures": figure, "reference": "CPU provider"},
            {"name": "train step tiny | f32", "status": status, "figures": "medmae 9.0 ms/step", "reference": "PyTorch"},
            {"name": "NCCL group of 2 ranks", "status": "not run", "figures": "this machine has 1 GPU", "reference": "-"}
        ]
    })
    .to_string()
}

#[test]
fn gpu_check_result_writer_replaces_only_its_section() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("RESULTS.md");
    let before = "# medmae benchmark results\n\n| benchmark | status |\n|---|---|\n\n## serve\n\nserve figures\n";
    std::fs::write(&md, before).unwrap();
    let json = dir.path().join("r.json");
    let write = |json_text: &str| {
        std::fs::write(&json, json_text).unwrap();
        script(
            "scripts/gpu-check",
            &[
                "--write-results",
                json.to_str().unwrap(),
                "--results",
                md.to_str().unwrap(),
            ],
            &[],
        )
        .0
    };
    let out = write(&sample("CUDA 0.41 s, CPU 4.20 s", "pass"));
    assert!(out.status.success(), "{}", text(&out));
    let first = std::fs::read_to_string(&md).unwrap();
    assert!(first.starts_with(before), "{first}");
    assert!(first.contains("## GPU (scripts/gpu-check)"), "{first}");
    assert!(
        first.contains("1 × NVIDIA H100 80GB HBM3; driver 570.1"),
        "{first}"
    );
    assert!(
        first.contains("| ORT CUDA EP vs CPU | pass | CUDA 0.41 s, CPU 4.20 s | CPU provider |"),
        "{first}"
    );
    assert!(
        first.contains("| train step tiny \\| f32 | pass |"),
        "pipes are escaped: {first}"
    );
    assert!(first.contains("3 of 3 checks without failure."), "{first}");

    // A second run replaces the section in place; text after it is kept.
    std::fs::write(&md, format!("{first}\n## later\n\nkept\n")).unwrap();
    let out = write(&sample("CUDA 0.39 s, CPU 4.10 s", "fail"));
    assert!(out.status.success(), "{}", text(&out));
    let second = std::fs::read_to_string(&md).unwrap();
    assert_eq!(
        second.matches("## GPU (scripts/gpu-check)").count(),
        1,
        "{second}"
    );
    assert!(
        second.contains("CUDA 0.39 s") && !second.contains("CUDA 0.41 s"),
        "{second}"
    );
    assert!(
        second.contains("2 of 3 checks without failure."),
        "{second}"
    );
    assert!(
        second.starts_with(before) && second.ends_with("## later\n\nkept\n"),
        "{second}"
    );

    // Malformed figures: an error naming the field, the file untouched.
    let mut bad: serde_json::Value = serde_json::from_str(&sample("x", "pass")).unwrap();
    bad["checks"][2].as_object_mut().unwrap().remove("status");
    let out = write(&bad.to_string());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("results.checks[2]: missing field 'status'"),
        "{}",
        text(&out)
    );
    let out = write(&sample("x", "maybe"));
    assert!(
        text(&out).contains("expected pass, fail or not run, got 'maybe'"),
        "{}",
        text(&out)
    );
    let out = write("{not json");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&md).unwrap(), second);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".gpu-check."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn train_sbatch_usage() {
    let (out, _) = script("scripts/slurm/train.sbatch", &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("usage: sbatch"), "{}", text(&out));
    assert!(!text(&out).contains("unbound variable"), "{}", text(&out));
    let (out, _) = script("scripts/slurm/train.sbatch", &["pretrain"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not inside a SLURM job"),
        "{}",
        text(&out)
    );
}

#[test]
fn gpu_build_arguments() {
    let (out, _) = script("scripts/gpu-build", &["--help"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("scripts/gpu-build [--install-only]"),
        "{}",
        text(&out)
    );
    let (out, _) = script("scripts/gpu-build", &["--fast"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("unknown option '--fast'"),
        "{}",
        text(&out)
    );
}

/// bench/report.py marks a benchmark whose machine-speed probe (before or after it) took ≥ 1.25× the run's fastest
/// probe of the same kind, shows the probes and the steal share, and still reads rows written without probes;
/// bench/probe.py's two outputs are what bench/run parses.
#[test]
fn bench_report_marks_benchmarks_run_on_a_slower_machine() {
    let dir = tempfile::tempdir().unwrap();
    let row = |f: &[&str]| f.join("\t") + "\n";
    let runs = [
        row(&[
            "imaging",
            "ok",
            "17",
            "11:48",
            "1.7 1.8 1.7",
            "1.5 1.7 1.7",
            "",
            r#"{"cpu_s": 0.100, "mem_s": 0.020}"#,
            r#"{"cpu_s": 0.110, "mem_s": 0.024}"#,
            "0.3",
        ]),
        // cpu 0.130 / 0.100 = 1.30 and mem 0.030 / 0.020 = 1.50: both over 1.25.
        row(&[
            "train",
            "ok",
            "400",
            "11:56",
            "1.5 1.7 1.7",
            "1.7 1.7 1.7",
            "",
            r#"{"cpu_s": 0.130, "mem_s": 0.021}"#,
            r#"{"cpu_s": 0.100, "mem_s": 0.030}"#,
            "4.0",
        ]),
        row(&[
            "serve",
            "ok",
            "100",
            "11:59",
            "1.5 1.7 1.7",
            "1.7 1.7 1.7",
            "",
        ]),
    ]
    .concat();
    std::fs::write(dir.path().join("runs.tsv"), runs).unwrap();
    let out_md = dir.path().join("R.md");
    let out = Command::new(medmae_test_support::python())
        .arg(repo().join("bench/report.py"))
        .args([
            "--logs",
            dir.path().to_str().unwrap(),
            "--out",
            out_md.to_str().unwrap(),
        ])
        .args(["--cores", "2", "--all", "imaging train serve init"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let md = std::fs::read_to_string(&out_md).unwrap();
    assert!(md.contains("the machine was slower around train**"), "{md}");
    assert!(
        md.contains("| 0.130 / 0.021 | 0.100 / 0.030 | 4.0 % | slower: cpu 1.30×, mem 1.50× |"),
        "{md}"
    );
    assert!(
        md.contains("| 0.100 / 0.020 | 0.110 / 0.024 | 0.3 % | – |"),
        "{md}"
    );
    assert!(
        md.contains("| serve | ok | 100 s | 11:59 | 1.5 1.7 1.7 | 1.7 1.7 1.7 | – | – | – | – |"),
        "{md}"
    );
    assert!(md.contains("| init | not run in this run |"), "{md}");

    let probe = |cmd: &str| {
        let o = Command::new(medmae_test_support::python())
            .arg(repo().join("bench/probe.py"))
            .arg(cmd)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let speed: serde_json::Value = serde_json::from_str(probe("speed").trim()).unwrap();
    for k in ["cpu_s", "mem_s"] {
        let v = speed[k].as_f64().unwrap_or(-1.0);
        assert!(v > 0.0 && v < 60.0, "{k} = {v}");
    }
    let stat: Vec<u64> = probe("stat")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        stat.len() == 2 && stat[0] <= stat[1] && stat[1] > 0,
        "{stat:?}"
    );
}
