//! Reading stream replies without building them: a message's fields
//! borrowed from its encoding.
//!
//! A big `get_tree` (or a watch's initial dump) is a million small maps.
//! Decoding each into a [`Value`] map — a vector, a shared string per key,
//! the path's elements — and freeing it again costs more than everything
//! else the client does with it. [`MsgView::parse`] walks a message's
//! encoding once, checking it exactly as [`codec::decode_with`] would
//! (structure, UTF-8 strings, nesting depth, extension types), and keeps
//! the encoded bytes of the fields a stream consumer reads (`seq`, `wseq`,
//! `state`, `error`, `depth`, `path`, `value`, `chain`, `tock`); everything
//! else is skipped. The consumer decodes only what it needs: a number in
//! place, a value when it prints it, a path's new elements only
//! ([`PathLongener::apply_raw`](crate::client::PathLongener::apply_raw)).
//!
//! Invariants: a view only exists for bytes that decode cleanly under the
//! limits it was parsed with, so reading its fields never fails on
//! structure; a field read is what [`Value::get`] would find on the decoded
//! map (the first key of that name; non-string keys never match). Nothing
//! here panics on hostile input: every length is checked against the bytes
//! that are there.

use distkv_model::budget::{MAX_CHAIN_LINKS, MAX_NAME_BYTES};
use distkv_model::chain::{ChainError, MAX_COUNTER};
use distkv_model::codec::{self, DecodeError, Limits, EXT_BIGINT, EXT_PATH};
use distkv_model::{Chain, Link, NodeName, Value};

/// The top-level fields of one message, borrowed from its encoding.
#[derive(Clone, Copy, Debug)]
pub struct MsgView<'a> {
    /// The whole message's encoding.
    pub frame: &'a [u8],
    fields: Fields,
}

/// Where a message's top-level fields named in a table of `N` keys lie in
/// its encoding: `(start, end)` of each field's value, `(0, 0)` for a field
/// it lacks. A field is the first key of that name, as [`Value::get`] finds
/// it; keys that are not strings never match.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpans<const N: usize>([(u32, u32); N]);

/// The fields a [`MsgView`] keeps (a stream consumer's).
pub(crate) type Fields = FieldSpans<{ FIELDS.len() }>;

/// The keys of a [`MsgView`]'s fields, in the order of [`Fields`].
const FIELDS: [&[u8]; 9] = [
    b"seq", b"wseq", b"state", b"error", b"depth", b"path", b"value", b"chain", b"tock",
];
const SEQ: usize = 0;
const WSEQ: usize = 1;
const STATE: usize = 2;
const ERROR: usize = 3;
const DEPTH: usize = 4;
const PATH: usize = 5;
const VALUE: usize = 6;
const CHAIN: usize = 7;
const TOCK: usize = 8;

impl Fields {
    /// Parses the message at the start of `buf` under `limits`: where its
    /// stream fields are, and its length.
    pub(crate) fn parse(buf: &[u8], limits: Limits) -> Result<(Fields, usize), DecodeError> {
        FieldSpans::parse_keys(buf, limits, &FIELDS)
    }

    /// As [`Fields::parse`], without checking strings (other than the
    /// keys) and extension values: for routing a message the checked read
    /// refused to the stream that reports it.
    pub(crate) fn peek(buf: &[u8], limits: Limits) -> Result<(Fields, usize), DecodeError> {
        let mut c = Cursor::new(buf, limits);
        c.check = false;
        FieldSpans::read(c, &FIELDS)
    }
}

impl<const N: usize> FieldSpans<N> {
    /// Parses the message at the start of `buf` under `limits`, checking
    /// it exactly as [`codec::decode_with`] would: where its fields named
    /// in `keys` are, and its length. A message that is not a map has no
    /// fields. Messages are at most 4 GiB (a frame's limit is far less).
    pub fn parse_keys(
        buf: &[u8],
        limits: Limits,
        keys: &[&[u8]; N],
    ) -> Result<(FieldSpans<N>, usize), DecodeError> {
        FieldSpans::read(Cursor::new(buf, limits), keys)
    }

    fn read(mut c: Cursor<'_>, keys: &[&[u8]; N]) -> Result<(FieldSpans<N>, usize), DecodeError> {
        let mut fields = FieldSpans([(0, 0); N]);
        match c.map_header()? {
            Some(n) => {
                c.enter(0)?;
                for _ in 0..n {
                    let key = c.key()?;
                    let start = c.pos;
                    c.skip(1)?;
                    let Some(i) = key.and_then(|k| keys.iter().position(|f| *f == k)) else {
                        continue;
                    };
                    let slot = &mut fields.0[i];
                    if slot.1 == 0 {
                        let fit = |x: usize| {
                            u32::try_from(x).map_err(|_| DecodeError::TooLarge {
                                size: x,
                                limit: u32::MAX as usize,
                            })
                        };
                        *slot = (fit(start)?, fit(c.pos)?);
                    }
                }
            }
            None => c.skip(0)?,
        }
        Ok((fields, c.pos))
    }

    /// The encoding of field `i` (the `i`-th key) in `frame`, the message
    /// these spans were parsed from; `None` if it lacks the field.
    pub fn get<'a>(&self, frame: &'a [u8], i: usize) -> Option<&'a [u8]> {
        let (start, end) = *self.0.get(i)?;
        if end == 0 {
            return None;
        }
        frame.get(start as usize..end as usize)
    }
}

