//! Bringing the index in line with the segment files (see the crate
//! docs: fingerprints, generations, catching up).

use std::collections::BTreeSet;
use std::path::Path;

use distkv_log::{
    block_crc_at, list_segments, read_segment_header, LogRecord, RecoveryMode, SegmentReader, Seq,
};

use crate::store::{Batches, BlockEvent, HistoryIndex, SegState, SyncReport};
use crate::Result;

/// Events written to sled per batch while indexing a segment.
const BATCH_EVENTS: u64 = 1 << 16;

/// The records of one block, collected while reading a segment.
struct Pending {
    offset: u64,
    events: Vec<(Seq, distkv_model::Path, u64)>,
    max_ms: u64,
}

impl HistoryIndex {
    /// Checks the index against every segment of the log and repairs what
    /// differs (see the crate docs): forgets segments gone, indexes new or
    /// changed ones from their start, catches up the rest, and purges dead
    /// entries once they are a quarter of the live ones. The report says
    /// what it did and whether the index now covers the whole log.
    pub fn sync(&mut self) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let on_disk = match list_segments(&self.log_dir) {
            Ok(s) => s,
            Err(_) if !self.log_dir.exists() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let present: BTreeSet<Seq> = on_disk.iter().map(|s| s.first_seq).collect();
        let gone: Vec<Seq> = self
            .segs
            .keys()
            .copied()
            .filter(|s| !present.contains(s))
            .collect();
        for first in gone {
            self.forget(first)?;
            report.forgotten.push(first);
        }
        let mut expected: Option<Seq> = None;
        for s in &on_disk {
            if let Some(e) = expected.filter(|&e| e != s.first_seq) {
                report.incomplete.push(format!(
                    "{}: starts at seq {}, the segment before ends before seq {e}",
                    s.path.display(),
                    s.first_seq
                ));
            }
            self.sync_segment(s.first_seq, &s.path, &mut report)?;
            expected = self.segs.get(&s.first_seq).map(|st| st.next_seq);
        }
        if self.dead > 0 && self.dead >= self.live_events() / 4 {
            report.purged = self.purge()?;
        }
        Ok(report)
    }

    /// Whether what the index holds for segment `first` still describes
    /// the file: same header time, at least as long, the same block at the
    /// last indexed offset.
    fn still_valid(&self, first: Seq, path: &Path, created_ms: u64, len: u64) -> bool {
        self.segs.get(&first).is_some_and(|st| {
            st.created_ms == created_ms
                && len >= st.indexed_to
                && (st.last_block == 0
                    || block_crc_at(path, st.last_block).ok() == Some(st.last_crc))
        })
    }

    /// Brings segment `first` (the file `path`) up to date in the index.
    pub(crate) fn sync_segment(
        &mut self,
        first: Seq,
        path: &Path,
        report: &mut SyncReport,
    ) -> Result<()> {
        let len = std::fs::metadata(path)
            .map_err(|source| crate::IndexError::Io {
                file: path.to_path_buf(),
                source,
            })?
            .len();
        let header = match read_segment_header(path) {
            Ok(h) => h,
            Err(e) => {
                self.forget(first)?;
                report.incomplete.push(e.to_string());
                return Ok(());
            }
        };
        let mut st = match self.segs.get(&first) {
            Some(st) if self.still_valid(first, path, header.created_ms, len) => {
                if st.indexed_to == len {
                    return Ok(());
                }
                report.caught_up.push(first);
                *st
            }
            _ => {
                let generation = self.next_generation();
                self.forget(first)?;
                report.reindexed.push(first);
                let st = SegState {
                    generation,
                    created_ms: header.created_ms,
                    indexed_to: header.encoded_len() as u64,
                    last_block: 0,
                    last_crc: 0,
                    next_seq: first,
                    events: 0,
                };
                self.commit(first, st, Batches::default())?;
                st
            }
        };
        let events_before = st.events;
        let mut reader = SegmentReader::open(path, RecoveryMode::TruncateTail)?;
        let mut pending: Option<Pending> = None;
        let mut batch = Batches::default();
        let from = st.indexed_to;
        for rec in reader.by_ref() {
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    report.incomplete.push(e.to_string());
                    break;
                }
            };
            if rec.offset < from {
                continue;
            }
            if pending.as_ref().is_some_and(|p| p.offset != rec.offset) {
                if let Some(p) = pending.take() {
                    self.add_block(first, path, &mut st, &mut batch, p, rec.offset)?;
                }
                if batch.len >= BATCH_EVENTS {
                    self.commit(first, st, std::mem::take(&mut batch))?;
                }
            }
            let p = pending.get_or_insert_with(|| Pending {
                offset: rec.offset,
                events: Vec::new(),
                max_ms: 0,
            });
            p.max_ms = p.max_ms.max(rec.record.time_ms());
            if let LogRecord::Event { seq, event, .. } = rec.record {
                p.events.push((seq, event.path, event.tock));
            }
        }
        if let Some(p) = pending.take() {
            let end = reader.position();
            self.add_block(first, path, &mut st, &mut batch, p, end)?;
        }
        if let Some(t) = reader.torn_tail() {
            report.incomplete.push(format!(
                "{}: torn tail at byte {} ({})",
                path.display(),
                t.offset,
                t.reason
            ));
        }
        report.events += st.events.saturating_sub(events_before);
        self.commit(first, st, batch)
    }

    /// Adds one block read from the file (ending at `end`) to `batch` and
    /// `st`.
    fn add_block(
        &mut self,
        first: Seq,
        path: &Path,
        st: &mut SegState,
        batch: &mut Batches,
        p: Pending,
        end: u64,
    ) -> Result<()> {
        let events: Vec<BlockEvent<'_>> = p
            .events
            .iter()
            .map(|(seq, path, tock)| BlockEvent {
                seq: *seq,
                path,
                tock: *tock,
            })
            .collect();
        batch.block(
            first,
            st.generation,
            p.offset,
            &events,
            p.max_ms,
            st.next_seq,
        );
        st.last_crc = block_crc_at(path, p.offset)?;
        st.last_block = p.offset;
        st.indexed_to = end;
        if let Some(last) = p.events.last() {
            st.next_seq = last.0 + 1;
        }
        st.events += p.events.len() as u64;
        Ok(())
    }
}
