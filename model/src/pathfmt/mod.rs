//! DistKV's path text syntax.
//!
//! This module owns the conversion between [`Path`]s and their textual form
//! as `moat.util.Path` writes and `P()` reads it (`a.b:.c`, `:n.auth`,
//! `:1,'a:_b',2.c`, `:` for the root), including the small restricted
//! expression evaluator behind `:EXPR` elements ([`eval`], in its own
//! module). Canonical output uses Python's `repr()` of scalars
//! ([`crate::repr`]).
//!
//! # Syntax
//!
//! Elements are joined by `.`; `:` starts an escape:
//!
//! | text | meaning |
//! |------|---------|
//! | `:.` `::` `:_` | a literal `.`, `:` or space inside an element |
//! | `:` (alone) | the empty path |
//! | `:e` `:t` `:f` `:n` | new element `""`, `True`, `False`, `None` |
//! | `:xHEX` `:bBIN` | new element: an integer in base 16 / 2 |
//! | `:yHEX` `:vTEXT` | new element: bytes from hex / from ASCII text |
//! | `:EXPR` | new element: a restricted Python expression (`:2`, `:1:.5`, `:1,2`) |
//!
//! A plain token is always a string (`123` is `"123"`, not `123`).
//!
//! The evaluator understands int literals (decimal, `0x`/`0o`/`0b`,
//! underscores), floats, `True`/`False`/`None`, `'…'`/`"…"`/`b'…'` literals
//! with backslash escapes, tuples, unary `+`/`-` and `+ - * / // % **`
//! with Python semantics. Names, calls, lists, dicts, comparisons, f-strings
//! and `%`-formatting are syntax errors, as are integers that do not fit a
//! [`Value`] (negative below `i64`, or 2¹²⁷ and above).

use std::fmt::Write as _;
use std::sync::Arc;

mod eval;

pub use eval::eval;

use crate::path::Path;
use crate::repr::str_repr;
use crate::value::Value;

/// A path string that does not follow DistKV's syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {input:?}: {reason}")]
pub struct PathSyntaxError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// An expression (a `-e` value on the command line) that cannot be
/// evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid expression {input:?}: {reason}")]
pub struct ExprError {
    /// The text that was evaluated.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Where the parser stands between tokens (mirrors `Path.from_str`).
enum Part {
    /// At the very beginning: anything but a dot may follow.
    Start,
    /// Collecting the text of an element.
    Text(String),
    /// After a complete colon element (`:t`, `:e` …): needs `.` or `:`.
    Done,
    /// After a dot: needs text or an inline escape.
    AfterDot,
}

/// How the collected text of the current element is to be interpreted.
#[derive(Clone, Copy)]
enum Eval {
    /// Plain string.
    None,
    /// Restricted expression (`:EXPR`).
    Expr,
    /// Integer in this radix (`:x…`, `:b…`).
    Radix(u32),
    /// Bytes from hex (`:y…`).
    Hex,
    /// Bytes from ASCII text (`:v…`).
    Ascii,
}

/// Splits a path string like `re.findall("[^:._]+|_|:|\\.")`.
fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        if matches!(c, ':' | '.' | '_') {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
            out.push(&s[i..i + 1]);
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

struct Parser<'a> {
    input: &'a str,
    res: Vec<Value>,
    part: Part,
    eval: Eval,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: impl Into<String>) -> PathSyntaxError {
        PathSyntaxError {
            input: self.input.to_string(),
            reason: reason.into(),
        }
    }

    fn cannot_parse(&self) -> PathSyntaxError {
        self.err(format!("unexpected text at {}", self.pos))
    }

    fn add(&mut self, x: &str) {
        match &mut self.part {
            Part::Text(t) => t.push_str(x),
            _ => self.part = Part::Text(x.to_string()),
        }
    }

    /// Finishes the current element (if any text was collected).
    fn done(&mut self, new_part: Part) -> Result<(), PathSyntaxError> {
        if let Part::Text(text) = std::mem::replace(&mut self.part, new_part) {
            let value = match self.eval {
                Eval::None => Ok(Value::str(&text)),
                Eval::Expr => eval::eval_expr(&text),
                Eval::Radix(radix) => parse_int_radix(&text, radix).and_then(int_value),
                Eval::Hex => from_hex(&text).map(|b| Value::Bin(Arc::from(b))),
                Eval::Ascii => {
                    if text.is_ascii() {
                        Ok(Value::Bin(Arc::from(text.as_bytes())))
                    } else {
                        Err("bytes text must be ASCII".to_string())
                    }
                }
            };
            self.eval = Eval::None;
            let value = value.map_err(|why| {
                self.err(format!("cannot evaluate {text:?} at {}: {why}", self.pos))
            })?;
            self.res.push(value);
        }
        Ok(())
    }

    /// A complete colon element (`:t`, `:e` …).
    fn new_element(&mut self, x: Value) -> Result<(), PathSyntaxError> {
        if matches!(self.part, Part::AfterDot) {
            return Err(self.err(format!(
                "a dot cannot be followed by a colon element at {}",
                self.pos
            )));
        }
        self.done(Part::Done)?;
        self.res.push(x);
        Ok(())
    }

    /// A colon element whose text follows (`:x…`, `:y…` …).
    fn start_coded(&mut self, text: &str, eval: Eval) -> Result<(), PathSyntaxError> {
        self.done(Part::AfterDot)?;
        self.part = Part::Text(text.to_string());
        self.eval = eval;
        Ok(())
    }

