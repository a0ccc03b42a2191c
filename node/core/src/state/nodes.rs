//! Per-node tick bookkeeping.
//!
//! For every server name it has heard of, a node tracks the highest tick
//! seen and which of that server's ticks are
//! * **present**: in some entry's chain (kept as tick → entry id, so an
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
//!
//! Costs (n ticks or ranges): asking about one tick ([`NodeInfo::knows`],
//! [`NodeInfo::is_superseded`], [`NodeInfo::entry_id`]) is O(log n) at
//! most, which is what per-event callers (recovery, `distkv-replay`) use;
//! the whole sets ([`NodeInfo::superseded`], [`NodeInfo::present`],
//! [`NodeInfo::missing`]) are built in one merge pass over the tick pages
//! in their order and the seen ranges, O(n) (only ticks outside the
//! pages are sorted), for reports, state records and snapshots.

use std::collections::{BTreeMap, HashMap, VecDeque};

use distkv_model::RangeSet;

use super::EntryId;

/// What this node knows about one server's ticks.
#[derive(Debug, Default, Clone)]
pub struct NodeInfo {
    /// Highest tick seen; `None` = nothing yet.
    pub(crate) tick: Option<u64>,
    /// Present ticks and the entry each one is in, in pages indexed by
    /// the tick: the hot path inserts and removes single ticks; ordered
    /// views (reports) sort.
    pub(crate) entries: TickMap,
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

    /// Tick `t` is in the chain of the entry `id`.
    pub(crate) fn seen(&mut self, t: u64, id: EntryId) {
        self.reported.remove(t);
        self.entries.insert(t, id);
        self.seen.insert(t);
    }

    /// Asks for the word of the tick bookkeeping that holds tick `t`
    /// (`state::ahead`).
    pub(crate) fn prefetch(&self, t: u64) {
        self.entries.prefetch(t);
    }

    /// Tick `t` left every chain.
    pub(crate) fn supersede(&mut self, t: u64) {
        // A present tick is seen already.
        if !self.entries.remove(t) {
            self.seen.insert(t);
        }
    }

    /// Ticks `known` to exist (superseded unless present).
    pub(crate) fn know(&mut self, known: &RangeSet) {
        self.seen.union_with(known);
    }

    /// Whether tick `t` is known here: present or superseded. O(log n).
    pub fn knows(&self, t: u64) -> bool {
        self.seen.contains(t)
    }

    /// Whether tick `t` existed but is in no chain any more. O(log n).
    pub fn is_superseded(&self, t: u64) -> bool {
        !self.entries.contains(t) && self.seen.contains(t)
    }

    /// Ticks currently in some chain.
    pub fn present(&self) -> RangeSet {
        RangeSet::from_ranges(self.entries.held().runs())
    }

    /// Present ticks, ascending.
    pub fn present_ticks(&self) -> Vec<u64> {
        self.entries.held().runs().flat_map(|(a, b)| a..b).collect()
    }

    /// Ticks known to be gone from every chain: seen but not present.
    pub fn superseded(&self) -> RangeSet {
        self.ticks_now().superseded()
    }

