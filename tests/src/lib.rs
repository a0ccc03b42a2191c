//! Shared helpers for the integration tests: a real node listening on
//! `127.0.0.1:0`, raw protocol connections whose every wait has a deadline,
//! message builders, an independent path lengthener and a seeded PRNG.
//!
//! Every helper that waits does so with a deadline ([`DEADLINE`]) so a hang
//! fails the test instead of blocking the run; "nothing arrives" is checked
//! with the short [`SILENCE`] window only.
//!
//! Faults for real processes have modules of their own: [`tmpfs`] (a small
//! file system to fill up), [`faketime`] (wall-clock jumps) and [`netns`]
//! (hosts in network namespaces, with real partitions).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use distkv_model::{Path, Value};
use distkv_node::client::{Client, ConnectOptions, RawConn};
use distkv_node::cluster::actor::ActorConfig;
use distkv_node::cluster::core::ClusterConfig;
use distkv_node::cluster::gate::Gate;
use distkv_node::cluster::mqtt::{MqttBus, MqttConfig, MqttMode};
use distkv_node::login::{password_digest, KeyExchange, SessionKey};
use distkv_node::node::{BusSpec, NodeBuilder, NodeError};
use distkv_node::server::{self, Server, ServerOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use distkv_model::path;

pub mod faketime;
pub mod netns;
pub mod tmpfs;

/// Longest any single expected event may take.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// How long we listen when checking that nothing arrives.
pub const SILENCE: Duration = Duration::from_millis(250);
/// The name of the node the tests start.
pub const NODE: &str = "n1";

/// Awaits `fut`, failing with `what` after [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| anyhow!("timed out after {DEADLINE:?}: {what}"))
}

/// A node serving clients on an ephemeral port of 127.0.0.1.
pub struct TestNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The server itself.
    pub server: Arc<Server>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), NodeError>>>,
}

impl TestNode {
    /// A ready node (tick 0, empty tree) with default options.
    pub async fn start() -> Result<TestNode> {
        TestNode::start_with(ServerOptions::default()).await
    }

    /// A ready node (tick 0, empty tree) with `opts`.
    pub async fn start_with(opts: ServerOptions) -> Result<TestNode> {
        TestNode::build(NodeBuilder::new(NODE).options(opts)).await
    }

    /// The node `builder` describes (e.g. with a data directory, or files
    /// to load).
    pub async fn build(builder: NodeBuilder) -> Result<TestNode> {
        let listener = server::bind("127.0.0.1", 0).await?;
        let node = builder.build(listener).await?;
        let (server, addr) = (node.server().clone(), node.local_addr());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(node.run(shutdown.clone()));
        Ok(TestNode {
            addr,
            server,
            shutdown,
            handle: Some(handle),
        })
    }

    /// A raw connection that has read the greeting.
    pub async fn raw(&self) -> Result<Raw> {
        Raw::connect(self.addr).await
    }

    /// The official client, without flow control unless asked for.
    pub async fn client(&self) -> Result<Client> {
        let opts = ConnectOptions {
            qlen: 0,
            ..ConnectOptions::default()
        };
        Ok(Client::connect(self.addr, opts).await?)
    }

    /// Cancels the shutdown token and waits (with a deadline) for `serve`
    /// to return.
    pub async fn shutdown(mut self) -> Result<()> {
        self.shutdown.cancel();
        let handle = self.handle.take().context("already shut down")?;
        within("serve() to return after shutdown", handle).await???;
        Ok(())
    }

    /// Cancels the shutdown token without waiting.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Takes the handle of the task running the node (`serve`).
    pub fn take_handle(&mut self) -> Option<JoinHandle<Result<(), NodeError>>> {
        self.handle.take()
    }

