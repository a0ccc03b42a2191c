//! Types, matches, codecs and converters are data like any other: they
//! replicate to other nodes, survive a restart from the data directory,
//! and come back from a snapshot made by `distkv-replay restore` — and
//! each node enforces them (types) and converts by them (codecs).

use std::path::Path as FsPath;

use anyhow::{ensure, Result};
use distkv_model::{path, Path, Value};
use distkv_node::node::NodeBuilder;
use distkv_node::persist::durable::DurableConfig;
use distkv_tests::*;

fn pv(p: Path) -> (&'static str, Value) {
    ("path", Value::Path(p))
}

fn pair(a: Value, b: Value) -> Value {
    Value::Array(vec![a, b])
}

/// On an admin connection: type `int` matched at `num.#`, codec `int`
/// for group `foo` on `inty.#`, user `con` bound to `foo`; login on.
async fn set_up_rules(admin: &mut Raw) -> Result<()> {
    admin.add_password_user("con", "con-pw").await?;
    let ints = |v: &[i64]| Value::Array(v.iter().map(|&i| Value::Int(i)).collect());
    let records = [
        (
            path!["type", "int"],
            Value::map([
                ("code", Value::str("type_of(value) == \"i64\"")),
                ("good", ints(&[1, 2])),
                ("bad", Value::Array(vec![Value::str("x")])),
            ]),
        ),
        (
            path!["match", "num", "#"],
            Value::map([("type", Value::str("int"))]),
        ),
        (
            path!["codec", "int"],
            Value::map([
                ("decode", Value::str("parse_int(value)")),
                ("encode", Value::str("value.to_string()")),
                (
                    "in",
                    Value::Array(vec![pair(Value::str("1"), Value::Int(1))]),
                ),
                (
                    "out",
                    Value::Array(vec![pair(Value::Int(1), Value::str("1"))]),
                ),
            ]),
        ),
        (
            path!["conv", "foo", "inty", "#"],
            Value::map([("codec", Value::str("int"))]),
        ),
        (
            path!["auth", "password", "user", "con", "conv"],
            Value::map([("key", Value::str("foo"))]),
        ),
    ];
    for (p, v) in records {
        admin
            .call_ok("set_internal", vec![pv(p), ("value", v)])
            .await?;
    }
    admin
        .call_ok("set_auth_typ", vec![("typ", Value::str("password"))])
        .await?;
    Ok(())
}

/// `con` logs in: its "10" is stored as 10 and read back as "10"; a float
/// below `num` is refused with the type's error. `key` names a place of
/// this round.
async fn rules_hold(addr: std::net::SocketAddr, key: &str) -> Result<()> {
    let mut c = Raw::connect(addr).await?;
    c.login_password("con", "con-pw").await?;
    let at = path!["inty", key];
    c.call_ok(
        "set_value",
        vec![pv(at.clone()), ("value", Value::str("10"))],
    )
    .await?;
    let r = c.call_ok("get_value", vec![pv(at)]).await?;
    ensure!(r.get("value") == Some(&Value::str("10")), "{r}");
    let r = c
        .call(
            "set_value",
            vec![pv(path!["num", key]), ("value", Value::Float(1.5))],
        )
        .await?;
    let e = error_text(&r)?;
    ensure!(e == "ValueError('1.5 is not a int')", "{e}");
    c.still_works().await
}

