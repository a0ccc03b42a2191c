//! Reading a snapshot: a header, then a checked stream of items.
//!
//! [`SnapshotReader`] trusts nothing on disk. The header is checksummed;
//! each block's lengths are bounded ([`MAX_BLOCK_LEN`]) and checked against
//! the bytes left in the file before anything is allocated, its CRC is
//! verified before zstd sees it, and zstd must produce exactly the announced
//! length. Items must come in order (nodes, entries, `End`) and the `End`
//! counts must match what was read; nothing may follow `End`. The iterator
//! therefore ends with `None` only after a complete, intact snapshot; any
//! damage ends it with one `Err` ([`SnapshotError::Corrupt`] with the
//! offset of the bad header or block, or [`SnapshotError::Truncated`]),
//! after which it yields nothing. Items of intact blocks before the damage
//! have been yielded by then: callers that need all-or-nothing must not
//! commit anything before the iterator has ended cleanly.
//!
//! Memory: one compressed and one decompressed block at a time.
//!
//! A reader can also follow a file while its writer writes it
//! ([`SnapshotWriter::follow`](crate::SnapshotWriter::follow)): it then
//! waits for each block to be written before it reads it, and for the
//! writer to be done before it takes the `End` item as the end.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use crate::block::{block_crc, decode_block_header, BLOCK_HEADER_LEN, MAX_BLOCK_LEN};
use crate::error::{Result, SnapshotError};
use crate::header::{HeaderError, SnapshotHeader, MAX_HEADER_LEN};
use crate::item::{Decoded, Decoder, Item, ItemRef};
use crate::writer::{SnapshotInfo, Written};

/// Reads a snapshot file item by item.
///
/// `SnapshotReader` is an iterator of `Result<Item, SnapshotError>`: all
/// node items, then all entry items, in the order they were written.
pub struct SnapshotReader {
    path: PathBuf,
    file: File,
    /// The file's length; for a file being written, what is written of it.
    file_len: u64,
    /// How much of the file its writer has written, if it is writing it.
    writing: Option<Arc<Written>>,
    header: SnapshotHeader,
    /// File offset of the next block.
    next_block: u64,
    /// File offset of the block in `block`.
    block_offset: u64,
    /// Compressed bytes of the current block.
    zbuf: Vec<u8>,
    /// The current block's payload, and the read position in it.
    block: Vec<u8>,
    pos: usize,
    blocks: u64,
    dec: Decoder,
    decompressor: zstd::bulk::Decompressor<'static>,
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Reading,
    /// The `End` item was read and checked.
    Done,
    /// An error was reported; the iterator is exhausted.
    Failed,
}

impl std::fmt::Debug for SnapshotReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("next_block", &self.next_block)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl SnapshotReader {
    /// Opens a snapshot and checks its header.
    pub fn open(path: impl AsRef<FsPath>) -> Result<Self> {
        Self::open_as(path.as_ref(), None)
    }

    /// Opens the snapshot at `path` that is being written, as far as
    /// `written` tells (its header is written before the writer's thread
    /// starts).
    pub(crate) fn follow(path: &FsPath, written: Arc<Written>) -> Result<Self> {
        Self::open_as(path, Some(written))
    }

