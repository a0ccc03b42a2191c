//! DistKV's own Python type and codec code (the `python` feature), through
//! the commit path: the same acceptance cases as the Rhai ones, the
//! values as DistKV's code sees them, and hostile code stopped.

use std::time::Duration;

use super::*;
use crate::rules::code::Lang;

fn python() -> Store {
    python_with(ScriptSettings::default().python_timeout)
}

fn python_with(timeout: Duration) -> Store {
    store_with(ScriptSettings {
        lang: Lang::Python,
        python_timeout: timeout,
    })
}

const PY_INT: &str = "if not isinstance(value, int):\n    raise ValueError(\"not an int\")\n";
const PY_PERCENT: &str = "if value < 0 or value > 100:\n    raise ValueError(\"not a percentage\")";

/// DistKV's typecheck acceptance in Python: `int`, `int.percent`,
/// `one.+.two`.
fn py_typed() -> Result<Store, String> {
    typed_with(python(), PY_INT, PY_PERCENT)
}

#[test]
fn python_types_check_values_as_distkv_does() -> Result<(), String> {
    let s = py_typed()?;
    set(&s, path!["one", "y", "two"], Value::Int(99))?;
    let e = set(&s, path!["one", "y", "two"], Value::Float(9.9)).unwrap_err();
    assert_eq!(e, "ValueError('not an int')");
    let e = set(&s, path!["one", "y", "two"], Value::Int(101)).unwrap_err();
    assert_eq!(e, "ValueError('not a percentage')");
    assert_eq!(
        s.state()
            .entry(&path!["one", "y", "two"])
            .and_then(|e| e.data_cloned()),
        Some(Value::Int(99)),
        "a refused write changes nothing"
    );
    Ok(())
}

#[test]
fn python_definitions_are_checked_with_distkvs_errors() -> Result<(), String> {
    let s = py_typed()?;
    let t = |name: &str| path![Value::Nil, "type", "int", name];
    let e = set(
        &s,
        t("x"),
        type_record(PY_PERCENT, ints(&[5, 200]), ints(&[101])),
    )
    .unwrap_err();
    assert_eq!(e, "ValueError('failed on good value 200')");
    let e = set(
        &s,
        t("x"),
        type_record(PY_PERCENT, ints(&[5, 6]), ints(&[7])),
    )
    .unwrap_err();
    assert_eq!(e, "ValueError('did not fail on 7')");
    let e = set(
        &s,
        t("x"),
        type_record("if value <:\n", ints(&[5, 6]), ints(&[7])),
    )
    .unwrap_err();
    assert!(e.starts_with("SyntaxError("), "{e}");
    assert!(
        e.contains("the code at :n.type.int.x is not a Python script: invalid syntax"),
        "{e}"
    );
    // As in DistKV, only raising refuses: a result is ignored.
    let e = set(
        &s,
        t("x"),
        type_record("return False", ints(&[5, 6]), ints(&[7])),
    )
    .unwrap_err();
    assert_eq!(e, "ValueError('did not fail on 7')");
    Ok(())
}

#[test]
fn python_code_sees_distkvs_globals_and_values() -> Result<(), String> {
    let s = python();
    // `entry` is None while the examples are tested; `data` is the record
    // (an attrdict); `match` the governing match entry (its path is the
    // whole one, as DistKV's entries have it).
    let code = "if entry is not None:\n    \
        assert match.path == (None, 'match', 'm', '#'), match.path\n    \
        assert entry.path[0] == 'm' and entry.name == entry.path[-1]\n    \
        assert type(entry.path).__name__ == 'Path'\n\
        assert data.good[0] == {'a': (1, b'x')}\n\
        assert value['a'][1] == b'x'\n\
        assert value.a[0] > 0, 'not positive'";
    let good = |n: i64| {
        Value::Map(vec![(
            Value::str("a"),
            Value::Array(vec![Value::Int(n), Value::Bin(Arc::from(&b"x"[..]))]),
        )])
    };
    let rec = type_record(
        code,
        Value::Array(vec![good(1), good(2)]),
        Value::Array(vec![good(-1)]),
    );
    set(&s, path![Value::Nil, "type", "pair"], rec)?;
    let m = Value::map([("type", Value::str("pair"))]);
    set(&s, path![Value::Nil, "match", "m", "#"], m)?;
    set(&s, path!["m", "x", "y"], good(3))?;
    let e = set(&s, path!["m", "x"], good(0)).unwrap_err();
    assert_eq!(e, "AssertionError('not positive')");
    Ok(())
}

/// Runs Python `code` as a codec would, on `value`.
fn convert(code: &str, value: &Value) -> Result<Value, ScriptError> {
    let s = ScriptSettings {
        lang: Lang::Python,
        ..ScriptSettings::default()
    };
    let c = Code::compile(code, &path!["c"], Role::Codec, s).map_err(|e| {
        ScriptError::Compile(e.message) // (only for the assertions)
    })?;
    c.convert(value, Globals::default())
}

