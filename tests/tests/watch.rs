//! `watch` over real TCP: fetch, live updates from another connection, depth
//! limits, `stop`, and streams running beside single requests on one
//! connection (as recorded from DistKV 0.63.3).
//!
//! To show that a change is *not* reported without waiting for a timeout, a
//! test makes the excluded change first and an included one after it: the
//! watcher sees changes in order, so the first message must be the included
//! one.

use anyhow::{ensure, Result};
use distkv_model::Value;
use distkv_tests::*;

/// Starts a `watch` with `fetch` and reads up to `uptodate`; returns the
/// seq and the fetched data messages.
async fn watch_fetch(c: &mut Raw, fields: Vec<(&str, Value)>) -> Result<(u64, Vec<Value>)> {
    let mut f = vec![("fetch", Value::Bool(true))];
    f.extend(fields);
    let seq = c.request("watch", f).await?;
    let start = c.recv().await?;
    ensure!(
        seq_of(&start) == Some(seq) && state_of(&start) == Some("start"),
        "{start}"
    );
    let mut data = Vec::new();
    loop {
        let m = c.recv().await?;
        ensure!(seq_of(&m) == Some(seq), "{m}");
        if state_of(&m) == Some("uptodate") {
            match m.get("wseq") {
                None => assert_keys(&m, &["state", "seq", "tock"])?,
                Some(_) => assert_keys(&m, &["state", "seq", "wseq", "tock"])?,
            }
            return Ok((seq, data));
        }
        ensure!(m.get("error").is_none(), "{m}");
        data.push(m);
    }
}

#[tokio::test]
async fn watch_with_fetch_sends_entries_then_uptodate_then_live_changes() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[
        (path!["wire", "test"], Value::Int(43)),
        (path!["wire", "test", "sub", "x"], Value::Int(1)),
    ])
    .await?;
    let mut a = node.raw().await?;
    let (wseq, fetched) = watch_fetch(
        &mut a,
        vec![("path", p(path!["wire"])), ("nchain", Value::Int(0))],
    )
    .await?;
    ensure!(fetched.len() == 2, "{fetched:?}");
    assert_keys(&fetched[0], &["value", "tock", "path", "depth", "seq"])?;
    ensure!(
        field(&fetched[0], "path")? == &arr(["test"]),
        "{}",
        fetched[0]
    );
    ensure!(
        field(&fetched[1], "path")? == &arr(["sub", "x"]),
        "{}",
        fetched[1]
    );
    ensure!(
        field(&fetched[1], "depth")? == &Value::Int(1),
        "{}",
        fetched[1]
    );

    // Live changes from a second connection (a second connection, as in DistKV 0.63.3's recorded session).
    let mut b = node.raw().await?;
    let set = b
        .call_ok(
            "set_value",
            vec![
                ("path", p(path!["wire", "test", "sub", "y"])),
                ("value", Value::str("from B")),
            ],
        )
        .await?;
    let ev = a.recv().await?;
    assert_keys(&ev, &["value", "tock", "path", "depth", "seq"])?;
    ensure!(seq_of(&ev) == Some(wseq), "{ev}");
    ensure!(field(&ev, "value")? == &Value::str("from B"), "{ev}");
    ensure!(tock_of(&ev)? == tock_of(&set)?, "{ev} vs {set}");
    ensure!(field(&ev, "path")? == &arr(["y"]), "{ev}");
    ensure!(field(&ev, "depth")? == &Value::Int(2), "{ev}");

    let del = b
        .call_ok(
            "delete_value",
            vec![("path", p(path!["wire", "test", "sub", "x"]))],
        )
        .await?;
    let ev = a.recv().await?;
    // A deletion has no value.
    assert_keys(&ev, &["tock", "path", "depth", "seq"])?;
    ensure!(tock_of(&ev)? == tock_of(&del)?, "{ev} vs {del}");
    ensure!(field(&ev, "path")? == &arr(["x"]), "{ev}");
    ensure!(field(&ev, "depth")? == &Value::Int(2), "{ev}");

    // stop: {result: true} for the stop request and the end of the watch,
    // in either order (clients route by seq).
    let stop_seq = a.request("stop", vec![("task", Value::uint(wseq))]).await?;
    let (mut stopped, mut ended) = (false, false);
    while !(stopped && ended) {
        let m = a.recv().await?;
        if seq_of(&m) == Some(stop_seq) && !stopped {
            assert_keys(&m, &["result", "seq", "tock"])?;
            ensure!(field(&m, "result")? == &Value::Bool(true), "{m}");
            stopped = true;
        } else if seq_of(&m) == Some(wseq) && !ended {
            ensure!(state_of(&m) == Some("end"), "{m}");
            ended = true;
        } else {
            anyhow::bail!("unexpected message after stop: {m}");
        }
    }
    // The watch is gone: a later change does not reach A.
    b.call_ok(
        "set_value",
        vec![
            ("path", p(path!["wire", "later"])),
            ("value", Value::Int(1)),
        ],
    )
    .await?;
    a.still_works().await?;
    a.expect_silence().await
}

