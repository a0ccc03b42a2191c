//! The index against real segment files: built, kept current, and
//! repaired after each kind of staleness or damage.

use std::path::Path;
use std::sync::Arc;

use distkv_log::{EventLog, FsyncPolicy, LogLimits, LogWriter, Now, WriterConfig};
use distkv_model::{path, Chain, NodeName, Path as KvPath, UpdateEvent, Value};

use crate::{BlockEvents, HistoryIndex, IndexError};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn key(i: u64) -> KvPath {
    path!["k", i % 7]
}

/// A record of the in-memory log gives the index the key and tock its
/// event gives: paths of every kind of element, those the log keeps
/// beside its records too, strings with NUL bytes and numbers that are
/// equal across types.
#[test]
fn events_read_from_the_in_memory_log_give_the_keys_their_paths_give() {
    let paths = [
        path![],
        path!["a", "b\0c", ""],
        path![1i64, 1.0, true, -7i64, u64::MAX, 0.5, f64::NAN],
        path![Value::Nil, false, "ünï"],
        KvPath::new(vec![Value::str("x"), Value::Bin(Arc::from(&b"\0\x01"[..]))]),
        KvPath::new(vec![Value::Array(vec![Value::Int(1), Value::str("y")])]),
    ];
    let mut log = EventLog::new(LogLimits::default());
    let (mut from_log, mut from_paths) = (BlockEvents::default(), BlockEvents::default());
    for (i, p) in paths.iter().enumerate() {
        let ev = UpdateEvent {
            path: p.clone(),
            chain: Chain::single(NodeName::from("n1"), i as u64 + 1),
            value: Some(Value::uint(i as u64)),
            tock: 100 + i as u64,
        };
        let seq = log.push(&ev);
        from_paths.push(seq, ev.tock, &ev.path);
    }
    for (seq, entry) in log.read(1, usize::MAX).expect("records") {
        from_log.push_entry(seq, &entry);
    }
    assert_eq!(from_log.len(), paths.len());
    assert!(from_log.iter().eq(from_paths.iter()));
}

