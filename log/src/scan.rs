//! Finding valid blocks after damage: what tells a torn tail from
//! corruption.
//!
//! A crash while appending can only damage the end of the newest segment:
//! its last block is cut short or fails its checksum, and nothing follows
//! it. That is a *torn tail*, and cutting it off loses only what was being
//! written. Damage anywhere else — a flipped bit, a bad sector — is
//! followed by blocks that were written, fsynced and acknowledged before
//! it; cutting the file there would silently drop them. So before damage
//! is called a torn tail, the rest of the file is searched for a valid
//! block. A block counts as valid only if its length fits the file, its
//! CRC32 matches, its payload decompresses to the announced length, every
//! record in it decodes, and its records continue the log: they follow each
//! other without a gap, and the first of them resumes the log at or after
//! the position where the damage began (a block lost to the damage leaves a
//! jump in the seqs, never a step back).
//!
//! Three ways to find the next block, in this order:
//!
//! 1. **The damaged block's own length.** Usually the damage is in the
//!    payload or the checksum and the length is intact: the next block
//!    starts right after the damaged one. The bytes inside the damaged
//!    block are never searched then, so a stored value that happens to
//!    contain the bytes of a valid block cannot be taken for one. Where
//!    the next block is damaged too (a failing disk damages many), its
//!    header still looks like one (the cheap tests of method 3): its own
//!    length is followed in turn, block by block, to the first valid one.
//!    So a run of damaged neighbours costs about its own length.
//! 2. **The damaged block's own checksum.** If only the length field is
//!    damaged, the payload and its CRC are intact, and so is the payload's
//!    own structure: the record lengths of a records area, the frame and
//!    block headers of a zstd frame. Followed from the payload's start,
//!    they give where the block can end (a record boundary, the frame's
//!    end); the first such end where the CRC of the flags byte and the
//!    bytes before it matches the stored CRC, the records decode and a
//!    valid block follows is where the damaged block really ends. That
//!    block is then whole again (the *repaired* block) and nothing is lost.
//!    This runs up to where method 1 found a block, if it did (a damaged
//!    length may point past valid blocks), else up to the largest block or
//!    the end of the file; but it reads only as far as the structure holds,
//!    so a block whose payload is damaged too costs little.
//! 3. **A scan.** When the header of the damaged block is beyond repair,
//!    every later offset is tried. Cheap tests come first (flags 0 or 1, a
//!    length that fits, the first record's length and msgpack map marker,
//!    or the zstd frame magic), then the checks above.
//!
//! The search is bounded: it may read at most [`budget`] bytes of a file
//! (eight times the file plus two of the largest blocks), so a file full of
//! block-like bytes cannot make a start quadratic. When the budget runs
//! out, the answer is [`After::Unknown`], which callers treat as "valid
//! blocks may follow": never as a torn tail.
//!
//! What remains possible: if a block's length field *and* another part of
//! its header are damaged, method 3 searches the damaged block's payload,
//! where a stored value could contain a well-formed block of records that
//! continue the log. So can method 1, if a damaged length leads exactly to
//! such a block, or to bytes of a stored value that look like the header
//! of a block and lead to one. That takes a disk fault hitting exactly
//! such a block and an operator choosing salvage. And where a block's
//! length *and* its payload are damaged, and the length leads exactly to
//! the header of another damaged block, the valid blocks between them are
//! lost with them (method 2 finds the true end only of an intact payload).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::block::{
    next_record, BlockHeader, Inflater, BLOCK_HEADER_LEN, FLAG_ZSTD, MAX_BLOCK_LEN,
};
use crate::error::{io_err, LogError};
use crate::record::{check_sequence, LogRecord};
use crate::Seq;

/// The bytes the search may read in a file of `file_len` bytes.
pub(crate) fn budget(file_len: u64) -> u64 {
    file_len
        .saturating_mul(8)
        .saturating_add(2 * MAX_BLOCK_LEN as u64)
}

/// Where the damage is.
pub(crate) enum Damaged {
    /// The segment header.
    Header,
    /// The block starting at this offset.
    Block(u64),
}

/// What follows damage.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// No valid block: the damage is a torn tail.
    Nothing,
    /// A valid block starts at `at`.
    Found {
        /// Where reading goes on.
        at: u64,
        /// The damaged block's records area, when only its length field
        /// was damaged (method 2): nothing is lost.
        whole: Option<Vec<u8>>,
        /// The seq the next event had right before the first record found
        /// (of `whole`, else of the block at `at`): events from the
        /// position where the damage began up to this one are lost.
        resume: Seq,
    },
    /// The search ran out of its budget: valid blocks may follow.
    Unknown,
}

