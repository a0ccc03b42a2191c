//! Server-to-server messages on the `update` and `info` topics.
//!
//! Ours, not DistKV's (clients never see the server protocol, so it is
//! ours to choose; the roles stay): one message carries a whole batch of events, and no message
//! is split into 450-byte chunks. Every message names its sender, which is
//! how a node recognises its own messages coming back from the bus.
//! Both are serde-derived maps written and read by rmp-serde
//! ([`distkv_model::serial`]), the bytes the hand-written codec wrote
//! before; an `update` in our writers' layout, the bulk of the traffic, is
//! read by a cursor instead ([`distkv_model::fast`]), to the same message.
//!
//! * `update`: `{node, ev: [UpdateEvent…]}` — events with full chains.
//! * `info`: `{node, tick?, addr?, ticks?, missing?, known?, deleted?, node_drop?}`
//!   — `ticks` is `{name: tick}`, the other sets are NodeSets (§1.4).

use std::borrow::Cow;

use bytes::Bytes;
use distkv_log::EventForm;
use distkv_model::budget::{check_event_size, INTERNAL_LIMITS, MAX_EVENT_BYTES};
use distkv_model::codec::{self, Limits};
use distkv_model::cursor::Cursor;
use distkv_model::fast::EventDecoder;
use distkv_model::serial::{self, FormatError};
use distkv_model::{NodeName, NodeSet, RangeSet, UpdateEvent, Value};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

/// Decoding limits for bus messages read as plain values (the membership
/// and purge messages, and clients monitoring the nodes' topics): room
/// for one change within the budget, wrapped (broadcast batches are cut
/// to fit, see [`BATCH_BYTES`]); extension types DistKV's clients cannot
/// read are refused. `update` and `info` messages are serde-derived
/// ([`serial`]) and checked the same way.
pub const BUS_LIMITS: Limits = Limits {
    foreign_ext: false,
    ..INTERNAL_LIMITS
};

/// A broadcast batch is closed once its events take this many bytes (a
/// single event may take up to
/// [`distkv_model::budget::MAX_EVENT_BYTES`]).
pub const BATCH_BYTES: usize = 4 << 20;

/// A batch of changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The sender.
    pub node: NodeName,
    /// The events, each with its full chain.
    pub events: Vec<UpdateEvent>,
}

/// Tick bookkeeping exchanged for anti-entropy and split recovery.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// The sender.
    pub node: NodeName,
    /// The sender's own tick.
    pub tick: Option<u64>,
    /// Highest tick the sender knows of each node.
    pub ticks: Vec<(NodeName, u64)>,
    /// Ticks the sender lacks.
    pub missing: NodeSet,
    /// Ticks the sender knows to be in no chain any more.
    pub known: NodeSet,
    /// Ticks of deleted entries.
    pub deleted: NodeSet,
    /// Nodes that were removed from the cluster.
    pub node_drop: Vec<NodeName>,
    /// The sender's own ticks that will never exist: it stopped uncleanly
    /// and resumed above its tick reservation.
    pub skipped: RangeSet,
    /// Where the sender serves clients, `host:port` (for joining nodes).
    pub addr: Option<String>,
    /// The sender's link to another node just came (back) up: whoever
    /// hears this answers with its own ticks at once, so that both sides
    /// of a healed partition learn what they miss without waiting for the
    /// next housekeeper (the sender cannot tell which of its peers heard
    /// its own ticks: their links to its broker may come back later).
    pub reply: bool,
}

/// Why a bus message was not understood.
#[derive(Debug, thiserror::Error)]
pub enum MsgError {
    /// Not msgpack, beyond the limits, or not the expected shape.
    #[error("undecodable message: {0}")]
    Decode(#[from] FormatError),
    /// Decodable, but breaking a rule of the message.
    #[error("bad {0} message: {1}")]
    Shape(&'static str, String),
}

/// An update message as written.
#[derive(Serialize)]
struct UpdateOut<'a> {
    node: &'a str,
    ev: &'a [&'a UpdateEvent],
}

