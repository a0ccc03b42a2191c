//! Reading a log directory back: every record, in seq order, checked.
//!
//! [`LogReader`] walks the segments of a directory oldest first and yields
//! records from a given position on. It checks everything it reads: each
//! header and block CRC, that each segment starts where the previous one
//! ended, that events follow each other without a gap and that each state
//! record carries the seq of the event before it. It never writes.
//!
//! Damage in a closed segment (any but the newest) is always
//! [`LogError::Corrupt`]. At the end of the newest segment, torn damage (see
//! [`crate::block`]) ends the iteration quietly in
//! [`RecoveryMode::TruncateTail`] — a writer may be in the middle of a
//! block, or crashed there — and is reported by [`LogReader::torn_tail`];
//! in [`RecoveryMode::Strict`] it is `Corrupt`. Blocks appended after a
//! segment was opened are not seen. The iterator is fused: after an error
//! it yields nothing more.
//!
//! [`SegmentReader`] reads one segment file alone, with the same checks
//! within the file and the offset of each record's block, for tools that
//! look at files one by one (`distkv-replay`).

use std::path::{Path, PathBuf};

use crate::block::{next_record, BlockReader, Next};
use crate::error::{LogError, Result};
use crate::record::{check_sequence, LogRecord};
use crate::segment::{list_segments, SegmentInfo};
use crate::writer::RecoveryMode;
use crate::Seq;

/// Where the newest segment stops being valid.
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

/// The segment being read.
struct Current {
    reader: BlockReader,
    path: PathBuf,
    is_last: bool,
    /// Records area of the current block, and the next record's position.
    raw: Vec<u8>,
    pos: usize,
    block_offset: u64,
}

/// An iterator over the records of a log directory (see the module docs).
pub struct LogReader {
    segments: Vec<SegmentInfo>,
    next_segment: usize,
    current: Option<Current>,
    mode: RecoveryMode,
    from_seq: Seq,
    /// The seq the next record must have (`None` before the first segment).
    expected: Option<Seq>,
    done: bool,
    torn: Option<TornTail>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("segments", &self.segments.len())
            .field("next_segment", &self.next_segment)
            .field("expected", &self.expected)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    /// Reads the records of `dir` with seq ≥ `from_seq` (events from
    /// `from_seq` on, and the state records among them)
    /// ([`RecoveryMode::TruncateTail`]). `from_seq = 0` starts at the oldest
    /// record kept; a `from_seq` older than that is a [`LogError::Gap`]
    /// (retention deleted those records), one past the end yields nothing.
    pub fn open(dir: &Path, from_seq: Seq) -> Result<LogReader> {
        LogReader::open_with(dir, from_seq, RecoveryMode::TruncateTail)
    }

