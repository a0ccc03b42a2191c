//! A cluster of real `distkv server` processes on three "hosts": Linux
//! network namespaces joined by a bridge, each node on the default ports
//! (client 27586, bus 27587) of its own address, as the README's cluster
//! commands run on separate machines. The partition is real: blackhole
//! routes between the namespaces, so every packet between the two sides is
//! dropped by the kernel, while the test (in the root namespace) still
//! reaches every node through the bridge.
//!
//! The network is `distkv_tests::netns`'s: a bridge in the root namespace,
//! namespaces `dkv<tag>-<i>` (i = 1..3), each with `10.A.B.i/24` on a veth
//! pair to the bridge (the tag and `A`, `B` derived from the test's
//! process id). A guard kills the nodes and removes the namespaces, the
//! veths and the bridge however the test ends.
//!
//! This needs root and `ip` (iproute2). Without them, or when a namespace
//! cannot be made, the test prints "skipping: …" and passes, unless
//! `DISTKV_REQUIRE_NETNS` is set. `DISTKV_TEST_KEEP=1` keeps the nodes'
//! data and stderr; `DISTKV_TEST_RUST_LOG` sets the nodes' `RUST_LOG`.
//!
//! The partition is held until every node's MQTT client link across it
//! has given up (keep-alive, about 10 s), so that healing needs new
//! connections rather than TCP retransmitting over the old ones.
//!
//! Every wait polls with a deadline; only the check that the partition
//! really separates the sides waits a fixed time.

mod process;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_node::client::{Client, ConnectOptions, UpdateOptions};
use distkv_tests::netns::{self, bridge_netfilter, Network};
use process::{distkv_bin, dump, same_dump, tail};

/// The default client port: every node has its own address.
const CLIENT_PORT: u16 = 27586;
/// The default bus port (the embedded MQTT broker).
const BUS_PORT: u16 = 27587;
/// Longest a node may take to serve after its start.
const START: Duration = Duration::from_secs(30);
/// Longest replication may take while the network is whole.
const CONVERGE: Duration = Duration::from_secs(30);
/// Longest a healed partition may take to converge (MQTT keep-alive is
/// 5 s, the reconnect backoff up to 2 s).
const HEAL: Duration = Duration::from_secs(60);
/// How long h3 must stay without h1's writes while cut off.
const CUT_CHECK: Duration = Duration::from_secs(2);
/// Longest the MQTT links across a partition may take to break.
const LINKS_DOWN: Duration = Duration::from_secs(30);
/// Short election cycle and repair delay.
const FAST: [&str; 2] = ["server.ping.cycle=1", "server.ping.gap=0.2"];

/// Three hosts (network namespaces) and the node on each. Dropping it
/// kills the nodes, then removes the network.
struct Hosts {
    net: Network,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The node process of host i+1 (the `ip netns exec` child, which
    /// execs the node binary).
    nodes: [Option<Child>; 3],
    /// The stderr file of each host's current (or last) node.
    stderr: [PathBuf; 3],
    starts: usize,
    /// The nodes' configuration overrides (`-C key=value`).
    conf: Vec<String>,
}

impl Hosts {
    fn new(bin: PathBuf, net: Network) -> Result<Hosts> {
        let mut dir = tempfile::Builder::new().prefix("distkv-hosts-").tempdir()?;
        if std::env::var_os("DISTKV_TEST_KEEP").is_some() {
            dir.disable_cleanup(true);
            println!("keeping {}", dir.path().display());
        }
        Ok(Hosts {
            net,
            bin,
            dir,
            nodes: [None, None, None],
            stderr: Default::default(),
            starts: 0,
            conf: FAST.iter().map(|kv| kv.to_string()).collect(),
        })
    }

    fn ns(&self, i: usize) -> String {
        self.net.ns(i)
    }

    /// `10.A.B.i`.
    fn addr(&self, i: u8) -> Ipv4Addr {
        self.net.addr(i)
    }

    fn name(i: usize) -> String {
        format!("h{i}")
    }

