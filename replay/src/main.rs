//! `distkv-replay`: offline tools over a node's history files (see the
//! library's docs; `distkv-replay --help`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    distkv_replay::cli::main(distkv_replay::cli::Cli::parse())
}
