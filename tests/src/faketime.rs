//! Wall-clock jumps for real processes, with libfaketime (Debian's
//! `faketime` package): a process started with [`FakeClock::env`] preloads
//! the library and reads its clock offset from a file, which the test
//! rewrites to jump the process's wall clock forwards or backwards while it
//! runs.
//!
//! Only the wall clock jumps (`FAKETIME_DONT_FAKE_MONOTONIC=1`): the
//! monotonic clock, which the node measures its intervals with, keeps
//! running. The library rereads the file at every clock read
//! (`FAKETIME_NO_CACHE=1`), so a jump takes effect at once; the file is
//! replaced by a rename, so the library never reads a half-written one.
//!
//! Where the library is missing, [`library`] says so and a test skips its
//! clock jumps with the reason printed, unless `DISTKV_REQUIRE_FAKETIME` is
//! set (as CI does): then a missing library fails the test.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

/// Where distributions install the library (Debian's multiarch path
/// first); `DISTKV_FAKETIME_LIB` names another.
const CANDIDATES: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
];

/// The libfaketime library: `Ok(Err(why))` where it is not installed (a
/// test skips its clock jumps then), an error if it is missing although
/// `DISTKV_REQUIRE_FAKETIME` is set.
pub fn library() -> Result<std::result::Result<PathBuf, String>> {
    let found = match std::env::var_os("DISTKV_FAKETIME_LIB") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_file()),
    };
    match found {
        Some(p) => Ok(Ok(p)),
        None => {
            ensure!(
                std::env::var_os("DISTKV_REQUIRE_FAKETIME").is_none(),
                "libfaketime is not installed (Debian: apt-get install faketime) but \
                 DISTKV_REQUIRE_FAKETIME is set"
            );
            Ok(Err(
                "libfaketime is not installed (Debian: apt-get install faketime)".into(),
            ))
        }
    }
}

/// Removes what libfaketime left in `/dev/shm` for the process `pid`, which
/// is no more: it creates a shared-memory object and a semaphore per
/// process and removes them at a clean exit, but a process killed with
/// `SIGKILL` leaves them behind.
pub fn forget(pid: u32) {
    for name in [
        format!("/dev/shm/faketime_shm_{pid}"),
        format!("/dev/shm/sem.faketime_sem_{pid}"),
    ] {
        let _ = std::fs::remove_file(name);
    }
}

/// The wall-clock offset of the processes started with [`FakeClock::env`].
#[derive(Debug)]
pub struct FakeClock {
    lib: PathBuf,
    file: PathBuf,
    offset: i64,
}

impl FakeClock {
    /// A clock with offset 0 whose offset lives in `file` (created now).
    pub fn new(lib: &Path, file: &Path) -> Result<FakeClock> {
        let c = FakeClock {
            lib: lib.to_path_buf(),
            file: file.to_path_buf(),
            offset: 0,
        };
        c.write(0)?;
        Ok(c)
    }

    /// The environment of a process whose wall clock follows this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.lib.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }

    /// The offset now, in seconds (negative: behind the real clock).
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Jumps the clock to `secs` seconds from the real time.
    pub fn set(&mut self, secs: i64) -> Result<()> {
        self.write(secs)?;
        self.offset = secs;
        Ok(())
    }

    fn write(&self, secs: i64) -> Result<()> {
        let tmp = self.file.with_extension("new");
        std::fs::write(&tmp, format!("{secs:+}\n"))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file)
            .with_context(|| format!("renaming to {}", self.file.display()))?;
        Ok(())
    }
}
