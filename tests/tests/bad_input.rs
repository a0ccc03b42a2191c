//! Bad input over real TCP. For every kind the server must answer with a
//! clear error (or close only the offending connection), keep serving its
//! other connections, and never crash. Each test ends by checking that a
//! connection opened *before* the bad input and a fresh one both still work.

use anyhow::{bail, ensure, Result};
use distkv_model::codec::Limits;
use distkv_model::{codec, Value};
use distkv_node::server::ServerOptions;
use distkv_tests::*;

/// The connection opened before the bad input still works, and so does a
/// fresh one.
async fn others_still_served(node: &TestNode, bystander: &mut Raw) -> Result<()> {
    bystander.still_works().await?;
    node.raw().await?.still_works().await
}

/// The next message is an error without `seq`, then the connection closes.
async fn expect_fatal_error(c: &mut Raw) -> Result<()> {
    match c.recv_or_closed().await? {
        Some(m) => {
            error_text(&m)?;
            ensure!(m.get("seq").is_none(), "{m}");
            c.expect_closed().await
        }
        None => bail!("the connection closed without an error message"),
    }
}

#[tokio::test]
async fn malformed_msgpack_gets_an_error_and_closes_only_that_connection() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    let mut c = node.raw().await?;
    c.send_bytes(&[0xc1]).await?;
    expect_fatal_error(&mut c).await?;
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn a_message_that_is_not_a_map_gets_an_error_without_seq() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    let mut c = node.raw().await?;
    for v in [
        Value::Int(5),
        Value::str("hello"),
        arr([1i64, 2]),
        Value::Nil,
        p(path!["a"]),
    ] {
        c.send(&v).await?;
        let r = c.recv().await?;
        error_text(&r)?;
        ensure!(r.get("seq").is_none(), "{v}: {r}");
        tock_of(&r)?;
    }
    // The connection stays open.
    c.still_works().await?;
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn a_map_without_a_usable_seq_gets_an_error_without_seq() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    let mut c = node.raw().await?;
    for m in [
        Value::map([("action", Value::str("get_tock"))]),
        Value::map([("seq", Value::Int(-1)), ("action", Value::str("get_tock"))]),
        Value::map([("seq", Value::str("1")), ("action", Value::str("get_tock"))]),
        Value::map([
            ("seq", Value::Float(1.5)),
            ("action", Value::str("get_tock")),
        ]),
        Value::map([]),
    ] {
        c.send(&m).await?;
        let r = c.recv().await?;
        error_text(&r)?;
        ensure!(r.get("seq").is_none(), "{m}: {r}");
    }
    c.still_works().await?;
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn an_unknown_action_gets_an_error_with_its_seq_and_the_connection_stays_open() -> Result<()>
{
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    let mut c = node.raw().await?;
    // DistKV 0.63.3 closes the connection here; we answer with seq.
    let r = c.call("no_such_action", vec![]).await?;
    error_text(&r)?;
    c.still_works().await?;
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn a_request_without_action_gets_an_error_with_its_seq() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    let mut c = node.raw().await?;
    let seq = c.seq();
    c.send(&Value::map([
        ("seq", Value::uint(seq)),
        ("path", p(path!["a"])),
    ]))
    .await?;
    let r = c.recv().await?;
    ensure!(seq_of(&r) == Some(seq), "{r}");
    error_text(&r)?;
    // An action that is not a string is no better.
    let seq = c.seq();
    c.send(&Value::map([
        ("seq", Value::uint(seq)),
        ("action", Value::Int(3)),
    ]))
    .await?;
    let r = c.recv().await?;
    ensure!(seq_of(&r) == Some(seq), "{r}");
    error_text(&r)?;
    c.still_works().await?;
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn nonsense_field_types_get_errors_with_their_seq() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[(path!["ok"], Value::Int(1))]).await?;
    let mut bystander = node.raw().await?;
    let mut c = node.raw().await?;
    let ok = || p(path!["ok"]);
    let cases: Vec<(&str, Vec<(&str, Value)>)> = vec![
        ("get_value", vec![("path", Value::Int(5))]),
        ("get_value", vec![("path", Value::str("ok"))]),
        (
            "get_value",
            vec![("path", ok()), ("nchain", Value::str("x"))],
        ),
        (
            "get_value",
            vec![("node", Value::Int(5)), ("tick", Value::Int(1))],
        ),
        (
            "get_value",
            vec![("node", Value::str(NODE)), ("tick", Value::str("x"))],
        ),
        ("get_value", vec![]),
        (
            "set_value",
            vec![("path", Value::Int(5)), ("value", Value::Int(1))],
        ),
        (
            "set_value",
            vec![
                ("path", ok()),
                ("value", Value::Int(2)),
                ("chain", Value::Int(5)),
            ],
        ),
        (
            "set_value",
            vec![
                ("path", ok()),
                ("value", Value::Int(2)),
                (
                    "chain",
                    Value::map([("node", Value::Int(5)), ("tick", Value::Int(1))]),
                ),
            ],
        ),
        (
            "set_value",
            vec![
                ("path", ok()),
                ("value", Value::Int(2)),
                (
                    "chain",
                    Value::map([("node", Value::str(NODE)), ("tick", Value::str("1"))]),
                ),
            ],
        ),
        (
            "set_value",
            vec![
                ("path", ok()),
                ("value", Value::Int(2)),
                ("nchain", Value::str("x")),
            ],
        ),
        ("delete_value", vec![("path", Value::map([]))]),
        ("enum", vec![("path", Value::Int(5))]),
        ("enum_node", vec![("node", Value::Int(5))]),
        ("update", vec![("path", Value::Int(5))]),
        (
            "update",
            vec![
                ("path", ok()),
                ("node", Value::str("n2")),
                ("tick", Value::str("x")),
                ("tock", Value::Int(1)),
                ("value", Value::Int(3)),
            ],
        ),
        ("delete_tree", vec![("path", Value::Int(5))]),
        (
            "delete_tree",
            vec![("path", ok()), ("nchain", Value::str("x"))],
        ),
        ("root", vec![("path", Value::Int(5))]),
    ];
    for (action, fields) in cases {
        let r = c.call(action, fields.clone()).await?;
        ensure!(r.get("error").is_some(), "{action} {fields:?}: {r}");
    }
    // Streams report bad fields inside the stream.
    for (action, fields) in [
        ("get_tree", vec![("path", Value::Int(5))]),
        (
            "get_tree",
            vec![("path", ok()), ("min_depth", Value::str("x"))],
        ),
        ("watch", vec![("path", Value::Bool(true))]),
        ("watch", vec![("path", ok()), ("max_depth", arr([1i64]))]),
    ] {
        let seq = c.request(action, fields.clone()).await?;
        let msgs = c.recv_stream(seq).await?;
        ensure!(
            msgs.len() == 3 && msgs[1].get("error").is_some(),
            "{action} {fields:?}: {msgs:?}"
        );
    }
    // `stop` of something that is not a task id: nothing to stop.
    let r = c.call_ok("stop", vec![("task", Value::str("x"))]).await?;
    ensure!(field(&r, "result")? == &Value::Bool(false), "{r}");

    // Nothing was changed by any of it.
    ensure!(
        node_tick(&mut c).await? == 1,
        "a refused request made a change"
    );
    let got = c.call_ok("get_value", vec![("path", ok())]).await?;
    ensure!(field(&got, "value")? == &Value::Int(1), "{got}");
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn a_hello_with_qlen_one_to_three_gets_an_error() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    for q in [
        Value::Int(1),
        Value::Int(2),
        Value::Int(3),
        Value::Int(-4),
        Value::str("4"),
    ] {
        let mut c = node.raw().await?;
        c.send(&Value::map([("seq", Value::Int(0)), ("qlen", q.clone())]))
            .await?;
        let r = c.recv().await?;
        ensure!(r.get("error").is_some(), "qlen {q}: {r}");
    }
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn a_frame_over_the_size_limit_is_refused_and_closes_that_connection() -> Result<()> {
    let node = TestNode::start_with(ServerOptions {
        limits: Limits {
            max_frame: 4096,
            ..Limits::default()
        },
        ..ServerOptions::default()
    })
    .await?;
    let mut bystander = node.raw().await?;
    let mut c = node.raw().await?;
    // Just below the limit: fine.
    c.call_ok(
        "set_value",
        vec![
            ("path", p(path!["big"])),
            ("value", Value::str(&"x".repeat(3000))),
        ],
    )
    .await?;
    c.request(
        "set_value",
        vec![
            ("path", p(path!["big"])),
            ("value", Value::str(&"y".repeat(5000))),
        ],
    )
    .await?;
    expect_fatal_error(&mut c).await?;
    others_still_served(&node, &mut bystander).await?;
    let got = bystander
        .call_ok("get_value", vec![("path", p(path!["big"]))])
        .await?;
    ensure!(
        field(&got, "value")? == &Value::str(&"x".repeat(3000)),
        "the oversized value was stored"
    );
    Ok(())
}

