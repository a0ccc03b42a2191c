//! The history index (crate `distkv-index`): `history --key` over 10 M
//! logged events from the index (aim: ≤ 100 ms per query), building the
//! index from the segments, and the log append rate with and without the
//! index kept current (as the node's writer thread does).
//!
//! `cargo bench -p distkv-benches --bench history_index -- --noplot`
//!
//! `DISTKV_BENCH_EVENTS` sets the size of the large log (default
//! 10 000 000). Everything is seeded; the data directory is written once,
//! outside the measurements: 1 M keys created by three nodes, then
//! changed at random by them (1 in 100 a deletion), committed in groups of
//! 1000 into 64 MiB segments. The index build is timed once and printed
//! (it takes minutes at 10 M events; criterion would repeat it).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use distkv_benches::heap::{dir_size, status_line};
use distkv_benches::{append, key_path, remote_events, Workload};
use distkv_index::{BlockEvents, HistoryIndex};
use distkv_log::{FsyncPolicy, LogWriter, Now, WriterConfig};
use distkv_model::UpdateEvent;
use distkv_node::persist::index::{IndexKeeper, IndexPlace};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODE: &str = "observer";
const KEYS: u64 = 1_000_000;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("distkv-bench-")
        .tempdir()
        .expect("temporary directory")
}

