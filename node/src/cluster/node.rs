//! The async driver: runs a node's [`Core`] against a [`Bus`] and the
//! node's [`Store`].
//!
//! One task owns the `Core`. It wakes on bus messages, on growth of the
//! event log (local changes to broadcast; with a data directory, once the
//! writer has put them in the log), on links coming back and on the
//! protocol's timers; each wake-up handles everything that is waiting under
//! one short state lock, and encodes the changes to broadcast (copied out
//! of the log under it) after letting it go. A change on an idle node is
//! broadcast at once;
//! under load, changes are collected for up to a millisecond, so a message
//! carries many. Fetching a joining node's state
//! runs in its own task, over TLS when the nodes' client ports use it
//! (`peer_tls`).
//!
//! Every event taken off the bus or fetched passes the store's commit path
//! ([`Store::admission`] for the core, `Tx::commit` for a transfer).

use std::sync::Arc;
use std::time::Duration;

use distkv_model::UpdateEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::core::{Core, Notice};
use super::msg::BATCH_BYTES;
use crate::addr::HostPort;
use crate::bus::Bus;
use crate::client::{Client, ConnectOptions};
use crate::commit::{Change, Road, Store};
use crate::persist::durable::Refusal;
use crate::pyfiles::PyState;
use crate::tls::{rustls::ClientConfig, Connector};
use crate::view::ClusterView;
use distkv_client::fetch::{FetchError as Read, StateReader};

/// Most bus messages handled under one lock.
const RECEIVE_BATCH: usize = 64;
/// No more bus messages are read ahead to be handled under one lock once
/// they take this many bytes (a full `update` batch: its decoded events
/// wait in memory until the lock is taken).
const RECEIVE_BYTES: usize = BATCH_BYTES;
/// Under load, the node's own changes are broadcast at most this often.
const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// A state transfer waiting for the writer to catch up looks again at
/// least this often.
const BACKLOG_POLL: Duration = Duration::from_millis(100);

