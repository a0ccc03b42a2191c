//! Rendering reports as text, JSON or YAML.
//!
//! Every command builds its findings as [`Value`] maps (string keys) and
//! hands them to an [`Out`], which writes exactly one document per command
//! in the chosen [`Format`]: a single map for reports (`audit`, `restore`,
//! `diff`), or a list whose items are written as they come for record
//! streams (`dump`, `history`), so a million records never sit in memory.
//! Text is for people: each command supplies its own lines.
//!
//! JSON is serde_json's, from [`Value`] through [`Json`]. YAML is
//! [`distkv_yaml::to_yaml`], as DistKV's `yprint` writes it.

use std::io::{self, Write};

use distkv_model::Value;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// How reports are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// A [`Value`] as JSON (serde): maps with non-string keys get their keys'
/// Python `repr` as names; byte strings, big integers and other msgpack
/// extensions their `repr` as strings; paths their DistKV path syntax;
/// non-finite floats `null`.
pub struct Json<'a>(pub &'a Value);

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) => s.serialize_unit(),
            Value::Str(x) => s.serialize_str(x),
            Value::Path(p) => s.collect_str(p),
            v @ (Value::Bin(_) | Value::BigUint(_) | Value::Ext(..)) => s.collect_str(v),
            Value::Array(a) => s.collect_seq(a.iter().map(Json)),
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, x) in m {
                    match k {
                        Value::Str(k) => map.serialize_entry(&**k, &Json(x))?,
                        other => map.serialize_entry(&other.to_string(), &Json(x))?,
                    }
                }
                map.end()
            }
        }
    }
}

/// The value as JSON text.
pub fn to_json(v: &Value) -> String {
    serde_json::to_string(&Json(v)).unwrap_or_else(|e| format!("\"unprintable: {e}\""))
}

/// Writes one document in a [`Format`] to a sink.
pub struct Out<W: Write> {
    format: Format,
    w: W,
    /// Items written to the open list (`None`: no list open).
    list: Option<u64>,
}

impl<W: Write> Out<W> {
    /// A writer of `format` documents to `w`.
    pub fn new(format: Format, w: W) -> Out<W> {
        Out {
            format,
            w,
            list: None,
        }
    }

    /// The format being written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Writes a whole report: `value` as JSON/YAML, or `text` as is.
    pub fn doc(&mut self, value: &Value, text: &str) -> io::Result<()> {
        match self.format {
            Format::Text => self.w.write_all(text.as_bytes()),
            Format::Json => writeln!(self.w, "{}", to_json(value)),
            Format::Yaml => self.w.write_all(distkv_yaml::to_yaml(value).as_bytes()),
        }
    }

    /// Starts a list document (items follow with [`Out::item`]).
    pub fn begin_list(&mut self) -> io::Result<()> {
        self.list = Some(0);
        if self.format == Format::Json {
            self.w.write_all(b"[")?;
        }
        Ok(())
    }

    /// Writes one list item: `value` as JSON/YAML, or the text `text()`
    /// gives (only called for text).
    pub fn item(&mut self, value: &Value, text: impl FnOnce() -> String) -> io::Result<()> {
        let n = self.list.get_or_insert(0);
        let first = *n == 0;
        *n += 1;
        match self.format {
            Format::Text => {
                let mut t = text();
                if !t.ends_with('\n') {
                    t.push('\n');
                }
                self.w.write_all(t.as_bytes())
            }
            Format::Json => {
                let sep = if first { "\n" } else { ",\n" };
                write!(self.w, "{sep}{}", to_json(value))
            }
            Format::Yaml => {
                let doc = distkv_yaml::to_yaml(value);
                let mut s = String::with_capacity(doc.len() + 16);
                for (i, line) in doc.lines().enumerate() {
                    s.push_str(if i == 0 { "- " } else { "  " });
                    s.push_str(line);
                    s.push('\n');
                }
                self.w.write_all(s.as_bytes())
            }
        }
    }

    /// Ends the list document.
    pub fn end_list(&mut self) -> io::Result<()> {
        let n = self.list.take().unwrap_or(0);
        match self.format {
            Format::Text => Ok(()),
            Format::Json if n == 0 => self.w.write_all(b"]\n"),
            Format::Json => self.w.write_all(b"\n]\n"),
            Format::Yaml if n == 0 => self.w.write_all(b"[]\n"),
            Format::Yaml => Ok(()),
        }
    }

    /// Flushes the sink.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A `{key: value}` map with string keys, for building report values.
#[derive(Debug, Default, Clone)]
pub struct Doc(Vec<(Value, Value)>);

impl Doc {
    /// An empty map.
    pub fn new() -> Doc {
        Doc::default()
    }

    /// Adds `key: value`.
    pub fn put(mut self, key: &str, value: impl Into<Value>) -> Doc {
        self.0.push((Value::str(key), value.into()));
        self
    }

    /// Adds `key: value` when `value` is `Some`.
    pub fn opt(self, key: &str, value: Option<impl Into<Value>>) -> Doc {
        match value {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    /// The map.
    pub fn value(self) -> Value {
        Value::Map(self.0)
    }
}

impl From<Doc> for Value {
    fn from(d: Doc) -> Value {
        d.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_for_every_kind_of_value() {
        let v = Value::map([
            ("s", Value::str("a\"b\n")),
            ("n", Value::Nil),
            ("f", Value::Float(1.5)),
            ("inf", Value::Float(f64::INFINITY)),
            ("a", Value::Array(vec![Value::Int(-1), Value::Bool(true)])),
            ("b", Value::Bin(b"\x01".as_slice().into())),
            ("p", Value::Path(distkv_model::path!["x", 1i64])),
        ]);
        assert_eq!(
            to_json(&v),
            r#"{"s":"a\"b\n","n":null,"f":1.5,"inf":null,"a":[-1,true],"b":"b'\\x01'","p":"x:1"}"#
        );
        let m = Value::Map(vec![(Value::Int(1), Value::Int(2))]);
        assert_eq!(to_json(&m), r#"{"1":2}"#);
    }

    #[test]
    fn lists_are_one_document_in_every_format() -> io::Result<()> {
        for (format, want) in [
            (Format::Json, "[\n{\"a\":1},\n{\"a\":2}\n]\n"),
            (Format::Yaml, "- a: 1\n- a: 2\n"),
            (Format::Text, "one\ntwo\n"),
        ] {
            let mut buf = Vec::new();
            let mut out = Out::new(format, &mut buf);
            out.begin_list()?;
            out.item(&Value::map([("a", Value::Int(1))]), || "one".into())?;
            out.item(&Value::map([("a", Value::Int(2))]), || "two".into())?;
            out.end_list()?;
            assert_eq!(String::from_utf8_lossy(&buf), want, "{format:?}");
        }
        Ok(())
    }
}
