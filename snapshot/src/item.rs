//! Items: the records inside blocks, and their msgpack encoding (serde,
//! written and read by rmp-serde through [`distkv_model::serial`]; entry
//! items, nearly all of a snapshot, are written directly with the same
//! bytes, and read by a fast road for the common shapes).
//!
//! A snapshot holds, in this order: one [`NodeRecord`] per known node, then
//! one [`EntryRecord`] per tree entry that has a value or a chain (depth
//! first, parents before children, as the writer's caller walks the tree),
//! then one `End` item carrying the number of nodes and entries so a reader
//! can tell a complete snapshot from one cut at a block boundary.
//!
//! Each item is a msgpack array whose first element is a tag:
//!
//! * node `[0, name, tick | nil, known, deleted]`: `known` and `deleted` in
//!   DistKV's range-set wire form (`[[a, b], t, …]`, see
//!   [`distkv_model::ranges`]).
//! * entry `[1, depth, rest, chain | nil, tock]` for an entry without data
//!   (a tombstone, or a data-less node that still has a chain), and
//!   `[1, depth, rest, chain | nil, tock, value]` for one with a value (a
//!   nil value is `Some(Nil)`, distinct from no value).
//! * end `[2, nodes, entries]`.
//!
//! **Path shortening** (DistKV's save-file scheme): an entry's path is the
//! first `depth` elements of the previous entry's path followed by the
//! elements of the array `rest`; the first entry has `depth = 0`. Elements
//! are shared only when they are *identical* (same type and bits), not
//! merely equal in Python's sense, so `1`, `1.0` and `True` round-trip as
//! written.
//!
//! **Chains** are a flat array `[node, tick, node, tick, …]`, head first;
//! `node` is the index of a node item (in the order written) or, for a node
//! that has no node item, its name as a string. Referencing nodes by index
//! keeps a 1 M-entry snapshot from repeating the same names a million times
//! and lets the reader share one allocation per name.
//!
//! Invariants enforced on both sides: node items precede entries and have
//! unique names; ticks and tocks are at most [`MAX_COUNTER`]; a chain names
//! each node at most once; values and path elements nest at most
//! [`MAX_NESTING`] levels; an encoded item is at most
//! [`crate::MAX_ITEM_LEN`] bytes.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use distkv_model::chain::MAX_COUNTER;
use distkv_model::{codec, serial};
use distkv_model::{Chain, Link, NodeName, Path, RangeSet, Value};

use crate::block::MAX_ITEM_LEN;

pub use distkv_model::budget::MAX_NESTING;

const TAG_NODE: u64 = 0;
const TAG_ENTRY: u64 = 1;
const TAG_END: u64 = 2;

/// What a snapshot knows about one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRecord {
    /// The node's name.
    pub name: NodeName,
    /// The highest tick seen from the node (`None`: none yet).
    pub tick: Option<u64>,
    /// The node's superseded ticks (DistKV's `known`).
    pub known: RangeSet,
    /// The node's deleted ticks.
    pub deleted: RangeSet,
}

/// One tree entry.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryRecord {
    /// The full path.
    pub path: Path,
    /// The value; `None` for a tombstone or a data-less node.
    pub value: Option<Value>,
    /// The full chain (uncut), if the entry has one.
    pub chain: Option<Chain>,
    /// The entry's tock.
    pub tock: u64,
}

/// One record read from a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A node (all of them come before the first entry).
    Node(NodeRecord),
    /// A tree entry.
    Entry(EntryRecord),
}

/// One entry, borrowed from the reader that decoded it: its path is the
/// reader's ([`crate::SnapshotReader::next_ref`]), not a copy.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryRef<'a> {
    /// The full path.
    pub path: &'a [Value],
    /// The value; `None` for a tombstone or a data-less node, and for a
    /// value given as `encoded`.
    pub value: Option<Value>,
    /// The value's bytes as the file holds them, not decoded nor checked:
    /// only from [`crate::SnapshotReader::next_skimmed`], for an entry in
    /// the writer's layout.
    pub encoded: Option<&'a [u8]>,
    /// The full chain (uncut), if the entry has one.
    pub chain: Option<Chain>,
    /// The entry's tock.
    pub tock: u64,
}

