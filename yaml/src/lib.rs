//! YAML output byte-for-byte like DistKV's `yprint`.
//!
//! This crate owns the text the command-line tools print for values:
//! [`to_yaml`] renders a [`Value`] the way `ruyaml`'s safe dumper does with
//! the representers `moat.util` installs (block style, map keys sorted when
//! Python could sort them, multi-line strings as `|` literals, paths as
//! `!P a.b`, bytes as `!bin`/`!hex`/`!!binary`), and [`top_level`] adds
//! `yprint`'s rule for bare top-level numbers, strings and bytes.
//!
//! The emitter below is a port of the relevant part of `ruyaml.emitter`
//! (no flow collections except `[]`/`{}`, no anchors, no comments), keeping
//! its state variables so that line folding, indentation and quoting come
//! out identical.

#![warn(missing_docs)]

use std::cmp::Ordering;
use std::fmt::Write as _;

use distkv_model::repr::{bytes_repr, float_repr, str_repr};
use distkv_model::Value;

/// Lines longer than this are folded at spaces (ruyaml's `best_width`).
const BEST_WIDTH: usize = 80;
/// Indentation step of mappings and sequences.
const INDENT: usize = 2;
/// Keys at least this long (with their tag) are written as `? key`.
const MAX_SIMPLE_KEY_LENGTH: usize = 128;

/// Renders a value as the YAML document `yprint` writes for it (ends in a
/// newline; a bare plain scalar is followed by the `...` end marker).
pub fn to_yaml(v: &Value) -> String {
    let mut e = Emitter::default();
    e.document(&represent(v));
    e.out
}

/// Renders a value the way DistKV's `yprint` prints a command's result:
/// integers, floats and booleans as Python prints them (`123`, `1.5`,
/// `True`), strings and bytes as their Python `repr` (`'hello'`, `b'hi'`),
/// and everything else as a YAML document ([`to_yaml`]; `None` gives
/// `null\n...\n`).
pub fn top_level(v: &Value) -> String {
    let mut s = match v {
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Int(_) | Value::UInt(_) | Value::BigUint(_) => v.to_string(),
        Value::Float(f) => float_repr(*f),
        Value::Str(s) => str_repr(s),
        Value::Bin(b) => bytes_repr(b),
        _ => return to_yaml(v),
    };
    s.push('\n');
    s
}

/// Appends what [`top_level`] prints for one line of a recursive listing
/// (`get -r`): `[{Path(path): value}]`, or `[Path(path)]` without a value.
/// `path_text` must be the path's text (`pathfmt::format(path)`, what a
/// `Path` displays as); the caller keeps it from line to line.
///
/// Most lines — a path written plain, a scalar written plain on a line
/// short enough not to fold — are written directly, with the decisions the
/// emitter takes (the same analysis and style rules); every other line
/// goes through the emitter. The output is the same either way.
pub fn write_list_line(out: &mut String, path: &[Value], path_text: &str, value: Option<&Value>) {
    let text = match value {
        None => LineValue::None,
        Some(Value::Str(s)) => LineValue::Str(s),
        Some(v) => LineValue::Other(v),
    };
    if !list_line_fast(out, path_text, text) {
        list_line_emitted(out, path, value.cloned());
    }
}

/// As [`write_list_line`] with the value `Value::Str(value)`, for a
/// string read in place: nothing is allocated for it on the direct road.
pub fn write_list_line_str(out: &mut String, path: &[Value], path_text: &str, value: &str) {
    if !list_line_fast(out, path_text, LineValue::Str(value)) {
        list_line_emitted(out, path, Some(Value::str(value)));
    }
}

/// A list line's value, as [`list_line_fast`] looks at it.
#[derive(Clone, Copy)]
enum LineValue<'a> {
    None,
    Str(&'a str),
    Other(&'a Value),
}

/// [`write_list_line`]'s road through the emitter.
fn list_line_emitted(out: &mut String, path: &[Value], value: Option<Value>) {
    let key = Value::Path(distkv_model::Path::new(path.to_vec()));
    let item = match value {
        None => key,
        Some(v) => Value::Map(vec![(key, v)]),
    };
    out.push_str(&top_level(&Value::Array(vec![item])));
}

/// [`write_list_line`]'s direct road: `false` (nothing written) where the
/// line needs the emitter.
fn list_line_fast(out: &mut String, path_text: &str, value: LineValue<'_>) -> bool {
    const PATH_TAG: &str = "!P";
    let key = analyze(path_text);
    // A plain scalar that is not empty and on one line; as a mapping key
    // also a simple key (`check_simple_key`).
    if key.empty || key.multiline || !key.allow_block_plain {
        return false;
    }
    let key_chars = path_text.chars().count();
    // The scalar `represent` makes of the value (a string as it is).
    let represented;
    let (tag, text, literal) = match value {
        LineValue::None => {
            // `- !P path`: in a sequence, a long path could fold at a space.
            if 4 + key_chars + 1 > BEST_WIDTH {
                return false;
            }
            out.push_str("- !P ");
            out.push_str(path_text);
            out.push('\n');
            return true;
        }
        LineValue::Str(s) => (Tag::Str, s, s.contains('\n')),
        LineValue::Other(v) => {
            let Node::Scalar(s) = represent(v) else {
                return false;
            };
            represented = s;
            let s = &represented;
            (s.tag, s.value.as_str(), s.literal)
        }
    };
    if PATH_TAG.len() + key_chars >= MAX_SIMPLE_KEY_LENGTH {
        return false;
    }
    let a = analyze(text);
    let plain_implicit = tag == resolve_plain(text);
    let core = !matches!(tag, Tag::Local(_));
    // `choose_style` for a mapping value in block context.
    if literal || a.empty || (core && !plain_implicit) || !a.allow_block_plain {
        return false;
    }
    let tag = (!plain_implicit).then(|| tag.text());
    // A plain scalar folds only at a space past the 80th column.
    let width = 2 + PATH_TAG.len() + 1 + key_chars + 1 + tag.map_or(0, |t| 1 + t.len()) + 1;
    if width + text.chars().count() > BEST_WIDTH {
        return false;
    }
    out.push_str("- !P ");
    out.push_str(path_text);
    out.push(':');
    if let Some(t) = tag {
        out.push(' ');
        out.push_str(t);
    }
    out.push(' ');
    out.push_str(text);
    out.push('\n');
    true
}

// ---------------------------------------------------------------------------
// Representation: Value -> node tree
// ---------------------------------------------------------------------------

/// A node tag. The core (`tag:yaml.org,2002:`) tags and DistKV's local ones.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tag {
    Str,
    Int,
    Float,
    Bool,
    Null,
    Binary,
    /// A core tag we never emit (merge, timestamp …); only a resolver result.
    OtherCore,
    /// A local tag such as `!P`.
    Local(&'static str),
}

impl Tag {
    /// The tag as the emitter writes it.
    fn text(self) -> &'static str {
        match self {
            Tag::Str => "!!str",
            Tag::Int => "!!int",
            Tag::Float => "!!float",
            Tag::Bool => "!!bool",
            Tag::Null => "!!null",
            Tag::Binary => "!!binary",
            Tag::OtherCore => "!!value",
            Tag::Local(t) => t,
        }
    }
}

struct Scalar {
    tag: Tag,
    value: String,
    /// Requested `|` style (multi-line strings, `!!binary`).
    literal: bool,
}

enum Node {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

fn scalar(tag: Tag, value: impl Into<String>) -> Node {
    Node::Scalar(Scalar {
        tag,
        value: value.into(),
        literal: false,
    })
}

fn hex(b: &[u8], sep: &str) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, byte) in b.iter().enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// Python's `base64.encodebytes`: lines of at most 76 characters, each
/// ending in a newline.
fn base64_lines(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for line in data.chunks(57) {
        for chunk in line.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32) << (8 * (3 - chunk.len()));
            for k in 0..4 {
                if k <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out.push('\n');
    }
    out
}

/// `SafeRepresenter` with moat.util's additions.
fn represent(v: &Value) -> Node {
    match v {
        Value::Nil => scalar(Tag::Null, "null"),
        Value::Bool(b) => scalar(Tag::Bool, if *b { "true" } else { "false" }),
        Value::Int(_) | Value::UInt(_) | Value::BigUint(_) => scalar(Tag::Int, v.to_string()),
        Value::Float(f) => {
            let text = if f.is_nan() {
                ".nan".to_string()
            } else if f.is_infinite() {
                if *f > 0.0 { ".inf" } else { "-.inf" }.to_string()
            } else {
                float_repr(*f).to_lowercase()
            };
            scalar(Tag::Float, text)
        }
        Value::Str(s) => Node::Scalar(Scalar {
            tag: Tag::Str,
            value: s.to_string(),
            literal: s.contains('\n'),
        }),
        Value::Bin(b) => {
            if b.is_ascii() {
                scalar(Tag::Local("!bin"), String::from_utf8_lossy(b))
            } else if b.len() < 33 {
                scalar(Tag::Local("!hex"), hex(b, ":"))
            } else {
                Node::Scalar(Scalar {
                    tag: Tag::Binary,
                    value: base64_lines(b),
                    literal: true,
                })
            }
        }
        Value::Path(p) => scalar(Tag::Local("!P"), p.to_string()),
        // Python cannot represent msgpack extension types at all.
        Value::Ext(code, data) => scalar(Tag::Local("!ext"), format!("{code}:{}", hex(data, ""))),
        Value::Array(items) => Node::Seq(items.iter().map(represent).collect()),
        Value::Map(pairs) => {
            let order = sorted_order(pairs);
            Node::Map(
                order
                    .into_iter()
                    .map(|i| (represent(&pairs[i].0), represent(&pairs[i].1)))
                    .collect(),
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Key order: Python's `sorted(dict.items())`, or insertion order on TypeError
// ---------------------------------------------------------------------------

/// An integer or float, for Python's mixed numeric comparison.
enum Num {
    Int(i128),
    /// An integer beyond `i128` (only from `BigUint`), as an approximation.
    Huge(f64),
    Float(f64),
}

fn as_num(v: &Value) -> Option<Num> {
    Some(match v {
        Value::Bool(b) => Num::Int(*b as i128),
        Value::Int(i) => Num::Int(*i as i128),
        Value::UInt(u) => Num::Int(*u as i128),
        Value::BigUint(b) => {
            let digits: Vec<u8> = b.iter().copied().skip_while(|&d| d == 0).collect();
            if digits.len() <= 15 {
                Num::Int(digits.iter().fold(0i128, |acc, &d| (acc << 8) | d as i128))
            } else {
                Num::Huge(digits.iter().fold(0f64, |acc, &d| acc * 256.0 + d as f64))
            }
        }
        Value::Float(f) => Num::Float(*f),
        _ => return None,
    })
}

fn int_float_cmp(i: i128, f: f64) -> Ordering {
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0; // 2**127
    if f.is_nan() {
        Ordering::Equal
    } else if f >= LIMIT {
        Ordering::Less
    } else if f < -LIMIT {
        Ordering::Greater
    } else {
        let floor = f.floor();
        match i.cmp(&(floor as i128)) {
            Ordering::Equal if f > floor => Ordering::Less,
            o => o,
        }
    }
}

fn num_cmp(a: Num, b: Num) -> Ordering {
    let fcmp = |x: f64, y: f64| x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Int(x), Num::Float(y)) => int_float_cmp(x, y),
        (Num::Float(x), Num::Int(y)) => int_float_cmp(y, x).reverse(),
        (Num::Int(_), Num::Huge(_)) => Ordering::Less,
        (Num::Huge(_), Num::Int(_)) => Ordering::Greater,
        (Num::Huge(x) | Num::Float(x), Num::Huge(y) | Num::Float(y)) => fcmp(x, y),
    }
}

/// Python's `a < b` as an ordering; `None` where Python raises `TypeError`.
fn py_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (as_num(a), as_num(b)) {
        return Some(num_cmp(x, y));
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bin(x), Value::Bin(y)) => Some(x.cmp(y)),
        (Value::Array(_) | Value::Path(_), Value::Array(_) | Value::Path(_)) => {
            seq_cmp(seq_items(a), seq_items(b))
        }
        _ => None,
    }
}

fn seq_items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        Value::Path(p) => p.elements(),
        _ => &[],
    }
}

/// Python's tuple comparison: the first unequal items decide.
fn seq_cmp(a: &[Value], b: &[Value]) -> Option<Ordering> {
    match a.iter().zip(b).find(|(x, y)| x != y) {
        Some((x, y)) => py_cmp(x, y),
        None => Some(a.len().cmp(&b.len())),
    }
}

/// The order in which `sorted(mapping.items())` lists the pairs, or the
/// original order if Python would raise (incomparable keys).
fn sorted_order(pairs: &[(Value, Value)]) -> Vec<usize> {
    let identity: Vec<usize> = (0..pairs.len()).collect();
    let cmp = |&i: &usize, &j: &usize| {
        let (a, b) = (&pairs[i], &pairs[j]);
        if a.0 == b.0 {
            py_cmp(&a.1, &b.1)
        } else {
            py_cmp(&a.0, &b.0)
        }
    };
    merge_sort(identity.clone(), &cmp).unwrap_or(identity)
}

