//! Users and login over real TCP: the greeting's `auth` field, the gate
//! before login (`NoAuthError`), `diffie_hellman` once per connection,
//! password and root logins, and what is stored for a password.

use anyhow::{ensure, Result};
use distkv_model::Value;
use distkv_node::login::{password_digest, SessionKey};
use distkv_tests::*;

fn bin(b: &[u8]) -> Value {
    Value::Bin(b.into())
}

/// Runs `diffie_hellman` on `c`; returns the session key.
async fn dh(c: &mut Raw) -> Result<SessionKey> {
    let started = std::time::Instant::now();
    let key = c.session_key().await?;
    println!("diffie_hellman round trip: {:?}", started.elapsed());
    Ok(key)
}

fn error_of(msgs: &[Value]) -> Result<String> {
    ensure!(msgs.len() == 1, "expected one error, got {msgs:?}");
    Ok(error_text(&msgs[0])?.to_string())
}

#[tokio::test]
async fn password_login_gates_requests_and_stores_only_the_digest() -> Result<()> {
    let node = TestNode::start().await?;
    let mut admin = node.raw().await?;
    ensure!(admin.greeting.get("auth").is_none(), "{}", admin.greeting);
    let key = dh(&mut admin).await?;
    let r = admin
        .call(
            "diffie_hellman",
            vec![("pubkey", bin(&[5; 128])), ("length", Value::Int(1024))],
        )
        .await?;
    ensure!(
        error_text(&r)? == "RuntimeError(\"Can't call dh twice\")",
        "{r}"
    );
    // No users yet: the method cannot be switched on.
    let r = admin
        .call("set_auth_typ", vec![("typ", Value::str("password"))])
        .await?;
    ensure!(
        error_text(&r)?.starts_with("RuntimeError(\"You didn't configure this method yet:"),
        "{r}"
    );
    let sealed = key.seal(&password_digest("geheim123"))?;
    let r = admin
        .call_ok(
            "auth_set",
            vec![
                ("typ", Value::str("password")),
                ("kind", Value::str("user")),
                ("ident", Value::str("joe")),
                ("chain", Value::Nil),
                ("password", bin(&sealed)),
            ],
        )
        .await?;
    ensure!(r.get("prev").is_none(), "{r}");
    admin
        .call_ok("set_auth_typ", vec![("typ", Value::str("password"))])
        .await?;
    let r = admin
        .call_ok(
            "get_internal",
            vec![(
                "path",
                Value::Array(vec![
                    Value::str("auth"),
                    Value::str("password"),
                    Value::str("user"),
                    Value::str("joe"),
                ]),
            )],
        )
        .await?;
    ensure!(
        r.get("value")
            == Some(&Value::map([(
                "password",
                bin(&password_digest("geheim123"))
            )])),
        "only the digest is stored: {r}"
    );

    let mut c = node.raw().await?;
    ensure!(
        c.greeting.get("auth") == Some(&Value::Array(vec![Value::str("password")])),
        "{}",
        c.greeting
    );
    let r = c.call("get_tock", vec![]).await?;
    ensure!(error_text(&r)? == "NoAuthError()", "{r}");
    let e = error_of(&c.auth("root", "*", vec![]).await?)?;
    ensure!(e == "RuntimeError('Wrong auth type', 'password')", "{e}");
    let key = dh(&mut c).await?;
    let wrong = key.seal(&password_digest("wrongpass"))?;
    let e = error_of(
        &c.auth("password", "joe", vec![("password", bin(&wrong))])
            .await?,
    )?;
    ensure!(
        e == "AuthFailedError('Password hashes do not match', 'joe')",
        "{e}"
    );
    let r = c.call("get_tock", vec![]).await?;
    ensure!(error_text(&r)? == "NoAuthError()", "still refused: {r}");
    let right = key.seal(&password_digest("geheim123"))?;
    let msgs = c
        .auth("password", "joe", vec![("password", bin(&right))])
        .await?;
    let states: Vec<_> = msgs.iter().map(state_of).collect();
    ensure!(states == [Some("start"), Some("end")], "{msgs:?}");
    c.still_works().await?;
    // Connections opened before the switch are not asked to log in.
    admin.still_works().await
}

#[tokio::test]
async fn root_login_lets_the_connection_in() -> Result<()> {
    let node = TestNode::start().await?;
    let mut admin = node.raw().await?;
    admin
        .call_ok(
            "auth_set",
            vec![
                ("typ", Value::str("root")),
                ("kind", Value::str("user")),
                ("ident", Value::str("*")),
                ("chain", Value::Nil),
                ("data", Value::map([])),
            ],
        )
        .await?;
    let seq = admin
        .request(
            "auth_list",
            vec![("typ", Value::str("root")), ("kind", Value::str("user"))],
        )
        .await?;
    let listed = admin.recv_stream(seq).await?;
    ensure!(listed.len() == 3, "{listed:?}");
    ensure!(
        listed[1].get("ident") == Some(&Value::str("*")),
        "{listed:?}"
    );
    admin
        .call_ok("set_auth_typ", vec![("typ", Value::str("root"))])
        .await?;

    let mut c = node.raw().await?;
    ensure!(
        c.greeting.get("auth") == Some(&Value::Array(vec![Value::str("root")])),
        "{}",
        c.greeting
    );
    let r = c.call("get_tock", vec![]).await?;
    ensure!(error_text(&r)? == "NoAuthError()", "{r}");
    let msgs = c.auth("root", "*", vec![("data", Value::map([]))]).await?;
    let states: Vec<_> = msgs.iter().map(state_of).collect();
    ensure!(states == [Some("start"), Some("end")], "{msgs:?}");
    c.still_works().await?;

    // Switched off again: new connections need no login.
    admin
        .call_ok("set_auth_typ", vec![("typ", Value::Nil)])
        .await?;
    let mut d = node.raw().await?;
    ensure!(
        d.greeting.get("auth") == Some(&Value::Array(vec![Value::Nil, Value::str("root")])),
        "{}",
        d.greeting
    );
    d.still_works().await
}

#[tokio::test]
async fn a_login_below_a_sub_tree_is_refused_not_ignored() -> Result<()> {
    let node = TestNode::start().await?;
    let mut c = node.raw().await?;
    c.call_ok(
        "auth_set",
        vec![
            ("typ", Value::str("root")),
            ("kind", Value::str("user")),
            ("ident", Value::str("*")),
            ("data", Value::map([])),
        ],
    )
    .await?;
    let root = Value::Array(vec![Value::str("tenant")]);
    let e = error_of(&c.auth("root", "*", vec![("root", root)]).await?)?;
    ensure!(e.starts_with("NotImplementedError("), "{e}");
    let msgs = c
        .auth("root", "*", vec![("root", Value::Array(vec![]))])
        .await?;
    ensure!(msgs.len() == 2, "an empty root is the real one: {msgs:?}");
    Ok(())
}
