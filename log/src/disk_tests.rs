//! Scenario tests of the segment files: writer, reader, recovery, retention.
//!
//! Every test works in its own temporary directory with small limits and a
//! clock it controls (plain `u64` milliseconds), so the suite is fast and
//! deterministic.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use distkv_model::{path, Chain, NodeName, NodeSet, UpdateEvent, Value};
use proptest::prelude::*;

use crate::block::{next_record, BlockReader, Next};
use crate::segment::{pending_segment_file_name, segment_file_name};
use crate::*;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

type TestResult = BoxResult<()>;

/// A log's records, its open segment's path and that segment's bytes.
type Fixture = (Vec<LogRecord>, PathBuf, Vec<u8>);

const NODE: &str = "n1";

fn event(i: u64) -> UpdateEvent {
    UpdateEvent {
        path: path!["test", "key", i % 7],
        chain: Chain::single(NodeName::from(NODE), i),
        value: Some(Value::str(&format!("value number {i}"))),
        tock: i,
    }
}

fn state(seq: Seq, time_ms: u64) -> LogRecord {
    let mut known = NodeSet::default();
    known.insert(&NodeName::from(NODE), seq);
    LogRecord::State {
        seq,
        time_ms,
        nodes: vec![
            (NodeName::from(NODE), Some(seq)),
            (NodeName::from("n2"), None),
        ],
        known,
        deleted: NodeSet::default(),
        skipped: Default::default(),
    }
}

/// The event record at position `seq`.
fn record(seq: Seq) -> LogRecord {
    LogRecord::Event {
        seq,
        time_ms: 1000 + seq,
        event: event(seq),
    }
}

/// The records of seqs 1 to `n`, as [`commit_group`] writes them.
fn records(n: Seq) -> Vec<LogRecord> {
    (1..=n).map(record).collect()
}

fn is_event(r: &LogRecord) -> bool {
    matches!(r, LogRecord::Event { .. })
}

fn config() -> WriterConfig {
    WriterConfig {
        fsync: FsyncPolicy::Never,
        max_segment_bytes: 1 << 20,
        max_segment_age: Duration::from_secs(3600),
        compress_min_bytes: 256,
        ..WriterConfig::new(NODE)
    }
}

fn read_all(dir: &Path) -> Result<Vec<LogRecord>, LogError> {
    LogReader::open(dir, 0)?.collect()
}

fn segments(dir: &Path) -> Result<Vec<SegmentInfo>, LogError> {
    list_segments(dir)
}

/// Appends `n` events (starting at the writer's next seq) and commits them
/// as one group at `now`.
fn commit_group(w: &mut LogWriter, n: u64, now: u64) -> Result<CommitInfo, LogError> {
    for _ in 0..n {
        w.append(&record(w.next_seq()))?;
    }
    w.commit(Now::at(now))
}

/// As [`commit_group`], with a state record after the events.
fn commit_mixed(w: &mut LogWriter, n: u64, now: u64) -> Result<CommitInfo, LogError> {
    for _ in 0..n {
        w.append(&record(w.next_seq()))?;
    }
    w.append(&state(w.next_seq() - 1, now))?;
    w.commit(Now::at(now))
}

#[test]
fn records_round_trip_across_rotation() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        max_segment_bytes: 400,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path(), cfg, Now::at(0))?;
    let mut written = Vec::new();
    for g in 0..30u64 {
        // Some groups start with a state record: after a rotation it is the
        // segment's first record, with seq first_seq - 1.
        if g % 3 == 0 {
            let r = state(w.next_seq() - 1, g);
            w.append(&r)?;
            written.push(r);
        }
        for _ in 0..(g % 4 + 1) {
            let r = record(w.next_seq());
            w.append(&r)?;
            written.push(r);
        }
        w.commit(Now::at(g))?;
    }
    w.close(Now::at(100))?;
    let segs = segments(tmp.path())?;
    assert!(segs.len() >= 4, "only {} segments", segs.len());
    for pair in segs.windows(2) {
        assert!(pair[0].first_seq < pair[1].first_seq);
    }
    assert_eq!(read_all(tmp.path())?, written);
    // From the middle of a middle segment.
    let from = segs[2].first_seq + 1;
    let tail: Vec<_> = LogReader::open(tmp.path(), from)?.collect::<Result<_, _>>()?;
    let want: Vec<_> = written
        .iter()
        .filter(|r| r.seq() >= from)
        .cloned()
        .collect();
    assert_eq!(tail, want);
    // Past the end: nothing, and the reader says where the log ends.
    let mut past = LogReader::open(tmp.path(), 1000)?;
    assert!(past.next().is_none());
    let events = written.iter().filter(|r| is_event(r)).count() as u64;
    assert_eq!(past.next_seq(), Some(events + 1));
    Ok(())
}

#[test]
fn group_commit_writes_one_block() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    let header_len = fs::metadata(w.segment_path())?.len();
    for _ in 0..10 {
        w.append_event(5, &event(w.next_seq()))?;
    }
    assert_eq!(w.pending_records(), 10);
    let info = w.commit(Now::at(5))?;
    assert_eq!(info.records, 10);
    assert_eq!(info.first_seq, 1);
    assert_eq!(w.stats().blocks, 1);
    assert_eq!(w.written_seq(), 11);
    // Nothing pending: no block.
    assert_eq!(w.commit(Now::at(6))?.records, 0);
    assert_eq!(w.stats().blocks, 1);
    let path = w.segment_path().to_path_buf();
    drop(w);
    assert_eq!(fs::metadata(&path)?.len(), header_len + info.bytes);
    let mut r = BlockReader::open(&path)?;
    let Next::Block { raw, .. } = r.next_block()? else {
        return Err("no block".into());
    };
    let mut pos = 0;
    let mut n = 0;
    while let Some(rec) = next_record(&raw, &mut pos) {
        rec?;
        n += 1;
    }
    assert_eq!(n, 10);
    assert!(matches!(r.next_block()?, Next::End));
    Ok(())
}

#[test]
fn big_groups_are_compressed_and_small_ones_stay_raw() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    let small = commit_group(&mut w, 1, 0)?;
    assert!(!small.compressed);
    let big = commit_group(&mut w, 40, 0)?;
    assert!(big.compressed);
    assert_eq!(w.stats().compressed_blocks, 1);
    w.close(Now::at(0))?;
    assert_eq!(read_all(tmp.path())?, records(41));
    Ok(())
}

#[test]
fn fsync_policy_decisions_follow_the_callers_clock() -> TestResult {
    let p = FsyncPolicy::Interval(Duration::from_millis(1000));
    assert!(!p.due(0, 999));
    assert!(p.due(0, 1000));
    assert!(
        !p.due(5000, 10),
        "a clock going backwards never forces a sync"
    );
    assert!(FsyncPolicy::Always.due(0, 0));
    assert!(!FsyncPolicy::Never.due(0, u64::MAX));
    assert_eq!(FsyncPolicy::default(), p);

    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        fsync: p,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path().join("interval"), cfg, Now::at(0))?;
    assert_eq!(w.sync_deadline(), None, "nothing written yet");
    assert!(!commit_group(&mut w, 1, 100)?.synced);
    assert_eq!(w.sync_deadline(), Some(1000));
    assert!(!w.sync_if_due(Now::at(999))?);
    assert!(!commit_group(&mut w, 1, 999)?.synced);
    assert!(commit_group(&mut w, 1, 1000)?.synced);
    assert_eq!(w.sync_deadline(), None);
    assert!(!commit_group(&mut w, 1, 1200)?.synced);
    // Idle: the caller's timer fires at the deadline.
    assert_eq!(w.sync_deadline(), Some(2000));
    assert!(!w.sync_if_due(Now::at(1999))?);
    assert!(w.sync_if_due(Now::at(2000))?);
    assert!(!w.sync_if_due(Now::at(5000))?, "clean: nothing to sync");
    assert_eq!(w.stats().syncs, 2);

    let always = WriterConfig {
        fsync: FsyncPolicy::Always,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path().join("always"), always, Now::at(0))?;
    for t in 0..3 {
        assert!(commit_group(&mut w, 2, t)?.synced);
    }
    assert_eq!(w.stats().syncs, 3);
    assert_eq!(w.sync_deadline(), None);

    let mut w = LogWriter::open(tmp.path().join("never"), config(), Now::at(0))?;
    for t in 0..3 {
        assert!(!commit_group(&mut w, 2, t * 10_000)?.synced);
    }
    assert!(!w.sync_if_due(Now::at(1 << 40))?);
    assert_eq!(w.stats().syncs, 0);
    w.sync(Now::at(0))?;
    assert_eq!(w.stats().syncs, 1);
    Ok(())
}

#[test]
fn rotation_by_size_starts_a_segment_before_the_commit() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        max_segment_bytes: 300,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path(), cfg, Now::at(0))?;
    let first = w.segment_path().to_path_buf();
    let mut rotated_at = None;
    for _ in 0..20 {
        let len = fs::metadata(w.segment_path())?.len();
        let info = commit_group(&mut w, 1, 0)?;
        assert_eq!(info.rotated, len >= 300, "len {len}");
        if info.rotated {
            rotated_at = Some(info.first_seq);
            break;
        }
    }
    let Some(seq) = rotated_at else {
        return Err("never rotated".into());
    };
    assert_ne!(w.segment_path(), first);
    assert_eq!(
        w.segment_path().file_name(),
        Some(segment_file_name(seq).as_ref())
    );
    assert_eq!(read_segment_header(w.segment_path())?.first_seq, seq);
    assert_eq!(w.stats().rotations, 1);
    Ok(())
}

#[test]
fn rotation_by_age_follows_the_callers_clock() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        max_segment_age: Duration::from_secs(60),
        ..config()
    };
    let mut w = LogWriter::open(tmp.path(), cfg, Now::at(1_000))?;
    assert!(!commit_group(&mut w, 2, 1_000)?.rotated);
    assert!(!commit_group(&mut w, 2, 60_999)?.rotated);
    let info = commit_group(&mut w, 2, 61_000)?;
    assert!(info.rotated);
    assert_eq!(read_segment_header(w.segment_path())?.created_ms, 61_000);
    assert!(!commit_group(&mut w, 2, 61_001)?.rotated);
    w.close(Now::at(61_001))?;
    assert_eq!(segments(tmp.path())?.len(), 2);
    assert_eq!(read_all(tmp.path())?.len(), 8);
    Ok(())
}

/// A writer under `Interval(1 s)` whose fsyncs run on its own thread.
fn background_sync_writer(dir: &Path) -> Result<LogWriter, LogError> {
    let cfg = WriterConfig {
        fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        sync_in_background: true,
        ..config()
    };
    LogWriter::open(dir, cfg, Now::at(0))
}

