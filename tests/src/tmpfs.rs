//! A small tmpfs that a test really fills up: a full disk for real
//! processes. Mounting needs root; [`Tmpfs::mount`] says why it cannot
//! mount instead of failing, so that a test can print the reason and skip.
//!
//! The file system is unmounted when the guard is dropped, also when a test
//! fails (lazily, so a process still using it does not keep it mounted);
//! [`Tmpfs::keep_mounted`] leaves it for a look afterwards.
//!
//! A node whose history cannot be written answers changes with an error
//! reply that [`is_refusal`] recognises.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use distkv_node::client::ClientError;

/// What a node says when its history cannot be written.
pub const CANNOT_WRITE: &str = "the history cannot be written";

/// Whether `e` is a node's refusal of a change because its history cannot
/// be written, or too much waits to be written: an error reply, the change
/// not acknowledged.
pub fn is_refusal(e: &ClientError) -> bool {
    matches!(e, ClientError::Server(m) if m.contains(CANNOT_WRITE) || m.contains("waiting to be written"))
}

/// A mounted tmpfs, unmounted when dropped.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
    keep: bool,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it, e.g. "4m")
    /// at `dir`, creating the directory; `Err` says why the test cannot
    /// have one here (not root, or mounting failed).
    pub fn mount(dir: &Path, size: &str) -> std::result::Result<Tmpfs, String> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root: cannot mount a tmpfs".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
            keep: false,
        })
    }

    /// Where it is mounted.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Fills the file system up with a filler file: writes until ENOSPC.
    /// Returns the bytes it took.
    pub fn fill(&self) -> Result<u64> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())?;
        let chunk = vec![0u8; 64 << 10];
        let mut taken = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => bail!("the filler stopped growing without an error"),
                Ok(n) => taken += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return Ok(taken),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Frees the space again (removes the filler file).
    pub fn free(&self) -> Result<()> {
        std::fs::remove_file(self.filler())?;
        Ok(())
    }

    /// Leaves the file system mounted when the guard is dropped (printing
    /// how to unmount it), for a look at what the test left there.
    pub fn keep_mounted(&mut self) {
        self.keep = true;
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.keep {
            println!("left mounted: umount {}", self.dir.display());
            return;
        }
        let r = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
        if !matches!(r, Ok(s) if s.success()) {
            eprintln!("umount {} failed: {r:?}", self.dir.display());
        }
    }
}
