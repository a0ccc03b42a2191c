//! Reading data: DistKV's `data_get`, behind `data PATH [get]` and
//! `data PATH list`.
//!
//! * single: the value (`yprint` rules), or `No data at PATH` (exit 1);
//! * recursive, list mode: one `- !P path: value` document per entry;
//! * recursive, dict mode (`-d KEY`): one nested map keyed by path
//!   elements, each value under KEY; with a non-zero max depth, KEY entries
//!   that are `null` are dropped and maps left holding only such an entry
//!   become `null` (DistKV's `simplex`).

use std::collections::HashMap;

use anyhow::anyhow;
use distkv_model::budget::INTERNAL_LIMITS;
use distkv_model::{codec, pathfmt, Path, Value};
use distkv_node::client::{RawItem, Stream, StreamItem, TreeOptions};
use distkv_node::raw;
use distkv_yaml::{write_list_line, write_list_line_str};

use super::output::{add_dates, get_mut, now, raw, take};
use super::{api, Session};

/// How to read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GetOptions {
    pub recursive: bool,
    /// Dict mode, with this key for values.
    pub as_dict: Option<String>,
    /// Negative: no limit.
    pub maxdepth: Option<i64>,
    pub mindepth: Option<i64>,
    /// Include entries without a value.
    pub empty: bool,
    /// Single: print `str(value)`; list mode: print paths only.
    pub raw: bool,
    /// Add `_KEY` timestamps to recursive values.
    pub add_date: bool,
}

/// Which tree a recursive read walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    /// The data tree (`get_tree`).
    Data,
    /// The meta tree (`get_tree_internal`: `acl dump`).
    Internal,
}

pub async fn data_get(s: &mut Session, path: &Path, o: &GetOptions) -> anyhow::Result<()> {
    tree_get(s, path, o, Tree::Data).await
}

/// [`data_get`] on either tree (single reads are of the data tree only).
pub async fn tree_get(
    s: &mut Session,
    path: &Path,
    o: &GetOptions,
    tree: Tree,
) -> anyhow::Result<()> {
    if !o.recursive {
        return get_single(s, path, o.raw).await;
    }
    let opts = TreeOptions {
        nchain: s.nchain(),
        max_depth: o.maxdepth.and_then(|d| u64::try_from(d).ok()),
        min_depth: o
            .mindepth
            .and_then(|d| u64::try_from(d).ok())
            .filter(|d| *d > 0),
        empty: o.empty,
        fetch: false,
    };
    let mut stream = match tree {
        Tree::Data => s.client.get_tree(path, &opts).await,
        Tree::Internal => s.client.get_tree_internal(path, &opts).await,
    }
    .map_err(api)?;
    if !s.meta && o.as_dict.is_none() {
        return list_raw(s, &mut stream, o).await;
    }
    let mut tree = Nested::default();
    while let Some(item) = stream.next().await.map_err(api)? {
        let StreamItem::Data(mut r) = item else {
            continue;
        };
        take(&mut r, "seq");
        let Some(Value::Path(p)) = take(&mut r, "path") else {
            continue;
        };
        if o.add_date {
            if let Some(v) = get_mut(&mut r, "value") {
                add_dates(v, now());
            }
        }
        let entry = if s.meta {
            Some(r)
        } else {
            take(&mut r, "value")
        };
        let entry = entry.or_else(|| o.empty.then_some(Value::Nil));
        match (&o.as_dict, entry) {
            (Some(key), Some(v)) => tree.at(&p).set(Value::str(key), v),
            (Some(_), None) => {
                tree.at(&p);
            }
            (None, _) if o.raw => s.out.yprint(&list_line(p, None))?,
            (None, Some(v)) => s.out.yprint(&list_line(p, Some(v)))?,
            (None, None) => {}
        }
    }
    if let Some(key) = &o.as_dict {
        let mut y = tree.into_value();
        if o.maxdepth.is_some_and(|d| d != 0) {
            y = simplex(y, &Value::str(key));
        }
        s.out.yprint(&y)?;
    }
    Ok(())
}

