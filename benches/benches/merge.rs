//! Merge throughput: applying remote update events to the tree.
//!
//! `cargo bench -p distkv-benches --bench merge`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use distkv_benches::{fresh_state, remote_events};

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
                    for e in evs {
                        st.apply(e);
                    }
                    st
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
