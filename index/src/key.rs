//! Index keys: paths in a byte encoding made for prefix scans.
//!
//! [`path_key`] turns a path into bytes such that
//! * two paths get the same bytes exactly when the state machine takes them
//!   for the same entry (DistKV's Python equality: `1`, `1.0` and `True`
//!   are one element; so are `-0.0` and `0`);
//! * the bytes of a path are a prefix of the bytes of every path below it,
//!   and of no other path's: every element's encoding is self-delimiting
//!   (it tells where it ends), and no element encoding starts with `0x00`,
//!   which ends the path;
//! * integers sort numerically and strings bytewise, so a scan lists
//!   siblings in a sensible order (nothing depends on it).
//!
//! Element encodings (tag byte, then):
//!
//! | tag | element | then |
//! |---|---|---|
//! | `01` | nil | — |
//! | `02` | a number equal to an integer (bools, ints, integral floats below 1.7e38) | i128 big-endian, sign bit flipped |
//! | `03` | any other float | f64 bits big-endian (every NaN as one) |
//! | `04` | big integer (msgpack ext 2) | escaped bytes |
//! | `05` | string | escaped UTF-8 |
//! | `06` | bytes | escaped bytes |
//! | `07` | array | its elements, then `00` |
//! | `08` | path | its elements, then `00` |
//! | `09` | map | its (key, value) pairs sorted by their encoding, then `00` |
//! | `0a` | other msgpack extension | type byte, escaped bytes |
//!
//! *Escaped bytes*: every `00` written as `00 ff`, then `00 01` to end.
//! A path is its elements followed by `00`; an event key appends the
//! event's seq as 8 bytes big-endian.

use distkv_log::{LogEntry, PathElement};
use distkv_model::{Path, Value};

/// Ends a path (and an array, path or map element).
const END: u8 = 0x00;

fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The integer a number element equals, as the state machine's equality
/// sees it (`None`: not a number, or a non-integral float).
fn as_integer(v: &Value) -> Option<i128> {
    match *v {
        Value::Bool(b) => Some(b as i128),
        Value::Int(i) => Some(i as i128),
        Value::UInt(u) => Some(u as i128),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1.7e38 => Some(f as i128),
        _ => None,
    }
}

/// Appends the encoding of one element (see the module docs).
pub fn push_element(out: &mut Vec<u8>, v: &Value) {
    if let Some(i) = as_integer(v) {
        out.push(0x02);
        out.extend_from_slice(&((i as u128) ^ (1u128 << 127)).to_be_bytes());
        return;
    }
    match v {
        Value::Nil => out.push(0x01),
        Value::Float(f) => {
            out.push(0x03);
            let bits = if f.is_nan() {
                f64::NAN.to_bits()
            } else {
                f.to_bits()
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Value::BigUint(b) => {
            out.push(0x04);
            escaped(out, b);
        }
        Value::Str(s) => push_str(out, s),
        Value::Bin(b) => {
            out.push(0x06);
            escaped(out, b);
        }
        Value::Array(a) => {
            out.push(0x07);
            a.iter().for_each(|e| push_element(out, e));
            out.push(END);
        }
        Value::Path(p) => {
            out.push(0x08);
            p.iter().for_each(|e| push_element(out, e));
            out.push(END);
        }
        Value::Map(m) => {
            out.push(0x09);
            let mut pairs: Vec<Vec<u8>> = m
                .iter()
                .map(|(k, v)| {
                    let mut b = Vec::new();
                    push_element(&mut b, k);
                    push_element(&mut b, v);
                    b
                })
                .collect();
            pairs.sort();
            pairs.iter().for_each(|p| out.extend_from_slice(p));
            out.push(END);
        }
        Value::Ext(t, b) => {
            out.push(0x0a);
            out.push(*t as u8);
            escaped(out, b);
        }
        // Numbers were handled above.
        Value::Bool(_) | Value::Int(_) | Value::UInt(_) => {}
    }
}

/// Appends the encoding of a string element.
fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(0x05);
    escaped(out, s.as_bytes());
}

/// The bytes every key of `path` and of the paths below it starts with
/// (its elements, without the end mark).
pub fn subtree_prefix(path: &Path) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * path.len() + 9);
    path.iter().for_each(|e| push_element(&mut out, e));
    out
}

/// The encoded path: its elements and the end mark; the prefix of the
/// keys of this entry's events only.
pub fn path_key(path: &Path) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * path.len() + 1);
    push_path_key(&mut out, path);
    out
}

