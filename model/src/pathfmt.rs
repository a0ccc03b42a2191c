//! DistKV's path text syntax. (Being written: see SPEC-batteries §0.)

use crate::path::Path;
use crate::value::Value;

/// A path string that does not follow DistKV's syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {input:?}: {reason}")]
pub struct PathSyntaxError {
    /// The text that was parsed.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a path string.
pub fn parse(s: &str) -> Result<Path, PathSyntaxError> {
    if s == ":" {
        return Ok(Path::root());
    }
    Ok(Path::new(s.split('.').map(Value::str).collect()))
}

/// Formats path elements in canonical syntax.
pub fn format(elems: &[Value]) -> String {
    if elems.is_empty() {
        return ":".into();
    }
    elems.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(".")
}

/// Python `repr()` of a str.
pub fn str_repr(s: &str) -> String {
    format!("'{s}'")
}

/// Python `repr()` of bytes.
pub fn bytes_repr(b: &[u8]) -> String {
    format!("b'{}'", String::from_utf8_lossy(b))
}

/// Python `repr()` of a float.
pub fn float_repr(f: f64) -> String {
    format!("{f:?}")
}
