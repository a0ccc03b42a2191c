//! Sets of ticks as sorted, merged half-open ranges.
//!
//! [`RangeSet`] keeps disjoint, non-adjacent `[start, end)` ranges in a
//! B-tree keyed by start, so adding the next tick of a node extends the last
//! range in O(log n). [`NodeSet`] maps node names to range sets.
//!
//! Costs, for a set of n ranges (not ticks) and another of m: one tick or
//! range is looked up, added or removed in O(log n) however fragmented the
//! set is (concurrent writers interleave ticks, so sets with many small
//! ranges are normal). Operations on two sets pick the cheaper of two
//! strategies: the smaller set's ranges one by one against the larger
//! (O(m log n)), or one merge pass over both (O(n + m)); so a bulk operation
//! never costs more than a merge, and a small one costs a few look-ups.
//!
//! Wire form (DistKV's `RangeSet.__getstate__`): an ascending array whose
//! items are a single tick `t` or a pair `[a, b]` meaning `a ≤ t < b`; e.g.
//! {1,2,3,5,7,8} is `[[1,4],5,[7,9]]`. Decoding accepts unsorted and
//! overlapping input and merges it.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::Bound::Excluded;

use crate::chain::NodeName;
use crate::value::Value;

/// A set of ticks.
#[derive(Clone, Default, PartialEq, Eq, Hash, Debug)]
pub struct RangeSet {
    /// start → end (exclusive); disjoint and non-adjacent.
    r: BTreeMap<u64, u64>,
}

