//! Reading a log directory back: every record, in seq order, checked.
//!
//! [`SegmentReader`] reads one segment file; [`LogReader`] walks the
//! segments of a directory oldest first, one `SegmentReader` each, and
//! yields the records from a given position on. Everything read is
//! checked: each header and block CRC, that each segment starts where the
//! previous one ended, that events follow each other without a gap, that
//! each state record carries the seq of the event before it and each lost
//! record starts where the log stood — except that a [`LogReader`] from a
//! seq checks the event and state records before it for their place only
//! (`SegmentReader::pass_over`), not decoding what it drops. Nothing here
//! writes.
//!
//! **Damage** is handled by the [`RecoveryMode`]:
//! * damage that passes its checksum but cannot be decoded, or a header
//!   that is not a segment header of this version, is
//!   [`LogError::Corrupt`] in every mode;
//! * otherwise (a block or header cut short or failing its checksum) the
//!   rest of the file is searched for valid blocks (the `scan` module).
//!   - **Nothing valid follows**: a *torn tail* if the file is the newest
//!     segment (or read alone): the iteration ends quietly in
//!     `TruncateTail` and `Salvage` mode, reported by `torn_tail()`, and is
//!     `Corrupt` in `Strict` mode. A closed segment was fsynced before its
//!     successor began, so its damaged end is `Corrupt` (in `Salvage` mode:
//!     its events up to the next segment are lost).
//!   - **Valid blocks follow**: corruption, not a torn tail. In
//!     `TruncateTail` and `Strict` mode this is
//!     [`LogError::Salvageable`]; in `Salvage` mode the reader goes on at
//!     the next valid block and yields a [`LogRecord::Lost`] for the
//!     events the damage took (reported by `skipped()`); a block whose
//!     length field alone was damaged is read whole, and nothing is lost.
//!
//! Blocks appended after a segment was opened are not seen. The iterators
//! are fused: after an error they yield nothing more.

use std::ops::Range;
use std::path::{Path, PathBuf};

use distkv_model::NodeName;

use crate::block::{next_record, BlockReader, Damage, Next};
use crate::error::{LogError, Result};
use crate::fast::RecordDecoder;
use crate::record::{check_sequence, LogRecord, Place};
use crate::scan::After;
use crate::segment::{list_segments, parse_segment_file_name, SegmentInfo};
use crate::writer::RecoveryMode;
use crate::Seq;

/// Where the newest segment stops being valid: damage with nothing valid
/// after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The newest segment.
    pub file: PathBuf,
    /// Where the torn header (0) or block starts.
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes: u64,
    /// What is wrong there.
    pub reason: String,
}

/// Damage that a reader in [`RecoveryMode::Salvage`] went past.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The segment.
    pub file: PathBuf,
    /// Where the damaged header (0) or block starts.
    pub offset: u64,
    /// Where reading went on (the end of the file if nothing valid
    /// followed).
    pub resumed_at: u64,
    /// What is wrong.
    pub reason: String,
    /// The events lost (`from..to`; empty if the lost blocks held no
    /// event), or `None` when nothing was lost: the damaged block was found
    /// whole, or only the segment header was damaged.
    pub lost: Option<Range<Seq>>,
}

/// A segment read to its end from its front by a [`SegmentReader`], with
/// nothing skipped: what the read found (where the valid part ends, the seq
/// after its last event, a torn tail). The log writer opening a directory
/// takes the newest segment's scan from the replay that just read it
/// ([`LogWriter::open_with_scan`](crate::writer::LogWriter::open_with_scan))
/// instead of reading the segment a second time. Only a reader makes one,
/// so a scan always holds what the checks of this module found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    pub(crate) path: PathBuf,
    pub(crate) mode: RecoveryMode,
    pub(crate) header: Option<crate::SegmentHeader>,
    pub(crate) file_len: u64,
    pub(crate) valid_bytes: u64,
    pub(crate) records: u64,
    pub(crate) next_seq: Seq,
    pub(crate) torn: Option<TornTail>,
}

impl SegmentScan {
    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The seq after the segment's last valid event (its first seq if it
    /// has none).
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// The torn damage that ended the read, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }
}

