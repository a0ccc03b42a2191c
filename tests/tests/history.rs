//! A history checker over real processes, in the manner of Jepsen: three
//! `distkv server` processes with their embedded MQTT brokers, clients
//! writing concurrently to random keys on random nodes and recording every
//! write that was acknowledged, and faults on a seeded schedule — `kill -9`
//! and restart of a node (from its data directory), a clean stop and
//! restart, a node cut off from the others, one node deaf to another, a
//! node's disk filled up and freed again — while the nodes' wall clocks
//! jump forwards and backwards. At the end everything heals and, once every
//! node shows the same dump (polled with a deadline):
//!
//! * every acknowledged write is present, unless a later write to the same
//!   key supersedes it by the conflict rule (its chain descends from the
//!   write, or it wins: higher tock, then higher node name, then higher
//!   tick);
//! * every value present is one a client wrote there;
//! * all nodes agree (the same dump, chains and tocks included).
//!
//! The nodes run with `--fsync always`, so an acknowledgement means the
//! write is on disk: `kill -9` may lose none of them.
//!
//! **Partitions.** The nodes talk through each other's brokers: a node
//! publishes on its own broker and hears node X through its client
//! connection to X's broker. Where root and `ip` are available, each node
//! runs in a network namespace of its own, on its own address and the
//! default ports (`distkv_tests::netns`), and the cuts are the kernel's: a
//! node cut off gets blackhole routes to and from the others; "A does not
//! hear B" gets routing rules in A's namespace that drop A's packets to
//! B's bus port and those coming back, so that only A's client link to
//! B's broker breaks. A packet dropped for a moment is only retransmitted
//! once the cut heals, so each cut is held, beyond its random while, until
//! every MQTT client link it crosses has given up (the MQTT keep-alive:
//! some seconds), polled in the nodes' TCP tables; healing then needs new
//! connections and the repair of what was missed.
//!
//! **Link cuts without root.** Where the namespaces cannot be made (the
//! test prints why; `DISTKV_REQUIRE_NETNS` makes that a failure), the
//! nodes run on loopback and each advertises an address of its own on
//! the loopback network (`--advertise 127.0.0.<k>`, same bus port), where
//! this test listens and relays to the broker ([`Links`]). The relay reads
//! the MQTT `CONNECT` packet's client id (`<node>@<broker>`) to learn which
//! node connects, so it can cut each direction of each pair: "A does not
//! hear B" closes A's connection to B's broker and refuses it until healed.
//!
//! **A full disk.** Each node's data directory is on a small tmpfs of its
//! own (root only: otherwise this fault is left out, and the test says
//! why). The fault fills it with a file until `ENOSPC`, writes to that node
//! until one is refused (an error reply: not acknowledged, counted as
//! refused), holds the disk full while the clients go on writing (their
//! writes there are refused; events from the other nodes wait on the bus),
//! deletes the file and polls until the same node, never restarted,
//! acknowledges a write again.
//!
//! **Clock jumps.** The nodes run under libfaketime with only the wall
//! clock faked (see `distkv_tests::faketime`); on a seeded schedule of its
//! own, beside the faults, one node's clock at a time jumps to an offset
//! between 10 minutes and 2 days from the real time, forwards and back
//! again by turns. The nodes rotate segments every 2 s, write a snapshot
//! every 5 s and keep segments for a day of wall-clock time, so the jumps
//! reach rotation, snapshots and retention by age (a jump of days retires
//! the segments a snapshot covers). At the end the nodes' logs must hold
//! records stamped ahead of the run and behind it: the jumps reached the
//! processes. Where the library is missing, the jumps are left out with
//! the reason printed, unless `DISTKV_REQUIRE_FAKETIME` is set (as in CI):
//! then the test fails.
//!
//! `DISTKV_HISTORY_SECS` sets how long clients write under faults (default
//! 30 s, a CI run of well under a minute); `DISTKV_HISTORY_SEED` the fault and
//! client seed (default 1); `DISTKV_HISTORY_FSYNC=interval` runs the nodes
//! with that policy instead, where a `kill -9` may lose the writes
//! acknowledged in the last moments (the checker then says which). `DISTKV_TEST_KEEP=1` keeps the nodes'
//! directories and logs (the tmpfs stay mounted); failures quote every
//! node's stderr tail.

mod process;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_node::client::{Client, ConnectOptions, UpdateOptions};
use distkv_tests::faketime::{self, FakeClock};
use distkv_tests::netns::{self, Network};
use distkv_tests::tmpfs::{is_refusal, Tmpfs};
use process::{dump, logs, same_dump, Launch, NodeProc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Nodes in the cluster.
const NODES: usize = 3;
/// Concurrent writing clients.
const CLIENTS: usize = 4;
/// Hot keys: every client writes them, on every node, so writes conflict.
const HOT: u64 = 16;
/// The share of writes to hot keys; the others each go to a key of their
/// own, written once, so that each must be found with its value.
const HOT_SHARE: f64 = 0.3;
/// Longest the nodes may take to agree once everything healed.
const CONVERGE: Duration = Duration::from_secs(60);
/// Longest a client waits for one reply (a node may be stopping).
const REPLY: Duration = Duration::from_secs(5);
/// A short election cycle and repair delay, so that healing is quick.
const FAST: [&str; 2] = ["server.ping.cycle=1", "server.ping.gap=0.2"];
/// The history's timed work within a short run: a new segment every 2 s,
/// a snapshot every 5 s, segments kept (beyond what the older snapshot
/// needs) for a day of wall-clock time — so that the clock jumps, of up to
/// two days, reach rotation, snapshots and retention by age.
const TIMED: [&str; 3] = [
    "server.persist.segment_max_age=2",
    "server.persist.snapshot_interval=5",
    "server.persist.retention_max_age=86400",
];
/// Longest a node may take to refuse writes once its disk is full, and to
/// take them again once space is freed (its writer retries every 2 s at
/// most).
const DISK_TURN: Duration = Duration::from_secs(30);
/// A node's tmpfs: this much, plus [`DISK_PER_SEC_KIB`] per second of the run
/// (a node's data grows by about 100 KiB a second in a debug build).
const DISK_BASE_MIB: u64 = 16;
const DISK_PER_SEC_KIB: u64 = 512;
/// The clock offsets, in seconds either way: 10 minutes to 2 days.
const CLOCK_OFFSETS: std::ops::Range<i64> = 600..172_800;
/// Records stamped this far outside the run's real time show a jump.
const STAMP_MARGIN_MS: u64 = 5 * 60 * 1000;
/// The ports of a node in a namespace of its own: the defaults.
const CLIENT_PORT: u16 = 27586;
const BUS_PORT: u16 = 27587;
/// Longest the MQTT client links across a real cut may take to give up
/// (keep-alive 5 s, then the client's timeout).
const LINKS_DOWN: Duration = Duration::from_secs(30);

fn env_num(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|s| s.parse().ok())
}

