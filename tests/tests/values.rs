//! Greeting, hello, `get_value`, `set_value` and `delete_value` over real TCP:
//! DistKV 0.63.3's reply shapes, as recorded from a real 0.63.3 server.

use anyhow::{ensure, Result};
use distkv_model::{codec, Value};
use distkv_node::server::ServerOptions;
use distkv_tests::*;

#[tokio::test]
async fn greeting_announces_version_node_tick_tock_and_qlen() -> Result<()> {
    let node = TestNode::start_with(ServerOptions {
        buffer: 7,
        ..ServerOptions::default()
    })
    .await?;
    let a = node.raw().await?;
    let g = &a.greeting;
    assert_keys(g, &["seq", "version", "node", "tick", "tock", "qlen"])?;
    ensure!(seq_of(g) == Some(0), "{g}");
    ensure!(field(g, "version")? == &arr([0i64, 63, 3]), "{g}");
    ensure!(field(g, "node")? == &Value::str(NODE), "{g}");
    ensure!(field(g, "tick")? == &Value::Int(0), "{g}");
    ensure!(field(g, "qlen")? == &Value::Int(7), "{g}");
    let tock_a = tock_of(g)?;

    // A change raises the tick that later greetings announce; tock moves on.
    node.seed(&[(path!["g"], Value::Int(1))]).await?;
    let b = node.raw().await?;
    ensure!(
        field(&b.greeting, "tick")? == &Value::Int(1),
        "{}",
        b.greeting
    );
    ensure!(
        tock_of(&b.greeting)? > tock_a,
        "{} after {tock_a}",
        b.greeting
    );
    Ok(())
}

#[tokio::test]
async fn hello_gets_no_reply_and_turns_on_flow_control() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[(path!["h", "a"], Value::Int(1))]).await?;

    let mut c = node.raw().await?;
    c.send(&hello(4)).await?;
    c.expect_silence().await?;
    let seq = c.request("get_tree", vec![("path", p(path!["h"]))]).await?;
    let msgs = c.recv_stream(seq).await?;
    let wseqs: Vec<_> = msgs.iter().map(|m| m.get("wseq").cloned()).collect();
    ensure!(
        wseqs
            == [
                Some(Value::Int(1)),
                Some(Value::Int(2)),
                Some(Value::Int(3))
            ],
        "{msgs:?}"
    );

    // Without a hello there is no flow control: no wseq at all.
    let mut d = node.raw().await?;
    let seq = d.request("get_tree", vec![("path", p(path!["h"]))]).await?;
    let msgs = d.recv_stream(seq).await?;
    ensure!(msgs.len() == 3, "{msgs:?}");
    ensure!(msgs.iter().all(|m| m.get("wseq").is_none()), "{msgs:?}");
    Ok(())
}

#[tokio::test]
async fn get_value_accepts_ext3_and_array_paths_and_sends_the_chain_on_request() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    // Transcript §3: set with nchain 0 on a new entry: no prev, no chain.
    let set = c
        .call_ok(
            "set_value",
            vec![
                ("path", p(path!["wire", "test"])),
                ("value", Value::str("hello raw")),
                ("nchain", Value::Int(0)),
            ],
        )
        .await?;
    assert_keys(&set, &["changed", "tock", "seq"])?;
    ensure!(field(&set, "changed")? == &Value::Bool(true), "{set}");
    let tock = tock_of(&set)?;

    // Transcript §4: the entry's tock is that of its change.
    let got = c
        .call_ok(
            "get_value",
            vec![
                ("path", p(path!["wire", "test"])),
                ("nchain", Value::Int(0)),
            ],
        )
        .await?;
    assert_keys(&got, &["value", "tock", "seq"])?;
    ensure!(field(&got, "value")? == &Value::str("hello raw"), "{got}");
    ensure!(tock_of(&got)? == tock, "{got} vs set tock {tock}");

    // The same path as a plain array (as DistKV 0.63.3 accepts it).
    let got = c
        .call_ok("get_value", vec![("path", arr(["wire", "test"]))])
        .await?;
    assert_keys(&got, &["value", "tock", "seq"])?;
    ensure!(field(&got, "value")? == &Value::str("hello raw"), "{got}");

    let got = c
        .call_ok(
            "get_value",
            vec![
                ("path", p(path!["wire", "test"])),
                ("nchain", Value::Int(3)),
            ],
        )
        .await?;
    assert_keys(&got, &["value", "chain", "tock", "seq"])?;
    ensure!(field(&got, "chain")? == &chain(&[(NODE, 1)], true), "{got}");
    Ok(())
}

