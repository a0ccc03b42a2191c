//! Update events: one change to one entry.
//!
//! An [`UpdateEvent`] is what the state machine applies, what the event log
//! stores and what nodes broadcast. Clients' messages and DistKV's files
//! carry it as a [`Value`] ([`UpdateEvent::to_value`],
//! [`UpdateEvent::from_value`]); our own formats through serde
//! ([`crate::serial`]), with the same bytes and the same checks. Wire form (server `update` messages and
//! change records): `{node, tick, prev, path, value?, tock}`: the chain's
//! head fields at top level, the full path (ext 3), `value` absent for a
//! deletion, `tock` the entry's tock after the change. Decoding also accepts
//! the entry form `{path, value?, chain: {...}, tock}`, whose `chain` wins
//! over any top-level chain fields.

use crate::budget::{nesting, BudgetError, MAX_NESTING};
use crate::chain::{Chain, ChainError, MAX_COUNTER};
use crate::path::Path;
use crate::value::Value;

/// One change to one entry.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateEvent {
    /// The entry's full path.
    pub path: Path,
    /// The entry's chain after the change; its head made the change.
    pub chain: Chain,
    /// The new value; `None` deletes.
    pub value: Option<Value>,
    /// The entry's tock after the change.
    pub tock: u64,
}

/// An update event that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The message is not a map.
    #[error("update is not a map")]
    NotAMap,
    /// A required field is missing or has the wrong type.
    #[error("update field {0:?} is missing or invalid")]
    Field(&'static str),
    /// The chain is invalid.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The value or path is beyond what a node stores.
    #[error(transparent)]
    Budget(#[from] BudgetError),
}

/// Decodes a path given as ext 3 or as a plain array.
pub fn path_from_value(v: &Value) -> Option<Path> {
    match v {
        Value::Path(p) => Some(p.clone()),
        Value::Array(a) => Some(Path::new(a.clone())),
        _ => None,
    }
}

/// Checks the nesting budget of an entry's path and value
/// ([`crate::budget`]): what [`UpdateEvent::from_value`] checks besides
/// the chain, for every entry that comes in.
pub fn check_nesting(path: &Path, value: Option<&Value>) -> Result<(), BudgetError> {
    if value.is_some_and(|x| nesting(x, MAX_NESTING) > MAX_NESTING) {
        return Err(BudgetError::TooDeep { what: "value" });
    }
    if path.iter().any(|e| nesting(e, MAX_NESTING) >= MAX_NESTING) {
        return Err(BudgetError::TooDeep { what: "path" });
    }
    Ok(())
}

impl UpdateEvent {
    /// Wire form with the chain cut to `nchain` links (`-1` = all).
    pub fn to_value(&self, nchain: i64) -> Value {
        let mut m = match self.chain.to_value(nchain) {
            Value::Map(m) => m,
            _ => Vec::new(),
        };
        m.push((Value::str("path"), Value::Path(self.path.clone())));
        if let Some(v) = &self.value {
            m.push((Value::str("value"), v.clone()));
        }
        m.push((Value::str("tock"), Value::uint(self.tock)));
        Value::Map(m)
    }

    /// Decodes either wire form, checking the nesting budget of the value
    /// and the path ([`crate::budget`]; the chain's is checked by
    /// [`Chain::from_value`]).
    pub fn from_value(v: &Value) -> Result<UpdateEvent, EventError> {
        if v.as_map().is_none() {
            return Err(EventError::NotAMap);
        }
        let path = v
            .get("path")
            .and_then(path_from_value)
            .ok_or(EventError::Field("path"))?;
        let chain = Chain::from_value(v)?.ok_or(EventError::Field("node"))?;
        let tock = v
            .get("tock")
            .and_then(Value::as_u64)
            .filter(|&t| t <= MAX_COUNTER)
            .ok_or(EventError::Field("tock"))?;
        let value = v.get("value");
        check_nesting(&path, value)?;
        Ok(UpdateEvent {
            path,
            chain,
            value: value.cloned(),
            tock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn broadcast_update_from_transcript_decodes_and_reencodes() {
        let hex = "85a46e6f6465a26e31a47469636b4fa47072657683a46e6f6465a26e32a47469636b02a470726576c0a470617468c70903a46d717474a374776fa4746f636bcd0276";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let ev = UpdateEvent::from_value(&codec::decode(&bytes).unwrap()).unwrap();
        assert_eq!(ev.value, None);
        assert_eq!(ev.tock, 630);
        assert_eq!(ev.chain.len(), 2);
        assert_eq!(codec::to_vec(&ev.to_value(-1)), bytes);
        let mut direct = Vec::new();
        crate::serial::encode(&ev, &mut direct);
        assert_eq!(direct, bytes);
        let back: UpdateEvent = crate::serial::from_slice(&bytes).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn serde_encoding_matches_the_value_encoding() {
        let chain = Chain::attach(
            "a".into(),
            1 << 40,
            Some(&Chain::attach(
                "bb".into(),
                7,
                Some(&Chain::single("c".into(), 0)),
            )),
        );
        for value in [
            None,
            Some(Value::Nil),
            Some(Value::map([("x", Value::Int(-3))])),
        ] {
            for chain in [chain.clone(), Chain::single("z".into(), 300)] {
                let ev = UpdateEvent {
                    path: crate::path!["p", 1u64, Value::Nil],
                    chain,
                    value: value.clone(),
                    tock: 1 << 33,
                };
                let mut direct = Vec::new();
                crate::serial::encode(&ev, &mut direct);
                assert_eq!(direct, codec::to_vec(&ev.to_value(-1)));
                let back: UpdateEvent = crate::serial::from_slice(&direct).unwrap();
                assert_eq!(back, ev);
            }
        }
    }

    #[test]
    fn entry_form_chain_wins_over_top_level() {
        let v = Value::map([
            ("node", Value::str("resender")),
            ("tick", Value::Int(99)),
            ("path", Value::Array(vec![Value::str("a")])),
            ("value", Value::Int(1)),
            (
                "chain",
                Value::map([
                    ("node", Value::str("orig")),
                    ("tick", Value::Int(3)),
                    ("prev", Value::Nil),
                ]),
            ),
            ("tock", Value::Int(7)),
        ]);
        let ev = UpdateEvent::from_value(&v).unwrap();
        assert_eq!(&*ev.chain.head().node, "orig");
        assert_eq!(ev.chain.head().tick, 3);
    }
}
