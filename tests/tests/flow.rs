//! Flow control (`qlen`, `wseq`, `ack`, as DistKV 0.63.3 does them) and
//! pipelining over real TCP.

use std::collections::BTreeSet;

use anyhow::{ensure, Result};
use distkv_model::{codec, Value};
use distkv_node::server::ServerOptions;
use distkv_tests::*;

/// Seeds `wire2.0 … wire2.(n-1)` with values `0, 10, 20, …`.
async fn seed_wire2(node: &TestNode, n: i64) -> Result<()> {
    let entries: Vec<_> = (0..n)
        .map(|i| (path!["wire2", i], Value::Int(10 * i)))
        .collect();
    node.seed(&entries).await
}

/// Receives `n` messages of stream `seq`; checks their `wseq`s run on
/// from `first`.
async fn recv_window(c: &mut Raw, seq: u64, first: u64, n: u64) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for w in first..first + n {
        let m = c.recv().await?;
        ensure!(seq_of(&m) == Some(seq), "{m}");
        ensure!(
            field(&m, "wseq")? == &Value::uint(w),
            "expected wseq {w}: {m}"
        );
        out.push(m);
    }
    Ok(out)
}

fn ack(seq: u64, wseq: u64) -> Value {
    Value::map([
        ("seq", Value::uint(seq)),
        ("state", Value::str("ack")),
        ("ack", Value::uint(wseq)),
    ])
}

#[tokio::test]
async fn flow_controlled_get_tree_waits_for_acks_like_the_transcript() -> Result<()> {
    let node = TestNode::start().await?;
    seed_wire2(&node, 8).await?;
    let mut c = node.raw().await?;
    c.send(&hello(4)).await?;
    let seq = c
        .request(
            "get_tree",
            vec![("path", p(path!["wire2"])), ("nchain", Value::Int(0))],
        )
        .await?;

    let first = recv_window(&mut c, seq, 1, 3).await?;
    assert_keys(&first[0], &["state", "seq", "wseq", "tock"])?;
    ensure!(state_of(&first[0]) == Some("start"), "{}", first[0]);
    assert_keys(
        &first[1],
        &["value", "tock", "path", "depth", "seq", "wseq"],
    )?;
    ensure!(field(&first[1], "path")? == &arr([0i64]), "{}", first[1]);
    ensure!(
        field(&first[2], "value")? == &Value::Int(10),
        "{}",
        first[2]
    );
    // Three unacknowledged messages with qlen 4: the server waits.
    c.expect_silence().await?;

    c.send(&ack(seq, 3)).await?;
    let next = recv_window(&mut c, seq, 4, 3).await?;
    let values: Vec<_> = next.iter().map(|m| m.get("value").cloned()).collect();
    ensure!(
        values == [20i64, 30, 40].map(|v| Some(Value::Int(v))),
        "{next:?}"
    );
    c.expect_silence().await?;

    c.send(&ack(seq, 6)).await?;
    let next = recv_window(&mut c, seq, 7, 3).await?;
    ensure!(field(&next[2], "path")? == &arr([7i64]), "{}", next[2]);
    ensure!(field(&next[2], "depth")? == &Value::Int(0), "{}", next[2]);
    c.expect_silence().await?;

    c.send(&ack(seq, 9)).await?;
    let end = recv_window(&mut c, seq, 10, 1).await?;
    assert_keys(&end[0], &["state", "seq", "wseq", "tock"])?;
    ensure!(state_of(&end[0]) == Some("end"), "{}", end[0]);
    // Single replies never carry wseq.
    let r = c.call_ok("get_tock", vec![]).await?;
    ensure!(r.get("wseq").is_none(), "{r}");
    Ok(())
}

