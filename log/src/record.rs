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
//! The payload is one msgpack map (via [`distkv_model::codec`]) with a type
//! tag `t`:
//!
//! * event: `{t: "e", seq, ms, ev}` where `ev` is the event's wire form with
//!   its whole chain ([`UpdateEvent::to_value`]`(-1)`);
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

use distkv_model::codec;
use distkv_model::{NodeName, NodeSet, RangeSet, UpdateEvent, Value};

use crate::Seq;

/// One record of the on-disk event log.
///
/// Stored as one msgpack map ([`LogRecord::to_value`]):
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

fn field<'a>(v: &'a Value, name: &'static str) -> Result<&'a Value, RecordError> {
    v.get(name)
        .ok_or_else(|| RecordError(format!("field {name:?} is missing")))
}

fn u64_field(v: &Value, name: &'static str) -> Result<u64, RecordError> {
    field(v, name)?
        .as_u64()
        .ok_or_else(|| RecordError(format!("field {name:?} is not an unsigned integer")))
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

    /// The msgpack value the record is stored as.
    pub fn to_value(&self) -> Value {
        match self {
            LogRecord::Event {
                seq,
                time_ms,
                event,
            } => event_value(*seq, *time_ms, event),
            LogRecord::State {
                seq,
                time_ms,
                nodes,
                known,
                deleted,
                skipped,
            } => {
                let mut m = vec![
                    (Value::str("t"), Value::str("s")),
                    (Value::str("seq"), Value::uint(*seq)),
                    (Value::str("ms"), Value::uint(*time_ms)),
                    (
                        Value::str("nodes"),
                        Value::Map(
                            nodes
                                .iter()
                                .map(|(n, t)| {
                                    (Value::Str(n.clone()), t.map_or(Value::Nil, Value::uint))
                                })
                                .collect(),
                        ),
                    ),
                    (Value::str("known"), known.to_value()),
                    (Value::str("deleted"), deleted.to_value()),
                ];
                if !skipped.is_empty() {
                    m.push((Value::str("skipped"), skipped.to_value()));
                }
                Value::Map(m)
            }
            LogRecord::Lost {
                seq,
                time_ms,
                from,
                why,
            } => Value::map([
                ("t", Value::str("l")),
                ("seq", Value::uint(*seq)),
                ("ms", Value::uint(*time_ms)),
                ("from", Value::uint(*from)),
                ("why", Value::str(why)),
            ]),
        }
    }

    /// Decodes the stored value.
    pub fn from_value(v: &Value) -> Result<LogRecord, RecordError> {
        if v.as_map().is_none() {
            return Err(RecordError("record is not a map".into()));
        }
        let seq = u64_field(v, "seq")?;
        let time_ms = u64_field(v, "ms")?;
        match field(v, "t")?.as_str() {
            Some("e") => {
                let event = UpdateEvent::from_value(field(v, "ev")?)
                    .map_err(|e| RecordError(format!("event: {e}")))?;
                Ok(LogRecord::Event {
                    seq,
                    time_ms,
                    event,
                })
            }
            Some("s") => {
                let pairs = field(v, "nodes")?
                    .as_map()
                    .ok_or_else(|| RecordError("field \"nodes\" is not a map".into()))?;
                let mut nodes = Vec::with_capacity(pairs.len());
                for (k, t) in pairs {
                    let name = k
                        .as_str()
                        .ok_or_else(|| RecordError("a node name is not a string".into()))?;
                    let tick = match t {
                        Value::Nil => None,
                        t => Some(t.as_u64().ok_or_else(|| {
                            RecordError(format!("tick of node {name:?} is not an unsigned integer"))
                        })?),
                    };
                    nodes.push((NodeName::from(name), tick));
                }
                let set = |name: &'static str| {
                    NodeSet::from_value(field(v, name)?)
                        .map_err(|e| RecordError(format!("field {name:?}: {e}")))
                };
                let skipped = match v.get("skipped") {
                    None => RangeSet::new(),
                    Some(r) => RangeSet::from_value(r)
                        .map_err(|e| RecordError(format!("field \"skipped\": {e}")))?,
                };
                Ok(LogRecord::State {
                    seq,
                    time_ms,
                    nodes,
                    known: set("known")?,
                    deleted: set("deleted")?,
                    skipped,
                })
            }
            Some("l") => {
                let from = u64_field(v, "from")?;
                if seq.checked_add(1).is_none_or(|end| from > end) {
                    return Err(RecordError(format!(
                        "lost record from {from} to {seq}: the range is reversed"
                    )));
                }
                let why = field(v, "why")?
                    .as_str()
                    .ok_or_else(|| RecordError("field \"why\" is not a string".into()))?;
                Ok(LogRecord::Lost {
                    seq,
                    time_ms,
                    from,
                    why: why.to_string(),
                })
            }
            Some(t) => Err(RecordError(format!("unknown record type {t:?}"))),
            None => Err(RecordError("field \"t\" is not a string".into())),
        }
    }

    /// Appends the record's msgpack bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        codec::encode(&self.to_value(), out);
    }

    /// Decodes one record from exactly `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<LogRecord, RecordError> {
        let v = codec::decode_with(bytes, distkv_model::budget::INTERNAL_LIMITS)
            .map_err(|e| RecordError(e.to_string()))?;
        LogRecord::from_value(&v)
    }
}

