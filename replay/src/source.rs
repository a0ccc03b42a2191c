//! Input files: what they are, whose history they hold, and their records.
//!
//! An input path is one of (recognised by layout and magic bytes, never by
//! name alone):
//! * a **data directory** (`meta`, `log/`, `snap/`),
//! * a **segment directory** (holding `<20 digits>.dkvlog` files),
//! * one **segment** file (`DKVLOG\r\n`),
//! * one **snapshot** (`DKVSNAP\n`),
//! * a **DistKV-py** save or log file (plain msgpack: its first byte is a
//!   msgpack map).
//!
//! [`inventory`] sorts the inputs into [`History`]s, one per node: the
//! segments and snapshots naming the same node in their headers belong
//! together, whichever inputs they came from, so the files of several nodes
//! can be given at once. Each DistKV-py file is a history of its own.
//!
//! A [`HistoryStream`] then yields one history's records in log order as
//! [`Rec`]s, each with its [`Loc`] (file, seq, block offset). Damage never
//! stops a stream with an error: it is yielded as a [`Rec::Damage`] and the
//! stream goes on where it can. Segments are read as recovery in salvage
//! mode reads them: a damaged block with valid blocks after it is reported
//! and reading goes on at the next valid block, so every intact event is
//! seen. Only I/O failures are errors. Invariants: within a stream, events
//! come in seq order; a segment that does not start where the previous one
//! ended is reported as a [`DamageKind::Gap`].

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use distkv_core::persist::meta::Meta;
use distkv_core::persist::recover::list_snapshots;
use distkv_core::pyfiles::{looks_like_pyfile, PyReader, PyRecord};
use distkv_log::writer::RecoveryMode;
use distkv_log::{
    list_segments, read_segment_header, LogError, LogRecord, SegmentReader, Seq, Skipped,
};
use distkv_model::{NodeName, NodeSet, RangeSet, UpdateEvent, Value};
use distkv_snapshot::{
    EntryRecord, Item, NodeRecord, SnapshotError, SnapshotHeader, SnapshotReader,
};

use crate::error::{io_err, Error, Result};
use crate::output::Doc;

/// What an input path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A node's data directory.
    DataDir,
    /// A directory of segment files.
    SegmentDir,
    /// One segment file.
    Segment,
    /// One snapshot file.
    Snapshot,
    /// A DistKV-py save or log file.
    PyFile,
}

/// An input path and what it is.
#[derive(Debug, Clone)]
pub struct Input {
    /// The path as given.
    pub path: PathBuf,
    /// What it is.
    pub kind: Kind,
}

/// Recognises `path` by its layout and first bytes.
pub fn detect(path: &Path) -> Result<Input> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let input = |kind| {
        Ok(Input {
            path: path.to_path_buf(),
            kind,
        })
    };
    if meta.is_dir() {
        if path.join("meta").is_file() || path.join("log").is_dir() || path.join("snap").is_dir() {
            return input(Kind::DataDir);
        }
        if !list_segments(path)?.is_empty() {
            return input(Kind::SegmentDir);
        }
        return Err(Error::InvalidInput(format!(
            "{}: neither a data directory (meta, log/, snap/) nor a directory of segment files",
            path.display()
        )));
    }
    let mut head = [0u8; 8];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io_err(path))?;
    let head = &head[..n];
    if head == distkv_log::segment::MAGIC {
        input(Kind::Segment)
    } else if head == distkv_snapshot::MAGIC {
        input(Kind::Snapshot)
    } else if looks_like_pyfile(head) {
        input(Kind::PyFile)
    } else {
        Err(Error::InvalidInput(format!(
            "{}: unknown file format (not a segment, a snapshot or a DistKV msgpack file)",
            path.display()
        )))
    }
}

/// What kind of damage was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DamageKind {
    /// Bytes that are not what the format says (bad magic, CRC, framing,
    /// msgpack, an impossible record).
    Corrupt,
    /// The newest segment ends in a torn block or header with nothing
    /// valid after it (what a crash while writing leaves; recovery cuts it
    /// off, keeping the bytes).
    TornTail,
    /// A salvage left a lost record: events the node lost to damage.
    Lost,
    /// A snapshot or DistKV-py file ends early.
    Truncated,
    /// Records are missing between or inside files.
    Gap,
}

