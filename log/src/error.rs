//! The segment files' one error type.
//!
//! [`LogError`] variants are named after what the caller does next: `Io`
//! (the disk or the file system failed: retry, or stop the node), `Corrupt`
//! (bytes on disk are wrong: stop and let an operator run the audit tool),
//! `Salvageable` (damage with valid blocks after it: stop, or read again
//! with [`RecoveryMode::Salvage`](crate::RecoveryMode::Salvage) to keep
//! them),
//! `Gap` (records are missing between or inside segments: the log cannot be
//! replayed across that point), `Full` (commit the pending records, then
//! append again) and `InvalidInput` (the caller asked for something the
//! format cannot hold, or used a writer after it failed). Every failure
//! caused by disk content ends up here with the file and, where one exists,
//! the byte offset; nothing in this crate panics on disk input.

use std::io;
use std::path::PathBuf;

use crate::Seq;

/// Why the event log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The operating system refused an operation on `file`.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file (or directory) concerned.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The bytes of `file` at `offset` are not a valid segment header or
    /// block (or a block's records cannot be decoded).
    #[error("{}: corrupt event log at byte {offset}: {reason}", file.display())]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Start of the damaged header (0) or block. Records inside a block
        /// have no file offset of their own: the block's offset is given.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The header or block of `file` at `offset` is damaged (cut short or
    /// failing its checksum), and valid blocks follow it, the first at
    /// `next`: this is not a torn tail, and nothing was changed. Reading
    /// (or opening the writer) in
    /// [`RecoveryMode::Salvage`](crate::RecoveryMode::Salvage) keeps every
    /// valid block after the damage.
    #[error(
        "{}: corrupt event log at byte {offset}: {reason}; valid blocks follow (the next at \
         byte {next}), so this is not a torn tail; nothing was changed",
        file.display()
    )]
    Salvageable {
        /// The segment file.
        file: PathBuf,
        /// Start of the damaged header (0) or block.
        offset: u64,
        /// Where the next valid block starts.
        next: u64,
        /// What is wrong.
        reason: String,
    },
    /// Record `expected` should come next, but `file` continues with
    /// `found` (records are missing, or a segment starts at the wrong seq).
    #[error("{}: event log gap: expected record {expected}, found {found}", file.display())]
    Gap {
        /// The segment where the unexpected record (or start) was found.
        file: PathBuf,
        /// The sequence number that should have come next.
        expected: Seq,
        /// The sequence number found instead.
        found: Seq,
    },
    /// The pending group is full: [`commit`](crate::LogWriter::commit),
    /// then append the record again. Nothing was buffered for the call.
    #[error("pending group of {pending} bytes cannot take a record of {record} bytes (limit {limit}); commit first")]
    Full {
        /// Bytes already pending.
        pending: usize,
        /// Encoded size of the refused record (with its length prefix).
        record: usize,
        /// The block size limit.
        limit: usize,
    },
    /// The caller asked for something the format cannot hold (a record out
    /// of sequence, an oversized record, an unusable node name, another
    /// node's log) or used a writer after an I/O error. Nothing was written.
    #[error("invalid event log input: {0}")]
    InvalidInput(String),
}

/// The crate's result type for segment files.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Wraps an I/O error with the file it concerns.
pub(crate) fn io_err(file: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> LogError {
    let file = file.into();
    move |source| LogError::Io { file, source }
}
