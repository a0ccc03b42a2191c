//! `history`: every change to one key (or a subtree) across the files.
//!
//! The files are replayed from as early as they allow ([`Start::Earliest`]);
//! each event the state machine stores at the key (or below it, with
//! `recursive`) is one [`Change`]: when it was written, its tock, its
//! `node:tick` chain, where it is, and the value before → after, "before"
//! being the entry's value in replay order. Events that are duplicates,
//! stale or lose a conflict change nothing and are not listed.
//!
//! **With the history index.** Given one data directory, [`history`] asks
//! its history index (`<dir>/index/`, crate `distkv-index`) instead of
//! replaying everything: the index is checked against the segments and
//! caught up or rebuilt first (it is derived data, never trusted as it
//! is), lists the key's events, and each is read back from its block and
//! checked. The answer is the full replay's because the apply rules decide
//! an event's fate from its own entry alone (chain and tock: see
//! `distkv_core::state`): the key's events, applied in log order with the
//! same [`State::replay`] to a state holding only the key's entries of the
//! start snapshot, are stored, dropped as stale or lost exactly as in the
//! full replay, with the same value before. Where that cannot be vouched
//! for, the full replay runs instead, with a note saying why: several
//! histories (merged by tock across logs), a log the index cannot cover
//! completely (damage, a torn tail, a gap), a start snapshot that does not
//! read cleanly, an index in use by a running node, or an index entry that
//! does not match its block. One limitation remains: an event whose
//! `node:tick` appears twice *at different paths* (a forged or corrupt
//! log, which `audit` reports) is skipped as a duplicate by the full
//! replay, but listed by the index.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use distkv_core::state::{Applied, State};
use distkv_index::HistoryIndex;
use distkv_model::{Chain, NodeName, Path as KvPath, UpdateEvent, Value};
use distkv_snapshot::{Item, SnapshotReader};

use crate::engine::{chain_text, EventCtx, Observer, Outcome, Replay, Start, Target, LIMITS};
use crate::error::Result;
use crate::output::Doc;
use crate::source::{detect, inventory, Damage, History, Kind, Loc, Pos};
use crate::time::format_ms;

/// One change to an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The entry.
    pub path: KvPath,
    /// When the event was written (log records only).
    pub time_ms: Option<u64>,
    /// Its tock.
    pub tock: u64,
    /// Its chain (head first: the change's `node:tick`).
    pub chain: Chain,
    /// The value before (`None`: none, or deleted).
    pub old: Option<Value>,
    /// The value after (`None`: deleted).
    pub new: Option<Value>,
    /// Where the event is.
    pub loc: Loc,
}

fn value_text(v: Option<&Value>) -> String {
    v.map_or("<none>".into(), Value::to_string)
}

impl Change {
    /// As a report map.
    pub fn to_value(&self) -> Value {
        let head = self.chain.head();
        Doc::new()
            .put("path", Value::Path(self.path.clone()))
            .opt("time", self.time_ms.map(|t| Value::str(&format_ms(t))))
            .put("tock", Value::uint(self.tock))
            .put("event", format!("{}:{}", head.node, head.tick).as_str())
            .put("chain", chain_text(&self.chain).as_str())
            .put("old", self.old.clone().unwrap_or(Value::Nil))
            .put("new", self.new.clone().unwrap_or(Value::Nil))
            .put("deleted", self.new.is_none())
            .put("at", self.loc.to_value())
            .value()
    }

    /// One line for people.
    pub fn to_text(&self) -> String {
        let head = self.chain.head();
        let time = self.time_ms.map_or("-".to_string(), format_ms);
        let new = match &self.new {
            Some(v) => v.to_string(),
            None => "<deleted>".into(),
        };
        format!(
            "{time} tock {} {}:{} {}: {} -> {new}  ({})",
            self.tock,
            head.node,
            head.tick,
            self.path,
            value_text(self.old.as_ref()),
            self.loc.to_text()
        )
    }
}

/// What `history` found.
#[derive(Debug, Clone, Default)]
pub struct HistoryReport {
    /// The changes, in replay order.
    pub changes: Vec<Change>,
    /// Damage met.
    pub damage: Vec<Damage>,
    /// Remarks.
    pub notes: Vec<String>,
}

