//! Soak: a real node under half its peak write load for a long time, with
//! its memory and the error count sampled as it goes.
//!
//! ```text
//! cargo build --release -p distkv-tools
//! cargo run --release -p distkv-benches --example soak -- [SECS] [CONNS]
//! ```
//!
//! Starts `target/release/distkv` (or `$DISTKV_BIN`) with a fresh data
//! directory, measures its peak `set_value` rate for 10 s with `CONNS`
//! connections (default 16), then holds half of it for `SECS` seconds
//! (default 600) over a fixed key space of 100 000 keys, so the data stops
//! growing once every key is written. Every 10 s it prints the node's
//! resident memory (`VmRSS`), the writes done and the errors. At the end it
//! compares the memory at the end with the memory after the first minute
//! (the key space is full by then) and exits with status 1 when it grew by
//! 5 % or more, or when any write failed.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distkv_model::{path, Value};
use distkv_node::client::{Client, ConnectOptions, UpdateOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 100_000;
const SAMPLE: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Counts {
    done: AtomicU64,
    errors: AtomicU64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Writes as fast as it may: `per_sec` writes a second on this connection
/// (0 = unthrottled), until `until`.
async fn writer(c: Client, seed: u64, per_sec: f64, until: Instant, counts: Arc<Counts>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < until {
        if per_sec > 0.0 {
            let due = start + Duration::from_secs_f64(n as f64 / per_sec);
            tokio::time::sleep_until(due.into()).await;
        }
        let key = rng.gen_range(0..KEYS);
        let value = Value::uint(rng.gen::<u32>().into());
        match c
            .set_value(
                &path!["soak", key % 100, key],
                value,
                &UpdateOptions::default(),
            )
            .await
        {
            Ok(_) => counts.done.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
        };
        n += 1;
    }
}

async fn load(addr: &str, conns: u64, per_sec: f64, secs: Duration, counts: &Arc<Counts>) {
    let until = Instant::now() + secs;
    let mut tasks = Vec::new();
    for i in 0..conns {
        let c = Client::connect(addr, ConnectOptions::default())
            .await
            .expect("connect to the node");
        tasks.push(tokio::spawn(writer(
            c,
            i + 1,
            per_sec / conns as f64,
            until,
            counts.clone(),
        )));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map_or(600, |s| s.parse().expect("SECS"));
    let conns: u64 = args.next().map_or(16, |s| s.parse().expect("CONNS"));
    let bin = std::env::var("DISTKV_BIN").unwrap_or_else(|_| "target/release/distkv".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut node = Command::new(&bin)
        .args(["-c", "/dev/null", "server", "soak", "--bind", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--bus-port", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting {bin}: {e} (build it: cargo build --release -p distkv-tools)")
        });
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect(addr.as_str(), ConnectOptions::default())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the node did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = node.id();

    let peak = Arc::new(Counts::default());
    let t = Instant::now();
    load(&addr, conns, 0.0, Duration::from_secs(10), &peak).await;
    let peak_rate = peak.done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    let rate = peak_rate / 2.0;
    println!(
        "peak {peak_rate:.0} writes/s with {conns} connections; holding {rate:.0}/s for {secs} s"
    );
    println!(
        "{:>6} {:>10} {:>10} {:>8}",
        "secs", "rss_kib", "writes", "errors"
    );

    let counts = Arc::new(Counts::default());
    let run = tokio::spawn({
        let (addr, counts) = (addr.clone(), counts.clone());
        async move { load(&addr, conns, rate, Duration::from_secs(secs), &counts).await }
    });
    let start = Instant::now();
    let mut warm = None;
    let mut last = 0;
    while !run.is_finished() {
        tokio::time::sleep(SAMPLE).await;
        last = rss_kib(pid);
        let at = start.elapsed();
        if warm.is_none() && at >= WARM_UP {
            warm = Some(last);
        }
        println!(
            "{:>6} {:>10} {:>10} {:>8}",
            at.as_secs(),
            last,
            counts.done.load(Ordering::Relaxed),
            counts.errors.load(Ordering::Relaxed)
        );
    }
    run.await.expect("load");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = node.wait();

    let errors = counts.errors.load(Ordering::Relaxed);
    let done = counts.done.load(Ordering::Relaxed);
    let warm = warm.unwrap_or(last).max(1);
    let growth = (last as f64 - warm as f64) / warm as f64 * 100.0;
    println!(
        "{done} writes ({:.0}/s), {errors} errors; RSS {warm} KiB after {} s, {last} KiB at the end: {growth:+.1} %",
        done as f64 / start.elapsed().as_secs_f64(),
        WARM_UP.as_secs()
    );
    if errors > 0 || growth >= 5.0 {
        std::process::exit(1);
    }
}