/// An update message as read.
#[derive(Deserialize)]
struct UpdateIn<'a> {
    #[serde(borrow)]
    node: Cow<'a, str>,
    ev: Vec<UpdateEvent>,
}

impl Update {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let events: Vec<&UpdateEvent> = self.events.iter().collect();
        let mut out = Vec::with_capacity(64 + 64 * self.events.len());
        serial::encode(
            &UpdateOut {
                node: &self.node,
                ev: &events,
            },
            &mut out,
        );
        out.into()
    }

    /// Decodes the wire form: a message in our writers' layout by the fast
    /// road ([`Update::decode_fast`]), anything else by the general serde
    /// decoder, to the same message or its error.
    pub fn decode(buf: &[u8]) -> Result<Update, MsgError> {
        Update::decode_with(buf, &mut EventDecoder::new())
    }

    /// [`Update::decode`] with a decoder kept between messages, whose node
    /// names (and path strings) the events share with those of the
    /// messages before: the state finds a link's node by its name's
    /// address, and the names a cluster's chains hold are then few.
    pub fn decode_with(buf: &[u8], d: &mut EventDecoder) -> Result<Update, MsgError> {
        match Update::decode_fast(buf, d) {
            Some(u) => Ok(u),
            None => Update::decode_general(buf),
        }
    }

    /// A message as [`UpdateEncoder`] writes it — `{node, ev: [EVENT…]}`,
    /// each event in our writers' layout ([`distkv_model::fast`]) — with
    /// the general road's checks passed, or `None`. Node names and path
    /// strings are shared between the message's events (and those `d`
    /// decoded before).
    fn decode_fast(buf: &[u8], d: &mut EventDecoder) -> Option<Update> {
        let mut c = Cursor::new(buf);
        c.expect(&[0x82, 0xa4, b'n', b'o', b'd', b'e'])?;
        let node = d.name(c.str()?)?;
        c.expect(&[0xa2, b'e', b'v'])?;
        let n = c.array_len()?;
        // Room for no more events than the bytes can hold (an event
        // takes at least 30 of them).
        let mut events = Vec::with_capacity(n.min(c.remaining() / 30));
        for _ in 0..n {
            let before = c.remaining();
            let e = d.event(&mut c)?;
            // An event re-encodes to at most 9 bytes per byte read (every
            // msgpack item takes at least one byte, and our encoding of one
            // takes at most 9 besides the string, binary and extension
            // bytes it carries, which it writes as read or fewer): only
            // an event read from more bytes than the budget's ninth is
            // measured by encoding it.
            let read = before - c.remaining();
            if read > MAX_EVENT_BYTES / 9 && check_event_size(serial::encoded_len(&e)).is_err() {
                return None;
            }
            if foreign_ext(&e).is_some() {
                return None;
            }
            events.push(e);
        }
        c.at_end().then_some(Update { node, events })
    }

    /// [`Update::decode`] by serde, for every layout: the reference the
    /// fast road is held to, by the tests and the fuzz targets.
    pub fn decode_general(buf: &[u8]) -> Result<Update, MsgError> {
        let u: UpdateIn<'_> = serial::from_slice(buf)?;
        let bad = |why: &str| MsgError::Shape("update", why.to_string());
        for e in &u.ev {
            check_event_size(serial::encoded_len(e)).map_err(|e| bad(&e.to_string()))?;
            if let Some(t) = foreign_ext(e) {
                return Err(bad(&format!(
                    "msgpack extension type {t} is not allowed (DistKV uses only 2, big integers, and 3, paths)"
                )));
            }
        }
        Ok(Update {
            node: NodeName::from(u.node),
            events: u.ev,
        })
    }
}

