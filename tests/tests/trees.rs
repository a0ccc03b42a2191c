//! `get_tree`, `enum` and `delete_tree` over real TCP: stream shapes, path
//! shortening (docs/format.md), depth limits and DistKV 0.63.3's recorded
//! `get_tree` example.

use anyhow::{ensure, Result};
use distkv_model::Value;
use distkv_tests::*;

/// Full paths (as string elements) of a stream's data messages.
fn full_paths(prefix: &[Value], msgs: &[Value]) -> Result<Vec<Vec<Value>>> {
    lengthen(prefix, msgs)
}

/// Request options and the full paths they should select.
type DepthCase<'a> = (Vec<(&'a str, Value)>, Vec<Vec<Value>>);

fn strs(items: &[&str]) -> Vec<Value> {
    items.iter().map(|s| Value::str(s)).collect()
}

#[tokio::test]
async fn get_tree_matches_the_transcript_example() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let t1 = tock_of(
        &c.call_ok(
            "set_value",
            vec![
                ("path", p(path!["wire", "test"])),
                ("value", Value::Int(43)),
            ],
        )
        .await?,
    )?;
    let t2 = tock_of(
        &c.call_ok(
            "set_value",
            vec![
                ("path", p(path!["wire", "test", "sub", "x"])),
                ("value", Value::Int(1)),
            ],
        )
        .await?,
    )?;

    let seq = c
        .request(
            "get_tree",
            vec![("path", p(path!["wire"])), ("nchain", Value::Int(0))],
        )
        .await?;
    let msgs = c.recv_stream(seq).await?;
    ensure!(msgs.len() == 4, "{msgs:?}");
    assert_keys(&msgs[0], &["state", "seq", "tock"])?;
    ensure!(state_of(&msgs[0]) == Some("start"), "{}", msgs[0]);

    assert_keys(&msgs[1], &["value", "tock", "path", "depth", "seq"])?;
    ensure!(field(&msgs[1], "value")? == &Value::Int(43), "{}", msgs[1]);
    ensure!(tock_of(&msgs[1])? == t1, "{}", msgs[1]);
    // Below a non-empty prefix, shortened paths are plain arrays.
    ensure!(field(&msgs[1], "path")? == &arr(["test"]), "{}", msgs[1]);
    ensure!(field(&msgs[1], "depth")? == &Value::Int(0), "{}", msgs[1]);

    assert_keys(&msgs[2], &["value", "tock", "path", "depth", "seq"])?;
    ensure!(field(&msgs[2], "value")? == &Value::Int(1), "{}", msgs[2]);
    ensure!(tock_of(&msgs[2])? == t2, "{}", msgs[2]);
    ensure!(
        field(&msgs[2], "path")? == &arr(["sub", "x"]),
        "{}",
        msgs[2]
    );
    ensure!(field(&msgs[2], "depth")? == &Value::Int(1), "{}", msgs[2]);

    assert_keys(&msgs[3], &["state", "seq", "tock"])?;
    ensure!(state_of(&msgs[3]) == Some("end"), "{}", msgs[3]);
    ensure!(tock_of(&msgs[3])? > tock_of(&msgs[0])?, "{msgs:?}");
    Ok(())
}

#[tokio::test]
async fn get_tree_of_the_root_sends_top_level_paths_as_ext3() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[
        (path!["a"], Value::Int(1)),
        (path!["a", "b"], Value::Int(2)),
        (path!["c"], Value::Int(3)),
    ])
    .await?;
    let mut c = node.raw().await?;
    let seq = c
        .request("get_tree", vec![("path", arr::<Value>([]))])
        .await?;
    let msgs = c.recv_stream(seq).await?;
    let data = &msgs[1..msgs.len() - 1];
    ensure!(data.len() == 3, "{msgs:?}");
    // Prefix empty and depth 0: ext 3; otherwise a plain array.
    ensure!(field(&data[0], "path")? == &p(path!["a"]), "{}", data[0]);
    ensure!(field(&data[1], "path")? == &arr(["b"]), "{}", data[1]);
    ensure!(field(&data[1], "depth")? == &Value::Int(1), "{}", data[1]);
    ensure!(field(&data[2], "path")? == &p(path!["c"]), "{}", data[2]);
    ensure!(field(&data[2], "depth")? == &Value::Int(0), "{}", data[2]);
    Ok(())
}

