//! Python DistKV 0.63.3's `distkv client log dest|save|stop` against a real
//! `distkv server` process, and the files it makes the node write into its
//! export directory (relative names; `..` and existing files refused): they
//! load back with `-l` (deletions included) and Python's `distkv dump file`
//! reads them.
//!
//! The Python comes from `$DISTKV_PYTHON` or the venv that
//! `python_client.rs` also uses (`target/py-distkv-0.63.3`); the node binary
//! as in `durability.rs` (see `process/mod.rs`).

mod process;

use std::path::Path as FsPath;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_node::client::UpdateOptions;
use distkv_node::pyfiles::{PyReader, PyRecord};
use process::{dump, python, same_dump, Launch};

/// Runs Python's `distkv ARGS…` (with a deadline); returns its stdout, or
/// with `fail` its stderr, once it failed.
async fn py_distkv_expecting(args: Vec<String>, fail: bool) -> Result<String> {
    let py = python()?;
    let script = py.with_file_name("distkv");
    let shown = args.join(" ");
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&script)
            .args(&args)
            .env("PYTHONWARNINGS", "ignore")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("distkv {shown}: no exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success() != fail,
            "distkv {shown}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = if fail { out.stderr } else { out.stdout };
        Ok(String::from_utf8_lossy(&text).into_owned())
    })
    .await?
}

/// Runs Python's `distkv ARGS…` (with a deadline); returns its stdout.
async fn py_distkv(args: Vec<String>) -> Result<String> {
    py_distkv_expecting(args, false).await
}

fn py_client_args(cfg: &FsPath, args: &[&str]) -> Vec<String> {
    let mut v = vec!["-c".to_string(), cfg.display().to_string(), "client".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// Python's `distkv -c CFG client ARGS…`.
async fn py_client(cfg: &FsPath, args: &[&str]) -> Result<String> {
    py_distkv(py_client_args(cfg, args)).await
}

/// Python's `distkv -c CFG client ARGS…`, which must fail with an error
/// that says `want`.
async fn py_client_refused(cfg: &FsPath, args: &[&str], want: &str) -> Result<()> {
    let err = py_distkv_expecting(py_client_args(cfg, args), true).await?;
    ensure!(err.contains(want), "{args:?}: {err}");
    Ok(())
}

/// The records of a DistKV-format file.
fn records(file: &FsPath) -> Result<Vec<PyRecord>> {
    let bytes = std::fs::read(file)?;
    PyReader::new(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", file.display()))
}

fn has_change(recs: &[PyRecord], p: &Path) -> bool {
    recs.iter()
        .any(|r| matches!(r, PyRecord::Event(ev) if &ev.path == p))
}

/// How many records Python's `distkv dump file` prints.
async fn python_reads(file: &FsPath) -> Result<usize> {
    let out = py_distkv(vec![
        "-c".into(),
        "/dev/null".into(),
        "dump".into(),
        "file".into(),
        file.display().to_string(),
    ])
    .await?;
    Ok(out.lines().filter(|l| *l == "---").count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_log_dest_save_and_stop_write_files_that_load_back() -> Result<()> {
    let dir = tempfile::Builder::new().prefix("distkv-pylog-").tempdir()?;
    let d = dir.path();
    let launch = Launch::new("pylog", d).fsync("never");
    let node = launch.start().await?;
    // The default export directory: `export/` in the data directory.
    let exports = launch
        .data_dir
        .clone()
        .context("no data dir")?
        .join("export");
    let cfg = d.join("client.cfg");
    std::fs::write(
        &cfg,
        format!(
            "connect:\n  host: 127.0.0.1\n  port: {}\n",
            node.addr.port()
        ),
    )?;
    let c = node.connect().await?;
    let opts = UpdateOptions::default();
    for i in 0..50i64 {
        c.set_value(&path!["p", i], Value::Int(i), &opts).await?;
    }
    c.delete_value(&path!["p", 3i64], &opts).await?;

    // A change log with the full state first, then every change.
    let log = exports.join("changes.log");
    py_client(&cfg, &["log", "dest", "changes.log"]).await?;
    ensure!(log.is_file(), "log dest wrote no file");
    for i in 50..60i64 {
        c.set_value(&path!["p", i], Value::Int(i), &opts).await?;
    }
    c.set_value(&path!["p", 1i64], Value::str("one"), &opts)
        .await?;
    c.delete_value(&path!["p", 4i64], &opts).await?;
    let nested = Value::map([("x", Value::Array(vec![Value::Int(1), Value::Float(2.5)]))]);
    c.set_value(&path!["q", "r"], nested, &opts).await?;
    let last = path!["zz", "last"];
    c.set_value(&last, Value::Bool(true), &opts).await?;

    // Saves in DistKV's format (by the `.dkv` name) and in ours.
    let save_py = exports.join("state.dkv");
    let save_snap = exports.join("old/state.dkvsnap");
    py_client(&cfg, &["log", "save", "state.dkv"]).await?;
    py_client(&cfg, &["log", "save", "old/state.dkvsnap"]).await?;
    // Nothing outside the export directory, nothing replaced.
    py_client_refused(
        &cfg,
        &["log", "save", "../escape.dkv"],
        "path must stay inside the export directory",
    )
    .await?;
    py_client_refused(
        &cfg,
        &["log", "dest", &d.join("escape.dkv").display().to_string()],
        "path must be relative to the export directory",
    )
    .await?;
    py_client_refused(&cfg, &["log", "save", "state.dkv"], "exists").await?;
    ensure!(
        !exports.join("../escape.dkv").exists() && !d.join("escape.dkv").exists(),
        "a file was written outside the export directory"
    );
    let want = dump(&c, false).await?;
    let want_empty = dump(&c, true).await?;
    ensure!(!want.contains_key(&path!["p", 4i64].to_string()));

    py_client(&cfg, &["log", "stop"]).await?;
    // DistKV's `log stop` returns once the log is closed; ours returns at
    // once and the log's task writes its last records right after (see the
    // report). Poll for them instead of sleeping.
    let complete_at_once = has_change(&records(&log)?, &last);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has_change(&records(&log)?, &last) {
        ensure!(
            Instant::now() < deadline,
            "the change log never got the last change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("change log complete when `log stop` returned: {complete_at_once}");
    let recs = records(&log)?;
    ensure!(
        recs.iter()
            .any(|r| matches!(r, PyRecord::Event(ev) if ev.path == path!["p", 4i64] && ev.value.is_none())),
        "the change log lacks the deletion of p.4"
    );
    ensure!(
        matches!(recs.first(), Some(PyRecord::State(_))),
        "a change log starts with a state record"
    );
    drop(c);
    node.terminate().await?;

    // Python reads every file the node wrote in DistKV's format.
    ensure!(
        python_reads(&log).await? == recs.len(),
        "Python's `dump file` read another number of records from the change log"
    );
    ensure!(
        python_reads(&save_py).await? == records(&save_py)?.len(),
        "Python's `dump file` read another number of records from the save file"
    );

    // Each file alone rebuilds the data; the change log replays the
    // deletion of p.4 made after it started.
    for (name, file, empty, want) in [
        ("pyload1", &save_py, false, &want),
        ("pyload2", &save_snap, true, &want_empty),
        ("pyload3", &log, false, &want),
    ] {
        let n = Launch::new(name, d)
            .no_data_dir()
            .load(file)
            .start()
            .await?;
        let got = dump(&n.connect().await?, empty).await?;
        same_dump(&format!("-l {}", file.display()), want, &got)?;
        n.terminate().await?;
    }
    Ok(())
}
