//! Nothing in clear: a password reaches the node only sealed under the
//! connection's Diffie-Hellman key, and the node keeps only its digest.
//!
//! A real node process with a data directory and debug logging: a user is
//! created, a wrong and a right login are tried, a full snapshot is saved,
//! the node stops. Then neither password is in any reply, in the node's log,
//! nor in any file of its data directory (raw bytes), nor in what
//! `distkv-replay dump` prints of the segments and the snapshot, which does
//! show the user's record: the digest.

mod process;

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use distkv_model::{hex, Value};
use distkv_node::login::password_digest;
use distkv_tests::{error_text, Raw};
use process::{replay_bin, Launch};

const PASSWORD: &str = "Geheimnis-4711-right";
const WRONG: &str = "Geheimnis-4711-wrong";

/// Every file below `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_never_stored_logged_or_sent_back() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("distkv-secrets-")
        .tempdir()?;
    let launch = Launch::new("sec1", dir.path()).rust_log(Some("debug"));
    let node = launch.start().await?;
    let mut replies = Vec::new();

    let mut admin = Raw::connect(node.addr).await?;
    admin.add_password_user("joe", PASSWORD).await?;
    admin
        .call_ok("set_auth_typ", vec![("typ", Value::str("password"))])
        .await?;
    let mut c = Raw::connect(node.addr).await?;
    let sealed = c.session_key().await?.seal(&password_digest(WRONG))?;
    let wrong = c
        .auth(
            "password",
            "joe",
            vec![("password", Value::Bin(sealed.into()))],
        )
        .await?;
    ensure!(
        error_text(&wrong[0])? == "AuthFailedError('Password hashes do not match', 'joe')",
        "{wrong:?}"
    );
    replies.extend(wrong);
    let mut c = Raw::connect(node.addr).await?;
    c.login_password("joe", PASSWORD).await?;
    let user = Value::Array(["auth", "password", "user", "joe"].map(Value::str).to_vec());
    let record = c.call_ok("get_internal", vec![("path", user)]).await?;
    let digest = Value::Bin(password_digest(PASSWORD).to_vec().into());
    ensure!(
        record.get("value") == Some(&Value::map([("password", digest)])),
        "only the digest is stored: {record}"
    );
    replies.push(record);
    replies.push(
        c.call_ok(
            "save",
            vec![
                ("path", Value::str("all.snap")),
                ("full", Value::Bool(true)),
            ],
        )
        .await?,
    );
    let log = node.stderr();
    node.terminate().await?;

    for m in &replies {
        let text = m.to_string();
        for pw in [PASSWORD, WRONG] {
            ensure!(!text.contains(pw), "a reply holds a password: {text}");
        }
    }
    ensure!(
        log.contains("DEBUG"),
        "the node logged at debug level:\n{log}"
    );
    let mut all = Vec::new();
    files(dir.path(), &mut all)?;
    ensure!(all.len() > 3, "the node wrote files: {all:?}");
    for f in &all {
        let bytes = std::fs::read(f)?;
        for pw in [PASSWORD, WRONG] {
            ensure!(!holds(&bytes, pw), "{} holds a password", f.display());
        }
    }
    let out = Command::new(replay_bin()?)
        .arg("dump")
        .arg(dir.path().join("data"))
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    let snap = all
        .iter()
        .find(|f| f.file_name().is_some_and(|n| n == "all.snap"))
        .context("no saved snapshot")?;
    let out = Command::new(replay_bin()?).arg("dump").arg(snap).output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = format!("{dump}{}", String::from_utf8_lossy(&out.stdout));
    ensure!(
        dump.contains("auth.password.user.joe = {'password': b'"),
        "the dumps show the user's digest:\n{dump}"
    );
    for pw in [PASSWORD, WRONG] {
        ensure!(!dump.contains(pw), "a dump holds a password:\n{dump}");
        ensure!(
            !dump.contains(&hex::encode(pw.as_bytes())),
            "a dump holds a password in hex"
        );
    }
    Ok(())
}
