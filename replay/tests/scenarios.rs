//! Scenario tests of `distkv-replay`: history files are built directly
//! with the node's state machine, the segment writer and the snapshot glue
//! (no server process), then read back through the library and the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use anyhow::{anyhow, ensure, Result};
use distkv_core::persist::meta::Meta;
use distkv_core::persist::recover::snapshot_name;
use distkv_core::persist::snap;
use distkv_core::pyfiles::PyWriter;
use distkv_core::state::{Applied, State};
use distkv_log::writer::{FsyncPolicy, LogWriter, Now, WriterConfig};
use distkv_log::{LogLimits, LogRecord, SegmentReader};
use distkv_model::{path, Chain, NodeName, NodeSet, Path as KvPath, UpdateEvent, Value};
use distkv_replay::audit::{audit, AuditReport, ConflictKind, Problem};
use distkv_replay::diff::{diff_walk, load_side, DiffKind, PathDiff};
use distkv_replay::engine::{Target, LIMITS};
use distkv_replay::history::history;
use distkv_replay::restore::restore;
use distkv_replay::source::{Damage, DamageKind, Pos};

/// A node writing a data directory as the durable node does: every applied
/// event goes to the log, state records and snapshots on request.
struct NodeFiles {
    dir: PathBuf,
    state: State,
    writer: Option<LogWriter>,
    now: u64,
}

const T0: u64 = 1_700_000_000_000;

impl NodeFiles {
    fn new(root: &Path, name: &str) -> Result<NodeFiles> {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("snap"))?;
        Meta {
            node: name.to_string(),
            reserved_tick: 0,
        }
        .store(&dir)?;
        let mut cfg = WriterConfig::new(name);
        cfg.fsync = FsyncPolicy::Never;
        let writer = LogWriter::open(dir.join("log"), cfg, Now::at(T0))?;
        let mut state = State::new(name, LogLimits::default());
        state.make_ready();
        Ok(NodeFiles {
            dir,
            state,
            writer: Some(writer),
            now: T0,
        })
    }

    fn writer(&mut self) -> Result<&mut LogWriter> {
        self.writer.as_mut().ok_or_else(|| anyhow!("closed"))
    }

    fn log(&mut self, ev: &UpdateEvent) -> Result<()> {
        self.now += 1000;
        let now = self.now;
        let w = self.writer()?;
        w.append_event(now, ev)?;
        w.commit(Now::at(now))?;
        Ok(())
    }

    /// A local change (`None` deletes).
    fn set(&mut self, p: &KvPath, v: Option<Value>) -> Result<Arc<UpdateEvent>> {
        let ev = self.state.local_change(p, v)?;
        self.log(&ev)?;
        Ok(ev)
    }

    /// A change received from another node.
    fn receive(&mut self, ev: &UpdateEvent) -> Result<Applied> {
        let a = self.state.apply(ev.clone());
        if let Applied::Stored(_) = a {
            self.log(ev)?;
        }
        Ok(a)
    }

    fn seq(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.next_seq() - 1)
    }

    fn state_record(&mut self) -> Result<()> {
        let mut known = NodeSet::default();
        let mut deleted = NodeSet::default();
        let mut nodes = Vec::new();
        for (n, i) in self.state.nodes() {
            nodes.push((n.clone(), i.tick()));
            known.0.insert(n.clone(), i.superseded().clone());
            deleted.0.insert(n.clone(), i.deleted().clone());
        }
        let seq = self.seq();
        let now = self.now;
        let w = self.writer()?;
        w.append(&LogRecord::State {
            seq,
            time_ms: now,
            nodes,
            known,
            deleted,
            skipped: Default::default(),
        })?;
        w.commit(Now::at(now))?;
        Ok(())
    }

    fn snapshot(&mut self) -> Result<PathBuf> {
        let seq = self.seq();
        let path = self.dir.join("snap").join(snapshot_name(seq));
        snap::write(&self.state, &path, true, self.now, seq)?.finish()?;
        Ok(path)
    }

    fn rotate(&mut self) -> Result<()> {
        self.writer()?.rotate();
        Ok(())
    }

    /// A clean stop: everything written, the reservation shrunk to the
    /// tick used.
    fn close(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            w.close(Now::at(self.now))?;
        }
        Meta {
            node: self.state.me().to_string(),
            reserved_tick: self.state.tick().unwrap_or(0),
        }
        .store(&self.dir)?;
        Ok(())
    }

    fn segments(&self) -> Result<Vec<PathBuf>> {
        Ok(distkv_log::list_segments(&self.dir.join("log"))?
            .into_iter()
            .map(|s| s.path)
            .collect())
    }
}

fn bin(args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_distkv-replay"))
        .arg("--quiet")
        .args(args)
        .output()?)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn v(i: i64) -> Option<Value> {
    Some(Value::Int(i))
}