#[tokio::test]
async fn get_tree_depth_limits_select_levels() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[
        (path!["t"], Value::Int(0)),
        (path!["t", "a"], Value::Int(1)),
        (path!["t", "a", "b"], Value::Int(2)),
        (path!["t", "a", "b", "c"], Value::Int(3)),
        (path!["t", "d"], Value::Int(4)),
    ])
    .await?;
    let mut c = node.raw().await?;
    let prefix = strs(&["t"]);
    let cases: Vec<DepthCase> = vec![
        (
            vec![],
            vec![
                strs(&["t"]),
                strs(&["t", "a"]),
                strs(&["t", "a", "b"]),
                strs(&["t", "a", "b", "c"]),
                strs(&["t", "d"]),
            ],
        ),
        (
            vec![("min_depth", Value::Int(1)), ("max_depth", Value::Int(2))],
            vec![strs(&["t", "a"]), strs(&["t", "a", "b"]), strs(&["t", "d"])],
        ),
        (vec![("max_depth", Value::Int(0))], vec![strs(&["t"])]),
        (
            vec![("min_depth", Value::Int(3))],
            vec![strs(&["t", "a", "b", "c"])],
        ),
    ];
    for (opts, want) in cases {
        let mut fields = vec![("path", p(path!["t"]))];
        fields.extend(opts.iter().cloned());
        let seq = c.request("get_tree", fields).await?;
        let msgs = c.recv_stream(seq).await?;
        let got = full_paths(&prefix, &msgs)?;
        ensure!(got == want, "options {opts:?}: {got:?}, want {want:?}");
    }
    Ok(())
}

#[tokio::test]
async fn get_tree_with_empty_also_sends_entries_without_data() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[(path!["e", "x", "y"], Value::Int(1))]).await?;
    let mut c = node.raw().await?;
    let prefix = strs(&["e"]);

    let seq = c.request("get_tree", vec![("path", p(path!["e"]))]).await?;
    let msgs = c.recv_stream(seq).await?;
    ensure!(
        full_paths(&prefix, &msgs)? == vec![strs(&["e", "x", "y"])],
        "{msgs:?}"
    );

    let seq = c
        .request(
            "get_tree",
            vec![("path", p(path!["e"])), ("empty", Value::Bool(true))],
        )
        .await?;
    let msgs = c.recv_stream(seq).await?;
    let got = full_paths(&prefix, &msgs)?;
    ensure!(
        got == vec![strs(&["e"]), strs(&["e", "x"]), strs(&["e", "x", "y"])],
        "{msgs:?}"
    );
    let data = &msgs[1..msgs.len() - 1];
    ensure!(data[0].get("value").is_none() && data[1].get("value").is_none());
    ensure!(field(&data[2], "value")? == &Value::Int(1), "{}", data[2]);
    Ok(())
}

#[tokio::test]
async fn get_tree_with_nchain_sends_chains() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[(path!["n", "a"], Value::Int(1))]).await?;
    let mut c = node.raw().await?;
    let seq = c
        .request(
            "get_tree",
            vec![("path", p(path!["n"])), ("nchain", Value::Int(1))],
        )
        .await?;
    let msgs = c.recv_stream(seq).await?;
    ensure!(msgs.len() == 3, "{msgs:?}");
    ensure!(
        field(&msgs[1], "chain")? == &chain(&[(NODE, 1)], true),
        "{}",
        msgs[1]
    );
    Ok(())
}

#[tokio::test]
async fn get_tree_of_a_missing_path_reports_the_error_inside_the_stream() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let seq = c
        .request("get_tree", vec![("path", p(path!["nowhere"]))])
        .await?;
    let msgs = c.recv_stream(seq).await?;
    ensure!(msgs.len() == 3, "{msgs:?}");
    ensure!(state_of(&msgs[0]) == Some("start"), "{msgs:?}");
    error_text(&msgs[1])?;
    ensure!(state_of(&msgs[2]) == Some("end"), "{msgs:?}");
    c.still_works().await
}

