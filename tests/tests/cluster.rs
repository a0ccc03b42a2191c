//! Replication between real `distkv server` processes: a mesh of embedded
//! MQTT brokers (`--bus-port`, `--peer`), and all nodes on one external
//! broker (`--mqtt`, Debian's `mosquitto`).
//!
//! How the node binary is found and started: see `process/mod.rs`.
//! `DISTKV_TEST_RUST_LOG=distkv_node=debug` gives the nodes' stderr more
//! detail (failures quote every node's stderr tail); `DISTKV_TEST_KEEP=1`
//! keeps the nodes' directories and logs.
//!
//! Replication is asynchronous: after a write, the other nodes are polled
//! with a deadline until they show it; nothing sleeps to wait.

mod process;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_node::client::{Client, ConnectOptions, UpdateOptions};
use process::{dump, free_port, logs, same_dump, Launch, NodeProc};

/// Longest replication may take to reach every node.
const CONVERGE: Duration = Duration::from_secs(30);
/// A short election cycle and repair delay, so that tests are quick.
const FAST: [&str; 2] = ["server.ping.cycle=1", "server.ping.gap=0.2"];

/// A temporary directory for a test's nodes; `DISTKV_TEST_KEEP=1` keeps it
/// (its path is printed) to read the nodes' stderr afterwards.
fn tempdir(name: &str) -> Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("distkv-{name}-"))
        .tempdir()?;
    if std::env::var_os("DISTKV_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        println!("keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// A node `name` with its data and stderr in `dir/name`, fast timing.
fn node(name: &str, dir: &FsPath) -> Result<Launch> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    let mut l = Launch::new(name, &d);
    for kv in FAST {
        l = l.conf(kv);
    }
    Ok(l)
}

/// One expected value (`None`: no value, i.e. deleted) at a path.
type Want = Vec<(Path, Option<Value>)>;

