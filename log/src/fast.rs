//! The fast roads for decoding event records, the bulk of every log, and
//! state records, whose sets of ticks grow with the log.
//!
//! The writer lays every event record out the same way
//! ([`crate::record::encode_event`]): `{t: "e", seq, ms, ev: EVENT}`, keys
//! in that order, counters as unsigned integers, the event in our writers'
//! layout ([`distkv_model::fast`]). [`RecordDecoder::decode`] reads exactly
//! that layout with a cursor over the bytes — the event by an
//! [`EventDecoder`], node names and path strings shared between records —
//! and hands anything else to the general serde decoder
//! ([`LogRecord::decode_general`]): other key orders, other integer forms,
//! deep values, invalid UTF-8, every error. So both roads give the same
//! record or the same error for the same bytes; the fast one only takes
//! the bytes the writer writes, and makes the same checks on them (chain,
//! counters, nesting).
//!
//! State records (`{t: "s", seq, ms, nodes, known, deleted[, skipped]}`,
//! names as strings, ticks and ranges as unsigned integers and pairs of
//! them) are read the same way, their tick sets built as the ranges come
//! with room for all of them made first — but for the ticks of a node's
//! `known` set that a replay has seen, checked and left out
//! ([`RecordDecoder::leave_out_known_within`]).

use std::ops::Range;

use distkv_model::cursor::Cursor;
use distkv_model::fast::EventDecoder;
use distkv_model::{NodeName, NodeSet, RangeSet};

use crate::record::{LogRecord, Place, RecordError};

/// Decodes log records, sharing node names and path strings between them;
/// see the module docs.
#[derive(Debug, Default)]
pub struct RecordDecoder {
    events: EventDecoder,
    /// The ticks of each node that state records leave out of their
    /// `known` sets ([`RecordDecoder::leave_out_known_within`]).
    known_within: Vec<(NodeName, Range<u64>)>,
}

impl RecordDecoder {
    /// A decoder with no names yet.
    pub fn new() -> RecordDecoder {
        RecordDecoder::default()
    }

    /// From now on, a state record in the writer's layout leaves out of its
    /// `known` tick sets the ticks of each node named in `within` that lie
    /// in the range given there (its items are checked all the same), and
    /// a set left empty. For a replay whose state has seen those ticks
    /// already: to it they add nothing, and building such a set takes a
    /// state record of a log of random overwrites most of its reading
    /// (hundreds of thousands of ranges, docs/perf.md). Other records, and
    /// state records in other layouts, are decoded whole.
    pub fn leave_out_known_within(&mut self, within: &[(NodeName, Range<u64>)]) {
        self.known_within.clear();
        self.known_within.extend_from_slice(within);
    }

    /// [`EventDecoder::share_anew`].
    pub fn share_anew(&mut self) {
        self.events.share_anew();
    }

    /// Decodes one record from exactly `bytes`: the same result as
    /// [`LogRecord::decode`] (but for what
    /// [`RecordDecoder::leave_out_known_within`] leaves out).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<LogRecord, RecordError> {
        match self
            .event(bytes)
            .or_else(|| state(bytes, &self.known_within))
        {
            Some(rec) => Ok(rec),
            None => LogRecord::decode_general(bytes),
        }
    }

    /// An event record in the writer's layout, or `None`.
    fn event(&mut self, bytes: &[u8]) -> Option<LogRecord> {
        let mut c = Cursor::new(bytes);
        c.expect(&[0x84, 0xa1, b't', 0xa1, b'e', 0xa3, b's', b'e', b'q'])?;
        let seq = c.uint()?;
        c.expect(&[0xa2, b'm', b's'])?;
        let time_ms = c.uint()?;
        c.expect(&[0xa2, b'e', b'v'])?;
        let event = self.events.event(&mut c)?;
        c.at_end().then_some(LogRecord::Event {
            seq,
            time_ms,
            event,
        })
    }
}