#[test]
fn values_cross_to_python_and_back() {
    let big = Value::from_be_digits(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let v = Value::Array(vec![
        Value::Nil,
        Value::Bool(true),
        Value::Int(-5),
        Value::UInt(u64::MAX),
        big.clone(),
        Value::Float(1.5),
        Value::str("é"),
        Value::Bin(Arc::from(&b"\x00\xff"[..])),
        Value::Path(path!["a", Value::Int(1)]),
        Value::Ext(7, Arc::from(&b"e"[..])),
        Value::Map(vec![(Value::Int(1), Value::str("one"))]),
    ]);
    assert_eq!(convert("return value", &v), Ok(v.clone()));
    let kinds = "return [type(x).__name__ for x in value]";
    let want = [
        "NoneType", "bool", "int", "int", "int", "float", "str", "bytes", "Path", "ExtType",
        "attrdict",
    ];
    assert_eq!(
        convert(kinds, &v),
        Ok(Value::Array(want.iter().map(|k| Value::str(k)).collect()))
    );
    assert_eq!(
        convert("return value == 2**72", &big),
        Ok(Value::Bool(true))
    );
    assert_eq!(convert("return 2**72", &Value::Nil), Ok(big));
    assert_eq!(
        convert("return bytearray(b'ab')", &Value::Nil),
        Ok(Value::Bin(Arc::from(&b"ab"[..])))
    );
    let e = convert("return -2**70", &Value::Nil).unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
    let e = convert("return object()", &Value::Nil).unwrap_err();
    assert_eq!(
        e,
        ScriptError::Failed("the code may not return a object".into())
    );
    let e = convert(
        "a = []\nfor _ in range(300):\n    a = [a]\nreturn a",
        &Value::Nil,
    )
    .unwrap_err();
    assert!(e.to_string().contains("nests"), "{e}");
    let e = convert("raise KeyError('k')", &Value::Nil).unwrap_err();
    assert_eq!(e, ScriptError::Raised("KeyError('k')".into()));
}

const PY_DECODE: &str =
    "if not isinstance(value, str):\n    raise ValueError('not a string')\nreturn int(value)";

#[test]
fn python_codecs_convert_as_distkvs_do() -> Result<(), String> {
    let s = python();
    let rec = |dec: &str| codec_record_with(dec, "return str(value)");
    let e = set(&s, path![Value::Nil, "codec", "c"], rec("return value")).unwrap_err();
    assert_eq!(
        e,
        "ValueError(\"Decoding at :n.codec.c: '1' got '1', not 1\")"
    );
    let e = set(&s, path![Value::Nil, "codec", "c"], rec("return 1 // 0")).unwrap_err();
    assert_eq!(
        e,
        "ValueError(\"failed decoder at :n.codec.c on '1' with ZeroDivisionError('integer division or modulo by zero')\")"
    );
    set(&s, path![Value::Nil, "codec", "int"], rec(PY_DECODE))?;
    converts_ints(&s)
}

#[test]
fn auto_runs_rhai_first_then_python() -> Result<(), String> {
    let s = store_with(ScriptSettings {
        lang: Lang::Auto,
        ..ScriptSettings::default()
    });
    let bad = Value::Array(vec![Value::str("foo")]);
    // Rhai: ending in `false` refuses.
    set(
        &s,
        path![Value::Nil, "type", "int"],
        type_record(INT, ints(&[0, 1]), bad),
    )?;
    set(
        &s,
        path![Value::Nil, "type", "int", "pct"],
        type_record(PY_PERCENT, ints(&[0, 1]), ints(&[101])),
    )?;
    let m = Value::map([("type", Value::str("int.pct"))]);
    set(&s, path![Value::Nil, "match", "p"], m)?;
    let e = set(&s, path!["p"], Value::str("x")).unwrap_err();
    assert_eq!(e, "ValueError(\"'x' is not a int\")");
    let e = set(&s, path!["p"], Value::Int(101)).unwrap_err();
    assert_eq!(e, "ValueError('not a percentage')");
    let e = set(
        &s,
        path![Value::Nil, "type", "z"],
        type_record("if value <:", ints(&[0, 1]), ints(&[2])),
    )
    .unwrap_err();
    assert!(e.contains("is not a Python script"), "{e}");
    Ok(())
}

/// A type whose code never ends for 13, and one that tries to swallow
/// the stop (a bare `except:`).
fn hostile(s: &Store) -> Result<(), String> {
    let endless = "if value == 13:\n    while True:\n        pass\nif value < 0:\n    raise ValueError('neg')";
    let swallow = "while value == 13:\n    try:\n        while True:\n            pass\n    except:\n        pass\nif value < 0:\n    raise ValueError('neg')";
    for (name, code) in [("endless", endless), ("swallow", swallow)] {
        set(
            s,
            path![Value::Nil, "type", name],
            type_record(code, ints(&[1, 2]), ints(&[-1])),
        )?;
        let m = Value::map([("type", Value::str(name))]);
        set(s, path![Value::Nil, "match", name], m)?;
    }
    Ok(())
}

#[test]
fn endless_python_code_is_stopped() -> Result<(), String> {
    // Time enough that the steps, not the clock, stop it.
    let s = python_with(Duration::from_secs(60));
    hostile(&s)?;
    for name in ["endless", "swallow"] {
        let e = set(&s, path![name], Value::Int(13)).unwrap_err();
        assert!(e.starts_with("RuntimeError("), "{e}");
        assert!(e.contains("the code ran too many steps"), "{name}: {e}");
        set(&s, path![name], Value::Int(5))?;
    }
    Ok(())
}

#[test]
fn slow_python_code_is_stopped_by_the_clock() -> Result<(), String> {
    let s = python_with(Duration::from_millis(50));
    // Few steps, each slow: the clock stops it long before the steps do.
    let slow = "if value == 13:\n    while True:\n        sum(range(100000))\n\
        if not isinstance(value, int):\n    raise ValueError('x')";
    set(
        &s,
        path![Value::Nil, "type", "slow"],
        type_record(slow, ints(&[1, 2]), Value::Array(vec![Value::str("x")])),
    )?;
    let m = Value::map([("type", Value::str("slow"))]);
    set(&s, path![Value::Nil, "match", "slow"], m)?;
    let e = set(&s, path!["slow"], Value::Int(13)).unwrap_err();
    assert!(e.contains("the code ran too long"), "{e}");
    set(&s, path!["slow"], Value::Int(5))?;
    Ok(())
}