impl<'a> MsgView<'a> {
    /// Parses the message at the start of `buf` under `limits`: the view
    /// and the message's length. A message that is not a map has no
    /// fields.
    pub fn parse(buf: &'a [u8], limits: Limits) -> Result<(MsgView<'a>, usize), DecodeError> {
        let (fields, n) = Fields::parse(buf, limits)?;
        Ok((MsgView::new(&buf[..n], fields), n))
    }

    /// The view of `frame`, whose fields [`Fields::parse`] found.
    pub(crate) fn new(frame: &'a [u8], fields: Fields) -> MsgView<'a> {
        MsgView { frame, fields }
    }

    fn field(&self, i: usize) -> Option<&'a [u8]> {
        self.fields.get(self.frame, i)
    }

    /// `seq`, if it is a non-negative integer.
    pub fn seq(&self) -> Option<u64> {
        self.field(SEQ).and_then(as_u64)
    }

    /// `wseq`, if it is a non-negative integer.
    pub fn wseq(&self) -> Option<u64> {
        self.field(WSEQ).and_then(as_u64)
    }

    /// `state`, if it is a string.
    pub fn state(&self) -> Option<&'a str> {
        self.field(STATE).and_then(as_str)
    }

    /// `depth`, if it is a non-negative integer.
    pub fn depth(&self) -> Option<u64> {
        self.field(DEPTH).and_then(as_u64)
    }

    /// `tock`, if it is a non-negative integer.
    pub fn tock(&self) -> Option<u64> {
        self.field(TOCK).and_then(as_u64)
    }

    /// The encoding of `error`, if there is one.
    pub fn error(&self) -> Option<&'a [u8]> {
        self.field(ERROR)
    }

    /// The encoding of `path`, if there is one.
    pub fn path(&self) -> Option<&'a [u8]> {
        self.field(PATH)
    }

    /// The encoding of `value`, if there is one.
    pub fn value(&self) -> Option<&'a [u8]> {
        self.field(VALUE)
    }

    /// The encoding of `chain`, if there is one.
    pub fn chain(&self) -> Option<&'a [u8]> {
        self.field(CHAIN)
    }
}

/// The non-negative integer a field's encoding holds, as
/// [`Value::as_u64`] reads it.
pub fn as_u64(b: &[u8]) -> Option<u64> {
    let be = |n: usize| {
        let x = b.get(1..1 + n)?;
        Some(x.iter().fold(0u64, |a, &c| (a << 8) | c as u64))
    };
    match *b.first()? {
        m @ 0x00..=0x7f => Some(m as u64),
        m @ 0xcc..=0xcf => be(1 << (m - 0xcc)),
        // Signed forms and big integers: rare, decoded.
        _ => codec::decode_with(b, LENIENT).ok()?.as_u64(),
    }
}

/// The string a field's encoding holds, if it is one.
pub fn as_str(b: &[u8]) -> Option<&str> {
    let (&m, rest) = b.split_first()?;
    let (n, body) = match m {
        0xa0..=0xbf => ((m & 0x1f) as usize, rest),
        0xd9..=0xdb => {
            let w = 1 << (m - 0xd9);
            let len = rest
                .get(..w)?
                .iter()
                .fold(0usize, |a, &c| (a << 8) | c as usize);
            (len, &rest[w..])
        }
        _ => return None,
    };
    std::str::from_utf8(body.get(..n)?).ok()
}

/// Limits for re-reading bytes a [`MsgView`] has already checked.
const LENIENT: Limits = Limits {
    max_frame: usize::MAX,
    max_depth: usize::MAX,
    foreign_ext: true,
};

/// The elements of an encoded path (a `Path`, ext 3, or an array, as
/// streams may send either), each as its encoding. `None` if `b` is
/// neither.
pub fn path_elements(b: &[u8]) -> Option<Elements<'_>> {
    let (&m, _) = b.split_first()?;
    let mut c = Cursor::new(b, LENIENT);
    match m {
        0x90..=0x9f | 0xdc | 0xdd => {
            let n = c.array_header().ok()??;
            Some(Elements {
                cursor: c,
                left: Some(n),
            })
        }
        0xc7..=0xc9 | 0xd4..=0xd8 => {
            let (t, payload) = c.ext().ok()?;
            (t == EXT_PATH).then(|| Elements {
                cursor: Cursor::new(payload, LENIENT),
                left: None,
            })
        }
        _ => None,
    }
}

/// An iterator over a path's elements, each as its encoding (see
/// [`path_elements`]). Ends early (with `Some(Err)`) on bytes that are not
/// msgpack.
#[derive(Debug)]
pub struct Elements<'a> {
    cursor: Cursor<'a>,
    /// Elements left of an array; `None` for an ext 3 payload, which ends
    /// with its bytes.
    left: Option<usize>,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<&'a [u8], DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.left {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None if self.cursor.pos >= self.cursor.buf.len() => return None,
            None => {}
        }
        let start = self.cursor.pos;
        match self.cursor.skip(0) {
            Ok(()) => Some(Ok(&self.cursor.buf[start..self.cursor.pos])),
            Err(e) => {
                self.left = Some(0);
                self.cursor.pos = self.cursor.buf.len();
                Some(Err(e))
            }
        }
    }
}