    /// What [`NodeInfo::superseded`] is made of, copied out in one pass
    /// over the tick pages (a bit per tick), so that a caller holding the
    /// state's lock (a state record's writer) can make the set after it
    /// let the lock go.
    pub fn ticks_now(&self) -> TicksNow {
        // Every present tick is seen: as many of each, nothing is superseded
        // (the common case of keys written once).
        let some = self.seen.count() != self.entries.len() as u64;
        TicksNow(some.then(|| (self.seen.clone(), self.entries.held())))
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

    /// The entry of a present tick (in the state's tree).
    pub fn entry_id(&self, t: u64) -> Option<EntryId> {
        self.entries.get(t)
    }
}

/// Ticks per page of a [`TickMap`]: 4 KiB of entry ids.
const PAGE_BITS: u32 = 10;
const PAGE: usize = 1 << PAGE_BITS;
const MASK: u64 = PAGE as u64 - 1;
/// A page's slot that holds no tick. The tree never hands out this id (it
/// is its own "no entry" mark).
const ABSENT: EntryId = EntryId::MAX;
/// A page (other than the newest) left with fewer ticks than this moves
/// them into the sparse map …
const DEMOTE_BELOW: u32 = 16;
/// … and ticks of such a page go back into a page of their own once they
/// are this many again.
const PROMOTE_AT: u32 = 64;
/// Page slots the window may span beyond one per [`TICKS_PER_SLOT`] ticks
/// held (a slot takes 16 bytes): ticks further off are kept in a map.
const SPAN_SLACK: usize = 256;
/// Ticks held per page slot the window may span. Ticks only added (a
/// snapshot load) never demote a page, so this bounds what the pages cost
/// however the ticks are spread: at most one 4 KiB page per this many
/// ticks (64 bytes a tick, beyond the slack's first megabyte).
const TICKS_PER_SLOT: usize = 64;

/// Present ticks → the entry holding each.
///
/// A node's ticks are nearly consecutive, so they are kept in pages of
/// [`PAGE`] entry ids indexed by the tick (no hashing, no probing: the
/// merge touches one word per tick), in a window of pages that slides up
/// as the node's ticks grow. Pages that empty out are freed; one left with
/// a few ticks (keys rarely rewritten among many rewritten ones) moves
/// them into a hash map, so sparse ticks cost a map entry, not a page.
/// Ticks far outside the window (a tick beyond what the window may span
/// for the ticks it holds) live in an ordered map and move into the window
/// when it reaches them. Invariant: every tick is in exactly one place —
/// its page if that is dense, `sparse` if that page is sparse, `far` if
/// the page is outside the window.
#[derive(Default, Clone)]
pub(crate) struct TickMap {
    /// Page number (tick >> [`PAGE_BITS`]) of `slots[0]`.
    base: u64,
    slots: VecDeque<Slot>,
    /// Ticks of [`Slot::Sparse`] pages.
    sparse: HashMap<u64, EntryId, foldhash::quality::RandomState>,
    /// Ticks outside the window.
    far: BTreeMap<u64, EntryId>,
    /// Ticks held.
    len: usize,
}

#[derive(Default, Clone)]
enum Slot {
    /// No tick of this page is present.
    #[default]
    Empty,
    /// The page's ticks, by their low bits.
    Dense(Box<Page>),
    /// This many of the page's ticks are present, in `sparse`.
    Sparse(u32),
}

#[derive(Clone)]
struct Page {
    /// Ticks present (ids other than [`ABSENT`]).
    len: u32,
    ids: [EntryId; PAGE],
}

impl Page {
    fn new() -> Box<Page> {
        Box::new(Page {
            len: 0,
            ids: [ABSENT; PAGE],
        })
    }

    /// The ticks held, a bit each (no branch per tick).
    fn held(&self) -> [u64; PAGE / 64] {
        let mut held = [0u64; PAGE / 64];
        for (w, ids) in held.iter_mut().zip(self.ids.chunks_exact(64)) {
            *w = ids
                .iter()
                .enumerate()
                .fold(0, |w, (k, &id)| w | u64::from(id != ABSENT) << k);
        }
        held
    }
}

/// The first bit at or after `from` that is set (`clear`: clear), if any.
fn next_bit(words: &[u64], from: usize, clear: bool) -> Option<usize> {
    let mut i = from / 64;
    let flip = if clear { u64::MAX } else { 0 };
    let mut w = (*words.get(i)? ^ flip) & (u64::MAX << (from % 64));
    loop {
        if w != 0 {
            return Some(i * 64 + w.trailing_zeros() as usize);
        }
        i += 1;
        w = *words.get(i)? ^ flip;
    }
}

impl std::fmt::Debug for TickMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TickMap")
            .field("len", &self.len)
            .field("base", &self.base)
            .field("slots", &self.slots.len())
            .field("sparse", &self.sparse.len())
            .field("far", &self.far.len())
            .finish()
    }
}

