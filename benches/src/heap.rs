//! The benches' global allocator: mimalloc (as in the `distkv` binary),
//! tuned the same way by [`tune`] (each benchmark calls it first),
//! with an optional count of the live heap bytes for memory figures.
//!
//! Counting is off until [`start_counting`] is called, so the timed
//! benches pay one relaxed load of a flag that is never written per
//! allocation. Once on, every allocation adds its requested size and every
//! free subtracts it: [`live_bytes`] is what the program holds (not what
//! the allocator rounded it up to; RSS shows that). Blocks allocated before
//! counting started are subtracted when freed, so call it first thing.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

pub use distkv_alloc::tune;

/// mimalloc, counting live bytes once [`start_counting`] was called.
pub struct CountingMiMalloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Starts counting live heap bytes (from zero).
pub fn start_counting() {
    LIVE.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
}

/// Heap bytes allocated and not freed since [`start_counting`].
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn add(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(bytes as isize, Ordering::Relaxed);
    }
}

fn sub(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to mimalloc unchanged; the counters
// are only bookkeeping.
unsafe impl GlobalAlloc for CountingMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = distkv_alloc::MiMalloc.alloc(layout);
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = distkv_alloc::MiMalloc.alloc_zeroed(layout);
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        distkv_alloc::MiMalloc.dealloc(ptr, layout);
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = distkv_alloc::MiMalloc.realloc(ptr, layout, new_size);
        if !p.is_null() {
            sub(layout.size());
            add(new_size);
        }
        p
    }
}

/// The value of a line of the kernel's `/proc/self/status`, e.g.
/// `VmRSS:` (the resident size now) or `VmHWM:` (the peak resident size
/// since the last reset); "unknown" where there is no such file.
pub fn status_line(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The process's resident set size in bytes (Linux; `None` elsewhere).
pub fn rss_bytes() -> Option<u64> {
    let kb: u64 = status_line("VmRSS:")
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Bytes of the files under `dir`, its subdirectories included.
pub fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
