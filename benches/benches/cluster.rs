//! Replication between three in-process nodes over a real MQTT mesh:
//!
//! 1. propagation latency (write on n1 → `watch` on n2), idle and under a
//!    pipelined background load on n1 and n3;
//! 2. convergence after a healed partition {n1,n2} | {n3} with 100 000
//!    keys written on each side (plus 1000 written on both);
//! 3. `set_value` throughput on n1 with three replicating nodes, the time
//!    until n2 and n3 hold everything, and the same load on a lone node.
//!
//! `cargo bench -p distkv-benches --bench cluster`
//!
//! Arguments after `--` pick measurements (`latency`, `partition`,
//! `throughput`; default all). Environment: `BATCH` and `RESEND_MAX` set
//! [`ClusterConfig::batch`] and [`ClusterConfig::resend_max`], `KEYS` the
//! keys per side of the partition test, `REPS` its repetitions (3),
//! `LINKS=all|n3` runs only one of its heal variants, `TRACE=1` prints its
//! convergence timeline, `OPS` the writes of the throughput test,
//! `RUST_LOG` the log filter (e.g. `distkv_node=debug`).
//!
//! Every node has real TCP client and broker ports on 127.0.0.1; n1 starts
//! the mesh, n2 and n3 are given n1's broker. Ping cycle 1000 ms, gap
//! 200 ms. Each node's bus is wrapped in a `Gate` that can cut it off.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use distkv_benches as _; // the mimalloc global allocator
use distkv_model::{codec, Path, Value};
use distkv_node::bus::{Bus, Delivery};
use distkv_node::client::{Client, ConnectOptions, StreamItem, TreeOptions, UpdateOptions};
use distkv_node::cluster::actor::ActorConfig;
use distkv_node::cluster::core::ClusterConfig;
use distkv_node::cluster::gate::Gate;
use distkv_node::cluster::mqtt::{MqttBus, MqttConfig, MqttMode};
use distkv_node::node::{BusSpec, NodeBuilder};
use distkv_node::server::{self, Server};
use distkv_node::wire::MsgReader;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const ROOT: &str = ":distkv";
/// Connections × requests in flight of every load generator.
const CONNS: usize = 4;
const PIPELINE: usize = 64;

// ---------------------------------------------------------------- the gate

/// A [`Bus`] adapter that counts what its node publishes; the library's
/// [`Gate`] around it cuts the node off.
struct Counting {
    inner: Arc<dyn Bus>,
    sent: Counters,
}

#[derive(Default)]
struct Counters {
    msgs: AtomicU64,
    bytes: AtomicU64,
    update_msgs: AtomicU64,
    update_bytes: AtomicU64,
}

