//! Single-reply requests: one request map in, one reply map out.
//!
//! Each handler takes the server, the connection's view (its root after
//! `root`/chroot) and the request, and returns the reply fields or a
//! [`CmdError`]. Handlers lock the state only for their critical section and
//! never await; the connection loop runs them inline, which keeps pipelined
//! requests fast and in order.

use std::ops::Deref;

use distkv_model::event::path_from_value;
use distkv_model::{Chain, Path, SharedStr, UpdateEvent, Value, ValueRef};

use super::reply::{entry_fields, put, CmdError, CmdResult, Fields};
use super::request::ValueArgs;
use super::Server;
use crate::commit::{acl_denied, Change, Road, Tx};
use crate::rules::DataRules;
use crate::state::acl::{Access, AclCursor, AclDenied, Mode, Want};
use crate::state::{Entry, Reporter, State, StateQuery};

/// A connection's view of the tree.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Absolute path of the connection's root (`root` action).
    pub root: Path,
    /// What its login lets it do.
    pub access: Access,
    /// The converter group its login bound (`(None,"conv",GROUP)`): its
    /// values are decoded on the way in and encoded on the way out.
    pub conv: Option<SharedStr>,
}

/// An entry's value as a connection sees it ([`View::entry_value`]).
pub enum Shown<'e> {
    /// The stored value, borrowed from the tree.
    Stored(ValueRef<'e>),
    /// The value encoded for the connection's converter group.
    Converted(Value),
}

impl Deref for Shown<'_> {
    type Target = Value;
    fn deref(&self) -> &Value {
        match self {
            Shown::Stored(v) => v,
            Shown::Converted(v) => v,
        }
    }
}

/// An ACL's refusal as the client sees it.
pub fn acl_err(e: AclDenied) -> CmdError {
    CmdError::Python(acl_denied(e).0)
}

impl View {
    /// Whether the connection was moved below the real root.
    pub fn chrooted(&self) -> bool {
        !self.root.is_empty()
    }

    /// The absolute path of a request path, checking `None` elements: the
    /// meta tree is reachable only from the real root, and only through the
    /// `*_internal` actions or a leading `None`.
    pub fn resolve(&self, rel: &Path, meta: bool) -> CmdResult<Path> {
        if meta {
            self.may_use_meta()?;
            let mut v = Vec::with_capacity(rel.len() + 1);
            v.push(Value::Nil);
            v.extend_from_slice(rel);
            return Ok(Path::new(v));
        }
        if (self.chrooted() || self.access.is_restricted()) && rel.iter().any(Value::is_nil) {
            return Err(CmdError::Invalid("Null path element".into()));
        }
        if self.root.is_empty() {
            return Ok(rel.clone());
        }
        Ok(self.root.join(rel))
    }

    /// Whether the connection may use the meta tree and the node's admin
    /// actions: not if an ACL restricts it (DistKV lets every logged-in
    /// user, so one could rewrite its own ACL).
    pub fn may_use_meta(&self) -> CmdResult<()> {
        match &self.access {
            Access::Full => Ok(()),
            Access::Acl(name) => Err(CmdError::Python(
                crate::commit::Denied::python(
                    "PermissionError",
                    &[Value::str(&format!(
                        "this user is bound to ACL {name:?}: no access to the meta tree or the node's administration"
                    ))],
                )
                .0,
            )),
        }
    }

    /// A client's `value` for the absolute `path`, decoded by the
    /// connection's converter group.
    pub fn decode(
        &self,
        rules: &DataRules,
        st: &State,
        path: &[Value],
        v: Value,
    ) -> CmdResult<Value> {
        rules
            .decode(st, self.conv.as_deref(), path, v)
            .map_err(|d| CmdError::Python(d.0))
    }

    /// A stored `value` at the absolute `path`, encoded for the
    /// connection's converter group.
    pub fn encode(
        &self,
        rules: &DataRules,
        st: &State,
        path: &[Value],
        v: Value,
    ) -> CmdResult<Value> {
        rules
            .encode(st, self.conv.as_deref(), path, v)
            .map_err(|d| CmdError::Python(d.0))
    }

