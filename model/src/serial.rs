//! Serde for our own formats: event-log records, snapshot items and the
//! nodes' `update` and `info` messages are serde-derived structs (or
//! tuples) written and read by `rmp-serde` through [`encode`] and
//! [`from_slice`].
//!
//! The bytes are those of the hand-written codec ([`crate::codec`], which
//! stays for the client protocol, where byte-exactness with Python's packer
//! matters): integers in their smallest form, floats as float64, strings
//! as str, bytes as bin, ext 2 for integers of at least 2⁶⁴ and ext 3 for
//! paths (through rmp-serde's `_ExtStruct` extension support), structs as
//! maps with their field names. A [`Chain`] is written as nested
//! `{node, tick, prev}` maps ([`LinkMaps`]), an [`UpdateEvent`] in its wire
//! form with its whole chain (see [`crate::event`]).
//!
//! Decoding untrusted bytes never panics and stays inside the budget
//! ([`crate::budget`]): rmp-serde's depth counter stops containers nesting
//! deeper than [`INTERNAL_LIMITS`]`.max_depth` (plus one level for an
//! extension at the bottom), and a [`Value`] counts its own levels —
//! arrays, maps and paths, as the hand-written decoder counts them, since
//! a path's elements are decoded from the ext 3 payload by a deserializer
//! of their own — and refuses to go deeper than that limit. Counts are
//! never trusted beyond the bytes that hold them. An [`UpdateEvent`]
//! checks its chain, counters and nesting as [`UpdateEvent::from_value`]
//! does.

use std::borrow::Cow;
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::budget::INTERNAL_LIMITS;
use crate::chain::{Chain, Link, NodeName, MAX_COUNTER};
use crate::codec::{EXT_BIGINT, EXT_PATH};
use crate::event::{check_nesting, EventError};
use crate::path::Path;
use crate::ranges::{NodeSet, RangeSet};
use crate::value::Value;
use crate::UpdateEvent;

/// Deepest nesting of a [`Value`] (and of containers in a message), as
/// the hand-written decoder counts it for our formats.
const MAX_DEPTH: usize = INTERNAL_LIMITS.max_depth;

/// rmp-serde's depth counter: it fails when it reaches 0, and counts an
/// extension as a level, so a value at [`MAX_DEPTH`] with an extension
/// at its bottom needs two more.
const RMP_DEPTH: usize = MAX_DEPTH + 2;

/// Bytes that are not a valid record, item or message of our formats.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not msgpack, not the expected shape, or beyond the budget.
    #[error(transparent)]
    Decode(#[from] rmp_serde::decode::Error),
    /// Nested deeper than our formats' limit.
    #[error("nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Bytes left after the value.
    #[error("bytes left after the end of the value")]
    TrailingBytes,
}

/// Appends the msgpack encoding of `v` to `out` (structs as maps).
pub fn encode<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail, and none of our types' Serialize
    // impls returns an error.
    #[allow(clippy::expect_used)]
    rmp_serde::encode::write_named(out, v).expect("encoding into a Vec cannot fail");
}

/// The length of `v`'s encoding ([`encode`]), without keeping the bytes.
pub fn encoded_len<T: Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    #[allow(clippy::expect_used)]
    rmp_serde::encode::write_named(&mut n, v).expect("counting bytes cannot fail");
    n.0
}

/// Decodes exactly one value of type `T` from `bytes`.
pub fn from_slice<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, FormatError> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(RMP_DEPTH);
    let v = T::deserialize(&mut de).map_err(|e| match e {
        rmp_serde::decode::Error::DepthLimitExceeded => FormatError::TooDeep,
        e => FormatError::Decode(e),
    })?;
    // rmp-serde does not say where it stopped: decoding one more value
    // fails at the end of the input if there is nothing left.
    match IgnoredAny::deserialize(&mut de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
            if e.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Ok(v)
        }
        _ => Err(FormatError::TrailingBytes),
    }
}