#[tokio::test]
async fn announced_lengths_over_the_limit_are_refused_at_once() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    // str32 / bin32 headers announcing 4 GiB: refused without waiting for
    // the bytes (the connection stays open on our side).
    for header in [
        [0xdb, 0xff, 0xff, 0xff, 0xff],
        [0xc6, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut c = node.raw().await?;
        c.send_bytes(&header).await?;
        expect_fatal_error(&mut c).await?;
    }
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn nesting_deeper_than_the_limit_is_refused() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    let nested = |depth: usize| {
        let mut v = Value::Int(1);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    };
    let mut c = node.raw().await?;
    // Well within the default limit of 64: fine.
    c.call_ok(
        "set_value",
        vec![("path", p(path!["deep"])), ("value", nested(40))],
    )
    .await?;
    c.request(
        "set_value",
        vec![("path", p(path!["deep"])), ("value", nested(200))],
    )
    .await?;
    expect_fatal_error(&mut c).await?;

    // Deep nesting inside a path (ext 3) is no way around the limit.
    let mut c = node.raw().await?;
    let mut bytes = Vec::new();
    codec::encode(
        &Value::map([
            ("seq", Value::Int(1)),
            ("action", Value::str("get_value")),
            ("path", p(distkv_model::Path::new(vec![nested(200)]))),
        ]),
        &mut bytes,
    );
    c.send_bytes(&bytes).await?;
    expect_fatal_error(&mut c).await?;
    others_still_served(&node, &mut bystander).await
}

