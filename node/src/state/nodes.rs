//! Per-node tick bookkeeping.
//!
//! For every server name it has heard of, a node tracks the highest tick
//! seen and which of that server's ticks are
//! * **present**: in some entry's chain (kept as tick → entry path, so an
//!   entry can be found by `(node, tick)`),
//! * **superseded** (wire name `known`): existed but are in no chain any more
//!   — kept implicitly: the node tracks every tick it has **seen** (present
//!   or superseded; nearly always a few long ranges), and superseded =
//!   seen − present, computed when asked for. Moving a tick from present to
//!   superseded then touches only the present map, not a fragmented set,
//! * **deleted**: their entry was deleted, awaiting purge,
//! * **reported** (`remote_missing`): another server said it lacks them.
//!
//! *Missing* is derived: `[1, tick]` minus seen.
//! Invariant: every present tick is also seen.

use std::collections::HashMap;

use distkv_model::{Path, RangeSet};

/// What this node knows about one server's ticks.
#[derive(Debug, Default, Clone)]
pub struct NodeInfo {
    /// Highest tick seen; `None` = nothing yet.
    pub(crate) tick: Option<u64>,
    /// Present ticks and the entry each one is in. A hash map: the hot
    /// path inserts and removes single ticks; ordered views (reports) sort.
    pub(crate) entries: HashMap<u64, Path, foldhash::fast::RandomState>,
    /// Present or superseded ticks.
    pub(crate) seen: RangeSet,
    pub(crate) deleted: RangeSet,
    pub(crate) reported: RangeSet,
}

impl NodeInfo {
    /// Highest tick seen.
    pub fn tick(&self) -> Option<u64> {
        self.tick
    }

    /// Raises the highest tick seen to at least `t`.
    pub(crate) fn saw_tick(&mut self, t: u64) {
        if self.tick.is_none_or(|x| x < t) {
            self.tick = Some(t);
        }
    }

    /// Tick `t` is in the chain of the entry at `path`.
    pub(crate) fn seen(&mut self, t: u64, path: &Path) {
        self.reported.remove(t);
        self.entries.insert(t, path.clone());
        self.seen.insert(t);
    }

    /// Tick `t` left every chain.
    pub(crate) fn supersede(&mut self, t: u64) {
        self.entries.remove(&t);
        self.seen.insert(t);
    }

    /// Ticks `known` to exist (superseded unless present).
    pub(crate) fn know(&mut self, known: &RangeSet) {
        self.seen.union_with(known);
    }

    /// Ticks currently in some chain.
    pub fn present(&self) -> RangeSet {
        self.present_ticks().into_iter().collect()
    }

    /// Present ticks, ascending.
    pub fn present_ticks(&self) -> Vec<u64> {
        let mut t: Vec<u64> = self.entries.keys().copied().collect();
        t.sort_unstable();
        t
    }

    /// Ticks known to be gone from every chain: seen but not present.
    pub fn superseded(&self) -> RangeSet {
        let mut r = self.seen.clone();
        for t in self.present_ticks() {
            r.remove(t);
        }
        r
    }

    /// Ticks of deleted entries awaiting purge.
    pub fn deleted(&self) -> &RangeSet {
        &self.deleted
    }

    /// Ticks others reported missing.
    pub fn reported(&self) -> &RangeSet {
        &self.reported
    }

    /// Ticks up to the highest seen that are neither present nor superseded.
    pub fn missing(&self) -> RangeSet {
        let mut r = RangeSet::new();
        if let Some(t) = self.tick.filter(|&t| t >= 1) {
            r.insert_range(1, t + 1);
            r.subtract(&self.seen);
        }
        r
    }

    /// The entry path of a present tick.
    pub fn entry_path(&self, t: u64) -> Option<&Path> {
        self.entries.get(&t)
    }
}