#[tokio::test]
async fn get_value_of_a_missing_path_has_only_seq_and_tock() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let got = c
        .call_ok(
            "get_value",
            vec![
                ("path", arr(["wire", "nonexistent"])),
                ("nchain", Value::Int(0)),
            ],
        )
        .await?;
    assert_keys(&got, &["seq", "tock"])?;

    let got = c
        .call_ok(
            "get_value",
            vec![
                ("path", p(path!["wire", "nonexistent"])),
                ("nchain", Value::Int(2)),
            ],
        )
        .await?;
    assert_keys(&got, &["chain", "seq", "tock"])?;
    ensure!(field(&got, "chain")?.is_nil(), "{got}");
    Ok(())
}

#[tokio::test]
async fn get_value_by_node_and_tick_returns_the_entry_with_its_path() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[
        (path!["x", "y"], Value::Int(5)),
        (path!["z"], Value::Int(6)),
    ])
    .await?;
    let mut c = node.raw().await?;
    let got = c
        .call_ok(
            "get_value",
            vec![("node", Value::str(NODE)), ("tick", Value::Int(1))],
        )
        .await?;
    assert_keys(&got, &["value", "tock", "path", "seq"])?;
    ensure!(field(&got, "value")? == &Value::Int(5), "{got}");
    ensure!(
        path_elems(field(&got, "path")?) == Some(&[Value::str("x"), Value::str("y")][..]),
        "{got}"
    );

    let got = c
        .call_ok(
            "get_value",
            vec![
                ("node", Value::str(NODE)),
                ("tick", Value::Int(2)),
                ("nchain", Value::Int(1)),
            ],
        )
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(6), "{got}");
    ensure!(field(&got, "chain")? == &chain(&[(NODE, 2)], true), "{got}");

    // Tick 1 is superseded once x.y changes again: no such entry any more.
    node.seed(&[(path!["x", "y"], Value::Int(7))]).await?;
    let got = c
        .call(
            "get_value",
            vec![("node", Value::str(NODE)), ("tick", Value::Int(1))],
        )
        .await?;
    error_text(&got)?;
    Ok(())
}

#[tokio::test]
async fn set_value_reply_reports_changed_prev_and_chain() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let path = || p(path!["wire", "test"]);
    c.call_ok(
        "set_value",
        vec![
            ("path", path()),
            ("value", Value::str("hello raw")),
            ("nchain", Value::Int(0)),
        ],
    )
    .await?;

    // Transcript §5: no chain sent and an old value exists → prev.
    let map = Value::map([
        ("a", Value::Int(1)),
        ("b", arr([1i64, 2, 3])),
        ("c", Value::from(&b"\x00\x01"[..])),
    ]);
    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", path()),
                ("value", map.clone()),
                ("nchain", Value::Int(0)),
            ],
        )
        .await?;
    assert_keys(&r, &["changed", "prev", "tock", "seq"])?;
    ensure!(field(&r, "changed")? == &Value::Bool(true), "{r}");
    ensure!(field(&r, "prev")? == &Value::str("hello raw"), "{r}");

    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::Int(42)),
                ("nchain", Value::Int(2)),
            ],
        )
        .await?;
    assert_keys(&r, &["changed", "prev", "chain", "tock", "seq"])?;
    ensure!(field(&r, "prev")? == &map, "{r}");
    ensure!(field(&r, "chain")? == &chain(&[(NODE, 3)], true), "{r}");

    // Setting an equal value is still a change, but `changed` is false.
    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::Int(42)),
                ("nchain", Value::Int(0)),
            ],
        )
        .await?;
    ensure!(field(&r, "changed")? == &Value::Bool(false), "{r}");
    ensure!(field(&r, "prev")? == &Value::Int(42), "{r}");

    // nchain defaults to 1 for set_value.
    let r = c
        .call_ok(
            "set_value",
            vec![("path", p(path!["fresh"])), ("value", Value::Int(1))],
        )
        .await?;
    assert_keys(&r, &["changed", "chain", "tock", "seq"])?;
    ensure!(field(&r, "chain")? == &chain(&[(NODE, 5)], true), "{r}");
    Ok(())
}