#[test]
fn a_slow_background_fsync_holds_back_no_commit() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = background_sync_writer(tmp.path())?;
    let hold = w.syncer().ok_or("no fsync thread")?.hold();
    let disk_busy = hold.lock().map_err(|_| "poisoned")?;
    assert!(!commit_group(&mut w, 1, 999)?.synced);
    assert!(
        commit_group(&mut w, 1, 1_000)?.synced,
        "an fsync starts on time"
    );
    // The fsync cannot finish; commits go on, to the file, and one that
    // finds an fsync due while it runs leaves it for a moment later.
    for now in [1_500, 2_000, 2_500] {
        let info = commit_group(&mut w, 2, now)?;
        assert_eq!((info.records, info.synced), (2, false), "{info:?}");
    }
    assert_eq!(
        read_all(tmp.path())?.len(),
        8,
        "written while the fsync runs"
    );
    assert_eq!(w.sync_deadline(), Some(2_500 + SYNC_RETRY_MS));
    assert_eq!(w.stats().syncs, 1);
    drop(disk_busy);
    let syncer = w.syncer().ok_or("no fsync thread")?;
    assert!(matches!(syncer.wait(), Some(Ok(()))));
    assert!(
        w.sync_if_due(Now::at(2_500 + SYNC_RETRY_MS))?,
        "the due fsync starts"
    );
    assert_eq!(w.stats().syncs, 2);
    assert_eq!(w.sync_deadline(), None, "nothing written since");
    // An fsync asked for now waits for that one, which covers everything.
    w.sync(Now::at(2_520))?;
    assert_eq!(w.stats().syncs, 2);
    w.close(Now::at(2_600))?;
    assert_eq!(read_all(tmp.path())?.len(), 8);
    Ok(())
}

/// `sync_soon` starts an fsync out of the policy's turn without waiting
/// for it, after a running one if need be; `synced_seq` rises only once
/// one that covers the records is known to be done.
#[test]
fn an_fsync_asked_for_soon_is_known_done_by_the_seq_it_covers() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = background_sync_writer(tmp.path())?;
    let first = w.next_seq();
    assert_eq!(w.synced_seq(), first);
    let hold = w.syncer().ok_or("no fsync thread")?.hold();
    let disk_busy = hold.lock().map_err(|_| "poisoned")?;
    assert!(!commit_group(&mut w, 2, 10)?.synced, "not due");
    w.sync_soon(Now::at(20))?;
    assert_eq!(w.stats().syncs, 1, "started at once");
    // More records while it runs: the next one waits for it.
    assert!(!commit_group(&mut w, 3, 30)?.synced);
    w.sync_soon(Now::at(40))?;
    assert_eq!(w.stats().syncs, 1);
    assert_eq!(
        w.sync_deadline(),
        Some(40 + SYNC_RETRY_MS),
        "looked at again soon"
    );
    assert_eq!(w.synced_seq(), first, "nothing known done");
    drop(disk_busy);
    while w.syncer().ok_or("no fsync thread")?.busy() {
        std::thread::yield_now();
    }
    assert!(
        w.sync_if_due(Now::at(40 + SYNC_RETRY_MS))?,
        "the asked-for one starts"
    );
    assert_eq!(
        w.synced_seq(),
        first + 2,
        "the first one covers the first group"
    );
    assert_eq!(w.sync_deadline(), None);
    while w.syncer().ok_or("no fsync thread")?.busy() {
        std::thread::yield_now();
    }
    assert!(!w.sync_if_due(Now::at(60))?);
    assert_eq!(w.synced_seq(), first + 5);
    assert_eq!(w.synced_seq(), w.next_seq());
    // Without a thread of its own, the writer fsyncs at once.
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        fsync: FsyncPolicy::Never,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path(), cfg, Now::at(0))?;
    commit_group(&mut w, 2, 10)?;
    assert_eq!(w.synced_seq(), w.next_seq() - 2);
    w.sync_soon(Now::at(20))?;
    assert_eq!((w.synced_seq(), w.stats().syncs), (w.next_seq(), 1));
    Ok(())
}

#[test]
fn an_error_of_a_background_fsync_fails_the_writer() -> TestResult {
    for case in ["waited for", "beside another", "found later"] {
        let tmp = tempfile::tempdir()?;
        let mut w = background_sync_writer(tmp.path())?;
        let syncer = w.syncer().ok_or("no fsync thread")?;
        syncer.fail_next();
        let hold = syncer.hold();
        let held = hold.lock().map_err(|_| "poisoned")?;
        assert!(commit_group(&mut w, 1, 1_000)?.synced);
        let err = match case {
            // An fsync asked for waits for the running one, and reports
            // what it found ...
            "waited for" => {
                drop(held);
                w.sync(Now::at(1_001)).err()
            }
            // ... also when it fsyncs what was written since itself (and
            // succeeds).
            "beside another" => {
                assert!(!commit_group(&mut w, 1, 1_001)?.synced);
                drop(held);
                w.sync(Now::at(1_002)).err()
            }
            // The next call that looks collects it.
            _ => {
                drop(held);
                while w.syncer().ok_or("no fsync thread")?.busy() {
                    std::thread::yield_now();
                }
                w.sync_if_due(Now::at(1_001)).err()
            }
        };
        let err = err.ok_or(format!("the failed fsync {case} went unreported"))?;
        assert!(err.to_string().contains("injected fsync failure"), "{err}");
        let again = commit_group(&mut w, 1, 1_002)
            .err()
            .ok_or("the writer went on")?;
        assert!(again.to_string().contains("open the log again"), "{again}");
    }
    Ok(())
}

/// Waits until the writer's fsync thread has nothing queued or running.
fn until_idle(w: &LogWriter) -> TestResult {
    while w.syncer().ok_or("no fsync thread")?.busy() {
        std::thread::yield_now();
    }
    Ok(())
}

/// A rotation holds the writer for no fsync: the fsync thread makes the
/// closed segment durable, then the new one, written to meanwhile under
/// its pending name, then names it and fsyncs the directory; the new
/// segment's records count as synced only after all of that.
#[test]
fn a_rotation_leaves_its_fsyncs_to_the_fsync_thread() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = background_sync_writer(tmp.path())?;
    commit_group(&mut w, 3, 10)?;
    let hold = w.syncer().ok_or("no fsync thread")?.hold();
    let disk_busy = hold.lock().map_err(|_| "poisoned")?;
    w.rotate();
    let info = commit_group(&mut w, 2, 20)?;
    assert!(info.rotated && !info.synced, "{info:?}");
    assert_eq!(info.segment, 4);
    let named = tmp.path().join(segment_file_name(4));
    let pending = tmp.path().join(pending_segment_file_name(4));
    assert_eq!(w.segment_path(), named);
    assert!(pending.is_file() && !named.exists(), "not named yet");
    assert!(w.syncer().ok_or("no fsync thread")?.busy());
    assert_eq!(w.synced_seq(), 1, "nothing known synced");
    // Readers see the closed segment only, meanwhile.
    assert_eq!(read_all(tmp.path())?.len(), 3);
    // An fsync asked for now comes after the rotation's; the writer goes
    // on, to the new file, and no second rotation starts.
    w.sync_soon(Now::at(30))?;
    w.rotate();
    assert!(
        !commit_group(&mut w, 2, 40)?.rotated,
        "one rotation at a time"
    );
    assert_eq!(w.synced_seq(), 1);
    assert_eq!(w.syncer().ok_or("no fsync thread")?.fsyncs(), 0);
    drop(disk_busy);
    until_idle(&w)?;
    assert!(named.is_file() && !pending.exists(), "named");
    assert_eq!(
        w.syncer().ok_or("no fsync thread")?.fsyncs(),
        3,
        "the closed segment, the new one, the directory"
    );
    assert_eq!(read_all(tmp.path())?.len(), 7);
    assert!(w.sync_if_due(Now::at(50))?, "the asked-for fsync starts");
    assert_eq!(w.synced_seq(), 4, "the closed segment's records");
    until_idle(&w)?;
    assert!(!w.sync_if_due(Now::at(60))?);
    assert_eq!(w.synced_seq(), 8);
    assert_eq!(
        w.syncer().ok_or("no fsync thread")?.fsyncs(),
        4,
        "data only"
    );
    // The rotation asked for meanwhile happens now.
    assert!(commit_group(&mut w, 1, 70)?.rotated);
    w.close(Now::at(80))?;
    assert_eq!(read_all(tmp.path())?, records(8));
    assert_eq!(segments(tmp.path())?.len(), 3);
    Ok(())
}

/// A rotation's job may wait behind an fsync of the segment it closes; a
/// failure of either fails the writer and leaves the new segment unnamed,
/// and opening the log again names it (its predecessor reads whole), so
/// nothing written is lost.
#[test]
fn a_failed_rotation_fails_the_writer_and_opening_finishes_it() -> TestResult {
    for fail_first in [true, false] {
        let tmp = tempfile::tempdir()?;
        let mut w = background_sync_writer(tmp.path())?;
        let hold = w.syncer().ok_or("no fsync thread")?.hold();
        let disk_busy = hold.lock().map_err(|_| "poisoned")?;
        assert!(commit_group(&mut w, 3, 1_000)?.synced, "an fsync runs");
        // The interval's fsync fails, or the rotation's first one.
        let nth = if fail_first { 1 } else { 2 };
        w.syncer().ok_or("no fsync thread")?.fail_in(nth);
        w.rotate();
        assert!(commit_group(&mut w, 2, 1_010)?.rotated, "queued behind it");
        drop(disk_busy);
        let err = w
            .sync(Now::at(1_020))
            .err()
            .ok_or("the failure went unreported")?;
        assert!(err.to_string().contains("injected fsync failure"), "{err}");
        assert!(
            commit_group(&mut w, 1, 1_030).is_err(),
            "the writer went on"
        );
        drop(w);
        let pending = tmp.path().join(pending_segment_file_name(4));
        assert!(pending.is_file(), "fail_first={fail_first}: not named");
        let w = background_sync_writer(tmp.path())?;
        let unfinished = &w.recovery().unfinished;
        assert_eq!(unfinished.len(), 1);
        assert!(
            matches!(unfinished[0].outcome, Unfinished::Named(_)),
            "{unfinished:?}"
        );
        assert_eq!(w.next_seq(), 6);
        w.close(Now::at(2_000))?;
        assert_eq!(read_all(tmp.path())?, records(5));
    }
    Ok(())
}

/// A failed writer's fsync thread finishes what it was given — a rotation
/// names its segment — before `settle` returns, so a writer that opens the
/// directory while the failed one is still around finds no rotation under
/// way (a node's writer reopens the log that way after a failure).
#[test]
fn a_failed_writer_settles_its_rotation_before_the_log_is_opened_again() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = background_sync_writer(tmp.path())?;
    commit_group(&mut w, 3, 10)?;
    // The disk is held busy from another thread until told otherwise.
    let hold = w.syncer().ok_or("no fsync thread")?.hold();
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let busy = hold.lock();
        let _ = locked_tx.send(());
        let _ = release_rx.recv();
        drop(busy);
    });
    locked.recv()?;
    w.rotate();
    assert!(commit_group(&mut w, 2, 20)?.rotated);
    w.fail_next_write_after = Some(3);
    assert!(commit_group(&mut w, 1, 30).is_err(), "the write fails");
    let pending = tmp.path().join(pending_segment_file_name(4));
    assert!(pending.is_file(), "the rotation waits on the disk");
    release.send(())?;
    w.settle();
    assert!(!pending.exists());
    assert!(tmp.path().join(segment_file_name(4)).is_file(), "named");
    let again = background_sync_writer(tmp.path())?;
    assert!(again.recovery().unfinished.is_empty());
    assert_eq!(again.next_seq(), 6, "the partial block cut");
    drop(w);
    again.close(Now::at(40))?;
    holder.join().map_err(|_| "the holder panicked")?;
    assert_eq!(read_all(tmp.path())?, records(5));
    Ok(())
}

