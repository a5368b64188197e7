//! A counting global allocator: tracks live and peak bytes so the harness can report (and bound) the memory each
//! input makes a parser allocate. An allocation above [`HARD_CAP`] is itself a finding: the input is written to the
//! artifact path and the process aborts with a message (an unbounded allocation must never be attempted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Largest single allocation any input may cause.
pub const HARD_CAP: usize = 1 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INPUT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static INPUT_LEN: AtomicUsize = AtomicUsize::new(0);
static ARTIFACT: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

/// The allocator; install with `#[global_allocator]`.
pub struct Counting;

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[cold]
fn oversize(size: usize) -> ! {
    eprintln!(
        "FAIL: allocation of {size} bytes (> {HARD_CAP}) at\n{}",
        std::backtrace::Backtrace::force_capture()
    );
    abort_with_input("oversize")
}

/// Save the input of the running execution to the artifact path (suffixed with `why`) and abort.
#[cold]
pub fn abort_with_input(why: &str) -> ! {
    let ptr = INPUT_PTR.load(Ordering::Relaxed);
    let len = INPUT_LEN.load(Ordering::Relaxed);
    let path = ARTIFACT.lock().ok().and_then(|p| p.clone());
    if let Some(path) = path {
        if !ptr.is_null() {
            // SAFETY: the harness publishes the input slice for exactly the duration of one execution.
            let input = unsafe { std::slice::from_raw_parts(ptr, len) };
            let path = path.with_extension(format!("{why}.bin"));
            let _ = std::fs::write(&path, input);
            eprintln!("input saved to {}", path.display());
        }
    }
    std::process::abort();
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_CAP {
            oversize(layout.size());
        }
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_CAP {
            oversize(layout.size());
        }
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > HARD_CAP {
            oversize(new_size);
        }
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

/// Where the input of an aborted execution is written (per target).
pub fn set_artifact(path: std::path::PathBuf) {
    if let Ok(mut p) = ARTIFACT.lock() {
        *p = Some(path);
    }
}

/// Publish the input of the execution about to run (for the oversize report); `None` after it.
pub fn publish(input: Option<&[u8]>) {
    let (p, n) = input.map_or((std::ptr::null_mut(), 0), |s| {
        (s.as_ptr() as *mut u8, s.len())
    });
    INPUT_LEN.store(n, Ordering::Relaxed);
    INPUT_PTR.store(p, Ordering::Relaxed);
}

/// Reset the peak to the current live bytes; returns the live bytes.
pub fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// Peak live bytes since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}
