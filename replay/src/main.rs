//! `distkv-replay`: offline tools over a node's history files (see the
//! library's docs; `distkv-replay --help`).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, as in the `distkv` binary: a replayed state is millions of
/// small allocations, where glibc's allocator costs a quarter of the time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option index of the purge delay (`mi_option_purge_delay` in
/// its header; the Rust bindings have no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Lets freed memory stay with the process for a second before it goes
/// back to the system, instead of mimalloc's 10 ms: rebuilding a state
/// frees and allocates again and again, and returning pages only to fault
/// them in anew (zeroed) took a third of a restore's time.
fn slow_purge() {
    // SAFETY: sets one of mimalloc's global options, an integer; called
    // first thing in `main`, before other threads exist.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) }
}

fn main() -> ExitCode {
    slow_purge();
    distkv_replay::cli::main(distkv_replay::cli::Cli::parse())
}
