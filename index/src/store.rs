//! The sled tree and its records (layout in the crate docs): segment
//! states, the list of part files, seek chunks, and the part being built
//! in memory; the parts themselves are files ([`crate::partfile`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use distkv_log::segment::segment_file_name;
use distkv_log::writer::CommitInfo;
use distkv_log::{read_block_at, LogEntry, LogRecord, Seq};
use distkv_model::{Path as KvPath, UpdateEvent};

use crate::key::{
    event_key, path_key, push_entry_path_key, push_path_key, push_seq, subtree_prefix,
};
use crate::partfile::{self, PartFile, PartId, PartMeta};
use crate::{IndexError, Result};

/// The format this code writes and reads (in `meta`).
const FORMAT: &[u8] = b"distkv-index/3";

/// Tag of a segment state record: `S`, segment.
const TAG_SEG: u8 = b'S';
/// Tag of a part file record: `F`, segment, generation, part.
const TAG_FILE: u8 = b'F';
/// Tag of a seek chunk: `B`, first block's first seq, segment,
/// generation, part, chunk number.
const TAG_BLOCKS: u8 = b'B';

/// Events in a part before it is written: bounds the builder's memory
/// (its entries, keys and sort), which the node holds for good (parts of
/// 128 Ki events held about 6 MB more); a lookup costs about 10 µs more per
/// part (docs/perf.md, "The history index's parts of 32 Ki events").
const PART_EVENTS: usize = 1 << 15;
/// Key bytes in a part before it is written (128 bytes an event).
const PART_KEY_BYTES: usize = 4 << 20;
/// Bytes of entries per chunk of a part file (one read and CRC per
/// chunk a lookup touches; the file's directory holds one key per chunk).
const CHUNK_BYTES: usize = 16 << 10;
/// sled's flusher thread writes every this many ms; a dropped index holds
/// its lock until that thread next wakes up.
const FLUSH_EVERY_MS: u64 = 1000;
/// Blocks per seek chunk.
const BLOCKS_PER_CHUNK: usize = 128;
/// Bytes of one block in a seek chunk.
const BLOCK_LEN: usize = 32;

/// What the index holds about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegState {
    /// Entries of other generations are ignored.
    pub generation: u32,
    /// The segment header's `created_ms`.
    pub created_ms: u64,
    /// Offset after the last indexed block (the header's length when none).
    pub indexed_to: u64,
    /// Offset of the last indexed block (0: none).
    pub last_block: u64,
    /// That block's CRC field.
    pub last_crc: u32,
    /// The seq after the last indexed event.
    pub next_seq: Seq,
    /// Events indexed.
    pub events: u64,
    /// Parts written (numbered from 0); a part being built is not counted.
    pub parts: u32,
}

const SEG_LEN: usize = 52;

impl SegState {
    fn encode(&self) -> [u8; SEG_LEN] {
        let mut b = [0u8; SEG_LEN];
        b[0..4].copy_from_slice(&self.generation.to_be_bytes());
        b[4..12].copy_from_slice(&self.created_ms.to_be_bytes());
        b[12..20].copy_from_slice(&self.indexed_to.to_be_bytes());
        b[20..28].copy_from_slice(&self.last_block.to_be_bytes());
        b[28..32].copy_from_slice(&self.last_crc.to_be_bytes());
        b[32..40].copy_from_slice(&self.next_seq.to_be_bytes());
        b[40..48].copy_from_slice(&self.events.to_be_bytes());
        b[48..52].copy_from_slice(&self.parts.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<SegState> {
        if b.len() != SEG_LEN {
            return None;
        }
        Some(SegState {
            generation: be32(&b[0..4])?,
            created_ms: be64(&b[4..12])?,
            indexed_to: be64(&b[12..20])?,
            last_block: be64(&b[20..28])?,
            last_crc: be32(&b[28..32])?,
            next_seq: be64(&b[32..40])?,
            events: be64(&b[40..48])?,
            parts: be32(&b[48..52])?,
        })
    }
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// An event entry of a current generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The event's seq.
    pub seq: Seq,
    /// Its segment (first seq).
    pub segment: Seq,
    /// Offset of its block.
    pub offset: u64,
    /// The index key (path and seq), to check the record against.
    key: Vec<u8>,
}

/// An event read back through the index, checked.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its seq.
    pub seq: Seq,
    /// When it was written.
    pub time_ms: u64,
    /// The event.
    pub event: UpdateEvent,
    /// Its segment file.
    pub file: PathBuf,
    /// Offset of its block.
    pub offset: u64,
}

/// A block in the seek table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPos {
    /// The seq of its first event (the log's position before it).
    pub first_seq: Seq,
    /// Its segment.
    pub segment: Seq,
    /// Its offset.
    pub offset: u64,
    /// The highest tock among its events (0: none).
    pub max_tock: u64,
    /// The latest time among its records.
    pub max_ms: u64,
}

