//! Part files: one immutable file per written part, beside the sled
//! database (`<index dir>/parts/`).
//!
//! A part (up to 32 Ki event entries, sorted by entry key) is the bulk of
//! the index; it is written once and then only read, so it does not go
//! through sled (whose I/O buffers, serializing whole tree nodes, were
//! most of the index's memory: docs/perf.md, "History index"). sled keeps
//! only what names the file: its length and its directory's CRC
//! ([`PartMeta`]), in the same batch as the segment's new state.
//!
//! Layout (integers big-endian; docs/format.md, "History index"):
//!
//! * header, 24 bytes: magic `DKVIXP` `00` `01`, segment first seq (8),
//!   generation (4), part number (4);
//! * chunks of entries, each entry: key length (4), entry key (path key
//!   and seq), block offset (8); a chunk ends after the entry that takes
//!   it to the chunk size;
//! * the chunk directory: per chunk its offset (8), length (4), CRC32 (4),
//!   first entry key's length (4) and that key;
//! * footer, 24 bytes: the directory's offset (8), length (4) and CRC32
//!   (4), magic `DKVIXPE1`.
//!
//! **Invariants.** A file is written under a temporary name and renamed
//! once complete (not fsynced, like the rest of the index: it is derived
//! data), before sled records it; so a recorded part names a complete file
//! unless something damaged it since. Nothing read here is trusted:
//! [`PartFile::open`] checks the length sled recorded, the header's
//! segment, generation and part number, the footer and the directory's
//! CRC against the recorded one, and that the directory's chunks follow
//! one another in key order; [`PartFile::entries_with`] checks a chunk's
//! CRC and framing. Every failure is a reason in text ([`Damage`]), never
//! a panic.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use distkv_log::Seq;

/// The directory of the part files, inside the index directory.
pub(crate) const PARTS_DIR: &str = "parts";
/// The header's magic.
const MAGIC: &[u8; 8] = b"DKVIXP\x00\x01";
/// The footer's magic.
const END_MAGIC: &[u8; 8] = b"DKVIXPE1";
/// Bytes of the header.
const HEADER_LEN: u64 = 24;
/// Bytes of the footer.
const FOOTER_LEN: u64 = 24;
/// The suffix of a part file.
const SUFFIX: &str = ".part";
/// Largest chunk or directory accepted when reading (a length beyond it
/// is damage, not a reason to allocate).
const MAX_READ: u64 = 64 << 20;

/// Which part a file holds: its segment, the segment's generation, and
/// the part's number within that generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PartId {
    /// The segment's first seq.
    pub(crate) segment: Seq,
    /// The segment's generation.
    pub(crate) generation: u32,
    /// The part's number (from 0).
    pub(crate) number: u32,
}

impl PartId {
    /// The file's name: `<segment>-<generation>-<number>.part`, zero-padded
    /// decimal.
    pub(crate) fn file_name(&self) -> String {
        format!(
            "{:020}-{:010}-{:010}{SUFFIX}",
            self.segment, self.generation, self.number
        )
    }

    /// The id a file name stands for; `None` for any other name
    /// (temporary files included).
    pub(crate) fn parse(name: &str) -> Option<PartId> {
        let stem = name.strip_suffix(SUFFIX)?;
        let mut it = stem.split('-');
        let id = PartId {
            segment: it.next()?.parse().ok()?,
            generation: it.next()?.parse().ok()?,
            number: it.next()?.parse().ok()?,
        };
        (it.next().is_none() && id.file_name() == name).then_some(id)
    }

    /// The lowest id of `segment`'s parts (a range's start).
    pub(crate) fn first_of(segment: Seq) -> PartId {
        PartId {
            segment,
            generation: 0,
            number: 0,
        }
    }

    /// The highest id of `segment`'s parts (a range's end).
    pub(crate) fn last_of(segment: Seq) -> PartId {
        PartId {
            segment,
            generation: u32::MAX,
            number: u32::MAX,
        }
    }

