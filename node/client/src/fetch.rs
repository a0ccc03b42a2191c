//! Reading a live node's whole state, entry by entry: state transfer for
//! a joining node, and `distkv-replay diff` against a live node. One
//! decoder for both, so they read the same entries the same way.

use distkv_model::budget::{nesting, BudgetError, MAX_NESTING};
use distkv_model::chain::MAX_COUNTER;
use distkv_model::event::{check_nesting, path_from_value, EventError};
use distkv_model::{codec, Chain, Path, UpdateEvent, Value};

use crate::client::{Client, ClientError, RawItem, Stream, StreamItem};
use crate::raw;

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
                self.current = Some((self.open(action, &prefix).await?, prefix.len() == 1));
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

    /// Reads every entry as [`StateReader::next`] does, handing each to
    /// `f` read in place: the path's elements rebuilt incrementally, the
    /// value as its encoding (as [`codec::encode`] writes it), the chain
    /// decoded. The same entries, checked the same way, without building
    /// each reply. Stops at the first error, `f`'s included.
    pub async fn read_raw<E>(
        &mut self,
        mut f: impl FnMut(RawEntry<'_>) -> Result<(), E>,
    ) -> Result<(), RawFetchError<E>> {
        let mut slots = Slots::default();
        loop {
            let Some((stream, meta)) = &mut self.current else {
                let Some((action, prefix)) = self.trees.pop() else {
                    return Ok(());
                };
                self.current = Some((self.open(action, &prefix).await?, prefix.len() == 1));
                continue;
            };
            match stream.next_raw().await {
                Ok(Some(RawItem::Data(e))) => {
                    if let Some(entry) = raw_entry(&e, &mut slots)? {
                        f(entry).map_err(RawFetchError::Consumer)?;
                    }
                }
                Ok(Some(RawItem::UpToDate(_))) => {}
                Err(ClientError::Server(e)) if *meta && e.starts_with("KeyError") => {
                    self.current = None;
                }
                Ok(None) => self.current = None,
                Err(e) => return Err(FetchError::from(e).into()),
            }
        }
    }

    /// Starts reading one tree: `get_tree` or `get_tree_internal` of all
    /// of it, with full chains and empty entries.
    async fn open(&self, action: &str, prefix: &Path) -> Result<Stream, FetchError> {
        let fields = vec![
            ("path", Value::Path(Path::root())),
            ("nchain", Value::Int(-1)),
            ("empty", Value::Bool(true)),
        ];
        Ok(self.client.stream(action, fields).await?.long_paths(prefix))
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

/// One entry of a live node's tree read in place ([`StateReader::read_raw`]).
#[derive(Debug, Clone, Copy)]
pub struct RawEntry<'a> {
    /// Its full path.
    pub path: &'a [Value],
    /// How many leading elements of `path` the previous entry read (of
    /// this tree) shares.
    pub kept: usize,
    /// Its value's encoding, as [`codec::encode`] writes it; `None` for a
    /// tombstone.
    pub value: Option<&'a [u8]>,
    /// Its whole chain.
    pub chain: Option<&'a Chain>,
    /// Its tock.
    pub tock: u64,
}

/// Why [`StateReader::read_raw`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RawFetchError<E> {
    /// Reading failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The consumer failed.
    #[error("{0}")]
    Consumer(E),
}

impl<E> From<ClientError> for RawFetchError<E> {
    fn from(e: ClientError) -> RawFetchError<E> {
        RawFetchError::Fetch(e.into())
    }
}

/// Where [`raw_entry`] keeps what it cannot borrow from the reply.
#[derive(Default)]
struct Slots {
    /// A value re-encoded as [`codec::encode`] writes it, where the node
    /// wrote it otherwise.
    value: Vec<u8>,
    chain: Option<Chain>,
    /// Node names of the chains read so far.
    names: raw::NodeNames,
    /// A path sent whole (not shortened).
    path: Vec<Value>,
    /// How many leading elements of the longened path have passed the
    /// nesting check (an entry skipped before the check leaves its new
    /// elements unchecked for the entries after it).
    checked: usize,
}

/// [`decode_entry`] of a reply read in place: the same entries, the same
/// checks, the same errors.
fn raw_entry<'a>(
    e: &crate::client::RawEntry<'a>,
    slots: &'a mut Slots,
) -> Result<Option<RawEntry<'a>>, FetchError> {
    let m = &e.msg;
    let Slots {
        value: value_buf,
        chain: chain_slot,
        names,
        path: path_buf,
        checked,
    } = slots;
    let event = |e: EventError| FetchError::Entry(e.to_string());
    // The path, and how many of its first elements are known to pass.
    let path: Option<(&'a [Value], usize)> = match e.path {
        Some(p) => {
            *checked = (*checked).min(p.kept);
            Some((p.elements, *checked))
        }
        None => match m
            .path()
            .map(raw::decode_field)
            .as_ref()
            .and_then(path_from_value)
        {
            Some(p) => {
                *path_buf = p.elements().to_vec();
                Some((&path_buf[..], 0))
            }
            None => None,
        },
    };
    let value = m.value();
    let with_chain = m.chain().is_some_and(|c| c != [0xc0]);
    let tock = if with_chain {
        // As `UpdateEvent::from_value` reads it: path, chain, tock, budget.
        if path.is_none() {
            return Err(event(EventError::Field("path")));
        }
        let chain = raw::chain(m.chain().unwrap_or(&[0xc0]), names)
            .map_err(|e| event(e.into()))?
            .ok_or(event(EventError::Field("node")))?;
        *chain_slot = Some(chain);
        m.tock()
            .filter(|&t| t <= MAX_COUNTER)
            .ok_or(event(EventError::Field("tock")))?
    } else {
        if value.is_none() {
            return Ok(None);
        }
        *chain_slot = None;
        m.tock().unwrap_or(0)
    };
    let Some((path, passed)) = path else {
        return Err(FetchError::Entry("an entry without a path".into()));
    };
    if let Err(e) = check_raw_nesting(path, passed, value) {
        return Err(match with_chain {
            true => event(e.into()),
            false => FetchError::Entry(format!("{}: {e}", Path::new(path.to_vec()))),
        });
    }
    if e.path.is_some() {
        *checked = path.len();
    }
    let value = value.map(|v| {
        if raw::is_canonical(v) {
            v
        } else {
            value_buf.clear();
            codec::encode(&raw::decode_field(v), value_buf);
            &value_buf[..]
        }
    });
    Ok(Some(RawEntry {
        path,
        kept: e.path.map_or(0, |p| p.kept),
        value,
        chain: chain_slot.as_ref(),
        tock,
    }))
}

