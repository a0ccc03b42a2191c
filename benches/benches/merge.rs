//! Merge throughput: applying remote update events to the tree, one by
//! one and looked ahead of, and merging them as a node does (`update`
//! messages decoded, then their events applied, looked ahead of); purging the tombstones of many deleted siblings; and
//! loading a snapshot, the first part of a node's start.
//!
//! `cargo bench -p distkv-benches --bench merge`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use distkv_benches::{apply_run, fresh_state, key_path, remote_events};
use distkv_log::LogLimits;
use distkv_model::{Path, Value};
use distkv_node::cluster::msg::{Update, UpdateEncoder};
use distkv_node::persist::snap;

fn merge(c: &mut Criterion) {
    let mut g = c.benchmark_group("merge");
    g.sample_size(10);
    for (n, keys) in [(1_000_000usize, 100_000u64), (1_000_000, 1_000_000)] {
        let events = remote_events(n, keys, 3, 42);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("apply_{n}_events_{keys}_keys"), |b| {
            b.iter_batched(
                || (fresh_state(), events.clone()),
                |(mut st, evs)| {
                    apply_run(&mut st, evs, false);
                    st
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function(format!("apply_ahead_{n}_events_{keys}_keys"), |b| {
            b.iter_batched(
                || (fresh_state(), events.clone()),
                |(mut st, evs)| {
                    apply_run(&mut st, evs, true);
                    st
                },
                BatchSize::PerIteration,
            )
        });
    }
    // As a node merges a peer's changes: the broadcast's messages, each
    // decoded, then its events applied, each looked ahead of.
    let (n, keys) = (1_000_000usize, 100_000u64);
    let msgs = UpdateEncoder::default().encode("node0", remote_events(n, keys, 3, 42).iter());
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(format!("decode_apply_{n}_events_{keys}_keys"), |b| {
        b.iter_batched(
            fresh_state,
            |mut st| {
                for m in &msgs {
                    apply_run(
                        &mut st,
                        Update::decode(m).expect("our own message").events,
                        true,
                    );
                }
                st
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// `n` keys under one parent, every other one deleted (in the order they
/// were written), then the tombstones purged: a purge of n / 2 siblings.
fn purge(c: &mut Criterion) {
    let mut g = c.benchmark_group("purge");
    g.sample_size(10);
    for n in [100_000i64, 1_000_000] {
        g.throughput(Throughput::Elements(n as u64 / 2));
        g.bench_function(format!("purge_{}_of_{n}_siblings", n / 2), |b| {
            b.iter_batched(
                || {
                    let mut st = fresh_state();
                    let key = |i: i64| Path::new(vec![Value::str("many"), Value::Int(i)]);
                    for i in 0..n {
                        st.local_change(&key(i), Some(Value::Int(i))).expect("set");
                    }
                    for i in (0..n).step_by(2) {
                        st.local_change(&key(i), None).expect("delete");
                    }
                    st
                },
                |mut st| {
                    assert_eq!(st.purge_deleted(u64::MAX), n as usize / 2);
                    st
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// A snapshot of 1 M keys with 100-byte values loaded into a new state
/// (`snap::load`, what a node's start and `distkv-replay` do): the keys
/// of `distkv bench` (one parent), and the keys of the merge above (a
/// thousand parents). The state's drop is not timed.
fn load(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let n = 1_000_000u64;
    let one_parent = |k: u64| Path::new(vec![Value::str("bench"), Value::uint(k)]);
    let shapes: [(&str, &dyn Fn(u64) -> Path); 2] =
        [("one_parent", &one_parent), ("1000_parents", &key_path)];
    for (shape, path_of) in shapes {
        let file = dir.path().join(format!("{shape}.dkvsnap"));
        {
            let mut st = fresh_state();
            let value = Value::str(&"x".repeat(100));
            for k in 0..n {
                st.local_change(&path_of(k), Some(value.clone()))
                    .expect("set");
            }
            snap::write(&st, &file, true, 0, n)
                .and_then(|w| w.finish())
                .expect("the snapshot written");
        }
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("snapshot_{n}_keys_{shape}"), |b| {
            b.iter_with_large_drop(|| {
                snap::load(&file, "observer", LogLimits::default())
                    .expect("the snapshot loads")
                    .0
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // The allocator as every distkv program tunes it.
    config = { distkv_benches::heap::tune(); Criterion::default() };
    targets = merge, purge, load
}
criterion_main!(benches);
