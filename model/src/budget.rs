//! One budget for everything a node stores, checked where data comes in.
//!
//! A change a node acknowledged must later be written to its event log,
//! put into snapshots, sent to other nodes, and read back from all of
//! them. Each of those formats wraps the change's value, path and chain in
//! a few more levels of msgpack and a few more bytes. So the budget is
//! defined once, here, for a stored change, and every format we read is
//! decoded with room for the budget plus its own wrapping
//! ([`INTERNAL_LIMITS`]): whatever passed the budget can always be read
//! back.
//!
//! * **Nesting:** a value, and each path element, nests at most
//!   [`MAX_NESTING`] levels (arrays, maps and paths count, as the decoder
//!   counts them); a chain has at most [`MAX_CHAIN_LINKS`] links (on the
//!   wire each link is one more nested map). Our formats add at most
//!   [`WRAP_DEPTH`] levels around them.
//! * **Size:** an encoded change (its wire form with the whole chain) is at most
//!   [`MAX_EVENT_BYTES`]; a message or record carrying one change, with its
//!   wrapping, at most [`MAX_MESSAGE_BYTES`].
//! * **Names:** a node name is at most [`MAX_NAME_BYTES`] bytes.
//!
//! Where the checks sit: a client's message is decoded with the node's
//! configured limits, whose ranges keep every value inside the budget
//! (`max_depth` ≤ [`MAX_NESTING`], `max_frame` ≤ [`MAX_CLIENT_FRAME`]);
//! every event that arrives in another way — from another node, in a file,
//! in a client's `update` — is decoded by [`UpdateEvent::from_value`] or,
//! in our own formats, its serde form ([`crate::serial`]), both of which
//! check nesting, chain and names, and the cluster layer checks each
//! received event's size ([`check_event_size`]).
//!
//! [`UpdateEvent::from_value`]: crate::UpdateEvent::from_value

use crate::codec::Limits;
use crate::value::Value;

/// Deepest nesting of a stored value or path element.
pub const MAX_NESTING: usize = 256;

/// Most links of a stored chain. A node appears at most once in a chain, so
/// only a cluster of more nodes than this ever cuts one (the oldest links
/// go, as when a chain is sent with `nchain`).
pub const MAX_CHAIN_LINKS: usize = 256;

/// Most msgpack levels any of our formats (log records, snapshot items,
/// cluster messages, client replies) adds around a value or a chain.
pub const WRAP_DEPTH: usize = 8;

/// Largest client message a node may be configured to accept
/// (`server.limits.max_frame`).
pub const MAX_CLIENT_FRAME: usize = 16 << 20;

/// Largest encoded change: a client message's worth of path and value,
/// plus the node's chain and tock.
pub const MAX_EVENT_BYTES: usize = MAX_CLIENT_FRAME + (1 << 20);

/// Largest message or record that carries one change with its wrapping.
pub const MAX_MESSAGE_BYTES: usize = MAX_EVENT_BYTES + (1 << 20);

/// Longest node name, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Decoding limits of our own formats: room for any change within the
/// budget, wrapped.
pub const INTERNAL_LIMITS: Limits = Limits {
    max_frame: MAX_MESSAGE_BYTES,
    max_depth: MAX_NESTING + WRAP_DEPTH,
    foreign_ext: true,
};

/// Why a change is beyond the budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A value or path element nests too deep.
    #[error("the {what} nests deeper than {MAX_NESTING} levels")]
    TooDeep {
        /// `value` or `path`.
        what: &'static str,
    },
    /// The encoded change is too large.
    #[error("the change takes {size} bytes encoded, more than the limit of {MAX_EVENT_BYTES}")]
    TooLarge {
        /// Its encoded size.
        size: usize,
    },
}

/// How deep `v` nests, counted as the decoder counts (a scalar is 0, an
/// empty array 1), looking no deeper than `limit + 1` levels: the answer
/// is exact up to `limit` and `limit + 1` for anything deeper. Iterative:
/// never recurses on the stack.
pub fn nesting(v: &Value, limit: usize) -> usize {
    /// A container's parts: a sequence's elements, or a map's keys and
    /// values.
    fn parts(v: &Value) -> Option<impl Iterator<Item = &Value>> {
        let (seq, map): (&[Value], &[(Value, Value)]) = match v {
            Value::Array(a) => (a, &[]),
            Value::Path(p) => (p, &[]),
            Value::Map(m) => (&[], m),
            _ => return None,
        };
        Some(seq.iter().chain(map.iter().flat_map(|(k, x)| [k, x])))
    }
    // Most values and path elements are scalars: no stack for them.
    if parts(v).is_none() {
        return 0;
    }
    let mut deepest = 0;
    let mut todo: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, d)) = todo.pop() {
        let Some(kids) = parts(v) else {
            continue;
        };
        let d = d + 1;
        deepest = deepest.max(d);
        if d > limit {
            return limit + 1;
        }
        todo.extend(kids.filter(|c| parts(c).is_some()).map(|c| (c, d)));
    }
    deepest
}

/// Checks a change's encoded size against [`MAX_EVENT_BYTES`].
pub fn check_event_size(size: usize) -> Result<(), BudgetError> {
    if size > MAX_EVENT_BYTES {
        return Err(BudgetError::TooLarge { size });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::Path;

    fn nested(depth: usize) -> Value {
        let mut v = Value::Int(1);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn nesting_counts_like_the_decoder() {
        assert_eq!(nesting(&Value::Int(1), 10), 0);
        assert_eq!(nesting(&Value::Array(vec![]), 10), 1);
        assert_eq!(nesting(&nested(7), 10), 7);
        let m = Value::map([("a", nested(3))]);
        assert_eq!(nesting(&m, 10), 4);
        let p = Value::Path(Path::new(vec![Value::str("a"), nested(2)]));
        assert_eq!(nesting(&p, 10), 3);
        // Deeper than the limit: limit + 1, without walking further.
        assert_eq!(nesting(&nested(1000), 10), 11);
        // The decoder agrees on where the limit is.
        let bytes = crate::codec::to_vec(&nested(10));
        let limits = Limits {
            max_depth: 10,
            ..Limits::default()
        };
        assert!(crate::codec::decode_with(&bytes, limits).is_ok());
        let bytes = crate::codec::to_vec(&nested(11));
        assert!(crate::codec::decode_with(&bytes, limits).is_err());
    }

    proptest::proptest! {
        /// The walk agrees with the definition, depth by depth, at
        /// every limit: a container is one deeper than its deepest part.
        #[test]
        fn nesting_is_the_depth_of_the_deepest_container(
            v in crate::strategies::value(),
            limit in 0usize..5,
        ) {
            fn depth(v: &Value) -> usize {
                let parts: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    Value::Map(m) => m.iter().flat_map(|(k, x)| [k, x]).collect(),
                    _ => return 0,
                };
                1 + parts.into_iter().map(depth).max().unwrap_or(0)
            }
            proptest::prop_assert_eq!(nesting(&v, limit), depth(&v).min(limit + 1));
        }
    }

    #[test]
    fn the_budget_leaves_room_for_the_wrapping() {
        const { assert!(MAX_CHAIN_LINKS <= MAX_NESTING) };
        const { assert!(MAX_EVENT_BYTES < MAX_MESSAGE_BYTES) };
        assert_eq!(INTERNAL_LIMITS.max_depth, MAX_NESTING + WRAP_DEPTH);
        assert!(check_event_size(MAX_EVENT_BYTES).is_ok());
        assert!(check_event_size(MAX_EVENT_BYTES + 1).is_err());
    }
}
