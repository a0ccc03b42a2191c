//! `history` from the history index against the full replay: the same
//! changes, whatever shape the index is in.
//!
//! The data directories are written by the node's own writer thread
//! (`distkv_node::persist::durable`, which keeps the index current), or
//! directly with the segment writer for logs a single node never writes
//! itself (stale, losing and duplicate events from several writers, which
//! the state machine drops).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use distkv_core::persist::lock::once_unlocked;
use distkv_core::persist::recover::{recover, DurableConfig};
use distkv_log::writer::{FsyncPolicy, LogWriter, Now, WriterConfig};
use distkv_log::LogLimits;
use distkv_model::{path, Chain, NodeName, Path as KvPath, UpdateEvent, Value};
use distkv_node::commit::SharedState;
use distkv_node::persist::durable::{self, StateHost};
use distkv_replay::engine::{NoObserver, Replay, Start, Target, LIMITS};
use distkv_replay::history::{history_indexed, history_with, Change, HistoryReport, UseIndex};
use distkv_replay::source::inventory;

/// A seeded xorshift generator (no dependency for a few numbers).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn key(i: u64) -> KvPath {
    match i % 3 {
        0 => path!["a", i % 5],
        1 => path!["a", i % 5, "x"],
        _ => path!["b", i % 4],
    }
}

/// What a history says, comparably.
fn summary(r: &HistoryReport) -> Vec<String> {
    r.changes.iter().map(Change::to_text).collect()
}

/// The keys asked about: every key, the subtrees, and one never written.
fn questions() -> Vec<(KvPath, bool)> {
    let mut q: Vec<(KvPath, bool)> = (0..15).map(|i| (key(i), false)).collect();
    q.extend([
        (path!["a"], true),
        (path!["b"], true),
        (path!["a", 2u64], true),
        (path!["nowhere"], false),
        (KvPath::root(), true),
    ]);
    q
}

/// Asks every question with and without the index; the answers must be
/// equal and the index must have answered. Returns the notes of the
/// first indexed answer and the number of changes in all answers.
fn same_answers(dir: &Path) -> Result<(Vec<String>, usize)> {
    let inputs = [dir.to_path_buf()];
    let mut first_notes = None;
    let mut total = 0;
    for (k, recursive) in questions() {
        let full = history_with(&inputs, &k, recursive, true, UseIndex::Never)?;
        ensure!(full.damage.is_empty(), "{:?}", full.damage);
        let indexed = match history_indexed(&inputs, &k, recursive)? {
            Ok(r) => r,
            Err(why) => anyhow::bail!("the index did not answer for {k}: {why}"),
        };
        ensure!(
            summary(&indexed) == summary(&full),
            "{k} (recursive {recursive}):\nindexed {:#?}\nfull {:#?}",
            summary(&indexed),
            summary(&full)
        );
        ensure!(
            indexed.changes == full.changes,
            "{k}: same text, other details"
        );
        total += full.changes.len();
        first_notes.get_or_insert(indexed.notes);
    }
    Ok((first_notes.unwrap_or_default(), total))
}

/// Runs the node's writer thread on `dir` while `f` changes the state.
fn session(dir: &Path, f: impl FnOnce(&SharedState, &Arc<durable::Durability>)) -> Result<()> {
    let mut c = DurableConfig::new(dir);
    c.history_index = true;
    c.fsync = FsyncPolicy::Never;
    c.segment_bytes = 2048;
    c.snapshot_records = 150;
    c.retention.max_total_bytes = Some(0);
    c.retention.max_age = Some(Duration::ZERO);
    let rec = once_unlocked(|| recover("n1", c.clone(), LogLimits::default(), 1))?;
    let (mut state, _, wr) = rec.split();
    state.make_ready();
    let host = SharedState::new(state);
    let (d, h) = durable::start(host.clone(), wr)?;
    f(&host, &d);
    d.request_stop();
    h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    Ok(())
}

