//! The replay tools on real-looking files: `restore`, `audit` and
//! `history --key` over the data directories of a 3-node cluster written by
//! 50 concurrent clients (interleaved ticks and tocks, fragmented tick
//! sets, conflicts on shared keys: `distkv_benches::concurrent`), all three
//! nodes' logs merged. Each tool runs at two sizes, N and 2N changes, so the
//! pair shows how its time grows: about 2× for O(n log n), 4× for a
//! quadratic cost.
//!
//! ```sh
//! cargo bench -p distkv-benches --bench replay -- --noplot
//! cargo bench -p distkv-benches --bench replay -- --check
//! ```
//!
//! `--check` skips criterion: it times each tool at both sizes (best of
//! five runs each, alternating between the sizes), prints the ratios and
//! exits with status 1 if doubling the input more than triples any tool's
//! time. N is `REPLAY_WRITES`
//! (default 50 000), as under criterion.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, SamplingMode, Throughput};
use distkv_benches::concurrent::{write_cluster, ClusterFiles, ClusterSpec};
use distkv_replay::engine::Target;

/// Doubling the input may cost at most this factor in time.
const MAX_RATIO: f64 = 3.0;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("distkv-bench-replay-")
        .tempdir()
        .expect("temporary directory")
}

/// The files of `writes` changes by 50 clients, in `dir`.
fn cluster(dir: &Path, writes: usize) -> ClusterFiles {
    write_cluster(
        &dir.join(writes.to_string()),
        &ClusterSpec::fifty_writers(writes, 9),
    )
    .expect("write the cluster's files")
}

/// A replay tool, run as its command would (quietly).
#[derive(Debug, Clone, Copy)]
enum Tool {
    Restore,
    Audit,
    History,
}

impl Tool {
    const ALL: [Tool; 3] = [Tool::Restore, Tool::Audit, Tool::History];

    fn name(self) -> &'static str {
        match self {
            Tool::Restore => "restore",
            Tool::Audit => "audit",
            Tool::History => "history",
        }
    }

    /// Runs the tool on `f`, checking that it did the whole job.
    fn run(self, f: &ClusterFiles, scratch: &Path) {
        match self {
            Tool::Restore => {
                let out = scratch.join("restored.dkvsnap");
                let r = distkv_replay::restore::restore(&f.dirs, &out, Target::All, None, true)
                    .expect("restore");
                assert!(r.verified && r.missing.is_empty(), "{}", r.to_text());
                assert_eq!(r.stats.events, f.events);
            }
            Tool::Audit => {
                let r = distkv_replay::audit::audit(&f.dirs, true).expect("audit");
                assert_eq!(r.stats.events, f.events);
                assert!(
                    r.conflicts().count() == r.problems.len(),
                    "only conflicts expected: {}",
                    r.to_text()
                );
            }
            Tool::History => {
                let r = distkv_replay::history::history(&f.dirs, &f.hot_key, false, true)
                    .expect("history");
                assert!(!r.changes.is_empty() && r.damage.is_empty());
            }
        }
    }
}

/// Each tool at N = 50 000 and 2N changes.
fn replay_tools(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_50_writers_3_nodes");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(20));
    let dir = tempdir();
    let scratch = tempdir();
    for writes in [50_000, 100_000] {
        let files = cluster(dir.path(), writes);
        g.throughput(Throughput::Elements(files.events));
        for tool in Tool::ALL {
            g.bench_function(format!("{}/{writes}_writes", tool.name()), |b| {
                b.iter(|| tool.run(&files, scratch.path()))
            });
        }
    }
    g.finish();
}

/// The shortest of five runs at each size, alternating between the sizes
/// so that other work on the machine weighs on both alike.
fn best_times(
    tool: Tool,
    small: &ClusterFiles,
    large: &ClusterFiles,
    scratch: &Path,
) -> [Duration; 2] {
    let mut best = [Duration::MAX; 2];
    for _ in 0..5 {
        for (i, f) in [small, large].into_iter().enumerate() {
            let t = Instant::now();
            tool.run(f, scratch);
            best[i] = best[i].min(t.elapsed());
        }
    }
    best
}

/// The `--check` mode (see the module docs); true if every tool passed.
fn check() -> bool {
    let n = std::env::var("REPLAY_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000usize);
    let dir = tempdir();
    let scratch = tempdir();
    let (small, large) = (cluster(dir.path(), n), cluster(dir.path(), 2 * n));
    println!(
        "{n} and {} changes by 50 clients on 3 nodes: {} and {} events in the logs",
        2 * n,
        small.events,
        large.events
    );
    let mut ok = true;
    for tool in Tool::ALL {
        let [a, b] = best_times(tool, &small, &large, scratch.path());
        let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-9);
        let pass = ratio <= MAX_RATIO;
        ok &= pass;
        println!(
            "{:<8} {:>9.1} ms -> {:>9.1} ms: x{ratio:.2} {}",
            tool.name(),
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            if pass {
                "ok".to_string()
            } else {
                format!("FAILED: doubling the input more than triples the time (> x{MAX_RATIO})")
            }
        );
    }
    ok
}

criterion_group! {
    name = benches;
    // The allocator as every distkv program tunes it.
    config = { distkv_benches::heap::tune(); Criterion::default() };
    targets = replay_tools
}

fn main() -> ExitCode {
    distkv_benches::heap::tune();
    if std::env::args().skip(1).any(|a| a == "--check") {
        return if check() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    ExitCode::SUCCESS
}