/// A range set that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid range set: {0}")]
pub struct RangeError(pub &'static str);

impl RangeSet {
    /// The empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.r.is_empty()
    }

    /// Number of ticks in the set.
    pub fn count(&self) -> u64 {
        self.r.iter().map(|(a, b)| b - a).sum()
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.r.iter().map(|(&a, &b)| (a, b))
    }

    /// The ticks, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges().flat_map(|(a, b)| a..b)
    }

    /// Whether `t` is in the set.
    pub fn contains(&self, t: u64) -> bool {
        self.r.range(..=t).next_back().is_some_and(|(_, &e)| t < e)
    }

    /// Adds one tick.
    pub fn insert(&mut self, t: u64) {
        self.insert_range(t, t.saturating_add(1));
    }

    /// Adds `[a, b)`.
    pub fn insert_range(&mut self, mut a: u64, mut b: u64) {
        if a >= b {
            return;
        }
        // Fast path: appending at (or after) the end, the common case.
        match self.r.last_entry() {
            None => {
                self.r.insert(a, b);
                return;
            }
            Some(mut last) if a >= *last.get() => {
                if a == *last.get() {
                    *last.get_mut() = b;
                } else {
                    self.r.insert(a, b);
                }
                return;
            }
            Some(_) => {}
        }
        // Merge with a range starting at or before `a` that reaches `a`.
        if let Some((&s, &e)) = self.r.range(..=a).next_back() {
            if e >= a {
                if e >= b {
                    return;
                }
                a = s;
                self.r.remove(&s);
            }
        }
        // Swallow ranges starting within [a, b].
        while let Some((&s, &e)) = self.r.range(a..=b).next() {
            self.r.remove(&s);
            b = b.max(e);
        }
        self.r.insert(a, b);
    }

    /// Removes one tick.
    pub fn remove(&mut self, t: u64) {
        self.remove_range(t, t.saturating_add(1));
    }

    /// Removes `[a, b)`.
    pub fn remove_range(&mut self, a: u64, b: u64) {
        // Nothing to do for an empty range or one above every tick we hold
        // (the common case: a new tick is higher than all older ones).
        if a >= b || self.r.last_key_value().is_none_or(|(_, &e)| a >= e) {
            return;
        }
        if let Some((&s, &e)) = self.r.range(..a).next_back() {
            if e > a {
                self.r.insert(s, a);
                if e > b {
                    self.r.insert(b, e);
                    return;
                }
            }
        }
        while let Some((&s, &e)) = self.r.range(a..b).next() {
            self.r.remove(&s);
            if e > b {
                self.r.insert(b, e);
                break;
            }
        }
    }

    /// Adds every tick of `other`: O(min(m log n, n + m)).
    pub fn union_with(&mut self, other: &RangeSet) {
        let (Some((&first, _)), Some((_, &last))) =
            (other.r.first_key_value(), other.r.last_key_value())
        else {
            return;
        };
        if self.is_empty() {
            self.clone_from(other);
            return;
        }
        // Within one range of ours (a node's `known` ticks against the
        // few long ranges it has seen): nothing to add, O(log n).
        if self
            .r
            .range(..=first)
            .next_back()
            .is_some_and(|(_, &e)| last <= e)
        {
            return;
        }
        if one_by_one(other.r.len(), self.r.len()) {
            for (a, b) in other.ranges() {
                self.insert_range(a, b);
            }
        } else {
            *self = merge_union(self.ranges(), other.ranges());
        }
    }

    /// Removes every tick of `other`: O(min(m log n, n + m)).
    pub fn subtract(&mut self, other: &RangeSet) {
        if one_by_one(other.r.len(), self.r.len()) {
            for (a, b) in other.ranges() {
                self.remove_range(a, b);
            }
        } else {
            *self = self.difference(other);
        }
    }

    /// The ticks in both sets: the smaller set's ranges looked up in the
    /// larger one, O(min(n, m) · log max(n, m) + output).
    pub fn intersection(&self, other: &RangeSet) -> RangeSet {
        let (small, large) = if self.r.len() <= other.r.len() {
            (self, other)
        } else {
            (other, self)
        };
        let mut out = Builder::default();
        for (a, b) in small.ranges() {
            for (s, e) in large.within(a, b) {
                out.push(s, e);
            }
        }
        out.finish()
    }

    /// The ticks of `self` not in `other`: O(n log m + output) when `self`
    /// is the smaller, else one merge pass, O(n + m).
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        if one_by_one(self.r.len(), other.r.len()) {
            difference_by_lookup(self, other)
        } else {
            merge_difference(self.ranges(), other.ranges())
        }
    }

    /// The ticks of `self` not in the `[a, b)` ranges of `other`, which
    /// come ascending and disjoint: one pass over both, O(n + k), with no
    /// set made of `other`.
    pub fn difference_ascending(&self, other: impl IntoIterator<Item = (u64, u64)>) -> RangeSet {
        merge_difference(self.ranges(), other.into_iter())
    }

    /// The parts of this set's ranges within `[a, b)`, ascending;
    /// O(log n) to the first.
    fn within(&self, a: u64, b: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        // The range starting at or before `a` may reach into [a, b).
        let first = self
            .r
            .range(..=a)
            .next_back()
            .filter(|(_, &e)| e > a)
            .map(|(_, &e)| (a, e.min(b)));
        // Empty or reversed bounds would make `range` panic.
        let rest = (a < b).then(|| self.r.range((Excluded(a), Excluded(b))));
        first.into_iter().chain(
            rest.into_iter()
                .flatten()
                .map(move |(&s, &e)| (s, e.min(b))),
        )
    }

    /// Wire form.
    pub fn to_value(&self) -> Value {
        Value::Array(
            self.ranges()
                .map(|(a, b)| {
                    if b == a + 1 {
                        Value::uint(a)
                    } else {
                        Value::Array(vec![Value::uint(a), Value::uint(b)])
                    }
                })
                .collect(),
        )
    }

    /// Decodes the wire form.
    pub fn from_value(v: &Value) -> Result<RangeSet, RangeError> {
        let items = v.as_array().ok_or(RangeError("not an array"))?;
        let ranges = items.iter().map(|it| match it {
            Value::Array(p) if p.len() == 2 => {
                let a = p[0]
                    .as_u64()
                    .ok_or(RangeError("range start is not a tick"))?;
                let b = p[1].as_u64().ok_or(RangeError("range end is not a tick"))?;
                Ok((a, b))
            }
            _ => {
                let t = it
                    .as_u64()
                    .ok_or(RangeError("item is not a tick or pair"))?;
                // `insert` skips the largest tick: not representable.
                Ok((t, t.saturating_add(1)))
            }
        });
        ranges
            .collect::<Result<Vec<_>, _>>()
            .map(RangeSet::from_ranges)
    }
}

