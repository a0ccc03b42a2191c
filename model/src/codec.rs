//! msgpack encoding with DistKV's extensions, byte-exact with Python's packer.
//!
//! Encoding follows `msgpack.Packer(use_bin_type=True)`: the smallest integer
//! form (unsigned forms for non-negative numbers), floats as float64, str as
//! str8/16/32, bytes as bin, tuples as arrays, and fixext forms for 1/2/4/8/16
//! byte extension payloads. Ext 2 carries unsigned integers of at least 2⁶⁴,
//! ext 3 a [`Path`] (each element packed in turn).
//!
//! DistKV's client stream has no framing: messages are concatenated msgpack
//! maps. [`FrameScanner`] finds where the next complete value ends without
//! building it, resumably across reads, so a frame arriving in many pieces is
//! scanned once (linear time). It enforces the frame-size and nesting limits
//! before anything is allocated; [`decode`] then builds the value.
//! Neither ever panics on hostile input.

use std::sync::Arc;

use crate::path::Path;
use crate::shared_str::SharedStr;
use crate::value::Value;

/// msgpack extension code of big unsigned integers.
pub const EXT_BIGINT: i8 = 2;
/// msgpack extension code of paths.
pub const EXT_PATH: i8 = 3;

/// Limits applied while scanning and decoding untrusted input.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest accepted encoded value, in bytes.
    pub max_frame: usize,
    /// Deepest accepted nesting of arrays, maps and paths.
    pub max_depth: usize,
    /// Whether msgpack extension types other than DistKV's own (2: big
    /// integers, 3: paths) are accepted. DistKV's clients cannot read
    /// them, so a node refuses them from clients and peers; its own files
    /// may hold them from before that rule.
    pub foreign_ext: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame: 16 << 20,
            max_depth: 64,
            foreign_ext: false,
        }
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value is larger than [`Limits::max_frame`].
    #[error("message of at least {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes seen or announced so far.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The value nests deeper than [`Limits::max_depth`].
    #[error("message nests deeper than {0} levels")]
    TooDeep(usize),
    /// The bytes end before the value does.
    #[error("message is truncated")]
    Truncated,
    /// The bytes are not valid msgpack (or break DistKV's rules).
    #[error("malformed msgpack: {0}")]
    Invalid(&'static str),
    /// A msgpack extension type DistKV's clients cannot read.
    #[error(
        "msgpack extension type {0} is not allowed (DistKV uses only 2, big integers, and 3, paths)"
    )]
    ForeignExt(i8),
}

// ---------------------------------------------------------------- encoding

/// Appends the msgpack encoding of `v` to `out`.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::BigUint(b) => write_ext(out, EXT_BIGINT, b),
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => write_str(out, s),
        Value::Bin(b) => write_bin(out, b),
        Value::Array(a) => {
            write_array_len(out, a.len());
            for x in a {
                encode(x, out);
            }
        }
        Value::Map(m) => {
            write_map_len(out, m.len());
            for (k, x) in m {
                encode(k, out);
                encode(x, out);
            }
        }
        Value::Path(p) => write_path(out, p),
        Value::Ext(t, b) => write_ext(out, *t, b),
    }
}