/// A node with a little of everything, its changes spread over several
/// segments, with state records and two snapshots. Returns the node and,
/// for each event, (tock, time, head tick, digest right after it).
/// Per event of [`busy_node`]: its tock, its time, its head tick and the
/// state's digest right after it.
type Trace = Vec<(u64, u64, u64, u128)>;

fn busy_node(root: &Path) -> Result<(NodeFiles, Trace)> {
    let mut n = NodeFiles::new(root, "n1")?;
    let mut after = Vec::new();
    let remote = |tick: u64, tock: u64, i: i64| UpdateEvent {
        path: path!["remote", i],
        chain: Chain::single(NodeName::from("n2"), tick),
        value: v(i),
        tock,
    };
    for i in 0..60i64 {
        let ev = match i % 10 {
            3 => n.set(&path!["data", i % 7], None)?,
            5 => {
                let ev = remote((i / 10 + 1) as u64, n.state.tock().peek() + 1, i);
                n.receive(&ev)?;
                Arc::new(ev)
            }
            7 => n.set(&KvPath::new(vec![Value::Nil, Value::str("meta")]), v(i))?,
            _ => n.set(&path!["data", i % 7], Some(Value::str(&format!("v{i}"))))?,
        };
        after.push((ev.tock, n.now, ev.chain.head().tick, n.state.digest()));
        if i % 8 == 7 {
            n.state_record()?;
        }
        if i == 19 || i == 39 {
            n.snapshot()?;
        }
        if i % 15 == 14 {
            n.rotate()?;
        }
    }
    n.state_record()?;
    n.close()?;
    Ok((n, after))
}

/// Where the blocks of an intact segment start.
fn block_offsets(seg: &Path) -> Result<Vec<u64>> {
    let mut offsets: Vec<u64> = SegmentReader::open(seg, distkv_log::RecoveryMode::Strict)?
        .map(|r| r.map(|r| r.offset))
        .collect::<Result<_, _>>()?;
    offsets.dedup();
    Ok(offsets)
}

