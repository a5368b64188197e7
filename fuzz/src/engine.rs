//! The glue between the targets and a coverage-guided engine (libFuzzer through `cargo fuzz`, see `fuzz_targets/`):
//! one lazily built target per process, each input run with its peak allocation checked against
//! [`harness::SOFT_CAP`], and a custom mutator that alternates libFuzzer's own mutations with the structure-aware
//! ones of [`mutate`] (splicing in the target's seed files). The engine itself never links here, so the
//! coverage-free `medmae-fuzz` binary and the tests build without it.

use std::cell::RefCell;
use std::path::PathBuf;

use crate::alloc;
use crate::harness::SOFT_CAP;
use crate::mutate::{mutate, Rng};
use crate::targets::{self, Env, Target};

thread_local! {
    static TARGET: RefCell<Option<Box<dyn Target>>> = const { RefCell::new(None) };
}

/// Scratch folder of this process's target (a tmpfs when there is one); removed by the scripts after a run.
fn work_dir(name: &str) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join("medmae-libfuzzer")
        .join(format!("{name}-{}", std::process::id()))
}

/// The environment of the compiled-in seed folder (`fuzz/seeds`), no extra example folders.
pub fn default_env(name: &str) -> Env {
    Env {
        seeds: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds"),
        extra: Vec::new(),
        work: work_dir(name),
    }
}

fn with_target<R>(name: &str, f: impl FnOnce(&mut dyn Target) -> R) -> R {
    TARGET.with(|cell| {
        let mut slot = cell.borrow_mut();
        let t = slot.get_or_insert_with(|| match targets::make(name, &default_env(name)) {
            Ok(t) => t,
            // A setup failure (missing seeds), not a finding: stop before fuzzing anything.
            Err(e) => {
                eprintln!("{name}: cannot set the target up: {e}");
                std::process::exit(2)
            }
        });
        f(t.as_mut())
    })
}

/// Run one input; a panic (from the parser or an oracle) or a peak allocation over the cap is a finding.
pub fn run_one(name: &str, input: &[u8]) {
    with_target(name, |t| {
        let live = alloc::reset_peak();
        let _ = t.run(input);
        let used = alloc::peak().saturating_sub(live);
        assert!(
            used <= SOFT_CAP,
            "{name}: allocated {} MiB for a {}-byte input (cap {} MiB)",
            used >> 20,
            input.len(),
            SOFT_CAP >> 20
        );
    })
}

/// libFuzzer's custom mutator: half the time `default` (libFuzzer's mutations), otherwise one structure-aware
/// mutant of `data` (possibly spliced with a seed file and re-encoded, e.g. gzip) that fits `max_size`.
pub fn mutate_one(
    name: &str,
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    default: fn(&mut [u8], usize, usize) -> usize,
) -> usize {
    let mut rng = Rng::new(u64::from(seed) | 1 << 40);
    if rng.chance(0.5) {
        return default(data, size, max_size);
    }
    let m = with_target(name, |t| {
        let seeds = t.seeds();
        let other = if seeds.is_empty() {
            Vec::new()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        let hints = t.hints();
        let m = mutate(&data[..size.min(data.len())], &other, &hints, &mut rng);
        t.post(m, &mut rng)
    });
    if m.is_empty() || m.len() > max_size.min(data.len()) {
        return default(data, size, max_size);
    }
    data[..m.len()].copy_from_slice(&m);
    m.len()
}

/// Define a libFuzzer target for the named target: the counting allocator, `fuzz_target!` over [`run_one`] and
/// `fuzz_mutator!` over [`mutate_one`]. Use in a `#![no_main]` binary that depends on `libfuzzer-sys`.
#[macro_export]
macro_rules! libfuzzer_target {
    ($name:literal) => {
        #[global_allocator]
        static ALLOC: $crate::alloc::Counting = $crate::alloc::Counting;

        libfuzzer_sys::fuzz_target!(|data: &[u8]| {
            $crate::engine::run_one($name, data);
        });

        libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
            $crate::engine::mutate_one(
                $name,
                data,
                size,
                max_size,
                seed,
                libfuzzer_sys::fuzzer_mutate,
            )
        });
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &mut [u8], _: usize, _: usize) -> usize {
        usize::MAX
    }

    #[test]
    fn custom_mutations_fit_the_buffer_and_the_limit() {
        // A 64-byte limit is smaller than every model.json seed: splices and inserts must be refused (libFuzzer's
        // own mutator takes over) rather than written past `max_size`.
        let (mut custom, mut fallback) = (0, 0);
        for seed in 0..400u32 {
            let mut buf = vec![0u8; 64];
            buf[..2].copy_from_slice(b"{}");
            let n = mutate_one("model_json", &mut buf, 2, 64, seed, never);
            if n == usize::MAX {
                fallback += 1;
            } else {
                assert!((1..=64).contains(&n), "seed {seed}: {n} bytes");
                custom += 1;
            }
        }
        assert!(
            custom > 50 && fallback > 100,
            "custom {custom}, fallback {fallback}"
        );
    }

    #[test]
    fn run_one_accepts_a_seed_and_rejects_garbage_without_panicking() {
        let seed = std::fs::read(default_env("x").seeds.join("model_json/mae3d.json")).unwrap();
        run_one("model_json", &seed);
        run_one("model_json", b"\xff{not json");
    }
}