/// [`check_nesting`] of an entry read in place, whose first `passed` path
/// elements were checked with the entries before.
fn check_raw_nesting(
    path: &[Value],
    passed: usize,
    value: Option<&[u8]>,
) -> Result<(), BudgetError> {
    if value.is_some_and(|v| !raw::nests_within(v, MAX_NESTING)) {
        return Err(BudgetError::TooDeep { what: "value" });
    }
    if path[passed.min(path.len())..]
        .iter()
        .any(|x| nesting(x, MAX_NESTING) >= MAX_NESTING)
    {
        return Err(BudgetError::TooDeep { what: "path" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::LongPath;
    use crate::raw::MsgView;
    use distkv_model::budget::INTERNAL_LIMITS;

    /// `raw_entry` of a message with the given full path (longened, the
    /// first `kept` elements shared with the message before), next to
    /// `decode_entry` of the same message decoded.
    fn both(
        msg: &Value,
        path: &[Value],
        kept: usize,
        slots: &mut Slots,
    ) -> (Result<bool, String>, Result<bool, String>) {
        let bytes = codec::to_vec(msg);
        let (view, _) = MsgView::parse(&bytes, INTERNAL_LIMITS).unwrap();
        let e = crate::client::RawEntry {
            msg: view,
            path: Some(LongPath {
                elements: path,
                kept,
            }),
        };
        let raw = raw_entry(&e, slots)
            .map(|r| r.is_some())
            .map_err(|e| e.to_string());
        let mut full = msg.clone();
        if let Value::Map(m) = &mut full {
            m.retain(|(k, _)| k.as_str() != Some("depth"));
            for (k, v) in m.iter_mut() {
                if k.as_str() == Some("path") {
                    *v = Value::Path(Path::new(path.to_vec()));
                }
            }
        }
        let decoded = decode_entry(&full)
            .map(|r| r.is_some())
            .map_err(|e| e.to_string());
        (raw, decoded)
    }

    fn deep(n: usize) -> Value {
        (0..n).fold(Value::Int(1), |v, _| Value::Array(vec![v]))
    }

    #[test]
    fn entries_read_in_place_pass_and_fail_as_decoded_ones() {
        let chain = Value::map([("node", Value::str("n1")), ("tick", Value::Int(3))]);
        let entry = |value: Option<Value>, chain: Option<Value>, tock: Value| {
            let mut m = vec![(Value::str("path"), Value::Path(Path::root()))];
            m.push((Value::str("depth"), Value::Int(0)));
            if let Some(v) = value {
                m.push((Value::str("value"), v));
            }
            if let Some(c) = chain {
                m.push((Value::str("chain"), c));
            }
            m.push((Value::str("tock"), tock));
            Value::Map(m)
        };
        let p = |n: usize| vec![Value::str("a"); n];
        let cases = [
            entry(Some(Value::Int(1)), Some(chain.clone()), Value::Int(5)),
            entry(Some(Value::Int(1)), None, Value::str("x")),
            entry(None, None, Value::Int(5)),
            entry(None, Some(chain.clone()), Value::Int(5)),
            entry(Some(Value::Int(1)), Some(chain.clone()), Value::Int(-5)),
            entry(
                Some(Value::Int(1)),
                Some(Value::map([("tick", Value::Int(1))])),
                Value::Int(5),
            ),
            entry(Some(Value::Int(1)), Some(Value::str("n1")), Value::Int(5)),
            entry(Some(deep(MAX_NESTING)), None, Value::Int(5)),
            entry(Some(deep(MAX_NESTING + 1)), None, Value::Int(5)),
            entry(
                Some(deep(MAX_NESTING + 1)),
                Some(chain.clone()),
                Value::Int(5),
            ),
        ];
        for (i, msg) in cases.iter().enumerate() {
            let (raw, decoded) = both(msg, &p(2), 0, &mut Slots::default());
            assert_eq!(raw, decoded, "case {i}");
        }
        // A path element too deep, first sent by an entry that is skipped
        // (no value, no chain), then kept by the next one.
        let mut slots = Slots::default();
        let bad = vec![Value::str("a"), deep(MAX_NESTING)];
        let (raw, decoded) = both(&cases[2], &bad, 0, &mut slots);
        assert_eq!((raw, decoded), (Ok(false), Ok(false)));
        let mut child = bad.clone();
        child.push(Value::str("c"));
        let (raw, decoded) = both(&cases[1], &child, 2, &mut slots);
        assert!(decoded.is_err());
        assert_eq!(raw, decoded);
    }
}
