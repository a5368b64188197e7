//! libtorch's intra-op thread count for a training process: one precedence, capped at the CPUs this process may
//! run on, and logged with the process's CPU affinity on every rank.
//!
//! Precedence (the launch environment describes the allocation, a config file is portable between machines; the
//! same order as `medmae-serve`'s flag > environment > file):
//! 1. `OMP_NUM_THREADS` when set (the SLURM template sets it from `--cpus-per-task`; torchrun sets it too);
//! 2. the config's `threads` when > 0;
//! 3. the number of CPUs in this process's affinity mask (what a scheduler's CPU binding gave it).
//!
//! Any value above the CPUs the process may run on is lowered to that count with a warning: more threads than
//! CPUs only oversubscribe them.

use crate::error::{Result, TrainError};

/// Where the thread count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadSource {
    /// The `OMP_NUM_THREADS` environment variable.
    Environment,
    /// The config's `threads` key.
    Config,
    /// The CPUs this process may run on (neither of the above was set).
    Affinity,
}

/// The resolved thread setting of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPlan {
    /// Intra-op threads to use.
    pub threads: usize,
    /// Which setting decided it.
    pub source: ThreadSource,
    /// The value asked for before the cap, when it was lowered to `allowed_cpus`.
    pub capped_from: Option<usize>,
    /// The config's `threads` when it was set but a higher-precedence setting won.
    pub overridden_config: Option<usize>,
    /// CPUs this process may run on.
    pub allowed_cpus: usize,
}

/// Resolve the thread count from `OMP_NUM_THREADS` (`omp`), the config's `threads` (0 = unset) and the CPUs the
/// process may run on. `OMP_NUM_THREADS` may be a comma-separated list (nested OpenMP levels): the first value counts.
pub fn plan(omp: Option<&str>, config_threads: usize, allowed_cpus: usize) -> Result<ThreadPlan> {
    let allowed = allowed_cpus.max(1);
    let env = match omp.map(str::trim).filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            let first = v.split(',').next().unwrap_or(v).trim();
            match first.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(TrainError::config(
                        "threads",
                        format!("environment variable OMP_NUM_THREADS={v:?} is not a positive integer (it takes precedence over `threads`; unset it or fix it)"),
                    ))
                }
            }
        }
    };
    let (wanted, source) = match (env, config_threads) {
        (Some(n), _) => (n, ThreadSource::Environment),
        (None, 0) => (allowed, ThreadSource::Affinity),
        (None, n) => (n, ThreadSource::Config),
    };
    let overridden_config =
        (source == ThreadSource::Environment && config_threads > 0).then_some(config_threads);
    Ok(ThreadPlan {
        threads: wanted.min(allowed),
        source,
        capped_from: (wanted > allowed).then_some(wanted),
        overridden_config,
        allowed_cpus: allowed,
    })
}

/// The CPUs this process may run on: the `Cpus_allowed_list` of `/proc/self/status` (e.g. `"0-3,8"`) and its size;
/// elsewhere no list and [`std::thread::available_parallelism`].
pub fn allowed_cpus() -> (Option<String>, usize) {
    let list = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|v| v.trim().to_owned())
        });
    match list.as_deref().and_then(count_cpu_list) {
        Some(n) if n > 0 => (list, n),
        _ => (
            None,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ),
    }
}

/// Number of CPUs in a Linux CPU list such as `"0-3,8,10-11"`; `None` when it is malformed.
pub fn count_cpu_list(list: &str) -> Option<usize> {
    let mut total = 0usize;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        total += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.trim().parse::<usize>().ok()?,
                    b.trim().parse::<usize>().ok()?,
                );
                b.checked_sub(a)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(total)
}

/// Set libtorch's intra-op threads for this process as [`plan`] decides, and log the decision and the CPU affinity
/// (target `trainer::threads`, which `medmae-train` shows on every rank).
pub fn configure(config_threads: usize, rank: usize, world_size: usize) -> Result<ThreadPlan> {
    let omp = std::env::var("OMP_NUM_THREADS").ok();
    let (list, allowed) = allowed_cpus();
    let p = plan(omp.as_deref(), config_threads, allowed)?;
    let threads = i32::try_from(p.threads).unwrap_or(i32::MAX);
    tch::set_num_threads(threads);
    let cpus = list.unwrap_or_else(|| "?".to_owned());
    let source = match p.source {
        ThreadSource::Environment => "OMP_NUM_THREADS",
        ThreadSource::Config => "config `threads`",
        ThreadSource::Affinity => "the CPUs allowed",
    };
    let note = p
        .overridden_config
        .map(|c| format!("; config `threads: {c}` not used"))
        .unwrap_or_default();
    tracing::info!(
        "rank {rank} of {world_size}: {} intra-op thread(s) from {source}{note}; CPUs allowed: {cpus} ({allowed})",
        p.threads
    );
    if let Some(wanted) = p.capped_from {
        tracing::warn!(
            "rank {rank}: {source} asks for {wanted} threads but this process may run on {allowed} CPU(s) ({cpus}); using {allowed}"
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_wins_over_config_and_is_capped() {
        let p = plan(Some("4"), 2, 8).unwrap();
        assert_eq!((p.threads, p.source), (4, ThreadSource::Environment));
        assert_eq!(p.overridden_config, Some(2));
        assert_eq!(p.capped_from, None);
        let p = plan(Some("16,2"), 0, 8).unwrap();
        assert_eq!((p.threads, p.capped_from), (8, Some(16)));
        assert_eq!(p.overridden_config, None);
    }

    #[test]
    fn config_then_affinity() {
        let p = plan(None, 2, 8).unwrap();
        assert_eq!(
            (p.threads, p.source, p.capped_from),
            (2, ThreadSource::Config, None)
        );
        let p = plan(Some(" "), 3, 2).unwrap();
        assert_eq!(
            (p.threads, p.source, p.capped_from),
            (2, ThreadSource::Config, Some(3))
        );
        let p = plan(None, 0, 6).unwrap();
        assert_eq!((p.threads, p.source), (6, ThreadSource::Affinity));
        assert_eq!(plan(None, 0, 0).unwrap().threads, 1);
    }

    #[test]
    fn bad_omp_num_threads_is_an_error_naming_it() {
        for v in ["abc", "0", "-2", "2.5"] {
            let e = plan(Some(v), 2, 8).unwrap_err().to_string();
            assert!(e.contains("OMP_NUM_THREADS") && e.contains(v), "{e}");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("5"), Some(1));
        assert_eq!(count_cpu_list(""), Some(0));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a-b"), None);
        let (list, n) = allowed_cpus();
        assert!(n >= 1);
        if let Some(l) = list {
            assert_eq!(count_cpu_list(&l), Some(n));
        }
    }
}