/// One record read from a snapshot, an entry's path borrowed from the
/// reader.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemRef<'a> {
    /// A node (all of them come before the first entry).
    Node(NodeRecord),
    /// A tree entry.
    Entry(EntryRef<'a>),
}

impl ItemRef<'_> {
    /// The item with a path of its own. Of a skimmed item
    /// ([`crate::SnapshotReader::next_skimmed`]), a value given `encoded`
    /// is decoded (and left out if it does not decode, which `next_ref`
    /// would have reported); a node's tick sets stay empty.
    pub fn to_item(self) -> Item {
        match self {
            ItemRef::Node(n) => Item::Node(n),
            ItemRef::Entry(e) => Item::Entry(EntryRecord {
                path: Path::new(e.path.to_vec()),
                value: e.value.or_else(|| {
                    let limits = codec::Limits {
                        max_frame: usize::MAX,
                        max_depth: MAX_NESTING,
                        foreign_ext: true,
                    };
                    codec::decode_with(e.encoded?, limits).ok()
                }),
                chain: e.chain,
                tock: e.tock,
            }),
        }
    }
}

/// What one decoded item is.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A node.
    Node(NodeRecord),
    /// An entry, its path in [`Decoder::prev`], its value's bytes (if
    /// left encoded) at `encoded` in the item's.
    Entry {
        value: Option<Value>,
        encoded: Option<Range<usize>>,
        chain: Option<Chain>,
        tock: u64,
    },
    /// The `End` item, whose counts matched.
    End,
}

/// Encodes items, keeping the state path shortening and node references
/// need. A rejected item leaves the state unchanged.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    /// Node items by name; looked up for every link of every chain.
    nodes: NodeIndex,
    prev: Vec<Value>,
    entries: u64,
}

impl Encoder {
    /// Number of node items accepted.
    pub(crate) fn nodes(&self) -> u64 {
        self.nodes.len() as u64
    }

    /// Number of entry items accepted.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Encodes a node item into `out` (cleared first).
    pub(crate) fn node(
        &mut self,
        out: &mut Vec<u8>,
        name: &str,
        tick: Option<u64>,
        known: &RangeSet,
        deleted: &RangeSet,
    ) -> Result<(), String> {
        if self.entries > 0 {
            return Err(format!("node {name:?} written after the first entry"));
        }
        if self.nodes.contains_key(name) {
            return Err(format!("node {name:?} written twice"));
        }
        if let Some(t) = tick.filter(|&t| t > MAX_COUNTER) {
            return Err(format!("tick {t} of node {name:?} exceeds 2^62"));
        }
        out.clear();
        serial::encode(&(TAG_NODE, name, tick, known, deleted), out);
        check_len(out)?;
        let index = self.nodes.len() as u64;
        self.nodes.insert(NodeName::from(name), index);
        Ok(())
    }

    /// Encodes an entry item into `out` (cleared first).
    pub(crate) fn entry(
        &mut self,
        out: &mut Vec<u8>,
        path: &[Value],
        value: Option<&Value>,
        chain: Option<&Chain>,
        tock: u64,
    ) -> Result<(), String> {
        if tock > MAX_COUNTER {
            return Err(format!("tock {tock} exceeds 2^62"));
        }
        if let Some(c) = chain {
            check_chain(c.links())?;
        }
        if path.iter().any(|e| too_deep(e, MAX_NESTING)) {
            return Err(format!("a path element nests deeper than {MAX_NESTING}"));
        }
        if value.is_some_and(|v| too_deep(v, MAX_NESTING)) {
            return Err(format!("the value nests deeper than {MAX_NESTING}"));
        }
        let depth = path
            .iter()
            .zip(&self.prev)
            .take_while(|(a, b)| identical(a, b))
            .count();
        out.clear();
        write_entry(out, depth, &path[depth..], chain, &self.nodes, tock, value);
        check_len(out)?;
        self.prev.truncate(depth);
        self.prev.extend_from_slice(&path[depth..]);
        self.entries += 1;
        Ok(())
    }

