//! The fast road for decoding event records, the bulk of every log.
//!
//! The writer lays every event record out the same way
//! ([`crate::record::encode_event`]): `{t: "e", seq, ms, ev: {node, tick,
//! prev, path, value?, tock}}`, keys in that order, counters as unsigned
//! integers, `prev` as nested `{node, tick, prev}` maps ending in nil, the
//! path as ext 3. [`RecordDecoder::decode`] reads exactly that layout with
//! a cursor over the bytes — the path and the value with the hand-written
//! codec (`distkv_model::codec::decode_prefix`, by a [`Cursor`]), node names shared between records — and
//! hands anything else to the general serde decoder
//! ([`LogRecord::decode_general`]): other key orders, other integer forms,
//! deep values, invalid UTF-8, every error. So both roads give the same
//! record or the same error for the same bytes; the fast one only takes
//! the bytes the writer writes, and makes the same checks on them (chain,
//! counters, nesting).
//!
//! Values nesting deeper than [`FAST_DEPTH`] levels go the general way:
//! under that depth, both decoders build the same [`Value`], far inside
//! every depth limit.

use std::sync::Arc;

use distkv_model::chain::MAX_COUNTER;
use distkv_model::cursor::Cursor;
use distkv_model::event::check_nesting;
use distkv_model::{Chain, Link, NodeName, UpdateEvent, Value};

use crate::record::{LogRecord, RecordError};

/// Deepest value (or path element) the fast road decodes.
const FAST_DEPTH: usize = 16;

/// Node names kept for sharing: a cluster has a handful.
const MAX_NAMES: usize = 64;

/// Decodes log records, sharing node names between them; see the module
/// docs.
#[derive(Debug, Default)]
pub struct RecordDecoder {
    names: Vec<NodeName>,
}

impl RecordDecoder {
    /// A decoder with no names yet.
    pub fn new() -> RecordDecoder {
        RecordDecoder::default()
    }

    /// Decodes one record from exactly `bytes`: the same result as
    /// [`LogRecord::decode`].
    pub fn decode(&mut self, bytes: &[u8]) -> Result<LogRecord, RecordError> {
        match self.event(bytes) {
            Some(rec) => Ok(rec),
            None => LogRecord::decode_general(bytes),
        }
    }

    /// The node name `b`, shared with earlier records where it can be.
    fn name(&mut self, b: &[u8]) -> Option<NodeName> {
        if let Some(n) = self.names.iter().find(|n| n.as_bytes() == b) {
            return Some(n.clone());
        }
        let n: NodeName = Arc::from(std::str::from_utf8(b).ok()?);
        if self.names.len() < MAX_NAMES {
            self.names.push(n.clone());
        }
        Some(n)
    }

    /// A link's node name and tick, then the `prev` key (the cursor is
    /// past the `node` key).
    fn link(&mut self, c: &mut Cursor<'_>) -> Option<Link> {
        let node = self.name(c.str()?)?;
        c.expect(&[0xa4, b't', b'i', b'c', b'k'])?;
        let tick = c.uint()?;
        c.expect(&[0xa4, b'p', b'r', b'e', b'v'])?;
        Some(Link { node, tick })
    }

    /// An event record in the writer's layout, or `None`.
    fn event(&mut self, bytes: &[u8]) -> Option<LogRecord> {
        let mut c = Cursor::new(bytes);
        c.expect(&[0x84, 0xa1, b't', 0xa1, b'e', 0xa3, b's', b'e', b'q'])?;
        let seq = c.uint()?;
        c.expect(&[0xa2, b'm', b's'])?;
        let time_ms = c.uint()?;
        c.expect(&[0xa2, b'e', b'v'])?;
        let with_value = match c.byte()? {
            0x85 => false,
            0x86 => true,
            _ => return None,
        };
        let mut links = Vec::with_capacity(1);
        c.expect(&[0xa4, b'n', b'o', b'd', b'e'])?;
        links.push(self.link(&mut c)?);
        // `{node, tick, prev}` maps down to a nil `prev`.
        while c.peek()? == 0x83 {
            c.expect(&[0x83, 0xa4, b'n', b'o', b'd', b'e'])?;
            links.push(self.link(&mut c)?);
        }
        c.expect(&[0xc0, 0xa4, b'p', b'a', b't', b'h'])?;
        if !matches!(c.peek()?, 0xc7..=0xc9 | 0xd4..=0xd8) {
            return None;
        }
        let path = match c.value(FAST_DEPTH)? {
            Value::Path(p) => p,
            _ => return None,
        };
        let value = if with_value {
            c.expect(&[0xa5, b'v', b'a', b'l', b'u', b'e'])?;
            Some(c.value(FAST_DEPTH)?)
        } else {
            None
        };
        c.expect(&[0xa4, b't', b'o', b'c', b'k'])?;
        let tock = c.uint().filter(|&t| t <= MAX_COUNTER)?;
        if !c.at_end() {
            return None;
        }
        let chain = Chain::from_checked_links(links).ok()?;
        check_nesting(&path, value.as_ref()).ok()?;
        Some(LogRecord::Event {
            seq,
            time_ms,
            event: UpdateEvent {
                path,
                chain,
                value,
                tock,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;

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

        /// Whatever byte is changed, the fast road accepts only what the
        /// general one decodes, to the same record.
        #[test]
        fn damaged_records_decode_alike(
            rec in crate::record::tests::record(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut bytes = Vec::new();
            rec.encode(&mut bytes);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let general = LogRecord::decode_general(&bytes).ok();
            if let Some(fast) = RecordDecoder::new().event(&bytes) {
                proptest::prop_assert_eq!(Some(fast), general);
            }
        }
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