    fn open_as(path: &FsPath, writing: Option<Arc<Written>>) -> Result<Self> {
        let path = path.to_path_buf();
        let io = |source| SnapshotError::Io {
            file: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let file_len = match &writing {
            Some(w) => w.wait_beyond(0, false),
            None => file.metadata().map_err(io)?.len(),
        };
        let want = file_len.min(MAX_HEADER_LEN as u64) as usize;
        let mut buf = vec![0u8; want];
        file.read_exact(&mut buf).map_err(io)?;
        let (header, header_len) = match SnapshotHeader::parse(&buf) {
            Ok(h) => h,
            Err(HeaderError::Short) => {
                return Err(SnapshotError::Truncated {
                    file: path,
                    offset: 0,
                })
            }
            Err(HeaderError::Bad(reason)) => {
                return Err(SnapshotError::Corrupt {
                    file: path,
                    offset: 0,
                    reason,
                })
            }
        };
        let decompressor = zstd::bulk::Decompressor::new().map_err(io)?;
        // Position the file at the first block.
        let mut r = SnapshotReader {
            path,
            file,
            file_len,
            writing,
            header,
            next_block: header_len as u64,
            block_offset: header_len as u64,
            zbuf: Vec::new(),
            block: Vec::new(),
            pos: 0,
            blocks: 0,
            dec: Decoder::default(),
            decompressor,
            state: State::Reading,
        };
        r.seek_to(header_len as u64)?;
        Ok(r)
    }

    /// Reads a whole snapshot, checking every block, item and count.
    pub fn verify(path: impl AsRef<FsPath>) -> Result<SnapshotInfo> {
        let mut r = SnapshotReader::open(path)?;
        while let Some(item) = r.next_ref() {
            item?;
        }
        Ok(r.info())
    }

    /// The next item, as [`Iterator::next`] gives it but with an entry's
    /// path borrowed from the reader instead of copied: for loading and
    /// checking, which need each path only while they handle its entry.
    pub fn next_ref(&mut self) -> Option<Result<ItemRef<'_>>> {
        self.next_as(false)
    }

