//! `distkv server`: run a node.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use distkv_model::Value;
use distkv_node::addr;
use distkv_node::cluster::actor::ActorConfig;
use distkv_node::cluster::core::ClusterConfig;
use distkv_node::cluster::mqtt::{MqttConfig, MqttMode, MqttTls};
use distkv_node::config::{BusTls, ClusterSettings, Config, ServerSettings};
use distkv_node::node::{BusSpec, NodeBuilder, NodeError, Start};
use distkv_node::persist::durable::{self, PersistError};
use distkv_node::server::{self, ServerOptions};
use distkv_node::tls::{rustls::ClientConfig, Acceptor, ClientTls, ServerTls};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::eval::parse_value;

/// Run a DistKV node.
///
/// The node serves DistKV's client protocol (msgpack over TCP, default port
/// 27586). A node that is not told to join others serves on its own at once.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// This node's name; unique in the cluster.
    pub name: String,
    /// Initial value of the root entry for a new cluster (`-` = nil).
    #[arg(short = 'I', long = "init", value_name = "VALUE")]
    pub init: Option<String>,
    /// Evaluate the init value as an expression (`123`, `(1, 'a')`, `True`).
    #[arg(short = 'e', long = "eval", requires = "init")]
    pub eval: bool,
    /// Address to listen on (overrides `server.bind_default.host`).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Client port (overrides `server.bind_default.port`; 0 = any free port).
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Load these files before serving: distkv snapshots, or DistKV-py save
    /// and log files (in order; deletions included).
    #[arg(short = 'l', long = "load", value_name = "FILE")]
    pub load: Vec<std::path::PathBuf>,
    /// The loaded data are complete: ticks still missing afterwards are
    /// declared superseded.
    #[arg(short = 'a', long = "authoritative", requires = "load")]
    pub authoritative: bool,
    /// Keep history in this directory (default `./distkv-data/NAME`, or
    /// `server.data_dir`).
    #[arg(long, value_name = "DIR", conflicts_with = "no_data_dir")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Keep everything in RAM only: no files, nothing survives a restart.
    #[arg(long)]
    pub no_data_dir: bool,
    /// When the event log is fsynced: `always` (replies to changes wait for
    /// it), `interval` (at most `server.persist.fsync_interval` seconds of
    /// changes at risk; the default) or `never`.
    #[arg(long, value_name = "POLICY")]
    pub fsync: Option<String>,
    /// Worker threads (overrides `server.threads`; 0 = one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Port of this node's embedded MQTT broker, which the other nodes
    /// connect to (overrides `server.bus.port`; 0 = any free port).
    #[arg(long, value_name = "PORT")]
    pub bus_port: Option<u16>,
    /// Another node's broker, `HOST:BUSPORT` (repeatable; more peers are
    /// learned from them). A node without peers starts a new cluster.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// Use one external MQTT broker for all nodes (e.g.
    /// `mqtt://broker:1883`) instead of the embedded mesh.
    #[arg(long, value_name = "URL", conflicts_with_all = ["peers", "bus_port"])]
    pub mqtt: Option<String>,
    /// Host name or address other nodes use to reach this one (default:
    /// the bind address, or this machine's host name when binding to all
    /// addresses).
    #[arg(long, value_name = "HOST")]
    pub advertise: Option<String>,
    /// Serve clients at once even without data, instead of first fetching
    /// the state from a peer.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Serve clients with TLS: this node's certificate chain, PEM (sets
    /// `server.bind_default.ssl.cert`; needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, PEM (`server.bind_default.ssl.key`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// TLS between the nodes too: the CA that signed every node's
    /// certificate (sets `server.bus.ssl` to the client port's certificate
    /// and key, and this CA). Each node's broker then serves its
    /// certificate and requires the other nodes'; a joining node checks its
    /// peers' client ports against this CA. With `--mqtt mqtts://…`: the
    /// broker's CA.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// Worker threads the server's runtime should have (0 = one per core).