/// The length of `v`'s msgpack encoding ([`encode`]), without encoding it.
pub fn encoded_len(v: &Value) -> usize {
    // Header bytes of an array or map of `n` items.
    fn head(n: usize) -> usize {
        match n {
            0..16 => 1,
            16..=0xffff => 3,
            _ => 5,
        }
    }
    fn ext(n: usize) -> usize {
        2 + n
            + match n {
                1 | 2 | 4 | 8 | 16 => 0,
                _ if n <= u8::MAX as usize => 1,
                _ if n <= u16::MAX as usize => 2,
                _ => 4,
            }
    }
    fn uint(u: u64) -> usize {
        match u {
            0..128 => 1,
            128..=0xff => 2,
            0x100..=0xffff => 3,
            0x1_0000..=0xffff_ffff => 5,
            _ => 9,
        }
    }
    match v {
        Value::Nil | Value::Bool(_) => 1,
        Value::Int(i) if *i >= 0 => uint(*i as u64),
        Value::Int(i) if *i >= -32 => 1,
        Value::Int(i) if *i >= i8::MIN as i64 => 2,
        Value::Int(i) if *i >= i16::MIN as i64 => 3,
        Value::Int(i) if *i >= i32::MIN as i64 => 5,
        Value::Int(_) => 9,
        Value::UInt(u) => uint(*u),
        Value::BigUint(b) | Value::Ext(_, b) => ext(b.len()),
        Value::Float(_) => 9,
        Value::Str(s) => {
            s.len()
                + match s.len() {
                    0..32 => 1,
                    32..=0xff => 2,
                    0x100..=0xffff => 3,
                    _ => 5,
                }
        }
        Value::Bin(b) => {
            b.len()
                + match b.len() {
                    0..=0xff => 2,
                    0x100..=0xffff => 3,
                    _ => 5,
                }
        }
        Value::Array(a) => head(a.len()) + a.iter().map(encoded_len).sum::<usize>(),
        Value::Map(m) => {
            head(m.len())
                + m.iter()
                    .map(|(k, x)| encoded_len(k) + encoded_len(x))
                    .sum::<usize>()
        }
        Value::Path(p) => ext(p.iter().map(encoded_len).sum()),
    }
}

/// The msgpack encoding of `v`.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out);
    out
}

/// Writes a path as ext 3. The elements are encoded in place and the
/// header, whose size depends on their length, is put before them
/// afterwards: no buffer of their own.
pub fn write_path(out: &mut Vec<u8>, p: &[Value]) {
    write_path_with(out, |out| {
        for e in p {
            encode(e, out);
        }
    });
}

/// Writes a path as ext 3 whose elements `elements` encodes ([`write_path`]
/// of elements not held as values).
pub fn write_path_with(out: &mut Vec<u8>, elements: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    elements(out);
    let n = out.len() - start;
    let mut head = [0u8; EXT_HEADER_MAX];
    let len = ext_header(&mut head, EXT_PATH, n);
    // The elements move up by the header's length, which goes before them.
    out.resize(start + len + n, 0);
    out.copy_within(start..start + n, start + len);
    out[start..start + len].copy_from_slice(&head[..len]);
}

/// Writes a signed integer in its smallest form.
pub fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        write_uint(out, i as u64);
    } else if i >= -32 {
        out.push(i as u8);
    } else if i >= i8::MIN as i64 {
        out.push(0xd0);
        out.push(i as i8 as u8);
    } else if i >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

