//! Blocks: the unit of writing, checksumming and compression.
//!
//! After its header, a segment is a sequence of blocks; each holds the
//! records of one group commit. A block is written with one `write` call and
//! is valid only as a whole: its CRC covers the flags byte and the payload,
//! so a block cut short or damaged anywhere is detected.
//!
//! Block layout (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `len`: payload length in bytes, u32 (1 ..= [`MAX_BLOCK_LEN`]) |
//! | 4 | 4 | CRC32 (crc32fast / IEEE) of the flags byte followed by the payload |
//! | 8 | 1 | flags: bit 0 = payload is zstd-compressed ([`FLAG_ZSTD`]); other bits 0 |
//! | 9 | len | payload |
//!
//! The *records area* is a concatenation of `u32 LE length` + record bytes
//! ([`crate::LogRecord`] msgpack), each length ≥ 1. Uncompressed, the
//! payload is the records area. Compressed, the payload is `u32 LE length of
//! the records area` followed by one zstd frame holding the records area.
//! The writer compresses a records area of at least
//! [`WriterConfig::compress_min_bytes`](crate::WriterConfig) bytes, and keeps
//! the compressed form only when it saves at least an eighth.
//!
//! Reading classifies damage: a block cut short, longer than the limit or
//! failing its CRC is *torn* (what a crash mid-write or a failing disk
//! leaves); a block that passes its CRC but cannot be decoded is *invalid*
//! and always an error. Whether torn damage is a torn *tail* (nothing valid
//! after it) or corruption in the middle is decided by looking for valid
//! blocks after it: the `scan` module.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{io_err, LogError, Result};
use crate::scan::{After, Damaged, Scan};
use crate::segment::{
    check_name, le_array, read_header_raw, HeaderError, RawHeader, SegmentHeader,
};
use crate::Seq;

/// The largest block payload, and the largest records area of a compressed
/// block: 64 MiB.
pub const MAX_BLOCK_LEN: usize = 64 << 20;

/// Bytes of a block before its payload: length, CRC, flags.
pub const BLOCK_HEADER_LEN: usize = 9;

/// Flags bit 0: the payload is a zstd frame.
pub const FLAG_ZSTD: u8 = 1;

/// The 9 bytes before a block's payload.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | `len`: payload length in bytes, u32 LE (1 ..= [`MAX_BLOCK_LEN`]) |
/// | 4 | 4 | `crc`: CRC32 (crc32fast / IEEE) of the flags byte, then the payload, u32 LE |
/// | 8 | 1 | `flags`: bit 0 = [`FLAG_ZSTD`], bits 1–7 zero |
///
/// The payload (`len` bytes) follows: the records area, or with
/// [`FLAG_ZSTD`] its length (u32 LE) and a zstd frame of it. The records
/// area is a run of `u32 LE length (≥ 1)` + record bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// Payload length.
    pub len: u32,
    /// CRC32 of the flags byte and the payload.
    pub crc: u32,
    /// Flags.
    pub flags: u8,
}

impl BlockHeader {
    /// The header of a block with these flags and payload.
    pub fn of(flags: u8, payload: &[u8]) -> BlockHeader {
        BlockHeader {
            len: payload.len() as u32,
            crc: BlockHeader::crc_of(flags, payload),
            flags,
        }
    }

    /// The CRC32 a block with these flags and payload must carry.
    pub fn crc_of(flags: u8, payload: &[u8]) -> u32 {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[flags]);
        crc.update(payload);
        crc.finalize()
    }

    /// The encoded header.
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut b = [0u8; BLOCK_HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..8].copy_from_slice(&self.crc.to_le_bytes());
        b[8] = self.flags;
        b
    }

    /// Decodes the header (any 9 bytes decode; validity is checked against
    /// the payload).
    pub fn decode(b: &[u8; BLOCK_HEADER_LEN]) -> BlockHeader {
        BlockHeader {
            len: u32::from_le_bytes(le_array(&b[0..4])),
            crc: u32::from_le_bytes(le_array(&b[4..8])),
            flags: b[8],
        }
    }
}

/// Encodes blocks, reusing its buffers and zstd context.
pub(crate) struct BlockEncoder {
    level: i32,
    min_compress: usize,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    zbuf: Vec<u8>,
    out: Vec<u8>,
}

impl BlockEncoder {
    /// An encoder compressing records areas of at least `min_compress` bytes
    /// at zstd `level` (`usize::MAX`: never compress).
    pub(crate) fn new(level: i32, min_compress: usize) -> BlockEncoder {
        BlockEncoder {
            level,
            min_compress,
            compressor: None,
            zbuf: Vec::new(),
            out: Vec::new(),
        }
    }

