//! The file header: what a snapshot is of.
//!
//! The header names the node, the log position the snapshot covers and the
//! node's tock, and is checksummed on its own so a reader can trust it before
//! touching any block. It is written once, first, and never changes.
//! Parsing is a pure function over bytes: it reports a header that is cut
//! short separately from one that is wrong, and never panics.

use distkv_model::NodeName;

/// The first 8 bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"DKVSNAP\n";

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// Bytes before the node name: magic, version, name length.
pub(crate) const FIXED_PREFIX: usize = 8 + 2 + 2;

/// Bytes after the node name: seq, created_ms, tock, CRC32.
pub(crate) const FIXED_SUFFIX: usize = 8 + 8 + 8 + 4;

/// The largest possible header (a node name of 65 535 bytes).
pub(crate) const MAX_HEADER_LEN: usize = FIXED_PREFIX + u16::MAX as usize + FIXED_SUFFIX;

/// What a snapshot is of.
///
/// Layout (all integers little-endian):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `DKVSNAP\n` ([`MAGIC`]) |
/// | 8 | 2 | format version, u16 ([`FORMAT_VERSION`]) |
/// | 10 | 2 | node name length `n`, u16 |
/// | 12 | n | node name, UTF-8 |
/// | 12+n | 8 | `seq`, u64 |
/// | 20+n | 8 | `created_ms`, u64 |
/// | 28+n | 8 | `tock`, u64 |
/// | 36+n | 4 | CRC32 (crc32fast / IEEE) of bytes `0 .. 36+n` |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The node whose state this is (at most 65 535 bytes of UTF-8).
    pub node: NodeName,
    /// The log position covered: every log record with a sequence number
    /// `≤ seq` is reflected in the snapshot, none above it.
    pub seq: u64,
    /// When the snapshot was started, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The node's tock at `seq`.
    pub tock: u64,
}

/// Why header bytes could not be parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// The bytes end before the header does (they may still be a prefix of
    /// a valid header).
    Short,
    /// The bytes are not a valid header.
    Bad(String),
}

impl SnapshotHeader {
    /// The encoded header. `Err` names what the format cannot hold.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        let name = self.node.as_bytes();
        let n = u16::try_from(name.len())
            .map_err(|_| format!("node name of {} bytes exceeds 65535", name.len()))?;
        let mut out = Vec::with_capacity(FIXED_PREFIX + name.len() + FIXED_SUFFIX);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.tock.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses the header at the start of `buf`, returning it and its length.
    pub(crate) fn parse(buf: &[u8]) -> Result<(SnapshotHeader, usize), HeaderError> {
        let magic_len = buf.len().min(MAGIC.len());
        if buf[..magic_len] != MAGIC[..magic_len] {
            return Err(HeaderError::Bad("not a distkv snapshot (bad magic)".into()));
        }
        if buf.len() < FIXED_PREFIX {
            return Err(HeaderError::Short);
        }
        let n = u16::from_le_bytes([buf[10], buf[11]]) as usize;
        let total = FIXED_PREFIX + n + FIXED_SUFFIX;
        let Some(h) = buf.get(..total) else {
            return Err(HeaderError::Short);
        };
        let (body, crc) = h.split_at(total - 4);
        let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let got = crc32fast::hash(body);
        if got != want {
            return Err(HeaderError::Bad(format!(
                "header checksum mismatch (stored {want:#010x}, computed {got:#010x})"
            )));
        }
        let version = u16::from_le_bytes([buf[8], buf[9]]);
        if version != FORMAT_VERSION {
            return Err(HeaderError::Bad(format!(
                "unsupported format version {version} (this build reads {FORMAT_VERSION})"
            )));
        }
        let name = std::str::from_utf8(&body[FIXED_PREFIX..FIXED_PREFIX + n])
            .map_err(|_| HeaderError::Bad("node name is not UTF-8".into()))?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let at = FIXED_PREFIX + n;
        Ok((
            SnapshotHeader {
                node: NodeName::from(name),
                seq: u64_at(at),
                created_ms: u64_at(at + 8),
                tock: u64_at(at + 16),
            },
            total,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotHeader {
        SnapshotHeader {
            node: NodeName::from("n1"),
            seq: 42,
            created_ms: 1_700_000_000_000,
            tock: 497,
        }
    }

    #[test]
    fn header_round_trips_with_documented_layout() -> Result<(), String> {
        let b = sample().encode()?;
        assert_eq!(&b[..8], b"DKVSNAP\n");
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(&b[10..12], &[2, 0]);
        assert_eq!(&b[12..14], b"n1");
        assert_eq!(&b[14..22], &42u64.to_le_bytes());
        assert_eq!(b.len(), 14 + 28);
        assert_eq!(SnapshotHeader::parse(&b), Ok((sample(), b.len())));
        Ok(())
    }

    #[test]
    fn every_prefix_is_short_and_every_flip_is_bad() -> Result<(), String> {
        let b = sample().encode()?;
        for cut in 0..b.len() {
            assert_eq!(SnapshotHeader::parse(&b[..cut]), Err(HeaderError::Short));
        }
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            // A flipped name length may make the header look longer than the
            // bytes at hand: that is "short", and the reader then finds the
            // file too short or the checksum wrong.
            match SnapshotHeader::parse(&c) {
                Err(HeaderError::Bad(_)) => {}
                Err(HeaderError::Short) if i == 10 || i == 11 => {}
                other => panic!("flip at {i} gave {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn oversized_node_name_is_refused() {
        let mut h = sample();
        h.node = NodeName::from("x".repeat(70_000));
        assert!(h.encode().is_err());
    }
}
