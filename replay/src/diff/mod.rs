//! `diff`: how two states differ.
//!
//! Each side is one of:
//! * a **snapshot**, read item by item;
//! * a **data directory**, recovered read-only by [`recover_read_only`]
//!   with the node's own recovery (`distkv_core::persist::recover::rebuild`:
//!   newest snapshot that reads cleanly and that the log continues, then
//!   every log record after it), a torn tail ignored, and without what
//!   the node's start does beyond that (creating directories, cutting the
//!   torn tail, raising the reservation, resuming its own tick above the
//!   reservation: the files of a running node compare equal to it);
//! * a **live node** `HOST:PORT`, fetched with the client: `get_tree` of
//!   the whole tree with full chains and empty entries, and `get_state` for
//!   every node's tick, superseded and deleted ticks;
//! * any other input (segments, DistKV-py files), replayed to its end.
//!
//! Snapshots and live nodes are streamed into a compact [`Tree`] (see
//! [`tree`]), not restored into a whole state; data directories and other
//! inputs need the state machine to replay their logs, and their state is
//! then copied into a [`Tree`] the same way. Both sides are read at the
//! same time, on two threads ([`load_sides`]).
//!
//! [`diff_walk`] then walks both trees in step — each entry of A with its
//! namesake in B, then B's entries A lacks — and reports each path whose
//! value, chain or tock differ: added (only B has a value), removed (only
//! A has one) or changed. [`node_diffs`] lists the nodes whose highest
//! tick differs.

pub mod tree;

use std::path::{Path, PathBuf};

use distkv_client::client::{Client, ConnectOptions};
use distkv_client::fetch::{FetchError, RawFetchError, StateReader};
use distkv_core::persist::meta::Meta;
use distkv_core::persist::recover::{rebuild, Files, PersistError, RebuildHooks, RecoveryInfo};
use distkv_core::pyfiles::PyState;
use distkv_core::state::State;
use distkv_log::writer::RecoveryMode;
use distkv_log::Seq;
use distkv_model::{Chain, NodeName, Path as KvPath, Value};
use distkv_snapshot::{Item, SnapshotReader};

use crate::engine::{chain_text, digest_text, FastMap, LIMITS};
use crate::error::{Error, Result};
use crate::output::Doc;
use crate::progress::{on_file, Progress};
use crate::source::{detect, Kind};

pub use tree::{Built, ChildIndex, EntryData, EntryRef, NodeId, Tree, TreeBuilder};

/// One side of a diff.
#[derive(Debug)]
pub struct Side {
    /// What it is, for reports.
    pub label: String,
    /// Its entries and bookkeeping.
    pub built: Built,
    /// Remarks (e.g. skipped snapshots, damage met while replaying).
    pub notes: Vec<String>,
}

/// Recovers a data directory's state the way the node does at start,
/// without writing anything (see the module docs); `quiet` hides the
/// progress bars.
pub fn recover_read_only(dir: &Path, quiet: bool) -> Result<(State, Vec<String>)> {
    let meta = Meta::load(dir)?.ok_or_else(|| {
        Error::InvalidInput(format!(
            "{}: no metadata (`meta`): not a data directory",
            dir.display()
        ))
    })?;
    let me = meta.node.as_str();
    let mut notes = Vec::new();
    let log_dir = dir.join("log");
    let mut hooks = Hooks {
        quiet,
        bar: None,
        loading: None,
        covered: 0,
        log_dir: &log_dir,
    };
    let mut info = RecoveryInfo::default();
    let files = Files {
        dir,
        me,
        // What the files hold: a node resumes its tick above the
        // reservation only when it starts.
        reserved_tick: 0,
        // Found by the replay, which reads the newest segment to its end
        // and ignores a torn tail as the writer's recovery cuts it.
        log_end: None,
        limits: LIMITS,
        mode: RecoveryMode::TruncateTail,
    };
    let state = rebuild(&files, &mut hooks, &mut info)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", dir.display())))?;
    if let Some(t) = info.newest_segment.as_ref().and_then(|s| s.torn_tail()) {
        notes.push(format!(
            "{}: torn tail at byte {} ignored ({})",
            t.file.display(),
            t.offset,
            t.reason
        ));
    }
    for (path, why) in &info.bad_snapshots {
        notes.push(format!("{}: skipped: {why}", path.display()));
    }
    if let Some(path) = &info.snapshot {
        notes.push(format!("started from {}", path.display()));
    }
    for (from, seq, why) in &info.lost {
        notes.push(format!("events {from} to {seq} were lost: {why}"));
    }
    Ok((state, notes))
}

