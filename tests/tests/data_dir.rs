//! One data directory, one node process: real `distkv server` processes
//! that try to share a directory or a port, and starts that fail.
//!
//! * A second server on a directory in use is refused at once, naming the
//!   directory and the running node's pid; the first node's files stay
//!   intact, so it keeps working and restarts.
//! * A server whose port is taken fails before it touches its data
//!   directory: the tick reservation in `meta` stays as it was.
//! * A start that fails leaves no data directory behind that it created.
//! * A SIGTERM while the node still recovers stops it cleanly, with its
//!   files intact: the handler is installed before the ports are bound.
//!
//! How the node binary is found and started: see `process/mod.rs`.

mod process;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Value};
use distkv_node::client::UpdateOptions;
use process::{distkv_bin, dump, free_port, same_dump, tail, Launch, NodeProc};

fn tempdir(name: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("distkv-{name}-"))
        .tempdir()?)
}

/// Runs `distkv -c /dev/null server ARGS…` to its exit, which must come
/// within the start deadline and be a failure; returns its stderr.
async fn failed_start(args: &[&str], log: &Path) -> Result<String> {
    let mut child = Command::new(distkv_bin()?)
        .args(["-c", "/dev/null", "server", "--bind", "127.0.0.1"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .env_remove("RUST_LOG")
        .spawn()?;
    let deadline = Instant::now() + process::START_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("still running: {args:?}\n{}", tail(log, 8 << 10));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let stderr = std::fs::read_to_string(log)?;
    ensure!(!status.success(), "{args:?} started:\n{stderr}");
    Ok(stderr)
}

async fn write_keys(node: &NodeProc, prefix: &str, n: i64) -> Result<()> {
    let c = node.connect().await?;
    for i in 0..n {
        c.set_value(&path![prefix, i], Value::Int(i), &UpdateOptions::default())
            .await?;
    }
    Ok(())
}

/// The files of a running node hold its state: `distkv-replay diff` of
/// its data directory against the node itself finds nothing (the tick the
/// node would resume at after a restart, above its reservation, is not a
/// difference).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_nodes_data_dir_diffs_equal_to_the_node() -> Result<()> {
    let dir = tempdir("difflive")?;
    let node = Launch::new("difflive", dir.path())
        .fsync("always")
        .start()
        .await?;
    write_keys(&node, "a", 50).await?;
    let out = Command::new(process::replay_bin()?)
        .args(["diff", "--quiet"])
        .arg(dir.path().join("data"))
        .arg(node.addr.to_string())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_data_dir_in_use_is_refused() -> Result<()> {
    let dir = tempdir("twice")?;
    let launch = Launch::new("twice", dir.path()).fsync("always");
    let first = launch.start().await?;
    write_keys(&first, "a", 50).await?;

    // The same node again, on other ports: its directory is in use.
    let err = match launch.start().await {
        Ok(_) => bail!("a second node started on {}", dir.path().display()),
        Err(e) => format!("{e:#}"),
    };
    let data = dir.path().join("data");
    let want = format!(
        "data directory {} is in use by a running node (pid {})",
        data.display(),
        first.pid()
    );
    ensure!(err.contains(&want), "want {want:?} in:\n{err}");

    // The first node's files are intact: it keeps writing, and restarts
    // with everything.
    write_keys(&first, "b", 50).await?;
    let before = dump(&first.connect().await?, true).await?;
    first.terminate().await?;
    let again = launch.start().await?;
    same_dump(
        "after the refused second start",
        &before,
        &dump(&again.connect().await?, true).await?,
    )?;
    again.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_used_port_leaves_its_data_dir_alone() -> Result<()> {
    let dir = tempdir("port")?;
    let launch = Launch::new("port1", dir.path()).with_bus()?;
    let live = launch.start().await?;
    let live_bus = launch.bus_port.context("a bus port")?.to_string();

    // Node port2 ran before and stopped cleanly: its reservation is the
    // tick it reached.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other)?;
    let stopped = Launch::new("port2", &other);
    let node = stopped.start().await?;
    write_keys(&node, "k", 5).await?;
    node.terminate().await?;
    let data = other.join("data");
    let meta = std::fs::read(data.join("meta"))?;

    let data_arg = data.to_str().context("path")?;
    let port = live.addr.port().to_string();
    let bus = free_port()?.to_string();
    let log = dir.path().join("client-port.stderr");
    let stderr = failed_start(
        &[
            "port2",
            "--data-dir",
            data_arg,
            "--port",
            &port,
            "--bus-port",
            &bus,
        ],
        &log,
    )
    .await?;
    ensure!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    ensure!(
        std::fs::read(data.join("meta"))? == meta,
        "the tick reservation moved"
    );

    let port = free_port()?.to_string();
    let log = dir.path().join("bus-port.stderr");
    let stderr = failed_start(
        &[
            "port2",
            "--data-dir",
            data_arg,
            "--port",
            &port,
            "--bus-port",
            &live_bus,
        ],
        &log,
    )
    .await?;
    ensure!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{live_bus} (the bus port)"
        )),
        "{stderr}"
    );
    ensure!(
        std::fs::read(data.join("meta"))? == meta,
        "the tick reservation moved"
    );
    live.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_new_data_dir() -> Result<()> {
    let dir = tempdir("failed")?;
    let live = Launch::new("failed1", dir.path()).start().await?;
    let fresh = dir.path().join("fresh");
    let data = fresh.join("data");
    let data_arg = data.to_str().context("path")?;

    // The port is taken: nothing is created.
    let port = live.addr.port().to_string();
    let log = dir.path().join("port.stderr");
    let stderr = failed_start(
        &[
            "failed2",
            "--data-dir",
            data_arg,
            "--port",
            &port,
            "--bus-port",
            "0",
        ],
        &log,
    )
    .await?;
    ensure!(stderr.contains("cannot listen on"), "{stderr}");
    ensure!(!fresh.exists(), "{} was created", fresh.display());

    // A file to load that is garbage fails the start after recovery: what
    // recovery created is removed again.
    let bad = dir.path().join("bad.dkv");
    std::fs::write(&bad, b"this is not msgpack")?;
    let port = free_port()?.to_string();
    let log = dir.path().join("load.stderr");
    let stderr = failed_start(
        &[
            "failed2",
            "--data-dir",
            data_arg,
            "--port",
            &port,
            "--bus-port",
            "0",
            "-l",
            bad.to_str().context("path")?,
        ],
        &log,
    )
    .await?;
    ensure!(stderr.contains("cannot load"), "{stderr}");
    ensure!(!fresh.exists(), "{} was left behind", fresh.display());
    live.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_the_start_stops_the_node_cleanly() -> Result<()> {
    let dir = tempdir("early-term")?;
    // No snapshots: the restart replays every event, which takes a while.
    let launch =
        Launch::new("earlyterm", dir.path()).conf("server.persist.snapshot_records=1000000000");
    let node = launch.start().await?;
    write_keys(&node, "early", 3000).await?;
    let expected = dump(&node.connect().await?, true).await?;
    node.terminate().await?;

    launch
        .start_bound()
        .await?
        .terminate()
        .await
        .context("a SIGTERM during recovery")?;
    let node = launch.start().await?;
    same_dump(
        "after a stop during the start",
        &expected,
        &dump(&node.connect().await?, true).await?,
    )?;
    node.terminate().await
}