    fn header(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[0..8].copy_from_slice(MAGIC);
        h[8..16].copy_from_slice(&self.segment.to_be_bytes());
        h[16..20].copy_from_slice(&self.generation.to_be_bytes());
        h[20..24].copy_from_slice(&self.number.to_be_bytes());
        h
    }
}

/// What sled records about a part file: enough to tell that the file on
/// disk is the one written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartMeta {
    /// The file's length.
    pub(crate) len: u64,
    /// Its directory's CRC32 (which covers every chunk's CRC).
    pub(crate) crc: u32,
}

/// Bytes of an encoded [`PartMeta`].
const META_LEN: usize = 12;

impl PartMeta {
    /// The sled value.
    pub(crate) fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..8].copy_from_slice(&self.len.to_be_bytes());
        b[8..12].copy_from_slice(&self.crc.to_be_bytes());
        b
    }

    /// A sled value read back (`None`: not one).
    pub(crate) fn decode(b: &[u8]) -> Option<PartMeta> {
        (b.len() == META_LEN).then(|| PartMeta {
            len: u64::from_be_bytes(b[0..8].try_into().unwrap_or_default()),
            crc: u32::from_be_bytes(b[8..12].try_into().unwrap_or_default()),
        })
    }
}

/// Why a part file cannot be used (missing, short, damaged, another
/// part's): the segment is indexed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage(pub(crate) String);

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn damage(file: &Path, why: impl std::fmt::Display) -> Damage {
    Damage(format!("{}: {why}", file.display()))
}

