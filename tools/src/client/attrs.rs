//! `-v`/`-e`/`-p NAME VALUE` arguments: moat.util's `attr_args` and
//! `process_args`, which build an entry's new value from its old one.
//!
//! NAME is a path into the value: `:` (the empty path) replaces the whole
//! value, anything else sets a key inside the value, which becomes a map if
//! it is not one. Falsy path elements (`:e`, `:0`, `:n` …) are skipped, as
//! in Python. `-e NAME -` deletes the key, pruning maps it leaves empty.

use distkv_model::{Path, Value};

use super::output::set;
use super::parse_path;
use crate::eval::parse_value;

/// What to do at one NAME.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Set(Value),
    Delete,
}

/// Turns the `-v`, `-e` and `-p` pairs (flattened: name, value, name, …)
/// into edits, in the order Python applies them: all `-v`, then `-e`, then
/// `-p`.
pub fn collect(
    vars: &[String],
    evals: &[String],
    paths: &[String],
) -> Result<Vec<(Path, Attr)>, String> {
    let mut out = Vec::new();
    for (pairs, kind) in [(vars, 'v'), (evals, 'e'), (paths, 'p')] {
        for pair in pairs.chunks(2) {
            let [name, text] = pair else {
                return Err(format!("-{kind} needs a NAME and a VALUE"));
            };
            let name = parse_path(name)?;
            let attr = match (kind, text.as_str()) {
                ('v', t) => Attr::Set(Value::str(t)),
                ('e', "-") => Attr::Delete,
                ('e', "/") => return Err("A slash value doesn't work here.".into()),
                ('e', t) => Attr::Set(parse_value(t).map_err(|e| format!("{e:#}"))?),
                (_, t) => Attr::Set(Value::Path(parse_path(t)?)),
            };
            out.push((name, attr));
        }
    }
    Ok(out)
}

/// Applies the edits to an entry's value (`None`: the entry has none).
/// Returns the new value; `None` (no value and no edits) means "delete".
pub fn apply(mut val: Option<Value>, attrs: &[(Path, Attr)]) -> Option<Value> {
    for (name, attr) in attrs {
        let mut pairs = match val.take() {
            Some(Value::Map(pairs)) => pairs,
            _ => Vec::new(),
        };
        let keys: Vec<&Value> = name.iter().filter(|k| k.truthy()).collect();
        val = Some(match (attr, keys.split_last()) {
            // An empty name replaces the whole value. (Python would merge a
            // map value into the old one, but no argument yields a map.)
            (Attr::Set(v), None) => v.clone(),
            (Attr::Set(v), Some((last, parents))) => {
                update(&mut pairs, parents, last, v.clone());
                Value::Map(pairs)
            }
            (Attr::Delete, None) => Value::Map(pairs),
            (Attr::Delete, Some(_)) => {
                delete(&mut pairs, &keys);
                Value::Map(pairs)
            }
        });
    }
    val
}

/// `val[parents…][last] = v`, creating (or replacing non-map) intermediate
/// maps.
fn update(pairs: &mut Vec<(Value, Value)>, parents: &[&Value], last: &Value, v: Value) {
    let Some((first, rest)) = parents.split_first() else {
        set(pairs, last.clone(), v);
        return;
    };
    let i = match pairs.iter().position(|(k, _)| k == *first) {
        Some(i) => i,
        None => {
            pairs.push(((*first).clone(), Value::Map(Vec::new())));
            pairs.len() - 1
        }
    };
    let slot = &mut pairs[i].1;
    if !matches!(slot, Value::Map(_)) {
        *slot = Value::Map(Vec::new());
    }
    let Value::Map(child) = slot else {
        unreachable!()
    };
    update(child, rest, last, v);
}

/// Removes `val[keys…]`, then every map on the way that became empty. A
/// missing intermediate key leaves everything as it was.
fn delete(pairs: &mut Vec<(Value, Value)>, keys: &[&Value]) {
    let Some((first, rest)) = keys.split_first() else {
        return;
    };
    let Some(i) = pairs.iter().position(|(k, _)| k == *first) else {
        return;
    };
    if rest.is_empty() {
        pairs.remove(i);
        return;
    }
    if let Value::Map(child) = &mut pairs[i].1 {
        delete(child, rest);
        if child.is_empty() {
            pairs.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn edits(vars: &[&str], evals: &[&str], paths: &[&str]) -> Vec<(Path, Attr)> {
        collect(&strings(vars), &strings(evals), &strings(paths)).unwrap()
    }

    fn map(pairs: &[(&str, Value)]) -> Value {
        Value::map(pairs.iter().cloned())
    }

    #[test]
    fn whole_value_and_keys() {
        // `set -e : 123` on a new entry.
        let e = edits(&[], &[":", "123"], &[]);
        assert_eq!(apply(None, &e), Some(Value::Int(123)));
        // `set -v one XXX -e two 2`: -v first, a scalar becomes a map.
        let e = edits(&["one", "XXX"], &["two", "2"], &[]);
        let want = map(&[("one", Value::str("XXX")), ("two", Value::Int(2))]);
        assert_eq!(apply(Some(Value::Int(7)), &e), Some(want.clone()));
        // `set -e one 1` keeps the other key and the key order.
        let e = edits(&[], &["one", "1"], &[]);
        let got = apply(Some(want), &e).unwrap();
        assert_eq!(got, map(&[("one", Value::Int(1)), ("two", Value::Int(2))]));
        // A later `:` replaces everything; a later key starts a new map.
        let e = edits(&[":", "a", "b", "c"], &[], &[]);
        assert_eq!(apply(None, &e), Some(map(&[("b", Value::str("c"))])));
    }

    #[test]
    fn nested_keys_paths_and_deletion() {
        let e = edits(&[], &[], &["x.y", "a.b"]);
        let got = apply(None, &e).unwrap();
        let ab = Value::Path(Path::parse("a.b").unwrap());
        assert_eq!(got, map(&[("x", map(&[("y", ab)]))]));
        // Deleting the only key prunes the emptied map.
        let e = edits(&[], &["x.y", "-"], &[]);
        assert_eq!(apply(Some(got), &e), Some(map(&[])));
        // Deleting a missing key changes nothing.
        let old = map(&[("k", Value::Int(1))]);
        let e = edits(&[], &["q.r", "-"], &[]);
        assert_eq!(apply(Some(old.clone()), &e), Some(old.clone()));
        // Falsy elements are skipped: `:e.k` is `k`.
        let e = edits(&[":e.k", "v"], &[], &[]);
        assert_eq!(apply(Some(old), &e), Some(map(&[("k", Value::str("v"))])));
    }

    #[test]
    fn no_edits_keep_the_value_or_delete() {
        assert_eq!(apply(None, &[]), None);
        assert_eq!(apply(Some(Value::Int(1)), &[]), Some(Value::Int(1)));
    }

    #[test]
    fn bad_arguments_are_reported() {
        let err = |v: &[&str], e: &[&str], p: &[&str]| {
            collect(&strings(v), &strings(e), &strings(p)).unwrap_err()
        };
        assert_eq!(
            err(&[], &["a", "/"], &[]),
            "A slash value doesn't work here."
        );
        assert!(err(&["a..b", "x"], &[], &[]).contains("a..b"), "bad name");
        assert!(!err(&[], &["a", "1 +"], &[]).is_empty(), "bad expression");
        assert!(!err(&[], &[], &["a", "b."]).is_empty(), "bad path value");
    }
}