/// Taking the events a commit wrote leaves the others, keys intact.
#[test]
fn the_events_before_a_seq_are_taken_and_the_rest_kept() {
    let mut all = BlockEvents::default();
    for seq in 10..16 {
        all.push(seq, seq * 2, &key(seq));
    }
    let want: Vec<(u64, u64, Vec<u8>)> = all.iter().map(|(s, t, k)| (s, t, k.to_vec())).collect();
    let mut events = all.clone();
    let none = events.take_before(10);
    assert!(none.is_empty());
    let head = events.take_before(13);
    let got: Vec<_> = head
        .iter()
        .chain(events.iter())
        .map(|(s, t, k)| (s, t, k.to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!((head.len(), events.len()), (3, 3));
    let tail = events.take_before(100);
    assert!(events.is_empty());
    assert!(tail.iter().map(|e| e.0).eq(13..16));
}

/// Writes events `from ..= to` (key `k.<i % 7>`, value `i`) in blocks of
/// five, rotating every 20 events; reports each block to `index` if given.
fn write(log: &Path, from: u64, to: u64, index: Option<&mut HistoryIndex>) -> TestResult {
    let mut cfg = WriterConfig::new("n1");
    cfg.fsync = FsyncPolicy::Never;
    write_with(log, from, to, index, cfg)
}

/// As [`write`], with the writer configured by `cfg`.
fn write_with(
    log: &Path,
    from: u64,
    to: u64,
    mut index: Option<&mut HistoryIndex>,
    mut cfg: WriterConfig,
) -> TestResult {
    cfg.first_seq = from;
    let mut w = LogWriter::open(log, cfg, Now::at(from))?;
    let mut block = BlockEvents::default();
    for i in from..=to {
        let ev = UpdateEvent {
            path: key(i),
            chain: Chain::single(NodeName::from("n1"), i),
            value: Some(Value::uint(i)),
            tock: i,
        };
        let seq = w.append_event(1000 + i, &ev)?;
        block.push(seq, ev.tock, &ev.path);
        if i % 5 == 0 || i == to {
            let c = w.commit(Now::at(1000 + i))?;
            if let Some(ix) = index.as_deref_mut() {
                ix.record_commit(&c, w.next_seq(), 1000 + i, &block)?;
            }
            block.clear();
        }
        if i % 20 == 0 {
            w.rotate();
        }
    }
    w.close(Now::at(2000))?;
    Ok(())
}

/// The values of `k.<k>` as the index finds them.
fn values(ix: &HistoryIndex, k: u64) -> Result<Vec<u64>, IndexError> {
    let hits = ix.lookup(&key(k), false)?;
    let found = ix.fetch(&hits)?;
    Ok(found
        .iter()
        .map(|f| match &f.event.value {
            Some(Value::Int(i)) => *i as u64,
            other => panic!("unexpected value {other:?}"),
        })
        .collect())
}

fn expected(k: u64, from: u64, to: u64) -> Vec<u64> {
    (from..=to).filter(|i| i % 7 == k).collect()
}

#[test]
fn an_index_kept_by_the_writer_finds_every_change_and_needs_no_repair() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("log");
    let (mut ix, why) = HistoryIndex::open(&tmp.path().join("index"), &log, "n1")?;
    assert!(why.is_none());
    write(&log, 1, 100, Some(&mut ix))?;
    let r = ix.sync()?;
    assert!(r.complete(), "{:?}", r.incomplete);
    assert!(r.reindexed.is_empty() && r.caught_up.is_empty(), "{r:?}");
    for k in 0..7 {
        assert_eq!(values(&ix, k)?, expected(k, 1, 100));
    }
    // Recursive: everything below `k`.
    assert_eq!(ix.lookup(&path!["k"], true)?.len(), 100);
    assert_eq!(ix.lookup(&path!["k", 1u64, "x"], false)?.len(), 0);
    // The seek table finds the block holding a seq.
    let b = ix.block_before(43)?.ok_or("no block")?;
    assert_eq!((b.segment, b.first_seq), (41, 41));
    Ok(())
}

/// A writer with an fsync thread names a rotation's new segment only once
/// the one before is durable, so the index may be told of blocks of a
/// segment whose file is not there yet: it skips them and reads them from
/// the file once it is.
#[test]
fn blocks_of_a_segment_not_named_yet_are_read_once_it_is() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("log");
    let (mut ix, _) = HistoryIndex::open(&tmp.path().join("index"), &log, "n1")?;
    let mut cfg = WriterConfig::new("n1");
    cfg.fsync = FsyncPolicy::Interval(std::time::Duration::from_secs(1));
    cfg.sync_in_background = true;
    write_with(&log, 1, 100, Some(&mut ix), cfg)?;
    // A block of a segment that does not exist: nothing to index, no
    // error.
    let mut block = BlockEvents::default();
    block.push(101, 101, &key(101));
    let info = distkv_log::CommitInfo {
        records: 1,
        first_seq: 101,
        segment: 101,
        offset: 60,
        bytes: 40,
        ..Default::default()
    };
    ix.record_commit(&info, 102, 2000, &block)?;
    let r = ix.sync()?;
    assert!(r.complete(), "{:?}", r.incomplete);
    for k in 0..7 {
        assert_eq!(values(&ix, k)?, expected(k, 1, 100));
    }
    Ok(())
}

#[test]
fn a_missing_index_is_built_and_a_stale_one_caught_up() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("log");
    let dir = tmp.path().join("index");
    write(&log, 1, 50, None)?;
    {
        let (mut ix, _) = HistoryIndex::open(&dir, &log, "n1")?;
        let r = ix.sync()?;
        assert_eq!(r.reindexed, vec![1, 21, 41]);
        assert!(r.complete());
        assert_eq!(values(&ix, 3)?, expected(3, 1, 50));
        ix.flush()?;
    }
    // More events after the index was closed: caught up, not rebuilt.
    write(&log, 51, 90, None)?;
    let (mut ix, why) = HistoryIndex::open(&dir, &log, "n1")?;
    assert!(why.is_none());
    let r = ix.sync()?;
    assert_eq!(
        (r.caught_up.clone(), r.reindexed.clone()),
        (vec![41], vec![61, 81]),
        "{r:?}"
    );
    for k in 0..7 {
        assert_eq!(values(&ix, k)?, expected(k, 1, 90));
    }
    Ok(())
}

