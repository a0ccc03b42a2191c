//! Connection handling over real TCP: the connection caps (in all and per
//! address) and their rate-limited refusal log, the handshake and idle
//! timeouts, many idle clients, the per-connection stream limit and
//! graceful shutdown.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::Value;
use distkv_node::config::ConnectionLimits;
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

    // Once one of the three leaves, a new client gets in.
    drop(first.pop());
    admitted_again(&node).await
}

/// Connects until a client is admitted: a slot is freed asynchronously once
/// a client leaves (poll with a deadline).
async fn admitted_again(node: &TestNode) -> Result<()> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut c = Raw::connect(node.addr).await?;
        if seq_of(&c.greeting) == Some(0) {
            return c.still_works().await;
        }
        ensure!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::task::yield_now().await;
    }
}

/// A node with these connection limits (and otherwise the defaults).
async fn node_with(limits: ConnectionLimits, max_connections: usize) -> Result<TestNode> {
    TestNode::start_with(ServerOptions {
        max_connections,
        connections: limits,
        ..ServerOptions::default()
    })
    .await
}

/// Reads until the server closes `c`; returns the error it said goodbye
/// with.
async fn closed_with_error(c: &mut Raw) -> Result<String> {
    let mut said = None;
    while let Some(m) = c.recv_or_closed().await? {
        ensure!(said.is_none(), "a message after the goodbye: {m}");
        said = Some(error_text(&m)?.to_string());
    }
    said.context("closed without saying why")
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed_but_a_watcher_stays() -> Result<()> {
    // Margins for a loaded machine: the clients that talk do so at once.
    let handshake = Duration::from_secs(1);
    let idle = Duration::from_secs(2);
    let node = node_with(
        ConnectionLimits {
            handshake_timeout: handshake,
            idle_timeout: Some(idle),
            ..ConnectionLimits::default()
        },
        100,
    )
    .await?;

    // The watcher asks first: were it taken for idle, it would go first.
    let mut watcher = node.raw().await?;
    let wseq = watcher
        .request("watch", vec![("path", p(path!["w"]))])
        .await?;
    ensure!(state_of(&watcher.recv().await?) == Some("start"));
    let idle_since = Instant::now();
    let mut idler = node.raw().await?;
    idler.still_works().await?;

    // Silent from the start, and a message that never completes.
    let started = Instant::now();
    let mut silent = node.raw().await?;
    let mut trickle = node.raw().await?;
    trickle.send_bytes(&[0x82, 0xa3, b's']).await?;
    for c in [&mut silent, &mut trickle] {
        let why = closed_with_error(c).await?;
        ensure!(why.contains("no complete request within"), "{why}");
    }
    ensure!(
        started.elapsed() >= handshake,
        "closed before the handshake timeout"
    );

    let why = closed_with_error(&mut idler).await?;
    ensure!(why.contains("no request for"), "{why}");
    ensure!(
        idle_since.elapsed() >= idle,
        "closed before the idle timeout"
    );

    // The watcher, silent for longer than the idler, still gets changes.
    let mut writer = node.raw().await?;
    writer
        .call_ok(
            "set_value",
            vec![("path", p(path!["w"])), ("value", Value::Int(1))],
        )
        .await?;
    let m = watcher.recv().await?;
    ensure!(
        seq_of(&m) == Some(wseq) && m.get("value") == Some(&Value::Int(1)),
        "{m}"
    );
    Ok(())
}

#[tokio::test]
async fn the_per_address_cap_refuses_extra_connections_with_an_error() -> Result<()> {
    let capped = ConnectionLimits {
        max_per_addr: 2,
        loopback_exempt: false,
        ..ConnectionLimits::default()
    };
    let node = node_with(capped.clone(), 100).await?;
    let mut held = vec![node.raw().await?, node.raw().await?];
    let mut third = Raw::connect(node.addr).await?;
    let why = error_text(&third.greeting)?;
    ensure!(
        why.contains("too many connections from your address (limit 2)"),
        "{why}"
    );
    third.expect_closed().await?;
    for c in &mut held {
        c.still_works().await?;
    }
    drop(held.pop());
    admitted_again(&node).await?;

    // Loopback is exempt by default.
    let exempt = node_with(
        ConnectionLimits {
            loopback_exempt: true,
            ..capped
        },
        100,
    )
    .await?;
    let mut many = Vec::new();
    for _ in 0..5 {
        let mut c = exempt.raw().await?;
        c.still_works().await?;
        many.push(c);
    }
    Ok(())
}

/// The number after `key=` in `line`.
fn number_after(line: &str, key: &str) -> Result<u64> {
    let at = line
        .find(key)
        .with_context(|| format!("no {key} in {line}"))?
        + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().with_context(|| format!("{key} in {line}"))
}

#[tokio::test]
async fn refused_connections_are_logged_at_most_once_a_second_with_counts() -> Result<()> {
    const REFUSED: u64 = 200;
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // This test's runtime has one thread: the server logs through this
    // subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let node = node_with(ConnectionLimits::default(), 1).await?;
    let _only = node.raw().await?;
    let started = Instant::now();
    for _ in 0..REFUSED {
        let mut c = Raw::connect(node.addr).await?;
        error_text(&c.greeting)?;
        c.expect_closed().await?;
    }
    let took = started.elapsed();

    // Every refusal is counted once: on its own line, held back and counted
    // on the next line, or in the summary a second after the last line.
    let counted = |text: &str| -> Result<(u64, u64)> {
        let (mut lines, mut total) = (0, 0);
        for l in text.lines() {
            if l.contains("refusing client") {
                lines += 1;
                total += 1 + number_after(l, "held_back=")?;
            } else if l.contains("more clients refused") {
                lines += 1;
                total += number_after(l, "refused=")?;
            }
        }
        Ok((lines, total))
    };
    let deadline = Instant::now() + DEADLINE;
    while counted(&lines.text())?.1 < REFUSED {
        ensure!(
            Instant::now() < deadline,
            "not every refusal was reported:\n{}",
            lines.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (logged, total) = counted(&lines.text())?;
    ensure!(
        total == REFUSED,
        "{total} refusals reported:\n{}",
        lines.text()
    );
    // One line per second begun, plus the summary.
    let most = took.as_secs() + 2;
    ensure!(
        logged <= most,
        "{logged} lines for {REFUSED} refusals in {took:?}:\n{}",
        lines.text()
    );
    Ok(())
}

#[tokio::test]
async fn many_idle_connections_do_not_slow_a_fresh_client() -> Result<()> {
    const IDLE: usize = 2000;
    // They stay silent: give them the longest handshake allowed.
    let node = TestNode::start_with(ServerOptions {
        connections: ConnectionLimits {
            handshake_timeout: Duration::from_secs(3600),
            ..ConnectionLimits::default()
        },
        ..ServerOptions::default()
    })
    .await?;
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
        took < Duration::from_secs(5),
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
