//! `distkv-replay`: offline tools over a node's history files.
//!
//! The durable-history issue adds the segment files and snapshots this tool
//! reads (`dump`, `audit`, `restore`, `diff`, `history`). Until then it does
//! nothing and says so, with the "usage" exit status.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "distkv-replay: no history files exist yet; the event-log segments and \
         snapshots it reads are not implemented in this version"
    );
    ExitCode::from(2)
}
