//! The event log: every change a node applies, in order.
//!
//! This crate owns the log's data model and its segment files. It has no
//! async runtime and no clock: time is always passed in ([`Now`]: a wall
//! clock for what people read, a monotonic one for every interval).
//!
//! [`EventLog`] is the in-memory part (module `memory`): a bounded,
//! sequence-numbered ring of applied [`UpdateEvent`](distkv_model::UpdateEvent)s, kept compact. The
//! state machine appends to it; watchers (and the file writer and the
//! broadcaster) read from it with their own cursor. The log never blocks
//! the writer: when it is full, the oldest records are dropped, and a
//! reader whose cursor points before the oldest record gets [`Lagged`] — an
//! explicit error, never a silent gap.
//!
//! The on-disk part is a directory of segment files, one layer per module:
//! [`record`] (a [`LogRecord`]: an event or a state summary, as msgpack) →
//! [`block`] (one group commit: length, CRC32, flags, records, zstd where it
//! pays) → [`segment`] (a file: header, blocks; names and listing) →
//! [`writer`] ([`LogWriter`]: group commit, [`FsyncPolicy`] — its fsyncs
//! optionally on a thread of their own, `syncer` —, rotation, recovery on
//! open) and [`reader`] ([`LogReader`]: every record in seq
//! order, checked; damage classified as a torn tail or as corruption with
//! valid blocks after it, which `scan` finds) → [`salvage`] (keeping
//! damaged bytes, rewriting a segment without its damage) and
//! [`retention`] ([`retain`]: deleting old closed segments a snapshot
//! covers); [`seek`] reads one block at a known offset (for an index). Seqs are the [`EventLog`]'s positions:
//! events have gap-free seqs within and across segments; a state record
//! carries the seq of the last event before it. Byte layouts are in
//! `docs/format.md` ("Event-log segments") and on the types. Errors are one
//! [`LogError`]; nothing here panics on disk input.

#![warn(missing_docs)]

pub mod block;
pub mod error;
mod fast;
mod memory;
pub mod reader;
pub mod record;
pub mod retention;
pub mod salvage;
mod scan;
pub mod seek;
pub mod segment;
mod syncer;
pub mod writer;

#[cfg(test)]
mod disk_tests;

pub use block::MAX_BLOCK_LEN;
pub use error::LogError;
pub use fast::RecordDecoder;
pub use memory::{approx_size, EventLog, Lagged, LogCopy, LogEntry, LogLimits, PathElement, Seq};
pub use reader::{LogReader, SegmentReader, SegmentRecord, Skipped, TornTail};
pub use record::{EventForm, LogRecord, RecordError};
pub use retention::{retain, RemovedSegment, RetentionPolicy};
pub use salvage::{salvage_segment, SalvageReport, DAMAGED_DIR};
pub use seek::{block_crc_at, read_block_at};
pub use segment::{list_segments, read_segment_header, SegmentHeader, SegmentInfo};
pub use writer::{
    finish_rotations, CommitInfo, EventBatch, FsyncPolicy, LogWriter, Now, RecoveryMode,
    RecoveryReport, Unfinished, UnfinishedRotation, WriterConfig, WriterStats, SYNC_RETRY_MS,
};