/// A temporary directory for the nodes; `DISTKV_TEST_KEEP=1` keeps it.
fn tempdir() -> Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix("distkv-history-")
        .tempdir()?;
    if std::env::var_os("DISTKV_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("keeping {}", dir.path().display());
    }
    Ok(dir)
}

// ------------------------------------------------------------ link cuts

/// The relays in front of every node's broker, and which directions are
/// cut: `(a, b)` in `cut` means node `a` does not hear node `b`.
#[derive(Default)]
struct Links {
    state: Mutex<LinkState>,
}

#[derive(Default)]
struct LinkState {
    cut: HashSet<(String, String)>,
    /// Connections closed by a cut, and ones refused while cut: proof
    /// that the cuts cut.
    severed: u64,
    refused: u64,
    /// Relayed connections: (listener node, broker's node, the relay task).
    open: Vec<(String, String, AbortHandle)>,
}

impl Links {
    /// Relays `listen` to `broker`, the broker of node `owner`, until the
    /// runtime ends.
    async fn relay(
        self: &Arc<Self>,
        owner: &str,
        listen: SocketAddr,
        broker: SocketAddr,
    ) -> Result<()> {
        let l = TcpListener::bind(listen)
            .await
            .with_context(|| format!("relay for {owner}'s broker on {listen}"))?;
        let (links, owner) = (self.clone(), owner.to_string());
        tokio::spawn(async move {
            while let Ok((sock, _)) = l.accept().await {
                let (links, owner) = (links.clone(), owner.clone());
                tokio::spawn(async move { links.connection(&owner, sock, broker).await });
            }
        });
        Ok(())
    }

    /// One connection to `owner`'s broker: learns who connects from its
    /// `CONNECT` packet, then relays both ways unless that direction is cut.
    async fn connection(&self, owner: &str, mut sock: TcpStream, broker: SocketAddr) {
        let Ok(Ok(Some((client, head)))) =
            tokio::time::timeout(REPLY, read_connect(&mut sock)).await
        else {
            return;
        };
        let from = client.split('@').next().unwrap_or_default().to_string();
        if self.is_cut(&from, owner) {
            return; // the broker never sees it
        }
        let Ok(mut out) = TcpStream::connect(broker).await else {
            return;
        };
        if out.write_all(&head).await.is_err() {
            return;
        }
        let mut st = self.state.lock().unwrap();
        if st.cut.contains(&(from.clone(), owner.to_string())) {
            st.refused += 1;
            return; // cut meanwhile: dropping both sockets closes them
        }
        let task = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut sock, &mut out).await;
        });
        st.open.retain(|c| !c.2.is_finished());
        st.open.push((from, owner.to_string(), task.abort_handle()));
    }

    /// Whether `a` may not hear `b` now (counted as a refusal if so).
    fn is_cut(&self, a: &str, b: &str) -> bool {
        let mut st = self.state.lock().unwrap();
        let cut = st.cut.contains(&(a.to_string(), b.to_string()));
        st.refused += u64::from(cut);
        cut
    }

    /// `a` no longer hears `b`: its connection to `b`'s broker is closed
    /// and refused until [`Links::heal`].
    fn cut(&self, a: &str, b: &str) {
        let mut st = self.state.lock().unwrap();
        st.cut.insert((a.to_string(), b.to_string()));
        let mut severed = 0;
        for (from, to, task) in &st.open {
            if from == a && to == b && !task.is_finished() {
                task.abort();
                severed += 1;
            }
        }
        st.severed += severed;
    }

    /// Connections closed by cuts, and refused while cut.
    fn severed(&self) -> (u64, u64) {
        let st = self.state.lock().unwrap();
        (st.severed, st.refused)
    }

    /// Every link works again.
    fn heal(&self) {
        self.state.lock().unwrap().cut.clear();
    }
}

/// How the link faults are made.
enum Cuts {
    /// Relays in front of the brokers, on loopback.
    Relays(Arc<Links>),
    /// Hosts in network namespaces: the kernel drops the packets.
    Netns(Network),
}

/// The MQTT client links established from node `a`'s namespace to node
/// `b`'s broker, for each `(a, b)` of `pairs` (0-based).
fn bus_links(nodes: &Nodes, net: &Network, pairs: &[(usize, usize)]) -> Result<usize> {
    let mut n = 0;
    for &(a, b) in pairs {
        let pid = nodes.procs[a].as_ref().context("node down")?.pid();
        n += netns::established(pid, &[net.host(b + 1)])?
            .iter()
            .filter(|(_, remote)| remote.port() == BUS_PORT)
            .count();
    }
    Ok(n)
}