impl BlockPos {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.first_seq.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.max_tock.to_be_bytes());
        out.extend_from_slice(&self.max_ms.to_be_bytes());
    }

    fn decode(segment: Seq, b: &[u8]) -> Option<BlockPos> {
        Some(BlockPos {
            first_seq: be64(b.get(0..8)?)?,
            segment,
            offset: be64(b.get(8..16)?)?,
            max_tock: be64(b.get(16..24)?)?,
            max_ms: be64(b.get(24..32)?)?,
        })
    }

    /// The order of the seek table: by first seq, segment, offset.
    fn order(&self) -> (Seq, Seq, u64) {
        (self.first_seq, self.segment, self.offset)
    }
}

/// What [`HistoryIndex::sync`] found and did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Segments indexed from their start (new, or changed since).
    pub reindexed: Vec<Seq>,
    /// Segments caught up from where the index stopped.
    pub caught_up: Vec<Seq>,
    /// Segments forgotten (no longer on disk).
    pub forgotten: Vec<Seq>,
    /// Events added.
    pub events: u64,
    /// Why the index does not cover the whole log (damage, a torn tail, a
    /// gap between segments); empty when it does.
    pub incomplete: Vec<String>,
    /// Entries removed with forgotten or changed segments.
    pub purged: u64,
}

impl SyncReport {
    /// Whether every event of every segment is indexed.
    pub fn complete(&self) -> bool {
        self.incomplete.is_empty()
    }
}

/// One entry of a part being built: its key in [`Part::keys`], the
/// offset of its block.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    len: usize,
    offset: u64,
}

/// The part being built: the entries and blocks recorded since the last
/// part of its segment was written. It is written (sorted, cut into
/// chunks) when full, when a block of another segment comes, at a sync's
/// end and at [`HistoryIndex::flush`].
#[derive(Debug)]
pub(crate) struct Part {
    segment: Seq,
    generation: u32,
    number: u32,
    /// The entries' keys (path key, seq), one after the other.
    keys: Vec<u8>,
    entries: Vec<Entry>,
    blocks: Vec<BlockPos>,
}

impl Part {
    fn key(&self, e: &Entry) -> &[u8] {
        &self.keys[e.start..e.start + e.len]
    }

    fn full(&self, limits: &Limits) -> bool {
        self.entries.len() >= limits.part_events || self.keys.len() >= PART_KEY_BYTES
    }

    fn id(&self) -> PartId {
        PartId {
            segment: self.segment,
            generation: self.generation,
            number: self.number,
        }
    }

    /// Writes the part's entries, sorted, to its file in `dir` (see
    /// [`crate::partfile`]).
    fn write_file(&mut self, dir: &Path, chunk_bytes: usize) -> std::io::Result<PartMeta> {
        let keys = &self.keys;
        let key = |e: &Entry| &keys[e.start..e.start + e.len];
        let order = sorted_order(keys, &self.entries);
        let entries = order.iter().map(|&i| {
            let e = &self.entries[i as usize];
            (key(e), e.offset)
        });
        partfile::write(dir, self.id(), entries, chunk_bytes)
    }

    /// The sled records naming this part's file (`meta`), its seek chunks
    /// and the segment's state, as one batch. Leaves the part empty, its
    /// buffers' capacity kept for the next part.
    fn take_batch(&mut self, st: &SegState, meta: PartMeta) -> sled::Batch {
        let mut batch = sled::Batch::default();
        batch.insert(&file_key(self.id())[..], &meta.encode()[..]);
        for (n, blocks) in self.blocks.chunks(BLOCKS_PER_CHUNK).enumerate() {
            let mut k = Vec::with_capacity(29);
            k.push(TAG_BLOCKS);
            k.extend_from_slice(&blocks[0].first_seq.to_be_bytes());
            k.extend_from_slice(&self.segment.to_be_bytes());
            k.extend_from_slice(&self.generation.to_be_bytes());
            k.extend_from_slice(&self.number.to_be_bytes());
            k.extend_from_slice(&(n as u32).to_be_bytes());
            let mut v = Vec::with_capacity(blocks.len() * BLOCK_LEN);
            blocks.iter().for_each(|b| b.encode(&mut v));
            batch.insert(k, v);
        }
        batch.insert(&seg_key(self.segment)[..], &st.encode()[..]);
        self.keys.clear();
        self.entries.clear();
        self.blocks.clear();
        batch
    }
}

/// The indices of `entries` (whose keys lie in `keys`) in the order of
/// their keys. The bytes all keys start with are skipped, and the next
/// eight of each are kept beside its index as a word: the words are
/// sorted by counting, byte by byte (no comparison reads a key), and only
/// keys with equal words are compared (a part's keys mostly share a long
/// prefix, and a path changed twice differs only in its seq).
fn sorted_order(keys: &[u8], entries: &[Entry]) -> Vec<u32> {
    let key = |e: &Entry| &keys[e.start..e.start + e.len];
    let Some(first) = entries.first().map(key) else {
        return Vec::new();
    };
    let shared = entries.iter().fold(first.len(), |n, e| {
        let k = key(e);
        n.min(
            first
                .iter()
                .zip(k)
                .take(n)
                .take_while(|(a, b)| a == b)
                .count(),
        )
    });
    // Zero-padded, a word never orders two keys against their bytes: a key
    // that ends inside it is a prefix of any key whose word is not below
    // its own, and equal words fall back to the keys.
    let word = |e: &Entry| {
        let rest = &key(e)[shared..];
        let mut w = [0u8; 8];
        let n = rest.len().min(8);
        w[..n].copy_from_slice(&rest[..n]);
        u64::from_be_bytes(w)
    };
    let mut order: Vec<(u64, u32)> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (word(e), i as u32))
        .collect();
    radix_sort(&mut order);
    // Keys with equal words, by the keys (few, next to each other).
    for run in order.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| {
                key(&entries[a.1 as usize]).cmp(key(&entries[b.1 as usize]))
            });
        }
    }
    order.into_iter().map(|(_, i)| i).collect()
}

