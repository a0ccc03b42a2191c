//! Reading a live node's whole state, entry by entry: state transfer for
//! a joining node, and `distkv-replay diff` against a live node. One
//! decoder for both, so they read the same entries the same way.

use distkv_model::budget::{nesting, MAX_NESTING};
use distkv_model::{event::path_from_value, Chain, Path, UpdateEvent, Value};

use crate::client::{Client, ClientError, StreamItem};

/// One entry of a live node's tree, as `get_tree` with full chains
/// (`nchain: -1`) and empty entries sends it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEntry {
    /// Its full path (meta entries start with `None`).
    pub path: Path,
    /// Its value; `None` for a deleted entry (a tombstone).
    pub value: Option<Value>,
    /// Its whole chain; `None` for an entry no change was made at.
    pub chain: Option<Chain>,
    /// Its tock.
    pub tock: u64,
}

/// Why reading a live node's state failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The node could not be reached or broke off.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The node sent something that is not an entry.
    #[error("bad entry or state from peer: {0}")]
    Entry(String),
}

/// Hands every entry of the node `client` is connected to to `each` — the
/// user tree, and with `meta` the meta tree `(None, …)` as well — in tree
/// order, skipping entries that hold neither a value nor a chain
/// (intermediate nodes). Returns the node's `get_state` reply for
/// `nodes`, `known` and `deleted`: its tick bookkeeping, in DistKV's form.
pub async fn read_state<E: From<FetchError>>(
    client: &Client,
    meta: bool,
    mut each: impl FnMut(LiveEntry) -> Result<(), E>,
) -> Result<Value, E> {
    let trees: &[(&str, Path)] = &[
        ("get_tree", Path::root()),
        ("get_tree_internal", Path::new(vec![Value::Nil])),
    ];
    for (action, prefix) in &trees[..if meta { 2 } else { 1 }] {
        let fields = vec![
            ("path", Value::Path(Path::root())),
            ("nchain", Value::Int(-1)),
            ("empty", Value::Bool(true)),
        ];
        let mut s = client
            .stream(action, fields)
            .await
            .map_err(FetchError::from)?
            .long_paths(prefix);
        loop {
            let item = match s.next().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                // A node whose meta tree was never written has none.
                Err(ClientError::Server(e)) if prefix.len() == 1 && e.starts_with("KeyError") => {
                    break
                }
                Err(e) => return Err(FetchError::from(e).into()),
            };
            let StreamItem::Data(m) = item else { continue };
            if let Some(entry) = decode_entry(&m)? {
                each(entry)?;
            }
        }
    }
    Ok(client
        .get_state(&["nodes", "known", "deleted"])
        .await
        .map_err(FetchError::from)?)
}

/// One `get_tree` reply as an entry; `None` for an entry without value
/// and chain. An entry with a chain is checked as an update event from a
/// peer is ([`UpdateEvent::from_value`]: chain, tock, nesting budget); one
/// with a value alone gets the same budget check.
fn decode_entry(m: &Value) -> Result<Option<LiveEntry>, FetchError> {
    if m.get("chain").is_some_and(|c| !c.is_nil()) {
        let ev = UpdateEvent::from_value(m).map_err(|e| FetchError::Entry(e.to_string()))?;
        return Ok(Some(LiveEntry {
            path: ev.path,
            value: ev.value,
            chain: Some(ev.chain),
            tock: ev.tock,
        }));
    }
    let Some(value) = m.get("value") else {
        return Ok(None);
    };
    let path = m
        .get("path")
        .and_then(path_from_value)
        .ok_or_else(|| FetchError::Entry("an entry without a path".into()))?;
    if nesting(value, MAX_NESTING) > MAX_NESTING
        || path.iter().any(|e| nesting(e, MAX_NESTING) >= MAX_NESTING)
    {
        return Err(FetchError::Entry(format!("{path}: nested too deeply")));
    }
    Ok(Some(LiveEntry {
        path,
        value: Some(value.clone()),
        chain: None,
        tock: m.get("tock").and_then(Value::as_u64).unwrap_or(0),
    }))
}