#[test]
fn segments_removed_or_rewritten_are_forgotten_or_indexed_again() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("log");
    let dir = tmp.path().join("index");
    write(&log, 1, 60, None)?;
    let (mut ix, _) = HistoryIndex::open(&dir, &log, "n1")?;
    ix.sync()?;
    // Retention deletes the oldest segment.
    std::fs::remove_file(log.join(distkv_log::segment::segment_file_name(1)))?;
    let r = ix.sync()?;
    assert_eq!(r.forgotten, vec![1]);
    // Their entries were a third of the live ones: purged at once.
    assert_eq!(r.purged, 20, "{r:?}");
    assert_eq!(values(&ix, 2)?, expected(2, 21, 60));
    // A segment rewritten with other blocks (as a salvage does): the
    // fingerprint no longer matches and it is indexed again.
    let seg = log.join(distkv_log::segment::segment_file_name(21));
    let bytes = std::fs::read(&seg)?;
    let other = tmp.path().join("other");
    write(&other, 21, 40, None)?;
    let mut rewritten = std::fs::read(other.join(distkv_log::segment::segment_file_name(21)))?;
    rewritten.truncate(bytes.len().min(rewritten.len()));
    assert_ne!(rewritten, bytes, "another writer, other header time");
    std::fs::write(&seg, &rewritten)?;
    let r = ix.sync()?;
    assert_eq!(r.reindexed, vec![21], "{r:?}");
    assert_eq!(values(&ix, 2)?, expected(2, 21, 60));
    Ok(())
}

#[test]
fn an_entry_that_points_at_damage_is_stale_never_a_wrong_answer() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("log");
    write(&log, 1, 20, None)?;
    let (mut ix, _) = HistoryIndex::open(&tmp.path().join("index"), &log, "n1")?;
    ix.sync()?;
    let seg = log.join(distkv_log::segment::segment_file_name(1));
    let mut bytes = std::fs::read(&seg)?;
    let hits = ix.lookup(&key(3), false)?;
    bytes[hits[0].offset as usize + 12] ^= 0x10;
    std::fs::write(&seg, &bytes)?;
    assert!(matches!(ix.fetch(&hits), Err(IndexError::Stale(_))));
    // A sync notices nothing at the last block, but the damage is reported
    // as incomplete once the segment is read again.
    Ok(())
}

#[test]
fn garbage_or_another_nodes_index_is_replaced() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("log");
    let dir = tmp.path().join("index");
    write(&log, 1, 30, None)?;
    {
        let (mut ix, _) = HistoryIndex::open(&dir, &log, "n2")?;
        ix.sync()?;
        ix.flush()?;
    }
    let (ix, why) = HistoryIndex::open(&dir, &log, "n1")?;
    assert!(why.ok_or("not replaced")?.contains("n2"));
    drop(ix);
    // Every file of the index overwritten with garbage.
    for entry in walk(&dir)? {
        let len = std::fs::metadata(&entry)?.len().max(64) as usize;
        let junk: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&entry, junk)?;
    }
    let (mut ix, why) = HistoryIndex::open(&dir, &log, "n1")?;
    assert!(why.is_some());
    assert!(ix.sync()?.complete());
    assert_eq!(values(&ix, 4)?, expected(4, 1, 30));
    // A plain file where the directory should be.
    drop(ix);
    std::fs::remove_dir_all(&dir)?;
    std::fs::write(&dir, b"not a directory")?;
    let (mut ix, why) = HistoryIndex::open(&dir, &log, "n1")?;
    assert!(why.is_some());
    assert!(ix.sync()?.complete());
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

/// Every seq's block as the seek table must find it: the block holding
/// the seq (blocks of five events, `write`'s layout).
fn check_seek_table(ix: &HistoryIndex, to: u64) -> TestResult {
    for seq in 1..=to {
        let b = ix.block_before(seq)?.ok_or("no block")?;
        let first = (seq - 1) / 5 * 5 + 1;
        assert_eq!(b.first_seq, first, "seq {seq}");
        assert_eq!(b.segment, (seq - 1) / 20 * 20 + 1, "seq {seq}");
    }
    Ok(())
}

#[test]
fn many_small_parts_and_chunks_answer_like_one() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("log");
    let dir = tmp.path().join("index");
    let small = crate::store::Limits {
        part_events: 7,
        chunk_bytes: 40,
    };
    {
        // Kept by the writer: parts cut every 7 events (and at each
        // segment), chunks of one or two entries; the last part is in
        // memory and must be found too.
        let (mut ix, _) = HistoryIndex::open(&dir, &log, "n1")?;
        ix.limits = small;
        write(&log, 1, 100, Some(&mut ix))?;
        for k in 0..7 {
            assert_eq!(values(&ix, k)?, expected(k, 1, 100));
        }
        assert_eq!(ix.lookup(&path!["k"], true)?.len(), 100);
        check_seek_table(&ix, 100)?;
        assert_eq!(ix.segments().values().map(|s| s.parts).sum::<u32>(), 9);
        ix.flush()?;
    }
    let (mut ix, why) = HistoryIndex::open(&dir, &log, "n1")?;
    assert!(why.is_none());
    let r = ix.sync()?;
    assert!(
        r.complete() && r.reindexed.is_empty() && r.caught_up.is_empty(),
        "{r:?}"
    );
    for k in 0..7 {
        assert_eq!(values(&ix, k)?, expected(k, 1, 100));
    }
    check_seek_table(&ix, 100)?;
    // Built from the segments with the same small limits.
    drop(ix);
    std::fs::remove_dir_all(&dir)?;
    let (mut ix, _) = HistoryIndex::open(&dir, &log, "n1")?;
    ix.limits = small;
    assert!(ix.sync()?.complete());
    for k in 0..7 {
        assert_eq!(values(&ix, k)?, expected(k, 1, 100));
    }
    check_seek_table(&ix, 100)?;
    Ok(())
}

