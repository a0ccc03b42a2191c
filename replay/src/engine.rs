//! Replaying histories through the node's own state machine.
//!
//! [`Replay::prepare`] picks, for each [`History`], where to start: a
//! snapshot (the newest one at or before the target for `restore` and
//! `diff` — [`Start::Latest`] —, the oldest one the log continues for
//! `audit` and `history` — [`Start::Earliest`] —, or none), and opens a
//! [`HistoryStream`] for the records after it. The first chosen snapshot
//! becomes the base state exactly as the node loads it
//! ([`distkv_core::persist::snap::load`]); snapshots chosen for other
//! histories are merged in as ordinary changes.
//!
//! [`Replay::run`] then merges the streams, each read on a thread of its
//! own (the `ahead` module): records other than events
//! (state records, snapshot items, damage) are handled as soon as they come
//! up; among the streams' next events the one with the lowest tock goes
//! first (ties: the stream given first), so each stream keeps its own
//! order and the merged order follows the tocks, which are Lamport clocks:
//! a change never comes before one it was built on. Events seen before
//! (same head `node:tick`) are skipped as duplicates. Every event goes
//! through [`State::apply`] — there is no second implementation of the
//! apply rules here — and an [`Observer`] sees each outcome together with
//! what the entry held before.
//!
//! A [`Target`] stops the replay: by tock or time each stream ends before
//! its first event past the target (a prefix of each log, which is exactly
//! what its node had applied at that point); by event, the whole replay
//! ends right after that event in merged order.

use std::path::{Path, PathBuf};

use distkv_core::persist::snap;
use distkv_core::state::{Applied, Lookahead, State};
use distkv_log::{LogLimits, Seq};
use distkv_model::{Chain, NameNumbers, NodeName, RangeSet, UpdateEvent, Value};
use distkv_snapshot::{Item, SnapshotError, SnapshotHeader, SnapshotReader};

use crate::ahead::Ahead;
use crate::error::{Error, Result};
use crate::progress::{on_file, Progress};
use crate::source::{
    Cut, Damage, DamageKind, History, HistoryStream, Inventory, Loc, Rec, SnapFile, StateRec,
    StreamSpec,
};

/// A hash map with foldhash's quality hasher: fast, and unlike its fast
/// variant it spreads consecutive integers (ticks) well under every seed.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::quality::RandomState>;

/// Limits of the replayed state's in-memory event log: nobody reads it,
/// so it keeps next to nothing.
pub const LIMITS: LogLimits = LogLimits {
    max_records: 1,
    max_bytes: 1,
};

/// Where a replay stops.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// At the end of every input.
    #[default]
    All,
    /// Before each log's first event with a tock above this.
    Tock(u64),
    /// Before each log's first event written after this time (ms).
    TimeMs(u64),
    /// Right after this event (`node`, `tick`) in merged order.
    Event(NodeName, u64),
}

impl Target {
    /// Parses `NODE:TICK`.
    pub fn parse_event(s: &str) -> Result<Target> {
        let bad = || Error::InvalidInput(format!("{s:?} is not NODE:TICK (e.g. n1:42)"));
        let (node, tick) = s.rsplit_once(':').ok_or_else(bad)?;
        let tick: u64 = tick.parse().map_err(|_| bad())?;
        if node.is_empty() || tick == 0 {
            return Err(bad());
        }
        Ok(Target::Event(NodeName::from(node), tick))
    }

    fn cut(&self) -> Cut {
        match self {
            Target::Tock(t) => Cut::Tock(*t),
            Target::TimeMs(t) => Cut::TimeMs(*t),
            Target::All | Target::Event(..) => Cut::None,
        }
    }

    /// The target for reports.
    pub fn to_text(&self) -> String {
        match self {
            Target::All => "the end".into(),
            Target::Tock(t) => format!("tock {t}"),
            Target::TimeMs(t) => crate::time::format_ms(*t),
            Target::Event(n, t) => format!("event {n}:{t}"),
        }
    }
}

/// Which snapshot a history starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest one the log continues (or none if the log goes back to
    /// its beginning): replay as much as possible.
    Earliest,
    /// The newest one at or before the target: replay as little as
    /// possible.
    Latest,
}

/// The snapshot the replayed state was loaded from.
#[derive(Debug, Clone)]
pub struct Base {
    /// The history it belongs to.
    pub history: usize,
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: SnapshotHeader,
}

