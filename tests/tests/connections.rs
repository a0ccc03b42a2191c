//! Connection handling over real TCP: the connection cap, many idle
//! clients, the per-connection stream limit and graceful shutdown.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::Value;
use distkv_node::server::ServerOptions;
use distkv_tests::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn the_connection_cap_refuses_extra_clients_with_an_error() -> Result<()> {
    let node = TestNode::start_with(ServerOptions {
        max_connections: 3,
        ..ServerOptions::default()
    })
    .await?;
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(node.raw().await?);
    }
    // The fourth gets an error message instead of a greeting, then EOF.
    let mut fourth = Raw::connect(node.addr).await?;
    error_text(&fourth.greeting)?;
    ensure!(fourth.greeting.get("seq").is_none(), "{}", fourth.greeting);
    fourth.expect_closed().await?;
    for c in &mut first {
        c.still_works().await?;
    }

    // Once one of the three leaves, a new client gets in (the slot is
    // freed asynchronously: poll with a deadline).
    drop(first.pop());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut c = Raw::connect(node.addr).await?;
        if seq_of(&c.greeting) == Some(0) {
            c.still_works().await?;
            break;
        }
        ensure!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::task::yield_now().await;
    }
    Ok(())
}

#[tokio::test]
async fn many_idle_connections_do_not_slow_a_fresh_client() -> Result<()> {
    const IDLE: usize = 2000;
    let node = TestNode::start().await?;
    let mut idle = Vec::with_capacity(IDLE);
    let mut buf = [0u8; 256];
    for i in 0..IDLE {
        let mut s = within("connect", TcpStream::connect(node.addr))
            .await?
            .with_context(|| format!("connection {i}"))?;
        // The greeting proves the server accepted and serves it.
        let n = within("greeting", s.read(&mut buf)).await??;
        ensure!(n > 0, "connection {i} closed at once");
        idle.push(s);
    }
    let started = Instant::now();
    let mut c = node.raw().await?;
    c.call_ok(
        "set_value",
        vec![("path", p(path!["busy"])), ("value", Value::Int(1))],
    )
    .await?;
    c.still_works().await?;
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(2),
        "a fresh client took {took:?} beside {IDLE} idle ones"
    );
    drop(idle);
    Ok(())
}

#[tokio::test]
async fn a_connection_cannot_open_unbounded_streams() -> Result<()> {
    // The server allows 1024 concurrent streams per connection.
    const LIMIT: usize = 1024;
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    for _ in 0..LIMIT {
        let seq = c.request("watch", vec![("path", p(path!["many"]))]).await?;
        let m = c.recv().await?;
        ensure!(
            seq_of(&m) == Some(seq) && state_of(&m) == Some("start"),
            "{m}"
        );
    }
    let r = c.call("watch", vec![("path", p(path!["many"]))]).await?;
    error_text(&r)?;
    c.still_works().await?;
    node.raw().await?.still_works().await
}

#[tokio::test]
async fn shutdown_ends_running_streams_and_serve_returns() -> Result<()> {
    let mut node = TestNode::start().await?;
    let mut watcher = node.raw().await?;
    let wseq = watcher
        .request(
            "watch",
            vec![("path", p(path!["s"])), ("fetch", Value::Bool(true))],
        )
        .await?;
    for want in ["start", "uptodate"] {
        let m = watcher.recv().await?;
        ensure!(state_of(&m) == Some(want), "{m}");
    }
    let mut idle = node.raw().await?;
    let addr = node.addr;

    let handle = node.take_handle().context("no serve task")?;
    node.cancel();
    within("serve() to return after shutdown", handle).await???;

    // The watch gets its end (or the connection just closes), nothing else.
    match watcher.recv_or_closed().await? {
        None => {}
        Some(m) => {
            ensure!(
                seq_of(&m) == Some(wseq) && state_of(&m) == Some("end"),
                "{m}"
            );
            watcher.expect_closed().await?;
        }
    }
    idle.expect_closed().await?;
    // Nobody listens any more.
    if TcpStream::connect(addr).await.is_ok() {
        bail!("the listener still accepts after shutdown");
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_with_a_flow_controlled_stream_waiting_for_acks() -> Result<()> {
    let node = TestNode::start().await?;
    let entries: Vec<_> = (0..20i64)
        .map(|i| (path!["fc", i], Value::Int(i)))
        .collect();
    node.seed(&entries).await?;
    let mut c = node.raw().await?;
    c.send(&hello(4)).await?;
    let seq = c
        .request("get_tree", vec![("path", p(path!["fc"]))])
        .await?;
    for _ in 0..3 {
        let m = c.recv().await?;
        ensure!(seq_of(&m) == Some(seq), "{m}");
    }
    // The stream is blocked on its window; shutdown must not wait for it
    // longer than the two seconds granted to the final `end`.
    node.shutdown().await?;
    while let Some(m) = c.recv_or_closed().await? {
        ensure!(seq_of(&m) == Some(seq), "{m}");
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_client_that_never_reads() -> Result<()> {
    use distkv_model::codec;
    use tokio::io::AsyncWriteExt;

    let node = TestNode::start().await?;
    let mut s = within("connect", TcpStream::connect(node.addr)).await??;
    let mut chunk = Vec::new();
    for seq in 1..=2000u64 {
        codec::encode(
            &Value::map([
                ("seq", Value::uint(seq)),
                ("action", Value::str("get_tock")),
            ]),
            &mut chunk,
        );
    }
    // Pipeline requests without reading a single reply until the server
    // stops reading from us (its replies fill the socket and its queue).
    let mut stalled = false;
    for _ in 0..4096 {
        match tokio::time::timeout(SILENCE, s.write_all(&chunk)).await {
            Ok(r) => r?,
            Err(_) => {
                stalled = true;
                break;
            }
        }
    }
    ensure!(
        stalled,
        "the server kept reading without anyone reading replies"
    );
    node.shutdown().await
}