/// List mode, each line printed from the reply as received (see
/// [`distkv_node::client::Stream::next_raw`]): only the value is decoded,
/// and the path's text is extended by its new elements only.
async fn list_raw(s: &mut Session, stream: &mut Stream, o: &GetOptions) -> anyhow::Result<()> {
    let mut text = PathText::default();
    let mut line = String::new();
    let now = o.add_date.then(now);
    while let Some(item) = stream.next_raw().await.map_err(api)? {
        let RawItem::Data(e) = item else {
            continue;
        };
        // The path first: its text follows every entry, printed or not.
        let sent;
        let (elements, path_text) = match e.path {
            Some(p) => {
                text.update(p.elements, p.kept);
                (p.elements, text.as_str())
            }
            // Not shortened: used as sent if it is a path.
            None => {
                text.clear();
                let Some(Value::Path(p)) = e.msg.path().map(decode).transpose()? else {
                    continue;
                };
                sent = (p.to_string(), p);
                (sent.1.elements(), sent.0.as_str())
            }
        };
        line.clear();
        let string = e.msg.value().filter(|_| !o.raw && now.is_none());
        if let Some(string) = string.and_then(raw::as_str) {
            // A string is written from the reply's bytes, not decoded.
            write_list_line_str(&mut line, elements, path_text, string);
        } else {
            let value = if o.raw {
                None
            } else {
                match e.msg.value() {
                    Some(b) => Some(decode(b)?),
                    None if o.empty => Some(Value::Nil),
                    None => continue,
                }
            };
            let value = value.map(|mut v| {
                if let Some(now) = now {
                    add_dates(&mut v, now);
                }
                v
            });
            write_list_line(&mut line, elements, path_text, value.as_ref());
        }
        s.out.write(line.as_bytes())?;
    }
    Ok(())
}

/// Decodes a field of a reply (it was checked when the reply was read).
fn decode(b: &[u8]) -> anyhow::Result<Value> {
    Ok(codec::decode_with(b, INTERNAL_LIMITS)?)
}

/// The text of the last path printed, kept from line to line: each line's
/// path shares its first elements with the previous one's, and `format`
/// writes each element after those before it.
#[derive(Default)]
struct PathText {
    text: String,
    /// Where the text of each element ends.
    ends: Vec<usize>,
}

impl PathText {
    /// Makes the text that of `elements`, whose first `kept` are those of
    /// the previous path.
    fn update(&mut self, elements: &[Value], kept: usize) {
        let kept = kept.min(self.ends.len());
        self.ends.truncate(kept);
        self.text.truncate(self.ends.last().copied().unwrap_or(0));
        for e in &elements[kept..] {
            if !self.text.is_empty() && matches!(e, Value::Str(s) if !s.is_empty()) {
                self.text.push('.');
            }
            self.text
                .push_str(&pathfmt::format(std::slice::from_ref(e)));
            self.ends.push(self.text.len());
        }
    }

    /// Forgets the path: the next update starts afresh.
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// The text (`:` for the root).
    fn as_str(&self) -> &str {
        if self.ends.is_empty() {
            ":"
        } else {
            &self.text
        }
    }
}

async fn get_single(s: &mut Session, path: &Path, raw_output: bool) -> anyhow::Result<()> {
    let mut res = s.client.get_value(path, s.nchain()).await.map_err(api)?;
    if !s.meta {
        res = take(&mut res, "value").ok_or_else(|| anyhow!("No data at {path}"))?;
    }
    if raw_output {
        s.out.write(&raw(&res))?;
    } else {
        s.out.yprint(&res)?;
    }
    Ok(())
}

/// One entry in list mode: `[path]` (raw) or `[{path: value}]`.
pub fn list_line(path: Path, value: Option<Value>) -> Value {
    let item = match value {
        None => Value::Path(path),
        Some(v) => Value::Map(vec![(Value::Path(path), v)]),
    };
    Value::Array(vec![item])
}

/// A map under construction, with Python `dict` semantics (first key wins
/// its place, equal keys such as `1` and `1.0` are one key).
#[derive(Default)]
pub struct Nested {
    entries: Vec<(Value, Slot)>,
    index: HashMap<Value, usize>,
}

enum Slot {
    Map(Nested),
    Value(Value),
}

impl Nested {
    /// `for p in path: d = d.setdefault(p, {})`; a plain value in the way
    /// is replaced by a map.
    pub fn at(&mut self, path: &Path) -> &mut Nested {
        path.iter().fold(self, |node, elem| {
            let i = node.slot(elem);
            let slot = &mut node.entries[i].1;
            if let Slot::Value(_) = slot {
                *slot = Slot::Map(Nested::default());
            }
            match slot {
                Slot::Map(m) => m,
                Slot::Value(_) => unreachable!(),
            }
        })
    }

