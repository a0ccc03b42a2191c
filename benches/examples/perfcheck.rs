//! A quick performance regression check for CI: warns, never fails.
//!
//! A criterion run in CI would need a release build of the whole
//! workspace (many minutes on two cores) and would still be noise on a
//! shared runner. This check instead reuses what `cargo test` has already
//! built — the dev profile, whose overrides optimise the core crates
//! (`opt-level = 1`, see the workspace `Cargo.toml`) — and times a few
//! seeded workloads of the hot paths: applying remote events (merge),
//! the client codec, loading a snapshot, and `distkv-replay diff` of two
//! snapshots. Each is run a few times and the best time is kept.
//!
//! Absolute times differ from machine to machine and from one moment of a
//! shared runner to the next, so every run of a workload is preceded by a
//! run of a calibration loop (hashing, random reads from a table larger
//! than the caches, small allocations: none of our code), and what counts
//! is the lowest ratio workload / calibration over the runs. That ratio is
//! compared with the committed baseline's (`benches/baseline.json`, which
//! names the machine it came from). A workload more than `--warn` percent
//! (default 40) slower than the baseline gets a `WARNING:` line. The exit
//! status is always 0: a slower figure on a busy runner is a hint to
//! measure properly (docs/perf.md), not a failure.
//!
//! ```sh
//! cargo run -p distkv-benches --example perfcheck                 # check
//! cargo run -p distkv-benches --example perfcheck -- --write-baseline
//! ```

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use distkv_benches::{fresh_state, remote_events};
use distkv_model::{codec, UpdateEvent, Value};
use distkv_node::persist::snap;
use distkv_node::state::State;
use serde::{Deserialize, Serialize};

/// The committed baseline, next to this crate's manifest.
const BASELINE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/baseline.json");
/// Runs of each workload; the best counts.
const RUNS: usize = 5;
/// Events of the merge workload (and entries of the snapshots).
const EVENTS: usize = 100_000;

/// The committed figures.
#[derive(Debug, Serialize, Deserialize)]
struct Baseline {
    /// The machine they were taken on (CPU, cores).
    machine: String,
    /// Each workload's figures.
    workloads: Vec<Figure>,
}

/// One workload's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figure {
    name: String,
    /// Best time, ms (for people: machines differ).
    ms: f64,
    /// Lowest ratio of its time to the calibration loop's just before.
    ratio: f64,
}

