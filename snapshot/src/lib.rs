//! Snapshot files: the full state of one node at one log position.
//!
//! A snapshot lets a node restart without replaying its whole event log: it
//! holds every node's tick bookkeeping and every tree entry (value, full
//! chain, tock) as of log sequence number [`SnapshotHeader::seq`]. Replay
//! then starts after `seq`.
//!
//! The file is a checksummed [header] followed by zstd-compressed,
//! CRC-checked [blocks](block) of length-prefixed msgpack [items](item):
//! nodes, then entries depth first, then an `End` item with the counts.
//! Both directions stream, so a million keys never need two copies in
//! memory:
//!
//! * [`SnapshotWriter`] writes to `<final>.tmp`, one block buffer at a time,
//!   and on [`finish`](SnapshotWriter::finish) fsyncs, renames to the final
//!   name and fsyncs the directory. A file under the final name is always
//!   complete; dropping an unfinished writer removes the temporary file.
//! * [`SnapshotReader`] checks the header on open and then yields
//!   `Result<Item, SnapshotError>` holding at most one decompressed block.
//!   It ends cleanly only after the `End` item matched what was read. A
//!   reader can follow a file as its writer writes it
//!   ([`SnapshotWriter::follow`]), to check it meanwhile.
//!
//! This crate knows bytes and files only: walking a node's state into a
//! writer and rebuilding it from a reader belong to the node. The byte
//! layout is documented in `docs/format.md` ("Snapshots") and on the types.

#![warn(missing_docs)]

pub mod block;
pub mod error;
mod fast;
pub mod header;
pub mod item;
pub mod reader;
pub mod sample;
pub mod writer;

pub use block::{DEFAULT_BLOCK_SIZE, MAX_BLOCK_LEN, MAX_ITEM_LEN};
pub use error::{Result, SnapshotError};
pub use header::{SnapshotHeader, FORMAT_VERSION, MAGIC};
pub use item::{EntryRecord, EntryRef, Item, ItemRef, NodeRecord, MAX_NESTING};
pub use reader::SnapshotReader;
pub use writer::{temp_path, SnapshotInfo, SnapshotWriter, WriteOptions};

#[cfg(test)]
mod tests;