/// Sorts `v` by its words, stably: a counting pass per byte of the word,
/// least significant first, skipping the bytes all words share.
fn radix_sort(v: &mut Vec<(u64, u32)>) {
    let mut counts = vec![[0usize; 256]; 8];
    for (w, _) in v.iter() {
        for (b, c) in counts.iter_mut().enumerate() {
            c[((w >> (8 * b)) & 0xff) as usize] += 1;
        }
    }
    let mut out = vec![(0, 0); v.len()];
    for (b, c) in counts.iter().enumerate() {
        if c.contains(&v.len()) {
            continue;
        }
        let mut next = [0usize; 256];
        let mut sum = 0;
        for (n, &k) in next.iter_mut().zip(c) {
            *n = sum;
            sum += k;
        }
        for &(w, i) in v.iter() {
            let d = ((w >> (8 * b)) & 0xff) as usize;
            out[next[d]] = (w, i);
            next[d] += 1;
        }
        std::mem::swap(v, &mut out);
    }
}

/// The key of a segment's state record.
fn seg_key(segment: Seq) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = TAG_SEG;
    k[1..].copy_from_slice(&segment.to_be_bytes());
    k
}

/// The key of a part file's record.
fn file_key(id: PartId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = TAG_FILE;
    k[1..9].copy_from_slice(&id.segment.to_be_bytes());
    k[9..13].copy_from_slice(&id.generation.to_be_bytes());
    k[13..17].copy_from_slice(&id.number.to_be_bytes());
    k
}

/// The part a file record's key names.
fn file_id(k: &[u8]) -> Option<PartId> {
    (k.len() == 17 && k[0] == TAG_FILE).then_some(PartId {
        segment: be64(&k[1..9])?,
        generation: be32(&k[9..13])?,
        number: be32(&k[13..17])?,
    })
}

/// The seq at the end of an entry key.
fn key_seq(k: &[u8]) -> Option<Seq> {
    k.len().checked_sub(8).and_then(|at| be64(&k[at..]))
}

/// The index of one node's event log (see the crate docs).
pub struct HistoryIndex {
    pub(crate) dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    /// The part files' directory (`<dir>/parts`).
    parts_dir: PathBuf,
    /// What the index holds per segment, including the part in memory.
    pub(crate) segs: BTreeMap<Seq, SegState>,
    /// The part files sled records (of current generations or not).
    files: BTreeMap<PartId, PartMeta>,
    /// The part being built.
    part: Option<Part>,
    /// The last part written, emptied: its buffers (megabytes when the
    /// part was full) serve the next part instead of being freed and
    /// faulted in afresh.
    spare: Option<Part>,
    /// Events per part and bytes per chunk (smaller in tests).
    pub(crate) limits: Limits,
}

/// Sizes of parts and chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Events in a part before it is written.
    pub(crate) part_events: usize,
    /// Bytes of entries per chunk of a part file.
    pub(crate) chunk_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            part_events: PART_EVENTS,
            chunk_bytes: CHUNK_BYTES,
        }
    }
}

impl std::fmt::Debug for HistoryIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryIndex")
            .field("dir", &self.dir)
            .field("segments", &self.segs.len())
            .finish_non_exhaustive()
    }
}

/// Why an index cannot be opened.
enum Unusable {
    /// Another process has it open.
    InUse(std::io::Error),
    /// Its files cannot be used: it is rebuilt.
    Damaged(String),
}

impl Unusable {
    fn text(self) -> String {
        match self {
            Unusable::InUse(e) => format!("in use by another process: {e}"),
            Unusable::Damaged(why) => why,
        }
    }
}

/// A block being added: where it is and what follows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewBlock {
    /// Its offset.
    pub(crate) offset: u64,
    /// The offset after it.
    pub(crate) end: u64,
    /// Its CRC field (0 while not known: see `sync`).
    pub(crate) crc: u32,
    /// The seq after its last event.
    pub(crate) next_seq: Seq,
    /// The latest time of its records.
    pub(crate) max_ms: u64,
}

/// The events of one block as the index takes them: each one's seq, tock
/// and path, the path encoded as a key ([`crate::key::path_key`]) when it
/// is added. The log writer fills one straight from the in-memory log's
/// records ([`BlockEvents::push_entry`]: no event is decoded).
#[derive(Debug, Default, Clone)]
pub struct BlockEvents {
    /// The events' path keys, one after the other.
    keys: Vec<u8>,
    /// Per event: seq, tock, where its key ends in `keys`.
    events: Vec<(Seq, u64, usize)>,
}