/// How a segment may end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tail {
    /// The newest segment, or a file read alone: it may end torn.
    Open,
    /// A closed segment; the next one starts at this seq.
    Closed(Seq),
}

/// An iterator over the records of a log directory (see the module docs).
pub struct LogReader {
    segments: Vec<SegmentInfo>,
    next_segment: usize,
    current: Option<SegmentReader>,
    mode: RecoveryMode,
    from_seq: Seq,
    /// The seq the next event must have (`None` before the first segment).
    expected: Option<Seq>,
    done: bool,
    torn: Option<TornTail>,
    skipped: Vec<Skipped>,
    /// The newest segment's scan, once read to its end cleanly.
    newest: Option<SegmentScan>,
    /// What state records leave out of their `known` sets
    /// ([`LogReader::leave_out_known_within`]).
    known_within: Vec<(NodeName, Range<Seq>)>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("segments", &self.segments.len())
            .field("next_segment", &self.next_segment)
            .field("expected", &self.next_seq())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    /// Reads the records of `dir` with seq ≥ `from_seq` (events from
    /// `from_seq` on, and the state records that follow them; 0: all),
    /// treating damage as [`RecoveryMode::TruncateTail`] does. `Gap` if the
    /// oldest segment kept starts after `from_seq`.
    pub fn open(dir: &Path, from_seq: Seq) -> Result<LogReader> {
        LogReader::open_with(dir, from_seq, RecoveryMode::TruncateTail)
    }

    /// As [`LogReader::open`], with the given treatment of damage.
    pub fn open_with(dir: &Path, from_seq: Seq, mode: RecoveryMode) -> Result<LogReader> {
        let segments = list_segments(dir)?;
        let mut start = 0;
        if from_seq > 0 {
            match segments.iter().rposition(|s| s.first_seq <= from_seq) {
                Some(i) => start = i,
                None => {
                    if let Some(first) = segments.first() {
                        return Err(LogError::Gap {
                            file: first.path.clone(),
                            expected: from_seq,
                            found: first.first_seq,
                        });
                    }
                }
            }
        }
        Ok(LogReader {
            segments,
            next_segment: start,
            current: None,
            mode,
            from_seq,
            expected: None,
            done: false,
            torn: None,
            skipped: Vec::new(),
            newest: None,
            known_within: Vec::new(),
        })
    }

    /// From the next record on, state records leave out of their `known`
    /// sets the ticks of each node named in `within` that lie in the range
    /// given there: for a replay whose state has seen those ticks, to which
    /// they add nothing
    /// ([`RecordDecoder::leave_out_known_within`](crate::RecordDecoder::leave_out_known_within)).
    pub fn leave_out_known_within(&mut self, within: &[(NodeName, Range<Seq>)]) {
        self.known_within.clear();
        self.known_within.extend_from_slice(within);
        if let Some(cur) = &mut self.current {
            cur.leave_out_known_within(within);
        }
    }

    /// The records read from now on share no node name or path string
    /// with those read before ([`SegmentReader::share_anew`]).
    pub fn share_anew(&mut self) {
        if let Some(cur) = &mut self.current {
            cur.share_anew();
        }
    }

    /// The newest segment as this reader read it, once the iteration has
    /// ended cleanly with nothing skipped (`None` otherwise, or if the
    /// directory held no segment): hand it to
    /// [`LogWriter::open_with_scan`](crate::writer::LogWriter::open_with_scan).
    pub fn take_newest_scan(&mut self) -> Option<SegmentScan> {
        self.newest.take()
    }

    /// The torn tail that ended the iteration, if one did.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// The damage a salvaging reader went past, so far.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The seq the next event read would have: once the iteration has ended
    /// cleanly, the seq after the last valid event of the log (`None` if no
    /// segment was read).
    pub fn next_seq(&self) -> Option<Seq> {
        self.current
            .as_ref()
            .map(SegmentReader::next_seq)
            .or(self.expected)
    }

