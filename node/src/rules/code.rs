//! A record's code in the language the node runs it in: Rhai
//! ([`super::script`], always there, sandboxed), or DistKV's own Python
//! ([`super::python`], with the `python` cargo feature, for trusted
//! migrations). `server.scripts.lang` chooses (docs/compat.md).
//!
//! The two keep their own contracts for type code: a Rhai script refuses
//! a value by `throw` or by ending in `false`; Python code, as in DistKV,
//! only by raising (its return value is ignored).

use distkv_model::{Path, Value};

use super::script::{Globals, Script, ScriptError};

/// The language of type and codec code (`server.scripts.lang`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lang {
    /// Rhai only (the default).
    #[default]
    Rhai,
    /// DistKV's Python only (the `python` feature).
    Python,
    /// Rhai if the text compiles as Rhai, else Python (the `python`
    /// feature).
    Auto,
}

impl Lang {
    /// Whether this build can run `self`.
    pub fn available(self) -> bool {
        self == Lang::Rhai || cfg!(feature = "python")
    }
}

/// How a node runs type and codec code (`server.scripts.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptSettings {
    /// The language.
    pub lang: Lang,
    /// Wall-clock time one Python run may take at most
    /// (`python_timeout`).
    pub python_timeout: std::time::Duration,
}

impl Default for ScriptSettings {
    fn default() -> ScriptSettings {
        ScriptSettings {
            lang: Lang::Rhai,
            python_timeout: std::time::Duration::from_secs(1),
        }
    }
}

/// What the code is for: it decides how a Python run's globals are
/// named (`match` or `conv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A type record's `code`.
    Type,
    /// A codec's `encode` or `decode`.
    Codec,
}

/// Compiled code.
#[derive(Debug)]
pub enum Code {
    /// A Rhai script.
    Rhai(Script),
    /// DistKV's Python code.
    #[cfg(feature = "python")]
    Python(super::python::PyCode),
}

/// Why code did not compile: the language tried last and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// The language's name.
    pub lang: &'static str,
    /// The compiler's message.
    pub message: String,
}

impl Code {
    /// Compiles `src`, the code at `origin`, in the language `s` chooses.
    pub fn compile(
        src: &str,
        origin: &Path,
        role: Role,
        s: ScriptSettings,
    ) -> Result<Code, CompileError> {
        let rhai = || {
            Script::compile(src)
                .map(Code::Rhai)
                .map_err(|e| CompileError {
                    lang: "Rhai",
                    message: e.to_string(),
                })
        };
        match s.lang {
            Lang::Rhai => rhai(),
            Lang::Python => python(src, origin, role, s),
            Lang::Auto => rhai().or_else(|_| python(src, origin, role, s)),
        }
    }

    /// Runs type code on `value`: whether it accepts it.
    pub fn accepts(&self, value: &Value, g: Globals<'_>) -> Result<bool, ScriptError> {
        match self {
            Code::Rhai(s) => Ok(s.run(value, g)? != Value::Bool(false)),
            #[cfg(feature = "python")]
            Code::Python(p) => p.run(value, g, false).map(|_| true),
        }
    }

    /// Runs codec code on `value`: the converted value.
    pub fn convert(&self, value: &Value, g: Globals<'_>) -> Result<Value, ScriptError> {
        match self {
            Code::Rhai(s) => s.run(value, g),
            #[cfg(feature = "python")]
            Code::Python(p) => p.run(value, g, true),
        }
    }
}

#[cfg(feature = "python")]
fn python(src: &str, origin: &Path, role: Role, s: ScriptSettings) -> Result<Code, CompileError> {
    super::python::PyCode::compile(src, origin, role, s.python_timeout)
        .map(Code::Python)
        .map_err(|e| CompileError {
            lang: "Python",
            message: e.to_string(),
        })
}

#[cfg(not(feature = "python"))]
fn python(_: &str, _: &Path, _: Role, _: ScriptSettings) -> Result<Code, CompileError> {
    Err(CompileError {
        lang: "Python",
        message: "this node was built without the `python` feature".into(),
    })
}
