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
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for LogReader {}
