//! Durable history with real processes, real files and real fsync: a
//! `distkv server` keeps its data directory through `kill -9`, `SIGTERM`,
//! snapshots and segment retirement, and loads saved files with `-l`.
//!
//! How the node binary is found and started: see `process/mod.rs` (in
//! short, `cargo build -p distkv-tools --bin distkv` into this target
//! directory, or `DISTKV_BIN`).
//!
//! What `kill -9` can and cannot show: the process dies, but the kernel
//! keeps what it was given with `write(2)`, so a kill loses exactly what
//! the node had not yet written — acknowledged changes still in its memory.
//! These tests therefore check the ordering promises (under `fsync =
//! always` a reply waits until its change is in the log and fsynced; under
//! `interval` the log trails the replies by at most about an interval) and
//! the recovery itself (snapshot + log tail, torn tail, tick reservation).
//! Whether fsync reaches the platter would take a power cut.
//!
//! Every wait has a deadline; conditions are polled, never slept for.

mod process;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use distkv_model::{path, Path, Value};
use distkv_node::client::{Client, UpdateOptions};
use distkv_node::persist::durable::list_snapshots;
use process::{chain_tick, dump, same_dump, Launch, NodeProc};

/// The options of a write that wants the change's tick back.
fn with_tick() -> UpdateOptions {
    UpdateOptions {
        nchain: 1,
        ..UpdateOptions::default()
    }
}

fn tempdir(name: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("distkv-{name}-"))
        .tempdir()?)
}

/// One acknowledged `set_value` of the writer load.
#[derive(Debug, Clone, Copy)]
struct Ack {
    writer: u64,
    key: u64,
    value: i64,
    tick: u64,
    at: Instant,
}

/// What a writer load did before its node was killed.
#[derive(Debug)]
struct Run {
    keys: u64,
    acks: Vec<Ack>,
    /// Per writer, the highest value it sent (acknowledged or not).
    sent: Vec<i64>,
    /// When the kill signal was sent.
    killed_at: Instant,
    started_at: Instant,
}

fn key_path(writer: u64, key: u64) -> Path {
    path!["dur", writer, key]
}

