//! The fast road for decoding events in our writers' layout: the bulk of
//! every log record and of every `update` message between nodes.
//!
//! Our writers lay every event out the same way ([`crate::serial`]'s
//! `UpdateEvent`): `{node, tick, prev, path, value?, tock}`, keys in that
//! order, counters as unsigned integers, `prev` as nested `{node, tick,
//! prev}` maps ending in nil, the path as ext 3. [`EventDecoder::event`]
//! reads exactly that layout with a [`Cursor`] — the path and the value
//! with the hand-written codec ([`crate::codec::decode_prefix`]), node
//! names shared between events, and a path's strings shared with the same
//! place of the path before — and gives up (`None`) at anything else:
//! other key orders, other integer forms, deep values, invalid UTF-8,
//! every error. The caller then hands the bytes to its general serde
//! decoder, which decides what they are; so both roads give the same event
//! or the same error for the same bytes. The fast one only takes the bytes
//! our writers write, and makes the same checks on them (chain, counters;
//! the nesting budget holds for everything it takes, see below).
//!
//! Values nesting deeper than [`FAST_DEPTH`] levels go the general way:
//! under that depth, both decoders build the same [`Value`], far inside
//! every depth limit.

use crate::budget::{MAX_CHAIN_LINKS, MAX_NESTING};
use crate::chain::MAX_COUNTER;
use crate::codec::EXT_PATH;
use crate::cursor::Cursor;
use crate::{Chain, Link, NodeName, Path, PathStrings, UpdateEvent, Value};

/// Deepest value (or path element) the fast road decodes.
pub const FAST_DEPTH: usize = 16;

/// Node names kept for sharing: a cluster has a handful.
const MAX_NAMES: usize = 64;

/// Decodes events in our writers' layout, sharing node names and path
/// strings between them; see the module docs.
#[derive(Debug)]
pub struct EventDecoder {
    names: Vec<NodeName>,
    /// The string elements of the last path decoded, for sharing with the
    /// next path.
    path_strs: PathStrings,
    /// The elements of the path being decoded.
    elems: Vec<Value>,
    /// The links of the chain being decoded.
    links: Vec<Link>,
}

impl Default for EventDecoder {
    fn default() -> EventDecoder {
        EventDecoder {
            names: Vec::new(),
            path_strs: PathStrings::new(FAST_DEPTH, usize::MAX),
            elems: Vec::new(),
            links: Vec::new(),
        }
    }
}

impl EventDecoder {
    /// A decoder with no names yet.
    pub fn new() -> EventDecoder {
        EventDecoder::default()
    }

    /// The event map at the cursor, in our writers' layout, or `None`
    /// (the cursor is then anywhere).
    pub fn event(&mut self, c: &mut Cursor<'_>) -> Option<UpdateEvent> {
        let with_value = match c.byte()? {
            0x85 => false,
            0x86 => true,
            _ => return None,
        };
        self.links.clear();
        c.expect(&[0xa4, b'n', b'o', b'd', b'e'])?;
        self.link(c)?;
        // `{node, tick, prev}` maps down to a nil `prev`.
        while c.peek()? == 0x83 {
            if self.links.len() == MAX_CHAIN_LINKS {
                return None; // too long: the general road says so
            }
            c.expect(&[0x83, 0xa4, b'n', b'o', b'd', b'e'])?;
            self.link(c)?;
        }
        c.expect(&[0xc0, 0xa4, b'p', b'a', b't', b'h'])?;
        let path = self.path(c)?;
        let value = if with_value {
            c.expect(&[0xa5, b'v', b'a', b'l', b'u', b'e'])?;
            Some(c.value(FAST_DEPTH)?)
        } else {
            None
        };
        c.expect(&[0xa4, b't', b'o', b'c', b'k'])?;
        let tock = c.uint().filter(|&t| t <= MAX_COUNTER)?;
        let chain = Chain::from_checked_drain(&mut self.links).ok()?;
        // No `check_nesting`: what this road decodes nests at most
        // `FAST_DEPTH` levels, far inside the budget it checks.
        const _: () = assert!(FAST_DEPTH < MAX_NESTING);
        Some(UpdateEvent {
            path,
            chain,
            value,
            tock,
        })
    }

    /// Shares nothing decoded from now on with what was decoded before:
    /// the next node names and path strings are allocated anew (once, then
    /// shared by the events after them). For events handed to another
    /// thread in batches: the two threads then do not both count
    /// references to one name or string, whose cache line would pass
    /// between their cores at every event.
    pub fn share_anew(&mut self) {
        self.names.clear();
        self.path_strs.forget();
    }

