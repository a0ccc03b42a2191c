//! Client actions that cross the cluster: user messages between clients of
//! different nodes (`msg_send` / `msg_monitor`) and dropping a node for good
//! (`kill_node`), over the real MQTT mesh.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Value};
use distkv_node::client::{ClientError, StreamItem};
use distkv_tests::{eventually, within, ClusterNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_through_one_node_reach_monitors_on_another() -> Result<()> {
    let n1 = ClusterNode::start("m1", vec![]).await?;
    let n2 = ClusterNode::start("m2", vec![n1.broker()?]).await?;
    let (c1, c2) = (n1.client().await?, n2.client().await?);
    let topic = Value::Array(vec![Value::str("app"), Value::str("+")]);
    let mut decoded = c2
        .stream("msg_monitor", vec![("topic", topic.clone())])
        .await?;
    let mut raw = c2
        .stream(
            "msg_monitor",
            vec![("topic", topic), ("raw", Value::Bool(true))],
        )
        .await?;

    // The subscription reaches the brokers asynchronously: send until the
    // monitor sees a message, then check what it got.
    let data = Value::map([("x", Value::Int(1))]);
    let got = within("a message on the monitor", async {
        loop {
            let send = vec![
                (
                    "topic",
                    Value::Array(vec![Value::str("app"), Value::str("one")]),
                ),
                ("data", data.clone()),
            ];
            c1.request("msg_send", send).await?;
            if let Ok(item) = tokio::time::timeout(Duration::from_millis(100), decoded.next()).await
            {
                return anyhow::Ok(item?.context("monitor ended")?);
            }
        }
    })
    .await??;
    let StreamItem::Data(m) = got else {
        bail!("unexpected {got:?}")
    };
    ensure!(m.get("data") == Some(&data), "{m}");
    ensure!(
        m.get("topic") == Some(&Value::Array(vec![Value::str("app"), Value::str("one")])),
        "{m}"
    );

    // Raw bytes go through as they are; the raw monitor shows every
    // message as bytes, the packed one too.
    let bytes = Value::Bin(b"\xc1not msgpack".as_slice().into());
    let send = vec![("topic", Value::str("app/two")), ("raw", bytes.clone())];
    c1.request("msg_send", send).await?;
    let seen = within("the raw message", async {
        loop {
            match raw.next().await? {
                Some(StreamItem::Data(m)) if m.get("raw") == Some(&bytes) => return anyhow::Ok(m),
                Some(_) => continue,
                None => bail!("raw monitor ended"),
            }
        }
    })
    .await??;
    ensure!(seen.get("error").is_none(), "{seen}");
    // On the decoding monitor, undecodable bytes come raw with an
    // `error`, which clients (Python's too) raise as the stream's error.
    let bad = within("the undecodable message", async {
        loop {
            match decoded.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => bail!("monitor ended"),
                Err(e) => return anyhow::Ok(e),
            }
        }
    })
    .await??;
    ensure!(bad.to_string().contains("msgpack"), "{bad}");

    // Bad requests get clear errors.
    let wild = vec![("topic", Value::str("app/#")), ("data", Value::Int(1))];
    ensure!(matches!(
        c1.request("msg_send", wild).await,
        Err(ClientError::Server(_))
    ));
    let forged = vec![
        (
            "topic",
            Value::Array(vec![Value::str(":distkv"), Value::str("info")]),
        ),
        ("data", Value::map([("node", Value::str("m2"))])),
    ];
    match c1.request("msg_send", forged).await {
        Err(ClientError::Server(e)) => ensure!(e.contains("belong to the cluster"), "{e}"),
        other => bail!("msg_send into the cluster's topics: {other:?}"),
    }
    let nothing = vec![("topic", Value::str("app/x"))];
    ensure!(matches!(
        c1.request("msg_send", nothing).await,
        Err(ClientError::Server(_))
    ));
    // A filter the broker would refuse (and drop the node's own link for)
    // is refused here, and the node's messages still go out.
    let broker_s = vec![("topic", Value::str("$SYS/#"))];
    let refused = match c1.stream("msg_monitor", broker_s).await {
        Err(ClientError::Server(e)) => e,
        Ok(mut s) => match s.next().await {
            Err(ClientError::Server(e)) => e,
            other => bail!("a monitor of $SYS/#: {other:?}"),
        },
        Err(e) => bail!("a monitor of $SYS/#: {e}"),
    };
    ensure!(refused.contains("starting with"), "{refused}");
    let after = Value::str("after");
    let send = vec![("topic", Value::str("app/three")), ("data", after.clone())];
    c1.request("msg_send", send).await?;
    within("a message sent after the refused monitor", async {
        loop {
            match raw.next().await? {
                Some(StreamItem::Data(m))
                    if m.get("topic")
                        .is_some_and(|t| t.to_string().contains("three")) =>
                {
                    return anyhow::Ok(())
                }
                Some(_) => continue,
                None => bail!("raw monitor ended"),
            }
        }
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_dropped_only_once_it_heads_no_entry() -> Result<()> {
    let n1 = ClusterNode::start("k1", vec![]).await?;
    let n2 = ClusterNode::start("k2", vec![n1.broker()?]).await?;
    let n3 = ClusterNode::start("k3", vec![n1.broker()?]).await?;
    let (c1, c2) = (n1.client().await?, n2.client().await?);
    c1.set_value(&path!["a"], Value::Int(1), &Default::default())
        .await?;
    eventually("k1's write on k2", Duration::from_secs(20), || {
        n2.server.state().entry(&path!["a"]).is_some()
    })
    .await?;
    drop(n1); // k1 leaves

    let unknown = vec![("node", Value::str("k9"))];
    match c2.request("kill_node", unknown).await {
        Err(ClientError::Server(e)) => ensure!(e.contains("unknown node k9"), "{e}"),
        other => bail!("kill_node of a node nobody knows: {other:?}"),
    }
    let kill = || vec![("node", Value::str("k1"))];
    match c2.request("kill_node", kill()).await {
        Err(ClientError::Server(e)) => ensure!(e.contains("heads"), "{e}"),
        other => bail!("kill_node of a node with data: {other:?}"),
    }
    // Once its entry was overwritten, k1 heads nothing and can go.
    c2.set_value(&path!["a"], Value::Int(2), &Default::default())
        .await?;
    c2.request("kill_node", kill()).await?;
    ensure!(n2.server.state().node("k1").is_none());
    let dropped = eventually("k3 to drop k1 too", Duration::from_secs(20), || {
        n3.server.state().node("k1").is_none()
    })
    .await;
    if let Err(e) = dropped {
        let st = n3.server.state();
        let a = st
            .entry(&path!["a"])
            .map(|e| (e.data_cloned(), e.chain_cloned()));
        bail!("{e}: on k3, a = {a:?}, k1 = {:?}", st.node("k1"));
    }
    Ok(())
}

/// `fake_info` marks ticks on the node asked; `fake_info_send` tells the
/// other nodes (DistKV's `internal mark` and `mark -b`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_info_marks_here_and_fake_info_send_marks_elsewhere() -> Result<()> {
    let n1 = ClusterNode::start("f1", vec![]).await?;
    let n2 = ClusterNode::start("f2", vec![n1.broker()?]).await?;
    let c1 = n1.client().await?;
    // Linked: f2 has f1's write.
    c1.set_value(&path!["a"], Value::Int(1), &Default::default())
        .await?;
    eventually("f1's write on f2", Duration::from_secs(20), || {
        n2.server.state().entry(&path!["a"]).is_some()
    })
    .await?;
    let ticks = |key: &'static str, t: Value| {
        vec![
            (key, Value::map([("zz", Value::Array(vec![t]))])),
            ("node", Value::str("?")),
        ]
    };
    let pair = Value::Array(vec![Value::Int(1), Value::Int(4)]);
    c1.request("fake_info", ticks("deleted", Value::Int(7)))
        .await?;
    let deleted = n1.server.state().node("zz").map(|i| i.deleted().clone());
    ensure!(
        deleted.as_ref().is_some_and(|d| d.contains(7)),
        "{deleted:?}"
    );
    c1.request("fake_info_send", ticks("superseded", pair))
        .await?;
    eventually("f2 to take zz's ticks 1-3", Duration::from_secs(20), || {
        n2.server
            .state()
            .node("zz")
            .is_some_and(|i| (1..4).all(|t| i.superseded().contains(t)))
    })
    .await?;
    // Sent, not applied by the sender; the local mark stayed local.
    let st = n1.server.state();
    ensure!(st.node("zz").is_some_and(|i| !i.superseded().contains(1)));
    let on2 = n2.server.state().node("zz").map(|i| i.deleted().clone());
    ensure!(on2.as_ref().is_some_and(|d| !d.contains(7)), "f2: {on2:?}");
    let bad = vec![("deleted", Value::str("x"))];
    ensure!(matches!(
        c1.request("fake_info", bad).await,
        Err(ClientError::Server(_))
    ));
    Ok(())
}
