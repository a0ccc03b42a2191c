//! Real `distkv server` processes for the durability tests: start one on a
//! data directory, wait until it serves, kill it (`SIGKILL`) or stop it
//! (`SIGTERM`), start it again.
//!
//! **Which binary.** The `distkv` binary belongs to `distkv-tools`, a
//! binary-only package, so this crate can neither depend on it nor use
//! `env!("CARGO_BIN_EXE_distkv")` (Cargo sets that only for the package's
//! own tests; artifact dependencies are unstable). The simplest robust way
//! is to ask Cargo: [`distkv_bin`] runs `$CARGO build -p distkv-tools --bin
//! distkv` once per test binary, into the target directory and profile this
//! test binary was built in (found from its own path), and uses the result.
//! That is a no-op when the binary is current and never tests a stale one.
//! `DISTKV_BIN=/path/to/distkv` skips the build (e.g. to test an installed
//! binary). [`replay_bin`] does the same for `distkv-replay`
//! (`DISTKV_REPLAY_BIN`).
//!
//! **Ports.** The server takes `--port`; we reserve a free one by binding
//! `127.0.0.1:0`, drop it and pass the number. Another process can take the
//! port in between: the server then exits with "cannot listen", and we try
//! again with a new port. The embedded MQTT broker gets `--bus-port 0`
//! (any free port) unless the launch chose one with [`Launch::with_bus`]
//! (other nodes' `--peer` need it); a chosen bus port is kept, so its being
//! taken fails the start — never by another node of the same test binary:
//! [`free_port_on`] hands out each number once. A server we reached must greet with our node
//! name, and every test uses its own name, so a test never talks to another
//! test's node.
//!
//! **Waiting.** Readiness is polled (TCP connect plus greeting) with a
//! deadline; nothing sleeps to wait for a condition.
//!
//! Every node's stderr goes to a file next to its data; failures quote its
//! tail.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use distkv_model::{Path as KvPath, Value};
use distkv_node::client::{Client, ConnectOptions, StreamItem, TreeOptions};
use distkv_node::node::NodeBuilder;
use distkv_node::server;
use tokio_util::sync::CancellationToken;

/// Longest a node may take to start serving (a debug build recovering a
/// small directory needs well under a second).
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// Longest a node may take to exit after `SIGTERM`.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `distkv` binary, built if needed (see the module docs).
pub fn distkv_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        build_bin("distkv-tools", "distkv", "DISTKV_BIN").map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!("{e}"))
}

/// The `distkv-replay` binary, built if needed like [`distkv_bin`]
/// (`DISTKV_REPLAY_BIN` skips the build).
pub fn replay_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        build_bin("distkv-replay", "distkv-replay", "DISTKV_REPLAY_BIN")
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(|e| anyhow!("{e}"))
}

/// Builds binary `bin` of `package` (or takes it from `$env`).
fn build_bin(package: &str, bin: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    // <target>/<profile dir>/deps/<this test binary>
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary outside a Cargo target directory")?
        .to_path_buf();
    let target = profile_dir
        .parent()
        .context("test binary outside a Cargo target directory")?;
    let profile: Vec<OsString> = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => vec![],
        Some("release") => vec!["--release".into()],
        Some(other) => vec!["--profile".into(), other.into()],
        None => bail!("odd target directory {}", profile_dir.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--target-dir")
        .arg(target)
        .args(profile)
        .status()
        .with_context(|| format!("running cargo build for the {bin} binary"))?;
    ensure!(status.success(), "cargo build of the {bin} binary failed");
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    ensure!(path.is_file(), "{} was not built", path.display());
    Ok(path)
}

/// A free TCP port of 127.0.0.1 (free when this returns; see the module
/// docs for the race).
pub fn free_port() -> Result<u16> {
    free_port_on(LOOPBACK)
}

/// A free TCP port of the address `ip` (e.g. `::1`), never one this test
/// binary handed out before: a port reserved for one node (a bus port
/// kept for its peers) is released until that node starts, and the system
/// may give the same number to the next probe, for another node.
pub fn free_port_on(ip: &str) -> Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let ip: std::net::IpAddr = ip
        .parse()
        .with_context(|| format!("not an address: {ip}"))?;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind((ip, 0))?.local_addr()?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    bail!("no free port on {ip} that this test binary has not handed out already")
}