/// For people: `1-5, 7` (inclusive ranges), `-` when empty.
impl std::fmt::Display for RangeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, (a, b)) in self.ranges().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if b == a + 1 {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{}", b - 1)?;
            }
        }
        Ok(())
    }
}

impl FromIterator<u64> for RangeSet {
    /// Ascending ticks (duplicates allowed) are collected in one pass,
    /// O(k); ticks out of order are then added one by one, O(log n) each.
    fn from_iter<I: IntoIterator<Item = u64>>(it: I) -> RangeSet {
        // `u64::MAX` is not representable in a half-open range; `insert`
        // skips it too.
        RangeSet::from_ranges(it.into_iter().filter_map(|t| Some((t, t.checked_add(1)?))))
    }
}

impl RangeSet {
    /// Collects `[a, b)` ranges: ascending ones (the wire form's order;
    /// overlapping and adjacent ones allowed) in one pass and the B-tree
    /// built in bulk, O(k); ranges out of order are then added one by one,
    /// O(log n) each. Empty ranges are skipped.
    pub fn from_ranges<I: IntoIterator<Item = (u64, u64)>>(it: I) -> RangeSet {
        let it = it.into_iter();
        RangeSet::from_ranges_sized(it.size_hint().0, it)
    }

    /// [`RangeSet::from_ranges`] with room for `capacity` ranges made
    /// first.
    pub(crate) fn from_ranges_sized(
        capacity: usize,
        it: impl Iterator<Item = (u64, u64)>,
    ) -> RangeSet {
        let mut sorted = Builder(Vec::with_capacity(capacity));
        let mut rest = Vec::new();
        for (a, b) in it {
            match sorted.0.last() {
                Some(&(s, _)) if a < s => rest.push((a, b)),
                _ => sorted.push(a, b),
            }
        }
        let mut out = sorted.finish();
        for (a, b) in rest {
            out.insert_range(a, b);
        }
        out
    }
}

/// Whether applying `m` ranges one by one to a set of `n` ranges (about
/// m · log n steps) is cheaper than one merge pass over both (n + m).
fn one_by_one(m: usize, n: usize) -> bool {
    let log_n = (n | 1).ilog2() as usize + 1;
    m.saturating_mul(log_n) < n.saturating_add(m)
}

/// Builds a set from ranges pushed in ascending order of start, merging
/// overlapping and adjacent ones; the B-tree is built in one pass, O(n).
#[derive(Default)]
struct Builder(Vec<(u64, u64)>);

impl Builder {
    fn push(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        match self.0.last_mut() {
            Some((_, e)) if a <= *e => *e = (*e).max(b),
            _ => self.0.push((a, b)),
        }
    }

    fn finish(self) -> RangeSet {
        RangeSet {
            r: self.0.into_iter().collect(),
        }
    }
}

/// The union of two ascending range sequences, in one pass.
fn merge_union(
    a: impl Iterator<Item = (u64, u64)>,
    b: impl Iterator<Item = (u64, u64)>,
) -> RangeSet {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut out = Builder::default();
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        if let Some((s, e)) = next {
            out.push(s, e);
        }
    }
    out.finish()
}

