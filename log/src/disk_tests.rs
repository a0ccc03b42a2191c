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
use crate::segment::segment_file_name;
use crate::*;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;
type TestResult = BoxResult<()>;

/// A log's records, its open segment's path and that segment's bytes.
type Fixture = (Vec<LogRecord>, PathBuf, Vec<u8>);

const NODE: &str = "n1";

fn event(i: u64) -> UpdateEvent {
    UpdateEvent {
        path: path!["test", "key", i % 7],
        chain: Chain::single(Arc::from(NODE), i),
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
    w.commit(now)
}

/// As [`commit_group`], with a state record after the events.
fn commit_mixed(w: &mut LogWriter, n: u64, now: u64) -> Result<CommitInfo, LogError> {
    for _ in 0..n {
        w.append(&record(w.next_seq()))?;
    }
    w.append(&state(w.next_seq() - 1, now))?;
    w.commit(now)
}

#[test]
fn records_round_trip_across_rotation() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        max_segment_bytes: 400,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path(), cfg, 0)?;
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
        w.commit(g)?;
    }
    w.close(100)?;
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
    let mut w = LogWriter::open(tmp.path(), config(), 0)?;
    let header_len = fs::metadata(w.segment_path())?.len();
    for _ in 0..10 {
        w.append_event(5, &event(w.next_seq()))?;
    }
    assert_eq!(w.pending_records(), 10);
    let info = w.commit(5)?;
    assert_eq!(info.records, 10);
    assert_eq!(info.first_seq, 1);
    assert_eq!(w.stats().blocks, 1);
    assert_eq!(w.written_seq(), 11);
    // Nothing pending: no block.
    assert_eq!(w.commit(6)?.records, 0);
    assert_eq!(w.stats().blocks, 1);
    let path = w.segment_path().to_path_buf();
    drop(w);
    assert_eq!(fs::metadata(&path)?.len(), header_len + info.bytes);
    let Ok(mut r) = BlockReader::open(&path)? else {
        return Err("header damaged".into());
    };
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
    let mut w = LogWriter::open(tmp.path(), config(), 0)?;
    let small = commit_group(&mut w, 1, 0)?;
    assert!(!small.compressed);
    let big = commit_group(&mut w, 40, 0)?;
    assert!(big.compressed);
    assert_eq!(w.stats().compressed_blocks, 1);
    w.close(0)?;
    assert_eq!(
        read_all(tmp.path())?,
        (1..=41).map(record).collect::<Vec<_>>()
    );
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
    let mut w = LogWriter::open(tmp.path().join("interval"), cfg, 0)?;
    assert_eq!(w.sync_deadline(), None, "nothing written yet");
    assert!(!commit_group(&mut w, 1, 100)?.synced);
    assert_eq!(w.sync_deadline(), Some(1000));
    assert!(!w.sync_if_due(999)?);
    assert!(!commit_group(&mut w, 1, 999)?.synced);
    assert!(commit_group(&mut w, 1, 1000)?.synced);
    assert_eq!(w.sync_deadline(), None);
    assert!(!commit_group(&mut w, 1, 1200)?.synced);
    // Idle: the caller's timer fires at the deadline.
    assert_eq!(w.sync_deadline(), Some(2000));
    assert!(!w.sync_if_due(1999)?);
    assert!(w.sync_if_due(2000)?);
    assert!(!w.sync_if_due(5000)?, "clean: nothing to sync");
    assert_eq!(w.stats().syncs, 2);

    let always = WriterConfig {
        fsync: FsyncPolicy::Always,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path().join("always"), always, 0)?;
    for t in 0..3 {
        assert!(commit_group(&mut w, 2, t)?.synced);
    }
    assert_eq!(w.stats().syncs, 3);
    assert_eq!(w.sync_deadline(), None);

    let mut w = LogWriter::open(tmp.path().join("never"), config(), 0)?;
    for t in 0..3 {
        assert!(!commit_group(&mut w, 2, t * 10_000)?.synced);
    }
    assert!(!w.sync_if_due(1 << 40)?);
    assert_eq!(w.stats().syncs, 0);
    w.sync(0)?;
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
    let mut w = LogWriter::open(tmp.path(), cfg, 0)?;
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
    let mut w = LogWriter::open(tmp.path(), cfg, 1_000)?;
    assert!(!commit_group(&mut w, 2, 1_000)?.rotated);
    assert!(!commit_group(&mut w, 2, 60_999)?.rotated);
    let info = commit_group(&mut w, 2, 61_000)?;
    assert!(info.rotated);
    assert_eq!(read_segment_header(w.segment_path())?.created_ms, 61_000);
    assert!(!commit_group(&mut w, 2, 61_001)?.rotated);
    w.close(61_001)?;
    assert_eq!(segments(tmp.path())?.len(), 2);
    assert_eq!(read_all(tmp.path())?.len(), 8);
    Ok(())
}