// ---------------------------------------------------------------- values

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

fn ext<S: Serializer>(s: S, tag: i8, data: &[u8]) -> Result<S::Ok, S::Error> {
    s.serialize_newtype_struct(rmp_serde::MSGPACK_EXT_STRUCT_NAME, &(tag, Bytes(data)))
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::BigUint(b) => ext(s, EXT_BIGINT, b),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(x) => s.serialize_str(x),
            Value::Bin(b) => s.serialize_bytes(b),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, x) in m {
                    map.serialize_entry(k, x)?;
                }
                map.end()
            }
            Value::Path(p) => p.serialize(s),
            Value::Ext(t, b) => ext(s, *t, b),
        }
    }
}

/// Written as ext 3: the elements packed one after the other.
impl Serialize for Path {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_path_with(s, |payload| {
            for e in self.iter() {
                rmp_serde::encode::write(payload, e).map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

/// Serializes a path as [`Path`] does, its elements' encoding (ext 3's
/// payload) written by `elements`.
pub fn serialize_path_with<S: Serializer>(
    s: S,
    elements: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
) -> Result<S::Ok, S::Error> {
    // One buffer per thread for the payload (a path nested in this one
    // finds it taken and uses its own).
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut payload = SCRATCH.take();
    payload.clear();
    elements(&mut payload).map_err(serde::ser::Error::custom)?;
    let r = ext(s, EXT_PATH, &payload);
    if payload.capacity() <= 64 << 10 {
        SCRATCH.set(payload);
    }
    r
}

/// Reads a [`Value`] that sits `depth` levels inside the outermost one.
#[derive(Clone, Copy)]
struct ValueSeed {
    depth: usize,
}

impl ValueSeed {
    /// The seed of this value's items, or an error when it is at the limit.
    fn enter<E: de::Error>(self) -> Result<ValueSeed, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!(
                "a value nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(ValueSeed {
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        ValueSeed { depth: 0 }.deserialize(d)
    }
}

/// Never reserve more for a container than this many items up front: the
/// count comes from the input.
fn cautious(hint: Option<usize>) -> usize {
    hint.unwrap_or(0).min(1024)
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a msgpack value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::uint(u))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::str(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Value, E> {
        Ok(Value::Bin(Arc::from(b)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut v = Vec::with_capacity(cautious(seq.size_hint()));
        while let Some(x) = seq.next_element_seed(inner)? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut v = Vec::with_capacity(cautious(map.size_hint()));
        while let Some(k) = map.next_key_seed(inner)? {
            v.push((k, map.next_value_seed(inner)?));
        }
        Ok(Value::Map(v))
    }
    /// rmp-serde hands over every extension this way.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let (tag, data) = d.deserialize_tuple(2, ExtVisitor)?;
        match tag {
            EXT_PATH => {
                let inner = self.enter()?;
                let mut de = rmp_serde::Deserializer::new(Cursor::new(&data[..]));
                de.set_max_depth(RMP_DEPTH);
                let mut elems = Vec::new();
                while (de.position() as usize) < data.len() {
                    elems.push(inner.deserialize(&mut de).map_err(de::Error::custom)?);
                }
                Ok(Value::Path(Path::new(elems)))
            }
            EXT_BIGINT => Ok(Value::from_be_digits(&data)),
            t => Ok(Value::Ext(t, Arc::from(&*data))),
        }
    }
}

/// An extension's type and payload, as rmp-serde presents them.
struct ExtVisitor;

impl<'de> Visitor<'de> for ExtVisitor {
    type Value = (i8, Cow<'de, [u8]>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a msgpack extension")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let data: ByteBuf<'de> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Ok((tag, data.0))
    }
}

/// Bytes from an extension payload, borrowed from the input if it can.
struct ByteBuf<'de>(Cow<'de, [u8]>);

impl<'de> Deserialize<'de> for ByteBuf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteBuf<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_borrowed_bytes<E>(self, b: &'de [u8]) -> Result<ByteBuf<'de>, E> {
                Ok(ByteBuf(Cow::Borrowed(b)))
            }
            fn visit_bytes<E>(self, b: &[u8]) -> Result<ByteBuf<'de>, E> {
                Ok(ByteBuf(Cow::Owned(b.to_vec())))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Read as a value that is a path (ext 3) or an array of elements.
impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Path, D::Error> {
        match Value::deserialize(d)? {
            Value::Path(p) => Ok(p),
            Value::Array(a) => Ok(Path::new(a)),
            v => Err(de::Error::custom(format!(
                "a path is an ext 3 or an array, not {}",
                v.type_name()
            ))),
        }
    }
}

// ---------------------------------------------------------------- chains

/// A chain's links as nested `{node, tick, prev}` maps, the last one with
/// `prev: nil` (the chain ends there).
pub struct LinkMaps<'a>(pub &'a [Link]);

impl Serialize for LinkMaps<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some((head, rest)) = self.0.split_first() else {
            return s.serialize_unit();
        };
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("node", &*head.node)?;
        m.serialize_entry("tick", &head.tick)?;
        m.serialize_entry("prev", &LinkMaps(rest))?;
        m.end()
    }
}

impl Serialize for Chain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LinkMaps(self.links()).serialize(s)
    }
}