/// Runs the protocol until `shutdown` fires, reporting to `view`. `ready`
/// is cancelled once the node may serve clients. A joining node fetches
/// the state from a peer's client port with TLS if `peer_tls` is given.
pub async fn run(
    store: Arc<Store>,
    view: Arc<ClusterView>,
    bus: Arc<dyn Bus>,
    core: Core,
    shutdown: CancellationToken,
    ready: CancellationToken,
    peer_tls: Option<Arc<ClientConfig>>,
) {
    let mut core = core.with_admission(store.admission(Road::Bus));
    let name = store.state().me().to_string();
    let t0 = Instant::now();
    let now = move || t0.elapsed().as_millis() as u64;
    let mut rx = bus.subscribe(&core.filter());
    // A node with a data directory broadcasts its changes once they are in
    // its log (see `Core::allow_broadcast_below`); one without, at once.
    let written = store.durability().map(|d| d.subscribe());
    let mut changes = written.clone().unwrap_or_else(|| store.subscribe());
    let allow = |core: &mut Core| {
        if let Some(w) = &written {
            core.allow_broadcast_below(*w.borrow() + 1);
        }
    };
    let mut links = bus.links();
    let (fetched_tx, mut fetched) = mpsc::channel::<bool>(1);
    {
        let mut st = store.state_mut();
        if st.tick().is_some() {
            ready.cancel();
        }
        core.start(&mut st, now());
    }
    let mut view_at = 0;
    // Broadcast batching: an idle node sends a change at once; under load,
    // changes are sent at most every BATCH_WINDOW, many per message.
    let mut last_sent = Instant::now();
    let mut pending = false;
    loop {
        allow(&mut core);
        flush(&*bus, &mut core);
        if now() >= view_at {
            view_at = now() + 200;
            view.publish(core.view(now()), core.live_nodes(now()));
        }
        for n in core.take_notices() {
            match n {
                Notice::Fetch { node, addr } => {
                    let Some(addr) = addr else {
                        tracing::warn!(%node, "ready peer did not say where it serves clients");
                        core.fetch_done(false, now());
                        continue;
                    };
                    let candidates = fetch_candidates(&addr, &bus.reached_at(&node));
                    tracing::info!(%node, addresses = %candidates.join(", "), "fetching the state from a ready peer");
                    let (store, tx) = (store.clone(), fetched_tx.clone());
                    let tls = peer_tls.clone();
                    tokio::spawn(async move {
                        let ok = match fetch_from_any(&store, &node, &candidates, tls).await {
                            Ok((at, n)) => {
                                tracing::info!(%node, addr = %at, entries = n, "state fetched; ready");
                                store.state_mut().make_ready();
                                true
                            }
                            Err(e) => {
                                tracing::warn!(%node, error = %e, "fetching the state failed");
                                false
                            }
                        };
                        let _ = tx.send(ok).await;
                    });
                }
                Notice::Bootstrap => {
                    tracing::info!("no node of the cluster has data: starting it here");
                    store.state_mut().make_ready();
                    ready.cancel();
                }
                Notice::NameCollision => {
                    tracing::error!(node = %name, "another node uses this name; stopping");
                    shutdown.cancel();
                }
            }
        }
        let mut wake = t0 + Duration::from_millis(core.next_deadline().min(1 << 40));
        if pending {
            wake = wake.min(last_sent + BATCH_WINDOW);
        }
        let sleep = tokio::time::sleep_until(wake);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            m = rx.recv() => {
                let Some(first) = m else {
                    tracing::error!("the bus closed our subscription: replication stopped");
                    break;
                };
                // The messages waiting, read (decoded) before the state is
                // taken, then handled under one lock.
                let mut msgs = vec![first];
                let mut bytes = msgs[0].payload.len();
                while msgs.len() < RECEIVE_BATCH && bytes < RECEIVE_BYTES {
                    let Ok(m) = rx.try_recv() else { break };
                    bytes += m.payload.len();
                    msgs.push(m);
                }
                let read: Vec<_> = msgs.iter().map(|m| core.read(&m.topic, &m.payload)).collect();
                {
                    let mut tx = store.begin();
                    let st = tx.state_mut();
                    let t = now();
                    for m in read {
                        core.take(st, t, m);
                        // Broadcast as we go: a big batch of received
                        // events must not push ours out of the event log.
                        core.poll(st, t);
                    }
                    // Dropping `tx` announces what was applied.
                }
                (pending, last_sent) = (false, Instant::now());
            }
            r = changes.changed(), if !pending => {
                if r.is_err() {
                    break;
                }
                allow(&mut core);
                if last_sent.elapsed() >= BATCH_WINDOW {
                    core.poll(&mut store.state_mut(), now());
                    last_sent = Instant::now();
                } else {
                    pending = true; // more changes join this batch
                }
            }
            r = links.changed() => {
                if r.is_err() {
                    break;
                }
                core.link_up(now());
            }
            Some(ok) = fetched.recv() => {
                core.fetch_done(ok, now());
                if ok {
                    ready.cancel();
                }
            }
            _ = sleep => {
                core.poll(&mut store.state_mut(), now());
                if pending {
                    (pending, last_sent) = (false, Instant::now());
                }
            }
        }
    }
    flush(&*bus, &mut core);
}

fn flush(bus: &dyn Bus, core: &mut Core) {
    for (topic, payload) in core.take_outgoing() {
        bus.publish(&topic, payload);
    }
}