    fn escaped(&mut self, e: &str) -> Result<(), PathSyntaxError> {
        match e {
            ":" | "." => self.add(e),
            "_" => self.add(" "),
            "e" => self.new_element(Value::str(""))?,
            "t" => self.new_element(Value::Bool(true))?,
            "f" => self.new_element(Value::Bool(false))?,
            "n" => self.new_element(Value::Nil)?,
            _ => {
                let first = e.chars().next().unwrap_or(' ');
                let rest = &e[first.len_utf8()..];
                match first {
                    'm' if !rest.is_empty() => {
                        return Err(self.err(format!(
                            "path marks (:m…) are not supported, at {}",
                            self.pos
                        )))
                    }
                    'b' => self.start_coded(rest, Eval::Radix(2))?,
                    'x' => self.start_coded(rest, Eval::Radix(16))?,
                    'y' => self.start_coded(rest, Eval::Hex)?,
                    'v' => self.start_coded(rest, Eval::Ascii)?,
                    _ => {
                        if matches!(self.part, Part::AfterDot) {
                            return Err(self.cannot_parse());
                        }
                        self.done(Part::Text(String::new()))?;
                        self.add(e);
                        self.eval = Eval::Expr;
                    }
                }
            }
        }
        Ok(())
    }

    fn run(mut self) -> Result<Path, PathSyntaxError> {
        let mut esc = false;
        for e in tokens(self.input) {
            if esc {
                esc = false;
                self.escaped(e)?;
            } else if e == "." {
                if matches!(self.part, Part::Start | Part::AfterDot) {
                    return Err(self.cannot_parse());
                }
                self.done(Part::AfterDot)?;
                self.pos += 1;
                continue;
            } else if e == ":" {
                esc = true;
                self.pos += 1;
                continue;
            } else if matches!(self.part, Part::Done) {
                return Err(self.cannot_parse());
            } else {
                self.add(e);
            }
            self.pos += e.chars().count();
        }
        if esc || matches!(self.part, Part::AfterDot) {
            return Err(self.err(format!("unexpected end at {}", self.pos)));
        }
        self.done(Part::AfterDot)?;
        Ok(Path::new(self.res))
    }
}

/// Parses a path string.
///
/// `:` alone is the root; the empty string, stray dots, dangling colons and
/// anything the restricted evaluator rejects are errors.
pub fn parse(s: &str) -> Result<Path, PathSyntaxError> {
    if s == ":" {
        return Ok(Path::root());
    }
    if s.is_empty() {
        return Err(PathSyntaxError {
            input: String::new(),
            reason: "the empty string is not a path".into(),
        });
    }
    Parser {
        input: s,
        res: Vec::new(),
        part: Part::Start,
        eval: Eval::None,
        pos: 0,
    }
    .run()
}

/// Python's `int(text, radix)` for radix 2 and 16: surrounding whitespace,
/// a sign, an optional `0x`/`0b` prefix and single underscores between digits.
fn parse_int_radix(text: &str, radix: u32) -> Result<i128, String> {
    let bad = || format!("invalid literal for int() with base {radix}: {text:?}");
    let t = text.trim();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let prefix = if radix == 16 { "0x" } else { "0b" };
    let (t, after_prefix) = match t.get(..2) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => (&t[2..], true),
        _ => (t, false),
    };
    let mut value: i128 = 0;
    let mut prev_digit = after_prefix; // an underscore may follow the prefix
    let mut any = false;
    for c in t.chars() {
        if c == '_' {
            if !prev_digit {
                return Err(bad());
            }
            prev_digit = false;
            continue;
        }
        let d = c.to_digit(radix).ok_or_else(bad)?;
        value = value
            .checked_mul(radix as i128)
            .and_then(|v| v.checked_add(d as i128))
            .ok_or("integer too large")?;
        prev_digit = true;
        any = true;
    }
    if !any || !prev_digit {
        return Err(bad());
    }
    Ok(if neg { -value } else { value })
}

/// Python's `bytes.fromhex`: pairs of hex digits, ASCII whitespace between pairs.
fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 2);
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let hi = (b[i] as char).to_digit(16);
        let lo = b.get(i + 1).and_then(|&c| (c as char).to_digit(16));
        match (hi, lo) {
            (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
            _ => {
                return Err(format!(
                    "non-hexadecimal number found in fromhex() arg at position {i}"
                ))
            }
        }
        i += 2;
    }
    Ok(out)
}

/// An integer as a [`Value`]; negative numbers must fit an `i64`.
pub(super) fn int_value(i: i128) -> Result<Value, String> {
    if let Ok(v) = i64::try_from(i) {
        Ok(Value::Int(v))
    } else if let Ok(u) = u64::try_from(i) {
        Ok(Value::UInt(u))
    } else if i > 0 {
        let bytes = i.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        Ok(Value::BigUint(Arc::from(&bytes[skip..])))
    } else {
        Err("integer out of range".into())
    }
}

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/// Escapes element text: `:` → `::`, `.` → `:.`, space → `:_`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ':' => out.push_str("::"),
            '.' => out.push_str(":."),
            ' ' => out.push_str(":_"),
            _ => out.push(c),
        }
    }
    out
}

