//! Dynamic values, as DistKV stores and sends them.
//!
//! A [`Value`] is anything Python's msgpack packer can produce with DistKV's
//! extensions: nil, booleans, integers of any size (ext 2 above `u64`), floats,
//! UTF-8 strings, byte strings, arrays, maps with arbitrary keys, [`Path`]s
//! (ext 3) and opaque extension values.
//!
//! Equality and hashing follow Python, because values are compared the way
//! DistKV compares them (`prev` preconditions, `changed` flags) and path
//! elements are dictionary keys: `1 == 1.0 == True`, and maps compare without
//! regard to key order. [`Value::same_type`] tells the types apart where DistKV
//! does (`idem`).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::path::Path;
use crate::shared_str::SharedStr;

/// A dynamically typed DistKV value.
#[derive(Clone, Debug)]
pub enum Value {
    /// msgpack nil, Python `None`.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer in the `i64` range.
    Int(i64),
    /// An integer above `i64::MAX` that still fits a `u64`.
    UInt(u64),
    /// An integer of at least 2⁶⁴: minimal big-endian bytes (msgpack ext 2).
    BigUint(Arc<[u8]>),
    /// A float (always sent as float64).
    Float(f64),
    /// A UTF-8 string.
    Str(SharedStr),
    /// A byte string.
    Bin(Arc<[u8]>),
    /// An array (Python tuple or list).
    Array(Vec<Value>),
    /// A map, in wire order. Keys may be any value.
    Map(Vec<(Value, Value)>),
    /// A path (msgpack ext 3).
    Path(Path),
    /// Any other msgpack extension, passed through unchanged.
    Ext(i8, Arc<[u8]>),
}

impl Value {
    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::Str(SharedStr::new(s))
    }

    /// An integer value from anything that fits an `i128`-free `u64`.
    pub fn uint(u: u64) -> Value {
        if u <= i64::MAX as u64 {
            Value::Int(u as i64)
        } else {
            Value::UInt(u)
        }
    }

    /// The unsigned integer of big-endian bytes (msgpack ext 2's payload):
    /// an `Int`/`UInt` where it fits 64 bits, else a `BigUint` of its
    /// minimal bytes.
    pub fn from_be_digits(bytes: &[u8]) -> Value {
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let digits = &bytes[start..];
        if digits.len() <= 8 {
            Value::uint(digits.iter().fold(0u64, |a, &c| (a << 8) | c as u64))
        } else {
            Value::BigUint(Arc::from(digits))
        }
    }

    /// Builds a map from `(&str, Value)` pairs.
    pub fn map<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (Value::str(k), v)).collect())
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a non-negative integer, if it is one (booleans excluded).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) if i >= 0 => Some(i as u64),
            Value::UInt(u) => Some(u),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is one (booleans excluded).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The value as a boolean, using Python truthiness for numbers and nil.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::UInt(_) | Value::BigUint(_) => true,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Bin(b) => !b.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Path(p) => !p.is_empty(),
            Value::Ext(..) => true,
        }
    }

    /// The array elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The map pairs, if this is a map.
    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Looks up a string key in a map value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Whether this is nil.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// Python's `type(a) is type(b)`: bool, int, float, str, bytes, tuple,
    /// dict and Path are distinct types; all integer sizes are one type.
    pub fn same_type(&self, other: &Value) -> bool {
        fn kind(v: &Value) -> u8 {
            match v {
                Value::Nil => 0,
                Value::Bool(_) => 1,
                Value::Int(_) | Value::UInt(_) | Value::BigUint(_) => 2,
                Value::Float(_) => 3,
                Value::Str(_) => 4,
                Value::Bin(_) => 5,
                Value::Array(_) => 6,
                Value::Map(_) => 7,
                Value::Path(_) => 8,
                Value::Ext(..) => 9,
            }
        }
        kind(self) == kind(other)
    }

    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) | Value::BigUint(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bin(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Path(_) => "path",
            Value::Ext(..) => "ext",
        }
    }

    /// The numeric value for cross-type comparison, when exact.
    fn as_number(&self) -> Option<Number> {
        match *self {
            Value::Bool(b) => Some(Number::Int(b as i128)),
            Value::Int(i) => Some(Number::Int(i as i128)),
            Value::UInt(u) => Some(Number::Int(u as i128)),
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 1.7e38 {
                    Some(Number::Int(f as i128))
                } else {
                    Some(Number::Float(f))
                }
            }
            _ => None,
        }
    }
}

