//! The event log: every change a node applies, in order.
//!
//! This crate owns the log's data model and its segment files. It has no
//! async runtime and no clock: time is always passed in ([`Now`]: a wall
//! clock for what people read, a monotonic one for every interval).
//!
//! [`EventLog`] is the in-memory part: a bounded, sequence-numbered ring of
//! applied [`UpdateEvent`]s. The state machine appends to it; watchers (and
//! the file writer and the broadcaster) read from it with their own cursor.
//! The log never blocks the writer: when it is full, the oldest records are
//! dropped, and a reader whose cursor points before the oldest record gets
//! [`Lagged`] — an explicit error, never a silent gap.
//!
//! The on-disk part is a directory of segment files, one layer per module:
//! [`record`] (a [`LogRecord`]: an event or a state summary, as msgpack) →
//! [`block`] (one group commit: length, CRC32, flags, records, zstd where it
//! pays) → [`segment`] (a file: header, blocks; names and listing) →
//! [`writer`] ([`LogWriter`]: group commit, [`FsyncPolicy`], rotation,
//! recovery on open) and [`reader`] ([`LogReader`]: every record in seq
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
pub mod reader;
pub mod record;
pub mod retention;
pub mod salvage;
mod scan;
pub mod seek;
pub mod segment;
pub mod writer;

#[cfg(test)]
mod disk_tests;

pub use block::MAX_BLOCK_LEN;
pub use error::LogError;
pub use fast::RecordDecoder;
pub use reader::{LogReader, SegmentReader, SegmentRecord, Skipped, TornTail};
pub use record::{LogRecord, RecordError};
pub use retention::{retain, RemovedSegment, RetentionPolicy};
pub use salvage::{salvage_segment, SalvageReport, DAMAGED_DIR};
pub use seek::{block_crc_at, read_block_at};
pub use segment::{list_segments, read_segment_header, SegmentHeader, SegmentInfo};
pub use writer::{
    CommitInfo, FsyncPolicy, LogWriter, Now, RecoveryMode, RecoveryReport, WriterConfig,
    WriterStats,
};

use std::collections::VecDeque;
use std::sync::Arc;

use distkv_model::{UpdateEvent, Value};

/// Sequence number of a log record; the first record is 1.
pub type Seq = u64;

/// A reader asked for records the log no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event log reader fell behind: wanted record {wanted}, oldest kept is {oldest}")]
pub struct Lagged {
    /// The first record the reader wanted.
    pub wanted: Seq,
    /// The oldest record still in the log.
    pub oldest: Seq,
}

/// Size limits of an [`EventLog`].
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Most records kept.
    pub max_records: usize,
    /// Most (approximate) bytes of event data kept.
    pub max_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            max_records: 1 << 16,
            max_bytes: 64 << 20,
        }
    }
}

/// A bounded in-memory log of applied events.
#[derive(Debug)]
pub struct EventLog {
    limits: LogLimits,
    records: VecDeque<(Arc<UpdateEvent>, usize)>,
    /// Sequence number of `records[0]`.
    first: Seq,
    bytes: usize,
    /// Records from this one on are never dropped (not yet on disk).
    keep_from: Option<Seq>,
    /// Approximate bytes of the records from `keep_from` on.
    pinned_bytes: usize,
}

impl EventLog {
    /// An empty log whose first record will be number 1.
    pub fn new(limits: LogLimits) -> EventLog {
        EventLog::starting_at(limits, 1)
    }

    /// An empty log whose first record will be number `next` (a node that
    /// recovered records up to `next - 1` from its files).
    pub fn starting_at(limits: LogLimits, next: Seq) -> EventLog {
        EventLog {
            limits,
            records: VecDeque::new(),
            first: next.max(1),
            bytes: 0,
            keep_from: None,
            pinned_bytes: 0,
        }
    }

    /// Keeps every record from `from` on, whatever the limits, until the
    /// pin moves (the file writer pins what it has not written yet);
    /// `None` releases the pin.
    pub fn pin(&mut self, from: Option<Seq>) {
        self.keep_from = from;
        // The pin normally moves forward by what the writer just wrote, so
        // summing the records still pinned is cheap.
        self.pinned_bytes = match from {
            None => 0,
            Some(k) => {
                let skip = k.saturating_sub(self.first) as usize;
                self.records.iter().skip(skip).map(|(_, s)| s).sum()
            }
        };
    }