/// The damage an audit found.
fn damage_of(r: &AuditReport) -> Vec<&Damage> {
    r.problems
        .iter()
        .filter_map(|p| match p {
            Problem::Damage(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn dump_shows_headers_events_state_records_and_snapshot_items() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut n = NodeFiles::new(tmp.path(), "n1")?;
    n.set(&path!["a"], v(1))?;
    n.set(&path!["b", "c"], Some(Value::str("x")))?;
    n.set(&path!["a"], None)?;
    n.state_record()?;
    let snap = n.snapshot()?;
    n.close()?;

    let mut items = Vec::new();
    let sum = distkv_replay::dump::dump(std::slice::from_ref(&n.dir), None, &mut |i| {
        items.push(i.clone());
        Ok(())
    })?;
    ensure!(sum.damage == 0, "no damage expected");
    let kinds: Vec<String> = items
        .iter()
        .filter_map(|i| {
            i.value
                .get("kind")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "meta", "snapshot", "node", "entry", "entry", "segment", "event", "event", "event",
            "state"
        ]
    );
    let texts: Vec<&str> = items.iter().map(|i| i.text.as_str()).collect();
    assert!(texts[6].starts_with("seq 1 2023-11-14T22:13:21.000Z tock 2 [n1:1] a = 1"));
    assert!(texts[8].contains("[n1:3] a deleted"), "{}", texts[8]);
    assert!(texts[9].contains("state: ticks n1=3"), "{}", texts[9]);

    // The binary: a path prefix keeps only what is below it; JSON is one
    // document.
    let o = bin(&["dump", "--prefix", "b", s(&snap)])?;
    assert_eq!(code(&o), 0);
    let out = stdout(&o);
    assert!(out.contains("b.c = 'x'"), "{out}");
    assert!(!out.contains("node n1 tick"), "{out}");
    let o = bin(&["--format", "json", "dump", s(&n.segments()?[0])])?;
    let out = stdout(&o);
    assert!(
        out.starts_with('[') && out.trim_end().ends_with(']'),
        "{out}"
    );
    assert!(out.contains(r#""kind":"event","seq":2"#), "{out}");
    let o = bin(&["--format", "yaml", "dump", s(&n.segments()?[0])])?;
    assert!(stdout(&o).contains("- chain: n1:1"), "{}", stdout(&o));
    Ok(())
}

#[test]
fn clean_files_pass_the_audit() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (n, _) = busy_node(tmp.path())?;
    let r = audit(std::slice::from_ref(&n.dir), true)?;
    ensure!(r.is_clean(), "{}", r.to_text());
    assert_eq!(r.stats.events, 60);
    let o = bin(&["audit", s(&n.dir)])?;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("no problems found"));
    Ok(())
}

#[test]
fn audit_finds_a_flipped_byte_with_file_and_offset() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (n, _) = busy_node(tmp.path())?;
    let segs = n.segments()?;
    ensure!(segs.len() >= 3, "want closed segments, got {}", segs.len());
    let victim = &segs[1];
    let offsets = block_offsets(victim)?;
    let block = offsets[3];
    let mut bytes = std::fs::read(victim)?;
    bytes[block as usize + 20] ^= 0x01;
    std::fs::write(victim, &bytes)?;

    let r = audit(std::slice::from_ref(&n.dir), true)?;
    let damage = damage_of(&r);
    ensure!(!damage.is_empty(), "{}", r.to_text());
    assert_eq!(damage[0].file, *victim);
    assert_eq!(damage[0].offset, Some(block));
    assert_eq!(damage[0].kind, DamageKind::Corrupt);

    let o = bin(&["audit", s(&n.dir)])?;
    assert_eq!(code(&o), 1);
    let want = format!("{}: corrupt at byte {block}", victim.display());
    assert!(stdout(&o).contains(&want), "{}", stdout(&o));
    // `dump` shows the records up to the damage, then the damage.
    let o = bin(&["dump", s(&n.dir)])?;
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(out.contains(&format!("DAMAGE {want}")), "{out}");
    Ok(())
}

#[test]
fn audit_tells_a_torn_tail_from_damage_with_valid_blocks_after_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut n = NodeFiles::new(tmp.path(), "n1")?;
    // One block per change: tick and seq i + 1 in block i.
    for i in 0..10i64 {
        n.set(&path!["k", i], v(i))?;
    }
    n.close()?;
    let seg = n.segments()?.pop().ok_or_else(|| anyhow!("no segment"))?;
    let offsets = block_offsets(&seg)?;
    let good = std::fs::read(&seg)?;
    let damage = |at: u64| -> Result<(Vec<Damage>, u64)> {
        let mut bytes = good.clone();
        bytes[at as usize + 12] ^= 0x01;
        std::fs::write(&seg, &bytes)?;
        let r = audit(std::slice::from_ref(&n.dir), true)?;
        Ok((damage_of(&r).into_iter().cloned().collect(), r.stats.events))
    };
    // The last block: a torn tail.
    let (d, events) = damage(offsets[9])?;
    assert_eq!(events, 9);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].kind, d[0].offset),
        (DamageKind::TornTail, Some(offsets[9]))
    );
    assert!(
        d[0].reason.contains("nothing valid follows"),
        "{}",
        d[0].reason
    );
    // A block in the middle: not a torn tail; what follows it is read.
    let (d, events) = damage(offsets[3])?;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(
        (d[0].kind, d[0].offset),
        (DamageKind::Corrupt, Some(offsets[3]))
    );
    for want in [
        "not a torn tail",
        &format!("from byte {}", offsets[4]),
        "salvage",
        "events 4 to 4 are lost",
    ] {
        assert!(
            d[0].reason.contains(want),
            "{want:?} not in {}",
            d[0].reason
        );
    }
    assert_eq!(events, 9, "the events after the damaged block are audited");
    // A restore keeps every change but the damaged one, and says why.
    let out = tmp.path().join("out.dkvsnap");
    let r = restore(std::slice::from_ref(&n.dir), &out, Target::All, None, true)?;
    ensure!(r.has_findings() && r.damage == d, "{}", r.to_text());
    let (st, _) = snap::load(&out, "n1", LIMITS)?;
    for i in 0..10i64 {
        let kept = st.entry(&path!["k", i]).and_then(|e| e.data()).is_some();
        assert_eq!(kept, i != 3, "k {i} restored: {kept}");
    }
    // Salvaged: the loss stays on record, and nobody has its tick.
    let mut cfg = WriterConfig::new("n1");
    cfg.recovery = distkv_log::RecoveryMode::Salvage;
    drop(LogWriter::open(n.dir.join("log"), cfg, Now::at(T0))?);
    let r = audit(std::slice::from_ref(&n.dir), true)?;
    let lost = r.problems.iter().any(|p| {
        matches!(p, Problem::Damage(d) if d.kind == DamageKind::Lost
            && d.reason.contains("events 4 to 4"))
    });
    let missing = r.problems.iter().any(|p| {
        matches!(p, Problem::Missing { node, ticks } if &**node == "n1" && ticks.to_string() == "4")
    });
    ensure!(lost && missing, "{}", r.to_text());
    Ok(())
}

