//! The MQTT bus: nodes talk through MQTT brokers.
//!
//! Two modes (see [`MqttMode`]):
//!
//! * **Mesh** — every node embeds a broker (rumqttd). A node publishes only
//!   to its own broker, and subscribes on its own broker *and* on every peer
//!   broker, with one client per broker (on its own broker, the broker's
//!   in-process link: no socket, no MQTT encoding). A message therefore
//!   travels exactly one hop (publisher's broker → subscriber's client),
//!   reaches every node once, and no broker is a single point of failure:
//!   when a node dies, only that node's messages stop.
//! * **External** — all nodes use one ordinary broker (e.g. mosquitto).
//!
//! **Peer discovery (mesh):** on every broker it is connected to, a node
//! keeps a retained message on `<root>/peer/<node>` holding the address
//! other nodes should use for its broker. Whoever reads an address it has no
//! client for connects there, so nodes told only about one seed find each
//! other. A node also keeps a retained `<root>/broker` message on its own
//! broker naming the broker's owner; a client reaching a broker that already
//! has a client under another spelling of its address (`localhost` versus
//! `127.0.0.1`, or this node's own broker) is closed, so that spelling
//! differences cannot duplicate messages. Messages that arrive through a
//! peer client before its broker's owner is known are not delivered.
//!
//! Both control topics live under the root, so subscribers whose filter
//! matches them (e.g. `<root>/#`) receive them like any other message; the
//! retained ones arrive again after every reconnect.
//!
//! **Links:** every (re)connection of any client bumps [`Bus::links`] (a
//! peer broker's once it named its owner again, i.e. once messages from it
//! are delivered);
//! clients reconnect forever with a backoff of 100 ms doubling to 2 s.
//!
//! **TLS** ([`MqttTls`], optional): in the mesh, the relay in front of the
//! embedded broker runs the server side of TLS (the broker itself stays
//! plain, on loopback) and requires the connecting node's certificate;
//! the links to other nodes' brokers run the client side, presenting this
//! node's certificate and checking theirs against the cluster's CA. The
//! link to the node's own broker is in-process. An external
//! broker is reached with TLS when its URL says `mqtts://`.
//!
//! **Limitation:** rumqttd has no way to stop a broker. [`MqttBus`] puts
//! the broker on an internal loopback port and accepts the public
//! connections itself, relaying them to it; [`MqttBus::shutdown`] stops the
//! relay, which cuts every connection to this node, but the (now
//! unreachable from other hosts) rumqttd threads stay until the process
//! exits.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use distkv_client::tls::{rustls::ClientConfig, Acceptor, ClientTls, TlsError};
use parking_lot::{Mutex, RwLock};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS,
    SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::addr::{self, HostPort};
use crate::bus::{filter_error, topic_matches, Bus, Delivery, SUBSCRIPTION_QUEUE};

/// The default topic root of a cluster.
pub const DEFAULT_ROOT: &str = ":distkv";

/// The largest payload the bus carries (clients and embedded broker alike);
/// cluster messages can be batches of several MiB.
pub const MAX_PAYLOAD: usize = distkv_model::budget::MAX_MESSAGE_BYTES;

/// Largest MQTT packet: the payload plus room for topic and header.
const MAX_PACKET: usize = MAX_PAYLOAD + 64 * 1024;
/// Requests a client may queue before publishing drops messages.
const REQUEST_QUEUE: usize = 64 * 1024;
/// Short, so that a dead peer broker is noticed within seconds.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// TCP connect plus CONNACK timeout, in seconds (rumqttc's unit).
const CONNECT_TIMEOUT_SECS: u64 = 3;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long the embedded broker may take to accept connections.
const BROKER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to say goodbye at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(300);
/// Buffer size of the relay in front of the embedded broker.
const RELAY_BUFFER: usize = 64 * 1024;
/// Default port of an external broker.
const MQTT_PORT: u16 = 1883;
/// Default port of an external broker reached with TLS (`mqtts://`).
const MQTTS_PORT: u16 = 8883;
/// How long a node connecting to the embedded broker may take for its TLS
/// handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// How the nodes of a cluster reach each other over MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttMode {
    /// Embedded broker mesh: this node runs a broker on `listen` (host,
    /// port; port 0 picks a free port) and connects a client to its own
    /// broker and to every peer broker. `advertise` is the `host:port`
    /// other nodes should use to reach this node's broker (default: the
    /// listen host, or the host name if listening on all interfaces, with
    /// the actual port). `peers` are `host:port` strings of other nodes'
    /// brokers; more are learned from them.
    Mesh {
        /// Where the embedded broker listens.
        listen: (String, u16),
        /// The address other nodes should use for this node's broker.
        advertise: Option<String>,
        /// Brokers of other nodes to connect to at start.
        peers: Vec<String>,
    },
    /// One external broker for all nodes: `mqtt://host:port`,
    /// `tcp://host:port` or `host:port` (the port defaults to 1883), or
    /// with TLS `mqtts://host:port` / `ssl://host:port` (default 8883).
    External {
        /// The broker's address.
        url: String,
    },
}

