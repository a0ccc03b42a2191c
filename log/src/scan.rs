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
//!    contain the bytes of a valid block cannot be taken for one.
//! 2. **The damaged block's own checksum.** If only the length field is
//!    damaged, the payload and its CRC are intact: the CRC of the flags
//!    byte and the bytes after the header is computed in one pass, and the
//!    first position where it matches the stored CRC and a valid block
//!    follows is where the damaged block really ends. That block is then
//!    whole again (the *repaired* block) and nothing is lost. This pass runs
//!    up to where method 1 found a block, if it did (a damaged length may
//!    point past valid blocks), else up to the largest block or the end of
//!    the file.
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
//! continue the log. That takes a disk fault hitting exactly such a block
//! and an operator choosing salvage.

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

/// Bytes read per step of methods 2 and 3.
const CHUNK: usize = 1 << 20;

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
        // 1. The damaged block's own length.
        let mut by_length = None;
        if let Some(h) = head.filter(|h| h.len >= 1 && h.len as usize <= MAX_BLOCK_LEN) {
            let next = d + (BLOCK_HEADER_LEN as u64) + u64::from(h.len);
            if next < self.len {
                by_length = self
                    .valid_at(next, expected)?
                    .map(|(resume, _)| (next, resume));
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

    /// Method 2: the first position `x ≤ bound` after the header of the
    /// damaged block at `d` where the CRC of its flags and the bytes up to
    /// `x` matches its stored CRC, its payload decodes and a valid block
    /// follows.
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
        let mut crc = Crc32::new();
        crc.update(h.flags);
        let mut buf = vec![0u8; (limit.saturating_sub(start) as usize).min(CHUNK)];
        let mut at = start;
        while at < limit {
            let n = ((limit - at) as usize).min(CHUNK);
            self.read_at(at, &mut buf[..n])?;
            for (i, &b) in buf[..n].iter().enumerate() {
                crc.update(b);
                if crc.value() != h.crc {
                    continue;
                }
                let end = at + i as u64 + 1;
                if let Some(after) = self.whole_block(start, end, h.flags, expected)? {
                    return Ok(Some(after));
                }
            }
            at += n as u64;
        }
        Ok(None)
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

    /// Method 3: the first offset from `from` on where a valid block starts.
    fn scan_from(&mut self, from: u64, expected: Seq) -> Result<After, Stop> {
        let mut buf = vec![0u8; (self.len.saturating_sub(from) as usize).min(CHUNK + PEEK)];
        let mut at = from;
        while at + MIN_BLOCK <= self.len {
            let n = ((self.len - at) as usize).min(CHUNK + PEEK);
            self.read_at(at, &mut buf[..n])?;
            // Offsets whose peek window is whole in this read, or every
            // offset of the file's last bytes.
            let offsets = if n == CHUNK + PEEK { CHUNK } else { n };
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
            first >= 1
                && first + 4 <= len
                && peek
                    .get(13)
                    .is_some_and(|&m| (0x80..=0x8f).contains(&m) || m == 0xde || m == 0xdf)
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
        check_sequence(&rec, next).ok()?;
    }
    span
}

/// CRC32 (IEEE, as crc32fast computes it) one byte at a time, so that the
/// value after every byte can be compared.
struct Crc32(u32);

/// The byte-at-a-time table of the reflected IEEE polynomial.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

impl Crc32 {
    fn new() -> Crc32 {
        Crc32(!0)
    }

    fn update(&mut self, b: u8) {
        self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xff) as usize] ^ (self.0 >> 8);
    }

    fn value(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytewise_crc_agrees_with_crc32fast() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut c = Crc32::new();
        for (i, &b) in data.iter().enumerate() {
            c.update(b);
            assert_eq!(c.value(), crc32fast::hash(&data[..=i]), "after {i} bytes");
        }
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