/// The first msgpack extension type other than DistKV's own in an event's
/// path or value: DistKV's clients cannot read them, so nodes refuse them
/// from each other as from clients ([`BUS_LIMITS`]).
fn foreign_ext(e: &UpdateEvent) -> Option<i8> {
    // A stack of what is still to look at inside nested values only: most
    // events' paths and values are scalars and strings, looked at without
    // allocating.
    let mut todo: Vec<&Value> = Vec::new();
    for top in e.path.iter().chain(&e.value) {
        let mut v = top;
        loop {
            match v {
                Value::Ext(t, _) => return Some(*t),
                Value::Array(a) => todo.extend(a),
                Value::Path(p) => todo.extend(p.iter()),
                Value::Map(m) => todo.extend(m.iter().flat_map(|(k, x)| [k, x])),
                _ => {}
            }
            match todo.pop() {
                Some(next) => v = next,
                None => break,
            }
        }
    }
    None
}

/// Encodes `update` messages, its body buffer kept from one call to the
/// next: a node broadcasting a steady stream of changes serializes them
/// into memory it already has, instead of growing a fresh buffer (a copy
/// and freshly faulted pages at every doubling) for every message.
#[derive(Debug, Default)]
pub struct UpdateEncoder {
    body: Vec<u8>,
}

/// Body capacity an [`UpdateEncoder`] keeps between calls; a burst that
/// grew it beyond this (a message of up to [`BATCH_BYTES`]) gives it back.
const KEEP_BODY: usize = 1 << 20;

impl UpdateEncoder {
    /// Encodes `events` (each an [`UpdateEvent`] or its record in the
    /// event log: [`EventForm`]) as update messages from `node`, each
    /// closed once its events take [`BATCH_BYTES`] (an event within the
    /// budget always fits a message of its own). Each event is encoded
    /// once, into the message's body.
    pub fn encode<T: EventForm>(
        &mut self,
        node: &str,
        events: impl IntoIterator<Item = T>,
    ) -> Vec<Bytes> {
        let mut out = Vec::new();
        let body = &mut self.body;
        body.clear();
        let mut n = 0;
        let close = |body: &mut Vec<u8>, n: usize| {
            // As `UpdateOut { node, ev }` is written: one allocation of the
            // message's size, the body copied in once.
            let mut buf = Vec::with_capacity(body.len() + node.len() + 16);
            codec::write_map_len(&mut buf, 2);
            codec::write_str(&mut buf, "node");
            codec::write_str(&mut buf, node);
            codec::write_str(&mut buf, "ev");
            codec::write_array_len(&mut buf, n);
            buf.extend_from_slice(body);
            body.clear();
            Bytes::from(buf)
        };
        for e in events {
            e.encode_form(body);
            n += 1;
            if body.len() >= BATCH_BYTES {
                out.push(close(body, n));
                n = 0;
            }
        }
        if n > 0 {
            out.push(close(body, n));
        }
        if body.capacity() > KEEP_BODY {
            *body = Vec::new();
        }
        out
    }
}

/// An info message as written: every field but `node` is left out when
/// empty.
#[derive(Serialize)]
struct InfoOut<'a> {
    node: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tick: Option<u64>,
    #[serde(skip_serializing_if = "no_ticks")]
    ticks: TicksOut<'a>,
    #[serde(skip_serializing_if = "no_set")]
    missing: &'a NodeSet,
    #[serde(skip_serializing_if = "no_set")]
    known: &'a NodeSet,
    #[serde(skip_serializing_if = "no_set")]
    deleted: &'a NodeSet,
    #[serde(skip_serializing_if = "no_names")]
    node_drop: Names<'a>,
    #[serde(skip_serializing_if = "no_ranges")]
    skipped: &'a RangeSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reply: bool,
}

fn no_ticks(t: &TicksOut<'_>) -> bool {
    t.0.is_empty()
}
fn no_set(s: &&NodeSet) -> bool {
    s.is_empty()
}
fn no_names(n: &Names<'_>) -> bool {
    n.0.is_empty()
}
fn no_ranges(r: &&RangeSet) -> bool {
    r.is_empty()
}

