//! `distkv bench`: a load generator for a running node.
//!
//! Like `redis-benchmark`: `-c` connections each keep `-P` requests in
//! flight (written in one batch, then all replies read), for `-n` requests
//! in total, and the tool prints requests per second and latency
//! percentiles of each batch. Keys are `bench.<n>` over a key space of
//! `-r` keys, chosen by a seeded RNG so runs are repeatable.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use distkv_model::{codec, Path, Value};
use distkv_node::wire::MsgReader;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Load-test a running node with pipelined requests on many connections.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Node host.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    pub host: String,
    /// Node port.
    #[arg(short, long, default_value_t = 27586)]
    pub port: u16,
    /// Connections.
    #[arg(short, long, default_value_t = 50)]
    pub clients: usize,
    /// Total requests (per test).
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub requests: usize,
    /// Requests in flight per connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub pipeline: usize,
    /// Number of distinct keys.
    #[arg(short = 'r', long, default_value_t = 100_000)]
    pub keyspace: u64,
    /// Value size in bytes (a string of that length).
    #[arg(short = 'd', long, default_value_t = 3)]
    pub data_size: usize,
    /// Tests to run.
    #[arg(short, long, value_delimiter = ',', default_value = "set,get")]
    pub tests: Vec<Test>,
    /// RNG seed for key choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// A request kind to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Test {
    /// `set_value` with `nchain: 0`.
    Set,
    /// `get_value`.
    Get,
}

/// xorshift64*: tiny, seeded, good enough to pick keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.pipeline == 0 {
        bail!("--clients and --pipeline must be at least 1");
    }
    for &test in &args.tests {
        run_test(&args, test).await?;
    }
    Ok(())
}

async fn run_test(args: &BenchArgs, test: Test) -> anyhow::Result<()> {
    let per_conn = args.requests / args.clients;
    let value = Value::str(&"x".repeat(args.data_size));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let addr = (args.host.clone(), args.port);
        let value = value.clone();
        let (pipeline, keyspace) = (args.pipeline, args.keyspace);
        let seed = args
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(c as u64)
            | 1;
        tasks.push(tokio::spawn(async move {
            conn_load(addr, test, per_conn, pipeline, keyspace, value, seed).await
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.context("load task panicked")??);
    }
    let secs = start.elapsed().as_secs_f64();
    let total = per_conn * args.clients;
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!(
        "{:>4}: {:>10.0} requests/s  ({} requests, {} connections, pipeline {}, {:.2} s; batch latency p50 {:.3} ms, p99 {:.3} ms)",
        format!("{test:?}").to_lowercase(),
        total as f64 / secs,
        total,
        args.clients,
        args.pipeline,
        secs,
        ms(pct(0.5)),
        ms(pct(0.99)),
    );
    Ok(())
}

async fn conn_load(
    addr: (String, u16),
    test: Test,
    count: usize,
    pipeline: usize,
    keyspace: u64,
    value: Value,
    seed: u64,
) -> anyhow::Result<Vec<Duration>> {
    let sock = TcpStream::connect((addr.0.as_str(), addr.1))
        .await
        .with_context(|| format!("cannot connect to {}:{}", addr.0, addr.1))?;
    sock.set_nodelay(true)?;
    let (rd, mut wr) = sock.into_split();
    let mut reader = MsgReader::new(rd);
    reader.next().await?.context("no greeting")?;
    // No flow control needed: only single replies.
    wr.write_all(&codec::to_vec(&Value::map([
        ("seq", Value::Int(0)),
        ("qlen", Value::Int(0)),
    ])))
    .await?;
    let mut rng = Rng(seed);
    let mut seq = 0u64;
    let mut done = 0;
    let mut buf = Vec::new();
    let mut lat = Vec::with_capacity(count / pipeline + 1);
    while done < count {
        let n = pipeline.min(count - done);
        buf.clear();
        for _ in 0..n {
            seq += 1;
            let key = Path::new(vec![
                Value::str("bench"),
                Value::uint(rng.next() % keyspace),
            ]);
            let mut m = vec![
                (Value::str("seq"), Value::uint(seq)),
                (
                    Value::str("action"),
                    Value::str(if test == Test::Set {
                        "set_value"
                    } else {
                        "get_value"
                    }),
                ),
                (Value::str("path"), Value::Path(key)),
                (Value::str("nchain"), Value::Int(0)),
            ];
            if test == Test::Set {
                m.push((Value::str("value"), value.clone()));
            }
            codec::encode(&Value::Map(m), &mut buf);
        }
        let t0 = Instant::now();
        wr.write_all(&buf).await?;
        for _ in 0..n {
            let reply = reader.next().await?.context("connection closed")?;
            if let Some(e) = reply.get("error") {
                bail!("server error: {e}");
            }
        }
        lat.push(t0.elapsed());
        done += n;
    }
    Ok(lat)
}
