//! The in-memory event log: a bounded, sequence-numbered ring of applied
//! events, kept compact.
//!
//! Every change a node applies is appended here, and several readers take
//! the records from it at their own pace, each with its own cursor: the
//! file writer, the broadcaster, the watchers, the change-log export. The
//! log never blocks the writer: when it is full, the oldest records are
//! dropped, and a reader whose cursor points before the oldest record gets
//! [`Lagged`] — an explicit error, never a silent gap. The file writer pins
//! what it has not written yet ([`EventLog::pin`]): those records are kept
//! whatever the limits. A reader that reaches the log under a lock copies
//! what it takes ([`LogCopy`]) and reads the copy after letting the lock go.
//!
//! # Layout (docs/perf.md, "Memory" and "Merge throughput")
//!
//! Appending sits on the merge's hot path, and a full log drops a record
//! for every record appended, so both must be cheap, and so must holding
//! 65 536 records. A record is therefore not an event of its own (an
//! allocation, its own path, freed long after, with every cache miss that
//! brings) but a few bytes in a ring of large buffers:
//!
//! * its **bytes** in a chunk of [`CHUNK_BYTES`] (chunks are appended and
//!   dropped whole, a spare one is reused), written by [`encode`]: the
//!   tock, the chain (node names as indices into the log's table of names),
//!   the path;
//! * its **value** beside them, shared with the tree that holds it (an
//!   reference-counted allocations behind [`Value`]'s strings and byte
//!   strings): copying a value
//!   into the log would cost as much memory as the tree's own copy;
//! * its approximate size ([`approx_size`]), for the byte limit.
//!
//! Path elements are encoded when they are nil, booleans, integers, floats
//! or strings (all that keys are, in practice); a path with any other
//! element (bytes, arrays, maps, extension types) is kept as it is, beside
//! the record. Either way a record decodes to the very event that was
//! appended ([`LogEntry::event`]).
//!
//! Invariants: `records[i]` has seq `first + i`; a record's bytes are in the
//! chunk numbered `chunk`, from `start`, and records follow each other in
//! seq order through the chunks; `chunks[0]` is numbered `first_chunk` and
//! holds the oldest record's bytes (or is the chunk being filled);
//! `exotic` holds the paths of held records that could not be encoded, in
//! seq order.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use distkv_model::codec;
use distkv_model::{Chain, Link, NodeName, Path, RecentNames, SharedStr, UpdateEvent, Value};

/// Sequence number of a log record; the first record is 1.
pub type Seq = u64;

/// Bytes of one chunk of encoded records (a larger record gets a chunk of
/// its own size).
pub const CHUNK_BYTES: usize = 64 << 10;

/// Most node names in the log's table of names; names beyond it are
/// written out in each record (a peer inventing names cannot grow the
/// table without bound).
const MAX_NAMES: usize = 1 << 16;

/// A reader asked for records the log no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event log reader fell behind: wanted record {wanted}, oldest kept is {oldest}")]
pub struct Lagged {
    /// The first record the reader wanted.
    pub wanted: Seq,
    /// The oldest record still in the log.
    pub oldest: Seq,
}

/// Size limits of an [`EventLog`].
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Most records kept.
    pub max_records: usize,
    /// Most (approximate) bytes of event data kept.
    pub max_bytes: usize,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            max_records: 1 << 16,
            max_bytes: 64 << 20,
        }
    }
}

/// One record: where its bytes are, its value, its approximate size.
#[derive(Debug)]
struct Record {
    value: Option<Value>,
    /// The number of the chunk holding its bytes.
    chunk: u32,
    /// Where its bytes start in that chunk.
    start: u32,
    /// [`approx_size`] of the event.
    size: u32,
}

/// A bounded in-memory log of applied events.
#[derive(Debug)]
pub struct EventLog {
    /// Tells logs apart (a [`LogCopy`] keeps the names of one log).
    id: u64,
    limits: LogLimits,
    records: VecDeque<Record>,
    /// Sequence number of `records[0]`.
    first: Seq,
    chunks: VecDeque<Vec<u8>>,
    /// Number of `chunks[0]` (wrapping).
    first_chunk: u32,
    /// A dropped chunk kept for the next one.
    spare: Option<Vec<u8>>,
    /// Paths kept as they are, by the seq of their record.
    exotic: VecDeque<KeptPath>,
    names: Names,
    /// The record being encoded.
    scratch: Vec<u8>,
    bytes: usize,
    /// Records from this one on are never dropped (not yet on disk).
    keep_from: Option<Seq>,
    /// Approximate bytes of the records from `keep_from` on.
    pinned_bytes: usize,
}

impl EventLog {
    /// An empty log whose first record will be number 1.
    pub fn new(limits: LogLimits) -> EventLog {
        EventLog::starting_at(limits, 1)
    }

    /// An empty log whose first record will be number `next` (a node that
    /// recovered records up to `next - 1` from its files).
    pub fn starting_at(limits: LogLimits, next: Seq) -> EventLog {
        static LOGS: AtomicU64 = AtomicU64::new(0);
        EventLog {
            id: LOGS.fetch_add(1, Ordering::Relaxed),
            limits,
            records: VecDeque::new(),
            first: next.max(1),
            chunks: VecDeque::new(),
            first_chunk: 0,
            spare: None,
            exotic: VecDeque::new(),
            names: Names::default(),
            scratch: Vec::new(),
            bytes: 0,
            keep_from: None,
            pinned_bytes: 0,
        }
    }

    /// Keeps every record from `from` on, whatever the limits, until the
    /// pin moves (the file writer pins what it has not written yet);
    /// `None` releases the pin.
    pub fn pin(&mut self, from: Option<Seq>) {
        self.keep_from = from;
        // The pin normally moves forward by what the writer just wrote, so
        // summing the records still pinned is cheap.
        self.pinned_bytes = match from {
            None => 0,
            Some(k) => {
                let skip = k.saturating_sub(self.first) as usize;
                self.records
                    .iter()
                    .skip(skip)
                    .map(|r| r.size as usize)
                    .sum()
            }
        };
    }