/// After a crash during a rotation, a segment still under its pending
/// name is named if the segment before reads whole up to where it begins,
/// and kept aside in `damaged/` if not (that one's torn tail is then cut
/// as the newest segment's); an empty one is removed.
#[test]
fn an_unfinished_rotation_is_named_kept_aside_or_removed() -> TestResult {
    // A directory as a crash mid-rotation leaves it: segment 1 holding
    // records 1–3, segment 4 under its pending name holding 4–5.
    let crashed = || -> BoxResult<(tempfile::TempDir, PathBuf, PathBuf)> {
        let tmp = tempfile::tempdir()?;
        let mut w = background_sync_writer(tmp.path())?;
        commit_group(&mut w, 3, 10)?;
        w.rotate();
        commit_group(&mut w, 2, 20)?;
        w.close(Now::at(30))?;
        let first = tmp.path().join(segment_file_name(1));
        let named = tmp.path().join(segment_file_name(4));
        let pending = tmp.path().join(pending_segment_file_name(4));
        fs::rename(&named, &pending)?;
        Ok((tmp, first, pending))
    };
    let all = records(5);
    // Tears the last block of the segment before.
    let tear = |first: &Path| -> BoxResult<()> {
        let len = fs::metadata(first)?.len();
        fs::OpenOptions::new()
            .write(true)
            .open(first)?
            .set_len(len - 3)?;
        Ok(())
    };

    // The segment before is whole: named, nothing lost.
    let (tmp, _, _) = crashed()?;
    assert_eq!(read_all(tmp.path())?, all[..3], "readers ignore it");
    let report = finish_rotations(tmp.path(), &config(), 99)?;
    assert_eq!(report.len(), 1);
    assert_eq!(
        report[0].outcome,
        Unfinished::Named(tmp.path().join(segment_file_name(4)))
    );
    assert_eq!(read_all(tmp.path())?, all);
    let w = background_sync_writer(tmp.path())?;
    assert!(w.recovery().unfinished.is_empty(), "done once");
    assert_eq!(w.next_seq(), 6);
    drop(w);

    // The segment before lost its last block: the pending one is kept
    // aside, the torn tail cut, and the writer goes on from there.
    let (tmp, first, pending) = crashed()?;
    tear(&first)?;
    let w = background_sync_writer(tmp.path())?;
    let unfinished = &w.recovery().unfinished;
    assert_eq!(unfinished.len(), 1);
    assert!(!pending.exists());
    let Unfinished::KeptAside(kept) = &unfinished[0].outcome else {
        return Err(format!("{unfinished:?}").into());
    };
    assert!(kept.starts_with(tmp.path().join(DAMAGED_DIR)), "{kept:?}");
    assert!(
        kept.to_string_lossy().contains(".dkvlog.new.unfinished-0"),
        "{kept:?}"
    );
    assert!(w.recovery().damage.is_some(), "the torn tail is cut");
    let next = w.next_seq();
    assert!(next < 4, "{next}");
    w.close(Now::at(40))?;
    assert_eq!(read_all(tmp.path())?, all[..next as usize - 1]);

    // A pending segment of another node, or not at the seq its name says,
    // or whose predecessor ends elsewhere, is never named.
    for case in ["other node", "other seq", "gap"] {
        let (tmp, _, pending) = crashed()?;
        let cfg = match case {
            "other node" => WriterConfig {
                node: NodeName::from("n2"),
                ..config()
            },
            _ => config(),
        };
        match case {
            "other seq" => fs::rename(&pending, tmp.path().join(pending_segment_file_name(5)))?,
            "gap" => {
                // The predecessor ends at 4; a pending segment 7 would
                // leave a gap.
                fs::remove_file(&pending)?;
                let mut w = LogWriter::open(
                    tmp.path().join("elsewhere"),
                    WriterConfig {
                        first_seq: 7,
                        ..config()
                    },
                    Now::at(0),
                )?;
                commit_group(&mut w, 1, 0)?;
                w.close(Now::at(0))?;
                fs::rename(
                    tmp.path().join("elsewhere").join(segment_file_name(7)),
                    tmp.path().join(pending_segment_file_name(7)),
                )?;
            }
            _ => {}
        }
        let report = finish_rotations(tmp.path(), &cfg, 5)?;
        assert_eq!(report.len(), 1, "{case}");
        assert!(
            matches!(report[0].outcome, Unfinished::KeptAside(_)),
            "{case}: {report:?}"
        );
        assert_eq!(read_all(tmp.path())?, all[..3], "{case}");
    }

    // Stopped between its creation and its header: empty, it held nothing
    // and is removed, whether the segment before is whole or not.
    for torn_before in [false, true] {
        let (tmp, first, pending) = crashed()?;
        fs::write(&pending, b"")?;
        if torn_before {
            tear(&first)?;
        }
        let w = background_sync_writer(tmp.path())?;
        let unfinished = &w.recovery().unfinished;
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].outcome, Unfinished::Removed, "{torn_before}");
        assert!(!pending.exists());
        assert!(!tmp.path().join(DAMAGED_DIR).exists() || torn_before);
        let next = w.next_seq();
        w.close(Now::at(40))?;
        assert_eq!(read_all(tmp.path())?, all[..next as usize - 1]);
        assert_eq!(next == 4, !torn_before, "{next}");
    }
    Ok(())
}

/// A segment found when opening may have been created by a rotation whose
/// fsyncs a crash cut short: its first fsync covers its directory entry
/// too.
#[test]
fn the_first_fsync_after_opening_covers_the_segments_name() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = background_sync_writer(tmp.path())?;
    commit_group(&mut w, 2, 10)?;
    w.close(Now::at(20))?;
    let mut w = background_sync_writer(tmp.path())?;
    commit_group(&mut w, 2, 30)?;
    w.sync_soon(Now::at(40))?;
    until_idle(&w)?;
    assert_eq!(
        w.syncer().ok_or("no fsync thread")?.fsyncs(),
        2,
        "file and directory"
    );
    commit_group(&mut w, 2, 50)?;
    w.sync_soon(Now::at(60))?;
    until_idle(&w)?;
    assert_eq!(
        w.syncer().ok_or("no fsync thread")?.fsyncs(),
        3,
        "then data only"
    );
    assert!(!w.sync_if_due(Now::at(70))?);
    assert_eq!(w.synced_seq(), 7);
    Ok(())
}

/// After a crash in the middle of a rotation, the new segment's name or
/// header may not be on disk: the closed segment was fsynced before, so
/// the log is whole up to where it ends, and the writer goes on from there.
#[test]
fn a_crash_before_a_new_segment_is_durable_loses_only_that_segment() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = background_sync_writer(tmp.path())?;
    commit_group(&mut w, 3, 10)?;
    w.rotate();
    commit_group(&mut w, 2, 20)?;
    drop(w);
    // The name is lost.
    fs::remove_file(tmp.path().join(segment_file_name(4)))?;
    let mut w = background_sync_writer(tmp.path())?;
    assert_eq!(w.next_seq(), 4);
    commit_group(&mut w, 1, 30)?;
    w.rotate();
    commit_group(&mut w, 1, 40)?;
    assert_eq!(w.segment_path(), tmp.path().join(segment_file_name(5)));
    w.close(Now::at(50))?;
    assert_eq!(read_all(tmp.path())?, records(5));
    // The name is there, the file empty (its header was not written back).
    let tmp = tempfile::tempdir()?;
    let mut w = background_sync_writer(tmp.path())?;
    commit_group(&mut w, 3, 10)?;
    w.rotate();
    commit_group(&mut w, 2, 20)?;
    drop(w);
    fs::File::create(tmp.path().join(segment_file_name(4)))?;
    let w = background_sync_writer(tmp.path())?;
    assert!(w.recovery().header_rewritten);
    assert_eq!(w.next_seq(), 4);
    w.close(Now::at(60))?;
    assert_eq!(read_all(tmp.path())?, records(3));

    // Blocks written back, but not the first page, header and all: damage
    // followed by valid blocks, refused; `Salvage` keeps what it can.
    let tmp = tempfile::tempdir()?;
    let mut w = background_sync_writer(tmp.path())?;
    commit_group(&mut w, 3, 10)?;
    w.rotate();
    for k in 0..200 {
        commit_group(&mut w, 2, 20 + k)?;
    }
    drop(w);
    let newest = tmp.path().join(segment_file_name(4));
    let mut bytes = fs::read(&newest)?;
    assert!(bytes.len() > 8192, "{} bytes", bytes.len());
    bytes[..4096].fill(0);
    fs::write(&newest, &bytes)?;
    assert!(matches!(
        background_sync_writer(tmp.path()),
        Err(LogError::Salvageable { .. })
    ));
    let salvage = WriterConfig {
        recovery: RecoveryMode::Salvage,
        ..config()
    };
    let w = LogWriter::open(tmp.path(), salvage, Now::at(500))?;
    assert_eq!(w.next_seq(), 404);
    drop(w);
    let kept = LogReader::open_with(tmp.path(), 0, RecoveryMode::Salvage)?
        .collect::<Result<Vec<_>, _>>()?;
    assert!(kept.iter().any(|r| matches!(r, LogRecord::Lost { .. })));
    assert!(kept.iter().filter(|r| is_event(r)).count() > 3 + 200);
    Ok(())
}