    /// The segments this reader walks, oldest first (as listed at open).
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// The next record with seq ≥ `from_seq`, `None` at the end.
    fn step(&mut self) -> Result<Option<LogRecord>> {
        loop {
            let Some(cur) = self.current.as_mut() else {
                if !self.open_next()? {
                    return Ok(None);
                }
                continue;
            };
            match cur.next() {
                Some(Ok(r)) => {
                    if r.record.seq() >= self.from_seq {
                        return Ok(Some(r.record));
                    }
                }
                Some(Err(e)) => return Err(e),
                None => {
                    if self.next_segment == self.segments.len() {
                        self.newest = cur.finished_scan();
                    }
                    self.expected = Some(cur.next_seq());
                    self.torn = cur.torn.take();
                    self.skipped.append(&mut cur.skipped);
                    self.current = None;
                }
            }
        }
    }

    /// Opens the next segment; false when there is none.
    fn open_next(&mut self) -> Result<bool> {
        let Some(info) = self.segments.get(self.next_segment) else {
            return Ok(false);
        };
        let tail = match self.segments.get(self.next_segment + 1) {
            Some(next) => Tail::Closed(next.first_seq),
            None => Tail::Open,
        };
        self.next_segment += 1;
        let mut reader = SegmentReader::open_in_log(&info.path, self.mode, tail)?;
        // What comes before `from_seq` is dropped here anyway.
        reader.pass_over(self.from_seq);
        reader.leave_out_known_within(&self.known_within);
        let first = reader.next_seq();
        if let Some(expected) = self.expected.filter(|&e| e != first) {
            return Err(LogError::Gap {
                file: info.path.clone(),
                expected,
                found: first,
            });
        }
        self.current = Some(reader);
        Ok(true)
    }
}

impl Iterator for LogReader {
    type Item = Result<LogRecord>;

    fn next(&mut self) -> Option<Result<LogRecord>> {
        if self.done {
            return None;
        }
        // Stops for good after the end or an error.
        let r = self.step().transpose();
        self.done = !matches!(r, Some(Ok(_)));
        r
    }
}

impl std::iter::FusedIterator for LogReader {}

/// One record of a segment file and where its block starts.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentRecord {
    /// File offset of the block holding the record (records inside a block
    /// have no offset of their own; for a [`LogRecord::Lost`], where the
    /// damage starts).
    pub offset: u64,
    /// The record.
    pub record: LogRecord,
}