/// Progress bars for [`rebuild`]: loading the snapshot, replaying the log.
struct Hooks<'a> {
    quiet: bool,
    bar: Option<Progress>,
    /// The snapshot the bar shows the loading of.
    loading: Option<std::path::PathBuf>,
    covered: Seq,
    log_dir: &'a Path,
}

impl RebuildHooks for Hooks<'_> {
    fn loading(&mut self, path: &Path, read: u64, total: u64) {
        if self.loading.as_deref() != Some(path) {
            self.loading = Some(path.to_path_buf());
            self.bar = Some(Progress::bytes(
                total,
                &on_file("loading", path),
                self.quiet,
            ));
        }
        if let Some(bar) = &self.bar {
            bar.set(read);
        }
    }

    fn before_replay(
        &mut self,
        from: Seq,
        end: Option<Seq>,
    ) -> std::result::Result<(), PersistError> {
        self.covered = from.saturating_sub(1);
        self.bar = Some(Progress::items(
            end.map(|end| end.saturating_sub(from)),
            &format!("replaying {}", self.log_dir.display()),
            self.quiet,
        ));
        Ok(())
    }

    fn replayed(&mut self, seq: Seq) {
        if seq % 4096 == 0 {
            if let Some(bar) = &self.bar {
                bar.set(seq.saturating_sub(self.covered));
            }
        }
    }
}

/// Streams a live node's whole state into a compact tree; `quiet` hides
/// the progress spinner.
pub fn live_side(addr: &str, quiet: bool) -> Result<Built> {
    let client_err = |source| Error::Client {
        addr: addr.to_string(),
        source,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            file: PathBuf::from("(tokio runtime)"),
            source,
        })?;
    rt.block_on(async {
        let client = Client::connect(addr, ConnectOptions::default())
            .await
            .map_err(client_err)?;
        let mut b = TreeBuilder::new(&client.greeting().node);
        let spinner = Progress::items(None, &format!("fetching from {addr}"), quiet);
        let mut entries = 0u64;
        let fetch_err = |e| match e {
            FetchError::Client(c) => client_err(c),
            FetchError::Entry(why) => Error::InvalidInput(format!("{addr}: {why}")),
        };
        let mut reader = StateReader::new(&client, false);
        // Each reply is read in place and copied into the tree as bytes.
        let read = reader.read_raw(|e| {
            b.entry_encoded(e.path, e.value, e.chain, e.tock);
            entries += 1;
            if entries % 4096 == 0 {
                spinner.set(entries);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        match read.await {
            Ok(()) => {}
            Err(RawFetchError::Fetch(e)) => return Err(fetch_err(e)),
            Err(RawFetchError::Consumer(never)) => match never {},
        }
        let ticks = reader.ticks().await.map_err(fetch_err)?;
        spinner.finish();
        PyState::from_value(&ticks)
            .map_err(|why| Error::InvalidInput(format!("{addr}: bad state: {why}")))?
            .apply_to(b.book_mut());
        Ok(b.finish())
    })
}

/// Streams a snapshot into a compact tree; `quiet` hides the progress bar.
pub fn snapshot_side(path: &Path, quiet: bool) -> Result<Built> {
    let mut reader = SnapshotReader::open(path)?;
    let mut b = TreeBuilder::new(&reader.header().node);
    let total = reader.info().bytes;
    let bar = Progress::bytes(total, &on_file("loading", path), quiet);
    let mut at = reader.bytes_read();
    while let Some(item) = reader.next() {
        match item? {
            Item::Node(n) => b.node(&n.name, n.tick, &n.known, &n.deleted),
            Item::Entry(e) => b.entry(EntryData {
                path: e.path,
                value: e.value,
                chain: e.chain,
                tock: e.tock,
            }),
        }
        if reader.bytes_read() != at {
            at = reader.bytes_read();
            bar.set(at);
        }
    }
    Ok(b.finish())
}

/// Whether `s` looks like `HOST:PORT`.
fn host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// Loads both sides at once, each on its own thread; the first error is
/// A's if both fail.
pub fn load_sides(a: &str, b: &str, quiet: bool) -> Result<(Side, Side)> {
    std::thread::scope(|s| {
        let tb = s.spawn(|| load_side(b, quiet));
        let sa = load_side(a, quiet);
        let sb = tb.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        Ok((sa?, sb?))
    })
}

/// Loads one side: a path (snapshot, data directory, other files) or a
/// live node's address.
pub fn load_side(spec: &str, quiet: bool) -> Result<Side> {
    let path = Path::new(spec);
    if !path.exists() && host_port(spec) {
        return Ok(Side {
            label: format!("node at {spec}"),
            built: live_side(spec, quiet)?,
            notes: Vec::new(),
        });
    }
    let input = detect(path)?;
    match input.kind {
        Kind::Snapshot => Ok(Side {
            label: format!("snapshot {spec}"),
            built: snapshot_side(path, quiet)?,
            notes: Vec::new(),
        }),
        Kind::DataDir => {
            let (state, notes) = recover_read_only(path, quiet)?;
            Ok(Side {
                label: format!("data directory {spec}"),
                built: Built::of_state(&state),
                notes,
            })
        }
        _ => {
            let replay = crate::restore::rebuild(
                &[path.to_path_buf()],
                crate::engine::Target::All,
                None,
                quiet,
            )?;
            let mut notes = replay.notes.clone();
            notes.extend(
                replay
                    .damage
                    .iter()
                    .map(|d| format!("damage: {}", d.to_text())),
            );
            Ok(Side {
                label: format!("replay of {spec}"),
                built: Built::of_state(&replay.state),
                notes,
            })
        }
    }
}

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffKind {
    /// Only B has a value.
    Added,
    /// Only A has a value.
    Removed,
    /// Value, chain or tock differ.
    Changed,
}

impl DiffKind {
    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            DiffKind::Added => "added",
            DiffKind::Removed => "removed",
            DiffKind::Changed => "changed",
        }
    }
}