    /// Records and (approximate) bytes pinned: appended but not yet taken
    /// by the writer that pinned them — what a stalled disk makes pile up.
    pub fn pinned(&self) -> (usize, usize) {
        match self.keep_from {
            None => (0, 0),
            Some(k) => (
                self.next_seq().saturating_sub(k.max(self.first)) as usize,
                self.pinned_bytes,
            ),
        }
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the log holds no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> Seq {
        self.first + self.records.len() as Seq
    }

    /// The oldest record still kept.
    pub fn oldest_seq(&self) -> Seq {
        self.first
    }

    /// Appends (a copy of) an event, dropping the oldest records beyond the
    /// limits. Returns its sequence number.
    pub fn push(&mut self, event: &UpdateEvent) -> Seq {
        let size = approx_size(event);
        let seq = self.next_seq();
        // Room first, so that a full ring does not grow to hold one more.
        while self.records.len() >= self.limits.max_records.max(1) && self.may_drop() {
            self.drop_oldest();
        }
        self.scratch.clear();
        if !encode(event, &mut self.names, &mut self.scratch) {
            self.exotic.push_back((seq, event.path.clone()));
        }
        let (chunk, start) = self.place();
        self.records.push_back(Record {
            value: None,
            chunk,
            start,
            size: u32::try_from(size).unwrap_or(u32::MAX),
        });
        // The value is cloned into the record where it lies: a record made
        // with its clone inside was copied through the stack twice, each
        // copy reading back in 16-byte pieces what the clone had just
        // written in others (stalls of the store buffer's forwarding:
        // a third of this function's time in the merge's profile).
        if let (Some(v), Some(r)) = (&event.value, self.records.back_mut()) {
            r.value = Some(v.clone());
        }
        let size = size.min(u32::MAX as usize);
        self.bytes += size;
        if self.keep_from.is_some_and(|k| seq >= k) {
            self.pinned_bytes += size;
        }
        while (self.records.len() > self.limits.max_records
            || (self.bytes > self.limits.max_bytes && self.records.len() > 1))
            && self.may_drop()
        {
            self.drop_oldest();
        }
        seq
    }

    /// Up to `max` records starting at `from`, with their sequence numbers.
    pub fn read(
        &self,
        from: Seq,
        max: usize,
    ) -> Result<impl Iterator<Item = (Seq, LogEntry<'_>)> + '_, Lagged> {
        self.holds(from)?;
        let skip = usize::try_from(from - self.first).unwrap_or(usize::MAX);
        let kept = self.exotic.as_slices();
        Ok(self
            .records
            .iter()
            .skip(skip)
            .take(max)
            .enumerate()
            .map(move |(i, record)| {
                let seq = from + i as Seq;
                let entry = LogEntry {
                    bytes: &self.chunk(record.chunk)[record.start as usize..],
                    names: &self.names.names,
                    kept,
                    seq,
                    value: record.value.as_ref(),
                };
                (seq, entry)
            }))
    }

    /// Fails unless the log still holds record `seq` (or it is to come).
    fn holds(&self, seq: Seq) -> Result<(), Lagged> {
        if seq < self.first {
            return Err(Lagged {
                wanted: seq,
                oldest: self.first,
            });
        }
        Ok(())
    }

    /// The chunk numbered `number`.
    fn chunk(&self, number: u32) -> &[u8] {
        &self.chunks[number.wrapping_sub(self.first_chunk) as usize]
    }

    /// Whether the oldest record may go (it is not pinned).
    fn may_drop(&self) -> bool {
        !self.records.is_empty() && self.keep_from.is_none_or(|k| self.first < k)
    }

    fn drop_oldest(&mut self) {
        let Some(r) = self.records.pop_front() else {
            return;
        };
        self.bytes -= r.size as usize;
        // The next record to drop is dropped at the next push, its value's
        // count asked for now (its last use was long ago).
        if let Some(v) = self.records.front().and_then(|r| r.value.as_ref()) {
            v.prefetch();
        }
        if self.exotic.front().is_some_and(|(s, _)| *s == self.first) {
            self.exotic.pop_front();
        }
        self.first += 1;
        // The chunks before the new oldest record's are done with; without
        // records, all of them.
        let done = match self.records.front() {
            Some(r) => r.chunk.wrapping_sub(self.first_chunk) as usize,
            None => self.chunks.len(),
        };
        for _ in 0..done {
            if let Some(mut c) = self.chunks.pop_front() {
                self.first_chunk = self.first_chunk.wrapping_add(1);
                if c.capacity() == CHUNK_BYTES {
                    c.clear();
                    self.spare = Some(c);
                }
            }
        }
    }

    /// Copies the encoded record into the ring: its chunk and start.
    fn place(&mut self) -> (u32, u32) {
        let len = self.scratch.len();
        let fits = self
            .chunks
            .back()
            .is_some_and(|c| c.capacity() - c.len() >= len);
        if !fits {
            let chunk = if len <= CHUNK_BYTES {
                self.spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES))
            } else {
                Vec::with_capacity(len)
            };
            self.chunks.push_back(chunk);
        }
        let number = self
            .first_chunk
            .wrapping_add(u32::try_from(self.chunks.len() - 1).unwrap_or(u32::MAX));
        let Some(c) = self.chunks.back_mut() else {
            unreachable!("a chunk was just pushed");
        };
        // Chunks hold at most `CHUNK_BYTES` or one record of a size that
        // fits a u32 (records are limited by the path budget).
        let start = u32::try_from(c.len()).unwrap_or(u32::MAX);
        c.extend_from_slice(&self.scratch);
        (number, start)
    }
}

/// Records copied out of an [`EventLog`], read as the log's own are. A
/// reader that reaches the log under a lock (the node's state lock, which
/// every change holds) copies the records it wants there — their bytes,
/// their values shared, a few bytes each — and lets the lock go before it
/// decodes or encodes them ([`LogCopy::entries`]), so changes wait for the
/// copy, not for the work.
#[derive(Debug, Default)]
pub struct LogCopy {
    /// The [`EventLog::id`] of the log whose names `names` holds.
    log: Option<u64>,
    /// The records' bytes, one after the other.
    bytes: Vec<u8>,
    /// Per record: its seq, where its bytes start in `bytes`, its value.
    records: Vec<(Seq, usize, Option<Value>)>,
    /// The copied records' paths kept beside them, by seq.
    kept: Vec<KeptPath>,
    /// The log's names so far: a log only ever adds names, so each copy
    /// adds those it does not have yet.
    names: Vec<NodeName>,
}