/// Writes the part `id` with `entries` (entry key, block offset; sorted by
/// key) into `dir`, in chunks of about `chunk_bytes`: under a temporary
/// name, renamed once complete. Returns what sled is to record.
pub(crate) fn write<'a>(
    dir: &Path,
    id: PartId,
    entries: impl Iterator<Item = (&'a [u8], u64)>,
    chunk_bytes: usize,
) -> std::io::Result<PartMeta> {
    std::fs::create_dir_all(dir)?;
    // Not a part file's name: a leftover is a stray (see `strays`).
    let tmp = dir.join(format!("{}.tmp", id.file_name()));
    let written = write_file(&tmp, id, entries, chunk_bytes)
        .and_then(|meta| std::fs::rename(&tmp, dir.join(id.file_name())).map(|()| meta));
    if written.is_err() {
        // Best effort: a leftover is removed at the next open anyway.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_file<'a>(
    file: &Path,
    id: PartId,
    entries: impl Iterator<Item = (&'a [u8], u64)>,
    chunk_bytes: usize,
) -> std::io::Result<PartMeta> {
    let mut out = FileWriter {
        out: BufWriter::with_capacity(64 << 10, File::create(file)?),
        at: 0,
        directory: Vec::new(),
    };
    out.write(&id.header())?;
    let mut chunk: Vec<u8> = Vec::with_capacity(chunk_bytes + 256);
    let mut first_key: Vec<u8> = Vec::new();
    for (key, offset) in entries {
        if chunk.is_empty() {
            first_key.clear();
            first_key.extend_from_slice(key);
        }
        chunk.extend_from_slice(&(key.len() as u32).to_be_bytes());
        chunk.extend_from_slice(key);
        chunk.extend_from_slice(&offset.to_be_bytes());
        if chunk.len() >= chunk_bytes {
            out.chunk(&chunk, &first_key)?;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        out.chunk(&chunk, &first_key)?;
    }
    out.finish()
}

/// A part file being written: where the next byte goes, and the chunk
/// directory so far.
struct FileWriter {
    out: BufWriter<File>,
    at: u64,
    directory: Vec<u8>,
}

impl FileWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.at += bytes.len() as u64;
        Ok(())
    }

    /// Writes a chunk and adds it to the directory.
    fn chunk(&mut self, chunk: &[u8], first_key: &[u8]) -> std::io::Result<()> {
        let d = &mut self.directory;
        d.extend_from_slice(&self.at.to_be_bytes());
        d.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        d.extend_from_slice(&crc32fast::hash(chunk).to_be_bytes());
        d.extend_from_slice(&(first_key.len() as u32).to_be_bytes());
        d.extend_from_slice(first_key);
        self.write(chunk)
    }

    /// Writes the directory and the footer; returns what sled records.
    fn finish(mut self) -> std::io::Result<PartMeta> {
        let directory = std::mem::take(&mut self.directory);
        let crc = crc32fast::hash(&directory);
        let mut footer = [0u8; FOOTER_LEN as usize];
        footer[0..8].copy_from_slice(&self.at.to_be_bytes());
        footer[8..12].copy_from_slice(&(directory.len() as u32).to_be_bytes());
        footer[12..16].copy_from_slice(&crc.to_be_bytes());
        footer[16..24].copy_from_slice(END_MAGIC);
        self.write(&directory)?;
        self.write(&footer)?;
        let len = self.at;
        self.out.into_inner().map_err(|e| e.into_error())?;
        Ok(PartMeta { len, crc })
    }
}

/// One chunk as the directory describes it; its first key is
/// `keys[key_at..key_at + key_len]` of the [`PartFile`].
#[derive(Debug, Clone, Copy)]
struct ChunkRef {
    offset: u64,
    len: u32,
    crc: u32,
    key_at: usize,
    key_len: usize,
}

/// A part file opened and checked (see the module docs), its directory
/// read.
#[derive(Debug)]
pub(crate) struct PartFile {
    path: PathBuf,
    file: File,
    chunks: Vec<ChunkRef>,
    /// The directory's bytes, which hold the chunks' first keys.
    keys: Vec<u8>,
}

impl PartFile {
    /// Opens part `id` in `dir` and checks it against what sled recorded
    /// (`meta`): length, header, footer, directory CRC.
    pub(crate) fn open(dir: &Path, id: PartId, meta: PartMeta) -> Result<PartFile, Damage> {
        let path = dir.join(id.file_name());
        let mut file = File::open(&path).map_err(|e| damage(&path, e))?;
        let len = file.metadata().map_err(|e| damage(&path, e))?.len();
        if len != meta.len {
            return Err(damage(
                &path,
                format!("{len} bytes, the index recorded {}", meta.len),
            ));
        }
        if len < HEADER_LEN + FOOTER_LEN {
            return Err(damage(&path, "shorter than a header and a footer"));
        }
        let header = read_at(&mut file, 0, HEADER_LEN).map_err(|e| damage(&path, e))?;
        if header[..] != id.header() {
            return Err(damage(
                &path,
                "its header names another part, generation or format",
            ));
        }
        let footer =
            read_at(&mut file, len - FOOTER_LEN, FOOTER_LEN).map_err(|e| damage(&path, e))?;
        let dir_at = u64::from_be_bytes(footer[0..8].try_into().unwrap_or_default());
        let dir_len = u32::from_be_bytes(footer[8..12].try_into().unwrap_or_default()) as u64;
        let dir_crc = u32::from_be_bytes(footer[12..16].try_into().unwrap_or_default());
        if &footer[16..24] != END_MAGIC
            || dir_at < HEADER_LEN
            || dir_at
                .checked_add(dir_len)
                .and_then(|e| e.checked_add(FOOTER_LEN))
                != Some(len)
        {
            return Err(damage(&path, "a damaged footer"));
        }
        if dir_crc != meta.crc {
            return Err(damage(
                &path,
                "its directory's CRC is not the one the index recorded",
            ));
        }
        let directory = read_at(&mut file, dir_at, dir_len).map_err(|e| damage(&path, e))?;
        if crc32fast::hash(&directory) != dir_crc {
            return Err(damage(&path, "its directory does not match its CRC"));
        }
        let chunks = decode_directory(&directory, dir_at)
            .ok_or_else(|| damage(&path, "a chunk directory that does not decode"))?;
        Ok(PartFile {
            path,
            file,
            chunks,
            keys: directory,
        })
    }

    fn first_key(&self, c: &ChunkRef) -> &[u8] {
        &self.keys[c.key_at..c.key_at + c.key_len]
    }

    /// The chunks that may hold entries starting with `prefix`: from the
    /// last one whose first key is at or before it, while the first keys
    /// can still start with it.
    pub(crate) fn chunks_for(&self, prefix: &[u8]) -> std::ops::Range<usize> {
        let after = self.chunks.partition_point(|c| self.first_key(c) <= prefix);
        let start = after.saturating_sub(1);
        let end = after
            + self.chunks[after..]
                .iter()
                .take_while(|c| self.first_key(c).starts_with(prefix))
                .count();
        start..end
    }

    /// The entries of chunk `i` whose key starts with `prefix`, each
    /// handed to `found` (entry key, block offset); the chunk's CRC and
    /// framing are checked first.
    pub(crate) fn entries_with(
        &mut self,
        i: usize,
        prefix: &[u8],
        mut found: impl FnMut(&[u8], u64),
    ) -> Result<(), Damage> {
        let Some(c) = self.chunks.get(i).copied() else {
            return Err(damage(&self.path, format!("no chunk {i}")));
        };
        let bytes =
            read_at(&mut self.file, c.offset, c.len as u64).map_err(|e| damage(&self.path, e))?;
        if crc32fast::hash(&bytes) != c.crc {
            return Err(damage(
                &self.path,
                format!("the chunk at byte {} does not match its CRC", c.offset),
            ));
        }
        let entries = chunk_entries(&bytes)
            .filter(|e| e.first().is_some_and(|(k, _)| *k == self.first_key(&c)))
            .ok_or_else(|| {
                damage(
                    &self.path,
                    format!("the chunk at byte {} does not decode", c.offset),
                )
            })?;
        entries
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .for_each(|(k, o)| found(k, o));
        Ok(())
    }
}

/// Reads `len` bytes at `at`.
fn read_at(file: &mut File, at: u64, len: u64) -> std::io::Result<Vec<u8>> {
    if len > MAX_READ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a length of {len} bytes"),
        ));
    }
    file.seek(SeekFrom::Start(at))?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// The directory's chunks, each within the bytes before the directory
