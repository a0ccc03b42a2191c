//! Log records: what one entry of a segment file says, and its msgpack form.
//!
//! A [`LogRecord`] is an applied [`UpdateEvent`], a periodic
//! [`State`](LogRecord::State) record (the node's ticks and its known and
//! deleted tick sets), or a [`Lost`](LogRecord::Lost) record that a salvage
//! left where damaged blocks were (see [`crate::salvage`]).
//!
//! Sequence numbers are the node's log positions, the same numbers as the
//! in-memory [`EventLog`](crate::EventLog) and a snapshot's `seq`. Each
//! *event* occupies one position: event seqs are gap-free, increasing by one
//! from event to event, within and across segment files. A *state* record
//! occupies none: its seq is that of the last event before it (the position
//! it describes: the state after every event with seq ≤ it, the convention
//! of snapshots), so it may equal the preceding event's seq, or be the
//! segment's `first_seq − 1` when no event precedes it in the segment. A
//! *lost* record stands for the events `from ..= seq` that a salvage could
//! not read back (none when `from = seq + 1`): it occupies their positions,
//! so the event after it has seq `seq + 1`. The writer enforces this and
//! the reader checks it (`check_sequence`).
//!
//! The payload is one msgpack map (serde-derived, written and read by
//! rmp-serde through [`distkv_model::serial`]) with a type tag `t`:
//!
//! * event: `{t: "e", seq, ms, ev}` where `ev` is the event's wire form with
//!   its whole chain (the bytes of [`UpdateEvent::to_value`]`(-1)`);
//! * state: `{t: "s", seq, ms, nodes: {name: tick | nil}, known, deleted,
//!   skipped?}` where `known` and `deleted` are [`NodeSet`] wire forms
//!   (nodes with an empty set are left out) and `skipped`, present only when
//!   not empty, is a [`RangeSet`] wire form: the log's own node's ticks it
//!   declared never used when it started after an unclean stop;
//! * lost: `{t: "l", seq, ms, from, why}`: events `from ..= seq` are lost;
//!   `ms` is the time of the last record read before the damage, `why` says
//!   where the damage was and where the damaged file was kept.
//!
//! Decoding is total: any byte string yields a record or a [`RecordError`],
//! never a panic.

use std::borrow::Cow;

use distkv_model::{codec, serial};
use distkv_model::{NodeName, NodeSet, RangeSet, UpdateEvent};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use crate::Seq;

/// One record of the on-disk event log.
///
/// Stored as one msgpack map ([`LogRecord::encode`]):
///
/// | kind | map |
/// |---|---|
/// | event | `{"t": "e", "seq": uint, "ms": uint, "ev": UpdateEvent wire form, whole chain}` |
/// | state | `{"t": "s", "seq": uint, "ms": uint, "nodes": {name: tick or nil}, "known": NodeSet, "deleted": NodeSet, "skipped"?: RangeSet}` |
/// | lost | `{"t": "l", "seq": uint, "ms": uint, "from": uint, "why": str}` |
///
/// Keys are written in that order; decoding accepts any order and ignores
/// unknown keys. Inside a block each record is prefixed with its length
/// (u32 LE), see [`crate::block::BlockHeader`].
#[derive(Clone, Debug, PartialEq)]
pub enum LogRecord {
    /// An event the node applied.
    Event {
        /// The event's log position.
        seq: Seq,
        /// Wall-clock time the caller passed in, ms since the Unix epoch.
        time_ms: u64,
        /// The event, with its whole chain.
        event: UpdateEvent,
    },
    /// A periodic summary of the node's state after every event up to `seq`.
    State {
        /// The seq of the last event before this record (it occupies no
        /// position of its own).
        seq: Seq,
        /// Wall-clock time the caller passed in, ms since the Unix epoch.
        time_ms: u64,
        /// Each known node with its last tick (`None`: no tick yet), in the
        /// caller's order.
        nodes: Vec<(NodeName, Option<u64>)>,
        /// Ticks known to have been seen, per node.
        known: NodeSet,
        /// Ticks of deletions still remembered, per node.
        deleted: NodeSet,
        /// The log's own node's ticks declared never used: after an unclean
        /// stop the node resumes above its durable tick reservation, and
        /// the ticks between its last logged change and the reservation
        /// were never given out. Empty but in the first state record after
        /// such a start.
        skipped: RangeSet,
    },
    /// Written by a salvage in place of damaged blocks: the events
    /// `from ..= seq` could not be read back (none when `from = seq + 1`:
    /// the damaged blocks held state records only). The node no longer has
    /// those events; their ticks are missing and peers can send them back.
    Lost {
        /// The seq of the last lost event (`from − 1` if none was lost).
        seq: Seq,
        /// Wall-clock time of the last record read before the damage, ms
        /// since the Unix epoch (0: none), so that times stay in order.
        time_ms: u64,
        /// The seq of the first lost event.
        from: Seq,
        /// Where the damage was, what it was, and where the damaged file
        /// was kept.
        why: String,
    },
}