#[test]
fn intervals_follow_the_monotonic_clock_when_the_wall_clock_steps() -> TestResult {
    const DAY: u64 = 86_400_000;
    let wall0 = 1_700_000_000_000;
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        max_segment_age: Duration::from_secs(60),
        fsync: FsyncPolicy::Interval(Duration::from_secs(1)),
        ..config()
    };
    // The wall clock steps a day back right after the start; the
    // monotonic one goes on.
    let back = |mono_ms| Now {
        wall_ms: wall0 - DAY + mono_ms,
        mono_ms,
    };
    let mut w = LogWriter::open(
        tmp.path(),
        cfg.clone(),
        Now {
            wall_ms: wall0,
            mono_ms: 0,
        },
    )?;
    assert!(!commit_group(&mut w, 1, 0)?.synced);
    let commit = |w: &mut LogWriter, now: Now| -> Result<CommitInfo, LogError> {
        w.append(&record(w.next_seq()))?;
        w.commit(now)
    };
    assert!(!commit(&mut w, back(999))?.synced);
    assert!(commit(&mut w, back(1_000))?.synced, "fsync on time");
    assert!(!commit(&mut w, back(59_999))?.rotated);
    let info = commit(&mut w, back(60_000))?;
    assert!(info.rotated, "rotation on time");
    assert_eq!(
        read_segment_header(w.segment_path())?.created_ms,
        back(60_000).wall_ms
    );
    // A step forward hurries nothing either.
    let ahead = Now {
        wall_ms: wall0 + 10 * DAY,
        mono_ms: 60_500,
    };
    let info = commit(&mut w, ahead)?;
    assert!(!info.rotated && !info.synced, "{info:?}");
    assert_eq!(
        w.sync_deadline(),
        Some(60_999),
        "a second after the last fsync"
    );
    w.close(ahead)?;

    // A segment found at start counts its age from its header's wall
    // clock, at most the maximum: at least as old as it says, never
    // forgotten when the clock went back before the restart.
    let created = back(60_000).wall_ms;
    for (wall_ms, rotates_after_ms) in [
        (created + 20_000, 40_000),
        (created - DAY, 60_000),
        (created + 10 * DAY, 0),
    ] {
        let mono0 = 5_000;
        let mut w = LogWriter::open(
            tmp.path(),
            cfg.clone(),
            Now {
                wall_ms,
                mono_ms: mono0,
            },
        )?;
        let later = |ms: u64| Now {
            wall_ms,
            mono_ms: mono0 + ms,
        };
        if rotates_after_ms > 0 {
            assert!(!commit(&mut w, later(rotates_after_ms - 1))?.rotated);
        }
        assert!(
            commit(&mut w, later(rotates_after_ms))?.rotated,
            "opened at {wall_ms}"
        );
        w.close(later(rotates_after_ms))?;
    }
    Ok(())
}

#[test]
fn rotation_on_request_and_never_of_an_empty_segment() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    // No event yet: a request is dropped (the successor would have the same
    // first seq, and so the same name), state records or not.
    w.rotate();
    w.append(&state(0, 0))?;
    assert!(!w.commit(Now::at(0))?.rotated);
    w.rotate();
    assert!(!commit_group(&mut w, 3, 0)?.rotated);
    w.rotate();
    assert_eq!(
        w.commit(Now::at(0))?.records,
        0,
        "nothing pending: nothing happens"
    );
    assert!(commit_group(&mut w, 3, 0)?.rotated);
    assert!(!commit_group(&mut w, 3, 0)?.rotated);
    w.close(Now::at(0))?;
    let segs = segments(tmp.path())?;
    assert_eq!(
        segs.iter().map(|s| s.first_seq).collect::<Vec<_>>(),
        vec![1, 4]
    );
    assert_eq!(read_all(tmp.path())?.len(), 10);
    Ok(())
}

/// A log with closed segments [1..=3], [4..=6], [7..=9] and the open [10..],
/// segment k (0-based) created at `k * 1000` ms.
fn four_segments(dir: &Path) -> Result<LogWriter, LogError> {
    let mut w = LogWriter::open(dir, config(), Now::at(0))?;
    for k in 0..4u64 {
        if k > 0 {
            w.rotate();
        }
        commit_group(&mut w, 3, k * 1000)?;
    }
    Ok(w)
}

#[test]
fn retention_by_age_keeps_what_the_snapshot_does_not_cover() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let w = four_segments(tmp.path())?;
    let by_age = RetentionPolicy {
        max_age: Some(Duration::from_millis(500)),
        max_total_bytes: None,
    };
    // Nothing covered: nothing goes, however old.
    assert!(w.retain(&by_age, 0, 1 << 40)?.is_empty());
    // Covered up to 6, but segment [4..=6] closed at 2000: at 2400 too young.
    let gone = w.retain(&by_age, 6, 2_400)?;
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].first_seq, gone[0].last_seq), (1, 3));
    let gone = w.retain(&by_age, 6, 2_501)?;
    assert_eq!((gone[0].first_seq, gone[0].last_seq), (4, 6));
    // Covered up to 8: [7..=9] holds 9, which is not covered.
    assert!(w.retain(&by_age, 8, 1 << 40)?.is_empty());
    // Everything covered: the open segment still stays.
    let gone = w.retain(&by_age, 100, 1 << 40)?;
    assert_eq!(gone.len(), 1);
    let segs = segments(tmp.path())?;
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].path, w.segment_path());
    // The rest still reads; the deleted records are reported missing.
    assert_eq!(read_all(tmp.path())?.len(), 3);
    assert!(matches!(
        LogReader::open(tmp.path(), 5),
        Err(LogError::Gap {
            expected: 5,
            found: 10,
            ..
        })
    ));
    Ok(())
}

#[test]
fn retention_by_bytes_deletes_oldest_first_within_coverage() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let w = four_segments(tmp.path())?;
    let segs = segments(tmp.path())?;
    let total: u64 = segs.iter().map(|s| s.bytes).sum();
    let by_bytes = |b| RetentionPolicy {
        max_age: None,
        max_total_bytes: Some(b),
    };
    assert!(w.retain(&by_bytes(total), 100, 0)?.is_empty());
    // One byte over: the oldest goes.
    let gone = w.retain(&by_bytes(total - 1), 100, 0)?;
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].path, segs[0].path);
    // A tiny budget, but only [4..=6] is covered.
    let gone = w.retain(&by_bytes(1), 6, 0)?;
    assert_eq!(
        gone.iter().map(|g| g.first_seq).collect::<Vec<_>>(),
        vec![4]
    );
    // A tiny budget, all covered: all but the open one.
    let gone = w.retain(&by_bytes(1), u64::MAX, 0)?;
    assert_eq!(
        gone.iter().map(|g| g.first_seq).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(segments(tmp.path())?.len(), 1);
    Ok(())
}

/// Byte offsets where the blocks of `path` start, and the file length.
fn block_starts(path: &Path) -> BoxResult<(Vec<u64>, u64)> {
    let mut r = BlockReader::open(path)?;
    let mut starts = vec![r.pos()];
    while let Next::Block { .. } = r.next_block()? {
        starts.push(r.pos());
    }
    let len = starts.pop().unwrap_or_default();
    Ok((starts, len))
}

/// Records of each block of `path`, in order.
fn block_records(path: &Path) -> BoxResult<Vec<u64>> {
    let mut r = BlockReader::open(path)?;
    let mut out = Vec::new();
    while let Next::Block { raw, .. } = r.next_block()? {
        let mut pos = 0;
        let mut n = 0;
        while next_record(&raw, &mut pos).is_some() {
            n += 1;
        }
        out.push(n);
    }
    Ok(out)
}

/// A closed segment of 4 records (3 events, a state record) and an open one
/// of five blocks (one compressed, three ending with a state record).
/// Returns the log's records, the open segment's path and its bytes.
fn torn_tail_fixture(dir: &Path) -> BoxResult<Fixture> {
    let mut w = LogWriter::open(dir, config(), Now::at(0))?;
    commit_mixed(&mut w, 3, 0)?;
    w.rotate();
    for n in [1, 2, 12, 1, 2] {
        let info = if n == 1 || n == 12 {
            commit_mixed(&mut w, n, 0)?
        } else {
            commit_group(&mut w, n, 0)?
        };
        assert_eq!(info.compressed, n == 12, "group of {n}: {info:?}");
    }
    let path = w.segment_path().to_path_buf();
    w.close(Now::at(0))?;
    let bytes = fs::read(&path)?;
    Ok((read_all(dir)?, path, bytes))
}

fn with_mode(recovery: RecoveryMode) -> WriterConfig {
    WriterConfig {
        recovery,
        ..config()
    }
}

fn read_strict(dir: &Path) -> Result<Vec<LogRecord>, LogError> {
    LogReader::open_with(dir, 0, RecoveryMode::Strict)?.collect()
}

/// The files kept in `dir/damaged`, by name, with their bytes; removes
/// them.
fn take_kept(dir: &Path) -> BoxResult<Vec<(String, Vec<u8>)>> {
    let damaged = dir.join(DAMAGED_DIR);
    if !damaged.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in fs::read_dir(&damaged)? {
        let e = e?;
        out.push((
            e.file_name().to_string_lossy().into_owned(),
            fs::read(e.path())?,
        ));
    }
    out.sort();
    fs::remove_dir_all(&damaged)?;
    Ok(out)
}

/// `records` with the text and time of lost records blanked, to compare.
fn blank_lost(records: Vec<LogRecord>) -> Vec<LogRecord> {
    records
        .into_iter()
        .map(|r| match r {
            LogRecord::Lost { seq, from, .. } => LogRecord::Lost {
                seq,
                from,
                time_ms: 0,
                why: String::new(),
            },
            r => r,
        })
        .collect()
}

/// `all` without the records `gone`, and a lost record in their place.
fn without(all: &[LogRecord], gone: std::ops::Range<usize>) -> Vec<LogRecord> {
    let events = |rs: &[LogRecord]| rs.iter().filter(|r| is_event(r)).count() as u64;
    let from = events(&all[..gone.start]) + 1;
    let lost = LogRecord::Lost {
        seq: from + events(&all[gone.clone()]) - 1,
        from,
        time_ms: 0,
        why: String::new(),
    };
    let mut want = all[..gone.start].to_vec();
    want.push(lost);
    want.extend_from_slice(&all[gone.end..]);
    want
}

#[test]
fn last_segment_cut_at_every_offset_recovers_a_complete_prefix() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (all, last, bytes) = torn_tail_fixture(tmp.path())?;
    let (starts, len) = block_starts(&last)?;
    let per_block = block_records(&last)?;
    assert_eq!(len, bytes.len() as u64);
    let header_len = starts[0];
    let closed = 4u64;
    for cut in 0..=len {
        fs::write(&last, &bytes[..cut as usize])?;
        // Strict: only a cut at a block boundary is a valid log.
        let at_boundary = cut == len || starts.contains(&cut);
        match LogWriter::open(tmp.path(), with_mode(RecoveryMode::Strict), Now::at(0)) {
            Ok(_) => assert!(at_boundary, "strict accepted a cut at {cut}"),
            Err(LogError::Corrupt { file, offset, .. }) => {
                assert!(!at_boundary, "strict refused a clean cut at {cut}");
                assert_eq!(file, last);
                assert!(offset <= cut, "cut {cut} reported at {offset}");
            }
            Err(e) => return Err(format!("cut {cut}: {e}").into()),
        }
        let strict_read = read_strict(tmp.path());
        assert_eq!(strict_read.is_ok(), at_boundary, "cut {cut}");
        assert_eq!(fs::metadata(&last)?.len(), cut, "strict never repairs");

        // TruncateTail and Salvage: the complete blocks before the cut
        // survive, and the cut bytes are kept.
        let complete = starts
            .iter()
            .skip(1)
            .chain([&len])
            .filter(|&&e| e <= cut)
            .count();
        let kept = if cut < header_len {
            0
        } else {
            per_block[..complete].iter().sum::<u64>()
        };
        let want = &all[..(closed + kept) as usize];
        let valid = if cut < header_len {
            0
        } else {
            starts
                .iter()
                .chain([&len])
                .filter(|&&s| s <= cut)
                .max()
                .copied()
                .unwrap_or(0)
        };
        // (Salvage treats a torn tail as TruncateTail does: checked at
        // every fifth cut, to keep the test quick.)
        let modes: &[RecoveryMode] = if cut % 5 == 0 {
            &[RecoveryMode::TruncateTail, RecoveryMode::Salvage]
        } else {
            &[RecoveryMode::TruncateTail]
        };
        for &mode in modes {
            fs::write(&last, &bytes[..cut as usize])?;
            let mut w = LogWriter::open(tmp.path(), with_mode(mode), Now::at(0))?;
            let rep = w.recovery().clone();
            assert_eq!(rep.header_rewritten, cut < header_len, "cut {cut}");
            assert_eq!(rep.dropped_bytes, cut - valid, "cut {cut}");
            assert_eq!(rep.salvaged, None, "cut {cut}");
            let events = want.iter().filter(|r| is_event(r)).count() as u64;
            assert_eq!(rep.next_seq, events + 1, "cut {cut}");
            let kept = take_kept(tmp.path())?;
            if cut == valid {
                assert!(kept.is_empty(), "cut {cut}: nothing was cut");
            } else {
                assert_eq!(kept.len(), 1, "cut {cut}");
                assert_eq!(
                    kept[0].0,
                    format!("{}.torn-{valid}-0", segment_file_name(4))
                );
                assert_eq!(kept[0].1, &bytes[valid as usize..cut as usize], "cut {cut}");
            }
            // The writer goes on right after the last valid record.
            let next = record(w.next_seq());
            w.append(&next)?;
            w.close(Now::at(0))?;
            let got = read_strict(tmp.path())?;
            assert_eq!(got.len(), want.len() + 1, "cut {cut}");
            assert_eq!(&got[..want.len()], want, "cut {cut}");
            assert_eq!(got[want.len()], next);
        }
    }
    Ok(())
}