pub fn threads(args: &ServerArgs, cfg: &Config) -> anyhow::Result<usize> {
    Ok(match args.threads {
        Some(n) => n,
        None => cfg.server()?.threads,
    })
}

/// Runs a node until SIGTERM or ctrl-c.
///
/// The order of the start matters: first everything that can be checked
/// without side effects, then the ports (a port in use fails the start
/// before the data directory is touched), then the data directory (locked
/// before anything in it is read or written). A start that fails after
/// that removes a data directory it created.
pub async fn run(args: ServerArgs, cfg: Config) -> anyhow::Result<()> {
    let shutdown = stop_on_signal();
    raise_fd_limit();
    let mut settings = cfg.server()?;
    if let Some(b) = &args.bind {
        settings.host = b.clone();
    }
    if let Some(p) = args.port {
        settings.port = p;
    }
    if let Some(f) = &args.fsync {
        let mut c = cfg.clone();
        c.set_override(&format!("server.persist.fsync={f}"))?;
        settings.persist = c.server()?.persist;
    }
    let mut cluster = settings.cluster.clone();
    if let Some(p) = args.bus_port {
        cluster.bus_port = p;
    }
    cluster.peers.extend(args.peers.iter().cloned());
    if args.mqtt.is_some() {
        cluster.mqtt = args.mqtt.clone();
    }
    if args.advertise.is_some() {
        cluster.advertise = args.advertise.clone();
    }
    tls_flags(&args, &mut settings, &mut cluster)?;
    let config = cluster_config(&cluster)?;
    let alone = cluster.peers.is_empty() && cluster.mqtt.is_none();
    // Bad certificate files stop the start here, before any port is bound.
    let tls = NodeTls::load(&settings, &cluster, !alone)?;
    let init = match args.init.as_deref() {
        None => None,
        Some("-") => Some(Value::Nil),
        Some(text) if args.eval => Some(parse_value(text).context("--init")?),
        Some(text) => Some(Value::str(text)),
    };

    let listener = server::bind(&settings.host, settings.port)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}",
                addr::join(&settings.host, settings.port)
            )
        })?;
    let bus_listener = match cluster.mqtt {
        Some(_) => None,
        None => Some(
            server::bind(&settings.host, cluster.bus_port)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} (the bus port)",
                        addr::join(&settings.host, cluster.bus_port)
                    )
                })?,
        ),
    };

    let mut opts = ServerOptions::from(&settings);
    opts.tls = tls.clients;
    let dir = (!args.no_data_dir).then(|| match (&args.data_dir, &settings.data_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.into(),
        (None, None) => Path::new("distkv-data").join(&args.name),
    });
    let created = dir.as_deref().and_then(first_missing);
    let host = advertised_host(cluster.advertise.as_deref(), &settings.host);
    let start = match (alone, args.force) {
        (true, _) => Start::Ready,
        (false, true) => Start::Force,
        (false, false) => Start::Join,
    };
    let mut builder = NodeBuilder::new(&args.name)
        .options(opts)
        .scripts(settings.scripts)
        .load(args.load.iter().cloned())
        .authoritative(args.authoritative)
        .init(init)
        .start(start)
        .bus(BusSpec::Mqtt {
            config: mqtt_config(&args.name, &cluster, &settings.host, &host, tls.bus),
            listener: bus_listener,
        })
        .cluster(config)
        .advertise(host);
    if let Some(peer_tls) = tls.peers {
        builder = builder.peer_tls(peer_tls);
    }
    if let Some(dir) = &dir {
        builder = builder.data_dir(durable::durable_config(dir, &settings.persist));
    }
    let node = match builder.build(listener).await {
        Ok(node) => node,
        // A locked directory belongs to the process holding it, even if
        // this start created it an instant earlier.
        Err(NodeError::Recover(e @ PersistError::Locked { .. })) => {
            anyhow::bail!("{e}: stop it first, or give this node its own --data-dir")
        }
        Err(e) => {
            remove_created(created.as_deref());
            return Err(match (e, &dir) {
                (NodeError::Recover(e), Some(dir)) => {
                    anyhow::Error::new(e).context(format!("cannot recover from {}", dir.display()))
                }
                (e, _) => e.into(),
            });
        }
    };
    #[cfg(unix)]
    if let Some(d) = node.durability().cloned() {
        // SIGHUP: start a new log segment (e.g. before copying the files away).
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    d.request_rotate();
                }
            });
        }
    }
    node.run(shutdown).await?;
    Ok(())
}