    /// Sets values through a fresh connection: `(path, value)` pairs.
    pub async fn seed(&self, entries: &[(Path, Value)]) -> Result<()> {
        let mut c = self.raw().await?;
        for (p, v) in entries {
            let r = c
                .call(
                    "set_value",
                    vec![("path", Value::Path(p.clone())), ("value", v.clone())],
                )
                .await?;
            ensure!(r.get("error").is_none(), "seeding {p:?} failed: {r}");
        }
        Ok(())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A node of an in-process cluster: a real server on `127.0.0.1:0` with
/// its embedded MQTT broker on loopback, the replication protocol with a
/// one-second cycle, and a [`Gate`] to cut it off the others.
pub struct ClusterNode {
    /// The server.
    pub server: Arc<Server>,
    /// Where it serves clients.
    pub addr: SocketAddr,
    /// Cuts the node off (a partition) and reconnects it.
    pub gate: Arc<Gate>,
    /// Its bus.
    pub mqtt: Arc<MqttBus>,
    stop: CancellationToken,
    running: Option<JoinHandle<Result<(), NodeError>>>,
}

impl ClusterNode {
    /// Starts a ready, empty node `name` whose bus connects to `peers`
    /// (`host:port` of other nodes' brokers).
    pub async fn start(name: &str, peers: Vec<String>) -> Result<ClusterNode> {
        ClusterNode::start_with(NodeBuilder::new(name), peers).await
    }

    /// As [`ClusterNode::start`], for a node the caller describes (e.g. one
    /// with a data directory, or one that joins): the test cluster's bus,
    /// protocol timing and seed are added here. Clients are served even
    /// before the node is ready.
    pub async fn start_with(builder: NodeBuilder, peers: Vec<String>) -> Result<ClusterNode> {
        let stop = CancellationToken::new();
        let name = builder.name().to_string();
        let listener = server::bind("127.0.0.1", 0).await?;
        let mqtt = MqttBus::start(MqttConfig::new(
            &name,
            MqttMode::Mesh {
                listen: ("127.0.0.1".into(), 0),
                advertise: None,
                peers,
            },
        ))
        .await?;
        let gate = Gate::new(mqtt.clone());
        let seed = name
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
        let node = builder
            .bus(BusSpec::Given(gate.clone()))
            .cluster(quick_cluster())
            .seed(seed)
            .serve_before_ready(true)
            .build(listener)
            .await?;
        let server = node.server().clone();
        let addr = node.local_addr();
        let running = tokio::spawn(node.run(stop.clone()));
        Ok(ClusterNode {
            server,
            addr,
            gate,
            mqtt,
            stop,
            running: Some(running),
        })
    }

    /// The address of its broker, for other nodes' `peers`.
    pub fn broker(&self) -> Result<String> {
        Ok(self.mqtt.broker_addr().context("no broker")?.to_string())
    }

    /// A client connection.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(self.addr, ConnectOptions::default()).await?)
    }

    /// Stops the node and waits until it has stopped serving and flushed
    /// its log.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        let running = self.running.take().context("stopped twice")?;
        within("the node to stop", running).await???;
        Ok(())
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop.cancel();
        self.mqtt.shutdown();
    }
}

