//! DistKV's own Python type and codec code, run by an embedded CPython
//! (the `python` cargo feature).
//!
//! A record's code is compiled and run as DistKV 0.63.3 does it
//! (`moat.util.make_proc`): the text becomes the body of
//! `def _proc(value):`, and each run executes that definition with the
//! globals `entry`, `data` and `match` (type code) or `conv` (codecs),
//! then calls `_proc(value)`. The glue is plain Python (`prelude.py`).
//!
//! Values cross as DistKV's msgpack decoder hands them to that code:
//! `None`, `bool`, `int` (any size), `float`, `str`, `bytes`, arrays as
//! tuples, maps as `attrdict` (keys are attributes too), paths as `Path`
//! (a tuple subclass), other extension types as `ExtType(code, data)`;
//! `entry`, `match` and `conv` are small objects with `.path` and `.name`.
//! Results cross back: tuples and lists are arrays, `Path` a path,
//! `bytes`/`bytearray` byte strings, any `dict` a map; anything else is
//! refused.
//!
//! CPython cannot be sandboxed: this is for trusted code only (imports,
//! files and the network are open to it). What is limited: each run may
//! take at most [`MAX_STEPS`] trace events (calls and lines) and
//! `server.scripts.python_timeout` of wall-clock time, checked by a C-level
//! trace function that raises `Limit` (a `BaseException`, so that
//! `except Exception:` does not swallow it) in the code once either is
//! spent: an endless loop is stopped. A single long C-level operation
//! (`10 ** 10 ** 9`, `sum(range(10 ** 12))`) cannot be interrupted, and
//! memory is not limited. All runs share the interpreter's lock: while
//! one runs, others wait.

use std::cell::Cell;
use std::ffi::{c_int, CStr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use distkv_model::{Path, SharedStr, Value};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use super::code::Role;
use super::script::{Globals, ScriptError, MAX_SCRIPT_BYTES};

/// Trace events (function calls and lines) one run may take at most.
pub const MAX_STEPS: u64 = 1_000_000;

/// How often (in trace events) the clock is read.
const CLOCK_EVERY: u64 = 64;

impl Role {
    fn pattern_name(self) -> &'static str {
        match self {
            Role::Type => "match",
            Role::Codec => "conv",
        }
    }
}

/// Compiled Python code.
#[derive(Debug)]
pub struct PyCode {
    code: Py<PyAny>,
    role: Role,
    timeout: Duration,
}

/// The glue module, loaded once.
static PRELUDE: OnceLock<Py<PyModule>> = OnceLock::new();

/// The glue module. Threads racing to load it first each run the prelude
/// in a module of their own (not registered in `sys.modules`, where a
/// second load would run it again in the first one's module and replace
/// its `Limit` class under a running code's feet); all use the one kept.
fn prelude(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    if let Some(m) = PRELUDE.get() {
        return Ok(m.bind(py).clone());
    }
    let m = PyModule::new(py, "distkv_prelude")?;
    let builtins = py.import("builtins")?;
    let code = builtins.getattr("compile")?.call1((
        include_str!("prelude.py"),
        "distkv_prelude.py",
        "exec",
    ))?;
    builtins.getattr("exec")?.call1((code, m.dict()))?;
    let _ = PRELUDE.set(m.unbind());
    PRELUDE
        .get()
        .map(|m| m.bind(py).clone())
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("the prelude was not kept"))
}

impl PyCode {
    /// Compiles `src` (the code at `origin`) as DistKV does.
    pub fn compile(
        src: &str,
        origin: &Path,
        role: Role,
        timeout: Duration,
    ) -> Result<PyCode, ScriptError> {
        if src.len() > MAX_SCRIPT_BYTES {
            return Err(ScriptError::Compile(format!(
                "a script may have at most {MAX_SCRIPT_BYTES} bytes"
            )));
        }
        Python::attach(|py| {
            let failed = |e: PyErr| ScriptError::Compile(e.value(py).to_string());
            let make = prelude(py)
                .map_err(failed)?
                .getattr("make")
                .map_err(failed)?;
            let code = make
                .call1((src, origin.to_string()))
                .map_err(failed)?
                .unbind();
            Ok(PyCode {
                code,
                role,
                timeout,
            })
        })
    }

