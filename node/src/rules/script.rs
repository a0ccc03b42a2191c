//! Type and codec scripts: Rhai, sandboxed.
//!
//! DistKV stores Python code in type records (`code`) and codecs
//! (`encode`, `decode`) and runs it inside the server. We run Rhai
//! instead: a small interpreted language with no access to files, the
//! network, the clock or other modules (the engine is built without a
//! module resolver and without `eval`), and with hard limits on what one
//! run may do ([`LIMITS`]), so that a hostile script can neither hang nor
//! exhaust a node: it is stopped with an error.
//!
//! The contract (docs/compat.md, "Types" and "Codecs and converters"):
//!
//! * A script is a body, run with the variables `value` (the value
//!   checked or converted), `entry` (the path of the entry concerned, an
//!   array of its elements, or `()` while a definition's examples are
//!   tested), `data` (the type or codec record) and `pattern` (the path of
//!   the `match` or `conv` entry that chose the type or codec, or `()`).
//! * A type script refuses a value by `throw` (the thrown text is the
//!   error) or by ending in `false`; anything else accepts it.
//! * A codec script's result (its last expression, or `return x`) is the
//!   converted value.
//!
//! With the `python` cargo feature a node can run DistKV's own Python
//! code instead, unconfined, for trusted migrations ([`super::python`],
//! chosen by [`super::code::Lang`]).
//!
//! Values cross over as Rhai sees them: `None` is `()`, integers beyond
//! 64 bits become floats, byte strings blobs, paths arrays, and map keys
//! strings (a non-string key is written as its Python repr).

use std::sync::{Arc, LazyLock};

use distkv_model::Value;
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, Map, Scope, AST};

/// What one script run may do at most.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Operations (each expression step counts).
    pub operations: u64,
    /// Nested function calls.
    pub call_levels: usize,
    /// Nesting of expressions (and of function bodies) when compiling.
    pub expr_depth: usize,
    /// Bytes of all strings in one value.
    pub string_bytes: usize,
    /// Elements of all arrays (and blobs) in one value.
    pub array_items: usize,
    /// Entries of all maps in one value.
    pub map_items: usize,
    /// Variables alive at once.
    pub variables: usize,
    /// Nesting of a value the script returns (the node's budget for a
    /// stored value).
    pub value_depth: usize,
}

/// The limits every script runs with.
pub const LIMITS: Limits = Limits {
    operations: 200_000,
    call_levels: 32,
    expr_depth: 64,
    string_bytes: 1 << 20,
    array_items: 65_536,
    map_items: 65_536,
    variables: 1_000,
    value_depth: distkv_model::budget::MAX_NESTING,
};

/// Bytes of script text compiled at most.
pub const MAX_SCRIPT_BYTES: usize = 64 << 10;

static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    let mut e = Engine::new();
    let l = LIMITS;
    e.set_max_operations(l.operations)
        .set_max_call_levels(l.call_levels)
        .set_max_expr_depths(l.expr_depth, l.expr_depth)
        .set_max_string_size(l.string_bytes)
        .set_max_array_size(l.array_items)
        .set_max_map_size(l.map_items)
        .set_max_variables(l.variables);
    // No output from a node's scripts, and no run-time compilation.
    e.on_print(|_| {});
    e.on_debug(|_, _, _| {});
    e.disable_symbol("eval");
    e
});

/// A compiled script.
#[derive(Debug, Clone)]
pub struct Script(Arc<AST>);

/// Why a script failed to compile or to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The text is no Rhai script (e.g. DistKV's Python code).
    #[error("{0}")]
    Compile(String),
    /// The script threw this (its text).
    #[error("{0}")]
    Thrown(String),
    /// It failed otherwise: a limit, a type error, an unknown function.
    #[error("{0}")]
    Failed(String),
    /// Python code raised this exception (its `repr`, e.g.
    /// `ValueError('neg')`; the `python` feature).
    #[error("{0}")]
    Raised(String),
}

/// What a script sees besides `value`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Globals<'a> {
    /// The entry's path.
    pub entry: Option<&'a [Value]>,
    /// The type or codec record.
    pub data: Option<&'a Value>,
    /// The governing `match` / `conv` entry's path.
    pub pattern: Option<&'a [Value]>,
}

impl Script {
    /// Compiles `src`.
    pub fn compile(src: &str) -> Result<Script, ScriptError> {
        if src.len() > MAX_SCRIPT_BYTES {
            return Err(ScriptError::Compile(format!(
                "a script may have at most {MAX_SCRIPT_BYTES} bytes"
            )));
        }
        ENGINE
            .compile(src)
            .map(|ast| Script(Arc::new(ast)))
            .map_err(|e| ScriptError::Compile(e.to_string()))
    }

    /// Runs the script on `value`.
    pub fn run(&self, value: &Value, g: Globals<'_>) -> Result<Value, ScriptError> {
        let mut scope = Scope::new();
        scope.push("value", to_dynamic(value));
        scope.push("entry", g.entry.map_or(Dynamic::UNIT, path_dynamic));
        scope.push("data", g.data.map_or(Dynamic::UNIT, to_dynamic));
        scope.push("pattern", g.pattern.map_or(Dynamic::UNIT, path_dynamic));
        let out = ENGINE
            .eval_ast_with_scope::<Dynamic>(&mut scope, &self.0)
            .map_err(|e| run_error(*e))?;
        from_dynamic(out, LIMITS.value_depth)
    }
}