/// Counts of what a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events read (all kinds).
    pub events: u64,
    /// Stored by the state machine.
    pub stored: u64,
    /// Already there (same chain head).
    pub same: u64,
    /// Superseded by what the entry held.
    pub stale: u64,
    /// Lost a conflict.
    pub lost: u64,
    /// Skipped: the same `node:tick` was applied before.
    pub duplicates: u64,
    /// Read for checking only (covered by the start snapshot).
    pub covered: u64,
    /// State records applied.
    pub states: u64,
    /// Entries of snapshots merged in as changes.
    pub snapshot_entries: u64,
    /// DistKV-py records not understood.
    pub unknown: u64,
}

/// What the entry held before an event was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Before {
    /// Its value.
    pub value: Option<Value>,
    /// Its chain.
    pub chain: Option<Chain>,
    /// Its tock.
    pub tock: u64,
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The state machine's verdict.
    Applied {
        /// What `apply` returned.
        applied: Applied,
        /// The head tick was already known to the state (present or
        /// superseded) before: whatever conflict it was part of was
        /// resolved before.
        known_before: bool,
        /// The entry before, when the observer asked for it.
        before: Option<Before>,
    },
    /// The same `node:tick` was applied before; not applied again.
    Duplicate,
    /// Covered by the start snapshot; read for checking only.
    Covered,
}

/// One event and what became of it.
#[derive(Debug)]
pub struct EventCtx<'a> {
    /// The stream (history index) it came from.
    pub stream: usize,
    /// Where it is.
    pub loc: &'a Loc,
    /// When it was written, if known.
    pub time_ms: Option<u64>,
    /// The event.
    pub event: &'a UpdateEvent,
    /// What became of it.
    pub outcome: &'a Outcome,
}

/// Watches a replay. Every method has a do-nothing default.
pub trait Observer {
    /// Whether [`Outcome::Applied::before`] is wanted for this event
    /// (it costs a clone of the old value).
    fn wants_before(&self, _event: &UpdateEvent) -> bool {
        false
    }
    /// Whether [`Observer::event`] reads the events' values; if not, each
    /// value moves into the state instead of being shared with the event
    /// (the event is handed over without it).
    fn wants_values(&self) -> bool {
        true
    }
    /// Whether [`Observer::record`] reads the `known` sets of state
    /// records; if not, the streams leave out of them the ticks the state
    /// has seen, to which they add nothing
    /// ([`HistoryStream::leave_out_known_within`]).
    fn reads_known_sets(&self) -> bool {
        true
    }
    /// Every record, before it is handled.
    fn record(&mut self, _state: &State, _stream: usize, _rec: &Rec) {}
    /// Every event, after it was handled.
    fn event(&mut self, _state: &State, _ctx: &EventCtx<'_>) {}
}

/// An observer that watches nothing.
#[derive(Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn wants_values(&self) -> bool {
        false
    }
    fn reads_known_sets(&self) -> bool {
        false
    }
}

/// Records handled between two [`Replay::tell_seen`]s (and after each
/// state record).
const SEEN_EVERY: u64 = 1024;

/// A replay in progress (see the module docs).
pub struct Replay {
    /// The replayed state.
    pub state: State,
    /// The snapshot the state was loaded from.
    pub base: Option<Base>,
    /// The snapshot each history starts from (`None`: its beginning).
    pub starts: Vec<Option<PathBuf>>,
    /// History labels (node names or file names), by stream index.
    pub labels: Vec<String>,
    /// Damage met so far.
    pub damage: Vec<Damage>,
    /// Remarks.
    pub notes: Vec<String>,
    /// Counts.
    pub stats: Stats,
    /// Per stream, the seq of the last log record handled.
    pub last_seq: Vec<Option<Seq>>,
    /// Whether the target event was reached.
    pub target_reached: bool,
    /// The streams, each read on a thread of its own.
    streams: Vec<Ahead>,
    target: Target,
    applied: AppliedTicks,
    total_bytes: u64,
    quiet: bool,
}

/// The ticks of each node whose events were applied (to skip another
/// input's copy of one), a node's found by its name's address where that
/// was met lately: the events of one input share their names.
#[derive(Default)]
struct AppliedTicks {
    nodes: NameNumbers,
    ticks: Vec<RangeSet>,
}

