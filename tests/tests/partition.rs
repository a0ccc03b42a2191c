//! A healed partition over the real MQTT mesh: three in-process nodes, each
//! with its client port and its embedded broker on loopback, one of them cut
//! off by a gate while clients write on both sides — the same keys
//! included. After healing every node must hold the same state, and no
//! acknowledged write may be lost unless a later one to the same key
//! supersedes it under the deterministic rule.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_node::client::Client;
use distkv_tests::{eventually, ClusterNode};

/// Writes `part.k{i}` for `keys` on `c`; returns the acknowledged writes.
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
    let n1 = ClusterNode::start("p1", vec![]).await?;
    let n2 = ClusterNode::start("p2", vec![n1.broker()?]).await?;
    let n3 = ClusterNode::start("p3", vec![n1.broker()?]).await?;
    let nodes = [&n1, &n2, &n3];
    let (c1, c3) = (n1.client().await?, n3.client().await?);

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
    // The digest covers entries and ticks, not what is missing: a repair
    // answer sends the entries first and the superseded ticks after them.
    eventually("convergence after healing", Duration::from_secs(30), || {
        let d = n1.server.state().digest();
        nodes.iter().all(|n| {
            let st = n.server.state();
            st.digest() == d && st.missing().is_empty()
        })
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
            vals.contains(&got),
            "{p}: {got} is none of the writes {vals:?}"
        );
    }
    for (k, want) in [("k0", "a-0"), ("k499", "b-499")] {
        let e = st.entry(&path!["part", k]).context("entry")?;
        ensure!(
            e.data_cloned() == Some(Value::str(want)),
            "{k}: {:?}",
            e.data()
        );
    }
    ensure!(st.missing().is_empty(), "still missing: {:?}", st.missing());
    Ok(())
}