    /// Encodes the `End` item into `out` (cleared first).
    pub(crate) fn end(&self, out: &mut Vec<u8>) {
        out.clear();
        serial::encode(&(TAG_END, self.nodes(), self.entries), out);
    }
}

/// The fields of an entry item, its path not yet completed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EntryParts {
    /// Elements shared with the previous entry's path.
    pub(crate) depth: usize,
    /// The path's elements after them.
    pub(crate) rest: Vec<Value>,
    /// The chain.
    pub(crate) chain: Option<Chain>,
    /// The tock.
    pub(crate) tock: u64,
    /// The value, if the entry has one and it is decoded.
    pub(crate) value: Option<Value>,
    /// Where the value's bytes are in the item's, if the entry has one and
    /// it is left encoded.
    pub(crate) encoded: Option<Range<usize>>,
}

/// The fields of a node item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeParts {
    pub(crate) name: NodeName,
    pub(crate) tick: Option<u64>,
    pub(crate) known: RangeSet,
    pub(crate) deleted: RangeSet,
}

/// Decodes items in file order, checking the order and the `End` counts.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// Node item names, in file order (chains refer to them by index).
    pub(crate) names: Vec<NodeName>,
    seen: HashSet<NodeName>,
    /// The previous entry's path.
    pub(crate) prev: Vec<Value>,
    entries: u64,
}

impl Decoder {
    /// Number of node items decoded.
    pub(crate) fn nodes(&self) -> u64 {
        self.names.len() as u64
    }

    /// The entries decoded from now on share no node name with those
    /// before: the names their chains refer to are copied anew.
    pub(crate) fn share_anew(&mut self) {
        for n in &mut self.names {
            *n = NodeName::from(&**n);
        }
    }

    /// Number of entry items decoded.
    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Decodes one item. `Err` says what is wrong with it. Entry and node
    /// items in the writer's layout take a fast road ([`crate::fast`]),
    /// anything else the general one; both give the same result.
    /// With `skimmed`, an entry in the writer's layout keeps its value
    /// encoded ([`EntryParts::encoded`]) and a node item its tick sets
    /// unbuilt ([`crate::fast::node_skimmed`]).
    pub(crate) fn decode(&mut self, bytes: &[u8], skimmed: bool) -> Result<Decoded, String> {
        if let Some(parts) = crate::fast::entry_as(bytes, &self.names, self.prev.len(), skimmed) {
            return Ok(self.push_entry(parts));
        }
        let node = match skimmed {
            true => crate::fast::node_skimmed(bytes),
            false => crate::fast::node(bytes),
        };
        match node {
            Some(parts) => self.push_node(parts),
            None => self.decode_general(bytes),
        }
    }

    /// [`Decoder::decode`] by serde alone.
    pub(crate) fn decode_general(&mut self, bytes: &[u8]) -> Result<Decoded, String> {
        // The item is a heterogeneous array: its fields are read as
        // values and checked one by one below.
        if !matches!(bytes.first(), Some(0x90..=0x9f | 0xdc | 0xdd)) {
            return Err("item is not an array".into());
        }
        let a: Vec<Value> = serial::from_slice(bytes).map_err(|e| format!("bad item: {e}"))?;
        match a.first().and_then(Value::as_u64) {
            Some(TAG_NODE) => self.node(a),
            Some(TAG_ENTRY) => self.entry(a),
            Some(TAG_END) => self.end(&a),
            Some(t) => Err(format!("unknown item tag {t}")),
            None => Err("item has no tag".into()),
        }
    }