    /// The block holding the records area `raw`, and whether it is
    /// compressed. Compression failures fall back to a raw block.
    pub(crate) fn encode(&mut self, raw: &[u8]) -> (&[u8], bool) {
        let compressed = raw.len() >= self.min_compress && self.compress(raw);
        let (flags, payload): (u8, &[u8]) = if compressed {
            (FLAG_ZSTD, &self.zbuf)
        } else {
            (0, raw)
        };
        self.out.clear();
        self.out.reserve(BLOCK_HEADER_LEN + payload.len());
        self.out
            .extend_from_slice(&BlockHeader::of(flags, payload).encode());
        self.out.extend_from_slice(payload);
        (&self.out, compressed)
    }

    /// Compresses `raw` into `zbuf` (length prefix + frame); true if that
    /// saves at least an eighth.
    fn compress(&mut self, raw: &[u8]) -> bool {
        if self.compressor.is_none() {
            self.compressor = zstd::bulk::Compressor::new(self.level).ok();
        }
        let Some(c) = self.compressor.as_mut() else {
            return false;
        };
        let mut frame = std::mem::take(&mut self.zbuf);
        frame.clear();
        frame.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let ok = c.compress_to_buffer(raw, &mut frame).is_ok();
        let worth = ok && 4 + frame.len() <= raw.len() - raw.len() / 8;
        if worth {
            let mut z = Vec::with_capacity(4 + frame.len());
            z.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            z.extend_from_slice(&frame);
            self.zbuf = z;
        } else {
            self.zbuf = frame;
        }
        worth
    }
}

/// What is wrong at `offset` of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Start of the damaged header (0) or block.
    pub offset: u64,
    /// Whether a disk or a crash explains it (cut short, over-long length,
    /// checksum mismatch, a zero-filled header): such damage is a torn tail
    /// when nothing valid follows it, and corruption that a salvage can
    /// skip when valid blocks do. Damage that passes its checksum but
    /// cannot be decoded (or a header that is not ours) is never skipped.
    pub torn: bool,
    /// What is wrong.
    pub reason: String,
}

impl Damage {
    /// The damage as a `Corrupt` error of `file`.
    pub(crate) fn corrupt(self, file: &Path) -> LogError {
        LogError::Corrupt {
            file: file.to_path_buf(),
            offset: self.offset,
            reason: self.reason,
        }
    }
}

/// The outcome of reading the next block.
pub(crate) enum Next {
    /// A valid block: its offset and its records area.
    Block {
        /// Where the block starts.
        offset: u64,
        /// The records area (decompressed).
        raw: Vec<u8>,
    },
    /// The file (as long as it was when opened) ends here, cleanly.
    End,
    /// The header (offset 0) or the block at `damage.offset` is damaged;
    /// calls repeat it until [`BlockReader::after_damage`] moves past it.
    Damaged(Damage),
}

/// Reads the blocks of one segment file, front to back.
pub(crate) struct BlockReader {
    path: PathBuf,
    file: BufReader<File>,
    /// `None` when the header is damaged (see `header_damage`).
    header: Option<SegmentHeader>,
    header_damage: Option<Damage>,
    /// Offset of the next block.
    pos: u64,
    /// File length when opened; later appends are not read.
    len: u64,
    payload: Vec<u8>,
    inflater: Inflater,
    /// Bytes the search for valid blocks after damage may still read.
    budget: u64,
}

impl BlockReader {
    /// Opens `path` and parses its header. A damaged header is reported by
    /// [`BlockReader::header_damage`] and by the first
    /// [`next_block`](BlockReader::next_block); a header whose first seq
    /// disagrees with the file name is `Corrupt`.
    pub(crate) fn open(path: &Path) -> Result<BlockReader> {
        let RawHeader {
            mut file,
            len,
            parsed,
        } = read_header_raw(path)?;
        let damage = |torn: bool, reason: String| Damage {
            offset: 0,
            torn,
            reason: format!("segment header: {reason}"),
        };
        let (header, header_damage, pos) = match parsed {
            Ok((h, header_len)) => {
                check_name(path, &h)?;
                (Some(h), None, header_len as u64)
            }
            Err(HeaderError::Torn(r)) => (None, Some(damage(true, r)), 0),
            Err(HeaderError::Bad(r)) => (None, Some(damage(false, r)), 0),
        };
        file.seek(SeekFrom::Start(pos)).map_err(io_err(path))?;
        Ok(BlockReader {
            path: path.to_path_buf(),
            file: BufReader::with_capacity(64 << 10, file),
            header,
            header_damage,
            pos,
            len,
            payload: Vec::new(),
            inflater: Inflater::default(),
            budget: crate::scan::budget(len),
        })
    }