/// Polls until every node in `nodes` shows every value of `want`.
async fn wait_values(what: &str, nodes: &[&NodeProc], want: &Want) -> Result<()> {
    let deadline = Instant::now() + CONVERGE;
    let mut clients = Vec::new();
    for n in nodes {
        let c = n
            .connect()
            .await
            .with_context(|| format!("{what}: connecting to {}\n{}", n.name, logs(nodes)))?;
        clients.push(c);
    }
    loop {
        let mut lacking = Vec::new();
        for (n, c) in nodes.iter().zip(&clients) {
            for (p, v) in want {
                let r = c
                    .get_value(p, 0)
                    .await
                    .with_context(|| format!("{what}: get_value {p} on {}", n.name))?;
                if r.get("value") != v.as_ref() {
                    lacking.push(format!(
                        "{}: {p} is {}, want {}",
                        n.name,
                        r.get("value").map_or("(none)".into(), Value::to_string),
                        v.as_ref().map_or("(none)".into(), Value::to_string)
                    ));
                }
            }
        }
        if lacking.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: after {CONVERGE:?}, {} of {} values differ:\n{}\n{}",
                lacking.len(),
                want.len() * nodes.len(),
                lacking
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n"),
                logs(nodes)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Checks at once (no polling) that `node` shows every value of `want`.
async fn has_values(what: &str, node: &NodeProc, want: &Want) -> Result<()> {
    let c = node.connect().await?;
    let mut lacking = Vec::new();
    for (p, v) in want {
        let r = c.get_value(p, 0).await?;
        if r.get("value") != v.as_ref() {
            lacking.push(format!(
                "{p} is {}, want {}",
                r.get("value").map_or("(none)".into(), Value::to_string),
                v.as_ref().map_or("(none)".into(), Value::to_string)
            ));
        }
    }
    ensure!(
        lacking.is_empty(),
        "{what}: {} of {} values differ on {}:\n{}\n{}",
        lacking.len(),
        want.len(),
        node.name,
        lacking
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        logs(&[node])
    );
    Ok(())
}

/// The `missing` part of `get_state` is empty (or absent).
fn nothing_missing(state: &Value) -> bool {
    state
        .get("missing")
        .and_then(Value::as_map)
        .is_none_or(<[_]>::is_empty)
}

/// Polls until all nodes' dumps (with tombstones) are identical and no node
/// misses a tick; returns the common dump.
async fn wait_converged(what: &str, nodes: &[&NodeProc]) -> Result<BTreeMap<String, Value>> {
    let deadline = Instant::now() + CONVERGE;
    let mut clients = Vec::new();
    for n in nodes {
        clients.push(n.connect().await?);
    }
    loop {
        let mut dumps = Vec::new();
        let mut states = Vec::new();
        for c in &clients {
            dumps.push(dump(c, true).await?);
            states.push(c.get_state(&["nodes", "missing", "remote_missing"]).await?);
        }
        let mut problems = Vec::new();
        for (i, n) in nodes.iter().enumerate().skip(1) {
            if let Err(e) = same_dump(
                &format!("{} vs {}", nodes[0].name, n.name),
                &dumps[0],
                &dumps[i],
            ) {
                problems.push(format!("{e:#}"));
            }
        }
        for (n, s) in nodes.iter().zip(&states) {
            if !nothing_missing(s) {
                problems.push(format!("{} misses ticks: {s}", n.name));
            }
        }
        if problems.is_empty() {
            return Ok(dumps.swap_remove(0));
        }
        if Instant::now() > deadline {
            let states: Vec<String> = nodes
                .iter()
                .zip(&states)
                .map(|(n, s)| format!("get_state of {}: {s}", n.name))
                .collect();
            bail!(
                "{what}: not converged after {CONVERGE:?}:\n{}\n{}\n{}",
                problems.join("\n"),
                states.join("\n"),
                logs(nodes)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets `value` at `p` through `node` and records it in `want`.
async fn write(node: &NodeProc, want: &mut Want, p: Path, value: Value) -> Result<()> {
    let c = node.connect().await?;
    c.set_value(&p, value.clone(), &UpdateOptions::default())
        .await
        .with_context(|| format!("set_value {p} on {}\n{}", node.name, logs(&[node])))?;
    want.retain(|(q, _)| *q != p);
    want.push((p, Some(value)));
    Ok(())
}

/// Writes one key per node (`cl.<group>.<node name>` = its name) through
/// that node, then waits until every node has all of them.
async fn one_write_each(nodes: &[&NodeProc], want: &mut Want, group: &str) -> Result<()> {
    for n in nodes {
        let p = path!["cl", group, n.name.as_str()];
        write(n, want, p, Value::str(&n.name)).await?;
    }
    wait_values("a write on each node", nodes, want).await
}

/// Writes `n` keys below `prefix` through `node`.
async fn write_many(node: &NodeProc, want: &mut Want, prefix: &str, n: i64) -> Result<()> {
    let c = node.connect().await?;
    for i in 0..n {
        let p = path!["cl", prefix, i];
        let v = Value::Int(i * 7);
        c.set_value(&p, v.clone(), &UpdateOptions::default())
            .await
            .with_context(|| format!("set_value {p} on {}\n{}", node.name, logs(&[node])))?;
        want.push((p, Some(v)));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_survive_kill_and_a_fourth_joins() -> Result<()> {
    let dir = tempdir("cluster-mesh")?;
    let l1 = node("mesh1", dir.path())?.with_bus()?;
    let l2 = node("mesh2", dir.path())?.with_bus()?.peer(&l1);
    let l3 = node("mesh3", dir.path())?.with_bus()?.peer(&l1);

    // n1 starts a new cluster; n2 and n3 fetch its state, then serve.
    let n1 = l1.start().await?;
    let (n2, n3) = tokio::try_join!(l2.start(), l3.start())?;

    let mut want = Want::new();
    one_write_each(&[&n1, &n2, &n3], &mut want, "first").await?;

    // n1 was the only node the others were told about; they found each
    // other by gossip and go on without it.
    n1.kill9()?;
    write_many(&n2, &mut want, "by2", 50).await?;
    write_many(&n3, &mut want, "by3", 50).await?;
    wait_values("writes on n2 and n3 while n1 is dead", &[&n2, &n3], &want).await?;

    // n1 comes back from its data directory on the same bus port.
    let n1 = l1.start().await?;
    wait_values("n1 catching up after its restart", &[&n1], &want).await?;

    // A RAM-only node joins through n2 and serves only once it has the data.
    let l4 = node("mesh4", dir.path())?
        .no_data_dir()
        .with_bus()?
        .peer(&l2);
    let n4 = l4.start().await?;
    has_values("the RAM-only node when it starts serving", &n4, &want).await?;

    // A deletion (so tombstones are compared) and a write on the new node.
    let gone = path!["cl", "first", "mesh1"];
    n3.connect()
        .await?
        .delete_value(&gone, &UpdateOptions::default())
        .await?;
    want.retain(|(p, _)| *p != gone);
    want.push((gone, None));
    write(&n4, &mut want, path!["cl", "last"], Value::str("from n4")).await?;

    let nodes = [&n1, &n2, &n3, &n4];
    wait_values("the deletion and n4's write", &nodes, &want).await?;
    let all = wait_converged("all four nodes", &nodes).await?;
    ensure!(
        all.len() == want.len(),
        "the common dump has {} entries, not the {} written:\n{all:?}",
        all.len(),
        want.len()
    );
    let tomb = all
        .get(&path!["cl", "first", "mesh1"].to_string())
        .context("the dumps lack the tombstone of the deleted entry")?;
    ensure!(
        tomb.get("value").is_none() && tomb.get("chain").is_some(),
        "the deleted entry is not a tombstone: {tomb}"
    );
    Ok(())
}

/// `depth` arrays around an integer.
fn nested(depth: usize) -> Value {
    let mut v = Value::Int(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// A value at the nesting limit a client may write, and one just below it,
/// pass every format a node keeps or sends: the event log and snapshots
/// (a `kill -9` and restart), the state a joining node fetches, cluster
/// messages, and `distkv-replay`'s reading of the files. One level deeper is
/// refused when written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_at_the_nesting_limit_pass_every_format() -> Result<()> {
    // The deepest allowed message (256 levels) leaves 255 for the value.
    const LIMIT: usize = 255;
    let dir = tempdir("cluster-deep")?;
    let deep = |l: Launch| {
        l.conf("server.limits.max_depth=256")
            .conf("server.persist.snapshot_records=10")
    };
    let l1 = deep(node("deep1", dir.path())?.with_bus()?);
    let l2 = deep(node("deep2", dir.path())?.with_bus()?.peer(&l1));
    let n1 = l1.start().await?;
    let mut want = Want::new();
    for (i, depth) in [LIMIT, LIMIT - 1].into_iter().enumerate() {
        write(&n1, &mut want, path!["deep", i as u64], nested(depth)).await?;
        // A path element nests inside the path: one level less.
        let p = Path::new(vec![Value::str("deep-path"), nested(depth - 1)]);
        write(&n1, &mut want, p, Value::Int(i as i64)).await?;
    }
    let too_deep = n1
        .connect()
        .await?
        .set_value(
            &path!["deep", "x"],
            nested(LIMIT + 1),
            &UpdateOptions::default(),
        )
        .await;
    ensure!(too_deep.is_err(), "a value beyond the limit was accepted");
    write_many(&n1, &mut want, "pad", 20).await?; // a snapshot or two

    // A joining node fetches them; later ones reach it as cluster messages.
    let n2 = l2.start().await?;
    wait_values("the deep values on the joined node", &[&n2], &want).await?;
    write(&n1, &mut want, path!["deep", "late"], nested(LIMIT)).await?;
    wait_values("a deep value replicated", &[&n2], &want).await?;

    // The files read back: by the node after a crash, and offline.
    n1.kill9()?;
    let n1 = l1.start().await?;
    has_values("the deep values after kill -9 and restart", &n1, &want).await?;
    n1.terminate().await?;
    let report = distkv_replay::audit::audit(&[dir.path().join("deep1/data")], true)?;
    ensure!(report.is_clean(), "audit:\n{}", report.to_text());
    ensure!(
        report.stats.events >= 25,
        "audit read only {} events",
        report.stats.events
    );
    drop(n2);
    Ok(())
}

/// A `mosquitto` process on a free port; dropping it kills it.
struct Mosquitto {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_bin() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.is_file() {
        return Some(sbin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Starts mosquitto and waits until it accepts connections; `None` if it
/// is not installed (and `DISTKV_REQUIRE_MOSQUITTO` is unset).
fn start_mosquitto(dir: &FsPath) -> Result<Option<Mosquitto>> {
    let Some(bin) = mosquitto_bin() else {
        ensure!(
            std::env::var_os("DISTKV_REQUIRE_MOSQUITTO").is_none(),
            "mosquitto is not installed but DISTKV_REQUIRE_MOSQUITTO is set"
        );
        return Ok(None);
    };
    let mut last = String::new();
    for attempt in 0..5 {
        let port = free_port()?;
        let log = dir.join(format!("mosquitto.{attempt}.log"));
        let child = Command::new(&bin)
            .arg("-p")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut m = Mosquitto { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = m.child.try_wait()? {
                // Most likely somebody took the port: try another one.
                last = format!(
                    "mosquitto exited with {st}: {}",
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Some(m));
            }
            ensure!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port} within 10 s: {}",
                std::fs::read_to_string(&m.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    bail!("could not start mosquitto: {last}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_replicate_over_an_external_mosquitto_broker() -> Result<()> {
    let dir = tempdir("cluster-mqtt")?;
    let Some(broker) = start_mosquitto(dir.path())? else {
        println!("skipping: mosquitto not installed");
        return Ok(());
    };
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let l1 = node("mq1", dir.path())?
        .arg("--mqtt")
        .arg(&url)
        .arg("-I")
        .arg("hello");
    let l2 = node("mq2", dir.path())?.arg("--mqtt").arg(&url);
    let l3 = node("mq3", dir.path())?.arg("--mqtt").arg(&url);

    let n1 = l1.start().await?;
    let (n2, n3) = tokio::try_join!(l2.start(), l3.start())?;

    let mut want = Want::new();
    one_write_each(&[&n1, &n2, &n3], &mut want, "mq").await?;

    n2.kill9()?;
    write_many(&n1, &mut want, "while2down", 20).await?;
    wait_values("n1's writes on n3 while n2 is dead", &[&n3], &want).await?;
    let n2 = l2.start().await?;
    wait_values("n2 catching up after its restart", &[&n2], &want).await?;

    let gone = path!["cl", "mq", "mq3"];
    n2.connect()
        .await?
        .delete_value(&gone, &UpdateOptions::default())
        .await?;
    want.retain(|(p, _)| *p != gone);
    want.push((gone, None));
    let nodes = [&n1, &n2, &n3];
    wait_values("a deletion on n2", &nodes, &want).await?;
    wait_converged("three nodes on mosquitto", &nodes).await?;
    drop(broker);
    Ok(())
}

/// A node with peers but no data, that hears no other node (its peers are
/// out of reach), does not serve — it would show clients an empty store —
/// unless started with `--force`.
#[tokio::test]
async fn a_node_that_hears_no_peer_serves_only_when_forced() -> Result<()> {
    let dir = tempdir("lonely")?;
    let nobody = format!("127.0.0.1:{}", free_port()?);

    let forced = node("lonely1", dir.path())?
        .no_data_dir()
        .with_bus()?
        .arg("--peer")
        .arg(&nobody)
        .arg("--force")
        .start()
        .await?;
    let c = forced.connect().await?;
    c.set_value(&path!["k"], Value::Int(1), &UpdateOptions::default())
        .await?;
    ensure!(
        forced.stderr().contains("--force"),
        "no warning about --force:\n{}",
        forced.stderr_tail()
    );

    // Without --force: for three election cycles (the join wait is two)
    // a client gets an error instead of a greeting, and the log says why.
    let port = free_port()?;
    let stderr = dir.path().join("lonely2.stderr");
    let mut child = Command::new(process::distkv_bin()?)
        .args([
            "-c",
            "/dev/null",
            "-C",
            FAST[0],
            "-C",
            FAST[1],
            "server",
            "lonely2",
        ])
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--bus-port", &free_port()?.to_string(), "--peer", &nobody])
        .arg("--no-data-dir")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr)?)
        .env_remove("RUST_LOG")
        .spawn()?;
    // Never served for 3 s, and refused as not ready with the reason in the
    // log: the node writes it once its join wait has passed, which a slow
    // process start may push past those 3 s (polled, with a deadline).
    let t0 = Instant::now();
    let (mut served, mut refused) = (None, None);
    while t0.elapsed() < Duration::from_secs(30) {
        match Client::connect(("127.0.0.1", port), ConnectOptions::default()).await {
            Ok(c) => {
                served = Some(c.greeting().node.clone());
                break;
            }
            Err(e) => refused = Some(e.to_string()),
        }
        let explained = std::fs::read_to_string(&stderr)
            .is_ok_and(|log| log.contains("no other node heard yet"))
            && refused.as_deref().is_some_and(|r| r.contains("not ready"));
        if explained && t0.elapsed() >= Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    ensure!(served.is_none(), "served without data or peers:\n{log}");
    let refused = refused.unwrap_or_default();
    ensure!(
        refused.contains("not ready"),
        "refused with {refused:?}:\n{log}"
    );
    ensure!(
        log.contains("no other node heard yet"),
        "no explanation in the log:\n{log}"
    );
    Ok(())
}

/// Whether this machine has an IPv6 loopback address to listen on.
fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Runs `distkv client -h HOST -p PORT ARGS…` and returns its stdout.
fn cli(host: &str, port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new(process::distkv_bin()?)
        .args([
            "-c",
            "/dev/null",
            "client",
            "-h",
            host,
            "-p",
            &port.to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "distkv client -h {host} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Two nodes on the IPv6 loopback: `--bind ::1`, `--peer [::1]:PORT`; a
/// write through `distkv client -h '[::1]'` on one is read back with
/// `-h ::1` from the other, and the logs print the addresses bracketed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_replicate_over_ipv6() -> Result<()> {
    if !has_ipv6_loopback() {
        println!("skipping: this machine has no IPv6 loopback address (::1)");
        return Ok(());
    }
    let dir = tempdir("ipv6")?;
    let l1 = node("v6a", dir.path())?
        .bind("::1")
        .with_bus()?
        .arg("-I")
        .arg("v6");
    let l2 = node("v6b", dir.path())?.bind("::1").with_bus()?.peer(&l1);
    ensure!(l2.args.iter().any(|a| a.starts_with("[::1]:")), "{l2:?}");
    let n1 = l1.start().await?;
    let n2 = l2.start().await?;
    ensure!(n1.addr.is_ipv6() && n2.addr.is_ipv6());

    let set = cli(
        "[::1]",
        n2.addr.port(),
        &["data", "v6.key", "set", "-v", ":", "over v6"],
    )?;
    let want: Want = vec![(path!["v6", "key"], Some(Value::str("over v6")))];
    wait_values("a write on v6b on v6a", &[&n1], &want).await?;
    let got = cli("::1", n1.addr.port(), &["data", "v6.key", "get"])?;
    ensure!(got.trim() == "'over v6'", "got {got:?} (set said {set:?})");

    let bus1 = l1.bus_addr();
    for (n, text) in [
        (&n1, format!("advertise={bus1}")),
        (&n2, format!("broker=\"{bus1}\"")),
        (&n2, format!("addr=[::1]:{}", n2.addr.port())),
    ] {
        ensure!(
            n.stderr().contains(&text),
            "{} does not log {text:?}:\n{}",
            n.name,
            n.stderr_tail()
        );
    }
    Ok(())
}

/// A host name that never resolves (RFC 6761 reserves `.invalid`).
const NOWHERE: &str = "distkv-test-unreachable.invalid";

/// A ready node advertises a client address nobody can reach (as nodes
/// sharing one host name do without `--advertise`), but its broker was
/// reached at the `--peer` address: a joining node fetches the state from
/// that host with the advertised port, becomes ready within seconds, and
/// its log says which addresses it tried and which worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_fetches_from_a_peer_whose_advertised_address_is_wrong() -> Result<()> {
    let dir = tempdir("advertise")?;
    let l1 = node("adv1", dir.path())?
        .with_bus()?
        .arg("--advertise")
        .arg(NOWHERE)
        .arg("-I")
        .arg("here");
    let l2 = node("adv2", dir.path())?.with_bus()?.peer(&l1);
    let n1 = l1.start().await?;
    let t0 = Instant::now();
    let n2 = l2.start().await?;
    let took = t0.elapsed();
    let port = n1.addr.port();
    let log = n2.stderr();
    ensure!(
        took < Duration::from_secs(10),
        "adv2 became ready only after {took:?}:\n{log}"
    );
    let tried = format!("{NOWHERE}:{port}, 127.0.0.1:{port}");
    let worked = format!("addr=127.0.0.1:{port} entries=");
    for text in [&tried, &worked] {
        ensure!(
            log.contains(text.as_str()),
            "adv2 does not log {text:?}:\n{log}"
        );
    }
    let want: Want = vec![(Path::root(), Some(Value::str("here")))];
    has_values("the root entry fetched from adv1", &n2, &want).await?;
    println!("adv2 ready after {took:?}");
    Ok(())
}