/// A checking reader over msgpack bytes.
#[derive(Debug)]
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: Limits,
    /// Whether strings and extension values are checked (UTF-8, types,
    /// nesting inside paths), or only skipped.
    check: bool,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], limits: Limits) -> Cursor<'a> {
        Cursor {
            buf,
            pos: 0,
            limits,
            check: true,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<usize, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0usize, |a, &c| (a << 8) | c as usize))
    }

    /// The nesting depth inside a container at `depth`, if allowed.
    fn enter(&self, depth: usize) -> Result<usize, DecodeError> {
        if depth >= self.limits.max_depth {
            return Err(DecodeError::TooDeep(self.limits.max_depth));
        }
        Ok(depth + 1)
    }

    /// A map's item count, consuming its header; `None` (nothing
    /// consumed) if the next value is not a map.
    fn map_header(&mut self) -> Result<Option<usize>, DecodeError> {
        self.container_header(0x80, 0xde)
    }

    /// An array's item count, consuming its header; `None` (nothing
    /// consumed) if the next value is not an array.
    fn array_header(&mut self) -> Result<Option<usize>, DecodeError> {
        self.container_header(0x90, 0xdc)
    }

    /// The item count of a container whose fix form is `fix..=fix | 0x0f`
    /// and whose 16-bit form is marked `wide` (the 32-bit form is
    /// `wide + 1`), consuming its header; `None` (nothing consumed) if the
    /// next value is not one.
    fn container_header(&mut self, fix: u8, wide: u8) -> Result<Option<usize>, DecodeError> {
        let m = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        let count = if m & 0xf0 == fix {
            self.pos += 1;
            (m & 0x0f) as usize
        } else if m == wide || m == wide + 1 {
            self.pos += 1;
            self.be(2 << (m - wide))?
        } else {
            return Ok(None);
        };
        Ok(Some(count))
    }

    /// An extension value: its type and payload (not checked).
    fn ext(&mut self) -> Result<(i8, &'a [u8]), DecodeError> {
        let m = self.byte()?;
        let n = match m {
            0xc7..=0xc9 => self.be(1 << (m - 0xc7))?,
            0xd4..=0xd8 => 1 << (m - 0xd4),
            _ => return Err(DecodeError::Invalid("not an extension value")),
        };
        let t = self.byte()? as i8;
        Ok((t, self.take(n)?))
    }

    /// A map key at depth 1: the bytes of a string key, `None` for any
    /// other key (skipped, checked).
    fn key(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let m = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        let n = match m {
            0xa0..=0xbf => {
                self.pos += 1;
                (m & 0x1f) as usize
            }
            0xd9..=0xdb => {
                self.pos += 1;
                self.be(1 << (m - 0xd9))?
            }
            _ => {
                self.skip(1)?;
                return Ok(None);
            }
        };
        Ok(Some(self.str(n)?))
    }

    fn str(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let b = self.take(n)?;
        // ASCII (keys, most texts) is UTF-8: checked without a call.
        if self.check && !b.is_ascii() && std::str::from_utf8(b).is_err() {
            return Err(DecodeError::Invalid("string is not UTF-8"));
        }
        Ok(b)
    }

    /// Skips one value at nesting `depth`, checking it as the decoder
    /// does.
    fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        let m = self.byte()?;
        match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => {}
            0x80..=0x8f => self.skip_items(2 * (m & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.skip_items((m & 0x0f) as usize, depth)?,
            0xa0..=0xbf => {
                self.str((m & 0x1f) as usize)?;
            }
            0xc1 => return Err(DecodeError::Invalid("reserved byte 0xc1")),
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))?;
                self.take(n)?;
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                self.pos -= 1;
                let (t, data) = self.ext()?;
                if self.check {
                    self.check_ext(t, data, depth)?;
                }
            }
            0xca => {
                self.take(4)?;
            }
            0xcb => {
                self.take(8)?;
            }
            0xcc..=0xcf => {
                self.take(1 << (m - 0xcc))?;
            }
            0xd0..=0xd3 => {
                self.take(1 << (m - 0xd0))?;
            }
            0xd9..=0xdb => {
                let n = self.be(1 << (m - 0xd9))?;
                self.str(n)?;
            }
            0xdc | 0xdd => {
                let n = self.be(2 << (m - 0xdc))?;
                self.skip_items(n, depth)?;
            }
            0xde | 0xdf => {
                let n = self.be(2 << (m - 0xde))?;
                self.skip_items(n.saturating_mul(2), depth)?;
            }
        }
        Ok(())
    }

    /// Skips `n` values inside a container at `depth`. A count beyond the
    /// bytes left fails as truncated, one value at a time.
    fn skip_items(&mut self, n: usize, depth: usize) -> Result<(), DecodeError> {
        let d = self.enter(depth)?;
        for _ in 0..n {
            self.skip(d)?;
        }
        Ok(())
    }

    /// Reads one value, telling whether it is written as
    /// [`codec::encode`] writes it.
    fn canonical(&mut self) -> Result<bool, DecodeError> {
        let m = self.byte()?;
        // The header form `encode` picks for a length.
        let len_form = |n: usize, forms: [u8; 3], first: usize| match n {
            _ if n < first => None,
            0..=0xff if forms[0] != 0 => Some(forms[0]),
            0..=0xffff => Some(forms[1]),
            _ => Some(forms[2]),
        };
        Ok(match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => true,
            0x80..=0x8f => self.canonical_items(2 * (m & 0x0f) as usize)?,
            0x90..=0x9f => self.canonical_items((m & 0x0f) as usize)?,
            0xa0..=0xbf => {
                self.take((m & 0x1f) as usize)?;
                true
            }
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))?;
                self.take(n)?;
                len_form(n, [0xc4, 0xc5, 0xc6], 0) == Some(m)
            }
            0xd9..=0xdb => {
                let n = self.be(1 << (m - 0xd9))?;
                self.take(n)?;
                len_form(n, [0xd9, 0xda, 0xdb], 32) == Some(m)
            }
            0xdc | 0xdd => {
                let n = self.be(2 << (m - 0xdc))?;
                len_form(n, [0, 0xdc, 0xdd], 16) == Some(m) && self.canonical_items(n)?
            }
            0xde | 0xdf => {
                let n = self.be(2 << (m - 0xde))?;
                len_form(n, [0, 0xde, 0xdf], 16) == Some(m)
                    && self.canonical_items(n.saturating_mul(2))?
            }
            0xcb => {
                self.take(8)?;
                true
            }
            0xcc..=0xcf => {
                let u = self.be(1 << (m - 0xcc))? as u64;
                let smallest = match u {
                    0..=0x7f => 0,
                    0x80..=0xff => 0xcc,
                    0x100..=0xffff => 0xcd,
                    0x1_0000..=0xffff_ffff => 0xce,
                    _ => 0xcf,
                };
                smallest == m
            }
            0xd0..=0xd3 => {
                let w = 1 << (m - 0xd0);
                let raw = self.be(w)? as u64;
                let i = ((raw << (64 - 8 * w)) as i64) >> (64 - 8 * w);
                let smallest = match i {
                    0.. | -32..=-1 => 0,
                    -0x80..=-33 => 0xd0,
                    -0x8000..=-0x81 => 0xd1,
                    -0x8000_0000..=-0x8001 => 0xd2,
                    _ => 0xd3,
                };
                smallest == m
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                self.pos -= 1;
                let (t, data) = self.ext()?;
                let form = match data.len() {
                    1 => 0xd4,
                    2 => 0xd5,
                    4 => 0xd6,
                    8 => 0xd7,
                    16 => 0xd8,
                    n => len_form(n, [0xc7, 0xc8, 0xc9], 0).unwrap_or(0),
                };
                form == m
                    && match t {
                        EXT_PATH => {
                            let mut inner = Cursor::new(data, self.limits);
                            while inner.pos < data.len() {
                                if !inner.canonical()? {
                                    return Ok(false);
                                }
                            }
                            true
                        }
                        EXT_BIGINT => data.len() > 8 && data[0] != 0,
                        _ => true,
                    }
            }
            // float32, and the reserved byte.
            _ => {
                self.pos -= 1;
                self.skip(0)?;
                false
            }
        })
    }

    fn canonical_items(&mut self, n: usize) -> Result<bool, DecodeError> {
        let mut all = true;
        for _ in 0..n {
            all &= self.canonical()?;
        }
        Ok(all)
    }

    fn check_ext(&self, t: i8, data: &'a [u8], depth: usize) -> Result<(), DecodeError> {
        match t {
            EXT_PATH => {
                let d = self.enter(depth)?;
                let mut inner = Cursor::new(data, self.limits);
                while inner.pos < data.len() {
                    inner.skip(d)?;
                }
                Ok(())
            }
            EXT_BIGINT => Ok(()),
            _ if self.limits.foreign_ext => Ok(()),
            _ => Err(DecodeError::ForeignExt(t)),
        }
    }
}

