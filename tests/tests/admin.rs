//! `root` (chroot), `get_tock`, `get_state`, `enum_node` and `update` over
//! real TCP.

use anyhow::{ensure, Result};
use distkv_model::Value;
use distkv_tests::*;

fn update_fields(
    node: &str,
    tick: u64,
    path: distkv_model::Path,
    value: Option<Value>,
    tock: u64,
) -> Vec<(&str, Value)> {
    let mut f = vec![
        ("node", Value::str(node)),
        ("tick", Value::uint(tick)),
        ("prev", Value::Nil),
        ("path", p(path)),
        ("tock", Value::uint(tock)),
    ];
    if let Some(v) = value {
        f.push(("value", v));
    }
    f
}

#[tokio::test]
async fn root_moves_the_connection_below_a_path() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[
        (path!["r"], Value::str("top")),
        (path!["r", "a"], Value::Int(1)),
    ])
    .await?;
    let mut c = node.raw().await?;
    let r = c.call_ok("root", vec![("path", p(path!["r"]))]).await?;
    assert_keys(&r, &["value", "chain", "tock", "path", "seq"])?;
    ensure!(field(&r, "value")? == &Value::str("top"), "{r}");
    ensure!(field(&r, "chain")? == &chain(&[(NODE, 1)], true), "{r}");
    ensure!(field(&r, "path")? == &p(path![]), "{r}");

    // Reads and writes are relative to the new root.
    let got = c
        .call_ok("get_value", vec![("path", p(path!["a"]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(1), "{got}");
    let got = c
        .call_ok("get_value", vec![("path", p(path!["r"]))])
        .await?;
    ensure!(got.get("value").is_none(), "r.r does not exist: {got}");
    c.call_ok(
        "set_value",
        vec![("path", p(path!["b"])), ("value", Value::Int(2))],
    )
    .await?;
    let mut other = node.raw().await?;
    let got = other
        .call_ok("get_value", vec![("path", p(path!["r", "b"]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(2), "{got}");
    let got = other
        .call_ok("get_value", vec![("path", p(path!["b"]))])
        .await?;
    ensure!(got.get("value").is_none(), "{got}");

    // Trees are listed relative to the new root, too.
    let seq = c
        .request("get_tree", vec![("path", arr::<Value>([]))])
        .await?;
    let msgs = c.recv_stream(seq).await?;
    let got = lengthen(&[], &msgs)?;
    ensure!(
        got == vec![vec![], vec![Value::str("a")], vec![Value::str("b")]],
        "{msgs:?}"
    );
    // The meta tree stays out of reach.
    let r = c
        .call(
            "get_value",
            vec![("path", arr([Value::Nil, Value::str("x")]))],
        )
        .await?;
    error_text(&r)?;
    Ok(())
}

#[tokio::test]
async fn get_tock_increases_with_every_read() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let mut last = tock_of(&c.greeting)?;
    for _ in 0..5 {
        let r = c.call_ok("get_tock", vec![]).await?;
        assert_keys(&r, &["tock", "seq"])?;
        let t = tock_of(&r)?;
        ensure!(t > last, "tock {t} after {last}");
        last = t;
    }
    Ok(())
}

#[tokio::test]
async fn get_state_reports_ticks_and_range_sets_in_wire_form() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    // Ticks 1–4 on x (1–3 superseded), 5–6 on y (5 superseded), 7 deletes y
    // (6 superseded, 7 deleted), then tick 5 of another node "n2" (1–4 of
    // it missing).
    for v in 1..=4 {
        c.call_ok(
            "set_value",
            vec![("path", p(path!["x"])), ("value", Value::Int(v))],
        )
        .await?;
    }
    for v in 1..=2 {
        c.call_ok(
            "set_value",
            vec![("path", p(path!["y"])), ("value", Value::Int(v))],
        )
        .await?;
    }
    c.call_ok("delete_value", vec![("path", p(path!["y"]))])
        .await?;
    c.call_ok(
        "update",
        update_fields("n2", 5, path!["z"], Some(Value::str("from n2")), 1),
    )
    .await?;

    let flags = [
        "nodes",
        "known",
        "present",
        "deleted",
        "missing",
        "remote_missing",
    ];
    let r = c
        .call_ok(
            "get_state",
            flags.iter().map(|f| (*f, Value::Bool(true))).collect(),
        )
        .await?;
    assert_keys(
        &r,
        &[
            "nodes",
            "known",
            "present",
            "deleted",
            "missing",
            "remote_missing",
            "node",
            "tock",
            "seq",
        ],
    )?;
    let range = |a: i64, b: i64| arr([a, b]);
    let want = [
        (
            "nodes",
            Value::map([(NODE, Value::Int(7)), ("n2", Value::Int(5))]),
        ),
        (
            "known",
            Value::map([(NODE, arr([range(1, 4), range(5, 7)]))]),
        ),
        (
            "present",
            Value::map([(NODE, arr([4i64, 7])), ("n2", arr([5i64]))]),
        ),
        ("deleted", Value::map([(NODE, arr([7i64]))])),
        ("missing", Value::map([("n2", arr([range(1, 5)]))])),
        ("remote_missing", Value::map([])),
        ("node", Value::str(NODE)),
    ];
    for (k, v) in want {
        ensure!(field(&r, k)? == &v, "{k}: {} instead of {v}", field(&r, k)?);
    }

    // Only what is asked for; `superseded` is reported as `known`.
    let r = c
        .call_ok("get_state", vec![("superseded", Value::Bool(true))])
        .await?;
    assert_keys(&r, &["known", "node", "tock", "seq"])?;
    let r = c
        .call_ok("get_state", vec![("nodes", Value::Bool(true))])
        .await?;
    assert_keys(&r, &["nodes", "node", "tock", "seq"])?;
    Ok(())
}

#[tokio::test]
async fn enum_node_lists_the_present_ticks_of_a_node() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    c.call_ok(
        "update",
        update_fields("n2", 5, path!["z"], Some(Value::Int(0)), 1),
    )
    .await?;
    // z's chain becomes n1:1 → n2:5; w gets n1:2.
    c.call_ok(
        "set_value",
        vec![("path", p(path!["z"])), ("value", Value::Int(1))],
    )
    .await?;
    c.call_ok(
        "set_value",
        vec![("path", p(path!["w"])), ("value", Value::Int(1))],
    )
    .await?;
    let cases: Vec<(Vec<(&str, Value)>, Value)> = vec![
        (vec![("node", Value::str(NODE))], arr([1i64, 2])),
        (vec![("node", Value::str("n2"))], arr([5i64])),
        (
            vec![("node", Value::str("n2")), ("current", Value::Bool(true))],
            arr::<Value>([]),
        ),
        (
            vec![("node", Value::str(NODE)), ("current", Value::Bool(true))],
            arr([1i64, 2]),
        ),
        (
            vec![("node", Value::str(NODE)), ("max", Value::Int(1))],
            arr([1i64]),
        ),
    ];
    for (fields, want) in cases {
        let r = c.call_ok("enum_node", fields.clone()).await?;
        assert_keys(&r, &["result", "seq", "tock"])?;
        ensure!(field(&r, "result")? == &want, "{fields:?}: {r}");
    }
    let r = c
        .call("enum_node", vec![("node", Value::str("nobody"))])
        .await?;
    error_text(&r)?;
    Ok(())
}

#[tokio::test]
async fn update_applies_a_client_event_and_replies_false() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let r = c
        .call_ok(
            "update",
            update_fields("n2", 3, path!["u"], Some(Value::str("v3")), 10),
        )
        .await?;
    assert_keys(&r, &["result", "seq", "tock"])?;
    ensure!(field(&r, "result")? == &Value::Bool(false), "{r}");
    let got = c
        .call_ok(
            "get_value",
            vec![("path", p(path!["u"])), ("nchain", Value::Int(-1))],
        )
        .await?;
    ensure!(field(&got, "value")? == &Value::str("v3"), "{got}");
    ensure!(field(&got, "chain")? == &chain(&[("n2", 3)], true), "{got}");
    ensure!(tock_of(&got)? == 10, "{got}");

    // An older change of the same node is stale: ignored, still `false`.
    let r = c
        .call_ok(
            "update",
            update_fields("n2", 2, path!["u"], Some(Value::str("v2")), 20),
        )
        .await?;
    ensure!(field(&r, "result")? == &Value::Bool(false), "{r}");
    let got = c
        .call_ok("get_value", vec![("path", p(path!["u"]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::str("v3"), "{got}");

    // The entry form, built on top of n2:3 by a third node.
    let r = c
        .call_ok(
            "update",
            vec![
                ("path", arr(["u"])),
                ("value", Value::str("v4")),
                ("chain", chain(&[("n3", 1), ("n2", 3)], true)),
                ("tock", Value::Int(30)),
            ],
        )
        .await?;
    ensure!(field(&r, "result")? == &Value::Bool(false), "{r}");
    let got = c
        .call_ok(
            "get_value",
            vec![("path", p(path!["u"])), ("nchain", Value::Int(-1))],
        )
        .await?;
    ensure!(field(&got, "value")? == &Value::str("v4"), "{got}");
    ensure!(
        field(&got, "chain")? == &chain(&[("n3", 1), ("n2", 3)], true),
        "{got}"
    );

    // A deletion: no value.
    c.call_ok(
        "update",
        vec![
            ("path", p(path!["u"])),
            ("chain", chain(&[("n3", 2), ("n2", 3)], true)),
            ("tock", Value::Int(40)),
        ],
    )
    .await?;
    let got = c
        .call_ok("get_value", vec![("path", p(path!["u"]))])
        .await?;
    ensure!(got.get("value").is_none(), "{got}");
    Ok(())
}

#[tokio::test]
async fn update_with_the_largest_tock_keeps_the_node_serving() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let before = tock_of(&c.call_ok("get_tock", vec![]).await?)?;
    let r = c
        .call(
            "update",
            update_fields("n2", 1, path!["big"], Some(Value::Int(1)), u64::MAX),
        )
        .await?;
    ensure!(seq_of(&r).is_some(), "{r}");
    // Whether accepted or refused, the node must keep answering, and its
    // tock must not run backwards.
    let mut fresh = node.raw().await?;
    let after = tock_of(&fresh.call_ok("get_tock", vec![]).await?)?;
    ensure!(after > before, "tock went from {before} back to {after}");
    c.still_works().await
}

#[tokio::test]
async fn update_naming_this_node_with_the_largest_tick_keeps_the_node_serving() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let r = c
        .call(
            "update",
            update_fields(NODE, u64::MAX, path!["t"], Some(Value::Int(1)), 5),
        )
        .await?;
    ensure!(seq_of(&r).is_some(), "{r}");
    // Whatever became of that update, local changes must still work.
    let r = c
        .call(
            "set_value",
            vec![("path", p(path!["after"])), ("value", Value::Int(2))],
        )
        .await?;
    let mut fresh = node.raw().await?;
    fresh.still_works().await?;
    ensure!(r.get("error").is_none(), "{r}");
    Ok(())
}

/// `update` restores changes of nodes that are gone: it may not forge a
/// change of this (running) node, raise its counter, or leap far beyond any
/// node's known tick. Each attempt is refused, and writes go on with small
/// ticks.
#[tokio::test]
async fn update_cannot_forge_changes_or_exhaust_the_tick() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let forged = 1u64 << 62;
    let chain_with = |links: &[(&str, u64)]| {
        let mut v = Value::Nil;
        for (n, t) in links.iter().rev() {
            v = Value::map([
                ("node", Value::str(n)),
                ("tick", Value::uint(*t)),
                ("prev", v),
            ]);
        }
        v
    };
    for (what, chain) in [
        ("this node at the head", chain_with(&[(NODE, forged)])),
        (
            "this node behind",
            chain_with(&[("gone", 3), (NODE, forged)]),
        ),
        ("this node, a known tick", chain_with(&[(NODE, 1)])),
        ("a far leap", chain_with(&[("gone", forged)])),
    ] {
        let r = c
            .call(
                "update",
                vec![
                    ("path", p(path!["forged"])),
                    ("value", Value::Int(1)),
                    ("tock", Value::uint(5)),
                    ("chain", chain),
                ],
            )
            .await?;
        let e = r.get("error").map(|e| e.to_string()).unwrap_or_default();
        ensure!(e.contains("update refused"), "{what}: {r}");
    }
    // Restoring a change of a node that is gone still works.
    c.call_ok(
        "update",
        update_fields("gone", 7, path!["restored"], Some(Value::Int(7)), 5),
    )
    .await?;
    let r = c
        .call_ok(
            "set_value",
            vec![
                ("path", p(path!["after"])),
                ("value", Value::Int(2)),
                ("nchain", Value::Int(1)),
            ],
        )
        .await?;
    let tick = r
        .get("chain")
        .and_then(|ch| ch.get("tick"))
        .and_then(Value::as_u64);
    ensure!(tick == Some(1), "the node's tick was raised: {r}");
    Ok(())
}
