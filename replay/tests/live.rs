//! `distkv-replay` and a data directory a node runs on: the files are read
//! with a note saying so, and while the tool reads, no node starts on it.

use std::process::Command;

use anyhow::{ensure, Result};
use distkv_log::LogLimits;
use distkv_node::persist::durable::{recover, DurableConfig, PersistError};
use distkv_node::persist::lock::{DirLock, Holder};
use distkv_replay::cli::lock_inputs;

#[test]
fn the_files_of_a_running_node_are_read_with_a_note() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("n1");
    // This process is the node: recovery holds the directory's lock.
    let node = recover("n1", DurableConfig::new(&dir), LogLimits::default(), 1)?;
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
    Ok(())
}

#[test]
fn no_node_starts_on_a_directory_being_read() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("n1");
    drop(recover(
        "n1",
        DurableConfig::new(&dir),
        LogLimits::default(),
        1,
    )?);
    let segment = dir.join("log");
    let locks = lock_inputs(&[dir.clone(), segment]);
    ensure!(locks.len() == 1, "one lock per directory: {locks:?}");
    match recover("n1", DurableConfig::new(&dir), LogLimits::default(), 1) {
        Err(PersistError::Locked {
            holder: Holder::Readers,
            ..
        }) => {}
        other => anyhow::bail!("a node started under a reader: {:?}", other.err()),
    }
    drop(locks);
    ensure!(DirLock::exclusive(&dir).is_ok(), "the reader is done");
    Ok(())
}
