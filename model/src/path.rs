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

use crate::value::Value;

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
