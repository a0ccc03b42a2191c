//! DistKV-py save and log files.
//!
//! Python DistKV writes a bare concatenation of msgpack maps (no magic, no
//! framing, no checksum; docs/format.md, "DistKV-py files"):
//! * state records `{nodes, known, deleted, node, tock}` (also wrapped as
//!   `{info: {...}}`),
//! * snapshot entries `{path, depth, value, chain: {...}, tock}`,
//! * change records `{path, depth, node, tick, prev, value?, tock}` — no
//!   `value` means a deletion.
//!
//! Paths are shortened against the previous path record of the file (`depth`
//! = elements kept, `path` = the rest); concatenated files restart with
//! `depth: 0`. [`PyReader`] turns such a stream into [`PyRecord`]s. Unlike
//! Python's loader it keeps deletions (Python lost them and then resolved the
//! next record's `depth` against the wrong path). A crash can leave a
//! truncated last object: that ends the stream with
//! [`PyRecord::Truncated`]; anything that is not msgpack is an error naming
//! the offset.

use distkv_model::budget::INTERNAL_LIMITS;
use distkv_model::codec::{self, DecodeError, FrameScanner, Limits};
use distkv_model::event::path_from_value;
use distkv_model::{NodeSet, Path, UpdateEvent, Value};

/// One record of a DistKV-py file.
#[derive(Debug, Clone, PartialEq)]
pub enum PyRecord {
    /// A change or snapshot entry (value `None` = deletion).
    Event(UpdateEvent),
    /// A state record.
    State(PyState),
    /// A map this reader does not understand (kept for reporting).
    Unknown(Value),
    /// The file ends inside a record: `offset` is where it started.
    Truncated {
        /// Byte offset of the partial record.
        offset: u64,
    },
}

/// A state record: ticks and tick sets of every node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PyState {
    /// `nodes`: node name → highest tick (nil = none).
    pub nodes: Vec<(String, Option<u64>)>,
    /// `known` (superseded ticks).
    pub known: NodeSet,
    /// `deleted` ticks.
    pub deleted: NodeSet,
    /// `tock`, if given.
    pub tock: Option<u64>,
}

impl PyState {
    /// Decodes a state record (also the reply to `get_state nodes known
    /// deleted`).
    pub fn from_value(v: &Value) -> Result<PyState, String> {
        let mut st = PyState {
            tock: v.get("tock").and_then(Value::as_u64),
            ..PyState::default()
        };
        if let Some(n) = v.get("nodes").and_then(Value::as_map) {
            for (k, t) in n {
                let name = k.as_str().ok_or("node name is not a string")?;
                st.nodes.push((name.to_string(), t.as_u64()));
            }
        }
        if let Some(k) = v.get("superseded").or_else(|| v.get("known")) {
            st.known = NodeSet::from_value(k).map_err(|e| e.to_string())?;
        }
        if let Some(d) = v.get("deleted") {
            st.deleted = NodeSet::from_value(d).map_err(|e| e.to_string())?;
        }
        Ok(st)
    }

    /// Applies it to `st`: ticks, superseded and deleted ticks, tock.
    pub fn apply_to(&self, st: &mut crate::state::State) {
        if let Some(t) = self.tock {
            st.tock().seen(t);
        }
        st.restore_state(
            self.nodes.iter().map(|(n, t)| (n.as_str(), *t)),
            &self.known,
            &self.deleted,
        );
    }
}

/// A DistKV-py file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PyFileError {
    /// Bytes that are not msgpack.
    #[error("not a DistKV msgpack stream at byte {offset}: {source}")]
    Corrupt {
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        source: DecodeError,
    },
    /// A record with a bad field.
    #[error("invalid record at byte {offset}: {reason}")]
    Invalid {
        /// Where the record starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Reads records from the bytes of one or more concatenated files.
pub struct PyReader<'a> {
    buf: &'a [u8],
    pos: usize,
    last_path: Vec<Value>,
    limits: Limits,
    done: bool,
}

