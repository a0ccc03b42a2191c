//! Data rules: types (checks of values) and codecs (conversion of values
//! between a client and the tree), as DistKV keeps them in its meta tree.
//!
//! * `(None,"type",T…)` holds a type record `{good, bad, schema?, code?}`;
//!   `(None,"match",P…)` patterns point a subtree at a type
//!   (`{type: PATH}`). Types nest: `int.percent` is checked by `int`
//!   first.
//! * `(None,"codec",C…)` holds a codec `{encode, decode, in, out}`;
//!   `(None,"conv",GROUP,P…)` patterns point a subtree at a codec
//!   (`{codec: PATH}`) for the users bound to `GROUP` at login.
//!
//! Definitions and user-tree writes are checked in the commit path by
//! [`TypeRules`] (clients' `set_value`, `delete_value` and `update`;
//! other nodes' events, transfers and loaded files were checked where
//! they were made). Conversion happens beside it, in the request
//! handlers and streams ([`DataRules::decode`], [`DataRules::encode`]).
//!
//! Records are ordinary meta-tree entries: they replicate, persist and
//! show in the history like any data. What they compile to (JSON
//! schemas, [`script`]s) is cached per node, keyed by the record's path
//! and the event that wrote it (its chain's head and tock), so a changed
//! record is compiled afresh.
//!
//! Code is Rhai, or with the `python` feature DistKV's own Python as
//! `server.scripts.lang` chooses ([`code`]).

pub mod code;
#[cfg(feature = "python")]
pub mod python;
pub mod schema;
pub mod script;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use distkv_model::{Path, SharedStr, Value};
use parking_lot::Mutex;

use crate::commit::{CommitHook, Denied, Proposal, Road};
use crate::state::pattern::best_match;
use crate::state::{Entry, State};
use code::{Code, Role, ScriptSettings};
use schema::Schema;
use script::{Globals, ScriptError};

/// Compiled records kept at most (per kind); beyond it the cache starts
/// afresh.
const MAX_CACHED: usize = 4096;

/// The event that wrote a record: its chain's head and its tock.
type Version = (SharedStr, u64, u64);

/// A type record, compiled.
#[derive(Debug)]
struct TypeCheck {
    schema: Option<Schema>,
    code: Option<Code>,
}

/// A codec, compiled.
#[derive(Debug)]
struct Codec {
    encode: Option<Code>,
    decode: Option<Code>,
}

/// A record that could not be compiled: refused whenever it is used.
type Compiled<T> = Result<Arc<T>, Denied>;

/// A node's data rules and their compiled records (see the module docs).
#[derive(Default)]
pub struct DataRules {
    settings: ScriptSettings,
    types: Mutex<HashMap<Path, (Version, Compiled<TypeCheck>)>>,
    codecs: Mutex<HashMap<Path, (Version, Compiled<Codec>)>>,
}

impl DataRules {
    /// Rules whose code runs as `settings` say.
    pub fn new(settings: ScriptSettings) -> DataRules {
        DataRules {
            settings,
            ..DataRules::default()
        }
    }
}

impl std::fmt::Debug for DataRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataRules").finish_non_exhaustive()
    }
}

/// The commit hook of the data rules; every node built by
/// [`crate::node::NodeBuilder`] has it, after [`crate::commit::MetaRules`].
#[derive(Debug, Clone, Default)]
pub struct TypeRules(pub Arc<DataRules>);

impl CommitHook for TypeRules {
    fn check(&self, road: Road, proposal: Proposal<'_>, st: &State) -> Result<(), Denied> {
        if !matches!(road, Road::Client | Road::Update) {
            return Ok(());
        }
        let (path, value) = match proposal {
            Proposal::Set { path, value } => (path, value),
            Proposal::Event(ev) => (&ev.path, ev.value.as_ref()),
            Proposal::DeleteTree { .. } => return Ok(()),
        };
        self.0.check(st, path, value)
    }
}

fn meta(elems: &[&str]) -> Vec<Value> {
    std::iter::once(Value::Nil)
        .chain(elems.iter().map(|e| Value::str(e)))
        .collect()
}

fn value_error(msg: &str) -> Denied {
    Denied::python("ValueError", &[Value::str(msg)])
}

fn runtime_error(msg: &str) -> Denied {
    Denied::python("RuntimeError", &[Value::str(msg)])
}