    fn node(&mut self, a: Vec<Value>) -> Result<Decoded, String> {
        let [_, name, tick, known, deleted]: [Value; 5] = a
            .try_into()
            .map_err(|a: Vec<Value>| format!("node item has {} fields, not 5", a.len()))?;
        let Value::Str(name) = name else {
            return Err("node name is not a string".into());
        };
        let tick = match tick {
            Value::Nil => None,
            t => Some(counter(&t).ok_or("node tick is not a counter")?),
        };
        let known = RangeSet::from_value(&known).map_err(|e| format!("known: {e}"))?;
        let deleted = RangeSet::from_value(&deleted).map_err(|e| format!("deleted: {e}"))?;
        self.push_node(NodeParts {
            name,
            tick,
            known,
            deleted,
        })
    }

    /// The node `parts` describe, if it may come here.
    fn push_node(&mut self, parts: NodeParts) -> Result<Decoded, String> {
        let NodeParts {
            name,
            tick,
            known,
            deleted,
        } = parts;
        if self.entries > 0 {
            return Err(format!("node {name:?} after the first entry"));
        }
        if !self.seen.insert(name.clone()) {
            return Err(format!("node {name:?} appears twice"));
        }
        self.names.push(name.clone());
        Ok(Decoded::Node(NodeRecord {
            name,
            tick,
            known,
            deleted,
        }))
    }

    fn entry(&mut self, a: Vec<Value>) -> Result<Decoded, String> {
        let n = a.len();
        if n != 5 && n != 6 {
            return Err(format!("entry item has {n} fields, not 5 or 6"));
        }
        let mut it = a.into_iter().skip(1);
        let mut next = || it.next().unwrap_or(Value::Nil);
        let depth = next()
            .as_u64()
            .filter(|&d| d <= self.prev.len() as u64)
            .ok_or_else(|| {
                format!(
                    "entry depth is not an integer up to the previous path's {} elements",
                    self.prev.len()
                )
            })? as usize;
        let Value::Array(rest) = next() else {
            return Err("entry path rest is not an array".into());
        };
        let chain = match next() {
            Value::Nil => None,
            Value::Array(flat) => Some(self.chain(flat)?),
            _ => return Err("entry chain is not an array".into()),
        };
        let tock = counter(&next()).ok_or("entry tock is not a counter")?;
        let value = (n == 6).then(&mut next);
        Ok(self.push_entry(EntryParts {
            depth,
            rest,
            chain,
            tock,
            value,
            encoded: None,
        }))
    }

    /// The entry `parts` describe, its path completed from the previous
    /// one (which it becomes).
    fn push_entry(&mut self, parts: EntryParts) -> Decoded {
        let EntryParts {
            depth,
            rest,
            chain,
            tock,
            value,
            encoded,
        } = parts;
        self.prev.truncate(depth);
        self.prev.extend(rest);
        self.entries += 1;
        Decoded::Entry {
            value,
            encoded,
            chain,
            tock,
        }
    }

    /// `d`, decoded last from the item `bytes`, as an item borrowing the
    /// entry's path, and its value's bytes if left encoded (`None` for the
    /// end).
    pub(crate) fn item_ref<'a>(&'a self, d: Decoded, bytes: &'a [u8]) -> Option<ItemRef<'a>> {
        match d {
            Decoded::Node(n) => Some(ItemRef::Node(n)),
            Decoded::Entry {
                value,
                encoded,
                chain,
                tock,
            } => Some(ItemRef::Entry(EntryRef {
                path: &self.prev,
                value,
                encoded: encoded.and_then(|r| bytes.get(r)),
                chain,
                tock,
            })),
            Decoded::End => None,
        }
    }

