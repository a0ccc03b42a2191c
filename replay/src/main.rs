//! `distkv-replay`: offline tools over a node's history files (see the
//! library's docs; `distkv-replay --help`).

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, tuned as in the `distkv` binary: a replayed state is millions
/// of small allocations, where glibc's allocator costs a quarter of the
/// time.
#[global_allocator]
static GLOBAL: distkv_alloc::MiMalloc = distkv_alloc::MiMalloc;

fn main() -> ExitCode {
    distkv_alloc::tune();
    distkv_replay::cli::main(distkv_replay::cli::Cli::parse())
}