struct Watcher<'a> {
    key: &'a KvPath,
    recursive: bool,
    changes: Vec<Change>,
}

impl Watcher<'_> {
    fn matches(&self, p: &KvPath) -> bool {
        if self.recursive {
            p.starts_with(self.key)
        } else {
            p == self.key
        }
    }
}

impl Observer for Watcher<'_> {
    fn wants_before(&self, event: &UpdateEvent) -> bool {
        self.matches(&event.path)
    }

    fn event(&mut self, _state: &State, ctx: &EventCtx<'_>) {
        if !self.matches(&ctx.event.path) {
            return;
        }
        if let Outcome::Applied {
            applied: Applied::Stored(_) | Applied::Replayed,
            before,
            ..
        } = ctx.outcome
        {
            self.changes.push(Change {
                path: ctx.event.path.clone(),
                time_ms: ctx.time_ms,
                tock: ctx.event.tock,
                chain: ctx.event.chain.clone(),
                old: before.as_ref().and_then(|b| b.value.clone()),
                new: ctx.event.value.clone(),
                loc: ctx.loc.clone(),
            });
        }
    }
}

/// Whether `history` may answer from the history index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseIndex {
    /// Replay the whole log.
    Never,
    /// Use the data directory's index if it has one (`<dir>/index/`).
    IfPresent,
    /// Use the index, building it first if there is none.
    Build,
}

/// Lists the changes to `key` (and below, if `recursive`) in `inputs`:
/// from the history index when `inputs` is one data directory with an
/// index that can be brought up to date, else by replaying everything
/// (see the module docs).
pub fn history(
    inputs: &[PathBuf],
    key: &KvPath,
    recursive: bool,
    quiet: bool,
) -> Result<HistoryReport> {
    history_with(inputs, key, recursive, quiet, UseIndex::IfPresent)
}

/// [`history`], choosing whether the index may be used or built.
pub fn history_with(
    inputs: &[PathBuf],
    key: &KvPath,
    recursive: bool,
    quiet: bool,
    use_index: UseIndex,
) -> Result<HistoryReport> {
    let present = || match inputs {
        [dir] => dir.join("index").exists(),
        _ => false,
    };
    let wanted = match use_index {
        UseIndex::Never => false,
        UseIndex::IfPresent => present(),
        UseIndex::Build => true,
    };
    if !wanted {
        return history_replayed(inputs, key, recursive, quiet);
    }
    match history_indexed(inputs, key, recursive)? {
        Ok(r) => Ok(r),
        Err(why) => {
            let mut r = history_replayed(inputs, key, recursive, quiet)?;
            r.notes.push(format!(
                "history index not used ({why}): replayed the whole log"
            ));
            Ok(r)
        }
    }
}