impl LogCopy {
    /// Replaces the copy with up to `max` records of `log` from `from` on;
    /// returns how many.
    pub fn fill(&mut self, log: &EventLog, from: Seq, max: usize) -> Result<usize, Lagged> {
        self.clear();
        self.extend(log, from, max)
    }

    /// Adds up to `max` records of `log` from `from` on to the copy;
    /// returns how many. A copy holds records of one log in the order of
    /// their seqs: one of another log, or that holds `from` or later
    /// records, is emptied first.
    pub fn extend(&mut self, log: &EventLog, from: Seq, max: usize) -> Result<usize, Lagged> {
        log.holds(from)?;
        if self.log != Some(log.id) {
            self.clear();
            self.log = Some(log.id);
            self.names.clear();
        }
        if self.records.last().is_some_and(|(seq, ..)| *seq >= from) {
            self.clear();
        }
        let names = &log.names.names;
        self.names
            .extend_from_slice(&names[self.names.len().min(names.len())..]);
        let skip = usize::try_from(from - log.first).unwrap_or(usize::MAX);
        let end = skip.saturating_add(max).min(log.records.len());
        if skip >= end {
            return Ok(0);
        }
        // Records follow each other through the chunks: each chunk's run
        // of them is copied at once, up to where the next record starts
        // (or the chunk ends).
        let mut run: Option<(u32, usize)> = None; // chunk, start of the run
        for (i, r) in log.records.range(skip..end).enumerate() {
            let start = r.start as usize;
            let run_start = match run {
                Some((chunk, s)) if chunk == r.chunk => s,
                _ => {
                    self.copy_run(log, run, skip + i);
                    run = Some((r.chunk, start));
                    start
                }
            };
            let at = self.bytes.len() + (start - run_start);
            self.records.push((from + i as Seq, at, r.value.clone()));
        }
        self.copy_run(log, run, end);
        let to = from + (end - skip) as Seq;
        let at = log.exotic.partition_point(|(s, _)| *s < from);
        self.kept
            .extend(log.exotic.range(at..).take_while(|(s, _)| *s < to).cloned());
        Ok(end - skip)
    }

    /// Copies the run of record bytes `run` (its chunk, and where its first
    /// record starts), which ends before record `next` of `log`.
    fn copy_run(&mut self, log: &EventLog, run: Option<(u32, usize)>, next: usize) {
        let Some((chunk, start)) = run else { return };
        let bytes = log.chunk(chunk);
        let end = match log.records.get(next) {
            Some(r) if r.chunk == chunk => r.start as usize,
            _ => bytes.len(),
        };
        self.bytes.extend_from_slice(&bytes[start..end]);
    }

    /// Empties the copy (the names are kept for the next one). Buffers
    /// grown beyond [`CHUNK_BYTES`] times 16 (a stalled disk's backlog,
    /// taken at once) are let go.
    pub fn clear(&mut self) {
        const KEEP: usize = 16 * CHUNK_BYTES;
        if self.bytes.capacity() > KEEP {
            self.bytes = Vec::new();
        }
        if self.records.capacity() * std::mem::size_of::<(Seq, usize, Option<Value>)>() > KEEP {
            self.records = Vec::new();
        }
        self.bytes.clear();
        self.records.clear();
        self.kept.clear();
    }

    /// Number of records copied.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is copied.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records copied, with their sequence numbers, as
    /// [`EventLog::read`] gave them.
    pub fn entries(&self) -> impl Iterator<Item = (Seq, LogEntry<'_>)> + '_ {
        self.records.iter().map(move |&(seq, start, ref value)| {
            let entry = LogEntry {
                bytes: &self.bytes[start..],
                names: &self.names,
                kept: (&self.kept, &[]),
                seq,
                value: value.as_ref(),
            };
            (seq, entry)
        })
    }
}

/// A path element as [`LogEntry::for_each_path_element`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PathElement<'a> {
    /// A string element, borrowed from the record.
    Str(&'a str),
    /// Any other element.
    Value(&'a Value),
}

/// A path kept beside its record (one that [`encode`] could not encode),
/// with the record's seq.
type KeptPath = (Seq, Path);

/// One record of an [`EventLog`] (or of a [`LogCopy`]), as a reader sees
/// it: the event is decoded when asked for.
#[derive(Clone, Copy)]
pub struct LogEntry<'a> {
    /// The record's bytes, from its start (what follows them is not read).
    bytes: &'a [u8],
    /// The node names the bytes refer to by number.
    names: &'a [NodeName],
    /// The paths kept beside their records, by seq, in two runs (as a ring
    /// holds them).
    kept: (&'a [KeptPath], &'a [KeptPath]),
    seq: Seq,
    value: Option<&'a Value>,
}

impl<'a> LogEntry<'a> {
    fn decoder(&self) -> Decoder<'a> {
        Decoder {
            buf: self.bytes,
            names: self.names,
        }
    }

    /// The node that made the change (its chain's head), without decoding
    /// the rest.
    pub fn head_node(&self) -> NodeName {
        let mut d = self.decoder();
        d.varint();
        d.varint();
        d.name()
    }

    /// Whether the event's path starts with `prefix`, as
    /// [`Path::starts_with`] would say of the decoded path: read from the
    /// record's bytes, without decoding the chain or building the path (a
    /// watcher asks this of every record, most of them outside its path).
    pub fn path_starts_with(&self, prefix: &[Value]) -> bool {
        let mut d = self.at_path();
        match d.varint() {
            0 => self.kept_path().starts_with(prefix),
            // `n` is one more than the path's length.
            n => {
                n > prefix.len() as u64
                    && prefix.iter().all(|p| {
                        if d.buf.first() != Some(&STR) {
                            return d.element() == *p;
                        }
                        d.byte();
                        let len = d.varint() as usize;
                        // A string equals only a string (`Value`'s `eq`).
                        matches!(p, Value::Str(s) if s.as_bytes() == d.bytes(len))
                    })
            }
        }
    }

    /// The event's tock, without decoding the rest.
    pub fn tock(&self) -> u64 {
        self.decoder().varint()
    }