    fn chain(&self, flat: Vec<Value>) -> Result<Chain, String> {
        if flat.is_empty() || flat.len() % 2 != 0 {
            return Err(format!(
                "chain has {} fields, not a positive even number",
                flat.len()
            ));
        }
        let mut links = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(node), Some(tick)) = (it.next(), it.next()) {
            let node = match node {
                Value::Str(s) => s,
                v => {
                    let i = v
                        .as_u64()
                        .ok_or("chain node is neither a name nor an index")?;
                    self.names
                        .get(i as usize)
                        .cloned()
                        .ok_or_else(|| format!("chain refers to node #{i}, which does not exist"))?
                }
            };
            let tick = counter(&tick).ok_or("chain tick is not a counter")?;
            links.push(Link { node, tick });
        }
        check_chain(&links)?;
        Chain::from_links(links).ok_or_else(|| "empty chain".into())
    }

    fn end(&self, a: &[Value]) -> Result<Decoded, String> {
        let [_, nodes, entries] = a else {
            return Err(format!("end item has {} fields, not 3", a.len()));
        };
        let (Some(nodes), Some(entries)) = (nodes.as_u64(), entries.as_u64()) else {
            return Err("end counts are not integers".into());
        };
        if (nodes, entries) != (self.nodes(), self.entries) {
            return Err(format!(
                "end item counts {nodes} nodes and {entries} entries, but the file holds {} and {}",
                self.nodes(),
                self.entries
            ));
        }
        Ok(Decoded::End)
    }
}

/// The index of each node item, by name.
type NodeIndex = HashMap<NodeName, u64, foldhash::quality::RandomState>;

/// Appends the entry item `[1, depth, rest, chain | nil, tock, value?]`,
/// the chain as [`FlatChain`] writes it: the bytes serde writes for the
/// tuple (a test checks), written directly (a snapshot is encoded while
/// changes wait, and serde's road took a third of that time).
fn write_entry(
    out: &mut Vec<u8>,
    depth: usize,
    rest: &[Value],
    chain: Option<&Chain>,
    nodes: &NodeIndex,
    tock: u64,
    value: Option<&Value>,
) {
    codec::write_array_len(out, if value.is_some() { 6 } else { 5 });
    codec::write_uint(out, TAG_ENTRY);
    codec::write_uint(out, depth as u64);
    codec::write_array_len(out, rest.len());
    for e in rest {
        codec::encode(e, out);
    }
    match chain {
        None => codec::encode(&Value::Nil, out),
        Some(c) => {
            codec::write_array_len(out, 2 * c.len());
            for l in c.links() {
                match nodes.get(&l.node) {
                    Some(&i) => codec::write_uint(out, i),
                    None => codec::write_str(out, &l.node),
                }
                codec::write_uint(out, l.tick);
            }
        }
    }
    codec::write_uint(out, tock);
    if let Some(v) = value {
        codec::encode(v, out);
    }
}

fn check_len(out: &[u8]) -> Result<(), String> {
    if out.len() > MAX_ITEM_LEN {
        return Err(format!(
            "item of {} bytes exceeds the limit of {MAX_ITEM_LEN}",
            out.len()
        ));
    }
    Ok(())
}

/// Ticks within range, each node at most once.
pub(crate) fn check_chain(links: &[Link]) -> Result<(), String> {
    if let Some(l) = links.iter().find(|l| l.tick > MAX_COUNTER) {
        return Err(format!(
            "chain tick {} of {:?} exceeds 2^62",
            l.tick, l.node
        ));
    }
    let dup = if links.len() <= 16 {
        links
            .iter()
            .enumerate()
            .find(|(i, l)| links[..*i].iter().any(|m| m.node == l.node))
            .map(|(_, l)| l)
    } else {
        let mut seen = HashSet::with_capacity(links.len());
        links.iter().find(|l| !seen.insert(&l.node))
    };
    match dup {
        Some(l) => Err(format!("chain names node {:?} twice", l.node)),
        None => Ok(()),
    }
}

fn counter(v: &Value) -> Option<u64> {
    v.as_u64().filter(|&t| t <= MAX_COUNTER)
}

/// Whether `v` nests arrays, maps and paths more than `budget` levels deep.
/// Recurses at most `budget + 1` levels.
fn too_deep(v: &Value, budget: usize) -> bool {
    let container = matches!(v, Value::Array(_) | Value::Map(_) | Value::Path(_));
    let Some(rest) = budget.checked_sub(1) else {
        return container;
    };
    match v {
        Value::Array(a) => a.iter().any(|c| too_deep(c, rest)),
        Value::Path(p) => p.iter().any(|c| too_deep(c, rest)),
        Value::Map(m) => m
            .iter()
            .any(|(k, x)| too_deep(k, rest) || too_deep(x, rest)),
        _ => false,
    }
}