/// (`dir_at`) and after the one before it.
fn decode_directory(dir: &[u8], dir_at: u64) -> Option<Vec<ChunkRef>> {
    let mut out: Vec<ChunkRef> = Vec::new();
    let mut expect = HEADER_LEN;
    let mut at = 0usize;
    let mut previous: &[u8] = &[];
    while at < dir.len() {
        let b = &dir[at..];
        let offset = u64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
        let crc = u32::from_be_bytes(b.get(12..16)?.try_into().ok()?);
        let key_len = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?) as usize;
        let first_key = b.get(20..20usize.checked_add(key_len)?)?;
        if offset != expect || (!out.is_empty() && previous > first_key) {
            return None;
        }
        expect = offset.checked_add(len as u64)?;
        out.push(ChunkRef {
            offset,
            len,
            crc,
            key_at: at + 20,
            key_len,
        });
        previous = first_key;
        at += 20 + key_len;
    }
    (expect == dir_at).then_some(out)
}

/// Splits a chunk into (entry key, block offset) pairs; `None` when it
/// does not decode.
fn chunk_entries(mut v: &[u8]) -> Option<Vec<(&[u8], u64)>> {
    let mut out = Vec::new();
    while !v.is_empty() {
        let len = u32::from_be_bytes(v.get(0..4)?.try_into().ok()?) as usize;
        let key = v.get(4..4usize.checked_add(len)?)?;
        let offset = u64::from_be_bytes(v.get(4 + len..12 + len)?.try_into().ok()?);
        out.push((key, offset));
        v = &v[12 + len..];
    }
    Some(out)
}