impl DamageKind {
    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            DamageKind::Corrupt => "corrupt",
            DamageKind::TornTail => "torn-tail",
            DamageKind::Lost => "lost",
            DamageKind::Truncated => "truncated",
            DamageKind::Gap => "gap",
        }
    }
}

/// Damage found in a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Damage {
    /// The file.
    pub file: PathBuf,
    /// Where: the start of the damaged header (0) or block, if known.
    pub offset: Option<u64>,
    /// What kind.
    pub kind: DamageKind,
    /// What is wrong.
    pub reason: String,
}

impl Damage {
    /// The damage a log error describes; I/O failures stay errors.
    pub fn from_log(e: LogError) -> Result<Damage> {
        Ok(match e {
            LogError::Corrupt {
                file,
                offset,
                reason,
            } => Damage {
                file,
                offset: Some(offset),
                kind: DamageKind::Corrupt,
                reason,
            },
            LogError::Salvageable {
                file,
                offset,
                next,
                reason,
            } => Damage {
                file,
                offset: Some(offset),
                kind: DamageKind::Corrupt,
                reason: format!("{reason}; {}", not_a_torn_tail(next)),
            },
            LogError::Gap {
                file,
                expected,
                found,
            } => Damage {
                file,
                offset: None,
                kind: DamageKind::Gap,
                reason: format!("expected record {expected}, found {found}"),
            },
            other => return Err(other.into()),
        })
    }

    /// Damage a segment reader went past (salvage mode): the damaged
    /// block, what it took, and where reading went on.
    pub fn from_skip(s: &Skipped, file_len: u64) -> Damage {
        let lost = match &s.lost {
            Some(l) if !l.is_empty() => {
                format!("; events {} to {} are lost with it", l.start, l.end - 1)
            }
            None => "; nothing is lost (its records were read whole)".to_string(),
            Some(_) if s.resumed_at < file_len => "; no event is lost with it".to_string(),
            Some(_) => String::new(),
        };
        let after = if s.resumed_at < file_len {
            not_a_torn_tail(s.resumed_at)
        } else {
            "the segment is not read past it".to_string()
        };
        Damage {
            file: s.file.clone(),
            offset: Some(s.offset),
            kind: DamageKind::Corrupt,
            reason: format!("{}{lost}; {after}", s.reason),
        }
    }

    /// The damage a snapshot error describes; I/O failures stay errors.
    pub fn from_snapshot(e: SnapshotError) -> Result<Damage> {
        Ok(match e {
            SnapshotError::Corrupt {
                file,
                offset,
                reason,
            } => Damage {
                file,
                offset: Some(offset),
                kind: DamageKind::Corrupt,
                reason,
            },
            SnapshotError::Truncated { file, offset } => Damage {
                file,
                offset: Some(offset),
                kind: DamageKind::Truncated,
                reason: "the snapshot ends early (its writer never finished)".into(),
            },
            other => return Err(other.into()),
        })
    }

    /// The damage as a report map.
    pub fn to_value(&self) -> Value {
        Doc::new()
            .put("kind", self.kind.name())
            .put("file", self.file.display().to_string().as_str())
            .opt("offset", self.offset.map(Value::uint))
            .put("reason", self.reason.as_str())
            .value()
    }

    /// One line for people.
    pub fn to_text(&self) -> String {
        match self.offset {
            Some(o) => format!(
                "{}: {} at byte {o}: {}",
                self.file.display(),
                self.kind.name(),
                self.reason
            ),
            None => format!(
                "{}: {}: {}",
                self.file.display(),
                self.kind.name(),
                self.reason
            ),
        }
    }
}

/// What damage with valid blocks after it, the next at byte `next`, is.
fn not_a_torn_tail(next: u64) -> String {
    format!(
        "valid blocks follow from byte {next}, so this is not a torn tail: a node refuses to start \
         on it, and recovery in salvage mode keeps every valid block after it"
    )
}

/// The damaged end of a segment with nothing valid after it: a torn tail
/// in the newest segment, corruption in any other (closed segments were
/// made durable before their successor began).
fn torn_damage(t: distkv_log::TornTail, newest: bool, next_seq: Seq) -> Damage {
    if newest {
        return Damage {
            file: t.file,
            offset: Some(t.offset),
            kind: DamageKind::TornTail,
            reason: format!(
                "{} ({} bytes to the end); nothing valid follows: what a crash while writing \
                 leaves, which recovery cuts off (keeping the bytes in the log's {} directory)",
                t.reason,
                t.bytes,
                distkv_log::DAMAGED_DIR
            ),
        };
    }
    Damage {
        file: t.file,
        offset: Some(t.offset),
        kind: DamageKind::Corrupt,
        reason: format!(
            "{} ({} bytes to the end); nothing valid follows, but this segment is not the newest \
             (it was made durable before the next one began), so this is no torn tail: what it \
             held from event {next_seq} on is lost",
            t.reason, t.bytes
        ),
    }
}