/// Why fetching the state from a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The peer could not be reached, broke off, or sent something that
    /// is not an entry.
    #[error(transparent)]
    Read(#[from] distkv_client::fetch::FetchError),
    /// This node cannot take the state now (its history cannot be
    /// written); the fetch is tried again later.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The commit path refused the state (its history cannot be written
    /// now, or a check refused it).
    #[error(transparent)]
    Commit(#[from] crate::commit::ChangeError),
    /// No address of the peer answered as that peer.
    #[error("no address of the ready peer answered: {0}")]
    Unreachable(String),
}

/// Every address worth trying for the client port of a ready peer: the
/// one it advertises first, then the host of each address its broker was
/// reached at (e.g. the `--peer` given) with the advertised port. Nodes
/// that share a host name, or sit behind NAT or in containers, advertise
/// an address only they can use, while their broker was reached fine.
pub fn fetch_candidates(advertised: &str, brokers: &[String]) -> Vec<String> {
    let mut out = vec![advertised.to_string()];
    let Ok(adv) = HostPort::parse(advertised) else {
        return out;
    };
    for b in brokers {
        if let Ok(b) = HostPort::parse(b) {
            let a = HostPort::new(&b.host, adv.port).to_string();
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// How long one address of a ready peer may take to greet.
const FETCH_CONNECT: Duration = Duration::from_secs(3);

/// Connects to every address in `candidates` at once (with TLS if `tls`
/// is given, checking each address's host name) and fetches the state
/// from the first that greets as `node`. Logs each address that failed.
/// Returns the address used and the number of entries applied.
pub async fn fetch_from_any(
    store: &Store,
    node: &str,
    candidates: &[String],
    tls: Option<Arc<ClientConfig>>,
) -> Result<(String, usize), FetchError> {
    let mut tries = tokio::task::JoinSet::new();
    for addr in candidates {
        let addr = addr.clone();
        let tls = tls.clone();
        tries.spawn(async move {
            let r = match peer_connector(&addr, tls) {
                Ok(tls) => {
                    let opts = ConnectOptions {
                        timeout: FETCH_CONNECT,
                        tls,
                        ..ConnectOptions::default()
                    };
                    Client::connect(addr.as_str(), opts).await
                }
                Err(e) => Err(e),
            };
            (addr, r)
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tries.join_next().await {
        let Ok((addr, r)) = done else { continue };
        match r {
            Ok(c) if c.greeting().node == node => {
                tries.abort_all();
                let n = fetch_with(store, &c).await?;
                return Ok((addr, n));
            }
            Ok(c) => {
                let why = format!("answered as node {}", c.greeting().node);
                tracing::warn!(%node, %addr, %why, "not the ready peer");
                failed.push(format!("{addr}: {why}"));
            }
            Err(e) => {
                tracing::info!(%node, %addr, error = %e, "cannot reach the ready peer there");
                failed.push(format!("{addr}: {e}"));
            }
        }
    }
    Err(FetchError::Unreachable(failed.join("; ")))
}

/// The TLS connector for a peer's client address `host:port`, if `tls`.
fn peer_connector(
    addr: &str,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Option<Connector>, crate::client::ClientError> {
    let Some(config) = tls else { return Ok(None) };
    let host = HostPort::parse(addr)
        .map(|a| a.host)
        .unwrap_or_else(|_| addr.to_owned());
    Connector::new(config, &host)
        .map(Some)
        .map_err(|e| crate::client::ClientError::Tls(std::io::Error::other(e)))
}

/// Copies the whole state of the node serving clients at `addr`: every
/// entry (meta tree included) with its full chain, then the tick
/// bookkeeping. Returns the number of entries applied.
pub async fn fetch_state(store: &Store, addr: &str) -> Result<usize, FetchError> {
    let client = Client::connect(addr, ConnectOptions::default())
        .await
        .map_err(Read::from)?;
    fetch_with(store, &client).await
}

/// [`fetch_state`] over a connected client.
async fn fetch_with(store: &Store, client: &Client) -> Result<usize, FetchError> {
    let mut reader = StateReader::new(client, true);
    let mut count = 0;
    let mut batch = Vec::new();
    while let Some(e) = reader.next().await? {
        // An entry without a change of its own carries nothing to apply.
        let Some(chain) = e.chain else { continue };
        batch.push(UpdateEvent {
            path: e.path,
            chain,
            value: e.value,
            tock: e.tock,
        });
        if batch.len() >= 1000 {
            count += apply_all(store, &mut batch).await?;
        }
    }
    count += apply_all(store, &mut batch).await?;
    let state = PyState::from_value(&reader.ticks().await?).map_err(Read::Entry)?;
    state.apply_to(&mut store.state_mut());
    Ok(count)
}

/// Commits `batch` once the writer has caught up enough (a state bigger
/// than the backlog bound is fetched at the disk's pace); fails if the
/// history cannot be written or a check refuses the batch.
async fn apply_all(store: &Store, batch: &mut Vec<UpdateEvent>) -> Result<usize, FetchError> {
    loop {
        let mut written = {
            let mut tx = store.begin();
            match (store.admits(tx.state()), store.durability()) {
                (Ok(()), _) => {
                    let n = batch.len();
                    tx.commit(Road::Transfer, Change::Events(std::mem::take(batch)))?;
                    return Ok(n);
                }
                (Err(Refusal::Backlog { .. }), Some(d)) => d.subscribe(),
                (Err(e), _) => return Err(e.into()),
            }
        };
        let _ = tokio::time::timeout(BACKLOG_POLL, written.changed()).await;
    }
}