/// One `{node, tick, prev}` map as read (its checks come once the whole
/// chain is read, [`Chain::from_checked_links`]).
#[derive(Deserialize)]
struct LinkIn<'a> {
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(default)]
    tick: Option<u64>,
    #[serde(default, borrow)]
    prev: Option<Box<LinkIn<'a>>>,
}

/// Appends `first` and the links it leads to.
fn flatten(first: LinkIn<'_>, links: &mut Vec<Link>) {
    let mut cur = Some(Box::new(first));
    while let Some(l) = cur {
        let LinkIn { node, tick, prev } = *l;
        links.push(Link {
            node: NodeName::from(node),
            tick: tick.unwrap_or(0),
        });
        cur = prev;
    }
}

impl<'de> Deserialize<'de> for Chain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Chain, D::Error> {
        let mut links = Vec::new();
        flatten(LinkIn::deserialize(d)?, &mut links);
        Chain::from_checked_links(links).map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------- events

/// The wire form with the whole chain: the bytes of
/// `codec::encode(&event.to_value(-1))`.
impl Serialize for UpdateEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (head, rest) = (self.chain.head(), &self.chain.links()[1..]);
        let mut m = s.serialize_map(Some(5 + usize::from(self.value.is_some())))?;
        m.serialize_entry("node", &*head.node)?;
        m.serialize_entry("tick", &head.tick)?;
        m.serialize_entry("prev", &LinkMaps(rest))?;
        m.serialize_entry("path", &self.path)?;
        if let Some(v) = &self.value {
            m.serialize_entry("value", v)?;
        }
        m.serialize_entry("tock", &self.tock)?;
        m.end()
    }
}

/// A field that is `Some` whenever it is present, even as nil.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Either wire form of an event, as read.
#[derive(Deserialize)]
struct EventIn<'a> {
    #[serde(default, borrow)]
    node: Option<Cow<'a, str>>,
    #[serde(default)]
    tick: Option<u64>,
    #[serde(default, borrow)]
    prev: Option<LinkIn<'a>>,
    path: Option<Path>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    tock: Option<u64>,
    /// The entry form's chain, which wins over the top-level fields.
    #[serde(default, borrow)]
    chain: Option<LinkIn<'a>>,
}

