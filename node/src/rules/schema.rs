//! Type records' JSON schemas (the `jsonschema` crate, as DistKV uses
//! Python's `jsonschema`).
//!
//! A schema never loads anything: the crate is built without its file
//! and network resolvers, so a `$ref` to anything outside the schema
//! fails to compile. Values are checked as JSON: `None` is `null`, byte
//! strings and paths are arrays (of byte values, of elements), map keys
//! that are not strings are written as their Python repr, integers
//! beyond 64 bits and non-finite floats are floats (`null` if
//! non-finite).

use std::sync::Arc;

use distkv_model::Value;
use serde_json::Value as Json;

/// A compiled schema.
#[derive(Clone)]
pub struct Schema(Arc<jsonschema::Validator>);

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Compiles `schema`; the error says why it is no schema.
    pub fn compile(schema: &Value) -> Result<Schema, String> {
        let json = to_json(schema);
        jsonschema::validator_for(&json)
            .map(|v| Schema(Arc::new(v)))
            .map_err(|e| e.to_string())
    }

    /// Checks `value`; the error is the first violation.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        let json = to_json(value);
        self.0.validate(&json).map_err(|e| e.to_string())
    }
}

/// A value as JSON.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::BigUint(b) => float(b.iter().fold(0.0, |a, &d| a * 256.0 + d as f64)),
        Value::Float(f) => float(*f),
        Value::Str(s) => Json::String(s.to_string()),
        Value::Bin(b) | Value::Ext(_, b) => Json::Array(b.iter().map(|&x| Json::from(x)).collect()),
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Path(p) => Json::Array(p.iter().map(to_json).collect()),
        Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Value::Str(s) => s.to_string(),
                        k => k.to_string(),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
    }
}

fn float(f: f64) -> Json {
    serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_checks_values() -> Result<(), String> {
        let s = Schema::compile(&Value::map([
            ("type", Value::str("integer")),
            ("minimum", Value::Int(3)),
        ]))?;
        assert_eq!(s.check(&Value::Int(5)), Ok(()));
        assert!(s.check(&Value::Int(2)).is_err());
        let e = s.check(&Value::str("x")).unwrap_err();
        assert!(e.contains("is not of type"), "{e}");
        Ok(())
    }

    #[test]
    fn nothing_is_fetched_and_bad_schemas_are_refused() {
        let remote = Value::map([("$ref", Value::str("http://127.0.0.1:1/x.json"))]);
        assert!(Schema::compile(&remote).is_err());
        let bad = Value::map([("type", Value::Int(12))]);
        assert!(Schema::compile(&bad).is_err());
    }
}