/// A state record in the writer's layout, or `None`; the `known` ticks
/// `within` covers left out.
fn state(bytes: &[u8], within: &[(NodeName, Range<u64>)]) -> Option<LogRecord> {
    let mut c = Cursor::new(bytes);
    let with_skipped = match c.byte()? {
        0x86 => false,
        0x87 => true,
        _ => return None,
    };
    c.expect(&[0xa1, b't', 0xa1, b's', 0xa3, b's', b'e', b'q'])?;
    let seq = c.uint()?;
    c.expect(&[0xa2, b'm', b's'])?;
    let time_ms = c.uint()?;
    c.expect(&[0xa5, b'n', b'o', b'd', b'e', b's'])?;
    // Each entry takes two bytes at least: a count beyond the bytes left
    // is damage, for the general decoder to name.
    let n = c.map_len().filter(|&n| n <= c.remaining())?;
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let name = name(&mut c)?;
        let tick = match c.nil() {
            true => None,
            false => Some(c.uint()?),
        };
        nodes.push((name, tick));
    }
    c.expect(&[0xa5, b'k', b'n', b'o', b'w', b'n'])?;
    let known = node_set(&mut c, within)?;
    c.expect(&[0xa7, b'd', b'e', b'l', b'e', b't', b'e', b'd'])?;
    let deleted = node_set(&mut c, &[])?;
    let skipped = match with_skipped {
        true => {
            c.expect(&[0xa7, b's', b'k', b'i', b'p', b'p', b'e', b'd'])?;
            ranges(&mut c)?
        }
        false => RangeSet::new(),
    };
    c.at_end().then_some(LogRecord::State {
        seq,
        time_ms,
        nodes,
        known,
        deleted,
        skipped,
    })
}

/// A node name, as a string.
fn name(c: &mut Cursor<'_>) -> Option<NodeName> {
    std::str::from_utf8(c.str()?).ok().map(NodeName::from)
}

/// `{name: ranges}`; a name twice gets the union, as serde's reading has it.
/// The ticks of a node named in `within` that lie in the range given there
/// are left out (checked, not kept), and a set left empty by that too.
fn node_set(c: &mut Cursor<'_>, within: &[(NodeName, Range<u64>)]) -> Option<NodeSet> {
    let n = c.map_len().filter(|&n| n <= c.remaining())?;
    let mut out = NodeSet::default();
    for _ in 0..n {
        let name = name(c)?;
        match within.iter().find(|(w, _)| *w == name) {
            Some((_, r)) => {
                let rest = ranges_outside(c, r)?;
                if !rest.is_empty() {
                    out.add(name, rest);
                }
            }
            None => out.add(name, ranges(c)?),
        }
    }
    Some(out)
}

/// A tick set's wire form, read as [`ranges`] reads it, but only the
/// ticks outside `r` kept (a set left out of a state record: no room made
/// for what it announces).
fn ranges_outside(c: &mut Cursor<'_>, r: &Range<u64>) -> Option<RangeSet> {
    let n = c.array_len().filter(|&n| n <= c.remaining())?;
    let mut items = Ranges {
        c,
        left: n,
        failed: false,
    };
    // Most items lie in `r` whole (the ticks seen in one run from the
    // first, all but the newest ones): those are read, and no more.
    let outside = items.by_ref().filter(|&(a, b)| a < r.start || b > r.end);
    let set =
        RangeSet::from_ranges(outside.flat_map(|(a, b)| [(a, b.min(r.start)), (a.max(r.end), b)]));
    (!items.failed).then_some(set)
}

/// A tick set's wire form: ticks and `[start, end)` pairs.
fn ranges(c: &mut Cursor<'_>) -> Option<RangeSet> {
    let n = c.array_len().filter(|&n| n <= c.remaining())?;
    let mut items = Ranges {
        c,
        left: n,
        failed: false,
    };
    let set = RangeSet::from_ranges(&mut items);
    (!items.failed).then_some(set)
}