/// Writes `ping` on `a` (through `admin`, a connection to it) until `b`
/// has it: the bus between the two is up, and both are ready. Messages
/// sent before the mesh is up are lost, hence the repeats.
pub async fn await_link(admin: &mut Raw, b: &ClusterNode) -> Result<()> {
    let ping = path!["ping"];
    let t0 = std::time::Instant::now();
    let mut i = 0i64;
    while b
        .server
        .state()
        .entry(&ping)
        .and_then(|e| e.data())
        .is_none()
    {
        ensure!(t0.elapsed() < 4 * DEADLINE, "the nodes did not connect");
        i += 1;
        admin
            .call_ok(
                "set_value",
                vec![
                    ("path", Value::Path(ping.clone())),
                    ("value", Value::Int(i)),
                ],
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Polls `f` every 20 ms until it holds, failing after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let t0 = std::time::Instant::now();
    while !f() {
        ensure!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A bare protocol connection: the test sees every message.
pub struct Raw {
    conn: RawConn,
    /// The server's greeting.
    pub greeting: Value,
    next_seq: u64,
    /// The Diffie-Hellman session key, once agreed.
    key: Option<SessionKey>,
}

impl Raw {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> Result<Raw> {
        let mut conn = within("connect", RawConn::connect(addr)).await??;
        let greeting = within("greeting", conn.recv())
            .await??
            .context("closed before the greeting")?;
        Ok(Raw {
            conn,
            greeting,
            next_seq: 1,
            key: None,
        })
    }

    /// A fresh `seq`, higher than every one handed out before.
    pub fn seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &Value) -> Result<()> {
        within("send", self.conn.send(msg)).await??;
        Ok(())
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        within("send bytes", self.conn.send_bytes(bytes)).await??;
        Ok(())
    }

    /// Closes our sending direction (the server sees end of stream).
    pub async fn shutdown_write(&mut self) -> Result<()> {
        within("shutdown", self.conn.shutdown()).await??;
        Ok(())
    }

    /// The next message; fails if none arrives within [`DEADLINE`] or the
    /// connection ends.
    pub async fn recv(&mut self) -> Result<Value> {
        within("a message from the server", self.conn.recv())
            .await??
            .context("the server closed the connection")
    }

    /// The next message, or `None` if the server closed the connection
    /// (cleanly or by reset).
    pub async fn recv_or_closed(&mut self) -> Result<Option<Value>> {
        match within("a message or close", self.conn.recv()).await? {
            Ok(m) => Ok(m),
            Err(distkv_node::client::ClientError::Wire(distkv_node::wire::WireError::Io(_))) => {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Fails unless the server closes the connection without sending
    /// anything more.
    pub async fn expect_closed(&mut self) -> Result<()> {
        match self.recv_or_closed().await? {
            None => Ok(()),
            Some(m) => bail!("expected the connection to close, got {m}"),
        }
    }

    /// Fails if a message arrives within [`SILENCE`].
    pub async fn expect_silence(&mut self) -> Result<()> {
        match tokio::time::timeout(SILENCE, self.conn.recv()).await {
            Err(_) => Ok(()),
            Ok(Ok(Some(m))) => bail!("expected silence, got {m}"),
            Ok(Ok(None)) => bail!("expected silence, the connection closed"),
            Ok(Err(e)) => bail!("expected silence, got error {e}"),
        }
    }

    /// Sends `{seq, action, fields…}` with a fresh seq; returns the seq.
    pub async fn request(&mut self, action: &str, fields: Vec<(&str, Value)>) -> Result<u64> {
        let seq = self.seq();
        let mut m = vec![("seq", Value::uint(seq)), ("action", Value::str(action))];
        m.extend(fields);
        self.send(&Value::map(m)).await?;
        Ok(seq)
    }

    /// [`Raw::request`], then the next message, which must carry that seq.
    pub async fn call(&mut self, action: &str, fields: Vec<(&str, Value)>) -> Result<Value> {
        let seq = self.request(action, fields).await?;
        let reply = self.recv().await?;
        ensure!(
            seq_of(&reply) == Some(seq),
            "reply to {action} (seq {seq}) has the wrong seq: {reply}"
        );
        Ok(reply)
    }

    /// [`Raw::call`] that fails on an `error` reply.
    pub async fn call_ok(&mut self, action: &str, fields: Vec<(&str, Value)>) -> Result<Value> {
        let reply = self.call(action, fields).await?;
        ensure!(reply.get("error").is_none(), "{action} failed: {reply}");
        Ok(reply)
    }

    /// Reads the messages of stream `seq` up to and including its
    /// `state: "end"`; every message must carry that seq.
    pub async fn recv_stream(&mut self, seq: u64) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await?;
            ensure!(seq_of(&m) == Some(seq), "message of another seq: {m}");
            let end = state_of(&m) == Some("end");
            out.push(m);
            if end {
                return Ok(out);
            }
        }
    }

    /// The connection's session key: runs `diffie_hellman` (as DistKV's
    /// client does, length 1024) the first time.
    pub async fn session_key(&mut self) -> Result<SessionKey> {
        if let Some(k) = &self.key {
            return Ok(k.clone());
        }
        let kx = KeyExchange::new(1024)?;
        let r = self
            .call_ok(
                "diffie_hellman",
                vec![
                    ("pubkey", Value::Bin(kx.public_key().into())),
                    ("length", Value::Int(1024)),
                ],
            )
            .await?;
        let Some(Value::Bin(theirs)) = r.get("pubkey") else {
            bail!("no pubkey: {r}");
        };
        let key = kx.session_key(theirs)?;
        self.key = Some(key.clone());
        Ok(key)
    }

    /// `auth` as DistKV's client sends it; the reply's messages (one
    /// error, or the empty stream `start`, `end`).
    pub async fn auth(
        &mut self,
        typ: &str,
        ident: &str,
        extra: Vec<(&str, Value)>,
    ) -> Result<Vec<Value>> {
        let mut f = vec![
            ("typ", Value::str(typ)),
            ("ident", Value::str(ident)),
            ("iter", Value::Bool(false)),
        ];
        f.extend(extra);
        let seq = self.request("auth", f).await?;
        let first = self.recv().await?;
        ensure!(seq_of(&first) == Some(seq), "{first}");
        if first.get("error").is_some() {
            return Ok(vec![first]);
        }
        let mut all = vec![first];
        all.extend(self.recv_stream(seq).await?);
        Ok(all)
    }

    /// Logs in with the `password` method; fails on an error.
    pub async fn login_password(&mut self, name: &str, password: &str) -> Result<()> {
        let sealed = self.session_key().await?.seal(&password_digest(password))?;
        let msgs = self
            .auth(
                "password",
                name,
                vec![("password", Value::Bin(sealed.into()))],
            )
            .await?;
        ensure!(
            msgs.len() == 2 && msgs.iter().all(|m| m.get("error").is_none()),
            "login of {name} failed: {msgs:?}"
        );
        Ok(())
    }

    /// Creates (or replaces) the `password` user `name` (`auth_set`).
    pub async fn add_password_user(&mut self, name: &str, password: &str) -> Result<()> {
        let sealed = self.session_key().await?.seal(&password_digest(password))?;
        self.call_ok(
            "auth_set",
            vec![
                ("typ", Value::str("password")),
                ("kind", Value::str("user")),
                ("ident", Value::str(name)),
                ("password", Value::Bin(sealed.into())),
            ],
        )
        .await?;
        Ok(())
    }

    /// Checks the connection still answers (a `get_tock` round trip).
    pub async fn still_works(&mut self) -> Result<()> {
        let r = self.call_ok("get_tock", vec![]).await?;
        ensure!(r.get("tock").and_then(Value::as_u64).is_some(), "{r}");
        Ok(())
    }
}

/// A message's `seq`, if it has a non-negative integer one.
pub fn seq_of(m: &Value) -> Option<u64> {
    m.get("seq").and_then(Value::as_u64)
}

/// A message's `state`, if any.
pub fn state_of(m: &Value) -> Option<&str> {
    m.get("state").and_then(Value::as_str)
}

/// A message's `tock`.
pub fn tock_of(m: &Value) -> Result<u64> {
    m.get("tock")
        .and_then(Value::as_u64)
        .with_context(|| format!("no tock in {m}"))
}

/// A field of a map, or an error naming the message.
pub fn field<'a>(m: &'a Value, key: &str) -> Result<&'a Value> {
    m.get(key)
        .with_context(|| format!("no field {key:?} in {m}"))
}

/// The error text of a message, or an error if it has none.
pub fn error_text(m: &Value) -> Result<&str> {
    field(m, "error")?
        .as_str()
        .with_context(|| format!("error is not a string in {m}"))
}

/// The string keys of a map, sorted.
pub fn keys(m: &Value) -> Vec<String> {
    let mut k: Vec<String> = m
        .as_map()
        .unwrap_or(&[])
        .iter()
        .map(|(k, _)| k.as_str().map_or_else(|| format!("{k}"), str::to_string))
        .collect();
    k.sort();
    k
}

/// Fails unless `m` has exactly the keys `want` (in any order).
pub fn assert_keys(m: &Value, want: &[&str]) -> Result<()> {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    ensure!(
        keys(m) == want,
        "keys {:?} instead of {want:?} in {m}",
        keys(m)
    );
    Ok(())
}

/// A chain map as the server sends it: `{node, tick, prev}` links, the last
/// one with `prev: nil` when the chain really ends there.
pub fn chain(links: &[(&str, u64)], ends: bool) -> Value {
    let mut out: Option<Value> = None;
    for (node, tick) in links.iter().rev() {
        let mut m = vec![("node", Value::str(node)), ("tick", Value::uint(*tick))];
        match out.take() {
            Some(prev) => m.push(("prev", prev)),
            None if ends => m.push(("prev", Value::Nil)),
            None => {}
        }
        out = Some(Value::map(m));
    }
    out.unwrap_or(Value::Nil)
}

/// The tick of a chain's head.
pub fn head_tick(chain: &Value) -> Result<u64> {
    chain
        .get("tick")
        .and_then(Value::as_u64)
        .with_context(|| format!("no head tick in chain {chain}"))
}

/// The node's own tick as `get_state nodes` reports it.
pub async fn node_tick(c: &mut Raw) -> Result<u64> {
    let r = c
        .call_ok("get_state", vec![("nodes", Value::Bool(true))])
        .await?;
    field(field(&r, "nodes")?, NODE)?
        .as_u64()
        .with_context(|| format!("no tick for {NODE} in {r}"))
}

/// A path element list as a plain array value.
pub fn arr<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
    Value::Array(items.into_iter().map(Into::into).collect())
}

/// The elements of a path given as ext 3 or as an array.
pub fn path_elems(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Path(p) => Some(p.elements()),
        Value::Array(a) => Some(a),
        _ => None,
    }
}