/// Reads the records of ONE segment file, front to back, checked like
/// [`LogReader`] does (header, CRCs, framing, record msgpack, seqs within
/// the file) but without the directory around it: for tools that look at
/// files one by one and want to go on past a damaged one. The file may end
/// torn, as the newest segment may; damage is treated as the module docs
/// say. The iterator is fused.
pub struct SegmentReader {
    reader: BlockReader,
    mode: RecoveryMode,
    tail: Tail,
    raw: Vec<u8>,
    pos: usize,
    decoder: RecordDecoder,
    block_offset: u64,
    /// The seq the next event must have.
    expected: Seq,
    /// The time of the last record read, or of the segment's creation (for
    /// lost records).
    last_ms: u64,
    /// A lost record to yield before reading on.
    lost: Option<LogRecord>,
    /// Whether the file ends after `lost` (a closed segment's lost end).
    ends_after_lost: bool,
    torn: Option<TornTail>,
    skipped: Vec<Skipped>,
    /// Records read (yielded or passed over).
    records: u64,
    /// Event and state records before this seq are checked for their
    /// place in the sequence only, and not yielded
    /// ([`SegmentReader::pass_over`]).
    pass_below: Seq,
    /// Whether reading began at the header (not at an index's offset).
    from_front: bool,
    /// Whether the iteration ended without an error.
    ended: bool,
    done: bool,
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("path", &self.reader.path())
            .field("expected", &self.expected)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl SegmentReader {
    /// From the next record on, state records leave out of their `known`
    /// sets the ticks of each node named in `within` that lie in the range
    /// given there ([`LogReader::leave_out_known_within`]).
    pub fn leave_out_known_within(&mut self, within: &[(NodeName, Range<Seq>)]) {
        self.decoder.leave_out_known_within(within);
    }

    /// The records read from now on share no node name or path string
    /// with those read before ([`distkv_model::fast::EventDecoder::share_anew`]).
    pub fn share_anew(&mut self) {
        self.decoder.share_anew();
    }

    /// Opens the segment at `path` and checks its header. A header that is
    /// not a segment header of this version, or whose first seq disagrees
    /// with the file name, is `Corrupt`; a torn header is handled like other
    /// torn damage when the records are read.
    pub fn open(path: &Path, mode: RecoveryMode) -> Result<SegmentReader> {
        SegmentReader::open_in_log(path, mode, Tail::Open)
    }

    /// As [`SegmentReader::open`]; `end` is the seq the next segment starts
    /// at if this one is closed (it may not end torn then).
    pub(crate) fn open_with_end(
        path: &Path,
        mode: RecoveryMode,
        end: Option<Seq>,
    ) -> Result<SegmentReader> {
        let tail = end.map_or(Tail::Open, Tail::Closed);
        SegmentReader::open_in_log(path, mode, tail)
    }

    /// As [`SegmentReader::open`], but reading starts at the block at
    /// `offset`, whose first event must have the seq `next_seq` (a block of
    /// state records only: the seq after theirs): a position an index
    /// gave. The block there is checked first ([`crate::read_block_at`]);
    /// a position that is no block, or whose records do not start at
    /// `next_seq`, is `Corrupt` — read from the front then.
    pub fn open_at(
        path: &Path,
        mode: RecoveryMode,
        offset: u64,
        next_seq: Seq,
    ) -> Result<SegmentReader> {
        let mut r = SegmentReader::open_in_log(path, mode, Tail::Open)?;
        let header_end = r.reader.pos();
        let records = crate::read_block_at(path, offset)?;
        let starts_there = records.first().is_some_and(|rec| match rec {
            LogRecord::Event { seq, .. } => *seq == next_seq,
            _ => rec.seq().checked_add(1) == Some(next_seq),
        });
        if r.reader.header().is_none() || offset < header_end || !starts_there {
            return Err(LogError::Corrupt {
                file: path.to_path_buf(),
                offset,
                reason: format!("no block starting at seq {next_seq} there"),
            });
        }
        r.reader.seek_to(offset)?;
        r.from_front = false;
        r.expected = next_seq;
        r.block_offset = offset;
        Ok(r)
    }

    fn open_in_log(path: &Path, mode: RecoveryMode, tail: Tail) -> Result<SegmentReader> {
        let reader = BlockReader::open(path)?;
        if let Some(d) = reader.header_damage().filter(|d| !d.torn) {
            return Err(d.clone().corrupt(path));
        }
        let expected = match reader.header() {
            Some(h) => h.first_seq,
            None => path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_segment_file_name)
                .unwrap_or(0),
        };
        Ok(SegmentReader {
            last_ms: reader.header().map_or(0, |h| h.created_ms),
            reader,
            mode,
            tail,
            raw: Vec::new(),
            pos: 0,
            decoder: RecordDecoder::new(),
            block_offset: 0,
            expected,
            lost: None,
            ends_after_lost: false,
            torn: None,
            skipped: Vec::new(),
            records: 0,
            pass_below: 0,
            from_front: true,
            ended: false,
            done: false,
        })
    }

    /// Passes over the event and state records before `seq` in the
    /// writer's layout: their place in the sequence (and their time) is
    /// checked from their first fields, the rest is not decoded, and they
    /// are not yielded. For a reader that would drop them anyway (a node
    /// replaying its log after a snapshot): a CRC-valid record there whose
    /// body cannot be decoded is then not reported. Other records, and
    /// records in any other layout, are read as always.
    pub(crate) fn pass_over(&mut self, seq: Seq) {
        self.pass_below = seq;
    }

    /// The segment's header (`None` if it is damaged).
    pub fn header(&self) -> Option<&crate::SegmentHeader> {
        self.reader.header()
    }

    /// The file's length when opened.
    pub fn file_len(&self) -> u64 {
        self.reader.len()
    }

    /// Offset of the next block to read (after the iteration: where the
    /// valid part of the file ends).
    pub fn position(&self) -> u64 {
        self.reader.pos()
    }

    /// The seq the next event would have: after the iteration, the seq
    /// after the segment's last valid event (its first seq if it has none).
    pub fn next_seq(&self) -> Seq {
        self.expected
    }