/// The ticks of the ascending ranges `a` that are not in the ascending
/// ranges `b`, in one pass over both.
fn merge_difference(
    a: impl Iterator<Item = (u64, u64)>,
    b: impl Iterator<Item = (u64, u64)>,
) -> RangeSet {
    let mut b = b.peekable();
    let mut out = Builder::default();
    for (s, e) in a {
        let mut from = s;
        while let Some(&(bs, be)) = b.peek() {
            if be <= from {
                // Entirely before what is left of this range.
                b.next();
            } else if bs >= e {
                // Entirely after it: maybe within the next one.
                break;
            } else {
                out.push(from, bs);
                from = be;
                if be >= e {
                    // It may reach into the next range too: keep it.
                    break;
                }
                b.next();
            }
        }
        out.push(from, e);
    }
    out.finish()
}

/// `a − b` for a small `a`: `b`'s ranges within each of `a`'s looked up.
fn difference_by_lookup(a: &RangeSet, b: &RangeSet) -> RangeSet {
    let mut out = Builder::default();
    for (s, e) in a.ranges() {
        let mut from = s;
        for (bs, be) in b.within(s, e) {
            out.push(from, bs);
            from = be;
        }
        out.push(from, e);
    }
    out.finish()
}

/// Range sets by node name.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct NodeSet(pub BTreeMap<NodeName, RangeSet>);