/// Why the search stopped early.
enum Stop {
    Budget,
    Io(LogError),
}

impl From<LogError> for Stop {
    fn from(e: LogError) -> Stop {
        Stop::Io(e)
    }
}

/// The search over one file.
pub(crate) struct Scan<'a> {
    pub(crate) file: &'a mut File,
    pub(crate) path: &'a Path,
    pub(crate) len: u64,
    pub(crate) budget: &'a mut u64,
    pub(crate) inflater: &'a mut Inflater,
}

/// Bytes read per step of methods 2 and 3 (at most).
const CHUNK: usize = 1 << 20;

/// Bytes method 3 reads first; each further read doubles, up to [`CHUNK`].
const FIRST_SCAN: usize = 4 << 10;

/// The smallest block: a header and one record of one byte with its length.
const MIN_BLOCK: u64 = BLOCK_HEADER_LEN as u64 + 5;

/// Bytes method 3 looks at before reading a whole candidate: the block
/// header and the first 8 bytes of its payload.
const PEEK: usize = BLOCK_HEADER_LEN + 8;

/// The first bytes of every zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Scan<'_> {
    /// Looks for a valid block after damage `from`, whose records resume
    /// the log at event seq `expected` or later (see the module docs).
    pub(crate) fn after(&mut self, from: Damaged, expected: Seq) -> Result<After, LogError> {
        match self.search(from, expected) {
            Ok(after) => Ok(after),
            Err(Stop::Budget) => Ok(After::Unknown),
            Err(Stop::Io(e)) => Err(e),
        }
    }

    fn search(&mut self, from: Damaged, expected: Seq) -> Result<After, Stop> {
        let d = match from {
            Damaged::Header => {
                // The header's own name length says where blocks start,
                // unless the damage is there.
                if self.len >= 12 {
                    let mut n = [0u8; 2];
                    self.read_at(10, &mut n)?;
                    let first = 32 + u64::from(u16::from_le_bytes(n));
                    if let Some((resume, _)) = self.valid_at(first, expected)? {
                        return Ok(found(first, None, resume));
                    }
                }
                return self.scan_from(1, expected);
            }
            Damaged::Block(d) => d,
        };
        let head = if d + BLOCK_HEADER_LEN as u64 <= self.len {
            let mut b = [0u8; BLOCK_HEADER_LEN];
            self.read_at(d, &mut b)?;
            Some(BlockHeader::decode(&b))
        } else {
            None
        };
        // 1. The damaged block's own length, and those of damaged blocks
        // after it.
        let mut by_length = None;
        if let Some(h) = head.filter(|h| h.len >= 1 && h.len as usize <= MAX_BLOCK_LEN) {
            let mut next = d + (BLOCK_HEADER_LEN as u64) + u64::from(h.len);
            while next < self.len {
                if let Some((resume, _)) = self.valid_at(next, expected)? {
                    by_length = Some((next, resume));
                    break;
                }
                match self.block_like_at(next)? {
                    Some(len) => next += BLOCK_HEADER_LEN as u64 + len,
                    None => break,
                }
            }
        }
        // 2. The damaged block's own checksum.
        if let Some(h) = head.filter(|h| h.flags & !FLAG_ZSTD == 0) {
            let bound = by_length.map_or(self.len, |(at, _)| at);
            if let Some(after) = self.repair_length(d, h, bound, expected)? {
                return Ok(after);
            }
        }
        if let Some((at, resume)) = by_length {
            return Ok(found(at, None, resume));
        }
        // 3. A scan.
        self.scan_from(d + 1, expected)
    }

    /// Method 2: where the damaged block at `d` ends if only its length
    /// field is damaged. Its payload is then intact, so its own structure
    /// says where it ends: the record lengths of a records area (the end is
    /// one of its record boundaries), or the block headers of a zstd frame.
    /// The first such end `x ≤ bound` where the CRC of the flags and the
    /// bytes up to `x` matches the stored CRC, the payload decodes and a
    /// valid block follows is the block's end. Reading follows the
    /// structure only as far as it holds, so a block damaged elsewhere
    /// costs about its own length.
    fn repair_length(
        &mut self,
        d: u64,
        h: BlockHeader,
        bound: u64,
        expected: Seq,
    ) -> Result<Option<After>, Stop> {
        let start = d + BLOCK_HEADER_LEN as u64;
        // A valid block must follow, so the damaged one ends before the
        // file's last MIN_BLOCK bytes.
        let limit = bound
            .min(start + MAX_BLOCK_LEN as u64)
            .min(self.len.saturating_sub(MIN_BLOCK));
        let mut crc = Crc::new(h.flags, start);
        let mut ahead = Ahead::default();
        if h.flags & FLAG_ZSTD != 0 {
            let Some(end) = self.frame_end(&mut ahead, start, limit)? else {
                return Ok(None);
            };
            if self.crc_to(&mut ahead, &mut crc, end)? != h.crc {
                return Ok(None);
            }
            return self.whole_block(start, end, h.flags, expected);
        }
        let mut at = start;
        while at + 5 <= limit {
            let head = self.ahead(&mut ahead, at, 5)?;
            let len = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
            if len == 0 || !map_marker(head[4]) {
                break;
            }
            at += 4 + len;
            if at > limit {
                break;
            }
            if self.crc_to(&mut ahead, &mut crc, at)? == h.crc {
                if let Some(after) = self.whole_block(start, at, h.flags, expected)? {
                    return Ok(Some(after));
                }
            }
        }
        Ok(None)
    }

    /// Where the zstd frame of the compressed payload at `start` (after its
    /// records-area length) ends, if its frame and block headers hold up to
    /// `limit` (the zstd format, RFC 8878: a frame header, blocks of at most
    /// 128 KiB each with a 3-byte header, the last one flagged, then an
    /// optional 4-byte checksum).
    fn frame_end(&mut self, a: &mut Ahead, start: u64, limit: u64) -> Result<Option<u64>, Stop> {
        let mut p = start + 4;
        if p + 5 > limit {
            return Ok(None);
        }
        let head = self.ahead(a, p, 5)?;
        let fhd = head[4];
        if head[..4] != ZSTD_MAGIC || fhd & 0x08 != 0 {
            return Ok(None);
        }
        let single_segment = fhd & 0x20 != 0;
        let window = u64::from(!single_segment);
        let dict_id = [0, 1, 2, 4][usize::from(fhd & 3)];
        let content_size = match fhd >> 6 {
            0 => u64::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        p += 5 + window + dict_id + content_size;
        loop {
            if p + 3 > limit {
                return Ok(None);
            }
            let b = self.ahead(a, p, 3)?;
            let v = u32::from_le_bytes([b[0], b[1], b[2], 0]);
            let size = u64::from(v >> 3);
            let body = match (v >> 1) & 3 {
                0 | 2 => size,
                1 => 1,
                _ => return Ok(None),
            };
            if size > 128 << 10 {
                return Ok(None);
            }
            p += 3 + body;
            if v & 1 != 0 {
                break;
            }
        }
        if fhd & 0x04 != 0 {
            p += 4;
        }
        Ok((p <= limit).then_some(p))
    }

    /// Feeds `crc` the bytes up to `end` and returns its value there.
    fn crc_to(&mut self, a: &mut Ahead, crc: &mut Crc, end: u64) -> Result<u32, Stop> {
        while crc.at < end {
            let bytes = self.ahead(a, crc.at, 1)?;
            let n = bytes.len().min((end - crc.at) as usize);
            crc.hasher.update(&bytes[..n]);
            crc.at += n as u64;
        }
        Ok(crc.hasher.clone().finalize())
    }

    /// The bytes from `p` on in `a`'s buffer, at least `n` of them (which
    /// the file must have). Reads that go on where the last one ended grow
    /// from 4 KiB to [`CHUNK`]; a jump reads 4 KiB again, so that following
    /// headers through large bodies does not read the bodies.
    fn ahead<'b>(&mut self, a: &'b mut Ahead, p: u64, n: usize) -> Result<&'b [u8], Stop> {
        debug_assert!(p + n as u64 <= self.len, "callers stay within the file");
        let end = a.at + a.buf.len() as u64;
        if p < a.at || p + n as u64 > end {
            a.window = if p == end {
                (a.window * 2).clamp(FIRST_SCAN, CHUNK)
            } else {
                FIRST_SCAN
            };
            let len = (a.window.max(n) as u64).min(self.len - p) as usize;
            a.buf.resize(len, 0);
            a.at = p;
            self.read_at(p, &mut a.buf)?;
        }
        Ok(&a.buf[(p - a.at) as usize..])
    }

    /// Whether the damaged block's payload `start .. end` (whose CRC
    /// matched) decodes and continues the log, and a valid block follows.
    fn whole_block(
        &mut self,
        start: u64,
        end: u64,
        flags: u8,
        expected: Seq,
    ) -> Result<Option<After>, Stop> {
        let mut payload = vec![0u8; (end - start) as usize];
        self.read_at(start, &mut payload)?;
        let Ok(raw) = self.inflater.records_area(flags, &payload) else {
            return Ok(None);
        };
        self.charge(raw.len() as u64)?;
        let Some((resume, next)) = check_area(&raw, expected) else {
            return Ok(None);
        };
        Ok(self
            .valid_at(end, next)?
            .map(|_| found(end, Some(raw), resume)))
    }

    /// The payload length of the block header at `p`, if the bytes there
    /// pass the cheap tests of method 3 (the block itself may be damaged).
    fn block_like_at(&mut self, p: u64) -> Result<Option<u64>, Stop> {
        let mut peek = [0u8; PEEK];
        let n = ((self.len - p) as usize).min(PEEK);
        self.read_at(p, &mut peek[..n])?;
        Ok(plausible(&peek[..n], self.len - p)
            .then(|| u64::from(u32::from_le_bytes([peek[0], peek[1], peek[2], peek[3]]))))
    }

    /// Method 3: the first offset from `from` on where a valid block
    /// starts. Reads start small and grow, so a block that is near is
    /// found for little.
    fn scan_from(&mut self, from: u64, expected: Seq) -> Result<After, Stop> {
        let mut buf = Vec::new();
        let mut window = FIRST_SCAN;
        let mut at = from;
        while at + MIN_BLOCK <= self.len {
            let n = ((self.len - at) as usize).min(window + PEEK);
            buf.resize(n, 0);
            self.read_at(at, &mut buf)?;
            // Offsets whose peek window is whole in this read, or every
            // offset of the file's last bytes.
            let offsets = if n == window + PEEK { window } else { n };
            for i in 0..offsets {
                let p = at + i as u64;
                let peek = &buf[i..n.min(i + PEEK)];
                if plausible(peek, self.len - p) {
                    if let Some((resume, _)) = self.valid_at(p, expected)? {
                        return Ok(found(p, None, resume));
                    }
                }
            }
            at += offsets as u64;
            window = (window * 2).min(CHUNK);
        }
        Ok(After::Nothing)
    }

    /// Whether the block at `p` passes every check and its records resume
    /// the log at `expected` or later: then the seq the next event had
    /// before its first record, and the one it must have after its last.
    fn valid_at(&mut self, p: u64, expected: Seq) -> Result<Option<(Seq, Seq)>, Stop> {
        let header_end = p + BLOCK_HEADER_LEN as u64;
        if header_end > self.len {
            return Ok(None);
        }
        let mut b = [0u8; BLOCK_HEADER_LEN];
        self.read_at(p, &mut b)?;
        let h = BlockHeader::decode(&b);
        let len = u64::from(h.len);
        if h.flags & !FLAG_ZSTD != 0 || len == 0 || len > MAX_BLOCK_LEN as u64 {
            return Ok(None);
        }
        if len > self.len - header_end {
            return Ok(None);
        }
        let mut payload = vec![0u8; len as usize];
        self.read_at(header_end, &mut payload)?;
        if BlockHeader::crc_of(h.flags, &payload) != h.crc {
            return Ok(None);
        }
        let Ok(raw) = self.inflater.records_area(h.flags, &payload) else {
            return Ok(None);
        };
        self.charge(raw.len() as u64)?;
        Ok(check_area(&raw, expected))
    }

    /// Reads `buf.len()` bytes at `offset`, within the budget.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Stop> {
        self.charge(buf.len() as u64)?;
        self.file
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.file.read_exact(buf))
            .map_err(|e| Stop::Io(io_err(self.path)(e)))
    }

    fn charge(&mut self, bytes: u64) -> Result<(), Stop> {
        *self.budget = self.budget.checked_sub(bytes).ok_or(Stop::Budget)?;
        Ok(())
    }
}