#[tokio::test]
async fn set_value_with_a_stale_chain_is_a_client_chain_error() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let path = || p(path!["wire", "test"]);
    for v in [1i64, 2] {
        c.call_ok(
            "set_value",
            vec![("path", path()), ("value", Value::Int(v))],
        )
        .await?;
    }
    // Transcript §6: tick 1 is no longer the head.
    let r = c
        .call(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::Int(43)),
                ("chain", chain(&[(NODE, 1)], true)),
                ("nchain", Value::Int(2)),
            ],
        )
        .await?;
    ensure!(error_text(&r)?.contains("ClientChainError"), "{r}");
    ensure!(field(&r, "etype")? == &Value::str("chain"), "{r}");
    tock_of(&r)?;
    let got = c.call_ok("get_value", vec![("path", path())]).await?;
    ensure!(field(&got, "value")? == &Value::Int(2), "{got}");

    // The current chain: accepted, and no `prev` since a chain was sent.
    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::Int(43)),
                ("chain", chain(&[(NODE, 2)], true)),
                ("nchain", Value::Int(2)),
            ],
        )
        .await?;
    assert_keys(&r, &["changed", "chain", "tock", "seq"])?;
    ensure!(field(&r, "chain")? == &chain(&[(NODE, 3)], true), "{r}");

    // `chain: nil` means "must be new".
    let r = c
        .call(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::Int(44)),
                ("chain", Value::Nil),
                ("nchain", Value::Int(0)),
            ],
        )
        .await?;
    let text = error_text(&r)?;
    ensure!(
        text.contains("ClientChainError") && text.contains("Entry already exists at"),
        "{r}"
    );
    ensure!(field(&r, "etype")? == &Value::str("chain"), "{r}");

    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", p(path!["wire", "new"])),
                ("value", Value::Int(1)),
                ("chain", Value::Nil),
                ("nchain", Value::Int(0)),
            ],
        )
        .await?;
    assert_keys(&r, &["changed", "tock", "seq"])?;

    // A chain for an entry that has no value is also a chain error.
    let r = c
        .call(
            "set_value",
            vec![
                ("path", p(path!["wire", "other"])),
                ("value", Value::Int(1)),
                ("chain", chain(&[(NODE, 3)], true)),
            ],
        )
        .await?;
    ensure!(error_text(&r)?.contains("ClientChainError"), "{r}");
    let got = c
        .call_ok("get_value", vec![("path", p(path!["wire", "test"]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(43), "{got}");
    Ok(())
}

#[tokio::test]
async fn set_value_with_prev_checks_the_stored_value() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let path = || p(path!["pv"]);
    c.call_ok(
        "set_value",
        vec![("path", path()), ("value", Value::str("a"))],
    )
    .await?;
    let r = c
        .call(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::str("c")),
                ("prev", Value::str("b")),
            ],
        )
        .await?;
    error_text(&r)?;
    ensure!(
        r.get("etype").is_none(),
        "a prev mismatch is no chain error: {r}"
    );

    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::str("c")),
                ("prev", Value::str("a")),
                ("nchain", Value::Int(0)),
            ],
        )
        .await?;
    assert_keys(&r, &["changed", "tock", "seq"])?;
    let got = c.call_ok("get_value", vec![("path", path())]).await?;
    ensure!(field(&got, "value")? == &Value::str("c"), "{got}");
    Ok(())
}