impl TickMap {
    /// The index in `slots` of page `p`, if the window holds it.
    fn slot_of(&self, p: u64) -> Option<usize> {
        let i = p.checked_sub(self.base)?;
        (i < self.slots.len() as u64).then_some(i as usize)
    }

    pub(crate) fn insert(&mut self, t: u64, id: EntryId) {
        debug_assert_ne!(id, ABSENT, "the tree's no-entry mark");
        let p = t >> PAGE_BITS;
        let Some(i) = self.slot_of(p).or_else(|| self.widen(p)) else {
            if self.far.insert(t, id).is_none() {
                self.len += 1;
            }
            return;
        };
        match &mut self.slots[i] {
            Slot::Dense(pg) => {
                let s = &mut pg.ids[(t & MASK) as usize];
                if *s == ABSENT {
                    pg.len += 1;
                    self.len += 1;
                }
                *s = id;
            }
            slot @ Slot::Empty => {
                let mut pg = Page::new();
                pg.ids[(t & MASK) as usize] = id;
                pg.len = 1;
                *slot = Slot::Dense(pg);
                self.len += 1;
            }
            Slot::Sparse(n) => {
                if self.sparse.insert(t, id).is_none() {
                    *n += 1;
                    self.len += 1;
                    if *n >= PROMOTE_AT {
                        self.promote(i);
                    }
                }
            }
        }
    }

    /// Asks for the word of tick `t`'s page, if it is in one.
    fn prefetch(&self, t: u64) {
        if let Some(Slot::Dense(pg)) = self.slot_of(t >> PAGE_BITS).map(|i| &self.slots[i]) {
            super::ahead::prefetch(&pg.ids[(t & MASK) as usize]);
        }
    }

    /// Removes tick `t`; whether it was there.
    pub(crate) fn remove(&mut self, t: u64) -> bool {
        let Some(i) = self.slot_of(t >> PAGE_BITS) else {
            let had = self.far.remove(&t).is_some();
            self.len -= usize::from(had);
            return had;
        };
        match &mut self.slots[i] {
            Slot::Dense(pg) => {
                let s = &mut pg.ids[(t & MASK) as usize];
                if *s == ABSENT {
                    return false;
                }
                *s = ABSENT;
                pg.len -= 1;
                self.len -= 1;
                if pg.len == 0 {
                    self.slots[i] = Slot::Empty;
                    self.trim();
                } else if pg.len < DEMOTE_BELOW && i + 1 < self.slots.len() {
                    // (The newest page is still filling: left as it is.)
                    self.demote(i);
                }
                true
            }
            Slot::Sparse(n) => {
                if self.sparse.remove(&t).is_none() {
                    return false;
                }
                *n -= 1;
                self.len -= 1;
                if *n == 0 {
                    self.slots[i] = Slot::Empty;
                    self.trim();
                }
                true
            }
            Slot::Empty => false,
        }
    }

    pub(crate) fn get(&self, t: u64) -> Option<EntryId> {
        match self.slot_of(t >> PAGE_BITS) {
            Some(i) => match &self.slots[i] {
                Slot::Dense(pg) => Some(pg.ids[(t & MASK) as usize]).filter(|&id| id != ABSENT),
                Slot::Sparse(_) => self.sparse.get(&t).copied(),
                Slot::Empty => None,
            },
            None if self.far.is_empty() => None,
            None => self.far.get(&t).copied(),
        }
    }

    pub(crate) fn contains(&self, t: u64) -> bool {
        self.get(t).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The ticks and their entries: pages ascending, then the rest in no
    /// order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, EntryId)> + '_ {
        let paged = self.slots.iter().enumerate().flat_map(move |(i, s)| {
            let first = (self.base + i as u64) << PAGE_BITS;
            let ids = match s {
                Slot::Dense(pg) => &pg.ids[..],
                _ => &[],
            };
            ids.iter()
                .enumerate()
                .filter(|(_, &id)| id != ABSENT)
                .map(move |(j, &id)| (first + j as u64, id))
        });
        let rest = self.sparse.iter().chain(&self.far);
        paged.chain(rest.map(|(&t, &id)| (t, id)))
    }