    /// Runs the code on `value` with the globals `g`; the result is the
    /// function's return value (`convert`: as a value, else ignored).
    pub fn run(&self, value: &Value, g: Globals<'_>, convert: bool) -> Result<Value, ScriptError> {
        Python::attach(|py| {
            let raised = |e: PyErr| exception(py, e);
            let m = prelude(py).map_err(raised)?;
            let names = PyDict::new(py);
            let entry = |p: Option<&[Value]>| -> PyResult<Bound<'_, PyAny>> {
                match p {
                    None => Ok(py.None().into_bound(py)),
                    Some(p) => m.getattr("Entry")?.call1((path_py(py, &m, p)?,)),
                }
            };
            let set = || -> PyResult<()> {
                names.set_item("entry", entry(g.entry)?)?;
                let data = match g.data {
                    None => py.None().into_bound(py),
                    Some(d) => to_py(py, &m, d)?,
                };
                names.set_item("data", data)?;
                names.set_item(self.role.pattern_name(), entry(g.pattern)?)?;
                Ok(())
            };
            set().map_err(raised)?;
            let value = to_py(py, &m, value).map_err(raised)?;
            let run = m.getattr("run").map_err(raised)?;
            let limit = m.getattr("Limit").map_err(raised)?;
            let out = traced(&limit, self.timeout, || {
                run.call1((self.code.bind(py), value, names))
            })
            .map_err(raised)?;
            if convert {
                from_py(&out, distkv_model::budget::MAX_NESTING)
            } else {
                Ok(Value::Nil)
            }
        })
    }
}

/// A Python exception as a script error: the budget's `Limit` is a
/// failure, anything else was raised by the code (its `repr`).
fn exception(py: Python<'_>, e: PyErr) -> ScriptError {
    let limit = PRELUDE
        .get()
        .and_then(|m| m.bind(py).getattr("Limit").ok())
        .is_some_and(|l| e.is_instance(py, &l));
    if limit {
        return ScriptError::Failed(e.value(py).to_string());
    }
    match e.value(py).repr() {
        Ok(r) => ScriptError::Raised(r.to_string()),
        Err(_) => ScriptError::Raised(e.to_string()),
    }
}

/// What is left of a run's budget (per thread: a run holds the
/// interpreter on its thread until it ends).
#[derive(Clone, Copy)]
struct Budget {
    steps: u64,
    deadline: Instant,
    /// The `Limit` class (kept alive by the prelude).
    limit: *mut ffi::PyObject,
}

thread_local! {
    static BUDGET: Cell<Option<Budget>> = const { Cell::new(None) };
}

/// Runs `f` with the trace function counting its steps and time.
fn traced<T>(limit: &Bound<'_, PyAny>, timeout: Duration, f: impl FnOnce() -> T) -> T {
    BUDGET.with(|b| {
        b.set(Some(Budget {
            steps: MAX_STEPS,
            deadline: Instant::now() + timeout,
            limit: limit.as_ptr(),
        }))
    });
    // SAFETY: the interpreter is attached on this thread (`limit` proves
    // it); the trace function only touches this thread's budget.
    unsafe { ffi::PyEval_SetTrace(Some(trace), std::ptr::null_mut()) };
    let out = f();
    // SAFETY: as above.
    unsafe { ffi::PyEval_SetTrace(None, std::ptr::null_mut()) };
    BUDGET.with(|b| b.set(None));
    out
}

static OUT_OF_STEPS: &CStr = c"the code ran too many steps";
static OUT_OF_TIME: &CStr = c"the code ran too long";

/// The C-level trace function: counts every event; on a call or a line
/// once the budget is spent, raises `Limit` in the code.
unsafe extern "C" fn trace(
    _obj: *mut ffi::PyObject,
    _frame: *mut ffi::PyFrameObject,
    what: c_int,
    _arg: *mut ffi::PyObject,
) -> c_int {
    BUDGET.with(|b| {
        let Some(mut budget) = b.get() else { return 0 };
        let spent = if budget.steps == 0 {
            Some(OUT_OF_STEPS)
        } else {
            budget.steps -= 1;
            let late = budget.steps % CLOCK_EVERY == 0 && Instant::now() >= budget.deadline;
            if late {
                // Stays spent: every later line raises again.
                budget.steps = 0;
            }
            late.then_some(OUT_OF_TIME)
        };
        b.set(Some(budget));
        match spent {
            Some(msg) if what == ffi::PyTrace_LINE || what == ffi::PyTrace_CALL => {
                // SAFETY: called by the interpreter with its lock held;
                // `limit` is a live exception class.
                unsafe { ffi::PyErr_SetString(budget.limit, msg.as_ptr()) };
                -1
            }
            _ => 0,
        }
    })
}

fn path_py<'py>(
    py: Python<'py>,
    m: &Bound<'py, PyModule>,
    p: &[Value],
) -> PyResult<Bound<'py, PyAny>> {
    let items = p
        .iter()
        .map(|v| to_py(py, m, v))
        .collect::<PyResult<Vec<_>>>()?;
    m.getattr("Path")?.call1((PyTuple::new(py, items)?,))
}

