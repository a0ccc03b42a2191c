//! The sled trees and their records (layout in the crate docs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use distkv_log::segment::segment_file_name;
use distkv_log::writer::CommitInfo;
use distkv_log::{read_block_at, LogRecord, Seq};
use distkv_model::{Path as KvPath, UpdateEvent};

use crate::key::{event_key, path_key, subtree_prefix};
use crate::{IndexError, Result};

/// The format this code writes and reads (in `meta`).
const FORMAT: &[u8] = b"distkv-index/1";

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
}

const SEG_LEN: usize = 48;

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
        b
    }

    fn decode(b: &[u8]) -> Option<SegState> {
        if b.len() != SEG_LEN {
            return None;
        }
        Some(SegState {
            generation: u32::from_be_bytes(b[0..4].try_into().ok()?),
            created_ms: be64(&b[4..12])?,
            indexed_to: be64(&b[12..20])?,
            last_block: be64(&b[20..28])?,
            last_crc: u32::from_be_bytes(b[28..32].try_into().ok()?),
            next_seq: be64(&b[32..40])?,
            events: be64(&b[40..48])?,
        })
    }
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// An `events` entry that belongs to a current generation.
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
    /// Dead entries purged.
    pub purged: u64,
}

impl SyncReport {
    /// Whether every event of every segment is indexed.
    pub fn complete(&self) -> bool {
        self.incomplete.is_empty()
    }
}

/// The index of one node's event log (see the crate docs).
pub struct HistoryIndex {
    pub(crate) dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    db: sled::Db,
    events: sled::Tree,
    blocks: sled::Tree,
    segments: sled::Tree,
    meta: sled::Tree,
    /// `segments`, in memory.
    pub(crate) segs: BTreeMap<Seq, SegState>,
    /// Entries of forgotten or reindexed generations not purged yet.
    pub(crate) dead: u64,
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

/// One event of a block, as the writer reports it.
#[derive(Debug, Clone, Copy)]
pub struct BlockEvent<'a> {
    /// Its seq.
    pub seq: Seq,
    /// Its path.
    pub path: &'a KvPath,
    /// Its tock.
    pub tock: u64,
}