#[test]
fn rotation_on_request_and_never_of_an_empty_segment() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), 0)?;
    // No event yet: a request is dropped (the successor would have the same
    // first seq, and so the same name), state records or not.
    w.rotate();
    w.append(&state(0, 0))?;
    assert!(!w.commit(0)?.rotated);
    w.rotate();
    assert!(!commit_group(&mut w, 3, 0)?.rotated);
    w.rotate();
    assert_eq!(w.commit(0)?.records, 0, "nothing pending: nothing happens");
    assert!(commit_group(&mut w, 3, 0)?.rotated);
    assert!(!commit_group(&mut w, 3, 0)?.rotated);
    w.close(0)?;
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
    let mut w = LogWriter::open(dir, config(), 0)?;
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
    let Ok(mut r) = BlockReader::open(path)? else {
        return Err("header damaged".into());
    };
    let mut starts = vec![r.pos()];
    while let Next::Block { .. } = r.next_block()? {
        starts.push(r.pos());
    }
    let len = starts.pop().unwrap_or_default();
    Ok((starts, len))
}

/// Records of each block of `path`, in order.
fn block_records(path: &Path) -> BoxResult<Vec<u64>> {
    let Ok(mut r) = BlockReader::open(path)? else {
        return Err("header damaged".into());
    };
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
    let mut w = LogWriter::open(dir, config(), 0)?;
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
    w.close(0)?;
    let bytes = fs::read(&path)?;
    Ok((read_all(dir)?, path, bytes))
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
        let strict = WriterConfig {
            recovery: RecoveryMode::Strict,
            ..config()
        };
        match LogWriter::open(tmp.path(), strict, 0) {
            Ok(_) => assert!(at_boundary, "strict accepted a cut at {cut}"),
            Err(LogError::Corrupt { file, offset, .. }) => {
                assert!(!at_boundary, "strict refused a clean cut at {cut}");
                assert_eq!(file, last);
                assert!(offset <= cut, "cut {cut} reported at {offset}");
            }
            Err(e) => return Err(format!("cut {cut}: {e}").into()),
        }
        let strict_read: Result<Vec<_>, _> =
            LogReader::open_with(tmp.path(), 0, RecoveryMode::Strict)?.collect();
        assert_eq!(strict_read.is_ok(), at_boundary, "cut {cut}");
        assert_eq!(fs::metadata(&last)?.len(), cut, "strict never repairs");

        // TruncateTail: the complete blocks before the cut survive.
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
        let mut w = LogWriter::open(tmp.path(), config(), 0)?;
        let rep = w.recovery().clone();
        let valid = if cut < header_len {
            assert!(rep.header_rewritten, "cut {cut}");
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
        assert_eq!(rep.dropped_bytes, cut - valid, "cut {cut}");
        let events = want.iter().filter(|r| is_event(r)).count() as u64;
        assert_eq!(rep.next_seq, events + 1, "cut {cut}");
        // The writer goes on right after the last valid record.
        let next = record(w.next_seq());
        w.append(&next)?;
        w.close(0)?;
        let got = LogReader::open_with(tmp.path(), 0, RecoveryMode::Strict)?
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(got.len(), want.len() + 1, "cut {cut}");
        assert_eq!(&got[..want.len()], want, "cut {cut}");
        assert_eq!(got[want.len()], next);
    }
    Ok(())
}