/// Undoes the server's path shortening, independently of the client's
/// implementation: `full = prefix + last[..depth] + path`, with `last` the
/// previous message's path relative to `prefix`. Returns each data message's
/// full path, in order. Messages without `depth` are skipped.
pub fn lengthen(prefix: &[Value], msgs: &[Value]) -> Result<Vec<Vec<Value>>> {
    let mut last: Vec<Value> = Vec::new();
    let mut out = Vec::new();
    for m in msgs {
        let Some(depth) = m.get("depth") else {
            continue;
        };
        let depth = depth.as_u64().context("depth not an int")? as usize;
        let rest = path_elems(field(m, "path")?).context("path not a path")?;
        ensure!(depth <= last.len(), "depth {depth} beyond {last:?} in {m}");
        let mut rel = last[..depth].to_vec();
        rel.extend_from_slice(rest);
        let mut full = prefix.to_vec();
        full.extend_from_slice(&rel);
        out.push(full);
        last = rel;
    }
    Ok(out)
}

/// A small seeded PRNG (SplitMix64): reproducible garbage for robustness
/// tests without extra dependencies.
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A path as an ext 3 wire value.
pub fn p(path: Path) -> Value {
    Value::Path(path)
}

/// `{seq: 0, qlen: n}`: the client's hello.
pub fn hello(qlen: u64) -> Value {
    Value::map([("seq", Value::Int(0)), ("qlen", Value::uint(qlen))])
}

/// The lines a `tracing` subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
pub struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// The replication protocol with a fast election cycle (1 s, gap 0.2 s),
/// for tests.
pub fn quick_cluster() -> ClusterConfig {
    ClusterConfig {
        ping: ActorConfig {
            cycle: 1000,
            gap: 200,
            ..ActorConfig::main()
        },
        ..ClusterConfig::default()
    }
}