    /// An entry's value as the connection sees it: encoded for its
    /// converter group, borrowed from the tree when it has none. `path`
    /// gives the entry's full path; it is asked for only to encode.
    pub fn entry_value<'e>(
        &self,
        rules: &DataRules,
        st: &State,
        e: Entry<'e>,
        path: impl FnOnce() -> Vec<Value>,
    ) -> CmdResult<Option<Shown<'e>>> {
        Ok(match e.data() {
            None => None,
            Some(v) if self.conv.is_none() => Some(Shown::Stored(v)),
            Some(v) => Some(Shown::Converted(self.encode(
                rules,
                st,
                &path(),
                v.to_value(),
            )?)),
        })
    }

    /// [`entry_fields`] with the value encoded for the connection.
    pub fn entry_fields(
        &self,
        rules: &DataRules,
        st: &State,
        e: Entry<'_>,
        nchain: i64,
    ) -> CmdResult<Fields> {
        let mut m = entry_fields(e, nchain);
        if self.conv.is_some() {
            for (k, v) in m.iter_mut() {
                if *k == "value" {
                    *v = self.encode(rules, st, &e.path(), std::mem::replace(v, Value::Nil))?;
                }
            }
        }
        Ok(m)
    }

    /// The connection's ACL cursor at the data root.
    pub fn acl<'a>(&self, st: &'a State) -> AclCursor<'a> {
        self.access.cursor(st)
    }

    /// Checks `want` at the absolute `path` for a request that creates
    /// nothing: `Ok(None)` if the path does not exist; else the entry and
    /// the ACL cursor there.
    pub fn follow<'a>(
        &self,
        st: &'a State,
        path: &Path,
        want: Want,
    ) -> CmdResult<Option<(Entry<'a>, AclCursor<'a>)>> {
        self.acl(st)
            .follow_existing(st.root(), path, want)
            .map_err(acl_err)
    }
}

/// The request's `path` (ext 3 or array).
pub fn req_path(msg: &Value) -> CmdResult<Path> {
    path_arg(msg.get("path"))
}

/// A request's `path` field (`None`: it has none).
fn path_arg(v: Option<&Value>) -> CmdResult<Path> {
    match v {
        None => Err(CmdError::Invalid("missing field 'path'".into())),
        Some(v) => path_from_value(v).ok_or_else(|| {
            CmdError::Invalid(format!(
                "field 'path' must be a path, not {}",
                v.type_name()
            ))
        }),
    }
}

/// An integer field with a default.
pub fn int_field(msg: &Value, key: &str, default: i64) -> CmdResult<i64> {
    int_arg(msg.get(key), key, default)
}

/// The integer field `key` (`None`: the request has none) with a default.
fn int_arg(v: Option<&Value>, key: &str, default: i64) -> CmdResult<i64> {
    match v {
        None | Some(Value::Nil) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b as i64),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| CmdError::Invalid(format!("field '{key}' must be an integer"))),
    }
}

/// A boolean field (Python truthiness) with a default.
pub fn bool_field(msg: &Value, key: &str, default: bool) -> bool {
    msg.get(key).map_or(default, Value::truthy)
}

/// `get_value` / `get_internal`.
pub fn get_value(server: &Server, view: &View, msg: &Value, meta: bool) -> CmdResult<Fields> {
    let args = ValueArgs::from_msg(msg);
    get_value_in(&server.state(), server, view, &args, meta)
}

/// [`get_value`] on the state the caller holds locked: a connection
/// answers a run of pipelined requests under one lock.
pub fn get_value_in(
    st: &State,
    server: &Server,
    view: &View,
    args: &ValueArgs,
    meta: bool,
) -> CmdResult<Fields> {
    let nchain = int_arg(args.nchain.as_ref(), "nchain", 0)?;
    if args.path.is_none() && !meta {
        if let Some(node) = &args.node {
            let node = node
                .as_str()
                .ok_or_else(|| CmdError::Invalid("field 'node' must be a string".into()))?;
            let tick = args
                .tick
                .as_ref()
                .and_then(Value::as_u64)
                .ok_or_else(|| CmdError::Invalid("field 'tick' must be a tick".into()))?;
            let e = st
                .entry_by_tick(node, tick)
                .ok_or_else(|| CmdError::NotFound(format!("{node}:{tick}")))?;
            // DistKV checks no ACL here: a path-less read would bypass it.
            view.follow(st, &e.path(), Want::Mode(Mode::Read))?;
            let mut m = view.entry_fields(server.store().rules(), st, e, nchain)?;
            put(&mut m, "path", Value::Path(e.path().chop(view.root.len())));
            return Ok(m);
        }
    }
    let path = view.resolve(&path_arg(args.path.as_ref())?, meta)?;
    Ok(match view.follow(st, &path, Want::Mode(Mode::Read))? {
        Some((e, _)) => view.entry_fields(server.store().rules(), st, e, nchain)?,
        None => {
            let mut m = Vec::new();
            if nchain != 0 {
                put(&mut m, "chain", Value::Nil);
            }
            m
        }
    })
}

