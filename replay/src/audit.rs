//! `audit`: are the files intact and consistent, and which conflicts did
//! replaying them resolve?
//!
//! Checks, each reported as a [`Problem`]:
//! * **damage** — magic, CRC and framing of every segment (all of them,
//!   also those a snapshot covers), snapshot and DistKV-py file, with the
//!   file and the byte offset of the damaged header or block; segments
//!   that do not follow each other (gaps); a torn tail of a newest segment
//!   is reported too (a crash explains it; recovery cuts it off);
//! * **missing** — per node, the ticks nobody has after replaying
//!   everything: the state machine's own bookkeeping
//!   ([`distkv_core::state::NodeInfo::missing`]). Ticks a node declared
//!   never used when it restarted after an unclean stop (a state record's
//!   `skipped`, also counted as known) are not missing; the report notes
//!   them;
//! * **duplicate** — the same `node:tick` twice with different content
//!   (path, value or tock; chains may legitimately be cut by the sender);
//! * **chain** — a link with tick 0, a node twice in a chain (the decoder
//!   refuses those: they show up as damage), a tick above the node's
//!   highest tick as recorded by a later state record, by a snapshot's node
//!   item, or by the data directory's tick reservation;
//! * **conflict** — every conflict resolved during the replay: an event
//!   that lost on tock ([`Applied::Lost`]), a concurrent event that won and
//!   overwrote the stored value, or an event older than the stored value
//!   with a different value ([`Applied::Stale`]); with the path, both
//!   chains and tocks, the losing value and where the losing event is. An
//!   event whose tick the state already knew (present or superseded, e.g.
//!   from a snapshot's bookkeeping) was resolved before and is not
//!   reported again.
//!
//! The replay starts as early as the files allow ([`Start::Earliest`]).

use std::collections::HashSet;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use distkv_core::state::{hash128, Applied, State};
use distkv_model::chain::precedes;
use distkv_model::{codec, Chain, NodeName, Path as KvPath, RangeSet, UpdateEvent, Value};
use distkv_snapshot::{Item, SnapshotReader};

use crate::engine::{
    chain_text, Before, EventCtx, FastMap, Observer, Outcome, Replay, Start, Stats, Target,
};
use crate::error::Result;
use crate::output::Doc;
use crate::progress::{on_file, Progress};
use crate::source::{inventory, Damage, Loc, Pos, Rec};

/// How a conflict was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// The incoming event lost on tock.
    Lost,
    /// The incoming event won against a concurrent stored value.
    Overwritten,
    /// The incoming event is older than the stored value and differs.
    Stale,
}

impl ConflictKind {
    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ConflictKind::Lost => "lost",
            ConflictKind::Overwritten => "overwritten",
            ConflictKind::Stale => "stale",
        }
    }
}

/// One side of a conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// Its value (`None`: a deletion).
    pub value: Option<Value>,
    /// Its chain.
    pub chain: Option<Chain>,
    /// Its tock.
    pub tock: u64,
    /// Where its event is, if known.
    pub loc: Option<Loc>,
}

impl Version {
    fn to_value(&self) -> Value {
        Doc::new()
            .opt(
                "chain",
                self.chain.as_ref().map(|c| Value::str(&chain_text(c))),
            )
            .put("tock", Value::uint(self.tock))
            .put("value", self.value.clone().unwrap_or(Value::Nil))
            .put("deleted", self.value.is_none())
            .opt("at", self.loc.as_ref().map(Loc::to_value))
            .value()
    }

    fn to_text(&self) -> String {
        let v = match &self.value {
            Some(v) => v.to_string(),
            None => "<deleted>".into(),
        };
        let at = self
            .loc
            .as_ref()
            .map_or("unknown place".into(), Loc::to_text);
        format!(
            "{v} [{}] tock {} ({at})",
            self.chain.as_ref().map_or("-".into(), chain_text),
            self.tock
        )
    }
}

/// A conflict resolved during replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// How.
    pub kind: ConflictKind,
    /// The entry.
    pub path: KvPath,
    /// The version kept.
    pub winner: Version,
    /// The version that lost (its value is the losing value).
    pub loser: Version,
}

/// Something wrong with the files.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// Damaged or missing bytes.
    Damage(Damage),
    /// Ticks nobody has.
    Missing {
        /// The node.
        node: NodeName,
        /// Its missing ticks.
        ticks: RangeSet,
    },
    /// The same `node:tick` with different content.
    Duplicate {
        /// The node.
        node: NodeName,
        /// The tick.
        tick: u64,
        /// Where it was seen first.
        first: Loc,
        /// Where it was seen again, different.
        second: Loc,
    },
    /// A chain that cannot be right.
    Chain {
        /// Where.
        loc: Loc,
        /// What is wrong.
        reason: String,
    },
    /// A conflict resolved during replay.
    Conflict(Conflict),
}