    /// The torn damage that ended the iteration quietly, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// The damage read past in [`RecoveryMode::Salvage`], so far.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// What reading the whole segment found: `Some` once the iteration
    /// ended without an error, having begun at the front of a segment that
    /// may end torn (the newest one, or a file read alone), with nothing
    /// skipped.
    pub fn finished_scan(&self) -> Option<SegmentScan> {
        let whole = self.ended && self.from_front && self.tail == Tail::Open;
        (whole && self.skipped.is_empty()).then(|| SegmentScan {
            path: self.reader.path().to_path_buf(),
            mode: self.mode,
            header: self.reader.header().cloned(),
            file_len: self.reader.len(),
            valid_bytes: self.reader.pos(),
            records: self.records,
            next_seq: self.expected,
            torn: self.torn.clone(),
        })
    }

    fn step(&mut self) -> Result<Option<SegmentRecord>> {
        loop {
            if let Some(record) = self.lost.take() {
                return self.checked(record).map(Some);
            }
            if self.ends_after_lost {
                return Ok(None);
            }
            if let Some(bytes) = next_record(&self.raw, &mut self.pos) {
                let corrupt = |reason: String| LogError::Corrupt {
                    file: self.reader.path().to_path_buf(),
                    offset: self.block_offset,
                    reason,
                };
                let bytes = bytes.map_err(corrupt)?;
                // Only while the log is not past `pass_below` (a state
                // record has the seq of the event before it).
                let passing = self.expected <= self.pass_below;
                let passed =
                    passing
                        .then(|| crate::fast::head(bytes))
                        .flatten()
                        .filter(|&(place, _)| match place {
                            Place::Event(seq) | Place::State(seq) => seq < self.pass_below,
                            Place::Lost { .. } => false,
                        });
                if let Some((place, time_ms)) = passed {
                    self.follow(place, time_ms)?;
                    continue;
                }
                let record = self
                    .decoder
                    .decode(bytes)
                    .map_err(|e| corrupt(e.to_string()))?;
                return self.checked(record).map(Some);
            }
            // This block's records are all read: its buffer takes the next.
            self.reader.recycle(std::mem::take(&mut self.raw));
            match self.reader.next_block()? {
                Next::Block { offset, raw } => {
                    self.raw = raw;
                    self.pos = 0;
                    self.block_offset = offset;
                }
                Next::End => return Ok(None),
                Next::Damaged(d) => {
                    if !self.past(d)? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// `record` if it continues the log.
    fn checked(&mut self, record: LogRecord) -> Result<SegmentRecord> {
        self.follow(record.place(), record.time_ms())?;
        Ok(SegmentRecord {
            offset: self.block_offset,
            record,
        })
    }

    /// Takes a record at `place`, written at `time_ms`, if it continues
    /// the log.
    fn follow(&mut self, place: Place, time_ms: u64) -> Result<()> {
        if let Err((expected, found)) = check_sequence(place, &mut self.expected) {
            return Err(LogError::Gap {
                file: self.reader.path().to_path_buf(),
                expected,
                found,
            });
        }
        self.last_ms = self.last_ms.max(time_ms);
        self.records += 1;
        Ok(())
    }

    /// Handles damage (see the module docs): false when reading ends
    /// quietly, true when it goes on.
    fn past(&mut self, d: Damage) -> Result<bool> {
        let file = self.reader.path().to_path_buf();
        if !d.torn {
            return Err(d.corrupt(&file));
        }
        let salvage = self.mode == RecoveryMode::Salvage;
        let file_len = self.reader.len();
        match self.reader.after_damage(&d, self.expected)? {
            After::Found { at, whole, resume } => {
                if !salvage {
                    return Err(LogError::Salvageable {
                        file,
                        offset: d.offset,
                        next: at,
                        reason: d.reason,
                    });
                }
                let header_only = d.offset == 0 && self.reader.header().is_none();
                let lost = (resume > self.expected || (whole.is_none() && !header_only))
                    .then_some(self.expected..resume);
                self.skip(&d, at, lost);
                if let Some(raw) = whole {
                    self.raw = raw;
                    self.pos = 0;
                }
                Ok(true)
            }
            After::Nothing => match self.tail {
                Tail::Open if self.mode != RecoveryMode::Strict => {
                    self.torn = Some(TornTail {
                        file,
                        offset: d.offset,
                        bytes: file_len - d.offset,
                        reason: d.reason,
                    });
                    Ok(false)
                }
                Tail::Open => Err(LogError::Corrupt {
                    file,
                    offset: d.offset,
                    reason: format!(
                        "{}; nothing valid follows: in the newest segment, a torn tail (what a \
                         crash while writing leaves), which recovery in truncate mode cuts off",
                        d.reason
                    ),
                }),
                Tail::Closed(end) if salvage => {
                    self.skip(&d, file_len, Some(self.expected..end.max(self.expected)));
                    self.ends_after_lost = true;
                    Ok(true)
                }
                Tail::Closed(_) => Err(LogError::Corrupt {
                    file,
                    offset: d.offset,
                    reason: format!(
                        "{}; nothing valid follows, but this segment was closed (made durable \
                         before the next one began), so this is no torn tail",
                        d.reason
                    ),
                }),
            },
            After::Unknown => {
                let reason = format!(
                    "{}; the search for valid blocks after it reached its work limit, so \
                     some may follow",
                    d.reason
                );
                if !salvage {
                    return Err(LogError::Corrupt {
                        file,
                        offset: d.offset,
                        reason,
                    });
                }
                let lost = match self.tail {
                    Tail::Open => self.expected..self.expected,
                    Tail::Closed(end) => self.expected..end.max(self.expected),
                };
                self.skip(&Damage { reason, ..d }, file_len, Some(lost));
                self.ends_after_lost = true;
                Ok(true)
            }
        }
    }

    /// Records damage skipped in salvage mode, and queues the lost record
    /// for `lost`.
    fn skip(&mut self, d: &Damage, resumed_at: u64, lost: Option<Range<Seq>>) {
        let file = self.reader.path().to_path_buf();
        if let Some(l) = &lost {
            self.lost = Some(LogRecord::Lost {
                seq: l.end.saturating_sub(1),
                time_ms: self.last_ms,
                from: l.start,
                why: format!(
                    "{} at byte {} of {}{}",
                    d.reason,
                    d.offset,
                    file.display(),
                    if resumed_at < self.reader.len() {
                        format!("; valid blocks resumed at byte {resumed_at}")
                    } else {
                        String::new()
                    }
                ),
            });
        }
        self.block_offset = d.offset;
        self.skipped.push(Skipped {
            file,
            offset: d.offset,
            resumed_at,
            reason: d.reason.clone(),
            lost,
        });
    }
}

impl Iterator for SegmentReader {
    type Item = Result<SegmentRecord>;

    fn next(&mut self) -> Option<Result<SegmentRecord>> {
        if self.done {
            return None;
        }
        // Stops for good after the end or an error.
        let r = self.step().transpose();
        self.done = !matches!(r, Some(Ok(_)));
        self.ended = r.is_none();
        r
    }
}

impl std::iter::FusedIterator for SegmentReader {}

#[cfg(test)]
mod segment_reader_tests {
    use distkv_model::{path, Chain, NodeName, UpdateEvent, Value};

    use super::*;
    use crate::writer::{FsyncPolicy, LogWriter, Now, WriterConfig};

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn write_two_segments(dir: &Path) -> Result<Vec<PathBuf>> {
        let mut cfg = WriterConfig::new("n1");
        cfg.fsync = FsyncPolicy::Never;
        let mut w = LogWriter::open(dir, cfg, Now::at(1))?;
        for i in 1..=6u64 {
            let ev = UpdateEvent {
                path: path!["k", i],
                chain: Chain::single(NodeName::from("n1"), i),
                value: Some(Value::uint(i)),
                tock: i,
            };
            w.append_event(100 + i, &ev)?;
            w.commit(Now::at(100 + i))?;
            if i == 3 {
                w.rotate();
            }
        }
        w.close(Now::at(200))?;
        Ok(list_segments(dir)?.into_iter().map(|s| s.path).collect())
    }

    #[test]
    fn one_segment_is_read_alone_with_block_offsets() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let segs = write_two_segments(tmp.path())?;
        assert_eq!(segs.len(), 2);
        let r = SegmentReader::open(&segs[1], RecoveryMode::Strict)?;
        assert_eq!(r.header().map(|h| h.first_seq), Some(4));
        let mut r = r;
        let recs: Vec<SegmentRecord> = r.by_ref().collect::<Result<_>>()?;
        let seqs: Vec<Seq> = recs.iter().map(|r| r.record.seq()).collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        assert!(recs.windows(2).all(|w| w[0].offset < w[1].offset));
        assert_eq!(r.next_seq(), 7);
        assert_eq!(r.position(), r.file_len());
        Ok(())
    }

    #[test]
    fn reading_starts_at_a_block_an_index_named_and_refuses_any_other_offset() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let segs = write_two_segments(tmp.path())?;
        let all: Vec<SegmentRecord> =
            SegmentReader::open(&segs[1], RecoveryMode::Strict)?.collect::<Result<_>>()?;
        let at = all[1].offset;
        let seqs: Vec<Seq> = SegmentReader::open_at(&segs[1], RecoveryMode::Strict, at, 5)?
            .map(|r| r.map(|r| r.record.seq()))
            .collect::<Result<_>>()?;
        assert_eq!(seqs, vec![5, 6]);
        for (offset, seq) in [(at, 4), (at, 6), (at + 1, 5), (0, 4), (u64::MAX, 5)] {
            assert!(
                matches!(
                    SegmentReader::open_at(&segs[1], RecoveryMode::Strict, offset, seq),
                    Err(LogError::Corrupt { .. })
                ),
                "{offset} {seq}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_flipped_byte_is_reported_at_its_block_and_skipped_in_salvage_mode() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let segs = write_two_segments(tmp.path())?;
        let clean: Vec<SegmentRecord> =
            SegmentReader::open(&segs[0], RecoveryMode::Strict)?.collect::<Result<_>>()?;
        let offsets: Vec<u64> = clean.iter().map(|r| r.offset).collect();
        let good = std::fs::read(&segs[0])?;
        let mut bytes = good.clone();
        bytes[offsets[1] as usize + 12] ^= 0x40;
        std::fs::write(&segs[0], &bytes)?;
        // A valid block follows: corruption, whatever the mode but salvage.
        for mode in [RecoveryMode::Strict, RecoveryMode::TruncateTail] {
            let got: Vec<Result<SegmentRecord>> = SegmentReader::open(&segs[0], mode)?.collect();
            assert_eq!(got.len(), 2, "one good record, then the error");
            match &got[1] {
                Err(LogError::Salvageable {
                    file, offset, next, ..
                }) => {
                    assert_eq!(file, &segs[0]);
                    assert_eq!((*offset, *next), (offsets[1], offsets[2]));
                }
                other => panic!("expected Salvageable, got {other:?}"),
            }
        }
        let mut r = SegmentReader::open(&segs[0], RecoveryMode::Salvage)?;
        let got: Vec<SegmentRecord> = r.by_ref().collect::<Result<_>>()?;
        let seqs: Vec<(u64, bool)> = got
            .iter()
            .map(|r| (r.record.seq(), matches!(r.record, LogRecord::Lost { .. })))
            .collect();
        assert_eq!(seqs, vec![(1, false), (2, true), (3, false)]);
        assert_eq!(got[1].offset, offsets[1]);
        assert_eq!(r.skipped().len(), 1);
        assert_eq!(r.skipped()[0].lost, Some(2..3));
        assert_eq!(r.next_seq(), 4);
        // The same damage in the last block is a quiet torn tail.
        let mut bytes = good;
        bytes[offsets[2] as usize + 12] ^= 0x40;
        std::fs::write(&segs[0], &bytes)?;
        let mut r = SegmentReader::open(&segs[0], RecoveryMode::TruncateTail)?;
        assert_eq!(r.by_ref().count(), 2);
        assert_eq!(r.torn_tail().map(|t| t.offset), Some(offsets[2]));
        Ok(())
    }
}
