//! The real Python DistKV 0.63.3 client library and CLI against our node.
//!
//! The test runs `tests/python/compat.py` with a Python that has
//! `distkv==0.63.3` (pinned set: `tests/python/requirements.txt`).
//! It uses `$DISTKV_PYTHON` if set; otherwise it creates (once) a venv in
//! `target/py-distkv-0.63.3` and installs the pinned set into it with pip
//! (see `process::python`).
//!
//! A second test runs two real node processes (see `process/mod.rs`) and
//! `tests/python/cross_node.py`: the Python client watches one node while
//! our client writes through the other, then passes user messages
//! (`msg_send` on one node, `msg_monitor` on the other).

mod process;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use distkv_model::{path, Value};
use distkv_node::client::UpdateOptions;
use distkv_node::node::NodeBuilder;
use process::{logs, python, run_python_script, workspace, Launch};

/// Runs `tests/python/SCRIPT PORT` with the Python of DistKV 0.63.3
/// against a fresh in-process node whose root holds `Testing`.
fn run_script_against_a_node(script: &str) -> anyhow::Result<()> {
    run_script_with_env(script, &[])
}

/// [`run_script_against_a_node`] with extra environment variables.
fn run_script_with_env(script: &str, env: &[(&str, &std::path::Path)]) -> anyhow::Result<()> {
    run_python_script(NodeBuilder::new("rust1"), script, env)
}

#[test]
fn python_client_and_cli_work_against_the_node() -> anyhow::Result<()> {
    run_script_against_a_node("compat.py")
}

