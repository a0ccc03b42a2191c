//! `distkv-replay` and a data directory a node runs on: the files are read
//! with a note saying so, and while the tool reads, no node starts on it.
//!
//! One test only: a test thread that starts a process holds copies of the
//! other threads' lock descriptors until the new program runs, which would
//! blur when a lock is released.

use std::process::Command;

use anyhow::{bail, ensure, Result};
use distkv_core::persist::lock::{DirLock, Holder};
use distkv_core::persist::recover::{recover, DurableConfig, PersistError};
use distkv_log::LogLimits;
use distkv_replay::cli::lock_inputs;

#[test]
fn a_live_node_is_read_with_a_note_and_a_reader_keeps_nodes_out() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("n1");
    let open = || recover("n1", DurableConfig::new(&dir), LogLimits::default(), 1);

    // This process is the node: recovery holds the directory's lock.
    let node = open()?;
    let out = Command::new(env!("CARGO_BIN_EXE_distkv-replay"))
        .args(["--quiet", "audit"])
        .arg(&dir)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let note = format!(
        "note: {}: node is running (pid {}); reading its files read-only",
        dir.display(),
        std::process::id()
    );
    ensure!(stderr.contains(&note), "{stderr}");
    ensure!(out.status.success(), "{stderr}");
    drop(node);

    // Now the tool reads (its locks are held as `run` holds them).
    let locks = lock_inputs(&[dir.clone(), dir.join("log")]);
    ensure!(locks.len() == 1, "one lock per directory: {locks:?}");
    match open() {
        Err(PersistError::Locked {
            holder: Holder::Readers,
            ..
        }) => {}
        other => bail!("a node started under a reader: {:?}", other.err()),
    }
    drop(locks);
    ensure!(DirLock::exclusive(&dir).is_ok(), "the reader is done");
    Ok(())
}