impl<'de> Deserialize<'de> for UpdateEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<UpdateEvent, D::Error> {
        let e = EventIn::deserialize(d)?;
        let fail = |e: EventError| de::Error::custom(e);
        let path = e.path.ok_or(EventError::Field("path")).map_err(fail)?;
        let mut links = Vec::new();
        match (e.chain, e.node) {
            (Some(c), _) => flatten(c, &mut links),
            (None, Some(node)) => {
                links.push(Link {
                    node: NodeName::from(node),
                    tick: e.tick.unwrap_or(0),
                });
                if let Some(p) = e.prev {
                    flatten(p, &mut links);
                }
            }
            (None, None) => return Err(fail(EventError::Field("node"))),
        }
        let chain = Chain::from_checked_links(links).map_err(|e| fail(EventError::Chain(e)))?;
        let tock = e
            .tock
            .filter(|&t| t <= MAX_COUNTER)
            .ok_or(EventError::Field("tock"))
            .map_err(fail)?;
        check_nesting(&path, e.value.as_ref()).map_err(|e| fail(EventError::Budget(e)))?;
        Ok(UpdateEvent {
            path,
            chain,
            value: e.value,
            tock,
        })
    }
}

// ---------------------------------------------------------------- tick sets

/// `[t | [a, b], …]`: single ticks and half-open ranges `a ≤ t < b`.
impl Serialize for RangeSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.ranges().count()))?;
        for (a, b) in self.ranges() {
            if b == a + 1 {
                seq.serialize_element(&a)?;
            } else {
                seq.serialize_element(&(a, b))?;
            }
        }
        seq.end()
    }
}

/// One item of a range set: a tick or a pair.
enum RangeItem {
    Tick(u64),
    Range(u64, u64),
}

impl<'de> Deserialize<'de> for RangeItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RangeItem, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RangeItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a tick or a pair of ticks")
            }
            fn visit_u64<E>(self, t: u64) -> Result<RangeItem, E> {
                Ok(RangeItem::Tick(t))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RangeItem, A::Error> {
                let a = seq.next_element()?;
                let b = seq.next_element()?;
                match (a, b, seq.next_element::<IgnoredAny>()?) {
                    (Some(a), Some(b), None) => Ok(RangeItem::Range(a, b)),
                    _ => Err(de::Error::custom("a range is not a pair of ticks")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RangeSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RangeSet, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RangeSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of ticks and ranges")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RangeSet, A::Error> {
                // Built in bulk as the items come (no list of them first);
                // room made for at most 64 Ki of those announced up front.
                let room = seq.size_hint().unwrap_or(0).min(1 << 16);
                let mut failed = None;
                let items = std::iter::from_fn(|| match seq.next_element() {
                    Ok(it) => it.map(|it| match it {
                        RangeItem::Tick(t) => (t, t.saturating_add(1)),
                        RangeItem::Range(a, b) => (a, b),
                    }),
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                });
                let set = RangeSet::from_ranges_sized(room, items);
                match failed {
                    Some(e) => Err(e),
                    None => Ok(set),
                }
            }
        }
        d.deserialize_seq(V)
    }
}