/// `set_value` / `delete_value` (and their `_internal` forms). `value: None`
/// deletes.
pub fn set_value(
    server: &Server,
    view: &View,
    msg: &Value,
    value: Option<Value>,
    meta: bool,
) -> CmdResult<Fields> {
    let args = ValueArgs::from_msg(msg);
    set_value_in(
        &mut server.store().begin(),
        server,
        view,
        &args,
        value,
        meta,
    )
}

/// [`set_value`] inside the caller's transaction: a connection commits a
/// run of pipelined changes under one lock of the state.
pub fn set_value_in(
    tx: &mut Tx<'_>,
    server: &Server,
    view: &View,
    args: &ValueArgs,
    value: Option<Value>,
    meta: bool,
) -> CmdResult<Fields> {
    let rel = path_arg(args.path.as_ref())?;
    let path = view.resolve(&rel, meta)?;
    let nchain = int_arg(args.nchain.as_ref(), "nchain", 1)?;
    let want_chain = match &args.chain {
        None => None,
        Some(c) => Some(
            Chain::from_value(c)
                .map_err(|e| CmdError::Invalid(format!("undecodable chain: {e}")))?,
        ),
    };
    let rules = server.store().rules();
    let mut m = Vec::new();
    // Without preconditions and without a converter (whose encoding of the
    // old value could fail after the change is made), the old value comes
    // from the commit: the entry is looked up once.
    let checked =
        args.idem.is_some() || args.prev.is_some() || want_chain.is_some() || view.conv.is_some();
    let (value, readable) = {
        let st = tx.state();
        // The ACL first, as in DistKV: a refused request learns nothing of
        // the value (and a user who may not read it never sees it).
        let readable = match &view.access {
            Access::Full => true,
            access => {
                let (_, at) = access
                    .cursor(st)
                    .follow(st.root(), &path, Want::WriteOrCreate)
                    .map_err(acl_err)?;
                at.allows(Mode::Read)
            }
        };
        // A converted client's value, and its `prev`, as stored.
        let value = match value {
            Some(v) => Some(view.decode(rules, st, &path, v)?),
            None => None,
        };
        if checked {
            let entry = st.entry(&path);
            let stored = entry.and_then(Entry::data);
            let data = stored.as_deref();
            let chain_ref = entry.and_then(Entry::chain);
            let chain = chain_ref.as_deref();
            if args.idem.as_ref().is_some_and(Value::truthy) {
                if let (Some(v), Some(d)) = (&value, data) {
                    if v.same_type(d) && v == d {
                        put(&mut m, "tock", Value::uint(entry.map_or(0, Entry::tock)));
                        put(&mut m, "changed", Value::Bool(false));
                        if let (true, Some(c)) = (nchain > 0, chain) {
                            put(&mut m, "chain", c.to_value(nchain));
                        }
                        return Ok(m);
                    }
                }
            }
            let mut send_prev = true;
            if let Some(prev) = &args.prev {
                let prev = &view.decode(rules, st, &path, prev.clone())?;
                if data != Some(prev) {
                    let shown = match data {
                        None => "NotGiven".to_string(),
                        Some(d) if readable => d.to_string(),
                        Some(_) => "(not readable)".to_string(),
                    };
                    return Err(CmdError::Client(format!(
                        "Data is {shown} not {prev} at {rel}"
                    )));
                }
                send_prev = false;
            }
            if let Some(want) = &want_chain {
                match (want, data, chain) {
                    (None, Some(_), _) => {
                        return Err(CmdError::Chain(format!("Entry already exists at {rel}")));
                    }
                    (Some(_), None, _) => {
                        return Err(CmdError::Chain(format!("Entry is new at {rel}")))
                    }
                    (Some(w), Some(_), Some(c)) if !c.same_head(w) => {
                        return Err(CmdError::Chain(format!("Chain is {c} not {w} for {rel}")));
                    }
                    _ => {}
                }
                send_prev = false;
            }
            put(
                &mut m,
                "changed",
                Value::Bool(changed(value.as_ref(), data)),
            );
            if let (true, true, Some(d)) = (send_prev, readable, data) {
                put(&mut m, "prev", view.encode(rules, st, &path, d.clone())?);
            }
        }
        (value, readable)
    };
    let change = Change::Set { path, value };
    let (ev, old) = tx
        .commit_as(Road::Client, &view.access, change)
        .map_err(CmdError::from_change)?
        .replaced()
        .ok_or_else(|| CmdError::Server("the change made no event".into()))?;
    if !checked {
        put(
            &mut m,
            "changed",
            Value::Bool(changed(ev.value.as_ref(), old.as_ref())),
        );
        if let (true, Some(d)) = (readable, old) {
            put(&mut m, "prev", d);
        }
    }
    if nchain != 0 {
        put(&mut m, "chain", ev.chain.to_value(nchain));
    }
    put(&mut m, "tock", Value::uint(ev.tock));
    Ok(m)
}