/// A path given as a path, an array of elements or a path string.
fn as_path(v: &Value) -> Option<Path> {
    match v {
        Value::Path(p) => Some(p.clone()),
        Value::Array(a) => Some(Path::new(a.clone())),
        Value::Str(s) => Path::parse(s).ok(),
        _ => None,
    }
}

/// A record's list field (`good`, `in`, …); missing or `None`: empty.
fn list<'a>(record: &'a Value, key: &str) -> Result<&'a [Value], Denied> {
    match record.get(key) {
        None | Some(Value::Nil) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(value_error(&format!(
            "{key} must be a list, not {}",
            v.type_name()
        ))),
    }
}

/// A record's field that is set and not `None`.
fn field<'a>(record: &'a Value, key: &str) -> Option<&'a Value> {
    record.get(key).filter(|v| !v.is_nil())
}

fn version(e: Entry<'_>) -> Option<Version> {
    let chain = e.chain()?;
    let head = chain.head();
    Some((head.node.clone(), head.tick, e.tock()))
}

/// Looks `e` up in `cache`, compiling its record with `make` if the
/// cached one is missing or older.
fn cached<T>(
    cache: &Mutex<HashMap<Path, (Version, Compiled<T>)>>,
    e: Entry<'_>,
    make: impl FnOnce(&Value) -> Compiled<T>,
) -> Option<Compiled<T>> {
    let record = e.data()?;
    let Some(ver) = version(e) else {
        return Some(make(&record));
    };
    let mut c = cache.lock();
    if let Some((v, compiled)) = c.get(&e.path()) {
        if *v == ver {
            return Some(compiled.clone());
        }
    }
    let compiled = make(&record);
    if c.len() >= MAX_CACHED {
        c.clear();
    }
    c.insert(e.path(), (ver, compiled.clone()));
    Some(compiled)
}

fn compile_script(
    path: &[Value],
    what: &str,
    src: &Value,
    role: Role,
    s: ScriptSettings,
) -> Result<Code, Denied> {
    let at = Path::new(path.to_vec());
    let Value::Str(src) = src else {
        return Err(value_error(&format!(
            "the {what} at {at} must be a string (a script), not {}",
            src.type_name()
        )));
    };
    Code::compile(src, &at, role, s).map_err(|e| {
        Denied::python(
            "SyntaxError",
            &[Value::str(&format!(
                "the {what} at {at} is not a {} script: {}",
                e.lang, e.message
            ))],
        )
    })
}

fn compile_type(path: &[Value], record: &Value, s: ScriptSettings) -> Compiled<TypeCheck> {
    if record.as_map().is_none() {
        return Err(value_error("A type record must be a map"));
    }
    let schema = match field(record, "schema") {
        None => None,
        Some(s) => {
            Some(Schema::compile(s).map_err(|e| Denied::python("SchemaError", &[Value::str(&e)]))?)
        }
    };
    let code = match field(record, "code") {
        None => None,
        Some(src) => Some(compile_script(path, "code", src, Role::Type, s)?),
    };
    Ok(Arc::new(TypeCheck { schema, code }))
}

fn compile_codec(path: &[Value], record: &Value, s: ScriptSettings) -> Compiled<Codec> {
    if record.as_map().is_none() {
        return Err(value_error("A codec must be a map"));
    }
    let script = |k: &str| {
        field(record, k)
            .map(|src| compile_script(path, k, src, Role::Codec, s))
            .transpose()
    };
    Ok(Arc::new(Codec {
        encode: script("encode")?,
        decode: script("decode")?,
    }))
}

impl TypeCheck {
    /// Checks `value`: the schema first, then the code.
    fn check(&self, value: &Value, g: Globals<'_>, typ: &[Value]) -> Result<(), Denied> {
        if let Some(s) = &self.schema {
            s.check(value)
                .map_err(|e| Denied::python("ValidationError", &[Value::str(&e)]))?;
        }
        if let Some(code) = &self.code {
            match code.accepts(value, g) {
                Ok(false) => {
                    return Err(value_error(&format!(
                        "{value} is not a {}",
                        Path::new(typ[2..].to_vec())
                    )))
                }
                Ok(true) => {}
                Err(ScriptError::Thrown(t)) => return Err(value_error(&t)),
                Err(ScriptError::Raised(r)) => return Err(Denied(r)),
                Err(e) => {
                    return Err(runtime_error(&format!(
                        "the code of type {} failed: {e}",
                        Path::new(typ[2..].to_vec())
                    )))
                }
            }
        }
        Ok(())
    }
}