    /// `d[key] = v`.
    pub fn set(&mut self, key: Value, v: Value) {
        let i = self.slot(&key);
        self.entries[i].1 = Slot::Value(v);
    }

    /// The index of `key`, inserted (as an empty map) if missing.
    fn slot(&mut self, key: &Value) -> usize {
        if let Some(i) = self.index.get(key) {
            return *i;
        }
        self.entries
            .push((key.clone(), Slot::Map(Nested::default())));
        self.index.insert(key.clone(), self.entries.len() - 1);
        self.entries.len() - 1
    }

    pub fn into_value(self) -> Value {
        Value::Map(
            self.entries
                .into_iter()
                .map(|(k, slot)| match slot {
                    Slot::Map(m) => (k, m.into_value()),
                    Slot::Value(v) => (k, v),
                })
                .collect(),
        )
    }
}

/// DistKV's `simplex`: recursively drops `key: null` entries from maps
/// (values included), and turns maps that held only that entry into `null`.
pub fn simplex(v: Value, key: &Value) -> Value {
    let Value::Map(pairs) = v else { return v };
    let mut pairs: Vec<(Value, Value)> = pairs
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                v @ Value::Map(_) => simplex(v, key),
                v => v,
            };
            (k, v)
        })
        .collect();
    if let Some(i) = pairs.iter().position(|(k, v)| k == key && v.is_nil()) {
        if pairs.len() == 1 {
            return Value::Nil;
        }
        pairs.remove(i);
    }
    Value::Map(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_yaml::top_level;

    fn p(s: &str) -> Path {
        Path::parse(s).unwrap()
    }

    #[test]
    fn list_mode_lines() {
        assert_eq!(
            top_level(&list_line(p(":"), Some(Value::str("Testing")))),
            "- !P ':': Testing\n"
        );
        let v = Value::map([("one", Value::Int(1)), ("two", Value::Int(2))]);
        assert_eq!(
            top_level(&list_line(p("one.two.three.four.five"), Some(v))),
            "- !P one.two.three.four.five:\n    one: 1\n    two: 2\n"
        );
        assert_eq!(top_level(&list_line(p("two"), None)), "- !P two\n");
    }

    fn transcript_tree() -> Nested {
        let mut t = Nested::default();
        let key = Value::str("_");
        t.at(&p(":")).set(key.clone(), Value::str("Testing"));
        t.at(&p("one.two.three")).set(key.clone(), Value::Int(123));
        t.at(&p("one.two.three.four"))
            .set(key.clone(), Value::Int(1234));
        let v = Value::map([("one", Value::Int(1)), ("two", Value::Int(2))]);
        t.at(&p("one.two.three.four.five")).set(key, v);
        t
    }

    #[test]
    fn dict_mode_nests_by_path() {
        assert_eq!(
            top_level(&transcript_tree().into_value()),
            "_: Testing\none:\n  two:\n    three:\n      _: 123\n      four:\n        _: 1234\n        five:\n          _:\n            one: 1\n            two: 2\n"
        );
        // Nothing found: an empty map.
        assert_eq!(top_level(&Nested::default().into_value()), "{}\n");
    }

    #[test]
    fn equal_keys_share_a_slot() {
        let mut t = Nested::default();
        t.at(&Path::new(vec![Value::Int(1)]))
            .set(Value::str("_"), Value::Int(1));
        t.at(&Path::new(vec![Value::Float(1.0)]))
            .set(Value::str("x"), Value::Int(2));
        let v = t.into_value();
        assert_eq!(v.as_map().unwrap().len(), 1);
    }

    #[test]
    fn simplex_prunes_empty_entries() {
        let key = Value::str("_");
        let mut t = Nested::default();
        t.at(&p(":.distkv")).set(key.clone(), Value::Nil);
        t.at(&p("hello")).set(key.clone(), Value::str("a"));
        t.at(&p("one")).set(key.clone(), Value::Nil);
        t.at(&p("two")).set(key.clone(), Value::Nil);
        t.at(&p("two.x")).set(key.clone(), Value::Int(1));
        let y = simplex(t.into_value(), &key);
        assert_eq!(
            top_level(&y),
            ".distkv: null\nhello:\n  _: a\none: null\ntwo:\n  x:\n    _: 1\n"
        );
        // A root holding only `_: null` becomes `null`.
        let mut t = Nested::default();
        t.at(&p(":")).set(key.clone(), Value::Nil);
        assert_eq!(top_level(&simplex(t.into_value(), &key)), "null\n...\n");
    }
}