/// Whether setting `value` (`None`: deleting) changes an entry holding
/// `data`.
fn changed(value: Option<&Value>, data: Option<&Value>) -> bool {
    match (value, data) {
        (None, d) => d.is_some(),
        (Some(v), Some(d)) => v != d,
        (Some(_), None) => true,
    }
}

/// `enum` / `enumerate` / `enum_internal`: the children's names (or names
/// and values with `with_data`).
pub fn enumerate(server: &Server, view: &View, msg: &Value, meta: bool) -> CmdResult<Fields> {
    let path = view.resolve(&req_path(msg)?, meta)?;
    let with_data = bool_field(msg, "with_data", false);
    let empty = bool_field(msg, "empty", false);
    let st = server.state();
    let (e, acl) = view
        .follow(&st, &path, Want::Mode(Mode::Enumerate))?
        .ok_or_else(|| CmdError::NotFound(path.to_string()))?;
    // DistKV's rules: with data, a child shows if its own cursor allows
    // `r`, its value if the parent's allows `x`; names alone, if the
    // child's cursor allows `e`.
    let traverse = acl.allows(Mode::Traverse);
    let rules = server.store().rules();
    let result = if with_data {
        Value::Map(
            e.children()
                .filter(|(k, _)| acl.step(k).allows(Mode::Read))
                .filter_map(|(k, c)| match c.data() {
                    Some(v) if traverse => Some(
                        view.encode(rules, &st, &c.path(), v.clone())
                            .map(|v| (k.clone(), v)),
                    ),
                    _ if empty => Some(Ok((k.clone(), Value::Nil))),
                    _ => None,
                })
                .collect::<CmdResult<_>>()?,
        )
    } else {
        Value::Array(
            e.children()
                .filter(|(k, c)| {
                    (empty || c.data().is_some()) && acl.step(k).allows(Mode::Enumerate)
                })
                .map(|(k, _)| k.clone())
                .collect(),
        )
    };
    Ok(vec![("result", result)])
}

/// `get_tock`.
pub fn get_tock(server: &Server) -> Fields {
    vec![("tock", Value::uint(server.next_tock()))]
}

/// `get_state`.
pub fn get_state(server: &Server, msg: &Value) -> CmdResult<Fields> {
    let f = |k| bool_field(msg, k, false);
    let q = StateQuery {
        nodes: f("nodes"),
        known: f("known") || f("superseded"),
        present: f("present"),
        deleted: f("deleted"),
        missing: f("missing"),
        remote_missing: f("remote_missing"),
    };
    let mut m = server.state().report(q);
    if f("node_drop") {
        put(&mut m, "node_drop", Value::Array(Vec::new()));
    }
    if f("debug") {
        if let Some(v) = server.cluster_view() {
            put(&mut m, "cluster", v);
        }
    }
    put(&mut m, "node", Value::str(server.name()));
    Ok(m)
}

