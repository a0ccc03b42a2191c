//! `distkv-replay`: offline tools over a node's history files (see the
//! library's docs; `distkv-replay --help`).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: a replayed state is millions of small allocations, where
/// glibc's allocator costs a quarter of the time. Tuned as in the `distkv`
/// binary, but freed memory goes back to the system only after a moment:
/// a replay frees and allocates in bursts, and then ends.
#[global_allocator]
static GLOBAL: distkv_alloc::MiMalloc = distkv_alloc::MiMalloc;

fn main() -> ExitCode {
    distkv_alloc::tune_with(distkv_alloc::Purge::Soon);
    distkv_replay::cli::main(distkv_replay::cli::Cli::parse())
}