#[tokio::test]
async fn the_hello_window_is_capped_by_the_server_buffer() -> Result<()> {
    ensure!(
        ServerOptions::default().buffer == 1024,
        "the default window is 1024"
    );
    let node = TestNode::start_with(ServerOptions {
        buffer: 10,
        ..ServerOptions::default()
    })
    .await?;
    seed_wire2(&node, 12).await?;
    let mut c = node.raw().await?;
    // The server offers 10 (its buffer); asking for 100 gets 10.
    ensure!(field(&c.greeting, "qlen")? == &Value::Int(10));
    c.send(&hello(100)).await?;
    let seq = c
        .request("get_tree", vec![("path", p(path!["wire2"]))])
        .await?;
    recv_window(&mut c, seq, 1, 9).await?;
    c.expect_silence().await?;
    c.send(&ack(seq, 9)).await?;
    // 12 entries + start + end = 14 messages.
    let rest = recv_window(&mut c, seq, 10, 5).await?;
    ensure!(state_of(&rest[4]) == Some("end"), "{}", rest[4]);
    Ok(())
}

#[tokio::test]
async fn a_request_qlen_overrides_the_connection_window() -> Result<()> {
    let node = TestNode::start().await?;
    seed_wire2(&node, 8).await?;
    let mut c = node.raw().await?;
    // No hello: the connection has no flow control, the request asks for it.
    let seq = c
        .request(
            "get_tree",
            vec![("path", p(path!["wire2"])), ("qlen", Value::Int(4))],
        )
        .await?;
    recv_window(&mut c, seq, 1, 3).await?;
    c.expect_silence().await?;
    c.send(&ack(seq, 100)).await?;
    let rest = recv_window(&mut c, seq, 4, 7).await?;
    ensure!(state_of(&rest[6]) == Some("end"), "{}", rest[6]);
    Ok(())
}

