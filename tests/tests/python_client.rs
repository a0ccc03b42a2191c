//! The real Python DistKV 0.63.3 client library and CLI against our node.
//!
//! The test runs `tests/python/compat.py` with a Python that has
//! `distkv==0.63.3` (pinned set: `../shared/reference/requirements-distkv-0.63.3.txt`).
//! It uses `$DISTKV_PYTHON` if set; otherwise it creates (once) a venv in
//! `target/py-distkv-0.63.3` and installs the pinned set into it with pip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use distkv_node::server::{self, Server, ServerOptions};
use tokio_util::sync::CancellationToken;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A Python interpreter with DistKV 0.63.3 installed.
fn python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("DISTKV_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = workspace().join("target/py-distkv-0.63.3");
    let py = venv.join("bin/python");
    let ready = || {
        Command::new(&py)
            .args(["-c", "import distkv, moat.util"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready() {
        return Ok(py);
    }
    let reqs = workspace().join("../shared/reference/requirements-distkv-0.63.3.txt");
    if !reqs.is_file() {
        bail!(
            "{} not found: cannot install the Python reference client",
            reqs.display()
        );
    }
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("python3 -m venv")?;
    if !st.success() {
        bail!("creating the venv failed");
    }
    let st = Command::new(&py)
        .args(["-m", "pip", "install", "-q", "-r"])
        .arg(&reqs)
        .status()
        .context("pip install")?;
    if !st.success() || !ready() {
        bail!("installing distkv 0.63.3 into {} failed", venv.display());
    }
    Ok(py)
}

#[test]
fn python_client_and_cli_work_against_the_node() -> anyhow::Result<()> {
    let py = python()?;
    let rt = tokio::runtime::Runtime::new()?;
    let shutdown = CancellationToken::new();
    let (port, served) = rt.block_on(async {
        let srv = Server::new("rust1", ServerOptions::default());
        srv.init(distkv_model::Value::str("Testing"))?;
        let listener = server::bind("127.0.0.1", 0).await?;
        let port = listener.local_addr()?.port();
        let served = tokio::spawn(server::serve(srv, listener, shutdown.clone()));
        anyhow::Ok((port, served))
    })?;
    let out = Command::new(&py)
        .arg(workspace().join("tests/python/compat.py"))
        .arg(port.to_string())
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .context("running compat.py")?;
    shutdown.cancel();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), served).await })???;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("compat.py failed: {}", out.status);
    }
    Ok(())
}