#[test]
fn a_damaged_end_of_a_closed_segment_is_corruption_and_later_segments_are_read() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (n, after) = busy_node(tmp.path())?;
    let segs = n.segments()?;
    ensure!(segs.len() >= 3, "want closed segments, got {}", segs.len());
    let victim = &segs[1];
    let last = SegmentReader::open(victim, distkv_log::RecoveryMode::Strict)?
        .last()
        .ok_or_else(|| anyhow!("an empty segment"))??;
    let LogRecord::Event { seq, .. } = last.record else {
        return Err(anyhow!("the segment ends in {:?}", last.record));
    };
    let mut bytes = std::fs::read(victim)?;
    bytes[last.offset as usize + 12] ^= 0x01;
    std::fs::write(victim, &bytes)?;

    let r = audit(std::slice::from_ref(&n.dir), true)?;
    let damage = damage_of(&r);
    assert_eq!(damage.len(), 1, "{}", r.to_text());
    assert_eq!(
        (&damage[0].file, damage[0].offset, damage[0].kind),
        (victim, Some(last.offset), DamageKind::Corrupt)
    );
    for want in ["not the newest", &format!("from event {seq} on is lost")] {
        assert!(
            damage[0].reason.contains(want),
            "{want:?} not in {}",
            damage[0].reason
        );
    }
    assert_eq!(r.stats.events, after.len() as u64 - 1, "{}", r.to_text());
    Ok(())
}

/// The replay tools read damaged files as the node's recovery in salvage
/// mode does: a restore of the damaged files, the state the node recovers
/// from them (rewriting them) and a restore of the salvaged files have the
/// same digest. Damage in runs of blocks, and keys overwritten, so that
/// which events are kept decides which values win.
#[test]
fn a_restore_of_damaged_files_agrees_with_the_nodes_salvage() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut n = NodeFiles::new(tmp.path(), "n1")?;
    // One block per change.
    for i in 0..600i64 {
        n.set(&path!["k", i % 97], v(i))?;
    }
    n.close()?;
    let seg = n.segments()?.pop().ok_or_else(|| anyhow!("no segment"))?;
    let offsets = block_offsets(&seg)?;
    let mut bytes = std::fs::read(&seg)?;
    let mut damaged = 0;
    for (i, &at) in offsets.iter().enumerate().take(offsets.len() - 1) {
        if i % 9 < 3 && i % 2 == 0 || i % 31 == 5 {
            bytes[at as usize + 12] ^= 0x10;
            damaged += 1;
        }
    }
    std::fs::write(&seg, &bytes)?;

    let out = tmp.path().join("out.dkvsnap");
    let damaged_files = restore(std::slice::from_ref(&n.dir), &out, Target::All, None, true)?;
    ensure!(
        damaged_files.has_findings() && damaged_files.stats.events == 600 - damaged,
        "{}",
        damaged_files.to_text()
    );
    let mut c = distkv_core::persist::recover::DurableConfig::new(&n.dir);
    c.recovery = distkv_log::RecoveryMode::Salvage;
    let node = distkv_core::persist::recover::recover("n1", c, LIMITS, T0)?;
    assert_eq!(node.state.digest(), damaged_files.digest);
    drop(node);
    let salvaged = restore(std::slice::from_ref(&n.dir), &out, Target::All, None, true)?;
    assert_eq!(salvaged.digest, damaged_files.digest);
    Ok(())
}

#[test]
fn audit_finds_a_missing_tick_range() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut n = NodeFiles::new(tmp.path(), "n1")?;
    n.set(&path!["own"], v(1))?;
    // n2's changes 1, 2 and 6 reached this node; 3 to 5 never did.
    for tick in [1u64, 2, 6] {
        let tock = n.state.tock().peek() + 1;
        n.receive(&UpdateEvent {
            path: path!["from-n2", tick],
            chain: Chain::single(NodeName::from("n2"), tick),
            value: v(tick as i64),
            tock,
        })?;
    }
    n.close()?;
    let r = audit(std::slice::from_ref(&n.dir), true)?;
    let missing: Vec<String> = r
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::Missing { node, ticks } => Some(format!("{node}:{}", ticks)),
            _ => None,
        })
        .collect();
    assert_eq!(missing, ["n2:3-5"]);
    let o = bin(&["audit", s(&n.dir)])?;
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("missing: node n2 ticks 3-5"),
        "{}",
        stdout(&o)
    );
    Ok(())
}