/// Whether `b` (one checked value, e.g. a [`MsgView`] field) nests at most
/// `max` levels of arrays, maps and paths: what [`codec::decode_with`]
/// under that depth limit accepts, and what
/// [`distkv_model::budget::nesting`] counts.
pub fn nests_within(b: &[u8], max: usize) -> bool {
    let limits = Limits {
        max_depth: max,
        ..LENIENT
    };
    Cursor::new(b, limits).skip(0).is_ok()
}

/// Whether `b` (one checked value) is exactly what [`codec::encode`]
/// writes for the value it decodes to: every number, length and extension
/// in its smallest form, floats as float64, big integers only from 2⁶⁴.
/// Other senders (another implementation, a lying peer) may write the
/// same value differently.
pub fn is_canonical(b: &[u8]) -> bool {
    let mut c = Cursor::new(b, LENIENT);
    c.canonical().unwrap_or(false) && c.pos == b.len()
}

/// Decodes a path element's encoding (from [`path_elements`]). An integer
/// is read in place, as the decoder reads it.
pub fn decode(b: &[u8]) -> Result<Value, DecodeError> {
    match *b {
        [m @ 0x00..=0x7f] => Ok(Value::Int(m as i64)),
        [m @ 0xe0..=0xff] => Ok(Value::Int(m as i8 as i64)),
        [m @ 0xcc..=0xcf, ref x @ ..] if x.len() == 1 << (m - 0xcc) => Ok(Value::uint(
            x.iter().fold(0u64, |a, &c| (a << 8) | c as u64),
        )),
        _ => codec::decode_with(b, LENIENT),
    }
}

