//! Sets of ticks as sorted, merged half-open ranges.
//!
//! [`RangeSet`] keeps disjoint, non-adjacent `[start, end)` ranges in a
//! B-tree keyed by start, so adding the next tick of a node extends the last
//! range in O(log n). [`NodeSet`] maps node names to range sets.
//!
//! Wire form (DistKV's `RangeSet.__getstate__`): an ascending array whose
//! items are a single tick `t` or a pair `[a, b]` meaning `a ≤ t < b`; e.g.
//! {1,2,3,5,7,8} is `[[1,4],5,[7,9]]`. Decoding accepts unsorted and
//! overlapping input and merges it.

use std::collections::BTreeMap;

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

    /// Adds every tick of `other`.
    pub fn union_with(&mut self, other: &RangeSet) {
        for (a, b) in other.ranges() {
            self.insert_range(a, b);
        }
    }

    /// Removes every tick of `other`.
    pub fn subtract(&mut self, other: &RangeSet) {
        for (a, b) in other.ranges() {
            self.remove_range(a, b);
        }
    }

    /// The ticks in both sets.
    pub fn intersection(&self, other: &RangeSet) -> RangeSet {
        let mut out = RangeSet::new();
        for (a, b) in self.ranges() {
            for (s, e) in other.r.range(..b).rev() {
                if *e <= a {
                    break;
                }
                out.insert_range(a.max(*s), b.min(*e));
            }
        }
        out
    }

    /// The ticks of `self` not in `other`.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = self.clone();
        out.subtract(other);
        out
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
        let mut out = RangeSet::new();
        for it in items {
            match it {
                Value::Array(p) if p.len() == 2 => {
                    let a = p[0]
                        .as_u64()
                        .ok_or(RangeError("range start is not a tick"))?;
                    let b = p[1].as_u64().ok_or(RangeError("range end is not a tick"))?;
                    out.insert_range(a, b);
                }
                _ => out.insert(
                    it.as_u64()
                        .ok_or(RangeError("item is not a tick or pair"))?,
                ),
            }
        }
        Ok(out)
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
    fn from_iter<I: IntoIterator<Item = u64>>(it: I) -> RangeSet {
        let mut r = RangeSet::new();
        for t in it {
            r.insert(t);
        }
        r
    }
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
            out.0
                .entry(NodeName::from(name))
                .or_default()
                .union_with(&RangeSet::from_value(r)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use std::collections::BTreeSet;

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

    proptest! {
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