impl Problem {
    /// The problem's kind in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Damage(_) => "damage",
            Problem::Missing { .. } => "missing",
            Problem::Duplicate { .. } => "duplicate",
            Problem::Chain { .. } => "chain",
            Problem::Conflict(_) => "conflict",
        }
    }

    /// As a report map.
    pub fn to_value(&self) -> Value {
        let d = Doc::new().put("problem", self.kind());
        match self {
            Problem::Damage(x) => d
                .put("damage", x.kind.name())
                .put("file", x.file.display().to_string().as_str())
                .opt("offset", x.offset.map(Value::uint))
                .put("reason", x.reason.as_str()),
            Problem::Missing { node, ticks } => d
                .put("node", Value::Str(node.clone()))
                .put("ticks", ticks.to_string().as_str()),
            Problem::Duplicate {
                node,
                tick,
                first,
                second,
            } => d
                .put("event", format!("{node}:{tick}").as_str())
                .put("first", first.to_value())
                .put("second", second.to_value()),
            Problem::Chain { loc, reason } => {
                d.put("at", loc.to_value()).put("reason", reason.as_str())
            }
            Problem::Conflict(c) => d
                .put("resolution", c.kind.name())
                .put("path", Value::Path(c.path.clone()))
                .put("winner", c.winner.to_value())
                .put("loser", c.loser.to_value())
                .put("lost_value", c.loser.value.clone().unwrap_or(Value::Nil)),
        }
        .value()
    }

    /// One line for people.
    pub fn to_text(&self) -> String {
        match self {
            Problem::Damage(d) => format!("damage: {}", d.to_text()),
            Problem::Missing { node, ticks } => {
                format!("missing: node {node} ticks {}", ticks)
            }
            Problem::Duplicate {
                node,
                tick,
                first,
                second,
            } => format!(
                "duplicate: {node}:{tick} differs between {} and {}",
                first.to_text(),
                second.to_text()
            ),
            Problem::Chain { loc, reason } => format!("chain: {}: {reason}", loc.to_text()),
            Problem::Conflict(c) => format!(
                "conflict ({}): {}: kept {}; lost {}",
                c.kind.name(),
                c.path,
                c.winner.to_text(),
                c.loser.to_text()
            ),
        }
    }
}

/// What an audit found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Histories (nodes) audited, by label.
    pub histories: Vec<String>,
    /// Segment, snapshot and DistKV-py files.
    pub files: (usize, usize, usize),
    /// Replay counts.
    pub stats: Stats,
    /// Everything wrong, in the order found.
    pub problems: Vec<Problem>,
    /// Remarks.
    pub notes: Vec<String>,
}

impl AuditReport {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The conflicts found.
    pub fn conflicts(&self) -> impl Iterator<Item = &Conflict> {
        self.problems.iter().filter_map(|p| match p {
            Problem::Conflict(c) => Some(c),
            _ => None,
        })
    }

    /// As a report map.
    pub fn to_value(&self) -> Value {
        let s = &self.stats;
        Doc::new()
            .put(
                "nodes",
                Value::Array(self.histories.iter().map(|h| Value::str(h)).collect()),
            )
            .put(
                "files",
                Doc::new()
                    .put("segments", Value::uint(self.files.0 as u64))
                    .put("snapshots", Value::uint(self.files.1 as u64))
                    .put("distkv_py", Value::uint(self.files.2 as u64)),
            )
            .put(
                "events",
                Doc::new()
                    .put("read", Value::uint(s.events))
                    .put("stored", Value::uint(s.stored))
                    .put("duplicates", Value::uint(s.duplicates))
                    .put("covered", Value::uint(s.covered))
                    .put("stale", Value::uint(s.stale))
                    .put("lost", Value::uint(s.lost)),
            )
            .put("clean", self.is_clean())
            .put(
                "problems",
                Value::Array(self.problems.iter().map(Problem::to_value).collect()),
            )
            .put(
                "notes",
                Value::Array(self.notes.iter().map(|n| Value::str(n)).collect()),
            )
            .value()
    }