/// Decodes one field's encoding (from a [`MsgView`]) into a value.
pub fn decode_field(b: &[u8]) -> Value {
    // A view's fields decode cleanly: they were checked when it was parsed.
    codec::decode_with(b, LENIENT).unwrap_or(Value::Nil)
}

/// Node names met in chains read in place ([`chain`]), shared between
/// the chains read with it: one allocation per node, not per link.
#[derive(Debug, Default)]
pub struct NodeNames(Vec<NodeName>);

impl NodeNames {
    /// Names kept; a stream naming more nodes allocates the others per
    /// link (a cluster has a handful).
    const KEPT: usize = 64;

    fn get(&mut self, name: &str) -> NodeName {
        if let Some(n) = self.0.iter().find(|n| &***n == name) {
            return n.clone();
        }
        let n = NodeName::from(name);
        if self.0.len() < Self::KEPT {
            self.0.push(n.clone());
        }
        n
    }
}

/// The chain a `chain` field's encoding (one checked value, e.g. a
/// [`MsgView`] field) holds, read in place: what [`Chain::from_value`]
/// makes of the decoded field, with the same errors in the same order —
/// `Ok(None)` for nil or a first link without `node`. Each link's `node`,
/// `tick` and `prev` are the first keys of those names, as
/// [`Value::get`] finds them; other keys are skipped.
pub fn chain(b: &[u8], names: &mut NodeNames) -> Result<Option<Chain>, ChainError> {
    let mut first: Option<Link> = None;
    let mut rest: Vec<Link> = Vec::new();
    let mut cur = b;
    loop {
        let link = match link_fields(cur)? {
            None => break,
            Some(l) => l,
        };
        let Some(node) = link.node else {
            if first.is_none() {
                return Ok(None);
            }
            return Err(ChainError("link without node"));
        };
        let node = as_str(node).ok_or(ChainError("node name is not a string"))?;
        let tick = match link.tick {
            None | Some([0xc0]) => 0,
            Some(t) => as_u64(t)
                .filter(|&t| t <= MAX_COUNTER)
                .ok_or(ChainError("tick is not an unsigned integer up to 2^62"))?,
        };
        let seen = first.iter().chain(&rest);
        if seen.clone().any(|l| &*l.node == node) {
            return Err(ChainError("node appears twice"));
        }
        if seen.count() >= MAX_CHAIN_LINKS {
            return Err(ChainError("chain has more links than the limit of 256"));
        }
        if node.len() > MAX_NAME_BYTES {
            return Err(ChainError("node name is longer than 255 bytes"));
        }
        let l = Link {
            node: names.get(node),
            tick,
        };
        match first {
            None => first = Some(l),
            Some(_) => rest.push(l),
        }
        match link.prev {
            Some(p) => cur = p,
            None => break,
        }
    }
    Ok(match (first, rest.is_empty()) {
        (None, _) => None,
        (Some(l), true) => Some(Chain::single(l.node, l.tick)),
        (Some(l), false) => {
            rest.insert(0, l);
            Chain::from_links(rest)
        }
    })
}

/// The fields of one chain link's encoding.
struct LinkFields<'a> {
    node: Option<&'a [u8]>,
    tick: Option<&'a [u8]>,
    prev: Option<&'a [u8]>,
}