#[test]
fn every_byte_flip_in_the_newest_segment_is_refused_salvaged_or_a_torn_tail() -> TestResult {
    use RecoveryMode::{Salvage, Strict, TruncateTail};
    let tmp = tempfile::tempdir()?;
    let (all, last, bytes) = torn_tail_fixture(tmp.path())?;
    let (starts, len) = block_starts(&last)?;
    let per_block = block_records(&last)?;
    // The records of each block, as indexes into `all`.
    let mut ranges = Vec::new();
    let mut at_record = 4usize;
    for &n in &per_block {
        ranges.push(at_record..at_record + n as usize);
        at_record += n as usize;
    }
    let last_block = starts.len() - 1;
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        fs::write(&last, &bad)?;
        let block = starts.iter().rposition(|&s| s as usize <= i);
        let offset = block.map_or(0, |b| starts[b]);
        let ctx = format!("flip at {i}");
        if i < 8 {
            // A wrong magic: the file may not be a segment at all, and is
            // never touched, whatever the mode.
            for mode in [Strict, TruncateTail, Salvage] {
                match LogWriter::open(tmp.path(), with_mode(mode), Now::at(0)) {
                    Err(LogError::Corrupt { offset: 0, .. }) => {}
                    other => return Err(format!("{ctx}, {mode:?}: {other:?}").into()),
                }
            }
            assert_eq!(fs::read(&last)?, bad, "{ctx}");
            continue;
        }
        if block == Some(last_block) {
            // A damaged last block is a torn tail: refused in strict mode,
            // cut off (and kept) otherwise.
            match LogWriter::open(tmp.path(), with_mode(Strict), Now::at(0)) {
                Err(LogError::Corrupt {
                    offset: o, reason, ..
                }) => {
                    assert_eq!(o, offset, "{ctx}");
                    assert!(reason.contains("torn tail"), "{ctx}: {reason}");
                }
                other => return Err(format!("{ctx}: {other:?}").into()),
            }
            for mode in [TruncateTail, Salvage] {
                fs::write(&last, &bad)?;
                let w = LogWriter::open(tmp.path(), with_mode(mode), Now::at(0))?;
                assert_eq!(w.recovery().dropped_bytes, len - offset, "{ctx}");
                assert_eq!(w.recovery().salvaged, None, "{ctx}");
                drop(w);
                assert_eq!(read_strict(tmp.path())?, all[..ranges[last_block].start]);
                let kept = take_kept(tmp.path())?;
                assert_eq!(kept.len(), 1, "{ctx}");
                assert_eq!(kept[0].1, &bad[offset as usize..], "{ctx}");
            }
            continue;
        }
        // Valid blocks follow: not a torn tail. Refused, nothing changed.
        let next = block.map_or(starts[0], |b| starts[b + 1]);
        for mode in [Strict, TruncateTail] {
            let read: Result<Vec<_>, _> = LogReader::open_with(tmp.path(), 0, mode)?.collect();
            for res in [
                LogWriter::open(tmp.path(), with_mode(mode), Now::at(0)).map(|_| ()),
                read.map(|_| ()),
            ] {
                match res {
                    Err(LogError::Salvageable {
                        file,
                        offset: o,
                        next: n,
                        ..
                    }) => assert_eq!((file, o, n), (last.clone(), offset, next), "{ctx}"),
                    other => return Err(format!("{ctx}, {mode:?}: {other:?}").into()),
                }
            }
        }
        assert_eq!(fs::read(&last)?, bad, "{ctx}: refusing changes nothing");
        assert!(take_kept(tmp.path())?.is_empty(), "{ctx}");
        // Salvage keeps every valid block, and the damaged file.
        let w = LogWriter::open(tmp.path(), with_mode(Salvage), Now::at(7))?;
        let report = w.recovery().salvaged.clone().ok_or("nothing salvaged")?;
        drop(w);
        // A damaged length field alone is found by the block's CRC: the
        // block is whole again. A damaged header is rebuilt.
        let length_only = block.is_some_and(|b| i < starts[b] as usize + 4);
        let want = match block {
            Some(b) if !length_only => without(&all, ranges[b].clone()),
            _ => all.clone(),
        };
        assert_eq!(blank_lost(read_strict(tmp.path())?), want, "{ctx}");
        assert_eq!(report.skipped.len(), 1, "{ctx}");
        assert_eq!(report.skipped[0].offset, offset, "{ctx}");
        assert_eq!(report.skipped[0].resumed_at, next, "{ctx}");
        let lost = match block {
            Some(b) if !length_only => all[ranges[b].clone()]
                .iter()
                .filter(|r| is_event(r))
                .count(),
            _ => 0,
        };
        assert_eq!(report.lost_events(), lost as u64, "{ctx}");
        let kept = take_kept(tmp.path())?;
        assert_eq!(kept.len(), 1, "{ctx}");
        assert_eq!(kept[0].0, format!("{}.damaged-7", segment_file_name(4)));
        assert_eq!(kept[0].1, bad, "{ctx}: the damaged file is kept as it was");
    }
    Ok(())
}

#[test]
fn a_flip_in_a_closed_segment_is_never_a_torn_tail() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (all, _, _) = torn_tail_fixture(tmp.path())?;
    let closed = segments(tmp.path())?[0].path.clone();
    let bytes = fs::read(&closed)?;
    let (starts, _) = block_starts(&closed)?;
    assert_eq!(starts.len(), 1, "one block");
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x80;
        fs::write(&closed, &bad)?;
        let res: Result<Vec<_>, _> = LogReader::open(tmp.path(), 0)?.collect();
        match res {
            // A damaged header, with the valid block after it.
            Err(LogError::Salvageable {
                file, offset, next, ..
            }) => {
                assert_eq!(
                    (file, offset, next),
                    (closed.clone(), 0, starts[0]),
                    "flip at {i}"
                );
                assert!(i < starts[0] as usize, "flip at {i}");
            }
            // The magic, or the only block: nothing valid follows, but a
            // closed segment cannot have been torn by a crash.
            Err(LogError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(file, closed, "flip at {i}");
                if i < 8 {
                    assert_eq!(offset, 0, "flip at {i}");
                } else {
                    assert_eq!(offset, starts[0], "flip at {i}");
                    assert!(reason.contains("closed"), "flip at {i}: {reason}");
                }
            }
            other => return Err(format!("flip at {i}: {other:?}").into()),
        }
        if i >= starts[0] as usize {
            // Read in salvage mode, the block's events are lost up to where
            // the next segment starts.
            let got = LogReader::open_with(tmp.path(), 0, RecoveryMode::Salvage)?
                .collect::<Result<Vec<_>, _>>()?;
            assert_eq!(blank_lost(got), without(&all, 0..4), "flip at {i}");
        }
    }
    fs::write(&closed, &bytes)?;
    assert_eq!(read_all(tmp.path())?, all);
    Ok(())
}

/// Segment 1 of three blocks of two events each, segment 7 of one.
fn two_segments(dir: &Path) -> BoxResult<(Vec<LogRecord>, PathBuf, Vec<u64>)> {
    let mut w = LogWriter::open(dir, config(), Now::at(0))?;
    for _ in 0..3 {
        commit_group(&mut w, 2, 0)?;
    }
    w.rotate();
    commit_group(&mut w, 2, 0)?;
    w.close(Now::at(0))?;
    let first = segments(dir)?[0].path.clone();
    let (starts, _) = block_starts(&first)?;
    Ok((read_all(dir)?, first, starts))
}

#[test]
fn a_closed_segment_is_salvaged_up_to_its_successor() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cfg = config();
    for (block, gone) in [(1usize, 2..4usize), (2, 4..6)] {
        let (all, first, starts) = two_segments(tmp.path())?;
        let mut bad = fs::read(&first)?;
        bad[starts[block] as usize + 12] ^= 0x04;
        fs::write(&first, &bad)?;
        assert!(read_strict(tmp.path()).is_err());
        let report =
            salvage_segment(tmp.path(), &first, &cfg, Some(7), 5)?.ok_or("nothing salvaged")?;
        assert_eq!(report.lost_events(), 2);
        assert_eq!(blank_lost(read_strict(tmp.path())?), without(&all, gone));
        // Already clean: a second salvage changes nothing.
        assert_eq!(salvage_segment(tmp.path(), &first, &cfg, Some(7), 6)?, None);
        let kept = take_kept(tmp.path())?;
        assert_eq!(
            kept,
            vec![(format!("{}.damaged-5", segment_file_name(1)), bad)]
        );
        fs::remove_dir_all(tmp.path())?;
    }
    Ok(())
}

/// The event at `seq` whose value is `value`.
fn event_with(seq: Seq, value: Value) -> UpdateEvent {
    UpdateEvent {
        value: Some(value),
        ..event(seq)
    }
}