    /// Lines for people.
    pub fn to_text(&self) -> String {
        let s = &self.stats;
        let mut out = format!(
            "audited {} segment(s), {} snapshot(s), {} DistKV-py file(s) of {}: {} events \
             ({} stored, {} duplicates, {} covered by a snapshot), {} state records\n",
            self.files.0,
            self.files.1,
            self.files.2,
            if self.histories.is_empty() {
                "nothing".into()
            } else {
                self.histories.join(", ")
            },
            s.events,
            s.stored,
            s.duplicates,
            s.covered,
            s.states
        );
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        if self.problems.is_empty() {
            out.push_str("no problems found\n");
        } else {
            out.push_str(&format!("{} problem(s):\n", self.problems.len()));
            for p in &self.problems {
                out.push_str("  ");
                out.push_str(&p.to_text());
                out.push('\n');
            }
        }
        out
    }
}

/// A hash of the bytes of an event's path, value and tock (`buf` is
/// scratch space): half of the state digest's content hash.
fn content_hash(ev: &UpdateEvent, buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    codec::write_path(buf, &ev.path);
    match &ev.value {
        Some(v) => codec::encode(v, buf),
        None => buf.push(0xc1),
    }
    codec::write_uint(buf, ev.tock);
    hash128(buf) as u64
}

/// The first sighting of every event (`node:tick`): its content hash and
/// where it is. The audit keeps one per event read, so they are compact:
/// files are numbered, and each node's ticks have a map of their own.
#[derive(Default)]
struct Sightings {
    nodes: FastMap<NodeName, FastMap<u64, Sighting>>,
    files: Vec<Arc<FsPath>>,
    /// File numbers by name.
    file_ids: FastMap<Arc<FsPath>, u32>,
    /// The last file's name and number: the records of a read-ahead batch
    /// share one copy of their file's name, found again by its address
    /// (the copy kept here keeps the address from being reused).
    last_file: Option<(Arc<FsPath>, u32)>,
}

struct Sighting {
    hash: u64,
    file: u32,
    pos: Pos,
}

impl Sightings {
    /// Records `node:tick` at `loc` unless it was seen before; returns the
    /// first sighting's hash and place if it was.
    fn see(&mut self, node: &NodeName, tick: u64, hash: u64, loc: &Loc) -> Option<(u64, Loc)> {
        if let Some(s) = self.nodes.get(&**node).and_then(|m| m.get(&tick)) {
            return Some((s.hash, self.loc(s)?));
        }
        let file = self.file_id(&loc.file);
        let sighting = Sighting {
            hash,
            file,
            pos: loc.pos,
        };
        match self.nodes.get_mut(&**node) {
            Some(m) => m.insert(tick, sighting),
            None => self
                .nodes
                .entry(node.clone())
                .or_default()
                .insert(tick, sighting),
        };
        None
    }

    /// The number of the file named `name`.
    fn file_id(&mut self, name: &Arc<FsPath>) -> u32 {
        if let Some((last, id)) = &self.last_file {
            if Arc::ptr_eq(last, name) {
                return *id;
            }
        }
        let files = &mut self.files;
        let id = *self.file_ids.entry(name.clone()).or_insert_with(|| {
            files.push(name.clone());
            // Never more files than fit in memory, let alone 2^32.
            u32::try_from(files.len() - 1).unwrap_or(u32::MAX)
        });
        self.last_file = Some((name.clone(), id));
        id
    }

    /// Where `node:tick` was first seen.
    fn place(&self, node: &str, tick: u64) -> Option<Loc> {
        self.loc(self.nodes.get(node)?.get(&tick)?)
    }

    fn loc(&self, s: &Sighting) -> Option<Loc> {
        Some(Loc {
            file: self.files.get(s.file as usize)?.clone(),
            pos: s.pos,
        })
    }
}

fn same_value(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => codec::to_vec(a) == codec::to_vec(b),
        _ => false,
    }
}

/// Most chain problems reported per file before summing up.
const MAX_CHAIN_REPORTS: usize = 20;

struct AuditObserver {
    /// First sighting of every event.
    seen: Sightings,
    /// Scratch space for content hashes.
    buf: Vec<u8>,
    /// Per stream, the highest tick of each node named by its events.
    max_tick: Vec<FastMap<NodeName, (u64, Loc)>>,
    /// Per stream, nodes already reported as beyond a state record.
    reported: Vec<HashSet<NodeName>>,
    /// Where the base snapshot is (for versions that came from it).
    base: Option<Loc>,
    problems: Vec<Problem>,
    chain_reports: usize,
    /// History labels, by stream.
    labels: Vec<String>,
    /// Remarks for the report.
    notes: Vec<String>,
}

