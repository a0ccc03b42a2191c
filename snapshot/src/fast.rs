//! The fast roads for decoding entry items, the bulk of every snapshot,
//! and node items, whose sets of ticks can be as long.
//!
//! The writer lays every entry item out the same way ([`crate::item`]):
//! a fixarray of 5 or 6 — tag `1`, the depth as an unsigned integer, the
//! path's rest as an array, the chain as nil or a flat array of node
//! *indices* and ticks, the tock, and the value if there is one. [`entry`]
//! reads exactly that layout with a [`Cursor`] over the bytes — path
//! elements and the value by the hand-written codec — instead of building
//! the whole item as a `Vec<Value>` through serde first, and gives up
//! (`None`) on anything else: chain nodes given by name, other integer
//! forms, values or path elements nesting deeper than [`FAST_DEPTH`]
//! levels, trailing bytes, and every error. The caller then hands the
//! bytes to the general decoder, which decides. On what the fast road
//! takes, it makes the general decoder's checks (depth within the previous
//! path, counters, chain) and gives the same fields.

use std::borrow::Cow;

use distkv_model::chain::MAX_COUNTER;
use distkv_model::cursor::Cursor;
use distkv_model::{serial, Chain, Link, NodeName, RangeSet};

use crate::item::{check_chain, EntryParts, NodeParts};

/// Deepest value (or path element) the fast road decodes: under it, the
/// codec and serde build the same [`Value`], far inside every limit.
const FAST_DEPTH: usize = 16;

/// The entry item `bytes` in the writer's layout, for a decoder that knows
/// the node items `names` and whose previous path has `prev_len` elements;
/// `None` for anything else (see the module docs).
#[cfg(test)]
pub(crate) fn entry(bytes: &[u8], names: &[NodeName], prev_len: usize) -> Option<EntryParts> {
    entry_as(bytes, names, prev_len, false)
}

/// [`entry`], its value, if `encoded`, left as the rest of the item's
/// bytes ([`EntryParts::encoded`]), not decoded nor checked.
pub(crate) fn entry_as(
    bytes: &[u8],
    names: &[NodeName],
    prev_len: usize,
    encoded: bool,
) -> Option<EntryParts> {
    let mut c = Cursor::new(bytes);
    let with_value = match c.byte()? {
        0x95 => false,
        0x96 => true,
        _ => return None,
    };
    c.expect(&[0x01])?;
    let depth = usize::try_from(c.uint()?).ok()?;
    if depth > prev_len {
        return None;
    }
    // Each element takes a byte at least: a length beyond the bytes left
    // is damage, for the general decoder to name.
    let n = c.array_len().filter(|&n| n <= c.remaining())?;
    let mut rest = Vec::with_capacity(n);
    for _ in 0..n {
        rest.push(c.value(FAST_DEPTH)?);
    }
    let chain = match c.nil() {
        true => None,
        false => Some(chain(&mut c, names)?),
    };
    let tock = c.uint().filter(|&t| t <= MAX_COUNTER)?;
    let at = bytes.len() - c.remaining();
    let (value, encoded) = match (with_value, encoded) {
        (false, _) => (None, None),
        (true, false) => (Some(c.value(FAST_DEPTH)?), None),
        (true, true) => {
            c.take(c.remaining()).filter(|v| !v.is_empty())?;
            (None, Some(at..bytes.len()))
        }
    };
    c.at_end().then_some(EntryParts {
        depth,
        rest,
        chain,
        tock,
        value,
        encoded,
    })
}

