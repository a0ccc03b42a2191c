//! Building replies: entry serialization, path shortening, error texts.
//!
//! * An entry is sent as `{value?, chain?, tock, path?}`: `value` absent when
//!   the entry has no data, `chain` only when `nchain ≠ 0`.
//! * Streams of entries use DistKV's path shortening: each reply carries
//!   `depth` (elements shared with the previous reply's relative path) and
//!   `path` (the rest). The path is ext 3 only when the prefix is empty and
//!   `depth` is 0, a plain array otherwise, exactly as DistKV sends it.
//! * Errors carry Python-style texts (`ClientChainError('…')`); clients only
//!   test for the presence of `error`, but people read them.

use distkv_model::{codec, Chain, Path, Value};

use crate::state::Entry;

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CmdError {
    /// The request is malformed (missing or mistyped field).
    #[error("ValueError({})", py(.0))]
    Invalid(String),
    /// A precondition (`prev`, or a generic client mistake) failed.
    #[error("ClientError({})", py(.0))]
    Client(String),
    /// A `chain` precondition failed.
    #[error("ClientChainError({})", py(.0))]
    Chain(String),
    /// Something does not exist.
    #[error("KeyError({})", py(.0))]
    NotFound(String),
    /// The node cannot do this now.
    #[error("ServerError({})", py(.0))]
    Server(String),
    /// An error worded as DistKV words it (`Class(args…)`), already
    /// rendered: a commit check's refusal, a login's failure.
    #[error("{0}")]
    Python(String),
}

fn py(s: &str) -> String {
    distkv_model::repr::str_repr(s)
}

impl CmdError {
    /// The `etype` DistKV clients understand, if any.
    pub fn etype(&self) -> Option<&'static str> {
        match self {
            CmdError::Chain(_) => Some("chain"),
            _ => None,
        }
    }

    /// The reply to a change the commit path refused: a check's refusal
    /// is the client's to fix; the rest is the node's.
    pub fn from_change(e: crate::commit::ChangeError) -> CmdError {
        match e {
            crate::commit::ChangeError::Denied(d) => CmdError::Python(d.0),
            e => CmdError::Server(e.to_string()),
        }
    }
}

/// Result of a request handler.
pub type CmdResult<T> = Result<T, CmdError>;