/// Applies `--tls-cert`/`--tls-key` (the client port) and `--tls-ca` (the
/// bus, with the client port's certificate) over the configuration.
fn tls_flags(
    args: &ServerArgs,
    settings: &mut ServerSettings,
    cluster: &mut ClusterSettings,
) -> anyhow::Result<()> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let client_ca = settings.tls.take().and_then(|t| t.client_ca);
        settings.tls = Some(ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca,
        });
    }
    if let Some(ca) = &args.tls_ca {
        let Some(t) = &settings.tls else {
            anyhow::bail!(
                "--tls-ca needs this node's certificate: --tls-cert/--tls-key or server.bind_default.ssl"
            );
        };
        cluster.tls = Some(BusTls {
            identity: Some((t.cert.clone(), t.key.clone())),
            ca: Some(ca.clone()),
        });
    }
    Ok(())
}

/// The node's TLS settings with their files read.
struct NodeTls {
    /// The client port's (`server.bind_default.ssl`).
    clients: Option<Acceptor>,
    /// The bus's (`server.bus.ssl`).
    bus: Option<MqttTls>,
    /// A joining node's, for the peers' client ports: the bus CA (or the
    /// system's), this node's certificate if the bus has one.
    peers: Option<Arc<ClientConfig>>,
}

impl NodeTls {
    /// Reads every file. `joins`: the node may fetch a peer's state, so it
    /// needs a CA for the peers' client ports if they use TLS.
    fn load(
        settings: &ServerSettings,
        cluster: &ClusterSettings,
        joins: bool,
    ) -> anyhow::Result<NodeTls> {
        let clients = match &settings.tls {
            Some(t) => Some(t.acceptor().context(
                "TLS on the client port (server.bind_default.ssl, --tls-cert/--tls-key)",
            )?),
            None => None,
        };
        let bus_key = "TLS between the nodes (server.bus.ssl, --tls-ca)";
        let peer_side = |b: Option<&BusTls>| ClientTls {
            ca: b.and_then(|b| b.ca.clone()),
            identity: b.and_then(|b| b.identity.clone()),
        };
        let bus = match &cluster.tls {
            None => None,
            Some(b) => {
                let acceptor = match (&b.identity, &cluster.mqtt) {
                    (Some((cert, key)), None) => Some(
                        ServerTls {
                            cert: cert.clone(),
                            key: key.clone(),
                            client_ca: b.ca.clone(),
                        }
                        .acceptor()
                        .context(bus_key)?,
                    ),
                    _ => None,
                };
                let client = peer_side(Some(b)).config().context(bus_key)?;
                Some(MqttTls { acceptor, client })
            }
        };
        let peers = match &settings.tls {
            Some(_) if joins => Some(
                peer_side(cluster.tls.as_ref())
                    .config()
                    .context("TLS to the other nodes' client ports (server.bus.ssl.ca)")?,
            ),
            _ => None,
        };
        Ok(NodeTls {
            clients,
            bus,
            peers,
        })
    }
}