impl<'a> PyReader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> PyReader<'a> {
        PyReader {
            buf,
            pos: 0,
            last_path: Vec::new(),
            limits: INTERNAL_LIMITS,
            done: false,
        }
    }

    fn record(&mut self, v: Value, offset: u64) -> Result<PyRecord, PyFileError> {
        let invalid = |reason: String| PyFileError::Invalid { offset, reason };
        if v.as_map().is_none() {
            return Ok(PyRecord::Unknown(v));
        }
        if let Some(info) = v.get("info") {
            return self.record(info.clone(), offset);
        }
        if let (Some(p), Some(d)) = (v.get("path"), v.get("depth")) {
            let rest = path_from_value(p).ok_or_else(|| invalid("path is not a path".into()))?;
            let depth = d
                .as_u64()
                .ok_or_else(|| invalid("depth is not an integer".into()))?
                as usize;
            if depth > self.last_path.len() {
                return Err(invalid(format!(
                    "depth {depth} exceeds the previous path's {} elements",
                    self.last_path.len()
                )));
            }
            self.last_path.truncate(depth);
            self.last_path.extend_from_slice(&rest);
            let mut m = v.as_map().unwrap_or_default().to_vec();
            m.retain(|(k, _)| k.as_str() != Some("depth"));
            for (k, val) in m.iter_mut() {
                if k.as_str() == Some("path") {
                    *val = Value::Path(Path::new(self.last_path.clone()));
                }
            }
            let ev = UpdateEvent::from_value(&Value::Map(m)).map_err(|e| invalid(e.to_string()))?;
            return Ok(PyRecord::Event(ev));
        }
        if v.get("path").is_some() {
            // A full path without `depth` (e.g. an `update` stream record).
            let ev = UpdateEvent::from_value(&v).map_err(|e| invalid(e.to_string()))?;
            if let Some(p) = path_from_value(v.get("path").unwrap_or(&Value::Nil)) {
                self.last_path = p.to_vec();
            }
            return Ok(PyRecord::Event(ev));
        }
        if ["nodes", "known", "deleted", "tock"]
            .iter()
            .any(|k| v.get(k).is_some())
        {
            let st = PyState::from_value(&v).map_err(invalid)?;
            return Ok(PyRecord::State(st));
        }
        Ok(PyRecord::Unknown(v))
    }
}

impl Iterator for PyReader<'_> {
    type Item = Result<PyRecord, PyFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let offset = self.pos as u64;
        let rest = &self.buf[self.pos..];
        let mut scanner = FrameScanner::new(self.limits);
        let n = match scanner.scan(rest) {
            Ok(Some(n)) => n,
            Ok(None) => {
                self.done = true;
                return Some(Ok(PyRecord::Truncated { offset }));
            }
            Err(source) => {
                self.done = true;
                return Some(Err(PyFileError::Corrupt { offset, source }));
            }
        };
        self.pos += n;
        match codec::decode_with(&rest[..n], self.limits) {
            Ok(v) => Some(self.record(v, offset)),
            Err(source) => {
                self.done = true;
                Some(Err(PyFileError::Corrupt { offset, source }))
            }
        }
    }
}

/// Writes DistKV-py records: state records, snapshot entries and change
/// records, with DistKV's path shortening (the first path record of a file
/// has `depth: 0`).
#[derive(Debug, Default)]
pub struct PyWriter {
    last: Vec<distkv_model::Value>,
}

impl PyWriter {
    /// A writer for a new file.
    pub fn new() -> PyWriter {
        PyWriter::default()
    }

    fn shorten(&mut self, path: &[Value], m: &mut Vec<(Value, Value)>) {
        let depth = path
            .iter()
            .zip(&self.last)
            .take_while(|(a, b)| a == b)
            .count();
        let rest = path[depth..].to_vec();
        self.last.truncate(depth);
        self.last.extend_from_slice(&rest);
        let p = if depth == 0 {
            Value::Path(Path::new(rest))
        } else {
            Value::Array(rest)
        };
        m.push((Value::str("path"), p));
        m.push((Value::str("depth"), Value::uint(depth as u64)));
    }

