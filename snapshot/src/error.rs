//! The crate's one error type.
//!
//! [`SnapshotError`] variants are named after what the caller does next:
//! `Io` (the disk or the file system failed: retry or give up), `Corrupt`
//! (the bytes are wrong: discard the snapshot and fall back to an older one
//! or the log), `Truncated` (the file ends early: the writer never
//! finished), `InvalidInput` (the caller handed the writer something the
//! format cannot hold). Reading disk input never panics; every failure ends
//! up here with the file and, where one exists, the byte offset.

use std::io;
use std::path::PathBuf;

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The operating system refused an operation on `file`.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file (or directory) concerned.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The bytes of `file` are not a valid snapshot.
    #[error("{}: corrupt snapshot at byte {offset}: {reason}", file.display())]
    Corrupt {
        /// The snapshot file.
        file: PathBuf,
        /// Start of the damaged header or block (items inside a block have
        /// no file offset of their own: the block's offset is given).
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// `file` ends before the snapshot does (no `End` item, or a header or
    /// block cut short): its writer never finished.
    #[error("{}: snapshot is truncated (the header or block at byte {offset} is incomplete or missing)", file.display())]
    Truncated {
        /// The snapshot file.
        file: PathBuf,
        /// Where the incomplete or missing header or block starts.
        offset: u64,
    },
    /// The caller asked for something the format cannot hold (an oversized
    /// item, nodes after entries, a counter above `MAX_COUNTER`, …) or used
    /// a writer after it failed. Nothing was written for the call.
    #[error("invalid snapshot input: {0}")]
    InvalidInput(String),
}

/// The crate's result type.
pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;