impl AppliedTicks {
    /// Node `name`'s applied ticks.
    fn of(&mut self, name: &NodeName) -> &mut RangeSet {
        let i = self.nodes.number(name) as usize;
        if i == self.ticks.len() {
            self.ticks.push(RangeSet::new());
        }
        &mut self.ticks[i]
    }
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("labels", &self.labels)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Whether snapshot `s` is at or before `target`.
fn qualifies(s: &SnapFile, target: &Target, damage: &mut Vec<Damage>) -> Result<bool> {
    Ok(match target {
        Target::All => true,
        Target::Tock(t) => s.header.tock <= *t,
        Target::TimeMs(t) => s.header.created_ms <= *t,
        Target::Event(node, tick) => {
            // Node items come first: read up to the first entry.
            let reader = match SnapshotReader::open(&s.path) {
                Ok(r) => r,
                Err(e) => {
                    damage.push(Damage::from_snapshot(e)?);
                    return Ok(false);
                }
            };
            let mut seen = None;
            for item in reader {
                match item {
                    Ok(Item::Node(n)) if n.name == *node => seen = n.tick,
                    Ok(Item::Node(_)) => {}
                    Ok(Item::Entry(_)) => break,
                    Err(e) => {
                        damage.push(Damage::from_snapshot(e)?);
                        return Ok(false);
                    }
                }
            }
            seen.is_none_or(|t| t < *tick)
        }
    })
}

/// Loads a snapshot as a node does ([`snap::load`]), with a progress bar
/// unless `quiet`.
pub fn load_snapshot(
    path: &Path,
    me: &str,
    quiet: bool,
) -> std::result::Result<(State, SnapshotHeader), SnapshotError> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let bar = Progress::bytes(size, &on_file("loading", path), quiet);
    snap::load_with_progress(path, me, LIMITS, &mut |at, _| bar.set(at))
}

/// Applies a state record's bookkeeping, as node recovery does
/// ([`State::restore_state`]), and its tock if it has one.
pub fn restore_state_record(st: &mut State, rec: &StateRec) {
    if let Some(t) = rec.tock {
        st.tock().seen(t);
    }
    st.restore_state(
        rec.nodes.iter().map(|(n, t)| (&**n, *t)),
        &rec.known,
        &rec.deleted,
    );
}

impl Replay {
    /// Chooses start points and opens the streams (see the module docs).
    /// `me` names the replayed state's node (default: the first history's);
    /// `quiet` hides the progress bars.
    pub fn prepare(
        inv: &Inventory,
        target: Target,
        start: Start,
        verify_all: bool,
        me: Option<&str>,
        quiet: bool,
    ) -> Result<Replay> {
        let me: NodeName = me
            .map(NodeName::from)
            .or_else(|| inv.histories.iter().find_map(|h| h.node.clone()))
            .unwrap_or_else(|| NodeName::from("replay"));
        let mut damage = inv.damage.clone();
        let mut notes = inv.notes.clone();
        let mut state = None;
        let mut base = None;
        let mut streams = Vec::new();
        let mut starts = Vec::new();
        for (i, h) in inv.histories.iter().enumerate() {
            let (chosen, stream_snap) = Self::choose(
                i,
                h,
                &target,
                start,
                &me,
                &mut state,
                &mut base,
                &mut damage,
                quiet,
            )?;
            if matches!(target, Target::TimeMs(_)) && h.py.is_some() {
                notes.push(format!(
                    "{}: DistKV-py files have no times; all their records are used",
                    h.label()
                ));
            }
            let from_seq = chosen.as_ref().map_or(0, |s| s.header.seq + 1);
            match h.segments.first() {
                Some(first) if from_seq == 0 && first.first_seq > 1 => damage.push(Damage {
                    file: first.path.clone(),
                    offset: None,
                    kind: DamageKind::Gap,
                    reason: format!(
                        "records 1 to {} are in no file given, and no usable snapshot covers \
                         them",
                        first.first_seq - 1
                    ),
                }),
                None if chosen.is_none() && !h.snapshots.is_empty() => notes.push(format!(
                    "{}: no snapshot is at or before the target, and no log goes back further",
                    h.label()
                )),
                _ => {}
            }
            starts.push(chosen.map(|s| s.path));
            streams.push(Ahead::start(HistoryStream::new(
                h,
                StreamSpec {
                    snapshot: stream_snap,
                    from_seq,
                    verify_all,
                    cut: target.cut(),
                    strict: false,
                    // Restore and diff start as late as they can: at the
                    // block the history index names, where it can.
                    seek: start == Start::Latest,
                },
            )?));
        }
        let n = streams.len();
        Ok(Replay {
            state: state.unwrap_or_else(|| State::new(&me, LIMITS)),
            base,
            starts,
            labels: inv.histories.iter().map(History::label).collect(),
            damage,
            notes,
            stats: Stats::default(),
            last_seq: vec![None; n],
            target_reached: false,
            streams,
            target,
            applied: AppliedTicks::default(),
            total_bytes: inv.histories.iter().map(History::log_bytes).sum(),
            quiet,
        })
    }