#[test]
fn python_watch_on_one_node_sees_writes_made_on_another() -> anyhow::Result<()> {
    let py = python()?;
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::Builder::new()
        .prefix("distkv-py-cross-")
        .tempdir()?;
    let launch = |name: &str| -> anyhow::Result<Launch> {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d)?;
        Launch::new(name, &d)
            .conf("server.ping.cycle=1")
            .conf("server.ping.gap=0.2")
            .with_bus()
    };
    let l1 = launch("pyx1")?;
    let l2 = launch("pyx2")?.peer(&l1);
    let (n1, n2) = rt.block_on(async {
        let n1 = l1.start().await?;
        let n2 = l2.start().await?;
        anyhow::Ok((n1, n2))
    })?;

    let stderr_path = dir.path().join("cross_node.stderr");
    let mut child = Command::new(&py)
        .arg(workspace().join("tests/python/cross_node.py"))
        .arg(n2.addr.port().to_string())
        .arg("3")
        .arg(n1.addr.port().to_string())
        .env("PYTHONWARNINGS", "ignore")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .context("running cross_node.py")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let report = |lines: &[String], what: &str| {
        format!(
            "{what}\n----- cross_node.py stdout -----\n{}\n----- cross_node.py stderr -----\n{}\n{}",
            lines.join("\n"),
            std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            logs(&[&n1, &n2])
        )
    };

    // The watch is in place once the script says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let ready = l == "ready";
                lines.push(l);
                if ready {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(report(&lines, "cross_node.py never got ready"));
            }
        }
    }

    let written: Vec<String> = (0..3).map(|i| format!("across {i}")).collect();
    rt.block_on(async {
        let c = n1.connect().await?;
        for (i, v) in written.iter().enumerate() {
            c.set_value(
                &path!["cross", "node", i as i64],
                Value::str(v),
                &UpdateOptions::default(),
            )
            .await?;
        }
        anyhow::Ok(())
    })?;

    // The script has its own 30 s timeout; allow for its start-up on top.
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            lines.extend(rx.try_iter());
            bail!(report(&lines, "cross_node.py did not exit"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    lines.extend(rx.try_iter());
    ensure!(
        status.success(),
        report(&lines, &format!("cross_node.py failed: {status}"))
    );
    for v in &written {
        ensure!(
            lines
                .iter()
                .any(|l| l.starts_with("seen ") && l.ends_with(&format!("{v:?}").replace('"', "'"))),
            report(&lines, &format!("cross_node.py did not print {v:?}"))
        );
    }
    ensure!(
        lines.iter().any(|l| l == "msg ok"),
        report(&lines, "cross_node.py did not pass user messages")
    );
    println!("{}", lines.join("\n"));
    Ok(())
}

/// Password login's cryptography against DistKV's own Python classes:
/// from the same private keys both sides derive the same public keys and
/// session key (each opens the other's SecretBox of the password digest),
/// in both groups (key length 1024, and 16 as `distkv -D` asks).
#[test]
fn password_login_crypto_matches_pythons() -> anyhow::Result<()> {
    use distkv_node::login::{password_digest, Group, KeyExchange};
    use rand::{RngCore, SeedableRng};

    let py = python()?;
    use distkv_model::hex;
    let unhex = |s: &str| hex::decode(s).context("not hex");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let password = "s3cret pässword";
    for length in [1024u32, 16] {
        let mut keys = [vec![0u8; (length.max(200) / 8 + 8) as usize], vec![]];
        keys[1] = keys[0].clone();
        rng.fill_bytes(&mut keys[0]);
        rng.fill_bytes(&mut keys[1]);
        let group = Group::for_length(length);
        let (a, b) = (
            KeyExchange::with_private_key(group, &keys[0]),
            KeyExchange::with_private_key(group, &keys[1]),
        );
        let key = b.session_key(a.public_key())?;
        let ours = key.seal(&password_digest(password))?;
        let out = Command::new(&py)
            .arg(workspace().join("tests/python/login_crypto.py"))
            .args([
                length.to_string(),
                hex::encode(&keys[0]),
                hex::encode(&keys[1]),
                hex::encode(&ours),
            ])
            .arg(password)
            .output()
            .context("running login_crypto.py")?;
        ensure!(
            out.status.success(),
            "login_crypto.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout)?;
        let lines: Vec<&str> = stdout.lines().collect();
        ensure!(lines.len() == 3, "unexpected output: {stdout}");
        assert_eq!(unhex(lines[0])?, a.public_key(), "length {length}");
        assert_eq!(unhex(lines[1])?, b.public_key(), "length {length}");
        assert_eq!(key.open(&unhex(lines[2])?)?, password_digest(password));
    }
    Ok(())
}

/// Users and login with the real Python CLI and library
/// (`tests/python/auth.py`): password and root users, switching login on,
/// refused and accepted logins; only the password's digest is stored.
#[test]
fn python_users_and_login_work_against_the_node() -> anyhow::Result<()> {
    run_script_against_a_node("auth.py")
}

/// DistKV's ACL acceptance with the real Python CLI and library
/// (`tests/python/acl.py`): user `aclix` bound to ACL `foo` may create
/// `one` and `one.two` but not `one.two.three` (`n`) nor overwrite
/// `one.two` (`w`), with DistKV's error text; `acl test`; a tree walk.
#[test]
fn python_users_are_bound_by_acls() -> anyhow::Result<()> {
    run_script_against_a_node("acl.py")
}

/// Types with the real Python CLI (`tests/python/typecheck.py`; not
/// `types.py`, which would hide Python's own module): `type set -S` and
/// `type match -t`; values checked against the schema with DistKV's error
/// text; a failing good example and Python code (we run Rhai) are refused.
#[test]
fn python_cli_types_are_enforced() -> anyhow::Result<()> {
    run_script_against_a_node("typecheck.py")
}

/// Error records (`tests/python/errors.py`): recorded by DistKV's own
/// `ErrorRoot`, dumped alike by DistKV's CLI and ours (list and dict mode,
/// details, traces, filters); resolved by ours, seen resolved by
/// DistKV's.
#[test]
fn python_and_our_cli_show_error_records_alike() -> anyhow::Result<()> {
    let ours = process::distkv_bin()?;
    run_script_with_env("errors.py", &[("DISTKV_BIN", &ours)])
}

/// `internal dump|get|enum` and `data PATH update` (`tests/python/internal.py`):
/// DistKV's CLI and ours print the same; DistKV's `data update` reads a
/// file our `dump yaml` wrote.
#[test]
fn python_and_our_cli_agree_on_internal_and_update() -> anyhow::Result<()> {
    let ours = process::distkv_bin()?;
    run_script_with_env("internal.py", &[("DISTKV_BIN", &ours)])
}
