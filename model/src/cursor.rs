//! A read position in msgpack bytes, for the fast decoders of the file
//! formats (log records, snapshot items).
//!
//! Those decoders read the one layout their writer produces, field by field,
//! and give up (every read returns `None`) at the first byte that differs:
//! the caller then hands the bytes to its general serde decoder, which
//! decides what they are. So nothing here reports errors, and nothing here
//! reads past the end of the bytes.

use crate::codec::{self, Limits};
use crate::Value;

/// A read position in `bytes`; see the module docs.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `b`.
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor { b, pos: 0 }
    }

    /// Whether every byte has been read.
    pub fn at_end(&self) -> bool {
        self.pos == self.b.len()
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// The next byte, not consumed.
    pub fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// Consumes a nil if one comes next: whether one did (an optional
    /// field's `None`).
    pub fn nil(&mut self) -> bool {
        let nil = self.peek() == Some(0xc0);
        self.pos += usize::from(nil);
        nil
    }

    /// The next byte.
    pub fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// Consumes exactly the bytes `want`. Their number is a constant, so
    /// the comparison is a few loads, not a call to `memcmp` (the log's
    /// decoder checks a record's keys this way, ten or so a record).
    pub fn expect<const N: usize>(&mut self, want: &[u8; N]) -> Option<()> {
        let got: &[u8; N] = self.take(N)?.try_into().ok()?;
        (got == want).then_some(())
    }

    /// A big-endian unsigned integer of `n` ≤ 8 bytes.
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |a, &c| (a << 8) | c as u64))
    }

    /// An unsigned integer in one of msgpack's unsigned forms.
    pub fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(m as u64),
            m @ 0xcc..=0xcf => self.be(1 << (m - 0xcc)),
            _ => None,
        }
    }

    /// A string's bytes (not checked for UTF-8).
    pub fn str(&mut self) -> Option<&'a [u8]> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => (m & 0x1f) as usize,
            m @ 0xd9..=0xdb => self.be(1 << (m - 0xd9))? as usize,
            _ => return None,
        };
        self.take(n)
    }

    /// An array header's length.
    pub fn array_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x90..=0x9f => Some((m & 0x0f) as usize),
            0xdc => Some(self.be(2)? as usize),
            0xdd => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    /// A map header's length (entries, not elements).
    pub fn map_len(&mut self) -> Option<usize> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some((m & 0x0f) as usize),
            0xde => Some(self.be(2)? as usize),
            0xdf => Some(self.be(4)? as usize),
            _ => None,
        }
    }

    /// Any value nesting at most `max_depth` levels, by the hand-written
    /// codec (foreign extension types kept as [`Value::Ext`]).
    pub fn value(&mut self, max_depth: usize) -> Option<Value> {
        let limits = Limits {
            max_frame: usize::MAX,
            max_depth,
            foreign_ext: true,
        };
        let (v, n) = codec::decode_prefix(self.b.get(self.pos..)?, limits).ok()?;
        self.pos += n;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end_and_at_other_forms() {
        let mut c = Cursor::new(&[0x05, 0xcd, 0x01, 0x00, 0xa2, b'h', b'i', 0x92]);
        assert_eq!(c.uint(), Some(5));
        assert_eq!(c.uint(), Some(256));
        assert_eq!(c.clone().uint(), None, "a string is no integer");
        assert_eq!(c.str(), Some(&b"hi"[..]));
        assert_eq!(c.array_len(), Some(2));
        assert!(c.at_end());
        let mut m = Cursor::new(&[0x82, 0xde, 0x01, 0x00, 0xdf, 0, 1, 0, 0, 0x92]);
        assert_eq!(
            (m.map_len(), m.map_len(), m.map_len(), m.map_len()),
            (Some(2), Some(256), Some(65536), None)
        );
        assert_eq!((c.byte(), c.peek(), c.take(1)), (None, None, None));
        assert!(!c.nil(), "no nil at the end");
        // A nil is taken, anything else left.
        let mut n = Cursor::new(&[0xc0, 0x07]);
        assert!(n.nil());
        assert!(!n.nil());
        assert_eq!(n.uint(), Some(7));
        // Lengths beyond the bytes.
        assert_eq!(Cursor::new(&[0xcf, 1, 2]).uint(), None);
        assert_eq!(Cursor::new(&[0xa5, b'a']).str(), None);
        assert_eq!(Cursor::new(&[0xdd, 0xff]).array_len(), None);
        assert_eq!(Cursor::new(&[0x91, 0x91, 0x01]).value(1), None, "too deep");
        assert_eq!(
            Cursor::new(&[0x91, 0x01]).value(1),
            Some(Value::Array(vec![Value::Int(1)]))
        );
    }
}