/// Bytes that are not a valid log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid log record: {0}")]
pub struct RecordError(pub String);

/// The type tag `t`.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
enum Kind {
    #[serde(rename = "e")]
    Event,
    #[serde(rename = "s")]
    State,
    #[serde(rename = "l")]
    Lost,
}

/// A state record as written.
#[derive(Serialize)]
struct StateOut<'a> {
    t: Kind,
    seq: Seq,
    ms: u64,
    nodes: NodeTicks<'a>,
    known: &'a NodeSet,
    deleted: &'a NodeSet,
    #[serde(skip_serializing_if = "RangeSet::is_empty")]
    skipped: &'a RangeSet,
}

/// A lost record as written.
#[derive(Serialize)]
struct LostOut<'a> {
    t: Kind,
    seq: Seq,
    ms: u64,
    from: Seq,
    why: &'a str,
}

/// `{name: tick | nil}` in the caller's order.
struct NodeTicks<'a>(&'a [(NodeName, Option<u64>)]);

impl Serialize for NodeTicks<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (n, t) in self.0 {
            m.serialize_entry(&**n, t)?;
        }
        m.end()
    }
}

/// `{name: tick | nil}` as read, in file order.
struct NodeTicksIn(Vec<(NodeName, Option<u64>)>);

impl<'de> Deserialize<'de> for NodeTicksIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NodeTicksIn, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeTicksIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of node names to ticks or nil")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeTicksIn, A::Error> {
                let mut nodes = Vec::new();
                while let Some((n, t)) = map.next_entry::<Cow<'de, str>, Option<u64>>()? {
                    nodes.push((NodeName::from(n), t));
                }
                Ok(NodeTicksIn(nodes))
            }
        }
        d.deserialize_map(V)
    }
}

/// Any record as read: the fields of every kind, checked against `t`.
#[derive(Deserialize)]
struct RecordIn<'a> {
    t: Kind,
    seq: Seq,
    ms: u64,
    ev: Option<UpdateEvent>,
    nodes: Option<NodeTicksIn>,
    known: Option<NodeSet>,
    deleted: Option<NodeSet>,
    skipped: Option<RangeSet>,
    from: Option<Seq>,
    #[serde(borrow)]
    why: Option<Cow<'a, str>>,
}

fn missing(name: &str) -> RecordError {
    RecordError(format!("field {name:?} is missing"))
}

impl LogRecord {
    /// The record's seq: an event's position, for a state record the
    /// position of the last event it reflects, for a lost record the
    /// position of the last lost event.
    pub fn seq(&self) -> Seq {
        match self {
            LogRecord::Event { seq, .. }
            | LogRecord::State { seq, .. }
            | LogRecord::Lost { seq, .. } => *seq,
        }
    }

    /// The wall-clock time stored with the record.
    pub fn time_ms(&self) -> u64 {
        match self {
            LogRecord::Event { time_ms, .. }
            | LogRecord::State { time_ms, .. }
            | LogRecord::Lost { time_ms, .. } => *time_ms,
        }
    }

    /// The seq the next event must have right before this record, as the
    /// record itself implies: an event's own seq, one more than a state
    /// record's, a lost record's `from`. (Where reading resumes after
    /// damage, the first record found tells how far the log got.)
    pub fn resumes_at(&self) -> Seq {
        match self {
            LogRecord::Event { seq, .. } => *seq,
            LogRecord::State { seq, .. } => seq.saturating_add(1),
            LogRecord::Lost { from, .. } => *from,
        }
    }