/// Polls until none of the links `pairs` is established (with a
/// deadline); returns how long that took.
async fn wait_links_down(
    nodes: &Nodes,
    net: &Network,
    pairs: &[(usize, usize)],
) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let n = bus_links(nodes, net, pairs)?;
        if n == 0 {
            return Ok(t0.elapsed());
        }
        ensure!(
            t0.elapsed() < LINKS_DOWN,
            "{n} MQTT client links across a cut still established after {LINKS_DOWN:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads an MQTT `CONNECT` packet: the client id and the packet's bytes
/// (to pass on). `None` if the bytes are not one.
async fn read_connect(sock: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match parse_connect(&buf) {
            Parsed::Done(id) => return Ok(Some((id, buf))),
            Parsed::Bad => return Ok(None),
            Parsed::More if buf.len() > 64 << 10 => return Ok(None),
            Parsed::More => {}
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Parsed {
    Done(String),
    More,
    Bad,
}

/// The client id of an MQTT 3.1.1 or 5 `CONNECT` packet at the start of
/// `buf`.
fn parse_connect(buf: &[u8]) -> Parsed {
    /// A variable-length integer at `b[*at..]`; `None` if incomplete.
    fn varint(b: &[u8], at: &mut usize) -> Option<Option<usize>> {
        let mut v = 0usize;
        for i in 0..4 {
            let &x = b.get(*at)?;
            *at += 1;
            v |= usize::from(x & 0x7f) << (7 * i);
            if x & 0x80 == 0 {
                return Some(Some(v));
            }
        }
        Some(None)
    }
    fn u16_at(b: &[u8], at: usize) -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *b.get(at)?,
            *b.get(at + 1)?,
        ])))
    }
    let Some(&first) = buf.first() else {
        return Parsed::More;
    };
    if first != 0x10 {
        return Parsed::Bad;
    }
    let mut at = 1;
    let len = match varint(buf, &mut at) {
        None => return Parsed::More,
        Some(None) => return Parsed::Bad,
        Some(Some(l)) => l,
    };
    if buf.len() < at + len {
        return Parsed::More;
    }
    let body = &buf[at..at + len];
    let id = (|| {
        let name = u16_at(body, 0)?;
        let level = *body.get(2 + name)?;
        let mut at = 2 + name + 1 + 1 + 2; // level, flags, keep-alive
        if level == 5 {
            let props = varint(body, &mut at)??;
            at += props;
        }
        let n = u16_at(body, at)?;
        let id = body.get(at + 2..at + 2 + n)?;
        String::from_utf8(id.to_vec()).ok()
    })();
    id.map_or(Parsed::Bad, Parsed::Done)
}

// ------------------------------------------------------------ the history

/// An acknowledged write.
#[derive(Clone, Debug)]
struct Ack {
    /// The key's path, as text.
    key: String,
    value: Value,
    /// The chain head of the reply: the node that took the write, its tick.
    node: String,
    tick: u64,
    tock: u64,
}

/// What the clients did.
#[derive(Default)]
struct History {
    acks: Vec<Ack>,
    /// Every value a client tried to write, by key (acknowledged or not).
    tried: BTreeMap<String, HashSet<String>>,
    /// Writes with no reply or an error: they may or may not have happened.
    unknown: u64,
    /// Writes refused because the node's history could not be written (an
    /// error reply: not acknowledged; under `fsync always` the node may
    /// still write them once its disk has space).
    refused: u64,
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Acked,
    /// Refused with the error reply of a node that cannot write.
    Refused,
    /// No reply, or another error.
    Unknown,
}

/// The cluster as the clients see it: where each node serves now.
struct Cluster {
    addrs: Mutex<Vec<Option<SocketAddr>>>,
    history: Mutex<History>,
    stop: AtomicBool,
    faults: Mutex<BTreeMap<&'static str, u64>>,
    /// MQTT client links up when a real cut was made, and down before it
    /// healed: proof that the kernel's cuts cut.
    broken: AtomicU64,
}

impl Cluster {
    fn fault(&self, kind: &'static str) {
        *self.faults.lock().unwrap().entry(kind).or_default() += 1;
    }

    /// Sets `p` to the string `value` through `c` and records the write:
    /// tried, then acknowledged, refused or unknown.
    async fn write(&self, c: &Client, p: &Path, value: &str) -> Outcome {
        let key = p.to_string();
        self.history
            .lock()
            .unwrap()
            .tried
            .entry(key.clone())
            .or_default()
            .insert(value.to_string());
        let opts = UpdateOptions {
            nchain: 1,
            ..UpdateOptions::default()
        };
        let r = tokio::time::timeout(REPLY, c.set_value(p, Value::str(value), &opts)).await;
        let mut h = self.history.lock().unwrap();
        match r {
            Ok(Ok(reply)) => match ack_of(key, value, &reply) {
                Some(a) => {
                    h.acks.push(a);
                    Outcome::Acked
                }
                None => {
                    h.unknown += 1;
                    Outcome::Unknown
                }
            },
            Ok(Err(e)) if is_refusal(&e) => {
                h.refused += 1;
                Outcome::Refused
            }
            Ok(Err(_)) | Err(_) => {
                h.unknown += 1;
                Outcome::Unknown
            }
        }
    }
}