/// Where nodes listen unless a launch says otherwise.
const LOOPBACK: &str = "127.0.0.1";

/// How to start a node.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Node name (unique per test).
    pub name: String,
    /// Data directory; `None` runs with `--no-data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--fsync` policy.
    pub fsync: Option<&'static str>,
    /// Configuration overrides (`-C key=value`).
    pub conf: Vec<String>,
    /// Files to load (`-l`).
    pub load: Vec<PathBuf>,
    /// Where stderr files go.
    pub log_dir: PathBuf,
    /// Port of the node's embedded MQTT broker (`--bus-port`); every start
    /// of this launch uses the same one, since peers point to it.
    pub bus_port: Option<u16>,
    /// Further command-line arguments of `server` (e.g. `--peer H:P`).
    pub args: Vec<String>,
    /// `RUST_LOG` for the node; by default `$DISTKV_TEST_RUST_LOG` (e.g.
    /// `distkv_node=debug`), else unset (the node's default level).
    pub rust_log: Option<String>,
    /// The address the node binds (`--bind`), an IP address: `127.0.0.1`
    /// unless [`Launch::bind`] chose another (e.g. `::1`).
    pub bind: String,
    /// Further environment variables of the process (e.g. a preloaded
    /// library that fakes its clock).
    pub env: Vec<(String, String)>,
    /// The network namespace the node runs in (`ip netns exec`), where it
    /// binds an address of its own; `None`: the test's.
    pub netns: Option<String>,
    /// The client port (`--port`): any free one unless set (a node in a
    /// namespace of its own can have a fixed one).
    pub port: Option<u16>,
}

impl Launch {
    /// A node `name` keeping its history in `dir/data`, logging into `dir`.
    pub fn new(name: &str, dir: &Path) -> Launch {
        Launch {
            name: name.to_string(),
            data_dir: Some(dir.join("data")),
            fsync: None,
            conf: Vec::new(),
            load: Vec::new(),
            log_dir: dir.to_path_buf(),
            bus_port: None,
            args: Vec::new(),
            rust_log: std::env::var("DISTKV_TEST_RUST_LOG").ok(),
            bind: LOOPBACK.to_string(),
            env: Vec::new(),
            netns: None,
            port: None,
        }
    }

    /// Runs the node in network namespace `ns` on its address `ip`, with
    /// client port `port` and bus port `bus_port` (the namespace's own).
    pub fn in_netns(mut self, ns: &str, ip: &str, port: u16, bus_port: u16) -> Launch {
        self.netns = Some(ns.to_string());
        self.bind = ip.to_string();
        self.port = Some(port);
        self.bus_port = Some(bus_port);
        self
    }

    /// Binds the node's ports on the IP address `ip` instead of 127.0.0.1
    /// (call before [`Launch::with_bus`]).
    pub fn bind(mut self, ip: &str) -> Launch {
        self.bind = ip.to_string();
        self
    }

    /// Where the node serves clients when it listens on `port`.
    fn client_addr(&self, port: u16) -> Result<SocketAddr> {
        let ip: std::net::IpAddr = self.bind.parse().context("the bind address")?;
        Ok(SocketAddr::from((ip, port)))
    }

    /// Gives the node an embedded broker on a free port (reserved now and
    /// kept for every later start of this launch).
    pub fn with_bus(mut self) -> Result<Launch> {
        self.bus_port = Some(free_port_on(&self.bind)?);
        Ok(self)
    }

    /// `HOST:PORT` of this node's embedded broker, for other nodes' `--peer`
    /// (`[::1]:PORT` for IPv6).
    pub fn bus_addr(&self) -> String {
        let port = self
            .bus_port
            .expect("bus_addr of a launch without with_bus");
        distkv_node::addr::join(&self.bind, port)
    }

    /// Adds a command-line argument of `server`.
    pub fn arg(mut self, arg: impl Into<String>) -> Launch {
        self.args.push(arg.into());
        self
    }