fn run_error(e: EvalAltResult) -> ScriptError {
    match e {
        EvalAltResult::ErrorRuntime(d, _) => ScriptError::Thrown(match d.clone().into_string() {
            Ok(s) => s,
            Err(_) => d.to_string(),
        }),
        e => ScriptError::Failed(e.to_string()),
    }
}

fn path_dynamic(p: &[Value]) -> Dynamic {
    Dynamic::from_array(p.iter().map(to_dynamic).collect())
}

/// A value as a script sees it.
pub fn to_dynamic(v: &Value) -> Dynamic {
    match v {
        Value::Nil => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Int(i) => Dynamic::from_int(*i),
        Value::UInt(u) => Dynamic::from_float(*u as f64),
        Value::BigUint(b) => Dynamic::from_float(b.iter().fold(0.0, |a, &d| a * 256.0 + d as f64)),
        Value::Float(f) => Dynamic::from_float(*f),
        Value::Str(s) => Dynamic::from(s.to_string()),
        Value::Bin(b) | Value::Ext(_, b) => Dynamic::from_blob(b.to_vec()),
        Value::Array(a) => Dynamic::from_array(a.iter().map(to_dynamic).collect()),
        Value::Path(p) => path_dynamic(p),
        Value::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let k = match k {
                    Value::Str(s) => s.to_string(),
                    k => k.to_string(),
                };
                out.insert(k.into(), to_dynamic(v));
            }
            Dynamic::from_map(out)
        }
    }
}

/// A script's result as a value; at most `depth` levels deep.
pub fn from_dynamic(d: Dynamic, depth: usize) -> Result<Value, ScriptError> {
    let d = d.flatten();
    let nested = |what: &str| {
        if depth == 0 {
            Err(ScriptError::Failed(format!(
                "the result nests more than {} levels ({what})",
                LIMITS.value_depth
            )))
        } else {
            Ok(depth - 1)
        }
    };
    if d.is_unit() {
        return Ok(Value::Nil);
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = d.as_int() {
        return Ok(Value::Int(i));
    }
    if let Ok(f) = d.as_float() {
        return Ok(Value::Float(f));
    }
    if let Ok(c) = d.as_char() {
        return Ok(Value::str(&c.to_string()));
    }
    if d.is_string() {
        let s = d
            .into_immutable_string()
            .map_err(|t| ScriptError::Failed(t.into()))?;
        return Ok(Value::str(&s));
    }
    if d.is_blob() {
        let b = d.cast::<Blob>();
        return Ok(Value::Bin(b.into()));
    }
    if d.is_array() {
        let depth = nested("array")?;
        let a = d.cast::<Array>();
        return a
            .into_iter()
            .map(|x| from_dynamic(x, depth))
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if d.is_map() {
        let depth = nested("map")?;
        let m = d.cast::<Map>();
        return m
            .into_iter()
            .map(|(k, v)| Ok((Value::str(&k), from_dynamic(v, depth)?)))
            .collect::<Result<_, _>>()
            .map(Value::Map);
    }
    Err(ScriptError::Failed(format!(
        "a script may not return a {}",
        d.type_name()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, v: Value) -> Result<Value, ScriptError> {
        Script::compile(src)?.run(&v, Globals::default())
    }

    #[test]
    fn a_codec_script_converts() {
        let dec = "if type_of(value) != \"string\" { throw \"not a string\" } parse_int(value)";
        assert_eq!(run(dec, Value::str("10")), Ok(Value::Int(10)));
        assert_eq!(
            run(dec, Value::Int(11)),
            Err(ScriptError::Thrown("not a string".into()))
        );
        assert_eq!(
            run("value.to_string()", Value::Int(10)),
            Ok(Value::str("10"))
        );
    }

    #[test]
    fn values_cross_over_and_back() {
        let v = Value::map([
            (
                "a",
                Value::Array(vec![Value::Nil, Value::Bool(true), Value::Float(1.5)]),
            ),
            ("b", Value::Bin(Arc::from(&b"xy"[..]))),
        ]);
        assert_eq!(run("value", v.clone()), Ok(v));
        assert_eq!(run("data", Value::Nil), Ok(Value::Nil));
    }

    #[test]
    fn python_code_does_not_compile() {
        let py = "if not 0 <= value <= 100:\n    raise ValueError(\"not a percentage\")\n";
        assert!(matches!(Script::compile(py), Err(ScriptError::Compile(_))));
    }

    #[test]
    fn hostile_scripts_are_stopped() {
        let endless = run("loop { }", Value::Nil).unwrap_err();
        assert!(
            endless.to_string().contains("Too many operations"),
            "{endless}"
        );
        let deep = run("fn f(x) { f(x + 1) } f(0)", Value::Nil).unwrap_err();
        assert!(deep.to_string().contains("Stack overflow"), "{deep}");
        let huge = run("let s = \"x\"; loop { s += s; }", Value::Nil).unwrap_err();
        assert!(huge.to_string().contains("too large"), "{huge}");
        let nested = run("let a = []; for i in 0..300 { a = [a]; } a", Value::Nil).unwrap_err();
        assert!(nested.to_string().contains("nests"), "{nested}");
        assert!(Script::compile("eval(\"1\")").is_err());
    }
}