    /// As [`LogReader::open`], with the given treatment of a torn tail.
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
        })
    }

    /// The torn tail that ended the iteration, if one did.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// The seq the next event read would have: once the iteration has ended
    /// cleanly, the seq after the last valid event of the log (`None` if no
    /// segment was read).
    pub fn next_seq(&self) -> Option<Seq> {
        self.expected
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
            if let Some(bytes) = next_record(&cur.raw, &mut cur.pos) {
                let corrupt = |reason: String| LogError::Corrupt {
                    file: cur.path.clone(),
                    offset: cur.block_offset,
                    reason,
                };
                let rec = LogRecord::decode(bytes.map_err(corrupt)?)
                    .map_err(|e| corrupt(e.to_string()))?;
                let mut next = self.expected.unwrap_or(cur.reader.header().first_seq);
                if let Err((expected, found)) = check_sequence(&rec, &mut next) {
                    return Err(LogError::Gap {
                        file: cur.path.clone(),
                        expected,
                        found,
                    });
                }
                self.expected = Some(next);
                if rec.seq() >= self.from_seq {
                    return Ok(Some(rec));
                }
                continue;
            }
            match cur.reader.next_block()? {
                Next::Block { offset, raw } => {
                    cur.raw = raw;
                    cur.pos = 0;
                    cur.block_offset = offset;
                }
                Next::End => self.current = None,
                Next::Damaged(d) => {
                    if cur.is_last && d.torn && self.mode == RecoveryMode::TruncateTail {
                        self.torn = Some(TornTail {
                            file: cur.path.clone(),
                            offset: d.offset,
                            bytes: cur.reader.len() - d.offset,
                            reason: d.reason,
                        });
                        return Ok(None);
                    }
                    return Err(d.corrupt(&cur.path));
                }
            }
        }
    }

    /// Opens the next segment; false when there is none (or the newest one
    /// has a torn header that ends the log).
    fn open_next(&mut self) -> Result<bool> {
        let Some(info) = self.segments.get(self.next_segment) else {
            return Ok(false);
        };
        let path = info.path.clone();
        let is_last = self.next_segment + 1 == self.segments.len();
        self.next_segment += 1;
        let reader = match BlockReader::open(&path)? {
            Ok(r) => r,
            Err(d) if is_last && d.torn && self.mode == RecoveryMode::TruncateTail => {
                self.torn = Some(TornTail {
                    bytes: info.bytes,
                    file: path,
                    offset: d.offset,
                    reason: d.reason,
                });
                return Ok(false);
            }
            Err(d) => return Err(d.corrupt(&path)),
        };
        let first = reader.header().first_seq;
        if let Some(expected) = self.expected {
            if first != expected {
                return Err(LogError::Gap {
                    file: path,
                    expected,
                    found: first,
                });
            }
        }
        self.expected = Some(first);
        self.current = Some(Current {
            reader,
            path,
            is_last,
            raw: Vec::new(),
            pos: 0,
            block_offset: 0,
        });
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
    /// have no offset of their own).
    pub offset: u64,
    /// The record.
    pub record: LogRecord,
}

/// Reads the records of ONE segment file, front to back, checked like
/// [`LogReader`] does (header, CRCs, framing, record msgpack, seqs within
/// the file) but without the directory around it: for tools that look at
/// files one by one and want to go on past a damaged one.
///
/// Damage ends the iteration. With [`RecoveryMode::TruncateTail`], damage
/// a crash explains (a torn header or block) ends it quietly and is
/// reported by [`SegmentReader::torn_tail`]; any other damage, and any
/// damage in [`RecoveryMode::Strict`], is [`LogError::Corrupt`] (or
/// [`LogError::Gap`] for records out of sequence). The iterator is fused.
pub struct SegmentReader {
    path: PathBuf,
    /// `None` when the header is torn (then nothing is read).
    reader: Option<BlockReader>,
    mode: RecoveryMode,
    raw: Vec<u8>,
    pos: usize,
    block_offset: u64,
    /// The seq the next event must have.
    expected: Seq,
    torn: Option<TornTail>,
    done: bool,
}