/// Same type and same bits (unlike `==`, which follows Python: `1 == 1.0`).
fn identical(a: &Value, b: &Value) -> bool {
    use Value::*;
    match (a, b) {
        (Nil, Nil) => true,
        (Bool(x), Bool(y)) => x == y,
        (Int(x), Int(y)) => x == y,
        (UInt(x), UInt(y)) => x == y,
        (BigUint(x), BigUint(y)) => x == y,
        (Float(x), Float(y)) => x.to_bits() == y.to_bits(),
        (Str(x), Str(y)) => x == y,
        (Bin(x), Bin(y)) => x == y,
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| identical(p, q)),
        (Path(x), Path(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| identical(p, q))
        }
        (Map(x), Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k, v), (l, w))| identical(k, l) && identical(v, w))
        }
        (Ext(t, x), Ext(u, y)) => t == u && x == y,
        _ => false,
    }
}

#[cfg(test)]
impl Decoder {
    /// [`Decoder::decode`], the item owned (`None` for the end).
    pub(crate) fn decode_item(&mut self, bytes: &[u8]) -> Result<Option<Item>, String> {
        let d = self.decode(bytes, false)?;
        Ok(self.item_ref(d, bytes).map(ItemRef::to_item))
    }

    /// [`Decoder::decode_general`], the item owned (`None` for the end).
    pub(crate) fn decode_general_item(&mut self, bytes: &[u8]) -> Result<Option<Item>, String> {
        let d = self.decode_general(bytes)?;
        Ok(self.item_ref(d, bytes).map(ItemRef::to_item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::{codec, path};
    use std::sync::Arc;

    use serde::ser::{SerializeSeq, Serializer};
    use serde::Serialize;

    /// An entry's chain as written: nil, or `[node, tick, …]` with each node
    /// by the index of its node item, or by name if it has none (serde's road,
    /// which `write_entry` is checked against).
    struct FlatChain<'a> {
        chain: Option<&'a Chain>,
        nodes: &'a NodeIndex,
    }

    impl Serialize for FlatChain<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let Some(c) = self.chain else {
                return s.serialize_unit();
            };
            let mut seq = s.serialize_seq(Some(2 * c.len()))?;
            for l in c.links() {
                match self.nodes.get(&l.node) {
                    Some(i) => seq.serialize_element(i)?,
                    None => seq.serialize_element(&*l.node)?,
                }
                seq.serialize_element(&l.tick)?;
            }
            seq.end()
        }
    }