    /// Appends the record's msgpack bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LogRecord::Event {
                seq,
                time_ms,
                event,
            } => encode_event(*seq, *time_ms, event, out),
            LogRecord::State {
                seq,
                time_ms,
                nodes,
                known,
                deleted,
                skipped,
            } => serial::encode(
                &StateOut {
                    t: Kind::State,
                    seq: *seq,
                    ms: *time_ms,
                    nodes: NodeTicks(nodes),
                    known,
                    deleted,
                    skipped,
                },
                out,
            ),
            LogRecord::Lost {
                seq,
                time_ms,
                from,
                why,
            } => serial::encode(
                &LostOut {
                    t: Kind::Lost,
                    seq: *seq,
                    ms: *time_ms,
                    from: *from,
                    why,
                },
                out,
            ),
        }
    }

    /// Decodes one record from exactly `bytes` (a reader of many records
    /// shares node names with a [`crate::RecordDecoder`]).
    pub fn decode(bytes: &[u8]) -> Result<LogRecord, RecordError> {
        crate::RecordDecoder::new().decode(bytes)
    }

    /// [`LogRecord::decode`] by the general serde decoder, which takes
    /// every layout (the fast road takes the writer's own event layout
    /// only, see [`crate::RecordDecoder`]): the reference the fast road is
    /// held to, by the tests and the fuzz targets.
    pub fn decode_general(bytes: &[u8]) -> Result<LogRecord, RecordError> {
        let r: RecordIn<'_> = serial::from_slice(bytes).map_err(|e| RecordError(e.to_string()))?;
        let (seq, time_ms) = (r.seq, r.ms);
        match r.t {
            Kind::Event => Ok(LogRecord::Event {
                seq,
                time_ms,
                event: r.ev.ok_or_else(|| missing("ev"))?,
            }),
            Kind::State => Ok(LogRecord::State {
                seq,
                time_ms,
                nodes: r.nodes.ok_or_else(|| missing("nodes"))?.0,
                known: r.known.ok_or_else(|| missing("known"))?,
                deleted: r.deleted.ok_or_else(|| missing("deleted"))?,
                skipped: r.skipped.unwrap_or_default(),
            }),
            Kind::Lost => {
                let from = r.from.ok_or_else(|| missing("from"))?;
                if seq.checked_add(1).is_none_or(|end| from > end) {
                    return Err(RecordError(format!(
                        "lost record from {from} to {seq}: the range is reversed"
                    )));
                }
                Ok(LogRecord::Lost {
                    seq,
                    time_ms,
                    from,
                    why: r.why.ok_or_else(|| missing("why"))?.into_owned(),
                })
            }
        }
    }
}

/// A record's place in the log's sequence: what [`check_sequence`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// An event at this seq.
    Event(Seq),
    /// A state record after the event at this seq.
    State(Seq),
    /// A lost record for the events `from ..= seq`.
    Lost { from: Seq, seq: Seq },
}

impl LogRecord {
    /// The record's place in the log's sequence.
    pub(crate) fn place(&self) -> Place {
        match self {
            LogRecord::Event { seq, .. } => Place::Event(*seq),
            LogRecord::State { seq, .. } => Place::State(*seq),
            LogRecord::Lost { seq, from, .. } => Place::Lost {
                from: *from,
                seq: *seq,
            },
        }
    }
}

/// Checks that a record at `place` continues a log whose next event must
/// have seq `*next`, and advances `*next` past an event or a lost record.
/// `Err((expected, found))` otherwise: an event must have seq `*next`, a
/// state record `*next − 1`, a lost record must start at `*next`.
pub(crate) fn check_sequence(place: Place, next: &mut Seq) -> Result<(), (Seq, Seq)> {
    match place {
        Place::Event(seq) => {
            if seq != *next {
                return Err((*next, seq));
            }
            // An event at u64::MAX leaves no position for the next one.
            *next = next.checked_add(1).ok_or((*next, seq))?;
        }
        Place::State(seq) => {
            if next.checked_sub(1) != Some(seq) {
                return Err((next.saturating_sub(1), seq));
            }
        }
        Place::Lost { from, seq } => {
            if from != *next {
                return Err((*next, from));
            }
            // Decoding guarantees `from ≤ seq + 1`.
            *next = seq.checked_add(1).ok_or((*next, seq))?;
        }
    }
    Ok(())
}

/// An event as the log and the broadcast write it: an [`UpdateEvent`], or
/// an in-memory log's record of one ([`crate::LogEntry`]), which writes the
/// same bytes from its own.
pub trait EventForm {
    /// Appends the event's msgpack form to `out`: the bytes
    /// [`UpdateEvent`]'s serialization writes.
    fn encode_form(&self, out: &mut Vec<u8>);
}

impl EventForm for UpdateEvent {
    fn encode_form(&self, out: &mut Vec<u8>) {
        serial::encode(self, out);
    }
}