impl BlockEvents {
    /// Adds an event at `seq` with `tock` on `path`.
    pub fn push(&mut self, seq: Seq, tock: u64, path: &KvPath) {
        push_path_key(&mut self.keys, path);
        self.events.push((seq, tock, self.keys.len()));
    }

    /// Adds the event a record of the in-memory log holds, at `seq`.
    pub fn push_entry(&mut self, seq: Seq, entry: &LogEntry<'_>) {
        push_entry_path_key(&mut self.keys, entry);
        self.events.push((seq, entry.tock(), self.keys.len()));
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Forgets every event; keeps the buffers.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.events.clear();
    }

    /// Takes out the events before `seq` (those a commit wrote), leaving
    /// the ones from `seq` on.
    pub fn take_before(&mut self, seq: Seq) -> BlockEvents {
        let n = self.events.partition_point(|e| e.0 < seq);
        if n == self.events.len() {
            return std::mem::take(self);
        }
        let cut = n.checked_sub(1).map_or(0, |i| self.events[i].2);
        let rest = BlockEvents {
            keys: self.keys[cut..].to_vec(),
            events: self.events[n..]
                .iter()
                .map(|&(seq, tock, end)| (seq, tock, end - cut))
                .collect(),
        };
        self.keys.truncate(cut);
        self.events.truncate(n);
        std::mem::replace(self, rest)
    }

    /// The seq of the first event.
    pub fn first_seq(&self) -> Option<Seq> {
        self.events.first().map(|e| e.0)
    }

    pub(crate) fn last_seq(&self) -> Option<Seq> {
        self.events.last().map(|e| e.0)
    }

    /// Each event: seq, tock, path key.
    pub fn iter(&self) -> impl Iterator<Item = (Seq, u64, &[u8])> + '_ {
        let mut start = 0;
        self.events.iter().map(move |&(seq, tock, end)| {
            let key = &self.keys[start..end];
            start = end;
            (seq, tock, key)
        })
    }
}