/// Python `repr()` of a value as it appears inside a path tuple.
fn repr(v: &Value) -> String {
    match v {
        Value::Path(p) => format!("P({})", str_repr(&p.to_string())),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(repr).collect();
            if items.len() == 1 {
                format!("({},)", items[0])
            } else {
                format!("({})", items.join(", "))
            }
        }
        Value::Map(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", repr(k), repr(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// Formats path elements in canonical syntax (what Python's `str(Path)` gives).
///
/// Note that, like Python, a one-element tuple prints as its element alone
/// (`(1,)` → `:1`), and non-finite floats print as `:inf`/`:nan`; neither
/// parses back to the same element.
pub fn format(elems: &[Value]) -> String {
    if elems.is_empty() {
        return ":".into();
    }
    let mut res = String::new();
    for x in elems {
        match x {
            Value::Str(s) if !s.is_empty() => {
                if !res.is_empty() {
                    res.push('.');
                }
                res.push_str(&escape(s));
            }
            Value::Str(_) => res.push_str(":e"),
            Value::Bin(b) => {
                if b.iter().all(|c| (32..127).contains(c)) {
                    res.push_str(":v");
                    res.push_str(&escape(&String::from_utf8_lossy(b)));
                } else {
                    res.push_str(":y");
                    for byte in b.iter() {
                        let _ = write!(res, "{byte:02x}");
                    }
                }
            }
            Value::Array(a) if !a.is_empty() => tuple_elem(&mut res, a),
            Value::Path(p) if !p.is_empty() => tuple_elem(&mut res, p),
            Value::Array(_) | Value::Path(_) => res.push_str(":()"),
            Value::Bool(true) => res.push_str(":t"),
            Value::Bool(false) => res.push_str(":f"),
            Value::Nil => res.push_str(":n"),
            // Their `repr`, which needs no escaping.
            Value::Int(i) => {
                let _ = write!(res, ":{i}");
            }
            Value::UInt(u) => {
                let _ = write!(res, ":{u}");
            }
            other => {
                res.push(':');
                res.push_str(&escape(&repr(other)));
            }
        }
    }
    res
}

/// Whether [`format`] of `elems` parses back to the same elements. It
/// does not where it prints what Python's `str(Path)` prints, which is
/// lossy: a one-element tuple prints as its element, a tuple starting with
/// bytes as `:b'…'` (which reads as `:bBIN`), and non-finite floats as
/// `inf`/`nan`.
pub fn formats_losslessly(elems: &[Value]) -> bool {
    fn finite(v: &Value) -> bool {
        match v {
            Value::Float(x) => x.is_finite(),
            Value::Array(a) => a.iter().all(finite),
            Value::Path(p) => p.iter().all(finite),
            Value::Map(m) => m.iter().all(|(k, v)| finite(k) && finite(v)),
            _ => true,
        }
    }
    elems.iter().all(|e| {
        let tuple = match e {
            Value::Array(a) => Some(&a[..]),
            Value::Path(p) => Some(&p[..]),
            _ => None,
        };
        let lossy_tuple =
            tuple.is_some_and(|t| t.len() == 1 || matches!(t.first(), Some(Value::Bin(_))));
        !lossy_tuple && finite(e)
    })
}

fn tuple_elem(res: &mut String, items: &[Value]) {
    let joined: Vec<String> = items.iter().map(repr).collect();
    res.push(':');
    res.push_str(&escape(&joined.join(",")));
}

#[cfg(test)]
mod tests {
    //! Expected values were produced with the reference implementation
    //! (`moat.util.P` / `str(Path)` from moat-util 0.26.3).

    use super::*;

    use crate::testutil::*;

    /// Compares element lists exactly, types included (`1 != 1.0 != True`).
    fn assert_elems(input: &str, got: &[Value], want: &[Value]) {
        assert_eq!(format!("{got:?}"), format!("{want:?}"), "parsing {input:?}");
    }

    /// Paths that parse, with their elements and canonical spelling.
    #[rustfmt::skip]
    fn parse_table() -> Vec<(&'static str, Vec<Value>, &'static str)> {
        vec![
        ("a.x:_y.b", vec![s("a"), s("x y"), s("b")], "a.x:_y.b"),
        (":1:.23.c", vec![f(1.23), s("c")], ":1:.23.c"),
        (":1,'a:_b',2.c", vec![a(vec![i(1), s("a b"), i(2)]), s("c")], ":1,'a:_b',2.c"),
        ("a:y616299", vec![s("a"), b(b"ab\x99")], "a:y616299"),
        ("a:v.c", vec![s("a"), b(b""), s("c")], "a:v.c"),
        (":x1f", vec![i(31)], ":31"),
        (":31", vec![i(31)], ":31"),
        (":.distkv.config", vec![s(".distkv"), s("config")], ":.distkv.config"),
        (":n.auth", vec![N, s("auth")], ":n.auth"),
        (":", vec![], ":"),
        ("a:e.b", vec![s("a"), s(""), s("b")], "a:e.b"),
        ("a:2.c", vec![s("a"), i(2), s("c")], "a:2.c"),
        ("abc", vec![s("abc")], "abc"),
        ("123", vec![s("123")], "123"),
        (":2", vec![i(2)], ":2"),
        (":1:.5", vec![f(1.5)], ":1:.5"),
        (":1,2", vec![a(vec![i(1), i(2)])], ":1,2"),
        (":(1,2)", vec![a(vec![i(1), i(2)])], ":1,2"),
        (":b101", vec![i(5)], ":5"),
        ("a b", vec![s("a b")], "a:_b"),
        ("a:_b", vec![s("a b")], "a:_b"),
        (":t", vec![T], ":t"),
        (":f", vec![F], ":f"),
        (":n", vec![N], ":n"),
        (":e", vec![s("")], ":e"),
        (":t.a", vec![T, s("a")], ":t.a"),
        ("a:t", vec![s("a"), T], "a:t"),
        (":t:e", vec![T, s("")], ":t:e"),
        (":-2", vec![i(-2)], ":-2"),
        (":1:.0", vec![f(1.0)], ":1:.0"),
        (":()", vec![a(vec![])], ":()"),
        (":(1,)", vec![a(vec![i(1)])], ":1"),
        (":1,", vec![a(vec![i(1)])], ":1"),
        (":'a'", vec![s("a")], "a"),
        (":\"a\"", vec![s("a")], "a"),
        (":0x10", vec![i(16)], ":16"),
        (":1e5", vec![f(100000.0)], ":100000:.0"),
        (":1e+16", vec![f(1e+16)], ":1e+16"),
        (":2**3", vec![i(8)], ":8"),
        (":7//2", vec![i(3)], ":3"),
        (":7/2", vec![f(3.5)], ":3:.5"),
        (":7%3", vec![i(1)], ":1"),
        (":-7%3", vec![i(2)], ":2"),
        (":1+2*3", vec![i(7)], ":7"),
        (":None", vec![N], ":n"),
        (":True", vec![T], ":t"),
        (":y", vec![b(b"")], ":v"),
        (":v", vec![b(b"")], ":v"),
        (":vab:.c", vec![b(b"ab.c")], ":vab:.c"),
        (":vab:_c", vec![b(b"ab c")], ":vab:_c"),
        ("a:x10b", vec![s("a"), i(267)], "a:267"),
        (":x10.b", vec![i(16), s("b")], ":16.b"),
        (":x10:x11", vec![i(16), i(17)], ":16:17"),
        (":1:2", vec![i(1), i(2)], ":1:2"),
        (":1.2", vec![i(1), s("2")], ":1.2"),
        ("a::b", vec![s("a:b")], "a::b"),
        ("a:.b", vec![s("a.b")], "a:.b"),
        ("a:_", vec![s("a ")], "a:_"),
        (":_", vec![s(" ")], ":_"),
        (":.", vec![s(".")], ":."),
        ("::", vec![s(":")], "::"),
        ("a.b.c", vec![s("a"), s("b"), s("c")], "a.b.c"),
        (":1e1000", vec![f(f64::INFINITY)], ":inf"),
        (":99999999999999999999", vec![big(&[5, 107, 199, 94, 45, 99, 15, 255, 255])], ":99999999999999999999"),
        (":-0x10", vec![i(-16)], ":-16"),
        (":0b11", vec![i(3)], ":3"),
        (":0o17", vec![i(15)], ":15"),
        (":1_000", vec![i(1000)], ":1000"),
        (":(1,(2,3))", vec![a(vec![i(1), a(vec![i(2), i(3)])])], ":1,(2,:_3)"),
        (":((1,2),)", vec![a(vec![a(vec![i(1), i(2)])])], ":(1,:_2)"),
        (":'a'+'b'", vec![s("ab")], "ab"),
        (":'ab'*2", vec![s("abab")], "abab"),
        (":-1.5e-7", vec![i(-1), s("5e-7")], ":-1.5e-7"),
        (":.5", vec![s(".5")], ":.5"),
        (":1 ,2", vec![a(vec![i(1), i(2)])], ":1,2"),
        (":1,:_2", vec![a(vec![i(1), i(2)])], ":1,2"),
        (":+1", vec![i(1)], ":1"),
        (":--1", vec![i(1)], ":1"),
        (":0.1+0.2", vec![i(0), s("1+0"), s("2")], ":0.1+0.2"),
        (":2**0.5", vec![i(1), s("5")], ":1.5"),
        (":'\\x41'", vec![s("A")], "A"),
        (":'\\n'", vec![s("\n")], "\n"),
        (":u'a'", vec![s("a")], "a"),
        ("a.b:.c", vec![s("a"), s("b.c")], "a.b:.c"),
        ("a:n", vec![s("a"), N], "a:n"),
        ("ab:f.c", vec![s("ab"), F, s("c")], "ab:f.c"),
        (":y.a", vec![b(b""), s("a")], ":v.a"),
        (":v:e", vec![b(b""), s("")], ":v:e"),
        (":yAB", vec![b(b"\xab")], ":yab"),
        (":x-1", vec![i(-1)], ":-1"),
        (":xFF", vec![i(255)], ":255"),
        (":True,False", vec![a(vec![T, F])], ":True,False"),
        (":None,", vec![a(vec![N])], ":None"),
        (":(None)", vec![N], ":n"),
        (":(1)", vec![i(1)], ":1"),
        (":00", vec![i(0)], ":0"),
        (":-0", vec![i(0)], ":0"),
        (":-0.0", vec![i(0), s("0")], ":0.0"),
        ("a.:xff", vec![s("a"), i(255)], "a:255"),
        ("a.:v", vec![s("a"), b(b"")], "a:v"),
        ("a.:y00", vec![s("a"), b(b"\x00")], "a:y00"),
        ("a.:b1", vec![s("a"), i(1)], "a:1"),
        ("a.:.b", vec![s("a"), s(".b")], "a.:.b"),
        ("a.::b", vec![s("a"), s(":b")], "a.::b"),
        ("a.:_b", vec![s("a"), s(" b")], "a.:_b"),
        (":t:.a", vec![T, s(".a")], ":t.:.a"),
        (":t:_", vec![T, s(" ")], ":t.:_"),
        (":e:x10", vec![s(""), i(16)], ":e:16"),
        (":x:_1f", vec![i(31)], ":31"),
        (":x0x1f", vec![i(31)], ":31"),
        (":b0b11", vec![i(3)], ":3"),
        (":x1_0", vec![i(16)], ":16"),
        (":yab:_cd", vec![b(b"\xab\xcd")], ":yabcd"),
        ("é.ü", vec![s("é"), s("ü")], "é.ü"),
        (":1,b'a'", vec![a(vec![i(1), b(b"a")])], ":1,b'a'"),
        (":(b'a',)", vec![a(vec![b(b"a")])], ":b'a'"),
        (":(b'\\x99',1)", vec![a(vec![b(b"\x99"), i(1)])], ":b'\\x99',1"),
        (":-2**2", vec![i(-4)], ":-4"),
        (":2**-1", vec![f(0.5)], ":0:.5"),
        (":(-2)**2", vec![i(4)], ":4"),
        (":7//-2", vec![i(-4)], ":-4"),
        (":-7//2", vec![i(-4)], ":-4"),
        (":7:.5//2", vec![f(3.0)], ":3:.0"),
        (":7:.5%2", vec![f(1.5)], ":1:.5"),
        (":-7:.5%2", vec![f(0.5)], ":0:.5"),
        (":7%-3", vec![i(-2)], ":-2"),
        (":True+1", vec![i(2)], ":2"),
        (":-True", vec![i(-1)], ":-1"),
        (":1e16", vec![f(1e+16)], ":1e+16"),
        (":1e-5", vec![f(1e-05)], ":1e-05"),
        (":0:.0001", vec![f(0.0001)], ":0:.0001"),
        (":123456789012345678901234567890", vec![big(&[1, 142, 233, 15, 246, 195, 115, 224, 238, 78, 63, 10, 210])], ":123456789012345678901234567890"),
        (":18446744073709551615", vec![Value::UInt(18446744073709551615)], ":18446744073709551615"),
        (":2**64", vec![big(&[1, 0, 0, 0, 0, 0, 0, 0, 0])], ":18446744073709551616"),
        (":'a':_:_'b'", vec![s("ab")], "ab"),
        (":'it''s'", vec![s("its")], "its"),
        (":\"it's\"", vec![s("it's")], "it's"),
        (":'a\\'b'", vec![s("a'b")], "a'b"),
        (":'\\u00e9'", vec![s("é")], "é"),
        (":'\\t'", vec![s("\t")], "\t"),
        (":'\\0'", vec![s("\0")], "\0"),
        (":'\\q'", vec![s("\\q")], "\\q"),
        (":((),)", vec![a(vec![a(vec![])])], ":()"),
        (":(((),),)", vec![a(vec![a(vec![a(vec![])])])], ":((),)"),
        (":1,'x',None,True,b'y',1:.5", vec![a(vec![i(1), s("x"), N, T, b(b"y"), f(1.5)])], ":1,'x',None,True,b'y',1:.5"),
        (":1,(2,)", vec![a(vec![i(1), a(vec![i(2)])])], ":1,(2,)"),
        (":_1", vec![s(" 1")], ":_1"),
        (":1:_", vec![i(1)], ":1"),
        ("a:_:_b", vec![s("a  b")], "a:_:_b"),
        (":0x_ff", vec![i(255)], ":255"),
        (":'::'", vec![s(":")], "::"),
        ("a:1", vec![s("a"), i(1)], "a:1"),
        ("a_b", vec![s("a_b")], "a_b"),
        ("_", vec![s("_")], "_"),
        ("a:__b", vec![s("a _b")], "a:__b"),
        (":1,()", vec![a(vec![i(1), a(vec![])])], ":1,()"),
        (":3/2", vec![f(1.5)], ":1:.5"),
        (":1/3", vec![f(0.3333333333333333)], ":0:.3333333333333333"),
        (":2**100", vec![big(&[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])], ":1267650600228229401496703205376"),
        (":1e308*10", vec![f(f64::INFINITY)], ":inf"),
        (":-1e308*10", vec![f(f64::NEG_INFINITY)], ":-inf"),
        (":2:.0**0:.5", vec![f(std::f64::consts::SQRT_2)], ":1:.4142135623730951"),
        (":0**0", vec![i(1)], ":1"),
        (":'é'", vec![s("é")], "é"),
        (":1:_+:_2", vec![i(3)], ":3"),
        (":(1,:_2)", vec![a(vec![i(1), i(2)])], ":1,2"),
        (":1,2,", vec![a(vec![i(1), i(2)])], ":1,2"),
        (":1:.5e3", vec![f(1500.0)], ":1500:.0"),
        (":3*'ab'", vec![s("ababab")], "ababab"),
        (":(1,)*3", vec![a(vec![i(1), i(1), i(1)])], ":1,1,1"),
        (":True*2", vec![i(2)], ":2"),
        ("x:0", vec![s("x"), i(0)], "x:0"),
        ("x:-0:.0", vec![s("x"), f(-0.0)], "x:-0:.0"),
        (":'\\U0001f600'", vec![s("😀")], "😀"),
        (":'a\"b'", vec![s("a\"b")], "a\"b"),
        (":1.5", vec![i(1), s("5")], ":1.5"),
        (":(1,2)+(3,)", vec![a(vec![i(1), i(2), i(3)])], ":1,2,3"),
        (":2**-2", vec![f(0.25)], ":0:.25"),
        (":-2**-2", vec![f(-0.25)], ":-0:.25"),
        (":7:.0/2", vec![f(3.5)], ":3:.5"),
        (":1e-7", vec![f(1e-07)], ":1e-07"),
        ]
    }

    #[test]
    fn parse_matches_reference_table() {
        for (input, want, _) in parse_table() {
            match parse(input) {
                Ok(path) => assert_elems(input, &path, &want),
                Err(e) => panic!("{input:?} should parse: {e}"),
            }
        }
    }

    #[test]
    fn format_matches_reference_table() {
        for (input, elems, canonical) in parse_table() {
            assert_eq!(
                format(&elems),
                canonical,
                "formatting the parse of {input:?}"
            );
        }
    }

    /// Integers are written as the general road writes any other scalar:
    /// `:` and their escaped `repr`.
    #[test]
    fn integers_format_as_their_escaped_repr() {
        let ints = [0, 1, -1, 42, i64::MIN, i64::MAX].map(Value::Int);
        let uints = [0, 1 << 63, u64::MAX].map(Value::UInt);
        for v in ints.iter().chain(&uints) {
            let general = format!(":{}", escape(&repr(v)));
            assert_eq!(format(std::slice::from_ref(v)), general, "{v:?}");
            let two = [Value::str("a"), v.clone()];
            assert_eq!(format(&two), format!("a{general}"), "{v:?}");
        }
    }

    #[test]
    fn canonical_form_parses_back_to_same_elements() {
        for (input, elems, canonical) in parse_table() {
            if !formats_losslessly(&elems) {
                continue;
            }
            let back =
                parse(canonical).unwrap_or_else(|e| panic!("{canonical:?} (from {input:?}): {e}"));
            assert_elems(canonical, &back, &elems);
            assert_eq!(format(&back), canonical);
        }
    }

    /// Found by fuzzing: the length check passed (the result is empty),
    /// and the loop ran 70 billion times.
    #[test]
    fn an_empty_sequence_repeated_any_number_of_times_is_empty_at_once() {
        for text in ["b''*514**4", "''*10**15", "()*10**15", "514**4*b''"] {
            let v = eval(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let empty = match &v {
                Value::Bin(b) => b.is_empty(),
                Value::Str(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => false,
            };
            assert!(empty, "{text} gave {v:?}");
        }
    }

    /// Found by fuzzing: each repeat stayed under the length limit at its
    /// own level while the nested copies grew to 29 million values.
    #[test]
    fn nested_repeats_are_bounded_by_their_whole_size() {
        let e = eval("(2*(382*(37882*(78,33),)))").expect_err("too big");
        assert!(e.to_string().contains("result too long"), "{e}");
        assert!(eval("(2*(3*(4*(78,33),)))").is_ok());
        let big = "((1,)*99999,)";
        let e = eval(&[big; 3].join("+")).expect_err("too big");
        assert!(e.to_string().contains("result too long"), "{e}");
    }

    #[test]
    fn invalid_paths_are_rejected() {
        #[rustfmt::skip]
        let bad = [
        "a.:1", // Cannot parse 'a.:1' at 3 / None
        "a.:t", // Cannot use None at 3 / None
        "", // The empty string is not a path / None
        ".a", // Cannot parse '.a' at 0 / None
        "a.", // Cannot parse 'a.' at 2 / None
        "a..b", // Cannot parse 'a..b' at 2 / None
        "a.b:", // Cannot parse 'a.b:' at 4 / None
        ":t:", // Cannot parse ':t:' at 3 / None
        ":x1g", // Cannot eval '1g' at 4 / ValueError("invalid literal for int() with base 16: '1g'")
        ":x", // Cannot eval '' at 2 / ValueError("invalid literal for int() with base 16: ''")
        ":w", // Cannot eval 'w' at 2 / NameNotDefined("'w' is not defined for expression 'w'")
        ":list", // Cannot eval 'list' at 5 / NameNotDefined("'list' is not defined for expression 'list'")
        ":dict", // Cannot eval 'dict' at 5 / NameNotDefined("'dict' is not defined for expression 'dict'")
        ":h123", // Cannot eval 'h123' at 5 / NameNotDefined("'h123' is not defined for expression 'h123'")
        ":ta", // Cannot eval 'ta' at 3 / NameNotDefined("'ta' is not defined for expression 'ta'")
        "a:tb", // Cannot eval 'tb' at 4 / NameNotDefined("'tb' is not defined for expression 'tb'")
        ":b'ab'", // Cannot eval "'ab'" at 6 / ValueError('invalid literal for int() with base 2: "\'ab\'"')
        ":[1]", // Cannot eval '[1]' at 4 / FeatureNotAvailable('Sorry, List is not available in this evaluator')
        ":{1:2}", // Cannot eval '{1' at 4 / SyntaxError("'{' was never closed", ('<unknown>', 1, 1, '{1\n', 1, 0))
        ":abs(1)", // Cannot eval 'abs(1)' at 7 / FunctionNotDefined("Function 'abs' not defined, for expression 'abs(1)'.")
        ":yzz", // Cannot eval 'zz' at 4 / ValueError('non-hexadecimal number found in fromhex() arg at position 0')
        ":5.", // Cannot parse ':5.' at 3 / None
        ":1/0", // Cannot eval '1/0' at 4 / ZeroDivisionError('division by zero')
        "a:nb", // Cannot eval 'nb' at 4 / NameNotDefined("'nb' is not defined for expression 'nb'")
        ":ye.a", // Cannot eval 'e' at 3 / ValueError('non-hexadecimal number found in fromhex() arg at position 1')
        ":b", // Cannot eval '' at 2 / ValueError("invalid literal for int() with base 2: ''")
        ":b2", // Cannot eval '2' at 3 / ValueError("invalid literal for int() with base 2: '2'")
        ":x_1", // Cannot eval '_1' at 4 / ValueError("invalid literal for int() with base 16: '_1'")
        ":1e", // Cannot eval '1e' at 3 / SyntaxError('invalid decimal literal', ('<unknown>', 1, 1, '1e', 1, 1))
        ":0001", // Cannot eval '0001' at 5 / SyntaxError('leading zeros in decimal integer literals are not permitted; use an 0o 
        ":1.", // Cannot parse ':1.' at 3 / None
        ":nan", // Cannot eval 'nan' at 4 / NameNotDefined("'nan' is not defined for expression 'nan'")
        ":inf", // Cannot eval 'inf' at 4 / NameNotDefined("'inf' is not defined for expression 'inf'")
        "a.:e", // Cannot use None at 3 / None
        "a.:n", // Cannot use None at 3 / None
        ":tx", // Cannot eval 'tx' at 3 / NameNotDefined("'tx' is not defined for expression 'tx'")
        ":xff:.", // Cannot eval 'ff.' at 6 / ValueError("invalid literal for int() with base 16: 'ff.'")
        ":ya:_bc", // Cannot eval 'a bc' at 7 / ValueError('non-hexadecimal number found in fromhex() arg at position 1')
        ":vé", // Cannot eval 'é' at 3 / UnicodeEncodeError('ascii', 'é', 0, 1, 'ordinal not in range(128)')
        ":1__0", // Cannot eval '1__0' at 5 / SyntaxError('invalid decimal literal', ('<unknown>', 1, 2, '1__0', 1, 2))
        ":'.'", // Cannot eval "'" at 2 / SyntaxError('unterminated string literal (detected at line 1)', ('<unknown>', 1, 1, "'"
        ":10%0", // Cannot eval '10%0' at 5 / ZeroDivisionError('integer modulo by zero')
        ":10//0", // Cannot eval '10//0' at 6 / ZeroDivisionError('integer division or modulo by zero')
        ":1:.0//0", // Cannot eval '1.0//0' at 8 / ZeroDivisionError('float floor division by zero')
        ":0:.0**-1", // Cannot eval '0.0**-1' at 9 / ZeroDivisionError('0.0 cannot be raised to a negative power')
        ":é", // Cannot eval 'é' at 2 / NameNotDefined("'é' is not defined for expression 'é'")
        "a:b'x'", // Cannot eval "'x'" at 6 / ValueError('invalid literal for int() with base 2: "\'x\'"')
        ":(", // Cannot eval '(' at 2 / SyntaxError("'(' was never closed", ('<unknown>', 1, 1, '(\n', 1, 0))
        ":)", // Cannot eval ')' at 2 / SyntaxError("unmatched ')'", ('<unknown>', 1, 1, ')', 1, 1))
        ":1,,2", // Cannot eval '1,,2' at 5 / SyntaxError('invalid syntax', ('<unknown>', 1, 3, '1,,2\n', 1, 4))
        ":,", // Cannot eval ',' at 2 / SyntaxError('invalid syntax', ('<unknown>', 1, 1, ',\n', 1, 2))
        ":'abc", // Cannot eval "'abc" at 5 / SyntaxError('unterminated string literal (detected at line 1)', ('<unknown>', 1, 1, 
        ":b'a'+b'b'", // Cannot eval "'a'+b'b'" at 10 / ValueError('invalid literal for int() with base 2: "\'a\'+b\'b\'"')
        ":'a'+1", // Cannot eval "'a'+1" at 6 / TypeError('can only concatenate str (not "int") to str')
        ":-'a'", // Cannot eval "-'a'" at 5 / TypeError("bad operand type for unary -: 'str'")
        ":0x", // Cannot eval '0x' at 3 / SyntaxError('invalid hexadecimal literal', ('<unknown>', 1, 2, '0x', 1, 2))
        ":1_", // Cannot eval '1_' at 3 / SyntaxError('invalid decimal literal', ('<unknown>', 1, 2, '1_', 1, 2))
        ":0b2", // Cannot eval '0b2' at 4 / SyntaxError("invalid digit '2' in binary literal", ('<unknown>', 1, 3, '0b2', 1, 3))
        ":0o8", // Cannot eval '0o8' at 4 / SyntaxError("invalid digit '8' in octal literal", ('<unknown>', 1, 3, '0o8', 1, 3))
        ":'\\x4'", // Cannot eval "'\\x4'" at 6 / SyntaxError("(unicode error) 'unicodeescape' codec can't decode bytes in position 
        ":b'\\u1234'", // Cannot eval "'\\u1234'" at 10 / ValueError('invalid literal for int() with base 2: "\'\\\\u1234\'"')
        ":'a'b'c'", // Cannot eval "'a'b'c'" at 8 / SyntaxError('cannot mix bytes and nonbytes literals', ('<unknown>', 1, 8, "'a'b'c
        ":'a'_'b'", // Cannot eval "'a'_'b'" at 8 / SyntaxError('invalid syntax', ('<unknown>', 1, 4, "'a'_'b'\n", 1, 5))
        "a.b.:c", // Cannot parse 'a.b.:c' at 5 / None
        ":1&3", // Cannot eval '1&3' at 4 / KeyError(<class 'ast.BitAnd'>)
        ":~1", // Cannot eval '~1' at 3 / KeyError(<class 'ast.Invert'>)
        ];
        for input in bad {
            assert!(
                parse(input).is_err(),
                "{input:?} should be rejected, got {:?}",
                parse(input)
            );
        }
    }

    #[test]
    fn python_only_expressions_are_rejected_with_reason() {
        // The reference evaluator (simpleeval) accepts these; the restricted
        // evaluator here deliberately does not.
        #[rustfmt::skip]
        let unsupported = [
        ":'''a'''", // Python: ('a',)
        ":(-8)**(1/3)", // Python: ((1.0000000000000002+1.7320508075688772j),)
        ":-9223372036854775809", // Python: (-9223372036854775809,)
        ":10**100", // Python: (1000000000000000000000000000000000000000000000000000000000000000000000000000000
        ":1<2", // Python: (True,)
        ":1==1", // Python: (True,)
        ":1e5j", // Python: (100000j,)
        ":1if:_1else:_2", // Python: (1,)
        ":1j", // Python: (1j,)
        ":f'a'", // Python: ('a',)
        ":mfoo.a", // Python: ('a',)
        ":mfoo:.a", // Python: ('.a',)
        ":not:_1", // Python: (False,)
        ":r'a\\\\b'", // Python: ('a\\\\b',)
        ];
        for input in unsupported {
            let err = parse(input).expect_err(input);
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn format_only_cases_match_reference() {
        #[rustfmt::skip]
        let table: Vec<(Vec<Value>, &str)> = vec![
        (vec![i(1)], ":1"),
        (vec![a(vec![i(1)])], ":1"),
        (vec![f(1.0)], ":1:.0"),
        (vec![f(f64::INFINITY)], ":inf"),
        (vec![f(f64::NEG_INFINITY)], ":-inf"),
        (vec![f(f64::NAN)], ":nan"),
        (vec![f(-0.0)], ":-0:.0"),
        (vec![f(1e+16)], ":1e+16"),
        (vec![f(1e-05)], ":1e-05"),
        (vec![f(123456.789)], ":123456:.789"),
        (vec![a(vec![i(1), s("a"), b(b"x\x99"), N, T, f(1.5), a(vec![i(2), i(3)])])], ":1,'a',b'x\\x99',None,True,1:.5,(2,:_3)"),
        (vec![a(vec![s("it's")])], ":\"it's\""),
        (vec![a(vec![s("a\"b")])], ":'a\"b'"),
        (vec![a(vec![])], ":()"),
        (vec![a(vec![a(vec![])])], ":()"),
        (vec![b(b"a b:c.d")], ":va:_b::c:.d"),
        (vec![b(b"\x00")], ":y00"),
        (vec![b(b"\x7f")], ":y7f"),
        (vec![b(b"~")], ":v~"),
        (vec![a(vec![s("a:b.c d")])], ":'a::b:.c:_d'"),
        (vec![s("a:b.c d")], "a::b:.c:_d"),
        (vec![T, i(1), N], ":t:1:n"),
        (vec![p(vec![s("a"), s("b")])], ":'a','b'"),
        (vec![a(vec![p(vec![s("a"), s("b")]), i(1)])], ":P('a:.b'),1"),
        (vec![m(vec![(i(1), i(2))])], ":{1:::_2}"),
        (vec![a(vec![i(1), m(vec![(s("a"), i(2))])])], ":1,{'a':::_2}"),
        (vec![s("\n")], "\n"),
        (vec![s("é")], "é"),
        (vec![a(vec![s("é\n\0\u{7f}\u{200b}\u{a0}\u{ad}😀\\")])], ":'é\\n\\x00\\x7f\\u200b\\xa0\\xad😀\\\\'"),
        (vec![a(vec![b(b"'\"")])], ":b'\\'\"'"),
        (vec![a(vec![b(b"'")])], ":b\"'\""),
        (vec![s("_")], "_"),
        (vec![s("a_")], "a_"),
        (vec![big(&[64, 0, 0, 0, 0, 0, 0, 0, 0])], ":1180591620717411303424"),
        (vec![f(1.5), s("x"), i(2)], ":1:.5.x:2"),
        (vec![s(""), s("")], ":e:e"),
        (vec![b(b""), b(b"")], ":v:v"),
        (vec![p(vec![])], ":()"),
        (vec![a(vec![p(vec![])])], ":P('::')"),
        (vec![a(vec![f(1e+100), f(1e-100), f(0.1)])], ":1e+100,1e-100,0:.1"),
        (vec![Value::UInt(18446744073709551615)], ":18446744073709551615"),
        (vec![a(vec![b(b"\x09\x0a\x0d\\")])], ":b'\\t\\n\\r\\\\'"),
        (vec![a(vec![s("\t\r\u{1f}\u{80}\u{2028}\u{feff}")])], ":'\\t\\r\\x1f\\x80\\u2028\\ufeff'"),
        ];
        for (elems, want) in table {
            assert_eq!(format(&elems), want, "formatting {elems:?}");
        }
    }

    #[test]
    fn spec_examples_round_trip() {
        let cases: Vec<(Vec<Value>, &str)> = vec![
            (vec![s("a"), s("x y"), s("b")], "a.x:_y.b"),
            (vec![f(1.23), s("c")], ":1:.23.c"),
            (vec![a(vec![i(1), s("a b"), i(2)]), s("c")], ":1,'a:_b',2.c"),
            (vec![s("a"), b(b"ab\x99")], "a:y616299"),
            (vec![s("a"), b(b""), s("c")], "a:v.c"),
            (vec![s(".distkv"), s("config")], ":.distkv.config"),
            (vec![N, s("auth")], ":n.auth"),
            (vec![], ":"),
        ];
        for (elems, text) in cases {
            assert_eq!(format(&elems), text);
            assert_elems(text, &parse(text).unwrap(), &elems);
        }
        assert_elems(":x1f", &parse(":x1f").unwrap(), &[i(31)]);
        assert_eq!(Path::new(vec![i(31)]).to_string(), ":31");
    }

    #[test]
    fn errors_name_the_input_and_a_reason() {
        let e = parse("a..b").unwrap_err();
        assert_eq!(e.input, "a..b");
        assert!(e.to_string().starts_with("invalid path \"a..b\": "));
        assert!(parse(":w").unwrap_err().reason.contains("not defined"));
        assert!(parse(":1/0")
            .unwrap_err()
            .reason
            .contains("division by zero"));
        assert!(parse(":x1g").unwrap_err().reason.contains("base 16"));
        assert!(parse(":[1]")
            .unwrap_err()
            .reason
            .contains("unsupported character"));
        assert!(parse(":mfoo.a").unwrap_err().reason.contains("marks"));
    }

    #[test]
    fn a_bad_expression_is_called_an_expression() {
        assert_eq!(eval("12*3"), Ok(i(36)));
        let e = eval("12x3").unwrap_err();
        assert_eq!(e.input, "12x3");
        assert!(
            e.to_string().starts_with("invalid expression \"12x3\": "),
            "{e}"
        );
    }

    #[test]
    fn huge_or_overflowing_numbers_are_errors_not_panics() {
        for input in [
            ":2**200",
            ":-2**127*2",
            ":170141183460469231731687303715884105727+1",
            ":1000000000000000000000000000000000000000",
            ":x1000000000000000000000000000000000",
            ":(-170141183460469231731687303715884105727-1)//-1",
            ":(-170141183460469231731687303715884105727-1)%-1",
            ":'a'*200000",
            ":2**4000001",
            ":4000001**1",
            ":1e7**0",
            ":1e308**2",
        ] {
            assert!(parse(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet = [
            ":", ".", "_", "a", "1", "x", "y", "v", "b", "(", ")", ",", "'", "\"", "\\", "é", " ",
            "*", "-", "e", "t",
        ];
        // Every string of up to three tokens from the alphabet.
        let mut inputs = vec![String::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for s in &inputs {
                for t in alphabet {
                    next.push(format!("{s}{t}"));
                }
            }
            inputs.extend(next);
        }
        for input in inputs {
            if let Ok(path) = parse(&input) {
                let _ = format(&path);
            }
        }
    }
}