    /// The ticks as they are now, copied out for [`Held::runs`]: a bit per
    /// tick of the window's dense pages, the others' ticks sorted (few).
    fn held(&self) -> Held {
        let mut others: Vec<u64> = self.sparse.keys().chain(self.far.keys()).copied().collect();
        others.sort_unstable();
        let pages = self
            .slots
            .iter()
            .map(|s| match s {
                Slot::Dense(pg) => pg.held(),
                _ => [0; PAGE / 64],
            })
            .collect();
        Held {
            base: self.base,
            pages,
            others,
        }
    }

    /// The entries, in no order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = EntryId> + '_ {
        self.iter().map(|(_, id)| id)
    }

    /// Widens the window to page `p` if it may span that far; returns the
    /// page's slot. Ticks of the new pages that were far move in.
    fn widen(&mut self, p: u64) -> Option<usize> {
        let (lo, hi) = if self.slots.is_empty() {
            (p, p)
        } else {
            let top = self.base + self.slots.len() as u64 - 1;
            (self.base.min(p), top.max(p))
        };
        if hi - lo >= (SPAN_SLACK + self.len / TICKS_PER_SLOT) as u64 {
            return None;
        }
        let (new_lo, new_hi) = if self.slots.is_empty() {
            self.base = p;
            self.slots.push_back(Slot::Empty);
            (p, p)
        } else if p < self.base {
            let old = self.base;
            for _ in p..old {
                self.slots.push_front(Slot::Empty);
            }
            self.base = p;
            (p, old - 1)
        } else {
            let old = self.base + self.slots.len() as u64;
            for _ in old..=p {
                self.slots.push_back(Slot::Empty);
            }
            (old, p)
        };
        if !self.far.is_empty() {
            let from = new_lo << PAGE_BITS;
            let to = (new_hi << PAGE_BITS) | MASK;
            let moving: Vec<(u64, EntryId)> =
                self.far.range(from..=to).map(|(&t, &id)| (t, id)).collect();
            for (t, id) in moving {
                self.far.remove(&t);
                self.len -= 1;
                self.insert(t, id);
            }
        }
        self.slot_of(p)
    }

    /// Moves the ticks of the dense page at slot `i` into `sparse`.
    fn demote(&mut self, i: usize) {
        let first = (self.base + i as u64) << PAGE_BITS;
        let Slot::Dense(pg) = std::mem::take(&mut self.slots[i]) else {
            return;
        };
        for (j, &id) in pg.ids.iter().enumerate() {
            if id != ABSENT {
                self.sparse.insert(first + j as u64, id);
            }
        }
        if pg.len > 0 {
            self.slots[i] = Slot::Sparse(pg.len);
        } else {
            self.trim();
        }
    }

    /// Moves the ticks of the sparse page at slot `i` into a page.
    fn promote(&mut self, i: usize) {
        let first = (self.base + i as u64) << PAGE_BITS;
        let mut pg = Page::new();
        for j in 0..PAGE {
            if let Some(id) = self.sparse.remove(&(first + j as u64)) {
                pg.ids[j] = id;
                pg.len += 1;
            }
        }
        self.slots[i] = Slot::Dense(pg);
    }

    /// Drops empty slots at both ends of the window.
    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(Slot::Empty)) {
            self.slots.pop_front();
            self.base += 1;
        }
        while matches!(self.slots.back(), Some(Slot::Empty)) {
            self.slots.pop_back();
        }
    }
}

/// A node's seen and present ticks as they were ([`NodeInfo::ticks_now`]);
/// `None` when every seen tick was present.
pub struct TicksNow(Option<(RangeSet, Held)>);