#[tokio::test]
async fn idem_set_of_an_equal_value_makes_no_new_tick() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let path = || p(path!["idem"]);
    let first = c
        .call_ok(
            "set_value",
            vec![("path", path()), ("value", Value::Int(6))],
        )
        .await?;
    ensure!(node_tick(&mut c).await? == 1);

    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::Int(6)),
                ("idem", Value::Bool(true)),
                ("nchain", Value::Int(1)),
            ],
        )
        .await?;
    assert_keys(&r, &["changed", "chain", "tock", "seq"])?;
    ensure!(field(&r, "changed")? == &Value::Bool(false), "{r}");
    ensure!(field(&r, "chain")? == &chain(&[(NODE, 1)], true), "{r}");
    ensure!(node_tick(&mut c).await? == 1, "idem must not make a change");
    let got = c.call_ok("get_value", vec![("path", path())]).await?;
    ensure!(tock_of(&got)? == tock_of(&first)?, "{got} vs {first}");

    // Equal but of another type (6.0 vs 6): a real change.
    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::Float(6.0)),
                ("idem", Value::Bool(true)),
            ],
        )
        .await?;
    ensure!(field(&r, "chain")? == &chain(&[(NODE, 2)], true), "{r}");
    ensure!(node_tick(&mut c).await? == 2);

    // A different value: a change.
    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", path()),
                ("value", Value::Int(7)),
                ("idem", Value::Bool(true)),
            ],
        )
        .await?;
    ensure!(field(&r, "changed")? == &Value::Bool(true), "{r}");
    ensure!(node_tick(&mut c).await? == 3);
    Ok(())
}

#[tokio::test]
async fn nchain_limits_the_chain_links_in_replies() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    // A change by another node "n2", then two local ones on top of it.
    c.call_ok(
        "update",
        vec![
            ("node", Value::str("n2")),
            ("tick", Value::Int(5)),
            ("prev", Value::Nil),
            ("path", p(path!["m"])),
            ("value", Value::str("x")),
            ("tock", Value::Int(1)),
        ],
    )
    .await?;
    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", p(path!["m"])),
                ("value", Value::Int(1)),
                ("nchain", Value::Int(1)),
            ],
        )
        .await?;
    // One link, and no `prev` key: the chain does not end there.
    ensure!(field(&r, "chain")? == &chain(&[(NODE, 1)], false), "{r}");

    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", p(path!["m"])),
                ("value", Value::Int(2)),
                ("nchain", Value::Int(2)),
            ],
        )
        .await?;
    let full = chain(&[(NODE, 2), ("n2", 5)], true);
    ensure!(field(&r, "chain")? == &full, "{r}");

    for (nchain, want) in [
        (1, chain(&[(NODE, 2)], false)),
        (2, full.clone()),
        (5, full.clone()),
        (-1, full.clone()),
    ] {
        let got = c
            .call_ok(
                "get_value",
                vec![("path", p(path!["m"])), ("nchain", Value::Int(nchain))],
            )
            .await?;
        ensure!(field(&got, "chain")? == &want, "nchain {nchain}: {got}");
    }
    Ok(())
}