    /// Picks history `i`'s start snapshot: loads it as the base state if
    /// there is none yet, else returns it to be streamed in.
    #[allow(clippy::too_many_arguments)]
    fn choose(
        i: usize,
        h: &History,
        target: &Target,
        start: Start,
        me: &str,
        state: &mut Option<State>,
        base: &mut Option<Base>,
        damage: &mut Vec<Damage>,
        quiet: bool,
    ) -> Result<(Option<SnapFile>, Option<PathBuf>)> {
        let mut cands = Vec::new();
        for s in &h.snapshots {
            if qualifies(s, target, damage)? {
                cands.push(s);
            }
        }
        match (start, h.segments.first().map(|s| s.first_seq)) {
            (Start::Latest, _) => cands.reverse(),
            // The log goes back to its beginning: no snapshot needed.
            (Start::Earliest, Some(first)) if first <= 1 => cands.clear(),
            (Start::Earliest, Some(first)) => cands.retain(|s| s.header.seq + 1 >= first),
            (Start::Earliest, None) => {}
        }
        for s in cands {
            if state.is_none() {
                match load_snapshot(&s.path, me, quiet) {
                    Ok((st, header)) => {
                        *state = Some(st);
                        *base = Some(Base {
                            history: i,
                            path: s.path.clone(),
                            header,
                        });
                        return Ok((Some(s.clone()), None));
                    }
                    Err(e) => damage.push(Damage::from_snapshot(e)?),
                }
            } else {
                let _busy = Progress::busy(&on_file("checking", &s.path), quiet);
                match SnapshotReader::verify(&s.path) {
                    Ok(_) => return Ok((Some(s.clone()), Some(s.path.clone()))),
                    Err(e) => damage.push(Damage::from_snapshot(e)?),
                }
            }
        }
        Ok((None, None))
    }

    /// Bytes of input read so far, of [`Replay::total_bytes`].
    pub fn position(&self) -> u64 {
        self.streams.iter().map(Ahead::position).sum()
    }

    /// Per stream, the byte offset reading started at inside its first
    /// segment when the history index let it skip that segment's start.
    pub fn seeks(&self) -> Vec<Option<u64>> {
        self.streams.iter().map(Ahead::seeked).collect()
    }

    /// Bytes of all segments and DistKV-py files.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Replays every stream to its end or the target, with a progress bar
    /// labelled `what`.
    pub fn run(&mut self, obs: &mut dyn Observer, what: &str) -> Result<()> {
        let progress = Progress::bytes(self.total_bytes, what, self.quiet);
        let mut heads = Vec::with_capacity(self.streams.len());
        for s in &mut self.streams {
            heads.push(s.next().transpose()?);
        }
        let mut ahead = Lookahead::default();
        let mut handled = 0u64;
        let leave_out = !obs.reads_known_sets();
        if leave_out {
            self.tell_seen();
        }
        loop {
            let mut urgent = None;
            let mut best: Option<(u64, usize)> = None;
            for (i, h) in heads.iter().enumerate() {
                match h {
                    None => {}
                    Some(Rec::Event {
                        event,
                        covered: false,
                        ..
                    }) if best.is_none_or(|(t, _)| event.tock < t) => {
                        best = Some((event.tock, i));
                    }
                    Some(Rec::Event { covered: false, .. }) => {}
                    Some(_) => {
                        urgent = Some(i);
                        break;
                    }
                }
            }
            let Some(i) = urgent.or(best.map(|b| b.1)) else {
                break;
            };
            let Some(rec) = heads[i].take() else { break };
            heads[i] = self.streams[i].next().transpose()?;
            if let Rec::Event { covered: false, .. } = rec {
                // What follows in the same stream is what the apply most
                // likely meets next (a hint: see `Lookahead`).
                let (head, rest) = (&heads[i], self.streams[i].upcoming());
                ahead.step_by(&self.state, |k| {
                    let rec = match k {
                        0 => head.as_ref(),
                        k => rest.get(k - 1).and_then(|r| r.as_ref().ok()),
                    };
                    match rec {
                        Some(Rec::Event { event, .. }) => Some(event),
                        _ => None,
                    }
                });
            }
            let state_record = matches!(rec, Rec::State { .. });
            let reached = self.handle(i, rec, obs);
            handled += 1;
            if leave_out && (state_record || handled % SEEN_EVERY == 0) {
                self.tell_seen();
            }
            if handled % 4096 == 0 {
                progress.set(self.position());
            }
            if reached {
                self.target_reached = true;
                break;
            }
        }
        for s in &mut self.streams {
            s.stop();
        }
        progress.finish();
        if let Target::Event(n, t) = &self.target {
            if !self.target_reached {
                return Err(Error::InvalidInput(format!(
                    "no input holds the event {n}:{t}"
                )));
            }
        }
        Ok(())
    }

