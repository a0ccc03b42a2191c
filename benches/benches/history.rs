//! Durable history: event-log append (group commit, fsync), recovery from
//! the log, snapshot save and load, restore (snapshot + log on top), diff of
//! two snapshots, and the snapshot's size next to DistKV-py's save format.
//!
//! `cargo bench -p distkv-benches --bench history -- --noplot`
//!
//! Everything is seeded; directories and files are prepared once, outside
//! the measurements, in a temporary directory (on the same file system as
//! `$TMPDIR`, which is where the fsync figures come from). Million-item
//! benchmarks take a second or more per iteration, so they run ten flat
//! samples of one iteration each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput,
};
use distkv_benches::{
    append, diff_snapshots, fresh_state, py_save, remote_events, replay_log, state_of, write_log,
    Workload,
};
use distkv_log::{FsyncPolicy, LogLimits, LogReader, LogRecord, LogWriter, WriterConfig};
use distkv_model::UpdateEvent;
use distkv_node::persist::durable::{self, DurableConfig};
use distkv_node::persist::snap;

const MILLION: u64 = 1_000_000;
/// The node name the prepared files belong to (`fresh_state`'s).
const NODE: &str = "observer";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("distkv-bench-")
        .tempdir()
        .expect("temporary directory")
}

/// Appending events to segment files: group commit of 100 and 1000 events
/// without fsync, and of 100 with an fsync per commit.
fn log_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("log_append");
    g.sample_size(10);
    let events = remote_events(100_000, 100_000, 3, 11);
    for (group, fsync, n) in [
        (100usize, FsyncPolicy::Never, 100_000usize),
        (1000, FsyncPolicy::Never, 100_000),
        (100, FsyncPolicy::Always, 5_000),
    ] {
        let name = match fsync {
            FsyncPolicy::Always => "always",
            _ => "never",
        };
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_events_group_{group}_fsync_{name}"), |b| {
            b.iter_batched(
                || {
                    let dir = tempdir();
                    let mut wc = WriterConfig::new(NODE);
                    wc.fsync = fsync;
                    let w = LogWriter::open(dir.path().join("log"), wc, distkv_log::Now::default())
                        .expect("open log");
                    (dir, w)
                },
                |(dir, mut w)| {
                    for chunk in events[..n].chunks(group) {
                        for e in chunk {
                            append(&mut w, e).expect("append");
                        }
                        w.commit(distkv_log::Now::default()).expect("commit");
                    }
                    (dir, w)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Rebuilding a state from 1 M logged events (no snapshot): read, check,
/// decode and apply every record (`log_1M_events`), and the reading and
/// decoding alone (`read_only_1M_events`).
fn recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(20));
    let dir = tempdir();
    let log = dir.path().join("log");
    let events = remote_events(MILLION as usize, MILLION, 3, 42);
    write_log(&log, NODE, 1, &events, 1000).expect("prepare log");
    drop(events);
    g.throughput(Throughput::Elements(MILLION));
    g.bench_function("read_only_1M_events", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for rec in LogReader::open(&log, 1).expect("open") {
                if let LogRecord::Event { event, .. } = rec.expect("record") {
                    n += 1;
                    black_box(event);
                }
            }
            assert_eq!(n, MILLION);
        })
    });
    g.bench_function("log_1M_events", |b| {
        b.iter_batched(
            fresh_state,
            |mut st| {
                let n = replay_log(&mut st, &log, 1).expect("replay");
                assert_eq!(n, MILLION);
                st
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// A million keys, each created once: the base state of the snapshot
/// benchmarks, with the workload that can go on from it.
fn million_keys() -> (Workload, Vec<UpdateEvent>) {
    let mut w = Workload::new(3, 7);
    let base = w.create(MILLION);
    (w, base)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Writing and reading a snapshot of 1 M keys (`persist::snap`), and its
/// size next to DistKV-py's plain msgpack save of the same state.
fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(15));
    let dir = tempdir();
    let file = dir.path().join("1M.dkvsnap");
    let (_, base) = million_keys();
    let st = state_of(&base);
    drop(base);
    g.throughput(Throughput::Elements(MILLION));
    g.bench_function("save_1M_keys", |b| {
        b.iter(|| {
            snap::write(&st, &file, true, 0, MILLION)
                .expect("write")
                .finish()
                .expect("finish")
        })
    });
    g.bench_function("load_1M_keys", |b| {
        b.iter_batched(
            || (),
            |()| snap::load(&file, NODE, LogLimits::default()).expect("load"),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("py_save_encode_1M_keys", |b| b.iter(|| py_save(&st)));

    let ours = file_size(&file);
    let py = py_save(&st).len() as u64;
    println!(
        "snapshot/size_1M_keys: snapshot {ours} bytes, DistKV-py plain msgpack {py} bytes, \
         ratio {:.3} (1/{:.1})",
        ours as f64 / py as f64,
        py as f64 / ours as f64
    );
    g.finish();
}

/// Restoring a node: a 1 M-key snapshot with 1 M logged events on top (1 in
/// 100 a deletion). `replay_1M_on_snapshot` times the log part (the
/// snapshot is loaded in the setup), `apply_1M_decoded_on_snapshot` the
/// same without reading the log, `open_log_writer` the log writer's own
/// recovery scan, and `recover_data_dir` what a starting node does
/// (`persist::durable::recover`: open the log writer, load the snapshot,
/// replay, reserve ticks).
fn restore(c: &mut Criterion) {
    let mut g = c.benchmark_group("restore");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(30));
    let dir = tempdir();
    let data = dir.path().join("data");
    let config = DurableConfig::new(&data);
    let (mut w, base) = million_keys();
    let st = state_of(&base);
    drop(base);
    std::fs::create_dir_all(config.snap_dir()).expect("snap dir");
    let snap_file = config.snap_dir().join(durable::snapshot_name(MILLION));
    snap::write(&st, &snap_file, true, 0, MILLION)
        .expect("write")
        .finish()
        .expect("finish");
    drop(st);
    let churn = w.churn(MILLION as usize, 100);
    write_log(&config.log_dir(), NODE, MILLION + 1, &churn, 1000).expect("prepare log");
    drop(churn);
    let log_dir = config.log_dir();

    g.throughput(Throughput::Elements(MILLION));
    g.bench_function("replay_1M_on_snapshot", |b| {
        b.iter_batched(
            || {
                snap::load(&snap_file, NODE, LogLimits::default())
                    .expect("load")
                    .0
            },
            |mut st| {
                let n = replay_log(&mut st, &log_dir, MILLION + 1).expect("replay");
                assert_eq!(n, MILLION);
                st
            },
            BatchSize::PerIteration,
        )
    });
    let decoded: Vec<UpdateEvent> = LogReader::open(&log_dir, MILLION + 1)
        .expect("open")
        .filter_map(|r| match r.expect("record") {
            LogRecord::Event { event, .. } => Some(event),
            LogRecord::State { .. } | LogRecord::Lost { .. } => None,
        })
        .collect();
    g.bench_function("apply_1M_decoded_on_snapshot", |b| {
        b.iter_batched(
            || {
                let st = snap::load(&snap_file, NODE, LogLimits::default())
                    .expect("load")
                    .0;
                (st, decoded.clone())
            },
            |(mut st, events)| {
                for e in events {
                    st.replay(e);
                }
                st
            },
            BatchSize::PerIteration,
        )
    });
    drop(decoded);
    g.bench_function("open_log_writer", |b| {
        b.iter_batched(
            || WriterConfig::new(NODE),
            |wc| LogWriter::open(&log_dir, wc, distkv_log::Now::default()).expect("open"),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("recover_data_dir_1M_keys_1M_events", |b| {
        b.iter_batched(
            || config.clone(),
            |cfg| {
                let rec = durable::recover(NODE, cfg, LogLimits::default(), 0).expect("recover");
                assert_eq!(rec.info.events, MILLION);
                rec
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Comparing two 1 M-key snapshots: the second has 10 000 changes (1 in 10
/// a deletion) and 1 000 new keys.
fn diff(c: &mut Criterion) {
    let mut g = c.benchmark_group("diff");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(20));
    let dir = tempdir();
    let (a, b): (PathBuf, PathBuf) = (dir.path().join("a.dkvsnap"), dir.path().join("b.dkvsnap"));
    let (mut w, base) = million_keys();
    let mut st = state_of(&base);
    drop(base);
    snap::write(&st, &a, true, 0, MILLION)
        .expect("write a")
        .finish()
        .expect("finish a");
    let mut delta = w.churn(10_000, 10);
    delta.extend(w.create(1_000));
    for e in &delta {
        st.apply(e.clone());
    }
    snap::write(&st, &b, true, 0, MILLION + delta.len() as u64)
        .expect("write b")
        .finish()
        .expect("finish b");
    drop(st);
    let found = diff_snapshots(&a, &b).expect("diff");
    println!("diff/two_1M_key_snapshots: {found:?}");
    assert_eq!(found.only_b, 1_000);
    g.throughput(Throughput::Elements(MILLION));
    g.bench_function("two_1M_key_snapshots", |bch| {
        bch.iter(|| diff_snapshots(&a, &b).expect("diff"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // The allocator as every distkv program tunes it.
    config = { distkv_benches::heap::tune(); Criterion::default() };
    targets = log_append, recovery, snapshot, restore, diff
}
criterion_main!(benches);
