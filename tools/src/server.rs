//! `distkv server`: run a node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use distkv_model::Value;
use distkv_node::addr;
use distkv_node::cluster::core::{ClusterConfig, Core};
use distkv_node::cluster::mqtt::{MqttBus, MqttConfig, MqttMode};
use distkv_node::cluster::{self, actor::ActorConfig, bus::Bus, msg::Topics};
use distkv_node::config::{ClusterSettings, Config, ServerSettings};
use distkv_node::persist::durable::{self, PersistError};
use distkv_node::server::{self, Server, ServerOptions};
use tokio::net::TcpListener;
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
    let config = cluster_config(&cluster)?;
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

    let opts = ServerOptions::from(&settings);
    let dir = (!args.no_data_dir).then(|| match (&args.data_dir, &settings.data_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.into(),
        (None, None) => Path::new("distkv-data").join(&args.name),
    });
    let created = dir.as_deref().and_then(first_missing);
    let (server, writer) = match dir {
        None => (Server::new(&args.name, opts), None),
        Some(dir) => match open_data_dir(&args.name, &dir, &settings, opts) {
            Ok((server, writer)) => (server, Some(writer)),
            // A locked directory belongs to the process holding it, even
            // if this start created it an instant earlier.
            Err(e) if matches!(e.downcast_ref(), Some(PersistError::Locked { .. })) => {
                anyhow::bail!("{e}: stop it first, or give this node its own --data-dir")
            }
            Err(e) => {
                remove_created(created.as_deref());
                return Err(e);
            }
        },
    };
    let host = advertised_host(cluster.advertise.as_deref(), &settings.host);
    let prepared = async {
        prepare(
            &server,
            &args,
            init,
            cluster.peers.is_empty() && cluster.mqtt.is_none(),
        )?;
        start_bus(&args.name, &cluster, &settings.host, &host, bus_listener).await
    };
    let bus = match prepared.await {
        Ok(bus) => bus,
        Err(e) => {
            if let Err(why) = stop_writer(&server, writer).await {
                tracing::warn!(error = %why, "stopping the log writer");
            }
            remove_created(created.as_deref());
            return Err(e);
        }
    };

    let local = listener.local_addr()?;
    tracing::info!(node = %args.name, addr = %local, "distkv node running");
    server.attach_bus(bus.clone(), Topics::new(&cluster.root));
    let seed = server::now_ms() ^ u64::from(std::process::id()) << 32;
    let client_addr = addr::join(&host, local.port());
    let core = Core::new(&server.state(), config, seed, Some(client_addr));
    let ready = CancellationToken::new();
    let protocol = tokio::spawn(cluster::node::run(
        server.clone(),
        bus,
        core,
        shutdown.clone(),
        ready.clone(),
    ));
    if server.state().tick().is_none() {
        tracing::info!("waiting for the cluster's data from a peer before serving clients");
        tokio::select! {
            _ = ready.cancelled() => {}
            _ = shutdown.cancelled() => {}
            _ = server::refuse_all(&server, &listener, NOT_READY) => {}
        }
    }
    #[cfg(unix)]
    if let Some(d) = server.durability().cloned() {
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
    server::serve(Arc::clone(&server), listener, shutdown).await?;
    let _ = protocol.await;
    stop_writer(&server, writer).await
}

/// What a node that is not ready answers every client.
const NOT_READY: &str =
    "this node is not ready yet: it is still fetching the cluster's data from a peer; try again shortly";

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

/// Locks and recovers the data directory `dir` and starts its writer.
fn open_data_dir(
    name: &str,
    dir: &Path,
    settings: &ServerSettings,
    opts: ServerOptions,
) -> anyhow::Result<(Arc<Server>, durable::WriterThread)> {
    let config = durable::durable_config(dir, &settings.persist);
    let rec = match tokio::task::block_in_place(|| {
        durable::recover(name, config, opts.log, server::now_ms())
    }) {
        Ok(rec) => rec,
        // The message names the directory.
        Err(e @ PersistError::Locked { .. }) => return Err(e.into()),
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot recover from {}", dir.display()))
            )
        }
    };
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
    let server = Server::with_state(state, opts);
    let (d, handle) = durable::start(server.clone(), wr)?;
    server.attach_durability(d);
    Ok((server, handle))
}

/// Loads the `-l` files and settles whether the node serves at once.
fn prepare(
    server: &Server,
    args: &ServerArgs,
    init: Option<Value>,
    alone: bool,
) -> anyhow::Result<()> {
    for file in &args.load {
        let r = server
            .load_file(file)
            .with_context(|| format!("cannot load {}", file.display()))?;
        tracing::info!(file = %file.display(), applied = r.applied, skipped = r.skipped, states = r.states, "loaded");
        if r.truncated {
            tracing::warn!(file = %file.display(), "the file ends inside a record (written during a crash?); loaded what precedes it");
        }
    }
    if args.authoritative {
        server.state().discard_missing();
    }
    let has_data = server.state().tick().is_some_and(|t| t > 0);
    match init {
        Some(_) if has_data => {
            tracing::warn!("the node already has data: --init ignored");
            server.make_ready();
        }
        Some(value) => server.init(value)?,
        None if server.state().tick().is_some() => {}
        None if alone => server.make_ready(),
        None if args.force => {
            tracing::warn!("--force: serving without the cluster's data");
            server.make_ready();
        }
        None => {}
    }
    Ok(())
}

/// Stops the log writer (if any): writes and fsyncs everything.
async fn stop_writer(server: &Server, writer: Option<durable::WriterThread>) -> anyhow::Result<()> {
    let (Some(d), Some(h)) = (server.durability(), writer) else {
        return Ok(());
    };
    d.request_stop();
    match tokio::task::spawn_blocking(move || h.join()).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => anyhow::bail!("writing history failed: {e}"),
        _ => anyhow::bail!("the log writer thread panicked"),
    }
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

/// Starts the bus: the embedded broker mesh, or one external broker.
async fn start_bus(
    name: &str,
    cluster: &ClusterSettings,
    bind: &str,
    host: &str,
    listener: Option<TcpListener>,
) -> anyhow::Result<Arc<dyn Bus>> {
    let mode = match &cluster.mqtt {
        Some(url) => MqttMode::External { url: url.clone() },
        None => MqttMode::Mesh {
            listen: (bind.to_string(), cluster.bus_port),
            // With port 0 the broker reports the port it got.
            advertise: (cluster.bus_port != 0).then(|| addr::join(host, cluster.bus_port)),
            peers: cluster.peers.clone(),
        },
    };
    let config = MqttConfig {
        node: name.to_string(),
        root: cluster.root.clone(),
        mode,
    };
    let bus = match listener {
        Some(l) => MqttBus::start_on(config, l).await,
        None => MqttBus::start(config).await,
    }
    .context("cannot start the bus to other nodes")?;
    Ok(bus)
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