impl DataRules {
    /// Checks a client's change: a definition in the meta tree, or a value
    /// (`None`: a deletion) in the user tree against its type.
    pub fn check(&self, st: &State, path: &[Value], value: Option<&Value>) -> Result<(), Denied> {
        match path {
            [Value::Nil, Value::Str(root), rest @ ..] if !rest.is_empty() => {
                let Some(value) = value else { return Ok(()) };
                match &**root {
                    "type" => self.check_type_record(st, path, value),
                    "match" => check_match_record(st, value),
                    "codec" => check_codec_record(path, value, self.settings),
                    "conv" if rest.len() >= 2 => check_conv_record(value),
                    _ => Ok(()),
                }
            }
            [Value::Nil, ..] => Ok(()),
            _ => self.check_value(st, path, value),
        }
    }

    /// Checks `value` at the user-tree `path` against the type its most
    /// specific `match` names, if any.
    fn check_value(&self, st: &State, path: &[Value], value: Option<&Value>) -> Result<(), Denied> {
        // Asked for every write: the common case (no matches) allocates
        // nothing.
        static MATCH: LazyLock<[Value; 2]> = LazyLock::new(|| [Value::Nil, Value::str("match")]);
        let Some(root) = st.entry(&*MATCH) else {
            return Ok(());
        };
        let Some(m) = best_match(root, path) else {
            return Ok(());
        };
        let Some(typ) = m.data().and_then(|d| d.get("type")).and_then(as_path) else {
            return Ok(());
        };
        let mut at = meta(&["type"]);
        at.extend(typ.iter().cloned());
        let g = Globals {
            entry: Some(path),
            data: None,
            pattern: Some(&m.path()),
        };
        self.check_chain(st, &at, at.len(), value.unwrap_or(&Value::Nil), g)
    }

    /// Checks `value` against the types `(None,"type",…)` along `typ`,
    /// outermost first, down to (and including) level `upto` of it.
    fn check_chain(
        &self,
        st: &State,
        typ: &[Value],
        upto: usize,
        value: &Value,
        g: Globals<'_>,
    ) -> Result<(), Denied> {
        for n in 3..=upto {
            let Some(e) = st.entry(&typ[..n]) else { break };
            let compile = |r: &Value| compile_type(&typ[..n], r, self.settings);
            let Some(check) = cached(&self.types, e, compile) else {
                continue;
            };
            let record = e.data();
            let g = Globals {
                data: record.as_deref(),
                ..g
            };
            check?.check(value, g, &typ[..n])?;
        }
        Ok(())
    }

    /// A type record: with `schema` or `code`, at least two good and one
    /// bad example; every example passes the supertypes; the good pass
    /// the record's own checks, the bad fail them.
    fn check_type_record(&self, st: &State, path: &[Value], record: &Value) -> Result<(), Denied> {
        let check = compile_type(path, record, self.settings)?;
        if check.schema.is_none() && check.code.is_none() {
            return Ok(());
        }
        let good = list(record, "good")?;
        let bad = list(record, "bad")?;
        if good.len() < 2 {
            return Err(runtime_error("Must have check-good values"));
        }
        if bad.is_empty() {
            return Err(runtime_error("Must have check-bad values"));
        }
        let g = Globals {
            entry: None,
            data: Some(record),
            pattern: None,
        };
        let supers = path.len() - 1;
        for v in good {
            self.check_chain(st, path, supers, v, g)?;
            if check.check(v, g, path).is_err() {
                return Err(value_error(&format!("failed on good value {v}")));
            }
        }
        for v in bad {
            self.check_chain(st, path, supers, v, g)?;
            if check.check(v, g, path).is_ok() {
                return Err(value_error(&format!("did not fail on {v}")));
            }
        }
        Ok(())
    }

    /// The codec that converts `path` for users of converter group
    /// `group`, if any.
    fn codec(&self, st: &State, group: &str, path: &[Value]) -> Result<Option<Arc<Codec>>, Denied> {
        let Some(root) = st.entry(&meta(&["conv", group])) else {
            return Ok(None);
        };
        let Some(conv) = best_match(root, path) else {
            return Ok(None);
        };
        let Some(name) = conv.data().and_then(|d| d.get("codec")).and_then(as_path) else {
            return Ok(None);
        };
        let mut at = meta(&["codec"]);
        at.extend(name.iter().cloned());
        let Some(e) = st.entry(&at) else {
            return Ok(None);
        };
        cached(&self.codecs, e, |r| compile_codec(&at, r, self.settings)).transpose()
    }