/// A client: writes unique values to random keys on random nodes until
/// told to stop, recording what was acknowledged.
async fn client(id: usize, seed: u64, cluster: Arc<Cluster>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64) << 32);
    let mut conns: Vec<Option<(SocketAddr, Client)>> = (0..NODES).map(|_| None).collect();
    let mut n = 0u64;
    while !cluster.stop.load(Ordering::Relaxed) {
        let i = rng.gen_range(0..NODES);
        let Some(addr) = cluster.addrs.lock().unwrap()[i] else {
            tokio::task::yield_now().await;
            continue;
        };
        if conns[i].as_ref().is_none_or(|c| c.0 != addr) {
            let copts = ConnectOptions {
                qlen: 0,
                timeout: REPLY,
                ..ConnectOptions::default()
            };
            match Client::connect(addr, copts).await {
                Ok(c) => conns[i] = Some((addr, c)),
                Err(_) => {
                    // Down, or not serving yet: try another node.
                    conns[i] = None;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let c = &conns[i].as_ref().expect("connected").1;
        n += 1;
        let p = if rng.gen_bool(HOT_SHARE) {
            path!["hist", "hot", rng.gen_range(0..HOT)]
        } else {
            path!["hist", "once", id as u64, n]
        };
        // A refusal comes on a connection that stays usable.
        if cluster.write(c, &p, &format!("c{id}-{n}")).await == Outcome::Unknown {
            conns[i] = None;
        }
    }
}

/// The acknowledged write a `set_value` reply describes.
fn ack_of(key: String, value: &str, reply: &Value) -> Option<Ack> {
    let chain = reply.get("chain")?;
    Some(Ack {
        key,
        value: Value::str(value),
        node: chain.get("node")?.as_str()?.to_string(),
        tick: chain.get("tick")?.as_u64()?,
        tock: reply.get("tock")?.as_u64()?,
    })
}

// ------------------------------------------------------------ faults

/// The three nodes: how to start each, the running processes, and each
/// one's disk (a tmpfs, where one could be mounted). The processes are
/// declared first: they end before the disks are unmounted.
struct Nodes {
    launch: Vec<Launch>,
    procs: Vec<Option<NodeProc>>,
    disks: Vec<Option<Tmpfs>>,
}

impl Nodes {
    fn name(&self, i: usize) -> &str {
        &self.launch[i].name
    }

    async fn start(&mut self, i: usize, cluster: &Cluster) -> Result<()> {
        let p = self.launch[i].start().await?;
        if let Some(ns) = &self.launch[i].netns {
            self.check_netns(&p, ns, i)?;
        }
        cluster.addrs.lock().unwrap()[i] = Some(p.addr);
        self.procs[i] = Some(p);
        Ok(())
    }

    /// Node `i`'s process `p` runs in namespace `ns` and, with its own
    /// mounts, sees its tmpfs (mounted before it started) and writes its
    /// data there.
    fn check_netns(&self, p: &NodeProc, ns: &str, i: usize) -> Result<()> {
        let pid = p.pid();
        let got = netns::identify(pid)?;
        ensure!(
            got == ns,
            "{} (pid {pid}) runs in namespace {got:?}, not {ns}",
            p.name
        );
        let Some(fs) = &self.disks[i] else {
            return Ok(());
        };
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
        let mount = fs.dir().to_str().context("tmpfs path")?;
        let tmpfs = info.lines().any(|l| {
            l.split(' ').nth(4) == Some(mount)
                && l.split_once(" - ")
                    .is_some_and(|(_, fs)| fs.starts_with("tmpfs "))
        });
        ensure!(
            tmpfs,
            "{} does not see its tmpfs at {mount}:\n{info}",
            p.name
        );
        let data = fs.dir().join("data");
        ensure!(
            std::fs::read_dir(&data)?.next().is_some(),
            "{} wrote nothing into {}",
            p.name,
            data.display()
        );
        Ok(())
    }

    /// Stops node `i` with `stop`; clients learn it is down only from
    /// their failing requests and connections.
    async fn stop<F, Fut>(&mut self, i: usize, cluster: &Cluster, stop: F) -> Result<()>
    where
        F: FnOnce(NodeProc) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let p = self.procs[i].take().context("node already down")?;
        let pid = p.pid();
        stop(p).await?;
        faketime::forget(pid);
        cluster.addrs.lock().unwrap()[i] = None;
        Ok(())
    }

    fn running(&self) -> Vec<&NodeProc> {
        self.procs.iter().flatten().collect()
    }
}

impl Drop for Nodes {
    /// Kills the nodes still running (a failed test) and removes what
    /// libfaketime leaves of a killed process.
    fn drop(&mut self) {
        for p in self.procs.iter_mut().filter_map(Option::take) {
            let pid = p.pid();
            drop(p);
            faketime::forget(pid);
        }
    }
}

/// The kinds of faults on the schedule.
const FAULTS: [&str; 5] = [
    "kill -9 and restart",
    "SIGTERM and restart",
    "node cut off",
    "one node deaf to another",
    "disk full",
];
/// Index of the full disk in [`FAULTS`].
const DISK_FULL: usize = 4;
/// Clock jumps, counted with the faults (they come on their own schedule).
const CLOCK_JUMP: &str = "clock jump";

/// Faults on the seeded schedule until `until`: each one held for a random
/// while, then undone (the node restarted, the links healed, the disk
/// freed). The kinds come in seeded rounds in which each kind available
/// here comes once, so that a short run has every kind.
async fn faults(
    rng: &mut StdRng,
    nodes: &mut Nodes,
    cuts: &Cuts,
    cluster: &Cluster,
    until: Instant,
) -> Result<Vec<DiskFull>> {
    let t0 = Instant::now();
    let kinds: Vec<usize> = (0..FAULTS.len())
        .filter(|&k| k != DISK_FULL || nodes.disks.iter().all(Option::is_some))
        .collect();
    let mut round = Vec::new();
    let mut disk_fulls = Vec::new();
    while Instant::now() < until {
        // The schedule's pauses: no condition is waited for.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
        let i = rng.gen_range(0..NODES);
        let hold = Duration::from_millis(rng.gen_range(500..3000));
        let at = t0.elapsed();
        if round.is_empty() {
            round = kinds.clone();
            round.shuffle(rng);
        }
        let kind = round.pop().expect("a kind");
        // The disks fill by turns, so that a short run fills more than one.
        let i = if kind == DISK_FULL {
            disk_fulls.len() % NODES
        } else {
            i
        };
        cluster.fault(FAULTS[kind]);
        let mut detail = String::new();
        match kind {
            0 => {
                nodes
                    .stop(i, cluster, |p| async move { p.kill9().map(drop) })
                    .await?;
                tokio::time::sleep(hold).await;
                nodes.start(i, cluster).await?;
            }
            1 => {
                nodes.stop(i, cluster, NodeProc::terminate).await?;
                tokio::time::sleep(hold).await;
                nodes.start(i, cluster).await?;
            }
            2 | 3 => {
                // Cut off: every link to and from `i`; deaf: `i`'s to `j`.
                let pairs: Vec<(usize, usize)> = if kind == 2 {
                    (0..NODES)
                        .filter(|&j| j != i)
                        .flat_map(|j| [(i, j), (j, i)])
                        .collect()
                } else {
                    vec![(i, (i + rng.gen_range(1..NODES)) % NODES)]
                };
                match cuts {
                    Cuts::Relays(links) => {
                        for &(a, b) in &pairs {
                            links.cut(nodes.name(a), nodes.name(b));
                        }
                        tokio::time::sleep(hold).await;
                        links.heal();
                    }
                    Cuts::Netns(net) => {
                        let up = bus_links(nodes, net, &pairs)?;
                        let rule = |op| match kind {
                            2 => net.routes(i + 1, op),
                            _ => net.port_rule(pairs[0].0 + 1, pairs[0].1 + 1, BUS_PORT, op),
                        };
                        rule("add")?;
                        tokio::time::sleep(hold).await;
                        let down = wait_links_down(nodes, net, &pairs).await?;
                        rule("del")?;
                        cluster.broken.fetch_add(up as u64, Ordering::Relaxed);
                        detail = format!(
                            " ({up} MQTT client links up at the cut, all down {:.1} s after \
                             the hold)",
                            down.as_secs_f64()
                        );
                    }
                }
                if kind == 3 {
                    detail = format!(" (deaf to {}){detail}", nodes.name(pairs[0].1));
                }
            }
            _ => {
                let d = disk_full(nodes, i, cluster, hold).await?;
                detail = format!(
                    " ({} MiB filled, {} writes refused, writes taken again {:.1} s after \
                     space was freed, no restart)",
                    d.filled >> 20,
                    d.refused,
                    d.resumed.as_secs_f64()
                );
                disk_fulls.push(d);
            }
        }
        eprintln!(
            "{:6.1} s: {} on {} held {hold:?}, undone after {:.1} s{detail}",
            at.as_secs_f64(),
            FAULTS[kind],
            nodes.name(i),
            (t0.elapsed() - at).as_secs_f64()
        );
    }
    Ok(disk_fulls)
}

/// What one full disk did.
#[derive(Debug)]
struct DiskFull {
    /// Bytes the filler took.
    filled: u64,
    /// Writes refused (on any node) while the disk was full, the probes'
    /// included.
    refused: u64,
    /// How long after the space was freed the node took a write again.
    resumed: Duration,
}

/// Writes a probe value to node `i` (a key of its own, recorded like the
/// clients' writes).
async fn probe(c: &Client, cluster: &Cluster, i: usize) -> Outcome {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = path!["hist", "probe", i as u64, n];
    cluster.write(c, &p, &format!("p{n}")).await
}

/// Fills node `i`'s disk until the node refuses a write, holds it full for
/// `hold` while the clients go on writing, frees the space and polls until
/// the node (not restarted) acknowledges a write again.
async fn disk_full(nodes: &Nodes, i: usize, cluster: &Cluster, hold: Duration) -> Result<DiskFull> {
    let fs = nodes.disks[i].as_ref().context("no disk to fill")?;
    let node = nodes.procs[i].as_ref().context("node down")?;
    let pid = node.pid();
    let c = node.connect().await?;
    let refused0 = cluster.history.lock().unwrap().refused;
    let filled = fs.fill()?;
    // The node notices at its next write: under `fsync always` the write's
    // own reply is the refusal.
    let t0 = Instant::now();
    loop {
        match probe(&c, cluster, i).await {
            Outcome::Refused => break,
            Outcome::Acked => {}
            Outcome::Unknown => bail!("a write on a full disk got no reply or another error"),
        }
        ensure!(
            t0.elapsed() < DISK_TURN,
            "{} still acknowledges writes {DISK_TURN:?} after its disk was filled",
            nodes.name(i)
        );
    }
    tokio::time::sleep(hold).await;
    fs.free()?;
    let freed = Instant::now();
    loop {
        match probe(&c, cluster, i).await {
            Outcome::Acked => break,
            Outcome::Refused => {}
            Outcome::Unknown => {
                bail!("a write after space was freed got no reply or another error")
            }
        }
        ensure!(
            freed.elapsed() < DISK_TURN,
            "{} still refuses writes {DISK_TURN:?} after space was freed",
            nodes.name(i)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed = freed.elapsed();
    ensure!(
        nodes.procs[i].as_ref().map(NodeProc::pid) == Some(pid),
        "the node was restarted"
    );
    let refused = cluster.history.lock().unwrap().refused - refused0;
    Ok(DiskFull {
        filled,
        refused,
        resumed,
    })
}

/// The nodes' wall clocks, and the jumps they made.
struct Clocks {
    clocks: Vec<FakeClock>,
    /// Jumps forwards and backwards.
    forward: u64,
    back: u64,
    /// The lowest and highest offset set, in seconds.
    range: (i64, i64),
}

impl Clocks {
    /// Jumps one node's clock at a time, every 0.5 – 3 s until `until`: to
    /// an offset of 10 minutes to 2 days, ahead of the real time and behind
    /// it by turns for each node (each node's first jump is forwards).
    async fn jump(&mut self, rng: &mut StdRng, cluster: &Cluster, until: Instant) -> Result<()> {
        let t0 = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(500..3000))).await;
            if Instant::now() >= until {
                return Ok(());
            }
            let i = rng.gen_range(0..self.clocks.len());
            let c = &mut self.clocks[i];
            let was = c.offset();
            let mag = rng.gen_range(CLOCK_OFFSETS);
            let to = if was > 0 { -mag } else { mag };
            c.set(to)?;
            cluster.fault(CLOCK_JUMP);
            if to > was {
                self.forward += 1;
            } else {
                self.back += 1;
            }
            self.range = (self.range.0.min(to), self.range.1.max(to));
            eprintln!(
                "{:6.1} s: clock of hist{} jumps {} from {was:+} s to {to:+} s",
                t0.elapsed().as_secs_f64(),
                i + 1,
                if to > was { "forwards" } else { "back" },
            );
        }
    }
}