/// The part files of the index in `dir`, by name.
fn part_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("parts"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    out.sort();
    Ok(out)
}

/// An index of events 1 ..= 60 (three segments, one part file each),
/// written and closed.
fn closed_index(log: &Path, dir: &Path) -> TestResult {
    write(log, 1, 60, None)?;
    let (mut ix, _) = HistoryIndex::open(dir, log, "n1")?;
    assert!(ix.sync()?.complete());
    ix.flush()?;
    assert_eq!(part_files(dir)?.len(), 3);
    Ok(())
}

/// Damage done to the part file of segment 21 while the index is closed.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncated,
    Deleted,
    ChunkByteFlipped,
    DirectoryByteFlipped,
    AnotherPartsFile,
}

fn damage(dir: &Path, how: Damage) -> TestResult {
    let files = part_files(dir)?;
    let file = &files[1];
    let mut bytes = std::fs::read(file)?;
    match how {
        Damage::Truncated => bytes.truncate(bytes.len() - 5),
        Damage::Deleted => {
            std::fs::remove_file(file)?;
            return Ok(());
        }
        // After the 24-byte header: the first chunk.
        Damage::ChunkByteFlipped => bytes[40] ^= 0x01,
        // Before the 24-byte footer: the chunk directory.
        Damage::DirectoryByteFlipped => {
            let at = bytes.len() - 30;
            bytes[at] ^= 0x01;
        }
        // The file of segment 41's part under segment 21's name.
        Damage::AnotherPartsFile => bytes = std::fs::read(&files[2])?,
    }
    std::fs::write(file, bytes)?;
    Ok(())
}

/// A node's index thread runs behind its writer: a block of a segment
/// that retention removed before the index got to it is skipped, not an
/// error that would end the index for the rest of the run.
#[test]
fn a_block_of_a_segment_already_removed_is_skipped() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("log");
    write(&log, 1, 60, None)?;
    let (mut ix, _) = HistoryIndex::open(&tmp.path().join("index"), &log, "n1")?;
    ix.sync()?;
    std::fs::remove_file(log.join(distkv_log::segment::segment_file_name(41)))?;
    let mut events = BlockEvents::default();
    events.push(61, 61, &key(61));
    ix.record_block(61, 34, 0, 200, 62, 0, &events)?;
    ix.record_block(41, 500, 0, 600, 62, 0, &events)?;
    assert_eq!(
        ix.segments().keys().copied().collect::<Vec<_>>(),
        vec![1, 21]
    );
    assert_eq!(values(&ix, 2)?, expected(2, 1, 40));
    Ok(())
}

#[test]
fn a_damaged_truncated_or_missing_part_file_gets_its_segment_indexed_again() -> TestResult {
    for how in [
        Damage::Truncated,
        Damage::Deleted,
        Damage::ChunkByteFlipped,
        Damage::DirectoryByteFlipped,
        Damage::AnotherPartsFile,
    ] {
        let tmp = tempfile::tempdir()?;
        let (log, dir) = (tmp.path().join("log"), tmp.path().join("index"));
        closed_index(&log, &dir)?;
        damage(&dir, how)?;
        let (mut ix, why) = HistoryIndex::open(&dir, &log, "n1")?;
        assert!(why.is_none(), "{how:?}: {why:?}");
        let r = ix.sync()?;
        assert!(r.complete(), "{how:?}: {r:?}");
        if matches!(how, Damage::ChunkByteFlipped) {
            // Only reading the chunk tells: the answer is "stale", never
            // a wrong one, and the damaged file is dropped...
            assert!(r.reindexed.is_empty(), "{how:?}: {r:?}");
            let answers: Vec<_> = (0..7).map(|k| values(&ix, k)).collect();
            assert!(
                answers
                    .iter()
                    .all(|a| matches!(a, Err(IndexError::Stale(_)))),
                "{how:?}: {answers:?}"
            );
            // ... so that the next sync indexes the segment again.
            let r = ix.sync()?;
            assert!(r.complete(), "{how:?}: {r:?}");
            assert_eq!(r.reindexed, vec![21], "{how:?}: {r:?}");
        } else {
            assert_eq!(r.reindexed, vec![21], "{how:?}: {r:?}");
        }
        for k in 0..7 {
            assert_eq!(values(&ix, k)?, expected(k, 1, 60), "{how:?}");
        }
        // The damaged file's replacement is of the new generation; the
        // old one is gone.
        let names: Vec<String> = part_files(&dir)?
            .iter()
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
            .collect();
        let gen = ix.segments()[&21].generation;
        assert_eq!(names.len(), 3, "{how:?}: {names:?}");
        assert!(
            names[1].starts_with(&format!("{:020}-{:010}-", 21, gen)),
            "{how:?}: {names:?}"
        );
    }
    Ok(())
}