impl Counters {
    fn count(&self, topic: &str, len: usize) {
        self.msgs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        if topic.ends_with("/update") {
            self.update_msgs.fetch_add(1, Ordering::Relaxed);
            self.update_bytes.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// (messages, bytes, update messages, update bytes); resets.
    fn take(&self) -> [u64; 4] {
        [
            self.msgs.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
            self.update_msgs.swap(0, Ordering::Relaxed),
            self.update_bytes.swap(0, Ordering::Relaxed),
        ]
    }
}

impl Bus for Counting {
    fn publish(&self, topic: &str, payload: Bytes) {
        self.sent.count(topic, payload.len());
        self.inner.publish(topic, payload);
    }

    fn subscribe(&self, filter: &str) -> mpsc::Receiver<Delivery> {
        self.inner.subscribe(filter)
    }

    fn links(&self) -> watch::Receiver<u64> {
        self.inner.links()
    }

    fn dropped(&self) -> u64 {
        self.inner.dropped()
    }
}

// ---------------------------------------------------------------- nodes

struct Node {
    server: Arc<Server>,
    addr: SocketAddr,
    mqtt: Arc<MqttBus>,
    gate: Arc<Gate>,
    counting: Arc<Counting>,
    stop: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
        self.mqtt.shutdown();
    }
}

fn cluster_config() -> ClusterConfig {
    let mut cfg = ClusterConfig {
        root: ROOT.into(),
        ping: ActorConfig {
            cycle: 1000,
            gap: 200,
            ..ActorConfig::main()
        },
        ..ClusterConfig::default()
    };
    if let Some(b) = env_num("BATCH") {
        cfg.batch = b as usize;
    }
    if let Some(r) = env_num("RESEND_MAX") {
        cfg.resend_max = r as usize;
    }
    cfg
}

fn env_num(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

/// Starts `builder`'s node serving clients on 127.0.0.1.
async fn start_built(builder: NodeBuilder) -> Result<(Arc<Server>, SocketAddr, CancellationToken)> {
    let listener = server::bind("127.0.0.1", 0).await?;
    let node = builder.build(listener).await?;
    let (server, addr) = (node.server().clone(), node.local_addr());
    let stop = CancellationToken::new();
    tokio::spawn(node.run(stop.clone()));
    Ok((server, addr, stop))
}

/// A ready node serving clients on 127.0.0.1, without a bus.
async fn start_server(name: &str) -> Result<(Arc<Server>, SocketAddr, CancellationToken)> {
    start_built(NodeBuilder::new(name)).await
}

/// A ready node on the mesh, with its broker on 127.0.0.1 and `peers`
/// (other brokers) to join.
async fn start_node(name: &str, peers: Vec<String>, seed: u64) -> Result<Node> {
    let mqtt = MqttBus::start(MqttConfig {
        node: name.into(),
        root: ROOT.into(),
        mode: MqttMode::Mesh {
            listen: ("127.0.0.1".into(), 0),
            advertise: None,
            peers,
        },
        tls: None,
    })
    .await?;
    let counting = Arc::new(Counting {
        inner: mqtt.clone(),
        sent: Counters::default(),
    });
    let gate = Gate::new(counting.clone());
    let builder = NodeBuilder::new(name)
        .bus(BusSpec::Given(gate.clone()))
        .cluster(cluster_config())
        .seed(seed);
    let (server, addr, stop) = start_built(builder).await?;
    Ok(Node {
        server,
        addr,
        mqtt,
        gate,
        counting,
        stop,
    })
}

/// n1, n2, n3 meshed; returns once each holds a key written on every node.
async fn start_cluster() -> Result<Vec<Node>> {
    let n1 = start_node("n1", vec![], 1).await?;
    let seed = n1
        .mqtt
        .broker_addr()
        .context("no broker address")?
        .to_string();
    let n2 = start_node("n2", vec![seed.clone()], 2).await?;
    let n3 = start_node("n3", vec![seed], 3).await?;
    let nodes = vec![n1, n2, n3];
    let t0 = Instant::now();
    // Keep writing until every node has every other node's newest key:
    // messages before the mesh is complete are lost, not queued.
    for round in 0u64.. {
        for (i, n) in nodes.iter().enumerate() {
            let c = Client::connect(n.addr, ConnectOptions::default()).await?;
            c.set_value(&key("warm", i as u64), Value::uint(round), &opts())
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let all = nodes.iter().all(|n| {
            let st = n.server.state();
            (0..3)
                .all(|i| st.entry(&key("warm", i)).and_then(|e| e.data()?.as_u64()) == Some(round))
        });
        if all {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("the mesh did not form within 20 s");
        }
    }
    // Let the election settle before measuring.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(nodes)
}

fn key(prefix: &str, i: u64) -> Path {
    Path::new(vec![Value::str(prefix), Value::uint(i)])
}

fn opts() -> UpdateOptions {
    UpdateOptions::default()
}

// ---------------------------------------------------------------- load

/// Pipelined `set_value` of `prefix/i` for `i` in `range` (value `value`
/// or, if nil, `i`), over [`CONNS`] connections with [`PIPELINE`] requests
/// in flight each (the `distkv bench` scheme). With `until`, cycles over the
/// range until it is set. Returns the acknowledged writes.
async fn load(
    addr: SocketAddr,
    prefix: &'static str,
    range: Range<u64>,
    value: Value,
    until: Option<Arc<AtomicBool>>,
) -> Result<u64> {
    load_with(addr, prefix, range, value, until, CONNS, PIPELINE).await
}

/// [`load`] over `conns` connections with `pipeline` requests in flight.
async fn load_with(
    addr: SocketAddr,
    prefix: &'static str,
    range: Range<u64>,
    value: Value,
    until: Option<Arc<AtomicBool>>,
    conns: usize,
    pipeline: usize,
) -> Result<u64> {
    let mut tasks = Vec::new();
    for c in 0..conns as u64 {
        let (range, value, until) = (range.clone(), value.clone(), until.clone());
        tasks.push(tokio::spawn(async move {
            conn_load(
                addr,
                prefix,
                range,
                (c, conns as u64),
                value,
                until,
                pipeline,
            )
            .await
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    Ok(n)
}

async fn conn_load(
    addr: SocketAddr,
    prefix: &'static str,
    range: Range<u64>,
    (conn, conns): (u64, u64),
    value: Value,
    until: Option<Arc<AtomicBool>>,
    pipeline: usize,
) -> Result<u64> {
    let sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    let (rd, mut wr) = sock.into_split();
    let mut reader = MsgReader::new(rd);
    reader.next().await?.context("no greeting")?;
    wr.write_all(&codec::to_vec(&Value::map([
        ("seq", Value::Int(0)),
        ("qlen", Value::Int(0)),
    ])))
    .await?;
    let len = range.end - range.start;
    let mut k = conn; // this connection's next index, step `conns`
    let mut seq = 0u64;
    let mut buf = Vec::new();
    let mut acked = 0;
    loop {
        if let Some(u) = &until {
            if u.load(Ordering::Relaxed) {
                break;
            }
        } else if k >= len {
            break;
        }
        buf.clear();
        let mut n = 0;
        while n < pipeline && (until.is_some() || k < len) {
            let i = range.start + k % len;
            k += conns;
            seq += 1;
            n += 1;
            let v = if value.is_nil() {
                Value::uint(i)
            } else {
                value.clone()
            };
            let m = Value::Map(vec![
                (Value::str("seq"), Value::uint(seq)),
                (Value::str("action"), Value::str("set_value")),
                (Value::str("path"), Value::Path(key(prefix, i))),
                (Value::str("nchain"), Value::Int(0)),
                (Value::str("value"), v),
            ]);
            codec::encode(&m, &mut buf);
        }
        wr.write_all(&buf).await?;
        for _ in 0..n {
            let reply = reader.next().await?.context("connection closed")?;
            if let Some(e) = reply.get("error") {
                bail!("server error: {e}");
            }
        }
        acked += n as u64;
    }
    Ok(acked)
}

// ---------------------------------------------------------------- convergence

/// Cheap per-node summary: every node's tick, and whether ticks are missing.
fn summary(n: &Node) -> (Vec<(String, u64)>, u64) {
    let st = n.server.state();
    let mut t: Vec<(String, u64)> = st
        .ticks()
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    t.sort();
    let missing = st.missing().0.values().map(|r| r.count()).sum();
    (t, missing)
}

/// Polls every 10 ms until `nodes` hold the same data: once their ticks
/// agree and nothing is missing, the digests (a full walk) must be equal.
/// Returns the time from `since` to that poll, the per-poll timeline of
/// missing ticks (when `trace`) and the digest time.
async fn converge(
    nodes: &[&Node],
    since: Instant,
    limit: Duration,
    trace: bool,
) -> Result<(Duration, Duration)> {
    let mut last_print = Instant::now();
    loop {
        let at = Instant::now();
        let sums: Vec<_> = nodes.iter().map(|n| summary(n)).collect();
        if trace && last_print.elapsed() >= Duration::from_millis(250) {
            last_print = Instant::now();
            let missing: Vec<u64> = sums.iter().map(|s| s.1).collect();
            let ticks: Vec<String> = sums
                .iter()
                .map(|s| {
                    s.0.iter()
                        .map(|(n, t)| format!("{n}:{t}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect();
            println!(
                "      t={:>6.0} ms  missing per node {missing:?}  ticks {ticks:?}",
                ms(at - since)
            );
        }
        if sums.iter().all(|s| s.1 == 0 && s.0 == sums[0].0) {
            let d0 = Instant::now();
            let digests: Vec<u128> = nodes.iter().map(|n| n.server.state().digest()).collect();
            let dt = d0.elapsed();
            if digests.iter().all(|d| *d == digests[0]) {
                return Ok((at - since, dt / nodes.len() as u32));
            }
        }
        if since.elapsed() > limit {
            let sums: Vec<_> = nodes.iter().map(|n| (summary(n).1, summary(n).0)).collect();
            bail!("no convergence within {limit:?}: {sums:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------- 1. latency

struct Latency {
    probes: usize,
    lost: usize,
    sent: [f64; 3],
    acked: [f64; 3],
    ack: [f64; 3],
    load_rate: f64,
}

/// `load`: background connections × requests in flight on n1 and on n3
/// (`None`: idle).
async fn latency(
    nodes: &[Node],
    probes: u64,
    load: Option<(usize, usize)>,
    base: u64,
) -> Result<Latency> {
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    // The watcher on n2.
    let watcher = Client::connect(n2.addr, ConnectOptions::default()).await?;
    let mut stream = watcher
        .watch(&Path::new(vec![Value::str("lat")]), &TreeOptions::default())
        .await?;
    let arrivals: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let arr = arrivals.clone();
    let reader = tokio::spawn(async move {
        while let Ok(Some(item)) = stream.next().await {
            if let StreamItem::Data(v) = item {
                if let Some(i) = v.get("value").and_then(Value::as_u64) {
                    arr.lock().unwrap().insert(i, Instant::now());
                }
            }
        }
    });
    // The background load.
    let stop = Arc::new(AtomicBool::new(false));
    let mut loads = Vec::new();
    let t_load = Instant::now();
    if let Some((conns, pipeline)) = load {
        for (n, prefix) in [(n1, "load1"), (n3, "load3")] {
            loads.push(tokio::spawn(load_with(
                n.addr,
                prefix,
                0..50_000,
                Value::Nil,
                Some(stop.clone()),
                conns,
                pipeline,
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The probes: one every 5 ms, each its own task so a slow ack does not
    // delay the next.
    let prober = Client::connect(n1.addr, ConnectOptions::default()).await?;
    let sent: Arc<Mutex<HashMap<u64, (Instant, Instant)>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut tasks = Vec::new();
    for i in base..base + probes {
        tick.tick().await;
        let (c, sent) = (prober.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            c.set_value(&key("lat", i), Value::uint(i), &opts()).await?;
            sent.lock().unwrap().insert(i, (t, Instant::now()));
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while arrivals.lock().unwrap().len() < probes as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let load_secs = t_load.elapsed().as_secs_f64();
    let mut written = 0;
    for l in loads {
        written += l.await??;
    }
    reader.abort();
    let arrivals = arrivals.lock().unwrap();
    let sent = sent.lock().unwrap();
    let (mut from_sent, mut from_ack, mut ack) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (s, a)) in sent.iter() {
        ack.push(ms(*a - *s));
        if let Some(r) = arrivals.get(i) {
            from_sent.push(ms(*r - *s));
            from_ack.push(ms(r.saturating_duration_since(*a)));
        }
    }
    Ok(Latency {
        probes: sent.len(),
        lost: sent.len() - from_sent.len(),
        sent: pcts(&mut from_sent),
        acked: pcts(&mut from_ack),
        ack: pcts(&mut ack),
        load_rate: written as f64 / load_secs,
    })
}

/// p50, p99, max.
fn pcts(v: &mut [f64]) -> [f64; 3] {
    if v.is_empty() {
        return [f64::NAN; 3];
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    [at(0.5), at(0.99), v[v.len() - 1]]
}

async fn bench_latency() -> Result<()> {
    println!("\n## 1. Propagation latency: set_value on n1 → watch on n2 (probe every 5 ms)");
    let nodes = start_cluster().await?;
    let idle = latency(&nodes, 1000, None, 0).await?;
    let light = latency(&nodes, 2000, Some((1, 4)), 1_000_000).await?;
    let loaded = latency(&nodes, 2000, Some((CONNS, PIPELINE)), 2_000_000).await?;
    println!(
        "{:<28} {:>12} {:>7} {:>5} {:>26} {:>26} {:>22}",
        "background load (n1 and n3)",
        "load sets/s",
        "probes",
        "lost",
        "sent→seen p50/p99/max ms",
        "acked→seen p50/p99/max",
        "ack p50/p99/max ms"
    );
    let full_name = format!("{CONNS} conns × {PIPELINE} in flight");
    for (name, l) in [
        ("none", &idle),
        ("1 conn × 4 in flight", &light),
        (full_name.as_str(), &loaded),
    ] {
        println!(
            "{:<28} {:>12.0} {:>7} {:>5} {:>26} {:>26} {:>22}",
            name,
            l.load_rate,
            l.probes,
            l.lost,
            trio(l.sent),
            trio(l.acked),
            trio(l.ack)
        );
    }
    Ok(())
}

fn trio(p: [f64; 3]) -> String {
    format!("{:.2} / {:.2} / {:.1}", p[0], p[1], p[2])
}

// ---------------------------------------------------------------- 2. partition

struct Partition {
    write_rate: f64,
    heal: Duration,
    digest: Duration,
    /// Per node: messages and bytes published from heal to convergence.
    traffic: Vec<[u64; 4]>,
    /// Per node: messages the MQTT bus itself dropped (the gate's own
    /// drops while closed are not counted).
    bus_drops: Vec<u64>,
    winner: Option<Value>,
}

/// One partition run. `all_links`: the heal bumps every node's link
/// counter, as a real mesh reconnect does (n3's clients reconnect to n1's
/// and n2's brokers and theirs to n3's); otherwise only n3's.
async fn partition(keys: u64, all_links: bool, trace: bool) -> Result<Partition> {
    let nodes = start_cluster().await?;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    n3.gate.set_open(false);
    let t0 = Instant::now();
    let (a, b, ca, cb) = tokio::join!(
        load(n1.addr, "a", 0..keys, Value::Nil, None),
        load(n3.addr, "b", 0..keys, Value::Nil, None),
        load(n1.addr, "both", 0..1000, Value::str("A"), None),
        load(n3.addr, "both", 0..1000, Value::str("B"), None),
    );
    let written = a? + b? + ca? + cb?;
    let write_rate = written as f64 / t0.elapsed().as_secs_f64();
    converge(&[n1, n2], Instant::now(), Duration::from_secs(60), false).await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for n in &nodes {
        n.counting.sent.take();
    }
    let t_heal = Instant::now();
    n3.gate.set_open(true);
    if all_links {
        for n in [n1, n2] {
            n.gate.link_up();
        }
    }
    let (heal, digest) = converge(&[n1, n2, n3], t_heal, Duration::from_secs(120), trace).await?;
    let winner = n1
        .server
        .state()
        .entry(&key("both", 0))
        .and_then(|e| e.data_cloned());
    Ok(Partition {
        write_rate,
        heal,
        digest,
        traffic: nodes.iter().map(|n| n.counting.sent.take()).collect(),
        bus_drops: nodes.iter().map(|n| n.mqtt.dropped()).collect(),
        winner,
    })
}

async fn bench_partition() -> Result<()> {
    let keys = env_num("KEYS").unwrap_or(100_000);
    let reps = env_num("REPS").unwrap_or(3);
    let trace = std::env::var_os("TRACE").is_some();
    let cfg = cluster_config();
    println!(
        "\n## 2. Convergence after a healed partition {{n1,n2}} | {{n3}}: {keys} keys per side + 1000 on both (batch {}, resend_max {})",
        cfg.batch, cfg.resend_max
    );
    println!(
        "{:<26} {:>12} {:>14} {:>30} {:>12} {:>10}",
        "heal bumps links on",
        "writes/s",
        "heal → equal",
        "published n1 / n2 / n3 (MB)",
        "update msgs",
        "bus drops"
    );
    let links = std::env::var("LINKS").unwrap_or_default();
    for (label, all) in [("all nodes (real reconnect)", true), ("n3 only", false)] {
        if (links == "all" && !all) || (links == "n3" && all) {
            continue;
        }
        let mut times = Vec::new();
        for _ in 0..reps {
            let p = partition(keys, all, trace).await?;
            let mb: Vec<String> = p
                .traffic
                .iter()
                .map(|t| format!("{:.1}", t[1] as f64 / 1e6))
                .collect();
            let updates: u64 = p.traffic.iter().map(|t| t[2]).sum();
            println!(
                "{:<26} {:>12.0} {:>11.0} ms {:>30} {:>12} {:>10}",
                label,
                p.write_rate,
                ms(p.heal),
                mb.join(" / "),
                updates,
                format!("{:?}", p.bus_drops),
            );
            if times.is_empty() {
                println!(
                    "    (digest walk {:.0} ms per node; conflict winner of both/0: {:?})",
                    ms(p.digest),
                    p.winner
                );
            }
            times.push(ms(p.heal));
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{:<26} median {:.0} ms, min {:.0}, max {:.0}",
            label,
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- 3. throughput

async fn bench_throughput() -> Result<()> {
    let ops = env_num("OPS").unwrap_or(200_000);
    println!(
        "\n## 3. set_value throughput on n1, {ops} distinct keys, {CONNS} connections × {PIPELINE} in flight"
    );
    let single = {
        let (_server, addr, stop) = start_server("solo").await?;
        let t0 = Instant::now();
        let w = load(addr, "t", 0..ops, Value::Nil, None).await?;
        let rate = w as f64 / t0.elapsed().as_secs_f64();
        stop.cancel();
        rate
    };
    let nodes = start_cluster().await?;
    let t0 = Instant::now();
    let w = load(nodes[0].addr, "t", 0..ops, Value::Nil, None).await?;
    let last_ack = Instant::now();
    let rate = w as f64 / (last_ack - t0).as_secs_f64();
    let refs: Vec<&Node> = nodes.iter().collect();
    let (took, _) = converge(&refs, last_ack, Duration::from_secs(120), false).await?;
    println!(
        "{:<40} {:>12} {:>28}",
        "", "sets/s", "last ack → n2,n3 have all"
    );
    println!("{:<40} {:>12.0} {:>28}", "single node, no bus", single, "-");
    println!(
        "{:<40} {:>12.0} {:>25.0} ms",
        "n1 of 3 replicating nodes",
        rate,
        ms(took)
    );
    println!(
        "    replication costs {:.0}% of the single-node rate; bus drops {:?}",
        100.0 * (1.0 - rate / single),
        nodes.iter().map(|n| n.gate.dropped()).collect::<Vec<_>>()
    );
    Ok(())
}

// ---------------------------------------------------------------- main

fn main() -> Result<()> {
    distkv_benches::heap::tune();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=off,rumqttc=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!(
            "# distkv cluster bench: 3 in-process nodes, loopback MQTT mesh, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        if want("latency") {
            bench_latency().await?;
        }
        if want("partition") {
            bench_partition().await?;
        }
        if want("throughput") {
            bench_throughput().await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // rumqttd's threads cannot be stopped; do not wait for them.
    std::process::exit(0);
}