    /// Adds `--peer` pointing to `other`'s embedded broker.
    pub fn peer(self, other: &Launch) -> Launch {
        let addr = other.bus_addr();
        self.arg("--peer").arg(addr)
    }

    /// Sets the environment variable `key` of the node's process.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets `RUST_LOG` for the node (`None`: unset).
    pub fn rust_log(mut self, filter: Option<&str>) -> Launch {
        self.rust_log = filter.map(str::to_string);
        self
    }

    /// Sets the fsync policy.
    pub fn fsync(mut self, policy: &'static str) -> Launch {
        self.fsync = Some(policy);
        self
    }

    /// Adds a `-C key=value` override.
    pub fn conf(mut self, kv: &str) -> Launch {
        self.conf.push(kv.to_string());
        self
    }

    /// Runs without a data directory.
    pub fn no_data_dir(mut self) -> Launch {
        self.data_dir = None;
        self
    }

    /// Adds a file to load before serving.
    pub fn load(mut self, file: &Path) -> Launch {
        self.load.push(file.to_path_buf());
        self
    }

    /// Starts the node and waits until it serves.
    pub async fn start(&self) -> Result<NodeProc> {
        self.start_until(Until::Serving).await
    }

    /// Starts the node and returns as soon as its client port accepts
    /// connections: before recovery, while it is still starting.
    pub async fn start_bound(&self) -> Result<NodeProc> {
        self.start_until(Until::Bound).await
    }