#[tokio::test]
async fn a_stalled_stream_does_not_block_single_requests() -> Result<()> {
    let node = TestNode::start().await?;
    seed_wire2(&node, 8).await?;
    let mut c = node.raw().await?;
    c.send(&hello(4)).await?;
    let seq = c
        .request("get_tree", vec![("path", p(path!["wire2"]))])
        .await?;
    recv_window(&mut c, seq, 1, 3).await?;
    // The stream waits for an ack; single requests are still answered.
    let got = c
        .call_ok("get_value", vec![("path", p(path!["wire2", 5i64]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(50), "{got}");
    c.call_ok(
        "set_value",
        vec![("path", p(path!["elsewhere"])), ("value", Value::Int(1))],
    )
    .await?;
    c.send(&ack(seq, 3)).await?;
    recv_window(&mut c, seq, 4, 3).await?;
    Ok(())
}

#[tokio::test]
async fn a_thousand_pipelined_set_values_all_get_their_replies() -> Result<()> {
    const N: u64 = 1000;
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let mut bytes = Vec::new();
    for seq in 1..=N {
        let m = Value::map([
            ("seq", Value::uint(seq)),
            ("action", Value::str("set_value")),
            ("path", p(path!["pipe", seq])),
            ("value", Value::uint(seq * 2)),
            ("nchain", Value::Int(1)),
        ]);
        codec::encode(&m, &mut bytes);
    }
    c.send_bytes(&bytes).await?;

    let mut seqs = BTreeSet::new();
    let mut ticks = BTreeSet::new();
    for _ in 0..N {
        let r = c.recv().await?;
        ensure!(r.get("error").is_none(), "{r}");
        ensure!(field(&r, "changed")? == &Value::Bool(true), "{r}");
        let seq = seq_of(&r).ok_or_else(|| anyhow::anyhow!("no seq: {r}"))?;
        ensure!(seqs.insert(seq), "seq {seq} answered twice");
        ticks.insert(head_tick(field(&r, "chain")?)?);
    }
    ensure!(seqs == (1..=N).collect::<BTreeSet<_>>(), "missing replies");
    ensure!(
        ticks == (1..=N).collect::<BTreeSet<_>>(),
        "ticks not 1..={N}"
    );

    for seq in [1u64, 500, N] {
        let got = c
            .call_ok("get_value", vec![("path", p(path!["pipe", seq]))])
            .await?;
        ensure!(field(&got, "value")? == &Value::uint(seq * 2), "{got}");
    }
    Ok(())
}

#[tokio::test]
async fn a_client_that_half_closes_still_gets_all_replies() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let mut seqs = Vec::new();
    for i in 0..3i64 {
        seqs.push(
            c.request(
                "set_value",
                vec![("path", p(path!["half", i])), ("value", Value::Int(i))],
            )
            .await?,
        );
    }
    c.shutdown_write().await?;
    for seq in seqs {
        let r = c.recv().await?;
        ensure!(seq_of(&r) == Some(seq), "{r}");
        ensure!(r.get("error").is_none(), "{r}");
    }
    c.expect_closed().await
}

#[tokio::test]
async fn stopping_a_stalled_stream_ends_it_with_the_next_wseq() -> Result<()> {
    let node = TestNode::start().await?;
    seed_wire2(&node, 8).await?;
    let mut c = node.raw().await?;
    c.send(&hello(4)).await?;
    let seq = c
        .request("get_tree", vec![("path", p(path!["wire2"]))])
        .await?;
    recv_window(&mut c, seq, 1, 3).await?;
    let r = c.call_ok("stop", vec![("task", Value::uint(seq))]).await?;
    ensure!(field(&r, "result")? == &Value::Bool(true), "{r}");
    c.send(&ack(seq, 3)).await?;
    let end = c.recv().await?;
    ensure!(state_of(&end) == Some("end"), "{end}");
    ensure!(field(&end, "wseq")? == &Value::Int(4), "{end}");
    c.expect_silence().await
}

#[tokio::test]
async fn stopping_a_stalled_stream_ends_it_once_acknowledged() -> Result<()> {
    let node = TestNode::start().await?;
    seed_wire2(&node, 8).await?;
    let mut c = node.raw().await?;
    c.send(&hello(4)).await?;
    let seq = c
        .request("get_tree", vec![("path", p(path!["wire2"]))])
        .await?;
    recv_window(&mut c, seq, 1, 3).await?;
    let r = c.call_ok("stop", vec![("task", Value::uint(seq))]).await?;
    ensure!(field(&r, "result")? == &Value::Bool(true), "{r}");
    c.send(&ack(seq, 3)).await?;
    // No more data after the stop: just the end.
    let end = c.recv().await?;
    ensure!(
        seq_of(&end) == Some(seq) && state_of(&end) == Some("end"),
        "{end}"
    );
    c.expect_silence().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_distinct_ticks_for_every_change() -> Result<()> {
    use distkv_node::client::UpdateOptions;
    const CLIENTS: u64 = 8;
    const EACH: u64 = 100;
    let node = TestNode::start().await?;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let client = node.client().await?;
        tasks.spawn(async move {
            // All of one client's requests are in flight at once.
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..EACH {
                let client = client.clone();
                calls.spawn(async move {
                    let opts = UpdateOptions {
                        nchain: 1,
                        ..UpdateOptions::default()
                    };
                    let r = client
                        .set_value(&path!["cc", c, i], Value::uint(c * EACH + i), &opts)
                        .await?;
                    head_tick(field(&r, "chain")?)
                });
            }
            let mut ticks = Vec::new();
            while let Some(t) = calls.join_next().await {
                ticks.push(t??);
            }
            anyhow::Ok(ticks)
        });
    }
    let mut ticks = BTreeSet::new();
    while let Some(r) = within("all clients", tasks.join_next()).await? {
        for t in r?? {
            ensure!(ticks.insert(t), "tick {t} handed out twice");
        }
    }
    ensure!(ticks == (1..=CLIENTS * EACH).collect::<BTreeSet<_>>());
    let mut c = node.raw().await?;
    ensure!(node_tick(&mut c).await? == CLIENTS * EACH);
    let got = c
        .call_ok("get_value", vec![("path", p(path!["cc", 3u64, 7u64]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::uint(3 * EACH + 7), "{got}");
    Ok(())
}