impl HistoryIndex {
    /// Opens (or creates) the index in `dir` for the log in `log_dir` of
    /// node `node`. An index sled cannot open, of another format or of
    /// another node is removed and started afresh: the second value says
    /// why, then. The index is not checked against the segments here:
    /// call [`HistoryIndex::sync`].
    pub fn open(dir: &Path, log_dir: &Path, node: &str) -> Result<(HistoryIndex, Option<String>)> {
        match Self::try_open(dir, log_dir, node) {
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
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .flush_every_ms(Some(1000))
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
        let (events, blocks, segments, meta) = (
            tree("events")?,
            tree("blocks")?,
            tree("segments")?,
            tree("meta")?,
        );
        let get = |k: &str| {
            meta.get(k)
                .map_err(|e| Unusable::Damaged(format!("meta: {e}")))
        };
        match (get("format")?, get("node")?) {
            (None, None) if events.is_empty() && segments.is_empty() => {
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
        for kv in segments.iter() {
            let (k, v) = kv.map_err(|e| Unusable::Damaged(format!("segments: {e}")))?;
            match (be64(&k), SegState::decode(&v)) {
                (Some(first), Some(st)) => {
                    segs.insert(first, st);
                }
                _ => return Ok(Err("a damaged segment record".into())),
            }
        }
        let dead = match get("dead")? {
            None => 0,
            Some(v) => match be64(&v) {
                Some(d) => d,
                None => return Ok(Err("a damaged dead count".into())),
            },
        };
        Ok(Ok(HistoryIndex {
            dir: dir.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            db,
            events,
            blocks,
            segments,
            meta,
            segs,
            dead,
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
    pub fn record_commit<E: std::borrow::Borrow<UpdateEvent>>(
        &mut self,
        info: &CommitInfo,
        next_seq: Seq,
        time_ms: u64,
        events: &[(Seq, E)],
    ) -> Result<()> {
        let events: Vec<BlockEvent<'_>> = events
            .iter()
            .map(|(seq, e)| {
                let e = e.borrow();
                BlockEvent {
                    seq: *seq,
                    path: &e.path,
                    tock: e.tock,
                }
            })
            .collect();
        let end = info.offset + info.bytes;
        let (segment, offset, crc) = (info.segment, info.offset, info.crc);
        self.record_block(segment, offset, crc, end, next_seq, time_ms, &events)
    }

    /// Records one committed block: its events and the segment's new
    /// fingerprint, in one atomic sled batch (not flushed: the index is
    /// derived). `end` is the offset after the block, `next_seq` the seq
    /// after its last event, `time_ms` the latest time of its records. A
    /// block that does not continue what the index holds for the segment
    /// makes the index catch the segment up from the file instead (which
    /// reads this block too).
    #[allow(clippy::too_many_arguments)]
    pub fn record_block(
        &mut self,
        segment: Seq,
        offset: u64,
        crc: u32,
        end: u64,
        next_seq: Seq,
        time_ms: u64,
        events: &[BlockEvent<'_>],
    ) -> Result<()> {
        let continues = self.segs.get(&segment).is_some_and(|s| {
            s.indexed_to == offset && events.first().is_none_or(|e| e.seq == s.next_seq)
        });
        if !continues {
            let path = self.log_dir.join(segment_file_name(segment));
            self.sync_segment(segment, &path, &mut SyncReport::default())?;
            return Ok(());
        }
        let Some(mut st) = self.segs.get(&segment).copied() else {
            return Ok(());
        };
        let mut batch = Batches::default();
        batch.block(segment, st.generation, offset, events, time_ms, st.next_seq);
        st.indexed_to = end;
        st.last_block = offset;
        st.last_crc = crc;
        st.next_seq = next_seq;
        st.events += events.len() as u64;
        self.commit(segment, st, batch)
    }

    /// Writes the entries in `batch` and the segment's new state.
    pub(crate) fn commit(&mut self, segment: Seq, st: SegState, batch: Batches) -> Result<()> {
        self.events
            .apply_batch(batch.events)
            .map_err(|e| self.store_err(e))?;
        self.blocks
            .apply_batch(batch.blocks)
            .map_err(|e| self.store_err(e))?;
        self.segments
            .insert(segment.to_be_bytes(), &st.encode()[..])
            .map_err(|e| self.store_err(e))?;
        self.segs.insert(segment, st);
        Ok(())
    }

    /// Forgets a segment (deleted by retention, or about to be indexed
    /// anew): its entries are dead from now on.
    pub fn forget(&mut self, segment: Seq) -> Result<()> {
        if let Some(st) = self.segs.remove(&segment) {
            self.segments
                .remove(segment.to_be_bytes())
                .map_err(|e| self.store_err(e))?;
            self.dead += st.events;
            self.meta
                .insert("dead", &self.dead.to_be_bytes()[..])
                .map_err(|e| self.store_err(e))?;
        }
        Ok(())
    }

    /// Whether `segment`/`generation` is current, and `seq` in it.
    fn live(&self, segment: Seq, generation: u32, seq: Seq) -> bool {
        self.segs
            .get(&segment)
            .is_some_and(|s| s.generation == generation && seq >= segment && seq < s.next_seq)
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
        for kv in self.events.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(|e| self.store_err(e))?;
            let (Some(seq), Some((segment, generation, offset))) = (
                k.len().checked_sub(8).and_then(|at| be64(&k[at..])),
                entry_decode(&v),
            ) else {
                return Err(IndexError::Stale("an entry that does not decode".into()));
            };
            if self.live(segment, generation, seq) {
                hits.push(Hit {
                    seq,
                    segment,
                    offset,
                    key: k.to_vec(),
                });
            }
        }
        hits.sort_by_key(|h| h.seq);
        Ok(hits)
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
        let mut hi = Vec::with_capacity(24);
        hi.extend_from_slice(&seq.to_be_bytes());
        hi.extend_from_slice(&[0xff; 16]);
        for kv in self.blocks.range(..=hi).rev() {
            let (k, v) = kv.map_err(|e| self.store_err(e))?;
            let (Some(first), Some(segment), Some(offset)) = (
                k.get(0..8).and_then(be64),
                k.get(8..16).and_then(be64),
                k.get(16..24).and_then(be64),
            ) else {
                return Err(IndexError::Stale(
                    "a seek entry that does not decode".into(),
                ));
            };
            let generation = v
                .get(0..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes);
            let current = self
                .segs
                .get(&segment)
                .is_some_and(|s| Some(s.generation) == generation && offset < s.indexed_to);
            if current {
                return Ok(Some(BlockPos {
                    first_seq: first,
                    segment,
                    offset,
                    max_tock: v.get(4..12).and_then(be64).unwrap_or(0),
                    max_ms: v.get(12..20).and_then(be64).unwrap_or(0),
                }));
            }
        }
        Ok(None)
    }

    /// Removes the entries of generations no longer current (they are
    /// ignored meanwhile); returns how many.
    pub fn purge(&mut self) -> Result<u64> {
        let mut removed = 0u64;
        let mut batch = sled::Batch::default();
        for kv in self.events.iter() {
            let (k, v) = kv.map_err(|e| self.store_err(e))?;
            let seq = k.len().checked_sub(8).and_then(|at| be64(&k[at..]));
            let keep = match (seq, entry_decode(&v)) {
                (Some(seq), Some((segment, generation, _))) => self.live(segment, generation, seq),
                _ => false,
            };
            if !keep {
                batch.remove(k);
                removed += 1;
                if removed % 65536 == 0 {
                    self.events
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(|e| self.store_err(e))?;
                }
            }
        }
        self.events
            .apply_batch(batch)
            .map_err(|e| self.store_err(e))?;
        let mut dead_blocks = Vec::new();
        for kv in self.blocks.iter() {
            let (k, v) = kv.map_err(|e| self.store_err(e))?;
            let segment = k.get(8..16).and_then(be64);
            let generation = v
                .get(0..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes);
            let live = segment
                .and_then(|s| self.segs.get(&s))
                .is_some_and(|s| Some(s.generation) == generation);
            if !live {
                dead_blocks.push(k);
            }
        }
        for k in dead_blocks {
            self.blocks.remove(k).map_err(|e| self.store_err(e))?;
        }
        self.dead = 0;
        self.meta
            .insert("dead", &0u64.to_be_bytes()[..])
            .map_err(|e| self.store_err(e))?;
        Ok(removed)
    }

    /// Events indexed in current generations.
    pub fn live_events(&self) -> u64 {
        self.segs.values().map(|s| s.events).sum()
    }

    /// Writes what sled holds in memory to its files (not needed for
    /// correctness: a lost index is rebuilt).
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(drop).map_err(|e| self.store_err(e))
    }
}

/// Entries waiting to be written together.
#[derive(Default)]
pub(crate) struct Batches {
    events: sled::Batch,
    blocks: sled::Batch,
    /// Events in `events`.
    pub(crate) len: u64,
}

impl Batches {
    /// Adds the entries of one block; `next_seq` is the seq of its first
    /// event (or the next one, without events).
    pub(crate) fn block(
        &mut self,
        segment: Seq,
        generation: u32,
        offset: u64,
        events: &[BlockEvent<'_>],
        max_ms: u64,
        next_seq: Seq,
    ) {
        let value = entry_value(segment, generation, offset);
        let mut max_tock = 0;
        for e in events {
            self.events.insert(event_key(e.path, e.seq), &value[..]);
            max_tock = max_tock.max(e.tock);
        }
        self.len += events.len() as u64;
        let first = events.first().map_or(next_seq, |e| e.seq);
        let mut k = Vec::with_capacity(24);
        k.extend_from_slice(&first.to_be_bytes());
        k.extend_from_slice(&segment.to_be_bytes());
        k.extend_from_slice(&offset.to_be_bytes());
        let mut v = Vec::with_capacity(20);
        v.extend_from_slice(&generation.to_be_bytes());
        v.extend_from_slice(&max_tock.to_be_bytes());
        v.extend_from_slice(&max_ms.to_be_bytes());
        self.blocks.insert(k, v);
    }
}

/// An `events` value: segment, generation, block offset.
pub(crate) fn entry_value(segment: Seq, generation: u32, offset: u64) -> [u8; 20] {
    let mut v = [0u8; 20];
    v[0..8].copy_from_slice(&segment.to_be_bytes());
    v[8..12].copy_from_slice(&generation.to_be_bytes());
    v[12..20].copy_from_slice(&offset.to_be_bytes());
    v
}

fn entry_decode(v: &[u8]) -> Option<(Seq, u32, u64)> {
    if v.len() != 20 {
        return None;
    }
    Some((
        be64(&v[0..8])?,
        u32::from_be_bytes(v[8..12].try_into().ok()?),
        be64(&v[12..20])?,
    ))
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
