//! Synthetic data and DistKV's plain save format, for tests and benches.
//!
//! Nothing here knows about a node's state: [`small_entries`] makes seeded,
//! deterministic entries in tree order, and [`distkv_save_format`] encodes
//! entries the way DistKV 0.63.3's `save` writes them (one msgpack map
//! `{path, depth, value, chain, tock}` per entry, paths shortened against
//! the previous entry, no framing, no compression), the baseline that
//! snapshot sizes are compared with.

use distkv_model::{codec, Chain, NodeName, Path, Value};

use crate::item::EntryRecord;

/// `n` small entries in depth-first order: path `data.<i % 1000>.<i>`,
/// value the integer `i`, a chain of one link `(node, k)` and tock `k`,
/// where `k` counts the entries from 1.
pub fn small_entries(n: u64, node: NodeName) -> impl Iterator<Item = EntryRecord> {
    let groups = n.min(1000);
    (0..groups)
        .flat_map(move |g| (g..n).step_by(1000))
        .zip(1u64..)
        .map(move |(i, k)| EntryRecord {
            path: Path::new(vec![
                Value::str("data"),
                Value::uint(i % 1000),
                Value::uint(i),
            ]),
            value: Some(Value::uint(i)),
            chain: Some(Chain::single(node.clone(), k)),
            tock: k,
        })
}

/// DistKV's save-file encoding of `entries` (no state record): per entry a
/// map `{path, depth, value?, chain, tock}` where `depth` elements are
/// shared with the previous entry's path and `path` holds the rest (ext 3
/// when `depth` is 0, an array otherwise) and `chain` is the full nested
/// `{node, tick, prev}` form.
pub fn distkv_save_format<'a>(entries: impl IntoIterator<Item = &'a EntryRecord>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last: &[Value] = &[];
    for e in entries {
        let depth = e.path.iter().zip(last).take_while(|(a, b)| a == b).count();
        let rest = e.path[depth..].to_vec();
        let mut m = vec![
            (
                Value::str("path"),
                if depth == 0 {
                    Value::Path(Path::new(rest))
                } else {
                    Value::Array(rest)
                },
            ),
            (Value::str("depth"), Value::uint(depth as u64)),
        ];
        if let Some(v) = &e.value {
            m.push((Value::str("value"), v.clone()));
        }
        if let Some(c) = &e.chain {
            m.push((Value::str("chain"), c.to_value(-1)));
        }
        m.push((Value::str("tock"), Value::uint(e.tock)));
        codec::encode(&Value::Map(m), &mut out);
        last = &e.path;
    }
    out
}