#[test]
fn a_block_inside_a_stored_value_is_never_taken_for_a_real_one() -> TestResult {
    use crate::block::BlockHeader;
    let tmp = tempfile::tempdir()?;
    // A value holding, byte for byte, a valid block of one event at a seq
    // far ahead.
    let mut area = Vec::new();
    let mut forged = Vec::new();
    record(1000).encode(&mut forged);
    crate::block::push_record(&mut area, &forged);
    let mut fake = BlockHeader::of(0, &area).encode().to_vec();
    fake.extend_from_slice(&area);
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    commit_group(&mut w, 2, 0)?;
    w.append_event(1003, &event_with(3, Value::Bin(Arc::from(fake.as_slice()))))?;
    let carrier = w.commit(Now::at(0))?;
    assert!(!carrier.compressed);
    commit_group(&mut w, 2, 0)?;
    let path = w.segment_path().to_path_buf();
    w.close(Now::at(0))?;
    let all = read_all(tmp.path())?;
    let bytes = fs::read(&path)?;
    let (starts, _) = block_starts(&path)?;
    let inside = bytes
        .windows(fake.len())
        .position(|w| w == fake.as_slice())
        .ok_or("the value is not stored verbatim")?;
    assert!(starts[1] < inside as u64 && (inside as u64) < starts[2]);
    // The carrier's payload damaged (after the forged bytes), or its length.
    for (flip, want) in [
        (starts[2] as usize - 1, without(&all, 2..3)),
        (starts[1] as usize + 1, all.clone()),
    ] {
        let mut bad = bytes.clone();
        bad[flip] ^= 0x20;
        fs::write(&path, &bad)?;
        match LogWriter::open(tmp.path(), config(), Now::at(0)) {
            Err(LogError::Salvageable { offset, next, .. }) => {
                assert_eq!((offset, next), (starts[1], starts[2]), "flip at {flip}")
            }
            other => return Err(format!("flip at {flip}: {other:?}").into()),
        }
        drop(LogWriter::open(
            tmp.path(),
            with_mode(RecoveryMode::Salvage),
            Now::at(0),
        )?);
        let got = read_strict(tmp.path())?;
        assert!(
            got.iter().all(|r| r.seq() < 1000),
            "the forged block was taken"
        );
        assert_eq!(blank_lost(got), want, "flip at {flip}");
        take_kept(tmp.path())?;
    }
    Ok(())
}

/// A seeded xorshift generator for test bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }
}

#[test]
fn random_garbage_over_a_block_is_skipped_to_the_next_one() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (all, last, bytes) = torn_tail_fixture(tmp.path())?;
    let (starts, _) = block_starts(&last)?;
    // Garbage over the header and payload of block 2 (12 events and a state
    // record) and the first bytes of block 3.
    let (from, to) = (starts[2] as usize, starts[3] as usize + 5);
    for seed in 1..=40u64 {
        let mut bad = bytes.clone();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        bad[from..to].copy_from_slice(&rng.bytes(to - from));
        fs::write(&last, &bad)?;
        match LogWriter::open(tmp.path(), config(), Now::at(0)) {
            Err(LogError::Salvageable { offset, next, .. }) => {
                assert_eq!((offset, next), (starts[2], starts[4]), "seed {seed}")
            }
            other => return Err(format!("seed {seed}: {other:?}").into()),
        }
        drop(LogWriter::open(
            tmp.path(),
            with_mode(RecoveryMode::Salvage),
            Now::at(0),
        )?);
        assert_eq!(
            blank_lost(read_strict(tmp.path())?),
            without(&all, 8..23),
            "seed {seed}"
        );
        take_kept(tmp.path())?;
    }
    Ok(())
}

/// Dense damage — about a third of the blocks, often several neighbours in
/// a row, as a failing disk leaves — costs the search about what lies
/// between a damaged block and the next valid one, so salvage goes past
/// every damaged run and keeps every intact block. (The checksum repair
/// once ran to the end of the file for each damaged block whose neighbour
/// was damaged too, and the search gave up at its work limit, dropping
/// the rest of the segment.)
#[test]
fn salvage_goes_past_dense_damage_to_every_intact_block() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        max_segment_bytes: 1 << 30,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path(), cfg, Now::at(0))?;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for g in 0..4000u64 {
        commit_random(&mut w, &mut rng, 10, g)?;
    }
    let path = w.segment_path().to_path_buf();
    w.close(Now::at(4000))?;

    // Each block's offset and its events.
    let mut blocks: Vec<(u64, Vec<Seq>)> = Vec::new();
    for r in SegmentReader::open(&path, RecoveryMode::Strict)? {
        let r = r?;
        match blocks.last_mut() {
            Some((offset, seqs)) if *offset == r.offset => seqs.push(r.record.seq()),
            _ => blocks.push((r.offset, vec![r.record.seq()])),
        }
    }
    assert_eq!(blocks.len(), 4000);
    let mut bytes = fs::read(&path)?;
    let file_len = bytes.len();
    assert!(file_len > 2 << 20, "a segment of {file_len} bytes");
    // A byte in the payload of a third of the blocks (not the last, which
    // would be a torn tail); the seqs of the blocks kept.
    let mut kept = Vec::new();
    for (i, (offset, seqs)) in blocks.iter().enumerate() {
        if i + 1 < blocks.len() && rng.next() % 16 < 6 {
            bytes[*offset as usize + 20] ^= 0x40;
        } else {
            kept.extend_from_slice(seqs);
        }
    }
    fs::write(&path, &bytes)?;

    let mut reader = SegmentReader::open(&path, RecoveryMode::Salvage)?;
    let read: Vec<Seq> = reader
        .by_ref()
        .filter_map(|r| match r {
            Ok(r) if is_event(&r.record) => Some(Ok(r.record.seq())),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    let limit: Vec<_> = reader
        .skipped()
        .iter()
        .filter(|s| s.reason.contains("work limit"))
        .collect();
    assert!(limit.is_empty(), "the search gave up: {limit:?}");
    assert_eq!(read.len(), kept.len(), "events kept");
    assert_eq!(read, kept);
    Ok(())
}

/// Appends `n` events whose values are random hex digits (so that blocks
/// do not compress to nothing) and commits them as one group at `now`.
fn commit_random(w: &mut LogWriter, rng: &mut Rng, n: u64, now: u64) -> TestResult {
    for _ in 0..n {
        let seq = w.next_seq();
        let hex: String = (0..4).map(|_| format!("{:016x}", rng.next())).collect();
        w.append(&LogRecord::Event {
            seq,
            time_ms: now,
            event: event_with(seq, Value::str(&hex)),
        })?;
    }
    w.commit(Now::at(now))?;
    Ok(())
}

/// A damaged length field alone is repaired by the block's own structure
/// and CRC also in large blocks: a records area of thousands of records,
/// a zstd frame of many zstd blocks.
#[test]
fn a_damaged_length_is_repaired_in_large_blocks_of_either_kind() -> TestResult {
    for compress in [false, true] {
        let tmp = tempfile::tempdir()?;
        let cfg = WriterConfig {
            compress_min_bytes: if compress { 256 } else { usize::MAX },
            ..config()
        };
        let mut w = LogWriter::open(tmp.path(), cfg, Now::at(0))?;
        let mut rng = Rng(7);
        commit_random(&mut w, &mut rng, 3, 0)?;
        commit_random(&mut w, &mut rng, 5000, 1)?;
        commit_random(&mut w, &mut rng, 3, 2)?;
        let path = w.segment_path().to_path_buf();
        w.close(Now::at(3))?;
        let all = read_strict(tmp.path())?;
        let (starts, _) = block_starts(&path)?;
        assert_eq!(starts.len(), 3);
        let bytes = fs::read(&path)?;
        let big = starts[1] as usize;
        let len = u32::from_le_bytes([bytes[big], bytes[big + 1], bytes[big + 2], bytes[big + 3]]);
        assert!(len > 200_000, "a block of {len} bytes");
        assert_eq!(bytes[big + 8], u8::from(compress), "compressed: {compress}");
        for (i, x) in [
            (0, 0x01),
            (1, 0x80),
            (2, 0x01),
            (2, 0xff),
            (3, 0x01),
            (0, 0xff),
        ] {
            let mut bad = bytes.clone();
            bad[big + i] ^= x;
            fs::write(&path, &bad)?;
            let ctx = format!("compressed {compress}, byte {i} ^ {x:#x}");
            let mut reader = SegmentReader::open(&path, RecoveryMode::Salvage)?;
            let got = reader
                .by_ref()
                .map(|r| r.map(|r| r.record))
                .collect::<Result<Vec<_>, _>>()?;
            assert_eq!(got, all, "{ctx}");
            let skipped = reader.skipped();
            assert_eq!(skipped.len(), 1, "{ctx}: {skipped:?}");
            assert_eq!(
                (skipped[0].offset, skipped[0].resumed_at, &skipped[0].lost),
                (starts[1], starts[2], &None),
                "{ctx}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_search_for_valid_blocks_is_bounded() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    commit_group(&mut w, 2, 0)?;
    let path = w.segment_path().to_path_buf();
    w.close(Now::at(0))?;
    // After the valid block: a damaged one, then 4 MiB of bytes in which
    // every 14th offset looks like the start of a 2 MiB block (each would
    // need 2 MiB read to refute: 600 GiB for a naive search).
    let mut bytes = fs::read(&path)?;
    bytes.extend_from_slice(&[0xff; 9]);
    let tile: [u8; 14] = [0, 0, 0x20, 0, 1, 2, 3, 4, 0, 0xe8, 3, 0, 0, 0x85];
    while bytes.len() < 4 << 20 {
        bytes.extend_from_slice(&tile);
    }
    fs::write(&path, &bytes)?;
    for mode in [RecoveryMode::TruncateTail, RecoveryMode::Salvage] {
        // Never taken for a torn tail: valid blocks might follow.
        match LogWriter::open(tmp.path(), with_mode(mode), Now::at(0)) {
            Err(LogError::Corrupt { reason, .. }) if mode == RecoveryMode::TruncateTail => {
                assert!(reason.contains("work limit"), "{reason}")
            }
            Ok(w) if mode == RecoveryMode::Salvage => {
                let report = w.recovery().salvaged.clone().ok_or("nothing salvaged")?;
                assert!(report.skipped[0].reason.contains("work limit"));
            }
            other => return Err(format!("{mode:?}: {other:?}").into()),
        }
    }
    assert_eq!(
        blank_lost(read_strict(tmp.path())?),
        without(&records(2), 2..2)
    );
    Ok(())
}

#[test]
fn a_gap_between_segments_is_detected() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let w = four_segments(tmp.path())?;
    drop(w);
    let segs = segments(tmp.path())?;
    fs::remove_file(&segs[1].path)?;
    let res: Result<Vec<_>, _> = LogReader::open(tmp.path(), 0)?.collect();
    match res {
        Err(LogError::Gap {
            file,
            expected,
            found,
        }) => {
            assert_eq!(file, segs[2].path);
            assert_eq!((expected, found), (4, 7));
        }
        other => return Err(format!("{other:?}").into()),
    }
    // A segment whose header disagrees with its name is corrupt.
    fs::copy(&segs[2].path, tmp.path().join(segment_file_name(4)))?;
    let res: Result<Vec<_>, _> = LogReader::open(tmp.path(), 0)?.collect();
    assert!(
        matches!(res, Err(LogError::Corrupt { offset: 0, .. })),
        "{res:?}"
    );
    Ok(())
}

#[test]
fn a_reopened_writer_continues_after_the_last_record() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    commit_group(&mut w, 4, 0)?;
    w.append(&record(5))?;
    drop(w); // the pending record is lost: it was never committed
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(10))?;
    let rep = w.recovery().clone();
    assert_eq!((rep.records, rep.dropped_bytes, rep.next_seq), (4, 0, 5));
    commit_group(&mut w, 4, 10)?;
    w.close(Now::at(10))?;
    assert_eq!(
        segments(tmp.path())?.len(),
        1,
        "reopening appends to the segment"
    );
    assert_eq!(read_all(tmp.path())?, records(8));
    Ok(())
}

#[test]
fn a_torn_header_of_the_newest_segment_is_rewritten() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let w = four_segments(tmp.path())?;
    let last = w.segment_path().to_path_buf();
    drop(w);
    fs::write(&last, b"DKVLOG")?;
    let w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    assert!(w.recovery().header_rewritten);
    assert_eq!(w.recovery().next_seq, 10);
    assert_eq!(w.recovery().dropped_bytes, 6);
    drop(w);
    assert_eq!(read_all(tmp.path())?.len(), 9);
    let kept = take_kept(tmp.path())?;
    assert_eq!(
        kept,
        vec![(
            format!("{}.torn-0-0", segment_file_name(10)),
            b"DKVLOG".to_vec()
        )]
    );
    // Something that is not a segment at all is never overwritten.
    fs::write(&last, b"precious data, not a log")?;
    assert!(matches!(
        LogWriter::open(tmp.path(), config(), Now::at(0)),
        Err(LogError::Corrupt { offset: 0, .. })
    ));
    Ok(())
}

