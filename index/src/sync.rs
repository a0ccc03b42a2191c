//! Bringing the index in line with the segment files (see the crate
//! docs: fingerprints, generations, catching up).

use std::collections::BTreeSet;
use std::path::Path;

use distkv_log::{
    block_crc_at, list_segments, read_segment_header, LogRecord, RecoveryMode, SegmentReader, Seq,
};

use crate::store::{BlockEvents, HistoryIndex, NewBlock, SegState, SyncReport};
use crate::Result;

/// The records of one block, collected while reading a segment.
struct Pending {
    offset: u64,
    events: BlockEvents,
    max_ms: u64,
}

impl HistoryIndex {
    /// Checks the index against every segment of the log and repairs what
    /// differs (see the crate docs): forgets segments gone, indexes new or
    /// changed ones from their start, catches up the rest, and writes what
    /// it read (the part in memory included). The report says
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
            report.purged += self.forget(first)?;
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
        // What was read is written: a tool's next run finds it.
        if report.events > 0 || !report.forgotten.is_empty() || !report.reindexed.is_empty() {
            self.flush()?;
        }
        Ok(report)
    }

    /// Whether what the index holds for segment `first` still describes
    /// the file: same header time, at least as long, the same block at the
    /// last indexed offset; and whether its part files are intact.
    fn still_valid(&self, first: Seq, path: &Path, created_ms: u64, len: u64) -> bool {
        self.segs.get(&first).is_some_and(|st| {
            st.created_ms == created_ms
                && len >= st.indexed_to
                && self.parts_intact(first, st)
                && (st.last_block == 0
                    || block_crc_at(path, st.last_block).ok() == Some(st.last_crc))
        })
    }

    /// Brings segment `first` (the file `path`) up to date in the index.
    /// A segment that is gone when it is read (retention removed it; a
    /// node's index thread runs beside, and behind, its writer), or not
    /// there yet (a rotation's new segment, until its writer names it), is
    /// forgotten: there is nothing to index (yet).
    pub(crate) fn sync_segment(
        &mut self,
        first: Seq,
        path: &Path,
        report: &mut SyncReport,
    ) -> Result<()> {
        match self.sync_file(first, path, report) {
            Err(_) if !path.exists() => self.forget(first).map(drop),
            r => r,
        }
    }

    fn sync_file(&mut self, first: Seq, path: &Path, report: &mut SyncReport) -> Result<()> {
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            // Not there (yet): retired, or a rotation's new segment not
            // named yet (the writer names it once the one before is
            // durable; its blocks are read then). Looked at once, so that
            // a name that appears meanwhile is no error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.forget(first).map(drop)
            }
            Err(source) => {
                return Err(crate::IndexError::Io {
                    file: path.to_path_buf(),
                    source,
                })
            }
        };
        let header = match read_segment_header(path) {
            Ok(h) => h,
            Err(e) => {
                self.forget(first)?;
                report.incomplete.push(e.to_string());
                return Ok(());
            }
        };
        let st = match self.segs.get(&first) {
            Some(st) if self.still_valid(first, path, header.created_ms, len) => {
                if st.indexed_to == len {
                    return Ok(());
                }
                report.caught_up.push(first);
                *st
            }
            _ => {
                let generation = self.next_generation();
                report.purged += self.forget(first)?;
                report.reindexed.push(first);
                let st = SegState {
                    generation,
                    created_ms: header.created_ms,
                    indexed_to: header.encoded_len() as u64,
                    last_block: 0,
                    last_crc: 0,
                    next_seq: first,
                    events: 0,
                    parts: 0,
                };
                self.put_segment(first, st)?;
                st
            }
        };
        let events_before = st.events;
        let from = st.indexed_to;
        // Catching up starts at the first block not indexed (checked
        // there); from the front if that is not a block start after all.
        let mut reader =
            match SegmentReader::open_at(path, RecoveryMode::TruncateTail, from, st.next_seq) {
                Ok(r) if st.last_block != 0 => r,
                _ => SegmentReader::open(path, RecoveryMode::TruncateTail)?,
            };
        let mut pending: Option<Pending> = None;
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
                    self.add_read_block(first, path, p, rec.offset)?;
                }
            }
            let p = pending.get_or_insert_with(|| Pending {
                offset: rec.offset,
                events: BlockEvents::default(),
                max_ms: 0,
            });
            p.max_ms = p.max_ms.max(rec.record.time_ms());
            if let LogRecord::Event { seq, event, .. } = rec.record {
                p.events.push(seq, event.tock, &event.path);
            }
        }
        if let Some(p) = pending.take() {
            let end = reader.position();
            self.add_read_block(first, path, p, end)?;
        }
        if let Some(t) = reader.torn_tail() {
            report.incomplete.push(format!(
                "{}: torn tail at byte {} ({})",
                path.display(),
                t.offset,
                t.reason
            ));
        }
        let events_after = self.segs.get(&first).map_or(events_before, |s| s.events);
        report.events += events_after.saturating_sub(events_before);
        self.set_last_crc(first, path)
    }

    /// Adds one block read from the file (ending at `end`). Its CRC is
    /// read only when the segment's state is about to be written with
    /// it (a full part) or at the end ([`HistoryIndex::set_last_crc`]):
    /// one file read per part, not per block.
    fn add_read_block(&mut self, first: Seq, path: &Path, p: Pending, end: u64) -> Result<()> {
        let next_seq = match (p.events.last_seq(), self.segs.get(&first)) {
            (Some(last), _) => last + 1,
            (None, Some(st)) => st.next_seq,
            (None, None) => return Ok(()),
        };
        let block = NewBlock {
            offset: p.offset,
            end,
            crc: 0,
            next_seq,
            max_ms: p.max_ms,
        };
        self.add_block(first, block, &p.events)?;
        if self.part_full() {
            self.set_last_crc(first, path)?;
        }
        Ok(())
    }

    /// Reads the CRC of the last block of segment `first` into its state.
    fn set_last_crc(&mut self, first: Seq, path: &Path) -> Result<()> {
        if let Some(st) = self.segs.get_mut(&first) {
            if st.last_block != 0 {
                st.last_crc = block_crc_at(path, st.last_block)?;
            }
        }
        Ok(())
    }
}
