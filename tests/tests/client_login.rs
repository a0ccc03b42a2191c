//! The client library's side of login (`distkv_client::auth`) against a
//! node over real TCP: users written with `auth_set`, the method switched
//! with `set_auth_typ`, then `Client::log_in` with no, the wrong, a bad and
//! the right credentials; one Diffie-Hellman exchange per connection serves
//! both a login and a later `auth_set`.

use anyhow::{bail, ensure, Result};
use distkv_model::{Path, Value};
use distkv_node::auth::{AuthError, Credentials, Purpose};
use distkv_node::client::{Client, ClientError, StreamItem};
use distkv_tests::*;

fn password(name: &str, pw: &str) -> Result<Credentials> {
    let params = vec![
        ("name".to_string(), Value::str(name)),
        ("password".to_string(), Value::str(pw)),
    ];
    Ok(Credentials::new("password", params, Purpose::Login)?)
}

fn root() -> Result<Credentials> {
    Ok(Credentials::new("root", Vec::new(), Purpose::Login)?)
}

/// Whether the connection is served (not held back before login).
async fn served(c: &Client) -> bool {
    c.get_value(&Path::root(), 0).await.is_ok()
}

/// The idents `auth_list` streams for `method`.
async fn idents(c: &Client, method: &str) -> Result<Vec<String>> {
    let mut s = c.auth_list(method, 0).await?;
    let mut out = Vec::new();
    while let Some(item) = s.next().await? {
        if let StreamItem::Data(m) = item {
            out.push(field(&m, "ident")?.as_str().unwrap_or_default().to_string());
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_logs_in_with_the_method_in_force() -> Result<()> {
    let node = TestNode::start().await?;
    let admin = node.client().await?;
    // Nobody needs to log in yet: credentials are not used.
    within("log_in", admin.log_in(Some(&root()?))).await??;
    within("auth_set root", admin.auth_set(&root()?, Value::Nil)).await??;
    let joe = Credentials::new(
        "password",
        vec![
            ("name".into(), Value::str("joe")),
            ("password".into(), Value::str("secret1")),
        ],
        Purpose::Create,
    )?;
    within("auth_set joe", admin.auth_set(&joe, Value::Nil)).await??;
    ensure!(idents(&admin, "password").await? == ["joe"]);
    let got = admin.auth_get("password", "joe", 2).await?;
    ensure!(got.get("chain").is_some_and(Value::truthy), "{got}");
    within("set_auth_typ", admin.set_auth_typ(Some("password"))).await??;

    // No credentials, another method, a wrong password.
    let c = node.client().await?;
    match c.log_in(None).await {
        Err(AuthError::Required(m)) if m == "password" => {}
        other => bail!("{other:?}"),
    }
    match c.log_in(Some(&root()?)).await {
        Err(e @ AuthError::WrongMethod { .. }) => ensure!(
            e.to_string() == "You cannot use 'root' auth ('password', 'root')",
            "{e}"
        ),
        other => bail!("{other:?}"),
    }
    match c.log_in(Some(&password("joe", "wrong11")?)).await {
        Err(AuthError::Client(ClientError::Server(t))) => ensure!(
            t == "AuthFailedError('Password hashes do not match', 'joe')",
            "{t}"
        ),
        other => bail!("{other:?}"),
    }
    ensure!(!served(&c).await, "served before login");
    // The same connection, its key agreed once, logs in.
    within("log_in joe", c.log_in(Some(&password("joe", "secret1")?))).await??;
    ensure!(served(&c).await, "not served after login");
    // Its key seals the next password too (a second exchange is refused).
    let ann = Credentials::new(
        "password",
        vec![
            ("name".into(), Value::str("ann")),
            ("password".into(), Value::str("annpass")),
        ],
        Purpose::Create,
    )?;
    within("auth_set ann", c.auth_set(&ann, Value::Nil)).await??;
    let fresh = node.client().await?;
    within(
        "log_in ann",
        fresh.log_in(Some(&password("ann", "annpass")?)),
    )
    .await??;
    ensure!(served(&fresh).await);

    // Login off again.
    within("set_auth_typ None", fresh.set_auth_typ(None)).await??;
    let anon = node.client().await?;
    anon.log_in(None).await?;
    ensure!(served(&anon).await);
    node.shutdown().await
}