    /// Tells every stream the state's first runs of seen ticks, which
    /// their state records then leave out ([`Ahead::seen`]): exact, as
    /// the state only sees more ticks as the replay goes on.
    fn tell_seen(&mut self) {
        let runs = self.state.seen_first_runs();
        for s in &mut self.streams {
            s.seen(runs.clone());
        }
    }

    /// Handles one record; true when it was the target event.
    fn handle(&mut self, stream: usize, rec: Rec, obs: &mut dyn Observer) -> bool {
        obs.record(&self.state, stream, &rec);
        match rec {
            Rec::Damage(d) => {
                self.damage.push(d);
                false
            }
            Rec::Event {
                loc,
                time_ms,
                mut event,
                covered,
            } => {
                self.stats.events += 1;
                if covered {
                    self.stats.covered += 1;
                    let ctx = EventCtx {
                        stream,
                        loc: &loc,
                        time_ms,
                        event: &event,
                        outcome: &Outcome::Covered,
                    };
                    obs.event(&self.state, &ctx);
                    self.streams[stream].spent(event, None);
                    return false;
                }
                if let Some(seq) = loc.seq() {
                    self.last_seq[stream] = Some(seq);
                }
                // Borrowed, not cloned: the reading thread counts the same
                // names' references as it decodes.
                let head = event.chain.head();
                let ticks = self.applied.of(&head.node);
                let dup = ticks.contains(head.tick);
                if !dup {
                    ticks.insert(head.tick);
                }
                // The value the event replaced, dropped with the event.
                let mut replaced = None;
                let outcome = if dup {
                    self.stats.duplicates += 1;
                    Outcome::Duplicate
                } else {
                    let known_before = self
                        .state
                        .node(&head.node)
                        .is_some_and(|n| n.knows(head.tick));
                    let before = if obs.wants_before(&event) {
                        self.state.entry(&event.path).map(|e| Before {
                            value: e.data_cloned(),
                            chain: e.chain_cloned(),
                            tock: e.tock(),
                        })
                    } else {
                        None
                    };
                    let value = if obs.wants_values() {
                        event.value.clone()
                    } else {
                        event.value.take()
                    };
                    let applied = match self.state.replay_swap(&event, value) {
                        Ok(old) => {
                            replaced = old;
                            Applied::Replayed
                        }
                        Err(outcome) => outcome,
                    };
                    match applied {
                        Applied::Stored(_) | Applied::Replayed => self.stats.stored += 1,
                        Applied::Same => self.stats.same += 1,
                        Applied::Stale => self.stats.stale += 1,
                        Applied::Lost => self.stats.lost += 1,
                    }
                    Outcome::Applied {
                        applied,
                        known_before,
                        before,
                    }
                };
                let ctx = EventCtx {
                    stream,
                    loc: &loc,
                    time_ms,
                    event: &event,
                    outcome: &outcome,
                };
                obs.event(&self.state, &ctx);
                let reached = matches!(&self.target, Target::Event(n, t) if *n == head.node && *t == head.tick);
                self.streams[stream].spent(event, replaced);
                reached
            }
            Rec::State { loc, state, .. } => {
                if let Some(seq) = loc.seq() {
                    self.last_seq[stream] = Some(seq);
                }
                restore_state_record(&mut self.state, &state);
                self.stats.states += 1;
                false
            }
            Rec::Node { node, .. } => {
                self.state
                    .restore_node(&node.name, node.tick, &node.known, &node.deleted);
                false
            }
            Rec::Entry { entry, .. } => {
                if let Some(chain) = entry.chain {
                    self.state.apply(UpdateEvent {
                        path: entry.path,
                        chain,
                        value: entry.value,
                        tock: entry.tock,
                    });
                }
                self.stats.snapshot_entries += 1;
                false
            }
            Rec::Unknown { .. } => {
                self.stats.unknown += 1;
                false
            }
        }
    }