#[tokio::test]
async fn a_truncated_message_then_eof_ends_only_that_connection() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    let mut c = node.raw().await?;
    let bytes = codec::to_vec(&Value::map([
        ("seq", Value::Int(1)),
        ("action", Value::str("set_value")),
        ("path", p(path!["trunc"])),
        ("value", Value::str("never complete")),
    ]));
    c.send_bytes(&bytes[..bytes.len() / 2]).await?;
    c.shutdown_write().await?;
    // An error (without seq) may be sent; then the connection ends.
    while let Some(m) = c.recv_or_closed().await? {
        error_text(&m)?;
        ensure!(m.get("seq").is_none(), "{m}");
    }
    others_still_served(&node, &mut bystander).await?;
    let got = bystander
        .call_ok("get_value", vec![("path", p(path!["trunc"]))])
        .await?;
    ensure!(got.get("value").is_none(), "{got}");
    Ok(())
}

#[tokio::test]
async fn random_garbage_never_takes_the_server_down() -> Result<()> {
    let node = TestNode::start().await?;
    let mut bystander = node.raw().await?;
    for seed in 1..=8u64 {
        let mut rng = SplitMix64::new(seed);
        let garbage = rng.bytes(4096);
        let mut c = node.raw().await?;
        c.send_bytes(&garbage).await?;
        c.shutdown_write().await?;
        // Whatever the server makes of it, it answers with errors only, and
        // ends the connection once the input ends.
        while let Some(m) = c.recv_or_closed().await? {
            ensure!(m.get("error").is_some(), "seed {seed}: {m}");
        }
        others_still_served(&node, &mut bystander).await?;
    }
    Ok(())
}