    /// Calls `f` with each element of the event's path in order, read
    /// from the record's bytes: strings borrowed, no path built (the
    /// history index encodes every path the writer writes).
    pub fn for_each_path_element(&self, mut f: impl FnMut(PathElement<'_>)) {
        let mut d = self.at_path();
        match d.varint() {
            0 => self
                .kept_path()
                .iter()
                .for_each(|e| f(PathElement::Value(e))),
            n => {
                for _ in 1..n {
                    if d.buf.first() == Some(&STR) {
                        d.byte();
                        let len = d.varint() as usize;
                        f(PathElement::Str(d.text(len)));
                    } else {
                        f(PathElement::Value(&d.element()));
                    }
                }
            }
        }
    }

    /// A decoder of the record's bytes at its path (past the tock and the
    /// chain).
    fn at_path(&self) -> Decoder<'a> {
        let mut d = self.decoder();
        d.varint();
        let links = d.varint() as usize;
        d.skip_links(links);
        d
    }

    /// The path kept beside the record (one that [`encode`] could not
    /// encode).
    fn kept_path(&self) -> &'a Path {
        let find = |run: &'a [KeptPath]| {
            let i = run.partition_point(|(s, _)| *s < self.seq);
            run.get(i).filter(|(s, _)| *s == self.seq).map(|(_, p)| p)
        };
        let (older, newer) = self.kept;
        find(older)
            .or_else(|| find(newer))
            .expect("a record without an encoded path has its path kept")
    }

    /// The event's new value (`None` for a deletion).
    pub fn value(&self) -> Option<&'a Value> {
        self.value
    }

    /// The event, decoded.
    pub fn event(&self) -> UpdateEvent {
        let mut d = self.decoder();
        let tock = d.varint();
        let n = d.varint() as usize;
        let mut link = || Link {
            node: d.name(),
            tick: d.varint(),
        };
        let chain = if n == 1 {
            let Link { node, tick } = link();
            Chain::single(node, tick)
        } else {
            let links = (0..n).map(|_| link()).collect();
            Chain::from_links(links).expect("log records hold non-empty chains")
        };
        let path = match d.varint() {
            0 => self.kept_path().clone(),
            n => (1..n).map(|_| d.element()).collect(),
        };
        UpdateEvent {
            path,
            chain,
            value: self.value.cloned(),
            tock,
        }
    }
}

impl std::fmt::Debug for LogEntry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEntry")
            .field("seq", &self.seq)
            .field("event", &self.event())
            .finish()
    }
}

/// The log's node names, numbered in order of first use.
#[derive(Debug, Default)]
struct Names {
    names: Vec<NodeName>,
    index: HashMap<NodeName, u32, foldhash::quality::RandomState>,
    recent: RecentNames,
}

impl Names {
    /// The number of `name`, added if new and there is room.
    fn number(&mut self, name: &NodeName) -> Option<u32> {
        if let Some(n) = self.recent.get(name) {
            return Some(n);
        }
        let n = match self.index.get(&**name) {
            Some(&n) => n,
            None if self.names.len() >= MAX_NAMES => return None,
            None => {
                let n = self.names.len() as u32;
                self.names.push(name.clone());
                self.index.insert(name.clone(), n);
                n
            }
        };
        self.recent.put(name, n);
        Some(n)
    }
}

// Element tags of an encoded path.
const NIL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const UINT: u8 = 4;
const FLOAT: u8 = 5;
const STR: u8 = 6;

/// Encodes `event` without its value into `out`:
///
/// ```text
/// varint tock
/// varint links, then per link: name, varint tick
///     name = varint 2·i (the log's name number i) | varint 2·len + 1, then the UTF-8 bytes
/// varint 1 + elements, then per element: tag, payload
///     (0: the path is kept beside the record)
/// ```
///
/// Varints are LEB128; integers are zigzag-encoded. Returns false if the
/// path was not encoded (it holds an element of another kind).
fn encode(event: &UpdateEvent, names: &mut Names, out: &mut Vec<u8>) -> bool {
    put_varint(out, event.tock);
    let links = event.chain.links();
    put_varint(out, links.len() as u64);
    for l in links {
        match names.number(&l.node) {
            Some(n) => put_varint(out, u64::from(n) << 1),
            None => {
                put_varint(out, ((l.node.len() as u64) << 1) | 1);
                out.extend_from_slice(l.node.as_bytes());
            }
        }
        put_varint(out, l.tick);
    }
    let path = event.path.elements();
    let mark = out.len();
    put_varint(out, path.len() as u64 + 1);
    for e in path {
        match e {
            Value::Nil => out.push(NIL),
            Value::Bool(false) => out.push(FALSE),
            Value::Bool(true) => out.push(TRUE),
            Value::Int(i) => {
                out.push(INT);
                put_varint(out, ((*i << 1) ^ (*i >> 63)) as u64);
            }
            Value::UInt(u) => {
                out.push(UINT);
                put_varint(out, *u);
            }
            Value::Float(f) => {
                out.push(FLOAT);
                out.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                out.push(STR);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            _ => {
                out.truncate(mark);
                put_varint(out, 0);
                return false;
            }
        }
    }
    true
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads what [`encode`] wrote. The bytes are the log's own, written just
/// before: a short or malformed record is a bug of this module, not bad
/// input, hence the panics.
#[derive(Clone, Copy)]
struct Decoder<'a> {
    buf: &'a [u8],
    names: &'a [NodeName],
}

impl<'a> Decoder<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.buf.split_first().expect("a whole log record");
        self.buf = rest;
        b
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        b
    }

    fn text(&mut self, len: usize) -> &'a str {
        std::str::from_utf8(self.bytes(len)).expect("log records hold the strings they were given")
    }

    /// A node name, borrowed from the log.
    fn name_str(&mut self) -> &'a str {
        let v = self.varint();
        if v & 1 == 0 {
            &self.names[(v >> 1) as usize]
        } else {
            self.text((v >> 1) as usize)
        }
    }

    /// Writes a path element's msgpack encoding, as [`Value`]'s
    /// serialization writes the element [`Decoder::element`] reads.
    fn element_msgpack(&mut self, out: &mut Vec<u8>) {
        match self.byte() {
            NIL => out.push(0xc0),
            FALSE => out.push(0xc2),
            TRUE => out.push(0xc3),
            INT => {
                let z = self.varint();
                codec::write_int(out, ((z >> 1) as i64) ^ -((z & 1) as i64));
            }
            UINT => codec::write_uint(out, self.varint()),
            FLOAT => {
                out.push(0xcb);
                out.extend(self.bytes(8).iter().rev());
            }
            STR => {
                let n = self.varint() as usize;
                codec::write_str(out, self.text(n));
            }
            t => unreachable!("unknown path element tag {t} in a log record"),
        }
    }

    /// Skips `n` chain links (names not read).
    fn skip_links(&mut self, n: usize) {
        for _ in 0..n {
            let name = self.varint();
            if name & 1 == 1 {
                self.bytes((name >> 1) as usize);
            }
            self.varint();
        }
    }

    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte();
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn str(&mut self, len: usize) -> SharedStr {
        SharedStr::from(self.text(len))
    }

    fn name(&mut self) -> NodeName {
        let v = self.varint();
        if v & 1 == 0 {
            self.names[(v >> 1) as usize].clone()
        } else {
            self.str((v >> 1) as usize)
        }
    }

    fn element(&mut self) -> Value {
        match self.byte() {
            NIL => Value::Nil,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            INT => {
                let z = self.varint();
                Value::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            UINT => Value::UInt(self.varint()),
            FLOAT => {
                let mut b = [0; 8];
                b.copy_from_slice(self.bytes(8));
                Value::Float(f64::from_bits(u64::from_le_bytes(b)))
            }
            STR => {
                let n = self.varint() as usize;
                Value::Str(self.str(n))
            }
            t => unreachable!("unknown path element tag {t} in a log record"),
        }
    }
}