#[test]
fn every_byte_flip_in_the_last_segment_is_detected() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (all, last, bytes) = torn_tail_fixture(tmp.path())?;
    let (starts, len) = block_starts(&last)?;
    let per_block = block_records(&last)?;
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        fs::write(&last, &bad)?;
        // The damaged block (or the header, at 0) is named.
        let block = starts.iter().rposition(|&s| s as usize <= i);
        let want_offset = block.map_or(0, |b| starts[b]);
        let strict: Result<Vec<_>, _> =
            LogReader::open_with(tmp.path(), 0, RecoveryMode::Strict)?.collect();
        match strict {
            Err(LogError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, last, "flip at {i}");
                assert_eq!(offset, want_offset, "flip at {i}");
            }
            other => return Err(format!("flip at {i}: {other:?}").into()),
        }
        // Recovery cuts the damaged block and everything after it; a
        // damaged header is rewritten, unless the magic is wrong (then the
        // file may not be a segment at all and is left alone).
        let w = match LogWriter::open(tmp.path(), config(), 0) {
            Err(LogError::Corrupt { offset: 0, .. }) if i < 8 => continue,
            other => other?,
        };
        let kept = block.map_or(0, |b| per_block[..b].iter().sum::<u64>());
        let want = &all[..(4 + kept) as usize];
        let events = want.iter().filter(|r| is_event(r)).count() as u64;
        assert_eq!(w.recovery().next_seq, events + 1, "flip at {i}");
        assert_eq!(w.recovery().dropped_bytes, len - want_offset, "flip at {i}");
        assert_eq!(
            w.recovery().header_rewritten,
            block.is_none(),
            "flip at {i}"
        );
        drop(w);
        assert_eq!(read_all(tmp.path())?, want, "flip at {i}");
    }
    Ok(())
}

#[test]
fn a_flip_in_a_closed_segment_is_corrupt_naming_file_and_offset() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (all, _, _) = torn_tail_fixture(tmp.path())?;
    let closed = segments(tmp.path())?[0].path.clone();
    let bytes = fs::read(&closed)?;
    let (starts, _) = block_starts(&closed)?;
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x80;
        fs::write(&closed, &bad)?;
        let want_offset = starts
            .iter()
            .rev()
            .find(|&&s| s as usize <= i)
            .copied()
            .unwrap_or(0);
        // Even the lenient mode refuses: damage in a closed segment is never a torn tail.
        let res: Result<Vec<_>, _> = LogReader::open(tmp.path(), 0)?.collect();
        match res {
            Err(LogError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, closed, "flip at {i}");
                assert_eq!(offset, want_offset, "flip at {i}");
            }
            other => return Err(format!("flip at {i}: {other:?}").into()),
        }
    }
    fs::write(&closed, &bytes)?;
    assert_eq!(read_all(tmp.path())?, all);
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
    let mut w = LogWriter::open(tmp.path(), config(), 0)?;
    commit_group(&mut w, 4, 0)?;
    w.append(&record(5))?;
    drop(w); // the pending record is lost: it was never committed
    let mut w = LogWriter::open(tmp.path(), config(), 10)?;
    let rep = w.recovery().clone();
    assert_eq!((rep.records, rep.dropped_bytes, rep.next_seq), (4, 0, 5));
    commit_group(&mut w, 4, 10)?;
    w.close(10)?;
    assert_eq!(
        segments(tmp.path())?.len(),
        1,
        "reopening appends to the segment"
    );
    assert_eq!(
        read_all(tmp.path())?,
        (1..=8).map(record).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_torn_header_of_the_newest_segment_is_rewritten() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let w = four_segments(tmp.path())?;
    let last = w.segment_path().to_path_buf();
    drop(w);
    fs::write(&last, b"DKVLOG")?;
    let w = LogWriter::open(tmp.path(), config(), 0)?;
    assert!(w.recovery().header_rewritten);
    assert_eq!(w.recovery().next_seq, 10);
    assert_eq!(w.recovery().dropped_bytes, 6);
    drop(w);
    assert_eq!(read_all(tmp.path())?.len(), 9);
    // Something that is not a segment at all is never overwritten.
    fs::write(&last, b"precious data, not a log")?;
    assert!(matches!(
        LogWriter::open(tmp.path(), config(), 0),
        Err(LogError::Corrupt { offset: 0, .. })
    ));
    Ok(())
}

