//! `history --key` from the history index, timed without criterion: for a
//! quick comparison of two builds of the index in the dev profile (the
//! criterion bench `history_index` is the reference, in release).
//!
//! Writes the workload of `benches/benches/history_index.rs` (1 M keys
//! created by three nodes, then changed at random, groups of 1000) into
//! `DIR/log` unless a log is already there, builds the index from the
//! segments (timed, with the peak resident size), then times 20 seeded
//! `history --key` queries as `distkv-replay history DIR --key K` runs
//! them, the lookup and block reads alone, and sled's open.
//!
//! ```sh
//! cargo run -p distkv-benches --example history_query -- DIR [EVENTS]   # default 1 000 000
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use distkv_benches::heap::{dir_size, status_line};
use distkv_benches::{append, key_path, Workload};
use distkv_index::HistoryIndex;
use distkv_log::{FsyncPolicy, LogWriter, Now, WriterConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODE: &str = "observer";
const KEYS: u64 = 1_000_000;
const QUERIES: usize = 20;

fn main() -> anyhow::Result<()> {
    distkv_benches::heap::tune();
    let mut args = std::env::args().skip(1);
    let data = PathBuf::from(args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: history_query DIR [EVENTS] (DIR/log is written if missing)")
    })?);
    let n: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    if !data.join("log").exists() {
        let t = Instant::now();
        write_log(&data, n)?;
        println!("wrote {n} events in {:.1} s", t.elapsed().as_secs_f64());
    }
    let index = data.join("index");
    if index.exists() {
        std::fs::remove_dir_all(&index)?;
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_line("VmRSS:");
    let t = Instant::now();
    {
        let (mut ix, _) = HistoryIndex::open(&index, &data.join("log"), NODE)?;
        let r = ix.sync()?;
        anyhow::ensure!(r.complete(), "index incomplete: {:?}", r.incomplete);
        ix.flush()?;
    }
    println!(
        "index built in {:.1} s; peak RSS {} (before: {}); {:.1} MB on disk",
        t.elapsed().as_secs_f64(),
        status_line("VmHWM:"),
        before,
        dir_size(&index) as f64 / 1e6
    );
    let inputs = [data.clone()];
    let mut rng = StdRng::seed_from_u64(3);
    let keys = KEYS.min(n);
    let mut whole = Vec::new();
    for _ in 0..QUERIES {
        let key = key_path(rng.gen_range(0..keys));
        let t = Instant::now();
        let r = distkv_replay::history::history_indexed(&inputs, &key, false)?
            .map_err(|why| anyhow::anyhow!("not answered from the index: {why}"))?;
        whole.push(t.elapsed());
        anyhow::ensure!(!r.changes.is_empty(), "no change of {key:?}");
    }
    let (ix, _) = HistoryIndex::open(&index, &data.join("log"), NODE)?;
    let mut lookups = Vec::new();
    for _ in 0..QUERIES {
        let key = key_path(rng.gen_range(0..keys));
        let t = Instant::now();
        ix.fetch(&ix.lookup(&key, false)?)?;
        lookups.push(t.elapsed());
    }
    drop(ix);
    let mut opens = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        drop(HistoryIndex::open(&index, &data.join("log"), NODE)?);
        opens.push(t.elapsed());
    }
    report("history --key, whole query", &mut whole);
    report("lookup and block reads", &mut lookups);
    report("open the index", &mut opens);
    Ok(())
}

/// Prints the median and the range of `times`.
fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what}: median {:.1} ms (min {:.1}, max {:.1}, {} runs)",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        times.len()
    );
}

/// The log of `benches/benches/history_index.rs`: `n` events.
fn write_log(data: &Path, n: u64) -> anyhow::Result<()> {
    let mut wc = WriterConfig::new(NODE);
    wc.fsync = FsyncPolicy::Never;
    let mut w = LogWriter::open(data.join("log"), wc, Now::default())?;
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
                append(&mut w, e)?;
            }
            w.commit(Now::default())?;
        }
        written += events.len() as u64;
    }
    w.close(Now::default())?;
    Ok(())
}