    /// A client's value for `path`, decoded for converter group `group`
    /// (`None`: no conversion).
    pub fn decode(
        &self,
        st: &State,
        group: Option<&str>,
        path: &[Value],
        value: Value,
    ) -> Result<Value, Denied> {
        self.convert(st, group, path, value, Direction::Decode)
    }

    /// A stored value at `path`, encoded for converter group `group`
    /// (`None`: no conversion).
    pub fn encode(
        &self,
        st: &State,
        group: Option<&str>,
        path: &[Value],
        value: Value,
    ) -> Result<Value, Denied> {
        self.convert(st, group, path, value, Direction::Encode)
    }

    fn convert(
        &self,
        st: &State,
        group: Option<&str>,
        path: &[Value],
        value: Value,
        dir: Direction,
    ) -> Result<Value, Denied> {
        let Some(group) = group else {
            return Ok(value);
        };
        let Some(codec) = self.codec(st, group, path)? else {
            return Ok(value);
        };
        let script = match dir {
            Direction::Encode => &codec.encode,
            Direction::Decode => &codec.decode,
        };
        let Some(script) = script else {
            return Ok(value);
        };
        let g = Globals {
            entry: Some(path),
            data: None,
            pattern: None,
        };
        match script.convert(&value, g) {
            Ok(v) => Ok(v),
            // DistKV lets `None` through a codec that cannot take it.
            Err(_) if value.is_nil() => Ok(value),
            Err(ScriptError::Thrown(t)) => Err(value_error(&t)),
            Err(ScriptError::Raised(r)) => Err(Denied(r)),
            Err(e) => Err(runtime_error(&format!(
                "{} failed at {}: {e}",
                dir.name(),
                Path::new(path.to_vec())
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Encode,
    Decode,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Encode => "encoding",
            Direction::Decode => "decoding",
        }
    }
}

/// A match record `{type: PATH}`: the type must exist.
fn check_match_record(st: &State, record: &Value) -> Result<(), Denied> {
    let Some(t) = record.get("type") else {
        return Err(value_error(&format!("Duh? {record}")));
    };
    let Some(typ) = as_path(t) else {
        return Err(value_error(&format!("Type of {t} is not a list")));
    };
    let mut at = meta(&["type"]);
    at.extend(typ.iter().cloned());
    match st.entry(&at) {
        Some(e) if e.data().is_some() || e.has_children() => Ok(()),
        _ => Err(Denied::client("This type does not exist")),
    }
}

/// A converter record `{codec: PATH}` (the codec need not exist yet).
fn check_conv_record(record: &Value) -> Result<(), Denied> {
    let Some(c) = record.get("codec") else {
        return Err(value_error(&format!("Duh? {record}")));
    };
    match as_path(c) {
        Some(_) => Ok(()),
        None => Err(value_error(&format!("Codec {c} is not a list"))),
    }
}

/// A codec: each script with its tests, every test passing.
fn check_codec_record(path: &[Value], record: &Value, s: ScriptSettings) -> Result<(), Denied> {
    let codec = compile_codec(path, record, s)?;
    let at = Path::new(path.to_vec());
    let g = Globals {
        entry: None,
        data: Some(record),
        pattern: None,
    };
    let sides = [
        (&codec.decode, "in", "decoding", "Decoding", "decoder"),
        (&codec.encode, "out", "encoding", "Encoding", "encoder"),
    ];
    for (script, key, name, cap, who) in sides {
        let Some(script) = script else { continue };
        let tests = list(record, key)?;
        if tests.is_empty() {
            return Err(runtime_error(&format!("Must have tests for {name}")));
        }
        for t in tests {
            let [v, w] = t.as_array().unwrap_or(&[]) else {
                return Err(value_error(&format!(
                    "a test of {key} must be a pair [value, result], not {t}"
                )));
            };
            match script.convert(v, g) {
                Ok(r) if r == *w => {}
                Ok(r) => {
                    return Err(value_error(&format!("{cap} at {at}: {v} got {r}, not {w}")));
                }
                Err(e) => {
                    let exc = match &e {
                        ScriptError::Thrown(t) => format!("ValueError({})", Value::str(t)),
                        ScriptError::Raised(r) => r.clone(),
                        e => format!("RuntimeError({})", Value::str(&e.to_string())),
                    };
                    return Err(value_error(&format!(
                        "failed {who} at {at} on {v} with {exc}"
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