/// An entry as one side has it.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryView {
    /// Its value.
    pub value: Option<Value>,
    /// Its chain.
    pub chain: Option<Chain>,
    /// Its tock.
    pub tock: u64,
}

impl EntryView {
    fn of(e: &EntryRef<'_>) -> EntryView {
        EntryView {
            value: e.value(),
            chain: e.chain(),
            tock: e.tock,
        }
    }

    fn to_value(&self) -> Value {
        Doc::new()
            .put("value", self.value.clone().unwrap_or(Value::Nil))
            .put("deleted", self.value.is_none())
            .opt(
                "chain",
                self.chain.as_ref().map(|c| Value::str(&chain_text(c))),
            )
            .put("tock", Value::uint(self.tock))
            .value()
    }

    fn to_text(&self) -> String {
        let v = self
            .value
            .as_ref()
            .map_or("<no value>".into(), Value::to_string);
        format!(
            "{v} [{}] tock {}",
            self.chain.as_ref().map_or("-".into(), chain_text),
            self.tock
        )
    }
}

/// One path that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct PathDiff {
    /// How.
    pub kind: DiffKind,
    /// The path.
    pub path: KvPath,
    /// A's entry (value or tombstone), if any.
    pub a: Option<EntryView>,
    /// B's entry, if any.
    pub b: Option<EntryView>,
}

impl PathDiff {
    /// As a report map.
    pub fn to_value(&self) -> Value {
        Doc::new()
            .put("kind", self.kind.name())
            .put("path", Value::Path(self.path.clone()))
            .opt("a", self.a.as_ref().map(EntryView::to_value))
            .opt("b", self.b.as_ref().map(EntryView::to_value))
            .value()
    }

    /// One line for people.
    pub fn to_text(&self) -> String {
        let side = |e: &Option<EntryView>| e.as_ref().map_or("<absent>".into(), EntryView::to_text);
        match self.kind {
            DiffKind::Added => format!("+ {}: {}", self.path, side(&self.b)),
            DiffKind::Removed => format!("- {}: {}", self.path, side(&self.a)),
            DiffKind::Changed => format!("~ {}: {} -> {}", self.path, side(&self.a), side(&self.b)),
        }
    }
}

/// A node whose highest tick differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDiff {
    /// The node.
    pub node: NodeName,
    /// Its tick in A (`None`: unknown or none).
    pub a: Option<u64>,
    /// Its tick in B.
    pub b: Option<u64>,
}

impl NodeDiff {
    /// As a report map.
    pub fn to_value(&self) -> Value {
        Doc::new()
            .put("kind", "node")
            .put("node", Value::Str(self.node.clone()))
            .put("a_tick", self.a.map_or(Value::Nil, Value::uint))
            .put("b_tick", self.b.map_or(Value::Nil, Value::uint))
            .value()
    }

    /// One line for people.
    pub fn to_text(&self) -> String {
        let t = |x: Option<u64>| x.map_or("-".into(), |t| t.to_string());
        format!("node {}: tick {} -> {}", self.node, t(self.a), t(self.b))
    }
}