fn found(at: u64, whole: Option<Vec<u8>>, resume: Seq) -> After {
    After::Found { at, whole, resume }
}

/// Whether a block may start with the bytes `peek` (its header and the
/// first bytes of its payload, fewer at the end of the file) with `avail`
/// bytes left in the file: the cheap tests of method 3.
fn plausible(peek: &[u8], avail: u64) -> bool {
    let u32_at = |i: usize| {
        peek.get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(len), Some(&flags)) = (u32_at(0), peek.get(8)) else {
        return false;
    };
    let len = u64::from(len);
    if len == 0 || len > MAX_BLOCK_LEN as u64 || BLOCK_HEADER_LEN as u64 + len > avail {
        return false;
    }
    match flags {
        // A records area: the first record's length, then a msgpack map.
        0 => {
            let first = u32_at(9).map_or(0, u64::from);
            first >= 1 && first + 4 <= len && peek.get(13).is_some_and(|&m| map_marker(m))
        }
        // The records area's length, then a zstd frame.
        FLAG_ZSTD => {
            let raw = u32_at(9).map_or(0, u64::from);
            (1..=MAX_BLOCK_LEN as u64).contains(&raw) && peek.get(13..17) == Some(&ZSTD_MAGIC[..])
        }
        _ => false,
    }
}