/// The cluster protocol's timing and limits from the settings.
fn cluster_config(cluster: &ClusterSettings) -> anyhow::Result<ClusterConfig> {
    let config = ClusterConfig {
        root: cluster.root.clone(),
        ping: ActorConfig {
            cycle: cluster.cycle_ms,
            gap: cluster.gap_ms,
            ..ActorConfig::main()
        },
        // A crashed node waits three cycles for others to send back what
        // it broadcast but lost before it declares the rest unused.
        own_gap_grace: 3 * cluster.cycle_ms,
        // A cluster whose nodes all start empty: after two cycles without
        // a ready node, the smallest name starts it.
        join_wait: 2 * cluster.cycle_ms,
        delete: ActorConfig {
            cycle: cluster.delete_cycle_ms,
            gap: cluster.delete_gap_ms,
            ..ActorConfig::delete()
        },
        ..ClusterConfig::default()
    };
    if !(config.ping.is_valid() && config.delete.is_valid()) {
        anyhow::bail!(
            "server.ping and server.delete: the cycle must be at least three gaps (and positive)"
        );
    }
    Ok(config)
}

/// The outermost directory on the way to `dir` that does not exist yet:
/// what opening `dir` creates.
fn first_missing(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && a.symlink_metadata().is_err())
        .last()
        .map(Path::to_path_buf)
}

/// Removes the data directory a failed start created.
fn remove_created(created: Option<&Path>) {
    if let Some(dir) = created {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the data directory this failed start created");
        }
    }
}

/// The host name other nodes reach this one by (an IPv6 address without
/// brackets: the port is joined on with [`addr::join`]).
fn advertised_host(advertise: Option<&str>, bind: &str) -> String {
    if let Some(a) = advertise {
        return addr::unbracket(a.trim()).to_string();
    }
    if !addr::is_unspecified(bind) {
        return addr::unbracket(bind.trim()).to_string();
    }
    hostname().unwrap_or_else(|| "localhost".into())
}

fn hostname() -> Option<String> {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
        let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if r == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return std::str::from_utf8(&buf[..end]).ok().map(str::to_string);
        }
    }
    None
}

/// The bus settings: the embedded broker mesh, or one external broker.
fn mqtt_config(
    name: &str,
    cluster: &ClusterSettings,
    bind: &str,
    host: &str,
    tls: Option<MqttTls>,
) -> MqttConfig {
    let mode = match &cluster.mqtt {
        Some(url) => MqttMode::External { url: url.clone() },
        None => MqttMode::Mesh {
            listen: (bind.to_string(), cluster.bus_port),
            // With port 0 the broker reports the port it got.
            advertise: (cluster.bus_port != 0).then(|| addr::join(host, cluster.bus_port)),
            peers: cluster.peers.clone(),
        },
    };
    MqttConfig {
        node: name.to_string(),
        root: cluster.root.clone(),
        mode,
        tls,
    }
}

/// Raises the soft limit on open files to the hard limit, so the default
/// connection cap (10 000) is not cut short by a 1024 soft limit.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    tracing::warn!("cannot raise the open-files limit");
                }
            }
        }
    }
}

/// A token cancelled on SIGTERM or ctrl-c (SIGINT).
///
/// The handlers are installed before this returns, so a stop request that
/// arrives at any point of the start (even during recovery) is kept and
/// honoured, never left to the default action that kills the process
/// without flushing the log. A signal that cannot be watched is logged and
/// ignored, never taken for a stop request.
fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        fn watch(kind: SignalKind, name: &str) -> Option<Signal> {
            signal(kind)
                .inspect_err(
                    |e| tracing::warn!(error = %e, signal = name, "cannot watch for the signal"),
                )
                .ok()
        }
        async fn next(s: &mut Option<Signal>) {
            match s {
                Some(s) => _ = s.recv().await,
                None => std::future::pending().await,
            }
        }
        let mut term = watch(SignalKind::terminate(), "SIGTERM");
        let mut int = watch(SignalKind::interrupt(), "SIGINT");
        tokio::spawn(async move {
            let which = tokio::select! {
                () = next(&mut term) => "SIGTERM",
                () = next(&mut int) => "SIGINT",
            };
            tracing::info!(signal = which, "shutting down");
            cancel.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        match tokio::signal::ctrl_c().await {
            Ok(()) => {
                tracing::info!(signal = "ctrl-c", "shutting down");
                cancel.cancel();
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch for ctrl-c"),
        }
    });
    token
}
