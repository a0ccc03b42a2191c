//! `distkv bench`: a load generator for a running node.
//!
//! Like `redis-benchmark`: `-c` connections each keep `-P` requests in
//! flight (written in one batch, then all replies read), for `-n` requests
//! in total, and the tool prints requests per second and latency
//! percentiles of each batch. Keys are `PREFIX.<n>` (`bench.<n>` by
//! default) over a key space of `-r` keys, chosen by a seeded RNG so runs
//! are repeatable. The `set` test writes them into the node's tree, and so
//! into the cluster and its history, like any client would: the tool says
//! so before it starts. With `connect.ssl` every connection uses TLS, as
//! `distkv client` does.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use distkv_model::{codec, Path, Value};
use distkv_node::addr::HostPort;
use distkv_node::client::open;
use distkv_node::config::Config;
use distkv_node::tls::Connector;
use distkv_node::wire::MsgReader;
use tokio::io::AsyncWriteExt;

use crate::client::{parse_path, LongHelp};

/// Load-test a running node with pipelined requests on many connections
/// (the help text is on `Command::Bench`).
#[derive(Debug, Clone, Args)]
#[command(disable_help_flag = true)]
pub struct BenchArgs {
    /// Host to use. Default: `connect.host` (localhost), as for `client`.
    #[arg(short = 'h', long, value_name = "HOST", short_alias = 'H')]
    pub host: Option<String>,
    /// Port to use. Default: `connect.port` (27586).
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Where the keys go (DistKV path syntax).
    #[arg(long, value_name = "PATH", value_parser = parse_path, default_value = "bench")]
    pub prefix: Path,
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
    /// Keys in order (`0`, `1`, … up to `-r`) instead of drawn at random:
    /// fills the key space exactly (with `-n` = `-r`).
    #[arg(long)]
    pub sequential: bool,
    /// Start a node of this binary and a `redis-server`, run the same
    /// workloads on both (`set`/`get`, 1 and 16 in flight, then 1 M keys of
    /// 100 bytes for memory) and print the ratios. Needs `redis-server` and
    /// `redis-benchmark` (Debian: `apt-get install redis-server`).
    #[arg(long)]
    pub compare_redis: bool,
    /// Keys of the memory test of `--compare-redis` (0: none).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub memory_keys: u64,
    /// The node's request threads in `--compare-redis` (its `--threads`;
    /// default: the node's own default, one per core). `1` gives it what
    /// Redis's event loop has, one thread for requests, leaving the other
    /// cores to its background threads and the load generator.
    #[arg(long, value_name = "N")]
    pub node_threads: Option<usize>,
    #[command(flatten)]
    help: LongHelp,
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

/// Where the load goes.
struct Target {
    addr: HostPort,
    prefix: Path,
    /// TLS (`connect.ssl`).
    tls: Option<Connector>,
}

pub async fn run(args: BenchArgs, cfg: Config) -> anyhow::Result<()> {
    if args.clients == 0 || args.pipeline == 0 {
        bail!("--clients and --pipeline must be at least 1");
    }
    if args.compare_redis {
        return crate::compare::run(&args).await;
    }
    let settings = cfg.connect()?;
    let addr = HostPort::new(
        &args.host.clone().unwrap_or(settings.host),
        args.port.unwrap_or(settings.port),
    );
    let tls = match &settings.tls {
        Some(t) => {
            let config = t.config().context("connect.ssl")?;
            Some(Connector::new(config, &addr.host).context("connect.ssl")?)
        }
        None => None,
    };
    let target = Target {
        addr,
        prefix: args.prefix.clone(),
        tls,
    };
    if args.tests.contains(&Test::Set) {
        eprintln!(
            "writing up to {} keys below {} on {} (--prefix chooses where)",
            args.keyspace.min(args.requests as u64),
            target.prefix,
            target.addr
        );
    }
    for &test in &args.tests {
        let m = run_test(&args, &target, test).await?;
        println!(
            "{:>4}: {:>10.0} requests/s  ({} requests, {} connections, pipeline {}, {:.2} s; batch latency p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms)",
            format!("{test:?}").to_lowercase(),
            m.rate,
            m.requests,
            args.clients,
            args.pipeline,
            m.secs,
            m.p50_ms,
            m.p99_ms,
            m.max_ms,
        );
    }
    Ok(())
}

/// What one test measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    /// Requests per second.
    pub rate: f64,
    /// Requests answered.
    pub requests: usize,
    /// Wall time.
    pub secs: f64,
    /// Median, 99th percentile and longest of a batch's round trips (a
    /// stall of the node shows in the longest: it holds up only one batch
    /// per connection).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Runs `test` against the node at `addr` (plain TCP) with `args`' load.
pub(crate) async fn measure(
    args: &BenchArgs,
    addr: HostPort,
    test: Test,
) -> anyhow::Result<Measured> {
    let target = Target {
        addr,
        prefix: args.prefix.clone(),
        tls: None,
    };
    run_test(args, &target, test).await
}

async fn run_test(args: &BenchArgs, target: &Target, test: Test) -> anyhow::Result<Measured> {
    let per_conn = args.requests / args.clients;
    let value = Value::str(&"x".repeat(args.data_size));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let addr = target.addr.clone();
        let tls = target.tls.clone();
        let prefix = target.prefix.clone();
        let value = value.clone();
        let (pipeline, keyspace) = (args.pipeline, args.keyspace);
        let keys = if args.sequential {
            Keys::Every {
                next: c as u64,
                step: args.clients as u64,
            }
        } else {
            Keys::Random(Rng(args
                .seed
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .wrapping_add(c as u64)
                | 1))
        };
        tasks.push(tokio::spawn(async move {
            let load = Load {
                test,
                count: per_conn,
                pipeline,
                keyspace,
                prefix,
                value,
                keys,
            };
            conn_load(addr, tls, load).await
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
    Ok(Measured {
        rate: total as f64 / secs,
        requests: total,
        secs,
        p50_ms: ms(pct(0.5)),
        p99_ms: ms(pct(0.99)),
        max_ms: ms(lat.last()),
    })
}

/// How a connection picks its keys.
enum Keys {
    /// At random over the key space.
    Random(Rng),
    /// `next`, `next + step`, … (each connection its own residue class).
    Every { next: u64, step: u64 },
}

impl Keys {
    fn next(&mut self, keyspace: u64) -> u64 {
        match self {
            Keys::Random(rng) => rng.next() % keyspace,
            Keys::Every { next, step } => {
                let k = *next % keyspace;
                *next += *step;
                k
            }
        }
    }
}

/// What one connection sends.
struct Load {
    test: Test,
    count: usize,
    pipeline: usize,
    keyspace: u64,
    prefix: Path,
    value: Value,
    keys: Keys,
}

async fn conn_load(
    addr: HostPort,
    tls: Option<Connector>,
    load: Load,
) -> anyhow::Result<Vec<Duration>> {
    let Load {
        test,
        count,
        pipeline,
        keyspace,
        prefix,
        value,
        mut keys,
    } = load;
    let sock = open(addr.as_tuple(), tls.as_ref())
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (rd, mut wr) = sock.into_split();
    let mut reader = MsgReader::new(rd);
    let greeting = reader.next().await?.context("no greeting")?;
    if let Some(why) = greeting.get("error").and_then(Value::as_str) {
        bail!("the node at {addr} refused: {why}");
    }
    // No flow control needed: only single replies.
    wr.write_all(&codec::to_vec(&Value::map([
        ("seq", Value::Int(0)),
        ("qlen", Value::Int(0)),
    ])))
    .await?;
    let mut requests = Requests::new(test, &prefix, &value);
    let mut seq = 0u64;
    let mut done = 0;
    let mut buf = Vec::new();
    let mut lat = Vec::with_capacity(count / pipeline + 1);
    while done < count {
        let n = pipeline.min(count - done);
        buf.clear();
        for _ in 0..n {
            seq += 1;
            requests.encode(seq, keys.next(keyspace), &mut buf);
        }
        let t0 = Instant::now();
        wr.write_all(&buf).await?;
        let mut replies = 0;
        while replies < n {
            match reader.try_next_frame()?.map(check_reply) {
                Some(reply) => {
                    reply?;
                    replies += 1;
                }
                None => {
                    if !reader.fill().await? {
                        bail!("connection closed");
                    }
                }
            }
        }
        lat.push(t0.elapsed());
        done += n;
    }
    Ok(lat)
}

/// The requests of one connection, encoded straight into the batch
/// buffer: the parts that never change are encoded once, so a request
/// costs no allocation (like `redis-benchmark`, which patches its keys
/// into a prepared buffer; the generator shares the machine's cores with
/// the node it measures).
struct Requests {
    /// `action`, its value and the `path` key.
    action: Vec<u8>,
    /// The path's elements: the prefix's, then the key's number.
    path: Vec<Value>,
    /// `nchain: 0`, and for a set the value.
    tail: Vec<u8>,
    fields: usize,
}

impl Requests {
    fn new(test: Test, prefix: &Path, value: &Value) -> Requests {
        let mut action = Vec::new();
        codec::write_str(&mut action, "action");
        codec::write_str(
            &mut action,
            match test {
                Test::Set => "set_value",
                Test::Get => "get_value",
            },
        );
        codec::write_str(&mut action, "path");
        let mut tail = Vec::new();
        codec::write_str(&mut tail, "nchain");
        codec::write_int(&mut tail, 0);
        let mut fields = 4;
        if test == Test::Set {
            codec::write_str(&mut tail, "value");
            codec::encode(value, &mut tail);
            fields += 1;
        }
        let mut path = prefix.to_vec();
        path.push(Value::Nil);
        Requests {
            action,
            path,
            tail,
            fields,
        }
    }

    /// Appends request `seq` for key number `key`.
    fn encode(&mut self, seq: u64, key: u64, out: &mut Vec<u8>) {
        codec::write_map_len(out, self.fields);
        codec::write_str(out, "seq");
        codec::write_uint(out, seq);
        out.extend_from_slice(&self.action);
        *self.path.last_mut().expect("the key's place") = Value::uint(key);
        codec::write_path(out, &self.path);
        out.extend_from_slice(&self.tail);
    }
}

/// Fails on an error reply. Replies are only decoded where their bytes
/// hold the word `error`, which every error reply's key does.
fn check_reply(frame: &[u8]) -> anyhow::Result<()> {
    if !frame.windows(5).any(|w| w == b"error") {
        return Ok(());
    }
    let reply = codec::decode(frame).context("a reply is not msgpack")?;
    match reply.get("error") {
        Some(e) => bail!("server error: {e}"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Command};
    use clap::Parser;

    fn bench(args: &[&str]) -> super::BenchArgs {
        let argv = ["distkv", "bench"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().cmd {
            Command::Bench(b) => b,
            other => panic!("{other:?}"),
        }
    }

    /// The request as a `Value` map, as a client would build it.
    fn request(test: Test, seq: u64, path: Path, value: &Value) -> Vec<u8> {
        let action = match test {
            Test::Set => "set_value",
            Test::Get => "get_value",
        };
        let mut m = vec![
            (Value::str("seq"), Value::uint(seq)),
            (Value::str("action"), Value::str(action)),
            (Value::str("path"), Value::Path(path)),
            (Value::str("nchain"), Value::Int(0)),
        ];
        if test == Test::Set {
            m.push((Value::str("value"), value.clone()));
        }
        codec::to_vec(&Value::Map(m))
    }

    #[test]
    fn requests_are_encoded_as_their_value_maps() {
        let value = Value::str(&"x".repeat(100));
        for prefix in [
            Path::root(),
            distkv_model::path!["bench"],
            distkv_model::path!["a", 7i64, "b"],
        ] {
            for test in [Test::Set, Test::Get] {
                let mut requests = Requests::new(test, &prefix, &value);
                let mut out = Vec::new();
                let mut want = Vec::new();
                for (seq, key) in [
                    (1, 0),
                    (2, 127),
                    (300, 128),
                    (70_000, u32::MAX as u64 + 1),
                    (u64::MAX, u64::MAX),
                ] {
                    requests.encode(seq, key, &mut out);
                    want.extend(request(test, seq, prefix.child(Value::uint(key)), &value));
                }
                assert_eq!(out, want, "{test:?} below {prefix}");
            }
        }
    }

    #[test]
    fn error_replies_fail_and_values_saying_error_do_not() {
        let reply = |fields: Vec<(&str, Value)>| codec::to_vec(&Value::map(fields));
        assert!(check_reply(&reply(vec![
            ("seq", Value::Int(3)),
            ("tock", Value::Int(9))
        ]))
        .is_ok());
        assert!(check_reply(&reply(vec![
            ("seq", Value::Int(3)),
            ("value", Value::str("error"))
        ]))
        .is_ok());
        let e = check_reply(&reply(vec![
            ("seq", Value::Int(3)),
            ("error", Value::str("no")),
        ]));
        assert!(e.unwrap_err().to_string().contains("no"));
        assert!(check_reply(b"\xa5error\xc1").is_err(), "not msgpack");
    }

    #[test]
    fn host_and_port_flags_are_the_clients() {
        let b = bench(&["-h", "example.org", "-p", "1234", "--prefix", "load.test"]);
        assert_eq!(b.host.as_deref(), Some("example.org"));
        assert_eq!(b.port, Some(1234));
        assert_eq!(b.prefix.to_string(), "load.test");
        let b = bench(&["-H", "old.example.org"]);
        assert_eq!(b.host.as_deref(), Some("old.example.org"), "-H still works");
        let b = bench(&[]);
        assert_eq!(
            (b.host, b.port),
            (None, None),
            "defaults come from the config"
        );
        assert_eq!(b.prefix.to_string(), "bench");
    }
}
