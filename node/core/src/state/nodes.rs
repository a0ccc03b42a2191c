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
//! [`NodeInfo::missing`]) are built in one sort and merge pass,
//! O(n log n), for reports, state records and snapshots.

use std::collections::HashMap;

use distkv_model::RangeSet;

use super::EntryId;

/// What this node knows about one server's ticks.
#[derive(Debug, Default, Clone)]
pub struct NodeInfo {
    /// Highest tick seen; `None` = nothing yet.
    pub(crate) tick: Option<u64>,
    /// Present ticks and the entry each one is in. Hash maps: the hot
    /// path inserts and removes single ticks; ordered views (reports) sort.
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

    /// Tick `t` left every chain.
    pub(crate) fn supersede(&mut self, t: u64) {
        self.entries.remove(t);
        self.seen.insert(t);
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
        // Sorted first, the ticks are collected in one pass.
        self.present_ticks().into_iter().collect()
    }

    /// Present ticks, ascending.
    pub fn present_ticks(&self) -> Vec<u64> {
        let mut t: Vec<u64> = self.entries.ticks().collect();
        t.sort_unstable();
        t
    }

    /// Ticks known to be gone from every chain: seen but not present.
    pub fn superseded(&self) -> RangeSet {
        // Every present tick is seen: as many of each, nothing is superseded
        // (the common case of keys written once, without sorting them).
        if self.seen.count() == self.entries.len() as u64 {
            return RangeSet::new();
        }
        self.seen.difference(&self.present())
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

/// Present ticks → the entry holding each, in 9 bytes a tick: a tick
/// below 2³² (all a node reaches in practice) is stored as a `u32` pair,
/// larger ones in a second map of their own.
#[derive(Debug, Default, Clone)]
pub(crate) struct TickMap {
    small: HashMap<u32, EntryId, foldhash::fast::RandomState>,
    large: HashMap<u64, EntryId, foldhash::fast::RandomState>,
}

impl TickMap {
    pub(crate) fn insert(&mut self, t: u64, id: EntryId) {
        match u32::try_from(t) {
            Ok(s) => self.small.insert(s, id),
            Err(_) => self.large.insert(t, id),
        };
    }

    pub(crate) fn remove(&mut self, t: u64) {
        match u32::try_from(t) {
            Ok(s) => self.small.remove(&s),
            Err(_) => self.large.remove(&t),
        };
    }

    pub(crate) fn get(&self, t: u64) -> Option<EntryId> {
        match u32::try_from(t) {
            Ok(s) => self.small.get(&s),
            Err(_) => self.large.get(&t),
        }
        .copied()
    }

    pub(crate) fn contains(&self, t: u64) -> bool {
        self.get(t).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.small.len() + self.large.len()
    }

    /// The ticks, in no order.
    pub(crate) fn ticks(&self) -> impl Iterator<Item = u64> + '_ {
        let small = self.small.keys().map(|&t| u64::from(t));
        small.chain(self.large.keys().copied())
    }

    /// The entries, in no order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = EntryId> + '_ {
        self.small.values().chain(self.large.values()).copied()
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

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..300).prop_map(Op::Seen),
            (1u64..300).prop_map(Op::Supersede),
            (1u64..300, 1u64..20).prop_map(|(a, n)| Op::Know(a, a + n)),
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
                    let id = t as EntryId * 7;
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
            let top = info.tick().unwrap_or(0);
            let missing: BTreeSet<u64> = (1..=top).filter(|t| !seen.contains(t)).collect();
            prop_assert_eq!(info.missing().iter().collect::<BTreeSet<_>>(), missing);
            for t in 0..330 {
                prop_assert_eq!(info.knows(t), seen.contains(&t));
                prop_assert_eq!(info.is_superseded(t), superseded.contains(&t));
                prop_assert_eq!(info.entry_id(t), present.get(&t).copied());
            }
        }
    }
}