/// Every value sent to `con` below `inty` is encoded: `enum` with data,
/// `get_tree`, `watch` (its first dump and a change) and `delete_tree`'s
/// old values.
async fn every_read_is_converted(addr: std::net::SocketAddr) -> Result<()> {
    let mut c = Raw::connect(addr).await?;
    c.login_password("con", "con-pw").await?;
    let top = path!["inty"];
    let r = c
        .call_ok(
            "enum",
            vec![pv(top.clone()), ("with_data", Value::Bool(true))],
        )
        .await?;
    let result = r.get("result").cloned().unwrap_or(Value::Nil);
    ensure!(result.get("one") == Some(&Value::str("10")), "{r}");
    let seq = c.request("get_tree", vec![pv(top.clone())]).await?;
    let walked = c.recv_stream(seq).await?;
    let values: Vec<_> = walked.iter().filter_map(|m| m.get("value")).collect();
    ensure!(
        !values.is_empty() && values.iter().all(|v| v.as_str() == Some("10")),
        "{walked:?}"
    );

    let mut w = Raw::connect(addr).await?;
    w.login_password("con", "con-pw").await?;
    let fields = vec![pv(path!["inty", "w"]), ("fetch", Value::Bool(true))];
    let seq = w.request("watch", fields).await?;
    c.call_ok(
        "set_value",
        vec![pv(path!["inty", "w"]), ("value", Value::str("12"))],
    )
    .await?;
    let t0 = std::time::Instant::now();
    loop {
        ensure!(t0.elapsed() < DEADLINE, "the watch saw no change");
        let m = within("a watch message", w.recv()).await??;
        ensure!(m.get("seq") == Some(&Value::uint(seq)), "{m}");
        if let Some(v) = m.get("value") {
            ensure!(v == &Value::str("12"), "{m}");
            break;
        }
    }

    let seq = c
        .request(
            "delete_tree",
            vec![pv(path!["inty", "w"]), ("nchain", Value::Int(1))],
        )
        .await?;
    let events = c.recv_stream(seq).await?;
    let old: Vec<_> = events.iter().filter_map(|m| m.get("old_value")).collect();
    ensure!(old == [&Value::str("12")], "{events:?}");
    c.still_works().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_replicate() -> Result<()> {
    let a = ClusterNode::start("rd-a", vec![]).await?;
    let b = ClusterNode::start("rd-b", vec![a.broker()?]).await?;
    let mut admin = Raw::connect(a.addr).await?;
    await_link(&mut admin, &b).await?;
    set_up_rules(&mut admin).await?;
    let current = path![Value::Nil, "auth"];
    eventually("the rules on b", 2 * DEADLINE, || {
        b.server
            .state()
            .entry(&current)
            .is_some_and(|e| e.data().is_some())
    })
    .await?;
    rules_hold(b.addr, "b").await?;
    let stored = path!["inty", "b"];
    eventually("b's converted write on a", 2 * DEADLINE, || {
        a.server
            .state()
            .entry(&stored)
            .and_then(|e| e.data_cloned())
            == Some(Value::Int(10))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_survive_restart_and_restore() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("distkv-rulesdata-")
        .tempdir()?;
    let data = dir.path().join("data");
    let node = |d: &FsPath| NodeBuilder::new("rd1").data_dir(DurableConfig::new(d));
    let n = TestNode::build(node(&data)).await?;
    set_up_rules(&mut n.raw().await?).await?;
    rules_hold(n.addr, "one").await?;
    every_read_is_converted(n.addr).await?;
    n.shutdown().await?;

    let n = TestNode::build(node(&data)).await?;
    rules_hold(n.addr, "two").await?;
    let stored = n
        .server
        .state()
        .entry(&path!["inty", "one"])
        .and_then(|e| e.data_cloned());
    ensure!(stored == Some(Value::Int(10)), "{stored:?}");
    n.shutdown().await?;

    // The records are in the history like any data.
    let meta = path![Value::Nil];
    let h = distkv_replay::history::history(std::slice::from_ref(&data), &meta, true, true)?;
    for root in ["type", "match", "codec", "conv"] {
        ensure!(
            h.changes
                .iter()
                .any(|c| c.path.get(1) == Some(&Value::str(root))),
            "no {root} record in the history"
        );
    }
    let snap = dir.path().join("restored.dkvsnap");
    distkv_replay::restore::restore(&[data], &snap, Default::default(), None, true)?;
    let n = TestNode::build(NodeBuilder::new("rd2").load([snap])).await?;
    rules_hold(n.addr, "three").await
}