/// Settings of an [`MqttBus`].
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// This node's name; part of client ids and of the peer topic.
    pub node: String,
    /// Topic root of the cluster, e.g. [`DEFAULT_ROOT`].
    pub root: String,
    /// Mesh or external broker.
    pub mode: MqttMode,
    /// TLS between the nodes; `None`: plain TCP (an external `mqtts://`
    /// broker is then checked against the system's CAs).
    pub tls: Option<MqttTls>,
}

impl MqttConfig {
    /// A configuration with the default topic root, without TLS.
    pub fn new(node: impl Into<String>, mode: MqttMode) -> MqttConfig {
        MqttConfig {
            node: node.into(),
            root: DEFAULT_ROOT.to_owned(),
            mode,
            tls: None,
        }
    }
}

/// TLS on the bus (see the module docs), files already read.
#[derive(Clone)]
pub struct MqttTls {
    /// Serves the embedded broker's public port (mesh; unused with an
    /// external broker). It should require client certificates.
    pub acceptor: Option<Acceptor>,
    /// The links' side: the CA to check brokers against, and this node's
    /// certificate.
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTls")
            .field("acceptor", &self.acceptor)
            .finish_non_exhaustive()
    }
}

/// Why an [`MqttBus`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A broker address (peer, advertised, listen or URL) is malformed.
    #[error("invalid broker address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The public listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address as given.
        addr: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The embedded broker did not start.
    #[error("embedded MQTT broker did not start: {0}")]
    Broker(String),
    /// The TLS settings cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The mesh was asked for TLS without a certificate to serve.
    #[error("TLS on the mesh needs this node's certificate for its broker")]
    NoCertificate,
}

/// The MQTT implementation of [`Bus`]; see the module documentation.
///
/// Dropping it shuts it down (see [`MqttBus::shutdown`]).
pub struct MqttBus {
    shared: Arc<Shared>,
}

/// One local subscriber.
struct Sub {
    filter: String,
    tx: mpsc::Sender<Delivery>,
}

/// One client, connected (or trying to connect) to one broker.
struct Link {
    /// The broker address as advertised or configured; key of
    /// [`State::links`].
    key: String,
    client: Client,
    /// The client on this node's own broker (mesh) or on the external
    /// broker: it publishes, and its messages are always delivered.
    own: bool,
    /// Whether messages arriving through this client go to subscribers.
    deliver: AtomicBool,
    /// Identity of the node owning the broker, once known (mesh).
    owner: Mutex<Option<String>>,
}

struct State {
    /// The MQTT filters every client subscribes: no filter in it covers
    /// another, so no client gets a message twice.
    cover: Vec<String>,
    links: HashMap<String, Arc<Link>>,
    /// Every broker address configured or learned, this node's own
    /// advertised address included.
    known: BTreeSet<String>,
    /// Node name → the broker addresses at which that node's broker
    /// answered (its owner message), duplicate links included.
    reached: HashMap<String, BTreeSet<String>>,
    /// Broker address → the node that announced it last, to notice two
    /// nodes announcing one address.
    announced: HashMap<String, String>,
    /// (address, node, node) clashes warned about, each once.
    clashes: BTreeSet<(String, String, String)>,
    stopped: bool,
}

struct Shared {
    node: String,
    /// This node's name plus a per-start nonce: tells this incarnation's
    /// broker apart from any other.
    identity: String,
    mesh: bool,
    advertise: Option<String>,
    peer_prefix: String,
    broker_topic: String,
    broker_addr: Option<SocketAddr>,
    /// TLS for the links that leave this host: peer brokers (mesh), the
    /// external broker (`mqtts://`).
    link_tls: Option<Arc<ClientConfig>>,
    subs: Mutex<Vec<Sub>>,
    state: Mutex<State>,
    publisher: RwLock<Option<Client>>,
    links_tx: watch::Sender<u64>,
    dropped: AtomicU64,
    stop: CancellationToken,
}

impl MqttBus {
    /// Starts the bus: in mesh mode the embedded broker (this returns once
    /// it accepts connections) and the clients; in external mode the one
    /// client. Clients connect in the background; this does not wait for
    /// peers or for the external broker.
    pub async fn start(cfg: MqttConfig) -> Result<Arc<MqttBus>, MqttError> {
        MqttBus::start_with(cfg, None).await
    }

    /// Starts the bus like [`MqttBus::start`], but in mesh mode the
    /// embedded broker is reached on `listener`, bound by the caller: a
    /// node binds all its ports before it touches its data directory, so
    /// that a port in use fails the start before anything is written.
    /// The `listen` address of the configuration then only serves to
    /// choose the default advertised address. In external mode the
    /// listener is not used.
    pub async fn start_on(
        cfg: MqttConfig,
        listener: TcpListener,
    ) -> Result<Arc<MqttBus>, MqttError> {
        MqttBus::start_with(cfg, Some(listener)).await
    }