    /// The segment's header (`None` if it is damaged).
    pub(crate) fn header(&self) -> Option<&SegmentHeader> {
        self.header.as_ref()
    }

    /// What is wrong with the header, if anything.
    pub(crate) fn header_damage(&self) -> Option<&Damage> {
        self.header_damage.as_ref()
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the next block (after a `Block`, the end of that block).
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// The file length when opened.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Reads the next block. After `End` or `Damaged`, calls repeat it.
    pub(crate) fn next_block(&mut self) -> Result<Next> {
        let offset = self.pos;
        if offset == 0 {
            if let Some(d) = &self.header_damage {
                return Ok(Next::Damaged(d.clone()));
            }
        }
        let left = self.len - offset;
        let torn = |reason: String| {
            Ok(Next::Damaged(Damage {
                offset,
                torn: true,
                reason,
            }))
        };
        if left == 0 {
            return Ok(Next::End);
        }
        if left < BLOCK_HEADER_LEN as u64 {
            return torn(format!(
                "block header cut short: {left} of {BLOCK_HEADER_LEN} bytes"
            ));
        }
        let mut head = [0u8; BLOCK_HEADER_LEN];
        self.file
            .read_exact(&mut head)
            .map_err(io_err(&self.path))?;
        let head = BlockHeader::decode(&head);
        let (len, flags) = (head.len as usize, head.flags);
        if len > MAX_BLOCK_LEN {
            self.seek(offset)?;
            return torn(format!(
                "block length {len} exceeds the limit of {MAX_BLOCK_LEN} bytes"
            ));
        }
        let avail = left - BLOCK_HEADER_LEN as u64;
        if len as u64 > avail {
            self.seek(offset)?;
            return torn(format!(
                "block of {len} bytes cut short: {avail} bytes left in the file"
            ));
        }
        self.payload.clear();
        self.payload.resize(len, 0);
        self.file
            .read_exact(&mut self.payload)
            .map_err(io_err(&self.path))?;
        if BlockHeader::crc_of(flags, &self.payload) != head.crc {
            self.seek(offset)?;
            return torn("block checksum mismatch".to_string());
        }
        match self.inflater.records_area(flags, &self.payload) {
            Ok(raw) => {
                self.pos = offset + (BLOCK_HEADER_LEN + len) as u64;
                Ok(Next::Block { offset, raw })
            }
            Err(reason) => {
                self.seek(offset)?;
                Ok(Next::Damaged(Damage {
                    offset,
                    torn: false,
                    reason,
                }))
            }
        }
    }

    /// Looks for valid blocks after `damage` (which the last
    /// [`next_block`](BlockReader::next_block) reported), whose records must
    /// resume at event seq `expected` or later; see the `scan` module. When
    /// one is found, reading goes on there.
    pub(crate) fn after_damage(&mut self, damage: &Damage, expected: Seq) -> Result<After> {
        let from = if damage.offset == 0 && self.header.is_none() {
            Damaged::Header
        } else {
            Damaged::Block(damage.offset)
        };
        let mut scan = Scan {
            file: self.file.get_mut(),
            path: &self.path,
            len: self.len,
            budget: &mut self.budget,
            inflater: &mut self.inflater,
        };
        let after = scan.after(from, expected)?;
        if let After::Found { at, .. } = &after {
            self.seek(*at)?;
        } else {
            // The scan moved the file position.
            self.seek(self.pos)?;
        }
        Ok(after)
    }

    /// Takes back a records area [`next_block`](BlockReader::next_block)
    /// returned, once the caller is done with it: the next block's is
    /// decompressed into it.
    pub(crate) fn recycle(&mut self, area: Vec<u8>) {
        self.inflater.recycle(area);
    }

    /// Puts the read position at `offset` (a block start the caller
    /// checked).
    pub(crate) fn seek_to(&mut self, offset: u64) -> Result<()> {
        self.seek(offset)
    }

    /// Puts the read position at `offset`.
    fn seek(&mut self, offset: u64) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(io_err(&self.path))?;
        self.pos = offset;
        Ok(())
    }
}

/// Turns block payloads into records areas, reusing one zstd context and
/// the buffer of an area its reader is done with ([`Inflater::recycle`]):
/// a fresh buffer per block is fresh memory the kernel zeroes first (an
/// eighth of a `restore`'s samples where that is slow: docs/perf.md,
/// "Durable history").
#[derive(Default)]
pub(crate) struct Inflater {
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    spare: Vec<u8>,
}

impl Inflater {
    /// The records area of a block whose CRC matched, or what is wrong.
    pub(crate) fn records_area(
        &mut self,
        flags: u8,
        payload: &[u8],
    ) -> std::result::Result<Vec<u8>, String> {
        let mut raw = std::mem::take(&mut self.spare);
        raw.clear();
        match self.inflate(flags, payload, &mut raw) {
            Ok(()) => Ok(raw),
            Err(e) => {
                self.spare = raw;
                Err(e)
            }
        }
    }