impl TicksNow {
    /// The ticks seen but not present: one pass over both, ascending.
    pub fn superseded(&self) -> RangeSet {
        match &self.0 {
            Some((seen, present)) => seen.difference_ascending(present.runs()),
            None => RangeSet::new(),
        }
    }
}

/// A node's present ticks as they were when copied out of its
/// [`TickMap`] ([`TickMap::held`]): a bit per tick of each page of the
/// window (zero for a page that is not dense) and every other tick (the
/// sparse pages' and those outside the window), ascending.
struct Held {
    /// Page number of `pages[0]`.
    base: u64,
    pages: Vec<[u64; PAGE / 64]>,
    others: Vec<u64>,
}

impl Held {
    /// The ticks as ascending, disjoint `[a, b)` runs (not merged across
    /// pages): the pages' runs found a word at a time, the other ticks
    /// one by one in their places.
    fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let (mut page, mut j, mut other) = (0, 0, 0);
        std::iter::from_fn(move || loop {
            // The next other tick, unless it comes after this page.
            let t = self.others.get(other).copied();
            let in_window = page < self.pages.len();
            let p = self.base + page as u64;
            if let Some(t) = t.filter(|&t| !in_window || t >> PAGE_BITS <= p) {
                other += 1;
                return Some((t, t.saturating_add(1)));
            }
            let bits = self.pages.get(page)?;
            if let Some(a) = next_bit(bits, j, false) {
                // No other tick is in a page with bits set.
                j = next_bit(bits, a, true).unwrap_or(PAGE);
                let first = p << PAGE_BITS;
                return Some((first + a as u64, first.saturating_add(j as u64)));
            }
            page += 1;
            j = 0;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// One change to the bookkeeping, as the state machine makes them.
    #[derive(Debug, Clone)]
    enum Op {
        /// A tick enters a chain.
        Seen(u64),
        /// A tick leaves every chain.
        Supersede(u64),
        /// A state record says these ticks existed.
        Know(u64, u64),
    }

    /// Ticks near the start, around 2³² and far beyond: the tick map's
    /// window, its far map and pages beyond 32 bits all take part.
    fn tick() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => 1u64..300,
            1 => (1u64 << 32) - 150..(1u64 << 32) + 150,
            1 => (1u64 << 40)..(1u64 << 40) + 300,
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            tick().prop_map(Op::Seen),
            tick().prop_map(Op::Supersede),
            (tick(), 1u64..20).prop_map(|(a, n)| Op::Know(a, a + n)),
        ]
    }

    /// Runs `ops` on a [`NodeInfo`] and on plain sets; returns both.
    fn run(ops: &[Op]) -> (NodeInfo, BTreeMap<u64, EntryId>, BTreeSet<u64>) {
        let mut info = NodeInfo::default();
        let mut present = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for op in ops {
            match *op {
                Op::Seen(t) => {
                    let id = (t % 100_003) as EntryId * 7;
                    info.saw_tick(t);
                    info.seen(t, id);
                    present.insert(t, id);
                    seen.insert(t);
                }
                Op::Supersede(t) => {
                    info.saw_tick(t);
                    info.supersede(t);
                    present.remove(&t);
                    seen.insert(t);
                }
                Op::Know(a, b) => {
                    info.know(&(a..b).collect());
                    seen.extend(a..b);
                }
            }
        }
        (info, present, seen)
    }

    #[test]
    fn ticks_beyond_32_bits_map_to_their_entries_too() {
        let mut info = NodeInfo::default();
        let big = (1u64 << 32) + 5;
        for (t, id) in [(5, 1), (big, 2), (u32::MAX as u64, 3)] {
            info.saw_tick(t);
            info.seen(t, id);
        }
        assert_eq!(info.entry_id(5), Some(1));
        assert_eq!(info.entry_id(big), Some(2));
        assert_eq!(info.entry_id(u32::MAX as u64), Some(3));
        assert_eq!(info.present_ticks(), vec![5, u32::MAX as u64, big]);
        info.supersede(big);
        assert_eq!(info.entry_id(big), None);
        assert!(info.is_superseded(big) && !info.is_superseded(5));
        assert_eq!(info.entries.len(), 2);
    }

