//! `restore`: the state at a point in the past, written as a snapshot.
//!
//! The replay starts from the newest snapshot at or before the target
//! ([`Start::Latest`]; snapshots are exact at their seq) and applies the
//! log events after it up to the target (see [`Target`]). The files of
//! several nodes may be given at once: their events are merged by tock and
//! deduplicated by `node:tick`. The result is written with the node's own
//! snapshot writer ([`distkv_core::persist::snap::write`], meta tree
//! included), read back as it is written and checked against the replayed
//! state's digest (streamed from the file's items: [`snap::digest_written`]),
//! so `distkv server -l SNAPSHOT` loads exactly what was replayed.
//!
//! The snapshot's header names the first input's node (or `--node`) and
//! carries the log position of the last record replayed from that node's
//! own log (the base snapshot's position if none was).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use distkv_core::persist::snap;
use distkv_core::state::Digest;
use distkv_model::{NodeName, RangeSet, Value};
use distkv_snapshot::SnapshotReader;

use crate::engine::{digest_text, NoObserver, Replay, Start, Stats, Target};
use crate::error::Result;
use crate::output::Doc;
use crate::progress::{on_file, Progress};
use crate::source::{inventory, Damage};

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The target, in words.
    pub target: String,
    /// The snapshot the replay started from, with its seq and tock.
    pub base: Option<(PathBuf, u64, u64)>,
    /// Replay counts.
    pub stats: Stats,
    /// Damage met (a torn tail of a newest segment included).
    pub damage: Vec<Damage>,
    /// Remarks.
    pub notes: Vec<String>,
    /// Ticks nobody has, per node.
    pub missing: Vec<(NodeName, RangeSet)>,
    /// The restored state's digest.
    pub digest: u128,
    /// Entries written.
    pub entries: u64,
    /// The snapshot written.
    pub out: PathBuf,
    /// Its node and seq.
    pub node: NodeName,
    /// Its seq.
    pub seq: u64,
    /// Whether the written file reads back with the same digest.
    pub verified: bool,
}

impl RestoreReport {
    /// Whether anything is wrong: damage other than a torn tail, ticks
    /// nobody has, or a snapshot that does not read back.
    pub fn has_findings(&self) -> bool {
        !self.verified
            || !self.missing.is_empty()
            || self
                .damage
                .iter()
                .any(|d| d.kind != crate::source::DamageKind::TornTail)
    }

    /// As a report map.
    pub fn to_value(&self) -> Value {
        let s = &self.stats;
        Doc::new()
            .put("out", self.out.display().to_string().as_str())
            .put("node", Value::Str(self.node.clone()))
            .put("seq", Value::uint(self.seq))
            .put("target", self.target.as_str())
            .opt(
                "from_snapshot",
                self.base.as_ref().map(|(p, seq, tock)| {
                    Doc::new()
                        .put("file", p.display().to_string().as_str())
                        .put("seq", Value::uint(*seq))
                        .put("tock", Value::uint(*tock))
                        .value()
                }),
            )
            .put(
                "events",
                Doc::new()
                    .put("read", Value::uint(s.events))
                    .put("stored", Value::uint(s.stored))
                    .put("same", Value::uint(s.same))
                    .put("stale", Value::uint(s.stale))
                    .put("lost", Value::uint(s.lost))
                    .put("duplicates", Value::uint(s.duplicates)),
            )
            .put("entries", Value::uint(self.entries))
            .put(
                "missing",
                Value::Map(
                    self.missing
                        .iter()
                        .map(|(n, r)| (Value::Str(n.clone()), Value::str(&r.to_string())))
                        .collect(),
                ),
            )
            .put(
                "damage",
                Value::Array(self.damage.iter().map(Damage::to_value).collect()),
            )
            .put(
                "notes",
                Value::Array(self.notes.iter().map(|n| Value::str(n)).collect()),
            )
            .put("digest", digest_text(self.digest).as_str())
            .put("verified", self.verified)
            .value()
    }

    /// Lines for people.
    pub fn to_text(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        match &self.base {
            Some((p, seq, tock)) => out.push_str(&format!(
                "started from snapshot {} (seq {seq}, tock {tock})\n",
                p.display()
            )),
            None => out.push_str("started from an empty state\n"),
        }
        out.push_str(&format!(
            "replayed to {}: {} events read, {} stored, {} already there, {} stale, {} lost, \
             {} duplicates\n",
            self.target, s.events, s.stored, s.same, s.stale, s.lost, s.duplicates
        ));
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for d in &self.damage {
            out.push_str(&format!("damage: {}\n", d.to_text()));
        }
        for (n, r) in &self.missing {
            out.push_str(&format!(
                "missing: node {n} ticks {} (nobody has them)\n",
                r
            ));
        }
        out.push_str(&format!(
            "wrote {} ({} entries, node {}, seq {}){}\n",
            self.out.display(),
            self.entries,
            self.node,
            self.seq,
            if self.verified {
                ""
            } else {
                " -- BUT IT DOES NOT READ BACK THE SAME"
            }
        ));
        out.push_str(&format!("digest {}\n", digest_text(self.digest)));
        out
    }
}