impl AuditObserver {
    fn place(&self, chain: Option<&Chain>) -> Option<Loc> {
        let head = chain?.head();
        self.seen
            .place(&head.node, head.tick)
            .or_else(|| self.base.clone())
    }

    fn chain_problem(&mut self, loc: &Loc, reason: String) {
        self.chain_reports += 1;
        if self.chain_reports <= MAX_CHAIN_REPORTS {
            self.problems.push(Problem::Chain {
                loc: loc.clone(),
                reason,
            });
        }
    }

    fn check_links(&mut self, stream: usize, loc: &Loc, chain: &Chain) {
        for l in chain.links() {
            if l.tick == 0 {
                self.chain_problem(loc, format!("link {}:0 has tick 0", l.node));
            }
            let m = self.max_tick[stream]
                .entry(l.node.clone())
                .or_insert((0, loc.clone()));
            if l.tick > m.0 {
                *m = (l.tick, loc.clone());
            }
        }
    }

    fn conflict(&mut self, ctx: &EventCtx<'_>, before: &Before, applied: Applied) {
        let ev = ctx.event;
        let incoming = Version {
            value: ev.value.clone(),
            chain: Some(ev.chain.clone()),
            tock: ev.tock,
            loc: Some(ctx.loc.clone()),
        };
        let stored = Version {
            value: before.value.clone(),
            chain: before.chain.clone(),
            tock: before.tock,
            loc: self.place(before.chain.as_ref()),
        };
        let c = match applied {
            Applied::Lost => Conflict {
                kind: ConflictKind::Lost,
                path: ev.path.clone(),
                winner: stored,
                loser: incoming,
            },
            Applied::Stale if !same_value(before.value.as_ref(), ev.value.as_ref()) => Conflict {
                kind: ConflictKind::Stale,
                path: ev.path.clone(),
                winner: stored,
                loser: incoming,
            },
            Applied::Stored(_) | Applied::Replayed
                if before.chain.is_some() && !precedes(before.chain.as_ref(), Some(&ev.chain)) =>
            {
                Conflict {
                    kind: ConflictKind::Overwritten,
                    path: ev.path.clone(),
                    winner: incoming,
                    loser: stored,
                }
            }
            _ => return,
        };
        self.problems.push(Problem::Conflict(c));
    }
}

impl Observer for AuditObserver {
    fn wants_before(&self, _event: &UpdateEvent) -> bool {
        true
    }

    fn record(&mut self, _state: &State, stream: usize, rec: &Rec) {
        let Rec::State { loc, state, .. } = rec else {
            return;
        };
        if !state.skipped.is_empty() {
            self.notes.push(format!(
                "{}: ticks {} declared never used at a start after an unclean stop ({})",
                self.labels[stream],
                state.skipped,
                loc.to_text()
            ));
        }
        for (node, tick) in &state.nodes {
            let Some((seen, at)) = self.max_tick[stream].get(node).cloned() else {
                continue;
            };
            if tick.is_none_or(|t| seen > t) && self.reported[stream].insert(node.clone()) {
                self.chain_problem(
                    &at,
                    format!(
                        "names {node}:{seen}, beyond the tick {} the state record at {} gives \
                         node {node}",
                        tick.map_or("(none)".into(), |t| t.to_string()),
                        loc.to_text()
                    ),
                );
            }
        }
    }

    fn event(&mut self, _state: &State, ctx: &EventCtx<'_>) {
        let ev = ctx.event;
        self.check_links(ctx.stream, ctx.loc, &ev.chain);
        let head = ev.chain.head();
        let hash = content_hash(ev, &mut self.buf);
        if let Some((first_hash, first)) = self.seen.see(&head.node, head.tick, hash, ctx.loc) {
            if first_hash != hash {
                self.problems.push(Problem::Duplicate {
                    node: head.node.clone(),
                    tick: head.tick,
                    first,
                    second: ctx.loc.clone(),
                });
            }
        }
        if let Outcome::Applied {
            applied,
            known_before: false,
            before: Some(before),
        } = ctx.outcome
        {
            self.conflict(ctx, before, *applied);
        }
    }
}

