//! Every road a change can take passes the commit path's hooks.
//!
//! A recording [`CommitHook`] is installed on real nodes (built by the one
//! node builder), and each road is driven for real: `--init`, a `-l` file,
//! a snapshot made by `distkv-replay restore` and loaded, client
//! `set_value`/`delete_value`/`delete_tree`/`update` over TCP, another
//! node's event over the bus (the in-memory bus, and once over real MQTT),
//! and a state transfer to a joining node. The hook must see each; and a
//! hook that refuses must stop each road with nothing applied.

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_node::cluster::mem::{Faults, MemHub};
use distkv_node::commit::{CommitHook, Denied, Proposal, Road};
use distkv_node::node::{BusSpec, NodeBuilder, NodeError, Start};
use distkv_node::persist::durable::DurableConfig;
use distkv_node::persist::snap;
use distkv_node::server::{self, Server};
use distkv_node::state::State;
use distkv_tests::{eventually, p, quick_cluster, within, ClusterNode, Raw, DEADLINE};
use tokio_util::sync::CancellationToken;

/// What the hook refuses with.
const NO: &str = "refused by the test hook";

/// Records every proposal it is asked about; refuses them all while
/// `refuse` is set.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(Road, &'static str, Path)>>,
    refuse: AtomicBool,
}

impl CommitHook for Recorder {
    fn check(&self, road: Road, proposal: Proposal<'_>, _: &State) -> Result<(), Denied> {
        let (kind, path) = match proposal {
            Proposal::Set {
                path,
                value: Some(_),
            } => ("set", path),
            Proposal::Set { path, value: None } => ("delete", path),
            Proposal::DeleteTree { path } => ("delete_tree", path),
            Proposal::Event(ev) => ("event", &ev.path),
        };
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((road, kind, path.clone()));
        if self.refuse.load(Ordering::SeqCst) {
            return Err(Denied::client(NO));
        }
        Ok(())
    }
}

impl Recorder {
    fn refusing() -> Arc<Recorder> {
        let r = Arc::new(Recorder::default());
        r.refuse.store(true, Ordering::SeqCst);
        r
    }

    fn saw_road(&self, road: Road) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(r, _, _)| *r == road)
    }

    fn saw(&self, road: Road, kind: &str, path: &Path) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(r, k, p)| *r == road && *k == kind && p == path)
    }
}

/// A node built by the one builder, serving on 127.0.0.1.
struct Running {
    server: Arc<Server>,
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), NodeError>>>,
}

impl Running {
    async fn start(b: NodeBuilder) -> Result<Running> {
        let node = b.build(server::bind("127.0.0.1", 0).await?).await?;
        let (server, addr) = (node.server().clone(), node.local_addr());
        let stop = CancellationToken::new();
        let task = Some(tokio::spawn(node.run(stop.clone())));
        Ok(Running {
            server,
            addr,
            stop,
            task,
        })
    }

    async fn raw(&self) -> Result<Raw> {
        Raw::connect(self.addr).await
    }

    fn value(&self, path: &Path) -> Option<Value> {
        self.server
            .state()
            .entry(path)
            .and_then(|e| e.data_cloned())
    }