    async fn start_with(
        cfg: MqttConfig,
        listener: Option<TcpListener>,
    ) -> Result<Arc<MqttBus>, MqttError> {
        let MqttConfig {
            node,
            root,
            mode,
            tls,
        } = cfg;
        let root = root.trim_end_matches('/').to_owned();
        let nonce: u64 = rand::random();
        let (links_tx, _) = watch::channel(0);
        let stop = CancellationToken::new();
        let new_shared = |mesh, advertise, broker_addr, cover, link_tls| Shared {
            identity: format!("{node} {nonce:016x}"),
            node: node.clone(),
            mesh,
            advertise,
            peer_prefix: format!("{root}/peer/"),
            broker_topic: format!("{root}/broker"),
            broker_addr,
            link_tls,
            subs: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                cover,
                links: HashMap::new(),
                known: BTreeSet::new(),
                reached: HashMap::new(),
                announced: HashMap::new(),
                clashes: BTreeSet::new(),
                stopped: false,
            }),
            publisher: RwLock::new(None),
            links_tx: links_tx.clone(),
            dropped: AtomicU64::new(0),
            stop: stop.clone(),
        };
        match mode {
            MqttMode::External { url } => {
                let (key, host, port, secure) = parse_url(&url)?;
                let link_tls = match (secure, &tls) {
                    (false, Some(_)) => {
                        warn!(%url, "TLS is configured for the bus but the broker URL is not mqtts://: plain TCP");
                        None
                    }
                    (false, None) => None,
                    (true, Some(t)) => Some(t.client.clone()),
                    (true, None) => Some(ClientTls::default().config()?),
                };
                let shared = Arc::new(new_shared(false, None, None, Vec::new(), link_tls));
                {
                    let mut st = shared.state.lock();
                    shared.add_link(&mut st, key, host, port, true);
                }
                Ok(Arc::new(MqttBus { shared }))
            }
            MqttMode::Mesh {
                listen,
                advertise,
                peers,
            } => {
                let peers = peers
                    .iter()
                    .map(|p| parse_host_port(p))
                    .collect::<Result<Vec<_>, _>>()?;
                // As printed: `[v6]:port`, whatever the spelling given.
                let advertise = match &advertise {
                    Some(a) => Some(parse_host_port(a)?.0),
                    None => None,
                };
                let (internal, local) = start_broker(&node).await?;
                let (public, listener) = match listener {
                    Some(l) => (
                        l.local_addr().map_err(|source| MqttError::Listen {
                            addr: addr::join(&listen.0, listen.1),
                            source,
                        })?,
                        l,
                    ),
                    None => bind_public(&listen).await?,
                };
                let acceptor = match &tls {
                    None => None,
                    Some(t) => Some(t.acceptor.clone().ok_or(MqttError::NoCertificate)?),
                };
                tokio::spawn(relay(listener, internal, acceptor, stop.clone()));
                let advertise =
                    advertise.unwrap_or_else(|| default_advertise(&listen.0, public.port()));
                info!(node, %public, %advertise, "embedded MQTT broker listening");
                let cover = vec![format!("{root}/peer/+"), format!("{root}/broker")];
                let shared = Arc::new(new_shared(
                    true,
                    Some(advertise.clone()),
                    Some(public),
                    cover,
                    tls.map(|t| t.client),
                ));
                let own = {
                    let mut st = shared.state.lock();
                    let own = shared.add_local_link(&mut st, advertise, local);
                    for (key, host, port) in peers {
                        if !st.known.contains(&key) {
                            shared.add_link(&mut st, key, host, port, false);
                        }
                    }
                    own
                };
                // The in-process link is connected from the start.
                shared.on_connack(&own);
                Ok(Arc::new(MqttBus { shared }))
            }
        }
    }

    /// The address the embedded broker accepts connections on (mesh mode),
    /// with the actual port when 0 was asked for; `None` in external mode.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.shared.broker_addr
    }

    /// Broker addresses of other nodes known so far, configured and learned
    /// (mesh mode; empty in external mode). Includes brokers that are
    /// currently unreachable and other spellings of known brokers.
    pub fn peers(&self) -> Vec<String> {
        let st = self.shared.state.lock();
        st.known
            .iter()
            .filter(|k| Some(*k) != self.shared.advertise.as_ref())
            .cloned()
            .collect()
    }

    /// Stops the bus: withdraws this node's peer announcement where it
    /// can, disconnects every client and closes the embedded broker to
    /// other nodes. Idempotent. Publishing afterwards drops and counts.
    ///
    /// rumqttd cannot be stopped in-process: its threads stay, listening
    /// on an internal loopback port nobody is told about, until the
    /// process exits.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }
}