#[test]
fn stray_part_files_are_removed_at_open_and_recorded_ones_kept() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, dir) = (tmp.path().join("log"), tmp.path().join("index"));
    closed_index(&log, &dir)?;
    let kept = part_files(&dir)?;
    let parts = dir.join("parts");
    // A part written but never recorded (a crash between its rename and
    // sled's batch), one of a generation no segment has, one being
    // written, and something else.
    let strays = [
        parts.join(format!("{:020}-{:010}-{:010}.part", 1, 1, 7)),
        parts.join(format!("{:020}-{:010}-{:010}.part", 21, 99, 0)),
        parts.join(format!("{:020}-{:010}-{:010}.part.tmp", 41, 3, 1)),
        parts.join("junk"),
    ];
    for s in &strays {
        std::fs::copy(&kept[0], s)?;
    }
    let (mut ix, why) = HistoryIndex::open(&dir, &log, "n1")?;
    assert!(why.is_none());
    assert_eq!(part_files(&dir)?, kept);
    let r = ix.sync()?;
    assert!(
        r.complete() && r.reindexed.is_empty() && r.caught_up.is_empty(),
        "{r:?}"
    );
    for k in 0..7 {
        assert_eq!(values(&ix, k)?, expected(k, 1, 60));
    }
    Ok(())
}

#[test]
fn forgotten_segments_and_old_generations_leave_no_part_files() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, dir) = (tmp.path().join("log"), tmp.path().join("index"));
    closed_index(&log, &dir)?;
    let (mut ix, _) = HistoryIndex::open(&dir, &log, "n1")?;
    ix.sync()?;
    let before = part_files(&dir)?;
    // Retention deletes the first segment: its part file goes with it.
    std::fs::remove_file(log.join(distkv_log::segment::segment_file_name(1)))?;
    assert_eq!(ix.sync()?.forgotten, vec![1]);
    assert_eq!(part_files(&dir)?, before[1..].to_vec());
    // Segment 41 replaced by another writer's: indexed again under a new
    // generation, the old generation's file removed.
    let other = tmp.path().join("other");
    write(&other, 41, 60, None)?;
    let name = distkv_log::segment::segment_file_name(41);
    std::fs::copy(other.join(&name), log.join(&name))?;
    assert_eq!(ix.sync()?.reindexed, vec![41]);
    let after = part_files(&dir)?;
    assert_eq!(after.len(), 2);
    assert_eq!(after[0], before[1]);
    assert!(!after.contains(&before[2]), "{after:?}");
    Ok(())
}

#[test]
fn a_part_that_cannot_be_written_is_never_recorded() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, dir) = (tmp.path().join("log"), tmp.path().join("index"));
    let (mut ix, _) = HistoryIndex::open(&dir, &log, "n1")?;
    // The part files' directory cannot be created: a file is in its way.
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("parts"), b"in the way")?;
    write(&log, 1, 10, Some(&mut ix))?;
    assert!(matches!(ix.flush(), Err(IndexError::Io { .. })));
    // Nothing names the part that was not written: the segment's state
    // is what sled holds (nothing indexed), in memory and on reopening.
    assert_eq!(ix.segments().get(&1).map_or(0, |s| s.parts), 0);
    assert_eq!(ix.live_events(), 0);
    drop(ix);
    std::fs::remove_file(dir.join("parts"))?;
    let (mut ix, _) = HistoryIndex::open(&dir, &log, "n1")?;
    let r = ix.sync()?;
    assert!(r.complete(), "{r:?}");
    assert_eq!(r.events, 10, "{r:?}");
    for k in 0..7 {
        assert_eq!(values(&ix, k)?, expected(k, 1, 10));
    }
    Ok(())
}
