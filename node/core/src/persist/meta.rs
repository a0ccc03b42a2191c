//! The data directory's small durable metadata: whose directory it is and
//! how far this node may count its ticks.
//!
//! **Tick reservation.** A node must never reuse a tick, even after a crash
//! that lost the last second of its log (`fsync = interval`): peers may
//! already hold changes with those ticks. So before its tick passes
//! `reserved_tick`, the node durably raises the reservation by a block
//! ([`TICK_BLOCK`]); after a crash it resumes above the reservation. A
//! running node keeps [`RESERVE_AHEAD`] ticks or more reserved, storing the
//! next reservation beside its changes, not in their way.
//!
//! The file (`meta`) is a msgpack map, replaced atomically: written to
//! `meta.tmp`, fsynced, renamed over `meta`, directory fsynced. A rename is
//! atomic, so the file is always either the old or the new version. (sled
//! would give the same guarantee for these two numbers at the cost of a
//! large dependency.)

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};

use distkv_model::{codec, Value};

/// Ticks reserved at a time.
pub const TICK_BLOCK: u64 = 100_000;

/// Ticks left in the reservation below which a running node stores the
/// next one ahead of time (at the start, twice this many are reserved): at
/// 400 000 changes/s, 2.5 s for a slow disk to store it. A crash skips the
/// ticks reserved and not used, up to about twice this many (one
/// range in the bookkeeping).
pub const RESERVE_AHEAD: u64 = 10 * TICK_BLOCK;

const FORMAT: &str = "distkv-meta";
const VERSION: u64 = 1;

/// A metadata problem.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The file could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not ours or is damaged.
    #[error("{file}: {reason}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory belongs to another node.
    #[error("data directory {dir} belongs to node {owner:?}, not {me:?}")]
    WrongNode {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        owner: String,
        /// Who asked.
        me: String,
    },
}

/// The metadata of one data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The node that owns the directory.
    pub node: String,
    /// Ticks up to this one may be used without touching the file again.
    pub reserved_tick: u64,
}

fn io(file: &FsPath) -> impl FnOnce(std::io::Error) -> MetaError + '_ {
    move |source| MetaError::Io {
        file: file.to_path_buf(),
        source,
    }
}

impl Meta {
    /// The metadata file of `dir`.
    pub fn file(dir: &FsPath) -> PathBuf {
        dir.join("meta")
    }

    /// Reads `dir`'s metadata, or `None` for a directory without any.
    pub fn load(dir: &FsPath) -> Result<Option<Meta>, MetaError> {
        let file = Meta::file(dir);
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&file)(e)),
        };
        let invalid = |reason: &str| MetaError::Invalid {
            file: file.clone(),
            reason: reason.to_string(),
        };
        let v = codec::decode(&bytes).map_err(|_| invalid("not a distkv metadata file"))?;
        if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(invalid("not a distkv metadata file"));
        }
        if v.get("version").and_then(Value::as_u64) != Some(VERSION) {
            return Err(invalid("unsupported metadata version"));
        }
        Ok(Some(Meta {
            node: v
                .get("node")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("no node name"))?
                .to_string(),
            reserved_tick: v
                .get("reserved_tick")
                .and_then(Value::as_u64)
                .ok_or_else(|| invalid("no tick reservation"))?,
        }))
    }

    /// Reads `dir`'s metadata and checks that it belongs to `node`; a new
    /// directory gets fresh metadata for `node`.
    pub fn open(dir: &FsPath, node: &str) -> Result<Meta, MetaError> {
        match Meta::load(dir)? {
            Some(m) if m.node != node => Err(MetaError::WrongNode {
                dir: dir.to_path_buf(),
                owner: m.node,
                me: node.to_string(),
            }),
            Some(m) => Ok(m),
            None => {
                let m = Meta {
                    node: node.to_string(),
                    reserved_tick: 0,
                };
                m.store(dir)?;
                Ok(m)
            }
        }
    }

    /// Writes the metadata durably (temp file, fsync, rename, fsync dir).
    pub fn store(&self, dir: &FsPath) -> Result<(), MetaError> {
        let file = Meta::file(dir);
        let tmp = dir.join("meta.tmp");
        let v = Value::map([
            ("format", Value::str(FORMAT)),
            ("version", Value::uint(VERSION)),
            ("node", Value::str(&self.node)),
            ("reserved_tick", Value::uint(self.reserved_tick)),
        ]);
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&codec::to_vec(&v)).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        fs::rename(&tmp, &file).map_err(io(&file))?;
        sync_dir(dir).map_err(io(dir))
    }

    /// Raises the reservation so that `tick` is covered with a block to
    /// spare, and stores it.
    pub fn reserve(&mut self, dir: &FsPath, tick: u64) -> Result<u64, MetaError> {
        if tick > self.reserved_tick {
            self.reserved_tick = tick.saturating_add(TICK_BLOCK);
            self.store(dir)?;
        }
        Ok(self.reserved_tick)
    }
}

/// fsyncs a directory, so that renames and new files in it are durable.
pub fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("distkv-meta-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn new_directory_gets_metadata_and_keeps_its_owner() -> Result<(), MetaError> {
        let d = tempdir("owner");
        let m = Meta::open(&d, "n1")?;
        assert_eq!(m.reserved_tick, 0);
        assert_eq!(Meta::open(&d, "n1")?, m);
        assert!(matches!(
            Meta::open(&d, "n2"),
            Err(MetaError::WrongNode { .. })
        ));
        fs::remove_dir_all(&d).ok();
        Ok(())
    }

    #[test]
    fn reservation_survives_reopening_and_only_grows() -> Result<(), MetaError> {
        let d = tempdir("reserve");
        let mut m = Meta::open(&d, "n1")?;
        assert_eq!(m.reserve(&d, 1)?, 1 + TICK_BLOCK);
        assert_eq!(m.reserve(&d, 5)?, 1 + TICK_BLOCK, "covered: unchanged");
        assert_eq!(Meta::open(&d, "n1")?.reserved_tick, 1 + TICK_BLOCK);
        fs::remove_dir_all(&d).ok();
        Ok(())
    }

    #[test]
    fn damaged_metadata_is_an_error_not_a_panic() {
        let d = tempdir("bad");
        fs::write(Meta::file(&d), b"\xc1garbage").unwrap();
        assert!(matches!(Meta::load(&d), Err(MetaError::Invalid { .. })));
        fs::write(
            Meta::file(&d),
            codec::to_vec(&Value::map([("format", Value::str("x"))])),
        )
        .unwrap();
        assert!(matches!(Meta::load(&d), Err(MetaError::Invalid { .. })));
        fs::remove_dir_all(&d).ok();
    }
}
