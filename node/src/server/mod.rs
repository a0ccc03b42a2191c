//! The async shell: a TCP server speaking DistKV's client protocol.
//!
//! One [`Server`] holds the node's [`State`] behind a mutex (held only for
//! short, non-async critical sections) and a watch channel announcing the
//! event log's newest sequence number, on which watchers wait. [`serve`]
//! accepts connections — within the caps of [`admission`] (in all and per
//! client address; refused clients get an error message, the node's log a
//! line a second at most) — and runs each in its own task ([`conn`], which
//! also closes silent connections) until the shutdown token fires; then it
//! stops accepting, lets connections finish their current batch, and
//! returns once all are gone.

mod admission;
mod bus_msgs;
mod conn;
mod export;
mod handlers;
mod reply;
mod stream;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard};

use distkv_log::{LogLimits, Seq};
use distkv_model::codec::{self, Limits};
use distkv_model::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::bus::Bus;
use crate::cluster::msg::Topics;
use crate::config::{ConnectionLimits, ExportSettings, ServerSettings};
use crate::persist::durable::{with_reserved_ticks, Durability, Refusal, StateHost};
use crate::state::{State, StateError, Tock};

/// Why a local change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The state machine refused it.
    #[error(transparent)]
    State(#[from] StateError),
    /// The history cannot take it: it cannot be written now, or too much
    /// waits for the disk already.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl StateHost for Server {
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state())
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// The protocol version we announce: the DistKV release we are compatible
/// with.
pub const VERSION: [u64; 3] = [0, 63, 3];

/// Server-wide settings that the connection code needs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Flow-control window offered to clients (`server.buffer`).
    pub buffer: u64,
    /// Decoding limits for client messages.
    pub limits: Limits,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Per-address cap and timeouts of client connections.
    pub connections: ConnectionLimits,
    /// Where `save` and `log` write.
    pub export: ExportSettings,
    /// In-memory event log limits.
    pub log: LogLimits,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            buffer: 10,
            limits: Limits::default(),
            max_connections: 10_000,
            connections: ConnectionLimits::default(),
            export: ExportSettings::default(),
            log: LogLimits::default(),
        }
    }
}

impl From<&ServerSettings> for ServerOptions {
    fn from(s: &ServerSettings) -> ServerOptions {
        ServerOptions {
            buffer: s.buffer,
            limits: Limits {
                max_frame: s.max_frame,
                max_depth: s.max_depth,
                foreign_ext: false,
            },
            max_connections: s.max_connections,
            connections: s.connections.clone(),
            export: s.export.clone(),
            log: LogLimits {
                max_records: s.log_records,
                max_bytes: s.log_bytes,
            },
        }
    }
}

/// A running node: its state and what its connections share.
pub struct Server {
    name: String,
    state: Mutex<State>,
    tock: Arc<Tock>,
    changes: watch::Sender<Seq>,
    opts: ServerOptions,
    durability: OnceLock<Arc<Durability>>,
    logs: Mutex<Vec<export::LogExport>>,
    bus: OnceLock<(Arc<dyn Bus>, Topics)>,
    cluster_view: Mutex<Option<Value>>,
    /// The nodes running in the cluster now (heard recently), this one
    /// included once the cluster protocol runs.
    live_nodes: Mutex<Vec<distkv_model::NodeName>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A node named `name` with an empty tree and no files.
    pub fn new(name: &str, opts: ServerOptions) -> Arc<Server> {
        Server::with_state(State::new(name, opts.log), opts)
    }