/// The changes as the history index finds them; the inner `Err` says why
/// the index cannot answer (then the full replay must).
pub fn history_indexed(
    inputs: &[PathBuf],
    key: &KvPath,
    recursive: bool,
) -> Result<std::result::Result<HistoryReport, String>> {
    let [dir] = inputs else {
        return Ok(Err("more than one input".into()));
    };
    if detect(dir)?.kind != Kind::DataDir {
        return Ok(Err("the input is not a data directory".into()));
    }
    let inv = inventory(inputs)?;
    let h = match inv.histories.as_slice() {
        [h] if h.py.is_none() && !h.segments.is_empty() && inv.damage.is_empty() => h,
        _ => return Ok(Err("the directory holds no single intact log".into())),
    };
    let Some(node) = &h.node else {
        return Ok(Err("the log's node is unknown".into()));
    };
    let (mut ix, rebuilt) = match HistoryIndex::open(&dir.join("index"), &dir.join("log"), node) {
        Ok(x) => x,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut notes = inv.notes.clone();
    if let Some(why) = rebuilt {
        notes.push(format!(
            "history index rebuilt: the old one was unusable ({why})"
        ));
    }
    let sync = match ix.sync() {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if !sync.complete() {
        return Ok(Err(sync.incomplete.join("; ")));
    }
    if !sync.reindexed.is_empty() || !sync.caught_up.is_empty() {
        notes.push(format!(
            "history index brought up to date: {} segment(s) indexed, {} caught up, {} events",
            sync.reindexed.len(),
            sync.caught_up.len(),
            sync.events
        ));
    }
    let mut state = State::new(node, LIMITS);
    let mut from_seq = 0;
    if h.segments[0].first_seq > 1 {
        match start_snapshot(h, &mut state, key, recursive) {
            Ok((path, seq)) => {
                notes.push(format!(
                    "{}: starts from snapshot {} (the log does not go back further)",
                    h.label(),
                    path.display()
                ));
                from_seq = seq + 1;
            }
            Err(why) => return Ok(Err(why)),
        }
    }
    let found = match ix.lookup(key, recursive).and_then(|hits| {
        ix.fetch(
            &hits
                .into_iter()
                .filter(|x| x.seq >= from_seq)
                .collect::<Vec<_>>(),
        )
    }) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let files: std::collections::HashMap<u64, Arc<Path>> = h
        .segments
        .iter()
        .map(|s| (s.first_seq, Arc::from(s.path.as_path())))
        .collect();
    let mut seen: HashSet<(NodeName, u64)> = HashSet::new();
    let mut changes = Vec::new();
    for f in found {
        let head = f.event.chain.head();
        if !seen.insert((head.node.clone(), head.tick)) {
            continue;
        }
        let old = state.entry(&f.event.path).and_then(|e| e.data().cloned());
        let applied = state.replay(f.event.clone());
        if matches!(applied, Applied::Stored(_) | Applied::Replayed) {
            let segment = h.segments.iter().rev().find(|s| s.first_seq <= f.seq);
            let file = segment
                .and_then(|s| files.get(&s.first_seq).cloned())
                .unwrap_or_else(|| Arc::from(f.file.as_path()));
            changes.push(Change {
                path: f.event.path.clone(),
                time_ms: Some(f.time_ms),
                tock: f.event.tock,
                chain: f.event.chain.clone(),
                old,
                new: f.event.value,
                loc: Loc {
                    file,
                    pos: Pos::Seq {
                        seq: f.seq,
                        offset: f.offset,
                    },
                },
            });
        }
    }
    notes.push("answered from the history index".into());
    Ok(Ok(HistoryReport {
        changes,
        damage: Vec::new(),
        notes,
    }))
}

/// Restores into `state` the entries at (or below) `key` of the snapshot
/// the full replay would start from (the oldest the log continues);
/// returns it and its seq, or why it cannot be used here.
fn start_snapshot(
    h: &History,
    state: &mut State,
    key: &KvPath,
    recursive: bool,
) -> std::result::Result<(PathBuf, u64), String> {
    let first = h.segments[0].first_seq;
    let Some(s) = h.snapshots.iter().find(|s| s.header.seq + 1 >= first) else {
        return Err("no snapshot covers the log's missing start".into());
    };
    let mut reader = SnapshotReader::open(&s.path).map_err(|e| e.to_string())?;
    for item in reader.by_ref() {
        if let Item::Entry(e) = item.map_err(|e| e.to_string())? {
            let wanted = if recursive {
                e.path.starts_with(key)
            } else {
                e.path == *key
            };
            if wanted {
                state.restore_entry(&e.path, e.value, e.chain, e.tock);
            }
        }
    }
    Ok((s.path.clone(), s.header.seq))
}

/// Lists the changes by replaying every input (see the module docs).
pub fn history_replayed(
    inputs: &[PathBuf],
    key: &KvPath,
    recursive: bool,
    quiet: bool,
) -> Result<HistoryReport> {
    let inv = inventory(inputs)?;
    let mut replay = Replay::prepare(&inv, Target::All, Start::Earliest, false, None, quiet)?;
    let mut w = Watcher {
        key,
        recursive,
        changes: Vec::new(),
    };
    replay.run(&mut w, "history")?;
    let mut notes = replay.notes.clone();
    for (i, s) in replay.starts.iter().enumerate() {
        if let Some(p) = s {
            notes.push(format!(
                "{}: starts from snapshot {} (the log does not go back further)",
                replay.labels[i],
                p.display()
            ));
        }
    }
    Ok(HistoryReport {
        changes: w.changes,
        damage: replay.damage.clone(),
        notes,
    })
}