/// How `a` and `b` (entries holding a value or a chain) differ, if they
/// do: value (by its encoding), chain or tock.
fn compare(a: Option<&EntryRef<'_>>, b: Option<&EntryRef<'_>>) -> Option<DiffKind> {
    let has = |e: Option<&EntryRef<'_>>| e.is_some_and(|e| e.value.is_some());
    match (a, b) {
        (None, None) => None,
        (Some(x), Some(y)) if x.value == y.value && x.chain == y.chain && x.tock == y.tock => None,
        _ => Some(match (has(a), has(b)) {
            (false, true) => DiffKind::Added,
            (true, false) => DiffKind::Removed,
            _ => DiffKind::Changed,
        }),
    }
}

/// Walks both trees in step and hands each differing path to `emit`, in
/// A's tree order followed by what only B has below each entry.
pub fn diff_walk(a: &Tree, b: &Tree, emit: &mut dyn FnMut(PathDiff) -> Result<()>) -> Result<()> {
    let mut stack: Vec<(Option<NodeId>, Option<NodeId>)> = vec![(Some(a.root()), Some(b.root()))];
    // B's nodes paired with one of A's (A's children have distinct names,
    // so each of B's is paired at most once).
    let mut b_paired = vec![false; b.len()];
    while let Some((na, nb)) = stack.pop() {
        let ea = na.and_then(|n| a.entry(n));
        let eb = nb.and_then(|n| b.entry(n));
        if let Some(kind) = compare(ea.as_ref(), eb.as_ref()) {
            let path = match (na, nb) {
                (Some(n), _) => a.path(n),
                (None, Some(n)) => b.path(n),
                (None, None) => KvPath::root(),
            };
            emit(PathDiff {
                kind,
                path,
                a: ea.as_ref().map(EntryView::of),
                b: eb.as_ref().map(EntryView::of),
            })?;
        }
        let start = stack.len();
        if let Some(na) = na {
            // Children usually come in the same order on both sides: pair
            // them in step, and look names up only where they do not.
            let mut next_b = nb.and_then(|nb| b.first_child(nb));
            let mut index: Option<ChildIndex> = None;
            for ca in a.children(na) {
                let cb = nb.and_then(|nb| {
                    let found = match next_b {
                        Some(c) if b.same_name(c, a, ca) => Some(c),
                        _ => index
                            .get_or_insert_with(|| ChildIndex::new(b, nb))
                            .find(b, a, ca),
                    };
                    if let Some(c) = found {
                        next_b = b.next_sibling(nb, c);
                        b_paired[c as usize] = true;
                    }
                    found
                });
                stack.push((Some(ca), cb));
            }
        }
        if let Some(nb) = nb {
            for cb in b.children(nb) {
                if !b_paired[cb as usize] {
                    stack.push((None, Some(cb)));
                }
            }
        }
        // Pop in tree order.
        stack[start..].reverse();
    }
    Ok(())
}

/// Nodes whose highest tick differs between `a` and `b`.
pub fn node_diffs(a: &Built, b: &Built) -> Vec<NodeDiff> {
    let ticks = |s: &Built| -> FastMap<NodeName, Option<u64>> { s.nodes.iter().cloned().collect() };
    let (ta, tb) = (ticks(a), ticks(b));
    let mut out = Vec::new();
    for (n, t) in &a.nodes {
        let other = tb.get(n).copied().flatten();
        if *t != other {
            out.push(NodeDiff {
                node: n.clone(),
                a: *t,
                b: other,
            });
        }
    }
    for (n, t) in &b.nodes {
        if !ta.contains_key(n) && t.is_some() {
            out.push(NodeDiff {
                node: n.clone(),
                a: None,
                b: *t,
            });
        }
    }
    out
}

/// A summary of both sides, for the report's first item.
pub fn sides_value(a: &Side, b: &Side) -> Value {
    let one = |s: &Side| {
        Doc::new()
            .put("label", s.label.as_str())
            .put("node", Value::Str(s.built.me.clone()))
            .put("digest", digest_text(s.built.digest).as_str())
            .put(
                "notes",
                Value::Array(s.notes.iter().map(|n| Value::str(n)).collect()),
            )
            .value()
    };
    Doc::new()
        .put("kind", "sides")
        .put("a", one(a))
        .put("b", one(b))
        .value()
}

/// The summary as text.
pub fn sides_text(a: &Side, b: &Side) -> String {
    let mut out = String::new();
    for (tag, s) in [("A", a), ("B", b)] {
        out.push_str(&format!(
            "{tag}: {} (node {}, digest {})\n",
            s.label,
            s.built.me,
            digest_text(s.built.digest)
        ));
        for n in &s.notes {
            out.push_str(&format!("   note: {n}\n"));
        }
    }
    out
}