    /// The node name `b`, shared with earlier events where it can be.
    pub fn name(&mut self, b: &[u8]) -> Option<NodeName> {
        if let Some(n) = self.names.iter().find(|n| n.as_bytes() == b) {
            return Some(n.clone());
        }
        let n = NodeName::from(std::str::from_utf8(b).ok()?);
        if self.names.len() == MAX_NAMES {
            // A decoder kept for long (a node's, between messages) starts
            // over rather than keep the first names it met for ever.
            self.names.clear();
        }
        self.names.push(n.clone());
        Some(n)
    }

    /// The path (msgpack ext 3) at the cursor. Keys come in runs under
    /// one parent (`bench.1`, `bench.2`, …): a string element with the
    /// same bytes as the one at the same place of the last path decoded is
    /// that string, shared (no allocation, no UTF-8 check again; the tree
    /// then finds the parent it followed last by the string's address).
    /// Unsigned integers are read here too, anything else by the codec.
    /// `None` for anything the codec would not make into this path.
    fn path(&mut self, c: &mut Cursor<'_>) -> Option<Path> {
        let n = match c.byte()? {
            m @ 0xd4..=0xd8 => 1 << (m - 0xd4),
            0xc7 => usize::from(c.byte()?),
            0xc8 => usize::from(u16::from_be_bytes(c.take(2)?.try_into().ok()?)),
            0xc9 => usize::try_from(u32::from_be_bytes(c.take(4)?.try_into().ok()?)).ok()?,
            _ => return None,
        };
        if c.byte()? != EXT_PATH as u8 {
            return None;
        }
        let mut p = Cursor::new(c.take(n)?);
        self.elems.clear();
        while !p.at_end() {
            let place = self.elems.len();
            let v = match p.peek()? {
                0xa0..=0xbf | 0xd9..=0xdb => Value::Str(self.path_strs.get(place, p.str()?)?),
                0x00..=0x7f | 0xcc..=0xcf => Value::uint(p.uint()?),
                // Elements nest one level below the path.
                _ => p.value(FAST_DEPTH - 1)?,
            };
            self.elems.push(v);
        }
        // One allocation: the drained elements go straight into the path.
        Some(self.elems.drain(..).collect())
    }

    /// A link's node name and tick, then the `prev` key (the cursor is
    /// past the `node` key): the link joins the chain being decoded.
    fn link(&mut self, c: &mut Cursor<'_>) -> Option<()> {
        let node = self.name(c.str()?)?;
        c.expect(&[0xa4, b't', b'i', b'c', b'k'])?;
        let tick = c.uint()?;
        c.expect(&[0xa4, b'p', b'r', b'e', b'v'])?;
        self.links.push(Link { node, tick });
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial;

    /// The fast road over exactly `bytes`.
    fn fast(d: &mut EventDecoder, bytes: &[u8]) -> Option<UpdateEvent> {
        let mut c = Cursor::new(bytes);
        d.event(&mut c).filter(|_| c.at_end())
    }

    /// A chain of the most links allowed takes the fast road; one link
    /// more is refused by both roads (the fast one stops reading there).
    #[test]
    fn chains_beyond_the_limit_are_refused_by_both_roads() {
        let mut d = EventDecoder::new();
        for n in [MAX_CHAIN_LINKS, MAX_CHAIN_LINKS + 1] {
            let ev = UpdateEvent {
                path: crate::path!["a"],
                chain: crate::strategies::chain_of(n),
                value: None,
                tock: 1,
            };
            let mut bytes = Vec::new();
            serial::encode(&ev, &mut bytes);
            let general = serial::from_slice::<UpdateEvent>(&bytes).ok();
            if n == MAX_CHAIN_LINKS {
                assert_eq!(fast(&mut d, &bytes), Some(ev.clone()));
                assert_eq!(general, Some(ev));
            } else {
                assert_eq!((fast(&mut d, &bytes), general), (None, None));
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6576_656e),
            ..proptest::test_runner::Config::default()
        })]

        /// One decoder, many events: each written by us takes the fast road
        /// to itself, whatever the events before it shared; with any byte
        /// changed, the fast road accepts only what serde decodes, to the
        /// same event.
        #[test]
        fn events_decode_alike_by_both_roads(
            evs in proptest::collection::vec(
                (
                    crate::strategies::event(),
                    proptest::prelude::any::<proptest::sample::Index>(),
                    proptest::prelude::any::<u8>(),
                ),
                1..8,
            ),
        ) {
            let mut d = EventDecoder::new();
            for (ev, at, byte) in evs {
                let mut bytes = Vec::new();
                serial::encode(&ev, &mut bytes);
                proptest::prop_assert_eq!(fast(&mut d, &bytes), Some(ev));
                let i = at.index(bytes.len());
                bytes[i] = byte;
                let general = serial::from_slice::<UpdateEvent>(&bytes).ok();
                if let Some(f) = fast(&mut d, &bytes) {
                    proptest::prop_assert_eq!(Some(f), general);
                }
            }
        }
    }
}