/// Records in the logs of `dirs` stamped more than [`STAMP_MARGIN_MS`]
/// before `from_ms` and after `to_ms` (real times): proof that the jumped
/// clocks reached the nodes.
fn stamps_outside(dirs: &[std::path::PathBuf], from_ms: u64, to_ms: u64) -> Result<(u64, u64)> {
    let (mut before, mut after) = (0, 0);
    for d in dirs {
        for r in distkv_log::LogReader::open(&d.join("log"), 0)? {
            let t = r?.time_ms();
            before += u64::from(t + STAMP_MARGIN_MS < from_ms);
            after += u64::from(t > to_ms + STAMP_MARGIN_MS);
        }
    }
    Ok((before, after))
}

// ------------------------------------------------------------ the check

/// A chain from a dump, as (node, tick) links, head first.
fn links_of(mut chain: &Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    while let (Some(n), Some(t)) = (
        chain.get("node").and_then(Value::as_str),
        chain.get("tick").and_then(Value::as_u64),
    ) {
        out.push((n.to_string(), t));
        match chain.get("prev") {
            Some(p) => chain = p,
            None => break,
        }
    }
    out
}

/// Every acknowledged write is present, or superseded by the entry's
/// current change; every present value is one a client wrote. Returns how
/// many acknowledged writes are still the current value; fails naming the
/// first few violations and how many there are.
fn check(final_dump: &BTreeMap<String, Value>, h: &History) -> Result<usize> {
    let mut current = 0;
    let mut bad = Vec::new();
    for a in &h.acks {
        match judge(final_dump, a) {
            Ok(true) => current += 1,
            Ok(false) => {}
            Err(e) => bad.push(format!("{e:#}")),
        }
    }
    let hist = path!["hist"].to_string();
    for (k, e) in final_dump {
        let Some(v) = e.get("value") else { continue };
        let s = v.as_str().unwrap_or_default();
        if k.starts_with(&hist) && !h.tried.get(k).is_some_and(|t| t.contains(s)) {
            bad.push(format!("{k} holds {v}, which no client wrote there"));
        }
    }
    ensure!(
        bad.is_empty(),
        "{} violations (of {} acknowledged writes), e.g.:\n{}",
        bad.len(),
        h.acks.len(),
        bad[..bad.len().min(10)].join("\n")
    );
    Ok(current)
}