/// Writes an unsigned integer in its smallest form.
pub fn write_uint(out: &mut Vec<u8>, u: u64) {
    if u < 128 {
        out.push(u as u8);
    } else if u <= u8::MAX as u64 {
        out.push(0xcc);
        out.push(u as u8);
    } else if u <= u16::MAX as u64 {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u <= u32::MAX as u64 {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

/// Writes a UTF-8 string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= u8::MAX as usize {
        out.push(0xd9);
        out.push(n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Writes a byte string.
pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= u8::MAX as usize {
        out.push(0xc4);
        out.push(n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// Writes an array header.
pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Writes a map header.
pub fn write_map_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Writes an extension value, using the fixext forms where they apply.
pub fn write_ext(out: &mut Vec<u8>, typ: i8, data: &[u8]) {
    let mut head = [0u8; EXT_HEADER_MAX];
    let len = ext_header(&mut head, typ, data.len());
    out.extend_from_slice(&head[..len]);
    out.extend_from_slice(data);
}

/// The longest extension header: marker, 32-bit length, type.
const EXT_HEADER_MAX: usize = 6;

/// Writes the header of an extension value of `n` bytes of type `typ`
/// into `head` (the fixext forms where they apply); returns its length.
fn ext_header(head: &mut [u8; EXT_HEADER_MAX], typ: i8, n: usize) -> usize {
    let len = match n {
        1 | 2 | 4 | 8 | 16 => {
            head[0] = match n {
                1 => 0xd4,
                2 => 0xd5,
                4 => 0xd6,
                8 => 0xd7,
                _ => 0xd8,
            };
            1
        }
        _ if n <= u8::MAX as usize => {
            head[0] = 0xc7;
            head[1] = n as u8;
            2
        }
        _ if n <= u16::MAX as usize => {
            head[0] = 0xc8;
            head[1..3].copy_from_slice(&(n as u16).to_be_bytes());
            3
        }
        _ => {
            head[0] = 0xc9;
            head[1..5].copy_from_slice(&(n as u32).to_be_bytes());
            5
        }
    };
    head[len] = typ as u8;
    len + 1
}

// ---------------------------------------------------------------- scanning

/// What a msgpack header byte announces.
enum Head {
    /// A value of `len` bytes in total whose header is `hdr` bytes long.
    Scalar { hdr: usize, payload: usize },
    /// A container header of `hdr` bytes followed by `items` values.
    Container { hdr: usize, items: usize },
}

/// Reads the header at the start of `b`. `Ok(None)` = not enough bytes.
fn head(b: &[u8]) -> Result<Option<Head>, DecodeError> {
    let Some(&m) = b.first() else { return Ok(None) };
    let need = |n: usize| -> Option<u64> {
        let x = b.get(1..1 + n)?;
        Some(x.iter().fold(0u64, |a, &c| (a << 8) | c as u64))
    };
    let scalar = |hdr: usize, payload: usize| Ok(Some(Head::Scalar { hdr, payload }));
    let sized = |n: usize, extra: usize| -> Result<Option<Head>, DecodeError> {
        match need(n) {
            None => Ok(None),
            Some(len) => scalar(1 + n + extra, len as usize),
        }
    };
    let counted = |n: usize, per: usize| -> Result<Option<Head>, DecodeError> {
        match need(n) {
            None => Ok(None),
            Some(len) => Ok(Some(Head::Container {
                hdr: 1 + n,
                items: (len as usize).saturating_mul(per),
            })),
        }
    };
    match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => scalar(1, 0),
        0x80..=0x8f => Ok(Some(Head::Container {
            hdr: 1,
            items: 2 * (m & 0x0f) as usize,
        })),
        0x90..=0x9f => Ok(Some(Head::Container {
            hdr: 1,
            items: (m & 0x0f) as usize,
        })),
        0xa0..=0xbf => scalar(1, (m & 0x1f) as usize),
        0xc1 => Err(DecodeError::Invalid("reserved byte 0xc1")),
        0xc4 | 0xd9 => sized(1, 0),
        0xc5 | 0xda => sized(2, 0),
        0xc6 | 0xdb => sized(4, 0),
        0xc7 => sized(1, 1),
        0xc8 => sized(2, 1),
        0xc9 => sized(4, 1),
        0xca => scalar(1, 4),
        0xcb => scalar(1, 8),
        0xcc | 0xd0 => scalar(1, 1),
        0xcd | 0xd1 => scalar(1, 2),
        0xce | 0xd2 => scalar(1, 4),
        0xcf | 0xd3 => scalar(1, 8),
        0xd4 => scalar(2, 1),
        0xd5 => scalar(2, 2),
        0xd6 => scalar(2, 4),
        0xd7 => scalar(2, 8),
        0xd8 => scalar(2, 16),
        0xdc => counted(2, 1),
        0xdd => counted(4, 1),
        0xde => counted(2, 2),
        0xdf => counted(4, 2),
    }
}

/// Finds the end of one complete msgpack value in a growing buffer.
///
/// Feed it the buffer (starting at the value) each time more bytes arrive;
/// it resumes where it stopped. After it reports a complete value, call
/// [`FrameScanner::reset`] before scanning the next one.
#[derive(Debug)]
pub struct FrameScanner {
    limits: Limits,
    pos: usize,
    /// Items still expected by each open container.
    open: Vec<usize>,
    started: bool,
}

impl FrameScanner {
    /// A scanner enforcing `limits`.
    pub fn new(limits: Limits) -> FrameScanner {
        FrameScanner {
            limits,
            pos: 0,
            open: Vec::new(),
            started: false,
        }
    }

    /// Forgets the previous value.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
        self.started = false;
    }

    /// Scans `buf`: `Ok(Some(n))` when its first `n` bytes hold a complete
    /// value, `Ok(None)` when more bytes are needed.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let limit = self.limits.max_frame;
        loop {
            if self.started && self.open.is_empty() {
                return Ok(Some(self.pos));
            }
            let Some(h) = head(&buf[self.pos.min(buf.len())..])? else {
                return self.need_more(buf);
            };
            match h {
                Head::Scalar { hdr, payload } => {
                    let end = self.pos.saturating_add(hdr).saturating_add(payload);
                    if end > limit {
                        return Err(DecodeError::TooLarge { size: end, limit });
                    }
                    if end > buf.len() {
                        return self.need_more(buf);
                    }
                    self.pos = end;
                    self.started = true;
                    self.item_done();
                }
                Head::Container { hdr, items } => {
                    let end = self.pos + hdr;
                    if end > buf.len() {
                        return self.need_more(buf);
                    }
                    // Each item takes at least one byte.
                    if end.saturating_add(items) > limit {
                        return Err(DecodeError::TooLarge {
                            size: end.saturating_add(items),
                            limit,
                        });
                    }
                    self.pos = end;
                    self.started = true;
                    if items == 0 {
                        self.item_done();
                    } else {
                        if self.open.len() >= self.limits.max_depth {
                            return Err(DecodeError::TooDeep(self.limits.max_depth));
                        }
                        self.open.push(items);
                    }
                }
            }
        }
    }

    fn item_done(&mut self) {
        while let Some(top) = self.open.last_mut() {
            *top -= 1;
            if *top > 0 {
                return;
            }
            self.open.pop();
        }
    }

    fn need_more(&self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.len() >= self.limits.max_frame {
            Err(DecodeError::TooLarge {
                size: buf.len(),
                limit: self.limits.max_frame,
            })
        } else {
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------- decoding

/// Decodes exactly one value from `buf` (trailing bytes are an error).
pub fn decode(buf: &[u8]) -> Result<Value, DecodeError> {
    decode_with(buf, Limits::default())
}

/// Decodes exactly one value from `buf` under `limits`.
pub fn decode_with(buf: &[u8], limits: Limits) -> Result<Value, DecodeError> {
    let (v, n) = decode_prefix(buf, limits)?;
    if n != buf.len() {
        return Err(DecodeError::Invalid("trailing bytes after the value"));
    }
    Ok(v)
}

/// Decodes the value at the start of `buf`, returning it and its length.
pub fn decode_prefix(buf: &[u8], limits: Limits) -> Result<(Value, usize), DecodeError> {
    if buf.len() > limits.max_frame {
        // Still fine if the value itself is short; the reader checks as it goes.
    }
    let mut r = Reader {
        buf,
        pos: 0,
        max_depth: limits.max_depth,
        foreign_ext: limits.foreign_ext,
    };
    let v = r.value(0)?;
    Ok((v, r.pos))
}

/// Field names and actions that nearly every message carries: decoding
/// shares one allocation for each instead of allocating per message, an
/// immortal one ([`SharedStr::immortal`]): its clones write no count.
const COMMON: [&str; 16] = [
    "seq",
    "action",
    "path",
    "value",
    "nchain",
    "tock",
    "node",
    "tick",
    "prev",
    "chain",
    "state",
    "ack",
    "wseq",
    "depth",
    "set_value",
    "get_value",
];

fn interned(b: &[u8]) -> Option<&'static SharedStr> {
    static SHARED: std::sync::OnceLock<Vec<SharedStr>> = std::sync::OnceLock::new();
    if b.len() > 9 {
        return None;
    }
    let i = COMMON.iter().position(|k| k.as_bytes() == b)?;
    Some(&SHARED.get_or_init(|| COMMON.iter().map(|k| SharedStr::immortal(k)).collect())[i])
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    max_depth: usize,
    foreign_ext: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &c| (a << 8) | c as u64))
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => Value::Int(m as i64),
            0xe0..=0xff => Value::Int(m as i8 as i64),
            0x80..=0x8f => self.map((m & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.array((m & 0x0f) as usize, depth)?,
            0xa0..=0xbf => self.str((m & 0x1f) as usize)?,
            0xc0 => Value::Nil,
            0xc1 => return Err(DecodeError::Invalid("reserved byte 0xc1")),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))? as usize;
                Value::Bin(Arc::from(self.take(n)?))
            }
            0xc7..=0xc9 => {
                let n = self.be(1 << (m - 0xc7))? as usize;
                let t = self.byte()? as i8;
                self.ext(t, n, depth)?
            }
            0xca => Value::Float(f32::from_bits(self.be(4)? as u32) as f64),
            0xcb => Value::Float(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => Value::uint(self.be(1 << (m - 0xcc))?),
            0xd0 => Value::Int(self.be(1)? as u8 as i8 as i64),
            0xd1 => Value::Int(self.be(2)? as u16 as i16 as i64),
            0xd2 => Value::Int(self.be(4)? as u32 as i32 as i64),
            0xd3 => Value::Int(self.be(8)? as i64),
            0xd4..=0xd8 => {
                let t = self.byte()? as i8;
                self.ext(t, 1 << (m - 0xd4), depth)?
            }
            0xd9..=0xdb => {
                let n = self.be(1 << (m - 0xd9))? as usize;
                self.str(n)?
            }
            0xdc | 0xdd => {
                let n = self.be(2 << (m - 0xdc))? as usize;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.be(2 << (m - 0xde))? as usize;
                self.map(n, depth)?
            }
        })
    }

    fn str(&mut self, n: usize) -> Result<Value, DecodeError> {
        let b = self.take(n)?;
        if let Some(s) = interned(b) {
            return Ok(Value::Str(s.clone()));
        }
        let s = std::str::from_utf8(b).map_err(|_| DecodeError::Invalid("string is not UTF-8"))?;
        Ok(Value::Str(SharedStr::new(s)))
    }

    fn enter(&self, depth: usize) -> Result<usize, DecodeError> {
        if depth >= self.max_depth {
            return Err(DecodeError::TooDeep(self.max_depth));
        }
        Ok(depth + 1)
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let d = self.enter(depth)?;
        // Never trust a count beyond the bytes that could hold it.
        let mut v = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            v.push(self.value(d)?);
        }
        Ok(Value::Array(v))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let d = self.enter(depth)?;
        let mut v = Vec::with_capacity(n.min((self.buf.len() - self.pos) / 2));
        for _ in 0..n {
            let k = self.value(d)?;
            let x = self.value(d)?;
            v.push((k, x));
        }
        Ok(Value::Map(v))
    }

    fn ext(&mut self, t: i8, n: usize, depth: usize) -> Result<Value, DecodeError> {
        let data = self.take(n)?;
        match t {
            EXT_PATH => {
                let d = self.enter(depth)?;
                let mut inner = Reader {
                    buf: data,
                    pos: 0,
                    max_depth: self.max_depth,
                    foreign_ext: self.foreign_ext,
                };
                let mut elems = Vec::new();
                while inner.pos < data.len() {
                    elems.push(inner.value(d)?);
                }
                Ok(Value::Path(Path::new(elems)))
            }
            EXT_BIGINT => Ok(Value::from_be_digits(data)),
            _ if self.foreign_ext => Ok(Value::Ext(t, Arc::from(data))),
            _ => Err(DecodeError::ForeignExt(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path;
    use proptest::prelude::*;

    fn any_value() -> impl Strategy<Value = Value> {
        let text = proptest::collection::vec(any::<char>(), 0..40)
            .prop_map(|c| c.into_iter().collect::<String>());
        let bytes = proptest::collection::vec(any::<u8>(), 0..300);
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::uint),
            any::<f64>().prop_map(Value::Float),
            text.prop_map(|s| Value::str(&s)),
            (0usize..70_000).prop_map(|n| Value::str(&"x".repeat(n))),
            bytes.clone().prop_map(|b| Value::Bin(Arc::from(b))),
            (0usize..70_000).prop_map(|n| Value::Bin(Arc::from(vec![7u8; n]))),
            bytes.clone().prop_map(|b| Value::BigUint(Arc::from(b))),
            (any::<i8>(), bytes).prop_map(|(t, b)| Value::Ext(t, Arc::from(b))),
        ];
        leaf.prop_recursive(4, 64, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..20)
                    .prop_map(Value::Map),
                proptest::collection::vec(inner, 0..4).prop_map(|e| Value::Path(Path::new(e))),
            ]
        })
    }

    proptest! {
        #[test]
        fn encoded_len_is_the_length_of_the_encoding(v in any_value()) {
            prop_assert_eq!(encoded_len(&v), to_vec(&v).len());
        }
    }

    #[test]
    fn encoded_len_of_large_containers() {
        for n in [15, 16, 65_535, 65_536] {
            let a = Value::Array(vec![Value::Nil; n]);
            assert_eq!(encoded_len(&a), to_vec(&a).len(), "array of {n}");
            let m = Value::Map(vec![(Value::Nil, Value::Nil); n]);
            assert_eq!(encoded_len(&m), to_vec(&m).len(), "map of {n}");
        }
    }

    #[test]
    fn path_ext3_matches_spec_example() {
        let p = path![".distkv", "config"];
        assert_eq!(
            crate::hex::encode(&to_vec(&Value::Path(p))),
            "c70f03a72e646973746b76a6636f6e666967"
        );
        assert_eq!(
            crate::hex::encode(&to_vec(&Value::Path(Path::root()))),
            "c70003"
        );
    }

    #[test]
    fn a_path_is_written_as_the_ext_of_its_encoded_elements_at_every_header_size() {
        // Payload lengths at each form's edges: fixext 1 … 16, ext 8/16/32.
        for n in [1usize, 2, 3, 4, 8, 16, 17, 255, 256, 65_535, 65_536] {
            // One bin element: its own header (2, 3 or 5 bytes) + bytes.
            let elements: Vec<Value> = if n < 2 {
                vec![Value::Nil]
            } else {
                let head = if n - 2 <= 255 {
                    2
                } else if n - 3 <= 65_535 {
                    3
                } else {
                    5
                };
                vec![Value::Bin(std::sync::Arc::from(vec![7u8; n - head]))]
            };
            let mut payload = Vec::new();
            elements.iter().for_each(|e| encode(e, &mut payload));
            assert_eq!(payload.len(), n);
            let mut want = vec![0xaa];
            write_ext(&mut want, EXT_PATH, &payload);
            let mut got = vec![0xaa];
            write_path(&mut got, &elements);
            assert_eq!(got, want, "payload of {n} bytes");
        }
    }

    #[test]
    fn transcript_greeting_round_trips_byte_exact() {
        let bytes = crate::hex::decode("86a373657100a776657273696f6e93003f03a46e6f6465a26e31a47469636b30a4746f636bcd01f1a4716c656e0a").expect("hex");
        let v = decode(&bytes).unwrap();
        assert_eq!(v.get("tock").and_then(Value::as_u64), Some(497));
        assert_eq!(to_vec(&v), bytes);
    }

    #[test]
    fn transcript_messages_round_trip_byte_exact() {
        for h in [
            "85a6616374696f6ea97365745f76616c7565a470617468c70a03a477697265a474657374a576616c7565a968656c6c6f20726177a66e636861696e00a373657101",
            "83a76368616e676564c3a4746f636bcd021fa373657101",
            "84a6616374696f6ea86765745f74726565a470617468c70503a477697265a66e636861696e00a37365710b",
            "85a46e6f6465a26e31a47469636b4fa47072657683a46e6f6465a26e32a47469636b02a470726576c0a470617468c70903a46d717474a374776fa4746f636bcd0276",
            "84a174a470696e67a46e6f6465a26e31a576616c756592cd015910a7686973746f727992a26e31a26e32",
        ] {
            let bytes = crate::hex::decode(h).expect("hex");
            let v = decode(&bytes).unwrap();
            assert_eq!(crate::hex::encode(&to_vec(&v)), h);
        }
    }

    #[test]
    fn big_integers_use_ext2_only_from_2_pow_64() {
        assert_eq!(
            crate::hex::encode(&to_vec(&Value::uint(u64::MAX))),
            "cfffffffffffffffff"
        );
        let big = Value::BigUint(Arc::from(&[1u8, 0, 0, 0, 0, 0, 0, 0, 0][..]));
        let enc = to_vec(&big);
        assert_eq!(crate::hex::encode(&enc), "c70902010000000000000000");
        assert_eq!(decode(&enc).unwrap(), big);
        // A small number sent as ext 2 decodes to a plain integer.
        assert_eq!(
            decode(&crate::hex::decode("d4022a").expect("hex")).unwrap(),
            Value::Int(42)
        );
    }

    #[test]
    fn integers_use_smallest_form() {
        for (i, h) in [
            (0i64, "00"),
            (127, "7f"),
            (128, "cc80"),
            (256, "cd0100"),
            (65536, "ce00010000"),
            (1 << 32, "cf0000000100000000"),
            (-1, "ff"),
            (-32, "e0"),
            (-33, "d0df"),
            (-129, "d1ff7f"),
            (-32769, "d2ffff7fff"),
            (i64::MIN, "d38000000000000000"),
        ] {
            assert_eq!(crate::hex::encode(&to_vec(&Value::Int(i))), h, "{i}");
            assert_eq!(
                decode(&crate::hex::decode(h).expect("hex")).unwrap(),
                Value::Int(i)
            );
        }
    }

    #[test]
    fn scanner_finds_frames_split_anywhere() {
        let mut buf = Vec::new();
        let msgs: Vec<Value> = (0..5)
            .map(|i| Value::map([("seq", Value::Int(i)), ("path", Value::Path(path!["a", i]))]))
            .collect();
        for m in &msgs {
            encode(m, &mut buf);
        }
        for split in 0..buf.len() {
            let mut sc = FrameScanner::new(Limits::default());
            let mut have = buf[..split].to_vec();
            let mut rest = &buf[split..];
            let mut out = Vec::new();
            loop {
                match sc.scan(&have).unwrap() {
                    Some(n) => {
                        out.push(decode(&have[..n]).unwrap());
                        have.drain(..n);
                        sc.reset();
                    }
                    None if rest.is_empty() => break,
                    None => {
                        have.extend_from_slice(rest);
                        rest = &[];
                    }
                }
            }
            assert_eq!(out, msgs);
        }
    }

    #[test]
    fn foreign_extension_types_are_refused_unless_allowed() {
        for t in [-1i8, 0, 1, 4, 7, 127] {
            let bytes = to_vec(&Value::Ext(t, Arc::from(&b"xy"[..])));
            assert_eq!(decode(&bytes), Err(DecodeError::ForeignExt(t)));
            let inside = to_vec(&Value::Array(vec![Value::Path(Path::new(vec![
                Value::Ext(t, Arc::from(&b"z"[..])),
            ]))]));
            assert_eq!(decode(&inside), Err(DecodeError::ForeignExt(t)));
            let lenient = Limits {
                foreign_ext: true,
                ..Limits::default()
            };
            assert!(decode_with(&bytes, lenient).is_ok());
        }
    }

    #[test]
    fn hostile_input_is_rejected_not_panicked() {
        let limits = Limits {
            max_frame: 1000,
            max_depth: 8,
            ..Limits::default()
        };
        // Deep nesting.
        let deep = vec![0x91u8; 20];
        assert_eq!(
            FrameScanner::new(limits).scan(&deep),
            Err(DecodeError::TooDeep(8))
        );
        // Huge announced string.
        assert!(matches!(
            FrameScanner::new(limits).scan(&crate::hex::decode("dbffffffff").expect("hex")),
            Err(DecodeError::TooLarge { .. })
        ));
        // Huge announced array count.
        assert!(matches!(
            FrameScanner::new(limits).scan(&crate::hex::decode("ddffffffff").expect("hex")),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(decode(&[0xc1]), Err(DecodeError::Invalid(_))));
        assert!(matches!(
            decode(&crate::hex::decode("a2c328").expect("hex")),
            Err(DecodeError::Invalid(_))
        ));
        assert_eq!(
            decode(&crate::hex::decode("dc0010").expect("hex")),
            Err(DecodeError::Truncated)
        );
        // A deeply nested path inside ext 3 is caught by the decoder.
        let mut p = Value::Path(Path::root());
        for _ in 0..100 {
            p = Value::Path(Path::new(vec![p]));
        }
        assert_eq!(decode(&to_vec(&p)), Err(DecodeError::TooDeep(64)));
    }
}