#[tokio::test]
async fn set_without_value_and_delete_with_value_are_errors() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    node.seed(&[(path!["e"], Value::Int(1))]).await?;
    let r = c.call("set_value", vec![("path", p(path!["e"]))]).await?;
    error_text(&r)?;
    let r = c
        .call(
            "delete_value",
            vec![("path", p(path!["e"])), ("value", Value::Int(2))],
        )
        .await?;
    error_text(&r)?;
    ensure!(
        node_tick(&mut c).await? == 1,
        "a refused request changed something"
    );
    let got = c
        .call_ok("get_value", vec![("path", p(path!["e"]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(1), "{got}");
    Ok(())
}

#[tokio::test]
async fn delete_value_reports_changed_and_prev() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[(path!["wire", "test"], Value::Int(43))])
        .await?;
    let mut c = node.raw().await?;
    let path = || p(path!["wire", "test"]);
    // Transcript §10.
    let r = c
        .call_ok(
            "delete_value",
            vec![("path", path()), ("nchain", Value::Int(2))],
        )
        .await?;
    assert_keys(&r, &["changed", "prev", "chain", "tock", "seq"])?;
    ensure!(field(&r, "changed")? == &Value::Bool(true), "{r}");
    ensure!(field(&r, "prev")? == &Value::Int(43), "{r}");
    ensure!(field(&r, "chain")? == &chain(&[(NODE, 2)], true), "{r}");

    let got = c
        .call_ok(
            "get_value",
            vec![("path", path()), ("nchain", Value::Int(0))],
        )
        .await?;
    assert_keys(&got, &["tock", "seq"])?;

    // Deleting again: nothing to delete, nothing to report as prev.
    let r = c
        .call_ok(
            "delete_value",
            vec![("path", path()), ("nchain", Value::Int(0))],
        )
        .await?;
    assert_keys(&r, &["changed", "tock", "seq"])?;
    ensure!(field(&r, "changed")? == &Value::Bool(false), "{r}");
    Ok(())
}

#[tokio::test]
async fn nil_is_a_stored_value_not_a_deletion() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    c.call_ok(
        "set_value",
        vec![("path", p(path!["nil"])), ("value", Value::Nil)],
    )
    .await?;
    let got = c
        .call_ok("get_value", vec![("path", p(path!["nil"]))])
        .await?;
    assert_keys(&got, &["value", "tock", "seq"])?;
    ensure!(field(&got, "value")?.is_nil(), "{got}");
    let r = c
        .call_ok(
            "set_value",
            vec![("path", p(path!["nil"])), ("value", Value::Int(1))],
        )
        .await?;
    ensure!(field(&r, "prev")?.is_nil(), "{r}");
    Ok(())
}

#[tokio::test]
async fn values_of_every_msgpack_type_round_trip_unchanged() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let values = [
        Value::Nil,
        Value::Bool(true),
        Value::Bool(false),
        Value::Int(-1),
        Value::Int(i64::MIN),
        Value::UInt(u64::MAX),
        Value::BigUint(std::sync::Arc::from(&[1u8, 0, 0, 0, 0, 0, 0, 0, 0][..])),
        Value::Float(1.5),
        Value::Float(-0.0),
        Value::str(""),
        Value::str("ünïcødé"),
        Value::from(&b""[..]),
        Value::from(&b"\xff\x00"[..]),
        arr([Value::Int(1), Value::str("a"), Value::Nil]),
        Value::Map(vec![
            (Value::Int(1), Value::str("int key")),
            (Value::Nil, Value::str("nil key")),
            (Value::str("s"), Value::Map(vec![])),
        ]),
        p(path!["in", "a", "value"]),
    ];
    for (i, v) in values.iter().enumerate() {
        let path = path!["types", i as u64];
        c.call_ok(
            "set_value",
            vec![("path", p(path.clone())), ("value", v.clone())],
        )
        .await?;
        let got = c.call_ok("get_value", vec![("path", p(path))]).await?;
        let back = field(&got, "value")?;
        // Compare the encodings: Value's equality is Python's (1 == 1.0).
        ensure!(
            codec::to_vec(back) == codec::to_vec(v),
            "{v} came back as {back}"
        );
    }
    Ok(())
}

