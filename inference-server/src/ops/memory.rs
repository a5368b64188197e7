//! How the process's allocator hands memory back to the system. glibc's default returns every block of 128 KiB and
//! more to the kernel when it is freed (`munmap`, and trimming of the heap top), so an engine that allocates its
//! multi-megabyte intermediate tensors afresh for every window page-faults them in again each time: tract on a 64³
//! UNETR window took ~1.7 M page faults per request and ~10 % more CPU than with freed memory kept for reuse. On a
//! ViT-B UNETR (96³ windows: tensors of 56–113 MB) it took 6.4 M faults per request, and ~45 % of its time.
//!
//! The server keeps freed memory: every block comes from the heap (no per-block mappings: `M_MMAP_MAX` 0, which
//! also covers blocks beyond glibc's 32 MiB mmap-threshold ceiling), all threads share the main heap (`M_ARENA_MAX`
//! 1: a thread arena lives in 64 MiB heaps and still maps a larger block on its own, then unmaps it when freed), and
//! up to 1 GiB of free heap is kept instead of trimmed. Small blocks stay in each thread's cache, so one arena costs
//! little under concurrency. Memory stays at the high-water mark of the requests served, as with jemalloc or
//! mimalloc. Setting any `glibc.malloc.*` tunable in `GLIBC_TUNABLES` leaves the allocator to those settings.

/// Largest block served from the heap instead of its own mapping (glibc refuses more than 32 MiB on 64-bit); with
/// `M_MMAP_MAX` 0 no block gets its own mapping, this is the fallback should glibc refuse that.
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of a heap kept for reuse rather than returned.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The thresholds were set.
    Kept,
    /// `GLIBC_TUNABLES` sets the allocator; left alone.
    Tunables,
    /// Not glibc (or glibc refused the values): the allocator's defaults apply.
    Default,
}

/// Keep freed memory for reuse (see the module documentation); call once, before threads start.
pub fn keep_freed_memory() -> Retention {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return Retention::Tunables;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> Retention {
    let as_int = |v: usize| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes allocator parameters; it is called before the server starts its threads.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(MMAP_THRESHOLD)) == 1
            && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(TRIM_THRESHOLD)) == 1
    };
    if ok {
        Retention::Kept
    } else {
        Retention::Default
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> Retention {
    Retention::Default
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn minor_faults() -> u64 {
        // SAFETY: getrusage writes into the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        u.ru_minflt as u64
    }

    /// On a fresh thread (its own arena, like an engine worker): `rounds` times, allocate and touch a set of
    /// engine-sized buffers alive together, then free them; the page faults of the rounds after the first.
    fn churn(rounds: usize, mibs: &'static [usize]) -> u64 {
        std::thread::spawn(move || {
            let round = |i: usize| {
                let bufs: Vec<Vec<u8>> = mibs
                    .iter()
                    .map(|mib| {
                        let mut v = vec![0u8; mib << 20];
                        v.iter_mut().step_by(4096).for_each(|b| *b = i as u8);
                        v
                    })
                    .collect();
                std::hint::black_box(bufs);
            };
            round(0);
            let before = minor_faults();
            (1..rounds).for_each(round);
            minor_faults() - before
        })
        .join()
        .expect("churn thread")
    }

    #[test]
    fn freed_blocks_are_reused_instead_of_faulted_in_again() {
        let default = churn(10, &[24, 1, 16, 4, 8, 2]);
        assert_eq!(keep_freed_memory(), Retention::Kept);
        let kept = churn(10, &[24, 1, 16, 4, 8, 2]);
        // 9 rounds of 55 MiB are ~126 000 pages when every round faults them in again.
        assert!(
            kept * 10 < default,
            "page faults for 9 rounds: {default} with glibc's defaults, {kept} with freed memory kept"
        );
        eprintln!("page faults: default {default}, kept {kept}");
    }

    /// Window-sized blocks beyond a thread heap (ViT-B UNETR tensors are 56–113 MB): the settings must be made
    /// before any thread has an arena, as medmae-serve does first thing, so each case runs in a fresh process: this
    /// test binary again, running this test alone on its main thread with `MEDMAE_MEMORY_CHILD` set to the case.
    #[test]
    fn blocks_beyond_a_thread_heap_are_reused_too() {
        const NAME: &str = "ops::memory::tests::blocks_beyond_a_thread_heap_are_reused_too";
        if let Ok(mode) = std::env::var("MEDMAE_MEMORY_CHILD") {
            if mode == "kept" {
                assert_eq!(keep_freed_memory(), Retention::Kept);
            }
            println!("big-block faults: {}", churn(10, &[100, 60, 20, 8]));
            return;
        }
        let faults = |mode: &str| -> u64 {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
                .env("MEDMAE_MEMORY_CHILD", mode)
                .env_remove("GLIBC_TUNABLES")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "child ({mode}) failed: {text}");
            text.lines()
                .find_map(|l| l.split("big-block faults: ").nth(1))
                .unwrap_or_else(|| panic!("child ({mode}) printed no count: {text}"))
                .trim()
                .parse()
                .unwrap()
        };
        let (default, kept) = (faults("default"), faults("kept"));
        // 9 rounds of 188 MiB are ~430 000 pages when every round maps them afresh.
        assert!(
            kept * 10 < default,
            "page faults for 9 rounds of 100/60/20/8 MiB: {default} with glibc's defaults, {kept} kept"
        );
        eprintln!("big-block page faults: default {default}, kept {kept}");
    }
}