    async fn start_until(&self, until: Until) -> Result<NodeProc> {
        let bin = distkv_bin()?;
        let mut last_err = None;
        for _ in 0..5 {
            let port = match self.port {
                Some(p) => p,
                None => free_port_on(&self.bind)?,
            };
            match self.try_start(&bin, port, until).await? {
                Ok(node) => return Ok(node),
                // Somebody took the port between our probe and the bind.
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start {}", self.name)))
    }

    /// `Ok(Err(_))`: the port was taken, try another.
    async fn try_start(&self, bin: &Path, port: u16, until: Until) -> Result<Result<NodeProc>> {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let stderr_path = self.log_dir.join(format!("{}.{n}.stderr", self.name));
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        // In a namespace: `ip netns exec` execs `env`, which sets the
        // node's variables (a preloaded library only for the node, not
        // for `ip`) and execs the node: the child's pid is the node's.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "env"]);
                c.args(self.env.iter().map(|(k, v)| format!("{k}={v}")));
                c.arg(bin);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.envs(self.env.iter().map(|(k, v)| (k, v)));
                c
            }
        };
        cmd.args(["-c", "/dev/null"]);
        for kv in &self.conf {
            cmd.arg("-C").arg(kv);
        }
        cmd.args(["server", &self.name, "--bind", &self.bind, "--port"])
            .arg(port.to_string());
        match &self.data_dir {
            Some(d) => {
                cmd.arg("--data-dir").arg(d);
            }
            None => {
                cmd.arg("--no-data-dir");
            }
        }
        if let Some(f) = self.fsync {
            cmd.args(["--fsync", f]);
        }
        for f in &self.load {
            cmd.arg("-l").arg(f);
        }
        // Without a chosen bus port, any free one: no other node connects
        // to it, and the default (27587) would collide between tests.
        if !self
            .args
            .iter()
            .any(|a| a == "--mqtt" || a.starts_with("--mqtt="))
        {
            cmd.arg("--bus-port")
                .arg(self.bus_port.unwrap_or(0).to_string());
        }
        cmd.args(&self.args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        match &self.rust_log {
            Some(f) => cmd.env("RUST_LOG", f),
            None => cmd.env_remove("RUST_LOG"),
        };
        let child = cmd.spawn().with_context(|| format!("starting {bin:?}"))?;
        let mut node = NodeProc {
            child: Some(child),
            addr: self.client_addr(port)?,
            name: self.name.clone(),
            stderr_path,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = node.try_wait()? {
                let log = node.stderr_tail();
                let addr = distkv_node::addr::join(&self.bind, port);
                if log.contains(&format!("cannot listen on {addr}")) {
                    return Ok(Err(anyhow!("port {port} taken: {log}")));
                }
                bail!(
                    "node {} exited with {status} while starting:\n{log}",
                    self.name
                );
            }
            if until == Until::Bound {
                if std::net::TcpStream::connect(node.addr).is_ok() {
                    return Ok(Ok(node));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            if let Ok(c) = node.connect().await {
                if c.greeting().node == self.name {
                    return Ok(Ok(node));
                }
                // Another test's node took our port; ours cannot bind.
                drop(node);
                return Ok(Err(anyhow!("port {port} answered as another node")));
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} did not serve within {START_DEADLINE:?}:\n{}",
                    self.name,
                    node.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How far a start goes before `Launch` hands the process over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// The client port accepts connections (the node may still recover).
    Bound,
    /// The node greets clients under its own name.
    Serving,
}

/// A running `distkv server` process. Dropping it kills the process.
#[derive(Debug)]
pub struct NodeProc {
    child: Option<Child>,
    /// Where it serves.
    pub addr: SocketAddr,
    /// Its node name.
    pub name: String,
    stderr_path: PathBuf,
}

impl NodeProc {
    /// A client connection without flow control.
    pub async fn connect(&self) -> Result<Client> {
        let opts = ConnectOptions {
            qlen: 0,
            timeout: Duration::from_secs(5),
            ..ConnectOptions::default()
        };
        Ok(Client::connect(self.addr, opts).await?)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("already stopped"),
        }
    }

    /// The last few KiB of the node's stderr.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr_path, 8 << 10)
    }

    /// The whole stderr of the node.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `kill -9`: the process dies at once, whatever it was doing.
    pub fn kill9(mut self) -> Result<ExitStatus> {
        let mut c = self.child.take().context("already stopped")?;
        c.kill()?;
        Ok(c.wait()?)
    }

    /// `SIGTERM`, then waits (with a deadline) for the process to exit; a
    /// clean stop must exit with status 0.
    pub async fn terminate(self) -> Result<()> {
        let name = self.name.clone();
        let (status, stderr) = self.terminate_status().await?;
        ensure!(
            status.success(),
            "node {name} exited with {status} after SIGTERM:\n{}",
            tail_of(&stderr, 4000)
        );
        Ok(())
    }

    /// `SIGTERM`, then waits (with a deadline) for the process to exit;
    /// returns how it exited and its whole stderr.
    pub async fn terminate_status(mut self) -> Result<(ExitStatus, String)> {
        let pid = self.pid();
        signal(pid, libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = self.try_wait()? {
                self.child = None;
                return Ok((status, self.stderr()));
            }
            if Instant::now() > deadline {
                bail!(
                    "node {} still running {STOP_DEADLINE:?} after SIGTERM:\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    ensure!(pid > 0, "no process to signal");
    // SAFETY: kill(2) only takes two integers; the pid is our own child's,
    // which has not been reaped yet (so it cannot have been reused).
    let r = unsafe { libc::kill(pid, sig) };
    ensure!(
        r == 0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// The last `max` bytes (about) of `text`.
fn tail_of(text: &str, max: usize) -> &str {
    let mut at = text.len().saturating_sub(max);
    while !text.is_char_boundary(at) {
        at += 1;
    }
    &text[at..]
}

/// The last `max` bytes of the file at `path` (empty if unreadable).
pub fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

/// Every entry below the root as `path → {value?, chain, tock}` (chains in
/// full), keyed by the path's text so that the order of the walk does not
/// matter. `empty` also lists entries without a value but with a chain
/// (tombstones).
pub async fn dump(c: &Client, empty: bool) -> Result<std::collections::BTreeMap<String, Value>> {
    let opts = TreeOptions {
        nchain: 1_000_000,
        empty,
        ..TreeOptions::default()
    };
    let mut s = c.get_tree(&KvPath::root(), &opts).await?;
    let mut out = std::collections::BTreeMap::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .context("get_tree stalled")??
    {
        let StreamItem::Data(Value::Map(m)) = item else {
            continue;
        };
        let path = m
            .iter()
            .find(|(k, _)| k.as_str() == Some("path"))
            .map(|(_, v)| v.clone())
            .context("entry without a path")?;
        let Value::Path(path) = path else {
            bail!("path is not a path: {path}");
        };
        let rest: Vec<(Value, Value)> = m
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), Some("path" | "seq" | "depth" | "wseq")))
            .collect();
        // An entry with neither value nor chain holds nothing (e.g. one a
        // `watch` on a new path created); no file keeps it.
        if !rest
            .iter()
            .any(|(k, _)| matches!(k.as_str(), Some("value" | "chain")))
        {
            continue;
        }
        out.insert(path.to_string(), Value::Map(rest));
    }
    Ok(out)
}

/// Fails naming the first differences of two dumps.
pub fn same_dump(
    what: &str,
    want: &std::collections::BTreeMap<String, Value>,
    got: &std::collections::BTreeMap<String, Value>,
) -> Result<()> {
    let mut diffs = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {k}: {v}")),
            Some(g) if !same_entry(g, v) => diffs.push(format!("{k}: want {v}, got {g}")),
            Some(_) => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            diffs.push(format!("extra {k}: {v}"));
        }
    }
    ensure!(
        diffs.is_empty(),
        "{what}: {} entries differ (of {} / {}):\n{}",
        diffs.len(),
        want.len(),
        got.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

/// Two dumped entries are the same: the same fields with equal values, in
/// any order.
fn same_entry(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_map(), b.as_map()) else {
        return a == b;
    };
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.iter().any(|(k2, v2)| k2 == k && v2 == v))
}

/// The head tick of a reply's or entry's `chain`.
pub fn chain_tick(m: &Value) -> Result<u64> {
    m.get("chain")
        .and_then(|c| c.get("tick"))
        .and_then(Value::as_u64)
        .with_context(|| format!("no chain tick in {m}"))
}

/// A Python interpreter with DistKV 0.63.3 (its `distkv` script lives next
/// to it): `$DISTKV_PYTHON`, or the venv `target/py-distkv-0.63.3`, created
/// from the pinned requirements the first time (the same lookup as
/// `python_client.rs`).
pub fn python() -> Result<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| find_python().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("{e}"))
}

fn find_python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DISTKV_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = workspace().join("target/py-distkv-0.63.3");
    let py = venv.join("bin/python");
    let ready = || {
        Command::new(&py)
            .args(["-c", "import distkv, moat.util"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return Ok(py);
    }
    let reqs = workspace().join("tests/python/requirements.txt");
    ensure!(
        reqs.is_file(),
        "{} not found: cannot install the Python reference client",
        reqs.display()
    );
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("python3 -m venv")?;
    ensure!(st.success(), "creating the venv failed");
    let st = Command::new(&py)
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(&reqs)
        .status()
        .context("pip install")?;
    ensure!(
        st.success() && ready(),
        "installing distkv 0.63.3 into {} failed",
        venv.display()
    );
    Ok(py)
}

/// Runs `tests/python/SCRIPT PORT` with the Python of DistKV 0.63.3 (and
/// the extra environment `env`) against the node `builder` makes, started
/// in this process with `Testing` at its root; its output is printed.
pub fn run_python_script(builder: NodeBuilder, script: &str, env: &[(&str, &Path)]) -> Result<()> {
    let py = python()?;
    let rt = tokio::runtime::Runtime::new()?;
    let shutdown = CancellationToken::new();
    let (port, served) = rt.block_on(async {
        let listener = server::bind("127.0.0.1", 0).await?;
        let node = builder
            .init(Some(Value::str("Testing")))
            .build(listener)
            .await?;
        let port = node.local_addr().port();
        let served = tokio::spawn(node.run(shutdown.clone()));
        anyhow::Ok((port, served))
    })?;
    let out = Command::new(&py)
        .arg(workspace().join("tests/python").join(script))
        .arg(port.to_string())
        .env("PYTHONWARNINGS", "ignore")
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("running {script}"))?;
    shutdown.cancel();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await })???;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{script} failed: {}", out.status);
    }
    Ok(())
}

/// The stderr tails of `nodes`, each under its name, for failure messages.
pub fn logs(nodes: &[&NodeProc]) -> String {
    nodes
        .iter()
        .map(|n| {
            format!(
                "----- stderr of {} (pid {}) -----\n{}",
                n.name,
                n.pid(),
                n.stderr_tail()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
