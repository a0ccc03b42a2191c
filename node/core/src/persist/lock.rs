//! The data directory's lock: one node process per directory.
//!
//! Two processes appending to one event log interleave their records, and
//! the log no longer recovers; a second process also moves the tick
//! reservation in `meta` under the first one's feet. So a node takes an
//! exclusive `flock(2)` on `DIR/lock` before it reads or writes anything else
//! in the directory, and keeps it until the writer is done. The kernel
//! releases the lock when the process ends, however it ends (`kill -9`
//! included), so a crash never leaves a stale lock behind.
//!
//! The lock file holds the pid of the node that holds it, for messages. It
//! is never removed: a process about to lock the old file while another
//! removes it and locks a new one would both think they hold the lock. A
//! pid in the file means nothing unless the lock is held exclusively.
//!
//! Readers (`distkv-replay`) take a shared lock when they can, so that no
//! node starts on the directory while they read it. When a node holds it
//! they read anyway: nothing but the node writes the files, segments are
//! only appended to, and snapshots appear by rename.
//!
//! The lock is advisory: it keeps distkv processes apart, not other
//! programs. On platforms without `flock(2)` the directory is not locked.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path as FsPath, PathBuf};

use super::recover::PersistError;

/// The lock file's name in a data directory.
pub const LOCK_FILE: &str = "lock";

/// A lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Who holds a data directory's lock, when it cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A node, with its pid if it wrote one yet.
    Node(Option<u32>),
    /// Readers such as `distkv-replay`, sharing the lock.
    Readers,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Node(Some(pid)) => write!(f, "a running node (pid {pid})"),
            Holder::Node(None) => write!(f, "a running node (pid unknown)"),
            Holder::Readers => write!(f, "a reader such as distkv-replay"),
        }
    }
}

/// What a reader may do with a data directory.
#[derive(Debug)]
pub enum ReadAccess {
    /// The shared lock is held: no node starts on the directory until it
    /// is dropped.
    Shared(DirLock),
    /// A node runs on the directory (its pid, if known): its files may be
    /// read, and the newest segment grows meanwhile.
    NodeRunning(Option<u32>),
    /// The directory has no lock file (no node ever ran on it, or it is a
    /// copy): nothing to share.
    Unlocked,
}