impl LogEntry<'_> {
    /// Appends the event's msgpack form to `out`: the bytes
    /// [`UpdateEvent`]'s serialization writes (the wire form,
    /// `{node, tick, prev, path, value?, tock}` with the chain's links as
    /// nested `{node, tick, prev}` maps), written from the record's bytes:
    /// no event is decoded.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut d = self.decoder();
        let tock = d.varint();
        let n = d.varint() as usize;
        codec::write_map_len(out, 5 + usize::from(self.value.is_some()));
        // The head's fields, then each older link as a map in the `prev`
        // of the one before.
        for i in 0..n {
            if i > 0 {
                codec::write_map_len(out, 3);
            }
            out.extend_from_slice(KEY_NODE);
            codec::write_str(out, d.name_str());
            out.extend_from_slice(KEY_TICK);
            codec::write_uint(out, d.varint());
            out.extend_from_slice(KEY_PREV);
        }
        out.push(MSGPACK_NIL);
        out.extend_from_slice(KEY_PATH);
        match d.varint() {
            0 => codec::write_path(out, self.kept_path().elements()),
            k => codec::write_path_with(out, |out| {
                for _ in 1..k {
                    d.element_msgpack(out);
                }
            }),
        }
        if let Some(v) = self.value {
            out.extend_from_slice(KEY_VALUE);
            codec::encode(v, out);
        }
        out.extend_from_slice(KEY_TOCK);
        codec::write_uint(out, tock);
    }
}

/// The keys of an event's msgpack form ([`LogEntry::encode`]), as fixstr.
const KEY_NODE: &[u8] = b"\xa4node";
const KEY_TICK: &[u8] = b"\xa4tick";
const KEY_PREV: &[u8] = b"\xa4prev";
const KEY_PATH: &[u8] = b"\xa4path";
const KEY_VALUE: &[u8] = b"\xa5value";
const KEY_TOCK: &[u8] = b"\xa4tock";

/// msgpack's nil.
const MSGPACK_NIL: u8 = 0xc0;

