//! Files written on a client's request: `save` and `log`.
//!
//! * `save` writes a snapshot: our snapshot format, or — when the name ends
//!   in `.dkv`, DistKV's own extension — DistKV's plain msgpack save format,
//!   which Python's `distkv dump file` reads.
//! * `log` starts a continuous change log in DistKV's format: a state
//!   record, with `fetch` the full state, then one change record per event,
//!   flushed at least every second or 100 records. Starting a log stops the
//!   previous ones once the new file holds its initial content, so
//!   consecutive files overlap and never gap. `log` without a path stops
//!   every log (and replies `true`; DistKV answered with an error).
//!
//! # Where, and who may
//!
//! Every such file lives in the node's *export directory*:
//! `server.export.dir`, by default `export/` in the data directory; a node
//! without a data directory refuses both actions until one is configured.
//! [`target`] is the one way from a request to a file:
//!
//! * [`may_write_files`] decides whether the connection may ask at all;
//! * the name is a file relative to the export directory (`n1.dkv`,
//!   `2024-05-01/0.dkv`; missing subdirectories are created); `..` is
//!   refused everywhere ([`resolve`]);
//! * an absolute name is accepted when it lies inside the export directory,
//!   anywhere else only with `server.export.absolute: true` (DistKV wrote
//!   wherever it was told; its rotation scripts pass absolute names);
//! * an existing file is never replaced unless the request says
//!   `overwrite: true`.
//!
//! A saved file appears complete or not at all: it is written to a hidden
//! temporary file beside its name, fsynced, then hard-linked to its name
//! (which fails if that exists) or, with `overwrite`, renamed over it. A
//! log file is created exclusively (with `overwrite`, an old file is
//! unlinked first). Neither follows a symbolic link at the final name.
//!
//! These are exports; the node's own durable history is its data directory.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distkv_model::Value;
use tokio_util::sync::CancellationToken;

use super::handlers::View;
use super::reply::{CmdError, CmdResult};
use super::{now_ms, Server};
use crate::pyfiles::PyWriter;
use crate::state::{State, WalkCursor, WalkOpts};

/// Whether this connection may make the node write, or stop writing,
/// files: the one place the rights for `save` and `log` are decided.
///
/// A connection confined below the root (`root`) may not: the files hold
/// the whole tree. Once clients authenticate (not implemented yet), this is
/// where the root user is required as well.
pub(super) fn may_write_files(view: &View, action: &str) -> CmdResult<()> {
    if view.chrooted() {
        return Err(CmdError::Client(format!(
            "{action}: not allowed on a connection confined by 'root'"
        )));
    }
    Ok(())
}

/// A checked file for `save` or `log`.
#[derive(Debug)]
pub(super) struct Target {
    /// The name the client gave, for messages.
    name: String,
    /// The file.
    file: PathBuf,
    /// Replace an existing file.
    overwrite: bool,
}

/// The file that `action`'s request `msg` names (`path`, `overwrite`),
/// once the connection's rights and the name are checked.
pub(super) fn target(server: &Server, view: &View, action: &str, msg: &Value) -> CmdResult<Target> {
    may_write_files(view, action)?;
    let name = match msg.get("path").and_then(Value::as_str) {
        Some(p) => p,
        None => {
            return Err(CmdError::Invalid(format!(
                "{action}: field 'path' must be a file name"
            )))
        }
    };
    let dir = export_dir(server, action)?;
    let file = resolve(&dir, name, server.options().export.absolute)
        .map_err(|why| CmdError::Invalid(format!("{action}: {why}: {name:?}")))?;
    Ok(Target {
        name: name.to_string(),
        file,
        overwrite: msg.get("overwrite").is_some_and(Value::truthy),
    })
}

/// The export directory, as an absolute path.
fn export_dir(server: &Server, action: &str) -> CmdResult<PathBuf> {
    let dir = match (&server.options().export.dir, server.durability()) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.dir().join("export"),
        (None, None) => {
            return Err(CmdError::Server(format!(
                "{action}: this node has no data directory; set server.export.dir to allow server-side files"
            )))
        }
    };
    std::path::absolute(&dir).map_err(|e| {
        CmdError::Server(format!(
            "{action}: the export directory {} is unusable: {e}",
            dir.display()
        ))
    })
}

/// The file that the client's `name` means in the export directory `dir`
/// (absolute), or why it is refused. Looks at the name only, never at the
/// disk.
pub(super) fn resolve(
    dir: &FsPath,
    name: &str,
    absolute_ok: bool,
) -> Result<PathBuf, &'static str> {
    if name.is_empty() || name.ends_with('/') || name.contains('\0') {
        return Err("path must name a file in the export directory");
    }
    let path = FsPath::new(name);
    let (base, rel) = if path.has_root() {
        match path.strip_prefix(dir) {
            Ok(rel) => (dir, rel),
            Err(_) if absolute_ok => (FsPath::new(""), path),
            Err(_) => {
                return Err("path must be relative to the export directory (an absolute path elsewhere needs server.export.absolute: true)")
            }
        }
    } else {
        (dir, path)
    };
    let mut file = base.to_path_buf();
    let mut named = false;
    for c in rel.components() {
        match c {
            Component::Normal(part) => {
                file.push(part);
                named = true;
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => file.push(c),
            Component::ParentDir => {
                return Err("path must stay inside the export directory (.. is not allowed)")
            }
        }
    }
    if !named {
        return Err("path must name a file in the export directory");
    }
    Ok(file)
}