impl DirLock {
    /// Locks `dir` (which must exist) for a node: exclusively, without
    /// waiting. Fails with [`PersistError::Locked`] naming the holder when
    /// another process has it.
    pub fn exclusive(dir: &FsPath) -> Result<DirLock, PersistError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| PersistError::Io {
            file: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if !try_lock(&file, Mode::Exclusive).map_err(io)? {
            // Shared holders let us share: then they are readers.
            let holder = if try_lock(&file, Mode::Shared).map_err(io)? {
                Holder::Readers
            } else {
                Holder::Node(read_pid(&mut file))
            };
            return Err(PersistError::Locked {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        file.set_len(0).map_err(io)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io)?;
        Ok(DirLock { _file: file })
    }

    /// Locks `dir` for reading: shared, without waiting, and without
    /// creating anything.
    pub fn shared(dir: &FsPath) -> io::Result<ReadAccess> {
        let mut file = match File::open(dir.join(LOCK_FILE)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadAccess::Unlocked),
            Err(e) => return Err(e),
        };
        Ok(if try_lock(&file, Mode::Shared)? {
            ReadAccess::Shared(DirLock { _file: file })
        } else {
            ReadAccess::NodeRunning(read_pid(&mut file))
        })
    }
}

/// The data directory `path` is or lies in: `path` itself, or the
/// directory two levels up at most (`DIR/log`, `DIR/log/SEGMENT`,
/// `DIR/snap/SNAPSHOT`), recognised by its `meta` file.
pub fn data_dir_of(path: &FsPath) -> Option<PathBuf> {
    let dir = if path.is_dir() { path } else { path.parent()? };
    dir.ancestors()
        .take(2)
        .map(|d| {
            if d.as_os_str().is_empty() {
                FsPath::new(".")
            } else {
                d
            }
        })
        .find(|d| super::meta::Meta::file(d).is_file())
        .map(FsPath::to_path_buf)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[derive(Clone, Copy)]
enum Mode {
    Shared,
    Exclusive,
}

/// Takes the lock on `file` if nobody holds it in a conflicting mode.
#[cfg(unix)]
fn try_lock(file: &File, mode: Mode) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = match mode {
        Mode::Shared => libc::LOCK_SH,
        Mode::Exclusive => libc::LOCK_EX,
    };
    loop {
        // SAFETY: flock(2) takes a file descriptor we own (open for the
        // duration of the call) and an integer.
        if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(false),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// Without `flock(2)` every lock is granted (see the module documentation).
#[cfg(not(unix))]
fn try_lock(_file: &File, _mode: Mode) -> io::Result<bool> {
    Ok(true)
}

/// Runs `f` again while another process holds the lock, for a few seconds
/// at most: for tests, which drop a lock and take it again at once. A lock
/// one test drops can stay held for an instant: a test thread that starts
/// a process at that moment holds copies of every descriptor until the new
/// program is executed.
#[doc(hidden)]
pub fn once_unlocked<T>(mut f: impl FnMut() -> Result<T, PersistError>) -> Result<T, PersistError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f() {
            Err(PersistError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("distkv-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn holder(r: Result<DirLock, PersistError>) -> Option<Holder> {
        match r {
            Err(PersistError::Locked { holder, .. }) => Some(holder),
            Err(e) => panic!("{e}"),
            Ok(_) => None,
        }
    }

    #[test]
    fn a_second_exclusive_lock_is_refused_naming_the_holder() -> Result<(), PersistError> {
        let d = tempdir("excl");
        let first = DirLock::exclusive(&d)?;
        let me = std::process::id();
        assert_eq!(holder(DirLock::exclusive(&d)), Some(Holder::Node(Some(me))));
        assert!(matches!(
            DirLock::shared(&d),
            Ok(ReadAccess::NodeRunning(Some(pid))) if pid == me
        ));
        drop(first);
        once_unlocked(|| DirLock::exclusive(&d))?;
        std::fs::remove_dir_all(&d).ok();
        Ok(())
    }

    #[test]
    fn readers_share_and_keep_nodes_out() -> Result<(), Box<dyn std::error::Error>> {
        let d = tempdir("shared");
        assert!(matches!(DirLock::shared(&d), Ok(ReadAccess::Unlocked)));
        assert!(
            !d.join(LOCK_FILE).exists(),
            "a reader creates nothing in the directory"
        );
        std::fs::write(d.join(LOCK_FILE), b"")?;
        let (Ok(ReadAccess::Shared(a)), Ok(ReadAccess::Shared(b))) =
            (DirLock::shared(&d), DirLock::shared(&d))
        else {
            panic!("readers do not share");
        };
        assert_eq!(holder(DirLock::exclusive(&d)), Some(Holder::Readers));
        drop((a, b));
        once_unlocked(|| DirLock::exclusive(&d))?;
        std::fs::remove_dir_all(&d).ok();
        Ok(())
    }

    #[test]
    fn the_data_directory_of_its_files_is_found() {
        let d = tempdir("of");
        std::fs::create_dir_all(d.join("log")).unwrap();
        std::fs::write(d.join("meta"), b"").unwrap();
        std::fs::write(d.join("log/1.dkvlog"), b"").unwrap();
        for p in [d.clone(), d.join("log"), d.join("log/1.dkvlog")] {
            assert_eq!(data_dir_of(&p), Some(d.clone()), "{}", p.display());
        }
        assert_eq!(
            data_dir_of(&std::env::temp_dir().join("nothing-here")),
            None
        );
        std::fs::remove_dir_all(&d).ok();
    }
}