/// A link's fields; `None` for nil (the end of the chain), an error for
/// anything else that is not a map.
fn link_fields(b: &[u8]) -> Result<Option<LinkFields<'_>>, ChainError> {
    let not_map = ChainError("link is not a map");
    let mut c = Cursor::new(b, LENIENT);
    if b.first() == Some(&0xc0) {
        return Ok(None);
    }
    let n = c.map_header().ok().flatten().ok_or(not_map.clone())?;
    let mut link = LinkFields {
        node: None,
        tick: None,
        prev: None,
    };
    for _ in 0..n {
        // A checked value: its keys and items are whole.
        let key = c.key().map_err(|_| not_map.clone())?;
        let start = c.pos;
        c.skip(1).map_err(|_| not_map.clone())?;
        let slot = match key {
            Some(b"node") => &mut link.node,
            Some(b"tick") => &mut link.tick,
            Some(b"prev") => &mut link.prev,
            _ => continue,
        };
        slot.get_or_insert(&b[start..c.pos]);
    }
    Ok(Some(link))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use distkv_model::path;
    use distkv_model::Path;
    use std::sync::Arc;

    fn entry() -> Value {
        Value::map([
            ("value", Value::map([("a", Value::Int(-3))])),
            ("tock", Value::Int(300)),
            ("path", Value::Path(path!["x", 1i64, "é"])),
            ("depth", Value::Int(2)),
            ("seq", Value::Int(7)),
            ("wseq", Value::uint(u64::MAX)),
        ])
    }

    #[test]
    fn fields_are_those_the_decoded_map_holds() {
        let bytes = codec::to_vec(&entry());
        let (v, n) = MsgView::parse(&bytes, Limits::default()).unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(v.frame, &bytes[..]);
        let m = entry();
        assert_eq!(v.seq(), Some(7));
        assert_eq!(v.wseq(), Some(u64::MAX));
        assert_eq!(v.tock(), Some(300));
        assert_eq!(v.depth(), Some(2));
        assert_eq!(v.state(), None);
        assert_eq!(v.chain(), None);
        assert_eq!(decode_field(v.value().unwrap()), *m.get("value").unwrap());
        let elems: Vec<Value> = path_elements(v.path().unwrap())
            .unwrap()
            .map(|e| decode_field(e.unwrap()))
            .collect();
        assert_eq!(elems, path!["x", 1i64, "é"].elements());
    }

    #[test]
    fn first_key_wins_and_odd_keys_are_skipped() {
        let msg = Value::Map(vec![
            (Value::Int(1), Value::str("seq")),
            (Value::str("state"), Value::str("uptodate")),
            (Value::str("state"), Value::str("end")),
            (Value::str("seq"), Value::Int(-1)),
            (Value::Array(vec![]), Value::Nil),
            (Value::str("depth"), Value::str("3")),
            (Value::str("path"), Value::Array(vec![Value::Int(4)])),
        ]);
        let bytes = codec::to_vec(&msg);
        let (v, n) = MsgView::parse(&bytes, Limits::default()).unwrap();
        assert_eq!(n, bytes.len());
        assert_eq!(v.state(), Some("uptodate"));
        assert_eq!(v.seq(), msg.get("seq").and_then(Value::as_u64));
        assert_eq!(v.depth(), None);
        let elems: Vec<_> = path_elements(v.path().unwrap()).unwrap().collect();
        assert_eq!(elems, vec![Ok(&[4u8][..])]);
        // Not a map: no fields, whole length.
        let bytes = codec::to_vec(&Value::Array(vec![Value::str("seq"), Value::Int(1)]));
        let (v, n) = MsgView::parse(&bytes, Limits::default()).unwrap();
        assert_eq!((v.seq(), n), (None, bytes.len()));
    }

    /// Path elements read in place are what the decoder makes of them:
    /// every integer form, other values, and bytes that are not one value.
    #[test]
    fn elements_decode_like_the_decoder() {
        let mut rng = Rng(0x5eed_e1e7);
        let mut cases: Vec<Vec<u8>> = vec![vec![], vec![0xcc], vec![0xcd, 1], vec![0x01, 0x02]];
        for i in 0..4000 {
            let v = match i % 4 {
                0 => Value::Int(rng.below(300) as i64 - 150),
                1 => Value::uint(rng.below(u64::MAX) >> rng.below(64)),
                2 => Value::Int(-(rng.below(1 << 40) as i64)),
                _ => [Value::str("é"), Value::Float(1.5), Value::Nil][i % 3].clone(),
            };
            let mut b = codec::to_vec(&v);
            cases.push(b.clone());
            // The same value in a wider form, and with a byte changed.
            if let Some(w @ 0xcc..=0xce) = b.first().copied() {
                let mut wide = vec![w + 1];
                wide.extend(std::iter::repeat_n(0, 1 << (w - 0xcc)));
                wide.extend_from_slice(&b[1..]);
                cases.push(wide);
            }
            let at = rng.below(b.len() as u64) as usize;
            b[at] = rng.below(256) as u8;
            cases.push(b);
        }
        for b in &cases {
            assert_eq!(decode(b), codec::decode_with(b, LENIENT), "{b:02x?}");
        }
    }

    #[test]
    fn integers_read_like_as_u64() {
        for v in [
            Value::Int(0),
            Value::Int(127),
            Value::Int(128),
            Value::Int(-1),
            Value::Int(-200),
            Value::Int(1 << 40),
            Value::uint(u64::MAX),
            Value::Float(1.0),
            Value::Bool(true),
            Value::str("1"),
        ] {
            assert_eq!(as_u64(&codec::to_vec(&v)), v.as_u64(), "{v:?}");
        }
        // A small number sent as ext 2, or in a wider form than needed.
        assert_eq!(as_u64(&[0xd4, 2, 42]), Some(42));
        assert_eq!(as_u64(&[0xd2, 0, 0, 1, 0]), Some(256));
        assert_eq!(as_u64(&[0xcd, 1]), None);
    }

    #[test]
    fn the_length_is_the_message_length_with_more_bytes_behind() {
        let mut bytes = codec::to_vec(&entry());
        let len = bytes.len();
        bytes.extend_from_slice(&codec::to_vec(&entry()));
        let (_, n) = MsgView::parse(&bytes, Limits::default()).unwrap();
        assert_eq!(n, len);
    }

    /// Every way the decoder refuses bytes, the view refuses them too, and
    /// neither panics.
    #[test]
    fn malformed_messages_are_refused_like_the_decoder_does() {
        let good = codec::to_vec(&entry());
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xc1],
            vec![0x81, 0xa3, b's', b'e', b'q', 0xc1],
            // Invalid UTF-8 in a key, in a skipped value, in a path.
            vec![0x81, 0xa2, 0xc3, 0x28, 0x01],
            vec![0x81, 0xa1, b'x', 0xa2, 0xc3, 0x28],
            vec![0x81, 0xa4, b'p', b'a', b't', b'h', 0xd5, 3, 0xa1, 0xff],
            // A foreign extension type.
            vec![0x81, 0xa1, b'x', 0xd4, 9, 0],
            // Counts beyond the bytes there.
            vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0xa1, b'x'],
            vec![0x81, 0xa1, b'x', 0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![0x81, 0xa1, b'x', 0xc6, 0xff, 0xff, 0xff, 0xff, 0],
            vec![0x81, 0xa1, b'x', 0xdb, 0xff, 0xff, 0xff, 0xff, 0],
            vec![0x81, 0xa1, b'x', 0xc9, 0xff, 0xff, 0xff, 0xff, 3],
        ];
        // Too deep: nested arrays and paths.
        let mut deep = vec![0x81, 0xa1, b'x'];
        deep.extend_from_slice(&[0x91; 100]);
        deep.push(0);
        cases.push(deep);
        let mut p = Value::Path(Path::root());
        for _ in 0..100 {
            p = Value::Path(Path::new(vec![p]));
        }
        cases.push(codec::to_vec(&Value::map([("path", p)])));
        // Every cut of a good message.
        for cut in 0..good.len() {
            cases.push(good[..cut].to_vec());
        }
        let limits = Limits::default();
        for bytes in &cases {
            let want = codec::decode_prefix(bytes, limits).map(|(_, n)| n);
            let got = MsgView::parse(bytes, limits).map(|(_, n)| n);
            assert!(want.is_err(), "{bytes:02x?} decodes");
            assert_eq!(got, want, "{bytes:02x?}");
        }
        // Foreign extensions pass where the limits allow them.
        let lenient = Limits {
            foreign_ext: true,
            ..limits
        };
        let ext = vec![0x81, 0xa1, b'x', 0xd4, 9, 0];
        assert_eq!(MsgView::parse(&ext, lenient).unwrap().1, ext.len());
    }

    #[test]
    fn canonical_is_what_encode_writes() {
        let values = [
            Value::Nil,
            Value::Int(0),
            Value::Int(127),
            Value::Int(128),
            Value::Int(65_536),
            Value::Int(-32),
            Value::Int(-33),
            Value::Int(-129),
            Value::Int(i64::MIN),
            Value::uint(u64::MAX),
            Value::Float(0.5),
            Value::str(&"s".repeat(31)),
            Value::str(&"s".repeat(32)),
            Value::str(&"s".repeat(300)),
            Value::Bin(Arc::from(vec![1u8; 256])),
            Value::Array(vec![Value::Int(1); 16]),
            Value::Map(vec![(Value::Int(1), Value::Nil); 16]),
            Value::Path(path!["a", 1i64, Value::Path(path!["b"])]),
            Value::Path(Path::new(vec![Value::str(&"p".repeat(300))])),
            Value::BigUint(Arc::from(&[1u8; 9][..])),
            Value::Ext(7, Arc::from(&[1u8; 3][..])),
        ];
        for v in values.iter().chain([&Value::Bin(Arc::from(&[][..]))]) {
            let b = codec::to_vec(v);
            assert!(is_canonical(&b), "{v:?}");
        }
        for b in [
            &[0xcc, 5][..],
            &[0xd0, 5],
            &[0xd1, 0xff, 0xf0],
            &[0xca, 0, 0, 0, 0],
            &[0xd9, 1, b'x'],
            &[0xdc, 0, 1, 0],
            &[0xde, 0, 0],
            &[0xc5, 0, 1, 7],
            &[0xc7, 1, 3, 0x01],
            &[0xd4, 2, 5],
            &[0xd5, 3, 0xcc, 1],
            &[0x91, 0xcc, 1],
            &[0x01, 0x02],
            &[0xcd, 1],
        ] {
            assert!(!is_canonical(b), "{b:02x?}");
        }
    }

    #[test]
    fn nesting_is_counted_as_the_decoder_counts_it() {
        let mut v = Value::Int(1);
        for depth in 0..12usize {
            let b = codec::to_vec(&v);
            assert!(nests_within(&b, depth), "{depth}");
            assert_eq!(
                nests_within(&b, depth.saturating_sub(1)),
                depth == 0,
                "{depth}"
            );
            v = if depth % 2 == 0 {
                Value::Array(vec![v])
            } else {
                Value::Path(Path::new(vec![v]))
            };
        }
    }

    #[test]
    fn hostile_paths_end_the_element_iterator() {
        assert!(path_elements(&[0x01]).is_none());
        assert!(path_elements(&codec::to_vec(&Value::Ext(4, Arc::from(&b"ab"[..])))).is_none());
        // An array claiming more elements than it holds.
        let mut it = path_elements(&[0x93, 0x01]).unwrap();
        assert_eq!(it.next(), Some(Ok(&[1u8][..])));
        assert_eq!(it.next(), Some(Err(DecodeError::Truncated)));
        assert_eq!(it.next(), None);
        // An ext 3 payload cut inside an element.
        let mut it = path_elements(&[0xd5, 3, 0xa3, b'a']).unwrap();
        assert_eq!(it.next(), Some(Err(DecodeError::Truncated)));
        assert_eq!(it.next(), None);
        // A truncated ext header.
        assert!(path_elements(&[0xc7, 5, 3, 1]).is_none());
    }

    /// A seeded xorshift: the cases below (and the wire reader's) are the
    /// same on every run.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A chain field as a peer might send it: mostly well formed, often
    /// not (missing, repeated and odd keys, names and ticks of every
    /// kind, links that are not maps, long chains).
    fn some_chain(rng: &mut Rng) -> Value {
        let top = rng.below(20);
        match top {
            0 => return Value::Nil,
            1 => return Value::str("n1"),
            2 => return Value::Map(vec![]),
            _ => {}
        }
        let links = match rng.below(10) {
            0 => 255 + rng.below(4) as usize,
            n => (n as usize % 4) + 1,
        };
        // A long chain is well formed link by link: it tests the limit.
        let clean = links > 4;
        let pick = |rng: &mut Rng, n| if clean { n } else { rng.below(n) };
        let mut v = match pick(rng, 8) {
            0 => Value::Int(3),
            1 => Value::Map(vec![]),
            _ => Value::Nil,
        };
        for i in 0..links {
            let node = match pick(rng, 14) {
                0 => None,
                1 => Some(Value::Int(1)),
                2 => Some(Value::Bin(Arc::from(&b"n1"[..]))),
                3 => Some(Value::str(&"x".repeat(255 + rng.below(2) as usize))),
                4 | 5 => Some(Value::str(["a", "b", "n1"][rng.below(3) as usize])),
                _ => Some(Value::str(&format!("n{i}"))),
            };
            let tick = match pick(rng, 14) {
                0 => None,
                1 => Some(Value::Nil),
                2 => Some(Value::Int(-1)),
                3 => Some(Value::Float(1.5)),
                4 => Some(Value::str("7")),
                5 => Some(Value::uint(MAX_COUNTER)),
                6 => Some(Value::uint(MAX_COUNTER + 1)),
                7 => Some(Value::uint(u64::MAX)),
                _ => Some(Value::Int(rng.below(1 << 20) as i64)),
            };
            let mut m = Vec::new();
            let field = |m: &mut Vec<(Value, Value)>, rng: &mut Rng, k: &str, x: Value| {
                if rng.below(8) == 0 {
                    m.push((Value::Int(0), Value::Int(0)));
                }
                m.push((Value::str(k), x));
            };
            if let Some(t) = tick {
                field(&mut m, rng, "tick", t);
            }
            if let Some(n) = node {
                field(&mut m, rng, "node", n.clone());
                if pick(rng, 10) == 0 {
                    field(&mut m, rng, "node", Value::str("other"));
                }
            }
            if i > 0 || !v.is_nil() || rng.below(3) == 0 {
                field(&mut m, rng, "prev", v);
            }
            if rng.below(2) == 0 {
                m.reverse();
            }
            v = Value::Map(m);
        }
        v
    }

    /// What the decoder's road makes of a chain field.
    fn decoded(v: &Value) -> Result<Option<Chain>, ChainError> {
        Chain::from_value(&Value::Map(vec![(Value::str("chain"), v.clone())]))
    }

    #[test]
    fn chains_read_in_place_are_the_decoded_ones() {
        let mut rng = Rng(0x5eed_c4a1);
        let mut names = NodeNames::default();
        let mut kinds = std::collections::HashSet::new();
        for i in 0..4000 {
            let v = some_chain(&mut rng);
            let b = codec::to_vec(&v);
            let want = decoded(&v);
            kinds.insert(format!(
                "{:?}",
                want.as_ref().map(|c| c.as_ref().map(Chain::len))
            ));
            assert_eq!(chain(&b, &mut names), want, "case {i}: {v:?}");
            // The same bytes with one byte changed, where they still
            // hold one checked value.
            let mut m = b.clone();
            let at = rng.below(m.len() as u64) as usize;
            m[at] = rng.below(256) as u8;
            let Ok((view, n)) = MsgView::parse(&m, LENIENT) else {
                continue;
            };
            let Ok(v) = codec::decode_with(&view.frame[..n], LENIENT) else {
                continue;
            };
            assert_eq!(
                chain(&m[..n], &mut names),
                decoded(&v),
                "case {i}, changed: {v:?}"
            );
        }
        // Every outcome occurred: nil, each error, chains of many lengths.
        for err in [
            "link is not a map",
            "link without node",
            "node name is not a string",
            "tick is not an unsigned",
            "node appears twice",
            "more links than the limit",
            "longer than 255 bytes",
        ] {
            assert!(kinds.iter().any(|k| k.contains(err)), "{err}: {kinds:?}");
        }
        assert!(kinds.contains("Ok(None)"), "{kinds:?}");
        assert!(kinds.contains("Ok(Some(256))"), "{kinds:?}");
        assert!(kinds.contains("Ok(Some(1))"), "{kinds:?}");
    }

    #[test]
    fn chains_read_in_place_share_node_names() {
        let v = Value::map([
            ("node", Value::str("n1")),
            ("tick", Value::Int(2)),
            ("prev", Value::map([("node", Value::str("n2"))])),
        ]);
        let b = codec::to_vec(&v);
        let mut names = NodeNames::default();
        let (x, y) = (
            chain(&b, &mut names).unwrap().unwrap(),
            chain(&b, &mut names).unwrap().unwrap(),
        );
        assert_eq!(x, y);
        assert_eq!(x.links()[1].tick, 0);
        assert!(NodeName::ptr_eq(&x.head().node, &y.head().node));
        assert!(NodeName::ptr_eq(&x.links()[1].node, &y.links()[1].node));
    }
}
