//! Proptest strategies for values, paths, chains and events, for the
//! property tests of this crate and of the crates built on it (feature
//! `strategies`).

use proptest::prelude::*;

use crate::{Chain, Link, NodeName, Path, UpdateEvent, Value};

/// A value of every scalar kind the codec reads: short strings from a few
/// (so that paths share them), strings at the edge of msgpack's short
/// form, integers of every width and sign, nil, a boolean, floats, bytes.
pub fn scalar() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        "[ab]{0,2}".prop_map(|s| Value::str(&s)),
        "x{31,33}".prop_map(|s| Value::str(&s)),
        any::<u64>().prop_map(Value::uint),
        (0u64..200).prop_map(Value::uint),
        any::<i64>().prop_map(Value::Int),
        Just(Value::Nil),
        Just(Value::Bool(true)),
        any::<f64>().prop_map(Value::Float),
        Just(Value::from(&b"ab"[..])),
    ]
}

/// Scalars, and arrays and maps of them nested up to three levels.
pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec(("[kl]", inner), 0..3).prop_map(|kv| {
                Value::Map(kv.into_iter().map(|(k, v)| (Value::str(&k), v)).collect())
            }),
        ]
    })
}

/// A path of up to four elements of every kind the codec reads, an array
/// among them.
pub fn path() -> impl Strategy<Value = Path> {
    let elem = prop_oneof![
        9 => scalar(),
        1 => Just(Value::Array(vec![Value::str("a"), Value::Int(-1)])),
    ];
    proptest::collection::vec(elem, 0..5).prop_map(Path::new)
}

/// A chain of one to three links from four node names, ticks up to 2⁴⁰.
pub fn chain() -> impl Strategy<Value = Chain> {
    proptest::collection::btree_map(0usize..4, 0u64..1 << 40, 1..4).prop_map(|links| {
        let mut chain: Option<Chain> = None;
        for (n, tick) in links {
            chain = Some(Chain::attach(
                NodeName::from(format!("n{n}")),
                tick,
                chain.as_ref(),
            ));
        }
        chain.expect("at least one link")
    })
}

/// A chain of `n` links (at least one): nodes `n0`, `n1`, … with ticks 0,
/// 1, … — for chains at the budget's limit and beyond it.
pub fn chain_of(n: usize) -> Chain {
    let links = (0..n)
        .map(|i| Link {
            node: NodeName::from(format!("n{i}")),
            tick: i as u64,
        })
        .collect();
    Chain::from_links(links).expect("at least one link")
}

/// An event with any of the above, with or without a value.
pub fn event() -> impl Strategy<Value = UpdateEvent> {
    (
        path(),
        chain(),
        proptest::option::of(value()),
        0u64..1 << 40,
    )
        .prop_map(|(path, chain, value, tock)| UpdateEvent {
            path,
            chain,
            value,
            tock,
        })
}