/// Whether the records area `raw` holds records that decode and continue
/// the log at `expected` or later: the seq the next event had before its
/// first record, and the one it must have after its last.
fn check_area(raw: &[u8], expected: Seq) -> Option<(Seq, Seq)> {
    let mut pos = 0;
    let mut span: Option<(Seq, Seq)> = None;
    while let Some(bytes) = next_record(raw, &mut pos) {
        let rec = LogRecord::decode(bytes.ok()?).ok()?;
        let (resume, next) = span.get_or_insert((rec.resumes_at(), rec.resumes_at()));
        if *resume < expected {
            return None;
        }
        check_sequence(rec.place(), next).ok()?;
    }
    span
}

/// Whether `b` starts a msgpack map, as every record does.
fn map_marker(b: u8) -> bool {
    (0x80..=0x8f).contains(&b) || b == 0xde || b == 0xdf
}

/// A window of a file for reading it forward ([`Scan::ahead`]).
#[derive(Default)]
struct Ahead {
    /// Where `buf` starts in the file.
    at: u64,
    buf: Vec<u8>,
    /// The size of the last read.
    window: usize,
}

/// A block's CRC over its flags and its payload from the start up to
/// `at`.
struct Crc {
    hasher: crc32fast::Hasher,
    at: u64,
}