#[tokio::test]
async fn watch_depth_limits_filter_changes() -> Result<()> {
    let node = TestNode::start().await?;
    let mut a = node.raw().await?;
    let mut b = node.raw().await?;
    let (wseq, fetched) = watch_fetch(
        &mut a,
        vec![
            ("path", p(path!["w"])),
            ("min_depth", Value::Int(1)),
            ("max_depth", Value::Int(1)),
            ("nchain", Value::Int(1)),
        ],
    )
    .await?;
    ensure!(fetched.is_empty(), "{fetched:?}");
    // Depth 0 and depth 2 are outside the limits; depth 1 is inside.
    for (path, v) in [
        (path!["w"], 0i64),
        (path!["w", "a", "b"], 2),
        (path!["w", "c"], 1),
    ] {
        b.call_ok(
            "set_value",
            vec![("path", p(path)), ("value", Value::Int(v))],
        )
        .await?;
    }
    let ev = a.recv().await?;
    ensure!(seq_of(&ev) == Some(wseq), "{ev}");
    ensure!(field(&ev, "value")? == &Value::Int(1), "{ev}");
    ensure!(field(&ev, "path")? == &arr(["c"]), "{ev}");
    ensure!(field(&ev, "depth")? == &Value::Int(0), "{ev}");
    // Three changes so far: w.c was tick 3.
    ensure!(field(&ev, "chain")? == &chain(&[(NODE, 3)], true), "{ev}");
    Ok(())
}

#[tokio::test]
async fn watch_fetch_respects_depth_limits() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[
        (path!["f"], Value::Int(0)),
        (path!["f", "a"], Value::Int(1)),
        (path!["f", "a", "b"], Value::Int(2)),
    ])
    .await?;
    let mut a = node.raw().await?;
    let (_, fetched) = watch_fetch(
        &mut a,
        vec![("path", p(path!["f"])), ("max_depth", Value::Int(1))],
    )
    .await?;
    let got = lengthen(&[Value::str("f")], &fetched)?;
    ensure!(
        got == vec![
            vec![Value::str("f")],
            vec![Value::str("f"), Value::str("a")]
        ],
        "{fetched:?}"
    );
    Ok(())
}

#[tokio::test]
async fn watch_never_reports_meta_tree_changes() -> Result<()> {
    let node = TestNode::start().await?;
    let mut a = node.raw().await?;
    let mut b = node.raw().await?;
    let (wseq, _) = watch_fetch(&mut a, vec![("path", arr::<Value>([]))]).await?;
    b.call_ok(
        "set_internal",
        vec![("path", p(path!["meta"])), ("value", Value::Int(1))],
    )
    .await?;
    b.call_ok(
        "set_value",
        vec![("path", p(path!["plain"])), ("value", Value::Int(2))],
    )
    .await?;
    let ev = a.recv().await?;
    ensure!(seq_of(&ev) == Some(wseq), "{ev}");
    ensure!(field(&ev, "value")? == &Value::Int(2), "{ev}");
    ensure!(field(&ev, "path")? == &p(path!["plain"]), "{ev}");
    Ok(())
}

#[tokio::test]
async fn stop_of_an_unknown_task_replies_false() -> Result<()> {
    let node = TestNode::start().await?;
    let mut a = node.raw().await?;
    let r = a.call_ok("stop", vec![("task", Value::Int(999))]).await?;
    assert_keys(&r, &["result", "seq", "tock"])?;
    ensure!(field(&r, "result")? == &Value::Bool(false), "{r}");
    Ok(())
}