    /// Records and (approximate) bytes pinned: appended but not yet taken
    /// by the writer that pinned them — what a stalled disk makes pile up.
    pub fn pinned(&self) -> (usize, usize) {
        match self.keep_from {
            None => (0, 0),
            Some(k) => (
                self.next_seq().saturating_sub(k.max(self.first)) as usize,
                self.pinned_bytes,
            ),
        }
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the log holds no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> Seq {
        self.first + self.records.len() as Seq
    }

    /// The oldest record still kept.
    pub fn oldest_seq(&self) -> Seq {
        self.first
    }

    /// Appends an event, dropping the oldest records beyond the limits.
    /// Returns its sequence number.
    pub fn push(&mut self, event: Arc<UpdateEvent>) -> Seq {
        let size = approx_size(&event);
        let seq = self.next_seq();
        self.records.push_back((event, size));
        self.bytes += size;
        if self.keep_from.is_some_and(|k| seq >= k) {
            self.pinned_bytes += size;
        }
        while (self.records.len() > self.limits.max_records
            || (self.bytes > self.limits.max_bytes && self.records.len() > 1))
            && self.keep_from.is_none_or(|k| self.first < k)
        {
            if let Some((_, s)) = self.records.pop_front() {
                self.bytes -= s;
                self.first += 1;
            }
        }
        seq
    }

    /// Up to `max` records starting at `from`, with their sequence numbers.
    pub fn read(
        &self,
        from: Seq,
        max: usize,
    ) -> Result<impl Iterator<Item = (Seq, &Arc<UpdateEvent>)> + '_, Lagged> {
        if from < self.first {
            return Err(Lagged {
                wanted: from,
                oldest: self.first,
            });
        }
        let skip = (from - self.first) as usize;
        Ok(self
            .records
            .iter()
            .skip(skip)
            .take(max)
            .enumerate()
            .map(move |(i, (e, _))| (from + i as Seq, e)))
    }
}

/// A cheap estimate of the memory an event holds.
pub fn approx_size(e: &UpdateEvent) -> usize {
    fn val(v: &Value) -> usize {
        16 + match v {
            Value::Str(s) => s.len(),
            Value::Bin(b) | Value::BigUint(b) | Value::Ext(_, b) => b.len(),
            Value::Array(a) => a.iter().map(val).sum(),
            Value::Map(m) => m.iter().map(|(k, v)| val(k) + val(v)).sum(),
            Value::Path(p) => p.iter().map(val).sum(),
            _ => 0,
        }
    }
    64 + e.path.iter().map(val).sum::<usize>()
        + e.value.as_ref().map_or(0, val)
        + e.chain.len() * 24
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::{path, Chain};

    fn ev(i: u64) -> Arc<UpdateEvent> {
        Arc::new(UpdateEvent {
            path: path!["k", i],
            chain: Chain::single(Arc::from("n"), i),
            value: Some(Value::uint(i)),
            tock: i,
        })
    }

    #[test]
    fn readers_see_records_in_order() {
        let mut log = EventLog::new(LogLimits::default());
        for i in 1..=5 {
            assert_eq!(log.push(ev(i)), i);
        }
        let got: Vec<_> = log.read(3, 10).unwrap().map(|(s, e)| (s, e.tock)).collect();
        assert_eq!(got, vec![(3, 3), (4, 4), (5, 5)]);
        assert_eq!(log.read(6, 10).unwrap().count(), 0);
    }

    #[test]
    fn a_reader_that_falls_behind_is_told() {
        let mut log = EventLog::new(LogLimits {
            max_records: 3,
            max_bytes: usize::MAX,
        });
        for i in 1..=10 {
            log.push(ev(i));
        }
        assert_eq!(log.oldest_seq(), 8);
        assert_eq!(
            log.read(2, 1).err(),
            Some(Lagged {
                wanted: 2,
                oldest: 8
            })
        );
    }

    #[test]
    fn pinned_records_are_kept_beyond_the_limits() {
        let mut log = EventLog::new(LogLimits {
            max_records: 2,
            max_bytes: usize::MAX,
        });
        log.pin(Some(1));
        for i in 1..=5 {
            log.push(ev(i));
        }
        assert_eq!(log.oldest_seq(), 1);
        log.pin(Some(4));
        log.push(ev(6));
        assert_eq!(log.oldest_seq(), 4, "dropped down to the pin, no further");
        log.pin(None);
        log.push(ev(7));
        assert_eq!(log.oldest_seq(), 6);
    }

    #[test]
    fn pinned_records_and_bytes_are_counted() {
        let mut log = EventLog::new(LogLimits::default());
        assert_eq!(log.pinned(), (0, 0));
        log.pin(Some(1));
        let mut sizes = Vec::new();
        for i in 1..=5 {
            sizes.push(approx_size(&ev(i)));
            log.push(ev(i));
        }
        assert_eq!(log.pinned(), (5, sizes.iter().sum()));
        log.pin(Some(4));
        assert_eq!(log.pinned(), (2, sizes[3] + sizes[4]));
        log.pin(Some(6));
        assert_eq!(log.pinned(), (0, 0));
        log.pin(None);
        log.push(ev(6));
        assert_eq!(log.pinned(), (0, 0));
    }

    #[test]
    fn byte_limit_bounds_memory_but_keeps_the_newest() {
        let mut log = EventLog::new(LogLimits {
            max_records: 1000,
            max_bytes: 1,
        });
        for i in 1..=10 {
            log.push(ev(i));
        }
        assert_eq!(log.oldest_seq(), 10);
        assert_eq!(log.next_seq(), 11);
    }
}