/// `{name: ranges}`, nodes with empty sets left out.
impl Serialize for NodeSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sets = self.0.iter().filter(|(_, r)| !r.is_empty());
        let mut m = s.serialize_map(Some(sets.clone().count()))?;
        for (n, r) in sets {
            m.serialize_entry(&**n, r)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for NodeSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NodeSet, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of node names to tick sets")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeSet, A::Error> {
                let mut out = NodeSet::default();
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    out.add(NodeName::from(name), map.next_value()?);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::path;

    fn round_trip(v: &Value) {
        let mut ours = Vec::new();
        encode(v, &mut ours);
        assert_eq!(ours, codec::to_vec(v), "{v:?}");
        let back: Value = from_slice(&ours).expect("decodes");
        assert_eq!(codec::to_vec(&back), ours);
    }

    #[test]
    fn values_are_written_as_the_client_codec_writes_them() {
        for v in [
            Value::Nil,
            Value::Bool(true),
            Value::Int(-33),
            Value::Int(200),
            Value::uint(u64::MAX),
            Value::BigUint(Arc::from(&[1u8, 0, 0, 0, 0, 0, 0, 0, 0][..])),
            Value::Float(1.5),
            Value::str(&"x".repeat(300)),
            Value::Bin(Arc::from(&b"ab"[..])),
            Value::Array(vec![Value::Nil; 20]),
            Value::map([("a", Value::Int(1))]),
            Value::Path(path![".distkv", "config", 3u64]),
            Value::Path(Path::root()),
            Value::Ext(7, Arc::from(&b"z"[..])),
        ] {
            round_trip(&v);
        }
    }

    #[test]
    fn chains_are_nested_link_maps() {
        let c = Chain::attach(
            "a".into(),
            1 << 40,
            Some(&Chain::attach(
                "b".into(),
                7,
                Some(&Chain::single("c".into(), 0)),
            )),
        );
        let mut ours = Vec::new();
        encode(&c, &mut ours);
        assert_eq!(ours, codec::to_vec(&c.to_value(-1)));
        assert_eq!(from_slice::<Chain>(&ours).expect("decodes"), c);
        let twice = Value::map([
            ("node", Value::str("a")),
            ("tick", Value::Int(1)),
            (
                "prev",
                Value::map([
                    ("node", Value::str("a")),
                    ("tick", Value::Int(2)),
                    ("prev", Value::Nil),
                ]),
            ),
        ]);
        assert!(from_slice::<Chain>(&codec::to_vec(&twice)).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert!(from_slice::<Value>(&[0xc0]).is_ok());
        assert!(matches!(
            from_slice::<Value>(&[0xc0, 0xc0]),
            Err(FormatError::TrailingBytes)
        ));
    }

    #[test]
    fn depth_is_limited_in_arrays_and_paths() {
        let nested = |depth: usize, path: bool| {
            let mut v = Value::Int(1);
            for _ in 0..depth {
                v = if path {
                    Value::Path(Path::new(vec![v]))
                } else {
                    Value::Array(vec![v])
                };
            }
            codec::to_vec(&v)
        };
        for path in [false, true] {
            assert!(from_slice::<Value>(&nested(MAX_DEPTH, path)).is_ok());
            assert!(from_slice::<Value>(&nested(MAX_DEPTH + 1, path)).is_err());
            assert!(from_slice::<Value>(&nested(2000, path)).is_err());
        }
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        for b in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdf, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(from_slice::<Value>(b).is_err());
        }
        // A range set announcing 2^32 - 1 items: room for 64 Ki made, an
        // error at the end of the bytes.
        assert!(from_slice::<RangeSet>(&[0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2]).is_err());
    }

    proptest::proptest! {
        /// A range set's wire form (ticks and `[a, b)` pairs, in any order)
        /// decodes to the ticks it names; a bad item anywhere is an error.
        #[test]
        fn range_sets_decode_any_mix_of_items(
            items in proptest::collection::vec((0u64..400, 0u64..6, proptest::bool::ANY), 0..200),
            bad in proptest::option::of(0usize..200),
        ) {
            let mut wire = Vec::new();
            let mut want = std::collections::BTreeSet::new();
            let bad = bad.filter(|&b| b < items.len());
            let n = u32::try_from(items.len()).expect("few items");
            wire.push(0xdd);
            wire.extend_from_slice(&n.to_be_bytes());
            for (i, &(a, len, single)) in items.iter().enumerate() {
                let v = if bad == Some(i) {
                    Value::Str("x".into())
                } else if single {
                    want.insert(a);
                    Value::uint(a)
                } else {
                    want.extend(a..a + len);
                    Value::Array(vec![Value::uint(a), Value::uint(a + len)])
                };
                encode(&v, &mut wire);
            }
            let got = from_slice::<RangeSet>(&wire);
            if bad.is_some() {
                proptest::prop_assert!(got.is_err());
            } else {
                let got: Vec<u64> = got.expect("decodes").iter().collect();
                proptest::prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
            }
        }
    }
}
