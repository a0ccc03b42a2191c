//! The async shell: a TCP server speaking DistKV's client protocol.
//!
//! One [`Server`] serves a node's [`Store`] — its state behind a mutex
//! (held only for short, non-async critical sections), the commit path
//! every change takes, and a watch channel announcing the event log's
//! newest sequence number, on which watchers wait. It is built with
//! everything it uses (store, bus, the cluster protocol's view); see
//! [`crate::node`]. [`serve`] accepts connections — within the caps of
//! [`admission`] (in all and per client address; refused clients get an
//! error message, the node's log a line a second at most) — and runs each
//! in its own task ([`conn`], which also closes silent connections; the
//! typed client actions are in `request`) until the shutdown token
//! fires; then it stops accepting, lets connections finish their current
//! batch, and returns once all are gone.
//!
//! With TLS (`server.bind_default.ssl`, [`ServerOptions::tls`]) every
//! accepted connection first completes the TLS handshake, in its own task
//! and within `handshake_timeout`, before it is greeted; a connection whose
//! handshake fails is closed (logged at DEBUG) and costs nothing else.
//! Refused connections are told why over TLS too.

mod admission;
mod auth;
mod bus_msgs;
mod conn;
mod export;
mod handlers;
mod reply;
mod request;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use distkv_client::tls::{Acceptor, Socket};
use distkv_log::{LogLimits, Seq};
use distkv_model::codec::{self, Limits};
use distkv_model::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::addr::bind;
use crate::bus::Bus;
use crate::commit::{SharedState, StateRef, Store};
use crate::config::{ConnectionLimits, ExportSettings, ServerSettings};
use crate::persist::durable::Durability;
use crate::state::State;
use crate::view::ClusterView;
use distkv_core::cluster::msg::Topics;

pub use crate::commit::ChangeError;

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
    /// TLS on the client port (`server.bind_default.ssl`); `None`: plain
    /// TCP.
    pub tls: Option<Acceptor>,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            buffer: 1024,
            limits: Limits::default(),
            max_connections: 10_000,
            connections: ConnectionLimits::default(),
            export: ExportSettings::default(),
            log: LogLimits::default(),
            tls: None,
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
            // Reading the files can fail: the caller does it
            // (`ServerTls::acceptor`) and sets this.
            tls: None,
        }
    }
}

/// A running node: its state and what its connections share.
pub struct Server {
    name: String,
    store: Arc<Store>,
    opts: ServerOptions,
    logs: Mutex<Vec<export::LogExport>>,
    bus: Option<(Arc<dyn Bus>, Topics)>,
    cluster: Arc<ClusterView>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A node named `name` with an empty tree, no files and no bus.
    pub fn new(name: &str, opts: ServerOptions) -> Arc<Server> {
        Server::with_state(State::new(name, opts.log), opts)
    }

    /// A node serving `state`, without files or bus.
    pub fn with_state(state: State, opts: ServerOptions) -> Arc<Server> {
        let store = Arc::new(Store::new(SharedState::new(state), None, Vec::new()));
        Server::from_parts(store, None, Arc::default(), opts)
    }

    /// A node serving `store`, talking to other nodes on `bus` (if any),
    /// its cluster protocol reporting to `cluster`.
    pub fn from_parts(
        store: Arc<Store>,
        bus: Option<(Arc<dyn Bus>, Topics)>,
        cluster: Arc<ClusterView>,
        opts: ServerOptions,
    ) -> Arc<Server> {
        let name = store.state().me().to_string();
        Arc::new(Server {
            name,
            store,
            opts,
            logs: Mutex::new(Vec::new()),
            bus,
            cluster,
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's state and its commit path.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Locks the state for reading. Never hold the guard across an
    /// `.await`; changes go through [`Store::begin`] / [`Store::commit`].
    pub fn state(&self) -> StateRef<'_> {
        self.store.state()
    }

    /// Locks the state for what is not a change (see `Store::state_mut`).
    pub(crate) fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.store.state_mut()
    }

    /// Advances and returns the tock.
    pub fn next_tock(&self) -> u64 {
        self.store.tock().next()
    }

    /// The data directory's writer, if the node has one.
    pub fn durability(&self) -> Option<&Arc<Durability>> {
        self.store.durability()
    }

    /// The bus to other nodes and the cluster's topics, if the node has one.
    pub fn bus(&self) -> Option<(&Arc<dyn Bus>, &Topics)> {
        self.bus.as_ref().map(|(b, t)| (b, t))
    }

    /// The cluster protocol's view (peers, housekeeper), for `get_state`.
    pub fn cluster_view(&self) -> Option<Value> {
        self.cluster.view()
    }

    /// Whether `node` runs in the cluster now: this node, or one heard
    /// recently.
    pub fn is_live(&self, node: &str) -> bool {
        node == self.name || self.cluster.is_live(node)
    }

    /// A receiver that changes whenever the event log grows.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Seq> {
        self.store.subscribe()
    }

    /// Makes the node ready to serve (own tick 0 if it has none).
    pub fn make_ready(&self) {
        self.state_mut().make_ready();
    }

    /// Sets the root value as the first change of a new cluster (`-I`).
    pub fn init(&self, value: Value) -> Result<(), ChangeError> {
        self.store.init(value)
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
                    let limit = server.opts.connections.handshake_timeout;
                    let opened = tokio::select! {
                        s = open(&server, sock, peer, limit) => s,
                        () = shutdown.cancelled() => None,
                    };
                    if let Some(sock) = opened {
                        conn::run(server, sock, peer, shutdown).await;
                    }
                    drop(ticket);
                });
            }
            Err(why) => {
                let text = why.message();
                if let Some(held_back) = refusals.refused(tokio::time::Instant::now()) {
                    tracing::warn!(%peer, reason = %text, held_back, "refusing client");
                }
                let server = server.clone();
                tracker.spawn(async move {
                    if let Some(sock) = open(&server, sock, peer, REFUSAL_HANDSHAKE).await {
                        conn::refuse(&server, sock, &text).await;
                    }
                });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!(node = %server.name, "stopped serving");
    Ok(())
}

/// How long a connection that is refused anyway may take for its TLS
/// handshake.
const REFUSAL_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(1);

/// The protocol's socket on an accepted connection: `tcp` itself, or the
/// TLS session once its handshake is done (within `limit`). `None` if the
/// handshake fails or takes too long: the connection is dropped.
async fn open(
    server: &Server,
    tcp: TcpStream,
    peer: SocketAddr,
    limit: std::time::Duration,
) -> Option<Socket> {
    let Some(acceptor) = &server.opts.tls else {
        return Some(Socket::Plain(tcp));
    };
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(sock)) => Some(sock),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?limit, "TLS handshake timed out");
            None
        }
    }
}

/// Answers every client on `listener` with an error saying `why` and
/// closes the connection, until the future is dropped: a node that is not
/// ready yet tells clients so instead of leaving them hanging.
pub async fn refuse_all(server: &Arc<Server>, listener: &TcpListener, why: &str) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let server = server.clone();
                let why = why.to_owned();
                // Each in its own task: a slow TLS handshake holds up
                // nobody else.
                tokio::spawn(async move {
                    if let Some(sock) = open(&server, sock, peer, REFUSAL_HANDSHAKE).await {
                        conn::refuse(&server, sock, &why).await;
                    }
                });
            }
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