/// `update`: applies a client-supplied update event (paths relative to the
/// connection's root). Always replies `{result: false}`, as DistKV does.
pub fn update(server: &Server, view: &View, msg: &Value) -> CmdResult<Fields> {
    let mut ev = UpdateEvent::from_value(msg).map_err(|e| CmdError::Invalid(e.to_string()))?;
    ev.path = view.resolve(&ev.path, false)?;
    let rules = server.store().rules();
    let mut tx = server.store().begin();
    if let Some(v) = ev.value.take() {
        ev.value = Some(view.decode(rules, tx.state(), &ev.path, v)?);
    }
    // `update` restores changes of nodes that are gone; it cannot make
    // (or fake) changes of running nodes, this one included.
    let live = |n: &str| server.is_live(n);
    tx.state()
        .vet(&ev.chain, Reporter::Client { live: &live })
        .map_err(|e| CmdError::Invalid(format!("update refused: {e}")))?;
    tx.commit_as(Road::Update, &view.access, Change::Events(vec![ev]))
        .map_err(CmdError::from_change)?;
    Ok(vec![("result", Value::Bool(false))])
}

/// `enum_node`: the ticks of a node that are present.
pub fn enum_node(server: &Server, msg: &Value) -> CmdResult<Fields> {
    let node = msg
        .get("node")
        .and_then(Value::as_str)
        .ok_or_else(|| CmdError::Invalid("field 'node' must be a string".into()))?;
    let max = int_field(msg, "max", 0)?.max(0) as usize;
    let current = bool_field(msg, "current", false);
    let ticks = server
        .state()
        .enum_node(node, max, current)
        .ok_or_else(|| CmdError::NotFound(node.to_string()))?;
    Ok(vec![(
        "result",
        Value::Array(ticks.into_iter().map(Value::uint).collect()),
    )])
}

/// `test_acl` `{path, mode?, acl?}`: whether the connection's ACL allows
/// `a` at `path` (without `acl`), or `mode` (default `x`) both there and in
/// the ACL named `acl`. `{access: false}` if not; else the deciding entry's
/// flags where `a` is allowed, `true` where not (or no entry decides).
pub fn test_acl(server: &Server, view: &View, msg: &Value) -> CmdResult<Fields> {
    let path = view.resolve(&req_path(msg)?, false)?;
    if path.iter().any(Value::is_nil) {
        return Err(CmdError::Invalid("Null path element".into()));
    }
    let mode = match msg.get("mode") {
        None | Some(Value::Nil) => Mode::Traverse,
        Some(Value::Str(m)) if m.is_empty() => Mode::Traverse,
        Some(Value::Str(m)) if m.chars().count() == 1 => m
            .chars()
            .next()
            .and_then(Mode::from_letter)
            .ok_or_else(|| CmdError::Invalid(format!("unknown ACL mode {m:?}")))?,
        Some(m) => return Err(CmdError::Invalid(format!("unknown ACL mode {m}"))),
    };
    let other = match msg.get("acl") {
        None | Some(Value::Nil) => None,
        Some(Value::Str(name)) => Some(name.clone()),
        Some(v) => {
            return Err(CmdError::Invalid(format!(
                "field 'acl' must be a string, not {}",
                v.type_name()
            )))
        }
    };
    let st = server.state();
    let root = st.root();
    let denied = || Ok(vec![("access", Value::Bool(false))]);
    let want = Want::Mode(if other.is_some() { mode } else { Mode::Acl });
    let Ok((_, mine)) = view.acl(&st).follow(root, &path, want) else {
        return denied();
    };
    let at = match other {
        None => mine,
        Some(name) => {
            let acl = st.entry(&[Value::Nil, Value::str("acl"), Value::str(&name)]);
            let Ok((_, mut theirs)) = AclCursor::new(acl).follow(root, &path, want) else {
                return denied();
            };
            if !mine.allows(Mode::Acl) {
                theirs.block(Mode::Acl);
            }
            theirs
        }
    };
    let access = match (at.allows(Mode::Acl), at.flags()) {
        (true, Some(flags)) => Value::str(flags),
        _ => Value::Bool(true),
    };
    Ok(vec![("access", access)])
}

/// `root`: moves the connection's root (irreversibly) and returns the new
/// root entry with two chain links and an empty path.
pub fn chroot(server: &Server, view: &mut View, msg: &Value) -> CmdResult<Fields> {
    let path = view.resolve(&req_path(msg)?, false)?;
    if path.iter().any(Value::is_nil) {
        return Err(CmdError::Invalid("Null path element".into()));
    }
    let mut st = server.state_mut();
    view.acl(&st)
        .follow(st.root(), &path, Want::Mode(Mode::Traverse))
        .map_err(acl_err)?;
    let e = st.ensure_entry(&path);
    let mut m = entry_fields(e, 2);
    put(&mut m, "path", Value::Path(Path::root()));
    view.root = path;
    Ok(m)
}
