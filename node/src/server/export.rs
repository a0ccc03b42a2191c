//! Files written on a client's request: `save` and `log`.
//!
//! * `save` writes a snapshot to a server-side path: our snapshot format,
//!   or — when the name ends in `.dkv`, DistKV's own extension — DistKV's
//!   plain msgpack save format, which Python's `distkv dump file` reads.
//! * `log` starts a continuous change log in DistKV's format: a state
//!   record, with `fetch` the full state, then one change record per event,
//!   flushed at least every second or 100 records. Starting a log stops the
//!   previous ones once the new file holds its initial content, so
//!   consecutive files overlap and never gap. `log` without a path stops
//!   every log (and replies `true`; DistKV answered with an error).
//!
//! These are exports; the node's own durable history is its data directory.

use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Server;
use crate::pyfiles::PyWriter;
use crate::state::{State, WalkCursor, WalkOpts};

/// Whether `path` names a DistKV-format file.
pub fn is_distkv_py(path: &FsPath) -> bool {
    path.extension().is_some_and(|e| e == "dkv")
}

/// The state in DistKV's save format: a state record, then every entry with
/// a value (`full`: the meta tree too).
pub fn py_save(st: &State, full: bool) -> Vec<u8> {
    let mut w = PyWriter::new();
    let mut out = Vec::new();
    w.state(st, &mut out);
    let mut cursor = WalkCursor::default();
    let opts = WalkOpts {
        meta: full,
        ..WalkOpts::default()
    };
    while !cursor.is_done() {
        cursor.step(st.root(), &opts, usize::MAX, |e, _| w.entry(e, &mut out));
    }
    out
}

/// Writes `bytes` to `path` durably (temp file, fsync, rename).
pub fn write_file(path: &FsPath, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// A running `log`.
#[derive(Debug)]
pub(crate) struct LogExport {
    pub(crate) path: PathBuf,
    pub(crate) cancel: CancellationToken,
    /// Ends once the file is complete and synced.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LogExport {
    /// Stops the log and waits until its file is complete.
    async fn finish(mut self) {
        tracing::info!(file = %self.path.display(), "change log stopped");
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Records and time between flushes of a log.
const FLUSH_RECORDS: usize = 100;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Starts a change log at `path`; returns once its initial content is on
/// disk, then keeps writing in the background.
pub(crate) async fn start_log(
    server: Arc<Server>,
    path: PathBuf,
    fetch: bool,
) -> std::io::Result<()> {
    let mut changes = server.subscribe();
    let (initial, mut next, mut writer) = {
        let st = server.state();
        let mut w = PyWriter::new();
        let mut out = Vec::new();
        w.state(&st, &mut out);
        if fetch {
            let mut cursor = WalkCursor::default();
            let opts = WalkOpts {
                meta: true,
                ..WalkOpts::default()
            };
            while !cursor.is_done() {
                cursor.step(st.root(), &opts, usize::MAX, |e, _| w.entry(e, &mut out));
            }
        }
        (out, st.log().next_seq(), w)
    };
    let p = path.clone();
    let mut file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        let mut f = std::fs::File::create(&p)?;
        f.write_all(&initial)?;
        f.sync_all()?;
        Ok(f)
    })
    .await
    .map_err(std::io::Error::other)??;
    let cancel = CancellationToken::new();
    let srv = server.clone();
    let task_cancel = cancel.clone();
    let log_path = path.clone();
    let task = tokio::spawn(async move {
        let (server, cancel, path) = (srv, task_cancel, log_path);
        let mut buf = Vec::new();
        let mut pending = 0usize;
        let mut last_flush = tokio::time::Instant::now();
        loop {
            let stop = cancel.is_cancelled();
            let latest = *changes.borrow_and_update();
            let lagged = {
                let st = server.state();
                let res = match st.log().read(next, 4096) {
                    Ok(it) => {
                        for (seq, ev) in it {
                            writer.change(ev, &mut buf);
                            pending += 1;
                            next = seq + 1;
                        }
                        None
                    }
                    Err(lag) => Some(lag),
                };
                res
            };
            if let Some(lag) = lagged {
                tracing::error!(file = %path.display(), %lag, "change log fell behind the event log; stopping it");
                break;
            }
            let due = pending >= FLUSH_RECORDS || last_flush.elapsed() >= FLUSH_EVERY || stop;
            if due && !buf.is_empty() {
                let bytes = std::mem::take(&mut buf);
                let res = tokio::task::spawn_blocking(move || {
                    let r = file.write_all(&bytes).and_then(|_| file.flush());
                    (file, r)
                })
                .await;
                match res {
                    Ok((f, Ok(()))) => file = f,
                    Ok((_, Err(e))) => {
                        tracing::error!(file = %path.display(), error = %e, "change log write failed; stopping it");
                        break;
                    }
                    Err(_) => break,
                }
                pending = 0;
                last_flush = tokio::time::Instant::now();
            }
            if stop {
                let _ = tokio::task::spawn_blocking(move || file.sync_all()).await;
                break;
            }
            if next >= latest {
                tokio::select! {
                    r = changes.changed() => if r.is_err() { cancel.cancel() },
                    _ = tokio::time::sleep(FLUSH_EVERY) => {}
                    _ = cancel.cancelled() => {}
                }
            }
        }
    });
    // The new file holds its initial content: only now stop the older logs
    // (and wait for them), so consecutive files overlap and never gap.
    let older: Vec<LogExport> = {
        let mut logs = server.logs.lock();
        logs.retain(|l| !l.cancel.is_cancelled());
        let older = std::mem::take(&mut *logs);
        logs.push(LogExport {
            path,
            cancel,
            task: Some(task),
        });
        older
    };
    for l in older {
        l.finish().await;
    }
    Ok(())
}

/// Stops every running `log`.
/// Stops every running `log` and waits until their files are complete.
pub(crate) async fn stop_logs(server: &Server) {
    let logs: Vec<LogExport> = server.logs.lock().drain(..).collect();
    for l in logs {
        l.finish().await;
    }
}
