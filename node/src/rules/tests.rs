//! The data rules through the commit path: DistKV's typecheck and convert
//! acceptance cases, on a store with the node's hooks.

use std::sync::Arc;

use distkv_model::{path, Path, Value};

use super::*;
use crate::commit::{Change, ChangeError, MetaRules, SharedState, Store};

#[cfg(feature = "python")]
mod python;

fn store() -> Store {
    store_with(ScriptSettings::default())
}

fn store_with(settings: ScriptSettings) -> Store {
    let mut st = State::new("n1", Default::default());
    st.make_ready();
    let rules = Arc::new(DataRules::new(settings));
    let hooks: Vec<Arc<dyn CommitHook>> =
        vec![Arc::new(MetaRules), Arc::new(TypeRules(rules.clone()))];
    Store::new(SharedState::new(st), None, hooks).with_rules(rules)
}

fn set(s: &Store, path: Path, value: Value) -> Result<(), String> {
    let change = Change::Set {
        path,
        value: Some(value),
    };
    match s.commit(Road::Client, change) {
        Ok(_) => Ok(()),
        Err(ChangeError::Denied(d)) => Err(d.0),
        Err(e) => Err(e.to_string()),
    }
}

fn ints(v: &[i64]) -> Value {
    Value::Array(v.iter().map(|&i| Value::Int(i)).collect())
}

fn type_record(code: &str, good: Value, bad: Value) -> Value {
    Value::map([("code", Value::str(code)), ("good", good), ("bad", bad)])
}

const INT: &str = "type_of(value) == \"i64\"";
const PERCENT: &str = "if value < 0 || value > 100 { throw \"not a percentage\" }";

/// DistKV's typecheck acceptance: `int`, `int.percent`, `one.+.two`.
fn typed() -> Result<Store, String> {
    typed_with(store(), INT, PERCENT)
}

/// [`typed`] on `s` with the scripts `int` and `percent`.
fn typed_with(s: Store, int: &str, percent: &str) -> Result<Store, String> {
    let bad = Value::Array(vec![Value::str("foo"), Value::Nil]);
    set(
        &s,
        path![Value::Nil, "type", "int"],
        type_record(int, ints(&[0, 1, 2]), bad),
    )?;
    let pct = type_record(percent, ints(&[0, 55, 100]), ints(&[-1, 101]));
    set(&s, path![Value::Nil, "type", "int", "percent"], pct)?;
    let m = Value::map([("type", Value::str("int.percent"))]);
    set(&s, path![Value::Nil, "match", "one", "+", "two"], m)?;
    Ok(s)
}

#[test]
fn distkvs_typecheck_case_holds() -> Result<(), String> {
    let s = typed()?;
    set(&s, path!["one", "y", "two"], Value::Int(99))?;
    let e = set(&s, path!["one", "y", "two"], Value::Float(9.9)).unwrap_err();
    assert_eq!(e, "ValueError('9.9 is not a int')");
    let e = set(&s, path!["one", "y", "two"], Value::str("zoz")).unwrap_err();
    assert_eq!(e, "ValueError(\"'zoz' is not a int\")");
    let e = set(&s, path!["one", "y", "two"], Value::Int(101)).unwrap_err();
    assert_eq!(e, "ValueError('not a percentage')");
    set(&s, path!["one", "y"], Value::str("zoz"))?;
    assert_eq!(
        s.state()
            .entry(&path!["one", "y", "two"])
            .and_then(|e| e.data_cloned()),
        Some(Value::Int(99)),
        "a refused write changes nothing"
    );
    // Deleting checks `None`, which `int` refuses.
    let del = Change::Set {
        path: path!["one", "y", "two"],
        value: None,
    };
    assert!(s.commit(Road::Client, del).is_err());
    Ok(())
}

#[test]
fn bad_definitions_are_refused_with_distkvs_errors() -> Result<(), String> {
    let s = typed()?;
    let t = |name: &str| path![Value::Nil, "type", "int", name];
    let e = set(&s, t("x"), type_record(PERCENT, ints(&[5]), ints(&[101]))).unwrap_err();
    assert_eq!(e, "RuntimeError('Must have check-good values')");
    let e = set(&s, t("x"), type_record(PERCENT, ints(&[5, 6]), ints(&[]))).unwrap_err();
    assert_eq!(e, "RuntimeError('Must have check-bad values')");
    let e = set(
        &s,
        t("x"),
        type_record(PERCENT, ints(&[5, 200]), ints(&[101])),
    )
    .unwrap_err();
    assert_eq!(e, "ValueError('failed on good value 200')");
    let e = set(&s, t("x"), type_record(PERCENT, ints(&[5, 6]), ints(&[7]))).unwrap_err();
    assert_eq!(e, "ValueError('did not fail on 7')");
    // A bad example must pass the supertype (`int`) first.
    let bad = Value::Array(vec![Value::str("zz")]);
    let e = set(&s, t("x"), type_record(PERCENT, ints(&[5, 6]), bad)).unwrap_err();
    assert!(e.contains("is not a int"), "{e}");
    let py = "if not 0 <= value <= 100:\n    raise ValueError('x')\n";
    let e = set(&s, t("x"), type_record(py, ints(&[5, 6]), ints(&[101]))).unwrap_err();
    assert!(e.starts_with("SyntaxError("), "{e}");
    assert!(
        e.contains("the code at :n.type.int.x is not a Rhai script: "),
        "{e}"
    );
    let missing = Value::map([("type", Value::str("nope"))]);
    let e = set(&s, path![Value::Nil, "match", "z"], missing).unwrap_err();
    assert_eq!(e, "ClientError('This type does not exist')");
    Ok(())
}

