//! `medmae-fuzz [--execs N] [--seed S] [--seeds DIR] [--extra DIR]... [--work DIR] [--artifacts DIR] [TARGET...]`:
//! fuzz the named targets (default: all) coverage-free and print one line per target; exit status 1 if any failure
//! was found. With `--write-corpus DIR [--mutants N]` it instead writes each target's seeds (and N structure-aware
//! mutants) into `DIR/<target>/`, the starting corpus of the libFuzzer targets.

use std::path::PathBuf;
use std::process::ExitCode;

use medmae_fuzz::harness::{self, Stats};
use medmae_fuzz::targets::{self, Env};

#[global_allocator]
static ALLOC: medmae_fuzz::alloc::Counting = medmae_fuzz::alloc::Counting;

struct Args {
    execs: u64,
    seed: u64,
    env: Env,
    artifacts: PathBuf,
    names: Vec<String>,
    corpus: Option<PathBuf>,
    mutants: usize,
}

fn parse_args() -> Result<Args, String> {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        execs: 1_000_000,
        seed: 1,
        env: Env {
            seeds: here.join("seeds"),
            extra: Vec::new(),
            work: std::env::temp_dir().join("medmae-fuzz"),
        },
        artifacts: here.join("artifacts"),
        names: Vec::new(),
        corpus: None,
        mutants: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |what: &str| it.next().ok_or_else(|| format!("{arg} needs {what}"));
        match arg.as_str() {
            "--execs" => a.execs = val("a count")?.parse().map_err(|e| format!("--execs: {e}"))?,
            "--seed" => a.seed = val("a number")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--seeds" => a.env.seeds = val("a folder")?.into(),
            "--extra" => a.env.extra.push(val("a folder")?.into()),
            "--work" => a.env.work = val("a folder")?.into(),
            "--artifacts" => a.artifacts = val("a folder")?.into(),
            "--write-corpus" => a.corpus = Some(val("a folder")?.into()),
            "--mutants" => {
                a.mutants = val("a count")?
                    .parse()
                    .map_err(|e| format!("--mutants: {e}"))?
            }
            "-h" | "--help" => {
                return Err(format!(
                    "usage: medmae-fuzz [--execs N] [--seed S] [--seeds DIR] [--extra DIR]... [--work DIR] [--artifacts DIR] [--write-corpus DIR [--mutants N]] [TARGET...]\ntargets: {}",
                    targets::NAMES.join(" ")
                ))
            }
            t if !t.starts_with('-') => a.names.push(t.to_string()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.names.is_empty() {
        a.names = targets::NAMES.iter().map(|s| s.to_string()).collect();
    }
    Ok(a)
}

fn report(s: &Stats) {
    println!(
        "{:<13} execs {:>9}  {:>7.1} s  {:>8.0} exec/s  accepted {:>8}  rejected {:>9}  distinct-errors {:>6}  seeds {:>3}  peak-alloc {:>6.1} MiB  failures {}",
        s.name,
        s.execs,
        s.secs,
        s.execs as f64 / s.secs.max(1e-9),
        s.accepted,
        s.rejected,
        s.distinct_errors,
        s.seeds,
        s.peak_bytes as f64 / (1 << 20) as f64,
        s.failures.values().map(|(n, _)| n).sum::<u64>()
    );
    for r in &s.seeds_rejected {
        println!("  note: {r}");
    }
    for (msg, (n, path)) in &s.failures {
        println!("  FAIL x{n}: {msg}\n    input: {}", path.display());
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    harness::install();
    let mut failed = false;
    for name in &args.names {
        let mut t = match targets::make(name, &args.env) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{name}: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(dir) = &args.corpus {
            match harness::write_corpus(t.as_ref(), &dir.join(name), args.mutants, args.seed) {
                Ok(n) => println!("{name}: {n} files in {}", dir.join(name).display()),
                Err(e) => {
                    eprintln!("{name}: {}: {e}", dir.display());
                    return ExitCode::from(2);
                }
            }
            continue;
        }
        let s = harness::fuzz(t.as_mut(), args.execs, args.seed, &args.artifacts);
        report(&s);
        failed |= !s.failures.is_empty() || s.seeds == 0;
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