/// The node item `bytes` in the writer's layout — a fixarray of 5: tag
/// `0`, the name as a string, the tick as nil or a counter, the two tick
/// sets — decoded by serde into its fields (the sets built as they come)
/// rather than into values first; `None` for anything else, which the
/// general decoder then names.
pub(crate) fn node(bytes: &[u8]) -> Option<NodeParts> {
    // A name in any other form (bytes, a number) is the general
    // decoder's to refuse.
    let [0x95, 0x00, 0xa0..=0xbf | 0xd9..=0xdb, ..] = bytes else {
        return None;
    };
    let (_, name, tick, known, deleted): (u8, Cow<'_, str>, Option<u64>, RangeSet, RangeSet) =
        serial::from_slice(bytes).ok()?;
    if tick.is_some_and(|t| t > MAX_COUNTER) {
        return None;
    }
    Some(NodeParts {
        name: NodeName::from(&*name),
        tick,
        known,
        deleted,
    })
}

/// [`node`], its tick sets checked as `node` reads them (ticks, and
/// pairs of them) but not built: left empty. For a reader that needs a
/// node's name and tick only ([`crate::SnapshotReader::next_skimmed`]); a
/// node's superseded ticks can run to a million ranges.
pub(crate) fn node_skimmed(bytes: &[u8]) -> Option<NodeParts> {
    let mut c = Cursor::new(bytes);
    c.expect(&[0x95, 0x00])?;
    let name = std::str::from_utf8(c.str()?).ok()?;
    let tick = match c.nil() {
        true => None,
        false => Some(c.uint().filter(|&t| t <= MAX_COUNTER)?),
    };
    for _ in 0..2 {
        let n = c.array_len().filter(|&n| n <= c.remaining())?;
        for _ in 0..n {
            // A tick, or a pair of them.
            if matches!(c.peek()?, 0x90..=0x9f | 0xdc | 0xdd) {
                (c.array_len()? == 2).then_some(())?;
                c.uint()?;
            }
            c.uint()?;
        }
    }
    c.at_end().then(|| NodeParts {
        name: NodeName::from(name),
        tick,
        known: RangeSet::new(),
        deleted: RangeSet::new(),
    })
}

/// A flat chain of node indices and ticks.
fn chain(c: &mut Cursor<'_>, names: &[NodeName]) -> Option<Chain> {
    let n = c.array_len().filter(|&n| n <= c.remaining())?;
    if n == 0 || n % 2 != 0 {
        return None;
    }
    let mut links = Vec::with_capacity(n / 2);
    for _ in 0..n / 2 {
        let i = usize::try_from(c.uint()?).ok()?;
        let node = names.get(i)?.clone();
        let tick = c.uint().filter(|&t| t <= MAX_COUNTER)?;
        links.push(Link { node, tick });
    }
    check_chain(&links).ok()?;
    Chain::from_links(links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::Value;

    #[test]
    fn a_cut_or_lengthened_item_is_left_to_the_general_decoder() {
        let names: Vec<NodeName> = vec!["n1".into(), "n2".into()];
        // [1, 0, ["a", 7], [0, 5, 1, 9], 3, "v"]
        let bytes = [
            0x96, 0x01, 0x00, 0x92, 0xa1, b'a', 0x07, 0x94, 0x00, 0x05, 0x01, 0x09, 0x03, 0xa1,
            b'v',
        ];
        let e = entry(&bytes, &names, 0).expect("the writer's layout");
        assert_eq!(e.depth, 0);
        assert_eq!(e.rest, vec![Value::str("a"), Value::Int(7)]);
        assert_eq!(e.tock, 3);
        assert_eq!(e.value, Some(Value::str("v")));
        let links: Vec<(&str, u64)> = e
            .chain
            .iter()
            .flat_map(|c| c.links())
            .map(|l| (&*l.node, l.tick))
            .collect();
        assert_eq!(links, vec![("n1", 5), ("n2", 9)]);
        for n in 0..bytes.len() {
            assert!(entry(&bytes[..n], &names, 0).is_none(), "cut at {n}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0xc0);
        assert!(entry(&longer, &names, 0).is_none());
        // A node index without a node item, a depth beyond the previous
        // path, a node twice in the chain.
        assert!(entry(&bytes, &names[..1], 0).is_none());
        let mut deeper = bytes;
        deeper[2] = 0x01;
        assert!(entry(&deeper, &names, 0).is_none());
        assert!(entry(&deeper, &names, 1).is_some());
        let mut twice = bytes;
        twice[10] = 0x00;
        assert!(entry(&twice, &names, 0).is_none());
    }

    /// Encodes `entries` (after node items for n1, n2, n3) as the writer
    /// does: one item's bytes each.
    fn encoded(entries: &[crate::EntryRecord]) -> Vec<Vec<u8>> {
        let mut enc = crate::item::Encoder::default();
        let mut out = Vec::new();
        let empty = distkv_model::RangeSet::new();
        for n in ["n1", "n2", "n3"] {
            let mut b = Vec::new();
            enc.node(&mut b, n, Some(1), &empty, &empty)
                .expect("a node item");
            out.push(b);
        }
        for e in entries {
            let mut b = Vec::new();
            enc.entry(&mut b, &e.path, e.value.as_ref(), e.chain.as_ref(), e.tock)
                .expect("an entry item");
            out.push(b);
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5a4f),
            ..proptest::test_runner::Config::default()
        })]

        /// On every item, and on every item with a byte changed, the fast
        /// road takes only what the general decoder decodes, to the same
        /// entry.
        #[test]
        fn both_roads_decode_alike(
            entries in proptest::collection::vec(crate::tests::entry_strategy(), 1..12),
            which in proptest::prelude::any::<proptest::sample::Index>(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut items = encoded(&entries);
            let which = 3 + which.index(entries.len());
            let i = at.index(items[which].len());
            items[which][i] = byte;
            let mut general = crate::item::Decoder::default();
            for (n, bytes) in items.iter().enumerate() {
                let fast = entry(bytes, &general.names, general.prev.len());
                let want = fast.as_ref().map(|p| {
                    let mut path = general.prev[..p.depth].to_vec();
                    path.extend(p.rest.iter().cloned());
                    crate::Item::Entry(crate::EntryRecord {
                        path: distkv_model::Path::new(path),
                        value: p.value.clone(),
                        chain: p.chain.clone(),
                        tock: p.tock,
                    })
                });
                let got = general.decode_general_item(bytes);
                if let Some(want) = want {
                    match got {
                        // Compared by their debug forms: the same variants
                        // (`1` is not `1.0`), not merely equal values.
                        Ok(Some(item)) => proptest::prop_assert_eq!(
                            format!("{item:?}"),
                            format!("{want:?}"),
                            "item {}",
                            n
                        ),
                        other => proptest::prop_assert!(
                            false,
                            "item {}: fast {:?}, general {:?}",
                            n,
                            want,
                            other
                        ),
                    }
                } else if got.is_err() {
                    break;
                } else {
                    // Only names without node items, or the changed item,
                    // take the general road.
                    proptest::prop_assert!(n < 3 || n == which || entries[n - 3]
                        .chain
                        .iter()
                        .flat_map(|c| c.links())
                        .any(|l| &*l.node == "stranger"), "item {} went the general way", n);
                }
            }
        }
    }

    /// Node items: the fast road against the general one.
    mod nodes {
        use super::super::{node, node_skimmed};
        use distkv_model::chain::MAX_COUNTER;
        use distkv_model::{RangeSet, Value};
        use proptest::prelude::*;

        #[test]
        fn a_name_in_bytes_is_left_to_the_general_decoder() {
            let item = Value::Array(vec![
                Value::uint(0),
                Value::Bin(b"n1"[..].into()),
                Value::Nil,
                Value::Array(vec![]),
                Value::Array(vec![]),
            ]);
            let bytes = distkv_model::codec::to_vec(&item);
            assert!(node(&bytes).is_none());
            let general = crate::item::Decoder::default().decode_general_item(&bytes);
            assert_eq!(general.err().as_deref(), Some("node name is not a string"));
        }

        /// A node item's tick set in the wire form, as any writer may give
        /// it: ticks and pairs in any order, overlapping, empty, reversed.
        fn wire_ranges() -> impl Strategy<Value = Value> {
            let item = prop_oneof![
                (0u64..40).prop_map(Value::uint),
                (0u64..40, 0u64..40)
                    .prop_map(|(a, b)| Value::Array(vec![Value::uint(a), Value::uint(b)])),
            ];
            proptest::collection::vec(item, 0..8).prop_map(Value::Array)
        }

        proptest! {
            #![proptest_config(proptest::test_runner::Config {
                rng_seed: proptest::test_runner::RngSeed::Fixed(0x5a50),
                ..proptest::test_runner::Config::default()
            })]

            /// On every node item, and on every one with a byte changed, the
            /// fast road takes only what the general decoder decodes, to the
            /// same node; it takes every item the writer makes.
            #[test]
            fn both_roads_decode_node_items_alike(
                name in "[a-z]{0,4}",
                tick in proptest::option::of(prop_oneof![0..9u64, MAX_COUNTER - 1..=MAX_COUNTER + 1]),
                known in wire_ranges(),
                deleted in wire_ranges(),
                at in any::<proptest::sample::Index>(),
                byte in any::<u8>(),
            ) {
                let item = Value::Array(vec![
                    Value::uint(0),
                    Value::str(&name),
                    tick.map_or(Value::Nil, Value::uint),
                    known.clone(),
                    deleted.clone(),
                ]);
                let bytes = distkv_model::codec::to_vec(&item);
                let mut changed = bytes.clone();
                let i = at.index(changed.len());
                changed[i] = byte;
                for (n, b) in [bytes, changed].iter().enumerate() {
                    let fast = node(b);
                    let general = crate::item::Decoder::default().decode_general_item(b);
                    // Skimmed, only what the general decoder decodes, to
                    // the same name and tick; every item as made.
                    match (node_skimmed(b), &general) {
                        (Some(s), Ok(Some(crate::Item::Node(r)))) => {
                            prop_assert_eq!((&s.name, s.tick), (&r.name, r.tick));
                            prop_assert!(s.known.is_empty() && s.deleted.is_empty());
                        }
                        (Some(s), other) => prop_assert!(false, "skimmed {:?}, general {:?}", s, other),
                        (None, general) => prop_assert!(
                            n == 1 || general.is_err(),
                            "the item as made was not skimmed"
                        ),
                    }
                    match (fast, general) {
                        (Some(p), Ok(Some(crate::Item::Node(r)))) => {
                            prop_assert_eq!(
                                (p.name, p.tick, p.known, p.deleted),
                                (r.name, r.tick, r.known, r.deleted)
                            );
                        }
                        (Some(p), other) => prop_assert!(false, "fast {:?}, general {:?}", p, other),
                        (None, general) => prop_assert!(
                            n == 1 || general.is_err(),
                            "the item as made went the general way"
                        ),
                    }
                }
                // What the writer makes from the sets goes the fast way.
                if tick.is_none_or(|t| t <= MAX_COUNTER) {
                    let known = RangeSet::from_value(&known).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let deleted = RangeSet::from_value(&deleted).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let mut out = Vec::new();
                    crate::item::Encoder::default()
                        .node(&mut out, &name, tick, &known, &deleted)
                        .map_err(TestCaseError::fail)?;
                    prop_assert!(node(&out).is_some());
                }
            }
        }
    }
}