    /// Cuts host `i` off from the others (`add`) or heals that (`del`):
    /// blackhole routes on both sides.
    fn routes(&self, i: usize, op: &str) -> Result<()> {
        self.net.routes(i, op)
    }

    /// Blocks (`add`) or unblocks (`del`) the MQTT links from host `from`'s
    /// node to host `to`'s broker, and only those: routing rules in
    /// `from`'s namespace drop TCP to and from `to`'s bus port, while
    /// `to`'s own client on `from`'s broker (whose packets go to other
    /// ports) passes.
    fn bus_rule(&self, from: usize, to: usize, op: &str) -> Result<()> {
        self.net.port_rule(from, to, BUS_PORT, op)
    }

    /// Whether host `from`'s node has an MQTT client link established to
    /// host `to`'s broker.
    fn bus_link(&self, from: usize, to: usize) -> Result<bool> {
        Ok(self
            .established(from, &[to])?
            .iter()
            .any(|(_, remote)| remote.port() == BUS_PORT))
    }

    /// Polls until every listed link `(from, to)` is established.
    async fn wait_bus_links(&self, links: &[(usize, usize)]) -> Result<()> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let mut down = Vec::new();
            for &(from, to) in links {
                if !self.bus_link(from, to)? {
                    down.push(format!("h{from} -> h{to}'s broker"));
                }
            }
            if down.is_empty() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "MQTT links not up after {CONVERGE:?}: {}\n{}",
                down.join(", "),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.addr(u8::try_from(i).expect("host")), CLIENT_PORT))
    }

    /// Connects to host `i`'s node (whose greeting must name it).
    async fn connect(&self, i: usize) -> Result<Client> {
        let opts = ConnectOptions {
            qlen: 0,
            timeout: Duration::from_secs(5),
            ..ConnectOptions::default()
        };
        let c = Client::connect(self.client_addr(i), opts)
            .await
            .with_context(|| format!("connecting to h{i} at {}", self.client_addr(i)))?;
        ensure!(
            c.greeting().node == Self::name(i),
            "{} answered as {}",
            self.client_addr(i),
            c.greeting().node
        );
        Ok(c)
    }

    /// Starts host `i`'s node in its namespace (`h2`, `h3` join through
    /// h1) and waits until it serves.
    async fn start(&mut self, i: usize) -> Result<()> {
        ensure!(self.nodes[i - 1].is_none(), "h{i} is running");
        self.starts += 1;
        let stderr_path = self.dir.path().join(format!("h{i}.{}.stderr", self.starts));
        let stderr = File::create(&stderr_path)?;
        self.stderr[i - 1] = stderr_path;
        let ns = self.ns(i);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]).arg(&self.bin);
        cmd.args(["-c", "/dev/null"]);
        for kv in &self.conf {
            cmd.args(["-C", kv]);
        }
        cmd.args(["server", &Self::name(i), "--bind"])
            .arg(self.addr(u8::try_from(i)?).to_string())
            .arg("--data-dir")
            .arg(self.dir.path().join(Self::name(i)));
        if i != 1 {
            cmd.arg("--peer")
                .arg(format!("{}:{BUS_PORT}", self.addr(1)));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        match std::env::var("DISTKV_TEST_RUST_LOG") {
            Ok(f) => cmd.env("RUST_LOG", f),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        let child = cmd.spawn().context("running ip netns exec")?;
        let pid = child.id();
        self.nodes[i - 1] = Some(child);

        let deadline = Instant::now() + START;
        let mut verified = false;
        loop {
            if let Some(st) = self.nodes[i - 1].as_mut().expect("started").try_wait()? {
                self.nodes[i - 1] = None;
                bail!("h{i} exited with {st} while starting:\n{}", self.logs());
            }
            // `ip netns exec` execs the node: the child's pid is the node's.
            if !verified {
                verified = self.is_node(i, pid)?;
            }
            if verified {
                if let Ok(c) = self.connect(i).await {
                    drop(c);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "h{i} (pid {pid}, the node binary: {verified}) did not serve at {} within \
                     {START:?}; a joining node serves only after fetching the state from h1 \
                     over the bridge ({}):\n{}",
                    self.client_addr(i),
                    bridge_netfilter(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Process `pid` runs the node binary in host `i`'s namespace (false:
    /// `ip netns exec` has not exec'd it yet).
    fn is_node(&self, i: usize, pid: u32) -> Result<bool> {
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            return Ok(false);
        };
        if exe != self.bin.canonicalize()? {
            return Ok(false);
        }
        let ns = netns::identify(pid)?;
        ensure!(
            ns == self.ns(i),
            "pid {pid} runs {} in namespace {:?}, not {}",
            exe.display(),
            ns,
            self.ns(i)
        );
        Ok(true)
    }

    /// `kill -9` of host `i`'s node.
    fn kill9(&mut self, i: usize) -> Result<()> {
        let mut c = self.nodes[i - 1].take().context("not running")?;
        let pid = c.id();
        ensure!(self.is_node(i, pid)?, "pid {pid} is not h{i}'s node binary");
        c.kill()?;
        let st = c.wait()?;
        ensure!(
            !st.success(),
            "h{i} exited cleanly instead of being killed: {st}"
        );
        Ok(())
    }

    /// The TCP connections in state ESTABLISHED in host `i`'s namespace
    /// (from `/proc/PID/net/tcp` of its node, which shows the namespace's
    /// table) with a remote address of one of `hosts`, as
    /// `(local, remote)`.
    fn established(&self, i: usize, hosts: &[usize]) -> Result<Vec<(SocketAddr, SocketAddr)>> {
        let pid = self.nodes[i - 1].as_ref().context("not running")?.id();
        let remotes: Vec<Ipv4Addr> = hosts.iter().map(|&j| self.net.host(j)).collect();
        netns::established(pid, &remotes)
    }

    /// The stderr tails of every node.
    fn logs(&self) -> String {
        (1..=3)
            .filter(|i| !self.stderr[i - 1].as_os_str().is_empty())
            .map(|i| {
                format!(
                    "----- stderr of h{i} ({}) -----\n{}",
                    self.stderr[i - 1].display(),
                    tail(&self.stderr[i - 1], 6 << 10)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Hosts {
    /// Kills the nodes; the network goes after them (with the field).
    fn drop(&mut self) {
        for mut c in self.nodes.iter_mut().filter_map(Option::take) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Skips the test (or fails it when `DISTKV_REQUIRE_NETNS` is set).
fn unavailable(why: &str) -> Result<()> {
    netns::unavailable(why)?;
    println!("skipping: network namespaces unavailable ({why})");
    Ok(())
}

/// Acknowledged writes: each key with the values it may end with.
type Want = HashMap<Path, Vec<Value>>;

/// Writes `hosts.<group>.<i>` for `keys` through `c`, each value `tag-i`.
async fn write(
    c: &Client,
    want: &mut Want,
    group: &str,
    keys: std::ops::Range<i64>,
    tag: &str,
) -> Result<()> {
    for i in keys {
        let p = path!["hosts", group, i];
        let v = Value::str(&format!("{tag}-{i}"));
        c.set_value(&p, v.clone(), &UpdateOptions::default())
            .await
            .with_context(|| format!("set_value {p} on {}", c.greeting().node))?;
        want.entry(p).or_default().push(v);
    }
    Ok(())
}

/// The value at `p` on `c` (`None`: none).
async fn value(c: &Client, p: &Path) -> Result<Option<Value>> {
    Ok(c.get_value(p, 0).await?.get("value").cloned())
}

/// Polls until every listed host shows one of the wanted values of every
/// key of `want`.
async fn wait_values(
    hosts: &Hosts,
    what: &str,
    on: &[usize],
    want: &Want,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut clients = Vec::new();
    for &i in on {
        clients.push(hosts.connect(i).await?);
    }
    loop {
        let mut lacking = Vec::new();
        for (&i, c) in on.iter().zip(&clients) {
            for (p, vs) in want {
                let v = value(c, p).await?;
                if !v.as_ref().is_some_and(|v| vs.contains(v)) {
                    lacking.push(format!(
                        "h{i}: {p} is {}, want one of {vs:?}",
                        v.map_or("(none)".into(), |v| v.to_string())
                    ));
                }
            }
        }
        if lacking.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: after {limit:?}, {} of {} values differ:\n{}\n{}",
                lacking.len(),
                want.len() * on.len(),
                lacking[..lacking.len().min(20)].join("\n"),
                hosts.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `missing` part of `get_state` is empty (or absent).
fn nothing_missing(state: &Value) -> bool {
    state
        .get("missing")
        .and_then(Value::as_map)
        .is_none_or(<[_]>::is_empty)
}

/// Polls until the three nodes' dumps (tombstones included) are identical
/// and none misses a tick; returns the common dump.
async fn wait_converged(
    hosts: &Hosts,
    what: &str,
    limit: Duration,
) -> Result<BTreeMap<String, Value>> {
    let deadline = Instant::now() + limit;
    let mut clients = Vec::new();
    for i in 1..=3 {
        clients.push(hosts.connect(i).await?);
    }
    loop {
        let mut dumps = Vec::new();
        let mut states = Vec::new();
        for c in &clients {
            dumps.push(dump(c, true).await?);
            states.push(c.get_state(&["nodes", "missing", "remote_missing"]).await?);
        }
        let mut problems = Vec::new();
        for i in 1..3 {
            if let Err(e) = same_dump(&format!("h1 vs h{}", i + 1), &dumps[0], &dumps[i]) {
                problems.push(format!("{e:#}"));
            }
        }
        for (i, s) in states.iter().enumerate() {
            if !nothing_missing(s) {
                problems.push(format!("h{} misses ticks: {s}", i + 1));
            }
        }
        if problems.is_empty() {
            return Ok(dumps.swap_remove(0));
        }
        if Instant::now() > deadline {
            let states: Vec<String> = states
                .iter()
                .enumerate()
                .map(|(i, s)| format!("get_state of h{}: {s}", i + 1))
                .collect();
            bail!(
                "{what}: not converged after {limit:?}:\n{}\n{}\n{}",
                problems.join("\n"),
                states.join("\n"),
                hosts.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// For each `(client, theirs, ours)`: the client's node shows none of the
/// writes of `theirs` (only its own write of a key in both).
async fn partition_held(
    hosts: &Hosts,
    sides: &[(&Client, &Want, &Want)],
    cut: Instant,
) -> Result<()> {
    let mut leaked = Vec::new();
    for (c, theirs, ours) in sides {
        for p in theirs.keys() {
            let v = value(c, p).await?;
            let own = ours.get(p).map(|vs| &vs[0]);
            if v.as_ref() != own {
                leaked.push(format!(
                    "{}: {p} is {}",
                    c.greeting().node,
                    v.map_or("(none)".into(), |v| v.to_string())
                ));
            }
        }
    }
    ensure!(
        leaked.is_empty(),
        "writes crossed the partition {:?} after it was made:\n{}\n{}",
        cut.elapsed(),
        leaked[..leaked.len().min(20)].join("\n"),
        hosts.logs()
    );
    println!(
        "partition held: after {:?}, h3 has none of h1's writes, h1/h2 none of h3's",
        cut.elapsed()
    );
    Ok(())
}

/// Every acknowledged write is in the common dump (or, for a key written
/// on both sides, one of them is), and the dump holds nothing else.
fn check_writes(all: &BTreeMap<String, Value>, want: &Want) -> Result<()> {
    let mut bad = Vec::new();
    for (p, vs) in want {
        let got = all.get(&p.to_string()).and_then(|e| e.get("value"));
        if !got.is_some_and(|v| vs.contains(v)) {
            bad.push(format!(
                "{p} is {}, want one of {vs:?}",
                got.map_or("(none)".into(), Value::to_string)
            ));
        }
    }
    ensure!(
        bad.is_empty(),
        "{} acknowledged writes lost:\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );
    ensure!(
        all.len() == want.len(),
        "the common dump has {} entries, not the {} keys written",
        all.len(),
        want.len()
    );
    Ok(())
}

/// Polls until no node's MQTT client link crosses the partition of h3.
async fn wait_links_down(hosts: &Hosts) -> Result<()> {
    let deadline = Instant::now() + LINKS_DOWN;
    loop {
        let mut links = Vec::new();
        for (i, other) in [(1, &[3][..]), (2, &[3]), (3, &[1, 2])] {
            links.extend(
                hosts
                    .established(i, other)?
                    .into_iter()
                    .filter(|(_, remote)| remote.port() == BUS_PORT),
            );
        }
        if links.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "MQTT client links across the partition still established after {LINKS_DOWN:?}: \
             {links:?}\n{}",
            hosts.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Root, `ip`, and a network of three namespaces; `None`: the test is
/// skipped (the reason printed).
async fn network() -> Result<Option<Hosts>> {
    if let Err(why) = netns::available() {
        unavailable(&why)?;
        return Ok(None);
    }
    // Build the binary before making the network (the guard owns it).
    let bin = distkv_bin()?;
    let net = match Network::make(3) {
        Ok(net) => net,
        Err(e) => {
            unavailable(&format!("{e:#}"))?;
            return Ok(None);
        }
    };
    Ok(Some(Hosts::new(bin, net)?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_replicate_and_heal_a_real_partition() -> Result<()> {
    let Some(mut hosts) = network().await? else {
        return Ok(());
    };
    println!(
        "hosts h1..h3 at {}, {}, {}; {}",
        hosts.addr(1),
        hosts.addr(2),
        hosts.addr(3),
        bridge_netfilter()
    );

    // 1. h1 starts the cluster; h2 and h3 join it (from h1's address).
    let t0 = Instant::now();
    hosts.start(1).await?;
    hosts.start(2).await?;
    hosts.start(3).await?;
    println!("three nodes serving after {:?}", t0.elapsed());
    let (c1, c3) = (hosts.connect(1).await?, hosts.connect(3).await?);
    let c2 = hosts.connect(2).await?;
    let mut want = Want::new();
    for (i, c) in [(1, &c1), (2, &c2), (3, &c3)] {
        write(c, &mut want, "first", i..i + 1, &format!("h{i}")).await?;
    }
    let t = Instant::now();
    wait_values(&hosts, "a write on each node", &[1, 2, 3], &want, CONVERGE).await?;
    println!("first writes everywhere after {:?}", t.elapsed());

    // 2. A real partition: no packet between h3 and h1/h2.
    hosts.routes(3, "add")?;
    let cut = Instant::now();
    let mut on1 = Want::new();
    let mut on3 = Want::new();
    write(&c1, &mut on1, "by1", 0..100, "h1").await?;
    write(&c3, &mut on3, "by3", 0..100, "h3").await?;
    write(&c1, &mut on1, "both", 0..10, "h1").await?;
    write(&c3, &mut on3, "both", 0..10, "h3").await?;
    println!("220 writes during the partition took {:?}", cut.elapsed());
    // h2 is on h1's side: it gets h1's writes.
    wait_values(&hosts, "h1's writes on h2", &[2], &on1, CONVERGE).await?;
    let waited = cut.elapsed();
    if waited < CUT_CHECK {
        tokio::time::sleep(CUT_CHECK - waited).await;
    }
    // … and h3 none of them, nor h1 and h2 any of h3's.
    let sides = [(&c3, &on1, &on3), (&c1, &on3, &on1), (&c2, &on3, &on1)];
    partition_held(&hosts, &sides, cut).await?;
    // The MQTT links across the cut outlive a short partition (TCP
    // retransmits once it heals). Hold it until every node's client link
    // to a broker on the other side has given up (MQTT keep-alive), so
    // that healing needs new connections.
    wait_links_down(&hosts).await?;
    partition_held(&hosts, &sides, cut).await?;
    let mut stale = Vec::new();
    for (i, other) in [(1, &[3][..]), (2, &[3]), (3, &[1, 2])] {
        stale.extend(hosts.established(i, other)?);
    }
    println!(
        "every MQTT client link across the partition down {:?} after making it; \
         broker-side connections still ESTABLISHED (local, remote): {stale:?}",
        cut.elapsed()
    );

    // 3. Heal.
    hosts.routes(3, "del")?;
    let healed = Instant::now();
    println!("partition lasted {:?}", cut.elapsed());
    for (p, vs) in on1.into_iter().chain(on3) {
        want.entry(p).or_default().extend(vs);
    }
    let all = wait_converged(&hosts, "after healing the partition", HEAL).await?;
    println!("converged {:?} after healing", healed.elapsed());
    check_writes(&all, &want)?;

    // 4. kill -9 h2; h1 writes on; h2 comes back from its data directory.
    drop(c2);
    hosts.kill9(2)?;
    write(&c1, &mut want, "late", 0..20, "h1").await?;
    let t = Instant::now();
    hosts.start(2).await?;
    println!("h2 serving again after {:?}", t.elapsed());
    let all = wait_converged(&hosts, "after restarting h2", CONVERGE).await?;
    println!("converged {:?} after h2's restart", t.elapsed());
    check_writes(&all, &want)?;
    println!("total {:?}", t0.elapsed());
    Ok(())
}

/// A housekeeping cycle far longer than any wait below: what converges in
/// time does so without the cycle's heartbeats, tick broadcasts and pings.
const SLOW: [&str; 2] = ["server.ping.cycle=60", "server.ping.gap=0.2"];
/// Longest a link coming back may take to bring the missing writes (MQTT
/// reconnect backoff up to 2 s, then a few repair delays): well below one
/// cycle of [`SLOW`].
const LINK_HEAL: Duration = Duration::from_secs(8);

/// When a link comes back, the nodes exchange their ticks at once, both
/// ways. The links return one by one, in the order that defeats a node
/// that only sends its own ticks on a link coming up: h1's and h2's links
/// to h3's broker first (what they send then, h3 cannot hear), then h3's
/// link to h2 (h1 and h2 learn h3's writes; h3 learns nothing of h1's),
/// last h3's link to h1: h3 sends its ticks again, h1 needs nothing and
/// would say nothing until its next heartbeat, a cycle later. h3 must get
/// h1's writes well within that cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_coming_back_exchanges_ticks_both_ways_at_once() -> Result<()> {
    let Some(mut hosts) = network().await? else {
        return Ok(());
    };
    hosts.conf = SLOW.iter().map(|kv| kv.to_string()).collect();
    for i in 1..=3 {
        hosts.start(i).await?;
    }
    let (c1, c3) = (hosts.connect(1).await?, hosts.connect(3).await?);
    let mut want = Want::new();
    write(&c1, &mut want, "first", 0..1, "h1").await?;
    write(&c3, &mut want, "first", 1..2, "h3").await?;
    wait_values(&hosts, "a write on h1 and h3", &[1, 2, 3], &want, CONVERGE).await?;

    // A real partition; both sides write.
    hosts.routes(3, "add")?;
    let (mut on1, mut on3) = (Want::new(), Want::new());
    write(&c1, &mut on1, "by1", 0..50, "h1").await?;
    write(&c3, &mut on3, "by3", 0..50, "h3").await?;
    wait_values(&hosts, "h1's writes on h2", &[2], &on1, CONVERGE).await?;
    wait_links_down(&hosts).await?;

    // 1. The network heals, but h3 cannot reach a broker yet.
    hosts.bus_rule(3, 1, "add")?;
    hosts.bus_rule(3, 2, "add")?;
    hosts.routes(3, "del")?;
    hosts.wait_bus_links(&[(1, 3), (2, 3)]).await?;
    // 2. h3 reaches h2's broker: h1 and h2 get h3's writes.
    hosts.bus_rule(3, 2, "del")?;
    hosts.wait_bus_links(&[(3, 2)]).await?;
    wait_values(&hosts, "h3's writes on h1 and h2", &[1, 2], &on3, CONVERGE).await?;
    // 3. h3 reaches h1's broker: h3 must get h1's writes at once.
    hosts.bus_rule(3, 1, "del")?;
    let back = Instant::now();
    wait_values(
        &hosts,
        "h1's writes on h3 after its last link came back",
        &[3],
        &on1,
        LINK_HEAL,
    )
    .await?;
    println!(
        "h3 had h1's writes {:?} after its link to h1 could come back",
        back.elapsed()
    );
    for (p, vs) in on1.into_iter().chain(on3) {
        want.entry(p).or_default().extend(vs);
    }
    let all = wait_converged(&hosts, "after the links came back", CONVERGE).await?;
    check_writes(&all, &want)
}

/// Writes `n` random keys below `prefix` on host `i`'s node with `distkv
/// bench` (pipelined, many connections), from the root namespace.
fn bench_writes(hosts: &Hosts, i: usize, prefix: &str, n: usize) -> Result<()> {
    let out = Command::new(&hosts.bin)
        .args(["-c", "/dev/null", "bench", "-h"])
        .arg(hosts.addr(u8::try_from(i)?).to_string())
        .args([
            "-p",
            &CLIENT_PORT.to_string(),
            "--prefix",
            prefix,
            "-t",
            "set",
        ])
        .args([
            "-n",
            &n.to_string(),
            "-r",
            &n.to_string(),
            "-c",
            "10",
            "-P",
            "32",
        ])
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "distkv bench on h{i} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Whether the three nodes know the same ticks of every node and miss
/// none (cheap to ask, unlike a dump of every entry).
async fn same_ticks(clients: &[Client]) -> Result<bool> {
    let mut first = None;
    for c in clients {
        let s = c.get_state(&["nodes", "missing"]).await?;
        if !nothing_missing(&s) {
            return Ok(false);
        }
        let nodes = s.get("nodes").cloned();
        match &first {
            None => first = Some(nodes),
            Some(f) if *f != nodes => return Ok(false),
            Some(_) => {}
        }
    }
    Ok(true)
}

/// The heal time of a real partition with many writes on each side, for
/// docs/perf.md (not a pass/fail check; run explicitly):
/// `cargo test -p distkv-tests --test hosts heal_time -- --ignored --nocapture`,
/// `DISTKV_HEAL_WRITES` writes per side (default 100 000), default timing
/// unless `DISTKV_HEAL_CONF` (e.g. `server.ping.gap=0.5`) says otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: minutes of writes"]
async fn heal_time_with_many_writes_per_side() -> Result<()> {
    let Some(mut hosts) = network().await? else {
        return Ok(());
    };
    let n: usize = match std::env::var("DISTKV_HEAL_WRITES") {
        Ok(v) => v.parse().context("DISTKV_HEAL_WRITES")?,
        Err(_) => 100_000,
    };
    // Default timing, or `DISTKV_HEAL_CONF=key=value,…` overrides.
    hosts.conf = std::env::var("DISTKV_HEAL_CONF")
        .map(|c| c.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    for i in 1..=3 {
        hosts.start(i).await?;
    }
    let mut clients = Vec::new();
    for i in 1..=3 {
        clients.push(hosts.connect(i).await?);
    }
    hosts.routes(3, "add")?;
    let t = Instant::now();
    bench_writes(&hosts, 1, "heal.by1", n)?;
    bench_writes(&hosts, 3, "heal.by3", n)?;
    println!("{n} writes on h1 and on h3 took {:?}", t.elapsed());
    wait_links_down(&hosts).await?;
    hosts.routes(3, "del")?;
    let healed = Instant::now();
    let mut links_back = None;
    let deadline = healed + HEAL;
    while !same_ticks(&clients).await? {
        if links_back.is_none()
            && [(1, 3), (2, 3), (3, 1), (3, 2)]
                .iter()
                .all(|&(a, b)| hosts.bus_link(a, b).unwrap_or(false))
        {
            links_back = Some(healed.elapsed());
        }
        ensure!(
            Instant::now() < deadline,
            "not converged {HEAL:?} after healing:\n{}",
            hosts.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = healed.elapsed();
    println!(
        "{n} writes per side: every MQTT link back {links_back:?} after healing; \
         same ticks everywhere, nothing missing, {done:?} after healing"
    );
    let all = wait_converged(&hosts, "the dumps", CONVERGE).await?;
    println!("identical dumps of {} entries", all.len());
    Ok(())
}
