//! The allocator of distkv's programs: mimalloc, and the two options that
//! suit a program holding a large state of small allocations (a node, a
//! replay, the benchmarks that measure them).
//!
//! Each program names [`MiMalloc`] its global allocator (the benchmarks
//! wrap it to count bytes) and calls [`tune`] first thing in `main`.

pub use mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in `mi_option_e` of
/// mimalloc 3.x, whose `mi_version()` is 3xxxx (the bindings name no
/// constant for it).
const MI_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// That option's default in mimalloc 3.x, ms.
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 1000;
/// mimalloc's `mi_option_allow_thp`, the same way (default 1 on Linux).
const MI_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Whether the linked allocator is the mimalloc 3.x whose option numbers
/// are written above.
fn is_mimalloc_3() -> bool {
    // SAFETY: reads a constant of the allocator.
    (30_000..40_000).contains(&unsafe { libmimalloc_sys::mi_version() })
}

/// Tunes mimalloc for millions of small allocations held for a long time
/// (docs/perf.md, "Memory" and "Transparent huge pages off in every
/// program"):
///
/// * freed memory goes back to the system at once, not after mimalloc's
///   default delay of 1 s. A node's load leaves freed memory behind (the
///   tables it outgrew, the records its event log dropped, buffers):
///   purged at once, the node holds 12 – 35 MB less at 1 M keys at the same
///   set rate; a restore of 1 M events peaks 20 MB lower at the same speed;
/// * no transparent huge pages. mimalloc asks the kernel for them on its
///   arenas (`MADV_HUGEPAGE`); a 2 MiB page is resident as a whole as soon
///   as one byte of it is touched, and a purge of a part of it splits it
///   only later, if ever. At 1 M keys a node held 50 – 105 MB more with
///   them, and the kernel's zeroing of whole huge pages, again after each
///   purge, took up to half of a restore's or a merge's time (and no
///   user time was saved).
///
/// The environment still decides (`MIMALLOC_PURGE_DELAY`,
/// `MIMALLOC_ALLOW_THP`), and an option that does not hold its documented
/// default (another mimalloc) is left alone.
pub fn tune() {
    tune_with(Purge::AtOnce);
}

/// How soon freed memory goes back to the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// At once: for a program that runs on (a node), which then holds
    /// no more than it uses.
    AtOnce,
    /// After 10 ms: for a program that frees in bursts and allocates again
    /// right after, and ends (`distkv-replay`: a replay frees the events it
    /// applied a batch at a time while the next are decoded). Purged at
    /// once, the same pages are faulted in again, each purge with a TLB
    /// flush on the other cores: 0.02 s of a 0.52 s `restore` of 1 M
    /// events, for 6 MB more at its peak (docs/perf.md, "A restore checks
    /// its snapshot as it writes it").
    Soon,
}

/// [`tune`], freed memory going back to the system as `purge` says.
pub fn tune_with(purge: Purge) {
    if !is_mimalloc_3() {
        return;
    }
    // SAFETY: reading and setting an integer option of the allocator is
    // allowed at any time, from any thread.
    unsafe {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
            && libmimalloc_sys::mi_option_get(MI_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT
        {
            let delay_ms = match purge {
                Purge::AtOnce => 0,
                Purge::Soon => 10,
            };
            libmimalloc_sys::mi_option_set(MI_PURGE_DELAY, delay_ms);
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none()
            && libmimalloc_sys::mi_option_get(MI_ALLOW_THP) == 1
        {
            // Arenas mapped from now on are not advised huge.
            libmimalloc_sys::mi_option_set(MI_ALLOW_THP, 0);
            // The arena mapped before `main` was: what mimalloc does at
            // its start when the option is 0 (the kernel then faults
            // 4 KiB pages in every mapping of the process; inherited by
            // children, which these programs do not start).
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuned_it_purges_at_once_and_uses_no_huge_pages() {
        assert!(
            is_mimalloc_3(),
            "another allocator: the options below are mimalloc 3's"
        );
        tune();
        // SAFETY: reads integer options.
        let (delay, thp) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_ALLOW_THP),
            )
        };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay, 0, "the purge delay option was not found");
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            assert_eq!(thp, 0, "the huge page option was not found");
            #[cfg(target_os = "linux")]
            {
                // SAFETY: reads the calling process's flag.
                let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
                assert_eq!(disabled, 1, "transparent huge pages still allowed");
            }
        }
    }
}