#[test]
fn a_failed_write_stops_the_writer_and_reopening_recovers() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let mut w = LogWriter::open(tmp.path(), config(), 0)?;
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
    assert!(matches!(w.commit(0), Err(LogError::InvalidInput(_))));
    drop(w);
    let w = LogWriter::open(tmp.path(), config(), 0)?;
    assert_eq!(w.recovery().next_seq, 4);
    drop(w);
    assert_eq!(
        read_all(tmp.path())?,
        (1..=3).map(record).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn out_of_sequence_oversized_and_overflowing_appends_are_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cfg = WriterConfig {
        max_block_bytes: 300,
        ..config()
    };
    let mut w = LogWriter::open(tmp.path(), cfg, 0)?;
    assert!(matches!(
        w.append(&record(2)),
        Err(LogError::InvalidInput(_))
    ));
    assert!(matches!(
        w.append(&state(1, 0)),
        Err(LogError::InvalidInput(_))
    ));
    w.append(&state(0, 0))?;
    w.commit(0)?;
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
    assert_eq!(w.commit(0)?.records, n);
    w.append(&record(w.next_seq()))?;
    w.close(0)?;
    assert_eq!(read_all(tmp.path())?.len() as u64, n + 2);
    // Another node's directory is not ours.
    assert!(matches!(
        LogWriter::open(tmp.path(), WriterConfig::new("n2"), 0),
        Err(LogError::InvalidInput(_))
    ));
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
    let mut w = LogWriter::open(&dir, cfg, 0)?;
    assert_eq!(w.recovery().segment, None);
    assert_eq!(w.next_seq(), 500);
    assert_eq!(w.append_event(0, &event(1))?, 500);
    w.close(0)?;
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
    let mut w = LogWriter::open(tmp.path(), config(), 0)?;
    commit_group(&mut w, 2, 0)?;
    let path = w.segment_path().to_path_buf();
    w.close(0)?;
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
            LogWriter::open(tmp.path(), config(), 0).map(|_| ()),
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
    let mut w = LogWriter::open(tmp.path(), config(), 0)?;
    commit_group(&mut w, 2, 0)?;
    let path = w.segment_path().to_path_buf();
    w.close(0)?;
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
            LogWriter::open(tmp.path(), config(), 0).map(|_| ()),
            LogReader::open(tmp.path(), 0)?
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
    let mut w = LogWriter::open(tmp.path(), WriterConfig::new("n1"), t0)?;
    let a = UpdateEvent {
        path: path!["a"],
        chain: Chain::single(Arc::from("n1"), 5),
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
    w.commit(t0 + 124)?;
    let path = w.segment_path().to_path_buf();
    w.close(t0 + 124)?;
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
            let mut w = LogWriter::open(tmp.path(), cfg, 0)?;
            let mut written = Vec::new();
            for g in &groups {
                for r in g {
                    let r = with_seq(r.clone(), w.next_seq());
                    w.append(&r)?;
                    written.push(r);
                }
                w.commit(0)?;
            }
            w.close(0)?;
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
            for mode in [RecoveryMode::Strict, RecoveryMode::TruncateTail] {
                let _ = LogReader::open_with(tmp.path(), 0, mode)?.count();
                let cfg = WriterConfig { recovery: mode, ..config() };
                let _ = LogWriter::open(tmp.path(), cfg, 0);
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
    }
}
