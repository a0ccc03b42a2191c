//! Paths: the keys of DistKV's tree.
//!
//! A [`Path`] is an immutable, cheaply clonable sequence of [`Value`]
//! elements (str, bytes, int, float, bool, nil, nested arrays). On the wire it
//! is msgpack ext 3 (see [`crate::codec`]); in text it uses DistKV's path
//! syntax (see [`crate::pathfmt`]), which is what `Display` and
//! [`Path::parse`] speak.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::shared_str::SharedStr;
use crate::value::Value;

/// The string elements of the path a decoder read last, by place, for
/// sharing with the next path: keys come in runs under one parent
/// (`bench.1`, `bench.2`, a device's readings), so a string element with
/// the same bytes as the one at the same place before is that string again
/// — no UTF-8 check, no allocation, and the tree, which compares the path
/// it followed last by address first, finds the shared prefix at once.
/// Used by the event-log reader and by the server for each connection.
#[derive(Debug)]
pub struct PathStrings {
    /// Per place, the string there (`None`: none kept).
    places: Vec<Option<SharedStr>>,
    max_places: usize,
    max_bytes: usize,
}

impl PathStrings {
    /// Strings kept at the first `max_places` places, of up to `max_bytes`
    /// bytes each.
    pub fn new(max_places: usize, max_bytes: usize) -> PathStrings {
        PathStrings {
            places: Vec::new(),
            max_places,
            max_bytes,
        }
    }

    /// The string of UTF-8 bytes `b` at `place` of a path (`None` if they
    /// are not UTF-8): the one kept there if it has these bytes, else a
    /// new one, kept for the next path within the limits.
    pub fn get(&mut self, place: usize, b: &[u8]) -> Option<SharedStr> {
        if let Some(Some(s)) = self.places.get(place) {
            if s.as_bytes() == b {
                return Some(s.clone());
            }
        }
        let s = SharedStr::new(std::str::from_utf8(b).ok()?);
        if place < self.max_places && b.len() <= self.max_bytes {
            if self.places.len() <= place {
                self.places.resize(place + 1, None);
            }
            self.places[place] = Some(s.clone());
        }
        Some(s)
    }

    /// Forgets the strings kept: the next paths' strings are new ones.
    pub fn forget(&mut self) {
        self.places.clear();
    }
}

/// A path into the tree. The empty path is the root.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Path(Arc<[Value]>);

impl Path {
    /// The empty path (the root).
    pub fn root() -> Path {
        Path(Arc::from(Vec::new()))
    }

    /// A path from its elements.
    pub fn new(elements: Vec<Value>) -> Path {
        Path(Arc::from(elements))
    }

    /// The shared elements ([`crate::packed`] keeps them behind a thin
    /// pointer).
    pub(crate) fn into_arc(self) -> Arc<[Value]> {
        self.0
    }

    /// The path of shared elements (the inverse of [`Path::into_arc`]).
    pub(crate) fn from_arc(elements: Arc<[Value]>) -> Path {
        Path(elements)
    }

    /// The elements.
    pub fn elements(&self) -> &[Value] {
        &self.0
    }

    /// This path with one more element.
    pub fn child(&self, element: Value) -> Path {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.extend_from_slice(&self.0);
        v.push(element);
        Path::new(v)
    }

    /// This path followed by `rest`.
    pub fn join(&self, rest: &[Value]) -> Path {
        if rest.is_empty() {
            return self.clone();
        }
        let mut v = Vec::with_capacity(self.0.len() + rest.len());
        v.extend_from_slice(&self.0);
        v.extend_from_slice(rest);
        Path::new(v)
    }

    /// The path without its first `n` elements.
    pub fn chop(&self, n: usize) -> Path {
        if n == 0 {
            return self.clone();
        }
        Path::new(self.0.get(n..).unwrap_or(&[]).to_vec())
    }

    /// Whether `prefix` is a prefix of this path (or equal to it).
    pub fn starts_with(&self, prefix: &[Value]) -> bool {
        self.0.len() >= prefix.len() && self.0[..prefix.len()] == *prefix
    }

    /// Parses DistKV's path syntax (`a.b:.c`, `:n.auth`, `:` …).
    pub fn parse(s: &str) -> Result<Path, crate::pathfmt::PathSyntaxError> {
        crate::pathfmt::parse(s)
    }
}

impl Default for Path {
    fn default() -> Path {
        Path::root()
    }
}

impl Deref for Path {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.0
    }
}

impl From<Vec<Value>> for Path {
    fn from(v: Vec<Value>) -> Path {
        Path::new(v)
    }
}

/// Collects the elements straight into the path's shared slice: one
/// allocation when the iterator knows its exact length (a mapped range).
impl FromIterator<Value> for Path {
    fn from_iter<I: IntoIterator<Item = Value>>(elements: I) -> Path {
        Path(elements.into_iter().collect())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::pathfmt::format(&self.0))
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P({self})")
    }
}

/// Builds a [`Path`] from string-ish literals: `path!["a", "b"]`.
#[macro_export]
macro_rules! path {
    () => { $crate::Path::root() };
    ($($e:expr),+ $(,)?) => { $crate::Path::new(vec![$($crate::Value::from($e)),+]) };
}