#[test]
fn audit_finds_one_event_with_two_contents() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let forged = |value: &str| UpdateEvent {
        path: path!["k"],
        chain: Chain::single(NodeName::from("n3"), 1),
        value: Some(Value::str(value)),
        tock: 7,
    };
    let mut n1 = NodeFiles::new(tmp.path(), "n1")?;
    let mut n2 = NodeFiles::new(tmp.path(), "n2")?;
    // Each behind more records than a read-ahead batch holds: the places
    // are told across batches, whose records share a file name each.
    for (n, node) in [&mut n1, &mut n2].into_iter().enumerate() {
        for i in 0..3_000i64 {
            node.set(&path!["filler", n as i64, i], v(i))?;
        }
    }
    n1.receive(&forged("one"))?;
    n2.receive(&forged("other"))?;
    n1.close()?;
    n2.close()?;
    let r = audit(&[n1.dir.clone(), n2.dir.clone()], true)?;
    let dups: Vec<_> = r
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::Duplicate {
                node,
                tick,
                first,
                second,
            } => Some((node.to_string(), *tick, first.clone(), second.clone())),
            _ => None,
        })
        .collect();
    ensure!(dups.len() == 1, "{}", r.to_text());
    assert_eq!((dups[0].0.as_str(), dups[0].1), ("n3", 1));
    assert!(dups[0].2.file.starts_with(&n1.dir));
    assert!(dups[0].3.file.starts_with(&n2.dir));
    // The same event in two logs with the same content is no problem.
    let mut n4 = NodeFiles::new(tmp.path(), "n4")?;
    let mut n5 = NodeFiles::new(tmp.path(), "n5")?;
    n4.receive(&forged("same"))?;
    n5.receive(&forged("same"))?;
    n4.close()?;
    n5.close()?;
    let r = audit(&[n4.dir.clone(), n5.dir.clone()], true)?;
    ensure!(r.is_clean(), "{}", r.to_text());
    assert_eq!(r.stats.duplicates, 1);
    Ok(())
}

#[test]
fn audit_names_the_value_that_lost_a_conflict_and_where_it_is() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // n1 writes k while n2, unaware, writes it too with a later tock; n1
    // then receives n2's change, which wins: n1's own value is overwritten.
    let mut n1 = NodeFiles::new(tmp.path(), "n1")?;
    let mut n2 = NodeFiles::new(tmp.path(), "n2")?;
    n1.set(&path!["k"], Some(Value::str("from n1")))?;
    for i in 0..5 {
        n2.set(&path!["other", i], v(i))?;
    }
    let winner = n2.set(&path!["k"], Some(Value::str("from n2")))?;
    n1.receive(&winner)?;
    n1.close()?;
    n2.close()?;
    let r = audit(std::slice::from_ref(&n1.dir), true)?;
    let c: Vec<_> = r.conflicts().collect();
    ensure!(c.len() == 1, "{}", r.to_text());
    assert_eq!(c[0].kind, ConflictKind::Overwritten);
    assert_eq!(c[0].path, path!["k"]);
    assert_eq!(c[0].loser.value, Some(Value::str("from n1")));
    assert_eq!(c[0].winner.value, Some(Value::str("from n2")));
    let at = c[0].loser.loc.as_ref().ok_or_else(|| anyhow!("no place"))?;
    assert_eq!(&*at.file, n1.segments()?[0].as_path());
    assert!(matches!(at.pos, Pos::Seq { seq: 1, .. }), "{at:?}");

    // A change that arrives after a concurrent one with a higher tock, in
    // merged order, loses: n3 applied a low-tock change late.
    let mut n3 = NodeFiles::new(tmp.path(), "n3")?;
    for i in 0..10 {
        n3.set(&path!["busy", i], v(i))?;
    }
    let late = UpdateEvent {
        path: path!["k"],
        chain: Chain::single(NodeName::from("n4"), 1),
        value: Some(Value::str("from n4")),
        tock: 3,
    };
    n3.receive(&late)?;
    n3.close()?;
    let r = audit(&[n2.dir.clone(), n3.dir.clone()], true)?;
    let lost: Vec<_> = r
        .conflicts()
        .filter(|c| c.kind == ConflictKind::Lost)
        .collect();
    ensure!(lost.len() == 1, "{}", r.to_text());
    assert_eq!(lost[0].loser.value, Some(Value::str("from n4")));
    assert_eq!(
        lost[0].loser.loc.as_ref().and_then(|l| l.seq()),
        Some(11),
        "the 11th record of n3's log"
    );
    let o = bin(&["audit", s(&n1.dir)])?;
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("conflict (overwritten): k: kept 'from n2'"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("lost 'from n1' [n1:1]"),
        "{}",
        stdout(&o)
    );
    Ok(())
}