/// The error for an existing file that the request did not ask to replace.
fn exists(action: &str, target: &Target) -> CmdError {
    CmdError::Client(format!(
        "{action}: {:?} exists; choose another name, or send overwrite: true to replace it (distkv client log save/dest --overwrite)",
        target.name
    ))
}

fn io_error(action: &str, target: &Target, e: impl std::fmt::Display) -> CmdError {
    CmdError::Server(format!("{action}: cannot write {:?}: {e}", target.name))
}

/// Creates the directory that will hold `file`; returns it.
fn make_parent(file: &FsPath) -> std::io::Result<&FsPath> {
    let dir = file.parent().unwrap_or(FsPath::new("."));
    std::fs::create_dir_all(dir)?;
    Ok(dir)
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a snapshot of `server`'s state to `target` (blocking: run it on
/// a blocking thread). `full` includes the meta tree.
pub(super) fn save(server: &Server, target: &Target, full: bool) -> CmdResult<()> {
    let file = &target.file;
    let dir = make_parent(file).map_err(|e| io_error("save", target, e))?;
    if !target.overwrite && file.symlink_metadata().is_ok() {
        // Checked again when the file is put in place; this spares the work.
        return Err(exists("save", target));
    }
    let tmp = temp_name(file);
    let res = write_snapshot(server, file, &tmp, full)
        .and_then(|()| put_in_place(&tmp, file, target.overwrite))
        .and_then(|()| sync_dir(dir));
    match res {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(match e.kind() {
                ErrorKind::AlreadyExists => exists("save", target),
                _ => io_error("save", target, e),
            })
        }
    }
}

/// A fresh hidden name beside `file` for its temporary twin.
fn temp_name(file: &FsPath) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = file.file_name().unwrap_or_default().to_string_lossy();
    file.with_file_name(format!(".{base}.{}-{n}.partial", std::process::id()))
}

/// Writes the state to `tmp`, in the format that `file`'s name asks for.
fn write_snapshot(server: &Server, file: &FsPath, tmp: &FsPath, full: bool) -> std::io::Result<()> {
    if is_distkv_py(file) {
        let bytes = py_save(&server.state(), full);
        let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
        f.write_all(&bytes)?;
        return f.sync_all();
    }
    let pending = {
        let st = server.state();
        let seq = st.log().next_seq() - 1;
        crate::persist::snap::write(&st, tmp, full, now_ms(), seq)
    };
    pending
        .and_then(|p| p.finish())
        .map(drop)
        .map_err(std::io::Error::other)
}

/// Gives the complete file `tmp` its name `file`: replacing what is there
/// only with `overwrite`.
fn put_in_place(tmp: &FsPath, file: &FsPath, overwrite: bool) -> std::io::Result<()> {
    if overwrite {
        return std::fs::rename(tmp, file);
    }
    match std::fs::hard_link(tmp, file) {
        Ok(()) => std::fs::remove_file(tmp),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
        // A file system without hard links: look, then rename (a request
        // racing for the same name may be replaced).
        Err(_) if file.symlink_metadata().is_ok() => Err(ErrorKind::AlreadyExists.into()),
        Err(_) => std::fs::rename(tmp, file),
    }
}

/// Creates the file for a new log: exclusively, or replacing an old one.
fn create_log_file(target: &Target) -> std::io::Result<File> {
    let dir = make_parent(&target.file)?;
    if target.overwrite {
        match std::fs::remove_file(&target.file) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&target.file)?;
    sync_dir(dir)?;
    Ok(f)
}

/// Whether `path` names a DistKV-format file.
fn is_distkv_py(path: &FsPath) -> bool {
    path.extension().is_some_and(|e| e == "dkv")
}

/// The state in DistKV's save format: a state record, then every entry with
/// a value (`full`: the meta tree too).
fn py_save(st: &State, full: bool) -> Vec<u8> {
    let mut w = PyWriter::new();
    let mut out = Vec::new();
    w.state(st, &mut out);
    let mut cursor = WalkCursor::default();
    let opts = WalkOpts {
        meta: full,
        ..WalkOpts::default()
    };
    while !cursor.is_done() {
        cursor.step(st.root(), &opts, usize::MAX, |e, p| w.entry(e, p, &mut out));
    }
    out
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

/// Starts a change log in `target`; returns once its initial content is
/// on disk, then keeps writing in the background.
pub(super) async fn start_log(server: Arc<Server>, target: Target, fetch: bool) -> CmdResult<()> {
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
                cursor.step(st.root(), &opts, usize::MAX, |e, p| w.entry(e, p, &mut out));
            }
        }
        (out, st.log().next_seq(), w)
    };
    let (target, created) = tokio::task::spawn_blocking(move || {
        let created = create_log_file(&target).and_then(|mut f| {
            match f.write_all(&initial).and_then(|()| f.sync_all()) {
                Ok(()) => Ok(f),
                Err(e) => {
                    // The file is ours (created exclusively): no half log.
                    let _ = std::fs::remove_file(&target.file);
                    Err(e)
                }
            }
        });
        (target, created)
    })
    .await
    .map_err(|e| CmdError::Server(format!("log: the task failed: {e}")))?;
    let mut file = match created {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(exists("log", &target)),
        Err(e) => return Err(io_error("log", &target, e)),
    };
    let path = target.file;
    tracing::info!(file = %path.display(), "change log started");
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
                            writer.change(&ev.event(), &mut buf);
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