/// The names in `dir` that are not the files of `keep` (temporary files,
/// parts of forgotten segments or old generations, anything else).
pub(crate) fn strays(dir: &Path, keep: impl Fn(PartId) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name();
        let kept = name.to_str().and_then(PartId::parse).is_some_and(&keep);
        if !kept {
            out.push(entry.path());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_part_reads_back_and_its_names_parse() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let id = PartId {
            segment: 41,
            generation: 3,
            number: 2,
        };
        assert_eq!(PartId::parse(&id.file_name()), Some(id));
        assert_eq!(
            PartId::parse("00000000000000000041-0000000003-0000000002.part.tmp"),
            None
        );
        assert_eq!(PartId::parse("41-3-2.part"), None);
        let keys: Vec<Vec<u8>> = (0u64..50).map(|i| i.to_be_bytes().to_vec()).collect();
        let meta = write(
            tmp.path(),
            id,
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_slice(), i as u64)),
            60,
        )?;
        let mut f = PartFile::open(tmp.path(), id, meta).map_err(|d| d.0)?;
        let mut all = Vec::new();
        for i in f.chunks_for(&[]) {
            f.entries_with(i, &[], |k, o| all.push((k.to_vec(), o)))
                .map_err(|d| d.0)?;
        }
        assert_eq!(all.len(), 50);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, (k, o))| *o == i as u64 && *k == keys[i]));
        // One key's chunk is found among several.
        let r = f.chunks_for(&keys[30]);
        assert_eq!(r.len(), 1);
        let mut found = Vec::new();
        f.entries_with(r.start, &keys[30], |k, o| found.push((k.to_vec(), o)))
            .map_err(|d| d.0)?;
        assert_eq!(found, vec![(keys[30].clone(), 30)]);
        // Another part's record does not open it.
        let other = PartId {
            generation: 4,
            ..id
        };
        std::fs::copy(
            tmp.path().join(id.file_name()),
            tmp.path().join(other.file_name()),
        )?;
        assert!(PartFile::open(tmp.path(), other, meta).is_err());
        Ok(())
    }

    /// Reads every entry of the part through its directory.
    fn read_all(dir: &Path, id: PartId, meta: PartMeta) -> Result<Vec<(Vec<u8>, u64)>, Damage> {
        let mut f = PartFile::open(dir, id, meta)?;
        let mut all = Vec::new();
        for i in f.chunks_for(&[]) {
            f.entries_with(i, &[], |k, o| all.push((k.to_vec(), o)))?;
        }
        Ok(all)
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_detected(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let id = PartId {
            segment: 1,
            generation: 1,
            number: 0,
        };
        let keys: Vec<Vec<u8>> = (0u64..12).map(|i| (i * 3).to_be_bytes().to_vec()).collect();
        let entries = || {
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.as_slice(), i as u64))
        };
        let meta = write(tmp.path(), id, entries(), 50)?;
        let file = tmp.path().join(id.file_name());
        let good = std::fs::read(&file)?;
        let expected: Vec<(Vec<u8>, u64)> = entries().map(|(k, o)| (k.to_vec(), o)).collect();
        assert_eq!(read_all(tmp.path(), id, meta).map_err(|d| d.0)?, expected);
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&file, &bad)?;
            assert!(read_all(tmp.path(), id, meta).is_err(), "flipped byte {at}");
        }
        for len in 0..good.len() {
            std::fs::write(&file, &good[..len])?;
            // Even with a record that agrees with the shorter length.
            let short = PartMeta {
                len: len as u64,
                ..meta
            };
            assert!(read_all(tmp.path(), id, meta).is_err(), "cut at {len}");
            assert!(read_all(tmp.path(), id, short).is_err(), "cut at {len}");
        }
        Ok(())
    }
}
