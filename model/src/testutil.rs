//! Short value constructors for the table-driven tests of this crate.

use std::sync::Arc;

use crate::path::Path;
use crate::value::Value;

pub const N: Value = Value::Nil;
pub const T: Value = Value::Bool(true);
pub const F: Value = Value::Bool(false);

pub fn s(x: &str) -> Value {
    Value::str(x)
}
pub fn i(x: i64) -> Value {
    Value::Int(x)
}
pub fn f(x: f64) -> Value {
    Value::Float(x)
}
pub fn b(x: &[u8]) -> Value {
    Value::Bin(Arc::from(x))
}
pub fn a(x: Vec<Value>) -> Value {
    Value::Array(x)
}
pub fn m(x: Vec<(Value, Value)>) -> Value {
    Value::Map(x)
}
pub fn p(x: Vec<Value>) -> Value {
    Value::Path(Path::new(x))
}
pub fn big(x: &[u8]) -> Value {
    Value::BigUint(Arc::from(x))
}
