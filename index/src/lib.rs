//! The history index: where each change of each path is in the event log.
//!
//! A node's event log (crate `distkv-log`) is a directory of segment files
//! read front to back; answering "every change of key K" from it alone
//! means reading all of it. This crate keeps, beside the segments, a
//! **derived** index in `<data dir>/index/`: a sled database for the small
//! records, and one file per *part* for the bulk.
//!
//! * **parts**: the event entries — key: the path in an encoding made for
//!   prefix scans ([`key`]) followed by the event's seq (8 bytes
//!   big-endian); value: the file offset of the block holding the event —
//!   are collected in memory per segment and written as *parts* of up to
//!   32 Ki events: sorted by key and cut into chunks of about 16 KiB, in
//!   a file of their own (`parts/<segment>-<generation>-<part>.part`:
//!   header, chunks, a chunk directory with each chunk's first key and
//!   CRC, a footer; module `partfile`). A part is written once and then only
//!   read; a lookup reads each part's directory and the chunks that may
//!   hold the path (one or two per part, one part per 32 Ki events).
//! * **in sled** (one tree, records told apart by their first byte), the
//!   small records: **part file records** (key: `F`, segment, generation,
//!   part; value: the file's length and its directory's CRC); **seek
//!   chunks** (key: `B`, the first seq of the chunk's first block,
//!   segment, generation, part, chunk number; value: up to 128 blocks,
//!   each its first seq, offset, highest tock and latest time): the seek
//!   table for starting a read at a given seq; **segment states** (key:
//!   `S`, the segment's first seq; a [`SegState`]): its generation, header
//!   time, how far it is indexed (the end of the last indexed block, that
//!   block's offset and CRC, the next seq), how many events are indexed
//!   and how many parts are written; and, in a tree of its own, `meta`:
//!   the format and the node whose log this indexes.
//!
//! **Why the split.** The parts are nearly all of the index's bytes, and
//! sled 0.34 spends memory on every write far beyond its cache setting
//! (its I/O buffers serialize whole tree nodes): with the parts in sled
//! the index took ≈ 110 – 140 MB of a node's resident memory at 1 M
//! events, with them in files ≈ 55 – 60 MB; on disk ≈ 40 MB instead of
//! ≈ 96 MB (debug build; docs/perf.md, "Memory" and "History index").
//! sled stays the index's database: written once and never changed, the
//! parts need nothing of a database but a file, while the records that
//! change (segment states) or must be found by range (seek chunks), and
//! the atomic batch that ties a part to its segment's state, stay in
//! sled.
//!
//! **A part and its state, atomically.** A part's file is written under a
//! temporary name and renamed once complete, *then* one sled batch records
//! the file (length, directory CRC), the part's seek chunks and the
//! segment's new state: sled never names a file that was not completely
//! written, and what sled holds is always a prefix of the segment. A file
//! sled does not name (a crash between the rename and the batch, a
//! temporary file, a part of a forgotten segment or an old generation) is
//! removed at [`HistoryIndex::open`]; forgetting a segment removes its
//! files. Like sled's writes, part files are not fsynced: the index is
//! derived, and what a crash damages is detected and rebuilt.
//!
//! **Never trusted blindly.** The index is derived data: it is written
//! without fsync (sled flushes on its own, lazily) and may be lost, stale
//! or damaged at any time. [`HistoryIndex::open`] throws away an index that
//! sled cannot open, of another format or of another node, and starts
//! empty (one that another process holds open is left alone:
//! [`IndexError::InUse`]). [`HistoryIndex::sync`] compares each segment's fingerprint with
//! the file (header time, length, the CRC at the last indexed block):
//! a segment that changed (salvaged, replaced, truncated, from another
//! directory) gets a new generation and is indexed again from the file —
//! its records are removed and entries of the old generation are ignored
//! in any case —, a segment indexed only part-way is caught up from where
//! the index stopped, a segment no longer on disk (retention) is
//! forgotten, a new one is indexed. A segment one of whose part files is
//! missing, of another length than recorded, or whose header (segment,
//! generation, part), footer or directory CRC does not match is indexed
//! again like a changed one. Lookups check each chunk of a part file they
//! read against its CRC; [`HistoryIndex::fetch`] reads each block with
//! its CRC checked and checks that the record found there is the event
//! the index promised (seq and path); any mismatch is
//! [`IndexError::Stale`], after which the caller syncs again or reads the
//! log from the front. A part file found damaged is removed, so the next
//! sync indexes its segment again.
//!
//! **Keeping it current.** The node's index thread reports each block
//! the log writer commits ([`HistoryIndex::record_block`]) to the part in
//! memory; a block the index already covers is skipped, and one that does
//! not continue what the index holds (a restart, a reopened writer, blocks
//! the writer could not hand over) makes the index catch that segment up
//! from the file first. [`HistoryIndex::flush`] writes the part in memory;
//! an index closed without it lacks at most that part, which the next
//! [`HistoryIndex::sync`] reads back from the segment.

#![warn(missing_docs)]

pub mod key;
mod partfile;
mod store;
mod sync;

pub use store::{BlockEvents, BlockPos, Found, HistoryIndex, Hit, SegState, SyncReport};

use std::path::PathBuf;

/// The index's error: what the caller does next is in the variant.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// sled failed (I/O, or damage it found): open the index again, which
    /// rebuilds it, or read the log without it.
    #[error("{}: history index: {source}", dir.display())]
    Store {
        /// The index directory.
        dir: PathBuf,
        /// What sled said.
        #[source]
        source: sled::Error,
    },
    /// Another process (a running node) has the index open: read the log
    /// without it. Nothing was changed.
    #[error("{}: history index in use by another process: {source}", dir.display())]
    InUse {
        /// The index directory.
        dir: PathBuf,
        /// What the lock attempt said.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read or removed.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file or directory.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// Reading the segments failed.
    #[error(transparent)]
    Log(#[from] distkv_log::LogError),
    /// The index does not match the segments (an entry points at no valid
    /// block, or at another record): sync it again, or read the log
    /// from the front.
    #[error("history index is stale: {0}")]
    Stale(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, IndexError>;

#[cfg(test)]
mod tests;