/// A value as DistKV's code sees it.
fn to_py<'py>(py: Python<'py>, m: &Bound<'py, PyModule>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Nil => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any(),
        Value::BigUint(b) => py
            .get_type::<PyInt>()
            .call_method1("from_bytes", (PyBytes::new(py, b), "big"))?,
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Bin(b) => PyBytes::new(py, b).into_any(),
        Value::Array(a) => {
            let items = a
                .iter()
                .map(|v| to_py(py, m, v))
                .collect::<PyResult<Vec<_>>>()?;
            PyTuple::new(py, items)?.into_any()
        }
        Value::Map(kv) => {
            let d = m.getattr("attrdict")?.call0()?;
            for (k, v) in kv {
                d.set_item(to_py(py, m, k)?, to_py(py, m, v)?)?;
            }
            d
        }
        Value::Path(p) => path_py(py, m, p)?,
        Value::Ext(code, data) => m
            .getattr("ExtType")?
            .call1((*code, PyBytes::new(py, data)))?,
    })
}

fn failed(msg: String) -> ScriptError {
    ScriptError::Failed(msg)
}

fn py_failed(e: PyErr) -> ScriptError {
    ScriptError::Failed(e.to_string())
}

/// The code's result as a value; at most `depth` levels deep.
fn from_py(o: &Bound<'_, PyAny>, depth: usize) -> Result<Value, ScriptError> {
    let py = o.py();
    let nested = || {
        depth.checked_sub(1).ok_or_else(|| {
            failed(format!(
                "the result nests more than {} levels",
                distkv_model::budget::MAX_NESTING
            ))
        })
    };
    if o.is_none() {
        return Ok(Value::Nil);
    }
    if let Ok(b) = o.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if o.is_instance_of::<PyInt>() {
        return int_value(o);
    }
    if let Ok(f) = o.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = o.cast::<PyString>() {
        let s = s.to_str().map_err(py_failed)?;
        if s.len() > SharedStr::MAX_LEN {
            return Err(failed(format!(
                "a string of {} bytes: 4 GiB at most",
                s.len()
            )));
        }
        return Ok(Value::str(s));
    }
    if let Ok(b) = o.cast::<PyBytes>() {
        return Ok(Value::Bin(b.as_bytes().into()));
    }
    if let Ok(b) = o.cast::<PyByteArray>() {
        return Ok(Value::Bin(b.to_vec().into()));
    }
    let m = prelude(py).map_err(py_failed)?;
    let class = |name: &str| m.getattr(name).map_err(py_failed);
    let elements = |o: &Bound<'_, PyAny>, depth: usize| -> Result<Vec<Value>, ScriptError> {
        let mut out = Vec::new();
        for x in o.try_iter().map_err(py_failed)? {
            out.push(from_py(&x.map_err(py_failed)?, depth)?);
        }
        Ok(out)
    };
    if o.is_instance(&class("Path")?).map_err(py_failed)? {
        return Ok(Value::Path(Path::new(elements(o, nested()?)?)));
    }
    if o.is_instance(&class("ExtType")?).map_err(py_failed)? {
        let code: i8 = o
            .getattr("code")
            .and_then(|c| c.extract())
            .map_err(py_failed)?;
        let data = o.getattr("data").map_err(py_failed)?;
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| failed("an ExtType's data must be bytes".into()))?;
        return Ok(Value::Ext(code, data.as_bytes().into()));
    }
    if o.is_instance_of::<PyTuple>() || o.is_instance_of::<PyList>() {
        return Ok(Value::Array(elements(o, nested()?)?));
    }
    if let Ok(d) = o.cast::<PyDict>() {
        let depth = nested()?;
        let mut out = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            out.push((from_py(&k, depth)?, from_py(&v, depth)?));
        }
        return Ok(Value::Map(out));
    }
    Err(failed(format!(
        "the code may not return a {}",
        o.get_type()
            .name()
            .map_or_else(|_| "?".into(), |n| n.to_string())
    )))
}

/// A Python `int`: 64 bits signed or unsigned, or a big unsigned one
/// (msgpack's ext 2); negative ones beyond 64 bits have no encoding.
fn int_value(o: &Bound<'_, PyAny>) -> Result<Value, ScriptError> {
    if let Ok(i) = o.extract::<i64>() {
        return Ok(Value::Int(i));
    }
    if let Ok(u) = o.extract::<u64>() {
        return Ok(Value::UInt(u));
    }
    let negative: bool = o
        .call_method1("__lt__", (0,))
        .and_then(|b| b.extract())
        .map_err(py_failed)?;
    if negative {
        return Err(failed(format!("{o} is too small to store")));
    }
    let bits: u64 = o
        .call_method0("bit_length")
        .and_then(|b| b.extract())
        .map_err(py_failed)?;
    let bytes = o
        .call_method1("to_bytes", (bits.div_ceil(8), "big"))
        .map_err(py_failed)?;
    let bytes = bytes
        .cast::<PyBytes>()
        .map_err(|_| failed("int.to_bytes returned no bytes".into()))?;
    Ok(Value::from_be_digits(bytes.as_bytes()))
}