impl std::fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentReader")
            .field("path", &self.path)
            .field("expected", &self.expected)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl SegmentReader {
    /// Opens the segment at `path` and checks its header. A header that is
    /// damaged in a way no crash explains, or whose first seq disagrees with
    /// the file name, is `Corrupt`; a torn header is `Corrupt` in `Strict`
    /// mode and an empty, torn segment in `TruncateTail` mode.
    pub fn open(path: &Path, mode: RecoveryMode) -> Result<SegmentReader> {
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(crate::segment::parse_segment_file_name);
        let (reader, torn, expected) = match BlockReader::open(path)? {
            Ok(r) => {
                let first = r.header().first_seq;
                (Some(r), None, first)
            }
            Err(d) if d.torn && mode == RecoveryMode::TruncateTail => {
                let bytes = std::fs::metadata(path)
                    .map_err(crate::error::io_err(path))?
                    .len();
                let torn = TornTail {
                    file: path.to_path_buf(),
                    offset: d.offset,
                    bytes,
                    reason: d.reason,
                };
                (None, Some(torn), named.unwrap_or(0))
            }
            Err(d) => return Err(d.corrupt(path)),
        };
        Ok(SegmentReader {
            path: path.to_path_buf(),
            reader,
            mode,
            raw: Vec::new(),
            pos: 0,
            block_offset: 0,
            expected,
            torn,
            done: false,
        })
    }

    /// The segment's header (`None` if it is torn).
    pub fn header(&self) -> Option<&crate::SegmentHeader> {
        self.reader.as_ref().map(BlockReader::header)
    }

    /// The file's length when opened.
    pub fn file_len(&self) -> u64 {
        self.reader.as_ref().map_or(0, BlockReader::len)
    }

    /// Offset of the next block to read (after the iteration: where the
    /// valid part of the file ends).
    pub fn position(&self) -> u64 {
        self.reader.as_ref().map_or(0, BlockReader::pos)
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

    fn step(&mut self) -> Result<Option<SegmentRecord>> {
        loop {
            let Some(reader) = self.reader.as_mut() else {
                return Ok(None);
            };
            if let Some(bytes) = next_record(&self.raw, &mut self.pos) {
                let corrupt = |reason: String| LogError::Corrupt {
                    file: self.path.clone(),
                    offset: self.block_offset,
                    reason,
                };
                let record = LogRecord::decode(bytes.map_err(corrupt)?)
                    .map_err(|e| corrupt(e.to_string()))?;
                let mut next = self.expected;
                if let Err((expected, found)) = check_sequence(&record, &mut next) {
                    return Err(LogError::Gap {
                        file: self.path.clone(),
                        expected,
                        found,
                    });
                }
                self.expected = next;
                return Ok(Some(SegmentRecord {
                    offset: self.block_offset,
                    record,
                }));
            }
            match reader.next_block()? {
                Next::Block { offset, raw } => {
                    self.raw = raw;
                    self.pos = 0;
                    self.block_offset = offset;
                }
                Next::End => return Ok(None),
                Next::Damaged(d) => {
                    if d.torn && self.mode == RecoveryMode::TruncateTail {
                        self.torn = Some(TornTail {
                            file: self.path.clone(),
                            offset: d.offset,
                            bytes: reader.len() - d.offset,
                            reason: d.reason,
                        });
                        return Ok(None);
                    }
                    return Err(d.corrupt(&self.path));
                }
            }
        }
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
        r
    }
}

impl std::iter::FusedIterator for SegmentReader {}

#[cfg(test)]
mod segment_reader_tests {
    use std::sync::Arc;

    use distkv_model::{path, Chain, UpdateEvent, Value};

    use super::*;
    use crate::writer::{FsyncPolicy, LogWriter, WriterConfig};

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    fn write_two_segments(dir: &Path) -> Result<Vec<PathBuf>> {
        let mut cfg = WriterConfig::new("n1");
        cfg.fsync = FsyncPolicy::Never;
        let mut w = LogWriter::open(dir, cfg, 1)?;
        for i in 1..=6u64 {
            let ev = UpdateEvent {
                path: path!["k", i],
                chain: Chain::single(Arc::from("n1"), i),
                value: Some(Value::uint(i)),
                tock: i,
            };
            w.append_event(100 + i, &ev)?;
            w.commit(100 + i)?;
            if i == 3 {
                w.rotate();
            }
        }
        w.close(200)?;
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
    fn a_flipped_byte_is_reported_at_its_block() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let segs = write_two_segments(tmp.path())?;
        let clean: Vec<SegmentRecord> =
            SegmentReader::open(&segs[0], RecoveryMode::Strict)?.collect::<Result<_>>()?;
        let second_block = clean[1].offset;
        let mut bytes = std::fs::read(&segs[0])?;
        bytes[second_block as usize + 12] ^= 0x40;
        std::fs::write(&segs[0], &bytes)?;
        let got: Vec<Result<SegmentRecord>> =
            SegmentReader::open(&segs[0], RecoveryMode::Strict)?.collect();
        assert_eq!(got.len(), 2, "one good record, then the error");
        match &got[1] {
            Err(LogError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, &segs[0]);
                assert_eq!(*offset, second_block);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // In TruncateTail mode the same damage is a quiet torn tail.
        let mut r = SegmentReader::open(&segs[0], RecoveryMode::TruncateTail)?;
        assert_eq!(r.by_ref().count(), 1);
        assert_eq!(r.torn_tail().map(|t| t.offset), Some(second_block));
        Ok(())
    }
}
