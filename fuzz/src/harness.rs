//! The fuzzing loop: seeds first, then mutants of seeds and of previously accepted mutants, each execution under
//! `catch_unwind` with its peak allocation measured; panics and over-budget allocations are failures whose inputs
//! are saved under the artifact directory. A watchdog thread aborts (saving the input) if one execution hangs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::alloc;
use crate::mutate::{mutate, Rng};
use crate::targets::Target;

/// Peak bytes one execution may allocate above what was live before it.
pub const SOFT_CAP: usize = 256 << 20;
/// Seconds one execution may take before the watchdog reports a hang.
pub const HANG_SECS: u64 = 30;
/// Accepted mutants kept as further seeds.
const POOL: usize = 512;

thread_local! {
    static PANIC_MSG: RefCell<String> = const { RefCell::new(String::new()) };
}

static PROGRESS: AtomicU64 = AtomicU64::new(0);
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Install the panic hook (records the message instead of printing it) and the hang watchdog.
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        PANIC_MSG.with(|m| *m.borrow_mut() = format!("panic at {loc}: {msg}"));
    }));
    std::thread::spawn(|| {
        let mut last = (u64::MAX, Instant::now());
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = PROGRESS.load(Ordering::Relaxed);
            if now != last.0 || !RUNNING.load(Ordering::Relaxed) {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(HANG_SECS) {
                eprintln!("FAIL: one execution ran over {HANG_SECS} s (hang)");
                alloc::abort_with_input("hang");
            }
        }
    });
}

/// What one target's run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Target name.
    pub name: String,
    /// Executions (seeds + mutants).
    pub execs: u64,
    /// Wall time.
    pub secs: f64,
    /// Inputs the parser accepted.
    pub accepted: u64,
    /// Inputs rejected with an error (the expected outcome for most mutants).
    pub rejected: u64,
    /// Seeds given (all must be accepted).
    pub seeds: usize,
    /// Seeds the parser rejected.
    pub seeds_rejected: Vec<String>,
    /// Distinct failures (panic location or allocation) → (count, saved input).
    pub failures: BTreeMap<String, (u64, PathBuf)>,
    /// Largest per-execution peak allocation.
    pub peak_bytes: usize,
    /// Distinct error messages seen (first 80 chars), a measure of how much of the validation was reached.
    pub distinct_errors: usize,
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Outcome of one execution.
enum Exec {
    Accepted,
    Rejected(String),
    Failed(String),
}

fn exec_one(target: &mut dyn Target, input: &[u8], stats: &mut Stats) -> Exec {
    alloc::publish(Some(input));
    let live = alloc::reset_peak();
    RUNNING.store(true, Ordering::Relaxed);
    let r = catch_unwind(AssertUnwindSafe(|| target.run(input)));
    RUNNING.store(false, Ordering::Relaxed);
    PROGRESS.fetch_add(1, Ordering::Relaxed);
    let used = alloc::peak().saturating_sub(live);
    alloc::publish(None);
    stats.peak_bytes = stats.peak_bytes.max(used);
    stats.execs += 1;
    match r {
        Err(_) => Exec::Failed(PANIC_MSG.with(|m| m.borrow().clone())),
        Ok(_) if used > SOFT_CAP => Exec::Failed(format!(
            "allocated {} MiB for a {}-byte input (cap {} MiB)",
            used >> 20,
            input.len(),
            SOFT_CAP >> 20
        )),
        Ok(Ok(())) => Exec::Accepted,
        Ok(Err(e)) => Exec::Rejected(e),
    }
}

/// Run `target` for `execs` executions (the seeds count) from RNG seed `seed`; failures are saved in `artifacts`.
pub fn fuzz(target: &mut dyn Target, execs: u64, seed: u64, artifacts: &Path) -> Stats {
    let dir = artifacts.join(target.name());
    let _ = std::fs::create_dir_all(&dir);
    alloc::set_artifact(dir.join("current.bin"));
    let hints = target.hints();
    let seeds: Vec<Vec<u8>> = target.seeds().to_vec();
    let mut stats = Stats {
        name: target.name().to_string(),
        seeds: seeds.len(),
        ..Stats::default()
    };
    let mut errors: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut rng = Rng::new(seed ^ fnv(target.name().as_bytes()));
    let start = Instant::now();
    let mut record =
        |stats: &mut Stats, input: &[u8], outcome: Exec, pool: &mut Vec<Vec<u8>>, rng: &mut Rng| {
            match outcome {
                Exec::Accepted => {
                    stats.accepted += 1;
                    if pool.len() < POOL {
                        pool.push(input.to_vec());
                    } else {
                        let i = rng.below(POOL);
                        pool[i] = input.to_vec();
                    }
                }
                Exec::Rejected(e) => {
                    stats.rejected += 1;
                    if errors.len() < 100_000 {
                        errors.insert(e.chars().take(80).collect());
                    }
                }
                Exec::Failed(msg) => {
                    let key = msg
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect::<String>();
                    let entry = stats.failures.entry(key).or_insert_with(|| {
                        let p = dir.join(format!("crash-{:016x}.bin", fnv(input)));
                        let _ = std::fs::write(&p, input);
                        (0, p)
                    });
                    entry.0 += 1;
                }
            }
        };
    for (i, s) in seeds.iter().enumerate() {
        let outcome = exec_one(target, s, &mut stats);
        if let Exec::Rejected(e) = &outcome {
            stats.seeds_rejected.push(format!("seed {i}: {e}"));
        }
        record(&mut stats, s, outcome, &mut pool, &mut rng);
    }
    if seeds.is_empty() {
        stats.secs = start.elapsed().as_secs_f64();
        return stats;
    }
    while stats.execs < execs {
        let base = if !pool.is_empty() && rng.chance(0.5) {
            &pool[rng.below(pool.len())]
        } else {
            &seeds[rng.below(seeds.len())]
        };
        let other = &seeds[rng.below(seeds.len())];
        let m = mutate(base, other, &hints, &mut rng);
        let m = target.post(m, &mut rng);
        let outcome = exec_one(target, &m, &mut stats);
        record(&mut stats, &m, outcome, &mut pool, &mut rng);
    }
    stats.distinct_errors = errors.len();
    stats.secs = start.elapsed().as_secs_f64();
    stats
}

/// Write the target's seeds and `mutants` structure-aware mutants (from RNG seed `seed`) into `dir`, one file each,
/// as the starting corpus of a coverage-guided engine; returns the number of files written.
pub fn write_corpus(
    target: &dyn Target,
    dir: &Path,
    mutants: usize,
    seed: u64,
) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let seeds = target.seeds();
    let hints = target.hints();
    let mut rng = Rng::new(seed ^ fnv(target.name().as_bytes()));
    let mut n = 0;
    let mut put = |bytes: &[u8]| -> std::io::Result<()> {
        n += 1;
        std::fs::write(dir.join(format!("seed-{:016x}", fnv(bytes))), bytes)
    };
    for s in seeds {
        put(s)?;
    }
    for _ in 0..if seeds.is_empty() { 0 } else { mutants } {
        let base = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let m = target.post(mutate(base, other, &hints, &mut rng), &mut rng);
        put(&m)?;
    }
    Ok(n)
}