struct Options {
    baseline: PathBuf,
    write: bool,
    warn_percent: f64,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        baseline: PathBuf::from(BASELINE),
        write: false,
        warn_percent: 40.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--write-baseline" => o.write = true,
            "--baseline" => o.baseline = args.next().ok_or("--baseline needs a file")?.into(),
            "--warn" => {
                o.warn_percent = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("--warn needs a percentage")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

fn main() {
    distkv_benches::heap::tune();
    // Whatever goes wrong, the check only reports it.
    if let Err(e) = run() {
        println!("perf check: skipped: {e}");
    }
}

fn run() -> Result<(), String> {
    let o = parse_args()?;
    if cfg!(debug_assertions) && !o.write {
        println!(
            "perf check: dev profile (core crates at opt-level 1): figures are only comparable \
             with a baseline taken the same way"
        );
    }
    let scratch = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let figures = workloads(scratch.path())?;
    if o.write {
        let b = Baseline {
            machine: machine(),
            workloads: figures,
        };
        let text = serde_json::to_string_pretty(&b).map_err(|e| e.to_string())?;
        std::fs::write(&o.baseline, text + "\n")
            .map_err(|e| format!("{}: {e}", o.baseline.display()))?;
        println!("perf check: baseline written to {}", o.baseline.display());
        return Ok(());
    }
    let text = std::fs::read_to_string(&o.baseline)
        .map_err(|e| format!("{}: {e}", o.baseline.display()))?;
    let base: Baseline =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", o.baseline.display()))?;
    println!("perf check: baseline from {}", base.machine);
    for f in &figures {
        let Some(b) = base.workloads.iter().find(|b| b.name == f.name) else {
            println!(
                "perf check: {}: {:.0} ms (not in the baseline)",
                f.name, f.ms
            );
            continue;
        };
        // Both in units of the calibration loop.
        let ratio = f.ratio / b.ratio;
        println!(
            "perf check: {}: {:.0} ms (baseline {:.0} ms), ×{ratio:.2} the baseline \
             relative to calibration",
            f.name, f.ms, b.ms
        );
        if ratio > 1.0 + o.warn_percent / 100.0 {
            println!(
                "WARNING: perf check: {} is {:.0} % slower than the baseline (×{ratio:.2}); \
                 measure it with the benches before merging (docs/perf.md)",
                f.name,
                (ratio - 1.0) * 100.0
            );
        }
    }
    Ok(())
}

/// [`RUNS`] runs of `f`, each after one of [`calibrate`]: the best time
/// and the lowest ratio.
fn measure(name: &str, mut f: impl FnMut() -> Duration) -> Figure {
    let mut fig = Figure {
        name: name.into(),
        ms: f64::INFINITY,
        ratio: f64::INFINITY,
    };
    for _ in 0..RUNS {
        let c = ms(calibrate());
        let t = ms(f());
        fig.ms = fig.ms.min(t);
        fig.ratio = fig.ratio.min(t / c);
    }
    fig
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The unit the workloads are measured in: SplitMix64 steps, each
/// reading a random slot of a 32 MiB table and now and then allocating,
/// as our workloads hash, miss the caches and allocate. None of our code.
fn calibrate() -> Duration {
    let table: Vec<u64> = (0..(4u64 << 20)).collect();
    let t = Instant::now();
    let mut x = black_box(42u64);
    let mut acc = 0u64;
    let mut keep: Vec<Vec<u8>> = Vec::with_capacity(1024);
    for i in 0..4_000_000u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        acc ^= table[(z as usize) & (table.len() - 1)];
        if i % 8 == 0 {
            if keep.len() == keep.capacity() {
                keep.clear();
            }
            keep.push(vec![z as u8; 16 + (z as usize & 63)]);
        }
    }
    black_box((acc, keep.len()));
    t.elapsed()
}

/// A state with `events` applied.
fn merged(events: &[UpdateEvent]) -> State {
    let mut st = fresh_state();
    for e in events {
        st.apply(e.clone());
    }
    st
}

/// Times every workload.
fn workloads(dir: &Path) -> Result<Vec<Figure>, String> {
    let events = remote_events(EVENTS, EVENTS as u64 / 2, 3, 42);
    let mut out = Vec::new();
    let mut add = |name: &str, f: &mut dyn FnMut() -> Duration| out.push(measure(name, f));

    add("merge: apply 100k remote events", &mut || {
        let t = Instant::now();
        let st = merged(&events);
        let d = t.elapsed();
        drop(black_box(st));
        d
    });

    let values: Vec<Value> = events.iter().map(|e| e.to_value(-1)).collect();
    add("codec: encode and decode 100k events", &mut || {
        let t = Instant::now();
        let mut buf = Vec::new();
        for v in &values {
            buf.clear();
            codec::encode(v, &mut buf);
            black_box(codec::decode(&buf).ok());
        }
        t.elapsed()
    });

    // Two snapshots: the state, and the state after more changes.
    let st = merged(&events);
    let a = dir.join("a.dkvsnap");
    let b = dir.join("b.dkvsnap");
    snap::write(&st, &a, true, 0, 0)
        .and_then(|w| w.finish())
        .map_err(|e| format!("writing a snapshot: {e}"))?;
    let more = remote_events(EVENTS + EVENTS / 10, EVENTS as u64 / 2, 3, 42);
    let st = merged(&more);
    snap::write(&st, &b, true, 0, 0)
        .and_then(|w| w.finish())
        .map_err(|e| format!("writing a snapshot: {e}"))?;
    drop(st);

    let mut failed = None;
    add("snapshot: load a 50k-key state", &mut || {
        let t = Instant::now();
        let r = snap::load(&a, "observer", distkv_log::LogLimits::default());
        let d = t.elapsed();
        if let Err(e) = r {
            failed = Some(format!("loading a snapshot: {e}"));
        }
        d
    });
    add("replay: diff of two 50k-key snapshots", &mut || {
        let t = Instant::now();
        let r = diff(&a, &b);
        let d = t.elapsed();
        match r {
            Ok(0) => failed = Some("the diff found no differences".into()),
            Ok(_) => {}
            Err(e) => failed = Some(format!("diff: {e}")),
        }
        d
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// `distkv-replay diff A B` without the output: the number of differences.
fn diff(a: &Path, b: &Path) -> Result<usize, distkv_replay::error::Error> {
    let (sa, sb) =
        distkv_replay::diff::load_sides(&a.to_string_lossy(), &b.to_string_lossy(), true)?;
    let mut n = 0;
    distkv_replay::diff::diff_walk(&sa.built.tree, &sb.built.tree, &mut |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// The CPU model and core count, and the time, for the baseline.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let when = distkv_replay::time::format_ms(now);
    format!("{cpu}, {cores} cores, dev profile, {when}")
}