    /// Values of every kind and of lengths across msgpack's size classes.
    fn odd_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            crate::tests::value(),
            (-40_000i64..70_000).prop_map(Value::Int),
            (0u64..70_000).prop_map(Value::uint),
            (0usize..70_000).prop_map(|n| Value::str(&"é".repeat(n / 2))),
            (0usize..70_000).prop_map(|n| Value::Bin(Arc::from(vec![7u8; n]))),
            (0usize..300).prop_map(|n| Value::Ext(5, Arc::from(vec![1u8; n]))),
            proptest::collection::vec(Just(Value::Nil), 0..40).prop_map(Value::Array),
            proptest::collection::vec((any::<i64>().prop_map(Value::Int), Just(Value::Nil)), 0..20)
                .prop_map(Value::Map),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x3e17),
            ..proptest::test_runner::Config::default()
        })]

        /// The entry item written directly is the bytes serde writes for
        /// the tuple, chains naming nodes with and without node items.
        #[test]
        fn entries_written_directly_are_what_serde_writes(
            e in crate::tests::entry_strategy(),
            rest in proptest::collection::vec(odd_value(), 0..4),
            value in proptest::option::of(odd_value()),
            depth in 0usize..300,
        ) {
            let mut nodes = NodeIndex::default();
            for (i, n) in ["n1", "n2", "n3"].into_iter().enumerate() {
                nodes.insert(NodeName::from(n), i as u64);
            }
            for (rest, value) in [(&e.path[..], e.value.as_ref()), (&rest[..], value.as_ref())] {
                let mut direct = Vec::new();
                write_entry(&mut direct, depth, rest, e.chain.as_ref(), &nodes, e.tock, value);
                let chain = FlatChain { chain: e.chain.as_ref(), nodes: &nodes };
                let mut serde = Vec::new();
                let d = depth as u64;
                match value {
                    Some(v) => serial::encode(&(TAG_ENTRY, d, rest, chain, e.tock, v), &mut serde),
                    None => serial::encode(&(TAG_ENTRY, d, rest, chain, e.tock), &mut serde),
                }
                proptest::prop_assert_eq!(direct, serde);
            }
        }
    }

    #[test]
    fn entry_paths_are_shortened_and_chains_refer_to_node_items() -> Result<(), String> {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let mut out = Vec::new();
        let none = RangeSet::new();
        enc.node(
            &mut out,
            "n1",
            Some(5),
            &[1u64, 2, 3].into_iter().collect(),
            &none,
        )?;
        // [0, "n1", 5, [[1, 4]], []]
        assert_eq!(
            distkv_model::hex::encode(&out),
            "95 00 a26e31 05 91920104 90".replace(' ', "")
        );
        assert!(matches!(dec.decode_item(&out)?, Some(Item::Node(_))));
        let c = Chain::single(NodeName::from("n1"), 5);
        enc.entry(
            &mut out,
            &path!["a", "b"],
            Some(&Value::Int(7)),
            Some(&c),
            6,
        )?;
        // [1, 0, ["a", "b"], [0, 5], 6, 7]
        assert_eq!(
            distkv_model::hex::encode(&out),
            "96 01 00 92a161a162 920005 06 07".replace(' ', "")
        );
        dec.decode(&out, false)?;
        enc.entry(&mut out, &path!["a", "c"], None, Some(&c), 6)?;
        // [1, 1, ["c"], [0, 5], 6]: one element shared, no value.
        assert_eq!(
            distkv_model::hex::encode(&out),
            "95 01 01 91a163 920005 06".replace(' ', "")
        );
        let Some(Item::Entry(e)) = dec.decode_item(&out)? else {
            return Err("not an entry".into());
        };
        assert_eq!(e.path, path!["a", "c"]);
        assert_eq!(e.value, None);
        let stranger = Chain::single(NodeName::from("zz"), 1);
        enc.entry(&mut out, &path!["a"], Some(&Value::Nil), Some(&stranger), 7)?;
        // [1, 1, [], ["zz", 1], 7, nil]: a node without node item by name.
        assert_eq!(
            distkv_model::hex::encode(&out),
            "96 01 01 90 92a27a7a01 07 c0".replace(' ', "")
        );
        let Some(Item::Entry(e)) = dec.decode_item(&out)? else {
            return Err("not an entry".into());
        };
        assert_eq!((e.path, e.value), (path!["a"], Some(Value::Nil)));
        enc.end(&mut out);
        assert_eq!(distkv_model::hex::encode(&out), "93020103");
        assert!(dec.decode_item(&out)?.is_none());
        Ok(())
    }

    /// Items as the hand-written codec wrote them before the move to serde
    /// (the items of snapshots written by earlier versions): they decode to
    /// the same records, and the same records encode to the same bytes.
    #[test]
    fn items_written_before_serde_read_and_rewrite_identically() -> Result<(), String> {
        let golden = [
            "9500a26e31cf00000100000000009392010409cf000001000000000090",
            "9500a26e32c0909104",
            "96010093a16101cb3ff0000000000000960104a8737472616e676572cf00000002000000000000cf000000040000000085a166cbbfd0000000000000a3626967c70902090909090909090909a170c70503a178c40101a165d6fb61626364a16c93ffcfffffffffffffffffc2",
            "95010291a17a960104a8737472616e676572cf0000000200000000000005",
            "96010091a162c000c0",
            "93020203",
        ];
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let mut out = Vec::new();
        let mut check = |out: &[u8], i: usize| -> Result<Option<Item>, String> {
            assert_eq!(distkv_model::hex::encode(out), golden[i], "item {i}");
            dec.decode_item(&distkv_model::hex::decode(golden[i]).expect("hex"))
        };
        let k: RangeSet = [1u64, 2, 3, 9, 1 << 40].into_iter().collect();
        enc.node(&mut out, "n1", Some(1 << 40), &k, &RangeSet::new())?;
        let Some(Item::Node(n)) = check(&out, 0)? else {
            return Err("not a node".into());
        };
        assert_eq!((n.tick, n.known), (Some(1 << 40), k));
        let d: RangeSet = [4u64].into_iter().collect();
        enc.node(&mut out, "n2", None, &RangeSet::new(), &d)?;
        let Some(Item::Node(n)) = check(&out, 1)? else {
            return Err("not a node".into());
        };
        assert_eq!((&*n.name, n.tick, n.deleted), ("n2", None, d));
        let c = Chain::from_links(vec![
            Link {
                node: "n2".into(),
                tick: 4,
            },
            Link {
                node: "stranger".into(),
                tick: 1 << 33,
            },
            Link {
                node: "n1".into(),
                tick: 0,
            },
        ])
        .ok_or("empty chain")?;
        let v = Value::map([
            ("f", Value::Float(-0.25)),
            ("big", Value::BigUint(Arc::from(&[9u8; 9][..]))),
            (
                "p",
                Value::Path(path!["x", Value::Bin(Arc::from(&b"\x01"[..]))]),
            ),
            ("e", Value::Ext(-5, Arc::from(&b"abcd"[..]))),
            (
                "l",
                Value::Array(vec![
                    Value::Int(-1),
                    Value::uint(u64::MAX),
                    Value::Bool(false),
                ]),
            ),
        ]);
        let entries = [
            (path!["a", 1u64, Value::Float(1.0)], Some(v), 1 << 34),
            (path!["a", 1u64, "z"], None, 5),
        ];
        for (i, (p, v, tock)) in entries.into_iter().enumerate() {
            enc.entry(&mut out, &p, v.as_ref(), Some(&c), tock)?;
            let Some(Item::Entry(e)) = check(&out, 2 + i)? else {
                return Err("not an entry".into());
            };
            assert_eq!(
                codec::to_vec(&Value::Path(e.path)),
                codec::to_vec(&Value::Path(p))
            );
            assert_eq!(
                e.value.as_ref().map(codec::to_vec),
                v.as_ref().map(codec::to_vec)
            );
            assert_eq!((e.chain.as_ref(), e.tock), (Some(&c), tock));
        }
        enc.entry(&mut out, &path!["b"], Some(&Value::Nil), None, 0)?;
        let Some(Item::Entry(e)) = check(&out, 4)? else {
            return Err("not an entry".into());
        };
        assert_eq!(
            (e.path, e.value, e.chain),
            (path!["b"], Some(Value::Nil), None)
        );
        enc.end(&mut out);
        assert!(check(&out, 5)?.is_none());
        Ok(())
    }

    #[test]
    fn python_equal_elements_are_not_shared() -> Result<(), String> {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let mut out = Vec::new();
        for el in [
            Value::Int(1),
            Value::Float(1.0),
            Value::Bool(true),
            Value::Bool(true),
        ] {
            let p = Path::new(vec![el.clone(), Value::str("x")]);
            enc.entry(&mut out, &p, None, None, 1)?;
            let Some(Item::Entry(e)) = dec.decode_item(&out)? else {
                return Err("not an entry".into());
            };
            assert!(
                e.path[0].same_type(&el),
                "{el:?} came back as {:?}",
                e.path[0]
            );
        }
        Ok(())
    }

    #[test]
    fn nesting_is_counted_in_containers() {
        let mut v = Value::Int(1);
        for _ in 0..3 {
            v = Value::Map(vec![(Value::Nil, v)]);
        }
        assert!(!too_deep(&v, 3));
        assert!(too_deep(&v, 2));
        assert!(too_deep(&Value::Array(vec![]), 0));
        assert!(!too_deep(&Value::Int(1), 0));
    }
}
