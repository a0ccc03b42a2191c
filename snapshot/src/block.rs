//! Block framing: how items are grouped, compressed and checksummed.
//!
//! After the header a snapshot is a sequence of blocks, each
//!
//! | size | field |
//! |---|---|
//! | 4 | compressed length `c`, u32 LE |
//! | 4 | uncompressed length `u`, u32 LE |
//! | 4 | CRC32 (crc32fast / IEEE) over the 8 length bytes followed by the `c` compressed bytes, u32 LE |
//! | c | one zstd frame holding the `u`-byte payload |
//!
//! The payload is a run of items, each a u32 LE length followed by that many
//! bytes of msgpack (see [`crate::item`]). Items never straddle blocks; a
//! block is never empty. Writers close a block once adding the next item
//! would take it past the target size (256 KiB by default), so a block
//! exceeds the target only when it holds a single large item.
//!
//! Invariants a reader checks before allocating or decompressing: `0 < c ≤`
//! [`MAX_BLOCK_LEN`], `0 < u ≤` [`MAX_BLOCK_LEN`], the block lies within the
//! file, the CRC matches, and zstd yields exactly `u` bytes.

/// Bytes of a block header.
pub(crate) const BLOCK_HEADER_LEN: usize = 12;

/// The largest compressed or uncompressed block length a reader accepts
/// (64 MiB).
pub const MAX_BLOCK_LEN: usize = 64 << 20;

/// The largest encoded item (63 MiB): one item in a block of its own must
/// still fit [`MAX_BLOCK_LEN`] together with its length prefix, and zstd's
/// worst-case expansion of incompressible bytes (about 0.4 %) must too.
pub const MAX_ITEM_LEN: usize = 63 << 20;

/// The default target size of a block's uncompressed payload (256 KiB).
pub const DEFAULT_BLOCK_SIZE: usize = 256 << 10;

/// The CRC of a block: over its two length fields and its compressed bytes.
pub(crate) fn block_crc(clen: u32, ulen: u32, compressed: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&clen.to_le_bytes());
    h.update(&ulen.to_le_bytes());
    h.update(compressed);
    h.finalize()
}

/// The 12-byte block header.
pub(crate) fn encode_block_header(clen: u32, ulen: u32, crc: u32) -> [u8; BLOCK_HEADER_LEN] {
    let mut b = [0u8; BLOCK_HEADER_LEN];
    b[0..4].copy_from_slice(&clen.to_le_bytes());
    b[4..8].copy_from_slice(&ulen.to_le_bytes());
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The fields of a block header: `(compressed len, uncompressed len, crc)`.
pub(crate) fn decode_block_header(b: &[u8; BLOCK_HEADER_LEN]) -> (u32, u32, u32) {
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    (u32_at(0), u32_at(4), u32_at(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_header_round_trips() {
        let h = encode_block_header(1, 0x0102_0304, 0xdead_beef);
        assert_eq!(&h[..4], &[1, 0, 0, 0]);
        assert_eq!(decode_block_header(&h), (1, 0x0102_0304, 0xdead_beef));
    }

    #[test]
    fn crc_covers_the_lengths() {
        assert_ne!(block_crc(3, 10, b"abc"), block_crc(3, 11, b"abc"));
    }

    #[test]
    fn largest_item_fits_a_block_after_zstd_expansion() {
        let bound = zstd::zstd_safe::compress_bound(MAX_ITEM_LEN + 4);
        assert!(bound <= MAX_BLOCK_LEN);
    }
}
