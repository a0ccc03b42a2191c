//! Looking ahead of a run of events being applied: the memory their
//! applies will read is asked for a few events early, so that its loads
//! overlap instead of each stalling the apply in turn.
//!
//! An event's apply misses the cache several times, each load waiting for
//! the one before: its parent's table of children (control bytes, then the
//! bucket of ids), the entry's slot, the links of a longer chain (behind a
//! pointer in the slot), the page of each tick the new chain supersedes
//! (behind the links), the value it replaces (freeing it reads its count),
//! and the event's own memory when its message was decoded a while ago (or
//! on another core). A [`Lookahead`] walks the same steps for the events
//! after the one being applied, a stage per step, each at a distance from
//! the apply at which what the stage before asked for has arrived:
//!
//! * [`TABLE`] events ahead it finds the parent (along the path the apply
//!   followed last, then by plain look-ups: parents are few and shared by
//!   runs of keys) and asks for the part of its table where the name's hash
//!   starts probing;
//! * [`SLOT`] ahead it takes the first id there that the hash fits and asks
//!   for that slot, and for the event itself;
//! * [`LINKS`] ahead it checks the slot's name, reads its chain and asks for
//!   a longer chain's links (or, for the one link a slot holds, for its
//!   tick's page), for the slot's value, and for the event's chain's links
//!   and new value;
//! * [`TICKS`] ahead it reads those links and asks for their ticks' pages.
//!
//! A small tree (fewer than [`SMALL`] slots) is not looked ahead of.
//!
//! A short run of look-ups known at once (a connection's pipelined
//! requests, [`Lookahead::group`]) takes the same steps a step at a time
//! for all of them: each step's loads are asked for side by side, and
//! have arrived when the next step reads them.
//!
//! Nothing here changes the state or decides anything: a look-ahead is a
//! hint. An entry that an apply in between removed, a chain that changed, a
//! table that grew: each only asks for memory that is not needed (every
//! address it reads from is of something that exists when it reads it; a
//! prefetch of any address neither faults nor changes anything), and the
//! apply reads what is there as always.

pub(crate) use distkv_model::hint::prefetch;
use distkv_model::{Link, NodeName, Path, RecentNames, UpdateEvent};

use super::tree::{EntryId, SlotLinks};
use super::State;

/// Events ahead of the apply at which the parent's table is asked for.
const TABLE: usize = 12;
/// … the entry's slot.
const SLOT: usize = 8;
/// … a longer chain's links and the value.
const LINKS: usize = 4;
/// … the pages of the chain's ticks.
const TICKS: usize = 2;
/// A tree of fewer slots than this is not looked ahead of: it stays in
/// the caches, where a look-ahead only adds its own work (a quarter more
/// time an event at 1 000 keys, docs/perf.md; a tenth less at 10 000).
const SMALL: usize = 8192;
/// Events the stages keep what they found for (a power of two above
/// [`TABLE`]).
const RING: usize = 16;

/// What the stages found for one event.
#[derive(Debug, Default, Clone, Copy)]
struct Found {
    /// The event's number (`Lookahead::at` when it is applied).
    n: u64,
    parent: EntryId,
    hash: u64,
    /// The entry, once [`SLOT`] found one.
    id: Option<EntryId>,
}

/// The look-ahead of one run of applies (see the module's text).
#[derive(Debug)]
pub struct Lookahead {
    /// Events applied so far, this one included.
    at: u64,
    found: [Found; RING],
    /// Indices of node names in the state's table, by address (one made
    /// stale by a node's removal asks for another node's page).
    nodes: RecentNames,
}

impl Default for Lookahead {
    fn default() -> Lookahead {
        Lookahead {
            at: 0,
            // Event 0 is never looked ahead of: these hold nothing.
            found: [Found::default(); RING],
            nodes: RecentNames::default(),
        }
    }
}

impl Lookahead {
    /// Looks ahead of the apply of one event: `next` are the events after
    /// it, in the order they will be applied. Call it once per event, just
    /// before its apply (skipping a call, or applying events not in `next`,
    /// makes it ask for the wrong memory, which only costs time).
    pub fn step(&mut self, st: &State, next: &[UpdateEvent]) {
        self.step_by(st, |k| next.get(k));
    }