#[test]
fn audit_flags_impossible_chains() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("log");
    let mut cfg = WriterConfig::new("n1");
    cfg.fsync = FsyncPolicy::Never;
    let mut w = LogWriter::open(&dir, cfg, Now::at(T0))?;
    let link = |n: &str, t: u64| distkv_model::Link {
        node: NodeName::from(n),
        tick: t,
    };
    let ev = |p: &str, links: Vec<distkv_model::Link>, tock: u64| -> Result<UpdateEvent> {
        Ok(UpdateEvent {
            path: path![p],
            chain: Chain::from_links(links).ok_or_else(|| anyhow!("empty chain"))?,
            value: v(tock as i64),
            tock,
        })
    };
    w.append_event(T0, &ev("a", vec![link("n1", 1)], 1)?)?;
    w.append_event(T0, &ev("b", vec![link("n1", 2), link("n2", 0)], 2)?)?;
    w.append_event(T0, &ev("c", vec![link("n1", 3)], 3)?)?;
    w.append(&LogRecord::State {
        seq: 3,
        time_ms: T0,
        nodes: vec![(NodeName::from("n1"), Some(2))],
        known: NodeSet::default(),
        deleted: NodeSet::default(),
        skipped: Default::default(),
    })?;
    w.commit(Now::at(T0))?;
    w.append_event(T0, &ev("d", vec![link("n1", 4), link("n1", 1)], 4)?)?;
    w.commit(Now::at(T0 + 1))?;
    w.close(Now::at(T0 + 2))?;
    let r = audit(std::slice::from_ref(&dir), true)?;
    let text = r.to_text();
    assert!(text.contains("link n2:0 has tick 0"), "{text}");
    assert!(
        text.contains("names n1:3, beyond the tick 2 the state record"),
        "{text}"
    );
    assert!(text.contains("node appears twice"), "{text}");
    assert!(!r.is_clean());
    Ok(())
}

fn restored_digest(file: &Path) -> Result<u128> {
    let (st, _) = snap::load(file, "n1", LIMITS)?;
    Ok(st.digest())
}

#[test]
fn restore_until_tock_reproduces_the_state_the_node_had_then() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (n, after) = busy_node(tmp.path())?;
    let out = tmp.path().join("out.dkvsnap");
    for k in [0usize, 12, 19, 20, 33, 47, 59] {
        let (tock, _, _, digest) = after[k];
        let r = restore(
            std::slice::from_ref(&n.dir),
            &out,
            Target::Tock(tock),
            None,
            true,
        )?;
        ensure!(r.verified && !r.has_findings(), "{}", r.to_text());
        assert_eq!(r.digest, digest, "digest after event {k} (tock {tock})");
        assert_eq!(restored_digest(&out)?, digest, "file after event {k}");
        // Snapshots are used when they are not past the target.
        let from = r.base.as_ref().map(|b| b.1);
        let want = match k {
            0..=19 => None,
            20..=39 => Some(20),
            _ => Some(40),
        };
        assert_eq!(from, want, "start for event {k}");
    }
    // The same points by time and by event.
    for k in [5usize, 25, 44] {
        let (_, time, tick, digest) = after[k];
        let r = restore(
            std::slice::from_ref(&n.dir),
            &out,
            Target::TimeMs(time),
            None,
            true,
        )?;
        assert_eq!(r.digest, digest, "by time, event {k}");
        let head = if k % 10 == 5 { "n2" } else { "n1" };
        let r = restore(
            std::slice::from_ref(&n.dir),
            &out,
            Target::Event(NodeName::from(head), tick),
            None,
            true,
        )?;
        assert_eq!(r.digest, digest, "by event {head}:{tick}, event {k}");
    }
    // The binary, with an RFC 3339 time; the snapshot it writes loads.
    let (tock, time, _, digest) = after[30];
    let o = bin(&[
        "restore",
        s(&n.dir),
        "--out",
        s(&out),
        "--until-tock",
        &tock.to_string(),
    ])?;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains(&format!("digest {digest:032x}")));
    let when = distkv_replay::time::format_ms(time);
    let o = bin(&[
        "restore",
        s(&n.dir),
        "--out",
        s(&out),
        "--until-time",
        &when,
    ])?;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(restored_digest(&out)?, digest);
    // An event nobody has is a usage error.
    let o = bin(&["restore", s(&n.dir), "--out", s(&out), "--until", "n9:1"])?;
    assert_eq!(code(&o), 2);
    Ok(())
}

#[test]
fn a_snapshot_stands_in_for_segments_retention_removed() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (n, after) = busy_node(tmp.path())?;
    let segs = n.segments()?;
    std::fs::remove_file(&segs[0])?;
    // The snapshot at seq 20 covers what the first segment held.
    let r = audit(std::slice::from_ref(&n.dir), true)?;
    ensure!(r.is_clean(), "{}", r.to_text());
    assert_eq!(
        r.stats.covered, 5,
        "events 16 to 20 are checked, not applied"
    );
    let out = tmp.path().join("out.dkvsnap");
    let (tock, _, _, digest) = after[33];
    let r = restore(
        std::slice::from_ref(&n.dir),
        &out,
        Target::Tock(tock),
        None,
        true,
    )?;
    ensure!(!r.has_findings(), "{}", r.to_text());
    assert_eq!(r.digest, digest);
    // Before the snapshot, the files cannot tell: a gap, exit status 1.
    let (tock, _, _, _) = after[10];
    let o = bin(&[
        "restore",
        s(&n.dir),
        "--out",
        s(&out),
        "--until-tock",
        &tock.to_string(),
    ])?;
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("records 1 to 15 are in no file given"));
    Ok(())
}