impl HistoryIndex {
    /// Opens (or creates) the index in `dir` for the log in `log_dir` of
    /// node `node`. An index sled cannot open, of another format or of
    /// another node is removed and started afresh: the second value says
    /// why, then. The index is not checked against the segments here:
    /// call [`HistoryIndex::sync`].
    pub fn open(dir: &Path, log_dir: &Path, node: &str) -> Result<(HistoryIndex, Option<String>)> {
        // An index this process just dropped keeps its lock until sled's
        // flusher thread wakes up: wait that long before calling it in
        // use by another process.
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(FLUSH_EVERY_MS + FLUSH_EVERY_MS / 2);
        let mut opened = Self::try_open(dir, log_dir, node);
        while matches!(opened, Err(Unusable::InUse(_))) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            opened = Self::try_open(dir, log_dir, node);
        }
        match opened {
            Ok(Ok(ix)) => Ok((ix, None)),
            Err(Unusable::InUse(e)) => Err(IndexError::InUse {
                dir: dir.to_path_buf(),
                source: e,
            }),
            Ok(Err(why)) | Err(Unusable::Damaged(why)) => {
                remove_dir(dir)?;
                let fresh = |why: String| IndexError::Stale(format!("a fresh index failed: {why}"));
                let ix = Self::try_open(dir, log_dir, node)
                    .map_err(|e| fresh(e.text()))?
                    .map_err(fresh)?;
                Ok((ix, Some(why)))
            }
        }
    }

    /// Opens the index; the inner `Err` says why it is not usable.
    fn try_open(
        dir: &Path,
        log_dir: &Path,
        node: &str,
    ) -> std::result::Result<std::result::Result<HistoryIndex, String>, Unusable> {
        // Few, large records (see the crate docs): a small cache is
        // enough, and sled writes its files lazily (the index is derived;
        // what a crash loses is caught up from the segments). (With
        // `LowSpace` and 32 KiB chunks sled's `flush` was seen to hang:
        // docs/perf.md.)
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .mode(sled::Mode::HighThroughput);
        // sled reads its own files; a damaged one must not take the node
        // (or the tool) down with it.
        let db = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || config.open()))
        {
            Ok(Ok(db)) => db,
            // Another process holds it (a running node): leave it alone.
            // (sled reports a held lock as an `Other` error whose text
            // says so.)
            Ok(Err(sled::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                return Err(Unusable::InUse(e))
            }
            Ok(Err(e)) => return Err(Unusable::Damaged(format!("sled cannot open it: {e}"))),
            Err(_) => return Err(Unusable::Damaged("sled panicked opening it".into())),
        };
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| Unusable::Damaged(format!("tree {name}: {e}")))
        };
        let (tree, meta) = (tree("index")?, tree("meta")?);
        let get = |k: &str| {
            meta.get(k)
                .map_err(|e| Unusable::Damaged(format!("meta: {e}")))
        };
        match (get("format")?, get("node")?) {
            (None, None) if tree.is_empty() => {
                let ok = meta
                    .insert("format", FORMAT)
                    .and_then(|_| meta.insert("node", node.as_bytes()));
                ok.map_err(|e| Unusable::Damaged(format!("meta: {e}")))?;
            }
            (Some(f), Some(n)) if f == FORMAT && n == node.as_bytes() => {}
            (Some(f), _) if f != FORMAT => {
                return Ok(Err(format!(
                    "another format ({})",
                    String::from_utf8_lossy(&f)
                )))
            }
            (_, Some(n)) if n != node.as_bytes() => {
                return Ok(Err(format!(
                    "the index of node {}",
                    String::from_utf8_lossy(&n)
                )))
            }
            _ => return Ok(Err("its format record is missing".into())),
        }
        let mut segs = BTreeMap::new();
        for kv in tree.scan_prefix([TAG_SEG]) {
            let (k, v) = kv.map_err(|e| Unusable::Damaged(format!("segments: {e}")))?;
            match (k.get(1..).and_then(be64), SegState::decode(&v)) {
                (Some(first), Some(st)) => {
                    segs.insert(first, st);
                }
                _ => return Ok(Err("a damaged segment record".into())),
            }
        }
        let mut files = BTreeMap::new();
        for kv in tree.scan_prefix([TAG_FILE]) {
            let (k, v) = kv.map_err(|e| Unusable::Damaged(format!("part files: {e}")))?;
            match (file_id(&k), PartMeta::decode(&v)) {
                (Some(id), Some(meta)) => {
                    files.insert(id, meta);
                }
                _ => return Ok(Err("a damaged part file record".into())),
            }
        }
        let parts_dir = dir.join(partfile::PARTS_DIR);
        if let Err(why) = remove_strays(&parts_dir, &segs, &files) {
            return Ok(Err(why));
        }
        Ok(Ok(HistoryIndex {
            dir: dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            db,
            tree,
            parts_dir,
            segs,
            files,
            part: None,
            spare: None,
            limits: Limits::default(),
        }))
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the index holds per segment.
    pub fn segments(&self) -> &BTreeMap<Seq, SegState> {
        &self.segs
    }

    pub(crate) fn store_err(&self, source: sled::Error) -> IndexError {
        IndexError::Store {
            dir: self.dir.clone(),
            source,
        }
    }

    /// The next generation number (above every one in use).
    pub(crate) fn next_generation(&self) -> u32 {
        self.segs
            .values()
            .map(|s| s.generation)
            .max()
            .unwrap_or(0)
            .wrapping_add(1)
    }

    /// [`HistoryIndex::record_block`] for the block a log writer's commit
    /// describes (`info`), holding `events` (each with its seq).
    pub fn record_commit(
        &mut self,
        info: &CommitInfo,
        next_seq: Seq,
        time_ms: u64,
        events: &BlockEvents,
    ) -> Result<()> {
        let end = info.offset + info.bytes;
        let (segment, offset, crc) = (info.segment, info.offset, info.crc);
        self.record_block(segment, offset, crc, end, next_seq, time_ms, events)
    }

    /// Records one committed block: its events go to the part in memory
    /// (written to sled when full, with the segment's new fingerprint, in
    /// one atomic batch; never flushed: the index is derived). `end` is
    /// the offset after the block, `next_seq` the seq after its last
    /// event, `time_ms` the latest time of its records. A block the index
    /// already covers is skipped; one that does not continue what the
    /// index holds for the segment makes the index catch the segment up
    /// from the file instead (which reads this block too).
    #[allow(clippy::too_many_arguments)]
    pub fn record_block(
        &mut self,
        segment: Seq,
        offset: u64,
        crc: u32,
        end: u64,
        next_seq: Seq,
        time_ms: u64,
        events: &BlockEvents,
    ) -> Result<()> {
        let st = self.segs.get(&segment).copied();
        if st.is_some_and(|s| end <= s.indexed_to && next_seq <= s.next_seq) {
            return Ok(());
        }
        let continues = st.is_some_and(|s| {
            s.indexed_to == offset && events.first_seq().is_none_or(|seq| seq == s.next_seq)
        });
        if !continues {
            let path = self.log_dir.join(segment_file_name(segment));
            return self.sync_segment(segment, &path, &mut SyncReport::default());
        }
        let block = NewBlock {
            offset,
            end,
            crc,
            next_seq,
            max_ms: time_ms,
        };
        self.add_block(segment, block, events)
    }

    /// Adds a block's entries to the part of `segment` (writing the part
    /// of another segment first, and this one when it was full) and moves
    /// the segment's state past it.
    pub(crate) fn add_block(
        &mut self,
        segment: Seq,
        block: NewBlock,
        events: &BlockEvents,
    ) -> Result<()> {
        let Some(generation) = self.segs.get(&segment).map(|s| s.generation) else {
            return Ok(());
        };
        if self.part.as_ref().is_some_and(|p| {
            p.segment != segment || p.generation != generation || p.full(&self.limits)
        }) {
            self.write_part()?;
        }
        let Some(st) = self.segs.get_mut(&segment) else {
            return Ok(());
        };
        let spare = &mut self.spare;
        let part = self.part.get_or_insert_with(|| {
            let (keys, entries, blocks) = spare
                .take()
                .map(|p| (p.keys, p.entries, p.blocks))
                .unwrap_or_default();
            Part {
                segment,
                generation,
                number: st.parts,
                keys,
                entries,
                blocks,
            }
        });
        let mut max_tock = 0;
        for (seq, tock, key) in events.iter() {
            let start = part.keys.len();
            part.keys.extend_from_slice(key);
            push_seq(&mut part.keys, seq);
            part.entries.push(Entry {
                start,
                len: part.keys.len() - start,
                offset: block.offset,
            });
            max_tock = max_tock.max(tock);
        }
        part.blocks.push(BlockPos {
            first_seq: events.first_seq().unwrap_or(st.next_seq),
            segment,
            offset: block.offset,
            max_tock,
            max_ms: block.max_ms,
        });
        st.events += events.len() as u64;
        st.indexed_to = block.end;
        st.last_block = block.offset;
        st.last_crc = block.crc;
        st.next_seq = block.next_seq;
        Ok(())
    }

    /// Whether the part in memory is full (written at the next block).
    pub(crate) fn part_full(&self) -> bool {
        self.part.as_ref().is_some_and(|p| p.full(&self.limits))
    }

    /// Writes the part in memory, with its segment's state, in one atomic
    /// batch.
    pub(crate) fn write_part(&mut self) -> Result<()> {
        let Some(mut part) = self.part.take() else {
            return Ok(());
        };
        let segment = part.segment;
        let Some(mut st) = self.segs.get(&segment).copied() else {
            return Ok(());
        };
        if st.generation != part.generation {
            return Ok(());
        }
        st.parts = part.number + 1;
        let id = part.id();
        let file = self.parts_dir.join(id.file_name());
        // The file is complete before sled names it (see the crate docs).
        let meta = match part.write_file(&self.parts_dir, self.limits.chunk_bytes) {
            Ok(meta) => meta,
            Err(source) => {
                self.reload_segment(segment)?;
                return Err(IndexError::Io { file, source });
            }
        };
        let batch = part.take_batch(&st, meta);
        self.spare = Some(part);
        if let Err(e) = self.tree.apply_batch(batch) {
            let _ = std::fs::remove_file(&file);
            self.reload_segment(segment)?;
            return Err(self.store_err(e));
        }
        self.files.insert(id, meta);
        self.segs.insert(segment, st);
        Ok(())
    }

    /// Takes `segment`'s state back to what sled holds, after a part of it
    /// could not be written (its blocks are then caught up from the file).
    fn reload_segment(&mut self, segment: Seq) -> Result<()> {
        let stored = self
            .tree
            .get(seg_key(segment))
            .map_err(|e| self.store_err(e))?;
        match stored.as_deref().and_then(SegState::decode) {
            Some(st) => self.segs.insert(segment, st),
            None => self.segs.remove(&segment),
        };
        Ok(())
    }

    /// Records a segment's state as it is (no part written).
    pub(crate) fn put_segment(&mut self, segment: Seq, st: SegState) -> Result<()> {
        self.tree
            .insert(seg_key(segment), &st.encode()[..])
            .map_err(|e| self.store_err(e))?;
        self.segs.insert(segment, st);
        Ok(())
    }

    /// Forgets a segment (deleted by retention, or about to be indexed
    /// anew) and removes its records; returns how many events it held.
    pub fn forget(&mut self, segment: Seq) -> Result<u64> {
        if self.part.as_ref().is_some_and(|p| p.segment == segment) {
            self.part = None;
        }
        let Some(st) = self.segs.remove(&segment) else {
            return Ok(0);
        };
        let mut batch = sled::Batch::default();
        batch.remove(&seg_key(segment)[..]);
        let mut prefix = vec![TAG_FILE];
        prefix.extend_from_slice(&segment.to_be_bytes());
        for k in self.tree.scan_prefix(&prefix).keys() {
            batch.remove(k.map_err(|e| self.store_err(e))?);
        }
        for kv in self.tree.scan_prefix([TAG_BLOCKS]).keys() {
            let k = kv.map_err(|e| self.store_err(e))?;
            if k.get(9..17).and_then(be64) == Some(segment) {
                batch.remove(k);
            }
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store_err(e))?;
        // The records are gone first: a file left by a failure here is a
        // stray, removed at the next open.
        let ids: Vec<PartId> = self
            .files
            .range(PartId::first_of(segment)..=PartId::last_of(segment))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.files.remove(&id);
            let file = self.parts_dir.join(id.file_name());
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(IndexError::Io { file, source }),
            }
        }
        Ok(st.events)
    }

    /// Opens part `number` of `segment`'s `generation` and checks it
    /// against its record (see [`crate::partfile`]).
    fn open_part(
        &self,
        segment: Seq,
        generation: u32,
        number: u32,
    ) -> std::result::Result<PartFile, partfile::Damage> {
        let id = PartId {
            segment,
            generation,
            number,
        };
        let Some(meta) = self.files.get(&id) else {
            return Err(partfile::Damage(format!(
                "{}: not recorded",
                self.parts_dir.join(id.file_name()).display()
            )));
        };
        PartFile::open(&self.parts_dir, id, *meta)
    }

    /// Whether every written part of `segment` (state `st`) has its file,
    /// complete and of its generation (sync's check: the chunks' CRCs are
    /// checked when they are read).
    pub(crate) fn parts_intact(&self, segment: Seq, st: &SegState) -> bool {
        (0..st.parts).all(|n| self.open_part(segment, st.generation, n).is_ok())
    }

    /// Whether `segment`/`generation`/`part` is current, and `seq` in it.
    fn live(&self, segment: Seq, generation: u32, part: u32, seq: Seq) -> bool {
        self.segs.get(&segment).is_some_and(|s| {
            s.generation == generation && part < s.parts && seq >= segment && seq < s.next_seq
        })
    }

    /// The current entries of `path`'s events (with `recursive`, also of
    /// the paths below it), in seq order.
    pub fn lookup(&self, path: &KvPath, recursive: bool) -> Result<Vec<Hit>> {
        let prefix = if recursive {
            subtree_prefix(path)
        } else {
            path_key(path)
        };
        let mut hits = Vec::new();
        for (&segment, st) in &self.segs {
            for number in 0..st.parts {
                self.lookup_part(segment, st.generation, number, &prefix, &mut hits)?;
            }
        }
        if let Some(p) = &self.part {
            for e in &p.entries {
                let k = p.key(e);
                if let (true, Some(seq)) = (k.starts_with(&prefix), key_seq(k)) {
                    hits.push(Hit {
                        seq,
                        segment: p.segment,
                        offset: e.offset,
                        key: k.to_vec(),
                    });
                }
            }
        }
        hits.sort_by_key(|h| h.seq);
        Ok(hits)
    }

    /// The entries under `prefix` in one written part: from the last chunk
    /// starting at or before the prefix, forward while chunks may hold it.
    fn lookup_part(
        &self,
        segment: Seq,
        generation: u32,
        number: u32,
        prefix: &[u8],
        hits: &mut Vec<Hit>,
    ) -> Result<()> {
        let damaged = |d: partfile::Damage| {
            // A damaged file is removed: the next sync indexes the segment
            // again instead of finding the file intact at a glance.
            let id = PartId {
                segment,
                generation,
                number,
            };
            let _ = std::fs::remove_file(self.parts_dir.join(id.file_name()));
            IndexError::Stale(format!("a damaged part file: {d}"))
        };
        let mut file = self
            .open_part(segment, generation, number)
            .map_err(damaged)?;
        let mut keyless = false;
        for i in file.chunks_for(prefix) {
            file.entries_with(i, prefix, |key, offset| match key_seq(key) {
                Some(seq) if self.live(segment, generation, number, seq) => hits.push(Hit {
                    seq,
                    segment,
                    offset,
                    key: key.to_vec(),
                }),
                Some(_) => {}
                None => keyless = true,
            })
            .map_err(damaged)?;
        }
        if keyless {
            return Err(IndexError::Stale("an entry key without a seq".into()));
        }
        Ok(())
    }

    /// Reads the events of `hits` from the segments, one read per block,
    /// checking each is the event its entry promised (see the crate docs).
    pub fn fetch(&self, hits: &[Hit]) -> Result<Vec<Found>> {
        let mut by_block: BTreeMap<(Seq, u64), Vec<&Hit>> = BTreeMap::new();
        for h in hits {
            by_block.entry((h.segment, h.offset)).or_default().push(h);
        }
        let mut found = Vec::with_capacity(hits.len());
        for ((segment, offset), want) in by_block {
            let file = self.log_dir.join(segment_file_name(segment));
            let records = read_block_at(&file, offset).map_err(|e| {
                IndexError::Stale(format!("an entry points at no valid block: {e}"))
            })?;
            for h in want {
                let hit = records.iter().find_map(|r| match r {
                    LogRecord::Event {
                        seq,
                        time_ms,
                        event,
                    } if *seq == h.seq => Some((*time_ms, event)),
                    _ => None,
                });
                match hit {
                    Some((time_ms, event)) if event_key(&event.path, h.seq) == h.key => {
                        found.push(Found {
                            seq: h.seq,
                            time_ms,
                            event: event.clone(),
                            file: file.clone(),
                            offset,
                        })
                    }
                    _ => {
                        return Err(IndexError::Stale(format!(
                        "{} byte {offset}: the block does not hold the event {} the index names",
                        file.display(),
                        h.seq
                    )))
                    }
                }
            }
        }
        found.sort_by_key(|f| f.seq);
        Ok(found)
    }

    /// The block to start reading at for the events from `seq` on: the
    /// last block whose first event is at or before `seq` (or a state-only
    /// block just before that one), if the index knows one.
    pub fn block_before(&self, seq: Seq) -> Result<Option<BlockPos>> {
        let in_part = self.part.as_ref().and_then(|p| {
            p.blocks
                .iter()
                .rev()
                .find(|b| b.first_seq <= seq && self.block_live(b, p.generation, None))
                .copied()
        });
        let written = self.block_written_before(seq)?;
        Ok(match (in_part, written) {
            (Some(a), Some(b)) => Some(if a.order() >= b.order() { a } else { b }),
            (a, b) => a.or(b),
        })
    }

    /// Whether a block of the seek table is of a current generation (and
    /// `part`, if given, written) and indexed.
    fn block_live(&self, b: &BlockPos, generation: u32, part: Option<u32>) -> bool {
        self.segs.get(&b.segment).is_some_and(|s| {
            s.generation == generation
                && part.is_none_or(|p| p < s.parts)
                && b.offset < s.indexed_to
        })
    }

    /// [`HistoryIndex::block_before`] among the written parts.
    fn block_written_before(&self, seq: Seq) -> Result<Option<BlockPos>> {
        let mut hi = vec![TAG_BLOCKS];
        hi.extend_from_slice(&seq.to_be_bytes());
        hi.extend_from_slice(&[0xff; 20]);
        let stale = || IndexError::Stale("a seek chunk that does not decode".into());
        for kv in self.tree.range(vec![TAG_BLOCKS]..=hi).rev() {
            let (k, v) = kv.map_err(|e| self.store_err(e))?;
            let (Some(segment), Some(generation), Some(part)) = (
                k.get(9..17).and_then(be64),
                k.get(17..21).and_then(be32),
                k.get(21..25).and_then(be32),
            ) else {
                return Err(stale());
            };
            if v.len() % BLOCK_LEN != 0 {
                return Err(stale());
            }
            for b in v.chunks(BLOCK_LEN).rev() {
                let b = BlockPos::decode(segment, b).ok_or_else(stale)?;
                if b.first_seq <= seq && self.block_live(&b, generation, Some(part)) {
                    return Ok(Some(b));
                }
            }
        }
        Ok(None)
    }

    /// Events indexed in current generations.
    pub fn live_events(&self) -> u64 {
        self.segs.values().map(|s| s.events).sum()
    }

    /// Writes the part in memory, and what sled holds in memory to its
    /// files (not needed for correctness: a lost index is rebuilt).
    pub fn flush(&mut self) -> Result<()> {
        self.write_part()?;
        self.db.flush().map(drop).map_err(|e| self.store_err(e))
    }
}