/// msgpack extension types other than DistKV's (2, 3) break Python clients
/// that read them back: refused with an error for that request, and the
/// connection goes on.
#[tokio::test]
async fn foreign_extension_types_are_refused_and_the_connection_goes_on() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let ext = |t: i8| Value::Ext(t, std::sync::Arc::from(&b"opaque"[..]));
    for t in [-1i8, 0, 1, 7] {
        let as_value = c
            .call(
                "set_value",
                vec![("path", p(path!["x"])), ("value", ext(t))],
            )
            .await?;
        let as_element = c
            .call(
                "set_value",
                vec![
                    ("path", p(distkv_model::Path::new(vec![ext(t)]))),
                    ("value", Value::Int(1)),
                ],
            )
            .await?;
        for r in [as_value, as_element] {
            let e = field(&r, "error")?.to_string();
            ensure!(e.contains(&format!("extension type {t}")), "{r}");
        }
    }
    let got = c.call("get_value", vec![("path", p(path!["x"]))]).await?;
    ensure!(got.get("value").is_none(), "something was stored: {got}");
    c.call_ok(
        "set_value",
        vec![("path", p(path!["x"])), ("value", Value::Int(2))],
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn path_elements_of_any_type_address_distinct_entries() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let elements = [
        Value::str(""),
        Value::from(&b""[..]),
        Value::Int(1),
        Value::Float(2.5),
        Value::Bool(false),
        arr([Value::str("tu"), Value::Int(2)]),
        Value::BigUint(std::sync::Arc::from(&[1u8, 0, 0, 0, 0, 0, 0, 0, 0][..])),
    ];
    for (i, e) in elements.iter().enumerate() {
        let path = distkv_model::Path::new(vec![Value::str("pe"), e.clone()]);
        c.call_ok(
            "set_value",
            vec![("path", p(path)), ("value", Value::uint(i as u64))],
        )
        .await?;
    }
    for (i, e) in elements.iter().enumerate() {
        let path = distkv_model::Path::new(vec![Value::str("pe"), e.clone()]);
        let got = c.call_ok("get_value", vec![("path", p(path))]).await?;
        ensure!(
            field(&got, "value")? == &Value::uint(i as u64),
            "{e}: {got}"
        );
    }
    Ok(())
}

/// A pipelined run of changes is committed in batches under one lock; every
/// request still sees the ones before it, a refused one changes nothing and
/// does not stop the others, and other requests in between see the state as
/// far as the pipeline got.
#[tokio::test]
async fn pipelined_changes_keep_their_order_and_their_own_outcomes() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let key = |i: i64| p(distkv_model::path!["pipe", i]);
    let mut reqs: Vec<Req> = Vec::new();
    for i in 0..100 {
        reqs.push((
            vec![("path", key(i)), ("value", Value::Int(i))],
            "set_value",
            Expect::Tock,
        ));
    }
    let prev_ok = vec![
        ("path", key(5)),
        ("value", Value::Int(500)),
        ("prev", Value::Int(5)),
    ];
    reqs.push((prev_ok, "set_value", Expect::Tock));
    let prev_bad = vec![
        ("path", key(6)),
        ("value", Value::Int(600)),
        ("prev", Value::Int(9)),
    ];
    reqs.push((prev_bad, "set_value", Expect::Error("Data is 6 not 9")));
    reqs.push((vec![("path", key(5))], "get_value", Expect::Value(500)));
    reqs.push((vec![("path", key(7))], "delete_value", Expect::Tock));
    let not_new = vec![
        ("path", key(8)),
        ("value", Value::Int(8)),
        ("chain", Value::Nil),
    ];
    reqs.push((not_new, "set_value", Expect::Error("Entry already exists")));
    for i in 100..200 {
        reqs.push((
            vec![("path", key(i)), ("value", Value::Int(i))],
            "set_value",
            Expect::Tock,
        ));
    }
    reqs.push((vec![("path", key(7))], "get_value", Expect::NoValue));
    reqs.push((vec![("path", key(199))], "get_value", Expect::Value(199)));

    run_pipelined(&mut c, &reqs).await?;
    // Another connection sees every change, and nothing refused.
    let mut d = node.raw().await?;
    let six = d.call_ok("get_value", vec![("path", key(6))]).await?;
    ensure!(field(&six, "value")? == &Value::Int(6), "{six}");
    let eight = d.call_ok("get_value", vec![("path", key(8))]).await?;
    ensure!(field(&eight, "value")? == &Value::Int(8), "{eight}");
    let seq = d
        .request("get_tree", vec![("path", p(distkv_model::path!["pipe"]))])
        .await?;
    let tree = d.recv_stream(seq).await?;
    let values = tree.iter().filter(|m| m.get("value").is_some()).count();
    ensure!(
        values == 199,
        "{values} values in the tree, want 199 (200 set, 1 deleted)"
    );
    node.shutdown().await
}