#[test]
fn restore_from_the_files_of_two_nodes_deduplicates_their_events() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut n1 = NodeFiles::new(tmp.path(), "n1")?;
    let mut n2 = NodeFiles::new(tmp.path(), "n2")?;
    for i in 0..20i64 {
        let (a, b) = if i % 3 == 0 {
            (&mut n2, &mut n1)
        } else {
            (&mut n1, &mut n2)
        };
        let ev = a.set(&path!["k", i % 6], v(i))?;
        b.receive(&ev)?;
    }
    // n2 snapshots half-way through its own history.
    n2.snapshot()?;
    let ev = n1.set(&path!["last"], v(99))?;
    n2.receive(&ev)?;
    n1.close()?;
    n2.close()?;
    ensure!(
        n1.state.digest() == n2.state.digest(),
        "the nodes converged"
    );

    let out = tmp.path().join("both.dkvsnap");
    let r = restore(
        &[n1.dir.clone(), n2.dir.clone()],
        &out,
        Target::All,
        None,
        true,
    )?;
    ensure!(!r.has_findings(), "{}", r.to_text());
    assert_eq!(r.digest, n1.state.digest());
    assert!(r.base.is_some(), "n2's snapshot is the starting point");
    // Changes the snapshot has are already there, or older than what it has.
    let st = &r.stats;
    assert_eq!(st.stored + st.same + st.stale, 21, "{st:?}");
    assert_eq!(r.stats.duplicates, 1, "n1:21 is in both logs");
    assert!(r.missing.is_empty());
    assert_eq!(restored_digest(&out)?, n1.state.digest());

    // From the two logs alone: every change is in both, applied once.
    let logs = [n1.dir.join("log"), n2.dir.join("log")];
    let r = restore(&logs, &out, Target::All, None, true)?;
    ensure!(!r.has_findings(), "{}", r.to_text());
    assert_eq!(r.digest, n1.state.digest());
    assert_eq!(
        (r.stats.stored, r.stats.duplicates),
        (21, 21),
        "{:?}",
        r.stats
    );
    let o = bin(&["restore", s(&logs[1]), s(&logs[0]), "--out", s(&out)])?;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(restored_digest(&out)?, n1.state.digest());
    Ok(())
}

#[test]
fn diff_reports_added_removed_and_changed_paths() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut n = NodeFiles::new(tmp.path(), "n1")?;
    n.set(&path!["keep"], v(1))?;
    n.set(&path!["change"], v(2))?;
    n.set(&path!["remove"], v(3))?;
    let a = n.snapshot()?;
    n.set(&path!["change"], v(20))?;
    n.set(&path!["remove"], None)?;
    n.set(&path!["add", "deep"], v(4))?;
    let b = n.snapshot()?;
    n.close()?;

    let sa = load_side(s(&a), true)?;
    let sb = load_side(s(&b), true)?;
    let mut diffs: Vec<PathDiff> = Vec::new();
    diff_walk(&sa.built.tree, &sb.built.tree, &mut |d| {
        diffs.push(d);
        Ok(())
    })?;
    let got: Vec<(DiffKind, String)> = diffs.iter().map(|d| (d.kind, d.path.to_string())).collect();
    assert_eq!(
        got,
        [
            (DiffKind::Changed, "change".to_string()),
            (DiffKind::Removed, "remove".to_string()),
            (DiffKind::Added, "add.deep".to_string()),
        ]
    );
    assert_eq!(diffs[0].a.as_ref().and_then(|e| e.value.clone()), v(2));
    assert_eq!(diffs[0].b.as_ref().and_then(|e| e.value.clone()), v(20));

    let o = bin(&["diff", s(&a), s(&b)])?;
    assert_eq!(code(&o), 1);
    let out = stdout(&o);
    assert!(
        out.contains("~ change: 2 [n1:2] tock 5 -> 20 [n1:4]"),
        "{out}"
    );
    assert!(out.contains("- remove: 3"), "{out}");
    assert!(out.contains("+ add.deep: 4"), "{out}");
    assert!(out.contains("node n1: tick 3 -> 6"), "{out}");
    // The data directory, recovered read-only, is the newest state.
    let o = bin(&["diff", s(&b), s(&n.dir)])?;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("no differences"));
    let before = std::fs::read_dir(n.dir.join("log"))?.count();
    let o = bin(&["--format", "json", "diff", s(&n.dir), s(&a)])?;
    assert_eq!(code(&o), 1);
    assert_eq!(std::fs::read_dir(n.dir.join("log"))?.count(), before);
    Ok(())
}

