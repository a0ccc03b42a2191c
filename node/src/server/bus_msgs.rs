//! Client actions that reach the bus: `msg_send`, `msg_monitor` (user
//! messages between clients of different nodes) and `kill_node`.

use bytes::Bytes;
use distkv_model::codec;
use distkv_model::ranges::NodeSet;
use distkv_model::{NodeName, Value};

use super::handlers::{acl_err, View};
use super::reply::{CmdError, CmdResult, Fields};
use super::stream::{Body, StreamOut};
use super::Server;
use crate::bus::{filter_error, topic_error};
use crate::state::acl::{AclDenied, Mode};
use distkv_core::cluster::msg::{Info, BUS_LIMITS};

fn no_bus() -> CmdError {
    CmdError::Server("this node is not connected to other nodes".into())
}

/// The bus topic of a request: a string, or a list of strings joined by
/// `/`. Wildcards are allowed only where `wild` (monitoring).
fn topic(msg: &Value, wild: bool) -> CmdResult<String> {
    let bad = || CmdError::Invalid("'topic' must be a string or a list of strings".into());
    let t = match msg.get("topic").ok_or_else(bad)? {
        Value::Str(s) => s.to_string(),
        Value::Array(parts) => join(parts).ok_or_else(bad)?,
        Value::Path(p) => join(p).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let why = if wild {
        filter_error(&t)
    } else {
        topic_error(&t)
    };
    match why {
        Some(why) => Err(CmdError::Invalid(format!("bad topic {t:?}: {why}"))),
        None => Ok(t),
    }
}

fn join(parts: &[Value]) -> Option<String> {
    let parts: Option<Vec<&str>> = parts.iter().map(Value::as_str).collect();
    Some(parts?.join("/"))
}

/// Whether `view`'s ACL allows `mode` on a topic, taken as the path of
/// its levels: `x` at every level on the way, `mode` at the end, as for
/// data (docs/compat.md, "ACLs"). DistKV checks no ACL for messages.
fn topic_allows(server: &Server, view: &View, topic: &str, mode: Mode) -> Result<(), AclDenied> {
    if !view.access.is_restricted() {
        return Ok(());
    }
    let st = server.state();
    let mut acl = view.acl(&st);
    for level in topic.split('/') {
        acl.check(Mode::Traverse)?;
        acl = acl.step(&Value::str(level));
    }
    acl.check(mode)
}

/// `msg_send`: publishes `data` (packed) or `raw` (bytes as they are).
pub(super) fn send(server: &Server, view: &View, msg: &Value) -> CmdResult<Fields> {
    let (bus, topics) = server.bus().ok_or_else(no_bus)?;
    let topic = topic(msg, false)?;
    topic_allows(server, view, &topic, Mode::Write).map_err(acl_err)?;
    if topics.is_cluster(&topic) {
        // A client must not speak for the nodes: a forged `info` could
        // make them stop asking for data they lack.
        return Err(CmdError::Client(format!(
            "topics under {} belong to the cluster; monitor them, do not send",
            topics.root
        )));
    }
    let payload: Bytes = match (msg.get("raw"), msg.get("data")) {
        (Some(Value::Bin(b)), _) => Bytes::copy_from_slice(b),
        (Some(_), _) => return Err(CmdError::Invalid("'raw' must be bytes".into())),
        (None, Some(d)) => codec::to_vec(d).into(),
        (None, None) => return Err(CmdError::Invalid("'data' or 'raw' is required".into())),
    };
    bus.publish(&topic, payload);
    Ok(Vec::new())
}

/// `msg_monitor`: streams every bus message on `topic` (MQTT wildcards
/// allowed) as `{topic: [...], data}`, or `{topic, raw}` when `raw` was
/// asked for or the payload does not decode (then with `error`).
/// With an ACL, only messages on topics it lets the user read (`r`) are
/// passed on.
pub(super) async fn monitor(
    server: &Server,
    view: &View,
    msg: &Value,
    out: &mut StreamOut,
) -> Body {
    let Some((bus, _)) = server.bus() else {
        return Ok(Err(no_bus()));
    };
    let filter = match topic(msg, true) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let raw = msg.get("raw").is_some_and(Value::truthy);
    let mut rx = bus.subscribe(&filter);
    while let Some(d) = rx.recv().await {
        if topic_allows(server, view, &d.topic, Mode::Read).is_err() {
            continue;
        }
        let topic = Value::Array(d.topic.split('/').map(Value::str).collect());
        let mut m: Fields = vec![("topic", topic)];
        match (raw, codec::decode_with(&d.payload, BUS_LIMITS)) {
            (false, Ok(v)) => m.push(("data", v)),
            (false, Err(e)) => {
                m.push(("raw", Value::Bin(d.payload.to_vec().into())));
                m.push(("error", Value::str(&e.to_string())));
            }
            (true, _) => m.push(("raw", Value::Bin(d.payload.to_vec().into()))),
        }
        out.send(m).await?;
    }
    Ok(Ok(()))
}

/// `kill_node`: forgets a node that heads no entry any more, and tells the
/// cluster to do the same.
pub(super) fn kill_node(server: &Server, msg: &Value) -> CmdResult<Fields> {
    let node = msg
        .get("node")
        .and_then(Value::as_str)
        .ok_or_else(|| CmdError::Invalid("'node' must be a node name".into()))?;
    let tick = {
        let mut st = server.state_mut();
        if st.node(node).is_none() {
            // DistKV raises KeyError(name) here.
            return Err(CmdError::NotFound(format!("unknown node {node}")));
        }
        st.forget_node(node)
            .map_err(|why| CmdError::Client(format!("cannot drop {node}: {why}")))?;
        st.tick()
    };
    if let Some((bus, topics)) = server.bus() {
        let mut i = Info::new(NodeName::from(server.name()), tick);
        i.node_drop.push(NodeName::from(node));
        bus.publish(&topics.info, i.encode());
    }
    Ok(Vec::new())
}

/// `fake_info` / `fake_info_send` `{superseded?, deleted?}` (each `{node:
/// ticks}` in `get_state`'s form; `known` is taken for `superseded`):
/// DistKV's repair tool behind `internal mark`. `fake_info` makes this node
/// take the ticks as superseded (no longer in any entry's chain) or as
/// ticks of deleted entries, as if another node had reported them;
/// `fake_info_send` broadcasts them as this node's info message instead,
/// for the other nodes to take (each checks them as any info message).
pub(super) fn fake_info(server: &Server, msg: &Value, send: bool) -> CmdResult<Fields> {
    let set = |keys: &[&str]| -> CmdResult<NodeSet> {
        let mut out = NodeSet::default();
        for k in keys {
            match msg.get(k) {
                None | Some(Value::Nil) => {}
                Some(v) => {
                    let s = NodeSet::from_value(v)
                        .map_err(|e| CmdError::Invalid(format!("'{k}': {e}")))?;
                    for (n, r) in s.0 {
                        out.add(n, r);
                    }
                }
            }
        }
        Ok(out)
    };
    let known = set(&["superseded", "known"])?;
    let deleted = set(&["deleted"])?;
    if send {
        if let Some((bus, topics)) = server.bus() {
            let mut i = Info::new(NodeName::from(server.name()), None);
            i.known = known;
            i.deleted = deleted;
            bus.publish(&topics.info, i.encode());
        }
    } else {
        tracing::warn!(node = %server.name(), "fake info applied by a client");
        let mut st = server.state_mut();
        st.learn_known(&known);
        st.learn_deleted(&deleted);
    }
    Ok(Vec::new())
}