#[tokio::test]
async fn a_running_watch_does_not_block_single_requests_on_its_connection() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[(path!["cc", "x"], Value::Int(1))]).await?;
    let mut a = node.raw().await?;
    let (wseq, _) = watch_fetch(&mut a, vec![("path", p(path!["cc"]))]).await?;

    // Nothing changes, so the next message must be the reply.
    let got = a
        .call_ok("get_value", vec![("path", p(path!["cc", "x"]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(1), "{got}");

    // A change made on the watching connection itself: both the reply and
    // the watch event arrive.
    let set_seq = a
        .request(
            "set_value",
            vec![("path", p(path!["cc", "y"])), ("value", Value::Int(2))],
        )
        .await?;
    let (mut replied, mut watched) = (false, false);
    while !(replied && watched) {
        let m = a.recv().await?;
        match seq_of(&m) {
            Some(s) if s == set_seq && !replied => {
                ensure!(field(&m, "changed")? == &Value::Bool(true), "{m}");
                replied = true;
            }
            Some(s) if s == wseq && !watched => {
                ensure!(field(&m, "value")? == &Value::Int(2), "{m}");
                watched = true;
            }
            _ => anyhow::bail!("unexpected {m}"),
        }
    }
    // Several more single requests, interleaved with nothing.
    for _ in 0..5 {
        a.still_works().await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_official_client_sees_watch_updates() -> Result<()> {
    use distkv_node::client::{StreamItem, TreeOptions, UpdateOptions};
    let node = TestNode::start().await?;
    let a = node.client().await?;
    let b = node.client().await?;
    let opts = TreeOptions {
        fetch: true,
        ..TreeOptions::default()
    };
    let mut s = a.watch(&path!["oc"], &opts).await?;
    ensure!(matches!(
        within("uptodate", s.next()).await??,
        Some(StreamItem::UpToDate(_))
    ));
    b.set_value(&path!["oc", "k"], Value::Int(5), &UpdateOptions::default())
        .await?;
    let item = within("watch event", s.next()).await??;
    let Some(StreamItem::Data(m)) = item else {
        anyhow::bail!("expected data, got {item:?}");
    };
    ensure!(field(&m, "path")? == &p(path!["oc", "k"]), "{m}");
    ensure!(field(&m, "value")? == &Value::Int(5), "{m}");
    s.stop()?;
    ensure!(within("end", s.next()).await??.is_none());
    Ok(())
}

#[tokio::test]
async fn a_watcher_that_falls_behind_the_event_log_is_told_instead_of_skipping() -> Result<()> {
    let mut opts = distkv_node::server::ServerOptions::default();
    opts.log.max_records = 8;
    let node = TestNode::start_with(opts).await?;
    let mut a = node.raw().await?;
    a.send(&hello(4)).await?;
    let (wseq, _) = watch_fetch(&mut a, vec![("path", p(path!["lag"]))]).await?;
    let mut b = node.raw().await?;
    b.call_ok(
        "set_value",
        vec![("path", p(path!["lag", "k"])), ("value", Value::Int(1))],
    )
    .await?;
    // start, uptodate and this event: three unacknowledged messages, so
    // the watcher now waits for us while the log moves on without it.
    let ev = a.recv().await?;
    ensure!(field(&ev, "value")? == &Value::Int(1), "{ev}");
    for v in 2..=21 {
        b.call_ok(
            "set_value",
            vec![("path", p(path!["lag", "k"])), ("value", Value::Int(v))],
        )
        .await?;
    }
    // Read on, acknowledging everything: a gap-free prefix of the changes,
    // then the error, then the end.
    let ack = |w: &Value| {
        Value::map([
            ("seq", Value::uint(wseq)),
            ("state", Value::str("ack")),
            ("ack", w.clone()),
        ])
    };
    a.send(&ack(field(&ev, "wseq")?)).await?;
    let mut expect = 2;
    let mut errored = false;
    loop {
        let m = a.recv().await?;
        ensure!(seq_of(&m) == Some(wseq), "{m}");
        a.send(&ack(field(&m, "wseq")?)).await?;
        if state_of(&m) == Some("end") {
            break;
        }
        ensure!(!errored, "data after the error: {m}");
        if let Some(e) = m.get("error") {
            ensure!(format!("{e}").contains("Aborted. Queue filled?"), "{m}");
            errored = true;
            continue;
        }
        ensure!(field(&m, "value")? == &Value::Int(expect), "gap before {m}");
        expect += 1;
    }
    ensure!(errored, "the watcher skipped changes without an error");
    ensure!(
        expect <= 21,
        "every change was delivered: the log did not drop any"
    );
    a.still_works().await
}
