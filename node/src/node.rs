//! One way to build a running node, used by `distkv server`, the
//! integration tests and the benchmarks.
//!
//! [`NodeBuilder::build`] assembles a node in a fixed order, each step
//! handing the next what it needs (nothing is attached later):
//!
//! 1. **recover** the data directory, if any (locked before anything in it
//!    is read or written);
//! 2. start its **writer** thread; the [`Store`] (state and commit path)
//!    is made with it and the commit hooks;
//! 3. **load** the `-l` files, then `--authoritative`;
//! 4. settle **readiness**: `--init`, or serving at once ([`Start`]), or
//!    waiting for a peer's state;
//! 5. start the **bus** (MQTT, or one given by the caller);
//! 6. make the protocol **core** and the [`Server`] with its bus.
//!
//! A build that fails after step 2 stops the writer (flushing what was
//! written) before it returns the error.
//!
//! [`Node::run`] then starts the protocol, waits until the node is ready
//! (telling clients so meanwhile), **serves** until the shutdown token
//! fires, stops the protocol and **flushes** the log on the way out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use distkv_model::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::cluster::core::{ClusterConfig, Core};
use crate::cluster::mqtt::{MqttBus, MqttConfig, MqttError};
use crate::cluster::msg::Topics;
use crate::commit::{ChangeError, CommitHook, MetaRules, SharedState, Store};
use crate::persist::durable::{self, Durability, DurableConfig, PersistError, WriterThread};
use crate::persist::load::LoadError;
use crate::rules::code::ScriptSettings;
use crate::rules::{DataRules, TypeRules};
use crate::server::{self, Server, ServerOptions};
use crate::tls::rustls::ClientConfig;
use crate::view::ClusterView;

/// What a node that has no data of its own does at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Serve at once (a node alone, or a test node): own tick 0.
    Ready,
    /// Serve at once although peers may have data (`--force`; logged).
    Force,
    /// Fetch the state from a ready peer first; until then clients are
    /// told the node is not ready.
    Join,
}

/// Where the node's bus comes from.
pub enum BusSpec {
    /// Start an [`MqttBus`]; in mesh mode its embedded broker listens on
    /// `listener` if given (bound by the caller before the data directory
    /// is touched).
    Mqtt {
        /// The bus settings.
        config: MqttConfig,
        /// The broker's listener.
        listener: Option<TcpListener>,
    },
    /// A bus the caller made (a test bus, a wrapped one).
    Given(Arc<dyn Bus>),
}

