//! The restricted expression evaluator behind `:EXPR` path elements and
//! the CLI's `-e` values: Python literals and arithmetic, nothing else.

use std::sync::Arc;

use super::{int_value, ExprError};
use crate::value::Value;

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
    /// How many values it holds, nested ones included, and how long a
    /// string or bytes is: what building or copying it costs.
    fn size(&self) -> usize {
        match self {
            Ev::Str(s) => s.len().max(1),
            Ev::Bytes(b) => b.len().max(1),
            Ev::Tuple(t) => t.iter().map(Ev::size).fold(1, usize::saturating_add),
            _ => 1,
        }
    }

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

pub(super) fn eval_expr(text: &str) -> Result<Value, String> {
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
/// The time is bounded by the result's length, which is checked first: an
/// empty sequence repeated any number of times is empty at once (fuzzing
/// found `b'' * 514**4` looping 70 billion times).
fn repeat<T: Clone>(items: &[T], n: i128) -> Result<Vec<T>, String> {
    if items.is_empty() || n <= 0 {
        return Ok(Vec::new());
    }
    let n = usize::try_from(n).map_err(|_| "result too long".to_string())?;
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
            // Nested values count: a chain of `+` of one-element tuples
            // each holding a big one stays short at the top level.
            let size = |t: &[Ev]| t.iter().map(Ev::size).sum::<usize>();
            check_len(size(&a).saturating_add(size(&b)))?;
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
                Ev::Tuple(t) => {
                    // What a repeat copies is the whole nested tuple, not
                    // only its top level (fuzzing: `(2*(382*(37882*(78,33),)))`
                    // built 29 million values).
                    if n > 0 {
                        let size = t.iter().map(Ev::size).sum::<usize>();
                        check_len(size.saturating_mul(usize::try_from(n).unwrap_or(usize::MAX)))?;
                    }
                    Ok(Ev::Tuple(repeat(&t, n)?))
                }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