    /// Ticks of each node that nobody has: neither in a chain nor known to
    /// be superseded (the state machine's own bookkeeping).
    pub fn missing(&self) -> Vec<(NodeName, RangeSet)> {
        missing(&self.state)
    }

    /// Damage that matters: everything but a torn tail of a newest
    /// segment, which node recovery cuts off as a matter of course.
    pub fn serious_damage(&self) -> impl Iterator<Item = &Damage> {
        self.damage
            .iter()
            .filter(|d| d.kind != DamageKind::TornTail)
    }

    /// Ends the replay without freeing its state, whose memory goes back
    /// to the system with the process's: for a process that ends right
    /// after (see [`crate::restore::Leftover::Exit`]).
    pub fn end_leaving_state(self) {
        let Replay { state, .. } = self;
        std::mem::forget(state);
    }
}

/// Each node's missing ticks, where there are any.
pub fn missing(st: &State) -> Vec<(NodeName, RangeSet)> {
    st.nodes()
        .map(|(n, i)| (n.clone(), i.missing()))
        .filter(|(_, r)| !r.is_empty())
        .collect()
}

/// A digest as 32 hex digits.
pub fn digest_text(d: u128) -> String {
    format!("{d:032x}")
}

/// A chain as `n1:5 n2:3`.
pub fn chain_text(c: &Chain) -> String {
    let parts: Vec<String> = c
        .links()
        .iter()
        .map(|l| format!("{}:{}", l.node, l.tick))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::inventory;
    use distkv_core::persist::recover::testing::{books, scattered_log};
    use distkv_model::NodeSet;

    /// Watches the `known` sets of the state records, reading them or not.
    struct KnownSets {
        reads: bool,
        seen: Vec<NodeSet>,
    }

    impl Observer for KnownSets {
        fn reads_known_sets(&self) -> bool {
            self.reads
        }
        fn record(&mut self, _state: &State, _stream: usize, rec: &Rec) {
            if let Rec::State { state, .. } = rec {
                self.seen.push(state.known.clone());
            }
        }
    }

    /// A replay whose streams leave out of the state records' sets of
    /// superseded ticks those the state has seen (its observer does not
    /// read them) comes to the state of one that reads every set whole:
    /// with sets it has seen all of, sets reaching past what it has seen,
    /// and a node it never saw an event of (it fails when the runs told
    /// claim the ticks no event shows). An observer that reads the sets
    /// gets them as written.
    #[test]
    fn leaving_out_known_sets_the_state_has_seen_replays_the_same() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        // State records early (read before the replay tells the reader
        // what it has seen: it reads a few thousand records ahead) and
        // late, one with ticks no event shows.
        let (want, written) = scattered_log(
            tmp.path(),
            20_000,
            &[700, 3_000, 12_100, 16_000, 20_000],
            (12_100, 30_000),
        )?;
        let inv = inventory(&[tmp.path().to_path_buf()])?;
        let mut watched = Vec::new();
        for reads in [true, false] {
            let mut replay = Replay::prepare(&inv, Target::All, Start::Latest, false, None, true)?;
            let mut obs = KnownSets {
                reads,
                seen: Vec::new(),
            };
            replay.run(&mut obs, "test")?;
            assert_eq!(replay.state.digest(), want.digest());
            assert_eq!(books(&replay.state), books(&want));
            watched.push(obs.seen);
        }
        let scattered = want.node("n1").expect("n1").superseded().ranges().count();
        assert!(scattered > 20, "{scattered} ranges");
        // Read whole when the observer reads them; left out otherwise.
        assert_eq!(watched[0], written);
        let ticks = |sets: &[NodeSet]| -> u64 {
            sets.iter()
                .flat_map(|s| s.0.values())
                .map(RangeSet::count)
                .sum()
        };
        let (read, all) = (ticks(&watched[1]), ticks(&written));
        assert!(read < all / 2, "{read} of {all} ticks read");
        Ok(())
    }
}