/// Appends [`path_key`]`(path)` to `out`.
pub(crate) fn push_path_key(out: &mut Vec<u8>, path: &Path) {
    path.iter().for_each(|e| push_element(out, e));
    out.push(END);
}

/// Appends the path key of the event an in-memory log record holds, read
/// from the record's bytes: the same bytes as [`push_path_key`] of its
/// path.
pub(crate) fn push_entry_path_key(out: &mut Vec<u8>, entry: &LogEntry<'_>) {
    entry.for_each_path_element(|e| match e {
        PathElement::Str(s) => push_str(out, s),
        PathElement::Value(v) => push_element(out, v),
    });
    out.push(END);
}

/// The key of the event at `seq` on `path`.
pub fn event_key(path: &Path, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * path.len() + 9);
    push_path_key(&mut out, path);
    push_seq(&mut out, seq);
    out
}

/// Appends what ends an event's key after its path key: its seq, 8 bytes
/// big-endian.
pub(crate) fn push_seq(out: &mut Vec<u8>, seq: u64) {
    out.extend_from_slice(&seq.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use distkv_model::path;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn equal_elements_encode_alike_and_different_ones_do_not() {
        let one = [
            Value::Int(1),
            Value::Float(1.0),
            Value::Bool(true),
            Value::UInt(1),
        ];
        for a in &one {
            assert_eq!(
                path_key(&path!["a", a.clone()]),
                path_key(&path!["a", 1u64])
            );
        }
        assert_eq!(path_key(&path![Value::Float(-0.0)]), path_key(&path![0u64]));
        assert_ne!(path_key(&path!["1"]), path_key(&path![1u64]));
        assert_ne!(path_key(&path![Value::Float(1.5)]), path_key(&path![1u64]));
        assert_ne!(path_key(&path![Value::Nil]), path_key(&path![0u64]));
        let m1 = Value::Map(vec![
            (Value::str("x"), Value::Int(1)),
            (Value::str("y"), Value::Nil),
        ]);
        let m2 = Value::Map(vec![
            (Value::str("y"), Value::Nil),
            (Value::str("x"), Value::Float(1.0)),
        ]);
        assert_eq!(path_key(&path![m1]), path_key(&path![m2]));
    }

    #[test]
    fn a_path_key_prefixes_exactly_the_paths_below_it() {
        let a = path!["a"];
        let below = path!["a", "b"];
        let beside = path!["ab"];
        let zero = Value::Bin(Arc::from(&b"a\0"[..]));
        assert!(event_key(&below, 3).starts_with(&subtree_prefix(&a)));
        assert!(!event_key(&beside, 3).starts_with(&subtree_prefix(&a)));
        assert!(!event_key(&below, 3).starts_with(&path_key(&a)));
        assert!(event_key(&a, 3).starts_with(&path_key(&a)));
        let with_zero = path![zero];
        assert!(!event_key(&with_zero, 1)
            .starts_with(&path_key(&path![Value::Bin(Arc::from(&b"a"[..]))])));
    }

    #[test]
    fn integers_sort_numerically() {
        let keys: Vec<Vec<u8>> = [-5i64, -1, 0, 1, 2, 300, i64::MAX]
            .iter()
            .map(|&i| path_key(&path![i]))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    fn element() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-3.0f64..3.0).prop_map(|f| Value::Float((f * 2.0).round() / 2.0)),
            "[a-c\\x00]{0,3}".prop_map(|s| Value::str(&s)),
            proptest::collection::vec(0u8..3, 0..3).prop_map(|b| Value::Bin(Arc::from(b))),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            proptest::collection::vec(inner, 0..3).prop_map(Value::Array)
        })
    }

    proptest! {
        /// Keys are equal exactly when the paths are, and a key prefixes
        /// another's exactly when its path is an ancestor.
        #[test]
        fn keys_follow_path_equality_and_ancestry(
            a in proptest::collection::vec(element(), 0..4),
            b in proptest::collection::vec(element(), 0..4),
        ) {
            let (pa, pb) = (Path::new(a), Path::new(b));
            prop_assert_eq!(pa == pb, path_key(&pa) == path_key(&pb));
            prop_assert_eq!(pb.starts_with(&pa), path_key(&pb).starts_with(&subtree_prefix(&pa)));
        }
    }
}