fn events_wanted() -> u64 {
    std::env::var("DISTKV_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

/// How the append benchmark keeps the index.
#[derive(Clone, Copy, PartialEq)]
enum Keeping {
    /// No index.
    Off,
    /// Recorded on the writer's thread after each commit (what it costs).
    Inline,
    /// Handed to the index thread, as the node does.
    Thread,
}

/// The log writer and the index as one benchmark iteration keeps them.
struct Appender {
    _dir: tempfile::TempDir,
    w: LogWriter,
    inline: Option<HistoryIndex>,
    keeper: IndexKeeper,
}

impl Appender {
    fn new(keeping: Keeping) -> Appender {
        let dir = tempdir();
        let mut wc = WriterConfig::new(NODE);
        wc.fsync = FsyncPolicy::Never;
        let log = dir.path().join("log");
        let w = LogWriter::open(&log, wc, Now::default()).expect("open log");
        let index = dir.path().join("index");
        let inline = (keeping == Keeping::Inline).then(|| {
            let (mut ix, _) = HistoryIndex::open(&index, &log, NODE).expect("index");
            ix.sync().expect("sync");
            ix
        });
        let keeper = if keeping == Keeping::Thread {
            let keeper = IndexKeeper::start(IndexPlace {
                dir: index,
                log_dir: log,
                node: NODE.into(),
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            while !keeper.is_ready() {
                assert!(Instant::now() < deadline, "index thread not ready");
                std::thread::yield_now();
            }
            keeper
        } else {
            IndexKeeper::off()
        };
        Appender {
            _dir: dir,
            w,
            inline,
            keeper,
        }
    }

    /// Appends `events` in groups of 1000, each group one commit whose
    /// block goes to the index as `keeping` says.
    fn append(&mut self, events: &[Arc<UpdateEvent>]) {
        for chunk in events.chunks(1000) {
            let mut block = BlockEvents::default();
            for e in chunk {
                let seq = self.w.next_seq();
                append(&mut self.w, e).expect("append");
                if let Some(events) = self.keeper.events() {
                    events.push(seq, e.tock, &e.path);
                }
                if self.inline.is_some() {
                    block.push(seq, e.tock, &e.path);
                }
            }
            let c = self.w.commit(Now::default()).expect("commit");
            if let Some(ix) = &mut self.inline {
                ix.record_commit(&c, self.w.next_seq(), 0, &block)
                    .expect("index");
            }
            self.keeper.committed(&c, self.w.next_seq(), 0);
        }
        if let Some(ix) = &mut self.inline {
            ix.flush().expect("flush");
        }
    }
}

/// Appending 100 000 events in groups of 1000, without fsync: the log
/// alone, the log with the index recorded on the writer's thread, and the
/// log handing its blocks to the index thread (as the node does; the
/// index thread's close is not timed: it is not the writer's).
fn append_rate(c: &mut Criterion) {
    let mut g = c.benchmark_group("history_index_append");
    g.sample_size(10);
    let events: Vec<Arc<UpdateEvent>> = remote_events(100_000, 100_000, 3, 11)
        .into_iter()
        .map(Arc::new)
        .collect();
    g.throughput(Throughput::Elements(events.len() as u64));
    for (keeping, name) in [
        (Keeping::Off, "without_index"),
        (Keeping::Inline, "index_on_writer_thread"),
        (Keeping::Thread, "index_thread"),
    ] {
        g.bench_function(format!("100000_events_group_1000_{name}"), |b| {
            b.iter_batched(
                || Appender::new(keeping),
                |mut a| {
                    a.append(&events);
                    a
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Writes the large log into `data/log`: `n` events (see the module docs).
fn write_large_log(data: &Path, n: u64) {
    let mut wc = WriterConfig::new(NODE);
    wc.fsync = FsyncPolicy::Never;
    let mut w = LogWriter::open(data.join("log"), wc, Now::default()).expect("open log");
    let mut work = Workload::new(3, 5);
    let mut written = 0u64;
    while written < n {
        let chunk = (n - written).min(100_000);
        let events = if work.keys() < KEYS.min(n) {
            work.create(chunk.min(KEYS - work.keys()))
        } else {
            work.churn(chunk as usize, 100)
        };
        for group in events.chunks(1000) {
            for e in group {
                append(&mut w, e).expect("append");
            }
            w.commit(Now::default()).expect("commit");
        }
        written += events.len() as u64;
    }
    w.close(Now::default()).expect("close");
}

/// Resets the process's peak resident size (Linux; elsewhere nothing).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `history --key` on the large log, from the index: the whole query as
/// `distkv-replay` runs it (open the index, check it against the segments,
/// look up, read the blocks, apply), and the lookup and block reads alone.
fn history_key(c: &mut Criterion) {
    let n = events_wanted();
    let dir = tempdir();
    let data = dir.path().join("data");
    let t = Instant::now();
    write_large_log(&data, n);
    println!(
        "history_index: wrote {n} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    reset_peak_rss();
    let before = status_line("VmRSS:");
    let t = Instant::now();
    {
        let (mut ix, _) =
            HistoryIndex::open(&data.join("index"), &data.join("log"), NODE).expect("open");
        let r = ix.sync().expect("build");
        assert!(r.complete());
        ix.flush().expect("flush");
    }
    println!(
        "history_index/build_from_segments: {n} events indexed in {:.1} s; peak RSS during the build {} (before it: {}); index {:.1} MB on disk, log {:.1} MB",
        t.elapsed().as_secs_f64(),
        status_line("VmHWM:"),
        before,
        dir_size(&data.join("index")) as f64 / 1e6,
        dir_size(&data.join("log")) as f64 / 1e6,
    );

    let mut g = c.benchmark_group("history_index");
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(20));
    let inputs = [data.clone()];
    let mut rng = StdRng::seed_from_u64(3);
    let keys = KEYS.min(n);
    g.bench_function(format!("history_key_{n}_events"), |b| {
        b.iter(|| {
            let key = key_path(rng.gen_range(0..keys));
            let r = distkv_replay::history::history_indexed(&inputs, &key, false)
                .expect("history")
                .unwrap_or_else(|why| panic!("not answered from the index: {why}"));
            assert!(!r.changes.is_empty());
            r
        })
    });
    let (ix, _) = HistoryIndex::open(&data.join("index"), &data.join("log"), NODE).expect("open");
    g.bench_function(format!("lookup_and_fetch_{n}_events"), |b| {
        b.iter(|| {
            let key = key_path(rng.gen_range(0..keys));
            let hits = ix.lookup(&key, false).expect("lookup");
            ix.fetch(&hits).expect("fetch")
        })
    });
    drop(ix);
    g.bench_function("open_index", |b| {
        b.iter(|| HistoryIndex::open(&data.join("index"), &data.join("log"), NODE).expect("open"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    // The allocator as every distkv program tunes it.
    config = { distkv_benches::heap::tune(); Criterion::default() };
    targets = append_rate, history_key
}
criterion_main!(benches);