    /// A state record `{nodes, known, deleted, node, tock}`.
    pub fn state(&mut self, st: &crate::state::State, out: &mut Vec<u8>) {
        let q = crate::state::StateQuery {
            nodes: true,
            known: true,
            deleted: true,
            ..Default::default()
        };
        let mut m: Vec<(Value, Value)> = st
            .report(q)
            .into_iter()
            .map(|(k, v)| (Value::str(k), v))
            .collect();
        m.push((Value::str("node"), Value::Str(st.me().clone())));
        m.push((Value::str("tock"), Value::uint(st.tock().peek())));
        codec::encode(&Value::Map(m), out);
    }

    /// A snapshot entry `{path, depth, value, chain, tock}` for `e` at
    /// `path` (entries with a value only, as DistKV saves them).
    pub fn entry(&mut self, e: crate::state::Entry<'_>, path: &[Value], out: &mut Vec<u8>) {
        let (Some(v), Some(c)) = (e.data(), e.chain()) else {
            return;
        };
        let mut m = Vec::with_capacity(5);
        self.shorten(path, &mut m);
        m.push((Value::str("value"), v.clone()));
        m.push((Value::str("chain"), c.to_value(-1)));
        m.push((Value::str("tock"), Value::uint(e.tock())));
        codec::encode(&Value::Map(m), out);
    }

    /// A change record `{path, depth, node, tick, prev, value?, tock}`.
    pub fn change(&mut self, ev: &UpdateEvent, out: &mut Vec<u8>) {
        let Value::Map(mut m) = ev.to_value(-1) else {
            return;
        };
        m.retain(|(k, _)| k.as_str() != Some("path"));
        self.shorten(&ev.path, &mut m);
        codec::encode(&Value::Map(m), out);
    }
}