/// Whether acknowledged write `a` is the current value of its key (true),
/// or superseded by the conflict rule (false); an error if it is lost.
fn judge(final_dump: &BTreeMap<String, Value>, a: &Ack) -> Result<bool> {
    let k = &a.key;
    let e = final_dump
        .get(k)
        .with_context(|| format!("{k} vanished: the acknowledged {a:?} is lost"))?;
    let chain = links_of(e.get("chain").context("entry without a chain")?);
    let (hn, ht) = chain.first().cloned().context("empty chain")?;
    let tock = e.get("tock").and_then(Value::as_u64).context("no tock")?;
    if (hn.as_str(), ht) == (a.node.as_str(), a.tick) {
        ensure!(
            e.get("value") == Some(&a.value),
            "{k} holds {e} under the chain head of the acknowledged {a:?}"
        );
        return Ok(true);
    }
    let descends = chain.iter().any(|(n, t)| *n == a.node && *t >= a.tick);
    let wins = (tock, hn.as_str(), ht) > (a.tock, a.node.as_str(), a.tick);
    ensure!(
        descends || wins,
        "the acknowledged {a:?} is lost: {k} holds {e}, which neither descends from it nor \
         wins against it"
    );
    Ok(false)
}

/// Polls until every node's dump is the same (with a deadline); returns it.
async fn converged(nodes: &Nodes) -> Result<BTreeMap<String, Value>> {
    let t0 = Instant::now();
    loop {
        let mut dumps = Vec::new();
        let mut err = None;
        for n in nodes.running() {
            match n.connect().await {
                Ok(c) => match dump(&c, true).await {
                    Ok(d) => dumps.push(d),
                    Err(e) => err = Some(e),
                },
                Err(e) => err = Some(e),
            }
        }
        let agree = err.is_none()
            && dumps.len() == NODES
            && dumps
                .iter()
                .all(|d| same_dump("", &dumps[0], d).is_ok() && !d.is_empty());
        if agree {
            return Ok(dumps.swap_remove(0));
        }
        if t0.elapsed() > CONVERGE {
            if let Some(e) = err {
                bail!("no convergence within {CONVERGE:?}: {e:#}");
            }
            for (i, d) in dumps.iter().enumerate().skip(1) {
                same_dump(&format!("node {} against node 1", i + 1), &dumps[0], d)?;
            }
            bail!("no convergence within {CONVERGE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `NODES` launches in `dir`, each in its namespace or behind a relay on
/// its own loopback address, with its data on its disk (if it has one) and its wall clock
/// following its fake clock (if there are); the first starts the cluster,
/// the others know it as a peer.
async fn launches(
    dir: &FsPath,
    cuts: &Cuts,
    fsync: &'static str,
    disks: &[Option<Tmpfs>],
    clocks: Option<&Clocks>,
) -> Result<Vec<Launch>> {
    let mut out: Vec<Launch> = Vec::new();
    for (i, disk) in disks.iter().enumerate().take(NODES) {
        let name = format!("hist{}", i + 1);
        let d = dir.join(&name);
        std::fs::create_dir_all(&d)?;
        let mut l = Launch::new(&name, &d).fsync(fsync);
        if let Some(fs) = disk {
            l.data_dir = Some(fs.dir().join("data"));
        }
        if let Some(c) = clocks {
            l.env.extend(c.clocks[i].env());
        }
        for kv in FAST.into_iter().chain(TIMED) {
            l = l.conf(kv);
        }
        // `--force`: the joining nodes serve at once and catch up by
        // repair; a node with data serves at once anyway.
        l = l.arg("--force");
        let links = match cuts {
            Cuts::Netns(net) => {
                let addr = net.host(i + 1).to_string();
                l = l.in_netns(&net.ns(i + 1), &addr, CLIENT_PORT, BUS_PORT);
                if i > 0 {
                    l = l.arg("--peer").arg(format!("{}:{BUS_PORT}", net.host(1)));
                }
                out.push(l);
                continue;
            }
            Cuts::Relays(links) => links,
        };
        l = l.with_bus()?;
        let port = l.bus_port.context("bus port")?;
        let public = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
        links
            .relay(
                &name,
                SocketAddr::from((public, port)),
                SocketAddr::from(([127, 0, 0, 1], port)),
            )
            .await?;
        // (Without `--force`, a fetch would go to the advertised
        // address's client port, where nothing listens.)
        l = l.arg("--advertise").arg(public.to_string());
        if let Some(first) = out.first() {
            let seed = format!("127.0.0.2:{}", first.bus_port.context("bus port")?);
            l = l.arg("--peer").arg(seed);
        }
        out.push(l);
    }
    Ok(out)
}

/// A tmpfs for each node's data under `dir`, sized for a run of `secs`;
/// `None`s (after printing why) where they cannot be mounted.
fn disks(dir: &FsPath, secs: u64) -> Vec<Option<Tmpfs>> {
    let size = format!("{}k", (DISK_BASE_MIB << 10) + secs * DISK_PER_SEC_KIB);
    let mut out = Vec::new();
    for i in 0..NODES {
        match Tmpfs::mount(&dir.join(format!("hist{}/disk", i + 1)), &size) {
            Ok(mut fs) => {
                if std::env::var_os("DISTKV_TEST_KEEP").is_some() {
                    fs.keep_mounted();
                }
                out.push(Some(fs));
            }
            Err(why) => {
                println!("no disk-full faults: {why}");
                return (0..NODES).map(|_| None).collect();
            }
        }
    }
    out
}

/// A fake wall clock for each node, with files in `dir`; `None` (after
/// printing why) without libfaketime (an error if it is required).
fn clocks(dir: &FsPath) -> Result<Option<Clocks>> {
    let lib = match faketime::library()? {
        Ok(lib) => lib,
        Err(why) => {
            println!("no clock jumps: {why}");
            return Ok(None);
        }
    };
    let clocks = (0..NODES)
        .map(|i| FakeClock::new(&lib, &dir.join(format!("hist{}.clock", i + 1))))
        .collect::<Result<_>>()?;
    Ok(Some(Clocks {
        clocks,
        forward: 0,
        back: 0,
        range: (0, 0),
    }))
}

/// Three hosts in network namespaces, or why not.
fn network() -> std::result::Result<Network, String> {
    netns::available()?;
    Network::make(NODES).map_err(|e| format!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kills_restarts_cuts_full_disks_and_clock_jumps() -> Result<()>
{
    let secs = env_num("DISTKV_HISTORY_SECS").unwrap_or(30);
    let seed = env_num("DISTKV_HISTORY_SEED").unwrap_or(1);
    process::distkv_bin()?; // built (if needed) before the clock starts
    let run_from_ms = distkv_node::server::now_ms();
    let dir = tempdir()?;
    let disks = disks(dir.path(), secs);
    let mut clocks = clocks(dir.path())?;
    // The nodes (declared later) end before the network is removed.
    let cuts = match network() {
        Ok(net) => {
            println!(
                "partitions in network namespaces: nodes at {}, {}, {}; {}",
                net.host(1),
                net.host(2),
                net.host(3),
                netns::bridge_netfilter()
            );
            Cuts::Netns(net)
        }
        Err(why) => {
            netns::unavailable(&why)?;
            println!("partitions by relays on loopback: network namespaces unavailable ({why})");
            Cuts::Relays(Arc::new(Links::default()))
        }
    };
    // Another policy shows what the checker finds when an acknowledgement
    // does not wait for the disk.
    let fsync: &'static str = match std::env::var("DISTKV_HISTORY_FSYNC").as_deref() {
        Ok("interval") => "interval",
        Ok("never") => "never",
        _ => "always",
    };
    let launch = launches(dir.path(), &cuts, fsync, &disks, clocks.as_ref()).await?;
    let cluster = Arc::new(Cluster {
        addrs: Mutex::new(vec![None; NODES]),
        history: Mutex::new(History::default()),
        stop: AtomicBool::new(false),
        faults: Mutex::new(BTreeMap::new()),
        broken: AtomicU64::new(0),
    });
    let mut nodes = Nodes {
        procs: (0..NODES).map(|_| None).collect(),
        launch,
        disks,
    };
    let t0 = Instant::now();
    nodes.start(0, &cluster).await?;
    let (a, b) = tokio::join!(nodes.launch[1].start(), nodes.launch[2].start());
    for (i, p) in [(1, a?), (2, b?)] {
        cluster.addrs.lock().unwrap()[i] = Some(p.addr);
        nodes.procs[i] = Some(p);
    }

    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, seed, cluster.clone())))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let until = Instant::now() + Duration::from_secs(secs);
    let started = t0.elapsed();
    // The clocks jump on a schedule of their own.
    let mut clock_rng = StdRng::seed_from_u64(seed ^ 0xc10c);
    let jumps = async {
        match &mut clocks {
            Some(c) => c.jump(&mut clock_rng, &cluster, until).await,
            None => Ok(()),
        }
    };
    let (run, jumps) = tokio::join!(faults(&mut rng, &mut nodes, &cuts, &cluster, until), jumps);
    cluster.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    eprintln!(
        "nodes started in {:.1} s; writes ended at {:.1} s",
        started.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let disk_fulls = run.with_context(|| logs(&nodes.running()))?;
    jumps?;

    // Heal everything; every node runs.
    if let Cuts::Relays(links) = &cuts {
        links.heal();
    }
    for i in 0..NODES {
        if nodes.procs[i].is_none() {
            nodes.start(i, &cluster).await?;
        }
    }
    let healed = Instant::now();
    let final_dump = converged(&nodes)
        .await
        .with_context(|| logs(&nodes.running()))?;
    let h = std::mem::take(&mut *cluster.history.lock().unwrap());
    let current = check(&final_dump, &h).with_context(|| logs(&nodes.running()))?;
    let faults = cluster.faults.lock().unwrap().clone();
    let how = match &cuts {
        Cuts::Relays(links) => {
            let (severed, refused) = links.severed();
            format!("the relays' cuts closed {severed} connections and refused {refused}")
        }
        Cuts::Netns(_) => format!(
            "the kernel's cuts broke {} MQTT client links",
            cluster.broken.load(Ordering::Relaxed)
        ),
    };
    eprintln!(
        "history (seed {seed}, {secs} s of faults): {} acknowledged writes checked ({current} still \
         current, the rest superseded), {} without a reply, {} refused on a full disk, {} faults \
         {faults:?}; converged {:.1} s after healing; {:.1} s in all; {how}",
        h.acks.len(),
        h.unknown,
        h.refused,
        faults.values().sum::<u64>(),
        healed.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64(),
    );
    if !disk_fulls.is_empty() {
        let slowest = disk_fulls
            .iter()
            .map(|d| d.resumed)
            .max()
            .unwrap_or_default();
        eprintln!(
            "full disks: {} times; writes refused meanwhile: {:?}; each node took writes again \
             without a restart, at most {:.1} s after space was freed",
            disk_fulls.len(),
            disk_fulls.iter().map(|d| d.refused).collect::<Vec<_>>(),
            slowest.as_secs_f64()
        );
    }
    ensure!(
        disk_fulls.iter().all(|d| d.refused > 0),
        "a full disk refused no write"
    );
    ensure!(!h.acks.is_empty(), "no write was acknowledged");
    ensure!(
        faults.values().sum::<u64>() > 0,
        "no fault was injected: the run was too short"
    );
    let n_cuts =
        faults.get(FAULTS[2]).copied().unwrap_or(0) + faults.get(FAULTS[3]).copied().unwrap_or(0);
    let cut_links = match &cuts {
        Cuts::Relays(links) => links.severed().0,
        Cuts::Netns(_) => cluster.broken.load(Ordering::Relaxed),
    };
    ensure!(
        n_cuts == 0 || cut_links > 0,
        "{n_cuts} link cuts closed no connection: they do not reach the links"
    );

    // The files the crashes left, read offline as `distkv-replay audit`
    // reads them: no damage, no tick missing, no duplicate, no impossible
    // chain. (Conflicts — concurrent writes to a hot key, one resolved
    // over the other by the rule — are what the clients did.)
    for i in 0..NODES {
        nodes.stop(i, &cluster, NodeProc::terminate).await?;
    }
    let dirs: Vec<_> = nodes
        .launch
        .iter()
        .filter_map(|l| l.data_dir.clone())
        .collect();
    if let Some(c) = &clocks {
        let (before, after) = stamps_outside(&dirs, run_from_ms, distkv_node::server::now_ms())?;
        eprintln!(
            "clock jumps: {} forwards, {} back, offsets from {:+} s to {:+} s; the logs hold \
             {after} records stamped after the run and {before} before it",
            c.forward, c.back, c.range.0, c.range.1
        );
        ensure!(
            (c.range.1 <= 0 || after > 0) && (c.range.0 >= 0 || before > 0),
            "the clock jumps did not reach the nodes: no record stamped outside the run"
        );
    }
    let report = distkv_replay::audit::audit(&dirs, true)?;
    let (conflicts, bad): (Vec<_>, Vec<_>) =
        report.problems.iter().partition(|p| p.kind() == "conflict");
    ensure!(
        bad.is_empty(),
        "audit of the data directories: {} problems, e.g.:\n{}",
        bad.len(),
        bad.iter()
            .take(10)
            .map(|p| p.to_text())
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "audit of the three data directories: {} events, no damage, nothing missing, {} \
         conflicts resolved by the rule",
        report.stats.events,
        conflicts.len()
    );
    Ok(())
}