/// The items of a tick set as ranges, as many as announced (which the
/// set makes room for) unless one is not a tick or a pair.
struct Ranges<'c, 'a> {
    c: &'c mut Cursor<'a>,
    left: usize,
    failed: bool,
}

impl Iterator for Ranges<'_, '_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        if self.left == 0 || self.failed {
            return None;
        }
        self.left -= 1;
        let item = match self.c.peek() {
            Some(0x92) => self
                .c
                .byte()
                .and_then(|_| Some((self.c.uint()?, self.c.uint()?))),
            _ => self.c.uint().map(|t| (t, t.saturating_add(1))),
        };
        self.failed = item.is_none();
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// The place and time of an event or state record in the writer's layout,
/// read from its first fields — `{t: "e" | "s", seq, ms, …}` — without
/// decoding the rest; `None` for anything else (lost records among them).
pub(crate) fn head(bytes: &[u8]) -> Option<(Place, u64)> {
    let mut c = Cursor::new(bytes);
    if !matches!(c.byte()?, 0x81..=0x8f) {
        return None;
    }
    c.expect(&[0xa1, b't', 0xa1])?;
    let kind = c.byte()?;
    c.expect(&[0xa3, b's', b'e', b'q'])?;
    let seq = c.uint()?;
    c.expect(&[0xa2, b'm', b's'])?;
    let ms = c.uint()?;
    match kind {
        b'e' => Some((Place::Event(seq), ms)),
        b's' => Some((Place::State(seq), ms)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::fast::FAST_DEPTH;
    use distkv_model::{path, Chain, SharedStr, UpdateEvent, Value};

    fn event(chain: Chain, value: Option<Value>) -> LogRecord {
        LogRecord::Event {
            seq: 1 << 33,
            time_ms: 1_700_000_000_000,
            event: UpdateEvent {
                path: path!["bench", 17u64, Value::Nil, 1.5f64],
                chain,
                value,
                tock: 99,
            },
        }
    }

    #[test]
    fn the_writers_layout_takes_the_fast_road_with_the_same_result() -> Result<(), RecordError> {
        let three = Chain::attach(
            "a".into(),
            5,
            Some(&Chain::attach(
                "b".into(),
                7,
                Some(&Chain::single("c".into(), 300)),
            )),
        );
        for rec in [
            event(Chain::single("n1".into(), 1), Some(Value::str("x"))),
            event(three, None),
            event(
                Chain::single("n1".into(), 0),
                Some(Value::map([("k", Value::Nil)])),
            ),
        ] {
            let mut bytes = Vec::new();
            rec.encode(&mut bytes);
            let mut d = RecordDecoder::new();
            assert_eq!(d.event(&bytes).as_ref(), Some(&rec));
            assert_eq!(d.decode(&bytes)?, rec);
            assert_eq!(LogRecord::decode_general(&bytes)?, rec);
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xfa57),
            ..proptest::test_runner::Config::default()
        })]

        /// Each record the writer makes takes its fast roads: a state
        /// record the cursor's, to the record written, and an event or a
        /// state record (never a lost one) has a head, its place and
        /// time. Whatever byte is then changed, each fast road accepts
        /// only what the general one decodes, to the same record (a head:
        /// its place and time).
        #[test]
        fn damaged_records_decode_alike(
            rec in crate::record::tests::record(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut bytes = Vec::new();
            rec.encode(&mut bytes);
            let want_head = (!matches!(rec, LogRecord::Lost { .. })).then(|| (rec.place(), rec.time_ms()));
            proptest::prop_assert_eq!(head(&bytes), want_head);
            let want_state = matches!(rec, LogRecord::State { .. }).then_some(rec);
            proptest::prop_assert_eq!(state(&bytes, &[]), want_state);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let general = LogRecord::decode_general(&bytes).ok();
            if let Some(fast) = RecordDecoder::new().event(&bytes) {
                proptest::prop_assert_eq!(Some(fast), general.clone());
            }
            if let Some(fast) = state(&bytes, &[]) {
                proptest::prop_assert_eq!(Some(fast), general.clone());
            }
            if let (Some(h), Some(r)) = (head(&bytes), &general) {
                proptest::prop_assert_eq!(h, (r.place(), r.time_ms()));
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7061_7468),
            ..proptest::test_runner::Config::default()
        })]

        /// One decoder, many records (some with a byte changed): every
        /// path decodes as the general decoder has it, whatever the paths
        /// before it shared.
        #[test]
        fn paths_decode_alike_after_any_paths_before(
            recs in proptest::collection::vec(
                (distkv_model::strategies::path(), proptest::option::of((
                    proptest::prelude::any::<proptest::sample::Index>(),
                    proptest::prelude::any::<u8>(),
                ))),
                1..12,
            ),
        ) {
            let mut d = RecordDecoder::new();
            for (path, damage) in recs {
                let mut rec = event(Chain::single("n1".into(), 1), Some(Value::Int(3)));
                if let LogRecord::Event { event, .. } = &mut rec {
                    event.path = path;
                }
                let mut bytes = Vec::new();
                rec.encode(&mut bytes);
                if let Some((at, byte)) = damage {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                let general = LogRecord::decode_general(&bytes).ok();
                let fast = d.event(&bytes);
                // The writer's bytes take the fast road.
                proptest::prop_assert!(fast.is_some() || damage.is_some());
                if let Some(fast) = fast {
                    proptest::prop_assert_eq!(Some(fast), general.clone());
                }
                proptest::prop_assert_eq!(d.decode(&bytes).ok(), general);
            }
        }
    }

    #[test]
    fn path_strings_are_shared_with_the_record_before() -> Result<(), RecordError> {
        let decode = |d: &mut RecordDecoder, path: distkv_model::Path| {
            let mut rec = event(Chain::single("n1".into(), 1), None);
            if let LogRecord::Event { event, .. } = &mut rec {
                event.path = path;
            }
            let mut bytes = Vec::new();
            rec.encode(&mut bytes);
            match d.event(&bytes) {
                Some(LogRecord::Event { event, .. }) => Some(event.path),
                _ => None,
            }
        };
        let strs = |p: &distkv_model::Path| -> Vec<Option<SharedStr>> {
            p.iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect()
        };
        let mut d = RecordDecoder::new();
        let a = decode(&mut d, path!["bench", 1u64, "k"]).expect("fast road");
        let b = decode(&mut d, path!["bench", 2u64, "k"]).expect("fast road");
        let c = decode(&mut d, path!["other", 2u64, "bench"]).expect("fast road");
        assert_eq!(b, path!["bench", 2u64, "k"]);
        assert_eq!(c, path!["other", 2u64, "bench"]);
        let (a, b, c) = (strs(&a), strs(&b), strs(&c));
        let same = |x: &Option<SharedStr>, y: &Option<SharedStr>| match (x, y) {
            (Some(x), Some(y)) => SharedStr::ptr_eq(x, y),
            _ => false,
        };
        assert!(same(&a[0], &b[0]) && same(&a[2], &b[2]), "shared by place");
        assert!(!same(&b[0], &c[0]), "other bytes, another string");
        assert!(
            !same(&b[0], &c[2]),
            "the same bytes at another place are not looked for"
        );
        Ok(())
    }

    #[test]
    fn after_share_anew_names_and_strings_are_new_ones_shared_again() {
        let rec = event(Chain::single("n1".into(), 1), Some(Value::Int(1)));
        let LogRecord::Event { event: want, .. } = &rec else {
            unreachable!("an event")
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        // The path's first string and the chain's node name of a decoding.
        let read = |d: &mut RecordDecoder| match d.event(&bytes) {
            Some(LogRecord::Event { event, .. }) => {
                assert_eq!(&event, want);
                match event.path.first() {
                    Some(Value::Str(s)) => (s.clone(), event.chain.head().node.clone()),
                    _ => panic!("a string first: {event:?}"),
                }
            }
            other => panic!("not the fast road: {other:?}"),
        };
        let same = |x: &(SharedStr, SharedStr), y: &(SharedStr, SharedStr)| {
            (SharedStr::ptr_eq(&x.0, &y.0), SharedStr::ptr_eq(&x.1, &y.1))
        };
        let mut d = RecordDecoder::new();
        let (a, b) = (read(&mut d), read(&mut d));
        d.share_anew();
        let (c, e) = (read(&mut d), read(&mut d));
        assert_eq!(same(&a, &b), (true, true), "shared");
        assert_eq!(same(&b, &c), (false, false), "anew");
        assert_eq!(same(&c, &e), (true, true), "shared again");
    }

    #[test]
    fn every_byte_of_a_state_record_is_checked_as_the_general_decoder_does() {
        let set = |ticks: &[(u64, u64)]| RangeSet::from_ranges(ticks.iter().copied());
        let mut known = NodeSet::default();
        known
            .0
            .insert("n1".into(), set(&[(1, 5), (7, 8), (10, 300)]));
        known
            .0
            .insert("n2".into(), set(&[(1 << 40, (1 << 40) + 2)]));
        let mut deleted = NodeSet::default();
        deleted.0.insert("n2".into(), set(&[(3, 4)]));
        let rec = LogRecord::State {
            seq: 70_000,
            time_ms: 1_700_000_000_000,
            nodes: vec![("n1".into(), Some(299)), ("n3".into(), None)],
            known,
            deleted,
            skipped: set(&[(300, 310)]),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        assert_eq!(state(&bytes, &[]).as_ref(), Some(&rec));
        let within = [
            (NodeName::from("n1"), 1..300),
            (NodeName::from("n2"), 1..(1 << 41)),
        ];
        for n in 0..bytes.len() {
            assert_eq!(state(&bytes[..n], &[]), None, "cut at {n}");
            assert_eq!(state(&bytes[..n], &within), None, "cut at {n}");
        }
        for i in 0..bytes.len() {
            for b in 0..=u8::MAX {
                let mut changed = bytes.clone();
                changed[i] = b;
                let fast = state(&changed, &[]);
                if let Some(fast) = &fast {
                    assert_eq!(
                        Ok(fast),
                        LogRecord::decode_general(&changed).as_ref(),
                        "byte {i} = {b:#x}"
                    );
                }
                // Leaving sets out accepts the same bytes, and leaves out
                // no more than it may.
                match (&fast, state(&changed, &within)) {
                    (None, None) => {}
                    (Some(full), Some(got)) => {
                        assert!(left_out_of(full, &got, &within), "byte {i} = {b:#x}")
                    }
                    (full, got) => panic!("byte {i} = {b:#x}: {full:?} against {got:?}"),
                }
            }
        }
    }

    /// What [`RecordDecoder::leave_out_known_within`] may leave out of
    /// `full`'s `known` sets to give `got`: every other field as it is,
    /// and each node's set only less ticks that lie in its range `within`.
    fn left_out_of(full: &LogRecord, got: &LogRecord, within: &[(NodeName, Range<u64>)]) -> bool {
        let (
            LogRecord::State {
                known: full_known, ..
            },
            LogRecord::State { known, .. },
        ) = (full, got)
        else {
            return full == got;
        };
        let mut rest = got.clone();
        if let LogRecord::State { known: k, .. } = &mut rest {
            k.clone_from(full_known);
        }
        let empty = RangeSet::new();
        rest == *full
            && known.0.keys().all(|n| full_known.0.contains_key(n))
            && full_known.0.iter().all(|(n, full_set)| {
                let set = known.0.get(n).unwrap_or(&empty);
                let gone = full_set.difference(set);
                set.difference(full_set).is_empty()
                    && (gone.is_empty()
                        || within.iter().any(|(w, r)| {
                            w == n && gone.ranges().all(|(a, b)| r.start <= a && b <= r.end)
                        }))
            })
    }

    /// A node's `known` ticks within its range are left out (checked all
    /// the same): a set within it goes, one reaching past it keeps what
    /// lies past; a node not named is read whole, and `deleted` sets always
    /// are.
    #[test]
    fn known_sets_a_replay_has_seen_are_left_out() -> Result<(), RecordError> {
        let set = |ticks: &[(u64, u64)]| RangeSet::from_ranges(ticks.iter().copied());
        let mut known = NodeSet::default();
        known
            .0
            .insert("n1".into(), set(&[(1, 5), (7, 8), (10, 300)]));
        known.0.insert("n2".into(), set(&[(2, 3), (400, 401)]));
        known.0.insert("n3".into(), set(&[(9, 12)]));
        let mut deleted = NodeSet::default();
        deleted.0.insert("n1".into(), set(&[(3, 4)]));
        let rec = LogRecord::State {
            seq: 7,
            time_ms: 1,
            nodes: vec![("n1".into(), Some(299))],
            known,
            deleted,
            skipped: RangeSet::new(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        let within = [
            (NodeName::from("n1"), 1..300),
            (NodeName::from("n2"), 1..400),
        ];
        let mut d = RecordDecoder::new();
        d.leave_out_known_within(&within);
        let got = d.decode(&bytes)?;
        let LogRecord::State { known, deleted, .. } = &got else {
            panic!("{got:?}");
        };
        let names: Vec<&str> = known.0.keys().map(|n| &**n).collect();
        assert_eq!(names, ["n2", "n3"], "n1 left out, n2 reaches 400");
        assert_eq!(known.0[&NodeName::from("n2")], set(&[(400, 401)]));
        assert_eq!(known.0[&NodeName::from("n3")], set(&[(9, 12)]));
        assert_eq!(deleted.0.len(), 1, "deleted sets are all read");
        assert!(left_out_of(&rec, &got, &within));
        // Leaving out nothing again reads it whole.
        d.leave_out_known_within(&[]);
        assert_eq!(d.decode(&bytes)?, rec);
        // A damaged item in a set that would be left out is damage still.
        let at = bytes
            .windows(3)
            .position(|w| w == [0x92, 0x01, 0x05])
            .expect("n1's first range");
        let mut bad = bytes.clone();
        bad[at + 1] = 0xc1;
        d.leave_out_known_within(&within);
        assert_eq!(state(&bad, &within), None);
        assert!(d.decode(&bad).is_err());
        Ok(())
    }

    #[test]
    fn anything_else_goes_the_general_way() -> Result<(), RecordError> {
        let rec = event(Chain::single("n1".into(), 1), Some(Value::Int(3)));
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        let mut d = RecordDecoder::new();
        // Trailing bytes, a cut record, a tock beyond the limit: the
        // general decoder's error.
        let mut longer = bytes.clone();
        longer.push(0xc0);
        assert!(d.event(&longer).is_none() && d.decode(&longer).is_err());
        for n in 0..bytes.len() {
            assert!(d.event(&bytes[..n]).is_none());
            assert!(d.decode(&bytes[..n]).is_err());
        }
        // A deep value: decoded the general way, to the same record.
        let mut deep = Value::Int(1);
        for _ in 0..FAST_DEPTH + 2 {
            deep = Value::Array(vec![deep]);
        }
        let rec = event(Chain::single("n1".into(), 1), Some(deep));
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        assert!(d.event(&bytes).is_none());
        assert_eq!(d.decode(&bytes)?, rec);
        Ok(())
    }
}