impl Crc {
    fn new(flags: u8, start: u64) -> Crc {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[flags]);
        Crc { hasher, at: start }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `frame_end` finds the end of zstd frames as zstd writes them: one
    /// block or many, with or without a checksum and the content size,
    /// compressible or not, followed by other bytes.
    #[test]
    fn the_frame_walk_ends_where_zstd_frames_end() -> Result<(), Box<dyn std::error::Error>> {
        use zstd::zstd_safe::CParameter;
        let mut x = 88172645463325252u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("frame");
        for len in [1usize, 100, 5_000, 200_000, 1 << 20] {
            for random in [false, true] {
                for (checksum, size) in [(false, true), (true, true), (true, false)] {
                    let raw = if random { noise(len) } else { vec![b'a'; len] };
                    let mut c = zstd::bulk::Compressor::new(3)?;
                    c.set_parameter(CParameter::ChecksumFlag(checksum))?;
                    c.set_parameter(CParameter::ContentSizeFlag(size))?;
                    let frame = c.compress(&raw)?;
                    let mut file = vec![0u8; BLOCK_HEADER_LEN + 4];
                    file.extend_from_slice(&frame);
                    let end = file.len() as u64;
                    file.extend(noise(100));
                    std::fs::write(&path, &file)?;
                    let mut f = File::open(&path)?;
                    let mut budget = u64::MAX;
                    let mut inflater = Inflater::default();
                    let mut scan = Scan {
                        file: &mut f,
                        path: &path,
                        len: file.len() as u64,
                        budget: &mut budget,
                        inflater: &mut inflater,
                    };
                    let mut a = Ahead::default();
                    let got = scan.frame_end(&mut a, BLOCK_HEADER_LEN as u64, file.len() as u64);
                    let ctx = format!("{len} bytes, random {random}, checksum {checksum}");
                    assert_eq!(got.ok().flatten(), Some(end), "{ctx}");
                    // Cut short, the frame has no end.
                    let got =
                        scan.frame_end(&mut Ahead::default(), BLOCK_HEADER_LEN as u64, end - 1);
                    assert_eq!(got.ok().flatten(), None, "{ctx}, cut");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn cheap_tests_accept_real_block_starts_only() {
        let mut area = Vec::new();
        crate::block::push_record(&mut area, &[0x84, 1, 2, 3]);
        let mut block = BlockHeader::of(0, &area).encode().to_vec();
        block.extend_from_slice(&area);
        let avail = block.len() as u64;
        assert!(plausible(&block[..PEEK.min(block.len())], avail));
        assert!(!plausible(&block, avail - 1), "longer than the file");
        let mut bad = block.clone();
        bad[8] = 2;
        assert!(!plausible(&bad, avail), "unknown flags");
        let mut bad = block.clone();
        bad[13] = 0x93;
        assert!(!plausible(&bad, avail), "not a map");
        assert!(!plausible(&block[..8], avail), "too short to tell");
    }
}