/// Sends `reqs` in one write, so the node reads them as one run, and
/// checks each reply: in order, each with its own outcome, tocks rising.
async fn run_pipelined(c: &mut Raw, reqs: &[Req]) -> Result<()> {
    let mut bytes = Vec::new();
    for (i, (fields, action, _)) in reqs.iter().enumerate() {
        let mut m = vec![
            ("seq", Value::uint(i as u64 + 1)),
            ("action", Value::str(action)),
        ];
        m.extend(fields.iter().cloned());
        codec::encode(&Value::map(m), &mut bytes);
    }
    c.send_bytes(&bytes).await?;
    let mut last_tock = 0;
    for (i, (_, action, want)) in reqs.iter().enumerate() {
        let r = c.recv().await?;
        ensure!(
            seq_of(&r) == Some(i as u64 + 1),
            "request {i} ({action}): reply {r}"
        );
        match want {
            Expect::Tock => {
                ensure!(
                    r.get("error").is_none(),
                    "request {i} ({action}) failed: {r}"
                );
                let t = tock_of(&r)?;
                ensure!(t > last_tock, "request {i}: tock {t} after {last_tock}");
                last_tock = t;
            }
            Expect::Error(text) => ensure!(error_text(&r)?.contains(text), "request {i}: {r}"),
            Expect::Value(v) => ensure!(field(&r, "value")? == &Value::Int(*v), "request {i}: {r}"),
            Expect::NoValue => ensure!(r.get("value").is_none(), "request {i}: {r}"),
        }
    }
    Ok(())
}

/// A run that starts with reads holds the state shared, and its first
/// change takes it alone: each request still sees the ones before it,
/// across runs of reads longer than one batch, and another connection
/// reading beside the run never sees a change undone.
#[tokio::test]
async fn a_run_of_reads_then_changes_sees_each_change() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let key = |i: i64| p(distkv_model::path!["mixed", i]);
    let get = |i: i64, want: Expect| -> Req { (vec![("path", key(i))], "get_value", want) };
    let set = |i: i64, v: i64| -> Req {
        (
            vec![("path", key(i)), ("value", Value::Int(v))],
            "set_value",
            Expect::Tock,
        )
    };
    let mut reqs: Vec<Req> = Vec::new();
    for round in 0..3 {
        for _ in 0..70 {
            reqs.push(get(
                round,
                if round == 0 {
                    Expect::NoValue
                } else {
                    Expect::Value(round * 10 - 10)
                },
            ));
        }
        reqs.push(set(round, round * 10));
        reqs.push(get(round, Expect::Value(round * 10)));
        reqs.push(set(round + 1, round * 10));
        for _ in 0..3 {
            reqs.push(get(round + 1, Expect::Value(round * 10)));
        }
    }
    let mut d = node.raw().await?;
    let (mine, other) = tokio::join!(run_pipelined(&mut c, &reqs), async {
        // Reads beside the run: a value, once there, stays until changed.
        let mut seen = None;
        for _ in 0..200 {
            let r = d.call_ok("get_value", vec![("path", key(1))]).await?;
            match (r.get("value"), &seen) {
                (None, Some(_)) => anyhow::bail!("mixed.1 vanished after {seen:?}"),
                (v, _) => seen = v.cloned().or(seen),
            }
        }
        Ok(())
    });
    mine?;
    other?;
    let end = d.call_ok("get_value", vec![("path", key(3))]).await?;
    ensure!(field(&end, "value")? == &Value::Int(20), "{end}");
    node.shutdown().await
}

/// A request's fields, its action, and what its reply must show.
type Req = (Vec<(&'static str, Value)>, &'static str, Expect);

/// What a reply in a pipelined run ([`run_pipelined`]) shows.
enum Expect {
    /// A change's tock (no error).
    Tock,
    /// An error containing this text.
    Error(&'static str),
    /// This value.
    Value(i64),
    /// No value.
    NoValue,
}