/// A cheap estimate of the memory an event holds.
pub fn approx_size(e: &UpdateEvent) -> usize {
    fn val(v: &Value) -> usize {
        16 + match v {
            Value::Str(s) => s.len(),
            Value::Bin(b) | Value::BigUint(b) | Value::Ext(_, b) => b.len(),
            Value::Array(a) => a.iter().map(val).sum(),
            Value::Map(m) => m.iter().map(|(k, v)| val(k) + val(v)).sum(),
            Value::Path(p) => p.iter().map(val).sum(),
            _ => 0,
        }
    }
    64 + e.path.iter().map(val).sum::<usize>()
        + e.value.as_ref().map_or(0, val)
        + e.chain.len() * 24
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn ev(i: u64) -> UpdateEvent {
        UpdateEvent {
            path: path!["k", i],
            chain: Chain::single(NodeName::from("n"), i),
            value: Some(Value::uint(i)),
            tock: i,
        }
    }

    #[test]
    fn readers_see_records_in_order() {
        let mut log = EventLog::new(LogLimits::default());
        for i in 1..=5 {
            assert_eq!(log.push(&ev(i)), i);
        }
        let got: Vec<_> = log
            .read(3, 10)
            .unwrap()
            .map(|(s, e)| (s, e.event().tock))
            .collect();
        assert_eq!(got, vec![(3, 3), (4, 4), (5, 5)]);
        assert_eq!(log.read(6, 10).unwrap().count(), 0);
    }

    #[test]
    fn a_reader_that_falls_behind_is_told() {
        let mut log = EventLog::new(LogLimits {
            max_records: 3,
            max_bytes: usize::MAX,
        });
        for i in 1..=10 {
            log.push(&ev(i));
        }
        assert_eq!(log.oldest_seq(), 8);
        assert_eq!(
            log.read(2, 1).err(),
            Some(Lagged {
                wanted: 2,
                oldest: 8
            })
        );
    }

    #[test]
    fn pinned_records_are_kept_beyond_the_limits() {
        let mut log = EventLog::new(LogLimits {
            max_records: 2,
            max_bytes: usize::MAX,
        });
        log.pin(Some(1));
        for i in 1..=5 {
            log.push(&ev(i));
        }
        assert_eq!(log.oldest_seq(), 1);
        log.pin(Some(4));
        log.push(&ev(6));
        assert_eq!(log.oldest_seq(), 4, "dropped down to the pin, no further");
        log.pin(None);
        log.push(&ev(7));
        assert_eq!(log.oldest_seq(), 6);
    }

    #[test]
    fn pinned_records_and_bytes_are_counted() {
        let mut log = EventLog::new(LogLimits::default());
        assert_eq!(log.pinned(), (0, 0));
        log.pin(Some(1));
        let mut sizes = Vec::new();
        for i in 1..=5 {
            sizes.push(approx_size(&ev(i)));
            log.push(&ev(i));
        }
        assert_eq!(log.pinned(), (5, sizes.iter().sum()));
        log.pin(Some(4));
        assert_eq!(log.pinned(), (2, sizes[3] + sizes[4]));
        log.pin(Some(6));
        assert_eq!(log.pinned(), (0, 0));
        log.pin(None);
        log.push(&ev(6));
        assert_eq!(log.pinned(), (0, 0));
    }

    #[test]
    fn byte_limit_bounds_memory_but_keeps_the_newest() {
        let mut log = EventLog::new(LogLimits {
            max_records: 1000,
            max_bytes: 1,
        });
        for i in 1..=10 {
            log.push(&ev(i));
        }
        assert_eq!(log.oldest_seq(), 10);
        assert_eq!(log.next_seq(), 11);
    }

    /// Events of every kind a record holds: encoded path elements of each
    /// kind, paths kept beside the record, chains of one to three links.
    fn varied(i: u64) -> UpdateEvent {
        let elements = match i % 7 {
            0 => vec![Value::Nil, Value::Bool(false), Value::Bool(true)],
            1 => vec![Value::Int(-1), Value::Int(i64::MIN), Value::Int(i64::MAX)],
            2 => vec![
                Value::UInt(u64::MAX),
                Value::Float(-0.5),
                Value::Float(f64::MAX),
            ],
            3 => vec![Value::str(""), Value::str("ünïcödé ✓"), Value::uint(i)],
            4 => vec![Value::str("a"), Value::Bin(Arc::from(&b"\x00\xff"[..]))],
            5 => vec![Value::Array(vec![Value::Int(1), Value::str("x")])],
            _ => vec![],
        };
        let names = ["a", "bb", "ccc"];
        let links = (0..=i % 3)
            .map(|k| Link {
                node: NodeName::from(names[((i + k) % 3) as usize]),
                tick: i * 3 + k,
            })
            .collect();
        UpdateEvent {
            path: Path::new(elements),
            chain: Chain::from_links(links).unwrap(),
            value: (i % 5 != 0).then(|| Value::str(&"v".repeat(i as usize % 40))),
            tock: i << 20,
        }
    }

    fn read_all(log: &EventLog) -> Vec<(Seq, UpdateEvent)> {
        log.read(log.oldest_seq(), usize::MAX)
            .unwrap()
            .map(|(s, e)| (s, e.event()))
            .collect()
    }

    fn encoded(e: &LogEntry<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        e.encode(&mut out);
        out
    }

    /// Every record of `log` copied into `copy`, decoded.
    fn copy_all(copy: &mut LogCopy, log: &EventLog) -> Vec<(Seq, UpdateEvent)> {
        copy.fill(log, log.oldest_seq(), usize::MAX).unwrap();
        copy.entries().map(|(s, e)| (s, e.event())).collect()
    }

    #[test]
    fn every_kind_of_event_reads_back_as_appended() {
        let mut log = EventLog::new(LogLimits {
            max_records: 50,
            max_bytes: usize::MAX,
        });
        for i in 1..=120 {
            log.push(&varied(i));
        }
        let got = read_all(&log);
        assert_eq!(got.len(), 50);
        for (seq, e) in got {
            let want = varied(seq);
            assert_eq!(e, want, "record {seq}");
            assert_eq!(e.chain.links(), want.chain.links());
        }
        let (_, entry) = log.read(100, 1).unwrap().next().unwrap();
        assert_eq!(&*entry.head_node(), &*varied(100).chain.head().node);
        assert_eq!(entry.value(), varied(100).value.as_ref());
        assert!(
            log.exotic.len() <= 50 * 2 / 7 + 2,
            "kept paths are dropped too"
        );
    }

    /// `path_starts_with` on the bytes says what `starts_with` on the
    /// decoded path says: for every prefix of every kind of path, for
    /// prefixes with an element changed or one too many, for numbers
    /// equal across kinds, and for names written out in the record.
    #[test]
    fn paths_are_tested_for_a_prefix_as_decoded() {
        let mut log = EventLog::new(LogLimits {
            max_records: 200,
            max_bytes: usize::MAX,
        });
        for i in 1..=140 {
            log.push(&varied(i));
        }
        let outsider = UpdateEvent {
            chain: Chain::single(NodeName::from("n".repeat(300)), 1),
            ..ev(7)
        };
        log.names.names.resize(MAX_NAMES, NodeName::from("x"));
        log.push(&outsider);
        let others = [
            Value::Nil,
            Value::Bool(true),
            Value::Int(-1),
            Value::UInt(7),
            Value::Float(7.0),
            Value::Float(-0.5),
            Value::str("a"),
            Value::str("k"),
            Value::Bin(Arc::from(&b"a"[..])),
        ];
        let (mut yes, mut no) = (0, 0);
        for (seq, entry) in log.read(1, usize::MAX).unwrap() {
            let path = entry.event().path;
            for n in 0..=path.len() + 1 {
                let mut prefixes = vec![path.elements()[..n.min(path.len())].to_vec()];
                for other in &others {
                    let mut p = prefixes[0].clone();
                    if n < path.len() {
                        p.push(other.clone());
                    } else if let Some(last) = p.last_mut() {
                        *last = other.clone();
                    }
                    prefixes.push(p);
                }
                for p in prefixes {
                    let want = path.starts_with(&p);
                    assert_eq!(
                        entry.path_starts_with(&p),
                        want,
                        "record {seq}, prefix {p:?}"
                    );
                    if want {
                        yes += 1;
                    } else {
                        no += 1;
                    }
                }
            }
        }
        assert!(yes > 500 && no > 500, "{yes} matching, {no} not");
    }

    #[test]
    fn records_span_chunks_which_are_dropped_and_reused() {
        let mut log = EventLog::new(LogLimits {
            max_records: 1000,
            max_bytes: usize::MAX,
        });
        let long = "k".repeat(500);
        let ev = |i: u64| UpdateEvent {
            path: path![long.as_str(), i],
            ..ev(i)
        };
        let mut copy = LogCopy::default();
        for i in 1..=20_000 {
            log.push(&ev(i));
            if i % 997 == 0 {
                let got = read_all(&log);
                assert_eq!(got.first().map(|(s, _)| *s), Some(log.oldest_seq()));
                assert!(got.iter().all(|(s, e)| *e == ev(*s)));
                assert_eq!(copy_all(&mut copy, &log), got);
            }
        }
        // 1 000 records of ≈ 520 bytes: 8 chunks, and one being filled.
        assert!(log.chunks.len() <= 10, "{} chunks", log.chunks.len());
        // A record larger than a chunk gets a chunk of its own.
        let huge = UpdateEvent {
            path: path!["k".repeat(3 * CHUNK_BYTES)],
            ..ev(1)
        };
        let seq = log.push(&huge);
        log.push(&ev(2));
        let got: Vec<_> = log.read(seq, 2).unwrap().map(|(_, e)| e.event()).collect();
        assert_eq!(got, vec![huge.clone(), ev(2)]);
        assert_eq!(copy.fill(&log, seq - 1, 3), Ok(3));
        let got: Vec<_> = copy.entries().map(|(_, e)| e.event()).collect();
        assert_eq!(got, vec![ev(20_000), huge, ev(2)]);
    }

    /// A copy extended piece by piece holds what one read of the same
    /// records gives, across a gap where the log dropped records; one
    /// extended from before its end starts over.
    #[test]
    fn a_copy_extended_in_pieces_reads_as_the_log() {
        let mut log = EventLog::new(LogLimits {
            max_records: 60,
            max_bytes: usize::MAX,
        });
        let mut copy = LogCopy::default();
        let mut want = Vec::new();
        let (mut next, mut lags) = (1, 0);
        for i in 1..=200u64 {
            log.push(&varied(i));
            if i % 13 != 0 {
                continue;
            }
            // Taking 7 records per 13 appended, the copy falls behind the
            // log's 60: a copy from before its oldest is refused, and
            // taken from its oldest.
            let n = match copy.extend(&log, next, 7) {
                Ok(n) => n,
                Err(lag) => {
                    assert_eq!(lag.oldest, log.oldest_seq());
                    next = lag.oldest;
                    lags += 1;
                    copy.extend(&log, next, 7).unwrap()
                }
            };
            want.extend(log.read(next, 7).unwrap().map(|(s, e)| (s, e.event())));
            next += n as Seq;
            let got: Vec<_> = copy.entries().map(|(s, e)| (s, e.event())).collect();
            assert_eq!(got, want);
        }
        assert!(lags > 0);
        let from = next - 2;
        assert!(from >= log.oldest_seq());
        assert_eq!(copy.extend(&log, from, 2), Ok(2));
        let got: Vec<_> = copy.entries().map(|(s, e)| (s, e.event())).collect();
        let want: Vec<_> = log
            .read(from, 2)
            .unwrap()
            .map(|(s, e)| (s, e.event()))
            .collect();
        assert_eq!(got, want);
    }

    /// A copy of a backlog larger than what it keeps lets its buffer go
    /// when emptied.
    #[test]
    fn a_copy_lets_a_big_buffer_go() {
        let mut log = EventLog::new(LogLimits::default());
        let long = "k".repeat(CHUNK_BYTES);
        for i in 1..=20 {
            log.push(&UpdateEvent {
                path: path![long.as_str(), i],
                ..ev(i)
            });
        }
        let mut copy = LogCopy::default();
        assert_eq!(copy_all(&mut copy, &log), read_all(&log));
        assert!(copy.bytes.capacity() > 16 * CHUNK_BYTES);
        copy.clear();
        assert_eq!(copy.bytes.capacity(), 0);
        assert_eq!(copy_all(&mut copy, &log), read_all(&log));
    }

    /// One copy filled from one log, then another: each log's records
    /// decode with that log's names.
    #[test]
    fn a_copy_reads_each_log_with_its_own_names() {
        let named = |node: &str, i: u64| UpdateEvent {
            chain: Chain::single(NodeName::from(node), i),
            ..ev(i)
        };
        let limits = LogLimits::default();
        let (mut one, mut two) = (EventLog::new(limits), EventLog::new(limits));
        for i in 1..=3 {
            one.push(&named(["a", "b", "c"][i as usize - 1], i));
            two.push(&named(["x", "y", "z"][i as usize - 1], i));
        }
        let mut copy = LogCopy::default();
        assert_eq!(copy_all(&mut copy, &one), read_all(&one));
        assert_eq!(copy_all(&mut copy, &two), read_all(&two));
        one.push(&named("d", 4));
        assert_eq!(copy_all(&mut copy, &one), read_all(&one));
        assert_eq!(copy.len(), 4);
        assert_eq!(
            copy.fill(&one, 0, 1),
            Err(Lagged {
                wanted: 0,
                oldest: 1
            })
        );
        assert!(
            copy.is_empty(),
            "a fill from before the log leaves the copy empty"
        );
    }

    #[test]
    fn names_beyond_the_table_are_written_out() {
        let mut log = EventLog::new(LogLimits {
            max_records: 10,
            max_bytes: usize::MAX,
        });
        let named = |i: u64| UpdateEvent {
            chain: Chain::single(NodeName::from(format!("node{i}")), i),
            ..ev(i)
        };
        let n = MAX_NAMES as u64 + 5;
        for i in 1..=n {
            log.push(&named(i));
        }
        assert_eq!(log.names.names.len(), MAX_NAMES);
        let got = read_all(&log);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(s, e)| *e == named(*s)));
    }

    /// A record encodes exactly as its decoded event serializes, and its tock
    /// and path elements read in place are the decoded event's: every kind
    /// of path element (those kept beside the records too), chains of one
    /// to three links, node names in the log's table and written out.
    #[test]
    fn a_record_encodes_as_its_event() {
        let mut log = EventLog::new(LogLimits {
            max_records: 1000,
            max_bytes: usize::MAX,
        });
        // Every other event names nodes of its own: the last ones are
        // beyond the table.
        let n = 2 * MAX_NAMES as u64 + 400;
        for i in 0..n {
            let mut e = varied(i);
            if i % 2 == 0 {
                let mut links = e.chain.links().to_vec();
                links[0].node = NodeName::from(format!("node{i}"));
                if let [_, .., last] = &mut links[..] {
                    last.node = NodeName::from(format!("tail{i}"));
                }
                e.chain = Chain::from_links(links).unwrap();
            }
            log.push(&e);
        }
        assert_eq!(log.names.names.len(), MAX_NAMES);
        let mut copy = LogCopy::default();
        copy.fill(&log, log.oldest_seq(), usize::MAX).unwrap();
        let mut copied = copy.entries();
        let mut count = 0;
        for (seq, entry) in log.read(log.oldest_seq(), usize::MAX).unwrap() {
            let (mut got, mut want) = (Vec::new(), Vec::new());
            entry.encode(&mut got);
            distkv_model::serial::encode(&entry.event(), &mut want);
            assert_eq!(got, want, "{:?}", entry.event());
            let (copied_seq, copied) = copied.next().unwrap();
            let mut from_copy = Vec::new();
            copied.encode(&mut from_copy);
            assert_eq!((copied_seq, from_copy), (seq, want));
            let event = entry.event();
            assert_eq!(entry.tock(), event.tock);
            let mut elements = Vec::new();
            entry.for_each_path_element(|e| {
                elements.push(match e {
                    PathElement::Str(s) => Value::str(s),
                    PathElement::Value(v) => v.clone(),
                })
            });
            assert_eq!(elements, event.path.elements(), "{event:?}");
            count += 1;
        }
        assert_eq!(count, 1000);
    }

    /// The log as it was, one shared event per record: what [`EventLog`]
    /// must behave like.
    struct Model {
        limits: LogLimits,
        records: VecDeque<(UpdateEvent, usize)>,
        first: Seq,
        bytes: usize,
        keep_from: Option<Seq>,
    }

    impl Model {
        fn push(&mut self, e: UpdateEvent) {
            let size = approx_size(&e);
            self.records.push_back((e, size));
            self.bytes += size;
            while (self.records.len() > self.limits.max_records
                || (self.bytes > self.limits.max_bytes && self.records.len() > 1))
                && self.keep_from.is_none_or(|k| self.first < k)
            {
                if let Some((_, s)) = self.records.pop_front() {
                    self.bytes -= s;
                    self.first += 1;
                }
            }
        }

        fn pinned(&self) -> (usize, usize) {
            let next = self.first + self.records.len() as Seq;
            match self.keep_from {
                None => (0, 0),
                Some(k) => {
                    let skip = k.saturating_sub(self.first) as usize;
                    let bytes = self.records.iter().skip(skip).map(|(_, s)| s).sum();
                    (next.saturating_sub(k.max(self.first)) as usize, bytes)
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Appends `varied(i)` (`long`: with a path of ~3 KB, so that the
        /// records fill chunks).
        Push(u64, bool),
        /// Pins at the oldest record plus this many (`None`: releases).
        Pin(Option<u64>),
        /// Copies up to this many records from the oldest plus this many.
        Copy(u64, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (1u64..1000, proptest::bool::weighted(0.2)).prop_map(|(i, l)| Op::Push(i, l)),
            1 => proptest::option::of(0u64..40).prop_map(Op::Pin),
            2 => (0u64..40, 0usize..40).prop_map(|(at, n)| Op::Copy(at, n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x10c),
            ..ProptestConfig::default()
        })]

        /// A record writes the bytes serde writes for its event, for any
        /// event (values and path elements of every kind, chains of every
        /// length, names in the log's table and written out).
        #[test]
        fn a_record_encodes_as_serde_writes_its_event(
            events in proptest::collection::vec(distkv_model::strategies::event(), 1..40),
        ) {
            let mut log = EventLog::new(LogLimits::default());
            for e in &events {
                log.push(e);
            }
            let entries = log.read(log.oldest_seq(), usize::MAX).unwrap();
            for ((_, entry), e) in entries.zip(&events) {
                let mut want = Vec::new();
                distkv_model::serial::encode(e, &mut want);
                prop_assert_eq!(encoded(&entry), want, "{:?}", e);
            }
        }

        #[test]
        fn the_ring_behaves_like_a_queue_of_events(
            max_records in 1usize..30,
            max_bytes in prop_oneof![Just(usize::MAX), 200usize..20_000],
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let limits = LogLimits { max_records, max_bytes };
            let mut log = EventLog::starting_at(limits, 7);
            let mut model = Model {
                limits,
                records: VecDeque::new(),
                first: 7,
                bytes: 0,
                keep_from: None,
            };
            let long = "x".repeat(3000);
            let mut copy = LogCopy::default();
            for op in ops {
                match op {
                    Op::Push(i, l) => {
                        let mut e = varied(i);
                        if l {
                            e.path = e.path.child(Value::str(&long));
                        }
                        let seq = log.push(&e);
                        prop_assert_eq!(seq, model.first + model.records.len() as Seq);
                        model.push(e);
                    }
                    Op::Pin(at) => {
                        let at = at.map(|n| model.first + n);
                        log.pin(at);
                        model.keep_from = at;
                    }
                    Op::Copy(at, max) => {
                        let from = model.first + at;
                        let n = copy.fill(&log, from, max).unwrap();
                        let want: Vec<(Seq, Vec<u8>)> = log
                            .read(from, max)
                            .unwrap()
                            .map(|(s, e)| (s, encoded(&e)))
                            .collect();
                        let got: Vec<(Seq, Vec<u8>)> = copy
                            .entries()
                            .map(|(s, e)| (s, encoded(&e)))
                            .collect();
                        prop_assert_eq!(n, want.len());
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(log.oldest_seq(), model.first);
                prop_assert_eq!(log.len(), model.records.len());
                prop_assert_eq!(log.pinned(), model.pinned());
                let got: Vec<UpdateEvent> = read_all(&log).into_iter().map(|(_, e)| e).collect();
                let want: Vec<UpdateEvent> = model.records.iter().map(|(e, _)| e.clone()).collect();
                prop_assert_eq!(got, want);
                if model.first > 1 {
                    prop_assert_eq!(
                        log.read(model.first - 1, 1).err(),
                        Some(Lagged { wanted: model.first - 1, oldest: model.first })
                    );
                }
            }
        }
    }
}
