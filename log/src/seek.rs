//! Random access: one block, read at an offset found elsewhere (an index).
//!
//! [`read_block_at`] reads the block that starts at a given file offset of
//! a segment and decodes its records, checking what a front-to-back reader
//! checks for one block: the length against the limit and the bytes left,
//! the CRC, the flags, the decompressed length, each record's length and
//! msgpack. It trusts nothing about the offset: an offset that is no block
//! start fails these checks (the CRC above all) and is reported as
//! `Corrupt`, so a stale or damaged index is caught here and its caller
//! falls back to reading the segment from the front. [`block_crc_at`]
//! reads only the 9-byte block header: a cheap fingerprint of the block
//! there, for telling whether a file still holds the blocks an index saw.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::block::{next_record, BlockHeader, Inflater, BLOCK_HEADER_LEN, MAX_BLOCK_LEN};
use crate::error::{io_err, LogError, Result};
use crate::record::LogRecord;

/// The block header at `offset` of `file`, if 9 bytes are there.
fn header_at(file: &mut File, path: &Path, offset: u64, len: u64) -> Result<BlockHeader> {
    if offset.saturating_add(BLOCK_HEADER_LEN as u64) > len {
        return Err(corrupt(
            path,
            offset,
            "no block header there: past the end of the file",
        ));
    }
    file.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    let mut head = [0u8; BLOCK_HEADER_LEN];
    file.read_exact(&mut head).map_err(io_err(path))?;
    Ok(BlockHeader::decode(&head))
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// The CRC field of the block header at `offset` of the segment `path`
/// (not checked against the payload: a fingerprint, see the module docs).
/// `Corrupt` if the file is too short to hold a block header there.
pub fn block_crc_at(path: &Path, offset: u64) -> Result<u32> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    Ok(header_at(&mut file, path, offset, len)?.crc)
}

/// The records of the block at `offset` of the segment `path`, checked as
/// the module docs say; `Corrupt { offset }` when there is no valid block
/// there. Sequence numbers are not checked against neighbouring blocks:
/// the caller knows which seq it is looking for.
pub fn read_block_at(path: &Path, offset: u64) -> Result<Vec<LogRecord>> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let head = header_at(&mut file, path, offset, file_len)?;
    let len = head.len as usize;
    let left = file_len - offset - BLOCK_HEADER_LEN as u64;
    if len == 0 || len > MAX_BLOCK_LEN || len as u64 > left {
        return Err(corrupt(
            path,
            offset,
            format!(
                "no block there: length {len} (allowed: 1 ..= {MAX_BLOCK_LEN}, {left} bytes left)"
            ),
        ));
    }
    let mut payload = vec![0u8; len];
    file.read_exact(&mut payload).map_err(io_err(path))?;
    if BlockHeader::crc_of(head.flags, &payload) != head.crc {
        return Err(corrupt(
            path,
            offset,
            "no valid block there: checksum mismatch",
        ));
    }
    let raw = Inflater::default()
        .records_area(head.flags, &payload)
        .map_err(|r| corrupt(path, offset, r))?;
    let mut records = Vec::new();
    let mut pos = 0;
    while let Some(bytes) = next_record(&raw, &mut pos) {
        let bytes = bytes.map_err(|r| corrupt(path, offset, r))?;
        let record = LogRecord::decode(bytes).map_err(|e| corrupt(path, offset, e.to_string()))?;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use distkv_model::{path, Chain, NodeName, UpdateEvent, Value};

    use super::*;
    use crate::writer::{FsyncPolicy, LogWriter, Now, WriterConfig};

    type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_block_is_read_at_the_offset_its_commit_reported() -> TestResult {
        let tmp = tempfile::tempdir()?;
        let mut cfg = WriterConfig::new("n1");
        cfg.fsync = FsyncPolicy::Never;
        cfg.compress_min_bytes = 64;
        let mut w = LogWriter::open(tmp.path(), cfg, Now::at(1))?;
        let mut commits = Vec::new();
        for b in 0..3u64 {
            for i in 0..20u64 {
                let n = b * 20 + i + 1;
                let ev = UpdateEvent {
                    path: path!["k", n],
                    chain: Chain::single(NodeName::from("n1"), n),
                    value: Some(Value::str(&"x".repeat(40))),
                    tock: n,
                };
                w.append_event(100 + n, &ev)?;
            }
            commits.push(w.commit(Now::at(100))?);
        }
        let seg = w.segment_path().to_path_buf();
        w.close(Now::at(200))?;
        for (b, c) in commits.iter().enumerate() {
            assert_eq!(c.segment, 1);
            assert_eq!(block_crc_at(&seg, c.offset)?, c.crc);
            let recs = read_block_at(&seg, c.offset)?;
            let seqs: Vec<u64> = recs.iter().map(LogRecord::seq).collect();
            let first = b as u64 * 20 + 1;
            assert_eq!(seqs, (first..first + 20).collect::<Vec<_>>());
        }
        assert!(commits.iter().any(|c| c.compressed));
        // An offset inside a block, past the end, or a flipped byte: a
        // clear error, never a panic or wrong records.
        for off in [
            commits[1].offset + 1,
            commits[2].offset + 5,
            u64::MAX - 3,
            0,
        ] {
            assert!(
                matches!(read_block_at(&seg, off), Err(LogError::Corrupt { .. })),
                "{off}"
            );
        }
        let mut bytes = std::fs::read(&seg)?;
        bytes[commits[1].offset as usize + 20] ^= 1;
        std::fs::write(&seg, &bytes)?;
        match read_block_at(&seg, commits[1].offset) {
            Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, commits[1].offset),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(block_crc_at(&seg, commits[0].offset)?, {
            let h: [u8; 4] = bytes[commits[0].offset as usize + 4..][..4].try_into()?;
            u32::from_le_bytes(h)
        });
        Ok(())
    }
}