/// Whether `head` (a file's first bytes) looks like a DistKV-py file: a
/// msgpack map.
pub fn looks_like_pyfile(head: &[u8]) -> bool {
    matches!(head.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;

    fn enc(v: &Value, out: &mut Vec<u8>) {
        codec::encode(v, out);
    }

    fn chain(node: &str, tick: i64) -> Value {
        Value::map([
            ("node", Value::str(node)),
            ("tick", Value::Int(tick)),
            ("prev", Value::Nil),
        ])
    }

    /// A save file followed by a change log, as in the reference transcript.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        enc(
            &Value::map([
                ("nodes", Value::map([("n1", Value::Int(12))])),
                (
                    "known",
                    Value::map([("n1", Value::Array(vec![Value::Int(4)]))]),
                ),
                (
                    "deleted",
                    Value::map([("n1", Value::Array(vec![Value::Int(8)]))]),
                ),
                ("node", Value::str("n1")),
                ("tock", Value::Int(224)),
            ]),
            &mut b,
        );
        enc(
            &Value::map([
                ("chain", chain("n1", 2)),
                ("depth", Value::Int(0)),
                ("path", Value::Path(path!["one", "two", "three"])),
                ("tock", Value::Int(61)),
                ("value", Value::Int(123)),
            ]),
            &mut b,
        );
        enc(
            &Value::map([
                ("chain", chain("n1", 3)),
                ("depth", Value::Int(3)),
                ("path", Value::Array(vec![Value::str("four")])),
                ("tock", Value::Int(70)),
                ("value", Value::Int(1234)),
            ]),
            &mut b,
        );
        // A deletion (change record without value), then a record whose depth
        // refers to the deleted path.
        enc(
            &Value::map([
                ("depth", Value::Int(0)),
                ("node", Value::str("n1")),
                ("path", Value::Path(path!["hello"])),
                ("prev", Value::Nil),
                ("tick", Value::Int(14)),
                ("tock", Value::Int(266)),
            ]),
            &mut b,
        );
        enc(
            &Value::map([
                ("depth", Value::Int(1)),
                ("node", Value::str("n1")),
                ("path", Value::Array(vec![Value::str("x")])),
                ("prev", Value::Nil),
                ("tick", Value::Int(15)),
                ("tock", Value::Int(270)),
                ("value", Value::str("hx")),
            ]),
            &mut b,
        );
        b
    }

    #[test]
    fn save_and_change_records_decode_with_deletions_and_long_paths() {
        let recs: Vec<_> = PyReader::new(&sample()).collect::<Result<_, _>>().unwrap();
        assert_eq!(recs.len(), 5);
        let PyRecord::State(st) = &recs[0] else {
            panic!("{:?}", recs[0])
        };
        assert_eq!(st.nodes, vec![("n1".to_string(), Some(12))]);
        assert!(st.deleted.0[&distkv_model::NodeName::from("n1")].contains(8));
        let PyRecord::Event(e) = &recs[2] else {
            panic!()
        };
        assert_eq!(e.path, path!["one", "two", "three", "four"]);
        let PyRecord::Event(del) = &recs[3] else {
            panic!()
        };
        assert_eq!(
            (del.path.clone(), del.value.clone()),
            (path!["hello"], None)
        );
        assert_eq!(del.chain.head().tick, 14);
        let PyRecord::Event(after) = &recs[4] else {
            panic!()
        };
        assert_eq!(
            after.path,
            path!["hello", "x"],
            "depth resolves against the deleted path"
        );
    }

    #[test]
    fn truncated_last_record_ends_the_stream_at_every_cut() {
        let full = sample();
        let whole: Vec<_> = PyReader::new(&full).collect::<Result<_, _>>().unwrap();
        for cut in 0..full.len() {
            let recs: Vec<_> = PyReader::new(&full[..cut])
                .collect::<Result<_, _>>()
                .unwrap();
            match recs.last() {
                None => assert_eq!(cut, 0),
                Some(PyRecord::Truncated { .. }) => {
                    assert_eq!(&recs[..recs.len() - 1], &whole[..recs.len() - 1]);
                }
                Some(_) => assert_eq!(&recs[..], &whole[..recs.len()]),
            }
        }
    }

    #[test]
    fn written_records_read_back() {
        use crate::state::{State, WalkCursor, WalkOpts};
        let mut st = State::new("n1", distkv_log::LogLimits::default());
        st.make_ready();
        let a = st
            .local_change(&path!["a", "b"], Some(Value::Int(1)))
            .unwrap();
        let d = st.local_change(&path!["a", "c"], None).unwrap();
        let mut w = PyWriter::new();
        let mut out = Vec::new();
        w.state(&st, &mut out);
        let mut cur = WalkCursor::default();
        while !cur.is_done() {
            cur.step(st.root(), &WalkOpts::default(), 10, |e, p| {
                w.entry(e, p, &mut out)
            });
        }
        w.change(&d, &mut out);
        let recs: Vec<_> = PyReader::new(&out).collect::<Result<_, _>>().unwrap();
        assert!(
            matches!(&recs[0], PyRecord::State(s) if s.nodes == vec![("n1".to_string(), Some(2))])
        );
        assert!(matches!(&recs[1], PyRecord::Event(e) if *e == *a));
        assert!(matches!(&recs[2], PyRecord::Event(e) if *e == *d));
    }

    #[test]
    fn garbage_is_an_error_with_its_offset() {
        let mut b = sample();
        let at = b.len();
        b.push(0xc1);
        let err = PyReader::new(&b).find_map(Result::err).unwrap();
        assert!(matches!(err, PyFileError::Corrupt { offset, .. } if offset == at as u64));
        assert!(looks_like_pyfile(&sample()));
        assert!(!looks_like_pyfile(b"DKVLOG\r\n"));
    }
}