#[tokio::test]
async fn enum_lists_children_with_data_or_all_of_them() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[
        (path!["en", "x"], Value::Int(1)),
        (path!["en", "y"], Value::Int(2)),
        (path!["en", "z", "w"], Value::Int(3)),
    ])
    .await?;
    let mut c = node.raw().await?;
    let r = c.call_ok("enum", vec![("path", p(path!["en"]))]).await?;
    assert_keys(&r, &["result", "seq", "tock"])?;
    ensure!(field(&r, "result")? == &arr(["x", "y"]), "{r}");

    let r = c
        .call_ok(
            "enumerate",
            vec![("path", p(path!["en"])), ("empty", Value::Bool(true))],
        )
        .await?;
    ensure!(field(&r, "result")? == &arr(["x", "y", "z"]), "{r}");

    let r = c
        .call_ok(
            "enum",
            vec![("path", p(path!["en"])), ("with_data", Value::Bool(true))],
        )
        .await?;
    let want = Value::map([("x", Value::Int(1)), ("y", Value::Int(2))]);
    ensure!(field(&r, "result")? == &want, "{r}");

    let r = c.call("enum", vec![("path", p(path!["absent"]))]).await?;
    error_text(&r)?;
    Ok(())
}

fn seed_delete_tree() -> Vec<(distkv_model::Path, Value)> {
    vec![
        (path!["d"], Value::Int(0)),
        (path!["d", "a"], Value::Int(1)),
        (path!["d", "a", "b"], Value::Int(2)),
        (path!["d", "c"], Value::Int(3)),
        (path!["other"], Value::Int(9)),
    ]
}

#[tokio::test]
async fn delete_tree_without_nchain_replies_with_the_count() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&seed_delete_tree()).await?;
    let mut c = node.raw().await?;
    let r = c
        .call_ok(
            "delete_tree",
            vec![("path", p(path!["d"])), ("nchain", Value::Int(0))],
        )
        .await?;
    assert_keys(&r, &["changed", "seq", "tock"])?;
    ensure!(field(&r, "changed")? == &Value::Int(4), "{r}");

    let seq = c.request("get_tree", vec![("path", p(path!["d"]))]).await?;
    let msgs = c.recv_stream(seq).await?;
    ensure!(msgs.len() == 2, "deleted entries still listed: {msgs:?}");
    let got = c
        .call_ok("get_value", vec![("path", p(path!["other"]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(9), "{got}");
    Ok(())
}

#[tokio::test]
async fn delete_tree_with_nchain_streams_the_deletions_with_old_values() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&seed_delete_tree()).await?;
    let mut c = node.raw().await?;
    let seq = c
        .request(
            "delete_tree",
            vec![("path", p(path!["d"])), ("nchain", Value::Int(1))],
        )
        .await?;
    let msgs = c.recv_stream(seq).await?;
    ensure!(msgs.len() == 6, "{msgs:?}");
    ensure!(state_of(&msgs[0]) == Some("start"), "{msgs:?}");
    let events = &msgs[1..5];
    for (i, ev) in events.iter().enumerate() {
        assert_keys(
            ev,
            &[
                "node",
                "tick",
                "prev",
                "path",
                "depth",
                "old_value",
                "tock",
                "seq",
            ],
        )?;
        ensure!(field(ev, "node")? == &Value::str(NODE), "{ev}");
        // Five seeded changes, then one tick per deletion, in walk order.
        ensure!(field(ev, "tick")? == &Value::uint(6 + i as u64), "{ev}");
        ensure!(field(ev, "prev")?.is_nil(), "{ev}");
        ensure!(field(ev, "old_value")? == &Value::uint(i as u64), "{ev}");
    }
    let got = full_paths(&strs(&["d"]), events)?;
    ensure!(
        got == vec![
            strs(&["d"]),
            strs(&["d", "a"]),
            strs(&["d", "a", "b"]),
            strs(&["d", "c"])
        ],
        "{events:?}"
    );
    ensure!(state_of(&msgs[5]) == Some("end"), "{msgs:?}");
    for path in [path!["d"], path!["d", "a", "b"]] {
        let got = c.call_ok("get_value", vec![("path", p(path))]).await?;
        ensure!(got.get("value").is_none(), "{got}");
    }
    Ok(())
}

#[tokio::test]
async fn delete_tree_of_the_root_is_refused() -> Result<()> {
    let node = TestNode::start().await?;
    node.seed(&[(path!["keep"], Value::Int(1))]).await?;
    let mut c = node.raw().await?;
    for nchain in [0, 1] {
        let r = c
            .call(
                "delete_tree",
                vec![("path", arr::<Value>([])), ("nchain", Value::Int(nchain))],
            )
            .await?;
        error_text(&r)?;
    }
    let got = c
        .call_ok("get_value", vec![("path", p(path!["keep"]))])
        .await?;
    ensure!(field(&got, "value")? == &Value::Int(1), "{got}");
    Ok(())
}