/// Replays `inputs` up to `target` from the newest snapshot at or before
/// it (see the module docs).
pub fn rebuild(
    inputs: &[PathBuf],
    target: Target,
    node: Option<&str>,
    quiet: bool,
) -> Result<Replay> {
    let inv = inventory(inputs)?;
    let mut replay = Replay::prepare(&inv, target, Start::Latest, false, node, quiet)?;
    replay.run(&mut NoObserver, "replay")?;
    Ok(replay)
}

/// The read-back check of a snapshot being written: the digest of what the
/// file holds, taken as it is written on a thread of its own (or, if the
/// system gives no thread, read from the finished file here).
enum Check {
    Reading(JoinHandle<Option<u128>>),
    After,
}

impl Check {
    fn start(reader: SnapshotReader, me: &NodeName) -> Check {
        let me = me.clone();
        std::thread::Builder::new()
            .name("distkv-check".into())
            .spawn(move || snap::digest_written(reader, &me, &mut |_, _| {}).ok())
            .map_or(Check::After, Check::Reading)
    }

    /// The digest of the snapshot `out`, once it is written; `None` if it
    /// does not read back whole.
    fn digest(self, out: &Path, me: &str) -> Option<u128> {
        match self {
            Check::Reading(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Check::After => SnapshotReader::open(out)
                .and_then(|reader| snap::digest_written(reader, me, &mut |_, _| {}))
                .ok(),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a restore does with the replayed state once its snapshot is
/// written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// Frees it (while the file is fsynced and checked).
    Free,
    /// Leaves it to the system: the process ends right after (`distkv-replay
    /// restore`) and gives its memory back whole, where freeing a million
    /// entries one by one takes a core 0.06 s.
    Exit,
}

/// Restores the state at `target` from `inputs` into the snapshot `out`.
pub fn restore(
    inputs: &[PathBuf],
    out: &Path,
    target: Target,
    node: Option<&str>,
    quiet: bool,
) -> Result<RestoreReport> {
    restore_with(inputs, out, target, node, quiet, Leftover::Free)
}

/// [`restore`], the replayed state then dealt with as `leftover` says.
pub fn restore_with(
    inputs: &[PathBuf],
    out: &Path,
    target: Target,
    node: Option<&str>,
    quiet: bool,
    leftover: Leftover,
) -> Result<RestoreReport> {
    let target_text = target.to_text();
    let replay = rebuild(inputs, target, node, quiet)?;
    let st = &replay.state;
    let me = st.me().clone();
    // The position in the restored node's own log.
    let own = replay
        .labels
        .iter()
        .position(|l| **l == *me)
        .and_then(|i| replay.last_seq[i]);
    let seq = own
        .or(replay.base.as_ref().map(|b| b.header.seq))
        .unwrap_or(0);
    // The state's digest is taken in the walk that writes the snapshot,
    // and the file is read back as it is written, on a thread of its own:
    // the digest of the state it loads into, streamed from its items (no
    // second state).
    let _busy = Progress::busy(&on_file("writing and checking", out), quiet);
    let mut digest = Digest::new();
    let mut check = None;
    let written = snap::write_with(st, out, true, now_ms(), seq, Some(&mut digest), |w| {
        check = Some(Check::start(w.follow()?, &me));
        Ok(())
    })
    .and_then(|mut w| w.seal().map(|()| w));
    let digest = digest.value();
    let mut notes = replay.notes.clone();
    for (i, s) in replay.starts.iter().enumerate() {
        if let (Some(p), false) = (s, replay.base.as_ref().is_some_and(|b| b.history == i)) {
            notes.push(format!(
                "{}: merged in from snapshot {}",
                replay.labels[i],
                p.display()
            ));
        }
    }
    let missing = replay.missing();
    let base = replay
        .base
        .as_ref()
        .map(|b| (b.path.clone(), b.header.seq, b.header.tock));
    let stats = replay.stats.clone();
    let damage = replay.damage.clone();
    // The replayed state is freed here, where it was allocated, while the
    // file is fsynced and the check reads its last blocks.
    match leftover {
        Leftover::Free => drop(replay),
        Leftover::Exit => replay.end_leaving_state(),
    }
    let written = written.and_then(|w| w.finish());
    // The check ends with the file: at its end, or where the writer
    // failed.
    let verified = check.and_then(|c| c.digest(out, &me)) == Some(digest);
    let entries = written?.entries;
    Ok(RestoreReport {
        target: target_text,
        base,
        stats,
        damage,
        notes,
        missing,
        digest,
        entries,
        out: out.to_path_buf(),
        node: me,
        seq,
        verified,
    })
}
