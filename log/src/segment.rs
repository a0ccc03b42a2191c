//! Segment files: their names, their header and the directory listing.
//!
//! An event-log directory holds segment files named after the first record
//! they cover, `<first_seq as 20 zero-padded digits>.dkvlog`, so that the
//! lexical and numeric orders agree and a file's first position is known
//! without opening it. Other files in the directory are ignored.
//!
//! Invariants the writer keeps and the reader checks: a segment's header
//! repeats the `first_seq` of its name; segments never gap: each segment
//! starts right after the last record of the one before it; only the newest
//! segment (the *open* one) is ever written to, every older one is *closed*
//! and was fsynced before its successor was named (a segment being
//! created is `<name>.new` until then: see the writer).
//!
//! Header parsing is a pure function over bytes that tells a header cut
//! short or failing its checksum (what a crash while creating the file can
//! leave: *torn*) from one that is wrong in a way no crash explains.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use distkv_model::NodeName;

use crate::error::{io_err, LogError, Result};
use crate::Seq;

/// The first 8 bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"DKVLOG\r\n";

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// File name extension of segment files.
pub const SEGMENT_EXTENSION: &str = "dkvlog";

/// Bytes before the node name: magic, version, name length.
const FIXED_PREFIX: usize = 8 + 2 + 2;
/// Bytes after the node name: first_seq, created_ms, CRC32.
const FIXED_SUFFIX: usize = 8 + 8 + 4;

/// The header at the start of every segment file.
///
/// Layout (all integers little-endian):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `DKVLOG\r\n` ([`MAGIC`]) |
/// | 8 | 2 | format version, u16 ([`FORMAT_VERSION`]) |
/// | 10 | 2 | node name length `n`, u16 (1 ..= 65 535) |
/// | 12 | n | node name, UTF-8 |
/// | 12+n | 8 | `first_seq`, u64 |
/// | 20+n | 8 | `created_ms`, u64 |
/// | 28+n | 4 | CRC32 (crc32fast / IEEE) of bytes `0 .. 28+n` |
///
/// Blocks follow from byte `32+n` (see [`crate::block`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The node whose log this is.
    pub node: NodeName,
    /// Sequence number of the segment's first record (also in the name).
    pub first_seq: Seq,
    /// When the segment was created, ms since the Unix epoch (the caller's
    /// clock). Rotation by age and retention by age measure from it.
    pub created_ms: u64,
}

/// Why header bytes are not a valid header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Cut short, failing its checksum, or all zeros: what a crash while
    /// creating the file can leave.
    Torn(String),
    /// Wrong in a way a crash does not explain (not a segment, a newer
    /// version, invalid name despite a good checksum).
    Bad(String),
}

impl SegmentHeader {
    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        FIXED_PREFIX + self.node.len() + FIXED_SUFFIX
    }

    /// The encoded header; `InvalidInput` if the node name is empty or
    /// longer than 65 535 bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let name = self.node.as_bytes();
        let n = u16::try_from(name.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                LogError::InvalidInput(format!(
                    "node name of {} bytes: must be 1 to 65535 bytes",
                    name.len()
                ))
            })?;
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses the header at the start of `b`; returns it and its length.
    pub(crate) fn decode(b: &[u8]) -> std::result::Result<(SegmentHeader, usize), HeaderError> {
        let torn = |r: &str| Err(HeaderError::Torn(r.to_string()));
        let magic_len = b.len().min(MAGIC.len());
        if b[..magic_len] != MAGIC[..magic_len] {
            if b[..magic_len].iter().all(|&x| x == 0) {
                return torn("header is zero-filled");
            }
            return Err(HeaderError::Bad(
                "not an event log segment (bad magic)".into(),
            ));
        }
        if b.len() < FIXED_PREFIX {
            return torn("header is cut short");
        }
        let n = u16::from_le_bytes([b[10], b[11]]) as usize;
        let total = FIXED_PREFIX + n + FIXED_SUFFIX;
        if b.len() < total {
            return torn("header is cut short");
        }
        let body = &b[..total - 4];
        let want = u32::from_le_bytes(le_array(&b[total - 4..total]));
        if crc32fast::hash(body) != want {
            return torn("header checksum mismatch");
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Bad(format!(
                "unsupported format version {version} (this build reads {FORMAT_VERSION})"
            )));
        }
        let name = std::str::from_utf8(&b[FIXED_PREFIX..FIXED_PREFIX + n])
            .map_err(|_| HeaderError::Bad("node name is not UTF-8".into()))?;
        if name.is_empty() {
            return Err(HeaderError::Bad("node name is empty".into()));
        }
        let at = FIXED_PREFIX + n;
        Ok((
            SegmentHeader {
                node: NodeName::from(name),
                first_seq: u64::from_le_bytes(le_array(&b[at..at + 8])),
                created_ms: u64::from_le_bytes(le_array(&b[at + 8..at + 16])),
            },
            total,
        ))
    }
}

/// The first `N` bytes of `b` as an array (`b` is at least `N` long at
/// every call site; shorter input is zero-padded rather than panicking).
pub(crate) fn le_array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = b.len().min(N);
    a[..n].copy_from_slice(&b[..n]);
    a
}

/// A segment file opened and its header parsed, whatever its state.
pub(crate) struct RawHeader {
    /// The file, positioned somewhere inside or after the header.
    pub file: File,
    /// The file's length.
    pub len: u64,
    /// The header and its length, or what is wrong with it.
    pub parsed: std::result::Result<(SegmentHeader, usize), HeaderError>,
}