/// Local writes and deletions, and other nodes' changes, some concurrent
/// with local ones (they win or lose a conflict).
fn busy(host: &SharedState, d: &Arc<durable::Durability>, seed: u64, n: u64) {
    let mut rng = Rng(seed);
    for i in 0..n {
        let k = key(rng.below(15));
        host.with_state(|st| {
            match rng.below(6) {
                0 => {
                    let _ =
                        durable::with_reserved_ticks(Some(d), st, |st| st.local_change(&k, None));
                }
                1 => {
                    // Another node's change built on what it last saw here
                    // (maybe nothing): it descends, or conflicts.
                    let base = if rng.below(2) == 0 {
                        st.entry(&k).and_then(|e| e.chain_cloned())
                    } else {
                        None
                    };
                    let other = NodeName::from(format!("n{}", 2 + rng.below(2)));
                    let ev = UpdateEvent {
                        path: k.clone(),
                        chain: Chain::attach(other, seed * 10_000 + i + 1, base.as_ref()),
                        value: Some(Value::uint(rng.below(1000))),
                        tock: st.tock().peek() + rng.below(3),
                    };
                    st.apply(ev);
                }
                _ => {
                    let v = Some(Value::uint(i));
                    let _ = durable::with_reserved_ticks(Some(d), st, |st| {
                        st.local_change(&k, v.clone())
                    });
                }
            }
        });
        d.wake();
        if i % 8 == 7 {
            // Let the writer catch up now and then: many small blocks,
            // rotations, snapshots and retention, as a node under a
            // trickle of writes has.
            let upto = host.with_state(|st| st.log().next_seq() - 1);
            let durable = d.subscribe();
            let deadline = Instant::now() + Duration::from_secs(20);
            while *durable.borrow() < upto {
                assert!(Instant::now() < deadline, "the writer did not catch up");
                std::thread::yield_now();
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

fn has_note(notes: &[String], what: &str) -> bool {
    notes.iter().any(|n| n.contains(what))
}

#[test]
fn the_index_the_node_keeps_answers_as_the_full_replay_whatever_befalls_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("n1");
    session(&dir, |h, d| busy(h, d, 7, 400))?;
    ensure!(dir.join("index").is_dir(), "the node made no index");
    let segs = distkv_log::list_segments(&dir.join("log"))?;
    ensure!(segs.len() >= 2, "rotation: {} segments", segs.len());
    ensure!(
        segs[0].first_seq > 1,
        "retention removed the oldest segments"
    );

    // As the node left it: used as it is (a snapshot stands in for the
    // segments retention removed).
    let (notes, changes) = same_answers(&dir)?;
    ensure!(changes > 100, "{changes} changes");
    ensure!(
        has_note(&notes, "answered from the history index"),
        "{notes:?}"
    );
    ensure!(
        !has_note(&notes, "brought up to date"),
        "the node kept it current: {notes:?}"
    );
    ensure!(has_note(&notes, "starts from snapshot"), "{notes:?}");

    // Older than the segments: more was written after this copy.
    let old = tmp.path().join("old-index");
    copy_dir(&dir.join("index"), &old)?;
    session(&dir, |h, d| busy(h, d, 8, 300))?;
    std::fs::remove_dir_all(dir.join("index"))?;
    copy_dir(&old, &dir.join("index"))?;
    let (notes, _) = same_answers(&dir)?;
    ensure!(has_note(&notes, "brought up to date"), "{notes:?}");

    // Deleted.
    std::fs::remove_dir_all(dir.join("index"))?;
    let (notes, _) = same_answers(&dir)?;
    ensure!(has_note(&notes, "brought up to date"), "{notes:?}");

    // Its files damaged: garbage in the middle of every file.
    for e in std::fs::read_dir(dir.join("index"))? {
        let p = e?.path();
        if p.is_file() {
            let mut b = std::fs::read(&p)?;
            let mid = b.len() / 2;
            for x in b.iter_mut().skip(mid).take(64) {
                *x ^= 0x5a;
            }
            std::fs::write(&p, &b)?;
        }
    }
    same_answers(&dir)?;

    // Nothing but garbage.
    std::fs::remove_dir_all(dir.join("index"))?;
    std::fs::create_dir(dir.join("index"))?;
    for name in ["db", "conf", "snap.0000000000000000"] {
        std::fs::write(dir.join("index").join(name), b"\x00\xffnot sled at all\x07")?;
    }
    let (notes, _) = same_answers(&dir)?;
    ensure!(has_note(&notes, "history index rebuilt"), "{notes:?}");

    // The node starts on a damaged index too, and keeps it current again.
    std::fs::write(dir.join("index").join("db"), b"garbage")?;
    session(&dir, |h, d| busy(h, d, 9, 100))?;
    let (notes, _) = same_answers(&dir)?;
    ensure!(
        !has_note(&notes, "rebuilt"),
        "the node repaired it: {notes:?}"
    );
    Ok(())
}

/// Writes `events` as node n1's log, as they come (none dropped), in
/// groups of `group`, rotating every `rotate` events.
fn write_raw(dir: &Path, events: &[UpdateEvent], group: usize, rotate: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join("snap"))?;
    distkv_core::persist::meta::Meta {
        node: "n1".into(),
        reserved_tick: 0,
    }
    .store(dir)?;
    let mut cfg = WriterConfig::new("n1");
    cfg.fsync = FsyncPolicy::Never;
    let now = |i: usize| Now {
        wall_ms: 1_700_000_000_000 + i as u64,
        mono_ms: i as u64,
    };
    let mut w = LogWriter::open(dir.join("log"), cfg, now(0))?;
    for (i, e) in events.iter().enumerate() {
        w.append_event(now(i).wall_ms, e)?;
        if i % group == group - 1 {
            w.commit(now(i))?;
        }
        if i % rotate == rotate - 1 {
            w.rotate();
        }
    }
    w.close(now(events.len()))?;
    Ok(dir.to_path_buf())
}

#[test]
fn stale_losing_and_duplicate_events_of_many_writers_are_dropped_alike() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut rng = Rng(0x5eed);
    let writers: Vec<NodeName> = (0..4).map(|i| NodeName::from(format!("w{i}"))).collect();
    let mut ticks = [0u64; 4];
    // What each writer last saw of each key (their views differ: conflicts).
    let mut seen: Vec<Vec<Option<Chain>>> = vec![vec![None; 15]; 4];
    let mut sent: Vec<UpdateEvent> = Vec::new();
    let mut tock = 0;
    for _ in 0..3000 {
        let w = rng.below(4) as usize;
        let k = rng.below(15) as usize;
        tock += 1 + rng.below(2);
        ticks[w] += 1;
        let chain = Chain::attach(writers[w].clone(), ticks[w], seen[w][k].as_ref());
        // Writers learn of others' changes now and then.
        if rng.below(3) == 0 {
            for other in seen.iter_mut() {
                other[k] = Some(chain.clone());
            }
        } else {
            seen[w][k] = Some(chain.clone());
        }
        let ev = UpdateEvent {
            path: key(k as u64),
            chain,
            value: (rng.below(7) != 0).then(|| Value::uint(rng.below(100))),
            // Equal tocks now and then: the tie-break decides.
            tock: tock - rng.below(2),
        };
        sent.push(ev);
    }
    // Delivered out of order (an older change after one built on it: stale),
    // and some twice (duplicates).
    let mut log = sent.clone();
    for i in 1..log.len() {
        if rng.below(4) == 0 {
            log.swap(i - 1, i);
        }
    }
    for i in 0..200 {
        let at = rng.below(log.len() as u64) as usize;
        log.insert(at, sent[(i * 13) % sent.len()].clone());
    }
    let dir = write_raw(&tmp.path().join("n1"), &log, 7, 500)?;
    let (notes, changes) = same_answers(&dir)?;
    ensure!(
        has_note(&notes, "brought up to date"),
        "built on first use: {notes:?}"
    );
    // Most events change their entry, but many do not.
    let per_key: usize = (0..15)
        .map(|i| {
            history_with(
                std::slice::from_ref(&dir),
                &key(i),
                false,
                true,
                UseIndex::Never,
            )
            .map(|r| r.changes.len())
        })
        .sum::<Result<usize, _>>()?;
    ensure!(
        per_key > 1000 && per_key < log.len() - 300,
        "{per_key} of {} events stored",
        log.len()
    );
    ensure!(changes > per_key);
    Ok(())
}

#[test]
fn a_running_node_or_several_inputs_make_history_replay_with_a_note() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("n1");
    session(&dir, |h, d| busy(h, d, 3, 50))?;
    // Several inputs: merged by tock, which the index does not do.
    let r = history_with(
        &[dir.clone(), dir.join("log")],
        &path!["a"],
        true,
        true,
        UseIndex::Build,
    )?;
    ensure!(
        has_note(&r.notes, "history index not used (more than one input)"),
        "{:?}",
        r.notes
    );
    // The index held open elsewhere (as by a running node): replayed.
    let (_ix, _) = distkv_index::HistoryIndex::open(&dir.join("index"), &dir.join("log"), "n1")?;
    let r = history_with(
        std::slice::from_ref(&dir),
        &path!["a"],
        true,
        true,
        UseIndex::Build,
    )?;
    ensure!(
        has_note(&r.notes, "history index not used"),
        "{:?}",
        r.notes
    );
    let full = history_with(
        std::slice::from_ref(&dir),
        &path!["a"],
        true,
        true,
        UseIndex::Never,
    )?;
    ensure!(summary(&r) == summary(&full));
    Ok(())
}