/// Why a node could not be built or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be recovered (or is locked).
    #[error(transparent)]
    Recover(PersistError),
    /// The writer thread could not be started.
    #[error("cannot start the log writer: {0}")]
    Writer(std::io::Error),
    /// A `-l` file could not be loaded.
    #[error("cannot load {file}: {source}")]
    Load {
        /// The file.
        file: PathBuf,
        /// Why.
        source: LoadError,
    },
    /// `--init` was refused.
    #[error(transparent)]
    Init(#[from] ChangeError),
    /// The bus could not be started.
    #[error("cannot start the bus to other nodes: {0}")]
    Bus(#[from] MqttError),
    /// Serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Writing the history failed (at the stop).
    #[error("writing history failed: {0}")]
    History(PersistError),
    /// The writer thread panicked.
    #[error("the log writer thread panicked")]
    WriterPanicked,
}

/// Assembles a node; see the module docs for the order.
pub struct NodeBuilder {
    name: String,
    opts: ServerOptions,
    data_dir: Option<DurableConfig>,
    hooks: Vec<Arc<dyn CommitHook>>,
    rules: Arc<DataRules>,
    load: Vec<PathBuf>,
    authoritative: bool,
    init: Option<Value>,
    start: Start,
    bus: Option<BusSpec>,
    cluster: ClusterConfig,
    seed: Option<u64>,
    advertise: Option<String>,
    serve_before_ready: bool,
    peer_tls: Option<Arc<ClientConfig>>,
}

impl NodeBuilder {
    /// A node named `name`: default options, in memory only, no bus,
    /// serving at once.
    pub fn new(name: &str) -> NodeBuilder {
        let rules = Arc::new(DataRules::default());
        NodeBuilder {
            name: name.to_string(),
            opts: ServerOptions::default(),
            data_dir: None,
            hooks: Vec::new(),
            rules,
            load: Vec::new(),
            authoritative: false,
            init: None,
            start: Start::Ready,
            bus: None,
            cluster: ClusterConfig::default(),
            seed: None,
            advertise: None,
            serve_before_ready: false,
            peer_tls: None,
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Server options.
    pub fn options(mut self, opts: ServerOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Keeps history in a data directory.
    pub fn data_dir(mut self, config: DurableConfig) -> Self {
        self.data_dir = Some(config);
        self
    }

    /// How type and codec code runs (`server.scripts.*`; default: Rhai).
    pub fn scripts(mut self, settings: ScriptSettings) -> Self {
        self.rules = Arc::new(DataRules::new(settings));
        self
    }

    /// The commit hooks: [`MetaRules`], [`TypeRules`], then the added
    /// ones.
    fn all_hooks(&self) -> Vec<Arc<dyn CommitHook>> {
        let fixed: [Arc<dyn CommitHook>; 2] =
            [Arc::new(MetaRules), Arc::new(TypeRules(self.rules.clone()))];
        fixed
            .into_iter()
            .chain(self.hooks.iter().cloned())
            .collect()
    }

    /// Adds a check every change passes (see [`crate::commit`]), after the
    /// ones already there ([`MetaRules`] is always first, then
    /// [`TypeRules`]).
    pub fn hook(mut self, hook: Arc<dyn CommitHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Files to load before serving, in order.
    pub fn load(mut self, files: impl IntoIterator<Item = PathBuf>) -> Self {
        self.load.extend(files);
        self
    }

    /// The loaded files are complete: ticks still missing afterwards are
    /// declared superseded.
    pub fn authoritative(mut self, yes: bool) -> Self {
        self.authoritative = yes;
        self
    }

    /// The root value of a new cluster (ignored, with a warning, if the
    /// node has data).
    pub fn init(mut self, value: Option<Value>) -> Self {
        self.init = value;
        self
    }

    /// What the node does without data of its own.
    pub fn start(mut self, start: Start) -> Self {
        self.start = start;
        self
    }

    /// Connects the node to others.
    pub fn bus(mut self, bus: BusSpec) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The replication protocol's settings.
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.cluster = config;
        self
    }

    /// The seed of the protocol's random delays (default: from the clock
    /// and the process id).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The host other nodes reach this node's clients at (default: the
    /// listener's address).
    pub fn advertise(mut self, host: impl Into<String>) -> Self {
        self.advertise = Some(host.into());
        self
    }

    /// Serves clients while the node waits for a peer's state, instead of
    /// telling them it is not ready (tests that watch a joining node).
    pub fn serve_before_ready(mut self, yes: bool) -> Self {
        self.serve_before_ready = yes;
        self
    }

    /// Fetches a joining node's state from a peer's client port with TLS
    /// (the nodes' client ports use TLS): `config` holds the CA of their
    /// certificates, and this node's own if they ask for one.
    pub fn peer_tls(mut self, config: Arc<ClientConfig>) -> Self {
        self.peer_tls = Some(config);
        self
    }

    /// Builds the node that will serve clients on `listener`.
    pub async fn build(self, listener: TcpListener) -> Result<Node, NodeError> {
        let local = listener.local_addr()?;
        let (store, writer) = self.open()?;
        let built = self.assemble(store.clone(), listener, local).await;
        match built {
            Ok(mut node) => {
                node.writer = writer;
                Ok(node)
            }
            Err(e) => {
                if let Err(why) = stop_writer(store.durability(), writer).await {
                    tracing::warn!(error = %why, "stopping the log writer");
                }
                Err(e)
            }
        }
    }

    /// Steps 1 and 2: the state (recovered, or new), its writer, the store.
    fn open(&self) -> Result<(Arc<Store>, Option<WriterThread>), NodeError> {
        let Some(config) = self.data_dir.clone() else {
            let state = crate::state::State::new(&self.name, self.opts.log);
            let store = Store::new(SharedState::new(state), None, self.all_hooks())
                .with_rules(self.rules.clone());
            return Ok((Arc::new(store), None));
        };
        let dir = config.dir.clone();
        let recover = || durable::recover(&self.name, config, self.opts.log, server::now_ms());
        // Recovery reads files: off the async workers where there are
        // other workers to run the runtime meanwhile.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let rec = if multi {
            tokio::task::block_in_place(recover)
        } else {
            recover()
        }
        .map_err(NodeError::Recover)?;
        let (state, info, wr) = rec.split();
        tracing::info!(
            dir = %dir.display(),
            snapshot = ?info.snapshot,
            events = info.events,
            states = info.states,
            torn_bytes = info.torn_bytes,
            tick = ?info.tick,
            "recovered"
        );
        if !info.skipped.is_empty() {
            tracing::info!(
                ticks = %info.skipped,
                "unclean stop: own ticks above the last logged change declared never used"
            );
        }
        for (f, why) in &info.bad_snapshots {
            tracing::warn!(file = %f.display(), %why, "snapshot not used");
        }
        let shared = SharedState::new(state);
        let (d, writer) = durable::start(shared.clone(), wr).map_err(NodeError::Writer)?;
        let store = Store::new(shared, Some(d), self.all_hooks()).with_rules(self.rules.clone());
        Ok((Arc::new(store), Some(writer)))
    }

    /// Steps 3 to 6.
    async fn assemble(
        self,
        store: Arc<Store>,
        listener: TcpListener,
        local: SocketAddr,
    ) -> Result<Node, NodeError> {
        for file in &self.load {
            let r = store.load_file(file).map_err(|source| NodeError::Load {
                file: file.clone(),
                source,
            })?;
            tracing::info!(file = %file.display(), applied = r.applied, skipped = r.skipped, states = r.states, "loaded");
            if r.truncated {
                tracing::warn!(file = %file.display(), "the file ends inside a record (written during a crash?); loaded what precedes it");
            }
        }
        if self.authoritative {
            store.state_mut().discard_missing();
        }
        let (has_tick, has_data) = {
            let st = store.state();
            (st.tick().is_some(), st.tick().is_some_and(|t| t > 0))
        };
        match (self.init, self.start) {
            (Some(_), _) if has_data => {
                tracing::warn!("the node already has data: --init ignored");
                store.state_mut().make_ready();
            }
            (Some(value), _) => store.init(value)?,
            (None, _) if has_tick => {}
            (None, Start::Ready) => store.state_mut().make_ready(),
            (None, Start::Force) => {
                tracing::warn!("--force: serving without the cluster's data");
                store.state_mut().make_ready();
            }
            (None, Start::Join) => {}
        }
        let bus = match self.bus {
            None => None,
            Some(BusSpec::Given(bus)) => Some(bus),
            Some(BusSpec::Mqtt { config, listener }) => {
                let bus: Arc<dyn Bus> = match listener {
                    Some(l) => MqttBus::start_on(config, l).await?,
                    None => MqttBus::start(config).await?,
                };
                Some(bus)
            }
        };
        let view = Arc::new(ClusterView::default());
        let protocol = bus.as_ref().map(|bus| {
            let host = match &self.advertise {
                Some(h) => h.clone(),
                None => local.ip().to_string(),
            };
            let client_addr = crate::addr::join(&host, local.port());
            let seed = self
                .seed
                .unwrap_or_else(|| server::now_ms() ^ u64::from(std::process::id()) << 32);
            let core = Core::new(
                &store.state(),
                self.cluster.clone(),
                seed,
                Some(client_addr),
            );
            (bus.clone(), core)
        });
        let topics = Topics::new(&self.cluster.root);
        let server = Server::from_parts(store, bus.map(|b| (b, topics)), view.clone(), self.opts);
        Ok(Node {
            server,
            listener,
            local,
            view,
            protocol,
            writer: None,
            serve_before_ready: self.serve_before_ready,
            peer_tls: self.peer_tls,
        })
    }
}

/// A built node, not serving yet.
pub struct Node {
    server: Arc<Server>,
    listener: TcpListener,
    local: SocketAddr,
    view: Arc<ClusterView>,
    protocol: Option<(Arc<dyn Bus>, Core)>,
    writer: Option<WriterThread>,
    serve_before_ready: bool,
    peer_tls: Option<Arc<ClientConfig>>,
}

/// What a node that is not ready answers every client.
pub const NOT_READY: &str =
    "this node is not ready yet: it is still fetching the cluster's data from a peer; try again shortly";

impl Node {
    /// The server (state, store, options).
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Where it serves clients.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The data directory's writer, if the node has one.
    pub fn durability(&self) -> Option<&Arc<Durability>> {
        self.server.durability()
    }

    /// Runs the node until `shutdown` fires: the protocol, the readiness
    /// wait, serving; then stops the protocol and flushes the log.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), NodeError> {
        tracing::info!(node = %self.server.name(), addr = %self.local, "distkv node running");
        let ready = CancellationToken::new();
        let protocol = self.protocol.take().map(|(bus, core)| {
            tokio::spawn(crate::cluster::node::run(
                self.server.store().clone(),
                self.view.clone(),
                bus,
                core,
                shutdown.clone(),
                ready.clone(),
                self.peer_tls.clone(),
            ))
        });
        let served = async {
            if self.server.state().tick().is_none() && !self.serve_before_ready {
                tracing::info!("waiting for the cluster's data from a peer before serving clients");
                tokio::select! {
                    _ = ready.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                    _ = server::refuse_all(&self.server, &self.listener, NOT_READY) => {}
                }
            }
            server::serve(self.server.clone(), self.listener, shutdown.clone()).await
        }
        .await;
        if let Some(p) = protocol {
            let _ = p.await;
        }
        let flushed = stop_writer(self.server.durability(), self.writer.take()).await;
        served?;
        flushed
    }
}

/// Stops the log writer (if any): writes and fsyncs everything.
async fn stop_writer(
    d: Option<&Arc<Durability>>,
    writer: Option<WriterThread>,
) -> Result<(), NodeError> {
    let (Some(d), Some(h)) = (d, writer) else {
        return Ok(());
    };
    d.request_stop();
    match tokio::task::spawn_blocking(move || h.join()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(NodeError::History(e)),
        _ => Err(NodeError::WriterPanicked),
    }
}