/// What opening a writer on `dir` in `mode` leads to, by the road a node
/// start takes: a reader reads the log first (its error is the start's
/// error), and the writer takes the reader's scan of the newest segment.
/// Returns the report (or the error's text), the newest segment's bytes
/// afterwards and the files kept in `damaged/`.
type Opened = (
    Result<RecoveryReport, String>,
    Vec<u8>,
    Vec<(String, Vec<u8>)>,
);

fn open_after_reading(dir: &Path, last: &Path, mode: RecoveryMode) -> BoxResult<Opened> {
    let mut reader = LogReader::open_with(dir, 0, mode)?;
    let read: Result<Vec<LogRecord>, LogError> = reader.by_ref().collect();
    let res = match read {
        Err(e) => Err(e.to_string()),
        Ok(_) => {
            let scan = reader.take_newest_scan();
            if mode != RecoveryMode::Salvage || reader.skipped().is_empty() {
                assert!(scan.is_some(), "a clean read scans the newest segment");
            }
            LogWriter::open_with_scan(dir, with_mode(mode), Now::at(0), scan)
                .map(|w| w.recovery().clone())
                .map_err(|e| e.to_string())
        }
    };
    Ok((res, fs::read(last)?, take_kept(dir)?))
}

/// As [`open_after_reading`], by the writer alone.
fn open_alone(dir: &Path, last: &Path, mode: RecoveryMode) -> BoxResult<Opened> {
    let res = LogWriter::open(dir, with_mode(mode), Now::at(0))
        .map(|w| w.recovery().clone())
        .map_err(|e| e.to_string());
    Ok((res, fs::read(last)?, take_kept(dir)?))
}

#[test]
fn a_writer_taking_the_readers_scan_recovers_exactly_as_one_that_reads() -> TestResult {
    use RecoveryMode::{Salvage, Strict, TruncateTail};
    let tmp = tempfile::tempdir()?;
    let (_, last, bytes) = torn_tail_fixture(tmp.path())?;
    // Cuts, and a flipped bit, at every third offset (a different one in
    // each block, as the block lengths differ): clean, torn, corrupt and
    // salvageable files. Every cut and flip is checked against the writer
    // alone by the tests above.
    let mut damaged: Vec<Vec<u8>> = (0..=bytes.len())
        .step_by(3)
        .map(|cut| bytes[..cut].to_vec())
        .collect();
    for at in (1..bytes.len()).step_by(3) {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        damaged.push(b);
    }
    for (i, file) in damaged.iter().enumerate() {
        let modes: &[RecoveryMode] = match i % 3 {
            0 => &[TruncateTail, Strict, Salvage],
            _ => &[TruncateTail],
        };
        for &mode in modes {
            fs::write(&last, file)?;
            let alone = open_alone(tmp.path(), &last, mode)?;
            fs::write(&last, file)?;
            let read_first = open_after_reading(tmp.path(), &last, mode)?;
            match (&alone.0, &read_first.0) {
                // The reader may meet the damage first and name it its way;
                // either way nothing starts and nothing was changed.
                (Err(_), Err(_)) => {
                    assert_eq!(read_first.1, *file, "case {i} {mode:?}: unchanged");
                    assert_eq!(alone.1, *file, "case {i} {mode:?}: unchanged");
                }
                _ => assert_eq!(alone, read_first, "case {i} {mode:?}"),
            }
        }
    }
    Ok(())
}

#[test]
fn a_scan_of_a_file_that_changed_since_or_of_another_mode_is_not_used() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    commit_group(&mut w, 3, 0)?;
    let last = w.segment_path().to_path_buf();
    let mut reader = LogReader::open(tmp.path(), 0)?;
    assert_eq!(reader.by_ref().count(), 3);
    let scan = reader.take_newest_scan().ok_or("no scan")?;
    assert_eq!((scan.path(), scan.next_seq()), (last.as_path(), 4));
    // More was written after the scan: the writer reads the file itself.
    commit_group(&mut w, 2, 0)?;
    drop(w);
    let w = LogWriter::open_with_scan(tmp.path(), config(), Now::at(0), Some(scan.clone()))?;
    assert_eq!((w.recovery().records, w.next_seq()), (5, 6));
    drop(w);
    // A torn tail the scan (truncate mode) passed is an error in strict
    // mode: a strict writer does not take that scan.
    let len = fs::metadata(&last)?.len();
    let file = fs::OpenOptions::new().write(true).open(&last)?;
    file.set_len(len - 1)?;
    drop(file);
    let mut reader = LogReader::open(tmp.path(), 0)?;
    assert_eq!(reader.by_ref().count(), 3, "the last block is torn");
    let scan = reader.take_newest_scan().ok_or("no scan")?;
    assert!(scan.torn_tail().is_some());
    assert!(matches!(
        LogWriter::open_with_scan(
            tmp.path(),
            with_mode(RecoveryMode::Strict),
            Now::at(0),
            Some(scan.clone())
        ),
        Err(LogError::Corrupt { .. })
    ));
    let w = LogWriter::open_with_scan(tmp.path(), config(), Now::at(0), Some(scan))?;
    assert_eq!(w.next_seq(), 4);
    assert_eq!(
        w.recovery().dropped_bytes,
        len - 1 - w.recovery().valid_bytes
    );
    // A reader that stops early scans nothing.
    let mut reader = LogReader::open(tmp.path(), 0)?;
    assert!(reader.next().is_some());
    assert!(reader.take_newest_scan().is_none());
    Ok(())
}

#[test]
fn a_failed_write_stops_the_writer_and_reopening_recovers() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    commit_group(&mut w, 3, 0)?;
    w.fail_next_write_after = Some(5);
    assert!(matches!(
        commit_group(&mut w, 3, 0),
        Err(LogError::Io { .. })
    ));
    assert!(matches!(
        w.append(&record(7)),
        Err(LogError::InvalidInput(_))
    ));
    assert!(matches!(
        w.commit(Now::at(0)),
        Err(LogError::InvalidInput(_))
    ));
    drop(w);
    let w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    assert_eq!(w.recovery().next_seq, 4);
    drop(w);
    assert_eq!(read_all(tmp.path())?, records(3));
    Ok(())
}

#[test]
fn out_of_sequence_oversized_and_overflowing_appends_are_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        max_block_bytes: 300,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path(), cfg, Now::at(0))?;
    assert!(matches!(
        w.append(&record(2)),
        Err(LogError::InvalidInput(_))
    ));
    assert!(matches!(
        w.append(&state(1, 0)),
        Err(LogError::InvalidInput(_))
    ));
    w.append(&state(0, 0))?;
    w.commit(Now::at(0))?;
    let huge = UpdateEvent {
        value: Some(Value::str(&"x".repeat(400))),
        ..event(1)
    };
    assert!(matches!(
        w.append_event(0, &huge),
        Err(LogError::InvalidInput(_))
    ));
    let mut n = 0;
    let err = loop {
        match w.append(&record(w.next_seq())) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, LogError::Full { limit: 300, .. }), "{err}");
    assert!(w.pending_bytes() <= 300);
    // Commit, then the refused record fits.
    assert_eq!(w.commit(Now::at(0))?.records, n);
    w.append(&record(w.next_seq()))?;
    w.close(Now::at(0))?;
    assert_eq!(read_all(tmp.path())?.len() as u64, n + 2);
    // Another node's directory is not ours.
    assert!(matches!(
        LogWriter::open(tmp.path(), WriterConfig::new("n2"), Now::at(0)),
        Err(LogError::InvalidInput(_))
    ));
    Ok(())
}

/// A batch encoded ahead is written exactly as the same events appended
/// one by one: across full groups (each commit taking what fits), with a
/// batch out of sequence and a record larger than a block refused.
#[test]
fn a_batch_encoded_ahead_writes_the_bytes_appending_writes() -> TestResult {
    let cfg = WriterConfig {
        max_block_bytes: 1000,
        ..config()
    };
    let (one, batched) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut a = LogWriter::open(one.path(), cfg.clone(), Now::at(0))?;
    let mut b = LogWriter::open(batched.path(), cfg, Now::at(0))?;
    let mut batch = EventBatch::default();
    let mut commits = 0;
    for round in 0..3u64 {
        let time = 1000 + round;
        batch.start(b.next_seq(), time);
        for i in 0..40 {
            assert_eq!(batch.push(&event(round * 40 + i)), b.next_seq() + i);
        }
        let mut done = b.append_batch(&batch, 0)?;
        while done < batch.len() {
            assert!(done > 0 || b.pending_records() > 0, "no progress");
            b.commit(Now::at(time))?;
            commits += 1;
            done = b.append_batch(&batch, done)?;
        }
        b.commit(Now::at(time))?;
        for i in 0..40 {
            match a.append_event(time, &event(round * 40 + i)) {
                Err(LogError::Full { .. }) => {
                    a.commit(Now::at(time))?;
                    a.append_event(time, &event(round * 40 + i))?;
                }
                r => {
                    r?;
                }
            }
        }
        a.commit(Now::at(time))?;
    }
    assert!(commits >= 6, "the groups filled {commits} times");
    // A batch that does not continue the log, and one record too big.
    batch.start(b.next_seq() + 1, 0);
    batch.push(&event(1));
    assert!(matches!(
        b.append_batch(&batch, 0),
        Err(LogError::InvalidInput(_))
    ));
    batch.start(b.next_seq(), 0);
    batch.push(&UpdateEvent {
        value: Some(Value::str(&"x".repeat(2000))),
        ..event(1)
    });
    assert!(matches!(
        b.append_batch(&batch, 0),
        Err(LogError::InvalidInput(_))
    ));
    a.close(Now::at(0))?;
    b.close(Now::at(0))?;
    assert_eq!(read_all(one.path())?, read_all(batched.path())?);
    assert_eq!(read_all(batched.path())?.len(), 120);
    for (x, y) in segments(one.path())?.iter().zip(segments(batched.path())?) {
        assert_eq!(std::fs::read(&x.path)?, std::fs::read(&y.path)?);
    }
    Ok(())
}