/// The state `restore` writes for `target`, as a digest.
fn restored(dir: &Path, out: &Path, target: Target) -> Result<u128> {
    distkv_replay::restore::restore(&[dir.to_path_buf()], out, target, None, true)?;
    let (st, _) = distkv_core::persist::snap::load(out, "n1", LIMITS)?;
    Ok(st.digest())
}

#[test]
fn restore_starts_at_the_block_the_index_names_and_restores_the_same_state() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("n1");
    session(&dir, |h, d| busy(h, d, 11, 400))?;
    let all = history_with(
        std::slice::from_ref(&dir),
        &KvPath::root(),
        true,
        true,
        UseIndex::Never,
    )?;
    let tocks: Vec<u64> = all.changes.iter().map(|c| c.tock).collect();
    ensure!(tocks.len() > 200);
    let mut seeked = 0;
    for (i, t) in tocks.iter().step_by(37).enumerate() {
        let target = Target::Tock(*t);
        let inv = inventory(std::slice::from_ref(&dir))?;
        let mut r = Replay::prepare(&inv, target.clone(), Start::Latest, false, None, true)?;
        r.run(&mut NoObserver, "restore")?;
        let header_len = 40;
        if r.seeks()[0].is_some_and(|o| o > header_len) {
            seeked += 1;
        }
        let with = restored(&dir, &tmp.path().join(format!("a{i}")), target.clone())?;
        std::fs::rename(dir.join("index"), tmp.path().join("aside"))?;
        let without = restored(&dir, &tmp.path().join(format!("b{i}")), target)?;
        std::fs::rename(tmp.path().join("aside"), dir.join("index"))?;
        ensure!(with == without, "tock {t}: the seek changed the state");
        ensure!(with == r.state.digest(), "tock {t}");
    }
    ensure!(
        seeked > 0,
        "the index never let a restore skip a segment's start"
    );
    Ok(())
}