/// One segment file of a history.
#[derive(Debug, Clone)]
pub struct SegFile {
    /// Its path.
    pub path: PathBuf,
    /// The seq of its first event (from its header, or its name when the
    /// header is damaged).
    pub first_seq: Seq,
    /// Its size in bytes.
    pub bytes: u64,
}

/// One snapshot file of a history.
#[derive(Debug, Clone)]
pub struct SnapFile {
    /// Its path.
    pub path: PathBuf,
    /// Its header.
    pub header: SnapshotHeader,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The files of one node (or one DistKV-py file).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The node whose files these are (`None` for a DistKV-py file).
    pub node: Option<NodeName>,
    /// Segments, by first seq.
    pub segments: Vec<SegFile>,
    /// Snapshots, oldest (lowest seq) first.
    pub snapshots: Vec<SnapFile>,
    /// The DistKV-py file.
    pub py: Option<PathBuf>,
    /// The tick reservation of the node's data directory, if one was given.
    pub reserved_tick: Option<u64>,
}

impl History {
    /// A name for reports.
    pub fn label(&self) -> String {
        match (&self.node, &self.py) {
            (Some(n), _) => n.to_string(),
            (None, Some(p)) => p.display().to_string(),
            (None, None) => "?".into(),
        }
    }

    /// Bytes of its segments and DistKV-py file (what a stream reads and
    /// counts in [`HistoryStream::position`]).
    pub fn log_bytes(&self) -> u64 {
        let py = self
            .py
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        self.segments.iter().map(|s| s.bytes).sum::<u64>() + py
    }
}

/// All inputs, sorted into histories.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The histories, in the order their first file was given.
    pub histories: Vec<History>,
    /// Damage found while sorting (unreadable headers).
    pub damage: Vec<Damage>,
    /// Remarks (e.g. a file given twice).
    pub notes: Vec<String>,
}

impl Inventory {
    /// Numbers of segment, snapshot and DistKV-py files.
    pub fn counts(&self) -> (usize, usize, usize) {
        let h = &self.histories;
        (
            h.iter().map(|h| h.segments.len()).sum(),
            h.iter().map(|h| h.snapshots.len()).sum(),
            h.iter().filter(|h| h.py.is_some()).count(),
        )
    }

    fn history(&mut self, node: &NodeName) -> &mut History {
        let i = match self
            .histories
            .iter()
            .position(|h| h.node.as_ref() == Some(node))
        {
            Some(i) => i,
            None => {
                self.histories.push(History {
                    node: Some(node.clone()),
                    ..History::default()
                });
                self.histories.len() - 1
            }
        };
        &mut self.histories[i]
    }

    fn add_segment(&mut self, node: &NodeName, seg: SegFile) {
        self.history(node).segments.push(seg);
    }

