//! The commit path's cost of data rules: `set_value` of an integer into a
//! plain subtree, one matched to a type with a JSON schema, one matched to
//! a type with a Rhai script, and a converted user's write through a
//! codec (decode, then commit). The store has the node's hooks
//! (`MetaRules`, `TypeRules`) and no data directory, so what differs is
//! the rules' work. Seeded keys; setup outside `iter`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use distkv_model::{Path, Value};
use distkv_node::commit::{Change, CommitHook, MetaRules, Road, SharedState, Store};
use distkv_node::rules::{DataRules, TypeRules};
use distkv_node::state::State;
use rand::{Rng, SeedableRng};

fn store() -> Store {
    let mut st = State::new("bench", Default::default());
    st.make_ready();
    let rules = Arc::new(DataRules::default());
    let hooks: Vec<Arc<dyn CommitHook>> =
        vec![Arc::new(MetaRules), Arc::new(TypeRules(rules.clone()))];
    Store::new(SharedState::new(st), None, hooks).with_rules(rules)
}

fn meta(elems: &[&str]) -> Path {
    Path::new(
        std::iter::once(Value::Nil)
            .chain(elems.iter().map(|e| Value::str(e)))
            .collect(),
    )
}

fn define(s: &Store, path: Path, value: Value) {
    let change = Change::Set {
        path,
        value: Some(value),
    };
    s.commit(Road::Client, change).expect("definition accepted");
}

fn ints(v: &[i64]) -> Value {
    Value::Array(v.iter().map(|&i| Value::Int(i)).collect())
}

/// A store with `schema.#` typed by a schema, `script.#` by a script and
/// a converter group `g` on `conv.#`.
fn ruled() -> Store {
    let s = store();
    let schema = Value::map([("type", Value::str("integer")), ("minimum", Value::Int(0))]);
    let rec = Value::map([
        ("schema", schema),
        ("good", ints(&[0, 5])),
        ("bad", ints(&[-1])),
    ]);
    define(&s, meta(&["type", "schema"]), rec);
    let rec = Value::map([
        ("code", Value::str("if value < 0 { throw \"negative\" }")),
        ("good", ints(&[0, 5])),
        ("bad", ints(&[-1])),
    ]);
    define(&s, meta(&["type", "script"]), rec);
    for t in ["schema", "script"] {
        let m = Value::map([("type", Value::str(t))]);
        define(&s, meta(&["match", t, "#"]), m);
    }
    let pair = |a: Value, b: Value| Value::Array(vec![a, b]);
    let codec = Value::map([
        ("decode", Value::str("parse_int(value)")),
        ("encode", Value::str("value.to_string()")),
        (
            "in",
            Value::Array(vec![pair(Value::str("1"), Value::Int(1))]),
        ),
        (
            "out",
            Value::Array(vec![pair(Value::Int(1), Value::str("1"))]),
        ),
    ]);
    define(&s, meta(&["codec", "int"]), codec);
    let conv = Value::map([("codec", Value::str("int"))]);
    define(&s, meta(&["conv", "g", "conv", "#"]), conv);
    s
}

fn set_value(c: &mut Criterion) {
    let s = ruled();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let keys: Vec<i64> = (0..1024).map(|_| rng.gen_range(0..10_000)).collect();
    let mut g = c.benchmark_group("rules/set_value");
    g.throughput(Throughput::Elements(1));
    for top in ["plain", "schema", "script"] {
        let mut i = 0;
        g.bench_function(top, |b| {
            b.iter(|| {
                i += 1;
                let path = Path::new(vec![Value::str(top), Value::Int(keys[i % keys.len()])]);
                let change = Change::Set {
                    path,
                    value: Some(Value::Int(i as i64)),
                };
                s.commit(Road::Client, change).expect("accepted")
            })
        });
    }
    let mut i = 0;
    g.bench_function("codec", |b| {
        b.iter(|| {
            i += 1;
            let path = Path::new(vec![Value::str("conv"), Value::Int(keys[i % keys.len()])]);
            let mut tx = s.begin();
            let v = s
                .rules()
                .decode(tx.state(), Some("g"), &path, Value::str(&i.to_string()))
                .expect("decoded");
            let change = Change::Set {
                path,
                value: Some(v),
            };
            tx.commit(Road::Client, change).expect("accepted")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // The allocator as every distkv program tunes it.
    config = { distkv_benches::heap::tune(); Criterion::default() };
    targets = set_value
}
criterion_main!(benches);