impl NodeSet {
    /// Whether no node has any tick.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(RangeSet::is_empty)
    }

    /// Adds `tick` for `node`.
    pub fn insert(&mut self, node: &NodeName, tick: u64) {
        self.0.entry(node.clone()).or_default().insert(tick);
    }

    /// Adds `ticks` for `node`: the union with those it has (a name given
    /// twice, as a decoded map may give it, keeps both sets).
    pub fn add(&mut self, node: NodeName, ticks: RangeSet) {
        match self.0.entry(node) {
            Entry::Vacant(v) => {
                v.insert(ticks);
            }
            Entry::Occupied(mut o) => o.get_mut().union_with(&ticks),
        }
    }

    /// Wire form: `{name: ranges}`, nodes with empty sets left out.
    pub fn to_value(&self) -> Value {
        Value::Map(
            self.0
                .iter()
                .filter(|(_, r)| !r.is_empty())
                .map(|(n, r)| (Value::Str(n.clone()), r.to_value()))
                .collect(),
        )
    }

    /// Decodes the wire form.
    pub fn from_value(v: &Value) -> Result<NodeSet, RangeError> {
        let m = v.as_map().ok_or(RangeError("node set is not a map"))?;
        let mut out = NodeSet::default();
        for (k, r) in m {
            let name = k.as_str().ok_or(RangeError("node name is not a string"))?;
            out.add(NodeName::from(name), RangeSet::from_value(r)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A node given twice keeps the union of its sets, by every decoder.
    #[test]
    fn a_node_named_twice_keeps_both_sets() {
        let mut s = NodeSet::default();
        s.add("n1".into(), [1, 2].into_iter().collect());
        s.add("n2".into(), [9].into_iter().collect());
        s.add("n1".into(), [2, 5].into_iter().collect());
        let want: RangeSet = [1, 2, 5].into_iter().collect();
        assert_eq!(s.0.get("n1"), Some(&want));
        let twice = Value::Map(vec![
            (Value::str("n1"), RangeSet::from_iter([1, 2]).to_value()),
            (Value::str("n2"), Value::Array(vec![Value::Int(9)])),
            (Value::str("n1"), RangeSet::from_iter([2, 5]).to_value()),
        ]);
        assert_eq!(NodeSet::from_value(&twice), Ok(s.clone()));
        let bytes = crate::codec::to_vec(&twice);
        assert_eq!(crate::serial::from_slice::<NodeSet>(&bytes).ok(), Some(s));
    }

    #[test]
    fn wire_form_matches_distkv_example() {
        let r: RangeSet = [1, 2, 3, 5, 7, 8].into_iter().collect();
        let v = r.to_value();
        let want = Value::Array(vec![
            Value::Array(vec![Value::Int(1), Value::Int(4)]),
            Value::Int(5),
            Value::Array(vec![Value::Int(7), Value::Int(9)]),
        ]);
        assert_eq!(v, want);
        assert_eq!(RangeSet::from_value(&v).unwrap(), r);
    }

    #[test]
    fn text_form_is_for_people() {
        let r: RangeSet = [1, 2, 3, 5, 7, 8].into_iter().collect();
        assert_eq!(r.to_string(), "1-3, 5, 7-8");
        assert_eq!(RangeSet::new().to_string(), "-");
    }

    #[test]
    fn removal_splits_ranges() {
        let mut r: RangeSet = (1..10).collect();
        r.remove(5);
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![(1, 5), (6, 10)]);
        r.remove_range(0, 3);
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![(3, 5), (6, 10)]);
    }

    fn ticks(r: &RangeSet) -> BTreeSet<u64> {
        r.iter().collect()
    }

    /// Disjoint, non-adjacent, non-empty ranges: the one form of each set.
    fn assert_canonical(r: &RangeSet) {
        let rs: Vec<_> = r.ranges().collect();
        assert!(rs.iter().all(|(a, b)| a < b), "empty range in {rs:?}");
        assert!(rs.windows(2).all(|w| w[0].1 < w[1].0), "not merged: {rs:?}");
    }

    /// Every strategy of every two-set operation, checked against the
    /// naive model.
    fn check_pair(x: &RangeSet, y: &RangeSet) {
        let (sx, sy) = (ticks(x), ticks(y));
        let union: BTreeSet<u64> = sx.union(&sy).copied().collect();
        let diff: BTreeSet<u64> = sx.difference(&sy).copied().collect();
        let both: BTreeSet<u64> = sx.intersection(&sy).copied().collect();

        let mut one = x.clone();
        for (a, b) in y.ranges() {
            one.insert_range(a, b);
        }
        let mut bulk = x.clone();
        bulk.union_with(y);
        for u in [&one, &bulk, &merge_union(x.ranges(), y.ranges())] {
            assert_canonical(u);
            assert_eq!(ticks(u), union);
        }

        let mut one = x.clone();
        for (a, b) in y.ranges() {
            one.remove_range(a, b);
        }
        let mut bulk = x.clone();
        bulk.subtract(y);
        for d in [
            &one,
            &bulk,
            &x.difference(y),
            &merge_difference(x.ranges(), y.ranges()),
            &difference_by_lookup(x, y),
            &x.difference_ascending(y.iter().map(|t| (t, t + 1))),
        ] {
            assert_canonical(d);
            assert_eq!(ticks(d), diff);
        }

        let i = x.intersection(y);
        assert_canonical(&i);
        assert_eq!(ticks(&i), both);
    }

    #[test]
    fn interleaved_sets_combine_like_sets() {
        // Two writers' ticks, interleaved: every range a single tick.
        let evens: RangeSet = (0..20_000u64).map(|t| 2 * t).collect();
        let threes: RangeSet = (0..13_000u64).map(|t| 3 * t).collect();
        let block: RangeSet = (5_000..25_000u64).collect();
        let few: RangeSet = [7u64, 100, 30_001].into_iter().collect();
        assert_eq!(evens.ranges().count(), 20_000);
        for (x, y) in [
            (&evens, &threes),
            (&evens, &block),
            (&block, &evens),
            (&evens, &few),
            (&few, &evens),
            (&evens, &RangeSet::new()),
            (&RangeSet::new(), &evens),
            // Within one range of the other (a node's seen ticks and a
            // state record's known ones), and reaching just beyond it.
            (&block, &(6_000..7_000u64).filter(|t| t % 3 != 0).collect()),
            (&block, &[5_000u64, 24_999].into_iter().collect()),
            (&block, &[5_000u64, 25_000].into_iter().collect()),
            (&block, &[4_999u64, 24_999].into_iter().collect()),
        ] {
            check_pair(x, y);
        }
    }

    #[test]
    fn strategy_follows_the_sizes() {
        assert!(one_by_one(1, 1_000_000));
        assert!(one_by_one(100, 1_000_000));
        assert!(!one_by_one(1_000_000, 1_000_000));
        assert!(!one_by_one(100_000, 1_000_000));
        assert!(!one_by_one(5, 0));
    }

    #[test]
    fn collecting_handles_any_order_and_the_largest_tick() {
        let r: RangeSet = [5, 6, 6, 7, 3, 9, 1, 2, u64::MAX, 8].into_iter().collect();
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![(1, 4), (5, 10)]);
        let mut one = RangeSet::new();
        one.insert(u64::MAX);
        assert!(one.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x4a6e_5e75),
            ..ProptestConfig::default()
        })]

        #[test]
        fn two_set_operations_match_a_naive_model(
            x in proptest::collection::vec((0u64..400, 1u64..6), 0..120),
            y in proptest::collection::vec((0u64..400, 1u64..6), 0..120),
            y_small in any::<bool>(),
        ) {
            let build = |v: &[(u64, u64)]| -> RangeSet {
                let mut r = RangeSet::new();
                for &(a, len) in v {
                    r.insert_range(a, a + len);
                }
                r
            };
            let x = build(&x);
            // Sometimes a set of a few ranges, for the one-by-one paths.
            let y = build(if y_small { &y[..y.len().min(3)] } else { &y });
            check_pair(&x, &y);
            check_pair(&y, &x);
        }

        #[test]
        fn collecting_ranges_matches_a_naive_model(
            r in proptest::collection::vec((0u64..300, 0u64..8), 0..200),
            sort in any::<bool>(),
        ) {
            let mut r: Vec<(u64, u64)> = r.into_iter().map(|(a, n)| (a, a + n)).collect();
            if sort {
                r.sort_unstable();
            }
            let got = RangeSet::from_ranges(r.iter().copied());
            assert_canonical(&got);
            let want: BTreeSet<u64> = r.iter().flat_map(|&(a, b)| a..b).collect();
            prop_assert_eq!(ticks(&got), want);
            prop_assert_eq!(RangeSet::from_value(&got.to_value()).unwrap(), got);
        }

        #[test]
        fn collecting_matches_a_naive_model(t in proptest::collection::vec(0u64..300, 0..300),
                                            sort in any::<bool>()) {
            let mut t = t;
            if sort {
                t.sort_unstable();
            }
            let r: RangeSet = t.iter().copied().collect();
            assert_canonical(&r);
            prop_assert_eq!(ticks(&r), t.into_iter().collect::<BTreeSet<_>>());
        }

        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..8), 0..64),
                              other in proptest::collection::btree_set(0u64..64, 0..32)) {
            let mut r = RangeSet::new();
            let mut s = BTreeSet::new();
            for (add, a, len) in ops {
                if add { r.insert_range(a, a + len); s.extend(a..a + len); }
                else { r.remove_range(a, a + len); for t in a..a + len { s.remove(&t); } }
            }
            prop_assert_eq!(r.iter().collect::<BTreeSet<_>>(), s.clone());
            // Canonical: disjoint and non-adjacent.
            let rs: Vec<_> = r.ranges().collect();
            for w in rs.windows(2) { prop_assert!(w[0].1 < w[1].0); }
            let o: RangeSet = other.iter().copied().collect();
            prop_assert_eq!(r.intersection(&o).iter().collect::<BTreeSet<_>>(),
                            s.intersection(&other).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(r.difference(&o).iter().collect::<BTreeSet<_>>(),
                            s.difference(&other).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(RangeSet::from_value(&r.to_value()).unwrap(), r.clone());
            for t in 0..72 { prop_assert_eq!(r.contains(t), s.contains(&t)); }
        }
    }
}