/// A message map under construction.
pub type Fields = Vec<(&'static str, Value)>;

/// Appends `key: value`.
pub fn put(m: &mut Fields, key: &'static str, value: Value) {
    m.push((key, value));
}

/// A chain's head at the top level of a message (`node`, `tick`, `prev`),
/// as update events carry it.
pub fn chain_fields(c: &Chain, nchain: i64) -> Fields {
    let Value::Map(m) = c.to_value(nchain) else {
        return Vec::new();
    };
    m.into_iter()
        .filter_map(|(k, v)| {
            let k = match k.as_str()? {
                "node" => "node",
                "tick" => "tick",
                "prev" => "prev",
                _ => return None,
            };
            Some((k, v))
        })
        .collect()
}

/// The serialization of an entry (no path).
pub fn entry_fields(e: Entry<'_>, nchain: i64) -> Fields {
    let mut m = Vec::with_capacity(4);
    if let Some(v) = e.data() {
        put(&mut m, "value", v.clone());
    }
    if nchain != 0 {
        if let Some(c) = e.chain() {
            put(&mut m, "chain", c.to_value(nchain));
        }
    }
    put(&mut m, "tock", Value::uint(e.tock()));
    m
}

/// DistKV's `PathShortener`: shortens absolute paths below a prefix.
#[derive(Debug)]
pub struct Shortener {
    /// Number of leading elements of every path that form the prefix.
    skip: usize,
    prefix_empty: bool,
    last: Vec<Value>,
}

impl Shortener {
    /// Shortens paths that start with the first `skip` elements; the
    /// prefix counts as empty when `prefix_empty` (relative to the client's
    /// root, the requested path was `[]`).
    pub fn new(skip: usize, prefix_empty: bool) -> Shortener {
        Shortener {
            skip,
            prefix_empty,
            last: Vec::new(),
        }
    }

    /// Adds `depth` and `path` for the absolute path `abs` to `m`.
    pub fn apply(&mut self, abs: &Path, m: &mut Fields) {
        let (depth, rest) = self.advance(abs.get(self.skip..).unwrap_or(&[]));
        let p = if self.as_path(depth) {
            Value::Path(Path::new(rest.to_vec()))
        } else {
            Value::Array(rest.to_vec())
        };
        put(m, "path", p);
        put(m, "depth", Value::uint(depth as u64));
    }

    /// [`Shortener::apply`] writing the two fields, `path` and `depth`,
    /// straight into an encoded message; for the path `rel` below the
    /// prefix (what a walk from the prefix hands its visitor).
    pub fn write(&mut self, rel: &[Value], out: &mut Vec<u8>) {
        let (depth, rest) = self.advance(rel);
        codec::write_str(out, "path");
        if self.as_path(depth) {
            codec::write_path(out, rest);
        } else {
            codec::write_array_len(out, rest.len());
            rest.iter().for_each(|v| codec::encode(v, out));
        }
        codec::write_str(out, "depth");
        codec::write_uint(out, depth as u64);
    }

    /// The elements `rel` (a path below the prefix) shares with the
    /// previous one, and the rest, which it remembers.
    fn advance<'p>(&mut self, rel: &'p [Value]) -> (usize, &'p [Value]) {
        let depth = rel
            .iter()
            .zip(self.last.iter())
            .take_while(|(a, b)| a == b)
            .count();
        let rest = &rel[depth..];
        self.last.truncate(depth);
        self.last.extend_from_slice(rest);
        (depth, rest)
    }

    /// Whether the rest is sent as a path (ext 3) rather than an array.
    fn as_path(&self, depth: usize) -> bool {
        self.prefix_empty && depth == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use distkv_model::path;

    #[test]
    fn shortener_matches_distkv_example() {
        // Prefix a.b; the docstring's sequence.
        let mut s = Shortener::new(2, false);
        let seq = [
            (path!["a", "b"], 0, vec![]),
            (path!["a", "b", "c", "d"], 0, vec!["c", "d"]),
            (path!["a", "b", "c", "e", "f"], 1, vec!["e", "f"]),
            (path!["a", "b", "c", "e", "g", "h"], 2, vec!["g", "h"]),
            (path!["a", "b", "c", "i"], 1, vec!["i"]),
            (path!["a", "b", "j"], 0, vec!["j"]),
        ];
        for (p, depth, rest) in seq {
            let mut m = Vec::new();
            s.apply(&p, &mut m);
            let want: Vec<Value> = rest.into_iter().map(Value::from).collect();
            assert_eq!(m[0].1, Value::Array(want));
            assert_eq!(m[1].1, Value::uint(depth));
        }
    }

    #[test]
    fn writing_encodes_what_apply_adds() {
        let paths = [
            path!["a", "b"],
            path!["a", "c", "d"],
            path!["e"],
            path!["e", 1i64, "f"],
        ];
        for (skip, prefix_empty) in [(0, false), (0, true), (2, false), (2, true)] {
            let (mut a, mut w) = (
                Shortener::new(skip, prefix_empty),
                Shortener::new(skip, prefix_empty),
            );
            for rel in &paths {
                let p = Path::new(
                    ["p", "q"][..skip]
                        .iter()
                        .map(|&n| Value::from(n))
                        .chain(rel.iter().cloned())
                        .collect(),
                );
                let mut m = Vec::new();
                a.apply(&p, &mut m);
                let mut want = Vec::new();
                for (k, v) in &m {
                    codec::write_str(&mut want, k);
                    codec::encode(v, &mut want);
                }
                let mut got = Vec::new();
                w.write(rel, &mut got);
                assert_eq!(got, want, "{p}, skip {skip}, prefix empty: {prefix_empty}");
            }
        }
    }

    #[test]
    fn empty_prefix_at_depth_zero_stays_a_path() {
        let mut s = Shortener::new(0, true);
        let mut m = Vec::new();
        s.apply(&path!["x", "y"], &mut m);
        assert_eq!(m[0].1, Value::Path(path!["x", "y"]));
        let mut m = Vec::new();
        s.apply(&path!["x", "z"], &mut m);
        assert_eq!(m[0].1, Value::Array(vec![Value::from("z")]));
    }
}