#[test]
fn diff_against_a_live_node() -> Result<()> {
    use distkv_node::server::{self, Server, ServerOptions};
    let tmp = tempfile::tempdir()?;
    let mut n = NodeFiles::new(tmp.path(), "n1")?;
    n.set(&path!["a"], v(1))?;
    n.set(&path!["b", "c"], v(2))?;
    n.set(&path!["a"], None)?;
    let file = n.snapshot()?;
    n.close()?;
    let (st, _) = snap::load(&file, "n1", LogLimits::default())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addr = rt.block_on(async {
        let srv = Server::with_state(st, ServerOptions::default());
        let listener = server::bind("127.0.0.1", 0).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(server::serve(srv, listener, shutdown.clone()));
        Ok::<_, anyhow::Error>(addr)
    })?;
    let o = bin(&["diff", s(&file), &addr.to_string()])?;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    n.state.local_change(&path!["b", "c"], v(5))?;
    let other = tmp.path().join("other.dkvsnap");
    snap::write(&n.state, &other, true, 0, 0)?.finish()?;
    let o = bin(&["diff", &addr.to_string(), s(&other)])?;
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("~ b.c: 2"), "{}", stdout(&o));
    shutdown.cancel();
    Ok(())
}

#[test]
fn history_lists_every_change_old_to_new() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut n = NodeFiles::new(tmp.path(), "n1")?;
    n.set(&path!["k"], v(1))?;
    n.set(&path!["other"], v(0))?;
    n.set(&path!["k"], v(2))?;
    n.set(&path!["k", "sub"], Some(Value::str("s")))?;
    n.set(&path!["k"], None)?;
    n.rotate()?;
    n.set(&path!["k"], v(3))?;
    n.close()?;
    let r = history(std::slice::from_ref(&n.dir), &path!["k"], false, true)?;
    let got: Vec<(Option<Value>, Option<Value>)> = r
        .changes
        .iter()
        .map(|c| (c.old.clone(), c.new.clone()))
        .collect();
    assert_eq!(
        got,
        [(None, v(1)), (v(1), v(2)), (v(2), None), (None, v(3))]
    );
    assert_eq!(r.changes[3].chain.head().tick, 6);
    let r = history(std::slice::from_ref(&n.dir), &path!["k"], true, true)?;
    assert_eq!(r.changes.len(), 5);

    let o = bin(&["history", s(&n.dir), "--key", "k"])?;
    assert_eq!(code(&o), 0);
    let lines: Vec<String> = stdout(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[1].contains("n1:3 k: 1 -> 2"), "{}", lines[1]);
    assert!(lines[2].contains("k: 2 -> <deleted>"), "{}", lines[2]);
    assert!(lines[3].contains("k: <none> -> 3"), "{}", lines[3]);
    Ok(())
}

#[test]
fn distkv_py_files_are_recognised_and_replayed() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut st = State::new("py", LogLimits::default());
    st.make_ready();
    let mut w = PyWriter::new();
    let mut bytes = Vec::new();
    for (p, val) in [
        (path!["x"], v(1)),
        (path!["y", 1i64], v(2)),
        (path!["x"], None),
    ] {
        let ev = st.local_change(&p, val)?;
        w.change(&ev, &mut bytes);
    }
    let file = tmp.path().join("changes.dkv");
    std::fs::write(&file, &bytes)?;
    let o = bin(&["dump", s(&file)])?;
    assert_eq!(code(&o), 0);
    assert!(
        stdout(&o).contains("record 3 tock 8 [py:3] x deleted"),
        "{}",
        stdout(&o)
    );
    let out = tmp.path().join("py.dkvsnap");
    let r = restore(
        std::slice::from_ref(&file),
        &out,
        Target::All,
        Some("py"),
        true,
    )?;
    assert_eq!(r.digest, st.digest());
    Ok(())
}

#[test]
fn usage_and_io_errors_exit_with_2() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let o = bin(&["audit"])?;
    assert_eq!(code(&o), 2, "no path");
    let o = bin(&["audit", s(&tmp.path().join("nope"))])?;
    assert_eq!(code(&o), 2, "missing file");
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"hello world")?;
    let o = bin(&["dump", s(&junk)])?;
    assert_eq!(code(&o), 2, "unknown format");
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown file format"));
    let o = bin(&[
        "restore",
        s(&junk),
        "--out",
        "x",
        "--until-tock",
        "3",
        "--until-time",
        "2024-01-01T00:00:00Z",
    ])?;
    assert_eq!(code(&o), 2, "contradictory targets");
    Ok(())
}