/// Reads a whole snapshot: damage, and chains beyond the snapshot's own
/// node ticks or with tick 0.
fn check_snapshot(path: &PathBuf, problems: &mut Vec<Problem>, quiet: bool) -> Result<()> {
    let mut reader = match SnapshotReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            problems.push(Problem::Damage(Damage::from_snapshot(e)?));
            return Ok(());
        }
    };
    let loc = Loc {
        file: std::sync::Arc::from(path.as_path()),
        pos: Pos::Snapshot,
    };
    let mut ticks: FastMap<NodeName, Option<u64>> = FastMap::default();
    let mut reports = 0;
    let bar = Progress::bytes(reader.info().bytes, &on_file("checking", path), quiet);
    let mut at = 0;
    while let Some(item) = reader.next() {
        if reader.bytes_read() != at {
            at = reader.bytes_read();
            bar.set(at);
        }
        match item {
            Ok(Item::Node(n)) => {
                ticks.insert(n.name, n.tick);
            }
            Ok(Item::Entry(e)) => {
                let Some(chain) = &e.chain else { continue };
                for l in chain.links() {
                    let top = ticks.get(&l.node).copied().flatten();
                    let why = if l.tick == 0 {
                        Some(format!("entry {}: link {}:0 has tick 0", e.path, l.node))
                    } else if ticks.contains_key(&l.node) && top.is_none_or(|t| l.tick > t) {
                        Some(format!(
                            "entry {}: names {}:{}, beyond the snapshot's tick {} for {}",
                            e.path,
                            l.node,
                            l.tick,
                            top.map_or("(none)".into(), |t| t.to_string()),
                            l.node
                        ))
                    } else {
                        None
                    };
                    if let Some(reason) = why {
                        reports += 1;
                        if reports <= MAX_CHAIN_REPORTS {
                            problems.push(Problem::Chain {
                                loc: loc.clone(),
                                reason,
                            });
                        }
                    }
                }
            }
            Err(e) => {
                problems.push(Problem::Damage(Damage::from_snapshot(e)?));
                break;
            }
        }
    }
    Ok(())
}

/// Audits `inputs` (see the module docs).
pub fn audit(inputs: &[PathBuf], quiet: bool) -> Result<AuditReport> {
    let inv = inventory(inputs)?;
    let mut problems = Vec::new();
    for h in &inv.histories {
        for s in &h.snapshots {
            check_snapshot(&s.path, &mut problems, quiet)?;
        }
    }
    let mut replay = Replay::prepare(&inv, Target::All, Start::Earliest, true, None, quiet)?;
    let n = inv.histories.len();
    let mut obs = AuditObserver {
        seen: Sightings::default(),
        buf: Vec::new(),
        max_tick: vec![FastMap::default(); n],
        reported: vec![HashSet::new(); n],
        base: replay.base.as_ref().map(|b| Loc {
            file: std::sync::Arc::from(b.path.as_path()),
            pos: Pos::Snapshot,
        }),
        problems: Vec::new(),
        chain_reports: 0,
        labels: replay.labels.clone(),
        notes: Vec::new(),
    };
    replay.run(&mut obs, "audit")?;
    // The data directory's tick reservation bounds its own node's ticks.
    for (i, h) in inv.histories.iter().enumerate() {
        let (Some(node), Some(reserved)) = (&h.node, h.reserved_tick) else {
            continue;
        };
        if let Some((t, at)) = obs.max_tick[i].get(node).cloned() {
            if t > reserved {
                obs.chain_problem(
                    &at,
                    format!("names {node}:{t}, beyond the data directory's reservation {reserved}"),
                );
            }
        }
    }
    if obs.chain_reports > MAX_CHAIN_REPORTS {
        replay.notes.push(format!(
            "{} more chain problems not listed",
            obs.chain_reports - MAX_CHAIN_REPORTS
        ));
    }
    // Damage found twice (a snapshot read both here and by the replay) is
    // reported once.
    let mut seen: HashSet<&Damage> = problems
        .iter()
        .filter_map(|p| match p {
            Problem::Damage(d) => Some(d),
            _ => None,
        })
        .collect();
    let fresh: Vec<Problem> = replay
        .damage
        .iter()
        .filter(|d| seen.insert(d))
        .map(|d| Problem::Damage(d.clone()))
        .collect();
    problems.extend(fresh);
    problems.append(&mut obs.problems);
    for (node, ticks) in replay.missing() {
        problems.push(Problem::Missing { node, ticks });
    }
    let mut notes = replay.notes.clone();
    notes.append(&mut obs.notes);
    for (i, s) in replay.starts.iter().enumerate() {
        if let Some(p) = s {
            notes.push(format!(
                "{}: replayed from snapshot {} (the log does not go back further)",
                replay.labels[i],
                p.display()
            ));
        }
    }
    Ok(AuditReport {
        histories: replay.labels.clone(),
        files: inv.counts(),
        stats: replay.stats.clone(),
        problems,
        notes,
    })
}