    /// [`Lookahead::step`] with the events after the one applied next
    /// handed out by `next` (the `k`-th after it, if known).
    pub fn step_by<'e>(&mut self, st: &State, next: impl Fn(usize) -> Option<&'e UpdateEvent>) {
        self.at += 1;
        let tree = &st.tree;
        if tree.slots() < SMALL {
            return;
        }
        if let Some(e) = next(TABLE - 1) {
            let n = self.at + TABLE as u64;
            self.found[n as usize % RING] = match tree.prefetch_table(&e.path) {
                Some((parent, hash)) => Found {
                    n,
                    parent,
                    hash,
                    id: None,
                },
                None => Found::default(),
            };
        }
        if let Some(e) = next(SLOT - 1) {
            let f = &mut self.found[(self.at + SLOT as u64) as usize % RING];
            if f.n == self.at + SLOT as u64 {
                f.id = tree.prefetch_slot(f.parent, f.hash);
            }
            let e: *const UpdateEvent = e;
            prefetch(e);
            prefetch(e.cast::<u8>().wrapping_add(size_of::<UpdateEvent>() - 1));
        }
        if let Some(e) = next(LINKS - 1) {
            prefetch(e.chain.links().as_ptr());
            // The new value's count and length, which storing it reads
            // (written by another thread where the events are decoded
            // there: `distkv-replay`).
            if let Some(v) = &e.value {
                v.prefetch();
            }
            if let Some(id) = self.entry(self.at + LINKS as u64) {
                tree.prefetch_data(id);
                if let SlotLinks::One(node, tick) = tree.prefetch_links(id, e.path.last()) {
                    self.prefetch_tick(st, node, tick);
                }
            }
        }
        if let Some(id) = self.entry(self.at + TICKS as u64) {
            if let SlotLinks::Many(links) = tree.links(id) {
                for Link { node, tick } in links {
                    self.prefetch_tick(st, node, *tick);
                }
            }
        }
    }

    /// Asks for what looking up each of `paths` (from the tree's root)
    /// will read, in [`RING`]s: every path's parent table, then every
    /// path's slot, then their values and their chains' links or tick
    /// pages, then the links' tick pages. For a few look-ups made one
    /// after the other right after it, as a connection's run of pipelined
    /// requests is.
    pub fn group(&mut self, st: &State, paths: &[Path]) {
        let tree = &st.tree;
        // One look-up's steps wait for each other with or without this.
        if tree.slots() < SMALL || paths.len() < 2 {
            return;
        }
        for paths in paths.chunks(RING) {
            let mut ids = [None; RING];
            let tables: [_; RING] =
                std::array::from_fn(|i| paths.get(i).and_then(|p| tree.prefetch_table(p)));
            for (id, table) in ids.iter_mut().zip(&tables) {
                *id = table.and_then(|(parent, hash)| tree.prefetch_slot(parent, hash));
            }
            for (id, path) in ids.iter_mut().zip(paths) {
                let Some(found) = *id else { continue };
                let links = tree.prefetch_links(found, path.last());
                if !matches!(links, SlotLinks::None) {
                    tree.prefetch_data(found);
                }
                match links {
                    SlotLinks::One(node, tick) => self.prefetch_tick(st, node, tick),
                    SlotLinks::Many(_) => continue,
                    SlotLinks::None => {}
                }
                // Done with: not a longer chain.
                *id = None;
            }
            for id in ids.into_iter().flatten() {
                if let SlotLinks::Many(links) = tree.links(id) {
                    for Link { node, tick } in links {
                        self.prefetch_tick(st, node, *tick);
                    }
                }
            }
        }
    }

    /// The entry [`SLOT`] found for event `n`.
    fn entry(&self, n: u64) -> Option<EntryId> {
        let f = &self.found[n as usize % RING];
        f.id.filter(|_| f.n == n)
    }

    /// Asks for the word of `node`'s tick bookkeeping that holds `tick`.
    fn prefetch_tick(&mut self, st: &State, node: &NodeName, tick: u64) {
        let i = match self.nodes.get(node) {
            Some(i) => i as usize,
            None => {
                let Some(i) = st.nodes.get_index_of(&**node) else {
                    return;
                };
                // A state has fewer nodes than 2^32.
                self.nodes.put(node, i as u32);
                i
            }
        };
        if let Some((_, info)) = st.nodes.get_index(i) {
            info.prefetch(tick);
        }
    }
}