#[test]
fn schemas_check_values_before_code() -> Result<(), String> {
    let s = store();
    let schema = Value::map([("type", Value::str("integer")), ("minimum", Value::Int(3))]);
    let rec = Value::map([
        ("schema", schema),
        ("good", ints(&[3, 5])),
        ("bad", Value::Array(vec![Value::str("x")])),
    ]);
    set(&s, path![Value::Nil, "type", "n"], rec)?;
    let m = Value::map([("type", Value::Path(path!["n"]))]);
    set(&s, path![Value::Nil, "match", "numbers", "#"], m)?;
    set(&s, path!["numbers", "a"], Value::Int(4))?;
    let e = set(&s, path!["numbers", "a"], Value::Int(2)).unwrap_err();
    assert!(e.starts_with("ValidationError("), "{e}");
    let e = set(&s, path!["numbers", "a"], Value::str("x")).unwrap_err();
    assert!(e.contains("is not of type"), "{e}");
    Ok(())
}

const DECODE: &str = "if type_of(value) != \"string\" { throw \"not a string\" } parse_int(value)";

fn codec_record() -> Value {
    codec_record_with(DECODE, "value.to_string()")
}

/// A codec record with these decode and encode texts, and DistKV's
/// acceptance tests of an int codec ("1" ↔ 1 in, 2 ↔ "2" out).
fn codec_record_with(decode: &str, encode: &str) -> Value {
    let pair = |a: Value, b: Value| Value::Array(vec![a, b]);
    Value::map([
        ("decode", Value::str(decode)),
        ("encode", Value::str(encode)),
        (
            "in",
            Value::Array(vec![pair(Value::str("1"), Value::Int(1))]),
        ),
        (
            "out",
            Value::Array(vec![pair(Value::Int(2), Value::str("2"))]),
        ),
    ])
}

/// DistKV's converter acceptance on `s`, whose codec `int` is defined:
/// conv `foo` on `inty.#` turns "10" into 10 and back; a user without it
/// sees 10.
fn converts_ints(s: &Store) -> Result<(), String> {
    let conv = Value::map([("codec", Value::str("int"))]);
    set(s, path![Value::Nil, "conv", "foo", "inty", "#"], conv)?;
    let st = s.state();
    let r = s.rules();
    let at = path!["inty", "x"];
    assert_eq!(
        r.decode(&st, Some("foo"), &at, Value::str("10")),
        Ok(Value::Int(10))
    );
    assert_eq!(
        r.encode(&st, Some("foo"), &at, Value::Int(10)),
        Ok(Value::str("10"))
    );
    assert_eq!(
        r.decode(&st, Some("foo"), &at, Value::Int(11))
            .unwrap_err()
            .0,
        "ValueError('not a string')"
    );
    assert_eq!(r.decode(&st, None, &at, Value::Int(11)), Ok(Value::Int(11)));
    Ok(())
}

#[test]
fn distkvs_convert_case_holds() -> Result<(), String> {
    let s = store();
    set(&s, path![Value::Nil, "codec", "int"], codec_record())?;
    converts_ints(&s)?;
    let (st, r, at) = (s.state(), s.rules(), path!["inty", "x"]);
    let top = path!["inty"];
    assert_eq!(
        r.decode(&st, Some("foo"), &top, Value::str("hello")),
        Ok(Value::str("hello"))
    );
    assert_eq!(r.decode(&st, Some("foo"), &at, Value::Nil), Ok(Value::Nil));
    Ok(())
}

#[test]
fn codec_tests_are_run_on_definition() {
    let s = store();
    let at = path![Value::Nil, "codec", "c"];
    let mut rec = codec_record();
    if let Value::Map(m) = &mut rec {
        m.retain(|(k, _)| k.as_str() != Some("in"));
    }
    let e = set(&s, at.clone(), rec).unwrap_err();
    assert_eq!(e, "RuntimeError('Must have tests for decoding')");
    let mut rec = codec_record();
    if let Value::Map(m) = &mut rec {
        m[2].1 = Value::Array(vec![Value::Array(vec![Value::str("1"), Value::Int(2)])]);
    }
    let e = set(&s, at.clone(), rec).unwrap_err();
    assert_eq!(
        e,
        "ValueError(\"Decoding at :n.codec.c: '1' got 1, not 2\")"
    );
    let mut rec = codec_record();
    if let Value::Map(m) = &mut rec {
        m[2].1 = Value::Array(vec![Value::Array(vec![Value::Int(1), Value::Int(1)])]);
    }
    let e = set(&s, at, rec).unwrap_err();
    assert_eq!(
        e,
        "ValueError(\"failed decoder at :n.codec.c on 1 with ValueError('not a string')\")"
    );
}

#[test]
fn a_changed_type_is_compiled_afresh() -> Result<(), String> {
    let s = typed()?;
    set(&s, path!["one", "y", "two"], Value::Int(100))?;
    let pct = type_record(
        "if value < 0 || value > 10 { throw \"not a tenth\" }",
        ints(&[0, 5]),
        ints(&[11]),
    );
    set(&s, path![Value::Nil, "type", "int", "percent"], pct)?;
    let e = set(&s, path!["one", "y", "two"], Value::Int(100)).unwrap_err();
    assert_eq!(e, "ValueError('not a tenth')");
    Ok(())
}