    /// A node serving `state` (e.g. one recovered from its files).
    pub fn with_state(state: State, opts: ServerOptions) -> Arc<Server> {
        let name = state.me().to_string();
        let tock = state.tock().clone();
        let (changes, _) = watch::channel(state.log().next_seq());
        Arc::new(Server {
            name,
            state: Mutex::new(state),
            tock,
            changes,
            opts,
            durability: OnceLock::new(),
            logs: Mutex::new(Vec::new()),
            bus: OnceLock::new(),
            cluster_view: Mutex::new(None),
            live_nodes: Mutex::new(Vec::new()),
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Locks the state. Never hold the guard across an `.await`.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Advances and returns the tock.
    pub fn next_tock(&self) -> u64 {
        self.tock.next()
    }

    /// Connects the data directory's writer (once).
    pub fn attach_durability(&self, d: Arc<Durability>) {
        let _ = self.durability.set(d);
    }

    /// The data directory's writer, if the node has one.
    pub fn durability(&self) -> Option<&Arc<Durability>> {
        self.durability.get()
    }

    /// Connects the bus to other nodes (once); `msg_send`/`msg_monitor`
    /// use it.
    pub fn attach_bus(&self, bus: Arc<dyn Bus>, topics: Topics) {
        let _ = self.bus.set((bus, topics));
    }

    /// The bus to other nodes and the cluster's topics, if the node has one.
    pub fn bus(&self) -> Option<(&Arc<dyn Bus>, &Topics)> {
        self.bus.get().map(|(b, t)| (b, t))
    }

    /// The cluster protocol's view (peers, housekeeper), for `get_state`.
    pub fn cluster_view(&self) -> Option<Value> {
        self.cluster_view.lock().clone()
    }

    /// Publishes the cluster protocol's view and the nodes it hears.
    pub(crate) fn set_cluster_view(&self, v: Value, live: Vec<distkv_model::NodeName>) {
        *self.cluster_view.lock() = Some(v);
        *self.live_nodes.lock() = live;
    }

    /// Whether `node` runs in the cluster now: this node, or one heard
    /// recently.
    pub fn is_live(&self, node: &str) -> bool {
        node == self.name || self.live_nodes.lock().iter().any(|n| &**n == node)
    }

    /// Whether `st` may take more events, from any road (local changes,
    /// `update`, other nodes' events, a state transfer): not while the
    /// history cannot be written, nor while too much waits for the disk.
    /// Memory stays bounded so; events of other nodes refused here are
    /// asked for again later (their ticks are missing).
    pub fn admits(&self, st: &State) -> Result<(), Refusal> {
        match self.durability() {
            Some(d) => d.admits(st.log().pinned()),
            None => Ok(()),
        }
    }

    /// Runs a local change: refused unless [`Server::admits`]; raises the
    /// durable tick reservation when needed.
    pub(crate) fn change<T>(
        &self,
        st: &mut State,
        f: impl FnMut(&mut State) -> Result<T, StateError>,
    ) -> Result<T, ChangeError> {
        self.admits(st)?;
        let d = self.durability().map(|d| &**d);
        match with_reserved_ticks(d, st, f) {
            // The meta file could not take the new reservation (the
            // writer's log).
            Err(StateError::TickNotReserved { next }) if d.is_some() => {
                Err(ChangeError::Refused(Refusal::Storage(format!(
                    "tick {next} cannot be reserved in the node's meta file"
                ))))
            }
            r => r.map_err(ChangeError::State),
        }
    }

    /// Tells watchers and the file writer that the log grew. Call after
    /// releasing the lock.
    pub(crate) fn announce(&self, next_seq: Seq) {
        if let Some(d) = self.durability() {
            d.wake();
        }
        self.changes.send_if_modified(|s| {
            if *s < next_seq {
                *s = next_seq;
                true
            } else {
                false
            }
        });
    }

    /// A receiver that changes whenever the event log grows.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Seq> {
        self.changes.subscribe()
    }

    /// Makes the node ready to serve (own tick 0 if it has none).
    pub fn make_ready(&self) {
        self.state().make_ready();
    }

    /// Sets the root value as the first change of a new cluster (`-I`).
    pub fn init(&self, value: Value) -> Result<(), ChangeError> {
        let next = {
            let mut st = self.state();
            st.make_ready();
            self.change(&mut st, |st| st.local_change(&[], Some(value.clone())))?;
            st.log().next_seq()
        };
        self.announce(next);
        Ok(())
    }

    /// Loads a snapshot or DistKV-py file into the state (before serving).
    pub fn load_file(
        &self,
        file: &std::path::Path,
    ) -> Result<crate::persist::load::LoadReport, crate::persist::load::LoadError> {
        let (report, next) = {
            let mut st = self.state();
            let r = crate::persist::load::load_file(&mut st, file)?;
            (r, st.log().next_seq())
        };
        self.announce(next);
        Ok(report)
    }

    /// The server options.
    pub fn options(&self) -> &ServerOptions {
        &self.opts
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Binds `host` (name or address; IPv6 with or without brackets) and
/// `port` for [`serve`]. `::` is dual stack: it accepts IPv4 clients too,
/// whatever the system's default for IPv6 sockets.
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let host = crate::addr::unbracket(host.trim());
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => bind_dual_stack(port),
        _ => TcpListener::bind((host, port)).await,
    }
}

/// A listener on `[::]:port` with IPV6_V6ONLY off.
fn bind_dual_stack(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    let addr = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Serves clients on `listener` until `shutdown` is cancelled, then waits
/// for every connection task to end.
pub async fn serve(
    server: Arc<Server>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let admission =
        admission::Admission::new(server.opts.max_connections, &server.opts.connections);
    let mut refusals = admission::RefusalLog::default();
    let tracker = TaskTracker::new();
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(node = %server.name, addr = ?local, "serving clients");
    loop {
        let summary_due = refusals.summary_due();
        let (sock, peer) = tokio::select! {
            _ = tokio::time::sleep_until(summary_due.unwrap_or_else(tokio::time::Instant::now)), if summary_due.is_some() => {
                let n = refusals.summary(tokio::time::Instant::now());
                tracing::warn!(refused = n, "more clients refused in the last second");
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and similar: keep serving the
                    // existing clients, try again shortly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = sock.set_nodelay(true);
        match admission.admit(peer.ip()) {
            Ok(ticket) => {
                let server = server.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    conn::run(server, sock, peer, shutdown).await;
                    drop(ticket);
                });
            }
            Err(why) => {
                let text = why.message();
                if let Some(held_back) = refusals.refused(tokio::time::Instant::now()) {
                    tracing::warn!(%peer, reason = %text, held_back, "refusing client");
                }
                let server = server.clone();
                tracker.spawn(async move { conn::refuse(&server, sock, &text).await });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!(node = %server.name, "stopped serving");
    Ok(())
}

/// Answers every client on `listener` with an error saying `why` and
/// closes the connection, until the future is dropped: a node that is not
/// ready yet tells clients so instead of leaving them hanging.
pub async fn refuse_all(server: &Server, listener: &TcpListener, why: &str) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => conn::refuse(server, sock, why).await,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Encodes a message map, adding `tock` if it has none.
pub(crate) fn encode_msg(server: &Server, m: reply::Fields, out: &mut Vec<u8>) {
    let tock = (!m.iter().any(|(k, _)| *k == "tock")).then(|| server.next_tock());
    codec::write_map_len(out, m.len() + tock.is_some() as usize);
    for (k, v) in &m {
        codec::write_str(out, k);
        codec::encode(v, out);
    }
    if let Some(t) = tock {
        codec::write_str(out, "tock");
        codec::write_uint(out, t);
    }
}

#[cfg(test)]
mod tests {
    use super::bind;

    /// `--bind ::` takes IPv4 and IPv6 clients on one port; `[::1]` and
    /// `::1` are the same host.
    #[tokio::test]
    async fn binding_all_ipv6_addresses_is_dual_stack() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            eprintln!("skipping: no IPv6 loopback address (::1)");
            return;
        }
        let l = bind("::", 0).await.expect("bind ::");
        let port = l.local_addr().expect("address").port();
        for to in ["127.0.0.1", "::1"] {
            let c = tokio::net::TcpStream::connect((to, port));
            let (c, a) = tokio::join!(c, l.accept());
            c.unwrap_or_else(|e| panic!("connect via {to}: {e}"));
            a.expect("accept");
        }
        let l = bind("[::1]", 0).await.expect("bind [::1]");
        assert!(l.local_addr().expect("address").is_ipv6());
    }
}