    /// Adds the segments of `dir`; those with a damaged header go to
    /// `owner` (or the node of the others).
    fn add_segment_dir(&mut self, dir: &Path, owner: Option<NodeName>) -> Result<()> {
        let mut unplaced = Vec::new();
        let mut owner = owner;
        for s in list_segments(dir)? {
            let seg = SegFile {
                path: s.path.clone(),
                first_seq: s.first_seq,
                bytes: s.bytes,
            };
            match read_segment_header(&s.path) {
                Ok(h) => {
                    owner.get_or_insert_with(|| h.node.clone());
                    self.add_segment(&h.node, seg);
                }
                Err(LogError::Io { file, source }) => return Err(Error::Io { file, source }),
                // The stream reads it again and reports the damage in place.
                Err(_) => unplaced.push(seg),
            }
        }
        if !unplaced.is_empty() {
            match owner {
                Some(o) => {
                    for seg in unplaced {
                        self.add_segment(&o, seg);
                    }
                }
                None => {
                    for seg in unplaced {
                        self.damage.push(Damage {
                            file: seg.path,
                            offset: Some(0),
                            kind: DamageKind::Corrupt,
                            reason: "unreadable segment header, and no other file says whose \
                                     it is"
                                .into(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn add_snapshot(&mut self, path: &Path) -> Result<()> {
        match SnapshotReader::open(path) {
            Ok(r) => {
                let bytes = r.info().bytes;
                let header = r.header().clone();
                let node = header.node.clone();
                self.history(&node).snapshots.push(SnapFile {
                    path: path.to_path_buf(),
                    header,
                    bytes,
                });
            }
            Err(e) => self.damage.push(Damage::from_snapshot(e)?),
        }
        Ok(())
    }

    /// Sorts files, drops files given twice.
    fn tidy(&mut self) {
        let mut notes = Vec::new();
        for h in &mut self.histories {
            let mut seen = HashSet::new();
            h.segments.retain(|s| seen.insert(canonical(&s.path)));
            h.segments.sort_by_key(|s| s.first_seq);
            let mut firsts = HashSet::new();
            let label = h.label();
            h.segments.retain(|s| {
                let fresh = firsts.insert(s.first_seq);
                if !fresh {
                    notes.push(format!(
                        "{}: another segment of node {} starts at the same seq {}; ignored",
                        s.path.display(),
                        label,
                        s.first_seq
                    ));
                }
                fresh
            });
            let mut seen = HashSet::new();
            h.snapshots.retain(|s| seen.insert(canonical(&s.path)));
            h.snapshots.sort_by_key(|s| s.header.seq);
        }
        self.notes.extend(notes);
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Sorts the input paths into histories (see the module docs).
pub fn inventory(paths: &[PathBuf]) -> Result<Inventory> {
    let mut inv = Inventory::default();
    for path in paths {
        let input = detect(path)?;
        match input.kind {
            Kind::DataDir => {
                let meta = Meta::load(path)?;
                let owner = meta.as_ref().map(|m| NodeName::from(m.node.as_str()));
                if let (Some(m), Some(o)) = (&meta, &owner) {
                    inv.history(o).reserved_tick = Some(m.reserved_tick);
                }
                let log = path.join("log");
                if log.is_dir() {
                    inv.add_segment_dir(&log, owner.clone())?;
                }
                let snaps = list_snapshots(&path.join("snap")).map_err(|e| {
                    Error::InvalidInput(format!("{}: {e}", path.join("snap").display()))
                })?;
                for (_, p) in snaps.into_iter().rev() {
                    inv.add_snapshot(&p)?;
                }
            }
            Kind::SegmentDir => inv.add_segment_dir(path, None)?,
            Kind::Segment => match read_segment_header(path) {
                Ok(h) => {
                    let bytes = std::fs::metadata(path).map_err(io_err(path))?.len();
                    inv.add_segment(
                        &h.node,
                        SegFile {
                            path: path.clone(),
                            first_seq: h.first_seq,
                            bytes,
                        },
                    );
                }
                Err(e) => inv.damage.push(Damage::from_log(e)?),
            },
            Kind::Snapshot => inv.add_snapshot(path)?,
            Kind::PyFile => inv.histories.push(History {
                py: Some(path.clone()),
                ..History::default()
            }),
        }
    }
    inv.tidy();
    Ok(inv)
}

/// Where a record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// The file.
    pub file: Arc<Path>,
    /// Its place in the file.
    pub pos: Pos,
}

/// A record's place in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    /// A log record: its seq and the offset of its block.
    Seq {
        /// The record's seq.
        seq: Seq,
        /// File offset of its block.
        offset: u64,
    },
    /// The n-th record (from 1) of a DistKV-py file.
    Record(u64),
    /// An item of a snapshot.
    Snapshot,
}

impl Loc {
    /// The record's seq, for log records.
    pub fn seq(&self) -> Option<Seq> {
        match self.pos {
            Pos::Seq { seq, .. } => Some(seq),
            _ => None,
        }
    }

    /// `file seq N` / `file record N` / `file`.
    pub fn to_text(&self) -> String {
        match self.pos {
            Pos::Seq { seq, .. } => format!("{} seq {seq}", self.file.display()),
            Pos::Record(n) => format!("{} record {n}", self.file.display()),
            Pos::Snapshot => self.file.display().to_string(),
        }
    }

    /// `{file, seq?, offset?, record?}`.
    pub fn to_value(&self) -> Value {
        let d = Doc::new().put("file", self.file.display().to_string().as_str());
        match self.pos {
            Pos::Seq { seq, offset } => d
                .put("seq", Value::uint(seq))
                .put("offset", Value::uint(offset)),
            Pos::Record(n) => d.put("record", Value::uint(n)),
            Pos::Snapshot => d,
        }
        .value()
    }
}

/// A state record: tick bookkeeping of every node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateRec {
    /// Each node's highest tick.
    pub nodes: Vec<(NodeName, Option<u64>)>,
    /// Superseded ticks.
    pub known: NodeSet,
    /// Deleted ticks.
    pub deleted: NodeSet,
    /// The tock, if the record has one (DistKV-py).
    pub tock: Option<u64>,
    /// The history's own node's ticks declared never used (after an
    /// unclean stop); see [`LogRecord::State`].
    pub skipped: RangeSet,
}

/// One record of a history.
#[derive(Debug, Clone)]
pub enum Rec {
    /// An event (a log event, or a DistKV-py change or entry).
    Event {
        /// Where.
        loc: Loc,
        /// When it was written (log records only).
        time_ms: Option<u64>,
        /// The event.
        event: UpdateEvent,
        /// Already covered by the snapshot the history starts from: read
        /// for checking only, never applied.
        covered: bool,
    },
    /// A state record.
    State {
        /// Where.
        loc: Loc,
        /// When it was written (log records only).
        time_ms: Option<u64>,
        /// What it says.
        state: StateRec,
    },
    /// A snapshot's node item.
    Node {
        /// Where.
        loc: Loc,
        /// The item.
        node: NodeRecord,
    },
    /// A snapshot's entry item.
    Entry {
        /// Where.
        loc: Loc,
        /// The item.
        entry: EntryRecord,
    },
    /// A DistKV-py record this reader does not understand.
    Unknown {
        /// Where.
        loc: Loc,
        /// The record.
        value: Value,
    },
    /// Damage; the stream goes on after it where it can.
    Damage(Damage),
}

/// Where a stream stops (before the first event past it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cut {
    /// Never.
    #[default]
    None,
    /// At the first event whose tock is above this.
    Tock(u64),
    /// At the first event written after this time (ms since the epoch).
    TimeMs(u64),
}

/// What a [`HistoryStream`] reads.
#[derive(Debug, Clone, Default)]
pub struct StreamSpec {
    /// A snapshot whose items come first (applied as ordinary changes).
    pub snapshot: Option<PathBuf>,
    /// Events before this seq are covered by the start point.
    pub from_seq: Seq,
    /// Read every segment, even those entirely before `from_seq` (their
    /// events come as `covered`).
    pub verify_all: bool,
    /// Where to stop.
    pub cut: Cut,
    /// Treat every segment as closed: a torn tail is corruption too (for
    /// a segment known not to be the newest).
    pub strict: bool,
    /// Start reading at the block holding `from_seq`, as the data
    /// directory's history index says (checked; without a usable index,
    /// or when the block there is not the one promised, at the start of
    /// the segment), instead of at the start of its segment.
    pub seek: bool,
}

/// The segment being read.
struct OpenSeg {
    reader: SegmentReader,
    file: Arc<Path>,
    bytes: u64,
    /// The newest segment of its history (not one read as closed): it may
    /// end torn.
    newest: bool,
    /// How many of the reader's skipped damages are reported.
    skips_reported: usize,
}

impl OpenSeg {
    /// Queues the damage the reader went past since the last call; true
    /// if `record` is the lost record the reader made for it (the damage
    /// says what it lost, so the record is not reported again).
    fn report_skips(&mut self, record: Option<&LogRecord>, pending: &mut VecDeque<Rec>) -> bool {
        let new = &self.reader.skipped()[self.skips_reported..];
        self.skips_reported += new.len();
        let len = self.reader.file_len();
        pending.extend(new.iter().map(|s| Rec::Damage(Damage::from_skip(s, len))));
        match record {
            Some(LogRecord::Lost { seq, from, .. }) => {
                let lost = seq.checked_add(1).map(|end| *from..end);
                lost.is_some() && new.iter().any(|s| s.lost == lost)
            }
            _ => false,
        }
    }
}

/// One history's records in order (see the module docs).
pub struct HistoryStream {
    pending: VecDeque<Rec>,
    snap: Option<(SnapshotReader, Arc<Path>)>,
    py: Option<PathBuf>,
    segments: Vec<SegFile>,
    next_seg: usize,
    cur: Option<OpenSeg>,
    /// The seq the next segment should start at (`None`: unknown).
    expected: Option<Seq>,
    from_seq: Seq,
    verify_all: bool,
    strict: bool,
    cut: Cut,
    finished: bool,
    bytes_done: u64,
    /// Where to start in the first segment read: offset and the seq of
    /// the block's first event.
    start_at: Option<(u64, Seq)>,
    /// The offset reading started at, when it did so.
    seeked: Option<u64>,
    /// What state records leave out ([`HistoryStream::leave_out_known_within`]).
    known_within: Vec<(NodeName, Range<Seq>)>,
}

impl std::fmt::Debug for HistoryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStream")
            .field("next_seg", &self.next_seg)
            .field("from_seq", &self.from_seq)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl HistoryStream {
    /// A stream over `h` as `spec` says.
    pub fn new(h: &History, spec: StreamSpec) -> Result<HistoryStream> {
        let mut pending = VecDeque::new();
        let snap = match &spec.snapshot {
            Some(p) => match SnapshotReader::open(p) {
                Ok(r) => Some((r, Arc::from(p.as_path()))),
                Err(e) => {
                    pending.push_back(Rec::Damage(Damage::from_snapshot(e)?));
                    None
                }
            },
            None => None,
        };
        let mut start = 0;
        if !spec.verify_all && spec.from_seq > 0 {
            start = h
                .segments
                .iter()
                .rposition(|s| s.first_seq <= spec.from_seq)
                .unwrap_or(0);
        }
        if let Some(first) = h.segments.get(start) {
            if spec.from_seq > 0 && first.first_seq > spec.from_seq {
                pending.push_back(Rec::Damage(Damage {
                    file: first.path.clone(),
                    offset: None,
                    kind: DamageKind::Gap,
                    reason: format!(
                        "records {} to {} are in no file given (the log starts at {})",
                        spec.from_seq,
                        first.first_seq - 1,
                        first.first_seq
                    ),
                }));
            }
        }
        let skipped: u64 = h.segments[..start].iter().map(|s| s.bytes).sum();
        let start_at = match h.segments.get(start) {
            Some(seg) if spec.seek && !spec.verify_all && spec.from_seq > seg.first_seq => {
                seek_position(h, seg, spec.from_seq)
            }
            _ => None,
        };
        Ok(HistoryStream {
            pending,
            snap,
            py: h.py.clone(),
            segments: h.segments.clone(),
            next_seg: start,
            cur: None,
            expected: None,
            from_seq: spec.from_seq,
            verify_all: spec.verify_all,
            strict: spec.strict,
            cut: spec.cut,
            finished: false,
            bytes_done: skipped,
            start_at,
            seeked: None,
            known_within: Vec::new(),
        })
    }

    /// The offset reading started at inside the first segment, when the
    /// history index let it skip the segment's start.
    pub fn seeked(&self) -> Option<u64> {
        self.seeked
    }

    /// From the next record on, the segments' state records leave out of
    /// their `known` sets the ticks of each node named in `within` that lie
    /// in the range given there
    /// ([`distkv_log::LogReader::leave_out_known_within`]): for a replay
    /// whose state has seen them, and whose observer does not read the
    /// sets.
    pub fn leave_out_known_within(&mut self, within: &[(NodeName, Range<Seq>)]) {
        self.known_within.clear();
        self.known_within.extend_from_slice(within);
        if let Some(cur) = &mut self.cur {
            cur.reader.leave_out_known_within(within);
        }
    }

    /// The records read from now on share no node name, path string or
    /// file name ([`Loc::file`]) with those read before
    /// ([`SegmentReader::share_anew`], [`SnapshotReader::share_anew`]):
    /// for records handed to another thread in batches, so that the two
    /// threads do not both count references to one of them.
    pub fn share_anew(&mut self) {
        if let Some((reader, file)) = &mut self.snap {
            reader.share_anew();
            *file = Arc::from(&**file);
        }
        if let Some(cur) = &mut self.cur {
            cur.reader.share_anew();
            cur.file = Arc::from(&*cur.file);
        }
    }

    /// Bytes of this history's segments and DistKV-py file read so far.
    pub fn position(&self) -> u64 {
        self.bytes_done + self.cur.as_ref().map_or(0, |c| c.reader.position())
    }

    fn past_cut(&self, time_ms: Option<u64>, ev: &UpdateEvent) -> bool {
        match self.cut {
            Cut::None => false,
            Cut::Tock(t) => ev.tock > t,
            Cut::TimeMs(t) => time_ms.is_some_and(|ms| ms > t),
        }
    }

    fn step(&mut self) -> Result<Option<Rec>> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(Some(r));
            }
            if self.finished {
                return Ok(None);
            }
            if let Some((reader, file)) = &mut self.snap {
                let loc = Loc {
                    file: file.clone(),
                    pos: Pos::Snapshot,
                };
                match reader.next() {
                    Some(Ok(Item::Node(node))) => return Ok(Some(Rec::Node { loc, node })),
                    Some(Ok(Item::Entry(entry))) => return Ok(Some(Rec::Entry { loc, entry })),
                    Some(Err(e)) => {
                        self.snap = None;
                        return Ok(Some(Rec::Damage(Damage::from_snapshot(e)?)));
                    }
                    None => {
                        self.snap = None;
                        continue;
                    }
                }
            }
            if let Some(py) = self.py.take() {
                self.read_py(&py)?;
                continue;
            }
            if self.cur.is_none() && !self.open_next()? {
                self.finished = true;
                continue;
            }
            let Some(cur) = self.cur.as_mut() else {
                continue;
            };
            match cur.reader.next() {
                Some(Ok(r)) => {
                    if cur.report_skips(Some(&r.record), &mut self.pending) {
                        continue;
                    }
                    let loc = Loc {
                        file: cur.file.clone(),
                        pos: Pos::Seq {
                            seq: r.record.seq(),
                            offset: r.offset,
                        },
                    };
                    let rec = match r.record {
                        LogRecord::Event {
                            seq,
                            time_ms,
                            event,
                        } => {
                            let covered = seq < self.from_seq;
                            if covered && !self.verify_all {
                                continue;
                            }
                            if !covered && self.past_cut(Some(time_ms), &event) {
                                self.finished = true;
                                self.cur = None;
                                continue;
                            }
                            Rec::Event {
                                loc,
                                time_ms: Some(time_ms),
                                event,
                                covered,
                            }
                        }
                        LogRecord::State {
                            seq,
                            time_ms,
                            nodes,
                            known,
                            deleted,
                            skipped,
                        } => {
                            if seq < self.from_seq {
                                continue;
                            }
                            Rec::State {
                                loc,
                                time_ms: Some(time_ms),
                                state: StateRec {
                                    nodes,
                                    known,
                                    deleted,
                                    tock: None,
                                    skipped,
                                },
                            }
                        }
                        // A salvage by the node left this: the node lost
                        // these events to damage.
                        LogRecord::Lost { seq, from, why, .. } => {
                            if seq < self.from_seq {
                                continue;
                            }
                            Rec::Damage(Damage {
                                file: cur.file.to_path_buf(),
                                offset: Some(r.offset),
                                kind: DamageKind::Lost,
                                reason: format!("events {from} to {seq} were lost: {why}"),
                            })
                        }
                    };
                    // After the damage reported just before it, if any.
                    if self.pending.is_empty() {
                        return Ok(Some(rec));
                    }
                    self.pending.push_back(rec);
                }
                Some(Err(e)) => {
                    // Where the readable part ends is unknown: no gap report
                    // for the next segment, the damage says it all.
                    cur.report_skips(None, &mut self.pending);
                    self.bytes_done += cur.bytes;
                    self.cur = None;
                    self.expected = None;
                    self.pending.push_back(Rec::Damage(Damage::from_log(e)?));
                }
                None => {
                    cur.report_skips(None, &mut self.pending);
                    self.bytes_done += cur.bytes;
                    let torn = cur.reader.torn_tail().cloned();
                    let next_seq = cur.reader.next_seq();
                    let newest = cur.newest;
                    self.expected = if torn.is_some() { None } else { Some(next_seq) };
                    self.cur = None;
                    if let Some(t) = torn {
                        self.pending
                            .push_back(Rec::Damage(torn_damage(t, newest, next_seq)));
                    }
                }
            }
        }
    }

    /// Opens the next segment; false when there is none.
    fn open_next(&mut self) -> Result<bool> {
        let Some(seg) = self.segments.get(self.next_seg).cloned() else {
            return Ok(false);
        };
        let newest = self.next_seg + 1 == self.segments.len() && !self.strict;
        self.next_seg += 1;
        // Damage with valid blocks after it is reported and read past; a
        // torn end is told from corruption by `torn_damage`.
        let mode = RecoveryMode::Salvage;
        let opened = match self.start_at.take() {
            // The position is checked when the reader opens there; if it
            // does not hold, the segment is read from its start.
            Some((offset, seq)) => match SegmentReader::open_at(&seg.path, mode, offset, seq) {
                Ok(r) => {
                    self.seeked = Some(offset);
                    Ok(r)
                }
                Err(_) => SegmentReader::open(&seg.path, mode),
            },
            None => SegmentReader::open(&seg.path, mode),
        };
        match opened {
            Ok(mut reader) => {
                reader.leave_out_known_within(&self.known_within);
                let first = reader.header().map_or(seg.first_seq, |h| h.first_seq);
                if let Some(e) = self.expected.filter(|&e| e != first) {
                    self.pending.push_back(Rec::Damage(Damage {
                        file: seg.path.clone(),
                        offset: None,
                        kind: DamageKind::Gap,
                        reason: if first > e {
                            format!("records {e} to {} are in no file given", first - 1)
                        } else {
                            format!("the segment starts at {first}, its predecessor ended at {e}")
                        },
                    }));
                }
                self.cur = Some(OpenSeg {
                    reader,
                    file: Arc::from(seg.path.as_path()),
                    bytes: seg.bytes,
                    newest,
                    skips_reported: 0,
                });
            }
            Err(e) => {
                self.bytes_done += seg.bytes;
                self.expected = None;
                self.pending.push_back(Rec::Damage(Damage::from_log(e)?));
            }
        }
        Ok(true)
    }

    /// Reads a whole DistKV-py file into `pending` (they are small: the
    /// reader works on the file's bytes).
    fn read_py(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let file: Arc<Path> = Arc::from(path);
        for (i, rec) in PyReader::new(&bytes).enumerate() {
            let loc = Loc {
                file: file.clone(),
                pos: Pos::Record(i as u64 + 1),
            };
            let rec = match rec {
                Ok(PyRecord::Event(event)) => {
                    if self.past_cut(None, &event) {
                        break;
                    }
                    Rec::Event {
                        loc,
                        time_ms: None,
                        event,
                        covered: false,
                    }
                }
                Ok(PyRecord::State(s)) => Rec::State {
                    loc,
                    time_ms: None,
                    state: StateRec {
                        nodes: s
                            .nodes
                            .into_iter()
                            .map(|(n, t)| (NodeName::from(n.as_str()), t))
                            .collect(),
                        known: s.known,
                        deleted: s.deleted,
                        tock: s.tock,
                        skipped: RangeSet::new(),
                    },
                },
                Ok(PyRecord::Unknown(value)) => Rec::Unknown { loc, value },
                Ok(PyRecord::Truncated { offset }) => Rec::Damage(Damage {
                    file: path.to_path_buf(),
                    offset: Some(offset),
                    kind: DamageKind::Truncated,
                    reason: "the file ends inside a record".into(),
                }),
                Err(e) => {
                    let offset = match &e {
                        distkv_core::pyfiles::PyFileError::Corrupt { offset, .. }
                        | distkv_core::pyfiles::PyFileError::Invalid { offset, .. } => *offset,
                    };
                    Rec::Damage(Damage {
                        file: path.to_path_buf(),
                        offset: Some(offset),
                        kind: DamageKind::Corrupt,
                        reason: e.to_string(),
                    })
                }
            };
            self.pending.push_back(rec);
        }
        self.bytes_done += bytes.len() as u64;
        Ok(())
    }
}

/// Where the history index of `h`'s data directory says the block holding
/// `from_seq` starts in `seg` (offset, and the seq of its first event), if
/// the directory has an index that can be opened and knows it. Nothing
/// here is trusted: the reader checks the block there.
fn seek_position(h: &History, seg: &SegFile, from_seq: Seq) -> Option<(u64, Seq)> {
    let log_dir = seg.path.parent()?;
    let index_dir = log_dir.parent()?.join("index");
    if !index_dir.is_dir() {
        return None;
    }
    let node = h.node.as_ref()?;
    let (ix, _) = distkv_index::HistoryIndex::open(&index_dir, log_dir, node).ok()?;
    let b = ix.block_before(from_seq).ok()??;
    (b.segment == seg.first_seq).then_some((b.offset, b.first_seq))
}

impl Iterator for HistoryStream {
    type Item = Result<Rec>;

    fn next(&mut self) -> Option<Result<Rec>> {
        self.step().transpose()
    }
}