#[derive(PartialEq)]
enum Number {
    Int(i128),
    Float(f64),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Nil, Nil) => true,
            (Int(a), Int(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Bin(a), Bin(b)) => a == b,
            (BigUint(a), BigUint(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (Path(a), Path(b)) => a == b,
            (Ext(t, a), Ext(u, b)) => t == u && a == b,
            (Map(a), Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.iter().any(|(k2, v2)| k == k2 && v == v2))
            }
            (Float(a), Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            _ => match (self.as_number(), other.as_number()) {
                (Some(a), Some(b)) => a == b,
                _ => false,
            },
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        use Value::*;
        match self {
            Nil => state.write_u8(0),
            Int(i) => {
                state.write_u8(1);
                state.write_i64(*i);
            }
            Bool(_) | UInt(_) | Float(_) => match self.as_number() {
                Some(Number::Int(i)) => {
                    state.write_u8(1);
                    // Equal numbers hash equally whatever their width; most
                    // fit 64 bits, which hash faster.
                    match i64::try_from(i) {
                        Ok(small) => state.write_i64(small),
                        Err(_) => state.write_i128(i),
                    }
                }
                Some(Number::Float(f)) => {
                    state.write_u8(2);
                    state.write_u64(if f.is_nan() { 0 } else { f.to_bits() });
                }
                None => unreachable!("numbers always convert"),
            },
            BigUint(b) => {
                state.write_u8(3);
                b.hash(state)
            }
            Str(s) => {
                state.write_u8(4);
                s.hash(state)
            }
            Bin(b) => {
                state.write_u8(5);
                b.hash(state)
            }
            Array(a) => {
                state.write_u8(6);
                a.hash(state)
            }
            Map(m) => {
                // Order-independent, like the equality above.
                state.write_u8(7);
                state.write_usize(m.len());
            }
            Path(p) => {
                state.write_u8(8);
                p.hash(state)
            }
            Ext(t, b) => {
                state.write_u8(9);
                state.write_i8(*t);
                b.hash(state)
            }
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::str(s)
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(SharedStr::new(&s))
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<u64> for Value {
    fn from(u: u64) -> Value {
        Value::uint(u)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}

impl From<Path> for Value {
    fn from(p: Path) -> Value {
        Value::Path(p)
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Value {
        Value::Array(a)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Bin(Arc::from(b))
    }
}

/// Python-like `repr` of a value; used in error texts that clients may show.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::BigUint(b) => {
                // Decimal rendering of an arbitrary big-endian integer.
                let mut digits: Vec<u8> = vec![0];
                for &byte in b.iter() {
                    let mut carry = byte as u32;
                    for d in digits.iter_mut() {
                        let x = (*d as u32) * 256 + carry;
                        *d = (x % 10) as u8;
                        carry = x / 10;
                    }
                    while carry > 0 {
                        digits.push((carry % 10) as u8);
                        carry /= 10;
                    }
                }
                let s: String = digits.iter().rev().map(|d| (b'0' + d) as char).collect();
                f.write_str(&s)
            }
            Value::Float(x) => write!(f, "{}", crate::repr::float_repr(*x)),
            Value::Str(s) => write!(f, "{}", crate::repr::str_repr(s)),
            Value::Bin(b) => write!(f, "{}", crate::repr::bytes_repr(b)),
            Value::Array(a) => {
                f.write_str("(")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Path(p) => write!(f, "P({})", crate::repr::str_repr(&p.to_string())),
            Value::Ext(t, b) => write!(f, "ExtType(code={t}, data={})", crate::repr::bytes_repr(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn equal_numbers_of_any_type_hash_alike_like_python() {
        let s = std::collections::hash_map::RandomState::new();
        let one = [
            Value::Int(1),
            Value::UInt(1),
            Value::Float(1.0),
            Value::Bool(true),
        ];
        for a in &one {
            for b in &one {
                assert_eq!(a, b);
                assert_eq!(s.hash_one(a), s.hash_one(b), "{a:?} vs {b:?}");
            }
        }
        // Beyond i64: still equal to the integral float, and hashed alike.
        let big = Value::UInt(1 << 63);
        let float = Value::Float((1u64 << 63) as f64);
        assert_eq!(big, float);
        assert_eq!(s.hash_one(&big), s.hash_one(&float));
        assert_ne!(Value::Int(1), Value::str("1"));
    }
}