#[test]
fn the_command_line_answers_alike_with_and_without_the_index() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("n1");
    session(&dir, |h, d| busy(h, d, 5, 120))?;
    let run = |extra: &[&str]| -> Result<(String, String)> {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_distkv-replay"))
            .args(["--quiet", "--format", "json", "history"])
            .arg(&dir)
            .args(["--key", "a", "-r"])
            .args(extra)
            .output()?;
        ensure!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Ok((
            String::from_utf8(o.stdout)?,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ))
    };
    // The node kept an index: used without asking, and alike.
    let (indexed, notes) = run(&[])?;
    let (replayed, replay_notes) = run(&["--no-index"])?;
    ensure!(indexed == replayed, "{indexed}\n---\n{replayed}");
    ensure!(indexed.len() > 1000, "{indexed}");
    ensure!(notes.contains("answered from the history index"), "{notes}");
    ensure!(!replay_notes.contains("history index"), "{replay_notes}");
    // A damaged index is rebuilt, never trusted; the answer is the same.
    for f in walk(&dir.join("index"))? {
        let len = std::fs::metadata(&f)?.len().max(64) as usize;
        std::fs::write(&f, (0..len).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>())?;
    }
    let (rebuilt, notes) = run(&[])?;
    ensure!(rebuilt == replayed, "{rebuilt}\n---\n{replayed}");
    ensure!(notes.contains("history index rebuilt"), "{notes}");
    ensure!(notes.contains("answered from the history index"), "{notes}");
    // No index: replayed, and none is built unless asked with --index.
    std::fs::remove_dir_all(dir.join("index"))?;
    let (plain, notes) = run(&[])?;
    ensure!(
        plain == replayed && !notes.contains("history index"),
        "{notes}"
    );
    ensure!(!dir.join("index").exists(), "an index was built unasked");
    let (forced, notes) = run(&["--index"])?;
    ensure!(forced == replayed, "{forced}\n---\n{replayed}");
    ensure!(notes.contains("answered from the history index"), "{notes}");
    ensure!(dir.join("index").is_dir());
    Ok(())
}

fn walk(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