impl EventForm for crate::LogEntry<'_> {
    fn encode_form(&self, out: &mut Vec<u8>) {
        self.encode(out);
    }
}

impl<E: EventForm + ?Sized> EventForm for &E {
    fn encode_form(&self, out: &mut Vec<u8>) {
        (**self).encode_form(out);
    }
}

/// Appends the bytes of an event record to `out` (same bytes as
/// [`LogRecord::encode`] of the equivalent record, without cloning the
/// event).
pub fn encode_event<E: EventForm + ?Sized>(seq: Seq, time_ms: u64, event: &E, out: &mut Vec<u8>) {
    // `{t: "e", seq, ms, ev}`, as serde writes the record (the tests hold
    // the two to the same bytes).
    out.extend_from_slice(&[0x84, 0xa1, b't', 0xa1, b'e', 0xa3, b's', b'e', b'q']);
    codec::write_uint(out, seq);
    out.extend_from_slice(&[0xa2, b'm', b's']);
    codec::write_uint(out, time_ms);
    out.extend_from_slice(&[0xa2, b'e', b'v']);
    event.encode_form(out);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use distkv_model::{path, Chain, Path, RangeSet, Value};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::uint),
            any::<f64>().prop_map(Value::Float),
            "[a-z0-9 ]{0,12}".prop_map(|s| Value::str(&s)),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| Value::Bin(Arc::from(b))),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-z]{1,4}", inner), 0..4).prop_map(|kv| {
                    Value::Map(kv.into_iter().map(|(k, v)| (Value::str(&k), v)).collect())
                }),
            ]
        })
    }

    fn event() -> impl Strategy<Value = UpdateEvent> {
        (
            proptest::collection::vec("[a-z]{1,6}", 0..4),
            proptest::collection::btree_map("[a-z]{1,3}", 0u64..1 << 40, 1..4),
            proptest::option::of(value()),
            0u64..1 << 40,
        )
            .prop_map(|(p, links, value, tock)| {
                let mut chain: Option<Chain> = None;
                for (n, t) in links {
                    chain = Some(Chain::attach(NodeName::from(n.as_str()), t, chain.as_ref()));
                }
                UpdateEvent {
                    path: Path::new(p.iter().map(|s| Value::str(s)).collect()),
                    chain: chain.expect("at least one link"),
                    value,
                    tock,
                }
            })
    }

    fn node_set() -> impl Strategy<Value = NodeSet> {
        proptest::collection::btree_map(
            "[a-z]{1,3}",
            proptest::collection::btree_set(0u64..100, 1..10),
            0..4,
        )
        .prop_map(|m| {
            NodeSet(
                m.into_iter()
                    .map(|(n, s)| {
                        (
                            NodeName::from(n.as_str()),
                            s.into_iter().collect::<RangeSet>(),
                        )
                    })
                    .collect(),
            )
        })
    }

    pub(crate) fn record() -> impl Strategy<Value = LogRecord> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), event()).prop_map(|(seq, time_ms, event)| {
                LogRecord::Event {
                    seq,
                    time_ms,
                    event,
                }
            }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(("[a-z]{1,4}", proptest::option::of(any::<u64>())), 0..4),
                node_set(),
                node_set(),
                proptest::collection::vec((1u64..1 << 40, 1u64..1000), 0..3),
            )
                .prop_map(|(seq, time_ms, nodes, known, deleted, skipped)| {
                    LogRecord::State {
                        seq,
                        time_ms,
                        nodes: nodes
                            .into_iter()
                            .map(|(n, t)| (NodeName::from(n.as_str()), t))
                            .collect(),
                        known,
                        deleted,
                        skipped: skipped.into_iter().flat_map(|(a, n)| a..a + n).collect(),
                    }
                }),
            (0u64..1 << 62, any::<u64>(), 0u64..3, "[a-z .:0-9]{0,30}").prop_map(
                |(seq, time_ms, n, why)| LogRecord::Lost {
                    seq,
                    time_ms,
                    from: (seq + 1).saturating_sub(n),
                    why,
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn records_round_trip(r in record()) {
            let mut bytes = Vec::new();
            r.encode(&mut bytes);
            let back = LogRecord::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &r);
            // Both roads of decoding agree.
            let general = LogRecord::decode_general(&bytes)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&general, &r);
            let mut again = Vec::new();
            back.encode(&mut again);
            prop_assert_eq!(again, bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LogRecord::decode(&bytes);
        }
    }

    /// Records as the hand-written codec wrote them before the move to
    /// serde (the bytes of files written by earlier versions).
    const GOLDEN: [&str; 6] = [
        "84a174a165a373657101a26d73cf0000018bcfe5687ba2657686a46e6f6465a26e31a47469636bcf0000010000000000a47072657683a46e6f6465a86e6f64652d74776fa47469636b07a47072657683a46e6f6465a163a47469636b00a470726576c0a470617468c70e03a36f6e6502cb3fe0000000000000a576616c756589a173a178a169d2fffeee90a175cfffffffffffffffffa3626967c70902010203040506070809a166cb4004000000000000a162c40200ffa170d603a16101c0a16193c39080a165d5097a7aa4746f636bcf0000000200000000",
        "84a174a165a373657102a26d7305a2657685a46e6f6465a17aa47469636bcd012ca470726576c0a470617468c70003a4746f636b00",
        "84a174a165a373657103a26d7305a2657686a46e6f6465a26e31a47469636bcf0000010000000000a47072657683a46e6f6465a86e6f64652d74776fa47469636b07a47072657683a46e6f6465a163a47469636b00a470726576c0a470617468c70a03c70703a66e6573746564a576616c7565c0a4746f636b0c",
        "87a174a173a373657103a26d7306a56e6f64657382a26e31cf0000010000000000a17ac0a56b6e6f776e81a26e31939201040792cd012ccd012ea764656c6574656481a26e329105a7736b697070656492920a0d14",
        "86a174a173a373657103a26d7307a56e6f64657380a56b6e6f776e80a764656c6574656481a26e329105",
        "85a174a16ca373657109a26d7308a466726f6d04a3776879d939626c6f636b2061742034303936206f662030303030303030312e7365673a20626164204352433b206b65707420617320782e64616d61676564",
    ];

    fn golden_records() -> Vec<LogRecord> {
        let chain = Chain::attach(
            "n1".into(),
            1 << 40,
            Some(&Chain::attach(
                "node-two".into(),
                7,
                Some(&Chain::single("c".into(), 0)),
            )),
        );
        let value = Value::map([
            ("s", Value::str("x")),
            ("i", Value::Int(-70000)),
            ("u", Value::uint(u64::MAX)),
            (
                "big",
                Value::BigUint(Arc::from(&[1u8, 2, 3, 4, 5, 6, 7, 8, 9][..])),
            ),
            ("f", Value::Float(2.5)),
            ("b", Value::Bin(Arc::from(&b"\x00\xff"[..]))),
            ("p", Value::Path(path!["a", 1u64, Value::Nil])),
            (
                "a",
                Value::Array(vec![
                    Value::Bool(true),
                    Value::Array(vec![]),
                    Value::map([]),
                ]),
            ),
            ("e", Value::Ext(9, Arc::from(&b"zz"[..]))),
        ]);
        let mut known = NodeSet::default();
        known.0.insert(
            "n1".into(),
            [1u64, 2, 3, 7, 300, 301].into_iter().collect::<RangeSet>(),
        );
        let mut deleted = NodeSet::default();
        deleted
            .0
            .insert("n2".into(), [5u64].into_iter().collect::<RangeSet>());
        vec![
            LogRecord::Event {
                seq: 1,
                time_ms: 1_700_000_000_123,
                event: UpdateEvent {
                    path: path!["one", 2u64, Value::Float(0.5)],
                    chain: chain.clone(),
                    value: Some(value),
                    tock: 1 << 33,
                },
            },
            LogRecord::Event {
                seq: 2,
                time_ms: 5,
                event: UpdateEvent {
                    path: Path::root(),
                    chain: Chain::single("z".into(), 300),
                    value: None,
                    tock: 0,
                },
            },
            LogRecord::Event {
                seq: 3,
                time_ms: 5,
                event: UpdateEvent {
                    path: path![Value::Path(path!["nested"])],
                    chain,
                    value: Some(Value::Nil),
                    tock: 12,
                },
            },
            LogRecord::State {
                seq: 3,
                time_ms: 6,
                nodes: vec![
                    (NodeName::from("n1"), Some(1 << 40)),
                    (NodeName::from("z"), None),
                ],
                known: known.clone(),
                deleted: deleted.clone(),
                skipped: [10u64, 11, 12, 20].into_iter().collect(),
            },
            LogRecord::State {
                seq: 3,
                time_ms: 7,
                nodes: vec![],
                known: NodeSet::default(),
                deleted,
                skipped: RangeSet::new(),
            },
            LogRecord::Lost {
                seq: 9,
                time_ms: 8,
                from: 4,
                why: "block at 4096 of 00000001.seg: bad CRC; kept as x.damaged".into(),
            },
        ]
    }

    #[test]
    fn records_written_before_serde_read_and_rewrite_identically() -> Result<(), RecordError> {
        for (hex, want) in GOLDEN.iter().zip(golden_records()) {
            let bytes = distkv_model::hex::decode(hex).expect("hex");
            let r = LogRecord::decode(&bytes)?;
            assert_eq!(r, want);
            let mut again = Vec::new();
            r.encode(&mut again);
            assert_eq!(again, bytes, "{r:?}");
        }
        Ok(())
    }

    /// A change at every limit of the budget is written and read back; one
    /// level more is refused with an error, not a panic or an overflow.
    #[test]
    fn records_at_the_budget_round_trip_and_beyond_it_are_refused() -> Result<(), RecordError> {
        use distkv_model::budget::{MAX_CHAIN_LINKS, MAX_NESTING};
        let nested = |depth: usize| {
            let mut v = Value::Int(1);
            for _ in 0..depth {
                v = Value::Array(vec![v]);
            }
            v
        };
        let event = UpdateEvent {
            path: Path::new(vec![Value::str("a"), nested(MAX_NESTING - 1)]),
            chain: distkv_model::strategies::chain_of(MAX_CHAIN_LINKS),
            value: Some(nested(MAX_NESTING)),
            tock: 9,
        };
        let r = LogRecord::Event {
            seq: 1,
            time_ms: 2,
            event: event.clone(),
        };
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        assert_eq!(LogRecord::decode(&bytes)?, r);
        for beyond in [
            UpdateEvent {
                value: Some(nested(MAX_NESTING + 1)),
                ..event.clone()
            },
            UpdateEvent {
                path: Path::new(vec![nested(MAX_NESTING)]),
                ..event.clone()
            },
            UpdateEvent {
                value: Some(nested(MAX_NESTING + 100)),
                ..event
            },
        ] {
            let mut bytes = Vec::new();
            encode_event(1, 2, &beyond, &mut bytes);
            assert!(LogRecord::decode(&bytes).is_err());
        }
        Ok(())
    }

    /// An event record as serde writes it, the form [`encode_event`]
    /// writes by hand.
    #[derive(Serialize)]
    struct EventOut<'a> {
        t: Kind,
        seq: Seq,
        ms: u64,
        ev: &'a UpdateEvent,
    }

    proptest! {
        /// [`encode_event`] writes what serde writes for the record, for
        /// every event and seq and time of every size, and it decodes to
        /// the record.
        #[test]
        fn event_bytes_are_what_serde_writes(
            event in distkv_model::strategies::event(),
            seq in prop_oneof![0u64..300, any::<u64>()],
            ms in prop_oneof![0u64..70_000, any::<u64>()],
        ) {
            let mut direct = Vec::new();
            encode_event(seq, ms, &event, &mut direct);
            let mut serde = Vec::new();
            serial::encode(&EventOut { t: Kind::Event, seq, ms, ev: &event }, &mut serde);
            prop_assert_eq!(&direct, &serde);
            let r = LogRecord::Event { seq, time_ms: ms, event };
            prop_assert_eq!(LogRecord::decode(&direct), Ok(r));
        }
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        for v in [
            Value::Nil,
            Value::map([("t", Value::str("e"))]),
            Value::map([
                ("t", Value::str("x")),
                ("seq", Value::Int(1)),
                ("ms", Value::Int(1)),
            ]),
            Value::map([
                ("t", Value::str("s")),
                ("seq", Value::Int(1)),
                ("ms", Value::Int(1)),
                ("nodes", Value::Array(vec![])),
            ]),
            Value::map([
                ("t", Value::str("e")),
                ("seq", Value::Int(-1)),
                ("ms", Value::Int(1)),
            ]),
            Value::map([
                ("t", Value::str("l")),
                ("seq", Value::Int(5)),
                ("ms", Value::Int(1)),
                ("from", Value::Int(7)),
                ("why", Value::str("reversed")),
            ]),
            Value::map([
                ("t", Value::str("l")),
                ("seq", Value::Int(5)),
                ("ms", Value::Int(1)),
                ("from", Value::Int(5)),
            ]),
        ] {
            let bytes = distkv_model::codec::to_vec(&v);
            assert!(LogRecord::decode(&bytes).is_err(), "{v:?}");
        }
    }
}