    /// [`SnapshotReader::next_ref`], skimmed for a digest: an entry in the
    /// writer's layout gives its value as the bytes the file holds
    /// ([`EntryRef::encoded`], `value` `None`), neither decoded nor
    /// checked, and a node item its name and tick, its tick sets checked
    /// but left empty. For a check that hashes the values, which is
    /// cheaper than decoding them first, and needs no node's superseded
    /// ticks, which can run to a million ranges.
    ///
    /// [`EntryRef::encoded`]: crate::EntryRef::encoded
    pub fn next_skimmed(&mut self) -> Option<Result<ItemRef<'_>>> {
        self.next_as(true)
    }

    fn next_as(&mut self, skimmed: bool) -> Option<Result<ItemRef<'_>>> {
        if self.state != State::Reading {
            return None;
        }
        match self.next_item(skimmed) {
            Ok(Some((d, at))) => {
                let bytes = self.block.get(at..).unwrap_or_default();
                self.dec.item_ref(d, bytes).map(Ok)
            }
            Ok(None) => {
                self.state = State::Done;
                self.block = Vec::new();
                self.zbuf = Vec::new();
                None
            }
            Err(e) => {
                self.state = State::Failed;
                Some(Err(e))
            }
        }
    }

    /// The entries read from now on share no node name with those read
    /// before (each name their chains refer to is a new copy): for entries
    /// handed to another thread in batches, so that the two threads do
    /// not both count references to one name, whose cache line would pass
    /// between their cores at every entry.
    pub fn share_anew(&mut self) {
        self.dec.share_anew();
    }

    /// The snapshot's header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The file being read.
    pub fn path(&self) -> &FsPath {
        &self.path
    }

    /// Whether the whole snapshot has been read and found intact.
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of the file read so far: the header and every block read
    /// (for progress reports; [`SnapshotReader::info`] has the file size).
    pub fn bytes_read(&self) -> u64 {
        self.next_block
    }

    /// Counts of what has been read so far (`bytes` is the file size).
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            bytes: self.file_len,
            nodes: self.dec.nodes(),
            entries: self.dec.entries(),
            blocks: self.blocks,
        }
    }

    fn seek_to(&mut self, offset: u64) -> Result<()> {
        use std::io::Seek;
        self.file
            .seek(io::SeekFrom::Start(offset))
            .map(drop)
            .map_err(|source| SnapshotError::Io {
                file: self.path.clone(),
                source,
            })
    }

    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::Corrupt {
            file: self.path.clone(),
            offset,
            reason: reason.into(),
        }
    }

    fn truncated(&self, offset: u64) -> SnapshotError {
        SnapshotError::Truncated {
            file: self.path.clone(),
            offset,
        }
    }

    /// Reads, checks and decompresses the block at `next_block`.
    fn load_block(&mut self) -> Result<()> {
        let at = self.next_block;
        if let Some(w) = &self.writing {
            self.file_len = w.wait_beyond(at, false);
        }
        let left = self.file_len - at;
        if left < BLOCK_HEADER_LEN as u64 {
            // Nothing or a partial block header where `End` was still due.
            return Err(self.truncated(at));
        }
        let mut head = [0u8; BLOCK_HEADER_LEN];
        self.read(&mut head, at)?;
        let (clen, ulen, crc) = decode_block_header(&head);
        let (c, u) = (clen as usize, ulen as usize);
        if c == 0 || u == 0 || c > MAX_BLOCK_LEN || u > MAX_BLOCK_LEN {
            return Err(self.corrupt(
                at,
                format!("block lengths {c} (compressed) / {u} (uncompressed) are not within 1..={MAX_BLOCK_LEN}"),
            ));
        }
        if c as u64 > left - BLOCK_HEADER_LEN as u64 {
            return Err(self.truncated(at));
        }
        let mut zbuf = std::mem::take(&mut self.zbuf);
        zbuf.resize(c, 0);
        let res = self.read(&mut zbuf, at);
        self.zbuf = zbuf;
        res?;
        let got = block_crc(clen, ulen, &self.zbuf);
        if got != crc {
            return Err(self.corrupt(
                at,
                format!("block checksum mismatch (stored {crc:#010x}, computed {got:#010x})"),
            ));
        }
        self.block.clear();
        self.block.reserve(u);
        match self
            .decompressor
            .decompress_to_buffer(&self.zbuf, &mut self.block)
        {
            Ok(n) if n == u => {}
            Ok(n) => {
                return Err(self.corrupt(
                    at,
                    format!("block decompresses to {n} bytes, not the announced {u}"),
                ))
            }
            Err(e) => return Err(self.corrupt(at, format!("block does not decompress: {e}"))),
        }
        self.block_offset = at;
        self.next_block = at + (BLOCK_HEADER_LEN + c) as u64;
        self.pos = 0;
        self.blocks += 1;
        Ok(())
    }

    /// `read_exact` at the current position; a short read means the file
    /// shrank under us.
    fn read(&mut self, buf: &mut [u8], at: u64) -> Result<()> {
        match self.file.read_exact(buf) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated(at)),
            Err(source) => Err(SnapshotError::Io {
                file: self.path.clone(),
                source,
            }),
        }
    }

    /// The next item of the current block, loading blocks as needed, and
    /// where its bytes start in the block (`None` at the end item).
    fn next_item(&mut self, skimmed: bool) -> Result<Option<(Decoded, usize)>> {
        if self.pos >= self.block.len() {
            self.load_block()?;
        }
        let at = self.block_offset;
        let rest = &self.block[self.pos..];
        let Some(len) = rest.get(..4) else {
            return Err(self.corrupt(at, "item length prefix cut by the block's end"));
        };
        let n = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(bytes) = rest.get(4..4 + n) else {
            return Err(self.corrupt(at, format!("item of {n} bytes runs past the block's end")));
        };
        let decoded = self.dec.decode(bytes, skimmed);
        let item_at = self.pos + 4;
        self.pos = item_at + n;
        match decoded {
            Ok(Decoded::End) => {
                if let Some(w) = self.writing.take() {
                    self.file_len = w.wait_beyond(self.next_block, true);
                }
                if self.pos != self.block.len() || self.next_block != self.file_len {
                    return Err(self.corrupt(at, "data after the end item"));
                }
                Ok(None)
            }
            Ok(d) => Ok(Some((d, item_at))),
            Err(reason) => Err(self.corrupt(at, reason)),
        }
    }
}

impl Iterator for SnapshotReader {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Result<Item>> {
        self.next_ref().map(|r| r.map(ItemRef::to_item))
    }
}

impl std::iter::FusedIterator for SnapshotReader {}