/// Runs `writers` connections, each setting its `keys` keys round robin to
/// 0, 1, 2, … (key = value mod keys), until `kill_when(acks, elapsed)`
/// holds; then kills the node with `SIGKILL` while the writers are still
/// busy, and collects what was acknowledged.
async fn write_then_kill(
    node: NodeProc,
    writers: u64,
    keys: u64,
    kill_when: impl Fn(usize, Duration) -> bool,
) -> Result<Run> {
    let acks = Arc::new(Mutex::new(Vec::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let sent: Arc<Vec<AtomicI64>> = Arc::new((0..writers).map(|_| AtomicI64::new(-1)).collect());
    let started_at = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let c = node.connect().await?;
        let (acks, count, sent) = (acks.clone(), count.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0i64.. {
                let key = i as u64 % keys;
                sent[w as usize].store(i, Ordering::SeqCst);
                let Ok(r) = c
                    .set_value(&key_path(w, key), Value::Int(i), &with_tick())
                    .await
                else {
                    break;
                };
                let Ok(tick) = chain_tick(&r) else { break };
                let at = Instant::now();
                acks.lock().unwrap().push(Ack {
                    writer: w,
                    key,
                    value: i,
                    tick,
                    at,
                });
                count.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kill_when(count.load(Ordering::SeqCst), started_at.elapsed()) {
        ensure!(
            Instant::now() < deadline,
            "writers stalled at {} acks:\n{}",
            count.load(Ordering::SeqCst),
            node.stderr_tail()
        );
        ensure!(
            tasks.iter().all(|t| !t.is_finished()),
            "a writer stopped early:\n{}",
            node.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed_at = Instant::now();
    node.kill9()?;
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .context("a writer did not notice the kill")??;
    }
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    let sent = sent.iter().map(|s| s.load(Ordering::SeqCst)).collect();
    Ok(Run {
        keys,
        acks,
        sent,
        killed_at,
        started_at,
    })
}

impl Run {
    /// Checks that every write acknowledged at or before `cutoff` is in
    /// `dump`: the key holds that value or a later one this writer sent,
    /// with a tick at least as high. Returns how many keys were checked.
    fn check(&self, dump: &BTreeMap<String, Value>, cutoff: Instant) -> Result<usize> {
        let mut last: HashMap<(u64, u64), Ack> = HashMap::new();
        for a in self.acks.iter().filter(|a| a.at <= cutoff) {
            let e = last.entry((a.writer, a.key)).or_insert(*a);
            if a.value > e.value {
                *e = *a;
            }
        }
        for ((w, k), a) in &last {
            let p = key_path(*w, *k).to_string();
            let entry = dump
                .get(&p)
                .with_context(|| format!("acknowledged write {a:?} lost: {p} is gone"))?;
            let v = entry
                .get("value")
                .and_then(Value::as_i64)
                .with_context(|| format!("{p} has no integer value: {entry}"))?;
            let sent = self.sent[*w as usize];
            ensure!(
                v >= a.value && v <= sent && v as u64 % self.keys == *k,
                "{p} holds {v}: acknowledged {} (tick {}), writer sent up to {sent}",
                a.value,
                a.tick
            );
            ensure!(
                chain_tick(entry)? >= a.tick,
                "{p}: tick {} is older than the acknowledged {}",
                chain_tick(entry)?,
                a.tick
            );
        }
        Ok(last.len())
    }

    fn max_tick(&self) -> u64 {
        self.acks.iter().map(|a| a.tick).max().unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_with_fsync_always() -> Result<()> {
    let dir = tempdir("k9always")?;
    let launch = Launch::new("k9always", dir.path()).fsync("always");
    let run = write_then_kill(launch.start().await?, 16, 25, |acks, _| acks >= 1000).await?;
    let node = launch.start().await?;
    let d = dump(&node.connect().await?, false).await?;
    let checked = run.check(&d, run.killed_at)?;
    ensure!(checked == 16 * 25, "only {checked} keys were written");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_fsync_interval_loses_only_what_the_writer_had_not_appended() -> Result<()> {
    const INTERVAL: Duration = Duration::from_millis(200);
    // What the writer had not appended at the kill: normally the last
    // milliseconds, longer while an fsync of its own (a snapshot's, a
    // rotation's) stalls it on a disk that tests beside this one keep busy
    // with an fsync per write.
    const LAG: Duration = Duration::from_secs(2);
    let dir = tempdir("k9interval")?;
    let launch = Launch::new("k9interval", dir.path())
        .fsync("interval")
        .conf("server.persist.fsync_interval=0.2");
    let run = write_then_kill(launch.start().await?, 8, 40, |acks, t| {
        acks >= 500 && t >= LAG + 6 * INTERVAL
    })
    .await?;
    let node = launch.start().await?;
    let d = dump(&node.connect().await?, false).await?;
    let cutoff = run.killed_at - LAG;
    ensure!(cutoff > run.started_at, "the load ran too briefly");
    let checked = run.check(&d, cutoff)?;
    ensure!(checked > 0, "nothing was acknowledged before the cutoff");
    // Informational: what the last moments lost (a kill keeps what was
    // written, so usually nothing).
    let late = run.acks.iter().filter(|a| a.at > cutoff).count();
    let lost = run
        .acks
        .iter()
        .filter(|a| a.at > cutoff)
        .filter(|a| {
            let v = d
                .get(&key_path(a.writer, a.key).to_string())
                .and_then(|e| e.get("value"))
                .and_then(Value::as_i64);
            v.is_none_or(|v| v < a.value)
        })
        .count();
    eprintln!("acknowledged in the last {LAG:?}: {late}, lost: {lost}");
    Ok(())
}

/// With the smallest segments a node takes, nearly every commit rotates,
/// and the fsync thread makes each rotation durable while the writer goes
/// on writing to the new segment under its pending name: a kill lands in
/// the middle of one more often than not. Every write the writer had
/// appended is still there after the restart (a kill keeps what was
/// written): the restart names the pending segment, whose predecessor
/// reads whole, before it serves, and keeps nothing aside. The restarted
/// node rotates on its own at once (its first state record), so a pending
/// segment of its own may be under way while it serves; a clean stop names
/// that one too, and leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_rotations_loses_no_appended_write() -> Result<()> {
    // As in the test above: what the writer had not appended at the kill.
    const LAG: Duration = Duration::from_secs(2);
    let mut pending_seen = 0;
    for round in 0..3 {
        let dir = tempdir("k9rotate")?;
        let launch = Launch::new("k9rotate", dir.path())
            .fsync("interval")
            .conf("server.persist.segment_max_bytes=1024");
        let log = dir.path().join("data/log");
        let run = write_then_kill(launch.start().await?, 8, 40, |acks, t| {
            acks >= 400 && t >= LAG + Duration::from_millis(300)
        })
        .await?;
        let pending: Vec<_> = std::fs::read_dir(&log)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".dkvlog.new"))
            .collect();
        pending_seen += pending.len();
        let node = launch.start().await?;
        let unfinished: Vec<_> = pending.iter().filter(|n| log.join(n).exists()).collect();
        ensure!(
            unfinished.is_empty(),
            "round {round}: the kill's pending segments left: {unfinished:?}"
        );
        let d = dump(&node.connect().await?, false).await?;
        let cutoff = run.killed_at - LAG;
        ensure!(cutoff > run.started_at, "the load ran too briefly");
        ensure!(
            run.check(&d, cutoff)? > 0,
            "nothing was acknowledged before the cutoff"
        );
        let aside: Vec<_> = match std::fs::read_dir(log.join("damaged")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        ensure!(aside.is_empty(), "round {round}: kept aside: {aside:?}");
        ensure!(
            distkv_log::list_segments(&log)?.len() > 10,
            "round {round}: the segments did not rotate"
        );
        node.terminate().await?;
        let left: Vec<_> = std::fs::read_dir(&log)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".new"))
            .collect();
        ensure!(
            left.is_empty(),
            "round {round}: pending segments left: {left:?}"
        );
    }
    eprintln!("pending segments found after the kills: {pending_seen} in 3 rounds");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_kill_9_never_reuses_a_tick() -> Result<()> {
    // `fsync = never` gives the crash the best chance to lose the newest
    // acknowledged changes, and with them the evidence of their ticks.
    let dir = tempdir("ticks")?;
    let launch = Launch::new("ticks", dir.path()).fsync("never");
    let mut seen: Vec<u64> = Vec::new();
    let mut node = launch.start().await?;
    for round in 0..3 {
        let run = write_then_kill(node, 8, 10, |acks, _| acks >= 300).await?;
        seen.extend(run.acks.iter().map(|a| a.tick));
        node = launch.start().await?;
        let c = node.connect().await?;
        let greeting_tick = c.greeting().tick.unwrap_or(0);
        let r = c
            .set_value(&path!["after", round], Value::Int(round), &with_tick())
            .await?;
        let t = chain_tick(&r)?;
        ensure!(
            t > run.max_tick() && t > greeting_tick,
            "round {round}: new write got tick {t}, but {} was acknowledged before the crash (greeting tick {greeting_tick})",
            run.max_tick()
        );
        seen.push(t);
    }
    let n = seen.len();
    seen.sort_unstable();
    seen.dedup();
    ensure!(seen.len() == n, "a tick was used twice");
    Ok(())
}

/// Sets and deletes through four connections: `sets` writes of
/// `[prefix, i % 97]`, then deletes every seventh key. Returns the node's
/// tick afterwards.
async fn mixed_load(node: &NodeProc, prefix: &str, sets: u64) -> Result<u64> {
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let c = node.connect().await?;
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (w..sets).step_by(4) {
                let v = Value::map([("i", Value::uint(i)), ("w", Value::uint(w))]);
                c.set_value(&path![prefix.as_str(), i % 97], v, &with_tick())
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .context("writers stalled")???;
    }
    let c = node.connect().await?;
    for k in (0..97u64).step_by(7) {
        c.delete_value(&path![prefix, k], &with_tick()).await?;
    }
    own_tick(&c).await
}

async fn own_tick(c: &Client) -> Result<u64> {
    let r = c.get_state(&["nodes"]).await?;
    let name = c.greeting().node.clone();
    r.get("nodes")
        .and_then(|n| n.get(&name))
        .and_then(Value::as_u64)
        .with_context(|| format!("no tick for {name} in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_everything_even_with_fsync_never() -> Result<()> {
    let dir = tempdir("sigterm")?;
    let launch = Launch::new("sigterm", dir.path()).fsync("never");
    let node = launch.start().await?;
    let tick = mixed_load(&node, "t", 400).await?;
    let before = dump(&node.connect().await?, true).await?;
    node.terminate().await?;

    let node = launch.start().await?;
    let c = node.connect().await?;
    same_dump("after SIGTERM and restart", &before, &dump(&c, true).await?)?;
    let r = c
        .set_value(&path!["t", "next"], Value::Int(1), &with_tick())
        .await?;
    ensure!(
        chain_tick(&r)? == tick + 1,
        "a clean stop leaves no gap: tick {} after {tick}",
        chain_tick(&r)?
    );
    node.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_retention_keep_the_data_across_a_crash() -> Result<()> {
    const EVERY: u64 = 100;
    let dir = tempdir("snaps")?;
    let launch = Launch::new("snaps", dir.path())
        .fsync("always")
        .conf(&format!("server.persist.snapshot_records={EVERY}"))
        .conf("server.persist.segment_max_bytes=2048")
        .conf("server.persist.retention_max_bytes=0");
    let node = launch.start().await?;
    mixed_load(&node, "s", 1200).await?;
    let before = dump(&node.connect().await?, true).await?;
    let data = dir.path().join("data");

    // The persister writes a snapshot, then removes the older ones and
    // retires segments, after the writes were acknowledged: for a moment a
    // third snapshot is on disk. Poll until the last round has settled.
    let deadline = Instant::now() + Duration::from_secs(30);
    let snaps = loop {
        let snaps = list_snapshots(&data.join("snap"))?;
        if (1..=2).contains(&snaps.len()) {
            break snaps;
        }
        ensure!(
            Instant::now() < deadline,
            "the two newest snapshots are kept: {snaps:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    ensure!(
        snaps[0].0 >= 8 * EVERY,
        "a snapshot about every {EVERY} events: the newest covers {}",
        snaps[0].0
    );
    loop {
        let segs = distkv_log::list_segments(&data.join("log"))?;
        let first = segs.first().context("no log segment left")?;
        if first.first_seq > EVERY {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "segments a snapshot covers were retired, yet the oldest starts at {} ({} segments)",
            first.first_seq,
            segs.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    node.kill9()?;
    let node = launch.start().await?;
    same_dump(
        "after kill -9 with snapshots",
        &before,
        &dump(&node.connect().await?, true).await?,
    )?;
    ensure!(
        node.stderr().contains(".dkvsnap"),
        "recovery did not start from a snapshot:\n{}",
        node.stderr_tail()
    );
    Ok(())
}

/// Asks the node to `save` to `file` (our snapshot format, or DistKV's for
/// a `.dkv` name).
async fn save(c: &Client, file: &std::path::Path) -> Result<()> {
    let path = file.to_str().context("non-UTF-8 temp path")?;
    let r = c.request("save", vec![("path", Value::str(path))]).await?;
    ensure!(r.get("result") == Some(&Value::Bool(true)), "save: {r}");
    ensure!(file.is_file(), "{} not written", file.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_files_load_into_a_fresh_node_with_their_deletions() -> Result<()> {
    let dir = tempdir("load")?;
    // A RAM-only node writes files only where it is told to.
    let src = Launch::new("loadsrc", dir.path())
        .no_data_dir()
        .conf(&format!("server.export.dir={}", dir.path().display()))
        .start()
        .await?;
    let c = src.connect().await?;
    let opts = UpdateOptions::default();
    for i in 0..100i64 {
        c.set_value(&path!["a", i], Value::Int(i), &opts).await?;
    }
    let odd = [
        Value::Float(1.5),
        Value::str("text"),
        Value::Bin(Arc::from(&b"\x00\xffbytes"[..])),
        Value::Array(vec![Value::Int(1), Value::Nil]),
        Value::map([("k", Value::Bool(true))]),
        Value::Nil,
    ];
    for (i, v) in odd.into_iter().enumerate() {
        c.set_value(&path!["b", "c", i as i64], v, &opts).await?;
    }
    for i in 1..=10i64 {
        c.set_value(&path!["a", i], Value::str(&format!("x{i}")), &opts)
            .await?;
    }
    c.delete_value(&path!["a", 5i64], &opts).await?;
    let s1_py = dir.path().join("s1.dkv");
    let s1_snap = dir.path().join("s1.dkvsnap");
    save(&c, &s1_py).await?;
    save(&c, &s1_snap).await?;
    let d1 = dump(&c, false).await?;
    let d1_empty = dump(&c, true).await?;
    ensure!(!d1.contains_key(&path!["a", 5i64].to_string()));

    c.delete_value(&path!["a", 7i64], &opts).await?;
    c.set_value(&path!["a", 200i64], Value::Int(200), &opts)
        .await?;
    c.set_value(&path!["a", 2i64], Value::str("changed"), &opts)
        .await?;
    let s2_snap = dir.path().join("s2.dkvsnap");
    save(&c, &s2_snap).await?;
    let d2 = dump(&c, false).await?;
    let d2_empty = dump(&c, true).await?;
    let src_tick = own_tick(&c).await?;
    drop(c);
    src.terminate().await?;

    // DistKV's format holds values only; ours keeps deletions too.
    let l = Launch::new("load1", dir.path())
        .no_data_dir()
        .load(&s1_py)
        .start()
        .await?;
    same_dump("-l s1.dkv", &d1, &dump(&l.connect().await?, false).await?)?;
    l.terminate().await?;
    let l = Launch::new("load2", dir.path())
        .no_data_dir()
        .load(&s1_snap)
        .start()
        .await?;
    same_dump(
        "-l s1.dkvsnap (with tombstones)",
        &d1_empty,
        &dump(&l.connect().await?, true).await?,
    )?;
    l.terminate().await?;

    // The later snapshot's deletion of a.7 wins over the earlier file's
    // value. Loading as the source node itself, into a data directory: the
    // node resumes its ticks after the loaded ones, and the loaded data are
    // in its own history after a restart without `-l`.
    let launch = Launch::new("loadsrc", dir.path())
        .load(&s1_py)
        .load(&s2_snap);
    let l = launch.start().await?;
    let c = l.connect().await?;
    same_dump("-l s1.dkv -l s2.dkvsnap", &d2, &dump(&c, false).await?)?;
    same_dump(
        "-l s1.dkv -l s2.dkvsnap (with tombstones)",
        &d2_empty,
        &dump(&c, true).await?,
    )?;
    let r = c
        .set_value(&path!["a", "new"], Value::Int(1), &with_tick())
        .await?;
    ensure!(
        chain_tick(&r)? > src_tick,
        "tick {} reused after loading ticks up to {src_tick}",
        chain_tick(&r)?
    );
    let with_new = dump(&c, true).await?;
    drop(c);
    l.terminate().await?;
    let mut plain = launch.clone();
    plain.load.clear();
    let l = plain.start().await?;
    same_dump(
        "restart after loading",
        &with_new,
        &dump(&l.connect().await?, true).await?,
    )?;
    l.terminate().await
}

/// Loading a file that is not ours fails the start with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_garbage_fails_the_start() -> Result<()> {
    let dir = tempdir("garbage")?;
    let bad = dir.path().join("bad.dkv");
    std::fs::write(&bad, b"this is not msgpack")?;
    match Launch::new("garbage", dir.path())
        .no_data_dir()
        .load(&bad)
        .start()
        .await
    {
        Ok(_) => bail!("a node started from a garbage file"),
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(msg.contains("cannot load"), "unexpected failure: {msg}");
        }
    }
    Ok(())
}

/// The writer keeps two snapshots so that a damaged newest one can be
/// skipped, and retention keeps the log the older one needs (the start
/// would otherwise fail with "event log gap").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_snapshot_falls_back_to_the_older_one() -> Result<()> {
    let dir = tempdir("badsnap")?;
    let launch = Launch::new("badsnap", dir.path())
        .fsync("always")
        .conf("server.persist.snapshot_records=100")
        .conf("server.persist.segment_max_bytes=2048")
        .conf("server.persist.retention_max_bytes=0");
    let node = launch.start().await?;
    mixed_load(&node, "s", 1200).await?;
    let before = dump(&node.connect().await?, true).await?;
    node.terminate().await?;

    let snaps = list_snapshots(&dir.path().join("data/snap"))?;
    ensure!(snaps.len() == 2, "two snapshots kept: {snaps:?}");
    // Bit rot in the middle of the newest snapshot: its CRC fails.
    let newest = &snaps[0].1;
    let mut bytes = std::fs::read(newest)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(newest, &bytes)?;

    let node = launch.start().await?;
    same_dump(
        "recovered past a damaged snapshot",
        &before,
        &dump(&node.connect().await?, true).await?,
    )?;
    node.terminate().await
}

/// A crash in the middle of a block leaves a torn tail; recovery cuts it
/// off, so that what is written after the restart is not hidden behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_tail_is_cut_and_later_writes_survive() -> Result<()> {
    let dir = tempdir("torn")?;
    let launch = Launch::new("torn", dir.path()).fsync("always");
    let node = launch.start().await?;
    mixed_load(&node, "t", 200).await?;
    let before = dump(&node.connect().await?, true).await?;
    node.terminate().await?;

    let segs = distkv_log::list_segments(&dir.path().join("data/log"))?;
    let newest = &segs.last().context("no segment")?.path;
    let mut f = std::fs::OpenOptions::new().append(true).open(newest)?;
    std::io::Write::write_all(&mut f, &[0x5a; 37])?;
    drop(f);

    let node = launch.start().await?;
    let c = node.connect().await?;
    same_dump("after cutting a torn tail", &before, &dump(&c, true).await?)?;
    // What was cut off is kept.
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("data/log/damaged"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    ensure!(
        kept.len() == 1 && std::fs::read(&kept[0])? == [0x5a; 37],
        "the cut bytes are not kept: {kept:?}"
    );
    for i in 0..20i64 {
        c.set_value(&path!["after", i], Value::Int(i), &with_tick())
            .await?;
    }
    let expected = dump(&c, true).await?;
    drop(c);
    node.kill9()?;
    let node = launch.start().await?;
    same_dump(
        "writes after the cut",
        &expected,
        &dump(&node.connect().await?, true).await?,
    )?;
    node.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_accepts_the_ticks_a_crash_skipped_but_not_a_lost_segment() -> Result<()> {
    let dir = tempdir("audit")?;
    let launch =
        Launch::new("crashnode", dir.path()).conf("server.persist.segment_max_bytes=16384");
    let node = launch.start().await?;
    let run = write_then_kill(node, 4, 1000, |acks, _| acks >= 3000).await?;
    let node = launch.start().await?;
    let c = node.connect().await?;
    let r = c
        .set_value(&path!["after"], Value::Int(1), &with_tick())
        .await?;
    let resumed = chain_tick(&r)?;
    ensure!(
        resumed > run.max_tick() + 1,
        "no ticks were skipped: resumed at {resumed}"
    );
    // Enough history after the restart for several segments, whatever the
    // crashed run had written when it was killed (a clean stop writes all).
    for i in 0..3000 {
        c.set_value(&path!["after", i], Value::Int(i), &UpdateOptions::default())
            .await?;
    }
    node.terminate().await?;

    let data = dir.path().join("data");
    let dirs = [data.clone()];
    let report = distkv_replay::audit::audit(&dirs, true)?;
    ensure!(
        report.is_clean(),
        "a crashed and recovered node's files fail the audit:\n{}",
        report.to_text()
    );
    ensure!(
        report
            .notes
            .iter()
            .any(|n| n.contains("declared never used") && n.contains(&format!("-{}", resumed - 1))),
        "the audit does not explain the skipped ticks:\n{}",
        report.to_text()
    );

    // A segment lost in the middle is real damage, and still found.
    let mut segments: Vec<_> = std::fs::read_dir(data.join("log"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    segments.sort();
    ensure!(segments.len() >= 3, "only {} segments", segments.len());
    std::fs::remove_file(&segments[segments.len() / 2])?;
    let report = distkv_replay::audit::audit(&dirs, true)?;
    ensure!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, distkv_replay::audit::Problem::Missing { .. })),
        "a lost segment passes the audit:\n{}",
        report.to_text()
    );
    Ok(())
}

/// One flipped byte in the newest segment, with fsynced, acknowledged
/// writes after it: not a torn tail. The node refuses to start, naming the
/// file, the offset and what to do, and changes nothing. Started with
/// `recovery: salvage` it keeps every write outside the damaged block, and
/// the damaged file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_refuses_the_start_and_salvage_keeps_every_other_write() -> Result<()> {
    let dir = tempdir("flip")?;
    let launch = Launch::new("flip", dir.path()).fsync("always");
    let node = launch.start().await?;
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let c = node.connect().await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..750u64 {
                c.set_value(&path!["flip", w, i], Value::uint(i), &with_tick())
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .context("writers stalled")???;
    }
    let before = dump(&node.connect().await?, true).await?;
    ensure!(before.len() >= 3000, "only {} entries", before.len());
    node.terminate().await?;

    // A byte at 10 % of the newest segment, and the writes of its block.
    let log_dir = dir.path().join("data/log");
    let newest = distkv_log::list_segments(&log_dir)?
        .pop()
        .context("no segment")?;
    let records = distkv_log::SegmentReader::open(&newest.path, distkv_log::RecoveryMode::Strict)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut bytes = std::fs::read(&newest.path)?;
    let at = bytes.len() / 10;
    let block = records
        .iter()
        .map(|r| r.offset)
        .filter(|&o| o as usize <= at)
        .max()
        .context("no block before the flip")?;
    ensure!(
        records.iter().any(|r| r.offset > block),
        "the flip hit the last block"
    );
    // A damaged length field alone is repaired from the block's CRC.
    let lost: Vec<String> = if at < block as usize + 4 {
        Vec::new()
    } else {
        records
            .iter()
            .filter(|r| r.offset == block)
            .filter_map(|r| match &r.record {
                distkv_log::LogRecord::Event { event, .. } => Some(event.path.to_string()),
                _ => None,
            })
            .collect()
    };
    bytes[at] ^= 0x40;
    std::fs::write(&newest.path, &bytes)?;

    let msg = match launch.start().await {
        Ok(_) => bail!("a node started on a log with damage in the middle"),
        Err(e) => format!("{e:#}"),
    };
    let name = newest
        .path
        .file_name()
        .context("no name")?
        .to_string_lossy();
    for want in [
        name.as_ref(),
        &format!("byte {block}"),
        "not a torn tail",
        "server.persist.recovery=salvage",
    ] {
        ensure!(msg.contains(want), "{want:?} missing from:\n{msg}");
    }
    ensure!(
        std::fs::read(&newest.path)? == bytes,
        "the refused start changed the file"
    );

    eprintln!("the refusal: {msg}");
    let node = launch
        .clone()
        .conf("server.persist.recovery=salvage")
        .start()
        .await?;
    let mut want = before.clone();
    for p in &lost {
        ensure!(want.remove(p).is_some(), "{p} was not written");
    }
    same_dump(
        "after the salvage",
        &want,
        &dump(&node.connect().await?, true).await?,
    )?;
    let log = node.stderr();
    ensure!(
        log.contains("ERROR") && log.contains("event log salvaged"),
        "no error names the salvage:\n{}",
        node.stderr_tail()
    );
    let kept: Vec<_> = std::fs::read_dir(log_dir.join(distkv_log::DAMAGED_DIR))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    ensure!(
        kept.len() == 1 && std::fs::read(&kept[0])? == bytes,
        "the damaged file is not kept as it was: {kept:?}"
    );
    eprintln!(
        "flip at byte {at} of {}: block at {block}, {} write(s) lost; the node said:\n{}",
        bytes.len(),
        lost.len(),
        log.lines()
            .filter(|l| l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    node.terminate().await
}