/// Removes the files in `parts_dir` that are not a recorded part of a
/// current generation (left by a crash between a file's rename and its
/// record, or by a failed removal); the error says why the index cannot
/// be used.
fn remove_strays(
    parts_dir: &Path,
    segs: &BTreeMap<Seq, SegState>,
    files: &BTreeMap<PartId, PartMeta>,
) -> std::result::Result<(), String> {
    let current = |id: PartId| {
        files.contains_key(&id)
            && segs
                .get(&id.segment)
                .is_some_and(|s| s.generation == id.generation && id.number < s.parts)
    };
    let strays = partfile::strays(parts_dir, current)
        .map_err(|e| format!("{}: {e}", parts_dir.display()))?;
    for f in strays {
        let removed = if f.is_dir() {
            std::fs::remove_dir_all(&f)
        } else {
            std::fs::remove_file(&f)
        };
        removed.map_err(|e| format!("{}: {e}", f.display()))?;
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    let removed = if dir.is_dir() {
        std::fs::remove_dir_all(dir)
    } else {
        std::fs::remove_file(dir)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(IndexError::Io {
            file: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod sort_tests {
    use super::{sorted_order, Entry};
    use crate::key::{push_path_key, push_seq};
    use distkv_model::{Path, Value};
    use proptest::prelude::*;

    /// A part as a node's load makes it: 20 000 changes of 5 000 paths
    /// (a string, then a number) in a seeded random order, most paths
    /// changed more than once (their keys differ only in the seq).
    #[test]
    fn a_part_of_many_changes_sorts_as_its_keys() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut keys = Vec::new();
        let mut entries = Vec::new();
        for seq in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = Path::from(vec![Value::str("bench"), Value::uint(x % 5_000)]);
            let start = keys.len();
            push_path_key(&mut keys, &p);
            push_seq(&mut keys, 1_000_000 + seq);
            entries.push(Entry {
                start,
                len: keys.len() - start,
                offset: seq,
            });
        }
        let key = |i: u32| {
            let e = &entries[i as usize];
            &keys[e.start..e.start + e.len]
        };
        let mut want: Vec<u32> = (0..entries.len() as u32).collect();
        want.sort_by(|a, b| key(*a).cmp(key(*b)));
        assert_eq!(sorted_order(&keys, &entries), want);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x50f7),
            ..ProptestConfig::default()
        })]

        /// Keys sharing a prefix, of every length, bytes from a small
        /// alphabet with zeros (a key ending where another has a zero
        /// byte): sorted as the keys themselves sort.
        #[test]
        fn parts_sort_as_their_keys(
            prefix in proptest::collection::vec(any::<u8>(), 0..12),
            tails in proptest::collection::vec(proptest::collection::vec(0u8..3, 0..12), 0..200),
        ) {
            let mut keys = Vec::new();
            let mut entries = Vec::new();
            for (i, t) in tails.iter().enumerate() {
                let start = keys.len();
                keys.extend_from_slice(&prefix);
                keys.extend_from_slice(t);
                entries.push(Entry { start, len: keys.len() - start, offset: i as u64 });
            }
            let key = |i: u32| {
                let e = &entries[i as usize];
                &keys[e.start..e.start + e.len]
            };
            let got: Vec<&[u8]> = sorted_order(&keys, &entries).into_iter().map(key).collect();
            let mut want: Vec<&[u8]> = (0..entries.len() as u32).map(key).collect();
            want.sort();
            prop_assert_eq!(got, want);
        }
    }
}
