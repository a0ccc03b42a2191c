//! Single-reply requests: one request map in, one reply map out.
//!
//! Each handler takes the server, the connection's view (its root after
//! `root`/chroot) and the request, and returns the reply fields or a
//! [`CmdError`]. Handlers lock the state only for their critical section and
//! never await; the connection loop runs them inline, which keeps pipelined
//! requests fast and in order.

use distkv_model::event::path_from_value;
use distkv_model::{Chain, Path, UpdateEvent, Value};

use super::reply::{entry_fields, put, CmdError, CmdResult, Fields};
use super::Server;
use crate::commit::{Change, Road};
use crate::state::{Entry, Reporter, StateQuery};

/// A connection's view of the tree.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Absolute path of the connection's root (`root` action).
    pub root: Path,
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
            let mut v = Vec::with_capacity(rel.len() + 1);
            v.push(Value::Nil);
            v.extend_from_slice(rel);
            return Ok(Path::new(v));
        }
        if self.chrooted() && rel.iter().any(Value::is_nil) {
            return Err(CmdError::Invalid("Null path element".into()));
        }
        Ok(self.root.join(rel))
    }
}

/// The request's `path` (ext 3 or array).
pub fn req_path(msg: &Value) -> CmdResult<Path> {
    match msg.get("path") {
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
    match msg.get(key) {
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
    let nchain = int_field(msg, "nchain", 0)?;
    let st = server.state();
    if msg.get("path").is_none() && !meta {
        if let Some(node) = msg.get("node") {
            let node = node
                .as_str()
                .ok_or_else(|| CmdError::Invalid("field 'node' must be a string".into()))?;
            let tick = msg
                .get("tick")
                .and_then(Value::as_u64)
                .ok_or_else(|| CmdError::Invalid("field 'tick' must be a tick".into()))?;
            let e = st
                .entry_by_tick(node, tick)
                .ok_or_else(|| CmdError::NotFound(format!("{node}:{tick}")))?;
            let mut m = entry_fields(e, nchain);
            put(&mut m, "path", Value::Path(e.path().chop(view.root.len())));
            return Ok(m);
        }
    }
    let path = view.resolve(&req_path(msg)?, meta)?;
    Ok(match st.entry(&path) {
        Some(e) => entry_fields(e, nchain),
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
    let rel = req_path(msg)?;
    let path = view.resolve(&rel, meta)?;
    let nchain = int_field(msg, "nchain", 1)?;
    let want_chain = match msg.get("chain") {
        None => None,
        Some(c) => Some(
            Chain::from_value(c)
                .map_err(|e| CmdError::Invalid(format!("undecodable chain: {e}")))?,
        ),
    };
    let mut tx = server.store().begin();
    let mut m = Vec::new();
    {
        let st = tx.state();
        let entry = st.entry(&path);
        let data = entry.and_then(Entry::data);
        let chain = entry.and_then(Entry::chain);
        if bool_field(msg, "idem", false) {
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
        if let Some(prev) = msg.get("prev") {
            if data != Some(prev) {
                let shown = data.map_or("NotGiven".to_string(), Value::to_string);
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
        let changed = match (&value, data) {
            (None, d) => d.is_some(),
            (Some(v), Some(d)) => v != d,
            (Some(_), None) => true,
        };
        put(&mut m, "changed", Value::Bool(changed));
        if let (true, Some(d)) = (send_prev, data) {
            put(&mut m, "prev", d.clone());
        }
    }
    let change = Change::Set { path, value };
    let ev = tx
        .commit(Road::Client, change)
        .map_err(CmdError::from_change)?
        .event()
        .ok_or_else(|| CmdError::Server("the change made no event".into()))?;
    if nchain != 0 {
        put(&mut m, "chain", ev.chain.to_value(nchain));
    }
    put(&mut m, "tock", Value::uint(ev.tock));
    Ok(m)
}

/// `enum` / `enumerate` / `enum_internal`: the children's names (or names
/// and values with `with_data`).
pub fn enumerate(server: &Server, view: &View, msg: &Value, meta: bool) -> CmdResult<Fields> {
    let path = view.resolve(&req_path(msg)?, meta)?;
    let with_data = bool_field(msg, "with_data", false);
    let empty = bool_field(msg, "empty", false);
    let st = server.state();
    let e = st
        .entry(&path)
        .ok_or_else(|| CmdError::NotFound(path.to_string()))?;
    let result = if with_data {
        Value::Map(
            e.children()
                .filter_map(|(k, c)| match c.data() {
                    Some(v) => Some((k.clone(), v.clone())),
                    None if empty => Some((k.clone(), Value::Nil)),
                    None => None,
                })
                .collect(),
        )
    } else {
        Value::Array(
            e.children()
                .filter(|(_, c)| empty || c.data().is_some())
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
    let mut tx = server.store().begin();
    // `update` restores changes of nodes that are gone; it cannot make
    // (or fake) changes of running nodes, this one included.
    let live = |n: &str| server.is_live(n);
    tx.state()
        .vet(&ev.chain, Reporter::Client { live: &live })
        .map_err(|e| CmdError::Invalid(format!("update refused: {e}")))?;
    tx.commit(Road::Update, Change::Events(vec![ev]))
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

/// `root`: moves the connection's root (irreversibly) and returns the new
/// root entry with two chain links and an empty path.
pub fn chroot(server: &Server, view: &mut View, msg: &Value) -> CmdResult<Fields> {
    let path = view.resolve(&req_path(msg)?, false)?;
    if path.iter().any(Value::is_nil) {
        return Err(CmdError::Invalid("Null path element".into()));
    }
    let mut st = server.state_mut();
    let e = st.ensure_entry(&path);
    let mut m = entry_fields(e, 2);
    put(&mut m, "path", Value::Path(Path::root()));
    view.root = path;
    Ok(m)
}