/// Opens the segment at `path` and parses its header (damage is reported
/// in [`RawHeader::parsed`], I/O failures as errors).
pub(crate) fn read_header_raw(path: &Path) -> Result<RawHeader> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let want = (FIXED_PREFIX + u16::MAX as usize + FIXED_SUFFIX) as u64;
    let mut buf = Vec::with_capacity(want.min(len) as usize);
    (&mut file)
        .take(want.min(len))
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    let parsed = SegmentHeader::decode(&buf);
    Ok(RawHeader { file, len, parsed })
}

/// Reads the header of the segment at `path`; any damage is `Corrupt`
/// (offset 0), and a header whose `first_seq` disagrees with the file name
/// is `Corrupt` too.
pub fn read_segment_header(path: &Path) -> Result<SegmentHeader> {
    let (h, _) = read_header_raw(path)?
        .parsed
        .map_err(|e| LogError::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: match e {
                HeaderError::Torn(r) | HeaderError::Bad(r) => r,
            },
        })?;
    check_name(path, &h)?;
    Ok(h)
}

/// `Corrupt` unless the header's first seq is the one in the file name
/// (its segment name or its pending one).
pub(crate) fn check_name(path: &Path, h: &SegmentHeader) -> Result<()> {
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| parse_segment_file_name(n).or_else(|| parse_pending_segment_file_name(n)));
    if named != Some(h.first_seq) {
        return Err(LogError::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "header says the segment starts at record {}, the file name disagrees",
                h.first_seq
            ),
        });
    }
    Ok(())
}

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: Seq) -> String {
    format!("{first_seq:020}.{SEGMENT_EXTENSION}")
}

/// The first seq named by a segment file name; `None` for other names.
pub fn parse_segment_file_name(name: &str) -> Option<Seq> {
    let digits = name.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name of segment `first_seq` while a rotation makes it durable
/// (see the writer): `<segment name>.new`.
pub(crate) fn pending_segment_file_name(first_seq: Seq) -> String {
    format!("{}.{PENDING_EXTENSION}", segment_file_name(first_seq))
}

const PENDING_EXTENSION: &str = "new";

/// The first seq named by a pending segment's file name; `None` for other
/// names.
fn parse_pending_segment_file_name(name: &str) -> Option<Seq> {
    parse_segment_file_name(name.strip_suffix(PENDING_EXTENSION)?.strip_suffix('.')?)
}

/// The segments of `dir` still under their pending names (see
/// [`pending_segment_file_name`]), lowest first seq first.
pub(crate) fn list_pending_segments(dir: &Path) -> Result<Vec<(Seq, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(parse_pending_segment_file_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One segment file found in a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its path.
    pub path: PathBuf,
    /// The first seq, from the file name.
    pub first_seq: Seq,
    /// Its size in bytes when listed.
    pub bytes: u64,
}

/// The segment files of `dir`, oldest (lowest first seq) first. The last
/// one is the open segment. Files with other names are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(first_seq) = name.to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        let path = entry.path();
        let meta = entry.metadata().map_err(io_err(&path))?;
        if !meta.is_file() {
            continue;
        }
        out.push(SegmentInfo {
            path,
            first_seq,
            bytes: meta.len(),
        });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// fsyncs a directory so that creations, renames and deletions in it are
/// durable. (Directories cannot be opened for syncing on every platform;
/// where they cannot, this does nothing.)
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            node: NodeName::from("n1"),
            first_seq: 42,
            created_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn header_round_trips_and_documents_its_layout() -> Result<()> {
        let h = header();
        let b = h.encode()?;
        assert_eq!(b.len(), 32 + 2);
        assert_eq!(&b[..8], b"DKVLOG\r\n");
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(&b[10..12], &[2, 0]);
        assert_eq!(&b[12..14], b"n1");
        assert_eq!(&b[14..22], &42u64.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&b), Ok((h, b.len())));
        Ok(())
    }

    #[test]
    fn every_cut_of_a_header_is_torn_and_every_flip_detected() -> Result<()> {
        let b = header().encode()?;
        for cut in 0..b.len() {
            assert!(
                matches!(SegmentHeader::decode(&b[..cut]), Err(HeaderError::Torn(_))),
                "cut at {cut}"
            );
        }
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(SegmentHeader::decode(&c).is_err(), "flip at {i}");
        }
        assert!(matches!(
            SegmentHeader::decode(&[0u8; 40]),
            Err(HeaderError::Torn(_))
        ));
        assert!(matches!(
            SegmentHeader::decode(b"not a log at all, really not"),
            Err(HeaderError::Bad(_))
        ));
        Ok(())
    }

    #[test]
    fn names_sort_numerically_and_reject_strangers() {
        assert_eq!(segment_file_name(7), "00000000000000000007.dkvlog");
        assert_eq!(segment_file_name(u64::MAX), "18446744073709551615.dkvlog");
        assert_eq!(
            parse_segment_file_name("18446744073709551615.dkvlog"),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("99999999999999999999.dkvlog"), None);
        assert_eq!(parse_segment_file_name("0000000000000000007.dkvlog"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000007.dkvlog.tmp"),
            None
        );
        assert_eq!(parse_segment_file_name("0000000000000000000a.dkvlog"), None);
    }

    #[test]
    fn empty_and_oversized_names_are_invalid_input() {
        for name in ["".to_string(), "x".repeat(70_000)] {
            let h = SegmentHeader {
                node: NodeName::from(name.as_str()),
                ..header()
            };
            assert!(matches!(h.encode(), Err(LogError::InvalidInput(_))));
        }
    }
}
