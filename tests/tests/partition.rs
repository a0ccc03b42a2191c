//! A healed partition over the real MQTT mesh: three in-process nodes, each
//! with its client port and its embedded broker on loopback, one of them cut
//! off by a [`Gate`] while clients write on both sides — the same keys
//! included. After healing every node must hold the same state, and no
//! acknowledged write may be lost unless a later one to the same key
//! supersedes it under the deterministic rule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_node::client::{Client, ConnectOptions};
use distkv_node::cluster::actor::ActorConfig;
use distkv_node::cluster::bus::Bus;
use distkv_node::cluster::core::{ClusterConfig, Core};
use distkv_node::cluster::gate::Gate;
use distkv_node::cluster::mqtt::{MqttBus, MqttConfig, MqttMode};
use distkv_node::cluster::msg::Topics;
use distkv_node::server::{self, Server, ServerOptions};
use tokio_util::sync::CancellationToken;

struct Node {
    server: Arc<Server>,
    gate: Arc<Gate>,
    mqtt: Arc<MqttBus>,
    addr: std::net::SocketAddr,
}

async fn start(name: &str, peers: Vec<String>, stop: &CancellationToken) -> Result<Node> {
    let server = Server::new(name, ServerOptions::default());
    server.make_ready();
    let listener = server::bind("127.0.0.1", 0).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(server::serve(server.clone(), listener, stop.clone()));
    let mqtt = MqttBus::start(MqttConfig::new(
        name,
        MqttMode::Mesh {
            listen: ("127.0.0.1".into(), 0),
            advertise: None,
            peers,
        },
    ))
    .await?;
    let gate = Gate::new(mqtt.clone());
    let cfg = ClusterConfig {
        ping: ActorConfig {
            cycle: 1000,
            gap: 200,
            ..ActorConfig::main()
        },
        ..ClusterConfig::default()
    };
    server.attach_bus(gate.clone(), Topics::new(&cfg.root));
    let core = Core::new(
        &server.state(),
        cfg,
        name.len() as u64,
        Some(addr.to_string()),
    );
    let bus: Arc<dyn Bus> = gate.clone();
    tokio::spawn(distkv_node::cluster::node::run(
        server.clone(),
        bus,
        core,
        stop.clone(),
        CancellationToken::new(),
    ));
    Ok(Node {
        server,
        gate,
        mqtt,
        addr,
    })
}

async fn client(n: &Node) -> Result<Client> {
    Ok(Client::connect(n.addr, ConnectOptions::default()).await?)
}

/// Polls `f` every 20 ms until it holds, for at most `limit`.
async fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !f() {
        ensure!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Writes `k{i}` for `keys` on `c` and returns what each write made:
/// path → (value, tock, chain head).
async fn write(c: &Client, side: &str, keys: std::ops::Range<u32>) -> Result<Vec<(Path, Value)>> {
    let mut acked = Vec::new();
    for i in keys {
        let p = path!["part", format!("k{i}")];
        let v = Value::str(&format!("{side}-{i}"));
        c.set_value(&p, v.clone(), &Default::default()).await?;
        acked.push((p, v));
    }
    Ok(acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_over_the_mqtt_mesh_converges_without_losing_writes() -> Result<()> {
    let stop = CancellationToken::new();
    let n1 = start("p1", vec![], &stop).await?;
    let seed = n1
        .mqtt
        .broker_addr()
        .context("no broker address")?
        .to_string();
    let n2 = start("p2", vec![seed.clone()], &stop).await?;
    let n3 = start("p3", vec![seed], &stop).await?;
    let nodes = [&n1, &n2, &n3];
    let (c1, c3) = (client(&n1).await?, client(&n3).await?);

    // Connected: a write on p1 reaches p3.
    write(&c1, "before", 0..1).await?;
    eventually("the first write on p3", Duration::from_secs(20), || {
        n3.server.state().entry(&path!["part", "k0"]).is_some()
    })
    .await?;

    // Cut p3 off; both sides write, partly to the same keys.
    n3.gate.set_open(false);
    let mut acked = write(&c1, "a", 0..300).await?;
    acked.extend(write(&c3, "b", 200..500).await?);
    tokio::time::sleep(Duration::from_millis(300)).await; // let the sides diverge
    ensure!(
        n1.server.state().digest() != n3.server.state().digest(),
        "the partition did not separate the nodes"
    );

    // Heal; everyone ends with the same state.
    n3.gate.set_open(true);
    let t0 = Instant::now();
    eventually("convergence after healing", Duration::from_secs(30), || {
        let d = n1.server.state().digest();
        nodes.iter().all(|n| n.server.state().digest() == d)
    })
    .await?;
    eprintln!("converged {:?} after healing", t0.elapsed());

    // No acknowledged write is lost: each key holds its last write on one
    // side, and where both sides wrote, the deterministic winner.
    let st = n2.server.state();
    let mut last: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (p, v) in &acked {
        last.entry(p.to_string()).or_default().push(v.clone());
    }
    for (p, vals) in &last {
        let path = acked
            .iter()
            .find(|(q, _)| q.to_string() == *p)
            .map(|x| &x.0);
        let e = st.entry(path.context("path")?).context("entry vanished")?;
        let got = e.data().context("value vanished")?;
        ensure!(
            vals.contains(got),
            "{p}: {got} is none of the writes {vals:?}"
        );
    }
    for (k, want) in [("k0", "a-0"), ("k499", "b-499")] {
        let e = st.entry(&path!["part", k]).context("entry")?;
        ensure!(e.data() == Some(&Value::str(want)), "{k}: {:?}", e.data());
    }
    ensure!(st.missing().is_empty(), "still missing: {:?}", st.missing());
    drop(st);
    stop.cancel();
    Ok(())
}