    /// Writes the records area of `payload` into the empty `raw`.
    fn inflate(
        &mut self,
        flags: u8,
        payload: &[u8],
        raw: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        if flags & !FLAG_ZSTD != 0 {
            return Err(format!("unknown block flags {flags:#04x}"));
        }
        if payload.is_empty() {
            return Err("empty block".into());
        }
        if flags & FLAG_ZSTD == 0 {
            raw.extend_from_slice(payload);
            return Ok(());
        }
        if payload.len() < 4 {
            return Err("compressed block without its length prefix".into());
        }
        let raw_len = u32::from_le_bytes(le_array(&payload[..4])) as usize;
        if raw_len == 0 || raw_len > MAX_BLOCK_LEN {
            return Err(format!(
                "compressed block announces {raw_len} bytes (allowed: 1 ..= {MAX_BLOCK_LEN})"
            ));
        }
        if self.decompressor.is_none() {
            self.decompressor = Some(
                zstd::bulk::Decompressor::new().map_err(|e| format!("cannot set up zstd: {e}"))?,
            );
        }
        let Some(d) = self.decompressor.as_mut() else {
            return Err("cannot set up zstd".into());
        };
        // Room for what the prefix says; a recycled buffer may have more,
        // and a frame holding more than that fails the check below.
        raw.reserve(raw_len);
        let n = d
            .decompress_to_buffer(&payload[4..], raw)
            .map_err(|e| format!("zstd: {e}"))?;
        if n != raw_len || raw.len() != raw_len {
            return Err(format!(
                "compressed block holds {n} bytes, its prefix says {raw_len}"
            ));
        }
        Ok(())
    }

    /// Takes back a records area this inflater made, for the next one.
    pub(crate) fn recycle(&mut self, area: Vec<u8>) {
        if area.capacity() > self.spare.capacity() {
            self.spare = area;
        }
    }
}

/// The next record of a records area, starting at `*pos`; advances `*pos`.
/// `None` at the end; after an error, `*pos` is at the end.
pub(crate) fn next_record<'a>(
    raw: &'a [u8],
    pos: &mut usize,
) -> Option<std::result::Result<&'a [u8], String>> {
    let rest = raw.get(*pos..).unwrap_or_default();
    if rest.is_empty() {
        return None;
    }
    let fail = |pos: &mut usize, reason: String| {
        *pos = raw.len();
        Some(Err(reason))
    };
    if rest.len() < 4 {
        return fail(pos, "record length cut short".into());
    }
    let n = u32::from_le_bytes(le_array(&rest[..4])) as usize;
    let left = rest.len() - 4;
    if n == 0 || n > left {
        return fail(
            pos,
            format!("record length {n} invalid ({left} bytes left in the block)"),
        );
    }
    *pos += 4 + n;
    Some(Ok(&rest[4..4 + n]))
}

/// Appends a record's bytes, length-prefixed, to a records area.
pub(crate) fn push_record(area: &mut Vec<u8>, record: &[u8]) {
    area.extend_from_slice(&(record.len() as u32).to_le_bytes());
    area.extend_from_slice(record);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zstd_payload(announced: u32, raw: &[u8]) -> Vec<u8> {
        let mut p = announced.to_le_bytes().to_vec();
        p.extend(zstd::bulk::compress(raw, 1).expect("compresses"));
        p
    }

    #[test]
    fn a_recycled_area_holds_exactly_the_next_block_and_checks_it_as_strictly() {
        let mut inflater = Inflater::default();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let area = inflater
            .records_area(FLAG_ZSTD, &zstd_payload(100_000, &big))
            .expect("a valid block");
        assert_eq!(area, big);
        inflater.recycle(area);
        // Room for 100 000 bytes now: a frame holding more than its prefix
        // says still fails, as does one holding less.
        for (announced, raw) in [(500, &big[..600]), (700, &big[..600])] {
            let err = inflater
                .records_area(FLAG_ZSTD, &zstd_payload(announced, raw))
                .expect_err("the prefix lies");
            assert!(err.contains("prefix says"), "{err}");
        }
        let small = inflater
            .records_area(FLAG_ZSTD, &zstd_payload(3, b"abc"))
            .expect("a valid block");
        assert_eq!(small, b"abc");
        assert!(small.capacity() >= 100_000, "the recycled buffer");
        inflater.recycle(small);
        let plain = inflater.records_area(0, b"xyz").expect("a valid block");
        assert_eq!(plain, b"xyz");
    }
}
