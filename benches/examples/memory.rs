//! Memory per entry of a node's state: loads N keys × 100 B the way a node
//! stores clients' `set_value`s, and prints the heap bytes it holds and
//! the process's RSS, with a breakdown.
//!
//! Keys are those of `distkv bench` (`bench.0`, `bench.1`, …, one level
//! below `bench`), each value a fresh string of 100 bytes, as decoded from
//! a request. Every change goes through `State::local_change`, the commit
//! path of a client's set, with the node's default in-memory event log.
//! "Raw" is what `distkv bench --compare-redis` calls raw: the key text
//! plus the value bytes.
//!
//! Live heap bytes come from a counting wrapper around mimalloc (the
//! benches' global allocator): what the program requested and did not free,
//! not the allocator's rounding, which RSS includes. The in-memory log's
//! share is measured by replacing it with an empty one after the load.
//!
//! ```sh
//! cargo run --release -p distkv-benches --example memory            # 1 M keys
//! cargo run -p distkv-benches --example memory -- --keys 100000     # quicker
//! ```

use std::time::Instant;

use distkv_benches::heap;
use distkv_log::{EventLog, LogLimits};
use distkv_model::{Chain, Path, Value};
use distkv_node::state::{State, Tree};

/// Bytes of each value, as in `distkv bench --compare-redis`.
const VALUE_BYTES: usize = 100;

fn main() {
    heap::start_counting();
    heap::tune();
    let keys = match parse_args() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("memory: {e}\nusage: memory [--keys N]");
            std::process::exit(2);
        }
    };
    let rss_before = heap::rss_bytes();
    let t = Instant::now();
    let mut st = State::new("bench-node", LogLimits::default());
    st.make_ready();
    let text = "x".repeat(VALUE_BYTES);
    for i in 0..keys {
        // A fresh path and value per request, as decoded from the wire.
        let path = Path::new(vec![Value::str("bench"), Value::uint(i)]);
        let value = Value::str(&text);
        if let Err(e) = st.local_change(&path, Some(value)) {
            eprintln!("memory: set {path} refused: {e}");
            std::process::exit(1);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let total = heap::live_bytes();
    let rss = heap::rss_bytes();
    let log_records = st.log().len();
    *st.log_mut() = EventLog::new(LogLimits::default());
    let state = heap::live_bytes();
    report(&Figures {
        keys,
        secs,
        total,
        log: total - state,
        log_records,
        state,
        rss_before,
        rss,
    });
    // Keep the state alive until everything is measured.
    drop(st);
}

fn parse_args() -> Result<u64, String> {
    let mut keys = 1_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--keys" => {
                keys = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or("--keys needs a positive number")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(keys)
}

/// What one load measured.
struct Figures {
    keys: u64,
    secs: f64,
    /// Live heap bytes after the load.
    total: isize,
    /// Of which the in-memory event log's.
    log: isize,
    log_records: usize,
    /// Live heap bytes without the log (tree and tick bookkeeping).
    state: isize,
    rss_before: Option<u64>,
    rss: Option<u64>,
}

fn report(f: &Figures) {
    let n = f.keys as f64;
    let raw: u64 = (0..f.keys)
        .map(|i| format!("bench.{i}").len() as u64)
        .sum::<u64>()
        + f.keys * VALUE_BYTES as u64;
    let mb = |b: f64| b / 1e6;
    // A `SharedStr`'s block: its count and length (4 bytes each), then the
    // bytes.
    let values = f.keys as f64 * (8 + VALUE_BYTES) as f64;
    println!(
        "{} keys × {VALUE_BYTES} B loaded in {:.2} s ({:.0} sets/s); raw {:.1} MB ({:.1} B per key)",
        f.keys,
        f.secs,
        n / f.secs,
        mb(raw as f64),
        raw as f64 / n
    );
    let row = |what: &str, b: f64| {
        println!(
            "  {what:<44} {:>9.1} MB {:>7.1} B/entry {:>5.2} × raw",
            mb(b),
            b / n,
            b / raw as f64
        );
    };
    println!("live heap bytes (requested sizes):");
    row("total", f.total as f64);
    row(
        &format!("in-memory event log ({} records)", f.log_records),
        f.log as f64,
    );
    row("state: tree and tick bookkeeping", f.state as f64);
    row("  of which values (SharedStr, 8 + 100 B)", values);
    row("  of which the rest (structure)", f.state as f64 - values);
    if let (Some(before), Some(after)) = (f.rss_before, f.rss) {
        println!("resident set size:");
        row("RSS after the load", after as f64);
        row("RSS grown by the load", after.saturating_sub(before) as f64);
    }
    println!(
        "type sizes: an entry's slot {} B, Value {} B, Option<Chain> {} B, Path {} B",
        Tree::SLOT_BYTES,
        std::mem::size_of::<Value>(),
        std::mem::size_of::<Option<Chain>>(),
        std::mem::size_of::<Path>()
    );
}