impl Drop for MqttBus {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

impl Bus for MqttBus {
    fn publish(&self, topic: &str, payload: Bytes) {
        let publisher = self.shared.publisher.read();
        let sent = match publisher.as_ref() {
            Some(client) => client.publish(topic, false, payload).is_ok(),
            None => false,
        };
        if !sent {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn subscribe(&self, filter: &str) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_QUEUE);
        if let Some(why) = filter_error(filter) {
            // Asking a broker for it would cost the link (rumqttd drops the
            // client): the subscription ends at once instead.
            warn!(filter, why, "not an MQTT topic filter; not subscribing");
            return rx;
        }
        self.shared.subs.lock().push(Sub {
            filter: filter.to_owned(),
            tx,
        });
        self.shared.cover(filter);
        rx
    }

    fn links(&self) -> watch::Receiver<u64> {
        self.shared.links_tx.subscribe()
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn reached_at(&self, node: &str) -> Vec<String> {
        let st = self.shared.state.lock();
        st.reached
            .get(node)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Shared {
    /// After every CONNACK: announce this node, subscribe afresh (sessions
    /// are clean) and count the link — a peer broker's link only once its
    /// owner is known again ([`Shared::on_owner`]): that message comes
    /// right after the subscription took effect, so whatever the cluster
    /// layer asks for on a new link cannot come back before it is heard.
    fn on_connack(&self, link: &Link) {
        if link.own || !self.mesh {
            self.links_tx.send_modify(|n| *n += 1);
        }
        info!(node = self.node, broker = link.key, "MQTT link up");
        if let Some(advertise) = self.advertise.as_ref().filter(|_| self.mesh) {
            let topic = format!("{}{}", self.peer_prefix, self.node);
            let announce = Bytes::copy_from_slice(advertise.as_bytes());
            if let Err(e) = link.client.publish(&topic, true, announce) {
                warn!(broker = link.key, error = %e, "cannot announce this node");
            }
            if link.own {
                let identity = Bytes::copy_from_slice(self.identity.as_bytes());
                if let Err(e) = link.client.publish(&self.broker_topic, true, identity) {
                    warn!(error = %e, "cannot name this broker's owner");
                }
            }
        }
        // Under the lock, so that no concurrent change of the cover set is
        // undone by this re-subscription.
        let st = self.state.lock();
        if !st.cover.is_empty() {
            if let Err(e) = link.client.subscribe(&st.cover) {
                warn!(broker = link.key, error = %e, "cannot subscribe");
            }
        }
    }

    /// Handles one incoming message; `false` if the link is to be closed.
    fn on_publish(self: &Arc<Self>, link: &Arc<Link>, topic: String, payload: Bytes) -> bool {
        if self.mesh {
            if topic == self.broker_topic {
                if !self.on_owner(link, &payload) {
                    return false;
                }
            } else if let Some(name) = topic.strip_prefix(&self.peer_prefix) {
                self.on_peer(name, &payload);
            }
        }
        if link.deliver.load(Ordering::Acquire) {
            self.dispatch(topic, payload);
        }
        true
    }

    /// Hands a message to every local subscriber whose filter matches it.
    fn dispatch(&self, topic: String, payload: Bytes) {
        let mut subs = self.subs.lock();
        subs.retain(|sub| {
            if !topic_matches(&sub.filter, &topic) {
                return !sub.tx.is_closed();
            }
            let delivery = Delivery {
                topic: topic.clone(),
                payload: payload.clone(),
            };
            match sub.tx.try_send(delivery) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Makes every client receive what `filter` matches, keeping the
    /// subscribed filters free of overlaps (an overlap would make a broker
    /// send a message once per matching filter).
    fn cover(&self, filter: &str) {
        let mut st = self.state.lock();
        if st.stopped || st.cover.iter().any(|c| filter_covers(c, filter)) {
            return;
        }
        let (narrower, kept): (Vec<String>, Vec<String>) = std::mem::take(&mut st.cover)
            .into_iter()
            .partition(|c| filter_covers(filter, c));
        st.cover = kept;
        let added = [filter.to_owned()];
        st.cover.push(filter.to_owned());
        for link in st.links.values() {
            // Subscribe first: a short overlap beats a short gap.
            if let Err(e) = link.client.subscribe(&added) {
                warn!(broker = link.key, filter, error = %e, "cannot subscribe");
            }
            for old in &narrower {
                if let Err(e) = link.client.unsubscribe(old) {
                    debug!(broker = link.key, filter = old, error = %e, "cannot unsubscribe");
                }
            }
        }
    }

    fn shutdown(&self) {
        let links: Vec<Arc<Link>> = {
            let mut st = self.state.lock();
            if st.stopped {
                return;
            }
            st.stopped = true;
            st.links.drain().map(|(_, l)| l).collect()
        };
        *self.publisher.write() = None;
        for link in links {
            if self.mesh && !link.own {
                // Withdraw the announcement, so that nobody keeps trying
                // to reach a broker that is gone for good.
                let topic = format!("{}{}", self.peer_prefix, self.node);
                let _ = link.client.publish(&topic, true, Bytes::new());
            }
            link.client.disconnect();
        }
        self.stop.cancel();
    }
}

/// Drives one client: polls its event loop, reconnecting forever with
/// backoff, until the bus stops or the link turns out to be a duplicate.
async fn run_link(shared: Arc<Shared>, link: Arc<Link>, mut eventloop: EventLoop) {
    let mut backoff = MIN_BACKOFF;
    let mut drain_until: Option<Instant> = None;
    loop {
        let event = match drain_until {
            Some(deadline) => match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                Ok(event) => event,
                Err(_) => break,
            },
            None => tokio::select! {
                biased;
                () = shared.stop.cancelled() => {
                    drain_until = Some(Instant::now() + DRAIN_TIMEOUT);
                    continue;
                }
                event = eventloop.poll() => event,
            },
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = MIN_BACKOFF;
                if drain_until.is_none() {
                    shared.on_connack(&link);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if drain_until.is_none() && !shared.on_publish(&link, p.topic, p.payload) {
                    break;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                if drain_until.is_some() {
                    break;
                }
                // Once per outage at WARN (the first failure after a
                // connection), every retry after that at DEBUG.
                if backoff == MIN_BACKOFF {
                    warn!(node = shared.node, broker = link.key, error = %e, "MQTT link down; reconnecting");
                } else {
                    debug!(node = shared.node, broker = link.key, error = %e, "MQTT link still down");
                }
                tokio::select! {
                    () = shared.stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    shared.forget(&mut shared.state.lock(), &link);
    debug!(node = shared.node, broker = link.key, "MQTT client ended");
}

/// Reads `host:port` (`[v6]:port` for IPv6; host names allowed) into the
/// key it is known by (the address as printed, IPv6 in brackets), and the
/// host and port for the MQTT client (which wants IPv6 in brackets, as it
/// appends the port).
fn parse_host_port(text: &str) -> Result<(String, String, u16), MqttError> {
    let a = HostPort::parse(text).map_err(address_error)?;
    Ok((a.to_string(), addr::bracket(&a.host).into_owned(), a.port))
}

fn address_error(e: addr::AddrError) -> MqttError {
    MqttError::Address {
        addr: e.addr,
        reason: e.reason,
    }
}

/// Parses an external broker URL into (key, host, port, TLS?).
fn parse_url(url: &str) -> Result<(String, String, u16, bool), MqttError> {
    let trimmed = url.trim();
    let (rest, secure) = match trimmed.split_once("://") {
        None => (trimmed, false),
        Some(("mqtt" | "tcp", rest)) => (rest, false),
        Some(("mqtts" | "ssl", rest)) => (rest, true),
        Some(_) => {
            return Err(MqttError::Address {
                addr: url.to_owned(),
                reason: "only mqtt://, tcp://, mqtts:// and ssl:// are supported",
            })
        }
    };
    let default_port = if secure { MQTTS_PORT } else { MQTT_PORT };
    let a = HostPort::parse_or_port(rest.trim_end_matches('/'), default_port).map_err(|e| {
        MqttError::Address {
            addr: url.to_owned(),
            reason: e.reason,
        }
    })?;
    Ok((
        a.to_string(),
        addr::bracket(&a.host).into_owned(),
        a.port,
        secure,
    ))
}

/// Whether every topic matching filter `b` also matches filter `a`.
fn filter_covers(a: &str, b: &str) -> bool {
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(y)) if y != "#" => {}
            (Some(x), Some(y)) if x == y && x != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

mod broker;
mod client;
mod discovery;

use broker::{bind_public, relay, start_broker, LocalLink};
use client::Client;
use discovery::{client_id, default_advertise};

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::process::{Child, Command, Stdio};

    use tokio::time::timeout;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(20);
    /// For negative checks only: how long to wait for a message that must
    /// not come.
    const QUIET: Duration = Duration::from_millis(300);

    async fn recv_within(rx: &mut mpsc::Receiver<Delivery>, d: Duration) -> Option<Delivery> {
        timeout(d, rx.recv()).await.ok().flatten()
    }

    async fn mesh_on(node: &str, port: u16, peers: Vec<String>) -> Result<Arc<MqttBus>, MqttError> {
        let mode = MqttMode::Mesh {
            listen: ("127.0.0.1".to_owned(), port),
            advertise: None,
            peers,
        };
        MqttBus::start(MqttConfig::new(node, mode)).await
    }

    async fn mesh(node: &str, peers: Vec<String>) -> Arc<MqttBus> {
        mesh_on(node, 0, peers).await.expect("mesh bus starts")
    }

    fn addr(bus: &MqttBus) -> String {
        bus.broker_addr()
            .expect("mesh mode has a broker")
            .to_string()
    }

    /// Publishes probes until every bus has heard every bus (itself
    /// included), so that the links and subscriptions are up.
    async fn until_connected(buses: &[&Arc<MqttBus>], rxs: &mut [mpsc::Receiver<Delivery>]) {
        let n = buses.len();
        let deadline = Instant::now() + PATIENCE;
        let mut heard = vec![BTreeSet::new(); n];
        while heard.iter().any(|h| h.len() < n) {
            assert!(Instant::now() < deadline, "mesh not connected: {heard:?}");
            for (i, bus) in buses.iter().enumerate() {
                bus.publish(&format!(":distkv/probe/{i}"), Bytes::new());
            }
            for (j, rx) in rxs.iter_mut().enumerate() {
                while let Some(d) = recv_within(rx, Duration::from_millis(50)).await {
                    if let Some(i) = d.topic.strip_prefix(":distkv/probe/") {
                        heard[j].insert(i.to_owned());
                    }
                }
            }
        }
    }

    /// Receives `n` messages under `prefix` (others are skipped), then
    /// checks that no further one comes; returns them by topic.
    async fn collect_exactly(
        rx: &mut mpsc::Receiver<Delivery>,
        prefix: &str,
        n: usize,
    ) -> BTreeMap<String, Bytes> {
        let deadline = Instant::now() + PATIENCE;
        let mut got = BTreeMap::new();
        let mut count = 0;
        while count < n {
            let d = timeout_at_or_panic(deadline, rx, &got).await;
            if d.topic.starts_with(prefix) {
                count += 1;
                assert!(
                    got.insert(d.topic.clone(), d.payload).is_none(),
                    "duplicate {}",
                    d.topic
                );
            }
        }
        let quiet_until = Instant::now() + QUIET;
        while let Ok(Some(d)) = tokio::time::timeout_at(quiet_until, rx.recv()).await {
            assert!(!d.topic.starts_with(prefix), "unexpected extra {}", d.topic);
        }
        got
    }

    async fn timeout_at_or_panic(
        deadline: Instant,
        rx: &mut mpsc::Receiver<Delivery>,
        got: &BTreeMap<String, Bytes>,
    ) -> Delivery {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => d,
            Ok(None) => panic!("subscription closed"),
            Err(_) => panic!("timed out; got only {:?}", got.keys().collect::<Vec<_>>()),
        }
    }

    /// Every bus publishes one message under `prefix`; every bus must get
    /// all of them exactly once.
    async fn exchange(
        buses: &[(&str, &Arc<MqttBus>)],
        rxs: &mut [mpsc::Receiver<Delivery>],
        prefix: &str,
    ) {
        for (name, bus) in buses {
            bus.publish(&format!("{prefix}{name}"), Bytes::from(name.to_string()));
        }
        let expected: BTreeMap<String, Bytes> = buses
            .iter()
            .map(|(name, _)| (format!("{prefix}{name}"), Bytes::from(name.to_string())))
            .collect();
        for rx in rxs.iter_mut() {
            assert_eq!(collect_exactly(rx, prefix, buses.len()).await, expected);
        }
    }

    /// Two meshed buses, b told about a, each subscribed to the whole
    /// root and hearing both.
    async fn connected_pair() -> (Arc<MqttBus>, Arc<MqttBus>, [mpsc::Receiver<Delivery>; 2]) {
        let a = mesh("a", vec![]).await;
        let b = mesh("b", vec![addr(&a)]).await;
        let mut rxs = [&a, &b].map(|bus| bus.subscribe(":distkv/#"));
        until_connected(&[&a, &b], &mut rxs).await;
        (a, b, rxs)
    }

    async fn until<F: FnMut() -> bool>(what: &str, mut cond: F) {
        let deadline = Instant::now() + PATIENCE;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mesh_of_three_delivers_everything_once_and_gossips_peers() {
        let a = mesh("a", vec![]).await;
        let b = mesh("b", vec![addr(&a)]).await;
        let c = mesh("c", vec![addr(&a)]).await;
        let mut rxs = [&a, &b, &c].map(|bus| bus.subscribe(":distkv/#"));
        until_connected(&[&a, &b, &c], &mut rxs).await;
        until("gossip", || {
            b.peers().contains(&addr(&c)) && c.peers().contains(&addr(&b))
        })
        .await;
        assert_eq!(a.peers().len(), 2, "{:?}", a.peers());
        exchange(
            &[("a", &a), ("b", &b), ("c", &c)],
            &mut rxs,
            ":distkv/test/",
        )
        .await;
        assert_eq!(a.dropped() + b.dropped() + c.dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_serves_on_the_listener_it_is_handed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let bound = listener.local_addr().expect("address");
        let mode = MqttMode::Mesh {
            // Not bound: the handed listener is used instead.
            listen: ("127.0.0.1".to_owned(), 1),
            advertise: None,
            peers: vec![],
        };
        let a = MqttBus::start_on(MqttConfig::new("a", mode), listener)
            .await
            .expect("mesh bus starts");
        assert_eq!(a.broker_addr(), Some(bound));
        let b = mesh("b", vec![bound.to_string()]).await;
        let mut rxs = [&a, &b].map(|bus| bus.subscribe(":distkv/#"));
        until_connected(&[&a, &b], &mut rxs).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mesh_survives_the_loss_of_its_seed_and_the_seed_comes_back() {
        let a = mesh("a", vec![]).await;
        let a_port = a.broker_addr().expect("broker").port();
        let b = mesh("b", vec![addr(&a)]).await;
        let c = mesh("c", vec![addr(&a)]).await;
        let mut rxs = [&a, &b, &c].map(|bus| bus.subscribe(":distkv/#"));
        until_connected(&[&a, &b, &c], &mut rxs).await;

        // The seed goes away: its clients and its broker's port.
        a.shutdown();
        drop(a);
        let [_, rx_b, rx_c] = rxs;
        let mut rxs = [rx_b, rx_c];
        exchange(&[("b", &b), ("c", &c)], &mut rxs, ":distkv/without-a/").await;

        // A newcomer that knows only b finds c.
        let d = mesh("d", vec![addr(&b)]).await;
        let [rx_b, rx_c] = rxs;
        let mut rxs = [rx_b, rx_c, d.subscribe(":distkv/#")];
        until_connected(&[&b, &c, &d], &mut rxs).await;
        assert!(d.peers().contains(&addr(&c)), "{:?}", d.peers());
        exchange(
            &[("b", &b), ("c", &c), ("d", &d)],
            &mut rxs,
            ":distkv/with-d/",
        )
        .await;

        // The seed restarts on its old address; b and c reconnect to it.
        let links_b = b.links();
        let before = *links_b.borrow();
        let deadline = Instant::now() + PATIENCE;
        let a2 = loop {
            match mesh_on("a", a_port, vec![]).await {
                Ok(bus) => break bus,
                Err(e) => assert!(Instant::now() < deadline, "cannot restart a: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let [rx_b, rx_c, rx_d] = rxs;
        let mut rxs = [a2.subscribe(":distkv/#"), rx_b, rx_c, rx_d];
        until_connected(&[&a2, &b, &c, &d], &mut rxs).await;
        assert!(*links_b.borrow() > before, "b counted its new link to a");
        exchange(
            &[("a", &a2), ("b", &b), ("c", &c), ("d", &d)],
            &mut rxs,
            ":distkv/a-back/",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mesh_carries_large_payloads() {
        let (a, _b, mut rxs) = connected_pair().await;
        let big: Bytes = (0..2 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
        a.publish(":distkv/big", big.clone());
        for rx in &mut rxs {
            let got = collect_exactly(rx, ":distkv/big", 1).await;
            assert_eq!(got.get(":distkv/big"), Some(&big));
        }
    }

    /// rumqttd drops a client that subscribes to a filter starting with `$`;
    /// a monitor asking for one must not cost the node its links.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_filter_the_broker_refuses_cuts_no_link() {
        let (a, b, mut rxs) = connected_pair().await;
        let refused = ["$SYS/#", "a/#/b", "a+/b", ""].map(|bad| (bad, a.subscribe(bad)));
        exchange(&[("a", &a), ("b", &b)], &mut rxs, ":distkv/after/").await;
        for (bad, mut rx) in refused {
            let closed = rx.try_recv() == Err(mpsc::error::TryRecvError::Disconnected);
            assert!(closed, "{bad:?} is not served");
        }
    }

    /// Should the router drop the node's own link anyway, the node makes a
    /// new one, announces itself and subscribes again, as after a reconnect.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_own_link_is_made_anew() {
        let (a, b, mut rxs) = connected_pair().await;
        let mut links = a.links();
        let own = a.shared.publisher.read().clone().expect("a publisher");
        // Past the bus's check: rumqttd drops a client asking for this.
        own.subscribe(&["$SYS/#".to_owned()]).expect("handed over");
        timeout(PATIENCE, links.changed())
            .await
            .expect("a new own link")
            .expect("the bus runs");
        // Its subscriptions follow the count's bump.
        until_connected(&[&a, &b], &mut rxs).await;
        exchange(&[("a", &a), ("b", &b)], &mut rxs, ":distkv/after/").await;
    }

    /// One thread: the burst is published before the node's own link reads
    /// anything, so the broker hands it over in parts, pausing the link
    /// between them (its buffer holds 200 messages) until the link says it
    /// is ready again. All of it arrives, in order, once — and a peer's
    /// client gets the same.
    #[tokio::test]
    async fn a_burst_larger_than_the_own_links_buffer_arrives_whole() {
        let (a, _b, mut rxs) = connected_pair().await;
        const BURST: usize = 2_000;
        for i in 0..BURST {
            a.publish(&format!(":distkv/burst/{i:05}"), Bytes::from(i.to_string()));
        }
        for rx in &mut rxs {
            let got = collect_exactly(rx, ":distkv/burst/", BURST).await;
            let want: BTreeMap<String, Bytes> = (0..BURST)
                .map(|i| (format!(":distkv/burst/{i:05}"), Bytes::from(i.to_string())))
                .collect();
            assert_eq!(got, want);
        }
        assert_eq!(a.dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_broker_under_another_name_does_not_duplicate() {
        let a = mesh("a", vec![]).await;
        let port = a.broker_addr().expect("broker").port();
        // b is told about a twice, and about itself is learned via a.
        let b = mesh("b", vec![addr(&a), format!("localhost:{port}")]).await;
        let mut rxs = [&a, &b].map(|bus| bus.subscribe(":distkv/#"));
        until_connected(&[&a, &b], &mut rxs).await;
        exchange(&[("a", &a), ("b", &b)], &mut rxs, ":distkv/test/").await;
    }

    /// Kills the child process when dropped.
    struct ChildGuard(Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn find_mosquitto() -> Option<std::path::PathBuf> {
        let fixed = std::path::PathBuf::from("/usr/sbin/mosquitto");
        if fixed.is_file() {
            return Some(fixed);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("mosquitto"))
                .find(|p| p.is_file())
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn external_broker_mosquitto() {
        let Some(bin) = find_mosquitto() else {
            assert!(
                std::env::var_os("DISTKV_REQUIRE_MOSQUITTO").is_none(),
                "mosquitto not found but DISTKV_REQUIRE_MOSQUITTO is set"
            );
            eprintln!("mosquitto not installed; skipping the external broker test");
            return;
        };
        let port = StdTcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let _broker = ChildGuard(
            Command::new(bin)
                .args(["-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto starts"),
        );
        until_tcp(port).await;
        let start = |node: &str, url: String| {
            MqttBus::start(MqttConfig::new(node, MqttMode::External { url }))
        };
        let x = start("x", format!("mqtt://127.0.0.1:{port}"))
            .await
            .expect("x");
        let y = start("y", format!("127.0.0.1:{port}")).await.expect("y");
        assert_eq!(x.broker_addr(), None);
        let mut rxs = [&x, &y].map(|bus| bus.subscribe(":distkv/#"));
        until_connected(&[&x, &y], &mut rxs).await;
        assert!(*x.links().borrow() >= 1);
        exchange(&[("x", &x), ("y", &y)], &mut rxs, ":distkv/test/").await;
    }

    async fn until_tcp(port: u16) {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "nothing listens on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn urls_and_addresses_parse() {
        let url = |u: &str| parse_url(u).map(|(key, _, _, _)| key).ok();
        assert_eq!(url("mqtt://h:1884"), Some("h:1884".to_owned()));
        assert_eq!(url("tcp://h:1884/"), Some("h:1884".to_owned()));
        assert_eq!(url("h:1884"), Some("h:1884".to_owned()));
        assert_eq!(url("mqtt://h"), Some("h:1883".to_owned()));
        assert_eq!(url("mqtt://[::1]:5"), Some("[::1]:5".to_owned()));
        assert_eq!(url("::1"), Some("[::1]:1883".to_owned()));
        assert_eq!(url("ws://h:1"), None);
        assert_eq!(url("h:x"), None);
        let tls = |u: &str| parse_url(u).map(|(key, _, _, tls)| (key, tls)).ok();
        assert_eq!(tls("mqtts://h"), Some(("h:8883".to_owned(), true)));
        assert_eq!(tls("ssl://h:8884"), Some(("h:8884".to_owned(), true)));
        assert_eq!(tls("mqtt://h"), Some(("h:1883".to_owned(), false)));
        assert!(parse_host_port("n1.example:27587").is_ok());
        assert!(parse_host_port("n1.example").is_err());
        assert_eq!(default_advertise("::1", 5), "[::1]:5");
        assert_eq!(client_id("n/1", "h:1"), "n_1@h:1");
    }

    #[test]
    fn filter_cover() {
        assert!(filter_covers("a/#", "a/b/c"));
        assert!(filter_covers("a/#", "a"));
        assert!(filter_covers("a/+", "a/b"));
        assert!(filter_covers("a/+", "a/+"));
        assert!(filter_covers("#", "a/#"));
        assert!(!filter_covers("a/+", "a/#"));
        assert!(!filter_covers("a/b", "a/+"));
        assert!(!filter_covers("a/b", "a/b/c"));
        assert!(!filter_covers("a/+/c", "a/b/d"));
    }
}