    #[test]
    fn keys_written_once_supersede_nothing() {
        let mut info = NodeInfo::default();
        for t in 1..=10_000u64 {
            info.saw_tick(t);
            info.seen(t, t as EntryId);
        }
        assert!(info.superseded().is_empty());
        assert!(info.knows(5_000) && !info.is_superseded(5_000));
        info.supersede(5_000);
        assert_eq!(
            info.superseded().ranges().collect::<Vec<_>>(),
            vec![(5_000, 5_001)]
        );
        assert!(info.is_superseded(5_000) && info.knows(5_000));
        assert!(!info.knows(10_001) && !info.is_superseded(10_001));
    }

    #[test]
    fn interleaved_present_and_superseded_ticks() {
        // Two writers on shared keys: every other tick superseded.
        let mut info = NodeInfo::default();
        for t in 1..=20_000u64 {
            info.saw_tick(t);
            if t % 2 == 0 {
                info.supersede(t);
            } else {
                info.seen(t, t as EntryId);
            }
        }
        let sup = info.superseded();
        assert_eq!(sup.count(), 10_000);
        assert!(sup.iter().all(|t| t % 2 == 0));
        assert_eq!(info.present().count(), 10_000);
        assert!(info.present().iter().all(|t| t % 2 == 1));
        assert!(info.missing().is_empty());
    }