/// Node names as an array.
struct Names<'a>(&'a [NodeName]);

impl Serialize for Names<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| &**n))
    }
}

/// `{name: tick}`, in order.
struct TicksOut<'a>(&'a [(NodeName, u64)]);

impl Serialize for TicksOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (n, t) in self.0 {
            m.serialize_entry(&**n, t)?;
        }
        m.end()
    }
}

/// An info message as read.
#[derive(Deserialize)]
struct InfoIn<'a> {
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(default)]
    tick: Option<u64>,
    #[serde(default)]
    ticks: Ticks,
    #[serde(default)]
    missing: NodeSet,
    #[serde(default)]
    known: NodeSet,
    #[serde(default)]
    deleted: NodeSet,
    #[serde(default, borrow)]
    node_drop: Vec<Cow<'a, str>>,
    #[serde(default)]
    skipped: RangeSet,
    #[serde(default, borrow)]
    addr: Option<Cow<'a, str>>,
    #[serde(default)]
    reply: bool,
}

/// `{name: tick}` as read, in order.
#[derive(Default)]
struct Ticks(Vec<(NodeName, u64)>);

impl<'de> Deserialize<'de> for Ticks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ticks, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ticks;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of node names to ticks")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ticks, A::Error> {
                let mut out = Vec::new();
                while let Some((n, t)) = map.next_entry::<Cow<'de, str>, u64>()? {
                    out.push((NodeName::from(n), t));
                }
                Ok(Ticks(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Info {
    /// An empty info message from `node`.
    pub fn new(node: NodeName, tick: Option<u64>) -> Info {
        Info {
            node,
            tick,
            ..Info::default()
        }
    }

    /// Whether it says nothing beyond who sent it.
    pub fn is_empty(&self) -> bool {
        self.ticks.is_empty()
            && self.missing.is_empty()
            && self.known.is_empty()
            && self.deleted.is_empty()
            && self.node_drop.is_empty()
            && self.skipped.is_empty()
    }

    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let w = InfoOut {
            node: &self.node,
            tick: self.tick,
            ticks: TicksOut(&self.ticks),
            missing: &self.missing,
            known: &self.known,
            deleted: &self.deleted,
            node_drop: Names(&self.node_drop),
            skipped: &self.skipped,
            addr: self.addr.as_deref(),
            reply: self.reply,
        };
        let mut out = Vec::new();
        serial::encode(&w, &mut out);
        out.into()
    }

    /// Decodes the wire form.
    pub fn decode(buf: &[u8]) -> Result<Info, MsgError> {
        let w: InfoIn<'_> = serial::from_slice(buf)?;
        Ok(Info {
            node: NodeName::from(w.node),
            tick: w.tick,
            ticks: w.ticks.0,
            missing: w.missing,
            known: w.known,
            deleted: w.deleted,
            node_drop: w.node_drop.into_iter().map(NodeName::from).collect(),
            skipped: w.skipped,
            addr: w.addr.map(Cow::into_owned),
            reply: w.reply,
        })
    }
}

/// The topics of one cluster.
#[derive(Debug, Clone)]
pub struct Topics {
    /// The root itself.
    pub root: String,
    /// `…/update`.
    pub update: String,
    /// `…/info`.
    pub info: String,
    /// `…/ping`.
    pub ping: String,
    /// `…/del`.
    pub del: String,
}

impl Topics {
    /// The topics under `root`.
    pub fn new(root: &str) -> Topics {
        Topics {
            root: root.to_string(),
            update: format!("{root}/update"),
            info: format!("{root}/info"),
            ping: format!("{root}/ping"),
            del: format!("{root}/del"),
        }
    }

    /// Whether `topic` is the cluster's own (under the root).
    pub fn is_cluster(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&*self.root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// The sender of an encoded message, when its first key is `node` (as in
/// every message we encode), without decoding the rest: a node skips its
/// own batches coming back at no cost.
pub fn peek_sender(buf: &[u8]) -> Option<&str> {
    let rest = match *buf.first()? {
        0x81..=0x8f => &buf[1..],
        0xde => buf.get(3..)?,
        0xdf => buf.get(5..)?,
        _ => return None,
    };
    let (key, rest) = peek_str(rest)?;
    if key != "node" {
        return None;
    }
    peek_str(rest).map(|(name, _)| name)
}

/// A msgpack string at the start of `buf`, and what follows it.
fn peek_str(buf: &[u8]) -> Option<(&str, &[u8])> {
    let (len, skip) = match *buf.first()? {
        b @ 0xa0..=0xbf => (usize::from(b & 0x1f), 1),
        0xd9 => (usize::from(*buf.get(1)?), 2),
        0xda => (
            usize::from(u16::from_be_bytes([*buf.get(1)?, *buf.get(2)?])),
            3,
        ),
        _ => return None,
    };
    let s = buf.get(skip..skip + len)?;
    Some((std::str::from_utf8(s).ok()?, &buf[skip + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::{codec, path, Chain};
    use std::sync::Arc;

    fn ev(node: &str, tick: u64, value: Option<Value>) -> UpdateEvent {
        UpdateEvent {
            path: path!["a", "b"],
            chain: Chain::attach(node.into(), tick, Some(&Chain::single("x".into(), 3))),
            value,
            tock: 9,
        }
    }

    #[test]
    fn updates_round_trip_with_full_chains() {
        let u = Update {
            node: "n1".into(),
            events: vec![ev("n1", 5, Some(Value::str("v"))), ev("n1", 6, None)],
        };
        assert_eq!(Update::decode(&u.encode()).unwrap(), u);
    }

    #[test]
    fn the_sender_is_read_without_decoding_the_rest() {
        let u = Update {
            node: "n1".into(),
            events: vec![ev("n1", 5, None)],
        };
        assert_eq!(peek_sender(&u.encode()), Some("n1"));
        let long = "x".repeat(300);
        assert_eq!(
            peek_sender(&Info::new(long.as_str().into(), None).encode()),
            Some(&*long)
        );
        for bad in [
            &b""[..],
            b"\x81",
            b"\x81\xa4node",
            b"\x81\xa3nod\xa1x",
            b"\x91\xa4node",
            b"\x81\xa4node\xa5n1",
        ] {
            assert_eq!(peek_sender(bad), None, "{bad:?}");
        }
    }

    /// Messages as the hand-written codec wrote them before the move to
    /// serde: a node of either version reads the other's.
    #[test]
    fn messages_written_before_serde_read_and_rewrite_identically() {
        let chain = Chain::attach("n1".into(), 1 << 40, Some(&Chain::single("n2".into(), 3)));
        let u = Update {
            node: "n1".into(),
            events: vec![
                UpdateEvent {
                    path: path!["a", 1u64],
                    chain: chain.clone(),
                    value: Some(Value::map([(
                        "x",
                        Value::Array(vec![Value::Float(1.5), Value::Bin(Arc::from(&b"q"[..]))]),
                    )])),
                    tock: 77,
                },
                UpdateEvent {
                    path: path!["b"],
                    chain: Chain::single("n1".into(), 4),
                    value: None,
                    tock: 78,
                },
                UpdateEvent {
                    path: path!["c"],
                    chain,
                    value: Some(Value::Nil),
                    tock: 79,
                },
            ],
        };
        let old = distkv_model::hex::decode("82a46e6f6465a26e31a265769386a46e6f6465a26e31a47469636bcf0000010000000000a47072657683a46e6f6465a26e32a47469636b03a470726576c0a470617468c70303a16101a576616c756581a17892cb3ff8000000000000c40171a4746f636b4d85a46e6f6465a26e31a47469636b04a470726576c0a470617468d503a162a4746f636b4e86a46e6f6465a26e31a47469636bcf0000010000000000a47072657683a46e6f6465a26e32a47469636b03a470726576c0a470617468d503a163a576616c7565c0a4746f636b4f").expect("hex");
        assert_eq!(Update::decode(&old).unwrap(), u);
        assert_eq!(&u.encode()[..], &old[..]);
        let batches = UpdateEncoder::default().encode("n1", u.events.iter());
        assert_eq!(batches.len(), 1);
        assert_eq!(&batches[0][..], &old[..]);

        let mut i = Info::new("n2".into(), Some(7));
        i.ticks = vec![("n1".into(), 4), ("n2".into(), 1 << 40)];
        i.missing.insert(&"n1".into(), 3);
        i.known.insert(&"n1".into(), 1);
        i.known.insert(&"n1".into(), 2);
        i.known.insert(&"n3".into(), 9);
        i.deleted.insert(&"n2".into(), 2);
        i.node_drop.push("old".into());
        i.skipped = [5u64, 6, 9].into_iter().collect();
        i.addr = Some("h:1".into());
        i.reply = true;
        let old = distkv_model::hex::decode("8aa46e6f6465a26e32a47469636b07a57469636b7382a26e3104a26e32cf0000010000000000a76d697373696e6781a26e319103a56b6e6f776e82a26e3191920103a26e339109a764656c6574656481a26e329102a96e6f64655f64726f7091a36f6c64a7736b69707065649292050709a461646472a3683a31a57265706c79c3").expect("hex");
        assert_eq!(Info::decode(&old).unwrap(), i);
        assert_eq!(&i.encode()[..], &old[..]);
        let min = Info::new("n3".into(), None);
        assert_eq!(hex_of(&min.encode()), "81a46e6f6465a26e33");
        assert_eq!(
            Info::decode(&distkv_model::hex::decode("81a46e6f6465a26e33").expect("hex")).unwrap(),
            min
        );
    }

    /// A message of up to five events of every kind the codec reads.
    fn any_update() -> impl proptest::strategy::Strategy<Value = Update> {
        use proptest::strategy::Strategy;
        proptest::collection::vec(distkv_model::strategies::event(), 0..6).prop_map(|events| {
            Update {
                node: "n1".into(),
                events,
            }
        })
    }

    /// The fast road with a decoder of its own.
    fn fast(bytes: &[u8]) -> Option<Update> {
        Update::decode_fast(bytes, &mut EventDecoder::new())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x75_7064),
            ..proptest::test_runner::Config::default()
        })]

        /// Our writers' messages take the fast road to the message written;
        /// whatever byte is changed, the fast road accepts only what the
        /// general one decodes, to the same message.
        #[test]
        fn update_messages_decode_alike_by_both_roads(
            u in any_update(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut bytes = UpdateEncoder::default().encode("n1", u.events.iter()).concat();
            if u.events.is_empty() {
                bytes = u.encode().to_vec();
            }
            // A decoder kept between messages (a node's) reads the same.
            let mut kept = EventDecoder::new();
            proptest::prop_assert_eq!(Update::decode_fast(&bytes, &mut kept), Some(u.clone()));
            proptest::prop_assert_eq!(fast(&bytes), Some(u.clone()));
            proptest::prop_assert_eq!(Update::decode_general(&bytes).ok(), Some(u));
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let general = Update::decode_general(&bytes).ok();
            if let Some(fast) = fast(&bytes) {
                proptest::prop_assert_eq!(Some(fast), general.clone());
            }
            proptest::prop_assert_eq!(Update::decode(&bytes).ok(), general.clone());
            proptest::prop_assert_eq!(Update::decode_with(&bytes, &mut kept).ok(), general);
        }
    }

    #[test]
    fn the_fast_road_shares_node_names_and_refuses_what_the_general_one_refuses() {
        let u = Update {
            node: "n1".into(),
            events: vec![ev("n1", 5, Some(Value::Int(1))), ev("n1", 6, None)],
        };
        let mut kept = EventDecoder::new();
        let d = Update::decode_fast(&u.encode(), &mut kept).expect("fast road");
        assert_eq!(d, u);
        let head = |i: usize| d.events[i].chain.head().node.clone();
        assert!(NodeName::ptr_eq(&head(0), &head(1)));
        assert!(NodeName::ptr_eq(&head(0), &d.node));
        // A kept decoder shares them with the next messages too…
        let again = Update::decode_with(&u.encode(), &mut kept).expect("decodes");
        assert!(NodeName::ptr_eq(
            &again.events[0].chain.head().node,
            &head(0)
        ));
        // … and, met with more names than it keeps, starts over.
        for i in 0..200 {
            let other = Update {
                node: format!("m{i}").as_str().into(),
                events: vec![ev(&format!("m{i}"), 1, None)],
            };
            assert_eq!(
                Update::decode_with(&other.encode(), &mut kept).ok(),
                Some(other)
            );
        }
        let later = Update::decode_with(&u.encode(), &mut kept).expect("decodes");
        assert_eq!(later, u);
        assert!(NodeName::ptr_eq(
            &later.events[0].chain.head().node,
            &later.node
        ));

        // A foreign extension type, trailing bytes: refused by both.
        let foreign = Update {
            node: "n1".into(),
            events: vec![ev("n1", 5, Some(Value::Ext(9, Arc::from(&b"x"[..]))))],
        };
        let mut longer = u.encode().to_vec();
        longer.push(0xc0);
        for bad in [foreign.encode().to_vec(), longer] {
            assert_eq!(fast(&bad), None);
            assert!(Update::decode(&bad).is_err());
        }

        // An event beyond the budget is counted, and refused.
        let big = Update {
            node: "n1".into(),
            events: vec![ev("n1", 5, Some(Value::str(&"x".repeat(MAX_EVENT_BYTES))))],
        };
        let bytes = big.encode();
        assert_eq!(fast(&bytes), None);
        assert!(Update::decode(&bytes).is_err());
        // One within it but large enough to be counted takes the fast road.
        let large = Update {
            node: "n1".into(),
            events: vec![ev(
                "n1",
                5,
                Some(Value::str(&"x".repeat(MAX_EVENT_BYTES / 8))),
            )],
        };
        assert_eq!(fast(&large.encode()), Some(large));
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn foreign_extensions_and_oversized_events_are_refused() {
        let mut u = Update {
            node: "n1".into(),
            events: vec![ev("n1", 5, Some(Value::Ext(7, Arc::from(&b"z"[..]))))],
        };
        assert!(matches!(
            Update::decode(&u.encode()),
            Err(MsgError::Shape("update", _))
        ));
        // Deep inside the value or the path, after scalars and nested
        // values without one: refused too; the same without it: taken.
        let ext = Value::Ext(7, Arc::from(&b"z"[..]));
        let nested = |last: Value| {
            Value::Map(vec![
                (
                    Value::str("k"),
                    Value::Array(vec![Value::Int(1), Value::str("s")]),
                ),
                (Value::Int(2), Value::Array(vec![Value::Nil, last])),
            ])
        };
        for (path, value) in [
            (path!["a", "b"], nested(ext.clone())),
            (
                distkv_model::Path::new(vec![Value::str("a"), nested(ext.clone())]),
                Value::Int(1),
            ),
        ] {
            u.events[0].path = path;
            u.events[0].value = Some(value);
            assert!(matches!(
                Update::decode(&u.encode()),
                Err(MsgError::Shape("update", _))
            ));
        }
        u.events[0].path = distkv_model::Path::new(vec![Value::str("a"), nested(Value::Int(3))]);
        u.events[0].value = Some(nested(Value::str("no extension")));
        assert_eq!(Update::decode(&u.encode()).unwrap(), u);
        u.events[0].path = path!["a", "b"];
        u.events[0].value = Some(Value::Bin(Arc::from(vec![
            0u8;
            distkv_model::budget::MAX_EVENT_BYTES
        ])));
        assert!(matches!(
            Update::decode(&u.encode()),
            Err(MsgError::Shape("update", _))
        ));
        u.events[0].value = Some(Value::Bin(Arc::from(vec![0u8; 1000])));
        assert_eq!(
            serial::encoded_len(&u.events[0]),
            codec::encoded_len(&u.events[0].to_value(-1))
        );
        assert_eq!(Update::decode(&u.encode()).unwrap(), u);
    }

    /// One encoder used for a few changes, then a burst beyond a message's
    /// budget, then a few again: every message holds its events in order,
    /// a message closes once its body reaches [`BATCH_BYTES`], nothing of
    /// one call shows in the next, and the buffer kept is bounded.
    #[test]
    fn an_encoder_kept_between_calls_encodes_as_a_fresh_one() {
        let small: Vec<_> = (0..5).map(|t| ev("n1", t, Some(Value::uint(t)))).collect();
        let big: Vec<_> = (10..15)
            .map(|t| ev("n1", t, Some(Value::Bin(Arc::from(vec![t as u8; 900_000])))))
            .collect();
        let events = |msgs: &[Bytes]| -> Vec<UpdateEvent> {
            msgs.iter()
                .flat_map(|m| Update::decode(m).unwrap().events)
                .collect()
        };
        let fresh = |evs: &[UpdateEvent]| UpdateEncoder::default().encode("n1", evs);
        let mut enc = UpdateEncoder::default();
        let first = enc.encode("n1", small.iter());
        assert_eq!(first, fresh(&small));
        assert_eq!(events(&first), small);

        let burst = enc.encode("n1", big.iter());
        assert_eq!(burst, fresh(&big));
        // 900 000-byte events: the fifth takes the body past 4 MiB.
        let counts: Vec<_> = burst
            .iter()
            .map(|m| Update::decode(m).unwrap().events.len())
            .collect();
        assert_eq!(counts, [5]);
        assert_eq!(events(&burst), big);
        let more: Vec<_> = big.iter().chain(&big).cloned().collect();
        let split = enc.encode("n1", more.iter());
        let counts: Vec<_> = split
            .iter()
            .map(|m| Update::decode(m).unwrap().events.len())
            .collect();
        assert_eq!(counts, [5, 5]);
        assert_eq!(events(&split), more);
        assert!(enc.body.capacity() <= KEEP_BODY);

        let again = enc.encode("n1", small.iter().rev());
        let reversed: Vec<_> = small.iter().rev().cloned().collect();
        assert_eq!(again, fresh(&reversed));
        assert_eq!(events(&again), reversed);
        assert!(enc
            .encode("n1", std::iter::empty::<&UpdateEvent>())
            .is_empty());
    }

    #[test]
    fn info_round_trips() {
        let mut i = Info::new("n2".into(), Some(7));
        i.ticks = vec![("n1".into(), 4), ("n2".into(), 7)];
        i.missing.insert(&"n1".into(), 3);
        i.known.insert(&"n1".into(), 1);
        i.deleted.insert(&"n2".into(), 2);
        i.node_drop.push("old".into());
        i.addr = Some("h:1".into());
        assert_eq!(Info::decode(&i.encode()).unwrap(), i);
        assert!(Info::new("n".into(), None).is_empty());
    }

    #[test]
    fn bad_messages_are_errors() {
        assert!(Update::decode(b"\xc1").is_err());
        assert!(Update::decode(&codec::to_vec(&Value::uint(3))).is_err());
        let no_events = Value::map([("node", Value::str("n"))]);
        assert!(Update::decode(&codec::to_vec(&no_events)).is_err());
        let bad_ev = Value::map([
            ("node", Value::str("n")),
            ("ev", Value::Array(vec![Value::uint(1)])),
        ]);
        assert!(Update::decode(&codec::to_vec(&bad_ev)).is_err());
        let bad_ticks = Value::map([("node", Value::str("n")), ("ticks", Value::Array(vec![]))]);
        assert!(Info::decode(&codec::to_vec(&bad_ticks)).is_err());
    }
}