    /// Stops it and waits until its log is flushed.
    async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        let task = self.task.take().context("stopped twice")?;
        within("the node to stop", task).await???;
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A snapshot of a node `src` holding `key = value`.
fn snapshot_file(dir: &FsPath, key: &Path, value: &str) -> Result<PathBuf> {
    let mut st = State::new("src", Default::default());
    st.make_ready();
    st.local_change(key, Some(Value::str(value)))?;
    let file = dir.join("load.dkvsnap");
    snap::write(&st, &file, true, 0, st.log().next_seq())?.finish()?;
    Ok(file)
}

/// The data directory of a node `old` holding `key = value`, restored by
/// `distkv-replay restore` into a snapshot.
async fn restored_file(dir: &FsPath, key: &Path, value: &str) -> Result<PathBuf> {
    let data = dir.join("old");
    let old = Running::start(NodeBuilder::new("old").data_dir(DurableConfig::new(&data))).await?;
    old.raw()
        .await?
        .call_ok(
            "set_value",
            vec![("path", p(key.clone())), ("value", Value::str(value))],
        )
        .await?;
    old.stop().await?;
    let out = dir.join("restored.dkvsnap");
    distkv_replay::restore::restore(&[data], &out, Default::default(), None, true)?;
    Ok(out)
}

/// The client roads on `n`: set, delete, delete_tree, update. Returns the
/// replies.
async fn client_roads(n: &Running) -> Result<Vec<Value>> {
    let mut c = n.raw().await?;
    let mut replies = Vec::new();
    for (action, fields) in [
        (
            "set_value",
            vec![("path", p(path!["c", "set"])), ("value", Value::Int(1))],
        ),
        ("delete_value", vec![("path", p(path!["c", "keep"]))]),
        ("delete_tree", vec![("path", p(path!["t"]))]),
        (
            "update",
            vec![
                ("node", Value::str("gone")),
                ("tick", Value::uint(1)),
                ("prev", Value::Nil),
                ("path", p(path!["c", "update"])),
                ("value", Value::str("restored")),
                ("tock", Value::uint(1)),
            ],
        ),
    ] {
        replies.push(c.call(action, fields).await?);
    }
    Ok(replies)
}

/// Another node on `hub`, which sets `b` to 2: an event for the bus road.
async fn peer_setting_b(hub: &Arc<MemHub>, name: &str) -> Result<Running> {
    let b = Running::start(
        NodeBuilder::new(name)
            .bus(BusSpec::Given(hub.bus(name)))
            .cluster(quick_cluster())
            .seed(2),
    )
    .await?;
    b.raw()
        .await?
        .call_ok(
            "set_value",
            vec![("path", p(path!["b"])), ("value", Value::Int(2))],
        )
        .await?;
    Ok(b)
}

/// A node without data that joins over `hub`, its transfer checked by
/// `hook`.
fn joiner(hub: &Arc<MemHub>, name: &str, hook: Arc<Recorder>) -> NodeBuilder {
    NodeBuilder::new(name)
        .hook(hook)
        .start(Start::Join)
        .bus(BusSpec::Given(hub.bus(name)))
        .cluster(quick_cluster())
        .seed(3)
}

/// Seeds what the client roads change, before the hook is watched.
async fn seed(n: &Running) -> Result<()> {
    let mut c = n.raw().await?;
    for k in [path!["c", "keep"], path!["t", "a"]] {
        c.call_ok("set_value", vec![("path", p(k)), ("value", Value::Int(0))])
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_road_passes_the_commit_hooks() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let loaded = snapshot_file(tmp.path(), &path!["l", "oaded"], "from a file")?;
    let restored = restored_file(tmp.path(), &path!["r", "estored"], "from history").await?;
    let hub = MemHub::start(11, Faults::default());
    let hook = Arc::new(Recorder::default());
    let a = Running::start(
        NodeBuilder::new("ca")
            .hook(hook.clone())
            .init(Some(Value::str("root")))
            .load([loaded, restored])
            .bus(BusSpec::Given(hub.bus("ca")))
            .cluster(quick_cluster())
            .seed(1),
    )
    .await?;
    ensure!(hook.saw(Road::Init, "set", &Path::root()), "init");
    ensure!(hook.saw(Road::Load, "event", &path!["l", "oaded"]), "-l");
    ensure!(
        hook.saw(Road::Load, "event", &path!["r", "estored"]),
        "restore"
    );
    ensure!(a.value(&path!["r", "estored"]) == Some(Value::str("from history")));

    seed(&a).await?;
    for r in client_roads(&a).await? {
        ensure!(r.get("error").is_none(), "{r}");
    }
    for (kind, road, path) in [
        ("set", Road::Client, path!["c", "set"]),
        ("delete", Road::Client, path!["c", "keep"]),
        ("delete_tree", Road::Client, path!["t"]),
        ("event", Road::Update, path!["c", "update"]),
    ] {
        ensure!(hook.saw(road, kind, &path), "{road:?} {kind} {path}");
    }

    // Another node's change, over the in-memory bus.
    let _b = peer_setting_b(&hub, "cb").await?;
    eventually("the bus event at ca", DEADLINE, || {
        a.value(&path!["b"]) == Some(Value::Int(2))
    })
    .await?;
    ensure!(hook.saw(Road::Bus, "event", &path!["b"]), "bus");

    // A node without data joins: it fetches the state from a ready peer.
    let join_hook = Arc::new(Recorder::default());
    let j = Running::start(joiner(&hub, "cj", join_hook.clone())).await?;
    // Ready once the state is fetched (some of it may have come by the
    // bus before; the transfer proposes every entry all the same).
    eventually("the joining node to fetch", 4 * DEADLINE, || {
        j.server.state().tick().is_some()
    })
    .await?;
    // Fetched from ca or cb: both hold `b` by now.
    ensure!(
        join_hook.saw(Road::Transfer, "event", &path!["b"]),
        "transfer"
    );
    Ok(())
}

/// The same over the real MQTT mesh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_event_over_mqtt_passes_the_commit_hooks() -> Result<()> {
    let hook = Arc::new(Recorder::default());
    let n1 = ClusterNode::start_with(NodeBuilder::new("mq1").hook(hook.clone()), vec![]).await?;
    let n2 = ClusterNode::start("mq2", vec![n1.broker()?]).await?;
    let c = n2.client().await?;
    // Messages sent before the mesh is up are lost: write until it arrives.
    let t0 = std::time::Instant::now();
    let mut i = 0i64;
    while i == 0 || !hook.saw(Road::Bus, "event", &path!["m", i]) {
        ensure!(t0.elapsed() < 4 * DEADLINE, "no bus event reached mq1");
        i += 1;
        c.set_value(&path!["m", i], Value::Int(i), &Default::default())
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_hook_stops_every_road_with_nothing_applied() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // --init and -l (a plain snapshot, and one restored from history).
    let no = Recorder::refusing();
    let e = NodeBuilder::new("rx")
        .hook(no.clone())
        .init(Some(Value::str("root")))
        .build(server::bind("127.0.0.1", 0).await?)
        .await
        .err()
        .context("--init was not refused")?;
    ensure!(e.to_string().contains(NO), "{e}");
    ensure!(no.saw(Road::Init, "set", &Path::root()), "init");
    let loaded = snapshot_file(tmp.path(), &path!["l"], "from a file")?;
    let restored = restored_file(tmp.path(), &path!["r"], "from history").await?;
    for file in [loaded, restored] {
        let e = NodeBuilder::new("rx")
            .hook(no.clone())
            .load([file.clone()])
            .build(server::bind("127.0.0.1", 0).await?)
            .await
            .err()
            .with_context(|| format!("{} was not refused", file.display()))?;
        ensure!(e.to_string().contains(NO), "{e}");
    }
    ensure!(no.saw(Road::Load, "event", &path!["l"]), "-l");
    ensure!(no.saw(Road::Load, "event", &path!["r"]), "restore");

    // The client roads and the bus: the hook refuses once the node runs.
    let hub = MemHub::start(12, Faults::default());
    let hook = Arc::new(Recorder::default());
    let a = Running::start(
        NodeBuilder::new("ra")
            .hook(hook.clone())
            .bus(BusSpec::Given(hub.bus("ra")))
            .cluster(quick_cluster())
            .seed(1),
    )
    .await?;
    seed(&a).await?;
    hook.refuse.store(true, Ordering::SeqCst);
    for r in client_roads(&a).await? {
        let e = r.get("error").and_then(Value::as_str).unwrap_or_default();
        ensure!(e.contains(NO), "not refused by the hook: {r}");
    }
    ensure!(a.value(&path!["c", "set"]).is_none());
    ensure!(a.value(&path!["c", "keep"]) == Some(Value::Int(0)));
    ensure!(a.value(&path!["t", "a"]) == Some(Value::Int(0)));
    ensure!(a.value(&path!["c", "update"]).is_none());

    let _b = peer_setting_b(&hub, "rb").await?;
    eventually("the bus event to reach ra's hook", DEADLINE, || {
        hook.saw(Road::Bus, "event", &path!["b"])
    })
    .await?;
    ensure!(
        a.value(&path!["b"]).is_none(),
        "a refused bus event was applied"
    );

    // A joining node whose hook refuses the transfer stays without data.
    let join_hook = Recorder::refusing();
    let j = Running::start(joiner(&hub, "rj", join_hook.clone())).await?;
    eventually("the transfer to reach rj's hook", 4 * DEADLINE, || {
        // A refused batch is refused at its first event.
        join_hook.saw_road(Road::Transfer)
    })
    .await?;
    let st = j.server.state();
    ensure!(st.tick().is_none(), "rj became ready");
    ensure!(
        st.entry(&path!["t", "a"]).is_none(),
        "the transfer was applied"
    );
    Ok(())
}