/// A stable merge sort with a fallible comparator (never panics, whatever
/// the comparator does).
fn merge_sort<T: Copy>(v: Vec<T>, cmp: &impl Fn(&T, &T) -> Option<Ordering>) -> Option<Vec<T>> {
    if v.len() <= 1 {
        return Some(v);
    }
    let mut left = v;
    let right = left.split_off(left.len() / 2);
    let (left, right) = (merge_sort(left, cmp)?, merge_sort(right, cmp)?);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if cmp(&right[j], &left[i])? == Ordering::Less {
            out.push(right[j]);
            j += 1;
        } else {
            out.push(left[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&left[i..]);
    out.extend_from_slice(&right[j..]);
    Some(out)
}

// ---------------------------------------------------------------------------
// Implicit resolution (YAML 1.2 resolver of ruyaml)
// ---------------------------------------------------------------------------

fn all_in(s: &str, ok: impl Fn(char) -> bool) -> bool {
    s.chars().all(ok)
}

fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

fn is_digits_(s: &str) -> bool {
    all_in(s, |c| c.is_ascii_digit() || c == '_')
}

/// `[eE][-+]?[0-9]+` (with `sign_required` for the `.5e+1` form).
fn is_exponent(s: &str, sign_required: bool) -> bool {
    let Some(rest) = s.strip_prefix(['e', 'E']) else {
        return false;
    };
    let digits = match rest.strip_prefix(['-', '+']) {
        Some(d) => d,
        None if sign_required => return false,
        None => rest,
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

fn is_yaml_float(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let t = strip_sign(s);
    if matches!(t, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    // [0-9][0-9_]* \. [0-9_]* (exp)?   |   [0-9][0-9_]* exp
    if t.starts_with(|c: char| c.is_ascii_digit()) {
        let end = t
            .find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(t.len());
        let rest = &t[end..];
        if let Some(frac) = rest.strip_prefix('.') {
            let fend = frac
                .find(|c: char| !(c.is_ascii_digit() || c == '_'))
                .unwrap_or(frac.len());
            let exp = &frac[fend..];
            return exp.is_empty() || is_exponent(exp, false);
        }
        return is_exponent(rest, false);
    }
    // \. [0-9_]+ ([eE][-+][0-9]+)?
    if let Some(frac) = t.strip_prefix('.') {
        let fend = frac
            .find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(frac.len());
        let exp = &frac[fend..];
        return fend > 0 && (exp.is_empty() || is_exponent(exp, true));
    }
    false
}

fn is_yaml_int(s: &str) -> bool {
    let t = strip_sign(s);
    let nonempty_all =
        |x: Option<&str>, ok: fn(char) -> bool| x.is_some_and(|x| !x.is_empty() && all_in(x, ok));
    nonempty_all(t.strip_prefix("0b"), |c| c == '0' || c == '1' || c == '_')
        || nonempty_all(t.strip_prefix("0o"), |c| {
            ('0'..='7').contains(&c) || c == '_'
        })
        || (!t.is_empty() && is_digits_(t))
        || nonempty_all(t.strip_prefix("0x"), |c| c.is_ascii_hexdigit() || c == '_')
}

fn is_yaml_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    // YYYY-MM-DD
    if b.len() == 10
        && (0..4).all(digit)
        && b[4] == b'-'
        && digit(5)
        && digit(6)
        && b[7] == b'-'
        && digit(8)
        && digit(9)
    {
        return true;
    }
    // YYYY-M[M]-D[D](T|t|[ \t]+)H[H]:MM:SS(.frac)?([ \t]*(Z|[-+]H[H](:MM)?))?
    let mut i = 0;
    let take_digits = |i: &mut usize, min: usize, max: usize| {
        let start = *i;
        while *i - start < max && digit(*i) {
            *i += 1;
        }
        *i - start >= min
    };
    let lit = |i: &mut usize, c: u8| {
        if b.get(*i) == Some(&c) {
            *i += 1;
            true
        } else {
            false
        }
    };
    if !(take_digits(&mut i, 4, 4)
        && lit(&mut i, b'-')
        && take_digits(&mut i, 1, 2)
        && lit(&mut i, b'-'))
    {
        return false;
    }
    if !take_digits(&mut i, 1, 2) {
        return false;
    }
    if matches!(b.get(i), Some(b'T' | b't')) {
        i += 1;
    } else {
        let start = i;
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if !(take_digits(&mut i, 1, 2)
        && lit(&mut i, b':')
        && take_digits(&mut i, 2, 2)
        && lit(&mut i, b':')
        && take_digits(&mut i, 2, 2))
    {
        return false;
    }
    if lit(&mut i, b'.') {
        while digit(i) {
            i += 1;
        }
    }
    if i == b.len() {
        return true;
    }
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if lit(&mut i, b'Z') {
        return i == b.len();
    }
    if !matches!(b.get(i), Some(b'-' | b'+')) {
        return false;
    }
    i += 1;
    if !take_digits(&mut i, 1, 2) {
        return false;
    }
    if lit(&mut i, b':') && !take_digits(&mut i, 2, 2) {
        return false;
    }
    i == b.len()
}

/// The tag a plain scalar with this text would be read as.
fn resolve_plain(s: &str) -> Tag {
    let Some(first) = s.chars().next() else {
        return Tag::Null;
    };
    if matches!(first, 't' | 'T' | 'f' | 'F')
        && matches!(s, "true" | "True" | "TRUE" | "false" | "False" | "FALSE")
    {
        return Tag::Bool;
    }
    if matches!(first, '-' | '+' | '0'..='9' | '.') && is_yaml_float(s) {
        return Tag::Float;
    }
    if matches!(first, '-' | '+' | '0'..='9') && is_yaml_int(s) {
        return Tag::Int;
    }
    if first == '<' && s == "<<" {
        return Tag::OtherCore;
    }
    if matches!(first, '~' | 'n' | 'N') && matches!(s, "~" | "null" | "Null" | "NULL") {
        return Tag::Null;
    }
    if first.is_ascii_digit() && is_yaml_timestamp(s) {
        return Tag::OtherCore;
    }
    if matches!(s, "=" | "!" | "&" | "*") {
        return Tag::OtherCore;
    }
    Tag::Str
}

// ---------------------------------------------------------------------------
// Scalar analysis and style choice (ruyaml.emitter)
// ---------------------------------------------------------------------------

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// True at the end of the text (`None`) or where `f` holds.
fn end_or(ch: Option<char>, f: impl Fn(char) -> bool) -> bool {
    match ch {
        None => true,
        Some(c) => f(c),
    }
}

fn is_space_or_break(c: char) -> bool {
    matches!(c, '\0' | ' ' | '\t' | '\r') || is_break(c)
}

#[derive(Debug, PartialEq)]
struct Analysis {
    empty: bool,
    multiline: bool,
    allow_flow_plain: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
    allow_double_quoted: bool,
}

fn analyze(scalar: &str) -> Analysis {
    if scalar.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_flow_plain: false,
            allow_block_plain: true,
            allow_single_quoted: true,
            allow_double_quoted: true,
        };
    }
    let dashes_or_dots = scalar.starts_with("---") || scalar.starts_with("...");
    // The text is walked once, with the two characters after the current
    // one in view (ruyaml indexes a list of them); ASCII text byte by byte.
    if scalar.is_ascii() {
        analyze_walk(scalar.bytes().map(char::from), dashes_or_dots)
    } else {
        analyze_walk(scalar.chars(), dashes_or_dots)
    }
}

/// [`analyze`]'s walk over a text that is not empty, as its characters;
/// `dashes_or_dots`: it starts with `---` or `...`.
fn analyze_walk(mut chars: impl Iterator<Item = char>, dashes_or_dots: bool) -> Analysis {
    let mut block_indicators = dashes_or_dots;
    let mut flow_indicators = dashes_or_dots;
    let mut line_breaks = false;
    let mut special_characters = false;
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut cur, mut next, mut after) = (chars.next(), chars.next(), chars.next());
    let mut first = true;
    let mut preceded_by_whitespace = true;
    let mut followed_by_whitespace = end_or(next, is_space_or_break);
    let (mut previous_space, mut previous_break) = (false, false);

    while let Some(ch) = cur {
        let last = next.is_none();
        if first {
            if matches!(
                ch,
                '#' | ','
                    | '['
                    | ']'
                    | '{'
                    | '}'
                    | '&'
                    | '*'
                    | '!'
                    | '|'
                    | '>'
                    | '\''
                    | '"'
                    | '%'
                    | '@'
                    | '`'
            ) {
                flow_indicators = true;
                block_indicators = true;
            }
            if ch == '?' || ch == ':' {
                if last {
                    flow_indicators = true;
                }
                if followed_by_whitespace {
                    block_indicators = true;
                }
            }
            if ch == '-' && followed_by_whitespace {
                flow_indicators = true;
                block_indicators = true;
            }
        } else {
            if matches!(ch, ',' | '[' | ']' | '{' | '}') {
                flow_indicators = true;
            }
            if ch == ':' && followed_by_whitespace {
                flow_indicators = true;
                block_indicators = true;
            }
            if ch == '#' && preceded_by_whitespace {
                flow_indicators = true;
                block_indicators = true;
            }
        }
        if is_break(ch) {
            line_breaks = true;
        }
        if !(ch == '\n' || ('\x20'..='\x7e').contains(&ch)) {
            let unicode = (ch == '\u{85}'
                || ('\u{a0}'..='\u{d7ff}').contains(&ch)
                || ('\u{e000}'..='\u{fffd}').contains(&ch)
                || ch >= '\u{10000}')
                && ch != '\u{feff}';
            if !unicode {
                special_characters = true;
            }
        }
        if ch == ' ' {
            if first {
                leading_space = true;
            }
            if last {
                trailing_space = true;
            }
            if previous_break {
                break_space = true;
            }
            previous_space = true;
            previous_break = false;
        } else if is_break(ch) {
            if first {
                leading_break = true;
            }
            if last {
                trailing_break = true;
            }
            if previous_space {
                space_break = true;
            }
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_space_or_break(ch);
        followed_by_whitespace = end_or(after, is_space_or_break);
        (cur, next, after) = (next, after, chars.next());
        first = false;
    }

    let mut a = Analysis {
        empty: false,
        multiline: line_breaks,
        allow_flow_plain: true,
        allow_block_plain: true,
        allow_single_quoted: true,
        allow_double_quoted: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if break_space {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if special_characters || space_break {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if line_breaks {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if flow_indicators {
        a.allow_flow_plain = false;
    }
    if block_indicators {
        a.allow_block_plain = false;
    }
    a
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

// ---------------------------------------------------------------------------
// The emitter
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Emitter {
    out: String,
    indent: Option<usize>,
    /// Saved indents, with the "sequence" flag of the level (`None` for scalars).
    indents: Vec<(Option<usize>, Option<bool>)>,
    flow_level: usize,
    root_context: bool,
    sequence_context: bool,
    mapping_context: bool,
    simple_key_context: bool,
    column: usize,
    whitespace: bool,
    indention: bool,
    no_newline: bool,
    open_ended: bool,
}

impl Emitter {
    fn document(&mut self, node: &Node) {
        self.whitespace = true;
        self.indention = true;
        self.node(node, true, false, false, false);
        // DOCUMENT-END (implicit)
        self.write_indent();
        // STREAM-END
        if self.open_ended {
            self.write_indicator("...", true, false, false);
            self.write_indent();
        }
    }

    fn increase_indent(&mut self, flow: bool, sequence: Option<bool>, indentless: bool) {
        self.indents.push((self.indent, sequence));
        match self.indent {
            None => self.indent = if flow { None } else { Some(0) },
            Some(i) if !indentless => self.indent = Some(i + INDENT),
            Some(_) => {}
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().and_then(|(i, _)| i);
    }

    /// Extra spaces before a flow collection directly after a dash (never
    /// positive in block style, kept for fidelity).
    fn seq_flow_align(&self) -> usize {
        match self.indents.last() {
            Some(&(base, Some(true))) if self.indents.len() >= 2 => {
                (base.unwrap_or(0) + INDENT).saturating_sub(self.column + 1)
            }
            _ => 0,
        }
    }

    fn node(&mut self, node: &Node, root: bool, sequence: bool, mapping: bool, simple_key: bool) {
        self.root_context = root;
        self.sequence_context = sequence;
        self.mapping_context = mapping;
        self.simple_key_context = simple_key;
        match node {
            Node::Scalar(s) => self.scalar(s),
            Node::Seq(items) if items.is_empty() => self.empty_flow("[", "]"),
            Node::Map(pairs) if pairs.is_empty() => self.empty_flow("{", "}"),
            Node::Seq(items) => self.block_sequence(items),
            Node::Map(pairs) => self.block_mapping(pairs),
        }
    }

    fn empty_flow(&mut self, open: &str, close: &str) {
        let pad = " ".repeat(self.seq_flow_align());
        self.write_indicator(&format!("{pad}{open}"), true, true, false);
        self.increase_indent(true, Some(open == "["), false);
        self.flow_level += 1;
        self.pop_indent();
        self.flow_level -= 1;
        self.write_indicator(close, false, false, false);
        if self.flow_level == 0 {
            self.write_line_break(None);
        }
    }

    fn block_sequence(&mut self, items: &[Node]) {
        let indentless = self.mapping_context && !self.indention;
        self.increase_indent(false, Some(true), indentless);
        for item in items {
            let nonl = self.column == 0 && self.no_newline;
            self.write_indent();
            self.write_indicator("-", true, false, true);
            if nonl {
                self.no_newline = true;
            }
            self.node(item, false, true, false, false);
        }
        self.pop_indent();
        self.no_newline = false;
    }

    fn block_mapping(&mut self, pairs: &[(Node, Node)]) {
        self.increase_indent(false, Some(false), false);
        for (key, value) in pairs {
            self.write_indent();
            if check_simple_key(key) {
                self.node(key, false, false, true, true);
                self.write_indicator(":", false, false, false);
                self.node(value, false, false, true, false);
            } else {
                self.write_indicator("?", true, false, true);
                self.node(key, false, false, true, false);
                self.write_indent();
                self.write_indicator(":", true, false, true);
                self.node(value, false, false, true, false);
            }
        }
        self.pop_indent();
    }

    fn choose_style(&self, s: &Scalar, a: &Analysis, plain_implicit: bool) -> Style {
        let core = !matches!(s.tag, Tag::Local(_));
        if !s.literal
            && (plain_implicit || !core)
            && !(self.simple_key_context && (a.empty || a.multiline))
            && (self.flow_level > 0 && a.allow_flow_plain
                || self.flow_level == 0 && a.allow_block_plain)
        {
            return Style::Plain;
        }
        if s.literal {
            // ruyaml forces `allow_block`; only flow/simple-key context prevents `|`.
            if self.flow_level == 0 && !self.simple_key_context {
                return Style::Literal;
            }
            return Style::Double;
        }
        if a.allow_double_quoted && (s.value.contains('\'') || s.value.contains('\n')) {
            return Style::Double;
        }
        if a.allow_single_quoted && !(self.simple_key_context && a.multiline) {
            return Style::Single;
        }
        Style::Double
    }

    fn scalar(&mut self, s: &Scalar) {
        let analysis = analyze(&s.value);
        let plain_implicit = s.tag == resolve_plain(&s.value);
        let style = self.choose_style(s, &analysis, plain_implicit);
        // process_tag
        let implicit = if style == Style::Plain {
            plain_implicit
        } else {
            s.tag == Tag::Str
        };
        if !implicit {
            self.write_indicator(s.tag.text(), true, false, false);
            if self.sequence_context && self.flow_level == 0 {
                self.no_newline = true;
            }
        }
        // expect_scalar / process_scalar
        self.increase_indent(true, None, false);
        let split = !self.simple_key_context;
        if self.sequence_context && self.flow_level == 0 {
            self.write_indent();
        }
        let text: Vec<char> = s.value.chars().collect();
        match style {
            Style::Plain => self.write_plain(&text, split),
            Style::Single => self.write_single_quoted(&text, split),
            Style::Double => self.write_double_quoted(&text, split),
            Style::Literal => self.write_literal(&text),
        }
        self.pop_indent();
    }

    // -- low-level writers --------------------------------------------------

    fn write(&mut self, data: &str) {
        self.out.push_str(data);
    }

    fn write_chars(&mut self, data: &[char]) {
        self.column += data.len();
        self.out.extend(data);
    }

    fn write_indicator(
        &mut self,
        indicator: &str,
        need_whitespace: bool,
        whitespace: bool,
        indention: bool,
    ) {
        if !self.whitespace && need_whitespace {
            self.out.push(' ');
            self.column += 1;
        }
        self.out.push_str(indicator);
        self.column += indicator.chars().count();
        self.whitespace = whitespace;
        self.indention = self.indention && indention;
        self.open_ended = false;
    }

    fn write_indent(&mut self) {
        let indent = self.indent.unwrap_or(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            if self.no_newline {
                self.no_newline = false;
            } else {
                self.write_line_break(None);
            }
        }
        if self.column < indent {
            self.whitespace = true;
            let pad = " ".repeat(indent - self.column);
            self.write(&pad);
            self.column = indent;
        }
    }

    fn write_line_break(&mut self, data: Option<char>) {
        self.whitespace = true;
        self.indention = true;
        self.column = 0;
        self.out.push(data.unwrap_or('\n'));
    }

    /// Writes a run of line breaks, each as itself (`\n`, NEL, LS, PS).
    fn write_breaks(&mut self, text: &[char]) {
        for &br in text {
            self.write_line_break(if br == '\n' { None } else { Some(br) });
        }
    }

    fn write_plain(&mut self, text: &[char], split: bool) {
        if self.root_context {
            self.open_ended = true;
        }
        if text.is_empty() {
            return;
        }
        if !self.whitespace {
            self.write(" ");
            self.column += 1;
        }
        self.whitespace = false;
        self.indention = false;
        let (mut spaces, mut breaks) = (false, false);
        let (mut start, mut end) = (0, 0);
        while end <= text.len() {
            let ch = text.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split {
                        self.write_indent();
                        self.whitespace = false;
                        self.indention = false;
                    } else {
                        self.write_chars(&text[start..end]);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    if text[start] == '\n' {
                        self.write_line_break(None);
                    }
                    self.write_breaks(&text[start..end]);
                    self.write_indent();
                    self.whitespace = false;
                    self.indention = false;
                    start = end;
                }
            } else if end_or(ch, |c| c == ' ' || is_break(c)) {
                self.write_chars(&text[start..end]);
                start = end;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
            end += 1;
        }
    }

    fn write_single_quoted(&mut self, text: &[char], split: bool) {
        self.write_indicator("'", true, false, false);
        let (mut spaces, mut breaks) = (false, false);
        let (mut start, mut end) = (0, 0);
        while end <= text.len() {
            let ch = text.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end
                        && self.column > BEST_WIDTH
                        && split
                        && start != 0
                        && end != text.len()
                    {
                        self.write_indent();
                    } else {
                        self.write_chars(&text[start..end]);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    if text[start] == '\n' {
                        self.write_line_break(None);
                    }
                    self.write_breaks(&text[start..end]);
                    self.write_indent();
                    start = end;
                }
            } else if end_or(ch, |c| c == ' ' || c == '\'' || is_break(c)) && start < end {
                self.write_chars(&text[start..end]);
                start = end;
            }
            if ch == Some('\'') {
                self.write("''");
                self.column += 2;
                start = end + 1;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
            end += 1;
        }
        self.write_indicator("'", false, false, false);
    }

    fn write_double_quoted(&mut self, text: &[char], split: bool) {
        self.write_indicator("\"", true, false, false);
        let (mut start, mut end) = (0, 0);
        while end <= text.len() {
            let ch = text.get(end).copied();
            let must_escape = |c: char| {
                "\"\\\u{85}\u{2028}\u{2029}\u{feff}".contains(c)
                    || !(('\x20'..='\x7e').contains(&c)
                        || ('\u{a0}'..='\u{d7ff}').contains(&c)
                        || ('\u{e000}'..='\u{fffd}').contains(&c))
            };
            if end_or(ch, must_escape) {
                if start < end {
                    self.write_chars(&text[start..end]);
                    start = end;
                }
                if let Some(c) = ch {
                    let data = match c {
                        '\0' => "\\0".to_string(),
                        '\x07' => "\\a".to_string(),
                        '\x08' => "\\b".to_string(),
                        '\t' => "\\t".to_string(),
                        '\n' => "\\n".to_string(),
                        '\x0b' => "\\v".to_string(),
                        '\x0c' => "\\f".to_string(),
                        '\r' => "\\r".to_string(),
                        '\x1b' => "\\e".to_string(),
                        '"' => "\\\"".to_string(),
                        '\\' => "\\\\".to_string(),
                        '\u{85}' => "\\N".to_string(),
                        '\u{a0}' => "\\_".to_string(),
                        '\u{2028}' => "\\L".to_string(),
                        '\u{2029}' => "\\P".to_string(),
                        c if (c as u32) <= 0xff => format!("\\x{:02X}", c as u32),
                        c if (c as u32) <= 0xffff => format!("\\u{:04X}", c as u32),
                        c => format!("\\U{:08X}", c as u32),
                    };
                    self.column += data.len();
                    self.write(&data);
                    start = end + 1;
                }
            }
            if 0 < end
                && end + 1 < text.len()
                && (ch == Some(' ') || start >= end)
                && self.column as isize + end as isize - start as isize > BEST_WIDTH as isize
                && split
            {
                let mut data: Vec<char> = text[start.min(end)..end].to_vec();
                data.push('\\');
                if start < end {
                    start = end;
                }
                self.write_chars(&data);
                self.write_indent();
                self.whitespace = false;
                self.indention = false;
                if text.get(start) == Some(&' ') {
                    self.write("\\");
                    self.column += 1;
                }
            }
            end += 1;
        }
        self.write_indicator("\"", false, false, false);
    }

    /// `determine_block_hints`: (hints, extra indent at the root, chomping).
    fn block_hints(&self, text: &[char]) -> (String, usize, char) {
        let mut hints = String::new();
        let mut indent = 0;
        let mut indicator = ' ';
        if let (Some(&first), Some(&last)) = (text.first(), text.last()) {
            if first == ' ' || is_break(first) {
                indent = INDENT;
                hints.push_str(&INDENT.to_string());
            } else if self.root_context {
                let s: String = text.iter().collect();
                let marker_line = ["\n---", "\n..."].iter().any(|m| {
                    s.match_indices(m).any(|(pos, _)| {
                        pos > 0
                            && s[pos + 4..]
                                .chars()
                                .next()
                                .is_some_and(|c| matches!(c, ' ' | '\r' | '\n'))
                    })
                });
                if marker_line {
                    indent = INDENT;
                }
            }
            if !is_break(last) {
                indicator = '-';
            } else if text.len() == 1 || is_break(text[text.len() - 2]) {
                indicator = '+';
            }
        }
        if indicator != ' ' {
            hints.push(indicator);
        }
        (hints, indent, indicator)
    }

    fn write_literal(&mut self, text: &[char]) {
        let (hints, extra_indent, chomp) = self.block_hints(text);
        self.write_indicator(&format!("|{hints}"), true, false, false);
        if chomp == '+' {
            self.open_ended = true;
        }
        self.write_line_break(None);
        let mut breaks = true;
        let (mut start, mut end) = (0, 0);
        while end <= text.len() {
            let ch = text.get(end).copied();
            if breaks {
                if !ch.is_some_and(is_break) {
                    self.write_breaks(&text[start..end]);
                    if ch.is_some() {
                        if self.root_context {
                            let pad = " ".repeat(extra_indent + self.indent.unwrap_or(0));
                            self.write(&pad);
                        } else {
                            self.write_indent();
                        }
                    }
                    start = end;
                }
            } else if end_or(ch, is_break) {
                let data: String = text[start..end].iter().collect();
                self.write(&data);
                if ch.is_none() {
                    self.write_line_break(None);
                }
                start = end;
            }
            if let Some(c) = ch {
                breaks = is_break(c);
            }
            end += 1;
        }
    }
}

/// `check_simple_key`: short single-line scalars and empty collections.
fn check_simple_key(node: &Node) -> bool {
    match node {
        Node::Scalar(s) => {
            let length = s.tag.text().chars().count() + s.value.chars().count();
            length < MAX_SIMPLE_KEY_LENGTH && !analyze(&s.value).multiline
        }
        Node::Seq(items) => items.is_empty(),
        Node::Map(pairs) => pairs.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    //! Expected texts were produced with the reference implementation
    //! (`moat.util.yprint` 0.26.3 on ruyaml 0.91.0), i.e. what
    //! `yaml.YAML(typ="safe")` with `default_flow_style = False` prints.

    use std::sync::Arc;

    use super::*;

    use distkv_model::{Path, Value as V};

    const N: V = V::Nil;
    const T: V = V::Bool(true);
    const F: V = V::Bool(false);
    fn s(x: &str) -> V {
        V::str(x)
    }
    fn i(x: i64) -> V {
        V::Int(x)
    }
    fn f(x: f64) -> V {
        V::Float(x)
    }
    fn b(x: &[u8]) -> V {
        V::Bin(Arc::from(x))
    }
    fn a(x: Vec<V>) -> V {
        V::Array(x)
    }
    fn m(x: Vec<(V, V)>) -> V {
        V::Map(x)
    }
    fn p(x: Vec<V>) -> V {
        V::Path(Path::new(x))
    }
    fn big(x: &[u8]) -> V {
        V::BigUint(Arc::from(x))
    }

    fn check(render: fn(&Value) -> String, table: Vec<(Value, &str)>) {
        for (value, want) in table {
            assert_eq!(render(&value), want, "rendering {value:?}");
        }
    }

    /// Plain where PyYAML allows it, else single or double quotes.
    #[test]
    fn string_values_quote_like_pyyaml() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(s("k"), s("hello"))]), "k: hello\n"),
            (m(vec![(s("k"), s("123"))]), "k: '123'\n"),
            (m(vec![(s("k"), s("-5"))]), "k: '-5'\n"),
            (m(vec![(s("k"), s("1.5"))]), "k: '1.5'\n"),
            (m(vec![(s("k"), s("1e5"))]), "k: '1e5'\n"),
            (m(vec![(s("k"), s("1e+16"))]), "k: '1e+16'\n"),
            (m(vec![(s("k"), s(".5"))]), "k: '.5'\n"),
            (m(vec![(s("k"), s("0x1f"))]), "k: '0x1f'\n"),
            (m(vec![(s("k"), s("0o17"))]), "k: '0o17'\n"),
            (m(vec![(s("k"), s("0b101"))]), "k: '0b101'\n"),
            (m(vec![(s("k"), s("0b"))]), "k: 0b\n"),
            (m(vec![(s("k"), s("1_000"))]), "k: '1_000'\n"),
            (m(vec![(s("k"), s("_"))]), "k: _\n"),
            (m(vec![(s("k"), s("-_"))]), "k: '-_'\n"),
            (m(vec![(s("k"), s("+"))]), "k: +\n"),
            (m(vec![(s("k"), s("-"))]), "k: '-'\n"),
            (m(vec![(s("k"), s("--"))]), "k: --\n"),
            (m(vec![(s("k"), s("---"))]), "k: '---'\n"),
            (m(vec![(s("k"), s("..."))]), "k: '...'\n"),
            (m(vec![(s("k"), s("---a"))]), "k: '---a'\n"),
            (m(vec![(s("k"), s("a---"))]), "k: a---\n"),
            (m(vec![(s("k"), s("true"))]), "k: 'true'\n"),
            (m(vec![(s("k"), s("True"))]), "k: 'True'\n"),
            (m(vec![(s("k"), s("TRUE"))]), "k: 'TRUE'\n"),
            (m(vec![(s("k"), s("tRue"))]), "k: tRue\n"),
            (m(vec![(s("k"), s("false"))]), "k: 'false'\n"),
            (m(vec![(s("k"), s("yes"))]), "k: yes\n"),
            (m(vec![(s("k"), s("no"))]), "k: no\n"),
            (m(vec![(s("k"), s("on"))]), "k: on\n"),
            (m(vec![(s("k"), s("off"))]), "k: off\n"),
            (m(vec![(s("k"), s("y"))]), "k: y\n"),
            (m(vec![(s("k"), s("n"))]), "k: n\n"),
            (m(vec![(s("k"), s("null"))]), "k: 'null'\n"),
            (m(vec![(s("k"), s("Null"))]), "k: 'Null'\n"),
            (m(vec![(s("k"), s("NULL"))]), "k: 'NULL'\n"),
            (m(vec![(s("k"), s("nUll"))]), "k: nUll\n"),
            (m(vec![(s("k"), s("~"))]), "k: '~'\n"),
            (m(vec![(s("k"), s(""))]), "k: ''\n"),
            (m(vec![(s("k"), s(" "))]), "k: ' '\n"),
            (m(vec![(s("k"), s("  "))]), "k: '  '\n"),
            (m(vec![(s("k"), s(" a"))]), "k: ' a'\n"),
            (m(vec![(s("k"), s("a "))]), "k: 'a '\n"),
            (m(vec![(s("k"), s("a b"))]), "k: a b\n"),
            (m(vec![(s("k"), s("a  b"))]), "k: a  b\n"),
            (m(vec![(s("k"), s("a: b"))]), "k: 'a: b'\n"),
            (m(vec![(s("k"), s("a:b"))]), "k: a:b\n"),
            (m(vec![(s("k"), s("a:"))]), "k: 'a:'\n"),
            (m(vec![(s("k"), s(":a"))]), "k: :a\n"),
            (m(vec![(s("k"), s(":"))]), "k: ':'\n"),
            (m(vec![(s("k"), s("::"))]), "k: '::'\n"),
            (m(vec![(s("k"), s("?"))]), "k: '?'\n"),
            (m(vec![(s("k"), s("? a"))]), "k: '? a'\n"),
            (m(vec![(s("k"), s("?a"))]), "k: ?a\n"),
            (m(vec![(s("k"), s("-a"))]), "k: -a\n"),
            (m(vec![(s("k"), s("- a"))]), "k: '- a'\n"),
            (m(vec![(s("k"), s("#a"))]), "k: '#a'\n"),
            (m(vec![(s("k"), s("a #b"))]), "k: 'a #b'\n"),
            (m(vec![(s("k"), s("a#b"))]), "k: a#b\n"),
            (m(vec![(s("k"), s("!a"))]), "k: '!a'\n"),
            (m(vec![(s("k"), s("&a"))]), "k: '&a'\n"),
            (m(vec![(s("k"), s("*a"))]), "k: '*a'\n"),
            (m(vec![(s("k"), s("|"))]), "k: '|'\n"),
            (m(vec![(s("k"), s(">"))]), "k: '>'\n"),
            (m(vec![(s("k"), s("'"))]), "k: \"'\"\n"),
            (m(vec![(s("k"), s("\""))]), "k: '\"'\n"),
            (m(vec![(s("k"), s("%a"))]), "k: '%a'\n"),
            (m(vec![(s("k"), s("@a"))]), "k: '@a'\n"),
            (m(vec![(s("k"), s("`a"))]), "k: '`a'\n"),
            (m(vec![(s("k"), s("[a"))]), "k: '[a'\n"),
            (m(vec![(s("k"), s("]"))]), "k: ']'\n"),
            (m(vec![(s("k"), s("{a"))]), "k: '{a'\n"),
            (m(vec![(s("k"), s("}"))]), "k: '}'\n"),
            (m(vec![(s("k"), s(",a"))]), "k: ',a'\n"),
            (m(vec![(s("k"), s("a,b"))]), "k: a,b\n"),
            (m(vec![(s("k"), s("a[b"))]), "k: a[b\n"),
            (m(vec![(s("k"), s("a]b"))]), "k: a]b\n"),
            (m(vec![(s("k"), s("a{b"))]), "k: a{b\n"),
            (m(vec![(s("k"), s("<<"))]), "k: '<<'\n"),
            (m(vec![(s("k"), s("<"))]), "k: <\n"),
            (m(vec![(s("k"), s("="))]), "k: '='\n"),
            (m(vec![(s("k"), s("=="))]), "k: ==\n"),
            (m(vec![(s("k"), s("!"))]), "k: '!'\n"),
            (m(vec![(s("k"), s("&"))]), "k: '&'\n"),
            (m(vec![(s("k"), s("*"))]), "k: '*'\n"),
            (m(vec![(s("k"), s("2001-01-01"))]), "k: '2001-01-01'\n"),
            (m(vec![(s("k"), s("2001-1-1 1:00:00"))]), "k: '2001-1-1 1:00:00'\n"),
            (m(vec![(s("k"), s("2001-12-14t21:59:43.10-05:00"))]), "k: '2001-12-14t21:59:43.10-05:00'\n"),
            (m(vec![(s("k"), s("2001-12-14 21:59:43.10 Z"))]), "k: '2001-12-14 21:59:43.10 Z'\n"),
            (m(vec![(s("k"), s("2001-12-14 21:59:43.10 x"))]), "k: 2001-12-14 21:59:43.10 x\n"),
            (m(vec![(s("k"), s("12:30"))]), "k: 12:30\n"),
            (m(vec![(s("k"), s("1:2"))]), "k: 1:2\n"),
            (m(vec![(s("k"), s(".inf"))]), "k: '.inf'\n"),
            (m(vec![(s("k"), s("-.inf"))]), "k: '-.inf'\n"),
            (m(vec![(s("k"), s(".nan"))]), "k: '.nan'\n"),
            (m(vec![(s("k"), s(".NaN"))]), "k: '.NaN'\n"),
            (m(vec![(s("k"), s("+.inf"))]), "k: '+.inf'\n"),
            (m(vec![(s("k"), s("-.nan"))]), "k: -.nan\n"),
            (m(vec![(s("k"), s("it's"))]), "k: it's\n"),
            (m(vec![(s("k"), s("say \"hi\""))]), "k: say \"hi\"\n"),
            (m(vec![(s("k"), s("it's \"x\""))]), "k: it's \"x\"\n"),
            (m(vec![(s("k"), s("a\tb"))]), "k: \"a\\tb\"\n"),
            (m(vec![(s("k"), s("\t"))]), "k: \"\\t\"\n"),
            (m(vec![(s("k"), s("a\0b"))]), "k: \"a\\0b\"\n"),
            (m(vec![(s("k"), s("\u{7f}"))]), "k: \"\\x7F\"\n"),
            (m(vec![(s("k"), s("é"))]), "k: é\n"),
            (m(vec![(s("k"), s("ü ö"))]), "k: ü ö\n"),
            (m(vec![(s("k"), s("😀"))]), "k: 😀\n"),
            (m(vec![(s("k"), s("\u{2028}"))]), "k: '\u{2028}  '\n"),
            (m(vec![(s("k"), s("a\u{2028}b"))]), "k: 'a\u{2028}  b'\n"),
            (m(vec![(s("k"), s("\u{85}"))]), "k: '\u{85}  '\n"),
            (m(vec![(s("k"), s("\u{feff}"))]), "k: \"\\uFEFF\"\n"),
            (m(vec![(s("k"), s("\u{a0}"))]), "k: \u{a0}\n"),
            (m(vec![(s("k"), s("a\u{a0}b"))]), "k: a\u{a0}b\n"),
            (m(vec![(s("k"), s("\u{200b}"))]), "k: \u{200b}\n"),
            (m(vec![(s("k"), s("a\\b"))]), "k: a\\b\n"),
            (m(vec![(s("k"), s("C:\\x"))]), "k: C:\\x\n"),
            (m(vec![(s("k"), s("a\rb"))]), "k: \"a\\rb\"\n"),
            (m(vec![(s("k"), s("a\u{1b}b"))]), "k: \"a\\eb\"\n"),
            (m(vec![(s("k"), s("\u{7}\u{8}\u{b}\u{c}"))]), "k: \"\\a\\b\\v\\f\"\n"),
            (m(vec![(s("k"), s("\u{d7ff}\u{e000}�\u{fffe}"))]), "k: \"\u{d7ff}\u{e000}�\\uFFFE\"\n"),
            (m(vec![(s("k"), s("0123"))]), "k: '0123'\n"),
            (m(vec![(s("k"), s("00"))]), "k: '00'\n"),
            (m(vec![(s("k"), s("+1"))]), "k: '+1'\n"),
            (m(vec![(s("k"), s("1."))]), "k: '1.'\n"),
            (m(vec![(s("k"), s("1.e5"))]), "k: '1.e5'\n"),
            (m(vec![(s("k"), s("1e"))]), "k: 1e\n"),
            (m(vec![(s("k"), s("0x"))]), "k: 0x\n"),
            (m(vec![(s("k"), s("0xg"))]), "k: 0xg\n"),
            (m(vec![(s("k"), s("1__2"))]), "k: '1__2'\n"),
            (m(vec![(s("k"), s("1,000"))]), "k: 1,000\n"),
            (m(vec![(s("k"), s("1_"))]), "k: '1_'\n"),
            (m(vec![(s("k"), s("._5"))]), "k: '._5'\n"),
            (m(vec![(s("k"), s("-0"))]), "k: '-0'\n"),
            (m(vec![(s("k"), s("0.0.0"))]), "k: 0.0.0\n"),
            (m(vec![(s("k"), s("a\u{85}b"))]), "k: 'a\u{85}  b'\n"),
            (m(vec![(s("k"), s("#"))]), "k: '#'\n"),
            (m(vec![(s("k"), s("a #"))]), "k: 'a #'\n"),
            (m(vec![(s("k"), s("a# b"))]), "k: a# b\n"),
            (m(vec![(s("k"), s("x: "))]), "k: 'x: '\n"),
            (m(vec![(s("k"), s("?x"))]), "k: ?x\n"),
            (m(vec![(s("k"), s("-"))]), "k: '-'\n"),
            (m(vec![(s("k"), s("a -b"))]), "k: a -b\n"),
        ];
        check(to_yaml, table);
    }

    /// The same strings as sequence items.
    #[test]
    fn strings_in_sequences_quote_like_pyyaml() {
        #[rustfmt::skip]
        let table = vec![
            (a(vec![s("hello")]), "- hello\n"),
            (a(vec![s("123")]), "- '123'\n"),
            (a(vec![s("-5")]), "- '-5'\n"),
            (a(vec![s("1.5")]), "- '1.5'\n"),
            (a(vec![s("1e5")]), "- '1e5'\n"),
            (a(vec![s("1e+16")]), "- '1e+16'\n"),
            (a(vec![s(".5")]), "- '.5'\n"),
            (a(vec![s("0x1f")]), "- '0x1f'\n"),
            (a(vec![s("0o17")]), "- '0o17'\n"),
            (a(vec![s("0b101")]), "- '0b101'\n"),
            (a(vec![s("0b")]), "- 0b\n"),
            (a(vec![s("1_000")]), "- '1_000'\n"),
            (a(vec![s("_")]), "- _\n"),
            (a(vec![s("-_")]), "- '-_'\n"),
            (a(vec![s("+")]), "- +\n"),
            (a(vec![s("-")]), "- '-'\n"),
            (a(vec![s("--")]), "- --\n"),
            (a(vec![s("---")]), "- '---'\n"),
            (a(vec![s("...")]), "- '...'\n"),
            (a(vec![s("---a")]), "- '---a'\n"),
            (a(vec![s("a---")]), "- a---\n"),
            (a(vec![s("true")]), "- 'true'\n"),
            (a(vec![s("True")]), "- 'True'\n"),
            (a(vec![s("TRUE")]), "- 'TRUE'\n"),
            (a(vec![s("tRue")]), "- tRue\n"),
            (a(vec![s("false")]), "- 'false'\n"),
            (a(vec![s("yes")]), "- yes\n"),
            (a(vec![s("no")]), "- no\n"),
            (a(vec![s("on")]), "- on\n"),
            (a(vec![s("off")]), "- off\n"),
            (a(vec![s("y")]), "- y\n"),
            (a(vec![s("n")]), "- n\n"),
            (a(vec![s("null")]), "- 'null'\n"),
            (a(vec![s("Null")]), "- 'Null'\n"),
            (a(vec![s("NULL")]), "- 'NULL'\n"),
            (a(vec![s("nUll")]), "- nUll\n"),
            (a(vec![s("~")]), "- '~'\n"),
            (a(vec![s("")]), "- ''\n"),
            (a(vec![s(" ")]), "- ' '\n"),
            (a(vec![s("  ")]), "- '  '\n"),
            (a(vec![s(" a")]), "- ' a'\n"),
            (a(vec![s("a ")]), "- 'a '\n"),
            (a(vec![s("a b")]), "- a b\n"),
            (a(vec![s("a  b")]), "- a  b\n"),
            (a(vec![s("a: b")]), "- 'a: b'\n"),
            (a(vec![s("a:b")]), "- a:b\n"),
            (a(vec![s("a:")]), "- 'a:'\n"),
            (a(vec![s(":a")]), "- :a\n"),
            (a(vec![s(":")]), "- ':'\n"),
            (a(vec![s("::")]), "- '::'\n"),
            (a(vec![s("?")]), "- '?'\n"),
            (a(vec![s("? a")]), "- '? a'\n"),
            (a(vec![s("?a")]), "- ?a\n"),
            (a(vec![s("-a")]), "- -a\n"),
            (a(vec![s("- a")]), "- '- a'\n"),
            (a(vec![s("#a")]), "- '#a'\n"),
            (a(vec![s("a #b")]), "- 'a #b'\n"),
            (a(vec![s("a#b")]), "- a#b\n"),
            (a(vec![s("!a")]), "- '!a'\n"),
            (a(vec![s("&a")]), "- '&a'\n"),
        ];
        check(to_yaml, table);
    }

    /// The same strings as (simple) mapping keys.
    #[test]
    fn strings_as_keys_quote_like_pyyaml() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(s("hello"), i(1))]), "hello: 1\n"),
            (m(vec![(s("123"), i(1))]), "'123': 1\n"),
            (m(vec![(s("-5"), i(1))]), "'-5': 1\n"),
            (m(vec![(s("1.5"), i(1))]), "'1.5': 1\n"),
            (m(vec![(s("1e5"), i(1))]), "'1e5': 1\n"),
            (m(vec![(s("1e+16"), i(1))]), "'1e+16': 1\n"),
            (m(vec![(s(".5"), i(1))]), "'.5': 1\n"),
            (m(vec![(s("0x1f"), i(1))]), "'0x1f': 1\n"),
            (m(vec![(s("0o17"), i(1))]), "'0o17': 1\n"),
            (m(vec![(s("0b101"), i(1))]), "'0b101': 1\n"),
            (m(vec![(s("0b"), i(1))]), "0b: 1\n"),
            (m(vec![(s("1_000"), i(1))]), "'1_000': 1\n"),
            (m(vec![(s("_"), i(1))]), "_: 1\n"),
            (m(vec![(s("-_"), i(1))]), "'-_': 1\n"),
            (m(vec![(s("+"), i(1))]), "+: 1\n"),
            (m(vec![(s("-"), i(1))]), "'-': 1\n"),
            (m(vec![(s("--"), i(1))]), "--: 1\n"),
            (m(vec![(s("---"), i(1))]), "'---': 1\n"),
            (m(vec![(s("..."), i(1))]), "'...': 1\n"),
            (m(vec![(s("---a"), i(1))]), "'---a': 1\n"),
            (m(vec![(s("a---"), i(1))]), "a---: 1\n"),
            (m(vec![(s("true"), i(1))]), "'true': 1\n"),
            (m(vec![(s("True"), i(1))]), "'True': 1\n"),
            (m(vec![(s("TRUE"), i(1))]), "'TRUE': 1\n"),
            (m(vec![(s("tRue"), i(1))]), "tRue: 1\n"),
            (m(vec![(s("false"), i(1))]), "'false': 1\n"),
            (m(vec![(s("yes"), i(1))]), "yes: 1\n"),
            (m(vec![(s("no"), i(1))]), "no: 1\n"),
            (m(vec![(s("on"), i(1))]), "on: 1\n"),
            (m(vec![(s("off"), i(1))]), "off: 1\n"),
            (m(vec![(s("y"), i(1))]), "y: 1\n"),
            (m(vec![(s("n"), i(1))]), "n: 1\n"),
            (m(vec![(s("null"), i(1))]), "'null': 1\n"),
            (m(vec![(s("Null"), i(1))]), "'Null': 1\n"),
            (m(vec![(s("NULL"), i(1))]), "'NULL': 1\n"),
            (m(vec![(s("nUll"), i(1))]), "nUll: 1\n"),
            (m(vec![(s("~"), i(1))]), "'~': 1\n"),
            (m(vec![(s(""), i(1))]), "'': 1\n"),
            (m(vec![(s(" "), i(1))]), "' ': 1\n"),
            (m(vec![(s("  "), i(1))]), "'  ': 1\n"),
            (m(vec![(s(" a"), i(1))]), "' a': 1\n"),
            (m(vec![(s("a "), i(1))]), "'a ': 1\n"),
            (m(vec![(s("a b"), i(1))]), "a b: 1\n"),
            (m(vec![(s("a  b"), i(1))]), "a  b: 1\n"),
            (m(vec![(s("a: b"), i(1))]), "'a: b': 1\n"),
            (m(vec![(s("a:b"), i(1))]), "a:b: 1\n"),
            (m(vec![(s("a:"), i(1))]), "'a:': 1\n"),
            (m(vec![(s(":a"), i(1))]), ":a: 1\n"),
            (m(vec![(s(":"), i(1))]), "':': 1\n"),
            (m(vec![(s("::"), i(1))]), "'::': 1\n"),
            (m(vec![(s("?"), i(1))]), "'?': 1\n"),
            (m(vec![(s("? a"), i(1))]), "'? a': 1\n"),
            (m(vec![(s("?a"), i(1))]), "?a: 1\n"),
            (m(vec![(s("-a"), i(1))]), "-a: 1\n"),
            (m(vec![(s("- a"), i(1))]), "'- a': 1\n"),
            (m(vec![(s("#a"), i(1))]), "'#a': 1\n"),
            (m(vec![(s("a #b"), i(1))]), "'a #b': 1\n"),
            (m(vec![(s("a#b"), i(1))]), "a#b: 1\n"),
            (m(vec![(s("!a"), i(1))]), "'!a': 1\n"),
            (m(vec![(s("&a"), i(1))]), "'&a': 1\n"),
            (m(vec![(s("*a"), i(1))]), "'*a': 1\n"),
            (m(vec![(s("|"), i(1))]), "'|': 1\n"),
            (m(vec![(s(">"), i(1))]), "'>': 1\n"),
            (m(vec![(s("'"), i(1))]), "\"'\": 1\n"),
            (m(vec![(s("\""), i(1))]), "'\"': 1\n"),
            (m(vec![(s("%a"), i(1))]), "'%a': 1\n"),
            (m(vec![(s("@a"), i(1))]), "'@a': 1\n"),
            (m(vec![(s("`a"), i(1))]), "'`a': 1\n"),
            (m(vec![(s("[a"), i(1))]), "'[a': 1\n"),
            (m(vec![(s("]"), i(1))]), "']': 1\n"),
            (m(vec![(s("{a"), i(1))]), "'{a': 1\n"),
            (m(vec![(s("}"), i(1))]), "'}': 1\n"),
            (m(vec![(s(",a"), i(1))]), "',a': 1\n"),
            (m(vec![(s("a,b"), i(1))]), "a,b: 1\n"),
            (m(vec![(s("a[b"), i(1))]), "a[b: 1\n"),
            (m(vec![(s("a]b"), i(1))]), "a]b: 1\n"),
            (m(vec![(s("a{b"), i(1))]), "a{b: 1\n"),
            (m(vec![(s("<<"), i(1))]), "'<<': 1\n"),
            (m(vec![(s("<"), i(1))]), "<: 1\n"),
            (m(vec![(s("="), i(1))]), "'=': 1\n"),
            (m(vec![(s("=="), i(1))]), "==: 1\n"),
            (m(vec![(s("!"), i(1))]), "'!': 1\n"),
            (m(vec![(s("&"), i(1))]), "'&': 1\n"),
            (m(vec![(s("*"), i(1))]), "'*': 1\n"),
            (m(vec![(s("2001-01-01"), i(1))]), "'2001-01-01': 1\n"),
            (m(vec![(s("2001-1-1 1:00:00"), i(1))]), "'2001-1-1 1:00:00': 1\n"),
            (m(vec![(s("2001-12-14t21:59:43.10-05:00"), i(1))]), "'2001-12-14t21:59:43.10-05:00': 1\n"),
            (m(vec![(s("2001-12-14 21:59:43.10 Z"), i(1))]), "'2001-12-14 21:59:43.10 Z': 1\n"),
            (m(vec![(s("2001-12-14 21:59:43.10 x"), i(1))]), "2001-12-14 21:59:43.10 x: 1\n"),
            (m(vec![(s("12:30"), i(1))]), "12:30: 1\n"),
            (m(vec![(s("1:2"), i(1))]), "1:2: 1\n"),
            (m(vec![(s(".inf"), i(1))]), "'.inf': 1\n"),
            (m(vec![(s("-.inf"), i(1))]), "'-.inf': 1\n"),
            (m(vec![(s(".nan"), i(1))]), "'.nan': 1\n"),
            (m(vec![(s(".NaN"), i(1))]), "'.NaN': 1\n"),
            (m(vec![(s("+.inf"), i(1))]), "'+.inf': 1\n"),
            (m(vec![(s("-.nan"), i(1))]), "-.nan: 1\n"),
            (m(vec![(s("it's"), i(1))]), "it's: 1\n"),
            (m(vec![(s("say \"hi\""), i(1))]), "say \"hi\": 1\n"),
            (m(vec![(s("it's \"x\""), i(1))]), "it's \"x\": 1\n"),
            (m(vec![(s("a\tb"), i(1))]), "\"a\\tb\": 1\n"),
            (m(vec![(s("\t"), i(1))]), "\"\\t\": 1\n"),
            (m(vec![(s("a\0b"), i(1))]), "\"a\\0b\": 1\n"),
            (m(vec![(s("\u{7f}"), i(1))]), "\"\\x7F\": 1\n"),
            (m(vec![(s("é"), i(1))]), "é: 1\n"),
            (m(vec![(s("ü ö"), i(1))]), "ü ö: 1\n"),
            (m(vec![(s("😀"), i(1))]), "😀: 1\n"),
            (m(vec![(s("\u{2028}"), i(1))]), "? '\u{2028}  '\n: 1\n"),
            (m(vec![(s("a\u{2028}b"), i(1))]), "? 'a\u{2028}  b'\n: 1\n"),
            (m(vec![(s("\u{85}"), i(1))]), "? '\u{85}  '\n: 1\n"),
            (m(vec![(s("\u{feff}"), i(1))]), "\"\\uFEFF\": 1\n"),
            (m(vec![(s("\u{a0}"), i(1))]), "\u{a0}: 1\n"),
            (m(vec![(s("a\u{a0}b"), i(1))]), "a\u{a0}b: 1\n"),
            (m(vec![(s("\u{200b}"), i(1))]), "\u{200b}: 1\n"),
            (m(vec![(s("a\\b"), i(1))]), "a\\b: 1\n"),
            (m(vec![(s("C:\\x"), i(1))]), "C:\\x: 1\n"),
            (m(vec![(s("a\rb"), i(1))]), "\"a\\rb\": 1\n"),
            (m(vec![(s("a\u{1b}b"), i(1))]), "\"a\\eb\": 1\n"),
            (m(vec![(s("\u{7}\u{8}\u{b}\u{c}"), i(1))]), "\"\\a\\b\\v\\f\": 1\n"),
            (m(vec![(s("\u{d7ff}\u{e000}�\u{fffe}"), i(1))]), "\"\u{d7ff}\u{e000}�\\uFFFE\": 1\n"),
            (m(vec![(s("0123"), i(1))]), "'0123': 1\n"),
            (m(vec![(s("00"), i(1))]), "'00': 1\n"),
            (m(vec![(s("+1"), i(1))]), "'+1': 1\n"),
            (m(vec![(s("1."), i(1))]), "'1.': 1\n"),
            (m(vec![(s("1.e5"), i(1))]), "'1.e5': 1\n"),
            (m(vec![(s("1e"), i(1))]), "1e: 1\n"),
            (m(vec![(s("0x"), i(1))]), "0x: 1\n"),
            (m(vec![(s("0xg"), i(1))]), "0xg: 1\n"),
            (m(vec![(s("1__2"), i(1))]), "'1__2': 1\n"),
            (m(vec![(s("1,000"), i(1))]), "1,000: 1\n"),
            (m(vec![(s("1_"), i(1))]), "'1_': 1\n"),
            (m(vec![(s("._5"), i(1))]), "'._5': 1\n"),
            (m(vec![(s("-0"), i(1))]), "'-0': 1\n"),
            (m(vec![(s("0.0.0"), i(1))]), "0.0.0: 1\n"),
            (m(vec![(s("a\u{85}b"), i(1))]), "? 'a\u{85}  b'\n: 1\n"),
            (m(vec![(s("#"), i(1))]), "'#': 1\n"),
            (m(vec![(s("a #"), i(1))]), "'a #': 1\n"),
            (m(vec![(s("a# b"), i(1))]), "a# b: 1\n"),
            (m(vec![(s("x: "), i(1))]), "'x: ': 1\n"),
            (m(vec![(s("?x"), i(1))]), "?x: 1\n"),
            (m(vec![(s("-"), i(1))]), "'-': 1\n"),
            (m(vec![(s("a -b"), i(1))]), "a -b: 1\n"),
        ];
        check(to_yaml, table);
    }

    /// Strings containing a newline use `|` with chomping/indent hints.
    #[test]
    fn multi_line_strings_use_literal_blocks() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(s("k"), s("multi\nline"))]), "k: |-\n  multi\n  line\n"),
            (m(vec![(s("k"), s("a\n"))]), "k: |\n  a\n"),
            (m(vec![(s("k"), s("a\n\n"))]), "k: |+\n  a\n\n...\n"),
            (m(vec![(s("k"), s("\n"))]), "k: |2+\n\n...\n"),
            (m(vec![(s("k"), s("\n\n"))]), "k: |2+\n\n\n...\n"),
            (m(vec![(s("k"), s("\na"))]), "k: |2-\n\n  a\n"),
            (m(vec![(s("k"), s(" a\nb"))]), "k: |2-\n   a\n  b\n"),
            (m(vec![(s("k"), s("a \nb"))]), "k: |-\n  a \n  b\n"),
            (m(vec![(s("k"), s("a\n b"))]), "k: |-\n  a\n   b\n"),
            (m(vec![(s("k"), s("a\n\nb"))]), "k: |-\n  a\n\n  b\n"),
            (m(vec![(s("k"), s("a\0\nb"))]), "k: |-\n  a\0\n  b\n"),
            (m(vec![(s("k"), s("a\u{2028}\nb"))]), "k: |-\n  a\u{2028}\n  b\n"),
            (m(vec![(s("k"), s("---\nx"))]), "k: |-\n  ---\n  x\n"),
            (m(vec![(s("k"), s("a\n---\nb"))]), "k: |-\n  a\n  ---\n  b\n"),
            (m(vec![(s("k"), s("a\n...\n"))]), "k: |\n  a\n  ...\n"),
            (m(vec![(s("k"), s("long\nword word word word word word word word word word word word word word word word word word word word word word word word word word word word word word "))]), "k: |-\n  long\n  word word word word word word word word word word word word word word word word word word word word word word word word word word word word word word \n"),
            (m(vec![(s("k"), s("é\n😀"))]), "k: |-\n  é\n  😀\n"),
            (m(vec![(s("k"), s("a\tb\nc"))]), "k: |-\n  a\tb\n  c\n"),
            (m(vec![(s("k"), s("'q'\n\"d\""))]), "k: |-\n  'q'\n  \"d\"\n"),
            (a(vec![s("multi\nline")]), "- |-\n  multi\n  line\n"),
            (a(vec![s("a\n")]), "- |\n  a\n"),
            (a(vec![s("a\n\n")]), "- |+\n  a\n\n...\n"),
            (a(vec![s("\n")]), "- |2+\n\n...\n"),
            (a(vec![s("\n\n")]), "- |2+\n\n\n...\n"),
            (a(vec![s("\na")]), "- |2-\n\n  a\n"),
            (a(vec![s(" a\nb")]), "- |2-\n   a\n  b\n"),
            (a(vec![s("a \nb")]), "- |-\n  a \n  b\n"),
            (m(vec![(s("a"), m(vec![(s("b"), a(vec![s("multi\nline")]))]))]), "a:\n  b:\n  - |-\n    multi\n    line\n"),
            (m(vec![(s("a"), m(vec![(s("b"), a(vec![s("a\n")]))]))]), "a:\n  b:\n  - |\n    a\n"),
            (m(vec![(s("a"), m(vec![(s("b"), a(vec![s("a\n\n")]))]))]), "a:\n  b:\n  - |+\n    a\n\n...\n"),
            (m(vec![(s("a"), m(vec![(s("b"), a(vec![s("\n")]))]))]), "a:\n  b:\n  - |2+\n\n...\n"),
            (a(vec![a(vec![s("multi\nline")])]), "- - |-\n    multi\n    line\n"),
            (a(vec![a(vec![s("a\n")])]), "- - |\n    a\n"),
            (a(vec![a(vec![s("a\n\n")])]), "- - |+\n    a\n\n...\n"),
            (m(vec![(s("multi\nline"), i(1))]), "? |-\n  multi\n  line\n: 1\n"),
            (m(vec![(s("a\n"), i(1))]), "? |\n  a\n: 1\n"),
            (m(vec![(s("a\n\n"), i(1))]), "? |+\n  a\n\n: 1\n"),
        ];
        check(to_yaml, table);
    }

    /// Plain and quoted scalars are folded at spaces beyond column 80.
    #[test]
    fn long_strings_fold_at_80_columns() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(s("k"), s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))]), "k: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"),
            (m(vec![(s("k"), s("word word word word word word word word word word word word word word word word word word word word word word word word word word word word word word"))]), "k: word word word word word word word word word word word word word word word word\n  word word word word word word word word word word word word word word\n"),
            (m(vec![(s("k"), s("a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a "))]), "k: 'a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a\n  a a a a a a a a a a a '\n"),
            (m(vec![(s("k"), s("word word word word word word word word word word word word word word word word word word word word word word word word word word word word word word "))]), "k: 'word word word word word word word word word word word word word word word word\n  word word word word word word word word word word word word word word '\n"),
            (m(vec![(s("k"), s("'word word word word word word word word word word word word word word word word word word word word '"))]), "k: \"'word word word word word word word word word word word word word word word word\\\n  \\ word word word word '\"\n"),
            (m(vec![(s("k"), s("é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é "))]), "k: 'é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é é\n  é é é é é é é é é é é '\n"),
            (m(vec![(s("k"), s("it's it's it's it's it's it's it's it's it's it's it's it's it's it's it's it's it's it's it's it's"))]), "k: it's it's it's it's it's it's it's it's it's it's it's it's it's it's it's it's\n  it's it's it's it's\n"),
            (m(vec![(s("k"), s("tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab\t tab"))]), "k: \"tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t\\\n  \\ tab\\t tab\\t tab\\t tab\\t tab\\t tab\\t tab\"\n"),
            (m(vec![(s("k"), s(" word word word word word word word word word word word word word word word word word word word word "))]), "k: ' word word word word word word word word word word word word word word word word\n  word word word word '\n"),
            (m(vec![(s("k"), s("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b"))]), "k: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n  b\n"),
            (m(vec![(s("k"), s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx  y"))]), "k: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx  y\n"),
            (m(vec![(s("k"), s("yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy "))]), "k: 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n  yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy '\n"),
            (m(vec![(s("k"), s("#word word word word word word word word word word word word word word word word word word word word "))]), "k: '#word word word word word word word word word word word word word word word word\n  word word word word '\n"),
            (m(vec![(s("k"), s("\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word\0 word"))]), "k: \"\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\\0\\\n  \\ word\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\\0 word\"\n"),
            (m(vec![(s("k"), s("w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w xxxxxxxxxx z"))]), "k: w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w w xxxxxxxxxx\n  z\n"),
            (m(vec![(s("k"), s("wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd "))]), "k: 'wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd\n  wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd wo\\rd '\n"),
            (a(vec![s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")]), "- xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"),
            (a(vec![s("word word word word word word word word word word word word word word word word word word word word word word word word word word word word word word")]), "- word word word word word word word word word word word word word word word word\n  word word word word word word word word word word word word word word\n"),
            (a(vec![s("a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a ")]), "- 'a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a\n  a a a a a a a a a a '\n"),
            (a(vec![s("word word word word word word word word word word word word word word word word word word word word word word word word word word word word word word ")]), "- 'word word word word word word word word word word word word word word word word\n  word word word word word word word word word word word word word word '\n"),
            (a(vec![s("'word word word word word word word word word word word word word word word word word word word word '")]), "- \"'word word word word word word word word word word word word word word word word\\\n  \\ word word word word '\"\n"),
            (m(vec![(s("a"), m(vec![(s("b"), m(vec![(s("c"), a(vec![a(vec![s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")])]))]))]))]), "a:\n  b:\n    c:\n    - - xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"),
            (m(vec![(s("a"), m(vec![(s("b"), m(vec![(s("c"), a(vec![a(vec![s("word word word word word word word word word word word word word word word word word word word word word word word word word word word word word word")])]))]))]))]), "a:\n  b:\n    c:\n    - - word word word word word word word word word word word word word word word\n        word word word word word word word word word word word word word word word\n"),
            (m(vec![(s("a"), m(vec![(s("b"), m(vec![(s("c"), a(vec![a(vec![s("a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a ")])]))]))]))]), "a:\n  b:\n    c:\n    - - 'a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a\n        a a a a a a a a a a a a a '\n"),
            (m(vec![(s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), i(1))]), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: 1\n"),
            (m(vec![(s("word word word word word word word word word word word word word word word word word word word word word word word word word word word word word word"), i(1))]), "? word word word word word word word word word word word word word word word word\n  word word word word word word word word word word word word word word\n: 1\n"),
            (m(vec![(s("a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a "), i(1))]), "'a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a ': 1\n"),
        ];
        check(to_yaml, table);
    }

    /// None, booleans, integers of all sizes and floats.
    #[test]
    fn scalar_values_in_maps() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(s("k"), N)]), "k: null\n"),
            (m(vec![(s("k"), T)]), "k: true\n"),
            (m(vec![(s("k"), F)]), "k: false\n"),
            (m(vec![(s("k"), i(0))]), "k: 0\n"),
            (m(vec![(s("k"), i(-1))]), "k: -1\n"),
            (m(vec![(s("k"), i(123))]), "k: 123\n"),
            (m(vec![(s("k"), Value::UInt(9223372036854775808))]), "k: 9223372036854775808\n"),
            (m(vec![(s("k"), big(&[1, 0, 0, 0, 0, 0, 0, 0, 0]))]), "k: 18446744073709551616\n"),
            (m(vec![(s("k"), big(&[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))]), "k: 1267650600228229401496703205376\n"),
            (m(vec![(s("k"), f(1.0))]), "k: 1.0\n"),
            (m(vec![(s("k"), f(-1.5))]), "k: -1.5\n"),
            (m(vec![(s("k"), f(1e+16))]), "k: 1e+16\n"),
            (m(vec![(s("k"), f(1e-05))]), "k: 1e-05\n"),
            (m(vec![(s("k"), f(0.1))]), "k: 0.1\n"),
            (m(vec![(s("k"), f(f64::INFINITY))]), "k: .inf\n"),
            (m(vec![(s("k"), f(f64::NEG_INFINITY))]), "k: -.inf\n"),
            (m(vec![(s("k"), f(f64::NAN))]), "k: .nan\n"),
            (m(vec![(s("k"), f(-0.0))]), "k: -0.0\n"),
            (m(vec![(s("k"), f(1e+100))]), "k: 1e+100\n"),
            (m(vec![(s("k"), f(123456.789))]), "k: 123456.789\n"),
            (a(vec![N, T, F, i(0), i(-1), i(123), Value::UInt(9223372036854775808), big(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), big(&[16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), f(1.0), f(-1.5), f(1e+16), f(1e-05), f(0.1), f(f64::INFINITY), f(f64::NEG_INFINITY), f(f64::NAN), f(-0.0), f(1e+100), f(123456.789)]), "- null\n- true\n- false\n- 0\n- -1\n- 123\n- 9223372036854775808\n- 18446744073709551616\n- 1267650600228229401496703205376\n- 1.0\n- -1.5\n- 1e+16\n- 1e-05\n- 0.1\n- .inf\n- -.inf\n- .nan\n- -0.0\n- 1e+100\n- 123456.789\n"),
        ];
        check(to_yaml, table);
    }

    /// `!bin` for ASCII, `!hex` below 33 bytes, `!!binary` otherwise.
    #[test]
    fn bytes_values() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(s("k"), b(b""))]), "k: !bin\n"),
            (m(vec![(s("k"), b(b"hi"))]), "k: !bin hi\n"),
            (m(vec![(s("k"), b(b"hello world"))]), "k: !bin hello world\n"),
            (m(vec![(s("k"), b(b"a\x00b"))]), "k: !bin \"a\\0b\"\n"),
            (m(vec![(s("k"), b(b"\x7f"))]), "k: !bin \"\\x7F\"\n"),
            (m(vec![(s("k"), b(b"\x80"))]), "k: !hex 80\n"),
            (m(vec![(s("k"), b(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"))]), "k: !hex ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff\n"),
            (m(vec![(s("k"), b(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"))]), "k: !!binary |\n  ////////////////////////////////////////////\n"),
            (m(vec![(s("k"), b(b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\x7f\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab\xac\xad\xae\xaf\xb0\xb1\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xbb\xbc\xbd\xbe\xbf\xc0\xc1\xc2\xc3\xc4\xc5\xc6\xc7\xc8\xc9\xca\xcb\xcc\xcd\xce\xcf\xd0\xd1\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xdb\xdc\xdd\xde\xdf\xe0\xe1\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xeb\xec\xed\xee\xef\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff"))]), "k: !!binary |\n  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\n  OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3Bx\n  cnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmq\n  q6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj\n  5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w==\n"),
            (m(vec![(s("k"), b(b"a\x0ab"))]), "k: !bin \"a\\nb\"\n"),
            (m(vec![(s("k"), b(b"it's"))]), "k: !bin it's\n"),
            (m(vec![(s("k"), b(b" "))]), "k: !bin ' '\n"),
            (m(vec![(s("k"), b(b"123"))]), "k: !bin 123\n"),
            (m(vec![(s("k"), b(b"true"))]), "k: !bin true\n"),
            (m(vec![(s("k"), b(b"#x"))]), "k: !bin '#x'\n"),
            (m(vec![(s("k"), b(b"\x99\x00"))]), "k: !hex 99:00\n"),
            (m(vec![(s("k"), b(b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))]), "k: !bin xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"),
            (a(vec![b(b""), b(b"hi"), b(b"hello world"), b(b"a\x00b"), b(b"\x7f"), b(b"\x80"), b(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), b(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), b(b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\x7f\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab\xac\xad\xae\xaf\xb0\xb1\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xbb\xbc\xbd\xbe\xbf\xc0\xc1\xc2\xc3\xc4\xc5\xc6\xc7\xc8\xc9\xca\xcb\xcc\xcd\xce\xcf\xd0\xd1\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xdb\xdc\xdd\xde\xdf\xe0\xe1\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xeb\xec\xed\xee\xef\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff")]), "- !bin\n- !bin hi\n- !bin hello world\n- !bin \"a\\0b\"\n- !bin \"\\x7F\"\n- !hex 80\n- !hex ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff\n- !!binary |\n  ////////////////////////////////////////////\n- !!binary |\n  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\n  OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdoaWprbG1ub3Bx\n  cnN0dXZ3eHl6e3x9fn+AgYKDhIWGh4iJiouMjY6PkJGSk5SVlpeYmZqbnJ2en6ChoqOkpaanqKmq\n  q6ytrq+wsbKztLW2t7i5uru8vb6/wMHCw8TFxsfIycrLzM3Oz9DR0tPU1dbX2Nna29zd3t/g4eLj\n  5OXm5+jp6uvs7e7v8PHy8/T19vf4+fr7/P3+/w==\n"),
            (m(vec![(b(b""), i(1))]), "!bin '': 1\n"),
            (m(vec![(b(b"hi"), i(1))]), "!bin hi: 1\n"),
            (m(vec![(b(b"hello world"), i(1))]), "!bin hello world: 1\n"),
            (m(vec![(b(b"a\x00b"), i(1))]), "!bin \"a\\0b\": 1\n"),
            (m(vec![(b(b"\x7f"), i(1))]), "!bin \"\\x7F\": 1\n"),
            (m(vec![(b(b"\x80"), i(1))]), "!hex 80: 1\n"),
            (m(vec![(b(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), i(1))]), "!hex ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff:ff: 1\n"),
            (m(vec![(b(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), i(1))]), "? !!binary |\n  ////////////////////////////////////////////\n: 1\n"),
        ];
        check(to_yaml, table);
    }

    /// Paths print as `!P` plus their canonical text.
    #[test]
    fn paths_are_tagged() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(s("path"), p(vec![]))]), "path: !P ':'\n"),
            (m(vec![(s("path"), p(vec![s("a"), s("b")]))]), "path: !P a.b\n"),
            (m(vec![(s("path"), p(vec![N, s("auth")]))]), "path: !P :n.auth\n"),
            (m(vec![(s("path"), p(vec![s("a b")]))]), "path: !P a:_b\n"),
            (m(vec![(s("path"), p(vec![i(1), i(2)]))]), "path: !P :1:2\n"),
            (m(vec![(s("path"), p(vec![s("a b")]))]), "path: !P a:_b\n"),
            (m(vec![(s("path"), p(vec![s("x"), s("yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy")]))]), "path: !P x.yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n"),
            (m(vec![(s("path"), p(vec![s("")]))]), "path: !P :e\n"),
            (m(vec![(s("path"), p(vec![T]))]), "path: !P :t\n"),
            (m(vec![(s("path"), p(vec![b(b"\x99")]))]), "path: !P :y99\n"),
            (m(vec![(s("path"), p(vec![s("#a")]))]), "path: !P '#a'\n"),
            (m(vec![(s("path"), p(vec![s("- a")]))]), "path: !P -:_a\n"),
            (m(vec![(s("path"), p(vec![N]))]), "path: !P :n\n"),
            (m(vec![(s("path"), p(vec![s("a\nb")]))]), "path: !P \"a\\nb\"\n"),
            (m(vec![(s("path"), p(vec![s("one"), s("two"), s("three")]))]), "path: !P one.two.three\n"),
            (m(vec![(s("path"), p(vec![a(vec![i(1), i(2)]), s("x")]))]), "path: !P :1,2.x\n"),
            (m(vec![(s("path"), p(vec![s("it's")]))]), "path: !P it's\n"),
            (m(vec![(s("path"), p(vec![f(1.5)]))]), "path: !P :1:.5\n"),
            (m(vec![(s("path"), p(vec![s("a"), s("x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x ")]))]), "path: !P a.x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_\n"),
            (a(vec![p(vec![]), p(vec![s("a"), s("b")]), p(vec![N, s("auth")]), p(vec![s("a b")]), p(vec![i(1), i(2)]), p(vec![s("a b")]), p(vec![s("x"), s("yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy")]), p(vec![s("")]), p(vec![T]), p(vec![b(b"\x99")]), p(vec![s("#a")]), p(vec![s("- a")]), p(vec![N]), p(vec![s("a\nb")]), p(vec![s("one"), s("two"), s("three")]), p(vec![a(vec![i(1), i(2)]), s("x")]), p(vec![s("it's")]), p(vec![f(1.5)]), p(vec![s("a"), s("x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x ")])]), "- !P ':'\n- !P a.b\n- !P :n.auth\n- !P a:_b\n- !P :1:2\n- !P a:_b\n- !P x.yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n- !P :e\n- !P :t\n- !P :y99\n- !P '#a'\n- !P -:_a\n- !P :n\n- !P \"a\\nb\"\n- !P one.two.three\n- !P :1,2.x\n- !P it's\n- !P :1:.5\n- !P a.x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_x:_\n"),
            (m(vec![(p(vec![]), i(1))]), "!P ':': 1\n"),
            (m(vec![(p(vec![s("a"), s("b")]), i(1))]), "!P a.b: 1\n"),
            (m(vec![(p(vec![N, s("auth")]), i(1))]), "!P :n.auth: 1\n"),
            (m(vec![(p(vec![s("a b")]), i(1))]), "!P a:_b: 1\n"),
            (m(vec![(p(vec![i(1), i(2)]), i(1))]), "!P :1:2: 1\n"),
            (m(vec![(p(vec![s("a b")]), i(1))]), "!P a:_b: 1\n"),
        ];
        check(to_yaml, table);
    }

    /// Block style throughout; `[]`/`{}` for empty collections.
    #[test]
    fn nested_collections_block_style() {
        #[rustfmt::skip]
        let table = vec![
            (a(vec![]), "[]\n"),
            (m(vec![]), "{}\n"),
            (a(vec![]), "[]\n"),
            (a(vec![i(1)]), "- 1\n"),
            (a(vec![a(vec![i(1)])]), "- - 1\n"),
            (a(vec![a(vec![i(1), a(vec![i(2), a(vec![])])])]), "- - 1\n  - - 2\n    - []\n"),
            (a(vec![m(vec![])]), "- {}\n"),
            (a(vec![a(vec![])]), "- []\n"),
            (a(vec![m(vec![(s("a"), i(1))])]), "- a: 1\n"),
            (a(vec![m(vec![(s("a"), i(1)), (s("b"), a(vec![i(1), i(2)]))])]), "- a: 1\n  b:\n  - 1\n  - 2\n"),
            (m(vec![(s("a"), a(vec![]))]), "a: []\n"),
            (m(vec![(s("a"), m(vec![]))]), "a: {}\n"),
            (m(vec![(s("a"), m(vec![(s("b"), m(vec![(s("c"), i(1))]))]))]), "a:\n  b:\n    c: 1\n"),
            (m(vec![(s("a"), a(vec![a(vec![i(1), i(2)]), a(vec![i(3)])]))]), "a:\n- - 1\n  - 2\n- - 3\n"),
            (a(vec![a(vec![m(vec![(s("a"), i(1))])])]), "- - a: 1\n"),
            (a(vec![a(vec![a(vec![s("x")])])]), "- - - x\n"),
            (m(vec![(s("path"), a(vec![s("four")]))]), "path:\n- four\n"),
            (a(vec![a(vec![a(vec![a(vec![i(1)])])])]), "- - - - 1\n"),
            (m(vec![(s("a"), a(vec![m(vec![(s("b"), a(vec![m(vec![(s("c"), i(1))])]))])]))]), "a:\n- b:\n  - c: 1\n"),
            (a(vec![m(vec![(s("a"), a(vec![i(1)])), (s("b"), m(vec![(s("c"), a(vec![]))]))]), a(vec![]), m(vec![])]), "- a:\n  - 1\n  b:\n    c: []\n- []\n- {}\n"),
            (m(vec![(s("a"), a(vec![m(vec![])])), (s("b"), a(vec![a(vec![])]))]), "a:\n- {}\nb:\n- []\n"),
            (a(vec![m(vec![(s("x"), m(vec![(s("y"), m(vec![]))]))])]), "- x:\n    y: {}\n"),
        ];
        check(to_yaml, table);
    }

    /// `sorted(dict.items())`, falling back to insertion order on TypeError.
    #[test]
    fn map_keys_sorted_and_non_string_keys() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(i(1), s("a")), (i(2), s("b"))]), "1: a\n2: b\n"),
            (m(vec![(i(2), s("b")), (i(1), s("a"))]), "1: a\n2: b\n"),
            (m(vec![(s("b"), i(1)), (s("a"), i(2))]), "a: 2\nb: 1\n"),
            (m(vec![(s("b"), i(1)), (i(1), i(2))]), "b: 1\n1: 2\n"),
            (m(vec![(N, i(1))]), "null: 1\n"),
            (m(vec![(N, i(1)), (s("a"), i(2))]), "null: 1\na: 2\n"),
            (m(vec![(T, i(1)), (i(0), i(2))]), "0: 2\ntrue: 1\n"),
            (m(vec![(f(1.5), i(1)), (i(1), i(2))]), "1: 2\n1.5: 1\n"),
            (m(vec![(i(-1), i(1)), (f(2.5), i(2)), (F, i(3))]), "-1: 1\nfalse: 3\n2.5: 2\n"),
            (m(vec![(big(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), i(1)), (i(3), i(2))]), "3: 2\n18446744073709551616: 1\n"),
            (m(vec![(a(vec![i(1), i(2)]), i(3))]), "? - 1\n  - 2\n: 3\n"),
            (m(vec![(a(vec![]), i(1))]), "[]\n: 1\n"),
            (m(vec![(a(vec![i(1), i(2)]), i(1)), (a(vec![i(1)]), i(2))]), "? - 1\n: 2\n? - 1\n  - 2\n: 1\n"),
            (m(vec![(a(vec![i(1), s("a")]), i(1)), (a(vec![i(1), i(2)]), i(2))]), "? - 1\n  - a\n: 1\n? - 1\n  - 2\n: 2\n"),
            (m(vec![(a(vec![i(2), s("a")]), i(1)), (a(vec![i(1), s("b")]), i(2))]), "? - 1\n  - b\n: 2\n? - 2\n  - a\n: 1\n"),
            (m(vec![(p(vec![s("a"), s("b")]), i(1)), (p(vec![s("a")]), i(2))]), "!P a: 2\n!P a.b: 1\n"),
            (m(vec![(p(vec![s("b")]), i(1)), (a(vec![s("a")]), i(2))]), "? - a\n: 2\n!P b: 1\n"),
            (m(vec![(p(vec![]), i(1))]), "!P ':': 1\n"),
            (m(vec![(b(b"b"), i(1)), (b(b"a"), i(2))]), "!bin a: 2\n!bin b: 1\n"),
            (m(vec![(b(b"b"), i(1)), (s("a"), i(2))]), "!bin b: 1\na: 2\n"),
            (m(vec![(b(b"\x99"), i(1))]), "!hex 99: 1\n"),
            (m(vec![(s(""), i(1))]), "'': 1\n"),
            (m(vec![(s(" a"), i(1))]), "' a': 1\n"),
            (m(vec![(s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), i(1))]), "? xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n: 1\n"),
            (m(vec![(s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), i(1))]), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: 1\n"),
            (m(vec![(s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), i(1))]), "? xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n: 1\n"),
            (m(vec![(s("éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé"), i(1))]), "? éééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé\n: 1\n"),
            (m(vec![(s("123"), i(1))]), "'123': 1\n"),
            (m(vec![(s("a b"), m(vec![(s("c d"), i(1))]))]), "a b:\n  c d: 1\n"),
            (m(vec![(s("it's"), i(1))]), "it's: 1\n"),
            (m(vec![(s("#"), i(1))]), "'#': 1\n"),
            (m(vec![(s("z"), i(1)), (s("é"), i(2)), (s("Z"), i(3)), (s("a"), i(4)), (s("_"), i(5)), (s("1"), i(6)), (s("😀"), i(7)), (s("\u{ffff}"), i(8))]), "'1': 6\nZ: 3\n_: 5\na: 4\nz: 1\né: 2\n\"\\uFFFF\": 8\n😀: 7\n"),
            (m(vec![(p(vec![s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")]), i(1))]), "? !P xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n: 1\n"),
            (m(vec![(b(b"\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99"), i(1))]), "? !!binary |\n  mZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmQ==\n: 1\n"),
            (m(vec![(a(vec![i(1), a(vec![i(2), i(3)])]), i(1))]), "? - 1\n  - - 2\n    - 3\n: 1\n"),
            (m(vec![(a(vec![a(vec![i(1), i(2)])]), s("v"))]), "? - - 1\n    - 2\n: v\n"),
            (m(vec![(s("k"), m(vec![(a(vec![i(1)]), a(vec![i(1)]))]))]), "k:\n  ? - 1\n  : - 1\n"),
            (m(vec![(f(f64::NAN), i(1)), (i(1), i(2))]), ".nan: 1\n1: 2\n"),
            (m(vec![(s("a"), i(1)), (s("b"), m(vec![(s("d"), i(1)), (s("c"), i(2))]))]), "a: 1\nb:\n  c: 2\n  d: 1\n"),
            (m(vec![(p(vec![s("a"), s("b")]), m(vec![(s("x"), i(1))])), (p(vec![s("a")]), a(vec![i(1)]))]), "!P a:\n- 1\n!P a.b:\n  x: 1\n"),
            (m(vec![(s("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"), a(vec![i(1)])), (s("c"), m(vec![(s("d"), i(2))]))]), "? bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n: - 1\nc:\n  d: 2\n"),
        ];
        check(to_yaml, table);
    }

    /// Shapes seen in DistKV command output.
    #[test]
    fn distkv_transcript_examples() {
        #[rustfmt::skip]
        let table = vec![
            (m(vec![(s("chain"), m(vec![(s("node"), s("n1")), (s("prev"), N), (s("tick"), i(2))])), (s("seq"), i(2)), (s("tock"), i(61)), (s("value"), i(123))]), "chain:\n  node: n1\n  prev: null\n  tick: 2\nseq: 2\ntock: 61\nvalue: 123\n"),
            (m(vec![(s("value"), i(123)), (s("tock"), i(61)), (s("seq"), i(2)), (s("chain"), m(vec![(s("tick"), i(2)), (s("prev"), N), (s("node"), s("n1"))]))]), "chain:\n  node: n1\n  prev: null\n  tick: 2\nseq: 2\ntock: 61\nvalue: 123\n"),
            (m(vec![(s("path"), p(vec![])), (s("value"), m(vec![(s("known"), m(vec![(s("n1"), a(vec![i(4), a(vec![i(6), i(10)])]))]))]))]), "path: !P ':'\nvalue:\n  known:\n    n1:\n    - 4\n    - - 6\n      - 10\n"),
            (m(vec![(s("path"), p(vec![s("one"), s("two"), s("three")])), (s("value"), s("x"))]), "path: !P one.two.three\nvalue: x\n"),
            (m(vec![(s("path"), a(vec![s("four")])), (s("depth"), i(1))]), "depth: 1\npath:\n- four\n"),
            (a(vec![m(vec![(p(vec![s("one"), s("two")]), m(vec![(s("chain"), m(vec![(s("node"), s("n1")), (s("prev"), N), (s("tick"), i(1))])), (s("value"), i(1))]))])]), "- !P one.two:\n    chain:\n      node: n1\n      prev: null\n      tick: 1\n    value: 1\n"),
            (m(vec![(s("known"), m(vec![(s("n1"), a(vec![i(4), a(vec![i(6), i(10)])])), (s("n2"), a(vec![a(vec![i(1), i(3)])]))])), (s("deleted"), m(vec![])), (s("tock"), i(5))]), "deleted: {}\nknown:\n  n1:\n  - 4\n  - - 6\n    - 10\n  n2:\n  - - 1\n    - 3\ntock: 5\n"),
        ];
        check(to_yaml, table);
    }

    /// `yprint`'s special cases for bare top-level values.
    #[test]
    fn top_level_like_yprint() {
        #[rustfmt::skip]
        let table = vec![
            (N, "null\n...\n"),
            (i(1), "1\n"),
            (i(-5), "-5\n"),
            (i(0), "0\n"),
            (big(&[64, 0, 0, 0, 0, 0, 0, 0, 0]), "1180591620717411303424\n"),
            (T, "True\n"),
            (F, "False\n"),
            (f(1.5), "1.5\n"),
            (f(1e+16), "1e+16\n"),
            (f(f64::INFINITY), "inf\n"),
            (f(f64::NAN), "nan\n"),
            (f(-0.0), "-0.0\n"),
            (s("hello"), "'hello'\n"),
            (s("it's"), "\"it's\"\n"),
            (s("a\nb"), "'a\\nb'\n"),
            (s(""), "''\n"),
            (b(b"hi"), "b'hi'\n"),
            (b(b"\x99"), "b'\\x99'\n"),
            (b(b""), "b''\n"),
            (p(vec![]), "!P ':'\n"),
            (p(vec![s("a"), s("b")]), "!P a.b\n...\n"),
            (p(vec![s("#")]), "!P '#'\n"),
            (a(vec![]), "[]\n"),
            (m(vec![]), "{}\n"),
            (a(vec![i(1)]), "- 1\n"),
            (m(vec![(s("a"), i(1))]), "a: 1\n"),
            (a(vec![i(1), i(2)]), "- 1\n- 2\n"),
            (m(vec![(s("a"), s("b\n"))]), "a: |\n  b\n"),
        ];
        check(top_level, table);
    }

    /// A scalar document, with the `...` end marker after plain scalars.
    #[test]
    fn to_yaml_of_bare_scalars() {
        #[rustfmt::skip]
        let table = vec![
            (N, "null\n...\n"),
            (i(1), "1\n...\n"),
            (T, "true\n...\n"),
            (f(1.5), "1.5\n...\n"),
            (s("hello"), "hello\n...\n"),
            (s(""), "''\n"),
            (s("123"), "'123'\n"),
            (s("a\nb"), "|-\na\nb\n"),
            (s("a\n"), "|\na\n"),
            (s("a\n\n"), "|+\na\n\n...\n"),
            (s(" a\nb"), "|2-\n   a\n  b\n"),
            (s("---\nb"), "|-\n---\nb\n"),
            (s("a\n---\nb"), "|-\n  a\n  ---\n  b\n"),
            (s("a\n--- b"), "|-\n  a\n  --- b\n"),
            (s("a\n---"), "|-\na\n---\n"),
            (s("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx y"), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\ny\n...\n"),
            (s("a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a "), "'a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a\na a a a a a a a a a a a a a a a a a a '\n"),
            (b(b"hi"), "!bin hi\n...\n"),
            (b(b"\x99"), "!hex 99\n...\n"),
            (b(b"\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99\x99"), "!!binary |\nmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmQ==\n"),
            (p(vec![]), "!P ':'\n"),
            (p(vec![s("a"), s("b")]), "!P a.b\n...\n"),
            (p(vec![s("#")]), "!P '#'\n"),
        ];
        check(to_yaml, table);
    }

    #[test]
    fn extension_values_get_a_local_tag() {
        // Python's safe dumper cannot represent msgpack ExtType at all.
        let v = m(vec![(s("x"), Value::Ext(5, Arc::from(&b"ab"[..])))]);
        assert_eq!(to_yaml(&v), "x: !ext 5:6162\n");
    }

    #[test]
    fn base64_lines_match_python_encodebytes() {
        assert_eq!(base64_lines(b""), "");
        assert_eq!(base64_lines(b"a"), "YQ==\n");
        assert_eq!(base64_lines(b"ab"), "YWI=\n");
        assert_eq!(base64_lines(b"abc"), "YWJj\n");
        let long: Vec<u8> = (0..=255).collect();
        let text = base64_lines(&long);
        assert!(text.lines().all(|l| l.len() <= 76));
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn plain_resolution_follows_yaml_1_2() {
        for (text, tag) in [
            ("", Tag::Null),
            ("~", Tag::Null),
            ("null", Tag::Null),
            ("true", Tag::Bool),
            ("FALSE", Tag::Bool),
            ("yes", Tag::Str),
            ("1", Tag::Int),
            ("-0x1F", Tag::Int),
            ("0o17", Tag::Int),
            ("_", Tag::Str),
            ("-_", Tag::Int),
            ("1.5", Tag::Float),
            ("1e5", Tag::Float),
            (".5e+1", Tag::Float),
            (".5e1", Tag::Str),
            ("-.inf", Tag::Float),
            ("-.nan", Tag::Str),
            ("2001-01-01", Tag::OtherCore),
            ("2001-1-1t1:00:00.5 +01:00", Tag::OtherCore),
            ("2001-1-1 1:00", Tag::Str),
            ("<<", Tag::OtherCore),
            ("=", Tag::OtherCore),
        ] {
            assert_eq!(resolve_plain(text), tag, "{text:?}");
        }
    }

    #[test]
    fn unsortable_keys_keep_insertion_order() {
        let v = m(vec![(s("b"), i(1)), (N, i(2)), (i(1), i(3))]);
        assert_eq!(to_yaml(&v), "b: 1\nnull: 2\n1: 3\n");
        let v = m(vec![(s("b"), i(1)), (s("a"), i(2))]);
        assert_eq!(to_yaml(&v), "a: 2\nb: 1\n");
    }

    #[test]
    fn odd_inputs_never_panic() {
        let mut deep = i(1);
        for k in 0..200 {
            deep = if k % 2 == 0 {
                a(vec![deep])
            } else {
                m(vec![(i(k), deep)])
            };
        }
        assert!(to_yaml(&deep).ends_with("1\n"));
        let chars: String = (0u32..0x3000)
            .step_by(7)
            .filter_map(char::from_u32)
            .collect();
        for text in [
            chars.as_str(),
            "\u{85}\u{2028}\u{2029}",
            " \n \n ",
            "\n\n\n",
            "'\"\\",
        ] {
            for v in [
                s(text),
                m(vec![(s(text), s(text))]),
                a(vec![s(text)]),
                p(vec![s(text)]),
            ] {
                let _ = to_yaml(&v);
                let _ = top_level(&v);
            }
        }
        let nan_keys = m(vec![
            (f(f64::NAN), i(1)),
            (f(1.0), i(2)),
            (f(f64::NAN), i(3)),
            (i(0), i(4)),
        ]);
        let _ = to_yaml(&nan_keys);
        let huge = m(vec![(big(&[1; 40]), i(1)), (f(1e300), i(2)), (i(-1), i(3))]);
        assert_eq!(to_yaml(&huge).lines().next(), Some("-1: 3"));
    }

    /// `analyze` as it was written first, indexing a vector of the
    /// text's characters as ruyaml indexes its string: the model the
    /// single walk is held to.
    fn analyze_indexed(scalar: &str) -> Analysis {
        if scalar.is_empty() {
            return Analysis {
                empty: true,
                multiline: false,
                allow_flow_plain: false,
                allow_block_plain: true,
                allow_single_quoted: true,
                allow_double_quoted: true,
            };
        }
        let c: Vec<char> = scalar.chars().collect();
        let mut block_indicators = false;
        let mut flow_indicators = false;
        let mut line_breaks = false;
        let mut special_characters = false;
        let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
            (false, false, false, false);
        let (mut break_space, mut space_break) = (false, false);

        if scalar.starts_with("---") || scalar.starts_with("...") {
            block_indicators = true;
            flow_indicators = true;
        }
        let mut preceded_by_whitespace = true;
        let mut followed_by_whitespace = c.len() == 1 || is_space_or_break(c[1]);
        let (mut previous_space, mut previous_break) = (false, false);

        for (index, &ch) in c.iter().enumerate() {
            if index == 0 {
                if matches!(
                    ch,
                    '#' | ','
                        | '['
                        | ']'
                        | '{'
                        | '}'
                        | '&'
                        | '*'
                        | '!'
                        | '|'
                        | '>'
                        | '\''
                        | '"'
                        | '%'
                        | '@'
                        | '`'
                ) {
                    flow_indicators = true;
                    block_indicators = true;
                }
                if ch == '?' || ch == ':' {
                    if c.len() == 1 {
                        flow_indicators = true;
                    }
                    if followed_by_whitespace {
                        block_indicators = true;
                    }
                }
                if ch == '-' && followed_by_whitespace {
                    flow_indicators = true;
                    block_indicators = true;
                }
            } else {
                if matches!(ch, ',' | '[' | ']' | '{' | '}') {
                    flow_indicators = true;
                }
                if ch == ':' && followed_by_whitespace {
                    flow_indicators = true;
                    block_indicators = true;
                }
                if ch == '#' && preceded_by_whitespace {
                    flow_indicators = true;
                    block_indicators = true;
                }
            }
            if is_break(ch) {
                line_breaks = true;
            }
            if !(ch == '\n' || ('\x20'..='\x7e').contains(&ch)) {
                let unicode = (ch == '\u{85}'
                    || ('\u{a0}'..='\u{d7ff}').contains(&ch)
                    || ('\u{e000}'..='\u{fffd}').contains(&ch)
                    || ch >= '\u{10000}')
                    && ch != '\u{feff}';
                if !unicode {
                    special_characters = true;
                }
            }
            if ch == ' ' {
                if index == 0 {
                    leading_space = true;
                }
                if index == c.len() - 1 {
                    trailing_space = true;
                }
                if previous_break {
                    break_space = true;
                }
                previous_space = true;
                previous_break = false;
            } else if is_break(ch) {
                if index == 0 {
                    leading_break = true;
                }
                if index == c.len() - 1 {
                    trailing_break = true;
                }
                if previous_space {
                    space_break = true;
                }
                previous_space = false;
                previous_break = true;
            } else {
                previous_space = false;
                previous_break = false;
            }
            preceded_by_whitespace = is_space_or_break(ch);
            followed_by_whitespace = index + 2 >= c.len() || is_space_or_break(c[index + 2]);
        }

        let mut a = Analysis {
            empty: false,
            multiline: line_breaks,
            allow_flow_plain: true,
            allow_block_plain: true,
            allow_single_quoted: true,
            allow_double_quoted: true,
        };
        if leading_space || leading_break || trailing_space || trailing_break {
            a.allow_flow_plain = false;
            a.allow_block_plain = false;
        }
        if break_space {
            a.allow_flow_plain = false;
            a.allow_block_plain = false;
            a.allow_single_quoted = false;
        }
        if special_characters || space_break {
            a.allow_flow_plain = false;
            a.allow_block_plain = false;
            a.allow_single_quoted = false;
        }
        if line_breaks {
            a.allow_flow_plain = false;
            a.allow_block_plain = false;
        }
        if flow_indicators {
            a.allow_flow_plain = false;
        }
        if block_indicators {
            a.allow_block_plain = false;
        }
        a
    }

    /// The single walk of `analyze` finds what the indexed one finds, on
    /// texts built from the characters the rules look at (indicators,
    /// spaces, breaks, special and wide characters), at every position,
    /// and on those texts with a byte changed (kept where still UTF-8).
    #[test]
    fn analysis_in_one_walk_is_the_indexed_one() {
        let alphabet: Vec<char> =
            "ab1-?:#,[]{}&*!|>'\"%@` \t\r\n.\u{85}\u{a0}\u{2028}\u{feff}\u{7f}\u{1}é日\u{10000}\0"
                .chars()
                .collect();
        let mut rng = 0x5eed_a11a_u64;
        let mut below = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut seen = std::collections::HashSet::new();
        for case in 0..40_000 {
            let len = below(7);
            let mut text: String = (0..len).map(|_| alphabet[below(alphabet.len())]).collect();
            if case % 4 == 0 {
                text.insert_str(0, ["---", "...", "--", "-- "][below(4)]);
            }
            let mut bytes = text.clone().into_bytes();
            if !bytes.is_empty() {
                let at = below(bytes.len());
                bytes[at] = below(256) as u8;
            }
            let changed = String::from_utf8(bytes).ok();
            for t in std::iter::once(&text).chain(changed.as_ref()) {
                let want = analyze_indexed(t);
                seen.insert(format!("{want:?}"));
                assert_eq!(analyze(t), want, "{t:?}");
            }
        }
        // The texts reached many different outcomes.
        assert!(seen.len() >= 8, "{seen:?}");
    }

    /// `write_list_line` prints what `top_level` prints for the same line,
    /// on every combination of many paths and values: plain and quoted
    /// texts, lines just below and beyond the folding width, keys just
    /// below and beyond the simple-key length, tags, nested values.
    #[test]
    fn list_lines_match_the_emitter() {
        let long = |n: usize| "word ".repeat(n / 5) + &"x".repeat(n % 5);
        let texts: Vec<String> = [
            "a",
            "hello world",
            "123",
            "1.5",
            "null",
            "true",
            "",
            " x",
            "x ",
            "a: b",
            "a:b",
            "#x",
            "x #y",
            "- x",
            "-x",
            "é",
            "日本語 テキスト",
            "x\ny",
            "'q'",
            "\"q\"",
            "~",
            "2001-12-14",
            "<<",
            "?",
            ":",
            "*",
            "a,b",
            "[x]",
            "\u{7f}",
            "\u{feff}x",
            "...",
            "---",
        ]
        .iter()
        .map(|t| t.to_string())
        .chain((55..=85).map(long))
        .chain([125, 126, 127, 128].map(|n| "k".repeat(n)))
        .collect();
        let mut elements: Vec<V> = texts.iter().map(|t| s(t)).collect();
        elements.extend([
            i(0),
            i(-7),
            i(1 << 40),
            V::uint(u64::MAX),
            f(1.5),
            f(-0.0),
            f(f64::NAN),
            T,
            F,
            N,
            b(b"bin"),
            b(&[0, 255]),
            V::Array(vec![i(1), s("x")]),
            V::Array(vec![]),
        ]);
        let mut values: Vec<V> = elements.clone();
        values.extend([
            f(1e300),
            f(f64::INFINITY),
            b(&[7; 40]),
            b(b""),
            V::map([("one", i(1)), ("two", s("x y"))]),
            V::Map(vec![]),
            V::Array(vec![N, s("x")]),
            V::Path(Path::new(vec![s("a"), i(1)])),
            V::Ext(5, Arc::from(&b"\x01"[..])),
        ]);
        let paths: Vec<Vec<V>> = std::iter::once(vec![])
            .chain(elements.iter().map(|e| vec![e.clone()]))
            .chain(elements.iter().map(|e| vec![s("top"), e.clone(), i(3)]))
            .collect();
        let mut line = String::new();
        for path in &paths {
            let p = Path::new(path.clone());
            let text = p.to_string();
            for v in values.iter().map(Some).chain([None]) {
                let item = match v {
                    None => V::Path(p.clone()),
                    Some(v) => V::Map(vec![(V::Path(p.clone()), v.clone())]),
                };
                let want = top_level(&V::Array(vec![item]));
                line.clear();
                write_list_line(&mut line, path, &text, v);
                assert_eq!(line, want, "path {text:?}, value {v:?}");
                if let Some(V::Str(value)) = v {
                    line.clear();
                    write_list_line_str(&mut line, path, &text, value);
                    assert_eq!(line, want, "path {text:?}, string {value:?}");
                }
            }
        }
    }
}
