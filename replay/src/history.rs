//! `history`: every change to one key (or a subtree) across the files.
//!
//! The files are replayed from as early as they allow ([`Start::Earliest`]);
//! each event the state machine stores at the key (or below it, with
//! `recursive`) is one [`Change`]: when it was written, its tock, its
//! `node:tick` chain, where it is, and the value before → after, "before"
//! being the entry's value in replay order. Events that are duplicates,
//! stale or lose a conflict change nothing and are not listed.

use std::path::PathBuf;

use distkv_core::state::{Applied, State};
use distkv_model::{Chain, Path as KvPath, UpdateEvent, Value};

use crate::engine::{chain_text, EventCtx, Observer, Outcome, Replay, Start, Target};
use crate::error::Result;
use crate::output::Doc;
use crate::source::{inventory, Damage, Loc};
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

/// Lists the changes to `key` (and below, if `recursive`) in `inputs`.
pub fn history(
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
