//! Users, the login method and ACLs are data like any other: they
//! replicate to other nodes, survive a restart from the data directory, and
//! come back from a snapshot made by `distkv-replay restore`.

use std::path::Path as FsPath;

use anyhow::{ensure, Result};
use distkv_model::{path, Path, Value};
use distkv_node::node::NodeBuilder;
use distkv_node::persist::durable::DurableConfig;
use distkv_tests::*;

fn pv(p: Path) -> (&'static str, Value) {
    ("path", Value::Path(p))
}

/// On an admin connection: user `joe` (password `joe-secret`), bound to
/// ACL `ro` which lets it read `one` but not write it; login switched on.
async fn set_up_users(admin: &mut Raw) -> Result<()> {
    admin
        .call_ok(
            "set_value",
            vec![pv(path!["one"]), ("value", Value::Int(1))],
        )
        .await?;
    admin.add_password_user("joe", "joe-secret").await?;
    for (p, v) in [
        (
            path!["auth", "password", "user", "joe", "acl"],
            Value::map([("key", Value::str("ro"))]),
        ),
        (path!["acl", "ro", "one"], Value::str("rx")),
    ] {
        admin
            .call_ok("set_internal", vec![pv(p), ("value", v)])
            .await?;
    }
    admin
        .call_ok("set_auth_typ", vec![("typ", Value::str("password"))])
        .await?;
    Ok(())
}

/// A new connection must log in; `joe` can, may read `one`, and may not
/// write it.
async fn joe_is_bound(addr: std::net::SocketAddr) -> Result<()> {
    let mut c = Raw::connect(addr).await?;
    ensure!(
        c.greeting.get("auth") == Some(&arr(["password"])),
        "{}",
        c.greeting
    );
    c.login_password("joe", "joe-secret").await?;
    let r = c.call_ok("get_value", vec![pv(path!["one"])]).await?;
    ensure!(r.get("value") == Some(&Value::Int(1)), "{r}");
    let r = c
        .call(
            "set_value",
            vec![pv(path!["one"]), ("value", Value::Int(2))],
        )
        .await?;
    let e = error_text(&r)?;
    ensure!(
        e.starts_with("ACLError(<AclEntry:[None, 'acl', 'ro', 'one']@"),
        "{e}"
    );
    ensure!(e.ends_with(" ='rx'>, 'w')"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_replicate() -> Result<()> {
    let a = ClusterNode::start("ad-a", vec![]).await?;
    let b = ClusterNode::start("ad-b", vec![a.broker()?]).await?;
    // Both ready: a write on `a` shows on `b`.
    let mut admin = Raw::connect(a.addr).await?;
    await_link(&mut admin, &b).await?;
    set_up_users(&mut admin).await?;
    let current = path![Value::Nil, "auth"];
    eventually("the login method on b", 2 * DEADLINE, || {
        b.server
            .state()
            .entry(&current)
            .is_some_and(|e| e.data().is_some())
    })
    .await?;
    joe_is_bound(b.addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_acls_survive_restart_and_restore() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("distkv-authdata-")
        .tempdir()?;
    let data = dir.path().join("data");
    let node = |d: &FsPath| NodeBuilder::new("ad1").data_dir(DurableConfig::new(d));
    let n = TestNode::build(node(&data)).await?;
    set_up_users(&mut n.raw().await?).await?;
    joe_is_bound(n.addr).await?;
    n.shutdown().await?;

    let n = TestNode::build(node(&data)).await?;
    joe_is_bound(n.addr).await?;
    n.shutdown().await?;

    let snap = dir.path().join("restored.dkvsnap");
    distkv_replay::restore::restore(&[data], &snap, Default::default(), None, true)?;
    let n = TestNode::build(NodeBuilder::new("ad2").load([snap])).await?;
    joe_is_bound(n.addr).await
}