    /// Where a tick map's test ticks come from: one node's nearly
    /// consecutive ticks, a second run of them beyond 2³², and ticks far
    /// apart (outside any window the map may span).
    fn map_tick() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..6_000,
            2 => (1u64 << 32) - 3_000..(1u64 << 32) + 3_000,
            1 => (0u64..64).prop_map(|k| k << 24 | 5),
        ]
    }

    /// Checks every question a tick map answers against an ordered map.
    fn same_as_model(m: &TickMap, model: &BTreeMap<u64, EntryId>) -> Result<(), TestCaseError> {
        prop_assert_eq!(m.len(), model.len());
        let mut all: Vec<(u64, EntryId)> = m.iter().collect();
        all.sort_unstable();
        prop_assert_eq!(
            all,
            model.iter().map(|(&t, &id)| (t, id)).collect::<Vec<_>>()
        );
        prop_assert!(m
            .held()
            .runs()
            .flat_map(|(a, b)| a..b)
            .eq(model.keys().copied()));
        for (&t, &id) in model {
            prop_assert_eq!(m.get(t), Some(id));
            prop_assert_eq!(m.get(t + 1), model.get(&(t + 1)).copied());
        }
        Ok(())
    }

    #[test]
    fn a_node_writing_and_rewriting_keys_keeps_a_small_window() {
        // 100 keys rewritten round robin for 200 000 ticks: the present
        // ticks are the newest 100, whatever the tick.
        let mut m = TickMap::default();
        for t in 1..=200_000u64 {
            m.insert(t, (t % 100) as EntryId);
            if t > 100 {
                assert!(m.remove(t - 100));
            }
        }
        assert_eq!(m.len(), 100);
        assert!(m.slots.len() <= 2, "{m:?}");
        assert!(m.sparse.is_empty() && m.far.is_empty());
        assert_eq!(m.get(199_950), Some(50));
        assert_eq!(m.get(199_900), None);
    }

    #[test]
    fn ticks_only_added_cost_at_most_a_page_per_64_whatever_their_stride() {
        // As a snapshot load adds them: no removal ever demotes a page.
        for stride in [1u64, 7, 16, 64, 100, 256, 1_000, 1_024, 5_000] {
            let mut m = TickMap::default();
            let n = 200_000u64;
            for k in 0..n {
                m.insert(1 + k * stride, k as EntryId);
            }
            let pages = m
                .slots
                .iter()
                .filter(|s| matches!(s, Slot::Dense(_)))
                .count();
            assert!(
                pages <= SPAN_SLACK + n as usize / TICKS_PER_SLOT,
                "stride {stride}: {pages} pages for {n} ticks"
            );
            assert_eq!(m.len(), n as usize);
            for k in (0..n).step_by(997) {
                assert_eq!(m.get(1 + k * stride), Some(k as EntryId), "stride {stride}");
            }
        }
    }

    #[test]
    fn pages_left_with_few_ticks_move_them_to_the_sparse_map_and_back() {
        let mut m = TickMap::default();
        let mut model = BTreeMap::new();
        for t in 0..(4 * PAGE as u64) {
            m.insert(t, t as EntryId);
            model.insert(t, t as EntryId);
        }
        // All but every 100th tick of the first three pages rewritten.
        for t in 0..(3 * PAGE as u64) {
            if t % 100 != 0 {
                assert!(m.remove(t));
                model.remove(&t);
            }
        }
        assert!(matches!(m.slots[0], Slot::Sparse(11)), "{m:?}");
        assert_eq!(m.sparse.len(), 31);
        same_as_model(&m, &model).unwrap();
        // Filled again: back into a page.
        for t in 0..(PAGE as u64) {
            m.insert(t, 7);
            model.insert(t, 7);
        }
        assert!(matches!(m.slots[0], Slot::Dense(_)));
        same_as_model(&m, &model).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x71c4),
            ..ProptestConfig::default()
        })]

        #[test]
        fn tick_map_matches_an_ordered_map(
            ops in proptest::collection::vec((0u8..3, map_tick(), 1u64..1_500, 0u32..1_000), 0..300)
        ) {
            let mut m = TickMap::default();
            let mut model = BTreeMap::new();
            for (kind, t, n, id) in ops {
                match kind {
                    // A run of ticks enters chains, as one node writes.
                    0 => for t in t..t + n {
                        m.insert(t, id);
                        model.insert(t, id);
                    },
                    // Most of a run leaves them (rewritten keys).
                    1 => for t in (t..t + n).filter(|t| t % 37 != 0) {
                        prop_assert_eq!(m.remove(t), model.remove(&t).is_some());
                    },
                    _ => {
                        m.insert(t, id);
                        model.insert(t, id);
                    }
                }
            }
            same_as_model(&m, &model)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7ac5),
            ..ProptestConfig::default()
        })]

        #[test]
        fn tick_sets_match_a_naive_model(ops in proptest::collection::vec(op(), 0..200)) {
            let (info, present, seen) = run(&ops);
            let superseded: BTreeSet<u64> =
                seen.iter().copied().filter(|t| !present.contains_key(t)).collect();
            prop_assert_eq!(info.superseded().iter().collect::<BTreeSet<_>>(), superseded.clone());
            prop_assert_eq!(
                info.present().iter().collect::<Vec<_>>(),
                present.keys().copied().collect::<Vec<_>>()
            );
            // Missing: what is not seen up to the top, counted by ranges
            // (the top may be beyond 2⁴⁰).
            let top = info.tick().unwrap_or(0);
            let mut want = RangeSet::new();
            want.insert_range(1, top + 1);
            want.subtract(&seen.iter().copied().collect());
            prop_assert_eq!(info.missing(), want);
            // Every tick the ops name, and the ones beside them.
            let near: BTreeSet<u64> = seen
                .iter()
                .flat_map(|&t| [t.saturating_sub(1), t, t + 1])
                .chain(0..330)
                .collect();
            for t in near {
                prop_assert_eq!(info.knows(t), seen.contains(&t));
                prop_assert_eq!(info.is_superseded(t), superseded.contains(&t));
                prop_assert_eq!(info.entry_id(t), present.get(&t).copied());
            }
        }
    }
}
