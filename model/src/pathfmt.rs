//! DistKV's path text syntax, and the Python `repr()` helpers it relies on.
//!
//! This module owns the conversion between [`Path`]s and their textual form
//! as `moat.util.Path` writes and `P()` reads it (`a.b:.c`, `:n.auth`,
//! `:1,'a:_b',2.c`, `:` for the root), including the small restricted
//! expression evaluator behind `:EXPR` elements. It also provides
//! [`str_repr`], [`bytes_repr`] and [`float_repr`], which reproduce Python's
//! `repr()` of those types; canonical path output and [`Value`]'s `Display`
//! are built on them.
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

use crate::path::Path;
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
                Eval::Expr => eval_expr(&text),
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
fn int_value(i: i128) -> Result<Value, String> {
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
// Restricted evaluator (`:EXPR`)
// ---------------------------------------------------------------------------

/// Longest string/bytes/tuple the evaluator builds (as simpleeval).
const MAX_LEN: usize = 100_000;
/// Largest base and exponent of `**` (as simpleeval).
const MAX_POWER: f64 = 4_000_000.0;

/// A value computed by the evaluator.
#[derive(Clone, Debug)]
enum Ev {
    Int(i128),
    Float(f64),
    Bool(bool),
    None,
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Ev>),
}

impl Ev {
    fn into_value(self) -> Result<Value, String> {
        Ok(match self {
            Ev::Int(i) => int_value(i)?,
            Ev::Float(f) => Value::Float(f),
            Ev::Bool(b) => Value::Bool(b),
            Ev::None => Value::Nil,
            Ev::Str(s) => Value::from(s),
            Ev::Bytes(b) => Value::Bin(Arc::from(b)),
            Ev::Tuple(t) => Value::Array(
                t.into_iter()
                    .map(Ev::into_value)
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    fn type_name(&self) -> &'static str {
        match self {
            Ev::Int(_) => "int",
            Ev::Float(_) => "float",
            Ev::Bool(_) => "bool",
            Ev::None => "NoneType",
            Ev::Str(_) => "str",
            Ev::Bytes(_) => "bytes",
            Ev::Tuple(_) => "tuple",
        }
    }

    /// The value as a number (booleans count as integers).
    fn num(&self) -> Option<Num> {
        match *self {
            Ev::Int(i) => Some(Num::Int(i)),
            Ev::Bool(b) => Some(Num::Int(b as i128)),
            Ev::Float(f) => Some(Num::Float(f)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Name(String),
    Op(&'static str),
}

/// Evaluates a restricted Python expression (literals, tuples, arithmetic;
/// no names or calls), as DistKV's command line does for `-e` values.
pub fn eval(text: &str) -> Result<Value, ExprError> {
    eval_expr(text).map_err(|reason| ExprError {
        input: text.to_string(),
        reason,
    })
}

fn eval_expr(text: &str) -> Result<Value, String> {
    let toks = lex(text.trim())?;
    let mut p = ExprParser {
        toks,
        pos: 0,
        depth: 0,
    };
    let v = p.expr_list()?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(format!("unexpected {t:?}"));
    }
    v.ok_or_else(|| "empty expression".to_string())?
        .into_value()
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        if matches!(ch, ' ' | '\t' | '\x0c') {
            i += 1;
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let (tok, n) = lex_number(&c[i..])?;
            out.push(tok);
            i += n;
        } else if ch == '\'' || ch == '"' {
            let (s, n) = lex_string(&c[i..], false)?;
            out.push(Tok::Str(s.into_iter().collect()));
            i += n;
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let name: String = c[start..i].iter().collect();
            match (name.as_str(), c.get(i)) {
                ("b" | "B", Some('\'' | '"')) => {
                    let (s, n) = lex_string(&c[i..], true)?;
                    out.push(Tok::Bytes(s.into_iter().map(|ch| ch as u8).collect()));
                    i += n;
                }
                ("u" | "U", Some('\'' | '"')) => {
                    let (s, n) = lex_string(&c[i..], false)?;
                    out.push(Tok::Str(s.into_iter().collect()));
                    i += n;
                }
                (_, Some('\'' | '"')) => {
                    return Err(format!("string prefix {name:?} is not supported"))
                }
                _ => out.push(Tok::Name(name)),
            }
        } else {
            const OPS: [&str; 10] = ["**", "//", "+", "-", "*", "/", "%", "(", ")", ","];
            let rest: String = c[i..c.len().min(i + 2)].iter().collect();
            match OPS.iter().find(|op| rest.starts_with(**op)) {
                Some(op) => {
                    out.push(Tok::Op(op));
                    i += op.len();
                }
                None => return Err(format!("unsupported character {ch:?}")),
            }
        }
    }
    Ok(out)
}

/// Lexes a Python number literal; returns the token and the chars consumed.
fn lex_number(c: &[char]) -> Result<(Tok, usize), String> {
    let bad = || "invalid number literal".to_string();
    // Collects digits of `radix` with single underscores between them.
    let digits = |start: usize,
                  radix: u32,
                  allow_leading_underscore: bool|
     -> Result<(String, usize), String> {
        let mut s = String::new();
        let mut i = start;
        let mut prev_digit = allow_leading_underscore;
        while i < c.len() {
            if c[i] == '_' {
                if !prev_digit || !c.get(i + 1).is_some_and(|d| d.is_digit(radix)) {
                    return Err(bad());
                }
                prev_digit = false;
            } else if c[i].is_digit(radix) {
                s.push(c[i]);
                prev_digit = true;
            } else {
                break;
            }
            i += 1;
        }
        Ok((s, i))
    };
    let check_end = |i: usize| -> Result<(), String> {
        match c.get(i) {
            Some('j' | 'J') => Err("complex numbers are not supported".into()),
            Some(ch) if ch.is_alphanumeric() || *ch == '_' => Err(bad()),
            _ => Ok(()),
        }
    };
    if c[0] == '0' {
        let radix = match c.get(1) {
            Some('x' | 'X') => 16,
            Some('o' | 'O') => 8,
            Some('b' | 'B') => 2,
            _ => 0,
        };
        if radix != 0 {
            let (s, i) = digits(2, radix, true)?;
            if s.is_empty() {
                return Err(bad());
            }
            check_end(i)?;
            let v = i128::from_str_radix(&s, radix).map_err(|_| "integer too large".to_string())?;
            return Ok((Tok::Int(v), i));
        }
    }
    let (int_part, mut i) = digits(0, 10, false)?;
    let mut is_float = false;
    // Normalised for Rust's float parser: always `int.frac`.
    let mut text = if int_part.is_empty() {
        "0".to_string()
    } else {
        int_part.clone()
    };
    text.push('.');
    if c.get(i) == Some(&'.') {
        is_float = true;
        let (frac, j) = digits(i + 1, 10, false)?;
        text.push_str(&frac);
        i = j;
    }
    text.push('0');
    if matches!(c.get(i), Some('e' | 'E')) {
        let mut j = i + 1;
        let mut exp = String::from("e");
        if let Some(sign @ ('+' | '-')) = c.get(j) {
            exp.push(*sign);
            j += 1;
        }
        let (e, k) = digits(j, 10, false)?;
        if e.is_empty() {
            return Err(bad());
        }
        exp.push_str(&e);
        text.push_str(&exp);
        is_float = true;
        i = k;
    }
    check_end(i)?;
    if is_float {
        let f: f64 = text.parse().map_err(|_| bad())?;
        Ok((Tok::Float(f), i))
    } else {
        if int_part.len() > 1 && int_part.starts_with('0') && int_part.chars().any(|d| d != '0') {
            return Err("leading zeros in decimal integer literals are not permitted".into());
        }
        let v: i128 = int_part
            .parse()
            .map_err(|_| "integer too large".to_string())?;
        Ok((Tok::Int(v), i))
    }
}

/// Lexes a quoted string starting at `c[0]`; returns the characters (for
/// bytes: each below 256) and the chars consumed.
fn lex_string(c: &[char], bytes: bool) -> Result<(Vec<char>, usize), String> {
    let q = c[0];
    if c.get(1) == Some(&q) && c.get(2) == Some(&q) {
        return Err("triple-quoted strings are not supported".into());
    }
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        let ch = *c.get(i).ok_or("unterminated string literal")?;
        i += 1;
        if ch == q {
            return Ok((out, i));
        }
        if ch == '\n' {
            return Err("unterminated string literal".into());
        }
        if ch != '\\' {
            if bytes && !ch.is_ascii() {
                return Err("bytes can only contain ASCII literal characters".into());
            }
            out.push(ch);
            continue;
        }
        let e = *c.get(i).ok_or("unterminated string literal")?;
        i += 1;
        let hex = |i: usize, n: usize| -> Result<u32, String> {
            let s: String = c.get(i..i + n).ok_or("truncated escape")?.iter().collect();
            if s.chars().all(|d| d.is_ascii_hexdigit()) {
                u32::from_str_radix(&s, 16).map_err(|_| "truncated escape".to_string())
            } else {
                Err("truncated escape".into())
            }
        };
        let code = match e {
            '\n' => continue,
            '\\' | '\'' | '"' => e as u32,
            'a' => 7,
            'b' => 8,
            'f' => 12,
            'n' => 10,
            'r' => 13,
            't' => 9,
            'v' => 11,
            '0'..='7' => {
                let mut v = e as u32 - '0' as u32;
                for _ in 0..2 {
                    match c.get(i) {
                        Some(d @ '0'..='7') => {
                            v = v * 8 + (*d as u32 - '0' as u32);
                            i += 1;
                        }
                        _ => break,
                    }
                }
                v
            }
            'x' => {
                let v = hex(i, 2)?;
                i += 2;
                v
            }
            'u' | 'U' if !bytes => {
                let n = if e == 'u' { 4 } else { 8 };
                let v = hex(i, n)?;
                i += n;
                v
            }
            'N' if !bytes => return Err("\\N{…} escapes are not supported".into()),
            _ => {
                // Unknown escapes keep their backslash.
                out.push('\\');
                if bytes && !e.is_ascii() {
                    return Err("bytes can only contain ASCII literal characters".into());
                }
                out.push(e);
                continue;
            }
        };
        if bytes && code > 0xff {
            return Err("octal escape out of range for bytes".into());
        }
        out.push(char::from_u32(code).ok_or("invalid character escape")?);
    }
}

struct ExprParser {
    toks: Vec<Tok>,
    pos: usize,
    /// Nesting of parentheses and operators being parsed (recursion).
    depth: usize,
}

/// Deepest nesting of parentheses and unary or power operators in an
/// expression: the parser recurses, and must not run out of stack.
const MAX_EXPR_DEPTH: usize = crate::budget::MAX_NESTING;

impl ExprParser {
    fn peek_op(&self) -> Option<&'static str> {
        match self.toks.get(self.pos) {
            Some(Tok::Op(op)) => Some(op),
            _ => None,
        }
    }

    fn eat(&mut self, op: &str) -> bool {
        if self.peek_op() == Some(op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn at_expr_end(&self) -> bool {
        self.pos >= self.toks.len() || self.peek_op() == Some(")")
    }

    /// `expr (',' expr)* [',']`: a tuple if there is a comma. `None` if empty.
    fn expr_list(&mut self) -> Result<Option<Ev>, String> {
        if self.at_expr_end() {
            return Ok(None);
        }
        let first = self.arith()?;
        if !self.eat(",") {
            return Ok(Some(first));
        }
        let mut items = vec![first];
        while !self.at_expr_end() {
            items.push(self.arith()?);
            if !self.eat(",") {
                break;
            }
        }
        Ok(Some(Ev::Tuple(items)))
    }

    fn arith(&mut self) -> Result<Ev, String> {
        let mut v = self.term()?;
        while let Some(op @ ("+" | "-")) = self.peek_op() {
            self.pos += 1;
            let r = self.term()?;
            v = binop(op, v, r)?;
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<Ev, String> {
        let mut v = self.factor()?;
        while let Some(op @ ("*" | "/" | "//" | "%")) = self.peek_op() {
            self.pos += 1;
            let r = self.factor()?;
            v = binop(op, v, r)?;
        }
        Ok(v)
    }

    fn factor(&mut self) -> Result<Ev, String> {
        if self.depth >= MAX_EXPR_DEPTH {
            return Err(format!(
                "expression nests deeper than {MAX_EXPR_DEPTH} levels"
            ));
        }
        self.depth += 1;
        let v = self.unary();
        self.depth -= 1;
        v
    }

    fn unary(&mut self) -> Result<Ev, String> {
        if let Some(op @ ("+" | "-")) = self.peek_op() {
            self.pos += 1;
            let v = self.factor()?;
            return match (op, v.num()) {
                ("+", Some(Num::Int(i))) => Ok(Ev::Int(i)),
                ("-", Some(Num::Int(i))) => i
                    .checked_neg()
                    .map(Ev::Int)
                    .ok_or_else(|| "integer too large".into()),
                ("+", Some(Num::Float(f))) => Ok(Ev::Float(f)),
                ("-", Some(Num::Float(f))) => Ok(Ev::Float(-f)),
                _ => Err(format!(
                    "bad operand type for unary {op}: '{}'",
                    v.type_name()
                )),
            };
        }
        self.power()
    }

    fn power(&mut self) -> Result<Ev, String> {
        let base = self.atom()?;
        if self.eat("**") {
            let exp = self.factor()?;
            return binop("**", base, exp);
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Ev, String> {
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of expression")?;
        self.pos += 1;
        match tok {
            Tok::Int(i) => Ok(Ev::Int(i)),
            Tok::Float(f) => Ok(Ev::Float(f)),
            Tok::Str(mut s) => {
                while let Some(Tok::Str(more)) = self.toks.get(self.pos) {
                    s.push_str(more);
                    self.pos += 1;
                }
                if let Some(Tok::Bytes(_)) = self.toks.get(self.pos) {
                    return Err("cannot mix bytes and nonbytes literals".into());
                }
                Ok(Ev::Str(s))
            }
            Tok::Bytes(mut b) => {
                while let Some(Tok::Bytes(more)) = self.toks.get(self.pos) {
                    b.extend_from_slice(more);
                    self.pos += 1;
                }
                if let Some(Tok::Str(_)) = self.toks.get(self.pos) {
                    return Err("cannot mix bytes and nonbytes literals".into());
                }
                Ok(Ev::Bytes(b))
            }
            Tok::Name(n) => match n.as_str() {
                "True" => Ok(Ev::Bool(true)),
                "False" => Ok(Ev::Bool(false)),
                "None" => Ok(Ev::None),
                _ => Err(format!("name {n:?} is not defined")),
            },
            Tok::Op("(") => {
                let v = self.expr_list()?.unwrap_or(Ev::Tuple(Vec::new()));
                if !self.eat(")") {
                    return Err("'(' was never closed".into());
                }
                Ok(v)
            }
            Tok::Op(op) => Err(format!("unexpected {op:?}")),
        }
    }
}

fn check_len(n: usize) -> Result<(), String> {
    if n > MAX_LEN {
        Err("result too long".into())
    } else {
        Ok(())
    }
}

/// Python `float.__floordiv__` / `__mod__` (`float_divmod` in CPython).
fn float_divmod(vx: f64, wx: f64) -> (f64, f64) {
    let mut m = vx % wx;
    let mut div = (vx - m) / wx;
    if m != 0.0 {
        if (wx < 0.0) != (m < 0.0) {
            m += wx;
            div -= 1.0;
        }
    } else {
        m = 0.0f64.copysign(wx);
    }
    let floordiv = if div != 0.0 {
        let mut fd = div.floor();
        if div - fd > 0.5 {
            fd += 1.0;
        }
        fd
    } else {
        0.0f64.copysign(vx / wx)
    };
    (floordiv, m)
}

/// Repeats a sequence `n` times (negative counts give an empty result).
fn repeat<T: Clone>(items: &[T], n: i128) -> Result<Vec<T>, String> {
    let n = usize::try_from(n.max(0)).map_err(|_| "result too long".to_string())?;
    check_len(items.len().saturating_mul(n))?;
    let mut out = Vec::with_capacity(items.len() * n);
    for _ in 0..n {
        out.extend_from_slice(items);
    }
    Ok(out)
}

fn binop(op: &str, l: Ev, r: Ev) -> Result<Ev, String> {
    let overflow = || "integer too large".to_string();
    let zero = || "division by zero".to_string();
    if let (Some(a), Some(b)) = (l.num(), r.num()) {
        if op == "**" && (a.f().abs() > MAX_POWER || b.f().abs() > MAX_POWER) {
            return Err("number too high for **".into());
        }
        return match (a, b) {
            (Num::Int(a), Num::Int(b)) => match op {
                "+" => a.checked_add(b).map(Ev::Int).ok_or_else(overflow),
                "-" => a.checked_sub(b).map(Ev::Int).ok_or_else(overflow),
                "*" => a.checked_mul(b).map(Ev::Int).ok_or_else(overflow),
                "/" if b == 0 => Err(zero()),
                "/" => Ok(Ev::Float(a as f64 / b as f64)),
                "//" | "%" if b == 0 => Err(zero()),
                "//" => py_floordiv(a, b).map(Ev::Int).ok_or_else(overflow),
                "%" => py_mod(a, b).map(Ev::Int).ok_or_else(overflow),
                "**" if b < 0 => float_pow(a as f64, b as f64),
                "**" => u32::try_from(b)
                    .ok()
                    .and_then(|b| a.checked_pow(b))
                    .map(Ev::Int)
                    .ok_or_else(overflow),
                _ => Err(format!("unsupported operator {op}")),
            },
            (a, b) => {
                let (a, b) = (a.f(), b.f());
                match op {
                    "+" => Ok(Ev::Float(a + b)),
                    "-" => Ok(Ev::Float(a - b)),
                    "*" => Ok(Ev::Float(a * b)),
                    "/" | "//" | "%" if b == 0.0 => Err(zero()),
                    "/" => Ok(Ev::Float(a / b)),
                    "//" => Ok(Ev::Float(float_divmod(a, b).0)),
                    "%" => Ok(Ev::Float(float_divmod(a, b).1)),
                    "**" => float_pow(a, b),
                    _ => Err(format!("unsupported operator {op}")),
                }
            }
        };
    }
    match (op, l, r) {
        ("+", Ev::Str(mut a), Ev::Str(b)) => {
            check_len(a.chars().count() + b.chars().count())?;
            a.push_str(&b);
            Ok(Ev::Str(a))
        }
        ("+", Ev::Bytes(mut a), Ev::Bytes(b)) => {
            check_len(a.len() + b.len())?;
            a.extend_from_slice(&b);
            Ok(Ev::Bytes(a))
        }
        ("+", Ev::Tuple(mut a), Ev::Tuple(b)) => {
            check_len(a.len() + b.len())?;
            a.extend(b);
            Ok(Ev::Tuple(a))
        }
        ("*", seq, n) | ("*", n, seq) if matches!(n, Ev::Int(_) | Ev::Bool(_)) => {
            let n = match n.num() {
                Some(Num::Int(n)) => n,
                _ => 0,
            };
            match seq {
                Ev::Str(s) => {
                    let chars: Vec<char> = s.chars().collect();
                    Ok(Ev::Str(repeat(&chars, n)?.into_iter().collect()))
                }
                Ev::Bytes(b) => Ok(Ev::Bytes(repeat(&b, n)?)),
                Ev::Tuple(t) => Ok(Ev::Tuple(repeat(&t, n)?)),
                other => Err(format!(
                    "unsupported operand type for *: '{}'",
                    other.type_name()
                )),
            }
        }
        (op, l, r) => Err(format!(
            "unsupported operand types for {op}: '{}' and '{}'",
            l.type_name(),
            r.type_name()
        )),
    }
}

/// Python's `a // b` on integers (`b != 0`); `None` on overflow.
fn py_floordiv(a: i128, b: i128) -> Option<i128> {
    let q = a.checked_div(b)?;
    let r = a.checked_rem(b)?;
    Some(if r != 0 && ((r < 0) != (b < 0)) {
        q - 1
    } else {
        q
    })
}

/// Python's `a % b` on integers (`b != 0`): the sign follows `b`.
fn py_mod(a: i128, b: i128) -> Option<i128> {
    let r = a.checked_rem(b)?;
    Some(if r != 0 && ((r < 0) != (b < 0)) {
        r + b
    } else {
        r
    })
}

fn float_pow(a: f64, b: f64) -> Result<Ev, String> {
    if a == 0.0 && b < 0.0 {
        return Err("0.0 cannot be raised to a negative power".into());
    }
    if a < 0.0 && b.fract() != 0.0 && b.is_finite() {
        return Err("complex results are not supported".into());
    }
    let r = a.powf(b);
    if r.is_infinite() && a.is_finite() && b.is_finite() {
        return Err("numerical result out of range".into());
    }
    Ok(Ev::Float(r))
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
            other => {
                res.push(':');
                res.push_str(&escape(&repr(other)));
            }
        }
    }
    res
}

fn tuple_elem(res: &mut String, items: &[Value]) {
    let joined: Vec<String> = items.iter().map(repr).collect();
    res.push(':');
    res.push_str(&escape(&joined.join(",")));
}

// ---------------------------------------------------------------------------
// Python repr() of scalars
// ---------------------------------------------------------------------------

/// Whether Python's `str.isprintable()` holds for a non-ASCII character.
///
/// Python excludes the categories Cc, Cf, Co, Cs, Zl, Zp, Zs and Cn. Without
/// the Unicode tables this covers the controls, separators, common format
/// characters, private use areas and noncharacters; other unassigned code
/// points count as printable.
fn is_printable(c: char) -> bool {
    let u = c as u32;
    !matches!(u,
        0x80..=0xa0 | 0xad
        | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x890..=0x891 | 0x8e2
        | 0x1680 | 0x180e
        | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f
        | 0x3000 | 0xd800..=0xf8ff | 0xfdd0..=0xfdef | 0xfeff | 0xfff9..=0xfffb
        | 0x110bd | 0x110cd | 0x13430..=0x1343f | 0x1bca0..=0x1bca3 | 0x1d173..=0x1d17a
        | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff
    ) && (u & 0xfffe) != 0xfffe
}

/// Python `repr()` of a str.
pub fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c < ' ' || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_ascii() || is_printable(c) => out.push(c),
            c => {
                let u = c as u32;
                let _ = if u <= 0xff {
                    write!(out, "\\x{u:02x}")
                } else if u <= 0xffff {
                    write!(out, "\\u{u:04x}")
                } else {
                    write!(out, "\\U{u:08x}")
                };
            }
        }
    }
    out.push(quote);
    out
}

/// Python `repr()` of bytes.
pub fn bytes_repr(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut out = String::with_capacity(b.len() + 3);
    out.push('b');
    out.push(quote as char);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c as char);
            }
            32..=126 => out.push(c as char),
            c => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push(quote as char);
    out
}

/// Python `repr()` of a float: shortest round-trip digits, exponent form
/// when the decimal exponent is below -4 or at least 16.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // `{:e}` gives the shortest round-trip digits as `d.ddde[-]x`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{frac}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    let n = digits.len() as i32;
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= n {
        format!("{sign}{digits}{}.0", "0".repeat((point - n) as usize))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{sign}{a}.{b}")
    }
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

    #[test]
    fn canonical_form_parses_back_to_same_elements() {
        for (input, elems, canonical) in parse_table() {
            // Python quirks that do not round-trip: 1-tuples print as their
            // element, non-finite floats print as `inf`/`nan`, and a tuple
            // starting with bytes prints as `:b'…'`, which reads as `:bBIN`.
            let lossy = elems.iter().any(|e| match e {
                Value::Array(a) => a.len() == 1 || matches!(a.first(), Some(Value::Bin(_))),
                Value::Float(x) => !x.is_finite(),
                _ => false,
            });
            if lossy {
                continue;
            }
            let back =
                parse(canonical).unwrap_or_else(|e| panic!("{canonical:?} (from {input:?}): {e}"));
            assert_elems(canonical, &back, &elems);
            assert_eq!(format(&back), canonical);
        }
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
    fn deeply_nested_expressions_are_an_error_not_a_stack_overflow() {
        for text in [
            format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
            format!("{}1", "-".repeat(100_000)),
            format!("2{}", "**2".repeat(100_000)),
        ] {
            let e = eval(&text).expect_err("too deep");
            assert!(e.reason.contains("nests deeper"), "{}", e.reason);
        }
        let ok = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(eval(&ok).map_err(|e| e.reason), Ok(Value::Int(1)));
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

    #[test]
    fn str_repr_matches_python() {
        let cases = [
            ("hello", "'hello'"),
            ("", "''"),
            ("it's", "\"it's\""),
            ("a\"b", "'a\"b'"),
            ("it's \"x\"", "'it\\'s \"x\"'"),
            ("a\\b", "'a\\\\b'"),
            ("\n\t\r", "'\\n\\t\\r'"),
            ("\0\x1f\x7f", "'\\x00\\x1f\\x7f'"),
            ("é😀", "'é😀'"),
            ("\u{80}\u{a0}\u{ad}", "'\\x80\\xa0\\xad'"),
            (
                "\u{200b}\u{2028}\u{feff}\u{3000}",
                "'\\u200b\\u2028\\ufeff\\u3000'",
            ),
            ("\u{e000}\u{fffe}", "'\\ue000\\ufffe'"),
            ("\u{e0001}\u{10fffd}", "'\\U000e0001\\U0010fffd'"),
        ];
        for (input, want) in cases {
            assert_eq!(str_repr(input), want, "{input:?}");
        }
    }

    #[test]
    fn bytes_repr_matches_python() {
        let cases: [(&[u8], &str); 6] = [
            (b"hi", "b'hi'"),
            (b"", "b''"),
            (b"it's", "b\"it's\""),
            (b"'\"", "b'\\'\"'"),
            (b"\x00\x7f\x80\xff", "b'\\x00\\x7f\\x80\\xff'"),
            (b"\t\n\r\\", "b'\\t\\n\\r\\\\'"),
        ];
        for (input, want) in cases {
            assert_eq!(bytes_repr(input), want, "{input:?}");
        }
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (1.5, "1.5"),
            (-1.5, "-1.5"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e15, "1000000000000000.0"),
            (123456.789, "123456.789"),
            (1e-5, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (1e100, "1e+100"),
            (-2.5e-300, "-2.5e-300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for (input, want) in cases {
            assert_eq!(float_repr(input), want, "{input:?}");
        }
    }
}