/// Checks that `rec` continues a log whose next event must have seq
/// `*next`, and advances `*next` past an event or a lost record.
/// `Err((expected, found))` otherwise: an event must have seq `*next`, a
/// state record `*next − 1`, a lost record must start at `*next`.
pub(crate) fn check_sequence(rec: &LogRecord, next: &mut Seq) -> Result<(), (Seq, Seq)> {
    match rec {
        LogRecord::Event { seq, .. } => {
            if *seq != *next {
                return Err((*next, *seq));
            }
            // An event at u64::MAX leaves no position for the next one.
            *next = next.checked_add(1).ok_or((*next, *seq))?;
        }
        LogRecord::State { seq, .. } => {
            if next.checked_sub(1) != Some(*seq) {
                return Err((next.saturating_sub(1), *seq));
            }
        }
        LogRecord::Lost { seq, from, .. } => {
            if *from != *next {
                return Err((*next, *from));
            }
            // Decoding guarantees `from ≤ seq + 1`.
            *next = seq.checked_add(1).ok_or((*next, *seq))?;
        }
    }
    Ok(())
}

/// The stored value of an event record, without building a [`LogRecord`].
fn event_value(seq: Seq, time_ms: u64, event: &UpdateEvent) -> Value {
    Value::map([
        ("t", Value::str("e")),
        ("seq", Value::uint(seq)),
        ("ms", Value::uint(time_ms)),
        ("ev", event.to_value(-1)),
    ])
}

/// Appends the bytes of an event record to `out` (same bytes as
/// [`LogRecord::encode`] of the equivalent record, without cloning the event
/// or building a value tree).
pub fn encode_event(seq: Seq, time_ms: u64, event: &UpdateEvent, out: &mut Vec<u8>) {
    codec::write_map_len(out, 4);
    codec::write_str(out, "t");
    codec::write_str(out, "e");
    codec::write_str(out, "seq");
    codec::write_uint(out, seq);
    codec::write_str(out, "ms");
    codec::write_uint(out, time_ms);
    codec::write_str(out, "ev");
    event.encode_full(out);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use distkv_model::{path, Chain, Path, RangeSet};
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
                    chain = Some(Chain::attach(Arc::from(n.as_str()), t, chain.as_ref()));
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
            let mut again = Vec::new();
            back.encode(&mut again);
            prop_assert_eq!(again, bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LogRecord::decode(&bytes);
        }
    }

    #[test]
    fn event_bytes_match_the_record_encoding() -> Result<(), RecordError> {
        let event = UpdateEvent {
            path: path!["a", 1u64],
            chain: Chain::single(Arc::from("n1"), 7),
            value: Some(Value::str("x")),
            tock: 9,
        };
        let mut direct = Vec::new();
        encode_event(5, 1000, &event, &mut direct);
        let r = LogRecord::Event {
            seq: 5,
            time_ms: 1000,
            event,
        };
        let mut via = Vec::new();
        r.encode(&mut via);
        assert_eq!(direct, via);
        assert_eq!(LogRecord::decode(&direct)?, r);
        Ok(())
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
            assert!(LogRecord::from_value(&v).is_err(), "{v:?}");
        }
    }
}