/// Stops every running `log` and waits until their files are complete.
pub(crate) async fn stop_logs(server: &Server) {
    let logs: Vec<LogExport> = server.logs.lock().drain(..).collect();
    for l in logs {
        l.finish().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ExportSettings;
    use crate::server::ServerOptions;

    const DIR: &str = "/srv/export";

    #[test]
    fn names_resolve_inside_the_export_directory() {
        let d = FsPath::new(DIR);
        for (name, absolute_ok, want) in [
            ("a.dkv", false, "/srv/export/a.dkv"),
            ("./2024-05-01/0.dkv", false, "/srv/export/2024-05-01/0.dkv"),
            ("/srv/export/x/y.dkvsnap", false, "/srv/export/x/y.dkvsnap"),
            ("/var/backups/a.dkv", true, "/var/backups/a.dkv"),
        ] {
            assert_eq!(
                resolve(d, name, absolute_ok),
                Ok(PathBuf::from(want)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn names_that_leave_the_export_directory_or_name_no_file_are_refused() {
        let d = FsPath::new(DIR);
        for (name, absolute_ok) in [
            ("../a.dkv", false),
            ("a/../../b.dkv", false),
            ("a/..", false),
            ("/etc/passwd", false),
            ("/srv/export/../x", false),
            ("/srv/exported/a", false),
            ("/tmp/../etc/x", true),
            ("", false),
            (".", false),
            ("a/", false),
            ("/", true),
            ("a\0b", false),
        ] {
            assert!(
                resolve(d, name, absolute_ok).is_err(),
                "{name:?} (absolute allowed: {absolute_ok})"
            );
        }
    }

    fn node(dir: &FsPath) -> Arc<Server> {
        let opts = ServerOptions {
            export: ExportSettings {
                dir: Some(dir.to_path_buf()),
                absolute: false,
            },
            ..ServerOptions::default()
        };
        let s = Server::new("n1", opts);
        s.make_ready();
        s
    }

    fn request(path: &str, overwrite: bool) -> Value {
        Value::map([
            ("path", Value::str(path)),
            ("overwrite", Value::Bool(overwrite)),
        ])
    }

    fn save_as(s: &Server, path: &str, overwrite: bool) -> CmdResult<()> {
        let t = target(s, &View::default(), "save", &request(path, overwrite))?;
        save(s, &t, false)
    }

    fn entries(dir: &FsPath) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("readable test dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn save_replaces_a_file_only_when_asked_and_leaves_no_temporary_file(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let s = node(tmp.path());
        std::fs::write(tmp.path().join("x.dkv"), b"keep")?;
        let e = save_as(&s, "x.dkv", false).expect_err("an existing file");
        assert!(e.to_string().contains("exists"), "{e}");
        assert_eq!(std::fs::read(tmp.path().join("x.dkv"))?, b"keep");

        save_as(&s, "x.dkv", true)?;
        save_as(&s, "y.dkvsnap", false)?;
        assert!(save_as(&s, "y.dkvsnap", false).is_err());
        let x = std::fs::read(tmp.path().join("x.dkv"))?;
        assert!((0x80..=0x8f).contains(&x[0]), "a msgpack map");
        assert_eq!(entries(tmp.path()), ["x.dkv", "y.dkvsnap"]);
        Ok(())
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_symbolic_link_at_the_name_is_never_followed(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let (exports, outside) = (tmp.path().join("export"), tmp.path().join("victim"));
        std::fs::create_dir(&exports)?;
        std::fs::write(&outside, b"precious")?;
        std::os::unix::fs::symlink(&outside, exports.join("link.dkv"))?;
        let s = node(&exports);

        assert!(save_as(&s, "link.dkv", false).is_err());
        let log = |overwrite| target(&s, &View::default(), "log", &request("link.dkv", overwrite));
        let e = start_log(s.clone(), log(false)?, true)
            .await
            .expect_err("the name exists");
        assert!(e.to_string().contains("exists"), "{e}");
        assert_eq!(std::fs::read(&outside)?, b"precious");

        // Replacing replaces the link itself.
        start_log(s.clone(), log(true)?, true).await?;
        stop_logs(&s).await;
        save_as(&s, "link.dkv", true)?;
        assert_eq!(std::fs::read(&outside)?, b"precious");
        assert!(exports.join("link.dkv").symlink_metadata()?.is_file());
        Ok(())
    }
}