#[test]
fn an_empty_directory_starts_at_the_configured_seq() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("a/b");
    let cfg = WriterConfig {
        first_seq: 500,
        ..config()
    };
    let mut w = LogWriter::open(&dir, cfg, Now::at(0))?;
    assert_eq!(w.recovery().segment, None);
    assert_eq!(w.next_seq(), 500);
    assert_eq!(w.append_event(0, &event(1))?, 500);
    w.close(Now::at(0))?;
    assert_eq!(LogReader::open(&dir, 500)?.count(), 1);
    assert!(matches!(
        LogReader::open(&dir, 499),
        Err(LogError::Gap { .. })
    ));
    assert!(LogReader::open(tmp.path(), 0)?.next().is_none());
    Ok(())
}

#[test]
fn a_block_that_passes_its_crc_but_cannot_be_decoded_is_never_cut_off() -> TestResult {
    use crate::block::{BlockHeader, FLAG_ZSTD};
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    commit_group(&mut w, 2, 0)?;
    let path = w.segment_path().to_path_buf();
    w.close(Now::at(0))?;
    let good = fs::read(&path)?;
    let mut lying_zstd = 1000u32.to_le_bytes().to_vec();
    lying_zstd.extend(zstd::bulk::compress(&[7u8; 100], 1)?);
    let bad_blocks: Vec<(u8, Vec<u8>)> = vec![
        (0x02, vec![4, 0, 0, 0, 0x90, 0x90, 0x90, 0x90]), // unknown flag
        (FLAG_ZSTD, lying_zstd),                          // wrong decompressed length
        (FLAG_ZSTD, vec![1, 2]),                          // no length prefix
        (0, Vec::new()),                                  // empty block
        (0, vec![9, 0, 0, 0, 1]),                         // record length too long
        (0, vec![1, 0, 0, 0, 0xc1]),                      // not msgpack
        (0, vec![1, 0, 0, 0, 0x80]),                      // not a record
    ];
    for (flags, payload) in bad_blocks {
        let mut bytes = good.clone();
        bytes.extend_from_slice(&BlockHeader::of(flags, &payload).encode());
        bytes.extend_from_slice(&payload);
        fs::write(&path, &bytes)?;
        for res in [
            LogWriter::open(tmp.path(), config(), Now::at(0)).map(|_| ()),
            LogReader::open(tmp.path(), 0)?
                .collect::<Result<Vec<_>, _>>()
                .map(|_| ()),
        ] {
            match res {
                Err(LogError::Corrupt { offset, .. }) => {
                    assert_eq!(offset, good.len() as u64, "flags {flags}")
                }
                other => return Err(format!("flags {flags}: {other:?}").into()),
            }
        }
        assert_eq!(fs::read(&path)?, bytes, "nothing was cut");
    }
    Ok(())
}

#[test]
fn records_out_of_place_in_a_valid_block_are_a_gap() -> TestResult {
    use crate::block::BlockHeader;
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    commit_group(&mut w, 2, 0)?;
    let path = w.segment_path().to_path_buf();
    w.close(Now::at(0))?;
    let good = fs::read(&path)?;
    // (record, expected, found): next event is 3, a state record must be 2.
    for (rec, expected, found) in [
        (record(4), 3, 4),
        (record(2), 3, 2),
        (state(3, 0), 2, 3),
        (state(1, 0), 2, 1),
    ] {
        let mut area = Vec::new();
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        crate::block::push_record(&mut area, &bytes);
        let mut file = good.clone();
        file.extend_from_slice(&BlockHeader::of(0, &area).encode());
        file.extend_from_slice(&area);
        fs::write(&path, &file)?;
        for res in [
            LogWriter::open(tmp.path(), config(), Now::at(0)).map(|_| ()),
            LogReader::open(tmp.path(), 0)?
                .collect::<Result<Vec<_>, _>>()
                .map(|_| ()),
            // Records before the reader's start are passed over, their
            // place still checked.
            LogReader::open(tmp.path(), 100)?
                .collect::<Result<Vec<_>, _>>()
                .map(|_| ()),
        ] {
            match res {
                Err(LogError::Gap {
                    file: f,
                    expected: e,
                    found: g,
                }) => {
                    assert_eq!(f, path);
                    assert_eq!((e, g), (expected, found), "{rec:?}");
                }
                other => return Err(format!("{rec:?}: {other:?}").into()),
            }
        }
    }
    Ok(())
}

/// The example in docs/format.md ("Event-log segments"), byte for byte.
#[test]
fn the_documented_example_is_byte_exact() -> TestResult {
    let want = "
        44 4b 56 4c 4f 47 0d 0a 01 00 02 00 6e 31
        01 00 00 00 00 00 00 00 00 68 e5 cf 8b 01 00 00
        54 ce a0 90
        7d 00 00 00 15 3d cb 54 00
        44 00 00 00
        84 a1 74 a1 65 a3 73 65 71 01 a2 6d 73 cf 00 00 01 8b cf e5 68 7b a2 65 76
        86 a4 6e 6f 64 65 a2 6e 31 a4 74 69 63 6b 05 a4 70 72 65 76 c0 a4 70 61 74 68
        d5 03 a1 61 a5 76 61 6c 75 65 07 a4 74 6f 63 6b 06
        31 00 00 00
        86 a1 74 a1 73 a3 73 65 71 01 a2 6d 73 cf 00 00 01 8b cf e5 68 7c a5 6e 6f 64
        65 73 81 a2 6e 31 05 a5 6b 6e 6f 77 6e 80 a7 64 65 6c 65 74 65 64 80";
    let want: Vec<u8> = want
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()?;
    let tmp = tempfile::tempdir()?;
    let t0 = 1_700_000_000_000;
    let mut w = LogWriter::open(tmp.path(), WriterConfig::new("n1"), Now::at(t0))?;
    let a = UpdateEvent {
        path: path!["a"],
        chain: Chain::single(NodeName::from("n1"), 5),
        value: Some(Value::Int(7)),
        tock: 6,
    };
    w.append_event(t0 + 123, &a)?;
    w.append(&LogRecord::State {
        seq: 1,
        time_ms: t0 + 124,
        nodes: vec![(NodeName::from("n1"), Some(5))],
        known: NodeSet::default(),
        deleted: NodeSet::default(),
        skipped: Default::default(),
    })?;
    w.commit(Now::at(t0 + 124))?;
    let path = w.segment_path().to_path_buf();
    w.close(Now::at(t0 + 124))?;
    assert_eq!(
        path.file_name(),
        Some("00000000000000000001.dkvlog".as_ref())
    );
    assert_eq!(fs::read(&path)?, want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn records_round_trip_through_files(
        groups in proptest::collection::vec(
            proptest::collection::vec(crate::record::tests::record(), 1..6), 1..6),
        max_segment_bytes in 200u64..2000,
    ) {
        let tmp = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let cfg = WriterConfig { max_segment_bytes, compress_min_bytes: 64, ..config() };
        let run = || -> Result<(Vec<LogRecord>, Vec<LogRecord>), LogError> {
            let mut w = LogWriter::open(tmp.path(), cfg, Now::at(0))?;
            let mut written = Vec::new();
            for g in &groups {
                for r in g {
                    let r = with_seq(r.clone(), w.next_seq());
                    w.append(&r)?;
                    written.push(r);
                }
                w.commit(Now::at(0))?;
            }
            w.close(Now::at(0))?;
            Ok((written, read_all(tmp.path())?))
        };
        let (written, read) = run().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(read, written);
    }

    #[test]
    fn arbitrary_segment_bytes_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        keep_header in any::<bool>(),
    ) {
        let run = || -> BoxResult<()> {
            let tmp = tempfile::tempdir()?;
            let path = tmp.path().join(segment_file_name(1));
            let mut bytes = Vec::new();
            if keep_header {
                bytes = SegmentHeader { node: NodeName::from(NODE), first_seq: 1, created_ms: 0 }
                    .encode()?;
            }
            bytes.extend_from_slice(&tail);
            fs::write(&path, &bytes)?;
            for mode in [RecoveryMode::Strict, RecoveryMode::TruncateTail, RecoveryMode::Salvage] {
                let _ = LogReader::open_with(tmp.path(), 0, mode)?.count();
                let cfg = WriterConfig { recovery: mode, ..config() };
                let _ = LogWriter::open(tmp.path(), cfg, Now::at(0));
            }
            Ok(())
        };
        run().map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

/// `r` renumbered to fit a writer whose next event seq is `next`.
fn with_seq(r: LogRecord, next: Seq) -> LogRecord {
    match r {
        LogRecord::Event { time_ms, event, .. } => LogRecord::Event {
            seq: next,
            time_ms,
            event,
        },
        LogRecord::State {
            time_ms,
            nodes,
            known,
            deleted,
            skipped,
            ..
        } => LogRecord::State {
            seq: next - 1,
            time_ms,
            nodes,
            known,
            deleted,
            skipped,
        },
        LogRecord::Lost {
            seq,
            time_ms,
            from,
            why,
        } => LogRecord::Lost {
            seq: next + (seq + 1 - from) - 1,
            time_ms,
            from: next,
            why,
        },
    }
}

#[test]
fn a_reader_from_a_seq_passes_over_what_comes_before_it() -> TestResult {
    use crate::block::BlockHeader;
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), Now::at(0))?;
    for i in 0..6 {
        commit_mixed(&mut w, 7, i)?;
    }
    let path = w.segment_path().to_path_buf();
    w.close(Now::at(9))?;
    let all = read_all(tmp.path())?;
    for from in [1, 2, 7, 8, 20, 42, 43, 100] {
        let got: Vec<LogRecord> = LogReader::open(tmp.path(), from)?.collect::<Result<_, _>>()?;
        let want: Vec<LogRecord> = all.iter().filter(|r| r.seq() >= from).cloned().collect();
        assert_eq!(got, want, "from {from}");
    }
    // An event whose head is right and whose body is not a record: passed
    // over before the reader's start, corrupt from it on.
    let good = fs::read(&path)?;
    let mut bytes = Vec::new();
    record(43).encode(&mut bytes);
    let cut = bytes.len() - 3;
    bytes.truncate(cut);
    let mut area = Vec::new();
    crate::block::push_record(&mut area, &bytes);
    let mut file = good;
    file.extend_from_slice(&BlockHeader::of(0, &area).encode());
    file.extend_from_slice(&area);
    fs::write(&path, &file)?;
    let past: Vec<LogRecord> = LogReader::open(tmp.path(), 44)?.collect::<Result<_, _>>()?;
    assert!(past.is_empty());
    for from in [0, 43] {
        match LogReader::open(tmp.path(), from)?.collect::<Result<Vec<_>, _>>() {
            Err(LogError::Corrupt { .. }) => {}
            other => return Err(format!("from {from}: {other:?}").into()),
        }
    }
    Ok(())
}
