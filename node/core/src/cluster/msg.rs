//! Server-to-server messages on the `update` and `info` topics.
//!
//! Ours, not DistKV's (clients never see the server protocol, so it is
//! ours to choose; the roles stay): one message carries a whole batch of events, and no message
//! is split into 450-byte chunks. Every message names its sender, which is
//! how a node recognises its own messages coming back from the bus.
//!
//! * `update`: `{node, ev: [UpdateEvent…]}` — events with full chains.
//! * `info`: `{node, tick?, addr?, ticks?, missing?, known?, deleted?, node_drop?}`
//!   — `ticks` is `{name: tick}`, the other sets are NodeSets (§1.4).

use bytes::Bytes;
use distkv_model::budget::{check_event_size, INTERNAL_LIMITS};
use distkv_model::codec::{self, Limits};
use distkv_model::{NodeName, NodeSet, RangeSet, UpdateEvent, Value};

/// Decoding limits for bus messages: room for one change within the
/// budget, wrapped (broadcast batches are cut to fit, see
/// [`BATCH_BYTES`]); extension types DistKV's clients cannot read are
/// refused.
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
    /// Not msgpack, or beyond the limits.
    #[error("undecodable message: {0}")]
    Decode(#[from] codec::DecodeError),
    /// Decodable, but not the expected shape.
    #[error("bad {0} message: {1}")]
    Shape(&'static str, String),
}

impl Update {
    /// The wire form.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(64 + 64 * self.events.len());
        encode_update(&self.node, self.events.iter(), &mut out);
        out.into()
    }

    /// Decodes the wire form.
    pub fn decode(buf: &[u8]) -> Result<Update, MsgError> {
        let v = codec::decode_with(buf, BUS_LIMITS)?;
        let bad = |why: &str| MsgError::Shape("update", why.to_string());
        let node = sender(&v).ok_or_else(|| bad("no sender"))?;
        let list = v
            .get("ev")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no events"))?;
        let events = list
            .iter()
            .map(|e| {
                check_event_size(codec::encoded_len(e)).map_err(|e| bad(&e.to_string()))?;
                UpdateEvent::from_value(e).map_err(|e| bad(&e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Update { node, events })
    }
}

/// Encodes `events` as update messages from `node`, each closed once its
/// events take [`BATCH_BYTES`] (an event within the budget always fits a
/// message of its own).
pub fn encode_updates<'a>(
    node: &str,
    events: impl IntoIterator<Item = &'a UpdateEvent>,
) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut body = Vec::new();
    let mut n = 0;
    let mut close = |body: &mut Vec<u8>, n: usize| {
        let mut buf = Vec::with_capacity(body.len() + node.len() + 16);
        codec::write_map_len(&mut buf, 2);
        codec::write_str(&mut buf, "node");
        codec::write_str(&mut buf, node);
        codec::write_str(&mut buf, "ev");
        codec::write_array_len(&mut buf, n);
        buf.extend_from_slice(body);
        body.clear();
        out.push(Bytes::from(buf));
    };
    for e in events {
        e.encode_full(&mut body);
        n += 1;
        if body.len() >= BATCH_BYTES {
            close(&mut body, n);
            n = 0;
        }
    }
    if n > 0 {
        close(&mut body, n);
    }
    out
}

/// Encodes one update message from borrowed events.
pub fn encode_update<'a>(
    node: &str,
    events: impl ExactSizeIterator<Item = &'a UpdateEvent>,
    out: &mut Vec<u8>,
) {
    codec::write_map_len(out, 2);
    codec::write_str(out, "node");
    codec::write_str(out, node);
    codec::write_str(out, "ev");
    codec::write_array_len(out, events.len());
    for e in events {
        e.encode_full(out);
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
        let mut m = vec![(Value::str("node"), Value::Str(self.node.clone()))];
        if let Some(t) = self.tick {
            m.push((Value::str("tick"), Value::uint(t)));
        }
        if !self.ticks.is_empty() {
            let t = self
                .ticks
                .iter()
                .map(|(n, t)| (Value::Str(n.clone()), Value::uint(*t)))
                .collect();
            m.push((Value::str("ticks"), Value::Map(t)));
        }
        for (k, s) in [
            ("missing", &self.missing),
            ("known", &self.known),
            ("deleted", &self.deleted),
        ] {
            if !s.is_empty() {
                m.push((Value::str(k), s.to_value()));
            }
        }
        if !self.node_drop.is_empty() {
            let d = self.node_drop.iter().cloned().map(Value::Str).collect();
            m.push((Value::str("node_drop"), Value::Array(d)));
        }
        if !self.skipped.is_empty() {
            m.push((Value::str("skipped"), self.skipped.to_value()));
        }
        if let Some(a) = &self.addr {
            m.push((Value::str("addr"), Value::str(a)));
        }
        if self.reply {
            m.push((Value::str("reply"), Value::Bool(true)));
        }
        codec::to_vec(&Value::Map(m)).into()
    }

    /// Decodes the wire form.
    pub fn decode(buf: &[u8]) -> Result<Info, MsgError> {
        let v = codec::decode_with(buf, BUS_LIMITS)?;
        let bad = |why: &str| MsgError::Shape("info", why.to_string());
        let node = sender(&v).ok_or_else(|| bad("no sender"))?;
        let mut info = Info::new(node, v.get("tick").and_then(Value::as_u64));
        info.addr = v.get("addr").and_then(Value::as_str).map(str::to_string);
        info.reply = v.get("reply").is_some_and(Value::truthy);
        if let Some(t) = v.get("ticks") {
            let m = t.as_map().ok_or_else(|| bad("ticks is not a map"))?;
            for (n, t) in m {
                match (n.as_str(), t.as_u64()) {
                    (Some(n), Some(t)) => info.ticks.push((NodeName::from(n), t)),
                    _ => return Err(bad("ticks holds a bad item")),
                }
            }
        }
        let set = |k: &str| -> Result<NodeSet, MsgError> {
            v.get(k).map_or(Ok(NodeSet::default()), |s| {
                NodeSet::from_value(s).map_err(|e| bad(&format!("{k}: {}", e.0)))
            })
        };
        info.missing = set("missing")?;
        info.known = set("known")?;
        info.deleted = set("deleted")?;
        if let Some(s) = v.get("skipped") {
            info.skipped =
                RangeSet::from_value(s).map_err(|e| bad(&format!("skipped: {}", e.0)))?;
        }
        if let Some(d) = v.get("node_drop") {
            let a = d.as_array().ok_or_else(|| bad("node_drop is not a list"))?;
            for n in a {
                let n = n
                    .as_str()
                    .ok_or_else(|| bad("node_drop holds a non-name"))?;
                info.node_drop.push(NodeName::from(n));
            }
        }
        Ok(info)
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

fn sender(v: &Value) -> Option<NodeName> {
    v.get("node").and_then(Value::as_str).map(NodeName::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::{path, Chain};

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
