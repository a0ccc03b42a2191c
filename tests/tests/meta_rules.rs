//! The meta tree's fixed rules over real TCP: the roots of ACLs, codecs,
//! converters, type matches and types hold no data, and ACL entries hold
//! mode letters only — refused with DistKV's error text whether written by
//! `set_internal` or smuggled in by `update`, with nothing stored.

use anyhow::{ensure, Result};
use distkv_model::{Path, Value};
use distkv_tests::*;

/// A path of the meta tree as `set_internal`/`get_internal` name it:
/// relative to the meta root `(None,)`.
fn internal(elems: &[&str]) -> Path {
    Path::from(elems.iter().map(|e| Value::str(e)).collect::<Vec<_>>())
}

/// The same path as events carry it: absolute, below `None`.
fn absolute(elems: &[&str]) -> Path {
    Path::from(
        std::iter::once(Value::Nil)
            .chain(elems.iter().map(|e| Value::str(e)))
            .collect::<Vec<_>>(),
    )
}

/// The error text of a refused request, or what it answered instead.
async fn refused(c: &mut Raw, action: &str, fields: Vec<(&str, Value)>) -> Result<String> {
    let r = c.call(action, fields).await?;
    match field(&r, "error") {
        Ok(Value::Str(e)) => Ok(e.to_string()),
        _ => anyhow::bail!("{action} was not refused: {r}"),
    }
}

/// The value at a meta path (`get_internal`'s form).
async fn stored(c: &mut Raw, path: &Path) -> Result<Option<Value>> {
    let r = c
        .call_ok("get_internal", vec![("path", p(path.clone()))])
        .await?;
    Ok(field(&r, "value").ok().cloned())
}

#[tokio::test]
async fn set_internal_refuses_data_on_the_roots_and_acls_without_mode_letters() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    for root in ["acl", "codec", "conv", "match", "type"] {
        let path = internal(&[root]);
        let e = refused(
            &mut c,
            "set_internal",
            vec![("path", p(path.clone())), ("value", Value::Int(1))],
        )
        .await?;
        ensure!(
            e == r#"ValueError("This node can't have data.")"#,
            "{root}: {e}"
        );
        ensure!(stored(&mut c, &path).await?.is_none(), "{root} stored data");
    }
    let acl = internal(&["acl", "foo", "one"]);
    for (bad, want) in [
        (Value::str("rwq"), "letters other than"),
        (Value::Int(7), "ACL is not a string"),
    ] {
        let e = refused(
            &mut c,
            "set_internal",
            vec![("path", p(acl.clone())), ("value", bad.clone())],
        )
        .await?;
        ensure!(
            e.starts_with("ValueError(") && e.contains(want),
            "{bad}: {e}"
        );
    }
    ensure!(stored(&mut c, &acl).await?.is_none());
    c.call_ok(
        "set_internal",
        vec![("path", p(acl.clone())), ("value", Value::str("rxnc"))],
    )
    .await?;
    ensure!(stored(&mut c, &acl).await? == Some(Value::str("rxnc")));
    Ok(())
}

#[tokio::test]
async fn update_cannot_smuggle_a_bad_acl_in() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    let acl = internal(&["acl", "foo", "one"]);
    let event = |value: Value| {
        vec![
            ("node", Value::str("gone")),
            ("tick", Value::Int(3)),
            ("prev", Value::Nil),
            ("path", p(absolute(&["acl", "foo", "one"]))),
            ("value", value),
            ("tock", Value::Int(10)),
        ]
    };
    let e = refused(&mut c, "update", event(Value::str("all"))).await?;
    ensure!(e.contains("letters other than"), "{e}");
    ensure!(stored(&mut c, &acl).await?.is_none());
    c.call_ok("update", event(Value::str("rx"))).await?;
    ensure!(stored(&mut c, &acl).await? == Some(Value::str("rx")));
    Ok(())
}
