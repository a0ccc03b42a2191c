//! Reading a live node's whole state, entry by entry: state transfer for
//! a joining node, and `distkv-replay diff` against a live node. One
//! decoder for both, so they read the same entries the same way.

use distkv_model::event::{check_nesting, path_from_value};
use distkv_model::{Chain, Path, UpdateEvent, Value};

use crate::client::{Client, ClientError, Stream, StreamItem};

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

/// Reads every entry of the node a client is connected to — the user
/// tree, and with `meta` the meta tree `(None, …)` as well — in tree
/// order ([`StateReader::next`]), skipping entries that hold neither a
/// value nor a chain (intermediate nodes); then its tick bookkeeping
/// ([`StateReader::ticks`]).
pub struct StateReader<'a> {
    client: &'a Client,
    /// Trees still to read, last first.
    trees: Vec<(&'static str, Path)>,
    current: Option<(Stream, bool)>,
}

impl<'a> StateReader<'a> {
    /// A reader of the state of the node `client` is connected to.
    pub fn new(client: &'a Client, meta: bool) -> StateReader<'a> {
        let mut trees = vec![("get_tree", Path::root())];
        if meta {
            trees.push(("get_tree_internal", Path::new(vec![Value::Nil])));
        }
        trees.reverse();
        StateReader {
            client,
            trees,
            current: None,
        }
    }

    /// The next entry; `None` once every tree is read.
    pub async fn next(&mut self) -> Result<Option<LiveEntry>, FetchError> {
        loop {
            let Some((stream, meta)) = &mut self.current else {
                let Some((action, prefix)) = self.trees.pop() else {
                    return Ok(None);
                };
                let fields = vec![
                    ("path", Value::Path(Path::root())),
                    ("nchain", Value::Int(-1)),
                    ("empty", Value::Bool(true)),
                ];
                let meta = prefix.len() == 1;
                let stream = self
                    .client
                    .stream(action, fields)
                    .await?
                    .long_paths(&prefix);
                self.current = Some((stream, meta));
                continue;
            };
            match stream.next().await {
                Ok(Some(StreamItem::Data(m))) => {
                    if let Some(entry) = decode_entry(&m)? {
                        return Ok(Some(entry));
                    }
                }
                Ok(Some(_)) => {}
                // A node whose meta tree was never written has none.
                Err(ClientError::Server(e)) if *meta && e.starts_with("KeyError") => {
                    self.current = None;
                }
                Ok(None) => self.current = None,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The node's `get_state` reply for `nodes`, `known` and `deleted`:
    /// its tick bookkeeping, in DistKV's form.
    pub async fn ticks(self) -> Result<Value, FetchError> {
        Ok(self
            .client
            .get_state(&["nodes", "known", "deleted"])
            .await?)
    }
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
    check_nesting(&path, Some(value)).map_err(|e| FetchError::Entry(format!("{path}: {e}")))?;
    Ok(Some(LiveEntry {
        path,
        value: Some(value.clone()),
        chain: None,
        tock: m.get("tock").and_then(Value::as_u64).unwrap_or(0),
    }))
}
